#!/usr/bin/env python3
"""Golden FLUX conditioning from transformers, on the tiny text-encoder files sdflow_mktextenc
writes (so the C test writes the identical files):

    clip_l.safetensors  sdflow_mktextenc --dtype f16 --seed 5 clip-l  (CLIPTextModel: width 64,
                        2 layers, 1 head, MLP 128, quick GELU; its text_projection.weight unused)
    t5xxl.safetensors   sdflow_mktextenc --dtype f16 --seed 6 t5      (T5EncoderModel: d_model 32,
                        2 blocks, 4 heads of 8, d_ff 48, 32 buckets, gated GELU)
    t5xxl-Q8_0.gguf     sdflow_mktextenc t5-gguf t5xxl.safetensors t5xxl-Q8_0.gguf

and ComfyUI's FLUX text encoding (comfy/text_encoders/flux.py, comfy/sd1_clip.py):
  - pooled: CLIPTextModel's pooled output (no projection) of the window [BOS, a photo of a cat,
    EOS, EOS padding];
  - cond: T5EncoderModel's last_hidden_state, no attention mask, of the prompt tokenized word by
    word (T5TokenizerFast on data/t5/tokenizer.json, each word without its </s>), then </s>, then
    <pad> up to 256 tokens; weighted tokens z_empty + (z - z_empty) * w with z_empty the encoding
    of [</s>, <pad>...] of the same length.

Writes tests/data/goldens/flux_pooled.f32 [64], flux_cond_plain.f32 [256, 32],
flux_cond_weighted.f32 [256, 32], flux_cond_long.f32 [401, 32] (the long prompt: "a red cat" x 100),
flux_cond_spaces.f32 [256, 32] (SPACES below: words split at spaces and newlines, empty ones dropped),
flux_cond_gguf.f32 [256, 32] (the plain prompt with the GGUF's weights: Q8_0 dequantised by the gguf
package and rounded to f16 as sdflow stores matrices; the embedding table stays f32), little-endian.

    python3 tests/reference/make_flux_text_goldens.py build/sdflow_mktextenc

The C side is tests/nodes/test_text_encoders.c.
"""
import gzip
import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np
import torch
from gguf.quants import dequantize
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
OUT = os.path.join(ROOT, "tests", "data", "goldens")
LONG = " ".join(["a red cat"] * 100)
SPACES = "a photo,\nof  a cat! 3.5 km/h"  # a newline, two spaces, punctuation, digits
# "a (photo:1.3) of a ((cat))" as ComfyUI's weighting splits it
WEIGHTED = [("a ", 1.0), ("photo", 1.3), (" of a ", 1.0), ("cat", 1.1 * 1.1)]
LLAMA = [("enc.", "encoder."), (".blk.", ".block."), ("token_embd", "shared"), ("output_norm", "final_layer_norm"),
         ("attn_q", "layer.0.SelfAttention.q"), ("attn_k", "layer.0.SelfAttention.k"),
         ("attn_v", "layer.0.SelfAttention.v"), ("attn_o", "layer.0.SelfAttention.o"),
         ("attn_norm", "layer.0.layer_norm"), ("attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"),
         ("ffn_up", "layer.1.DenseReluDense.wi_1"), ("ffn_down", "layer.1.DenseReluDense.wo"),
         ("ffn_gate", "layer.1.DenseReluDense.wi_0"), ("ffn_norm", "layer.1.layer_norm")]


def t5_tokenizer(tmp):
    path = os.path.join(tmp, "tokenizer.json")
    with gzip.open(os.path.join(ROOT, "data", "t5", "tokenizer.json.gz"), "rb") as f, open(path, "wb") as g:
        g.write(f.read())
    return T5TokenizerFast(tokenizer_file=path)


def t5_tokens(tok, segments):
    ids, weights = [], []
    for text, w in segments:
        for word in text.replace("\n", " ").split(" "):
            if word:
                t = tok(word)["input_ids"][:-1]
                ids += t
                weights += [w] * len(t)
    ids.append(1)
    weights.append(1.0)
    while len(ids) < 256:
        ids.append(0)
        weights.append(1.0)
    return ids, weights


def t5_encode(model, ids, weights):
    with torch.no_grad():
        z = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        if any(w != 1.0 for w in weights):
            empty = [1] + [0] * (len(ids) - 1)
            ze = model(input_ids=torch.tensor([empty])).last_hidden_state[0]
            for i, w in enumerate(weights):
                if w != 1.0:
                    z[i] = (z[i] - ze[i]) * w + ze[i]
    return z.numpy().astype("<f4")


def t5_model(sd):
    cfg = T5Config(vocab_size=32128, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)
    model = T5EncoderModel(cfg).eval()
    full = {k: v.float() for k, v in sd.items()}
    full["encoder.embed_tokens.weight"] = full["shared.weight"]
    model.load_state_dict(full)
    return model


def gguf_weights(path):
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        name = t.name
        for a, b in LLAMA:
            name = name.replace(a, b)
        x = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)]).astype(np.float32)
        if x.ndim == 2 and name != "shared.weight":
            x = x.astype(np.float16).astype(np.float32)
        out[name] = torch.from_numpy(x.copy())
    return out


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mktextenc"
    with tempfile.TemporaryDirectory() as tmp:
        clip_l, t5, t5g = (os.path.join(tmp, n) for n in ("clip_l.safetensors", "t5xxl.safetensors", "t5.gguf"))
        subprocess.run([tool, "--dtype", "f16", "--seed", "5", "clip-l", clip_l], check=True)
        subprocess.run([tool, "--dtype", "f16", "--seed", "6", "t5", t5], check=True)
        subprocess.run([tool, "t5-gguf", t5, t5g], check=True)
        cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                             eos_token_id=49407)
        clip = CLIPTextModel(cfg).eval()
        sd = {k[len("text_model."):]: v.float() for k, v in load_file(clip_l).items()
              if k.startswith("text_model.") and not k.endswith("position_ids")}
        if not any(k.startswith("text_model.") for k in clip.state_dict()):
            clip.load_state_dict(sd)  # transformers 5: no text_model. prefix
        else:
            clip.text_model.load_state_dict(sd, strict=False)
        window = [49406, 320, 1125, 539, 320, 2368, 49407]
        window += [49407] * (77 - len(window))
        with torch.no_grad():
            pooled = clip(input_ids=torch.tensor([window])).pooler_output[0]
        pooled.numpy().astype("<f4").tofile(os.path.join(OUT, "flux_pooled.f32"))
        tok = t5_tokenizer(tmp)
        model = t5_model(load_file(t5))
        for name, segs in (("plain", [("a photo of a cat", 1.0)]), ("weighted", WEIGHTED), ("long", [(LONG, 1.0)]),
                           ("spaces", [(SPACES, 1.0)])):
            ids, weights = t5_tokens(tok, segs)
            z = t5_encode(model, ids, weights)
            print(name, z.shape, float(np.abs(z).max()))
            z.tofile(os.path.join(OUT, "flux_cond_%s.f32" % name))
        gmodel = t5_model(gguf_weights(t5g))
        ids, weights = t5_tokens(tok, [("a photo of a cat", 1.0)])
        t5_encode(gmodel, ids, weights).tofile(os.path.join(OUT, "flux_cond_gguf.f32"))


if __name__ == "__main__":
    main()
