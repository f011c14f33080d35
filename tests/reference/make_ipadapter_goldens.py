#!/usr/bin/env python3
"""Golden outputs of IP-Adapter from diffusers (IPAdapterAttnProcessor2_0, ImageProjection,
IPAdapterPlusImageProjection, IPAdapterFullImageProjection).

Writes three tiny random IP-Adapters in the original layout (image_proj.*, ip_adapter.N.to_k_ip /
to_v_ip.weight, float16) for the tiny UNet of make_unet_goldens.py (context 64, 22 attn2
layers): plain (4 tokens from 24-wide image_embeds), plus (Resampler: 16 latents, width 64,
1 head, depth 4, from 32-wide hidden states) and full-face (MLP on 32-wide hidden states).
diffusers loads each with UNet2DConditionModel._load_ip_adapter_weights (its own conversion of
the original layout) and records: the image tokens of fixed features, and the UNet's eps for the
unet goldens' latent / timesteps / context with the adapter at scale 0.8, item 0 seeing the
positive features and item 1 the negative ones (as a CFG batch does). Also a small CLIP vision
model of other widths (clip_vision_small.safetensors) for the wrong-encoder errors.

    python3 tests/reference/make_ipadapter_goldens.py [build/sdflow_mkckpt]

The C side is tests/models/test_ipadapter.c.
"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file, save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
MKCKPT_ARGS = ["--preset", "tiny", "--res-blocks", "2", "--depth", "2", "--no-clip", "--no-vae", "--seed", "7"]
MC, MULT, ATTN, NRB, DEPTH, CTX = 32, [1, 2, 2], [1, 1, 0], 2, 2, 64
EMB, HID, TOK = 24, 32, 17  # image_embeds width, hidden width, CLIP tokens
SCALE = 0.8


def write(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def read(name):
    with open(os.path.join(OUT, name), "rb") as f:
        assert f.read(4) == b"SDG1"
        nd = struct.unpack("<i", f.read(4))[0]
        shape = struct.unpack("<%di" % nd, f.read(4 * nd))
        return torch.from_numpy(np.frombuffer(f.read(), dtype="<f4").reshape(shape).copy())


def tiny_clip_vision(name, projection, seed):
    """A random f16 CLIPVisionModelWithProjection (width 16, 2 layers, patch 8, image 16)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(seed)
    m = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                       num_attention_heads=1, image_size=16, patch_size=8,
                                                       projection_dim=projection))
    save_file({k: v.contiguous().half() for k, v in m.state_dict().items() if "position_ids" not in k},
              os.path.join(OUT, name))


def rnd(g, *shape, scale=0.2):
    return torch.randn(*shape, generator=g) * scale


def resampler_body(g, dim, p):
    """A Resampler's proj_in, proj_out, norm_out and 4 layers under prefix p (width dim, from HID)."""
    proj = {p + "proj_in.weight": rnd(g, dim, HID), p + "proj_in.bias": rnd(g, dim),
            p + "proj_out.weight": rnd(g, CTX, dim), p + "proj_out.bias": rnd(g, CTX),
            p + "norm_out.weight": 1 + rnd(g, CTX), p + "norm_out.bias": rnd(g, CTX)}
    for i in range(4):
        q = f"{p}layers.{i}."
        for n in ("0.norm1", "0.norm2", "1.0"):
            proj[q + n + ".weight"] = 1 + rnd(g, dim)
            proj[q + n + ".bias"] = rnd(g, dim)
        proj[q + "0.to_q.weight"] = rnd(g, dim, dim)
        proj[q + "0.to_kv.weight"] = rnd(g, 2 * dim, dim)
        proj[q + "0.to_out.weight"] = rnd(g, dim, dim)
        proj[q + "1.1.weight"] = rnd(g, 4 * dim, dim)
        proj[q + "1.3.weight"] = rnd(g, dim, 4 * dim)
    return proj


