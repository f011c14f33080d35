#!/usr/bin/env python3
"""Golden outputs of the FLUX transformer and of whole flow-sampling runs, from diffusers'
FluxTransformer2DModel on tiny random configurations written in BFL's key layout (the names of
flux1-schnell.safetensors; converted to diffusers' names here, by this script's own table).

Configuration (tests/models/test_flux.c must match): width 64 = 2 heads of 32 (RoPE axes 4, 14,
14: head width / 8, 7 / 16, 7 / 16 as 16, 56, 56 are of 128), MLP 256, 2 double and 2 single
blocks, context 48 (T5 stand-in), pooled vector 24 (CLIP-L stand-in), 16 latent channels.

  tests/data/goldens/flux_schnell_tiny.safetensors  schnell (no guidance_in), BFL layout, bf16
  tests/data/goldens/flux_dev_tiny.safetensors      dev (guidance_in), ComfyUI's all-in-one prefix
      model.diffusion_model., bf16
  tests/data/goldens/flux_schnell_tiny.gguf         the schnell weights as GGUF (gguf.GGUFWriter,
      arch "flux", BFL names as ComfyUI-GGUF's converter writes them): matrices whose rows are
      whole 32-blocks Q8_0, other matrices F16, vectors F32
  tests/data/goldens/flux_in.f32   x [2, 16, 5, 6] (odd height: circular padding to 6 rows),
      context [2, 7, 48], y [2, 24], timesteps [2], guidance [2], little-endian float32 in order
  tests/data/goldens/flux_schnell_out.f32, flux_dev_out.f32, flux_gguf_out.f32  the velocity
      [2, 16, 5, 6] (the GGUF one from gguf's reference dequantisation of the Q8_0 blocks)
  tests/data/goldens/flux_run_in.f32  noise [1, 16, 8, 8] = torch.randn with manual_seed(42),
      context [1, 7, 48], y [1, 24]
  tests/data/goldens/flux_schnell_run.f32, flux_dev_run.f32  the LATENT (process_out applied) after
      euler sampling as ComfyUI does it for the CONST model type with ModelSamplingFlux:
      schnell shift 1.0 (FluxSchnell's sampling_settings), 4 steps, simple scheduler; dev with
      ModelSamplingFlux(max_shift 1.15, base_shift 0.5, width 64, height 64), 4 steps, simple,
      guidance 3.5
  tests/data/goldens/flux_img2img_in.f32, flux_img2img_run.f32  an input LATENT [1, 16, 8, 8] and the
      schnell run from it with denoise 0.75 (KSampler: 5 scheduled steps, the last 4 run; CONST
      noise scaling sigma * noise + (1 - sigma) * latent)
  tests/data/goldens/flux_bad_shape.gguf  the schnell GGUF with single_blocks.1.linear2.weight
      transposed (a tensor whose shape does not fit the architecture)
  tests/data/goldens/flux_fp8_out.f32  the dev forward on flux_in.f32 with its matrices rounded to
      float8_e4m3fn (flux_dev_fp8.safetensors: matrices F8_E4M3, vectors bf16, all-in-one prefix)
  tests/data/goldens/fp8_all.safetensors, fp8_all.f32  every byte 0..255 as float8_e4m3fn (tensor
      e4m3) and float8_e5m2 (e5m2), and torch's float32 values of them (e4m3 then e5m2)
  tests/data/goldens/flux_vae_{z,decoded,image,mean}.f32  diffusers' AutoencoderKL with 16 latent
      channels and no quant convs (use_quant_conv / use_post_quant_conv False, as FLUX's ae) on
      `sdflow_mkckpt --preset flux-dev-tiny --kind vae --seed 7` (BFL's ae.safetensors names,
      converted by diffusers' convert_ldm_vae_checkpoint): decode of z [1, 16, 8, 8], posterior
      mean of image [1, 3, 64, 64]

    python3 tests/reference/make_flux_goldens.py build/sdflow_mkckpt
"""
import math
import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file, save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
H, HEADS, HD, MLP, CTX, VEC, DEPTH, SINGLE, C = 64, 2, 32, 256, 48, 24, 2, 2, 16
SCALE, SHIFT = 0.3611, 0.1159


def linear(sd, name, rows, cols):
    sd[name + ".weight"] = torch.randn(rows, cols) * (0.6 / math.sqrt(cols))
    sd[name + ".bias"] = torch.randn(rows) * 0.05


