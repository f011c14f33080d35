#!/usr/bin/env python3
"""Tiny random-weight InsightFace models and goldens for tests/models/test_face_analysis.c.

Writes tests/data/insightface/tiny_pack/{det_tiny.onnx, rec_tiny.onnx} (torch.onnx.export, the
TorchScript exporter that made the released files, eval mode so BN after Conv is folded):
  - an SCRFD-10G-bnkps-shaped detector: ResNetV1e stem (three 3x3 convs, max pool), BasicBlock
    stages with ResNetV1d average-pool shortcuts, PAFPN neck (nearest 2x top-down, stride-2
    bottom-up), a shared head per level (stacked convs, cls / reg / kps convs, sigmoid, scale Mul,
    permute + reshape to [-1, C]) with 2 anchors; outputs score_8/16/32, bbox_8/16/32,
    kps_8/16/32 (9 outputs, like det_10g.onnx / scrfd_10g_bnkps.onnx); dynamic H, W;
  - an IResNet-shaped ArcFace: conv, BN, PReLU, IBasicBlocks (BN-conv-BN-PReLU-conv-BN, conv+BN
    downsample), BN, Flatten, Linear to 512, BatchNorm1d (like w600k_r50.onnx / glintr100.onnx),
    input 1x3x112x112.
and goldens from onnx's ReferenceEvaluator for the detector and from the torch module for the
recognizer (ReferenceEvaluator's opset-9 BatchNormalization uses the batch's statistics whenever the
momentum attribute is present, which torch.onnx writes; onnxruntime and torch use the running
statistics, as sdflow does): each graph's outputs on fixed inputs, then the whole
FaceAnalysis.get (insightface's scrfd.py detect + nms, face_align.norm_crop with skimage's
SimilarityTransform and cv2.warpAffine, arcface_onnx.py get_feat, normed embedding) re-stated
below on fixed images, and norm_crop alone at 112 and 128 (the template shifted). Run from the repository root:
    python3 tests/reference/make_faceid_goldens.py
(needs torch, onnx, opencv-python-headless, scikit-image). Not used by the tests.
"""
import json
import os
import struct

import cv2
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator
from skimage import transform as trans

ROOT = os.path.join(os.path.dirname(__file__), "..", "data")
PACK = os.path.join(ROOT, "insightface", "tiny_pack")
GOLD = os.path.join(ROOT, "goldens")


def cbr(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:  # ResNetV1d: avg pool, then 1x1 conv
            self.down = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                                      nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return x * self.scale


class TinySCRFD(nn.Module):
    def __init__(self, w=(8, 8, 12, 16), neck=8, feat=8, anchors=2):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 4, 2), cbr(4, 4), cbr(4, w[0]), nn.MaxPool2d(3, 2, 1))
        self.l1 = BasicBlock(w[0], w[0], 1)
        self.l2 = BasicBlock(w[0], w[1], 2)
        self.l3 = BasicBlock(w[1], w[2], 2)
        self.l4 = BasicBlock(w[2], w[3], 2)
        self.lat = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in w[1:]])
        self.fpn = nn.ModuleList([cbr(neck, neck) for _ in range(3)])
        self.down = nn.ModuleList([cbr(neck, neck, 2) for _ in range(2)])
        self.pafpn = nn.ModuleList([cbr(neck, neck) for _ in range(2)])
        self.stack = nn.Sequential(cbr(neck, feat), cbr(feat, feat))
        self.cls = nn.Conv2d(feat, anchors, 3, 1, 1)
        self.reg = nn.Conv2d(feat, anchors * 4, 3, 1, 1)
        self.kps = nn.Conv2d(feat, anchors * 10, 3, 1, 1)
        self.scales = nn.ModuleList([Scale() for _ in range(3)])

    def forward(self, x):
        x = self.l1(self.stem(x))
        c2 = self.l2(x)
        c3 = self.l3(c2)
        c4 = self.l4(c3)
        lat = [l(c) for l, c in zip(self.lat, (c2, c3, c4))]
        for i in (2, 1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2.0, mode="nearest")
        outs = [f(l) for f, l in zip(self.fpn, lat)]
        for i in range(2):
            outs[i + 1] = outs[i + 1] + self.down[i](outs[i])
        outs = [outs[0]] + [p(o) for p, o in zip(self.pafpn, outs[1:])]
        scores, boxes, kpss = [], [], []
        for i, o in enumerate(outs):
            h = self.stack(o)
            n = h.shape[0]
            scores.append(torch.sigmoid(self.cls(h)).permute(0, 2, 3, 1).reshape(n, -1, 1).reshape(-1, 1))
            boxes.append(self.scales[i](self.reg(h)).permute(0, 2, 3, 1).reshape(-1, 4))
            kpss.append(self.kps(h).permute(0, 2, 3, 1).reshape(-1, 10))
        return tuple(scores + boxes + kpss)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + self.down(x)


