"""Shared by the PyTorch peer scripts of bench/ (torch_unet_step.py, torch_vae_decode.py,
torch_txt2img.py): diffusers configs of the SD1.5 / SDXL networks (random weights: the same
shapes as sdflow_mkckpt's presets), clocks, peak RSS, and the skip when torch or diffusers is
absent (exit status 77, one line on stderr) or when the machine has too little memory.
Developer tools, never tests; docs/benchmarks.md has the commands."""
import argparse
import resource
import sys
import time

SKIP = 77  # exit status of a peer that could not run here (quiet_comparisons.sh prints its line)

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)

# diffusers' stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (2.57 G parameters).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)

SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)


def parser(doc):
    """An argument parser with the options every peer takes: --threads, --precision, --dry-run."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--precision", default="fp32,bf16",
                    help="comma list of fp32 and bf16 (autocast); one per process gives each its own peak RSS")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, import nothing")
    return ap


def precisions(arg):
    out = [p for p in arg.split(",") if p]
    if not out or any(p not in ("fp32", "bf16") for p in out):
        sys.exit(f"{sys.argv[0]}: --precision takes fp32, bf16 or both (comma list), not {arg!r}")
    return out


def import_torch(threads, *modules):
    """torch (threads set) and the named diffusers classes, or exit SKIP with a message."""
    try:
        import torch
        import diffusers
    except ImportError as e:
        print(f"skipped: {e} (the PyTorch peers need torch and diffusers)", file=sys.stderr)
        sys.exit(SKIP)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch, [getattr(diffusers, m) for m in modules]


def need_memory(gib, what):
    """Exit SKIP with a message when MemAvailable is under gib GiB."""
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2**20
    if avail < gib:
        print(f"skipped: {what} needs about {gib:.1f} GiB, {avail:.1f} GiB available", file=sys.stderr)
        sys.exit(SKIP)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed(torch, mode, fn, reps):
    """Runs fn() once untimed (oneDNN kernels, autocast weight casts) then reps times in mode
    (fp32, or bf16 autocast); best wall and least CPU seconds (inf with reps 0: a memory check)."""
    best = cpu_best = float("inf")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        fn()
        for _ in range(reps):
            w0, c0 = time.perf_counter(), cpu_seconds()
            fn()
            best = min(best, time.perf_counter() - w0)
            cpu_best = min(cpu_best, cpu_seconds() - c0)
    return best, cpu_best
