#!/usr/bin/env python3
"""Writes the MiDaS map goldens under tests/data/goldens/: the steps of comfyui_controlnet_aux's
MidasDetector.__call__ after its network (midas/__init__.py), re-written from its source, on a
fixed float32 depth (smooth bumps, a ramp and noise, 40 x 48, values 0.3..about 9):

  midas_depth_in.f32        the depth, [40, 48] float32
  midas_depth.u8            depth_image: (d - min) / max(d - min) * 255, clipped, truncated
  midas_normal_<k>.u8       normal_image (BGR order, as the detector returns it), 40 x 48 x 3,
                            for (a, bg_th) = (2 pi, 0.1) (k = 0, the node's defaults) and (3, 0.4)

Run: python3 tests/reference/make_midas_map_goldens.py   (torch 2.15 CPU, numpy 2.4.6,
opencv-python-headless 4.14.0 with IPP off)"""
import os

import cv2
import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
H, W = 40, 48


def detector_maps(depth_np, a, bg_th):
    depth = torch.from_numpy(depth_np)
    depth_pt = depth.clone()
    depth_pt -= torch.min(depth_pt)
    depth_pt /= torch.max(depth_pt)
    depth_pt = depth_pt.numpy()
    depth_image = (depth_pt * 255.0).clip(0, 255).astype(np.uint8)
    x = cv2.Sobel(depth_np, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth_np, cv2.CV_32F, 0, 1, ksize=3)
    z = np.ones_like(x) * a
    x[depth_pt < bg_th] = 0
    y[depth_pt < bg_th] = 0
    normal = np.stack([x, y, z], axis=2)
    normal /= np.sum(normal ** 2.0, axis=2, keepdims=True) ** 0.5
    normal_image = (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:, :, ::-1]
    return depth_image, np.ascontiguousarray(normal_image)


def main():
    cv2.ipp.setUseIPP(False)
    rng = np.random.default_rng(14)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    d = 0.3 + 6.0 * np.exp(-((yy - 12) ** 2 + (xx - 30) ** 2) / 60.0) + 3.0 * np.exp(-((yy - 30) ** 2 + (xx - 10) ** 2) / 25.0)
    d += 0.02 * xx + rng.normal(0, 0.05, d.shape)
    d = d.astype(np.float32)
    d.tofile(os.path.join(OUT, "midas_depth_in.f32"))
    for k, (a, bg) in enumerate([(np.pi * 2.0, 0.1), (3.0, 0.4)]):
        depth_image, normal_image = detector_maps(d, a, bg)
        if k == 0:
            depth_image.tofile(os.path.join(OUT, "midas_depth.u8"))
        normal_image.tofile(os.path.join(OUT, "midas_normal_%d.u8" % k))
        print("a %.4g bg %.2g: %d background samples" % (a, bg, (depth_image < bg * 255).sum()))


if __name__ == "__main__":
    main()
