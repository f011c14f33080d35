#!/usr/bin/python3
"""Writes the FLUX LoRA goldens: a random rank-4 LoRA on every Linear of the tiny schnell
transformer (tests/data/goldens/flux_schnell_tiny.safetensors, from make_flux_goldens.py) applied
with diffusers + peft, and the patched model's velocity on flux_in.f32.

  tests/data/goldens/flux_lora_peft.safetensors  the LoRA as diffusers saves it
      (transformer.<diffusers name>.lora_A.weight / .lora_B.weight, F32; peft's lora_alpha = r, so
      the patch is B @ A at strength 1; q/k/v and proj_mlp are separate Linears that sdflow maps
      onto BFL's fused qkv / linear1; norm_out.linear onto final_layer.adaLN_modulation.1 with its
      halves swapped)
  tests/data/goldens/flux_lora_out.f32  the velocity [2, 16, 5, 6] of the patched model

Run from the repository root (developers only; CI never runs Python):

    python3 tests/reference/make_flux_lora_goldens.py
"""
import os
import sys

import numpy as np
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_flux_goldens as mfg  # noqa: E402

RANK = 4


def main():
    torch.manual_seed(1606)
    bfl = load_file(os.path.join(mfg.OUT, "flux_schnell_tiny.safetensors"))
    m = mfg.model_for(bfl, False)
    targets = sorted(n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear))
    m.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False))
    lora = {}
    for name, p in m.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            with torch.no_grad():
                p.copy_(torch.randn_like(p) * (0.5 if ".lora_B." in name else 1.0 / p.shape[1] ** 0.5))
            lora["transformer." + name.replace(".default", "")] = p.detach().clone().float().contiguous()
    n_in = 2 * mfg.C * 5 * 6, 2 * 7 * mfg.CTX, 2 * mfg.VEC, 2
    flat = torch.from_numpy(np.fromfile(os.path.join(mfg.OUT, "flux_in.f32"), dtype="<f4"))
    x, ctx, y, t = torch.split(flat[:sum(n_in)], list(n_in))
    out = mfg.velocity(m, x.view(2, mfg.C, 5, 6), ctx.view(2, 7, mfg.CTX), y.view(2, mfg.VEC), t, None)
    save_file(lora, os.path.join(mfg.OUT, "flux_lora_peft.safetensors"))
    out.numpy().astype("<f4").tofile(os.path.join(mfg.OUT, "flux_lora_out.f32"))
    print("%d LoRA tensors over %d Linears" % (len(lora), len(targets)))


if __name__ == "__main__":
    main()
