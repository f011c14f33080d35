#!/usr/bin/env python3
"""SD2.x LoRA goldens from diffusers + peft (tests/models/test_sd2.c).

The checkpoint and the LoRA come from the project's own tools (the C test writes the identical
files):
    sdflow_mkckpt --preset sd2-tiny --seed 21 ck.safetensors          (as make_sd2_goldens.py)
    sdflow_mklora --seed 5 ck.safetensors lora.safetensors
(kohya layout: every UNet attention projection, feed-forward Linear and the Linear
proj_in/proj_out named the diffusers way, the 3x3 conv1 of down_blocks.0.resnets.0, and every
OpenCLIP-H projection and MLP Linear as lora_te_* under transformers' names, as kohya writes SD2
LoRAs: q/k/v patch the thirds of open_clip's fused in_proj; rank 4, alpha 2).

diffusers converts the checkpoint (make_sd2_goldens.py: convert_ldm_unet_checkpoint,
convert_open_clip_checkpoint, which splits in_proj into q/k/v), reads the LoRA with
StableDiffusionPipeline.lora_state_dict (its own kohya conversion) and loads it with
load_lora_into_unet / load_lora_into_text_encoder (peft layers), merged at strength 0.8 (UNet)
and 1.3 (OpenCLIP-H). Recorded, float32, on the inputs of make_sd2_goldens.py
(sd2_unet_x/context.bin, the golden token windows):
  sd2_lora_unet_eps.bin    the patched UNet's output
  sd2_lora_clip_h.bin      the patched encoder's penultimate hidden states + final LayerNorm

Run: python3 tests/reference/make_sd2_lora_goldens.py [build]   (needs peft)"""
import os
import subprocess
import sys
import tempfile

import torch
from diffusers import StableDiffusionPipeline as SD

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sd2_goldens as g  # noqa: E402
from make_sdxl_lora_goldens import merge, read  # noqa: E402
from make_unet_goldens import write  # noqa: E402

UNET_STRENGTH, H_STRENGTH = 0.8, 1.3


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        ck, lora = os.path.join(tmp, "ck.safetensors"), os.path.join(tmp, "lora.safetensors")
        subprocess.run([os.path.join(build, "sdflow_mkckpt"), "--preset", g.EPS_FILE["preset"], "--seed",
                        str(g.EPS_FILE["seed"]), ck], check=True)
        subprocess.run([os.path.join(build, "sdflow_mklora"), "--seed", "5", ck, lora], check=True)
        ckpt = g.load_file(ck)
        unet, clip_h = g.make_unet(ckpt), g.make_clip_h(ckpt)
        sd, alphas = SD.lora_state_dict(lora)
    unet_sd = {k: v for k, v in sd.items() if k.startswith("unet.")}
    SD.load_lora_into_unet(unet_sd, alphas, unet=unet)
    te_sd = {k: v for k, v in sd.items() if k.startswith("text_encoder.")}
    te_alphas = {k: v for k, v in (alphas or {}).items() if k.startswith("text_encoder.")}
    SD.load_lora_into_text_encoder(te_sd, te_alphas, text_encoder=clip_h, prefix="text_encoder")
    counts = merge(unet, UNET_STRENGTH), merge(clip_h, H_STRENGTH)
    print("merged LoRA layers (UNet, OpenCLIP-H):", counts)
    with torch.no_grad():
        eps = unet(read("sd2_unet_x.bin"), torch.tensor(g.TIMESTEPS),
                   encoder_hidden_states=read("sd2_unet_context.bin")).sample
    hidden = g.encode_h(clip_h, g.windows(0))
    write("sd2_lora_unet_eps.bin", eps.numpy())
    write("sd2_lora_clip_h.bin", hidden.numpy())
    print("UNet: LoRA changes eps by max %.3g" % float((eps - read("sd2_unet_eps.bin")).abs().max()))
    print("OpenCLIP-H: LoRA changes hidden by max %.3g" % float((hidden - read("sd2_clip_h.bin")).abs().max()))


if __name__ == "__main__":
    main()
