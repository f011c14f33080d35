#!/usr/bin/env python3
"""Writes the OpenPose network goldens under tests/data/goldens/: comfyui_controlnet_aux's
bodypose_model and handpose_model (open_pose/model.py) re-written in PyTorch from the annotator's
source (make_layers: convs with ReLU except no_relu_layers, 2x2 max-pools; its no_relu_layers
names Mconv7_stage6_L1 twice, so Mconv7_stage6_L2 keeps its ReLU), on tiny random networks in
the real key layout (body_pose_model.pth / hand_pose_model.pth names, which util.transfer maps
from model0.conv1_1.weight to conv1_1.weight); the widths are small, the output channels real
(38 PAF, 19 heatmap, 22 hand).

  pose_body.safetensors, pose_hand.safetensors   the networks (f16 weights, used in f32)
  pose_body_paf.bin, pose_body_heat.bin          the body outputs for the input below
  pose_hand.bin                                  the hand output
The input is [1, 3, 48, 40]: sin(0.11 i + 0.3) / 2 over the flat index (float64 -> float32).

Run: python3 tests/reference/make_openpose_goldens.py   (torch 2.15)"""
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_controlnet_goldens import write  # noqa: E402
from make_t2i_goldens import randomize  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")


def make_layers(block, no_relu):
    layers = []
    for name, v in block.items():
        if "pool" in name:
            layers.append((name, nn.MaxPool2d(v[0], v[1], v[2])))
        else:
            layers.append((name, nn.Conv2d(v[0], v[1], v[2], v[3], v[4])))
            if name not in no_relu:
                layers.append(("relu_" + name, nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


def vgg(names, widths):
    """The front: names with "pool" entries, widths per conv."""
    block, c, k = OrderedDict(), 3, 0
    for n in names:
        if n.startswith("pool"):
            block[n] = [2, 2, 0]
        else:
            block[n] = [c, widths[k], 3, 1, 1]
            c = widths[k]
            k += 1
    return block, c


BODY_FRONT = ["conv1_1", "conv1_2", "pool1_stage1", "conv2_1", "conv2_2", "pool2_stage1", "conv3_1", "conv3_2",
              "conv3_3", "conv3_4", "pool3_stage1", "conv4_1", "conv4_2", "conv4_3_CPM", "conv4_4_CPM"]
HAND_FRONT = ["conv1_1", "conv1_2", "pool1_stage1", "conv2_1", "conv2_2", "pool2_stage1", "conv3_1", "conv3_2",
              "conv3_3", "conv3_4", "pool3_stage1", "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1",
              "conv5_2", "conv5_3_CPM"]


class Body(nn.Module):
    """bodypose_model with small widths; front (12 conv widths, the last w), m and mid give the
    real ones (bench/make_annotator_files.py)."""

    def __init__(self, w=4, m=4, front=None, mid=12):
        super().__init__()
        no_relu = ["conv5_5_CPM_L1", "conv5_5_CPM_L2"] + ["Mconv7_stage%d_L%d" % (i, b) for i in range(2, 6)
                                                          for b in (1, 2)] + ["Mconv7_stage6_L1"] * 2
        front, c = vgg(BODY_FRONT, front or [4, 4, 6, 6, 8, 8, 8, 8, 10, 10, 8, w])
        self.model0 = make_layers(front, no_relu)
        self.stages = nn.ModuleList()
        for s in range(1, 7):
            pair = nn.ModuleList()
            for b, out in ((1, 38), (2, 19)):
                if s == 1:
                    blk = OrderedDict([("conv5_1_CPM_L%d" % b, [c, m, 3, 1, 1]), ("conv5_2_CPM_L%d" % b, [m, m, 3, 1, 1]),
                                       ("conv5_3_CPM_L%d" % b, [m, m, 3, 1, 1]), ("conv5_4_CPM_L%d" % b, [m, mid, 1, 1, 0]),
                                       ("conv5_5_CPM_L%d" % b, [mid, out, 1, 1, 0])])
                else:
                    blk = OrderedDict([("Mconv1_stage%d_L%d" % (s, b), [c + 57, m, 7, 1, 3])] +
                                      [("Mconv%d_stage%d_L%d" % (i, s, b), [m, m, 7, 1, 3]) for i in range(2, 6)] +
                                      [("Mconv6_stage%d_L%d" % (s, b), [m, m, 1, 1, 0]),
                                       ("Mconv7_stage%d_L%d" % (s, b), [m, out, 1, 1, 0])])
                pair.append(make_layers(blk, no_relu))
            self.stages.append(pair)

    def forward(self, x):
        f = self.model0(x)
        h = f
        for pair in self.stages:
            a, b = pair[0](h), pair[1](h)
            h = torch.cat([a, b, f], 1)
        return a, b


class Hand(nn.Module):
    """handpose_model with small widths; front (15 conv widths, the last w), m and mid give the
    real ones (bench/make_annotator_files.py)."""

    def __init__(self, w=4, m=4, front=None, mid=12):
        super().__init__()
        no_relu = ["conv6_2_CPM"] + ["Mconv7_stage%d" % i for i in range(2, 7)]
        front, c = vgg(HAND_FRONT, front or [4, 4, 6, 6, 8, 8, 8, 8, 10, 10, 10, 10, 10, 10, w])
        self.model1_0 = make_layers(front, no_relu)
        self.stages = nn.ModuleList([make_layers(OrderedDict([("conv6_1_CPM", [c, mid, 1, 1, 0]),
                                                              ("conv6_2_CPM", [mid, 22, 1, 1, 0])]), no_relu)])
        for s in range(2, 7):
            self.stages.append(make_layers(OrderedDict(
                [("Mconv1_stage%d" % s, [c + 22, m, 7, 1, 3])] +
                [("Mconv%d_stage%d" % (i, s), [m, m, 7, 1, 3]) for i in range(2, 6)] +
                [("Mconv6_stage%d" % s, [m, m, 1, 1, 0]), ("Mconv7_stage%d" % s, [m, 22, 1, 1, 0])]), no_relu))

    def forward(self, x):
        f = self.model1_0(x)
        h = f
        for st in self.stages:
            o = st(h)
            h = torch.cat([o, f], 1)
        return o


def file_names(model):
    """util.transfer's names: the state dict key without its first component (the block)."""
    out = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        out[".".join(parts[-2:])] = v.half().contiguous()
    return out


def main():
    i = np.arange(3 * 48 * 40, dtype=np.float64)
    x = torch.from_numpy((np.sin(0.11 * i + 0.3) / 2).astype(np.float32).reshape(1, 3, 48, 40))
    body = randomize(Body(), 21, gain=2.0)
    hand = randomize(Hand(), 22, gain=2.0)
    with torch.no_grad():
        paf, heat = body(x)
        h = hand(x)
    save_file(file_names(body), os.path.join(OUT, "pose_body.safetensors"))
    save_file(file_names(hand), os.path.join(OUT, "pose_hand.safetensors"))
    write("pose_body_paf.bin", paf.numpy())
    write("pose_body_heat.bin", heat.numpy())
    write("pose_hand.bin", h.numpy())
    print("paf", tuple(paf.shape), "std %.3f" % float(paf.std()), "heat std %.3f" % float(heat.std()),
          "min %.3f" % float(heat.min()), "hand std %.3f" % float(h.std()))


if __name__ == "__main__":
    sys.exit(main())
