#!/usr/bin/env python3
"""Writes the OpenPose drawing goldens under tests/data/goldens/: comfyui_controlnet_aux's
util.draw_bodypose re-written here with OpenCV's own drawing calls (cv2.ellipse2Poly,
cv2.fillConvexPoly, cv2.circle) on fixed keypoints:

  pose_draw_<case>.f64   the keypoints: 18 rows of (x, y, present) float64, x and y normalised
  pose_draw_<case>.u8    the canvas, h x w x 3 bytes

  full     128 x 96, all 18 points inside
  edges    128 x 96, points missing, outside the canvas (clipped limbs and circles), two equal
           points (a zero-length limb)
  xinsr    640 x 520 with xinsr_stick_scaling (stick width 4 x 2)

Run: python3 tests/reference/make_pose_draw_goldens.py   (opencv-python-headless 4.14, numpy 2.4)"""
import math
import os

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
LIMBS = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
         (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


def draw_body(canvas, points, xinsr):
    h, w = canvas.shape[:2]
    side = max(h, w)
    scale = 1 if not xinsr or side < 500 else min(2 + side // 1000, 7)
    for (a, b), color in zip(LIMBS, COLORS):
        p, q = points[a - 1], points[b - 1]
        if p is None or q is None:
            continue
        ys = np.array([p[0], q[0]]) * float(w)  # the annotator names the x coordinates Y
        xs = np.array([p[1], q[1]]) * float(h)
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(xs[0] - xs[1], ys[0] - ys[1]))
        poly = cv2.ellipse2Poly((int(np.mean(ys)), int(np.mean(xs))), (int(length / 2), 4 * scale), int(angle), 0,
                                360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(float(c) * 0.6) for c in color])
    for p, color in zip(points, COLORS):
        if p is not None:
            cv2.circle(canvas, (int(p[0] * w), int(p[1] * h)), 4, color, thickness=-1)
    return canvas


def person(rng, cx, cy, s):
    return [(cx + s * rng.uniform(-1, 1), cy + s * rng.uniform(-1.5, 1.5)) for _ in range(18)]


def main():
    rng = np.random.default_rng(5)
    full = person(rng, 0.5, 0.5, 0.3)
    edges = person(rng, 0.5, 0.5, 0.6)
    edges[3] = None
    edges[16] = None
    edges[0] = (-0.05, 0.2)
    edges[14] = (1.02, 0.5)
    edges[15] = (0.3, 1.01)
    edges[5] = edges[6]  # a zero-length limb (6, 7)
    xinsr = person(rng, 0.45, 0.5, 0.35)
    for name, pts, w, h, flag in (("full", full, 128, 96, False), ("edges", edges, 128, 96, False),
                                  ("xinsr", xinsr, 640, 520, True)):
        canvas = draw_body(np.zeros((h, w, 3), np.uint8), pts, flag)
        rows = np.array([(p[0], p[1], 1.0) if p is not None else (0.0, 0.0, 0.0) for p in pts], dtype="<f8")
        rows.tofile(os.path.join(OUT, "pose_draw_%s.f64" % name))
        canvas.tofile(os.path.join(OUT, "pose_draw_%s.u8" % name))
        print(name, w, h, int((canvas.sum(axis=2) > 0).sum()), "pixels drawn")


if __name__ == "__main__":
    main()