def adapter(kind, g, n_layers_ch):
    proj = {}
    if kind == "plain":
        proj["proj.weight"] = rnd(g, 4 * CTX, EMB)
        proj["proj.bias"] = rnd(g, 4 * CTX)
        proj["norm.weight"] = 1 + rnd(g, CTX)
        proj["norm.bias"] = rnd(g, CTX)
    elif kind == "plus":
        dim = 64  # diffusers converts 4 layers, heads = width / 64
        proj["latents"] = rnd(g, 1, 16, dim, scale=1.0)
        proj.update(resampler_body(g, dim, ""))
    else:  # full face
        proj["proj.0.weight"] = rnd(g, HID, HID)
        proj["proj.0.bias"] = rnd(g, HID)
        proj["proj.2.weight"] = rnd(g, CTX, HID)
        proj["proj.2.bias"] = rnd(g, CTX)
        proj["proj.3.weight"] = 1 + rnd(g, CTX)
        proj["proj.3.bias"] = rnd(g, CTX)
    ip = {}
    for n, ch in enumerate(n_layers_ch):
        ip[f"{2 * n + 1}.to_k_ip.weight"] = rnd(g, ch, CTX)
        ip[f"{2 * n + 1}.to_v_ip.weight"] = rnd(g, ch, CTX)
    half = lambda d: {k: v.half() for k, v in d.items()}
    return {"image_proj": half(proj), "ip_adapter": half(ip)}


def tiny_unet(tool):
    """The diffusers config and weights of the tiny UNet (mkckpt with MKCKPT_ARGS)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet.safetensors")
        subprocess.run([tool] + MKCKPT_ARGS + [path], check=True)
        ckpt = load_file(path)
    levels = len(MULT)
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": MC, "channel_mult": MULT,
        "attention_resolutions": [2 ** i for i in range(levels) if ATTN[i]], "num_res_blocks": NRB,
        "transformer_depth": DEPTH, "context_dim": CTX, "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    base = {k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()}
    return ucfg, base


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    ucfg, base = tiny_unet(tool)
    # attn2 channels in diffusers' attn_processors order (down, up, mid: IP-Adapter order).
    probe = UNet2DConditionModel(**ucfg)
    chans = []
    for name in probe.attn_processors:
        if name.endswith("attn2.processor"):
            mod = probe.get_submodule(name[: -len(".processor")])
            chans.append(mod.to_q.in_features)
    print("attn2 layers:", len(chans))
    x, t, context = read("unet_x.bin"), read("unet_t.bin"), read("unet_context.bin")
    g = torch.Generator().manual_seed(77)
    emb_pos, emb_neg = rnd(g, 1, EMB, scale=1.0), torch.zeros(1, EMB)
    hid_pos, hid_neg = rnd(g, 1, TOK, HID, scale=1.0), rnd(g, 1, TOK, HID, scale=1.0)
    write("ipa_emb_pos.bin", emb_pos.numpy())
    write("ipa_hid_pos.bin", hid_pos.numpy())
    write("ipa_hid_neg.bin", hid_neg.numpy())
    for kind in ("plain", "plus", "full"):
        sd = adapter(kind, g, chans)
        flat = {f"image_proj.{k}": v for k, v in sd["image_proj"].items()}
        flat.update({f"ip_adapter.{k}": v for k, v in sd["ip_adapter"].items()})
        save_file({k: v.contiguous() for k, v in flat.items()}, os.path.join(OUT, f"ipa_{kind}.safetensors"))
        unet = UNet2DConditionModel(**ucfg)
        unet.load_state_dict(base, strict=True)
        unet._load_ip_adapter_weights([{k: {n: w.float() for n, w in d.items()} for k, d in sd.items()}],
                                      low_cpu_mem_usage=False)
        unet.eval().float()
        for proc in unet.attn_processors.values():
            if hasattr(proc, "scale"):
                proc.scale = [SCALE]
        pos, neg = (emb_pos, emb_neg) if kind == "plain" else (hid_pos, hid_neg)
        feats = torch.cat([pos, neg]).unsqueeze(1)  # [2 items, 1 image, ...]
        with torch.no_grad():
            tokens = unet.encoder_hid_proj.image_projection_layers[0](torch.cat([pos, neg]))
            eps = unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"image_embeds": [feats]}).sample
        write(f"ipa_{kind}_tokens.bin", tokens.numpy())
        write(f"ipa_{kind}_eps.bin", eps.numpy())
        print(kind, "tokens", tuple(tokens.shape), "eps std %.4f" % float(eps.std()))
    tiny_clip_vision("clip_vision_small.safetensors", 16, 3)  # other widths: the wrong-encoder errors
    print("wrote IP-Adapter goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    sys.exit(main())
