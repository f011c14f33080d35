#!/usr/bin/env python3
"""Writes the PiDiNet goldens under tests/data/goldens/: comfyui_controlnet_aux's PidiNetDetector
(pidinet(): PiDiNet "carv4" with CDCM dilation modules and CSAM attention) re-written from the
annotator's source, pixel-difference convolutions computed as there (cd: minus the summed kernel
at the centre; ad: the kernel minus its clockwise rotation; rd: the 5x5 ring), on a tiny random
network in the real key layout (init_block, block{1..4}_{k}.conv1 / conv2 / shortcut,
dilations.{i}, attentions.{i}, conv_reduces.{i}, classifier) with 4 channels instead of 60 and
CDCM width 4 instead of 24, the classifier scaled so that its output spreads about +-3 (the real table5_pidinet.pth holds the same names under "module.").

  pidinet_tiny.safetensors   the network (f32), read by sdflow as annotators/table5_pidinet.safetensors
  pidinet_logits.f32         the classifier's output before its sigmoid on the padded "up" test image
                             (aux_in_up.u8, resolution 64, INTER_CUBIC, RGB reversed to BGR, / 255):
                             128 x 64 float32
  pidinet_map.u8, pidinet_safe.u8   the detector's plane, safe off / on, 128 x 64
  pidinet_scribble.u8        Scribble_PiDiNet_Preprocessor's output plane (safe on), 77 x 64

Run: python3 tests/reference/make_pidinet_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
opencv-python-headless 4.14.0 with IPP off, safetensors 0.8.0)"""
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_aux_goldens as aux  # noqa: E402
from make_hed_goldens import safe_step, scribble_lines  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
PDCS = ["cd", "ad", "rd", "cv"] * 4  # carv4
INPLANE, DIL = 4, 4


def pdc(op, x, w, pad, groups):
    if op == "cv":
        return F.conv2d(x, w, padding=pad, groups=groups)
    if op == "cd":
        return F.conv2d(x, w, padding=1, groups=groups) - F.conv2d(x, w.sum(dim=[2, 3], keepdim=True), groups=groups)
    if op == "ad":
        s = w.shape
        v = w.view(s[0], s[1], -1)
        return F.conv2d(x, (v - v[:, :, [3, 0, 1, 6, 4, 2, 7, 8, 5]]).view(s), padding=1, groups=groups)
    s = w.shape
    buf = torch.zeros(s[0], s[1], 25)
    v = w.view(s[0], s[1], -1)
    buf[:, :, [0, 2, 4, 10, 14, 20, 22, 24]] = v[:, :, 1:]
    buf[:, :, [6, 7, 8, 11, 13, 16, 17, 18]] = -v[:, :, 1:]
    return F.conv2d(x, buf.view(s[0], s[1], 5, 5), padding=2, groups=groups)


class Block(nn.Module):
    def __init__(self, op, cin, cout, stride):
        super().__init__()
        self.op, self.stride = op, stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(torch.relu(pdc(self.op, x, self.conv1.weight, 1, x.shape[1])))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for k, d in zip(range(1, 5), (5, 7, 9, 11)):
            setattr(self, "conv2_%d" % k, nn.Conv2d(cout, cout, 3, dilation=d, padding=d, bias=False))

    def forward(self, x):
        x = self.conv1(torch.relu(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class CSAM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.conv2(self.conv1(torch.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        return self.conv(x)


class PiDiNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.init_block = nn.Conv2d(3, INPLANE, 3, padding=1, bias=False)
        widths = [INPLANE, 2 * INPLANE, 4 * INPLANE, 4 * INPLANE]
        counts = [3, 4, 4, 4]
        layer, cin = 1, INPLANE
        for s in range(4):
            for k in range(counts[s]):
                stride = 2 if s > 0 and k == 0 else 1
                setattr(self, "block%d_%d" % (s + 1, k + 1), Block(PDCS[layer], cin, widths[s], stride))
                cin, layer = widths[s], layer + 1
        self.dilations = nn.ModuleList([CDCM(c, DIL) for c in widths])
        self.attentions = nn.ModuleList([CSAM(DIL) for _ in widths])
        self.conv_reduces = nn.ModuleList([MapReduce(DIL) for _ in widths])
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        H, W = x.shape[2:]
        x = pdc(PDCS[0], x, self.init_block.weight, 1, 1)
        feats = []
        counts = [3, 4, 4, 4]
        for s in range(4):
            for k in range(counts[s]):
                x = getattr(self, "block%d_%d" % (s + 1, k + 1))(x)
            feats.append(x)
        es = []
        for i, f in enumerate(feats):
            e = self.conv_reduces[i](self.attentions[i](self.dilations[i](f)))
            es.append(F.interpolate(e, (H, W), mode="bilinear", align_corners=False))
        return self.classifier(torch.cat(es, dim=1))  # the detector takes sigmoid of this


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(16)
    net = PiDiNet().eval()
    name, h, w, res = aux.CASES[0]
    img = np.fromfile(os.path.join(OUT, "aux_in_%s.u8" % name), np.uint8).reshape(h, w, 3)
    padded, _, _ = aux.resize_with_pad(img, res, cv2.INTER_CUBIC)
    bgr = padded[:, :, ::-1].copy()
    x = (torch.from_numpy(bgr).float() / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():  # scale the classifier so that the output spreads about +-3
        out = net(x)
        s = 3.0 / (float(out.std()) + 1e-9)
        net.classifier.weight.mul_(s)
        net.classifier.bias.copy_((net.classifier.bias - float(out.mean())) * s)
    path = os.path.join(OUT, "pidinet_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    os.chmod(path, 0o644)
    with torch.no_grad():
        logits = net(x)
        edge = torch.sigmoid(logits).numpy()
    logits[0, 0].numpy().astype("<f4").tofile(os.path.join(OUT, "pidinet_logits.f32"))
    for tag, safe in (("map", False), ("safe", True)):
        e = safe_step(edge) if safe else edge
        m = (e * 255.0).clip(0, 255).astype(np.uint8)[0, 0]
        m.tofile(os.path.join(OUT, "pidinet_%s.u8" % tag))
        print(tag, "levels", len(np.unique(m)))
    # Scribble_PiDiNet_Preprocessor: the detector with safe and scribble=True, the padding cut
    # off, then the node's own nms / blur / thresholds a second time on the cut plane.
    m = scribble_lines((safe_step(edge) * 255.0).clip(0, 255).astype(np.uint8)[0, 0])[:77, :64]  # the detect size of the "up" case
    m = scribble_lines(np.ascontiguousarray(m))
    m.tofile(os.path.join(OUT, "pidinet_scribble.u8"))
    print("scribble: %d%% white" % (100 * (m == 255).mean()))
    print("logits %.3f .. %.3f" % (logits.min(), logits.max()))


if __name__ == "__main__":
    main()
