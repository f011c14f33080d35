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
  tests/data/goldens/t5_tiny.gguf         the same weights as a GGUF file with llama.cpp's T5 names
      (token_embd, enc.blk.N.attn_q, ..., as city96's T5 GGUF files), written by gguf.GGUFWriter:
      matrices whose rows are whole 32-blocks as Q8_0 (embedding included), the others F16, norms F32
  tests/data/goldens/t5_gguf_hidden.f32   last_hidden_state of each sequence from the Q8_0-dequantised
      weights (gguf's reference dequantizer)
  tests/data/goldens/t5_gguf_f16_hidden.f32  the same with the matrices rounded to f16 as sdflow's
      f16 weight storage holds them (the embedding table stays f32: its rows are read on the host)

    python3 tests/reference/make_t5_goldens.py

The C side is tests/models/test_t5.c; the configuration here must match it.
"""
import os

import gguf
import numpy as np
import torch
from gguf.quants import dequantize, quantize
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
LENGTHS = (20, 150)
LLAMA = [("encoder.", "enc."), (".block.", ".blk."), ("shared", "token_embd"), ("final_layer_norm", "output_norm"),
         ("layer.0.SelfAttention.relative_attention_bias", "attn_rel_b"), ("layer.0.SelfAttention.q", "attn_q"),
         ("layer.0.SelfAttention.k", "attn_k"), ("layer.0.SelfAttention.v", "attn_v"),
         ("layer.0.SelfAttention.o", "attn_o"), ("layer.0.layer_norm", "attn_norm"),
         ("layer.1.DenseReluDense.wi_1", "ffn_up"), ("layer.1.DenseReluDense.wo", "ffn_down"),
         ("layer.1.DenseReluDense.wi_0", "ffn_gate"), ("layer.1.layer_norm", "ffn_norm")]


def llama_name(name):
    for a, b in LLAMA:
        name = name.replace(a, b)
    return name


def write_gguf(sd):
    """Writes t5_tiny.gguf; returns the weights as the file holds them (dequantised)."""
    w = gguf.GGUFWriter(os.path.join(OUT, "t5_tiny.gguf"), "t5encoder")
    held = {}
    for name, t in sd.items():
        x = t.float().numpy()
        if x.ndim == 2 and x.shape[1] % 32 == 0:
            q = quantize(x, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(llama_name(name), q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            held[name] = torch.from_numpy(dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(x.shape).copy())
        elif x.ndim == 2:
            w.add_tensor(llama_name(name), t.numpy())
            held[name] = t.float()
        else:
            w.add_tensor(llama_name(name), x)
            held[name] = torch.from_numpy(x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held


def encode(model, weights, seqs):
    full = dict(weights)
    full["encoder.embed_tokens.weight"] = full["shared.weight"]
    model.load_state_dict(full)
    out = []
    with torch.no_grad():
        for s in seqs:
            h = model(input_ids=torch.from_numpy(s.astype(np.int64))[None]).last_hidden_state[0]
            out.append(h.numpy().astype("<f4").reshape(-1))
    return np.concatenate(out)


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
    rng = np.random.default_rng(7)
    seqs = [rng.integers(0, 80, size=n).astype(np.int32) for n in LENGTHS]
    seqs[0][-1] = 1  # </s>
    hidden = encode(model, {k: v.float() for k, v in sd.items()}, seqs)
    held = write_gguf(sd)
    gguf_hidden = encode(model, held, seqs)
    f16 = {k: v.half().float() if v.dim() == 2 and k != "shared.weight" else v for k, v in held.items()}
    encode(model, f16, seqs).tofile(os.path.join(OUT, "t5_gguf_f16_hidden.f32"))
    np.concatenate(seqs).astype("<i4").tofile(os.path.join(OUT, "t5_tokens_in.i32"))
    hidden.tofile(os.path.join(OUT, "t5_hidden.f32"))
    gguf_hidden.tofile(os.path.join(OUT, "t5_gguf_hidden.f32"))
    hidden = [hidden]
    print("max |h|", max(float(np.abs(h).max()) for h in hidden))


if __name__ == "__main__":
    main()
