#!/usr/bin/env python3
"""Writes the OpenPose keypoint goldens under tests/data/goldens/: comfyui_controlnet_aux's
body.py post-processing (after the network and resizes: scipy's gaussian_filter, the local
maxima, the part-affinity scores along 10 linspace samples, the greedy connections and the
people assembly) re-written here, on synthetic maps of 64 x 48: two people as Gaussian bumps on
the 18 keypoint heatmaps and unit vectors along their limbs on the PAFs, with noise, plus a
stray bump.

  pose_maps.f16      heat [48, 64, 19] then paf [48, 64, 38], float16 (read as float64)
  pose_people.f64    per person 18 x (x, y, present), total score, total parts (float64)

Run: python3 tests/reference/make_pose_keypoint_goldens.py   (numpy 2.4, scipy)"""
import math
import os

import numpy as np
from scipy.ndimage import gaussian_filter

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
H, W = 48, 64
LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13], [13, 14],
            [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]
MAP_IDX = [[31, 32], [39, 40], [33, 34], [35, 36], [41, 42], [43, 44], [19, 20], [21, 22], [23, 24], [25, 26],
           [27, 28], [29, 30], [47, 48], [49, 50], [53, 54], [51, 52], [55, 56], [37, 38], [45, 46]]


def people(heat, paf):
    """body.py's steps after the maps, re-written."""
    all_peaks, counter = [], 0
    for part in range(18):
        raw = heat[:, :, part]
        blur = gaussian_filter(raw, sigma=3)
        pad = np.zeros((blur.shape[0] + 2, blur.shape[1] + 2))
        pad[1:-1, 1:-1] = blur
        c = pad[1:-1, 1:-1]
        keep = (c >= pad[:-2, 1:-1]) & (c >= pad[2:, 1:-1]) & (c >= pad[1:-1, :-2]) & (c >= pad[1:-1, 2:]) & (c > 0.1)
        ys, xs = np.nonzero(keep)
        found = [(int(x), int(y), raw[y, x], counter + i) for i, (x, y) in enumerate(zip(xs, ys))]
        counter += len(found)
        all_peaks.append(found)
    connections, skipped = [], set()
    for k, (ia, ib) in enumerate(LIMB_SEQ):
        A, B = all_peaks[ia - 1], all_peaks[ib - 1]
        if not A or not B:
            skipped.add(k)
            connections.append(None)
            continue
        field = paf[:, :, [m - 19 for m in MAP_IDX[k]]]
        cands = []
        for i, a in enumerate(A):
            for j, b in enumerate(B):
                v = np.subtract(b[:2], a[:2])
                norm = max(0.001, math.sqrt(v[0] * v[0] + v[1] * v[1]))
                v = np.divide(v, norm)
                xs = np.linspace(a[0], b[0], num=10)
                ys = np.linspace(a[1], b[1], num=10)
                samples = np.array([field[int(round(ys[m])), int(round(xs[m])), 0] * v[0] +
                                    field[int(round(ys[m])), int(round(xs[m])), 1] * v[1] for m in range(10)])
                score = sum(samples) / len(samples) + min(0.5 * H / norm - 1, 0)
                if len(np.nonzero(samples > 0.05)[0]) > 0.8 * len(samples) and score > 0:
                    cands.append((i, j, score))
        cands.sort(key=lambda c: c[2], reverse=True)
        chosen = []
        for i, j, s in cands:
            if all(i != c[3] and j != c[4] for c in chosen):
                chosen.append((A[i][3], B[j][3], s, i, j))
                if len(chosen) >= min(len(A), len(B)):
                    break
        connections.append(chosen)
    score_of = [p[2] for part in all_peaks for p in part]
    rows = []
    for k, (ia, ib) in enumerate(LIMB_SEQ):
        if k in skipped:
            continue
        ia, ib = ia - 1, ib - 1
        for a, b, s, _, _ in connections[k]:
            hits = [j for j, r in enumerate(rows) if r[ia] == a or r[ib] == b]
            if len(hits) == 1:
                r = rows[hits[0]]
                if r[ib] != b:
                    r[ib] = b
                    r[19] += 1
                    r[18] += score_of[b] + s
            elif len(hits) == 2:
                r1, r2 = rows[hits[0]], rows[hits[1]]
                if not any(r1[p] >= 0 and r2[p] >= 0 for p in range(18)):
                    for p in range(18):
                        r1[p] += r2[p] + 1
                    r1[18] += r2[18]
                    r1[19] += r2[19]
                    r1[18] += s
                    del rows[hits[1]]
                else:
                    r1[ib] = b
                    r1[19] += 1
                    r1[18] += score_of[b] + s
            elif not hits and k < 17:
                r = [-1.0] * 20
                r[ia], r[ib] = a, b
                r[19] = 2
                r[18] = score_of[a] + score_of[b] + s
                rows.append(r)
    rows = [r for r in rows if not (r[19] < 4 or r[18] / r[19] < 0.4)]
    cand = [p for part in all_peaks for p in part]
    out = []
    for r in rows:
        pts = []
        for p in range(18):
            idx = int(r[p])
            pts += [cand[idx][0], cand[idx][1], 1.0] if idx != -1 else [0.0, 0.0, 0.0]
        out.append(pts + [r[18], r[19]])
    return np.array(out, dtype="<f8").reshape(-1, 56)


def synthetic(rng):
    heat = np.zeros((H, W, 19))
    paf = np.zeros((H, W, 38))
    yy, xx = np.mgrid[0:H, 0:W]
    for cx, cy, s in ((18, 24, 9), (46, 22, 8)):
        pts = [(cx + s * rng.uniform(-1, 1), cy + 1.8 * s * rng.uniform(-1, 1)) for _ in range(18)]
        for p, (x, y) in enumerate(pts):
            heat[:, :, p] += 0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
        for k, (a, b) in enumerate(LIMB_SEQ):
            (ax, ay), (bx, by) = pts[a - 1], pts[b - 1]
            d = np.array([bx - ax, by - ay])
            n = max(np.hypot(*d), 1e-3)
            t = np.clip(((xx - ax) * d[0] + (yy - ay) * d[1]) / (n * n), 0, 1)
            dist = np.hypot(xx - (ax + t * d[0]), yy - (ay + t * d[1]))
            on = dist < 1.5
            ch = [m - 19 for m in MAP_IDX[k]]
            paf[:, :, ch[0]][on] = d[0] / n
            paf[:, :, ch[1]][on] = d[1] / n
    heat[:, :, 4] += 0.5 * np.exp(-((xx - 60) ** 2 + (yy - 44) ** 2) / 3.0)  # a stray bump
    heat += rng.normal(0, 0.01, heat.shape)
    paf += rng.normal(0, 0.01, paf.shape)
    return heat.astype(np.float16), paf.astype(np.float16)


def main():
    heat, paf = synthetic(np.random.default_rng(3))
    np.concatenate([heat.ravel(), paf.ravel()]).astype("<f2").tofile(os.path.join(OUT, "pose_maps.f16"))
    found = people(heat.astype(np.float64), paf.astype(np.float64))
    found.tofile(os.path.join(OUT, "pose_people.f64"))
    print(len(found), "people; parts", [int(r[55]) for r in found], "scores", [round(r[54], 3) for r in found])


if __name__ == "__main__":
    main()