def bfl_weights(guidance):
    sd = {}
    linear(sd, "img_in", H, 4 * C)
    linear(sd, "txt_in", H, CTX)
    for name, width in (("time_in", 256), ("vector_in", VEC)) + ((("guidance_in", 256),) if guidance else ()):
        linear(sd, name + ".in_layer", H, width)
        linear(sd, name + ".out_layer", H, H)
    for i in range(DEPTH):
        for side in ("img", "txt"):
            p = "double_blocks.%d.%s_" % (i, side)
            linear(sd, p + "mod.lin", 6 * H, H)
            linear(sd, p + "attn.qkv", 3 * H, H)
            linear(sd, p + "attn.proj", H, H)
            sd[p + "attn.norm.query_norm.scale"] = 1 + 0.2 * torch.randn(HD)
            sd[p + "attn.norm.key_norm.scale"] = 1 + 0.2 * torch.randn(HD)
            linear(sd, p + "mlp.0", MLP, H)
            linear(sd, p + "mlp.2", H, MLP)
    for i in range(SINGLE):
        p = "single_blocks.%d." % i
        linear(sd, p + "modulation.lin", 3 * H, H)
        linear(sd, p + "linear1", 3 * H + MLP, H)
        linear(sd, p + "linear2", H, H + MLP)
        sd[p + "norm.query_norm.scale"] = 1 + 0.2 * torch.randn(HD)
        sd[p + "norm.key_norm.scale"] = 1 + 0.2 * torch.randn(HD)
    linear(sd, "final_layer.adaLN_modulation.1", 2 * H, H)
    linear(sd, "final_layer.linear", 4 * C, H)
    return {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}


def to_diffusers(bfl):
    """BFL names -> diffusers FluxTransformer2DModel names (fused projections split)."""
    sd, w = {}, {k: v.float() for k, v in bfl.items()}

    def mv(src, dst):
        for s in (".weight", ".bias"):
            sd[dst + s] = w[src + s]

    mv("img_in", "x_embedder")
    mv("txt_in", "context_embedder")
    for src, dst in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                     ("guidance_in", "guidance_embedder")):
        if src + ".in_layer.weight" in w:
            mv(src + ".in_layer", "time_text_embed.%s.linear_1" % dst)
            mv(src + ".out_layer", "time_text_embed.%s.linear_2" % dst)
    for i in range(DEPTH):
        b, d = "double_blocks.%d." % i, "transformer_blocks.%d." % i
        mv(b + "img_mod.lin", d + "norm1.linear")
        mv(b + "txt_mod.lin", d + "norm1_context.linear")
        for side, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for s in (".weight", ".bias"):
                for part, n in zip(w[b + side + "_attn.qkv" + s].chunk(3, 0), names):
                    sd[d + "attn." + n + s] = part
        sd[d + "attn.norm_q.weight"] = w[b + "img_attn.norm.query_norm.scale"]
        sd[d + "attn.norm_k.weight"] = w[b + "img_attn.norm.key_norm.scale"]
        sd[d + "attn.norm_added_q.weight"] = w[b + "txt_attn.norm.query_norm.scale"]
        sd[d + "attn.norm_added_k.weight"] = w[b + "txt_attn.norm.key_norm.scale"]
        mv(b + "img_attn.proj", d + "attn.to_out.0")
        mv(b + "txt_attn.proj", d + "attn.to_add_out")
        mv(b + "img_mlp.0", d + "ff.net.0.proj")
        mv(b + "img_mlp.2", d + "ff.net.2")
        mv(b + "txt_mlp.0", d + "ff_context.net.0.proj")
        mv(b + "txt_mlp.2", d + "ff_context.net.2")
    for i in range(SINGLE):
        b, d = "single_blocks.%d." % i, "single_transformer_blocks.%d." % i
        mv(b + "modulation.lin", d + "norm.linear")
        for s in (".weight", ".bias"):
            for part, n in zip(w[b + "linear1" + s].split([H, H, H, MLP], 0), ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                                 "proj_mlp")):
                sd[d + n + s] = part
        sd[d + "attn.norm_q.weight"] = w[b + "norm.query_norm.scale"]
        sd[d + "attn.norm_k.weight"] = w[b + "norm.key_norm.scale"]
        mv(b + "linear2", d + "proj_out")
    mv("final_layer.linear", "proj_out")
    for s in (".weight", ".bias"):  # BFL (shift, scale) -> diffusers (scale, shift)
        shift, scale = w["final_layer.adaLN_modulation.1" + s].chunk(2, 0)
        sd["norm_out.linear" + s] = torch.cat([scale, shift], 0)
    return sd


