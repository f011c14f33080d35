#!/usr/bin/env python3
"""Golden outputs of the FaceID IP-Adapters from diffusers (IPAdapterFaceIDImageProjection,
IPAdapterFaceIDPlusImageProjection) and a FaceID LoRA patch.

Writes tiny random FaceID IP-Adapters in the original layout (image_proj.*, ip_adapter.N.to_k_ip /
to_v_ip.weight and the unused ip_adapter.N.to_q_lora... pairs of the real files, float16) for the
tiny UNet of make_ipadapter_goldens.py (context 64, 22 attn2 layers), with a 64-wide identity
embedding (512 in the real files):
  ipa_faceid.safetensors          MLPProjModelFaceId, 4 tokens (with to_q_lora: FaceID); also as a
                                  torch .bin with nested dicts (ipa_faceid_torch.bin)
  ipa_faceid_portrait.safetensors MLPProjModelFaceId, 16 tokens (no to_q_lora: portrait)
  ipa_faceid_plusv2.safetensors   ProjModelFaceIdPlus: the perceiver Resampler (width 64, 1 head,
                                  depth 4) over 32-wide CLIP hidden states (17 tokens)
diffusers converts each with UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers and
records the image tokens of two faces (faceid_embeds.bin [2, 64]; the plus model's CLIP features
ipa_hid_pos.bin and ipa_hid_neg.bin of make_ipadapter_goldens.py): faceid_tokens.bin,
faceid_portrait_tokens.bin, faceid_plus_tokens.bin (shortcut off: FaceID Plus) and
faceid_plusv2_tokens.bin (shortcut at scale V2_SCALE: Plus v2). The embeddings file
faceid_embeds.safetensors holds faceid_embeds [2, 64] and face_image [2, 32, 32, 3] (random face
crops) as SdflowLoadFaceIDEmbeds reads them.

The FaceID LoRA (ipa_faceid_lora.safetensors): kohya keys with diffusers names
(lora_unet_<block>_attn1_to_q.lora_down / lora_up.weight, to_q, to_k, to_v, to_out_0 of every attn1
and attn2, no alpha), as ip-adapter-faceid*_lora.safetensors; faceid_lora_q.bin is the first
attn1.to_q weight patched at strength LORA_STRENGTH (W + s * up @ down), the reference of
tests/nodes/test_ipadapter_faceid.c.

    python3 tests/reference/make_ipadapter_faceid_goldens.py [build/sdflow_mkckpt]
"""
import os
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ipadapter_goldens import CTX, OUT, read, resampler_body, rnd, tiny_unet, write  # noqa: E402

ID = 64  # identity embedding width of the tiny files
V2_SCALE = 1.5
LORA_STRENGTH = 0.6
RANK = 4


def ip_layers(g, chans, lora):
    """ip_adapter.*: to_k_ip / to_v_ip of every attn2, and the FaceID files' LoRA pairs."""
    ip = {}
    for n, ch in enumerate(chans):
        ip[f"{2 * n + 1}.to_k_ip.weight"] = rnd(g, ch, CTX)
        ip[f"{2 * n + 1}.to_v_ip.weight"] = rnd(g, ch, CTX)
        for j, ctx_in in ((2 * n, ch), (2 * n + 1, CTX)):  # attn1, attn2
            for proj, width in (("q", ch), ("k", ctx_in), ("v", ctx_in), ("out", ch)):
                if lora:
                    ip[f"{j}.to_{proj}_lora.down.weight"] = rnd(g, RANK, width)
                    ip[f"{j}.to_{proj}_lora.up.weight"] = rnd(g, ch, RANK)
    return ip


def mlp(g, tokens):
    return {"proj.0.weight": rnd(g, 2 * ID, ID), "proj.0.bias": rnd(g, 2 * ID),
            "proj.2.weight": rnd(g, tokens * CTX, 2 * ID), "proj.2.bias": rnd(g, tokens * CTX),
            "norm.weight": 1 + rnd(g, CTX), "norm.bias": rnd(g, CTX)}


