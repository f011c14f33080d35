#!/usr/bin/env python3
"""Writes the HED goldens under tests/data/goldens/: comfyui_controlnet_aux's HEDdetector
(ControlNetHED_Apache2 and its post-processing) re-written from the annotator's source, on a
tiny random network in the real key layout (norm, block{1..5}.convs.{i}, block{n}.projection;
widths 4, 8, 8, 16, 16 instead of 64, 128, 256, 512, 512; 2, 2, 3, 3, 3 convs as the real one;
each projection scaled to spread about +-3 on the test input, so the edge map has many levels).

  hed_tiny.safetensors      the network (f32), read by sdflow as annotators/ControlNetHED.safetensors
  hed_proj<k>.f32           projection k (1..5) of the network, [h_k, w_k] float32, on the
                            detector input: aux_in_up.u8 through resize_image_with_pad (resolution
                            64, INTER_CUBIC), 128 x 64 x 3
  hed_edge.u8, hed_safe.u8  the edge map (safe off / on) made from those projections, 128 x 64
  hed_scribble.u8           FakeScribblePreprocessor's plane: the safe map through nms, an 8-bit
                            GaussianBlur and thresholds (scribble=True), 128 x 64

Run: python3 tests/reference/make_hed_goldens.py   (torch 2.15 CPU, numpy 2.4.6, opencv-python-headless
4.14.0 with IPP off, safetensors 0.8.0)"""
import os
import sys

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_aux_goldens as aux  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
WIDTHS = [4, 8, 8, 16, 16]
LAYERS = [2, 2, 3, 3, 3]


class Block(torch.nn.Module):
    def __init__(self, cin, cout, layers):
        super().__init__()
        self.convs = torch.nn.Sequential(*[torch.nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1)
                                           for i in range(layers)])
        self.projection = torch.nn.Conv2d(cout, 1, 1)

    def forward(self, x, down):
        if down:
            x = torch.nn.functional.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x, self.projection(x)


class HED(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
        cins = [3] + WIDTHS[:-1]
        for b in range(5):
            setattr(self, "block%d" % (b + 1), Block(cins[b], WIDTHS[b], LAYERS[b]))

    def forward(self, x):
        h = x - self.norm
        projs = []
        for b in range(5):
            h, p = getattr(self, "block%d" % (b + 1))(h, b > 0)
            projs.append(p)
        return projs


def safe_step(x, step=2):
    y = x.astype(np.float32) * float(step + 1)
    return y.astype(np.int32).astype(np.float32) / float(step)


def nms(x, t, s):
    """The annotators' util.nms."""
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), s)
    f1 = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    f2 = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8)
    f3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    f4 = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    y = np.zeros_like(x)
    for f in [f1, f2, f3, f4]:
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    z = np.zeros_like(y, dtype=np.uint8)
    z[y > t] = 255
    return z


def scribble_lines(m):
    """The detectors' scribble=True ending."""
    m = nms(m, 127, 3.0)
    m = cv2.GaussianBlur(m, (0, 0), 3.0)
    m[m > 4] = 255
    m[m < 255] = 0
    return m


def edge_map(projs, h, w, safe):
    """HEDdetector.__call__ after the network."""
    edges = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in projs]
    edges = np.stack(edges, axis=2)
    edge = 1 / (1 + np.exp(-np.mean(edges, axis=2).astype(np.float64)))
    if safe:
        edge = safe_step(edge)
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(14)
    net = HED().float().eval()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1))
        net.block1.convs[0].weight.mul_(1.0 / 64.0)  # inputs are 0..255
    name, h, w, res = aux.CASES[0]
    img = np.fromfile(os.path.join(OUT, "aux_in_%s.u8" % name), np.uint8).reshape(h, w, 3)
    padded, _, _ = aux.resize_with_pad(img, res, cv2.INTER_CUBIC)
    x = torch.from_numpy(padded).float().permute(2, 0, 1)[None]
    with torch.no_grad():  # scale each projection to a spread of about +-3 around 0
        for k, p in enumerate(net(x)):
            proj = getattr(net, "block%d" % (k + 1)).projection
            s = 3.0 / (float(p.std()) + 1e-6)
            proj.weight.mul_(s)
            proj.bias.copy_(proj.bias * s - float(p.mean()) * s)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(OUT, "hed_tiny.safetensors"))
    os.chmod(os.path.join(OUT, "hed_tiny.safetensors"), 0o644)
    with torch.no_grad():
        projs = [p.numpy().astype(np.float32)[0, 0] for p in net(x)]
    for k, p in enumerate(projs):
        p.astype("<f4").tofile(os.path.join(OUT, "hed_proj%d.f32" % (k + 1)))
        print("projection %d: %s, range %.3f .. %.3f" % (k + 1, p.shape, p.min(), p.max()))
    H, W = padded.shape[:2]
    for tag, safe in (("edge", False), ("safe", True)):
        m = edge_map(projs, H, W, safe)
        m.tofile(os.path.join(OUT, "hed_%s.u8" % tag))
        print(tag, "levels", len(np.unique(m)), "mean", m.mean())
        if safe:  # FakeScribblePreprocessor: HED (safe) with scribble=True
            s = scribble_lines(m)
            s.tofile(os.path.join(OUT, "hed_scribble.u8"))
            print("scribble: %d%% white" % (100 * (s == 255).mean()))


if __name__ == "__main__":
    main()
