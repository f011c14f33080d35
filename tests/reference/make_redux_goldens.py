#!/usr/bin/env python3
"""Golden outputs of the SigLIP vision tower and of FLUX Redux, from transformers' SiglipVisionModel,
a torch re-statement of ComfyUI's ReduxImageEncoder (comfy/ldm/flux/redux.py) and diffusers'
FluxTransformer2DModel with an attention mask (as ComfyUI's StyleModelApply attn_bias).

  tests/data/goldens/siglip_tiny.safetensors  a tiny SiglipVisionModel in the layout of
      sigclip_vision_patch14_384.safetensors (vision_model.*, with the unused attention-pooling
      head): width 144 = 2 heads of 72 (so400m's head width), 3 layers, MLP 96, patch 4, image 16
      (16 tokens), GELU tanh, LayerNorm eps 1e-6
  tests/data/goldens/siglip_pixels.f32  pixels [2, 3, 16, 16]
  tests/data/goldens/siglip_last.f32, siglip_penult.f32  last_hidden_state (post-LayerNorm) and
      hidden_states[-2] [2, 16, 144]
  tests/data/goldens/siglip_pre_in.f32, siglip_pre_center.f32  an image [1, 23, 37, 3] and
      ComfyUI's clip_preprocess of it at 16 with mean and std 0.5, crop center
  tests/data/goldens/redux_tiny.safetensors  redux_up [3 x 48, 144], redux_down [48, 3 x 48]
      (context 48: the tiny FLUX goldens' T5 width); redux_tiny32.safetensors the same for
      context 32 (sdflow_mkckpt --preset flux-dev-tiny, for the CLI tests)
  tests/data/goldens/redux_out.f32  ReduxImageEncoder(siglip_last) [2, 16, 48]
  tests/data/goldens/redux_flux_in.f32  context [1, 7 + 16, 48] (7 text tokens, then image 0's
      Redux tokens), y [1, 24], x [1, 16, 4, 4], t, in that order
  tests/data/goldens/redux_flux_out.f32  flux_schnell_tiny's velocity on redux_flux_in with an
      additive bias of float16(log 0.4) on the 16 Redux keys for every query (StyleModelApply
      strength 0.4, attn_bias)
  tests/data/goldens/redux_flux_run.f32  the LATENT of a schnell run as ComfyUI's KSampler (the
      noise of flux_run_in.f32, seed 42; euler, simple, 4 steps, cfg 1; 8x8 latent) on
      redux_flux_in's context and y with that bias

    python3 tests/reference/make_redux_goldens.py   (after make_flux_goldens.py)

The C side is tests/models/test_redux.c and tests/nodes/test_redux_nodes.c; the configuration here must match it.
"""
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_clip_vision_goldens import clip_preprocess  # noqa: E402
import make_clip_vision_goldens  # noqa: E402
import make_flux_goldens  # noqa: E402

OUT = os.path.join(HERE, "..", "data", "goldens")
WIDTH, LAYERS, HEADS, INTERMEDIATE, PATCH, IMAGE, BATCH = 144, 3, 2, 96, 4, 16, 2
CTX, TXT = 48, 7
STRENGTH = 0.4


def save(name, t):
    np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tofile(os.path.join(OUT, name))


