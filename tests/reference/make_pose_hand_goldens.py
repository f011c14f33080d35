#!/usr/bin/env python3
"""Writes the OpenPose hand goldens under tests/data/goldens/, re-stating comfyui_controlnet_aux's
open_pose steps on fixed inputs (OpenCV's own drawing calls, skimage-style labelling done here
with scipy.ndimage.label, which numbers components in the same raster order):

  pose_hand_draw_<case>.f32   21 rows of (x, y) float32, fractions of the canvas (as detect_hands
                              makes them: -1 / size for a missing point)
  pose_hand_draw_<case>.u8    util.draw_handpose's canvas, h x w x 3 bytes
  pose_hand_boxes.f64         per case: 18 body points (x, y, present) in pixels, then the image
                              h, w; pose_hand_boxes.i32: per case the count and up to 2 boxes
                              (x, y, width, is_left) of util.handDetect
  pose_hand_maps.f32          Hand.__call__'s heatmap_avg [128, 128, 22] at every 4th row and
                              column (float32) for the box x 30, y 40, side 70 of aux_in_up.u8
                              resized with pad to 192 (make_aux_goldens.py), with the tiny hand
                              network pose_hand.safetensors (make_openpose_goldens.py)
  pose_hand_points.f32        detect_hands' 21 (x, y) float32 keypoints from those maps
  pose_resize_*               cv2.resize checks: see resize_goldens
  pose_hand_peaks.f32         6 heatmap planes of 128 x 128 (float32 values, taken as float64);
                              pose_hand_peaks.i32 their (x, y) peaks by Hand.__call__'s peak
                              step for a 90 x 70 (w x h) crop

Run: python3 tests/reference/make_pose_hand_goldens.py   (opencv-python-headless 4.14, numpy 2.4,
scipy, torch)"""
import math
import os

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter, label

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
         (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


def hsv_to_rgb(h):  # matplotlib.colors.hsv_to_rgb for s = v = 1
    i = int(h * 6.0)
    f = h * 6.0 - i
    q, t = 1.0 - f, 1.0 - (1.0 - f)
    return np.array([(1, t, 0), (q, 1, 0), (0, 1, t), (0, q, 1), (t, 0, 1), (1, 0, q)][i % 6], np.float64)


def draw_hand(canvas, pts):
    h, w = canvas.shape[:2]
    for ie, (a, b) in enumerate(EDGES):
        x1, y1 = int(pts[a][0] * w), int(pts[a][1] * h)
        x2, y2 = int(pts[b][0] * w), int(pts[b][1] * h)
        if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
            cv2.line(canvas, (x1, y1), (x2, y2), hsv_to_rgb(ie / float(len(EDGES))) * 255, thickness=2)
    for p in pts:
        x, y = int(p[0] * w), int(p[1] * h)
        if x > 0.01 and y > 0.01:
            cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)
    return canvas


def hand_detect(pts, h, w):
    out = []
    for s, e, wr, left in ((5, 6, 7, True), (2, 3, 4, False)):
        if pts[s] is None or pts[e] is None or pts[wr] is None:
            continue
        (x1, y1), (x2, y2), (x3, y3) = pts[s], pts[e], pts[wr]
        x = x3 + 0.33 * (x3 - x2)
        y = y3 + 0.33 * (y3 - y2)
        width = 1.5 * max(math.sqrt((x3 - x2) ** 2 + (y3 - y2) ** 2), 0.9 * math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2))
        x -= width / 2
        y -= width / 2
        x, y = max(x, 0), max(y, 0)
        w1 = w - x if x + width > w else width
        w2 = h - y if y + width > h else width
        width = min(w1, w2)
        if width >= 20:
            out.append((int(x), int(y), int(width), left))
    return out


def peaks(heat, hr, wr):
    res = []
    for part in range(heat.shape[2]):
        m = heat[:, :, part].copy()
        binary = np.ascontiguousarray(gaussian_filter(m, sigma=3) > 0.05, dtype=np.uint8)
        if np.sum(binary) == 0:
            res.append((0, 0))
            continue
        lab, n = label(binary, structure=np.ones((3, 3)))
        best = np.argmax([np.sum(m[lab == i]) for i in range(1, n + 1)]) + 1
        m[lab != best] = 0
        y = m.max(1).argmax()
        x = m.argmax(1)[y]
        res.append((int(float(x) * float(wr) / 128.0), int(float(y) * float(hr) / 128.0)))
    return res


def smart_resize(x, side):
    k = float(2 * side) / float(x.shape[0] + x.shape[1])
    return cv2.resize(x, (int(side), int(side)), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LANCZOS4)


def hand_maps(net, crop):
    import torch
    blurred = cv2.GaussianBlur(crop, (0, 0), 0.8)
    avg = np.zeros((128, 128, 22))
    for scale in (0.5, 1.0, 1.5, 2.0):
        img = smart_resize(blurred, scale * 368)  # sides 184 .. 736: multiples of 8, no padding
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(np.float32(img[:, :, :, None]), (3, 2, 0, 1)) / 256 - 0.5))
        with torch.no_grad():
            out = np.transpose(np.squeeze(net(x).numpy()), (1, 2, 0))
        up = np.stack([cv2.resize(out[:, :, c], (out.shape[1] * 8, out.shape[0] * 8),
                                  interpolation=cv2.INTER_LANCZOS4) for c in range(22)], axis=2)
        small = np.stack([cv2.resize(up[:, :, c], (128, 128), interpolation=cv2.INTER_AREA) for c in range(22)], axis=2)
        avg += small / 4
    return avg


