#!/usr/bin/env python3
"""Checks sdflow's SDXL single-file layouts (the sdxl and sdxl-refiner presets of sdflow_mkckpt)
against diffusers/transformers at full size, on the meta device.

The tensors sdflow_mkckpt would write (--list) are converted with diffusers' own single-file
converters (convert_ldm_unet_checkpoint, convert_ldm_clip_checkpoint's prefix rule,
convert_open_clip_checkpoint, convert_ldm_vae_checkpoint) and must equal the state dicts of
UNet2DConditionModel (sd_xl_base_1.0 / sd_xl_refiner_1.0 configs), CLIPTextModel (ViT-L/14),
CLIPTextModelWithProjection (ViT-bigG/14) and AutoencoderKL: same keys, same shapes, nothing left
over (position_ids aside). Developer tool; CI never runs it.

    python3 tests/reference/check_sdxl_layout.py build/sdflow_mkckpt
"""
import subprocess
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

BASE_UNET = dict(block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                 "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 projection_class_embeddings_input_dim=2816)
REFINER_UNET = dict(block_out_channels=(384, 768, 1536, 1536), down_block_types=("DownBlock2D",
                    "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=4, attention_head_dim=(6, 12, 24, 24), cross_attention_dim=1280,
                    projection_class_embeddings_input_dim=2560)
L = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   hidden_act="quick_gelu")
G = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   hidden_act="gelu", projection_dim=1280)


def listing(tool, preset):
    out = subprocess.run([tool, "--list", "--preset", preset], check=True, capture_output=True, text=True).stdout
    ckpt = {}
    for line in out.splitlines():
        name, shape = line.split(" ", 1)
        dims = [int(d) for d in shape.strip("[]").split(", ") if d]
        ckpt[name] = torch.empty(dims, device="meta")
    return ckpt


def compare(what, model, converted):
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if "position_ids" not in k}
    got = {k: tuple(v.shape) for k, v in converted.items() if "position_ids" not in k}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    bad = [k for k in set(want) & set(got) if want[k] != got[k]]
    ok = not missing and not extra and not bad
    print("%-28s %s (%d tensors)%s" % (what, "ok" if ok else "MISMATCH", len(want),
                                       "" if ok else " missing %s extra %s shapes %s" % (missing[:3], extra[:3], bad[:3])))
    return ok


def sub(ckpt, prefix):
    return {k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    ok = True
    for preset, unet_cfg, g_prefix in [("sdxl", BASE_UNET, "conditioner.embedders.1.model."),
                                       ("sdxl-refiner", REFINER_UNET, "conditioner.embedders.0.model.")]:
        ckpt = listing(tool, preset)
        with torch.device("meta"):
            unet = UNet2DConditionModel(sample_size=128, layers_per_block=2, use_linear_projection=True,
                                        addition_embed_type="text_time", addition_time_embed_dim=256, **unet_cfg)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
            g = CLIPTextModelWithProjection(G)
            l_model = CLIPTextModel(L) if preset == "sdxl" else None
        ok &= compare(preset + " UNet", unet, sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config)))
        ok &= compare(preset + " VAE", vae, sfu.convert_ldm_vae_checkpoint(sub(ckpt, "first_stage_model."), vae.config))
        ok &= compare(preset + " OpenCLIP-bigG", g, sfu.convert_open_clip_checkpoint(g, ckpt, prefix=g_prefix))
        if l_model is not None:
            sd = sub(ckpt, "conditioner.embedders.0.transformer.")
            if not any(k.startswith("text_model.") for k in l_model.state_dict()):
                sd = sub(sd, "text_model.")  # transformers versions that drop the wrapper's name
            ok &= compare(preset + " CLIP-L", l_model, sd)
        print("%s: %d tensors" % (preset, len(ckpt)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
