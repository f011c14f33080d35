#!/usr/bin/env python3
"""Writes the SDXL goldens under tests/data/goldens/ from diffusers and transformers.

The checkpoints are written by the project's own tool (sdflow_mkckpt --preset sdxl-tiny --seed 11
and --preset sdxl-refiner-tiny --seed 12, float32; the C test tests/models/test_sdxl.c writes the
identical files). Their single-file tensors are converted with diffusers' own single-file
converters: convert_ldm_unet_checkpoint into UNet2DConditionModel with
addition_embed_type="text_time" (SDXL's ADM label embedding), convert_ldm_clip_checkpoint into
transformers' CLIPTextModel (CLIP-L, quick GELU) and convert_open_clip_checkpoint into
CLIPTextModelWithProjection (OpenCLIP-bigG: GELU, in_proj split, text_projection).

Goldens (the SDG1 format of make_unet_goldens.py):
- sdxl_clip_tokens.bin: two 77-token windows (ids as floats): a prompt and the empty prompt,
  each [BOS, tokens, EOS] then padded with EOS (CLIP-L); bigG gets the same windows padded
  with 0, as ComfyUI's SDXL tokenizer pads.
- sdxl_clip_l.bin, sdxl_clip_g.bin: the penultimate hidden states (hidden_states[-2], no final
  LayerNorm, as ComfyUI's SDXL encoders use them) [2, 77, width]; sdxl_clip_g_pooled.bin: bigG's
  text_embeds [2, projection] (final LayerNorm at the first end token, then text_projection);
  the same for the refiner's bigG (sdxl_refiner_clip_g*.bin).
- sdxl_unet_*.bin, sdxl_refiner_unet_*.bin: one forward (batch 2, timesteps 981 and 250.5, 33
  context tokens) with
  text_embeds and time_ids (height, width, crop_h, crop_w, target_height, target_width; refiner:
  height, width, crop_h, crop_w, aesthetic score), which diffusers embeds as ComfyUI's
  encode_adm does; the C test builds the ADM vector from the same numbers.
- sdxl_sample_*.bin: a whole 5-step Euler run (ComfyUI's "normal" schedule, cfg 6) at 64x64 with
  CLIPTextEncode prompts: the noise and the final latent; sdxl_refine_final.bin: the same run with
  the refiner taking over at step 3 (graphs/sdxl-refiner.xml's KSamplerAdvanced pair). The tests
  compare the model's contribution (final latent minus the scaled initial noise).

Run: python3 tests/reference/make_sdxl_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_unet_goldens import write  # noqa: E402  (the SDG1 golden format)

BASE = {"preset": "sdxl-tiny", "seed": 11, "mc": 64, "mult": [1, 1, 2, 2], "attn": [0, 1, 1, 1],
        "depth": [0, 2, 1, 2], "middle": 2, "nrb": 2, "ctx": 320, "adm": 160 + 6 * 256,
        "l": {"width": 128, "layers": 3, "inter": 512}, "g": {"width": 192, "layers": 4, "inter": 768, "proj": 160}}
REFINER = {"preset": "sdxl-refiner-tiny", "seed": 12, "mc": 64, "mult": [1, 2, 1, 2, 1], "attn": [0, 1, 1, 1, 0],
           "depth": [0, 1, 3, 1, 0], "middle": 3, "nrb": 2, "ctx": 128, "adm": 96 + 5 * 256,
           "g": {"width": 128, "layers": 3, "inter": 512, "proj": 96}}
L_PREFIX = "conditioner.embedders.0.transformer.text_model."
G_PREFIX = "conditioner.embedders.1.model."
REFINER_G_PREFIX = "conditioner.embedders.0.model."
# "a photo of a cat" and the empty prompt, as sdflow's tokenizer gives them.
PROMPT_IDS = [320, 1125, 539, 320, 2368]
TIMESTEPS = [981.0, 250.5]
BASE_TIME_IDS = [[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0], [768.0, 512.0, 16.0, 8.0, 640.0, 480.0]]
REFINER_TIME_IDS = [[1024.0, 1024.0, 0.0, 0.0, 6.0], [768.0, 512.0, 16.0, 8.0, 2.5]]
SAMPLE_STEPS, SAMPLE_CFG, SAMPLE_SIZE, SAMPLE_SEED, REFINE_AT = 5, 6.0, 64, 99, 3


def windows(pad):
    ids = [49406] + PROMPT_IDS + [49407]
    empty = [49406, 49407]
    return torch.tensor([w + [pad] * (77 - len(w)) for w in (ids, empty)])


def make_unet(cfg, ckpt):
    levels = len(cfg["mult"])
    channels = [cfg["mc"] * m for m in cfg["mult"]]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg["attn"]]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg["attn"])]
    # diffusers' middle block takes the last entry of transformer_layers_per_block: where the last
    # level has attention it is that level's depth (the presets agree), else it serves the middle only.
    depths = [d if d else 1 for d in cfg["depth"]]
    if not cfg["attn"][-1]:
        depths[-1] = cfg["middle"]
    assert depths[-1] == cfg["middle"]
    unet = UNet2DConditionModel(
        sample_size=None, in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=cfg["nrb"], cross_attention_dim=cfg["ctx"],
        attention_head_dim=[c // 64 if c >= 64 else 1 for c in channels], transformer_layers_per_block=depths,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=cfg["adm"], norm_num_groups=32)
    assert levels == len(down)
    converted = sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    unet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return unet.eval()


def clip_config(c, act):
    return CLIPTextConfig(vocab_size=49408, hidden_size=c["width"], intermediate_size=c["inter"],
                          num_hidden_layers=c["layers"], num_attention_heads=c["width"] // 64,
                          max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
                          projection_dim=c.get("proj", c["width"]), bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=1)


def load_strict(model, sd):
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not [k for k in missing + unexpected if "position_ids" not in k], (missing, unexpected)
    return model.eval()


def make_clip_l(cfg, ckpt):
    model = CLIPTextModel(clip_config(cfg["l"], "quick_gelu"))
    sd = {k[len(L_PREFIX):]: v for k, v in ckpt.items() if k.startswith(L_PREFIX)}
    if any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {"text_model." + k: v for k, v in sd.items()}
    return load_strict(model, sd)


def make_clip_g(cfg, ckpt, prefix):
    model = CLIPTextModelWithProjection(clip_config(cfg["g"], "gelu"))
    return load_strict(model, sfu.convert_open_clip_checkpoint(model, ckpt, prefix=prefix))


def write_checkpoint(tool, tmp, cfg):
    path = os.path.join(tmp, cfg["preset"] + ".safetensors")
    subprocess.run([tool, "--preset", cfg["preset"], "--seed", str(cfg["seed"]), path], check=True)
    return load_file(path)


def encode_g(clip_g, pad0):
    with torch.no_grad():
        out = clip_g(input_ids=pad0, output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def unet_case(name, cfg, unet, time_ids):
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 33, cfg["ctx"], generator=gen)
    pooled = torch.randn(2, cfg["g"]["proj"], generator=gen)
    ids = torch.tensor(time_ids)
    t = torch.tensor(TIMESTEPS)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=context,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    for suffix, arr in [("x", x), ("context", context), ("pooled", pooled), ("time_ids", ids), ("eps", eps)]:
        write("%s_unet_%s.bin" % (name, suffix), arr.numpy())
    print("%s unet: eps std %.4f" % (name, float(eps.std())))


def normal_sigmas(steps, zsnr=False):
    """ComfyUI's ModelSamplingDiscrete (scaled-linear betas 0.00085..0.012; zsnr:
    rescale_zero_terminal_snr_sigmas) and "normal" scheduler."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    sigmas = ((1 - ac) / ac) ** 0.5
    if zsnr:
        a = (1 / (sigmas * sigmas + 1)).sqrt()
        a0, aT = a[0].clone(), a[-1].clone()
        a = (a - aT) * (a0 / (a0 - aT))
        abar = a ** 2
        abar[-1] = 4.8973451890853435e-08
        sigmas = ((1 - abar) / abar) ** 0.5
    log_sigmas = sigmas.log().float()
    sigmas = sigmas.float()

    def timestep(sigma):
        return (sigma.log() - log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def sigma_of(t):
        t = torch.clamp(t.float(), 0, 999)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    start, end = timestep(sigmas[-1:]), timestep(sigmas[:1])
    ts = torch.linspace(float(start), float(end), steps)
    return [float(sigma_of(v)) for v in ts] + [0.0], timestep


def encode_base(clip_l, clip_g):
    """CLIPTextEncode of the prompt and of "" on the base: context [2, 77, 2048] and pooled [2, 1280]."""
    with torch.no_grad():
        cl = clip_l(input_ids=windows(49407), output_hidden_states=True).hidden_states[-2]
    g_hidden, g_pooled = encode_g(clip_g, windows(0))
    return torch.cat([cl, g_hidden], dim=-1), g_pooled


def euler(x, sigmas, steps, model_for_step):
    """k-diffusion's Euler over sigmas[steps[0]] .. sigmas[steps[-1] + 1] with CFG: model_for_step(i)
    gives (unet, context [pos, neg], pooled [pos, neg], time_ids [pos, neg])."""
    _, timestep = normal_sigmas(SAMPLE_STEPS)
    for i in steps:
        unet, context, pooled, ids = model_for_step(i)
        s = torch.tensor([sigmas[i]])
        xin = x / (s ** 2 + 1) ** 0.5
        t = timestep(s).float()
        with torch.no_grad():
            eps = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=context,
                       added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
        den = torch.cat([x, x]) - eps * s
        denoised = den[1:] + (den[:1] - den[1:]) * SAMPLE_CFG
        x = x + (x - denoised) / s * (sigmas[i + 1] - sigmas[i])
    return x


def sample_cases(unet, clip_l, clip_g, refiner_unet, refiner_g):
    """ComfyUI's KSampler (euler, normal, cfg 6, 5 steps, 64x64) with CLIPTextEncode prompts, whose
    ADM vectors take ComfyUI's defaults: the image size (64, 64, crops 0, targets 64, 64) and on the
    refiner aesthetic scores 6 (positive) and 2.5 (negative). First the base alone; then the base
    for steps 0-2 and the refiner for steps 3-4 (KSamplerAdvanced with the leftover noise, as
    graphs/sdxl-refiner.xml)."""
    context, pooled = encode_base(clip_l, clip_g)
    size = float(SAMPLE_SIZE)
    ids = torch.tensor([[size, size, 0.0, 0.0, size, size]] * 2)
    r_context, r_pooled = encode_g(refiner_g, windows(0))
    r_ids = torch.tensor([[size, size, 0.0, 0.0, 6.0], [size, size, 0.0, 0.0, 2.5]])
    sigmas, _ = normal_sigmas(SAMPLE_STEPS)
    noise = torch.randn([1, 4, SAMPLE_SIZE // 8, SAMPLE_SIZE // 8], generator=torch.manual_seed(SAMPLE_SEED))
    x0 = noise * (1 + sigmas[0] ** 2) ** 0.5
    base = euler(x0, sigmas, range(SAMPLE_STEPS), lambda i: (unet, context, pooled, ids))
    refined = euler(x0, sigmas, range(SAMPLE_STEPS), lambda i: (unet, context, pooled, ids) if i < REFINE_AT
                    else (refiner_unet, r_context, r_pooled, r_ids))
    write("sdxl_sample_noise.bin", noise.numpy())
    write("sdxl_sample_final.bin", (base / 0.13025).numpy())
    write("sdxl_refine_final.bin", (refined / 0.13025).numpy())
    print("sample: %d steps, contribution std %.4f; refined at %d: %.4f" % (
        SAMPLE_STEPS, float((base - x0).std()), REFINE_AT, float((refined - x0).std())))


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        base = write_checkpoint(tool, tmp, BASE)
        refiner = write_checkpoint(tool, tmp, REFINER)
    clip_l = make_clip_l(BASE, base)
    clip_g = make_clip_g(BASE, base, G_PREFIX)
    write("sdxl_clip_tokens.bin", windows(49407).float().numpy())
    with torch.no_grad():
        hl = clip_l(input_ids=windows(49407), output_hidden_states=True).hidden_states[-2]
    write("sdxl_clip_l.bin", hl.numpy())
    hg, pg = encode_g(clip_g, windows(0))
    write("sdxl_clip_g.bin", hg.numpy())
    write("sdxl_clip_g_pooled.bin", pg.numpy())
    refiner_g = make_clip_g(REFINER, refiner, REFINER_G_PREFIX)
    hg, pg = encode_g(refiner_g, windows(0))
    write("sdxl_refiner_clip_g.bin", hg.numpy())
    write("sdxl_refiner_clip_g_pooled.bin", pg.numpy())
    print("clip: L std %.4f, G std %.4f, pooled std %.4f" % (float(hl.std()), float(hg.std()), float(pg.std())))
    unet = make_unet(BASE, base)
    unet_case("sdxl", BASE, unet, BASE_TIME_IDS)
    refiner_unet = make_unet(REFINER, refiner)
    unet_case("sdxl_refiner", REFINER, refiner_unet, REFINER_TIME_IDS)
    sample_cases(unet, clip_l, clip_g, refiner_unet, refiner_g)


if __name__ == "__main__":
    sys.exit(main())
