#!/usr/bin/env python3
"""Writes the ControlNet goldens under tests/data/goldens/ from diffusers' ControlNetModel and
UNet2DConditionModel.

The project's tool writes a tiny random UNet (sdflow_mkckpt --preset tiny --no-clip --no-vae
--seed 7) and a ControlNet for the same architecture in the original layout (--kind controlnet
--seed 11: control_model.*, hint encoder widths as SD1.5's); the C test writes the identical files.
The ControlNet's keys are converted with diffusers' convert_controlnet_checkpoint (the code its
single-file loader uses), the UNet's with convert_ldm_unet_checkpoint. One ControlNet forward runs
in float32 (batch 2, 8x8 latent, 64x64 hint, conditioning_scale 0.75) and its residuals go into
one UNet forward; the residuals and the UNet output are stored.

The tool's diffusers-layout file (--kind controlnet-diffusers --seed 11) is checked here too: it
must load into ControlNetModel with load_state_dict(strict=True) and hold exactly the converted
tensors (so sdflow's name mapping is diffusers' own).

Inputs: x and context are stored; the hint is 0.5 + 0.5 sin(0.13 i + 0.7) over the flat index i
of [2, 3, 64, 64] (float64, rounded to float32), which the C test computes too.

Run: /opt/refenv/bin/python tests/reference/make_controlnet_goldens.py [build/sdflow_mkckpt]
Format of each .bin: b"SDG1", int32 ndim, int32 dims[ndim], float32 data (little endian)."""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
UNET_ARGS = ["--preset", "tiny", "--no-clip", "--no-vae", "--seed", "7"]
CN_ARGS = ["--preset", "tiny", "--seed", "11"]
MC, MULT, ATTN, NRB, DEPTH, CTX = 32, [1, 2, 2], [1, 1, 0], 1, 1, 64
BATCH, H, W, TOKENS = 2, 8, 8, 7
TIMESTEPS = [981.0, 250.5]
STRENGTH = 0.75


def write(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def hint_value(shape):
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return torch.from_numpy((0.5 + 0.5 * np.sin(0.13 * i + 0.7)).astype(np.float32).reshape(shape))


def check_diffusers_layout(cn_diffusers, converted):
    """sdflow's diffusers-layout file must hold exactly the tensors diffusers' converter made."""
    if sorted(cn_diffusers) != sorted(converted):
        missing = sorted(set(converted) - set(cn_diffusers))[:5]
        extra = sorted(set(cn_diffusers) - set(converted))[:5]
        raise SystemExit("diffusers-layout file differs: missing %s, unexpected %s" % (missing, extra))
    for k, v in converted.items():
        if not torch.equal(v, cn_diffusers[k]):
            raise SystemExit("diffusers-layout tensor %s differs" % k)


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, n) for n in ("unet.safetensors", "cn.safetensors", "cnd.safetensors")]
        subprocess.run([tool] + UNET_ARGS + [paths[0]], check=True)
        subprocess.run([tool] + CN_ARGS + ["--kind", "controlnet", paths[1]], check=True)
        subprocess.run([tool] + CN_ARGS + ["--kind", "controlnet-diffusers", paths[2]], check=True)
        ckpt, cn_ldm, cn_diffusers = (load_file(p) for p in paths)
    levels = len(MULT)
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": MC, "channel_mult": MULT,
        "attention_resolutions": [2 ** i for i in range(levels) if ATTN[i]], "num_res_blocks": NRB,
        "transformer_depth": DEPTH, "context_dim": CTX, "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    unet = UNet2DConditionModel(**ucfg)
    unet.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()},
                         strict=True)
    unet.eval()
    # The fields create_controlnet_diffusers_config_from_ldm takes from the UNet's config.
    ccfg = {k: ucfg[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                                 "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                                 "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
                                 "projection_class_embeddings_input_dim", "transformer_layers_per_block")}
    ccfg["conditioning_channels"] = 3
    controlnet = ControlNetModel(**ccfg)
    converted = sfu.convert_controlnet_checkpoint(cn_ldm, ccfg)
    controlnet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    controlnet.eval()

    # sdflow's diffusers-layout file: the same tensors under diffusers' names.
    check_diffusers_layout(cn_diffusers, converted)
    ControlNetModel(**ccfg).load_state_dict(cn_diffusers, strict=True)

    gen = torch.Generator().manual_seed(4321)
    x = torch.randn(BATCH, 4, H, W, generator=gen)
    context = torch.randn(BATCH, TOKENS, CTX, generator=gen)
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)
    hint = hint_value((BATCH, 3, 8 * H, 8 * W))
    with torch.no_grad():
        down, mid = controlnet(x, t, encoder_hidden_states=context, controlnet_cond=hint,
                               conditioning_scale=STRENGTH, return_dict=False)
        eps = unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid).sample
    write("controlnet_x.bin", x.numpy())
    write("controlnet_t.bin", t.numpy())
    write("controlnet_context.bin", context.numpy())
    for i, r in enumerate(down):
        write("controlnet_res%d.bin" % i, r.numpy())
    write("controlnet_mid.bin", mid.numpy())
    write("controlnet_eps.bin", eps.numpy())
    print("%d skip residuals (std of the first %.4f), middle std %.4f, eps std %.4f"
          % (len(down), float(down[0].std()), float(mid.std()), float(eps.std())))


if __name__ == "__main__":
    sys.exit(main())
