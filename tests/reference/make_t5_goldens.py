#!/usr/bin/env python3
"""Golden outputs of the T5 v1.1 encoder, from transformers' T5EncoderModel on a tiny random
configuration written in the key layout of t5xxl_fp16.safetensors (shared.weight,
encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight, block 0's relative_attention_bias,
encoder.block.N.layer.{0,1}.layer_norm.weight, encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight,
encoder.final_layer_norm.weight; f16, no encoder.embed_tokens.weight, as ComfyUI's files).

  tests/data/goldens/t5_tiny.safetensors  the weights (3 layers, d_model 32, 4 heads of 8, d_ff 48,
      vocab 80, 32 buckets, max distance 128; layer norm weights around 1 so they matter)
  tests/data/goldens/t5_tokens_in.i32     two sequences, 20 and 150 ids (150 > max distance, so
      every bucket is used), little-endian int32
  tests/data/goldens/t5_hidden.f32        last_hidden_state of each, little-endian float32,
      computed in float32 from the f16 weights with no attention mask (ComfyUI's T5 attends to
      padding too)

    python3 tests/reference/make_t5_goldens.py

The C side is tests/models/test_t5.c; the configuration here must match it.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
LENGTHS = (20, 150)


def main():
    torch.manual_seed(20261206)
    cfg = T5Config(vocab_size=80, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)
    model = T5EncoderModel(cfg).eval()
    sd = {}
    for name, p in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue
        t = torch.randn(p.shape) * (0.3 if p.dim() == 2 else 0.2)
        if name.endswith("layer_norm.weight"):
            t = 1.0 + t
        sd[name] = t.to(torch.float16).contiguous()
    save_file(sd, os.path.join(OUT, "t5_tiny.safetensors"))
    full = {k: v.float() for k, v in sd.items()}
    full["encoder.embed_tokens.weight"] = full["shared.weight"]
    model.load_state_dict(full)
    rng = np.random.default_rng(7)
    seqs = [rng.integers(0, 80, size=n).astype(np.int32) for n in LENGTHS]
    seqs[0][-1] = 1  # </s>
    hidden = []
    with torch.no_grad():
        for s in seqs:
            out = model(input_ids=torch.from_numpy(s.astype(np.int64))[None]).last_hidden_state[0]
            hidden.append(out.numpy().astype("<f4").reshape(-1))
    np.concatenate(seqs).astype("<i4").tofile(os.path.join(OUT, "t5_tokens_in.i32"))
    np.concatenate(hidden).tofile(os.path.join(OUT, "t5_hidden.f32"))
    print("max |h|", max(float(np.abs(h).max()) for h in hidden))


if __name__ == "__main__":
    main()
