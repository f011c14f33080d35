#!/usr/bin/env python3
"""Writes the BAE normal-map goldens under tests/data/goldens/: comfyui_controlnet_aux's
NormalBaeDetector (normalbae/: NNET = Encoder + Decoder, args.architecture "BN") re-written from
its source, on a tiny random network in the real key layout.

The encoder is timm's tf_efficientnet_b5.ap_in1k as the annotator builds it (num_classes=0):
conv_stem (3x3 stride 2) + bn1 (SiLU), seven stages of blocks, conv_head (1x1); BatchNorm eps
1e-3 and TF "same" padding (stride 2: zero padding max((ceil(n/2)-1)*2 + k - n, 0) split with the
smaller half before); SiLU ("swish") everywhere, squeeze-excitation x * sigmoid(conv_expand(
silu(conv_reduce(mean(x))))). Stage 0 is depthwise-separable (conv_dw, bn1 + SiLU, se, conv_pw,
bn2; plus the input when the shape is kept), the others inverted residuals (conv_pw, bn1 + SiLU,
conv_dw, bn2 + SiLU, se, conv_pwl, bn3; plus the input when stride 1 and the width is kept).
Kernels 3, 3, 5, 3, 5, 5, 3 and strides 1, 2, 2, 2, 1, 2, 1 are the real ones. The decoder takes
blocks 0, 1, 2 and 4 and conv_head's output (features[3, 4, 5, 7, 10]) and runs its eval path:
conv2 1x1, four UpSampleBN (bilinear align_corners to the skip's size, concat, 2 x (conv 3x3,
BatchNorm eps 1e-5, LeakyReLU 0.01)), out_conv_res8 3x3 and norm_normalize, then three
refinements (features and the previous prediction upsampled 2x bilinear align_corners,
concatenated, a 1x1 MLP 4 layers with ReLU, norm_normalize).

Tiny configuration (the real one in brackets): stem 8 [48]; stage widths 4, 6, 8, 10, 12, 14, 16
[24, 40, 64, 128, 176, 304, 512] with 2, 2, 2, 2, 2, 2, 1 blocks [3, 5, 5, 7, 7, 9, 3];
expansion 6 as there; squeeze widths a quarter of the block input; head 32 [2048]; decoder
conv2 32 [2048], up1..up4 16, 12, 8, 8 [1024, 512, 256, 128], MLP hidden 8 [128]. Every
BatchNorm has random statistics.

  bae_tiny.pt      torch.save({"model": state_dict}) with the "module." prefix of the
                   DataParallel training (the loader strips it), as scannet.pt
  bae_normals.f32  out_res1 (normals and kappa) for aux_in_up.u8 through resize_image_with_pad
                   (64, INTER_CUBIC: 128 x 64), normalised with the ImageNet mean and std,
                   [4, 128, 64] float32
  bae_map.u8       the detector's image uint8(clip((n + 1) / 2, 0, 1) * 255), 128 x 64 x 3

Run: python3 tests/reference/make_bae_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
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

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
STEM, HEAD = 8, 32
STAGES = [  # (kernel, stride, width, blocks)
    (3, 1, 4, 2), (3, 2, 6, 2), (5, 2, 8, 2), (3, 2, 10, 2), (5, 1, 12, 2), (5, 2, 14, 2), (3, 1, 16, 1)]
EXPAND = 6
UP, HIDDEN = [16, 12, 8, 8], 8


def bn(c, eps=1e-3):
    return nn.BatchNorm2d(c, eps=eps)


class SameConv(nn.Conv2d):
    """timm's create_conv2d(padding="same"): static k // 2 at stride 1, Conv2dSame at stride 2."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x):
        if self.stride[0] == 1:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(x.shape[2] / s) - 1) * s + k - x.shape[2], 0)
        pw = max((math.ceil(x.shape[3] / s) - 1) * s + k - x.shape[3], 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class SqueezeExcite(nn.Module):
    def __init__(self, c, rd):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, rd, 1)
        self.conv_expand = nn.Conv2d(rd, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.conv_expand(F.silu(self.conv_reduce(s))))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv_dw = SameConv(cin, cin, k, stride, groups=cin)
        self.bn1 = bn(cin)
        self.se = SqueezeExcite(cin, max(1, cin // 4))
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
        return y + x if self.skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        mid = cin * EXPAND
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = bn(mid)
        self.conv_dw = SameConv(mid, mid, k, stride, groups=mid)
        self.bn2 = bn(mid)
        self.se = SqueezeExcite(mid, max(1, cin // 4))
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = self.se(F.silu(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_stem = SameConv(3, STEM, 3, 2)
        self.bn1 = bn(STEM)
        stages, cin = [], STEM
        for i, (k, s, c, n) in enumerate(STAGES):
            blocks = []
            for j in range(n):
                block = DepthwiseSeparable if i == 0 else InvertedResidual
                blocks.append(block(cin, c, k, s if j == 0 else 1))
                cin = c
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self.bn2 = bn(HEAD)  # in the file, unused by the decoder

    def features(self, x):
        """Encoder.forward's list: x, conv_stem, bn1 (+SiLU), blocks 0..6, conv_head, ..."""
        f = [x, self.conv_stem(x)]
        f.append(F.silu(self.bn1(f[-1])))
        for stage in self.blocks:
            f.append(stage(f[-1]))
        f.append(self.conv_head(f[-1]))
        return f


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.original_model = EfficientNet()


class UpSampleBN(nn.Module):
    def __init__(self, skip_input, out):
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(skip_input, out, 3, 1, 1), nn.BatchNorm2d(out), nn.LeakyReLU(),
                                  nn.Conv2d(out, out, 3, 1, 1), nn.BatchNorm2d(out), nn.LeakyReLU())

    def forward(self, x, concat_with):
        up = F.interpolate(x, size=[concat_with.size(2), concat_with.size(3)], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, concat_with], dim=1))


def mlp(cin):
    return nn.Sequential(nn.Conv1d(cin, HIDDEN, 1), nn.ReLU(), nn.Conv1d(HIDDEN, HIDDEN, 1), nn.ReLU(),
                         nn.Conv1d(HIDDEN, HIDDEN, 1), nn.ReLU(), nn.Conv1d(HIDDEN, 4, 1))


def norm_normalize(o):
    x, y, z, kappa = torch.split(o, 1, dim=1)
    norm = torch.sqrt(x ** 2.0 + y ** 2.0 + z ** 2.0) + 1e-10
    kappa = F.elu(kappa) + 1.0 + 0.01
    return torch.cat([x / norm, y / norm, z / norm, kappa], dim=1)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        w = [c for _, _, c, _ in STAGES]
        self.conv2 = nn.Conv2d(HEAD, HEAD, 1)
        self.up1 = UpSampleBN(HEAD + w[4], UP[0])
        self.up2 = UpSampleBN(UP[0] + w[2], UP[1])
        self.up3 = UpSampleBN(UP[1] + w[1], UP[2])
        self.up4 = UpSampleBN(UP[2] + w[0], UP[3])
        self.out_conv_res8 = nn.Conv2d(UP[1], 4, 3, 1, 1)
        self.out_conv_res4 = mlp(UP[1] + 4)
        self.out_conv_res2 = mlp(UP[2] + 4)
        self.out_conv_res1 = mlp(UP[3] + 4)

    @staticmethod
    def refine(conv, feat, prev):
        f = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=True)
        p = F.interpolate(prev, scale_factor=2, mode="bilinear", align_corners=True)
        f = torch.cat([f, p], dim=1)
        b, c, h, w = f.shape
        return norm_normalize(conv(f.view(b, c, -1))).view(b, 4, h, w)

    def forward(self, features):
        b0, b1, b2, b3, b4 = features[3], features[4], features[5], features[7], features[10]
        d0 = self.conv2(b4)
        d1 = self.up1(d0, b3)
        d2 = self.up2(d1, b2)
        d3 = self.up3(d2, b1)
        d4 = self.up4(d3, b0)
        res8 = norm_normalize(self.out_conv_res8(d2))
        res4 = self.refine(self.out_conv_res4, d2, res8)
        res2 = self.refine(self.out_conv_res2, d3, res4)
        return self.refine(self.out_conv_res1, d4, res2)


class NNET(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, x):
        return self.decoder(self.encoder.original_model.features(x))


def randomise(model):
    """He-scaled convolutions (signals neither vanish nor explode through the deep random network),
    biases and BatchNorm statistics random."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            m.weight.data.normal_(0.0, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.data.uniform_(-0.3, 0.3)
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(1000)


def main():
    cv2.ipp.setUseIPP(False)
    torch.manual_seed(15)
    model = NNET().eval()
    randomise(model)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    path = os.path.join(OUT, "bae_tiny.pt")
    torch.save({"model": sd}, path)
    os.chmod(path, 0o644)
    name, h, w, res = aux.CASES[0]
    img = np.fromfile(os.path.join(OUT, "aux_in_%s.u8" % name), np.uint8).reshape(h, w, 3)
    padded, _, _ = aux.resize_with_pad(img, res, cv2.INTER_CUBIC)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        x = torch.from_numpy(padded).float() / 255.0
        x = ((x.permute(2, 0, 1) - mean) / std)[None]
        out = model(x)
    out[0].numpy().astype("<f4").tofile(os.path.join(OUT, "bae_normals.f32"))
    normal = ((out[:, :3] + 1) * 0.5).clip(0, 1)[0].permute(1, 2, 0).numpy()
    img8 = (normal * 255.0).clip(0, 255).astype(np.uint8)
    img8.tofile(os.path.join(OUT, "bae_map.u8"))
    print("normals %s, kappa %.3f .. %.3f, %d levels" % (tuple(out.shape), out[:, 3].min(), out[:, 3].max(),
                                                       len(np.unique(img8))))


if __name__ == "__main__":
    main()
