#!/usr/bin/env python3
"""SDXL ControlNet goldens from diffusers' ControlNetModel (tests/models/test_sdxl.c).

The project's tool writes a random ControlNet for the tiny SDXL UNet of make_sdxl_goldens.py in
the original layout (control_model.*, with label_emb: the ADM label embedding) and in diffusers'
layout (controlnet_cond_embedding.*, add_embedding.*):
    sdflow_mkckpt --preset sdxl-tiny --kind controlnet --seed 13 cn.safetensors
    sdflow_mkckpt --preset sdxl-tiny --kind controlnet-diffusers --seed 13 cnd.safetensors
The original file is converted with diffusers' convert_controlnet_checkpoint (plus label_emb ->
add_embedding, which that converter leaves out and its UNet converter maps) into a
ControlNetModel made by ControlNetModel.from_unet from the tiny SDXL UNet2DConditionModel
(addition_embed_type "text_time"); the diffusers-layout file must hold exactly the converted
tensors. One forward on the UNet goldens' inputs (sdxl_unet_x/context/pooled/time_ids.bin: the
ADM vector comes from the pooled vector and the time ids, as the UNet's) with the hint image of
make_controlnet_goldens.py (0.5 + 0.5 sin(0.13 i + 0.7) over element i of [2, 3, 128, 128]),
conditioning scale 0.75. Recorded, float32:
  sdxl_controlnet_res<i>.bin             the skip residuals
  sdxl_controlnet_mid.bin                the middle block's residual

Run: python3 tests/reference/make_sdxl_controlnet_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import torch
from diffusers import ControlNetModel
from diffusers.loaders import single_file_utils as sfu

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sdxl_goldens as g  # noqa: E402
from make_controlnet_goldens import check_diffusers_layout, hint_value  # noqa: E402
from make_sdxl_lora_goldens import read  # noqa: E402
from make_unet_goldens import write  # noqa: E402

STRENGTH = 0.75


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    cfg = g.BASE
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, n) for n in ("ck.safetensors", "cn.safetensors", "cnd.safetensors")]
        subprocess.run([tool, "--preset", cfg["preset"], "--seed", str(cfg["seed"]), paths[0]], check=True)
        for kind, path in (("controlnet", paths[1]), ("controlnet-diffusers", paths[2])):
            subprocess.run([tool, "--preset", cfg["preset"], "--kind", kind, "--seed", "13", path], check=True)
        ckpt, cn_ldm, cn_diffusers = (g.load_file(p) for p in paths)
    unet = g.make_unet(cfg, ckpt)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256),
                                           load_weights_from_unet=False)
    converted = sfu.convert_controlnet_checkpoint(cn_ldm, dict(controlnet.config))
    # diffusers 0.42's ControlNet converter leaves the label embedding out; its UNet converter maps
    # label_emb.0.0 / label_emb.0.2 to add_embedding.linear_1 / linear_2, as here.
    for i, j in ((0, 1), (2, 2)):
        for p in ("weight", "bias"):
            converted["add_embedding.linear_%d.%s" % (j, p)] = cn_ldm["control_model.label_emb.0.%d.%s" % (i, p)]
    controlnet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    controlnet.eval()
    check_diffusers_layout(cn_diffusers, converted)

    x = read("sdxl_unet_x.bin")
    hint = hint_value((x.shape[0], 3, 8 * x.shape[2], 8 * x.shape[3]))
    with torch.no_grad():
        down, mid = controlnet(x, torch.tensor(g.TIMESTEPS), encoder_hidden_states=read("sdxl_unet_context.bin"),
                               controlnet_cond=hint, conditioning_scale=STRENGTH,
                               added_cond_kwargs={"text_embeds": read("sdxl_unet_pooled.bin"),
                                                  "time_ids": read("sdxl_unet_time_ids.bin")},
                               return_dict=False)
    for i, r in enumerate(down):
        write("sdxl_controlnet_res%d.bin" % i, r.numpy())
    write("sdxl_controlnet_mid.bin", mid.numpy())
    print("%d skip residuals (std of the first %.4f), middle std %.4f" % (len(down), float(down[0].std()),
                                                                           float(mid.std())))


if __name__ == "__main__":
    sys.exit(main())
