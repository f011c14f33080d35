#!/usr/bin/env python3
"""Goldens for the CLIP interrogator (tests/models/test_interrogate.c):

  * a tiny random transformers CLIPModel (text: the full 49408-token vocabulary, width 16;
    vision: 32x32 images, patch 8) written in the Hugging Face layout as F16,
    tests/data/goldens/interrogate_clip.safetensors, with get_text_features for a few texts and
    get_image_features for random pixels (interrogate_pixels.f32, interrogate_image.f32,
    interrogate_text.f32);
  * a reference implementation of clip-interrogator's algorithm (pharmapsychotic/clip-interrogator
    0.6.0, clip_interrogator.py, MIT; written here from its description, not copied): label tables
    ranked by cosine similarity in chunks, the greedy flavour chain within 77 tokens, the
    classic / fast / negative / best modes, run on the tiny tables of tests/data/interrogate with
    that model; its prompts and each table's top labels and scores go to interrogate.json.

    python3 tests/reference/make_interrogate_goldens.py
"""
import importlib.util
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "goldens")
TABLES = os.path.join(ROOT, "tests", "data", "interrogate")

spec = importlib.util.spec_from_file_location("toks", os.path.join(HERE, "make_token_goldens.py"))
toks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toks)
TOKENIZER = toks.build_tokenizer()

CAPTION = "a photo of a red cat sitting on a table"
CHUNK = 16          # chunk_size (clip-interrogator: 2048)
INTERMEDIATE = 24   # flavor_intermediate_count (2048)
MIN_FLAVORS, MAX_FLAVORS = 8, 32
TOP = 5             # labels per table in the report
SITES = ["Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram",
         "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr", "unsplash",
         "zbrush central"]
TEXTS = ["a photo of a cat", "by Ada Lovelace", "", "oil painting, highly detailed, 8k"]


def tokens(text):
    return TOKENIZER(text)["input_ids"][1:-1]


def window(text):
    """open_clip's tokenize: start, at most 75 tokens, end."""
    return [49406] + tokens(text)[:75] + [49407]


def at_max_len(text):
    return len(tokens(text)) + 2 >= 77


def truncate_to_fit(text):
    parts = text.split(", ")
    out = parts[0]
    for part in parts[1:]:
        if at_max_len(out + part):
            break
        out += ", " + part
    return out


def load(name):
    with open(os.path.join(TABLES, name), encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()]


class Reference:
    def __init__(self, model, image):
        self.model, self.image, self.cache = model, image, {}

    def feature(self, text):
        if text not in self.cache:
            with torch.no_grad():
                f = self.model.get_text_features(input_ids=torch.tensor([window(text)])).pooler_output[0]
            self.cache[text] = (f / f.norm()).numpy().astype(np.float64)
        return self.cache[text]

    def sim(self, text):
        return float(self.feature(text) @ self.image)

    def _rank(self, labels, idx, top, reverse):
        s = [(-1 if reverse else 1) * self.sim(labels[i]) for i in idx]
        order = sorted(range(len(idx)), key=lambda k: -s[k])[: min(top, len(idx))]
        return [idx[k] for k in order]

    def rank(self, labels, top, reverse=False):
        if len(labels) <= CHUNK:
            return [labels[i] for i in self._rank(labels, list(range(len(labels))), top, reverse)]
        chunks = math.ceil(len(labels) / CHUNK)
        keep = int(CHUNK / chunks)
        kept = []
        for c in range(chunks):
            kept += self._rank(labels, list(range(c * CHUNK, min((c + 1) * CHUNK, len(labels)))), keep, reverse)
        return [labels[i] for i in self._rank(labels, kept, top, False)]  # the published re-rank

    def rank_top(self, texts, reverse):
        s = [(-1 if reverse else 1) * self.sim(t) for t in texts]
        return texts[int(np.argmax(s))]

    def chain(self, phrases, best_prompt="", best_sim=0.0, min_count=8, max_count=32, reverse=False):
        phrases = list(dict.fromkeys(phrases))
        if not best_prompt:
            best_prompt = self.rank_top(phrases, reverse)
            best_sim = self.sim(best_prompt)
            phrases.remove(best_prompt)
        curr_prompt, curr_sim = best_prompt, best_sim
        for idx in range(max_count):
            if not phrases:
                break
            best = self.rank_top([f"{curr_prompt}, {f}" for f in phrases], reverse)
            flave = best[len(curr_prompt) + 2:]
            prompt = curr_prompt + ", " + flave
            sim = self.sim(prompt) * (-1 if reverse else 1)
            if sim > best_sim:
                best_prompt, best_sim = prompt, sim
            if not (sim > curr_sim or idx < min_count):
                break
            curr_prompt, curr_sim = prompt, sim
            if at_max_len(curr_prompt):
                break
            phrases.remove(flave)
        return best_prompt


