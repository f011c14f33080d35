#!/usr/bin/env python3
"""Checks sdflow's SD2.x single-file layout (the sd2 and sd2-v presets of sdflow_mkckpt) against
diffusers/transformers at full size, on the meta device, as check_sdxl_layout.py does for SDXL.

The tensors sdflow_mkckpt would write (--list) are converted with diffusers' single-file
converters (convert_ldm_unet_checkpoint, convert_open_clip_checkpoint, convert_ldm_vae_checkpoint)
and must equal the state dicts of UNet2DConditionModel (stable-diffusion-2-1's config: heads of 64
channels, linear projections, context 1024), CLIPTextModelWithProjection at ViT-H/14 size (with text_projection) and AutoencoderKL. The
converter ignores the last text layer and text_projection (SD_2_TEXT_ENCODER_KEYS_TO_IGNORE: SD2
never uses them), so that layer is checked to have the 22nd layer's names and shapes, and
text_projection to be [1024, 1024] as in the v2-1 files. Developer tool; CI never
runs it.

    python3 tests/reference/check_sd2_layout.py build/sdflow_mkckpt
"""
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_sdxl_layout import compare, listing, sub  # noqa: E402

H = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   hidden_act="gelu", projection_dim=1024)


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    ok = True
    for preset in ("sd2", "sd2-v"):
        ckpt = listing(tool, preset)
        with torch.device("meta"):
            unet = UNet2DConditionModel(
                sample_size=96, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=(5, 10, 20, 20),
                cross_attention_dim=1024, use_linear_projection=True)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
            h = CLIPTextModelWithProjection(H)
        ok &= compare(preset + " UNet", unet, sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config)))
        ok &= compare(preset + " VAE", vae, sfu.convert_ldm_vae_checkpoint(sub(ckpt, "first_stage_model."), vae.config))
        converted = sfu.convert_open_clip_checkpoint(h, ckpt, prefix="cond_stage_model.model.")
        for k, v in h.state_dict().items():  # layer 23, which the converter leaves out
            if ".layers.23." in k or k.startswith("text_projection"):
                converted[k] = v
        ok &= compare(preset + " OpenCLIP-H", h, converted)
        last = {k.replace(".22.", ".23."): tuple(v.shape) for k, v in ckpt.items() if ".resblocks.22." in k}
        same = last == {k: tuple(v.shape) for k, v in ckpt.items() if ".resblocks.23." in k}
        same &= tuple(ckpt["cond_stage_model.model.text_projection"].shape) == (1024, 1024)
        print("%-28s %s" % (preset + " OpenCLIP-H layer 23", "ok" if same else "MISMATCH"))
        ok &= same
        print("%s: %d tensors" % (preset, len(ckpt)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