def model_for(bfl, guidance):
    m = FluxTransformer2DModel(patch_size=1, in_channels=4 * C, num_layers=DEPTH, num_single_layers=SINGLE,
                               attention_head_dim=HD, num_attention_heads=HEADS, joint_attention_dim=CTX,
                               pooled_projection_dim=VEC, guidance_embeds=guidance, axes_dims_rope=(4, 14, 14)).eval()
    m.load_state_dict(to_diffusers(bfl))
    return m


def velocity(m, x, ctx, y, t, g, mask=None):
    """ComfyUI's Flux.forward: circular pad to even sizes, 2x2 patches, ids, crop back; mask: an
    additive attention mask over the joint [text, image] tokens (ComfyUI's attention_mask)."""
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), mode="circular")
    hp, wp = xp.shape[2] // 2, xp.shape[3] // 2
    tok = xp.view(b, c, hp, 2, wp, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * 4)
    ids = torch.zeros(hp, wp, 3)
    ids[..., 1] = torch.arange(hp)[:, None]
    ids[..., 2] = torch.arange(wp)[None, :]
    with torch.no_grad():
        out = m(hidden_states=tok, encoder_hidden_states=ctx, pooled_projections=y, timestep=t,
                img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(ctx.shape[1], 3),
                guidance=g, joint_attention_kwargs=None if mask is None else {"attention_mask": mask},
                return_dict=False)[0]
    out = out.view(b, hp, wp, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, 2 * hp, 2 * wp)
    return out[:, :, :h, :w]


def write_gguf(bfl, path):
    """The weights as GGUF; returns them as the file holds them (dequantised)."""
    wr = gguf.GGUFWriter(path, "flux")
    held = {}
    for name, t in bfl.items():
        x = t.float().numpy()
        if x.ndim == 2 and x.shape[1] % 32 == 0:
            q = quantize(x, gguf.GGMLQuantizationType.Q8_0)
            wr.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            held[name] = torch.from_numpy(dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(x.shape).copy())
        elif x.ndim == 2:
            wr.add_tensor(name, x.astype(np.float16))
            held[name] = torch.from_numpy(x.astype(np.float16).astype(np.float32))
        else:
            wr.add_tensor(name, x)
            held[name] = torch.from_numpy(x)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return held


