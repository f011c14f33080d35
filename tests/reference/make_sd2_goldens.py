#!/usr/bin/env python3
"""Writes the SD2.x goldens under tests/data/goldens/ from diffusers and transformers.

The checkpoints are written by the project's own tool (sdflow_mkckpt --preset sd2-tiny --seed 21
and --preset sd2-v-tiny --seed 22, float32; the C tests write the identical files). The tiny
config differs from SD1's and SDXL's tiny ones in levels (3 of 128 channels), res blocks
per level (3, so 12 output blocks: output_blocks.11.1 exists, where ComfyUI tells 768-v files from
512-base ones), depths (2 at level 0 only, middle 3), heads (64-channel heads: 2), context width
(256) and the text encoder (OpenCLIP-H layout, 256 wide, 5 layers, 4 heads, MLP 640).

Conversion by diffusers' single-file converters: convert_ldm_unet_checkpoint into
UNet2DConditionModel (linear projections, per-level heads as diffusers' SD2 config) and
convert_open_clip_checkpoint into transformers' CLIPTextModel (GELU, in_proj split).

Goldens (the SDG1 format of make_unet_goldens.py):
- sd2_clip_h.bin: ComfyUI's SD2 context for the windows of make_sdxl_goldens.py padded with 0
  (SD2ClipHTokenizer): the penultimate hidden state with the final LayerNorm applied
  (SD2ClipHModel, layer_norm_hidden_state) [2, 77, 256].
- sd2_unet_{x,context,eps}.bin: one forward (batch 2, timesteps 981 and 250.5, 33 context tokens).
- sd2_sample_{eps,lcm,v,vz,vr}_final.bin: whole 5-step Euler runs (ComfyUI's "normal" schedule, cfg 6,
  64x64, seed 99, CLIPTextEncode of "a photo of a cat" and "") with the eps file (EPS; and as
  ModelSamplingDiscrete lcm: ModelSamplingDiscreteDistilled + LCM), the v file
  (V_PREDICTION, detected from the file) and the v file with zsnr (ModelSamplingDiscrete
  v_prediction + zsnr: rescale_zero_terminal_snr_sigmas); sd2_sample_vr_final.bin: the v file with
  RescaleCFG 0.7 at cfg 30 (ComfyUI's sampler_cfg_function); sd2_sample_noise.bin the noise. The tests
  compare the model's contribution (final latent minus the scaled initial noise).

Run: python3 tests/reference/make_sd2_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_unet_goldens import write  # noqa: E402  (the SDG1 golden format)
from make_sdxl_goldens import clip_config, load_strict, normal_sigmas, windows  # noqa: E402

EPS_FILE = {"preset": "sd2-tiny", "seed": 21}
V_FILE = {"preset": "sd2-v-tiny", "seed": 22}
UNET = {"mc": 128, "mult": [1, 1, 1], "attn": [1, 0, 0], "depth": [2, 0, 0], "middle": 3, "nrb": 3, "ctx": 256}
CLIP_H = {"width": 256, "layers": 5, "inter": 640}
H_PREFIX = "cond_stage_model.model."
TIMESTEPS = [981.0, 250.5]
SAMPLE_STEPS, SAMPLE_CFG, SAMPLE_SIZE, SAMPLE_SEED = 5, 6.0, 64, 99
RESCALE_CFG = 30.0


def write_checkpoint(tool, tmp, cfg):
    path = os.path.join(tmp, cfg["preset"] + ".safetensors")
    subprocess.run([tool, "--preset", cfg["preset"], "--seed", str(cfg["seed"]), path], check=True)
    return load_file(path)


def make_unet(ckpt):
    channels = [UNET["mc"] * m for m in UNET["mult"]]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in UNET["attn"]]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(UNET["attn"])]
    depths = [d if d else 1 for d in UNET["depth"]]
    depths[-1] = UNET["middle"]  # the last level has no attention: the entry serves the middle block
    unet = UNet2DConditionModel(
        sample_size=None, in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=UNET["nrb"], cross_attention_dim=UNET["ctx"],
        attention_head_dim=[c // 64 for c in channels], transformer_layers_per_block=depths,
        use_linear_projection=True, norm_num_groups=32)
    converted = sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    unet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return unet.eval()


def make_clip_h(ckpt):
    model = CLIPTextModel(clip_config(CLIP_H, "gelu"))
    sd = sfu.convert_open_clip_checkpoint(model, ckpt, prefix=H_PREFIX)
    sd = {k: v for k, v in sd.items() if not k.startswith("text_projection")}  # SD2 uses no projection
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # newer transformers' names
        sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    return load_strict(model, sd)


def final_norm(model):
    inner = getattr(model, "text_model", model)
    return inner.final_layer_norm


def encode_h(clip_h, ids):
    """SD2ClipHModel: hidden_states[-2] (layer_idx 23 of 24 at full size) through the final LayerNorm."""
    with torch.no_grad():
        out = clip_h(input_ids=ids, output_hidden_states=True)
        return final_norm(clip_h)(out.hidden_states[-2])


def rescale_cfg(pos, neg, x_orig, sigma, cond_scale, multiplier):
    """ComfyUI's RescaleCFG sampler_cfg_function on denoised predictions (cfg_function passes
    cond = x - pos, uncond = x - neg and returns x minus the function's result)."""
    cond, uncond = x_orig - pos, x_orig - neg
    x = x_orig / (sigma * sigma + 1.0)
    cond = ((x - (x_orig - cond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    uncond = ((x - (x_orig - uncond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    x_cfg = uncond + cond_scale * (cond - uncond)
    ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
    ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
    x_final = multiplier * (x_cfg * (ro_pos / ro_cfg)) + (1.0 - multiplier) * x_cfg
    return x_orig - (x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5))


def lcm_sigmas():
    """ModelSamplingDiscreteDistilled (50 of the float32 sigmas, every 20th from the end; timestep
    20 * index + 19) and its "normal" schedule; also its timestep function."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    table = (((1 - ac) / ac) ** 0.5).float()
    kept = torch.zeros(50, dtype=torch.float32)
    for x in range(50):
        kept[49 - x] = table[999 - x * 20]
    log_kept = kept.log()

    def timestep(sigma):
        return (sigma.log() - log_kept[:, None]).abs().argmin(dim=0).view(sigma.shape) * 20 + 19

    def sigma_of(t):
        t = torch.clamp(((t - 19) / 20).float(), 0, 49)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_kept[low] + w * log_kept[high]).exp()

    start, end = timestep(kept[-1:]), timestep(kept[:1])
    ts = torch.linspace(float(start), float(end), SAMPLE_STEPS)
    return [float(sigma_of(v)) for v in ts] + [0.0], timestep


def lcm_denoised(x, out, s, t):
    """ComfyUI's LCM.calculate_denoised (sigma_data 0.5, timestep scaling 10)."""
    x0 = x - out * s
    st = t * 10.0
    c_skip = 0.25 / (st ** 2 + 0.25)
    c_out = st / (st ** 2 + 0.25) ** 0.5
    return c_out * x0 + c_skip * x


def sample(unet, context, v_pred, zsnr, noise, rescale=None, cfg=SAMPLE_CFG, lcm=False):
    """KSampler euler/normal, cfg 6, full denoise: x = noise * sqrt(1 + sigma_max^2) (max_denoise)."""
    sigmas, timestep = lcm_sigmas() if lcm else normal_sigmas(SAMPLE_STEPS, zsnr)
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    x_init = x
    for i in range(SAMPLE_STEPS):
        s = torch.tensor([sigmas[i]])
        xin = x / (s ** 2 + 1) ** 0.5
        t = timestep(s).float()
        with torch.no_grad():
            out = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=context).sample
        xx = torch.cat([x, x])
        if lcm:
            den = lcm_denoised(xx, out, s, t)
        elif v_pred:
            den = xx * 1.0 / (s ** 2 + 1.0) - out * s * 1.0 / (s ** 2 + 1.0) ** 0.5
        else:
            den = xx - out * s
        if rescale is None:
            denoised = den[1:] + (den[:1] - den[1:]) * cfg
        else:
            denoised = rescale_cfg(den[:1], den[1:], x, s, cfg, rescale)
        x = x + (x - denoised) / s * (sigmas[i + 1] - sigmas[i])
    print("sample v=%d zsnr=%d: sigma_max %.2f, contribution std %.4f" % (
        v_pred, zsnr, sigmas[0], float((x - x_init).std())))
    return x


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        eps_ckpt = write_checkpoint(tool, tmp, EPS_FILE)
        v_ckpt = write_checkpoint(tool, tmp, V_FILE)
    bias = v_ckpt["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"]
    assert float(torch.std(bias, unbiased=False)) > 0.09  # ComfyUI's SD20.model_type: V_PREDICTION
    assert float(torch.std(eps_ckpt["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"],
                           unbiased=False)) <= 0.09
    clip_h = make_clip_h(eps_ckpt)
    hidden = encode_h(clip_h, windows(0))
    write("sd2_clip_h.bin", hidden.numpy())
    print("clip-h: std %.4f" % float(hidden.std()))

    unet = make_unet(eps_ckpt)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 33, UNET["ctx"], generator=gen)
    with torch.no_grad():
        eps = unet(x, torch.tensor(TIMESTEPS), encoder_hidden_states=context).sample
    for suffix, arr in [("x", x), ("context", context), ("eps", eps)]:
        write("sd2_unet_%s.bin" % suffix, arr.numpy())
    print("unet: eps std %.4f" % float(eps.std()))

    noise = torch.randn([1, 4, SAMPLE_SIZE // 8, SAMPLE_SIZE // 8], generator=torch.manual_seed(SAMPLE_SEED))
    write("sd2_sample_noise.bin", noise.numpy())
    cond = encode_h(clip_h, windows(0))  # [prompt, ""]: positive then negative
    write("sd2_sample_eps_final.bin", (sample(unet, cond, False, False, noise) / 0.18215).numpy())
    write("sd2_sample_lcm_final.bin", (sample(unet, cond, False, False, noise, lcm=True) / 0.18215).numpy())
    v_unet = make_unet(v_ckpt)
    v_cond = encode_h(make_clip_h(v_ckpt), windows(0))
    write("sd2_sample_v_final.bin", (sample(v_unet, v_cond, True, False, noise) / 0.18215).numpy())
    write("sd2_sample_vz_final.bin", (sample(v_unet, v_cond, True, True, noise) / 0.18215).numpy())
    # RescaleCFG at cfg 30, where it changes the result (the tiny model's two sides differ little).
    rescaled = sample(v_unet, v_cond, True, False, noise, 0.7, RESCALE_CFG)
    plain = sample(v_unet, v_cond, True, False, noise, None, RESCALE_CFG)
    print("RescaleCFG changes the final latent by %.3g (std of the difference)" % float((rescaled - plain).std()))
    write("sd2_sample_vr_final.bin", (rescaled / 0.18215).numpy())


if __name__ == "__main__":
    sys.exit(main())
