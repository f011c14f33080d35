"""A tiny FaceID IP-Adapter that takes InsightFace's 512-wide ArcFace embeddings, for the tests
that run IPAdapterFaceID on faces found by sdflow's InsightFace (tests/cli/ipadapter_faceid.sh with
the tiny pack of tests/data/insightface/tiny_pack).

ipa_faceid_arcface.safetensors: the plain FaceID projection (MLPProjModelFaceId: 512 -> 128 ->
4 tokens of the tiny UNet's 64-wide context, LayerNorm) in the original layout, with the
ip_adapter.* layers of ipa_faceid.safetensors (make_ipadapter_faceid_goldens.py), so it fits the
same tiny checkpoint and FaceID LoRA.

insightface/blind_pack/det_tiny.onnx: the tiny pack's detector with its score convolutions' biases
at -100, so it finds no face in any image (the "no face" error), beside the tiny recognizer.

    python3 tests/reference/make_faceid_node_files.py
"""
import os
import sys

import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ipadapter_goldens import CTX, OUT, rnd  # noqa: E402

ARCFACE = 512
HIDDEN = 128
TOKENS = 4


def main():
    g = torch.Generator().manual_seed(5120)
    base = load_file(os.path.join(OUT, "ipa_faceid.safetensors"))
    out = {k: v for k, v in base.items() if k.startswith("ip_adapter.")}
    proj = {"proj.0.weight": rnd(g, HIDDEN, ARCFACE), "proj.0.bias": rnd(g, HIDDEN),
            "proj.2.weight": rnd(g, TOKENS * CTX, HIDDEN), "proj.2.bias": rnd(g, TOKENS * CTX),
            "norm.weight": 1 + rnd(g, CTX), "norm.bias": rnd(g, CTX)}
    out.update({f"image_proj.{k}": v.half().contiguous() for k, v in proj.items()})
    save_file(out, os.path.join(OUT, "ipa_faceid_arcface.safetensors"))
    blind_detector()


def blind_detector():
    data = os.path.join(OUT, "..", "insightface")
    m = onnx.load(os.path.join(data, "tiny_pack", "det_tiny.onnx"))
    cls = {n.input[2] for n in m.graph.node if n.op_type == "Conv" and n.name.startswith("/cls") and len(n.input) > 2}
    for init in m.graph.initializer:
        if init.name in cls:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0 - 100, init.name))
    assert cls, "no score convolutions found"
    os.makedirs(os.path.join(data, "blind_pack"), exist_ok=True)
    onnx.save(m, os.path.join(data, "blind_pack", "det_tiny.onnx"))


if __name__ == "__main__":
    main()
