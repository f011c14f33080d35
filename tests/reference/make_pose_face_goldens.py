#!/usr/bin/env python3
"""Writes the OpenPose face goldens under tests/data/goldens/, re-stating comfyui_controlnet_aux's
open_pose face steps (face.py's FaceNet, Face.__call__ and compute_peaks_from_heatmaps, util.py's
faceDetect and draw_facepose, __init__.py's detect_face) on fixed inputs:

  pose_face.pth              a tiny random FaceNet in facenet.pth's layout (a torch.save'd state
                             dict with face.py's flat names; the hand network's layers, small
                             widths, the real 71 outputs; float16 to keep the file small);
                             the last layer's biases of parts 40..70 are -4, so they have no peak
  pose_face.bin              its last-stage heatmaps for the [1, 3, 48, 40] input of
                             make_openpose_goldens.py (sin(0.11 i + 0.3) / 2)
  pose_face_boxes.f64        per case 18 body points (x, y, present) in pixels, then h, w;
  pose_face_boxes.i32        per case util.faceDetect's found flag and box (x, y, width)
  pose_face_bilinear.f32     a random 7 x 6 float32 plane, then F.interpolate(bilinear,
                             align_corners=True) of it to 37 x 29, then to 7 x 6 (the same size)
  pose_face_draw.f32         71 (x, y) float32 points, fractions of a 96 x 80 (w x h) canvas;
  pose_face_draw.u8          util.draw_facepose's canvas of them
  pose_face_points.f32       detect_face on aux_in_up.u8 resized with pad to 192
                             (make_aux_goldens.py) for the boxes (x, y, size) (150, 40, 70) (cut
                             at the right edge to 42 columns) and (20, 30, 100): per box the count
                             of points, then 71 (x, y) float32 rows (unused rows 0)

Run: python3 tests/reference/make_pose_face_goldens.py   (torch 2.15, opencv-python-headless 4.14,
numpy 2.4)"""
import os
import sys
from collections import OrderedDict

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_controlnet_goldens import write  # noqa: E402
from make_openpose_goldens import HAND_FRONT, make_layers, vgg  # noqa: E402
from make_t2i_goldens import randomize  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
PARTS = 71


class FaceNet(nn.Module):
    """face.py's FaceNet with small widths: the VGG front, conv6_1_CPM / conv6_2_CPM, then
    Mconv1..7_stage2..6 on concat(previous heatmaps, front); ReLU after every conv but
    conv6_2_CPM and each Mconv7. Its state dict keys are face.py's (conv1_1.weight, ...). front
    (15 conv widths), mid and m give the real ones (bench/make_annotator_files.py)."""

    def __init__(self, m=4, front=None, mid=12):
        super().__init__()
        no_relu = ["conv6_2_CPM"] + ["Mconv7_stage%d" % i for i in range(2, 7)]
        front, c = vgg(HAND_FRONT, front or [4, 4, 6, 6, 8, 8, 8, 8, 10, 10, 10, 10, 10, 10, 4])
        layers = list(front.items()) + [("conv6_1_CPM", [c, mid, 1, 1, 0]), ("conv6_2_CPM", [mid, PARTS, 1, 1, 0])]
        for s in range(2, 7):
            layers += ([("Mconv1_stage%d" % s, [c + PARTS, m, 7, 1, 3])] +
                       [("Mconv%d_stage%d" % (i, s), [m, m, 7, 1, 3]) for i in range(2, 6)] +
                       [("Mconv6_stage%d" % s, [m, m, 1, 1, 0]), ("Mconv7_stage%d" % s, [m, PARTS, 1, 1, 0])])
        self.seq = make_layers(OrderedDict(layers), no_relu)
        self.convs = {k: v for k, v in self.seq.named_children() if isinstance(v, nn.Conv2d)}
        self.front_end = len(front) * 2 - 3  # sequence index after conv5_3_CPM's ReLU (3 pools have none)

    def state(self):
        return OrderedDict((k + "." + p, t.detach().clone()) for k, v in self.convs.items()
                           for p, t in (("weight", v.weight), ("bias", v.bias)))

    def forward(self, x):
        mods = list(self.seq.children())
        h = x
        for mod in mods[:self.front_end]:
            h = mod(h)
        feature = h
        h = F.relu(self.convs["conv6_1_CPM"](h))
        h = self.convs["conv6_2_CPM"](h)
        for s in range(2, 7):
            h = torch.cat([h, feature], 1)
            for i in range(1, 7):
                h = F.relu(self.convs["Mconv%d_stage%d" % (i, s)](h))
            h = self.convs["Mconv7_stage%d" % s](h)
        return h


def smart_resize(x, ht, wt):
    k = float(ht + wt) / float(x.shape[0] + x.shape[1])
    return cv2.resize(x, (int(wt), int(ht)), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LANCZOS4)


def face_heatmaps(net, face_img):
    """Face.__call__."""
    h, w = face_img.shape[:2]
    x = torch.from_numpy(smart_resize(face_img, 384, 384)).permute([2, 0, 1]) / 256.0 - 0.5
    with torch.no_grad():
        return F.interpolate(net(x[None, ...]), (h, w), mode="bilinear", align_corners=True).numpy()[0]


def compute_peaks(heatmaps):
    peaks = []
    for part in range(heatmaps.shape[0]):
        m = heatmaps[part].copy()
        binary = np.ascontiguousarray(m > 0.05, dtype=np.uint8)
        if np.sum(binary) == 0:
            continue
        pos = np.where(binary > 0.5)
        mi = np.argmax(m[pos])
        peaks.append([pos[1][mi], pos[0][mi]])
    return np.array(peaks)


