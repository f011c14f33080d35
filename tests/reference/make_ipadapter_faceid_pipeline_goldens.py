#!/usr/bin/env python3
"""A whole txt2img run with a FaceID IP-Adapter and its LoRA on the project's tiny checkpoint, with
the reference libraries: make_ipadapter_pipeline_goldens.py's run (make_pipeline_goldens.py's
"euler": seed 7, cfg 7.5, 6 steps, 64x64) whose UNet carries a tiny random plain FaceID adapter at
scale 0.8 (diffusers' _load_ip_adapter_weights: IPAdapterFaceIDImageProjection and
IPAdapterAttnProcessor2_0) fed with one face embedding for the positive side and zeros for the
negative side (as ComfyUI_IPAdapter_plus), and whose attention projections are patched by a tiny
FaceID-layout LoRA at strength 0.6 (W + 0.6 * up @ down, as ComfyUI's load_lora_for_models).

Writes tests/data/goldens/ipa_faceid_pipeline.safetensors (the adapter, f16),
ipa_faceid_pipeline_lora.safetensors, faceid_pipeline_embeds.safetensors (faceid_embeds [1, 64])
and pipeline_faceid.bin (the final LATENT). The run without either is pipeline_euler.bin. Read by
tests/nodes/test_ipadapter_pipeline.c.

    python3 tests/reference/make_ipadapter_faceid_pipeline_goldens.py [build/sdflow_mkckpt]
"""
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_pipeline_goldens as mpg  # noqa: E402
from make_ipadapter_faceid_goldens import ID, LORA_STRENGTH, faceid_lora, ip_layers, mlp, save_adapter  # noqa: E402
from make_ipadapter_goldens import OUT  # noqa: E402
from make_ipadapter_pipeline_goldens import sample_with, tiny_pipeline_models  # noqa: E402
from make_unet_goldens import write  # noqa: E402

SCALE = 0.8


def main():
    unet, clip = tiny_pipeline_models()
    chans = [unet.get_submodule(n[: -len(".processor")]).to_q.in_features
             for n in unet.attn_processors if n.endswith("attn2.processor")]
    g = torch.Generator().manual_seed(2011)
    face = torch.nn.functional.normalize(torch.randn(1, ID, generator=g), dim=-1)
    save_file({"faceid_embeds": face.contiguous()}, os.path.join(OUT, "faceid_pipeline_embeds.safetensors"))
    proj, ip = mlp(g, 4), ip_layers(g, chans, True)
    save_adapter("ipa_faceid_pipeline.safetensors", proj, ip)
    lora = faceid_lora(g, unet)
    save_file(lora, os.path.join(OUT, "ipa_faceid_pipeline_lora.safetensors"))
    with torch.no_grad():
        for name, mod in unet.named_modules():
            if name.endswith(".attn1") or name.endswith(".attn2"):
                for key, lin in (("to_q", mod.to_q), ("to_k", mod.to_k), ("to_v", mod.to_v), ("to_out_0", mod.to_out[0])):
                    k = "lora_unet_" + name.replace(".", "_") + "_" + key
                    lin.weight += LORA_STRENGTH * (lora[k + ".lora_up.weight"].float() @ lora[k + ".lora_down.weight"].float())
    sd = {"image_proj": {k: v.half().float() for k, v in proj.items()},
          "ip_adapter": {k: v.half().float() for k, v in ip.items() if "_ip." in k}}
    unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    unet.eval().float()
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [SCALE]
    feats = torch.cat([face, torch.zeros_like(face)]).unsqueeze(1)  # positive, negative
    out = sample_with(unet, clip, feats)
    write("pipeline_faceid.bin", (out / mpg.SCALE).numpy())
    print("faceid: %d attn2 layers, final latent std %.4f" % (len(chans), float((out / mpg.SCALE).std())))


if __name__ == "__main__":
    main()
