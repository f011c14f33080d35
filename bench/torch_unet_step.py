#!/usr/bin/env python3
"""The PyTorch peer of bench_unet: seconds and CPU seconds per UNet forward with batch 2 (one
classifier-free-guidance step), in fp32 and in bf16 autocast (what a ComfyUI user on this CPU
gets), random weights, diffusers' SD1.5 or SDXL base config, and the process's peak RSS.
SDXL gets 2048-wide context and the 2816-wide ADM vector (pooled text + size conditioning);
it is skipped (exit 77) when the machine has less memory available than it needs.
Not a test; a developer tool (needs torch and diffusers; exits 77 with a message without them).
docs/benchmarks.md has the commands.

    python3 bench/torch_unet_step.py [--family sd15|sdxl] [--size 64] [--threads 2] [--reps 2]
                                     [--precision fp32,bf16] [--dry-run]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_common as tc  # noqa: E402


def main():
    ap = tc.parser(__doc__)
    ap.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    ap.add_argument("--size", type=int, default=64, help="latent side (64: a 512x512 image)")
    ap.add_argument("--reps", type=int, default=2,
                    help="timed forwards after one untimed (0: the untimed one only, for its peak RSS)")
    args = ap.parse_args()
    modes = tc.precisions(args.precision)
    sdxl = args.family == "sdxl"
    what = (f"{args.family} UNet forward, batch 2, latent {args.size}x{args.size}, {args.threads} threads, "
            f"{'/'.join(modes)}, 1 untimed + {args.reps} timed")
    if args.dry_run or args.reps < 0:
        print(("would run: " if args.dry_run else "--reps must be >= 0: ") + what)
        sys.exit(0 if args.dry_run else 2)
    if sdxl:  # 2.57 G parameters in fp32 (autocast casts them per call under inference_mode), activations:
        tc.need_memory(10.3 + 3.0 * (args.size / 128) ** 2 + 1, what)  # measured: 11.0 GiB at 128, bf16
    torch, (unet_cls,) = tc.import_torch(args.threads, "UNet2DConditionModel")
    unet = unet_cls(**(tc.SDXL_UNET if sdxl else tc.SD15_UNET)).eval()
    x = torch.randn(2, 4, args.size, args.size)
    t = torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, 2048 if sdxl else 768)
    extra = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}

    def forward():
        unet(x, t, ctx, added_cond_kwargs=extra if sdxl else None)

    for mode in modes:
        best, cpu = tc.timed(torch, mode, forward, args.reps)
        print(f"torch {torch.__version__} {mode}: best {best:.2f} s wall, least CPU time {cpu:.2f} s "
              f"({args.threads} threads, {args.family}, latent {args.size}x{args.size}, batch 2); "
              f"peak RSS {tc.peak_rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
