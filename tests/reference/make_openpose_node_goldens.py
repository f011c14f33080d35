#!/usr/bin/env python3
"""Writes the OpenposePreprocessor goldens under tests/data/goldens/: comfyui_controlnet_aux's
OpenposeDetector body path re-written from body.py, util.py and __init__.py (resize_image_with_pad
INTER_CUBIC, BGR, scale 0.5 x 368 / H with util.smart_resize_k (INTER_AREA when it shrinks,
INTER_LANCZOS4 when it enlarges: detect images of 184 rows or fewer), padRightDownCorner
with 128, / 256 - 0.5, the network, each map channel INTER_LANCZOS4 x8, cropped, INTER_LANCZOS4
to the image; body.py's people and draw_bodypose are printed only), with the tiny body network
of make_openpose_goldens.py (pose_body.safetensors) on aux_in_up.u8 at resolution 192.

  pose_lanczos_in.f32, pose_lanczos_<h>x<w>.f32   cv2.resize INTER_LANCZOS4 of a 9 x 7 float32 plane
  pose_node_heat.f32    heatmap_avg [256, 192, 19] at every 5th row and column, float32
  pose_node_paf.f32     paf_avg [256, 192, 38] at every 10th row and column, float32
  pose_node_small_heat.f32, pose_node_small_paf.f32   the same at resolution 64 (a 128 x 64 detect
                        image, enlarged x1.4375): every 4th row and column of both

Run: python3 tests/reference/make_openpose_node_goldens.py"""
import os
import sys

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_aux_goldens as aux  # noqa: E402
from make_openpose_goldens import Body  # noqa: E402
from make_pose_draw_goldens import draw_body  # noqa: E402
from make_pose_keypoint_goldens import people  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")


def load_body():
    net = Body()
    sd = load_file(os.path.join(OUT, "pose_body.safetensors"))
    own = net.state_dict()
    net.load_state_dict({k: sd[".".join(k.split(".")[-2:])].float() for k in own})
    return net.eval()


def lanczos(plane, h, w):
    return cv2.resize(plane, (w, h), interpolation=cv2.INTER_LANCZOS4)


def maps(net, img):
    h, w = img.shape[:2]
    scale = 0.5 * 368 / h
    small = cv2.resize(img, (int(w * scale), int(h * scale)),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4)
    sh, sw = small.shape[:2]
    ph, pw = sh + (-sh) % 8, sw + (-sw) % 8
    padded = np.full((ph, pw, 3), 128, np.uint8)
    padded[:sh, :sw] = small
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(np.float32(padded), (2, 0, 1))[None] / 256 - 0.5))
    with torch.no_grad():
        paf, heat = net(x)
    out = []
    for t in (heat, paf):
        chans = []
        for c in t[0].numpy():
            up = lanczos(c, c.shape[0] * 8, c.shape[1] * 8)[:sh, :sw]
            chans.append(lanczos(up, h, w))
        out.append(np.stack(chans, axis=2).astype(np.float64))
    return out


def main():
    cv2.ipp.setUseIPP(False)
    rng = np.random.default_rng(9)
    plane = rng.standard_normal((9, 7)).astype(np.float32)
    plane.tofile(os.path.join(OUT, "pose_lanczos_in.f32"))
    for h, w in ((72, 56), (13, 11)):
        lanczos(plane, h, w).astype("<f4").tofile(os.path.join(OUT, "pose_lanczos_%dx%d.f32" % (h, w)))

    src = np.fromfile(os.path.join(OUT, "aux_in_up.u8"), np.uint8).reshape(48, 40, 3)
    padded, _, (th, tw) = aux.resize_with_pad(src, 192, cv2.INTER_CUBIC)
    bgr = padded[:, :, ::-1].copy()
    heat, paf = maps(load_body(), bgr)
    found = people(heat, paf)
    h, w = padded.shape[:2]
    canvas = np.zeros((h, w, 3), np.uint8)
    for r in found:
        pts = [(r[3 * p] / float(w), r[3 * p + 1] / float(h)) if r[3 * p + 2] else None for p in range(18)]
        draw_body(canvas, pts, False)
    np.ascontiguousarray(heat[::5, ::5]).astype("<f4").tofile(os.path.join(OUT, "pose_node_heat.f32"))
    np.ascontiguousarray(paf[::10, ::10]).astype("<f4").tofile(os.path.join(OUT, "pose_node_paf.f32"))
    small, _, _ = aux.resize_with_pad(src, 64, cv2.INTER_CUBIC)
    sheat, spaf = maps(load_body(), small[:, :, ::-1].copy())
    np.ascontiguousarray(sheat[::4, ::4]).astype("<f4").tofile(os.path.join(OUT, "pose_node_small_heat.f32"))
    np.ascontiguousarray(spaf[::4, ::4]).astype("<f4").tofile(os.path.join(OUT, "pose_node_small_paf.f32"))
    print("small", small.shape, "heat max %.3f" % sheat.max())
    # The random network finds many "people" in near-ties: a change of 1e-6 in the maps changes
    # them, so the drawing is not a golden (people and drawing have their own on exact inputs).
    print("padded", padded.shape, "people", len(found), "drawn", int((canvas[:th, :tw].sum(axis=2) > 0).sum()),
          "heat max %.3f" % heat.max())


if __name__ == "__main__":
    main()
