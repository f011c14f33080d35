#!/usr/bin/env python3
"""Writes the POSE_KEYPOINT goldens under tests/data/goldens/: comfyui_controlnet_aux's
encode_poses_as_dict (open_pose/__init__.py) for fixed poses, the list of one dict per image
dumped as its node does (json.dumps(list, indent=4)):

  pose_json_in.f64   frames of: people count, canvas h, w, then per person 18 x (x, y, present),
                     has_left, has_right, 21 x (x, y) left, 21 x (x, y) right, the face's point
                     count (0: none), 71 x (x, y) face points (unused ones 0) (float32 values)
  pose_json.txt      the JSON text

Run: python3 tests/reference/make_pose_json_goldens.py"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")


def compress(points):
    if not points:
        return None
    return [v for p in points for v in ([float(p[0]), float(p[1]), 1.0] if p is not None else [0.0, 0.0, 0.0])]


def main():
    rng = np.random.default_rng(3)
    frames = [(2, 230, 192), (0, 512, 512), (1, 100, 1000)]
    rows, dicts = [], []
    for f, (n, h, w) in enumerate(frames):
        rows += [n, h, w]
        people = []
        for i in range(n):
            body = [(rng.uniform(0, 1) / 1.0, rng.uniform(0, 1)) for _ in range(18)]
            body[3] = None
            body[0] = (0.5, 0.25)  # short reprs
            body[1] = (1e-05, 123456.0)  # repr's exponent and fixed forms
            hands = []
            for side in range(2):
                present = (f, i, side) in ((0, 0, 0), (0, 0, 1), (2, 0, 1))
                pts = np.stack([rng.uniform(0, 1, 21), rng.uniform(0, 1, 21)], 1).astype(np.float32)
                pts[4] = (-1.0 / 192, -1.0 / 230)
                hands.append([(p[0], p[1]) for p in pts] if present else None)
            n_face = {(0, 1): 46, (2, 0): 71}.get((f, i), 0)
            face = np.stack([rng.uniform(0, 1, 71), rng.uniform(0, 1, 71)], 1).astype(np.float32)
            face[7] = (-1.0 / w, -1.0 / h)
            face[n_face:] = 0
            for p in body:
                rows += [p[0], p[1], 1.0] if p is not None else [0.0, 0.0, 0.0]
            rows += [hands[0] is not None, hands[1] is not None]
            for hd in hands:
                rows += [float(v) for p in (hd or [(0.0, 0.0)] * 21) for v in p]
            rows += [n_face] + [float(v) for v in face.ravel()]
            people.append({"pose_keypoints_2d": compress(body),
                           "face_keypoints_2d": compress([(p[0], p[1]) for p in face[:n_face]]),
                           "hand_left_keypoints_2d": compress(hands[0]), "hand_right_keypoints_2d": compress(hands[1])})
        dicts.append({"people": people, "canvas_height": h, "canvas_width": w})
    np.array(rows, "<f8").tofile(os.path.join(OUT, "pose_json_in.f64"))
    with open(os.path.join(OUT, "pose_json.txt"), "w") as f:
        f.write(json.dumps(dicts, indent=4))


if __name__ == "__main__":
    main()
