#!/usr/bin/env python3
"""A whole txt2img run with an IP-Adapter on the project's tiny checkpoint, with the reference
libraries: make_pipeline_goldens.py's "euler" run (seed 7, cfg 7.5, 6 steps, 64x64, the same
prompts) whose UNet also carries a tiny random plain IP-Adapter at scale 0.8 (diffusers'
_load_ip_adapter_weights and IPAdapterAttnProcessor2_0), fed with transformers'
CLIPVisionModelWithProjection (the tiny clip_vision_hf.safetensors) on ComfyUI's clip_preprocess of
the pipeline's input image for the positive side and zeros for the negative side.

Writes tests/data/goldens/ipa_pipeline.safetensors (the adapter, f16) and pipeline_ipadapter.bin
(the final LATENT). The run without the adapter is pipeline_euler.bin. Read by
tests/nodes/test_ipadapter_pipeline.c.

    python3 tests/reference/make_ipadapter_pipeline_goldens.py [build/sdflow_mkckpt]
"""
import os
import subprocess
import sys
import tempfile
import types

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_pipeline_goldens as mpg  # noqa: E402
import make_sampling_goldens as msg  # noqa: E402
import make_token_goldens as mtg  # noqa: E402
from make_clip_vision_goldens import clip_preprocess  # noqa: E402
from make_unet_goldens import write  # noqa: E402

OUT = os.path.join(HERE, "..", "data", "goldens")
SCALE, CTX, EMB = 0.8, 64, 24


def clip_vision_embeds():
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=16, patch_size=4, projection_dim=EMB, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    model.load_state_dict(load_file(os.path.join(OUT, "clip_vision_hf.safetensors")), strict=False)
    with torch.no_grad():
        return model(pixel_values=clip_preprocess(mpg.input_image(), 16, True)).image_embeds


def tiny_pipeline_models():
    """The UNet and text encoder of make_pipeline_goldens.py's tiny checkpoint."""
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny.safetensors")
        subprocess.run([tool, "--preset", "tiny", "--seed", str(mpg.SEED_WEIGHTS), path], check=True)
        unet, _, clip = mpg.load_models(path)
    return unet, clip


def sample_with(unet, clip, feats):
    """The "euler" run of make_pipeline_goldens.py with image_embeds feats (positive, negative)."""
    sys.modules.setdefault("torchsde", types.SimpleNamespace())  # euler needs no Brownian tree
    K = msg.k_sampling()
    ms = msg.ModelSamplingDiscrete()
    tok = mtg.build_tokenizer()
    cond, uncond = mpg.encode(tok, clip, mpg.POSITIVE), mpg.encode(tok, clip, mpg.NEGATIVE)
    name, sampler, scheduler, seed, cfg, denoise, _ = mpg.RUNS[0]
    sigmas = msg.ksampler_sigmas(ms, scheduler, sampler, mpg.STEPS, denoise)
    noise = torch.randn([1, 4, mpg.SIZE // 8, mpg.SIZE // 8], generator=torch.manual_seed(seed))
    x = noise * (1 + float(sigmas[0]) ** 2) ** 0.5

    def model(x, sigma, **kwargs):
        sigma = sigma.reshape(-1)[:1].float()
        xin = x / (sigma ** 2 + 1) ** 0.5
        t = ms.timestep(sigma).float()
        with torch.no_grad():
            eps = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=torch.cat([cond, uncond]),
                       added_cond_kwargs={"image_embeds": [feats]}).sample
        den = torch.cat([x, x]) - eps * sigma
        return den[1:] + (den[:1] - den[1:]) * cfg

    return msg.run_sampler(K, sampler, sigmas, x, model, None)


def main():
    unet, clip = tiny_pipeline_models()
    chans = [unet.get_submodule(n[: -len(".processor")]).to_q.in_features
             for n in unet.attn_processors if n.endswith("attn2.processor")]
    g = torch.Generator().manual_seed(99)
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.3
    proj = {"proj.weight": rnd(4 * CTX, EMB), "proj.bias": rnd(4 * CTX), "norm.weight": 1 + rnd(CTX),
            "norm.bias": rnd(CTX)}
    ip = {}
    for n, ch in enumerate(chans):
        ip[f"{2 * n + 1}.to_k_ip.weight"] = rnd(ch, CTX)
        ip[f"{2 * n + 1}.to_v_ip.weight"] = rnd(ch, CTX)
    sd = {"image_proj": {k: v.half() for k, v in proj.items()}, "ip_adapter": {k: v.half() for k, v in ip.items()}}
    flat = {f"{part}.{k}": v.contiguous() for part, d in sd.items() for k, v in d.items()}
    save_file(flat, os.path.join(OUT, "ipa_pipeline.safetensors"))
    unet._load_ip_adapter_weights([{p: {k: v.float() for k, v in d.items()} for p, d in sd.items()}],
                                  low_cpu_mem_usage=False)
    unet.eval().float()
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [SCALE]
    emb = clip_vision_embeds()
    feats = torch.cat([emb, torch.zeros_like(emb)]).unsqueeze(1)  # positive, negative
    out = sample_with(unet, clip, feats)
    write("pipeline_ipadapter.bin", (out / mpg.SCALE).numpy())
    print("ipadapter: %d attn2 layers, final latent std %.4f" % (len(chans), float((out / mpg.SCALE).std())))


if __name__ == "__main__":
    main()
