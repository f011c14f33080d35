#!/usr/bin/env python3
"""Writes the UNet goldens under tests/data/goldens/ from diffusers' UNet2DConditionModel.

The checkpoint is written by the project's own tool with the architecture below (the C test
writes the identical file with sd_checkpoint_preset("tiny") + the same overrides + sd_sd1_write_random),
its LDM keys are converted with diffusers' convert_ldm_unet_checkpoint (the code diffusers uses
to load single-file SD1 checkpoints), and one forward runs in float32 on a fixed latent, two
timesteps and a context (batch 2, as classifier-free guidance runs it). A second forward adds
synthetic ControlNet residuals (down_block_additional_residuals, mid_block_additional_residual),
whose values come from a formula the C test computes too. A third forward runs an odd latent
(10 x 14, batch 1): its skips are 5 x 7 and 3 x 4 below, so the decoder upsamples to the skip
sizes (3 -> 5 -> 10, 4 -> 7 -> 14) as diffusers' forward_upsample_size does.

Run: /opt/refenv/bin/python tests/reference/make_unet_goldens.py [build/sdflow_mkckpt]
Format of each .bin: b"SDG1", int32 ndim, int32 dims[ndim], float32 data (little endian)."""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
# Architecture: the tiny preset with 2 res blocks per level and 2 transformer blocks per
# SpatialTransformer; attention at levels 0 and 1 (32 and 64 channels: 8 heads of 4 and 8).
MKCKPT_ARGS = ["--preset", "tiny", "--res-blocks", "2", "--depth", "2", "--no-clip", "--no-vae", "--seed", "7"]
MC, MULT, ATTN, NRB, DEPTH, CTX = 32, [1, 2, 2], [1, 1, 0], 2, 2, 64
BATCH, H, W, TOKENS = 2, 16, 16, 33
TIMESTEPS = [981.0, 250.5]


def write(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def control_value(index, shape):
    """Synthetic residual number `index` (skips 0.., middle -1): 0.5 sin(0.37 i + 0.61 index + 0.2)
    over the flat element index i, in float64 then rounded to float32 (tests/models/test_unet.c)."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    v = 0.5 * np.sin(0.37 * i + 0.61 * index + 0.2)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet.safetensors")
        subprocess.run([tool] + MKCKPT_ARGS + [path], check=True)
        ckpt = load_file(path)
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

    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(BATCH, 4, H, W, generator=gen)
    context = torch.randn(BATCH, TOKENS, CTX, generator=gen)
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=context).sample
        # Skip shapes: conv_in, then each down block's res/attn outputs and downsampler.
        skips = [(BATCH, MC, H, W)]
        size = H
        for level in range(levels):
            for _ in range(NRB):
                skips.append((BATCH, MC * MULT[level], size, size))
            if level + 1 < levels:
                size //= 2
                skips.append((BATCH, MC * MULT[level], size, size))
        down = tuple(control_value(i, s) for i, s in enumerate(skips))
        mid = control_value(-1, (BATCH, MC * MULT[-1], size, size))
        eps_ctl = unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
        x_odd = torch.randn(1, 4, 10, 14, generator=torch.Generator().manual_seed(4321))
        eps_odd = unet(x_odd, t[:1], encoder_hidden_states=context[:1]).sample
    write("unet_x.bin", x.numpy())
    write("unet_t.bin", t.numpy())
    write("unet_context.bin", context.numpy())
    write("unet_eps.bin", eps.numpy())
    write("unet_eps_control.bin", eps_ctl.numpy())
    write("unet_odd_x.bin", x_odd.numpy())
    write("unet_odd_eps.bin", eps_odd.numpy())
    print("eps std %.4f, with control std %.4f, %d skips" % (float(eps.std()), float(eps_ctl.std()), len(skips)))


if __name__ == "__main__":
    sys.exit(main())