def siglip():
    config = SiglipVisionConfig(hidden_size=WIDTH, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, image_size=IMAGE, patch_size=PATCH)
    assert config.hidden_act == "gelu_pytorch_tanh" and config.layer_norm_eps == 1e-6
    model = SiglipVisionModel(config).eval()
    with torch.no_grad():  # random LayerNorm and bias values too (the defaults are ones and zeros)
        for n, prm in model.named_parameters():
            if prm.ndim == 1:
                prm.copy_(torch.randn_like(prm) * 0.2 + (1.0 if "norm" in n and n.endswith("weight") else 0.0))
    sd = {k if k.startswith("vision_model.") else "vision_model." + k: v.clone().contiguous()
          for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(sd, os.path.join(OUT, "siglip_tiny.safetensors"))
    pixels = torch.randn(BATCH, 3, IMAGE, IMAGE)
    save("siglip_pixels.f32", pixels)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    save("siglip_last.f32", out.last_hidden_state)
    save("siglip_penult.f32", out.hidden_states[-2])
    g = torch.Generator().manual_seed(11)
    img = torch.randint(0, 256, (1, 23, 37, 3), generator=g).float() / 255.0
    save("siglip_pre_in.f32", img)
    make_clip_vision_goldens.MEAN, make_clip_vision_goldens.STD = [0.5] * 3, [0.5] * 3
    save("siglip_pre_center.f32", clip_preprocess(img, IMAGE, True))
    return out.last_hidden_state


def redux_weights(ctx):
    return {"redux_up.weight": torch.randn(3 * ctx, WIDTH) / math.sqrt(WIDTH),
            "redux_up.bias": torch.randn(3 * ctx) * 0.1,
            "redux_down.weight": torch.randn(ctx, 3 * ctx) / math.sqrt(3 * ctx),
            "redux_down.bias": torch.randn(ctx) * 0.1}


def redux(sd, x):
    """ComfyUI's ReduxImageEncoder.forward: redux_down(silu(redux_up(x)))."""
    up = torch.nn.functional.linear(x, sd["redux_up.weight"], sd["redux_up.bias"])
    return torch.nn.functional.linear(torch.nn.functional.silu(up), sd["redux_down.weight"], sd["redux_down.bias"])


def main():
    torch.manual_seed(20261207)
    last = siglip()
    sd = redux_weights(CTX)
    save_file(sd, os.path.join(OUT, "redux_tiny.safetensors"))
    save_file(redux_weights(32), os.path.join(OUT, "redux_tiny32.safetensors"))
    with torch.no_grad():
        tokens = redux(sd, last)
    save("redux_out.f32", tokens)
    bfl = {k: v.float() for k, v in load_file(os.path.join(OUT, "flux_schnell_tiny.safetensors")).items()}
    m = make_flux_goldens.model_for(bfl, False)
    ctx = torch.cat([torch.randn(1, TXT, CTX), tokens[:1]], 1)
    y, x, t = torch.randn(1, make_flux_goldens.VEC), torch.randn(1, make_flux_goldens.C, 4, 4), torch.tensor([0.7])
    np.concatenate([a.numpy().reshape(-1) for a in (ctx, y, x, t)]).astype("<f4").tofile(
        os.path.join(OUT, "redux_flux_in.f32"))
    n = ctx.shape[1] + 4
    bias = torch.tensor(math.log(STRENGTH)).half().float()  # ComfyUI's mask is float16
    mask = torch.zeros(1, 1, 1, n)
    mask[..., TXT:TXT + tokens.shape[1]] = bias
    v = make_flux_goldens.velocity(m, x, ctx, y, t, None, mask)
    plain = make_flux_goldens.velocity(m, x, ctx, y, t, None)
    assert (v - plain).abs().max() > 1e-3, "the mask changed nothing"
    save("redux_flux_out.f32", v)
    # A whole schnell run (KSampler seed 42, euler, simple, 4 steps, cfg 1, 64x64) with that bias.
    lat = make_flux_goldens.C * 8 * 8
    noise = torch.from_numpy(np.fromfile(os.path.join(OUT, "flux_run_in.f32"), "<f4")[:lat].copy())
    noise = noise.view(1, make_flux_goldens.C, 8, 8)
    mask = torch.zeros(1, 1, 1, ctx.shape[1] + 16)
    mask[..., TXT:TXT + tokens.shape[1]] = bias
    run = make_flux_goldens.euler_run(m, noise, ctx, y, 1.0, 4, None, mask=mask)
    save("redux_flux_run.f32", run)
    print("wrote SigLIP and Redux goldens to", os.path.normpath(OUT), "bias", bias.item())


if __name__ == "__main__":
    main()
