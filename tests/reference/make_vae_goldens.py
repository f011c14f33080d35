#!/usr/bin/env python3
"""Golden VAE decode and encode from diffusers' AutoencoderKL on the project's tiny VAE.

Writes a standalone tiny VAE file with the project's own tool (the C test writes the identical
file), converts its LDM keys to diffusers' names with diffusers' own converter, and records a
decode of a fixed latent and the posterior mean of an encode of a fixed image, as little-endian
float32 files in tests/data/goldens/.

    /opt/refenv/bin/python tests/reference/make_vae_goldens.py build/sdflow_mkckpt

The C side is tests/models/test_vae.c; the configuration here must match it.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")
SEED = 5
CH, MULT, RES_BLOCKS = 32, (1, 2, 2, 2), 1


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vae.safetensors")
        subprocess.run([tool, "--preset", "tiny", "--kind", "vae", "--seed", str(SEED), path], check=True)
        ldm = load_file(path)
    config = dict(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
                  block_out_channels=[CH * m for m in MULT], layers_per_block=RES_BLOCKS,
                  down_block_types=["DownEncoderBlock2D"] * len(MULT),
                  up_block_types=["UpDecoderBlock2D"] * len(MULT), sample_size=64)
    vae = AutoencoderKL(**config).eval()
    state = convert_ldm_vae_checkpoint(ldm, vae.config)
    vae.load_state_dict(state, strict=True)

    gen = torch.Generator().manual_seed(123)
    z = torch.randn(1, 4, 8, 8, generator=gen)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(z).sample
        mean = vae.encode(image).latent_dist.mean
    os.makedirs(OUT, exist_ok=True)
    for name, t in (("vae_z", z), ("vae_decoded", decoded), ("vae_image", image), ("vae_mean", mean)):
        t.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".f32"))
    print("wrote vae goldens to", os.path.normpath(OUT), "decoded range", float(decoded.min()), float(decoded.max()))


if __name__ == "__main__":
    main()
