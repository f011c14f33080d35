#!/usr/bin/env python3
"""Golden latent resizes for LatentUpscale / LatentUpscaleBy (comfy.utils.common_upscale):
torch.nn.functional.interpolate for nearest-exact, bilinear, area and bicubic, and ComfyUI's
bislerp written out here from its definition (per axis: torch's bilinear source coordinates,
truncated, and a slerp between the two neighbouring channel vectors whose norm is interpolated
linearly; nearly parallel vectors give the first vector, opposite ones a linear mix).

    /opt/refenv/bin/python tests/reference/make_latent_upscale_goldens.py

Writes little-endian float32 files tests/data/goldens/latent_up_input.f32 ([2, 4, 9, 11]) and
latent_up_<method>_<case>.f32; tests/nodes/test_latent_upscale.c reads them.
"""
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")
# case: (height, width, crop to the centre first)
CASES = {"up": (14, 16, False), "down": (5, 7, False), "crop": (12, 8, True)}
METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


def slerp(b1, b2, r):
    """b1, b2: [N, C]; r: [N, 1]."""
    n1 = torch.norm(b1, dim=-1, keepdim=True)
    n2 = torch.norm(b2, dim=-1, keepdim=True)
    u1 = torch.where(n1 == 0, torch.zeros_like(b1), b1 / n1)
    u2 = torch.where(n2 == 0, torch.zeros_like(b2), b2 / n2)
    dot = (u1 * u2).sum(1)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    res = (torch.sin((1.0 - r.squeeze(1)) * omega) / so).unsqueeze(1) * u1 \
        + (torch.sin(r.squeeze(1) * omega) / so).unsqueeze(1) * u2
    res = res * (n1 * (1.0 - r) + n2 * r)
    same = dot > 1 - 1e-5
    res[same] = b1[same]
    opposite = dot < 1e-5 - 1
    res[opposite] = (b1 * (1.0 - r) + b2 * r)[opposite]
    return res


def coords(n_old, n_new):
    base = torch.arange(n_old, dtype=torch.float32).reshape(1, 1, 1, -1)
    c1 = F.interpolate(base, size=(1, n_new), mode="bilinear")
    ratio = c1 - c1.floor()
    shifted = base + 1
    shifted[..., -1] -= 1
    c2 = F.interpolate(shifted, size=(1, n_new), mode="bilinear")
    return ratio.reshape(-1), c1.to(torch.int64).reshape(-1), c2.to(torch.int64).reshape(-1)


def slerp_axis(x, n_new):
    """Resizes the last axis of x [n, c, h, w] to n_new with slerp between channel vectors."""
    n, c, h, w = x.shape
    ratio, c1, c2 = coords(w, n_new)
    a = x[..., c1].movedim(1, -1).reshape(-1, c)
    b = x[..., c2].movedim(1, -1).reshape(-1, c)
    r = ratio.expand(n, h, n_new).reshape(-1, 1)
    return slerp(a, b, r).reshape(n, h, n_new, c).movedim(-1, 1)


def bislerp(x, height, width):
    x = slerp_axis(x.float(), width)
    return slerp_axis(x.transpose(2, 3), height).transpose(2, 3)


def common_upscale(x, width, height, method, crop):
    if crop:
        old_w, old_h = x.shape[-1], x.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        cx = cy = 0
        if old_aspect > new_aspect:
            cx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            cy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        x = x[:, :, cy:old_h - cy, cx:old_w - cx]
    if method == "bislerp":
        return bislerp(x, height, width)
    return F.interpolate(x, size=(height, width), mode=method)


def main():
    gen = torch.Generator().manual_seed(77)
    x = torch.randn(2, 4, 9, 11, generator=gen)
    x[0, :, 0, 0] = 0                   # a zero vector
    x[0, :, 1, :] = 2 * x[0, :, 2, :]   # parallel neighbours (the first is kept)
    x[1, :, 3, 4] = -x[1, :, 3, 5]      # opposite neighbours (linear mix)
    os.makedirs(OUT, exist_ok=True)
    x.numpy().astype("<f4").tofile(os.path.join(OUT, "latent_up_input.f32"))
    for method in METHODS:
        for case, (h, w, crop) in CASES.items():
            y = common_upscale(x, w, h, method, crop)
            assert y.shape == (2, 4, h, w), y.shape
            y.numpy().astype("<f4").tofile(os.path.join(OUT, f"latent_up_{method}_{case}.f32"))
    print("wrote latent upscale goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
