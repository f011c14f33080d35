#!/usr/bin/env python3
"""Whole ControlNet txt2img runs on the project's tiny files, with the reference libraries.

The models and the sampling are make_pipeline_goldens.py's (tiny checkpoint, seed 42; diffusers'
UNet, transformers' CLIP, k-diffusion's samplers, ComfyUI's schedulers and noise). Added: the
tiny ControlNet sdflow_mkckpt --preset tiny --kind controlnet --seed 11 (float32), converted
with diffusers' convert_controlnet_checkpoint into ControlNetModel, run as ComfyUI's
ControlNetApplyAdvanced makes it run:

- the hint is the IMAGE LoadImage gives for a 120x80 RGB PNG of 8-bit levels
  (7x + 2y + 50c + (x*y mod 11)) mod 256, prepared as comfy.utils.common_upscale(hint, 64, 64,
  "nearest-exact", "center") (crop to the latent's aspect ratio, then resize to 8x the latent);
- at each model call, when not (sigma > percent_to_sigma(start) or sigma < percent_to_sigma(end)),
  ControlNetModel(x / sqrt(sigma^2 + 1), timestep(sigma), context, hint, conditioning_scale =
  strength) on the cond and uncond batch, its residuals given to the UNet.

Writes tests/data/goldens/controlnet_pipeline_<run>.bin (the final LATENT / 0.18215).
Run: /opt/refenv/bin/python tests/reference/make_controlnet_pipeline_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_pipeline_goldens as mpg  # noqa: E402  (models, prompt encoding, constants)
import make_sampling_goldens as msg  # noqa: E402  (schedulers, k-diffusion loader)
import make_token_goldens as mtg  # noqa: E402  (CLIPTokenizer over sdflow's vocabulary)
from make_unet_goldens import write  # noqa: E402  (the SDG1 golden format)

HINT_W, HINT_H = 120, 80
# (name, sampler, scheduler, seed, cfg, strength, start_percent, end_percent)
RUNS = [
    ("full", "euler", "normal", 21, 7.5, 1.0, 0.0, 1.0),
    ("range", "dpmpp_2m", "karras", 22, 6.0, 0.7, 0.2, 0.7),
]


def hint_image():
    """LoadImage's IMAGE of the test PNG: [1, H, W, 3] float32 = level / 255."""
    y, x, c = np.meshgrid(np.arange(HINT_H), np.arange(HINT_W), np.arange(3), indexing="ij")
    v = (7 * x + 2 * y + 50 * c + (x * y) % 11) % 256
    return torch.from_numpy(v.astype(np.float32) / np.float32(255.0))[None]


def common_upscale(s, width, height):
    """comfy.utils.common_upscale(s, width, height, "nearest-exact", "center") on [B, C, H, W]."""
    old_w, old_h = s.shape[-1], s.shape[-2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    s = s.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    return F.interpolate(s, size=(height, width), mode="nearest-exact")


def percent_to_sigma(ms, percent):
    """ComfyUI's ModelSamplingDiscrete.percent_to_sigma."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return ms.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


def load_controlnet(path, unet):
    ucfg = unet.config
    ccfg = {k: ucfg[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                                 "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                                 "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
                                 "projection_class_embeddings_input_dim", "transformer_layers_per_block")}
    ccfg["conditioning_channels"] = 3
    cn = ControlNetModel(**ccfg)
    cn.load_state_dict({k: v.float() for k, v in sfu.convert_controlnet_checkpoint(load_file(path), ccfg).items()},
                       strict=True)
    return cn.eval()


class ControlDenoiser:
    """make_pipeline_goldens.Denoiser with a ControlNet on both halves of the CFG batch."""

    def __init__(self, unet, controlnet, ms, cond, uncond, cfg, hint, strength, start, end):
        self.unet, self.controlnet, self.ms, self.cfg, self.strength = unet, controlnet, ms, cfg, strength
        self.context = torch.cat([cond, uncond])
        self.hint = torch.cat([hint, hint])
        self.range = (percent_to_sigma(ms, start), percent_to_sigma(ms, end))
        self.calls = self.active = 0

    def __call__(self, x, sigma, **kwargs):
        sigma = sigma.reshape(-1)[:1].float()
        xin = x / (sigma ** 2 + 1) ** 0.5
        t = self.ms.timestep(sigma).float()
        xx, tt = torch.cat([xin, xin]), torch.cat([t, t])
        extra = {}
        s = float(sigma)
        self.calls += 1
        with torch.no_grad():
            if not (s > self.range[0] or s < self.range[1]):
                self.active += 1
                down, mid = self.controlnet(xx, tt, encoder_hidden_states=self.context, controlnet_cond=self.hint,
                                            conditioning_scale=self.strength, return_dict=False)
                extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            eps = self.unet(xx, tt, encoder_hidden_states=self.context, **extra).sample
        den = torch.cat([x, x]) - eps * sigma
        cond, uncond = den[:1], den[1:]
        return uncond + (cond - uncond) * self.cfg


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path, cn_path = os.path.join(tmp, "tiny.safetensors"), os.path.join(tmp, "cn.safetensors")
        subprocess.run([tool, "--preset", "tiny", "--seed", str(mpg.SEED_WEIGHTS), path], check=True)
        subprocess.run([tool, "--preset", "tiny", "--kind", "controlnet", "--seed", "11", cn_path], check=True)
        unet, _, clip = mpg.load_models(path)
        controlnet = load_controlnet(cn_path, unet)
    K = msg.k_sampling()
    ms = msg.ModelSamplingDiscrete()
    tok = mtg.build_tokenizer()
    cond, uncond = mpg.encode(tok, clip, mpg.POSITIVE), mpg.encode(tok, clip, mpg.NEGATIVE)
    hint = common_upscale(hint_image().movedim(-1, 1), mpg.SIZE, mpg.SIZE)
    for name, sampler, scheduler, seed, cfg, strength, start, end in RUNS:
        sigmas = msg.ksampler_sigmas(ms, scheduler, sampler, mpg.STEPS, 1.0)
        noise = torch.randn([1, 4, mpg.SIZE // 8, mpg.SIZE // 8], generator=torch.manual_seed(seed))
        x = noise * (1 + float(sigmas[0]) ** 2) ** 0.5
        gen = torch.Generator().manual_seed(seed + 1)

        def noise_sampler(sigma, sigma_next, shape=noise.shape, gen=gen):
            return torch.randn(shape, generator=gen)

        model = ControlDenoiser(unet, controlnet, ms, cond, uncond, cfg, hint, strength, start, end)
        out = msg.run_sampler(K, sampler, sigmas, x, model, noise_sampler)
        final = out / mpg.SCALE
        write("controlnet_pipeline_%s.bin" % name, final.numpy())
        print("%-6s ControlNet active in %d of %d model calls, final latent std %.4f"
              % (name, model.active, model.calls, float(final.std())))


if __name__ == "__main__":
    main()
