#!/usr/bin/env python3
"""Writes the image-op goldens under tests/data/goldens/ from torch, PIL and (when installed)
kornia, computed exactly as ComfyUI does:

  - torch.nn.functional.interpolate(mode=nearest-exact | bilinear | bicubic | area), as
    comfy.utils.common_upscale (antialias False, align_corners False);
  - ComfyUI's lanczos: clip(255 x) to uint8, PIL Image.resize(LANCZOS), / 255;
  - PIL Image.resize(LANCZOS) on float ("F") planes;
  - ComfyUI's ImageBlur (reflect pad + conv2d with its linspace Gaussian);
  - kornia.filters.canny(x, low, high) edges (ComfyUI's Canny node), if kornia imports.

Run: /opt/refenv/bin/python tests/reference/make_resize_goldens.py
With kornia (for the Canny goldens; written with kornia 0.9.0):
  /opt/refenv/bin/python -m venv /tmp/kenv && /tmp/kenv/bin/pip install kornia
  PYTHONPATH=/opt/refenv/lib/python3.11/site-packages /tmp/kenv/bin/python tests/reference/make_resize_goldens.py
Format of each .bin: b"SDG1", int32 ndim, int32 dims[ndim], float32 data (little endian)."""
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
SIZES = [(29, 23), (7, 5), (6, 31), (13, 40)]  # (height, width); input is 13 x 17


def write(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def comfy_lanczos(img, h, w):  # img: [B, H, W, C] float
    out = []
    for im in img:
        pil = Image.fromarray(np.clip(255.0 * im.numpy(), 0, 255).astype(np.uint8))
        pil = pil.resize((w, h), resample=Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.array(pil).astype(np.float32) / 255.0))
    return torch.stack(out)


def pil_float_lanczos(img, h, w):
    out = torch.empty(img.shape[0], h, w, img.shape[3])
    for b in range(img.shape[0]):
        for c in range(img.shape[3]):
            pil = Image.fromarray(img[b, :, :, c].numpy().astype(np.float32), mode="F")
            out[b, :, :, c] = torch.from_numpy(np.array(pil.resize((w, h), Image.Resampling.LANCZOS)))
    return out


def comfy_blur(img, radius, sigma):
    k = 2 * radius + 1
    x, y = torch.meshgrid(torch.linspace(-1, 1, k), torch.linspace(-1, 1, k), indexing="ij")
    d = torch.sqrt(x * x + y * y)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    g = (g / g.sum()).repeat(img.shape[3], 1, 1).unsqueeze(1)
    t = F.pad(img.permute(0, 3, 1, 2), (radius, radius, radius, radius), "reflect")
    out = F.conv2d(t, g, padding=k // 2, groups=img.shape[3])[:, :, radius:-radius, radius:-radius]
    return out.permute(0, 2, 3, 1)


def canny_image():
    """A 40 x 48 image: a bright disc and a tilted bar on a gradient, plus mild noise."""
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    img = 0.2 + 0.004 * xx
    img = torch.where((yy - 18) ** 2 + (xx - 15) ** 2 < 81, torch.full_like(img, 0.9), img)
    img = torch.where(((xx - 0.5 * yy - 28).abs() < 3) & (yy > 5) & (yy < 35), torch.full_like(img, 0.05), img)
    gen = torch.Generator().manual_seed(3)
    rgb = torch.stack([img, img * 0.8, img * 0.6], dim=-1) + 0.02 * torch.rand(40, 48, 3, generator=gen)
    return rgb.clamp(0, 1).unsqueeze(0)


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    img = torch.rand(2, 13, 17, 3, generator=gen)
    write("resize_input.bin", img)
    for h, w in SIZES:
        nchw = img.movedim(-1, 1)
        for mode in ("nearest-exact", "bilinear", "bicubic", "area"):
            out = F.interpolate(nchw, size=(h, w), mode=mode).movedim(1, -1)
            write("resize_%s_%dx%d.bin" % (mode.replace("-", "_"), h, w), out)
        write("resize_lanczos_u8_%dx%d.bin" % (h, w), comfy_lanczos(img, h, w))
        write("resize_lanczos_%dx%d.bin" % (h, w), pil_float_lanczos(img, h, w))
    for radius, sigma in ((1, 1.0), (3, 1.5), (6, 0.4)):
        write("blur_r%d_s%g.bin" % (radius, sigma), comfy_blur(img, radius, sigma))
    try:
        import kornia
    except ImportError:
        print("kornia not installed: canny goldens not written")
        return
    cimg = canny_image()
    write("canny_input.bin", cimg)
    for low, high in ((0.4, 0.8), (0.1, 0.3)):
        edges = kornia.filters.canny(cimg.movedim(-1, 1), low, high)[1]
        write("canny_%g_%g.bin" % (low, high), edges.repeat(1, 3, 1, 1).movedim(1, -1))


if __name__ == "__main__":
    main()