def flux_sigmas(mu, steps):
    """ModelSamplingFlux's 10000 float32 sigmas (flux_time_shift(mu, 1, t)) and the simple scheduler."""
    t = torch.arange(1, 10001, 1) / 10000
    table = math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)
    ss = len(table) / steps
    return [float(table[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


def euler_run(m, noise, ctx, y, mu, steps, guidance, latent=None, denoise=1.0, mask=None):
    """KSampler (cfg 1, euler, simple) on a LATENT (None: empty) for the CONST model type; mask as
    velocity's."""
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    sigmas = flux_sigmas(mu, total)[-(steps + 1):]
    latent = ((torch.zeros_like(noise) if latent is None else latent) - SHIFT) * SCALE  # process_in
    x = sigmas[0] * noise + (1 - sigmas[0]) * latent  # CONST noise_scaling
    g = torch.full((1,), guidance) if guidance is not None else None
    for i in range(steps):
        s = sigmas[i]
        v = velocity(m, x, ctx, y, torch.full((1,), s), g, mask)
        denoised = x - v * s
        d = (x - denoised) / s
        x = x + d * (sigmas[i + 1] - s)
    x = x / (1.0 - sigmas[-1])  # inverse_noise_scaling
    return x / SCALE + SHIFT  # process_out


def vae_goldens(tool):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ae.safetensors")
        subprocess.run([tool, "--preset", "flux-dev-tiny", "--kind", "vae", "--seed", "7", path], check=True)
        ldm = load_file(path)
    mult = (1, 2, 2, 2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, norm_num_groups=32,
                        block_out_channels=[32 * m for m in mult], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        use_quant_conv=False, use_post_quant_conv=False, sample_size=64).eval()
    vae.load_state_dict(convert_ldm_vae_checkpoint(ldm, vae.config), strict=True)
    gen = torch.Generator().manual_seed(321)
    z = torch.randn(1, 16, 8, 8, generator=gen)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(z).sample
        mean = vae.encode(image).latent_dist.mean
    for name, t in (("z", z), ("decoded", decoded), ("image", image), ("mean", mean)):
        t.numpy().astype("<f4").tofile(os.path.join(OUT, "flux_vae_%s.f32" % name))


def fp8_goldens():
    b = torch.arange(256, dtype=torch.uint8)
    e4, e5 = b.clone().view(torch.float8_e4m3fn), b.clone().view(torch.float8_e5m2)
    save_file({"e4m3": e4, "e5m2": e5}, os.path.join(OUT, "fp8_all.safetensors"))
    np.concatenate([e4.float().numpy(), e5.float().numpy()]).astype("<f4").tofile(os.path.join(OUT, "fp8_all.f32"))


def main():
    fp8_goldens()
    vae_goldens(sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt")
    torch.manual_seed(20261206)
    schnell, dev = bfl_weights(False), bfl_weights(True)
    save_file(schnell, os.path.join(OUT, "flux_schnell_tiny.safetensors"))
    save_file({"model.diffusion_model." + k: v for k, v in dev.items()}, os.path.join(OUT, "flux_dev_tiny.safetensors"))
    x = torch.randn(2, C, 5, 6)
    ctx = torch.randn(2, 7, CTX)
    y = torch.randn(2, VEC)
    t = torch.tensor([0.93, 0.41])
    g = torch.tensor([3.5, 1.5])
    np.concatenate([a.numpy().reshape(-1) for a in (x, ctx, y, t, g)]).astype("<f4").tofile(
        os.path.join(OUT, "flux_in.f32"))
    ms, md = model_for(schnell, False), model_for(dev, True)
    velocity(ms, x, ctx, y, t, None).numpy().astype("<f4").tofile(os.path.join(OUT, "flux_schnell_out.f32"))
    velocity(md, x, ctx, y, t, g).numpy().astype("<f4").tofile(os.path.join(OUT, "flux_dev_out.f32"))
    held = write_gguf(schnell, os.path.join(OUT, "flux_schnell_tiny.gguf"))
    mq = FluxTransformer2DModel(patch_size=1, in_channels=4 * C, num_layers=DEPTH, num_single_layers=SINGLE,
                                attention_head_dim=HD, num_attention_heads=HEADS, joint_attention_dim=CTX,
                                pooled_projection_dim=VEC, guidance_embeds=False, axes_dims_rope=(4, 14, 14)).eval()
    mq.load_state_dict(to_diffusers(held))
    velocity(mq, x, ctx, y, t, None).numpy().astype("<f4").tofile(os.path.join(OUT, "flux_gguf_out.f32"))
    bad = dict(schnell)
    bad["single_blocks.1.linear2.weight"] = bad["single_blocks.1.linear2.weight"].t().contiguous()
    write_gguf(bad, os.path.join(OUT, "flux_bad_shape.gguf"))
    gen = torch.manual_seed(42)
    noise = torch.randn(1, C, 8, 8, generator=gen)
    rctx, ry = torch.randn(1, 7, CTX), torch.randn(1, VEC)
    np.concatenate([a.numpy().reshape(-1) for a in (noise, rctx, ry)]).astype("<f4").tofile(
        os.path.join(OUT, "flux_run_in.f32"))
    euler_run(ms, noise, rctx, ry, 1.0, 4, None).numpy().astype("<f4").tofile(
        os.path.join(OUT, "flux_schnell_run.f32"))
    mm = (1.15 - 0.5) / (4096 - 256)
    mu = (64 * 64 / (8 * 8 * 2 * 2)) * mm + (0.5 - mm * 256)
    euler_run(md, noise, rctx, ry, mu, 4, 3.5).numpy().astype("<f4").tofile(os.path.join(OUT, "flux_dev_run.f32"))
    start = torch.randn(1, C, 8, 8) * 0.8 + 0.1
    start.numpy().astype("<f4").tofile(os.path.join(OUT, "flux_img2img_in.f32"))
    euler_run(ms, noise, rctx, ry, 1.0, 4, None, start, 0.75).numpy().astype("<f4").tofile(
        os.path.join(OUT, "flux_img2img_run.f32"))
    fp8 = {k: (v.float().to(torch.float8_e4m3fn) if v.dim() == 2 else v) for k, v in dev.items()}
    save_file({"model.diffusion_model." + k: v for k, v in fp8.items()}, os.path.join(OUT, "flux_dev_fp8.safetensors"))
    mf = model_for({k: v.float() for k, v in fp8.items()}, True)
    velocity(mf, x, ctx, y, t, g).numpy().astype("<f4").tofile(os.path.join(OUT, "flux_fp8_out.f32"))
    print("dev shift (mu)", mu)


if __name__ == "__main__":
    main()
