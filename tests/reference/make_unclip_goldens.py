#!/usr/bin/env python3
"""Golden pooled outputs of unCLIPConditioning on SDXL (Revision): ComfyUI's sdxl_pooled /
unclip_adm with SDXL's CLIPEmbeddingNoiseAugmentation (squaredcos_cap_v2 betas_for_alpha_bar over
1000 steps, float32 buffers, no CLIP statistics), written here in torch from those definitions:
each image embedding row x becomes strength * (sqrt(ac[l]) x + sqrt(1 - ac[l]) n), l =
round(999 * noise_augmentation), n = torch.randn(1, 1280) after torch.manual_seed(seed - 10).
Two cases: one row (strength 0.7, augmentation 0.3) and two rows (1.2 / 0.0 and 0.5 / 0.25,
summed and augmented again at level 0 with the same seeded noise, where ComfyUI draws it
unseeded). Seed 42.

    python3 tests/reference/make_unclip_goldens.py

Read by tests/models/test_unclip.c; clip_vision_proj160.safetensors by tests/cli/unclip.sh.
"""
import math
import os

import numpy as np
import torch

from make_ipadapter_goldens import tiny_clip_vision, write

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
DIM, SEED = 1280, 42


def schedule():
    betas = []
    ab = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    for i in range(1000):
        betas.append(min(1 - ab((i + 1) / 1000) / ab(i / 1000), 0.999))
    ac = np.cumprod(1.0 - np.array(betas), axis=0)
    return torch.tensor(np.sqrt(ac), dtype=torch.float32), torch.tensor(np.sqrt(1.0 - ac), dtype=torch.float32)


def q_sample(x, level, seed):
    sa, s1ma = schedule()
    noise = torch.randn(x.size(), generator=torch.manual_seed(seed))
    return sa[level] * x + s1ma[level] * noise


def pooled(rows, strengths, augs, seed):
    outs = [q_sample(r[None], round(999 * a), seed) * s for r, s, a in zip(rows, strengths, augs)]
    if len(outs) > 1:
        return q_sample(torch.stack(outs).sum(0), 0, seed)
    return outs[0]


def main():
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(2, DIM, generator=g)
    write("unclip_embeds.bin", emb.numpy())
    write("unclip_one.bin", pooled(emb[:1], [0.7], [0.3], SEED - 10).numpy())
    write("unclip_two.bin", pooled(emb, [1.2, 0.5], [0.0, 0.25], SEED - 10).numpy())
    # image_embeds as wide as the sdxl-tiny preset's pooled output (160): tests/cli/unclip.sh
    tiny_clip_vision("clip_vision_proj160.safetensors", 160, 4)
    print("wrote unCLIP goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
