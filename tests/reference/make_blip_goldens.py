#!/usr/bin/env python3
"""Golden BLIP captioning outputs from transformers' BlipForConditionalGeneration on a tiny random
configuration written in the Hugging Face layout (vision_model.*, text_decoder.bert.*,
text_decoder.cls.predictions.*), for tests/models/test_blip.c.

    python3 tests/reference/make_blip_goldens.py

Writes tests/data/goldens/blip_tiny.safetensors (weights rounded to float16 and stored as F16),
blip_vocab.txt (a made-up 100-entry WordPiece vocabulary with BERT's special tokens), and
blip_pixels.f32 (the [1, 3, 32, 32] input), blip_vision.f32 (last_hidden_state),
blip_<case>.i32 (generated ids, bos first) for the generation cases below.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import BlipConfig, BlipForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")

WORDS = ["a", "cat", "dog", "on", "the", "of", "picture", "red", "blue", "sitting", "table", "with",
         "man", "woman", "painting", "by", "in", "an", "art", "photo", "##s", "##ing", "##ed", "and", "tree"]

SEP_BIAS = 6.0

# name: generate() arguments
CASES = {
    "greedy": dict(max_new_tokens=12),
    "greedy_min": dict(max_length=14, min_length=10, repetition_penalty=1.4),
    "beam": dict(num_beams=3, max_length=12, min_length=5),
    "beam_rep": dict(num_beams=4, max_new_tokens=10, repetition_penalty=1.3),
}


def vocab():
    v = ["[PAD]"] + [f"[unused{i}]" for i in range(10)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    v += WORDS + [".", ",", "'"]
    v += [f"w{i}" for i in range(100 - len(v))]
    return v


def main():
    torch.manual_seed(11)
    voc = vocab()
    cfg = BlipConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=8, layer_norm_eps=1e-5),
        text_config=dict(vocab_size=102, hidden_size=64, encoder_hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=40,
                         bos_token_id=100, sep_token_id=voc.index("[SEP]"), pad_token_id=0, eos_token_id=2),
    )
    model = BlipForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
            if name == "text_decoder.cls.predictions.bias":
                p[voc.index("[SEP]")] += SEP_BIAS  # so that captions end before max_length
            p.copy_(p.half().float())  # exactly representable in the F16 file
    sd = {k: v.detach().clone().half().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    os.makedirs(OUT, exist_ok=True)
    save_file(sd, os.path.join(OUT, "blip_tiny.safetensors"))
    with open(os.path.join(OUT, "blip_vocab.txt"), "w") as f:
        f.write("\n".join(voc) + "\n")
    pixels = torch.randn(1, 3, 32, 32)
    pixels.numpy().astype("<f4").tofile(os.path.join(OUT, "blip_pixels.f32"))
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        hidden.numpy().astype("<f4").tofile(os.path.join(OUT, "blip_vision.f32"))
        for name, kw in CASES.items():
            ids = model.generate(pixel_values=pixels, **kw)[0]
            print(name, ids.tolist(), " ".join(voc[i] if i < len(voc) else f"<{i}>" for i in ids.tolist()))
            ids.numpy().astype("<i4").tofile(os.path.join(OUT, f"blip_{name}.i32"))
            # the margin between the best and second-best token at each greedy step, so that a
            # float difference of 1e-4 cannot flip a choice
            if "num_beams" not in kw:
                seq = ids.unsqueeze(0)
                for t in range(1, seq.shape[1]):
                    logits = model.text_decoder(input_ids=seq[:, :t], encoder_hidden_states=hidden).logits[0, -1]
                    top = torch.topk(logits, 2).values
                    assert float(top[0] - top[1]) > 1e-2, (name, t, float(top[0] - top[1]))


if __name__ == "__main__":
    main()
