#!/usr/bin/env python3
"""Golden pooled outputs of unCLIPConditioning on SDXL (Revision): ComfyUI's sdxl_pooled /
unclip_adm with SDXL's CLIPEmbeddingNoiseAugmentation (squaredcos_cap_v2 betas_for_alpha_bar over
1000 steps, float32 buffers, no CLIP statistics), written here in torch from those definitions
(unclip_adm below, shared with make_sd2_unclip_goldens.py): each image embedding row x becomes
strength * (sqrt(ac[l]) x + sqrt(1 - ac[l]) n), l = round(999 * noise_augmentation),
n = torch.randn(1, 1280) after torch.manual_seed(seed - 10). Two cases: one row (strength 0.7,
augmentation 0.3) and two rows (1.2 / 0.0 and 0.5 / 0.25, summed and augmented again at level 0
with randn_like on the seeded global generator, as ComfyUI on the CPU). Seed 42.

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


def timestep_embedding(level, dim):
    """ComfyUI's Timestep(dim) (openaimodel timestep_embedding, max period 10000) of one level."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = torch.tensor([level])[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def augmentor(x, level, noise, mean, std):
    """CLIPEmbeddingNoiseAugmentation.forward with q_sample's noise given: [unscale(q_sample(scale(x))), emb]."""
    sa, s1ma = schedule()
    x = (x - mean) * 1. / std
    z = sa[level] * x + s1ma[level] * noise
    z = z * std + mean
    return torch.cat((z, timestep_embedding(level, x.shape[1])), 1)


def unclip_adm(rows, strengths, augs, seed, mean=None, std=None, merge=0.0):
    """ComfyUI's unclip_adm on the CPU: each row's noise from torch.manual_seed(seed) (the global
    generator), the merge of several with randn_like, the next normals of that generator."""
    dim = rows.shape[1]
    mean = torch.zeros(1, dim) if mean is None else mean
    std = torch.ones(1, dim) if std is None else std
    outs = []
    for r, s, a in zip(rows, strengths, augs):
        x = r[None]
        noise = torch.randn(x.size(), dtype=x.dtype, generator=torch.manual_seed(seed))
        outs.append(augmentor(x, round(999 * a), noise, mean, std) * s)
    if len(outs) > 1:
        adm = torch.stack(outs).sum(0)[:, :dim]
        return augmentor(adm, round(999 * merge), torch.randn_like(adm), mean, std)
    return outs[0]


def pooled(rows, strengths, augs, seed):
    """sdxl_pooled: the first 1280 values (merge 0, no statistics)."""
    return unclip_adm(rows, strengths, augs, seed)[:, :rows.shape[1]]


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
