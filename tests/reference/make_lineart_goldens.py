#!/usr/bin/env python3
"""Writes the LineArt goldens under tests/data/goldens/: comfyui_controlnet_aux's
LineartDetector (its Generator(3, 1, 3) and post-processing) re-written from the annotator's
source, on a tiny random network in the real key layout (model0.1, model1.{0,3},
model2.{i}.conv_block.{1,5}, model3.{0,3} (ConvTranspose2d), model4.1) with 4 base channels
instead of 64 (the real sk_model.pth / sk_model2.pth are this layout with 64).

  lineart_tiny.safetensors   the network (f32), read by sdflow as annotators/sk_model.safetensors
  lineart_logits.f32         the network before its sigmoid on the padded "up" test image
                             (aux_in_up.u8, resolution 64, INTER_CUBIC: 128 x 64), float32
  lineart_map.u8             the detector's output plane 255 - uint8(clip(255 sigmoid)), 128 x 64

Run: python3 tests/reference/make_lineart_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
opencv-python-headless 4.14.0 with IPP off, safetensors 0.8.0)"""
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_aux_goldens as aux  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
BASE = 4


class ResidualBlock(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(f, f, 3), nn.InstanceNorm2d(f),
                                        nn.ReLU(), nn.ReflectionPad2d(1), nn.Conv2d(f, f, 3), nn.InstanceNorm2d(f))

    def forward(self, x):
        return x + self.conv_block(x)


class Generator(nn.Module):
    def __init__(self, base, n_res=3):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, base, 7), nn.InstanceNorm2d(base), nn.ReLU())
        m1, f = [], base
        for _ in range(2):
            m1 += [nn.Conv2d(f, 2 * f, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * f), nn.ReLU()]
            f *= 2
        self.model1 = nn.Sequential(*m1)
        self.model2 = nn.Sequential(*[ResidualBlock(f) for _ in range(n_res)])
        m3 = []
        for _ in range(2):
            m3 += [nn.ConvTranspose2d(f, f // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(f // 2), nn.ReLU()]
            f //= 2
        self.model3 = nn.Sequential(*m3)
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(base, 1, 7))  # the sigmoid is applied below

    def forward(self, x):
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(15)
    net = Generator(BASE).eval()
    path = os.path.join(OUT, "lineart_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    os.chmod(path, 0o644)
    name, h, w, res = aux.CASES[0]
    img = np.fromfile(os.path.join(OUT, "aux_in_%s.u8" % name), np.uint8).reshape(h, w, 3)
    padded, _, _ = aux.resize_with_pad(img, res, cv2.INTER_CUBIC)
    with torch.no_grad():
        x = (torch.from_numpy(padded).float() / 255.0).permute(2, 0, 1)[None]
        logits = net(x)
        line = torch.sigmoid(logits)[0][0].numpy()
    logits[0, 0].numpy().astype("<f4").tofile(os.path.join(OUT, "lineart_logits.f32"))
    m = 255 - (line * 255.0).clip(0, 255).astype(np.uint8)
    m.tofile(os.path.join(OUT, "lineart_map.u8"))
    print("logits %.3f .. %.3f, map levels %d" % (logits.min(), logits.max(), len(np.unique(m))))


if __name__ == "__main__":
    main()