class TinyIResNet(nn.Module):
    def __init__(self, w=(4, 4, 6, 2), emb=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0], eps=1e-5)
        self.prelu = nn.PReLU(w[0])
        cin, layers = w[0], []
        for c in w:
            layers.append(IBasicBlock(cin, c, 2))
            cin = c
        self.layers = nn.Sequential(*layers)
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(cin * 7 * 7, emb)
        self.features = nn.BatchNorm1d(emb, eps=1e-5)

    def forward(self, x):
        x = self.layers(self.prelu(self.bn1(self.conv1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.2) + (1.0 if "bn" in name and
                                                                                          name.endswith("weight") else 0.0))
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)


def export(model, x, path, outputs, dynamic):
    model.eval()
    axes = {"input.1": {2: "h", 3: "w"}} if dynamic else None
    torch.onnx.export(model, x, path, input_names=["input.1"], output_names=outputs, opset_version=11,
                      dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(onnx.load(path))


class TorchSession:
    """The recognizer module behind ReferenceEvaluator's run() signature."""

    def __init__(self, model):
        self.model = model.eval()

    def run(self, _names, feeds):
        with torch.no_grad():
            return [self.model(torch.from_numpy(feeds["input.1"])).numpy()]


def write_f32(name, arr):
    np.asarray(arr, dtype="<f4").tofile(os.path.join(GOLD, name))


# ---- insightface re-stated (scrfd.py, face_align.py, arcface_onnx.py, face_analysis.py) ----

ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)


def estimate_norm(lmk, image_size=112):
    if image_size % 112 == 0:
        ratio, diff_x = float(image_size) / 112.0, 0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    tform = trans.SimilarityTransform()
    tform.estimate(lmk, dst)
    return tform.params[0:2, :]


def norm_crop(img, landmark, image_size=112):
    return cv2.warpAffine(img, estimate_norm(landmark, image_size), (image_size, image_size), borderValue=0.0)


def distance2bbox(points, distance):
    return np.stack([points[:, 0] - distance[:, 0], points[:, 1] - distance[:, 1],
                     points[:, 0] + distance[:, 2], points[:, 1] + distance[:, 3]], axis=-1)


def distance2kps(points, distance):
    preds = []
    for i in range(0, distance.shape[1], 2):
        preds.append(points[:, i % 2] + distance[:, i])
        preds.append(points[:, i % 2 + 1] + distance[:, i + 1])
    return np.stack(preds, axis=-1)


