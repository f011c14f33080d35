#!/usr/bin/env python3
"""Whole txt2img/img2img runs on the project's tiny checkpoint, with the reference libraries.

The checkpoint is written by sdflow_mkckpt (--preset tiny --seed 42, float32); the C test
(tests/nodes/test_pipeline.c) writes the identical file. Its LDM tensors are loaded into
diffusers' UNet2DConditionModel and AutoencoderKL (with diffusers' single-file converters) and
transformers' CLIPTextModel. Prompts are tokenized by transformers' CLIPTokenizer over sdflow's
vocabulary (make_token_goldens.build_tokenizer), word by word as ComfyUI does, and weighted as
ComfyUI's SD1 encoder does: z_empty + (z - z_empty) * weight.

Sampling follows ComfyUI's KSampler on the CPU: sigmas from ComfyUI's schedulers
(make_sampling_goldens), initial noise torch.randn after torch.manual_seed(seed), scaled by
sqrt(1 + sigma0^2) at sigma_max (else sigma0), the denoiser UNet(x / sqrt(sigma^2 + 1),
timestep(sigma)) with cond and uncond in one batch and cfg, and k-diffusion's own sampler
functions (sampling.py loaded by path). Ancestral and SDE noise is ComfyUI's default noise
sampler on the CPU, randn of the latent's shape from a generator seeded with seed + 1 (for
dpmpp_2m_sde this stands in for torchsde's Brownian tree, as in sdflow).

Writes tests/data/goldens/pipeline_<run>.bin (the final LATENT, i.e. divided by the VAE scale
factor as ComfyUI stores latents) and pipeline_image.bin (the first run decoded, NHWC in [0, 1]).

Run: /opt/refenv/bin/python tests/reference/make_pipeline_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sampling_goldens as msg  # noqa: E402  (schedulers, k-diffusion loader)
import make_token_goldens as mtg  # noqa: E402  (CLIPTokenizer over sdflow's vocabulary)
from make_unet_goldens import write  # noqa: E402  (the SDG1 golden format)

SEED_WEIGHTS = 42
SCALE = 0.18215
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
# (name, sampler, scheduler, seed, cfg, denoise, img2img)
RUNS = [
    ("euler", "euler", "normal", 7, 7.5, 1.0, False),
    ("euler_ancestral", "euler_ancestral", "normal", 8, 7.5, 1.0, False),
    ("heun", "heun", "normal", 9, 5.0, 1.0, False),
    ("dpmpp_2m_karras", "dpmpp_2m", "karras", 10, 7.5, 1.0, False),
    ("dpmpp_2m_sde", "dpmpp_2m_sde", "karras", 11, 7.5, 1.0, False),
    ("ddim", "ddim", "ddim_uniform", 12, 7.5, 1.0, False),
    ("img2img", "euler", "normal", 13, 7.5, 0.6, True),
]
STEPS = 6
SIZE = 64
POSITIVE = [("a red fox", 1.0), ("in the snow", 1.3), (", photograph", 1.0)]  # "a red fox (in the snow:1.3), photograph"
NEGATIVE = [("blurry", 1.0)]


def input_image():
    """The img2img input, [1, H, W, 3] in [0, 1]: 8-bit levels (5x + 3y + 70c + xy mod 7) mod 256."""
    y, x, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), np.arange(3), indexing="ij")
    v = (5 * x + 3 * y + 70 * c + (x * y) % 7) % 256
    return torch.from_numpy((v.astype(np.float32) / 255.0)[None])


def load_models(path):
    ckpt = load_file(path)
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2, 2],
        "attention_resolutions": [1, 2], "num_res_blocks": 1, "transformer_depth": 1, "context_dim": 64,
        "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 2, 2]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    unet = UNet2DConditionModel(**ucfg)
    unet.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()}, strict=True)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
                        block_out_channels=[32, 64, 64, 64], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        sample_size=64)
    vae_ldm = {k[len("first_stage_model."):]: v for k, v in ckpt.items() if k.startswith("first_stage_model.")}
    vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(vae_ldm, vae.config), strict=True)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407)
    clip = CLIPTextModel(config)
    sd = {k[len(CLIP_PREFIX):]: v for k, v in ckpt.items() if k.startswith(CLIP_PREFIX)}
    if any(k.startswith("text_model.") for k in clip.state_dict()):
        sd = {"text_model." + k: v for k, v in sd.items()}
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    assert not [k for k in missing + unexpected if "position_ids" not in k], (missing, unexpected)
    return unet.eval(), vae.eval(), clip.eval()


def encode(tok, clip, segments):
    """ComfyUI's SD1 CLIPTextEncode for a prompt of at most 75 tokens: [1, 77, width]."""
    ids, weights = [49406], [1.0]
    for text, weight in segments:
        for word in text.replace("\n", " ").split(" "):
            if word:
                t = tok(word)["input_ids"][1:-1]
                ids += t
                weights += [weight] * len(t)
    assert len(ids) <= 76
    ids += [49407] * (77 - len(ids))
    weights += [1.0] * (77 - len(weights))
    empty = [49406] + [49407] * 76
    with torch.no_grad():
        z = clip(input_ids=torch.tensor([ids, empty])).last_hidden_state
    out, z_empty = z[0].clone(), z[1]
    for j, w in enumerate(weights):
        if w != 1.0:
            out[j] = (out[j] - z_empty[j]) * w + z_empty[j]
    return out[None]


