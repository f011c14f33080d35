#!/usr/bin/env python3
"""Writes the MiDaS goldens under tests/data/goldens/: DPTDepthModel with the "vitb_rn50_384"
backbone (dpt_hybrid, as comfyui_controlnet_aux's MidasDetector loads dpt_hybrid-midas-501f0c75.pt)
re-written from the MiDaS and timm sources, on a tiny random network in the real key layout:

  ResNetV2 stem (StdConv2dSame 7x7 stride 2, weight standardisation eps 1e-8; GroupNorm 32 + ReLU;
  max pool 3x3 stride 2 "same"), stages of non-preact bottlenecks (1x1, 3x3 with the stride,
  1x1, GroupNorm 32 each, ReLU after the sum with the shortcut; a 1x1 downsample on the first):
  here stem 32, 2, 1, 1 blocks per stage, stage widths 128 (mid 32), 2 stages before the patch
  projection (the real one: 64; 3, 4, 9 blocks; 256, 512, 1024). Hooks: stages 0 and 1; ViT
  width 64 (one head), 6 blocks (hooks on blocks 4 and 5: two thirds and the last, as 8 and 11
  of 12), MLP 32, a 4x4 position grid resized bilinearly; readout "project"; DPT features 16.
  Stored as float16.

  midas_tiny.pt        the network (torch.save of the state dict)
  midas_depth.f32      the model's depth for aux_in_up.u8 through resize_image_with_pad (64,
                       INTER_CUBIC: 128 x 64) as v / 127.5 - 1, [128, 64] float32
  midas_node_depth.u8  MidasDetector's depth image from it, 128 x 64 (the node keeps 77 rows)
  midas_node_normal.u8 its normal image (a = 2 pi, bg_th = 0.1), 128 x 64 x 3

Run: python3 tests/reference/make_midas_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
opencv-python-headless 4.14.0 with IPP off)"""
import math
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_aux_goldens as aux  # noqa: E402
import make_midas_map_goldens as maps  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
STEM, WIDTHS, DIM, DEPTH, HIDDEN, GRID, FEATURES = 32, [128, 128, 128], 64, 6, 32, 4, 16
BLOCKS, HOOKS = [2, 1, 1], [4, 5]


def pad_same(x, k, s, value=0.0):
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=value)


class StdConv(nn.Conv2d):
    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.,
                         eps=1e-8).reshape_as(self.weight)
        k, s = self.kernel_size[0], self.stride[0]
        return F.conv2d(pad_same(x, k, s), w, self.bias, s, 0)


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, stride, first=True):
        super().__init__()
        mid = cout // 4
        self.downsample = None
        if first:
            self.downsample = nn.Module()
            self.downsample.conv = StdConv(cin, cout, 1, stride=stride, bias=False)
            self.downsample.norm = nn.GroupNorm(32, cout)
        self.conv1, self.norm1 = StdConv(cin, mid, 1, bias=False), nn.GroupNorm(32, mid)
        self.conv2, self.norm2 = StdConv(mid, mid, 3, stride=stride, bias=False), nn.GroupNorm(32, mid)
        self.conv3, self.norm3 = StdConv(mid, cout, 1, bias=False), nn.GroupNorm(32, cout)

    def forward(self, x):
        sc = self.downsample.norm(self.downsample.conv(x)) if self.downsample is not None else x
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        return F.relu(x + sc)


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv = StdConv(3, STEM, 7, stride=2, bias=False)
        self.stem.norm = nn.GroupNorm(32, STEM)
        self.stages = nn.ModuleList()
        cin = STEM
        for i, w in enumerate(WIDTHS):
            st = nn.Module()
            st.blocks = nn.ModuleList([Bottleneck(cin if b == 0 else w, w, 2 if i > 0 and b == 0 else 1, first=b == 0)
                                       for b in range(BLOCKS[i])])
            self.stages.append(st)
            cin = w

    def forward(self, x):
        x = F.relu(self.stem.norm(self.stem.conv(x)))
        x = F.max_pool2d(pad_same(x, 3, 2, value=-float("inf")), 3, 2)
        outs = []
        for st in self.stages:
            for blk in st.blocks:
                x = blk(x)
            outs.append(x)
        return outs


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(DIM, 3 * DIM)
        self.attn.proj = nn.Linear(DIM, DIM)
        self.norm2 = nn.LayerNorm(DIM, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(DIM, HIDDEN)
        self.mlp.fc2 = nn.Linear(HIDDEN, DIM)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, DIM // 64, 64).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, c)
        x = x + self.attn.proj(a)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class Readout(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * DIM, DIM), nn.GELU())

    def forward(self, x):
        return self.project(torch.cat((x[:, 1:], x[:, :1].expand_as(x[:, 1:])), -1))