def save_adapter(name, proj, ip, torch_bin=None):
    flat = {f"image_proj.{k}": v.half() for k, v in proj.items()}
    flat.update({f"ip_adapter.{k}": v.half() for k, v in ip.items()})
    save_file({k: v.contiguous() for k, v in flat.items()}, os.path.join(OUT, name))
    if torch_bin:  # the same as a torch .bin with nested dicts, as h94's files
        torch.save({"image_proj": {k: v.half() for k, v in proj.items()},
                    "ip_adapter": {k: v.half() for k, v in ip.items()}}, os.path.join(OUT, torch_bin))
    return {k: v.half().float() for k, v in proj.items()}


def faceid_lora(g, probe):
    """A FaceID-layout LoRA over the tiny UNet's attention projections."""
    lora = {}
    for name, mod in probe.named_modules():
        if not (name.endswith(".attn1") or name.endswith(".attn2")):
            continue
        for proj, lin in (("to_q", mod.to_q), ("to_k", mod.to_k), ("to_v", mod.to_v), ("to_out_0", mod.to_out[0])):
            key = "lora_unet_" + name.replace(".", "_") + "_" + proj
            lora[key + ".lora_down.weight"] = rnd(g, RANK, lin.in_features).half()
            lora[key + ".lora_up.weight"] = rnd(g, lin.out_features, RANK).half()
    return lora


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    ucfg, base = tiny_unet(tool)
    probe = UNet2DConditionModel(**ucfg)
    chans = [load_file(os.path.join(OUT, "ipa_plain.safetensors"))[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"].shape[0]
             for n in range(22)]
    g = torch.Generator().manual_seed(1101)
    faces = torch.nn.functional.normalize(torch.randn(2, ID, generator=g), dim=-1)
    write("faceid_embeds.bin", faces.numpy())
    hid = torch.cat([read("ipa_hid_pos.bin"), read("ipa_hid_neg.bin")])  # [2, 17, HID]

    def project(proj):
        m = probe._convert_ip_adapter_image_proj_to_diffusers(proj, low_cpu_mem_usage=False)
        return m.float().eval()

    with torch.no_grad():
        proj = save_adapter("ipa_faceid.safetensors", mlp(g, 4), ip_layers(g, chans, True), "ipa_faceid_torch.bin")
        write("faceid_tokens.bin", project(proj)(faces).numpy())
        proj = save_adapter("ipa_faceid_portrait.safetensors", mlp(g, 16), ip_layers(g, chans, False))
        write("faceid_portrait_tokens.bin", project(proj)(faces).numpy())
        proj = mlp(g, 4)
        proj.update(resampler_body(g, CTX, "perceiver_resampler."))
        proj = save_adapter("ipa_faceid_plusv2.safetensors", proj, ip_layers(g, chans, True))
        m = project(proj)
        m.clip_embeds = hid.unsqueeze(1)  # [faces, 1 image, tokens, width]
        write("faceid_plus_tokens.bin", m(faces).numpy())
        m.shortcut, m.shortcut_scale = True, V2_SCALE
        write("faceid_plusv2_tokens.bin", m(faces).numpy())
        lora = faceid_lora(g, probe)
        save_file(lora, os.path.join(OUT, "ipa_faceid_lora.safetensors"))
        key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        w = base["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
        w = w + LORA_STRENGTH * (lora[key + ".lora_up.weight"].float() @ lora[key + ".lora_down.weight"].float())
        write("faceid_lora_q.bin", w.numpy())
    crops = torch.rand(2, 32, 32, 3, generator=g)
    save_file({"faceid_embeds": faces.contiguous(), "face_image": crops},
              os.path.join(OUT, "faceid_embeds.safetensors"))
    print("wrote FaceID goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    sys.exit(main())