def nms(dets, thresh=0.4):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort(kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def detect(sess, img, det_size, thresh=0.5):
    im_ratio = float(img.shape[0]) / img.shape[1]
    if im_ratio > 1.0:
        new_height = det_size
        new_width = int(new_height / im_ratio)
    else:
        new_width = det_size
        new_height = int(new_width * im_ratio)
    det_scale = float(new_height) / img.shape[0]
    resized = cv2.resize(img, (new_width, new_height))
    det_img = np.zeros((det_size, det_size, 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = resized
    blob = cv2.dnn.blobFromImage(det_img, 1.0 / 128.0, (det_size, det_size), (127.5, 127.5, 127.5), swapRB=True)
    outs = sess.run(None, {"input.1": blob})
    scores_l, boxes_l, kpss_l = [], [], []
    for idx, stride in enumerate((8, 16, 32)):
        scores = outs[idx]
        bbox_preds = outs[idx + 3] * stride
        kps_preds = outs[idx + 6] * stride
        h, w = det_size // stride, det_size // stride
        centers = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        centers = np.stack([centers] * 2, axis=1).reshape((-1, 2))
        pos = np.where(scores >= thresh)[0]
        scores_l.append(scores[pos])
        boxes_l.append(distance2bbox(centers, bbox_preds)[pos])
        kpss_l.append(distance2kps(centers, kps_preds).reshape((-1, 5, 2))[pos])
    scores = np.vstack(scores_l)
    order = scores.ravel().argsort(kind="stable")[::-1]
    bboxes = np.vstack(boxes_l) / det_scale
    kpss = np.vstack(kpss_l) / det_scale
    pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
    keep = nms(pre_det)
    return pre_det[keep, :], kpss[order][keep]


def embed(sess, img, kps):
    aimg = norm_crop(img, kps, 112)
    blob = cv2.dnn.blobFromImages([aimg], 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    e = sess.run(None, {"input.1": blob})[0].flatten()
    return e / np.linalg.norm(e)


def main():
    os.makedirs(PACK, exist_ok=True)
    det_path, rec_path = os.path.join(PACK, "det_tiny.onnx"), os.path.join(PACK, "rec_tiny.onnx")
    det = TinySCRFD()
    randomize(det, 1)
    with torch.no_grad():  # few positive scores, so that every face is compared
        det.cls.weight.mul_(0.002)
        det.cls.bias.fill_(-0.9)
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    export(det, torch.zeros(1, 3, 64, 64), det_path, names, True)
    rec = TinyIResNet()
    randomize(rec, 2)
    export(rec, torch.zeros(1, 3, 112, 112), rec_path, ["fc1"], False)
    dsess, rsess = ReferenceEvaluator(det_path), TorchSession(rec)
    probe = np.random.default_rng(3).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():  # the exported detector is the module
        for a, b in zip(dsess.run(None, {"input.1": probe}), det(torch.from_numpy(probe))):
            assert np.abs(a - b.numpy()).max() <= 1e-5 * np.abs(a).max(), np.abs(a - b.numpy()).max()
    rng = np.random.default_rng(7)

    # Graph outputs on fixed inputs (the executor test).
    x = rng.uniform(-1, 1, (1, 3, 96, 64)).astype(np.float32)
    write_f32("onnx_det_in.f32", x)
    outs = dsess.run(None, {"input.1": x})
    write_f32("onnx_det_out.f32", np.concatenate([o.ravel() for o in outs]))
    y = rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    write_f32("onnx_rec_in.f32", y)
    write_f32("onnx_rec_out.f32", rsess.run(None, {"input.1": y})[0])

    # FaceAnalysis.get on two images: one that needs no resize (64x48 at det 64), one that does.
    faces = {}
    for name, (h, w, det_size) in {"a": (48, 64, 64), "b": (80, 100, 64)}.items():
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # RGB, as sdflow holds it
        img.astype("<f4").tofile(os.path.join(GOLD, f"face_img_{name}.f32"))
        bgr = img[..., ::-1].copy()  # ComfyUI_IPAdapter_plus's tensor_to_image hands insightface BGR
        dets, kpss = detect(dsess, bgr, det_size)
        faces[name] = {"det_size": det_size, "width": w, "height": h, "faces": [
            {"box": [float(v) for v in d[:4]], "score": float(d[4]), "kps": [float(v) for v in k.ravel()],
             "embedding": [float(v) for v in embed(rsess, bgr, k)]} for d, k in zip(dets, kpss)]}
    with open(os.path.join(GOLD, "face_analysis.json"), "w") as f:
        json.dump(faces, f)

    # norm_crop alone: a random image, planted landmarks, sizes 112 and 128.
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    lmk = np.array([[40.3, 38.1], [77.9, 36.2], [60.5, 55.7], [45.2, 72.8], [74.1, 71.3]], dtype=np.float32)
    img.tofile(os.path.join(GOLD, "norm_crop_in.u8"))
    for size in (112, 128):
        norm_crop(img, lmk, size).tofile(os.path.join(GOLD, f"norm_crop_{size}.u8"))
    print({k: len(v["faces"]) for k, v in faces.items()}, "faces")


if __name__ == "__main__":
    main()
