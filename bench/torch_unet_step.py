#!/usr/bin/env python3
"""The PyTorch peer of bench_unet: seconds and CPU seconds per SD1.5 UNet forward with batch 2
(one classifier-free-guidance step) on a 64x64 latent (512x512 image), in fp32 and in bf16
autocast (what a ComfyUI user on this CPU gets), random weights, diffusers' SD1.5 config.
Not a test; a developer tool (needs torch and diffusers). docs/benchmarks.md has the command.

    python3 bench/torch_unet_step.py [--threads 2] [--reps 2] [--size 64]
"""
import argparse
import resource
import time

import torch
from diffusers import UNet2DConditionModel


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()
    x = torch.randn(2, 4, args.size, args.size)
    t = torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, 768)
    for mode in ("fp32", "bf16"):
        best = cpu_best = float("inf")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            unet(x, t, ctx)  # warm-up (oneDNN kernels, weight casts)
            for _ in range(args.reps):
                w0, c0 = time.perf_counter(), cpu_seconds()
                unet(x, t, ctx)
                best = min(best, time.perf_counter() - w0)
                cpu_best = min(cpu_best, cpu_seconds() - c0)
        print(f"torch {torch.__version__} {mode}: best {best:.2f} s wall, least CPU time {cpu_best:.2f} s "
              f"({args.threads} threads, latent {args.size}x{args.size}, batch 2)", flush=True)


if __name__ == "__main__":
    main()
