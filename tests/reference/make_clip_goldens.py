#!/usr/bin/env python3
"""Golden outputs of the CLIP text encoder, from transformers' CLIPTextModel.

Writes the tiny text-encoder checkpoint with the project's own tool (so the C test can write the
identical file), loads its tensors into transformers' CLIPTextModel and records, for two token
windows, the last hidden state, the clip-skip-2 hidden state with the final LayerNorm applied
(ComfyUI's CLIPSetLastLayer -2) and the pooled output, as little-endian float32 files.

    /opt/refenv/bin/python tests/reference/make_clip_goldens.py build/sdflow_mkckpt

The C side is tests/models/test_clip.c; the configuration here must match it.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "goldens")
PREFIX = "cond_stage_model.transformer.text_model."
WIDTH, LAYERS, HEADS, INTERMEDIATE, SEED = 64, 2, 2, 256, 11


def tokens():
    """Two 77-token windows: BOS, some ids, EOS, EOS padding (as ComfyUI pads SD1)."""
    rows = []
    for ids in ([320, 1125, 539, 320, 2368, 267, 3143], [1929, 4170, 25602, 268, 539, 1215, 33091, 6109, 11]):
        row = [49406] + ids + [49407]
        rows.append(row + [49407] * (77 - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.safetensors")
        subprocess.run([tool, "--preset", "tiny", "--context", str(WIDTH), "--clip-layers", str(LAYERS),
                        "--clip-intermediate", str(INTERMEDIATE), "--no-vae", "--seed", str(SEED), path],
                       check=True)
        sd = {k[len(PREFIX):]: v for k, v in load_file(path).items() if k.startswith(PREFIX)}
    config = CLIPTextConfig(vocab_size=49408, hidden_size=WIDTH, intermediate_size=INTERMEDIATE,
                            num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=77,
                            hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407)
    model = CLIPTextModel(config).eval()
    # transformers' key names may or may not carry the "text_model." prefix (version dependent).
    if any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {"text_model." + k: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing
    assert not [k for k in unexpected if "position_ids" not in k], unexpected
    ids = tokens()
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        final_ln = getattr(model, "text_model", model).final_layer_norm
        skip2 = final_ln(out.hidden_states[-2])
    os.makedirs(OUT, exist_ok=True)
    np.asarray(ids, dtype="<i4").tofile(os.path.join(OUT, "clip_tokens.i32"))
    for name, t in (("clip_last", out.last_hidden_state), ("clip_skip2", skip2), ("clip_pooled", out.pooler_output)):
        t.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".f32"))
    print("wrote clip goldens to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
