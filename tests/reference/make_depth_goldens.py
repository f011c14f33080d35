#!/usr/bin/env python3
"""Writes the Depth Anything V2 goldens under tests/data/goldens/: comfyui_controlnet_aux's
DepthAnythingV2Detector (DINOv2 ViT encoder, DPT head, image2tensor, the 8-bit ending of its
__call__ with max_depth=1 as the node passes it) re-written from the reference's description,
on a tiny random network in the real .pth key layout (pretrained.*, depth_head.*): embed dim 64
(one head of 64, as every real size has heads of 64), 4 blocks (intermediate layers 0..3: the
last of each quarter), MLP hidden 32, an 8 x 8 position-embedding grid (interpolated to the
token grid as DINOv2 does), DPT features 8, out_channels 8, 8, 16, 16. Stored as float16 (the
reference computes in float32 from the same rounded values).

  depth_tiny.pth     the network, torch.save of the state dict (read as annotators/<name>.pth)
  depth_raw.f32      infer_image's depth on aux_in_up.u8 (48 x 40 RGB), [48, 40] float32
  depth_map.u8       the node's plane at resolution 64: min-max to uint8, then
                     resize_image_with_pad (INTER_CUBIC), 77 x 64

Run: python3 tests/reference/make_depth_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
opencv-python-headless 4.14.0 with IPP off, as the other
annotator goldens)"""
import math
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
DIM, DEPTH, HIDDEN, GRID = 64, 4, 32, 8
FEATURES, OUT_CH = 8, [8, 8, 16, 16]
LAYERS = [0, 1, 2, 3]


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(DIM, eps=1e-6)
        self.attn = torch.nn.Module()
        self.attn.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.attn.proj = torch.nn.Linear(DIM, DIM)
        self.ls1 = torch.nn.Module()
        self.ls1.gamma = torch.nn.Parameter(torch.randn(DIM) * 0.5)
        self.norm2 = torch.nn.LayerNorm(DIM, eps=1e-6)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(DIM, HIDDEN)
        self.mlp.fc2 = torch.nn.Linear(HIDDEN, DIM)
        self.ls2 = torch.nn.Module()
        self.ls2.gamma = torch.nn.Parameter(torch.randn(DIM) * 0.5)

    def forward(self, x):
        b, n, c = x.shape
        h = self.norm1(x)
        qkv = self.attn.qkv(h).reshape(b, n, 3, DIM // 64, 64).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        a = self.attn.proj(a.transpose(1, 2).reshape(b, n, c))
        x = x + a * self.ls1.gamma
        m = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + m * self.ls2.gamma


class ViT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, DIM))
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + GRID * GRID, DIM))
        self.mask_token = torch.nn.Parameter(torch.zeros(1, DIM))
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = torch.nn.Conv2d(3, DIM, 14, stride=14)
        self.blocks = torch.nn.ModuleList([Block() for _ in range(DEPTH)])
        self.norm = torch.nn.LayerNorm(DIM, eps=1e-6)

    def pos(self, hp, wp):
        n = self.pos_embed.shape[1] - 1
        if hp * wp == n and hp == wp:
            return self.pos_embed
        g = int(math.sqrt(n))
        grid = self.pos_embed[:, 1:].float().reshape(1, g, g, DIM).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((hp + 0.1) / g, (wp + 0.1) / g), mode="bicubic", antialias=False)
        assert grid.shape[-2:] == (hp, wp)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, DIM)
        return torch.cat((self.pos_embed[:, :1], grid), dim=1)

    def layers(self, x):
        hp, wp = x.shape[2] // 14, x.shape[3] // 14
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), dim=1) + self.pos(hp, wp)
        outs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in LAYERS:
                outs.append(self.norm(t)[:, 1:])
        return outs


