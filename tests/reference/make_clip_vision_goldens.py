#!/usr/bin/env python3
"""Golden outputs of the CLIP vision tower, from transformers' CLIPVisionModelWithProjection.

Builds a tiny random CLIPVisionModelWithProjection, writes its weights in transformers' layout
(clip_vision_hf.safetensors) and in open_clip's (clip_vision_openclip.safetensors: visual.conv1,
class_embedding, positional_embedding, ln_pre, transformer.resblocks.N with the fused in_proj,
ln_post, proj = visual_projection.weight transposed), and records for a random pixel batch the
last hidden state, the penultimate hidden state (hidden_states[-2], ComfyUI's
penultimate_hidden_states) and image_embeds, with quick GELU (OpenAI) and exact GELU (LAION).
Also records ComfyUI's clip_preprocess (comfy/clip_vision.py: bicubic antialiased resize of the
short side, centre crop or a plain resize, 8-bit rounding, CLIP mean/std) of random images.

    python3 tests/reference/make_clip_vision_goldens.py

The C side is tests/models/test_clip_vision.c; the configuration here must match it.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")
WIDTH, LAYERS, HEADS, INTERMEDIATE, PATCH, IMAGE, PROJ, BATCH = 32, 3, 2, 64, 4, 16, 24, 2
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def clip_preprocess(image, size, crop):
    """ComfyUI's clip_preprocess on an IMAGE [B, H, W, 3]."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    image = image.movedim(-1, 1)
    if not (image.shape[2] == size and image.shape[3] == size):
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            scale_size = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            scale_size = (size, size)
        image = torch.nn.functional.interpolate(image, size=scale_size, mode="bicubic", antialias=True)
        h = (image.shape[2] - size) // 2
        w = (image.shape[3] - size) // 2
        image = image[:, :, h:h + size, w:w + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    return (image - mean) / std


def open_clip_layout(sd):
    """transformers' vision keys -> open_clip's visual.* keys."""
    out = {}
    p = "vision_model."
    out["visual.conv1.weight"] = sd[p + "embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = sd[p + "embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd[p + "embeddings.position_embedding.weight"]
    for a, b in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        out[f"visual.{b}.weight"] = sd[f"{p}{a}.weight"]
        out[f"visual.{b}.bias"] = sd[f"{p}{a}.bias"]
    for i in range(LAYERS):
        h, o = f"{p}encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[o + b + ".weight"] = sd[h + a + ".weight"]
            out[o + b + ".bias"] = sd[h + a + ".bias"]
        out[o + "attn.in_proj_weight"] = torch.cat([sd[h + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[o + "attn.in_proj_bias"] = torch.cat([sd[h + f"self_attn.{x}_proj.bias"] for x in "qkv"])
    out["visual.proj"] = sd["visual_projection.weight"].t()
    return {k: v.contiguous() for k, v in out.items()}


def save(name, t):
    np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tofile(os.path.join(OUT, name))


def main():
    torch.manual_seed(5)
    os.makedirs(OUT, exist_ok=True)
    sd = None
    pixels = torch.randn(BATCH, 3, IMAGE, IMAGE)
    save("clipv_pixels.f32", pixels)
    for act in ("quick_gelu", "gelu"):
        config = CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, image_size=IMAGE, patch_size=PATCH,
                                  projection_dim=PROJ, hidden_act=act, layer_norm_eps=1e-5)
        model = CLIPVisionModelWithProjection(config).eval()
        if sd is None:
            # Random LayerNorm and bias values too (the defaults are ones and zeros).
            with torch.no_grad():
                for n, prm in model.named_parameters():
                    if prm.ndim == 1:
                        prm.copy_(torch.randn_like(prm) * 0.2 + (1.0 if n.endswith("norm1.weight") or
                                                                  n.endswith("norm2.weight") or
                                                                  "layrnorm.weight" in n or
                                                                  "layernorm.weight" in n else 0.0))
            sd = {k: v.clone().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
            save_file(sd, os.path.join(OUT, "clip_vision_hf.safetensors"))
            save_file(open_clip_layout(sd), os.path.join(OUT, "clip_vision_openclip.safetensors"))
        else:
            model.load_state_dict(sd, strict=False)
        with torch.no_grad():
            out = model(pixel_values=pixels, output_hidden_states=True)
        save(f"clipv_{act}_last.f32", out.last_hidden_state)
        save(f"clipv_{act}_penult.f32", out.hidden_states[-2])
        save(f"clipv_{act}_embeds.f32", out.image_embeds)
    # Preprocessing: a landscape image (crop / none), a small portrait one upscaled.
    g = torch.Generator().manual_seed(9)
    for name, h, w in (("wide", 23, 37), ("small", 11, 7)):
        img = (torch.randint(0, 256, (1, h, w, 3), generator=g).float() / 255.0)
        save(f"clipv_pre_{name}_in.f32", img)
        save(f"clipv_pre_{name}_center.f32", clip_preprocess(img, IMAGE, True))
        save(f"clipv_pre_{name}_none.f32", clip_preprocess(img, IMAGE, False))
    print("wrote CLIP vision goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