class Pretrained(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        m = self.model
        m.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        m.pos_embed = nn.Parameter(torch.randn(1, 1 + GRID * GRID, DIM))
        m.patch_embed = nn.Module()
        m.patch_embed.backbone = Backbone()
        m.patch_embed.proj = nn.Conv2d(WIDTHS[-1], DIM, 1)
        m.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        m.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.act_postprocess3 = nn.Sequential(Readout(), nn.Identity(), nn.Identity(), nn.Conv2d(DIM, DIM, 1))
        self.act_postprocess4 = nn.Sequential(Readout(), nn.Identity(), nn.Identity(), nn.Conv2d(DIM, DIM, 1),
                                              nn.Conv2d(DIM, DIM, 3, stride=2, padding=1))

    def forward(self, x):
        m = self.model
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        grid = m.pos_embed[:, 1:].reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear").permute(0, 2, 3, 1).reshape(1, h * w, DIM)
        pos = torch.cat((m.pos_embed[:, :1], grid), 1)
        feats = m.patch_embed.backbone(x)
        t = m.patch_embed.proj(feats[-1]).flatten(2).transpose(1, 2)
        t = torch.cat((m.cls_token.expand(t.shape[0], -1, -1), t), 1) + pos
        acts = []
        for i, blk in enumerate(m.blocks):
            t = blk(t)
            if i in HOOKS:
                acts.append(t)
        outs = [feats[0], feats[1]]
        for p, a in zip((self.act_postprocess3, self.act_postprocess4), acts):
            y = p[0](a).transpose(1, 2).reshape(1, DIM, h, w)
            for layer in p[3:]:
                y = layer(y)
            outs.append(y)
        return outs


class RCU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(FEATURES, FEATURES, 3, padding=1)
        self.conv2 = nn.Conv2d(FEATURES, FEATURES, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class Fusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.resConfUnit1, self.resConfUnit2 = RCU(), RCU()
        self.out_conv = nn.Conv2d(FEATURES, FEATURES, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = F.interpolate(self.resConfUnit2(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHybrid(nn.Module):
    def __init__(self):
        super().__init__()
        self.pretrained = Pretrained()
        self.scratch = nn.Module()
        for i, c in enumerate([WIDTHS[0], WIDTHS[1], DIM, DIM]):
            setattr(self.scratch, "layer%d_rn" % (i + 1), nn.Conv2d(c, FEATURES, 3, padding=1, bias=False))
            setattr(self.scratch, "refinenet%d" % (i + 1), Fusion())
        self.scratch.output_conv = nn.Sequential(nn.Conv2d(FEATURES, FEATURES // 2, 3, padding=1), nn.Identity(),
                                                 nn.Conv2d(FEATURES // 2, 32, 3, padding=1), nn.ReLU(),
                                                 nn.Conv2d(32, 1, 1), nn.ReLU(), nn.Identity())

    def forward(self, x):
        s = self.scratch
        ls = self.pretrained(x)
        rn = [getattr(s, "layer%d_rn" % (i + 1))(ls[i]) for i in range(4)]
        p = s.refinenet4(rn[3])
        p = s.refinenet3(p, rn[2])
        p = s.refinenet2(p, rn[1])
        p = s.refinenet1(p, rn[0])
        oc = s.output_conv
        y = F.interpolate(oc[0](p), scale_factor=2, mode="bilinear", align_corners=False)
        for layer in list(oc)[2:]:
            y = layer(y)
        return y[:, 0]


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(15)
    model = DPTHybrid().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "token" in name or "pos_embed" in name:
                continue
            if p.dim() > 1:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
        model.scratch.output_conv[4].bias.fill_(0.5)
        model.half().float()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, os.path.join(OUT, "midas_tiny.pt"))
    rgb = np.fromfile(os.path.join(OUT, "aux_in_up.u8"), np.uint8).reshape(48, 40, 3)
    padded = aux.resize_with_pad(rgb, 64, cv2.INTER_CUBIC)[0]
    x = torch.from_numpy(padded).float() / 127.5 - 1.0
    with torch.no_grad():
        depth = model(x.permute(2, 0, 1)[None])[0]
    depth.numpy().astype(np.float32).tofile(os.path.join(OUT, "midas_depth.f32"))
    depth_image, normal_image = maps.detector_maps(depth.numpy().astype(np.float32), np.pi * 2.0, 0.1)
    depth_image.tofile(os.path.join(OUT, "midas_node_depth.u8"))
    normal_image.tofile(os.path.join(OUT, "midas_node_normal.u8"))
    print("padded %s depth %s range %.4g..%.4g" % (padded.shape, tuple(depth.shape), depth.min(), depth.max()))


if __name__ == "__main__":
    main()
