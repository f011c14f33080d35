#!/usr/bin/env python3
"""SD2.x ControlNet goldens from diffusers' ControlNetModel (tests/models/test_sd2.c).

The project's tool writes a random ControlNet for the tiny SD2 UNet of make_sd2_goldens.py
(Linear proj_in/proj_out, 64-channel heads, a 256-wide context) in the original layout
(control_model.*) and in diffusers' layout (controlnet_cond_embedding.*):
    sdflow_mkckpt --preset sd2-tiny --kind controlnet --seed 13 cn.safetensors
    sdflow_mkckpt --preset sd2-tiny --kind controlnet-diffusers --seed 13 cnd.safetensors
The original file is converted with diffusers' convert_controlnet_checkpoint into a
ControlNetModel made by ControlNetModel.from_unet from the tiny SD2 UNet2DConditionModel; the
diffusers-layout file must hold exactly the converted tensors. One forward on the SD2 UNet
goldens' inputs (sd2_unet_x/context.bin) with the hint image of make_controlnet_goldens.py
(0.5 + 0.5 sin(0.13 i + 0.7) over element i of [2, 3, 128, 128]), conditioning scale 0.75.
Recorded, float32:
  sd2_controlnet_res<i>.bin             the skip residuals
  sd2_controlnet_mid.bin                the middle block's residual

Run: python3 tests/reference/make_sd2_controlnet_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import torch
from diffusers import ControlNetModel
from diffusers.loaders import single_file_utils as sfu

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sd2_goldens as g  # noqa: E402
from make_controlnet_goldens import check_diffusers_layout, hint_value  # noqa: E402
from make_sdxl_lora_goldens import read  # noqa: E402
from make_unet_goldens import write  # noqa: E402

STRENGTH = 0.75


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    preset = g.EPS_FILE["preset"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, n) for n in ("ck.safetensors", "cn.safetensors", "cnd.safetensors")]
        subprocess.run([tool, "--preset", preset, "--seed", str(g.EPS_FILE["seed"]), paths[0]], check=True)
        for kind, path in (("controlnet", paths[1]), ("controlnet-diffusers", paths[2])):
            subprocess.run([tool, "--preset", preset, "--kind", kind, "--seed", "13", path], check=True)
        ckpt, cn_ldm, cn_diffusers = (g.load_file(p) for p in paths)
    unet = g.make_unet(ckpt)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256),
                                           load_weights_from_unet=False)
    converted = sfu.convert_controlnet_checkpoint(cn_ldm, dict(controlnet.config))
    controlnet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    controlnet.eval()
    check_diffusers_layout(cn_diffusers, converted)

    x = read("sd2_unet_x.bin")
    hint = hint_value((x.shape[0], 3, 8 * x.shape[2], 8 * x.shape[3]))
    with torch.no_grad():
        down, mid = controlnet(x, torch.tensor(g.TIMESTEPS), encoder_hidden_states=read("sd2_unet_context.bin"),
                               controlnet_cond=hint, conditioning_scale=STRENGTH, return_dict=False)
    for i, r in enumerate(down):
        write("sd2_controlnet_res%d.bin" % i, r.numpy())
    write("sd2_controlnet_mid.bin", mid.numpy())
    print("%d skip residuals (std of the first %.4f), middle std %.4f" % (len(down), float(down[0].std()),
                                                                           float(mid.std())))


if __name__ == "__main__":
    sys.exit(main())