class RCU(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(FEATURES, FEATURES, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(FEATURES, FEATURES, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class Fusion(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.resConfUnit1 = RCU()
        self.resConfUnit2 = RCU()
        self.out_conv = torch.nn.Conv2d(FEATURES, FEATURES, 1)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.projects = nn.ModuleList([nn.Conv2d(DIM, c, 1) for c in OUT_CH])
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(OUT_CH[0], OUT_CH[0], 4, stride=4),
                                            nn.ConvTranspose2d(OUT_CH[1], OUT_CH[1], 2, stride=2), nn.Identity(),
                                            nn.Conv2d(OUT_CH[3], OUT_CH[3], 3, stride=2, padding=1)])
        self.scratch = nn.Module()
        for i, c in enumerate(OUT_CH):
            setattr(self.scratch, "layer%d_rn" % (i + 1), nn.Conv2d(c, FEATURES, 3, padding=1, bias=False))
        for i in range(4):
            setattr(self.scratch, "refinenet%d" % (i + 1), Fusion())
        self.scratch.output_conv1 = nn.Conv2d(FEATURES, FEATURES // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(nn.Conv2d(FEATURES // 2, 32, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(32, 1, 1), nn.ReLU(), nn.Identity())

    def forward(self, feats, hp, wp):
        ls = []
        for i, x in enumerate(feats):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], hp, wp)
            ls.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        rn = [getattr(s, "layer%d_rn" % (i + 1))(ls[i]) for i in range(4)]
        p = s.refinenet4(rn[3], size=rn[2].shape[2:])
        p = s.refinenet3(p, rn[2], size=rn[1].shape[2:])
        p = s.refinenet2(p, rn[1], size=rn[0].shape[2:])
        p = s.refinenet1(p, rn[0])
        out = F.interpolate(s.output_conv1(p), (hp * 14, wp * 14), mode="bilinear", align_corners=True)
        return s.output_conv2(out)


class DepthAnything(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pretrained = ViT()
        self.depth_head = Head()

    def forward(self, x):
        hp, wp = x.shape[2] // 14, x.shape[3] // 14
        return self.depth_head(self.pretrained.layers(x), hp, wp)[:, 0] * 1.0  # max_depth 1


def net_size(h, w, size=518, multiple=14):
    """image2tensor's Resize: keep aspect, lower bound, multiples of 14."""
    sh, sw = size / h, size / w
    scale = max(sh, sw)

    def fit(x, lo):
        y = int(np.round(x / multiple) * multiple)
        return int(np.ceil(x / multiple) * multiple) if y < lo else y
    return fit(scale * h, size), fit(scale * w, size)


def infer(model, rgb):
    h, w = rgb.shape[:2]
    img = rgb / 255.0
    nh, nw = net_size(h, w)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
    img = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32))[None]
    with torch.no_grad():
        d = model(x)
        d = F.interpolate(d[:, None], (h, w), mode="bilinear", align_corners=True)[0, 0]
    return d.numpy()


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(14)
    model = DepthAnything().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or "token" in name or "pos_embed" in name:
                continue
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn_like(p) * (1.0 / math.sqrt(fan_in) if p.dim() > 1 else 0.1))
        model.depth_head.scratch.output_conv2[2].bias.fill_(0.5)  # keep most of the depth above ReLU's 0
        model.half().float()  # the stored float16 values
    torch.save({k: v.half() for k, v in model.state_dict().items()}, os.path.join(OUT, "depth_tiny.pth"))
    rgb = np.fromfile(os.path.join(OUT, "aux_in_up.u8"), np.uint8).reshape(48, 40, 3)
    depth = infer(model, rgb)
    depth.astype(np.float32).tofile(os.path.join(OUT, "depth_raw.f32"))
    # DepthAnythingV2Detector.__call__: min-max to uint8, then resize_image_with_pad at 64
    d8 = ((depth - depth.min()) / (depth.max() - depth.min()) * 255.0).astype(np.uint8)
    k = 64 / min(d8.shape)
    th, tw = int(np.round(d8.shape[0] * k)), int(np.round(d8.shape[1] * k))
    d8 = cv2.resize(np.repeat(d8[..., None], 3, axis=2), (tw, th), interpolation=cv2.INTER_CUBIC)[..., 0]
    d8.tofile(os.path.join(OUT, "depth_map.u8"))
    print("depth %s range %.4g..%.4g, nonzero %d of %d; map %s" % (depth.shape, depth.min(), depth.max(),
                                                                   (depth > 0).sum(), depth.size, d8.shape))


if __name__ == "__main__":
    main()
