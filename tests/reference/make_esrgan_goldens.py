#!/usr/bin/env python3
"""Golden RRDBNet (ESRGAN / Real-ESRGAN) outputs from a PyTorch RRDBNet written here after the
published architecture (Wang et al. 2018; Real-ESRGAN's basicsr RRDBNet with pixel-unshuffle
inputs, spandrel's padding), on tiny random networks written by the project's own tool.

The C test (tests/models/test_esrgan.c) writes the identical files with sd_esrgan_write_random;
the configurations here must match it.

    /opt/refenv/bin/python tests/reference/make_esrgan_goldens.py build/sdflow_mkesrgan

Writes little-endian float32 files tests/data/goldens/esrgan_<name>_{in,out}.f32.
"""
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")

# name: (tool arguments, input height, width)
CASES = {
    "x4": (["--nf", "8", "--gc", "4", "--blocks", "2", "--up", "2", "--seed", "3"], 16, 13),
    "x2": (["--nf", "8", "--gc", "4", "--blocks", "1", "--up", "2", "--in-nc", "12", "--seed", "4"], 11, 14),
    "x1": (["--nf", "8", "--gc", "4", "--blocks", "1", "--up", "2", "--in-nc", "48", "--seed", "5"], 9, 10),
}


class DenseBlock(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x):
        act = lambda t: F.leaky_relu(t, 0.2)
        x1 = act(self.conv1(x))
        x2 = act(self.conv2(torch.cat((x, x1), 1)))
        x3 = act(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = act(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, in_nc, out_nc, nf, gc, blocks, n_up):
        super().__init__()
        self.shuffle = 2 if in_nc == 4 * out_nc else 4 if in_nc == 16 * out_nc else 1
        self.scale = 2 ** n_up // self.shuffle
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.n_up = n_up
        for u in range(1, n_up + 1):
            setattr(self, f"conv_up{u}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        if self.shuffle > 1:
            r = self.shuffle
            x = F.pad(x, (0, (r - w % r) % r, 0, (r - h % r) % r), mode="reflect")
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for u in range(1, self.n_up + 1):
            conv = getattr(self, f"conv_up{u}")
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out[:, :, : h * self.scale, : w * self.scale]


def build(state):
    in_nc = state["conv_first.weight"].shape[1]
    nf = state["conv_first.weight"].shape[0]
    gc = state["body.0.rdb1.conv1.weight"].shape[0]
    out_nc = state["conv_last.weight"].shape[0]
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    n_up = sum(1 for k in state if k.startswith("conv_up") and k.endswith(".weight"))
    net = RRDBNet(in_nc, out_nc, nf, gc, blocks, n_up).eval()
    net.load_state_dict(state, strict=True)
    return net


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkesrgan"
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(2024)
    for name, (args, h, w) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "esrgan.safetensors")
            subprocess.run([tool, *args, path], check=True)
            net = build(load_file(path))
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            y = net(x)
        x.numpy().astype("<f4").tofile(os.path.join(OUT, f"esrgan_{name}_in.f32"))
        y.numpy().astype("<f4").tofile(os.path.join(OUT, f"esrgan_{name}_out.f32"))
        print(name, tuple(x.shape), "->", tuple(y.shape), "range", float(y.min()), float(y.max()))


if __name__ == "__main__":
    main()
