#!/usr/bin/env python3
"""Writes the GGUF goldens of tests/models/test_gguf.c with the gguf Python package (pip install
gguf; ggml's reference block formats):

  tests/data/goldens/gguf_blocks.gguf  a small GGUF file written by gguf.GGUFWriter, as ComfyUI-GGUF's
      converter writes one (raw_dtype tensors from uint8 block bytes): for each type F32, F16,
      BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K two tensors,
        "<type>.q"    [3, 512] the package's quantize() of seeded normal values (F32, F16, BF16 and the
                      32-wide types; the package has no K-quant quantizer, so K types get only:)
        "<type>.raw"  [2, 512] seeded random block bytes (every bit pattern of the scales, signs and
                      high bits), each block's f16 d / dmin replaced by a finite random half;
      one tensor with a comfy.gguf.orig_shape override ("Q8_0.conv" stored [16, 64], shape
      [16, 4, 4, 4]) and metadata of every value type and arrays of ints, floats and strings;
      alignment 64 (general.alignment).
  tests/data/goldens/gguf_blocks.f32   gguf.quants.dequantize() of every tensor, in file order,
      little-endian float32 (what the C dequantiser must match bit for bit).
  tests/data/goldens/gguf_quantize.f32  12 blocks of 32 float32 inputs: seeded normal values at
      several scales, zeros, a block whose largest magnitudes tie with opposite signs, values
      that land on .5 after scaling, tiny values (subnormal f16 scale) and large ones;
  tests/data/goldens/gguf_quantize.bin  the package's quantize() of them as Q8_0, then Q4_0, then
      BF16 (what the C quantiser, ml/formats/gguf.c sd_ggml_quantize, must match bit for bit).

Regenerate (developers only; CI reads the committed files):
    python3 tests/reference/make_gguf_goldens.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "goldens")

# type -> byte offsets of its f16 scale fields inside a block
SCALES = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q5_0: [0], T.Q4_1: [0, 2], T.Q5_1: [0, 2],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]


def random_blocks(rng, qtype, rows, cols):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // block
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    for off in SCALES[qtype]:
        halves = rng.normal(0, 0.05, size=nblocks).astype(np.float16)
        raw[:, off:off + 2] = halves.view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(rows, cols // block * size)


def main():
    rng = np.random.default_rng(20261206)
    path = os.path.join(OUT, "gguf_blocks.gguf")
    w = gguf.GGUFWriter(path, "flux")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.25)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_uint64("test.u64", 2**63 - 1)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.5)
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.floats", [0.5, 1.5])
    w.add_array("test.strings", ["a", "", "▁piece"])
    w.add_array("comfy.gguf.orig_shape.Q8_0.conv", [16, 4, 4, 4])
    refs = []

    def add(name, data, qtype):
        w.add_tensor(name, data, raw_dtype=qtype)
        refs.append(np.asarray(dequantize(data, qtype), dtype=np.float32).reshape(-1))

    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]:
        if qtype in QUANTIZABLE:
            x = rng.normal(0, 1, size=(3, 512)).astype(np.float32)
            q = quantize(x, qtype)
            if qtype in (T.F32, T.F16):
                q = q.view(np.uint8)
            add(qtype.name + ".q", q, qtype)
        if qtype in SCALES:
            add(qtype.name + ".raw", random_blocks(rng, qtype, 2, 512), qtype)
    conv = quantize(rng.normal(0, 1, size=(16, 64)).astype(np.float32), T.Q8_0)
    add("Q8_0.conv", conv, T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(refs).astype("<f4").tofile(os.path.join(OUT, "gguf_blocks.f32"))
    print(path, os.path.getsize(path), "bytes,", len(refs), "tensors")


def quantize_goldens():
    rng = np.random.default_rng(20261207)
    blocks = [rng.normal(0, s, 32) for s in (1.0, 0.02, 30.0, 1e-3, 5.0)]
    blocks.append(np.zeros(32))
    tie = rng.normal(0, 1, 32)
    tie[3], tie[20] = -4.0, 4.0  # largest magnitude twice, opposite signs: the first one wins
    blocks.append(tie)
    half = np.arange(32) - 15.5  # Q8_0: amax 16.5 -> x / d lands on .5 steps
    half[0] = 127.0
    blocks.append(half)
    blocks.append(half / 127.0 * 3.0)
    blocks.append(rng.normal(0, 1e-7, 32))
    blocks.append(rng.normal(0, 1e4, 32))
    blocks.append(np.linspace(-8.0, 7.0, 32))  # Q4_0: d = 1, x / d + 8.5 on integer + .5 steps
    x = np.concatenate(blocks).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(OUT, "gguf_quantize.f32"))
    q = [np.asarray(quantize(x, t)).view(np.uint8).reshape(-1) for t in (T.Q8_0, T.Q4_0, T.BF16)]
    np.concatenate(q).tofile(os.path.join(OUT, "gguf_quantize.bin"))
    print("gguf_quantize:", x.size, "values,", sum(a.size for a in q), "bytes")


if __name__ == "__main__":
    main()
    quantize_goldens()
