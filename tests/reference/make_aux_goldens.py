#!/usr/bin/env python3
"""Writes the goldens of the no-model ControlNet preprocessors (comfyui_controlnet_aux's
ScribblePreprocessor, Scribble_XDoG_Preprocessor, BinaryPreprocessor) under
tests/data/goldens/aux_*.bin, computed as the annotators do with numpy and OpenCV:

  common_annotator_call: uint8 = trunc(float32 image * 255), detect resolution r (>= 64);
  resize_image_with_pad: k = r / min(H, W), size round(H k) x round(W k) (numpy round),
    cv2.resize with the annotator's method when k > 1 and INTER_AREA otherwise, edge padding to
    multiples of 64; the detector; the padding removed; output uint8 / 255.

The input images are 8-bit (aux_in_<case>.u8, H x W x 3), given to the nodes as v / 255 as
LoadImage does; each output is one 8-bit plane (aux_<node>_<case>.u8: the three channels are
equal), the resized inputs aux_resize_<method>_<case>.u8 are H' x W' x 3.

OpenCV runs without IPP (cv2.ipp.setUseIPP(False)): its own resize and filter code, as in builds
without IPP (ARM); IPP's INTER_CUBIC resize differs by one level in about 3% of samples.

Run: python3 tests/reference/make_aux_goldens.py   (numpy 2.4.6, opencv-python-headless 4.14.0)"""
import os

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")


def write(name, arr):
    np.ascontiguousarray(arr, dtype=np.uint8).tofile(os.path.join(OUT, name))


def test_image(h, w, seed):
    """An 8-bit RGB image: gradients, a disc, dark strokes and noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x * 0.3 + y * 0.2)], axis=2) * 0.6 + 0.3
    disc = (x - 0.6 * w) ** 2 + (y - 0.4 * h) ** 2 < (0.25 * min(h, w)) ** 2
    img[disc] = [0.95, 0.9, 0.2]
    img[(np.abs(x - y * w / h) < 1.5) | (np.abs(y - 0.75 * h) < 1.0)] = 0.05
    img += rng.uniform(-0.08, 0.08, img.shape)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def pad64(x):
    return int(np.ceil(float(x) / 64.0) * 64 - x)


def resize_with_pad(img, resolution, method):
    h, w, _ = img.shape
    k = float(resolution) / float(min(h, w))
    ht, wt = int(np.round(float(h) * k)), int(np.round(float(w) * k))
    img = cv2.resize(img, (wt, ht), interpolation=method if k > 1 else cv2.INTER_AREA)
    padded = np.pad(img, [[0, pad64(ht)], [0, pad64(wt)], [0, 0]], mode="edge")
    return padded, img, (ht, wt)


def hwc3(x):
    return x if x.ndim == 3 else np.repeat(x[:, :, None], 3, axis=2)


def scribble(img, res):
    padded, _, (ht, wt) = resize_with_pad(img, res, cv2.INTER_AREA)
    m = np.zeros_like(padded)
    m[np.min(padded, axis=2) < 127] = 255
    return (255 - m)[:ht, :wt]


def xdog(img, res, thr):
    padded, _, (ht, wt) = resize_with_pad(img, res, cv2.INTER_CUBIC)
    g1 = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    m = np.zeros_like(padded)
    m[2 * (255 - dog) > thr] = 255
    return hwc3(m[:ht, :wt])


def binary(img, res, thr):
    padded, _, (ht, wt) = resize_with_pad(img, res, cv2.INTER_CUBIC)
    gray = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
    if thr == 0 or thr == 255:
        _, b = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        _, b = cv2.threshold(gray, thr, 255, cv2.THRESH_BINARY_INV)
    return hwc3(255 - cv2.cvtColor(b, cv2.COLOR_GRAY2RGB)[:ht, :wt])


# (name, height, width, resolution): upscale (cubic / area-as-linear), generic area, the 2x area
# fast path, k = 1 (no resize), and a width whose samples are no multiple of 8 (the vector
# code's tail).
CASES = [("up", 48, 40, 64), ("down", 120, 90, 64), ("half", 128, 128, 64), ("same", 64, 80, 64),
         ("wide", 40, 57, 64)]


def main():
    cv2.ipp.setUseIPP(False)
    for i, (name, h, w, res) in enumerate(CASES):
        img = test_image(h, w, 100 + i)
        write("aux_in_%s.u8" % name, img)
        u8 = np.asarray(img.astype(np.float32) / np.float32(255.0) * np.float32(255.0), dtype=np.uint8)
        for tag, method in (("cubic", cv2.INTER_CUBIC), ("area", cv2.INTER_AREA)):
            _, resized, _ = resize_with_pad(u8, res, method)
            write("aux_resize_%s_%s.u8" % (tag, name), resized)
        outs = {"scribble": scribble(u8, res), "xdog32": xdog(u8, res, 32), "xdog8": xdog(u8, res, 8),
                "binary100": binary(u8, res, 100), "binary0": binary(u8, res, 0)}
        for tag, out in outs.items():
            assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 0] == out[:, :, 2]).all()
            write("aux_%s_%s.u8" % (tag, name), out[:, :, 0])


if __name__ == "__main__":
    main()
