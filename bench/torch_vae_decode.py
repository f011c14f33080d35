#!/usr/bin/env python3
"""The PyTorch peer of bench_pipeline: seconds and CPU seconds of an SD1.5 VAE decode (diffusers'
AutoencoderKL, SD1.5 config, random weights) of a latent of side --size (64: a 512x512 image), in
fp32 and in bf16 autocast, and the process's peak RSS. Not a test; a developer tool (needs torch
and diffusers; exits 77 with a message without them). docs/benchmarks.md has the commands.

    python3 bench/torch_vae_decode.py [--size 64] [--threads 2] [--reps 1] [--precision fp32,bf16]
                                      [--dry-run]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_common as tc  # noqa: E402


def main():
    ap = tc.parser(__doc__)
    ap.add_argument("--size", type=int, default=64, help="latent side (64: a 512x512 image)")
    ap.add_argument("--reps", type=int, default=1, help="timed decodes after one untimed (>= 1)")
    args = ap.parse_args()
    modes = tc.precisions(args.precision)
    what = (f"SD1.5 VAE decode {args.size}x{args.size} -> {8 * args.size}x{8 * args.size}, {args.threads} "
            f"threads, {'/'.join(modes)}, 1 untimed + {args.reps} timed")
    if args.dry_run or args.reps < 1:
        print(("would run: " if args.dry_run else "--reps must be >= 1: ") + what)
        sys.exit(0 if args.dry_run else 2)
    torch, (vae_cls,) = tc.import_torch(args.threads, "AutoencoderKL")
    vae = vae_cls(**tc.SD15_VAE).eval()
    z = torch.randn(1, 4, args.size, args.size) / 0.18215  # as bench_pipeline: a sampled latent's spread

    for mode in modes:
        best, cpu = tc.timed(torch, mode, lambda: vae.decode(z), args.reps)
        print(f"torch {torch.__version__} {mode}: best {best:.2f} s wall, least CPU time {cpu:.2f} s "
              f"({args.threads} threads, VAE decode {args.size}x{args.size} -> {8 * args.size}x{8 * args.size}); "
              f"peak RSS {tc.peak_rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