def hand_maps_golden():
    import sys
    from safetensors.torch import load_file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_aux_goldens as aux
    from make_openpose_goldens import Hand
    net = Hand()
    sd = load_file(os.path.join(OUT, "pose_hand.safetensors"))
    net.load_state_dict({k: sd[".".join(k.split(".")[-2:])].float() for k in net.state_dict()})
    net.eval()
    src = np.fromfile(os.path.join(OUT, "aux_in_up.u8"), np.uint8).reshape(48, 40, 3)
    padded, _, _ = aux.resize_with_pad(src, 192, cv2.INTER_CUBIC)
    bgr = padded[:, :, ::-1].copy()
    avg = hand_maps(net, bgr[40:110, 30:100])
    np.ascontiguousarray(avg[::4, ::4]).astype("<f4").tofile(os.path.join(OUT, "pose_hand_maps.f32"))
    # detect_hands' keypoints for that box: the peaks offset by the corner, over the image size
    pk = np.array(peaks(avg[:, :, :21], 70, 70)).astype(np.float32)
    h, w = padded.shape[:2]
    pk[:, 0] = np.where(pk[:, 0] < 1e-6, -1, pk[:, 0] + 30) / float(w)
    pk[:, 1] = np.where(pk[:, 1] < 1e-6, -1, pk[:, 1] + 40) / float(h)
    pk.astype("<f4").tofile(os.path.join(OUT, "pose_hand_points.f32"))
    print("hand maps: max %.4f, padded %s" % (avg.max(), padded.shape))


def main():
    rng = np.random.default_rng(14)
    for name, w, h in (("small", 96, 80), ("large", 300, 260)):
        pts = np.stack([rng.uniform(-0.05, 1.05, 21), rng.uniform(-0.05, 1.05, 21)], 1).astype(np.float32)
        pts[3] = (-1.0 / w, -1.0 / h)
        pts[11] = (0.5, -1.0 / h)
        pts[12] = (0.4, 0.004)
        pts[7] = pts[6]
        canvas = draw_hand(np.zeros((h, w, 3), np.uint8), pts)
        pts.astype("<f4").tofile(os.path.join(OUT, "pose_hand_draw_%s.f32" % name))
        canvas.tofile(os.path.join(OUT, "pose_hand_draw_%s.u8" % name))
        print(name, int((canvas.sum(axis=2) > 0).sum()), "pixels drawn")

    rows, boxes = [], []
    for case in range(8):
        h, w = 240, 320
        pts = [tuple(rng.uniform(0, 1, 2) * (w, h)) for _ in range(18)]
        if case == 1:
            pts[6] = None
        if case == 2:
            pts[3] = None
            pts[6] = None
        if case == 3:  # a small arm: boxes under 20 pixels are dropped
            pts[2], pts[3], pts[4] = (100.0, 100.0), (104.0, 103.0), (107.5, 105.25)
        if case == 4:  # near the corner: clipped boxes
            pts[5], pts[6], pts[7] = (250.0, 200.0), (290.0, 220.0), (315.0, 235.0)
        found = hand_detect(pts, h, w)
        for p in pts:
            rows.extend((p[0], p[1], 1.0) if p is not None else (0.0, 0.0, 0.0))
        rows.extend((h, w, 0.0))
        b = [len(found)] + [0] * 8
        for i, (x, y, s, left) in enumerate(found):
            b[1 + 4 * i:5 + 4 * i] = (x, y, s, int(left))
        boxes.extend(b)
    np.array(rows, "<f8").tofile(os.path.join(OUT, "pose_hand_boxes.f64"))
    np.array(boxes, "<i4").tofile(os.path.join(OUT, "pose_hand_boxes.i32"))

    yy, xx = np.mgrid[0:128, 0:128]
    heat = np.zeros((128, 128, 6))
    for part in range(6):
        for _ in range(3):  # a few blobs of random strength and sign, plus noise
            cy, cx, s, a = rng.uniform(0, 128), rng.uniform(0, 128), rng.uniform(2, 8), rng.uniform(-0.2, 0.8)
            heat[:, :, part] += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        heat[:, :, part] += rng.normal(0, 0.02, (128, 128))
    heat[:, :, 5] = 0.0  # nothing above the threshold
    heat = heat.astype(np.float32).astype(np.float64)
    np.ascontiguousarray(heat.transpose(2, 0, 1)).astype("<f4").tofile(os.path.join(OUT, "pose_hand_peaks.f32"))
    np.array(peaks(heat, 70, 90), "<i4").tofile(os.path.join(OUT, "pose_hand_peaks.i32"))
    resize_goldens()
    hand_maps_golden()



def resize_goldens():
    """pose_resize_u8_<h>x<w>.u8: a random 8-bit 3-channel image (first h x w x 3 bytes of
    pose_resize_src.u8, 37 x 29 x 3) enlarged by cv2.resize INTER_LANCZOS4; pose_resize_area.f32:
    a random 184 x 184 float32 plane then its INTER_AREA shrink to 128 x 128."""
    rng = np.random.default_rng(41)
    src = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    src[10:20, 5:15] = 255  # hard edges: ringing clipped at 255 and 0
    src[20:30, 15:25] = 0
    src.tofile(os.path.join(OUT, "pose_resize_src.u8"))
    for h, w in ((184, 144), (61, 45), (37, 64)):
        cv2.resize(src, (w, h), interpolation=cv2.INTER_LANCZOS4).tofile(
            os.path.join(OUT, "pose_resize_u8_%dx%d.u8" % (h, w)))
    plane = rng.normal(0, 1, (184, 184)).astype(np.float32)
    small = cv2.resize(plane, (128, 128), interpolation=cv2.INTER_AREA)
    np.concatenate([plane.ravel(), small.ravel()]).astype("<f4").tofile(os.path.join(OUT, "pose_resize_area.f32"))


if __name__ == "__main__":
    main()
