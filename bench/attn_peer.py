#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on bench_ops' attention shapes (the peer of
`bench_ops --only attn`): GFLOP/s (4 Nq Nk D per head) in fp32 and bf16, best of --reps runs,
on --threads threads (default 2, as sdflow's CPU runs). Prints one row per shape.

    python3 bench/attn_peer.py [--reps N] [--threads N]
"""
import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096, 8, 40), (4096, 77, 8, 40), (1024, 1024, 8, 80), (1024, 77, 8, 80),
          (256, 256, 8, 160), (4096, 4096, 10, 64), (4608, 4608, 4, 128), (4096, 4096, 1, 512)]


def best(fn, reps):
    fn()
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("torch %s SDPA, %d threads   fp32 GF/s   bf16 GF/s" % (torch.__version__, a.threads))
    g = torch.Generator().manual_seed(0)
    for nq, nk, h, d in SHAPES:
        q = torch.rand(1, h, nq, d, generator=g) - 0.5
        k = torch.rand(1, h, nk, d, generator=g) - 0.5
        v = torch.rand(1, h, nk, d, generator=g) - 0.5
        flops = 4.0 * h * nq * nk * d
        with torch.no_grad():
            t32 = best(lambda: F.scaled_dot_product_attention(q, k, v), a.reps)
            qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
            t16 = best(lambda: F.scaled_dot_product_attention(qb, kb, vb), a.reps)
        print("  %5d x %4d, %2d x %-3d    %9.1f   %9.1f" % (nq, nk, h, d, flops / t32 * 1e-9, flops / t16 * 1e-9),
              flush=True)


if __name__ == "__main__":
    main()
