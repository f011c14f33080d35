#!/usr/bin/env python3
"""Writes random-weight annotator networks at their real sizes, in the real key layouts, for
timing the ControlNet preprocessors (docs/benchmarks.md): ControlNetHED.safetensors (widths 64,
128, 256, 512, 512), table5_pidinet.safetensors (60 channels, CDCM 24) and sk_model.safetensors /
sk_model2.safetensors (base 64, 3 residual blocks), body_pose_model.safetensors (the CMU body
network, bodypose_model's widths), hand_pose_model.safetensors and facenet.safetensors
(handpose_model's and face.py's FaceNet's widths) and depth_anything_v2_vits.pth (ViT-S: 384 wide, 12 blocks,
6 heads, MLP 1536, 37x37 position grid; DPT features 64, out_channels 48, 96, 192, 384) and
dpt_hybrid-midas-501f0c75.pt (ResNet-50 stem 64, stages 3, 4, 9 of 256, 512, 1024; ViT-B 768 wide,
12 blocks, MLP 3072, 24x24 grid, hooks 8, 11; DPT features 256) and scannet.pt (BAE:
tf_efficientnet_b5 stem 48, stages of 3, 5, 5, 7, 7, 9, 3 blocks, widths 24, 40, 64, 128, 176,
304, 512, head 2048; decoder 2048, 1024, 512, 256, 128, MLP 128; {"model": ...} with "module."
names), into the directory given (an `annotators` model folder). The networks are the reference scripts' re-implementations.

Run: python3 bench/make_annotator_files.py /tmp/models/annotators   (torch, safetensors)"""
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import make_bae_goldens as bae  # noqa: E402
import make_depth_goldens as depth  # noqa: E402
import make_hed_goldens as hed  # noqa: E402
import make_midas_goldens as midas  # noqa: E402
import make_lineart_goldens as lineart  # noqa: E402
import make_openpose_goldens as openpose  # noqa: E402
import make_pidinet_goldens as pidinet  # noqa: E402
import make_pose_face_goldens as face  # noqa: E402


def save(net, path):
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    print(path, sum(v.numel() for v in net.state_dict().values()), "parameters")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    hed.WIDTHS[:] = [64, 128, 256, 512, 512]
    save(hed.HED(), os.path.join(out, "ControlNetHED.safetensors"))
    pidinet.INPLANE, pidinet.DIL = 60, 24
    save(pidinet.PiDiNet(), os.path.join(out, "table5_pidinet.safetensors"))
    net = lineart.Generator(64)
    save(net, os.path.join(out, "sk_model.safetensors"))
    save(net, os.path.join(out, "sk_model2.safetensors"))
    body = openpose.Body(w=128, m=128, mid=512, front=[64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 256, 128])
    sd = {".".join(k.split(".")[-2:]): v.contiguous() for k, v in body.state_dict().items()}
    save_file(sd, os.path.join(out, "body_pose_model.safetensors"))
    print("body_pose_model.safetensors", sum(v.numel() for v in sd.values()), "parameters")
    widths = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 6 + [128]  # the hand's and face's fronts
    hand = openpose.Hand(m=128, mid=512, front=widths)
    sd = {".".join(k.split(".")[-2:]): v.contiguous() for k, v in hand.state_dict().items()}
    save_file(sd, os.path.join(out, "hand_pose_model.safetensors"))
    print("hand_pose_model.safetensors", sum(v.numel() for v in sd.values()), "parameters")
    sd = face.FaceNet(m=128, mid=512, front=widths).state()
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "facenet.safetensors"))
    print("facenet.safetensors", sum(v.numel() for v in sd.values()), "parameters")
    depth.DIM, depth.DEPTH, depth.HIDDEN, depth.GRID = 384, 12, 1536, 37
    depth.FEATURES, depth.OUT_CH[:], depth.LAYERS[:] = 64, [48, 96, 192, 384], [2, 5, 8, 11]
    sd = depth.DepthAnything().state_dict()
    torch.save(sd, os.path.join(out, "depth_anything_v2_vits.pth"))
    print("depth_anything_v2_vits.pth", sum(v.numel() for v in sd.values()), "parameters")
    midas.STEM, midas.WIDTHS[:], midas.BLOCKS[:] = 64, [256, 512, 1024], [3, 4, 9]
    midas.DIM, midas.DEPTH, midas.HIDDEN, midas.GRID, midas.FEATURES = 768, 12, 3072, 24, 256
    midas.HOOKS[:] = [8, 11]
    sd = midas.DPTHybrid().state_dict()
    torch.save(sd, os.path.join(out, "dpt_hybrid-midas-501f0c75.pt"))
    print("dpt_hybrid-midas-501f0c75.pt", sum(v.numel() for v in sd.values()), "parameters")
    bae.STEM, bae.HEAD, bae.HIDDEN, bae.UP[:] = 48, 2048, 128, [1024, 512, 256, 128]
    bae.STAGES[:] = [(3, 1, 24, 3), (3, 2, 40, 5), (5, 2, 64, 5), (3, 2, 128, 7), (5, 1, 176, 7), (5, 2, 304, 9),
                     (3, 1, 512, 3)]
    sd = {"module." + k: v for k, v in bae.NNET().state_dict().items()}
    torch.save({"model": sd}, os.path.join(out, "scannet.pt"))
    print("scannet.pt", sum(v.numel() for v in sd.values()), "parameters")


if __name__ == "__main__":
    main()