def main():
    torch.manual_seed(5)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "token_embedding" in name or "position_embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
            p.copy_(p.half().float())
    sd = {k: v.detach().clone().half().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    os.makedirs(OUT, exist_ok=True)
    save_file(sd, os.path.join(OUT, "interrogate_clip.safetensors"))
    pixels = torch.randn(1, 3, 32, 32)
    pixels.numpy().astype("<f4").tofile(os.path.join(OUT, "interrogate_pixels.f32"))
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output[0]
    img.numpy().astype("<f4").tofile(os.path.join(OUT, "interrogate_image.f32"))
    img = (img / img.norm()).numpy().astype(np.float64)
    ref = Reference(model, img)
    with torch.no_grad():
        feats = [model.get_text_features(input_ids=torch.tensor([window(t)])).pooler_output[0] for t in TEXTS]
    torch.stack(feats).numpy().astype("<f4").tofile(os.path.join(OUT, "interrogate_text.f32"))

    raw_artists = load("artists.txt")
    tables = {
        "artists": [f"by {a}" for a in raw_artists] + [f"inspired by {a}" for a in raw_artists],
        "flavors": load("flavors.txt"),
        "mediums": load("mediums.txt"),
        "movements": load("movements.txt"),
        "trendings": SITES + ["trending on " + s for s in SITES] + ["featured on " + s for s in SITES]
        + [s + " contest winner" for s in SITES],
        "negative": load("negative.txt"),
    }
    merged = sum((tables[t] for t in ["artists", "flavors", "mediums", "movements", "trendings"]), [])

    def classic(max_flavors):
        medium = ref.rank(tables["mediums"], 1)[0]
        artist = ref.rank(tables["artists"], 1)[0]
        trending = ref.rank(tables["trendings"], 1)[0]
        movement = ref.rank(tables["movements"], 1)[0]
        flaves = ", ".join(ref.rank(tables["flavors"], max_flavors))
        if CAPTION.startswith(medium):
            return truncate_to_fit(f"{CAPTION} {artist}, {trending}, {movement}, {flaves}")
        return truncate_to_fit(f"{CAPTION}, {medium} {artist}, {trending}, {movement}, {flaves}")

    def fast(max_flavors):
        return truncate_to_fit(CAPTION + ", " + ", ".join(ref.rank(merged, max_flavors)))

    def negative():
        flaves = ref.rank(tables["flavors"], INTERMEDIATE, reverse=True) + tables["negative"]
        return ref.chain(flaves, max_count=MAX_FLAVORS, reverse=True)

    def best():
        flaves = ref.rank(merged, INTERMEDIATE)
        chained = ref.chain(flaves, CAPTION, ref.sim(CAPTION), MIN_FLAVORS, MAX_FLAVORS)
        candidates = [CAPTION, classic(MAX_FLAVORS), fast(MAX_FLAVORS), chained]
        return candidates[int(np.argmax([ref.sim(c) for c in candidates]))]

    golden = {
        "caption": CAPTION, "chunk_size": CHUNK, "intermediate_count": INTERMEDIATE,
        "texts": TEXTS,
        "modes": {"classic": classic(3), "fast": fast(MAX_FLAVORS), "negative": negative(), "best": best()},
        "tops": {name: [[label, ref.sim(label)] for label in ref.rank(labels, TOP)] for name, labels in tables.items()},
    }
    with open(os.path.join(OUT, "interrogate.json"), "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
    print(json.dumps(golden["modes"], indent=1))


if __name__ == "__main__":
    main()