class Denoiser:
    """ComfyUI's eps-model denoiser with classifier-free guidance."""

    def __init__(self, unet, ms, cond, uncond, cfg):
        self.unet, self.ms, self.cfg = unet, ms, cfg
        self.context = torch.cat([cond, uncond])

    def __call__(self, x, sigma, **kwargs):
        sigma = sigma.reshape(-1)[:1].float()
        xin = x / (sigma ** 2 + 1) ** 0.5
        t = self.ms.timestep(sigma).float()
        with torch.no_grad():
            eps = self.unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=self.context).sample
        den = torch.cat([x, x]) - eps * sigma
        cond, uncond = den[:1], den[1:]
        return uncond + (cond - uncond) * self.cfg


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny.safetensors")
        subprocess.run([tool, "--preset", "tiny", "--seed", str(SEED_WEIGHTS), path], check=True)
        unet, vae, clip = load_models(path)
    K = msg.k_sampling()
    ms = msg.ModelSamplingDiscrete()
    tok = mtg.build_tokenizer()
    cond, uncond = encode(tok, clip, POSITIVE), encode(tok, clip, NEGATIVE)
    with torch.no_grad():
        image_latent = vae.encode(input_image().permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
    for name, sampler, scheduler, seed, cfg, denoise, img2img in RUNS:
        sigmas = msg.ksampler_sigmas(ms, scheduler, sampler, STEPS, denoise)
        noise = torch.randn([1, 4, SIZE // 8, SIZE // 8], generator=torch.manual_seed(seed))
        latent = image_latent * SCALE if img2img else torch.zeros_like(noise)
        smax, s0 = float(ms.sigma_max), float(sigmas[0])
        x = latent + noise * ((1 + s0 ** 2) ** 0.5 if abs(s0 - smax) <= 1e-5 * smax or s0 > smax else s0)
        gen = torch.Generator().manual_seed(seed + 1)

        def noise_sampler(sigma, sigma_next, shape=noise.shape, gen=gen):
            return torch.randn(shape, generator=gen)

        model = Denoiser(unet, ms, cond, uncond, cfg)
        out = msg.run_sampler(K, sampler, sigmas, x, model, noise_sampler)
        final = out / SCALE
        write("pipeline_%s.bin" % name, final.numpy())
        if name == RUNS[0][0]:
            with torch.no_grad():
                img = ((vae.decode(final).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
            write("pipeline_image.bin", img.numpy())
        print("%-16s %2d sigmas, final latent std %.4f" % (name, len(sigmas), float(final.std())))


if __name__ == "__main__":
    main()