def detect_face(net, img, x, y, w):
    """detect_face after util.faceDetect gave (x, y, w); img BGR."""
    hh, ww = img.shape[:2]
    peaks = compute_peaks(face_heatmaps(net, img[y:y + w, x:x + w, :])).astype(np.float32)
    if peaks.ndim == 2 and peaks.shape[1] == 2:
        peaks[:, 0] = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(ww)
        peaks[:, 1] = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(hh)
        return peaks
    return None


def face_detect(pts, h, w):
    """util.faceDetect (pts: 18 (x, y) or None, pixels)."""
    head, eyes_ears = pts[0], (pts[14], pts[15], pts[16], pts[17])
    if head is None or all(p is None for p in eyes_ears):
        return None
    width = 0.0
    x0, y0 = head
    for p, f in zip(eyes_ears, (3.0, 3.0, 1.5, 1.5)):
        if p is not None:
            width = max(width, max(abs(x0 - p[0]), abs(y0 - p[1])) * f)
    x, y = x0 - width, y0 - width
    x, y = max(x, 0), max(y, 0)
    width1 = width2 = width * 2
    if x + width > w:
        width1 = w - x
    if y + width > h:
        width2 = h - y
    width = min(width1, width2)
    return (int(x), int(y), int(width)) if width >= 20 else None


def draw_face(canvas, pts):
    h, w = canvas.shape[:2]
    for p in pts:
        x, y = int(p[0] * w), int(p[1] * h)
        if x > 0.01 and y > 0.01:
            cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def main():
    rng = np.random.default_rng(71)
    net = randomize(FaceNet(), 23, gain=2.0)
    with torch.no_grad():
        net.convs["Mconv7_stage6"].bias[40:] = -4.0
    torch.save(OrderedDict((k, v.half()) for k, v in net.state().items()), os.path.join(OUT, "pose_face.pth"))
    i = np.arange(3 * 48 * 40, dtype=np.float64)
    x = torch.from_numpy((np.sin(0.11 * i + 0.3) / 2).astype(np.float32).reshape(1, 3, 48, 40))
    with torch.no_grad():
        write("pose_face.bin", net(x).numpy())

    rows, boxes = [], []
    for case in range(8):
        h, w = 240, 320
        pts = [tuple(rng.uniform(0, 1, 2) * (w, h)) for _ in range(18)]
        if case == 0:  # a face in the middle: eyes 10 pixels from the nose
            pts[0], pts[14], pts[15], pts[16], pts[17] = (160, 120), (150, 112), (170, 113), (140, 118), (181, 117)
        if case == 1:
            pts[0] = None
        if case == 2:
            pts[14] = pts[15] = pts[16] = pts[17] = None
        if case == 3:  # only one ear, small: under 20 pixels
            pts[0], pts[16] = (100.0, 100.0), (104.0, 103.0)
            pts[14] = pts[15] = pts[17] = None
        if case == 4:  # near the bottom right corner: cut
            pts[0], pts[14], pts[15] = (300.0, 225.0), (292.0, 219.0), (308.5, 220.0)
            pts[16] = pts[17] = None
        if case == 5:  # near the top left corner
            pts[0], pts[14] = (5.0, 8.0), (15.0, 2.0)
            pts[15] = pts[16] = pts[17] = None
        found = face_detect(pts, h, w)
        for p in pts:
            rows.extend((p[0], p[1], 1.0) if p is not None else (0.0, 0.0, 0.0))
        rows.extend((h, w, 0.0))
        boxes.extend([1, *found] if found else [0, 0, 0, 0])
    np.array(rows, "<f8").tofile(os.path.join(OUT, "pose_face_boxes.f64"))
    np.array(boxes, "<i4").tofile(os.path.join(OUT, "pose_face_boxes.i32"))

    plane = rng.normal(0, 1, (7, 6)).astype(np.float32)
    t = torch.from_numpy(plane)[None, None]
    up = F.interpolate(t, (37, 29), mode="bilinear", align_corners=True).numpy().ravel()
    same = F.interpolate(t, (7, 6), mode="bilinear", align_corners=True).numpy().ravel()
    np.concatenate([plane.ravel(), up, same]).astype("<f4").tofile(os.path.join(OUT, "pose_face_bilinear.f32"))

    pts = np.stack([rng.uniform(-0.05, 1.05, 71), rng.uniform(-0.05, 1.05, 71)], 1).astype(np.float32)
    pts[3] = (-1.0 / 96, -1.0 / 80)
    pts[11] = (0.5, -1.0 / 80)
    pts[12] = (0.4, 0.004)
    pts.astype("<f4").tofile(os.path.join(OUT, "pose_face_draw.f32"))
    draw_face(np.zeros((80, 96, 3), np.uint8), pts).tofile(os.path.join(OUT, "pose_face_draw.u8"))

    import make_aux_goldens as aux
    src = np.fromfile(os.path.join(OUT, "aux_in_up.u8"), np.uint8).reshape(48, 40, 3)
    padded, _, _ = aux.resize_with_pad(src, 192, cv2.INTER_CUBIC)
    bgr = padded[:, :, ::-1].copy()
    out = []
    for bx, by, bs in ((150, 40, 70), (20, 30, 100)):
        pk = detect_face(net, bgr, bx, by, bs)
        n = 0 if pk is None else len(pk)
        block = np.zeros((72, 2), np.float32)
        block[0, 0] = n
        if n:
            block[1:1 + n] = pk
        out.append(block)
        print("box", (bx, by, bs), n, "points; image", padded.shape)
    np.concatenate(out).astype("<f4").tofile(os.path.join(OUT, "pose_face_points.f32"))


if __name__ == "__main__":
    sys.exit(main())
