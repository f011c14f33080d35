#!/usr/bin/env python3
"""SDXL LoRA goldens from diffusers + peft (tests/models/test_sdxl_lora.c).

The checkpoint and the LoRA come from the project's own tools (the C test writes the identical
files):
    sdflow_mkckpt --preset sdxl-tiny --seed 11 ck.safetensors          (as make_sdxl_goldens.py)
    sdflow_mklora --seed 5 ck.safetensors lora.safetensors
(kohya layout: every UNet attention projection, feed-forward Linear and proj_in/proj_out named
the diffusers way, the 3x3 conv1 of down_blocks.0.resnets.0, every CLIP-L projection and MLP
Linear as lora_te1_*, and the same of OpenCLIP-bigG as lora_te2_* under transformers' names:
q/k/v patch the thirds of open_clip's fused in_proj; rank 4, alpha 2).

diffusers converts the checkpoint (make_sdxl_goldens.py: convert_ldm_unet_checkpoint,
convert_ldm_clip_checkpoint, convert_open_clip_checkpoint, which splits in_proj into q/k/v), reads
the LoRA with StableDiffusionXLPipeline.lora_state_dict (its own kohya conversion) and loads it
with load_lora_into_unet / load_lora_into_text_encoder (peft layers), merged at strength 0.8
(UNet), 1.3 (CLIP-L) and 0.6 (bigG). Recorded, float32, on the inputs of make_sdxl_goldens.py
(sdxl_unet_x/context/pooled/time_ids.bin, sdxl_clip_tokens.bin):
  sdxl_lora_unet_eps.bin                  the patched UNet's output
  sdxl_lora_clip_l.bin, sdxl_lora_clip_g.bin, sdxl_lora_clip_g_pooled.bin
                                          the patched encoders' penultimate hidden states and
                                          bigG's pooled output for the golden windows

Run: python3 tests/reference/make_sdxl_lora_goldens.py [build]   (needs peft)"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionXLPipeline as XL
from peft.tuners.tuners_utils import BaseTunerLayer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sdxl_goldens as g  # noqa: E402
from make_unet_goldens import write  # noqa: E402

GOLDENS = os.path.join(HERE, "..", "data", "goldens")
UNET_STRENGTH, L_STRENGTH, G_STRENGTH = 0.8, 1.3, 0.6


def read(name):
    with open(os.path.join(GOLDENS, name), "rb") as f:
        data = f.read()
    assert data[:4] == b"SDG1"
    nd = int(np.frombuffer(data, "<i4", 1, 4)[0])
    shape = tuple(np.frombuffer(data, "<i4", nd, 8))
    return torch.from_numpy(np.frombuffer(data, "<f4", offset=8 + 4 * nd).reshape(shape).copy())


def merge(model, strength):
    n = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.scale_layer(strength)
            module.merge()
            n += 1
    return n


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    with tempfile.TemporaryDirectory() as tmp:
        ck, lora = os.path.join(tmp, "ck.safetensors"), os.path.join(tmp, "lora.safetensors")
        cfg = g.BASE
        subprocess.run([os.path.join(build, "sdflow_mkckpt"), "--preset", cfg["preset"], "--seed", str(cfg["seed"]),
                        ck], check=True)
        subprocess.run([os.path.join(build, "sdflow_mklora"), "--seed", "5", ck, lora], check=True)
        ckpt = g.load_file(ck)
        unet, clip_l, clip_g = g.make_unet(cfg, ckpt), g.make_clip_l(cfg, ckpt), g.make_clip_g(cfg, ckpt, g.G_PREFIX)
        sd, alphas = XL.lora_state_dict(lora)
        unet_sd = {k: v for k, v in sd.items() if k.startswith("unet.")}
        XL.load_lora_into_unet(unet_sd, alphas, unet=unet)
        for prefix, model in (("text_encoder", clip_l), ("text_encoder_2", clip_g)):
            te_sd = {k: v for k, v in sd.items() if k.startswith(prefix + ".")}
            te_alphas = {k: v for k, v in (alphas or {}).items() if k.startswith(prefix + ".")}
            XL.load_lora_into_text_encoder(te_sd, te_alphas, text_encoder=model, prefix=prefix)
        counts = merge(unet, UNET_STRENGTH), merge(clip_l, L_STRENGTH), merge(clip_g, G_STRENGTH)
        print("merged LoRA layers (UNet, CLIP-L, bigG):", counts)
        with torch.no_grad():
            eps = unet(read("sdxl_unet_x.bin"), torch.tensor(g.TIMESTEPS),
                       encoder_hidden_states=read("sdxl_unet_context.bin"),
                       added_cond_kwargs={"text_embeds": read("sdxl_unet_pooled.bin"),
                                          "time_ids": read("sdxl_unet_time_ids.bin")}).sample
            assert torch.equal(read("sdxl_clip_tokens.bin").long(), g.windows(49407))
            hidden_l = clip_l(input_ids=g.windows(49407), output_hidden_states=True).hidden_states[-2]
        hidden_g, pooled_g = g.encode_g(clip_g, g.windows(0))
        write("sdxl_lora_unet_eps.bin", eps.numpy())
        write("sdxl_lora_clip_l.bin", hidden_l.numpy())
        write("sdxl_lora_clip_g.bin", hidden_g.numpy())
        write("sdxl_lora_clip_g_pooled.bin", pooled_g.numpy())
        base = read("sdxl_unet_eps.bin")
        print("UNet: LoRA changes eps by max %.3g" % float((eps - base).abs().max()))
        print("bigG: LoRA changes hidden by max %.3g" % float((hidden_g - read("sdxl_clip_g.bin")).abs().max()))


if __name__ == "__main__":
    main()
