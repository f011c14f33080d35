#!/usr/bin/env python3
"""The PyTorch peer of the whole SD1.5 txt2img benchmark (quiet_comparisons.sh --txt2img-sd15):
diffusers' StableDiffusionPipeline loads the same single-file checkpoint sdflow runs
(StableDiffusionPipeline.from_single_file, offline: the component configs are written to a
temporary folder first: SD1.5's UNet, VAE and CLIP-L text model, an EulerDiscreteScheduler with
SD's scaled-linear betas and linspace timesteps as ComfyUI's "normal" schedule, and a
CLIPTokenizer made from sdflow's own vocabulary, data/clip, as tests/reference does), then makes
one image: both prompts through the text encoder, --steps euler steps with CFG, the VAE decode.
Prints the load and generation seconds (wall and CPU) and the process's peak RSS, in fp32 or
bf16 autocast. Not a test; a developer tool (needs torch, diffusers and transformers; exits 77
with a message without them). docs/benchmarks.md has the commands.

    python3 bench/torch_txt2img.py CHECKPOINT [--size 512] [--steps 4] [--cfg 8] [--seed 0]
                                   [--precision fp32|bf16] [--threads 2] [--out PNG] [--dry-run]
"""
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "reference"))
import torch_common as tc  # noqa: E402

PROMPT, NEGATIVE = "a photograph of an astronaut riding a horse", "blurry, low quality"  # graphs/txt2img.xml


def write_configs(torch, folder):
    """The pipeline's component configs (no weights) in diffusers' folder layout."""
    import diffusers
    from transformers import CLIPTextConfig
    import make_token_goldens  # CLIPTokenizer over data/clip's vocabulary

    tokenizer = make_token_goldens.build_tokenizer()
    tokenizer.model_max_length = 77  # CLIP's context, as openai/clip-vit-large-patch14's tokenizer
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    with torch.device("meta"):  # configs only: no memory, no initialisation
        diffusers.UNet2DConditionModel(**tc.SD15_UNET).save_config(os.path.join(folder, "unet"))
        diffusers.AutoencoderKL(**tc.SD15_VAE).save_config(os.path.join(folder, "vae"))
    CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                   projection_dim=768).save_pretrained(os.path.join(folder, "text_encoder"))
    diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     num_train_timesteps=1000, steps_offset=1,
                                     timestep_spacing="linspace").save_config(
        os.path.join(folder, "scheduler"))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f)


def main():
    ap = tc.parser(__doc__)
    ap.set_defaults(precision="fp32")
    ap.add_argument("checkpoint", help="SD1.5 single-file checkpoint (e.g. sdflow_mkckpt --preset sd15)")
    ap.add_argument("--size", type=int, default=512, help="image side (default 512)")
    ap.add_argument("--steps", type=int, default=4, help="euler steps (default 4)")
    ap.add_argument("--cfg", type=float, default=8.0, help="guidance scale (default 8, txt2img.xml's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the image here")
    args = ap.parse_args()
    modes = tc.precisions(args.precision)
    what = (f"SD1.5 txt2img {args.size}x{args.size}, {args.steps} euler steps, cfg {args.cfg}, "
            f"{'/'.join(modes)}, {args.threads} threads, {args.checkpoint}")
    if args.dry_run:
        print("would run: " + what)
        return
    torch, (pipe_cls,) = tc.import_torch(args.threads, "StableDiffusionPipeline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        write_configs(torch, folder)
        w0, c0 = time.perf_counter(), tc.cpu_seconds()
        pipe = pipe_cls.from_single_file(args.checkpoint, config=folder, local_files_only=True, safety_checker=None,
                                         requires_safety_checker=False, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    print(f"load: {time.perf_counter() - w0:.1f} s wall, {tc.cpu_seconds() - c0:.1f} s CPU; "
          f"peak RSS {tc.peak_rss_mib():.0f} MiB", flush=True)
    for mode in modes:
        w0, c0 = time.perf_counter(), tc.cpu_seconds()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            image = pipe(PROMPT, negative_prompt=NEGATIVE, height=args.size, width=args.size,
                         num_inference_steps=args.steps, guidance_scale=args.cfg,
                         generator=torch.Generator().manual_seed(args.seed)).images[0]
        print(f"torch {torch.__version__} {mode}: txt2img {time.perf_counter() - w0:.1f} s wall, "
              f"{tc.cpu_seconds() - c0:.1f} s CPU ({args.size}x{args.size}, {args.steps} steps, "
              f"{args.threads} threads); peak RSS {tc.peak_rss_mib():.0f} MiB", flush=True)
        if args.out:
            image.save(args.out)


if __name__ == "__main__":
    main()
