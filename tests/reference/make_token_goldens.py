#!/usr/bin/env python3
"""Writes tests/data/goldens/tokens.json: CLIP token ids from transformers' CLIPTokenizer built
from the same vocabulary file sdflow embeds (data/clip/bpe_simple_vocab_16e6.txt.gz; vocab and
merges are derived from it here, nothing is downloaded).

  "plain":    {"text", "ids"}: tokenizer(text)["input_ids"] (BOS ... EOS, no truncation), for
              hand-picked prompts and 60 seeded random strings over many Unicode blocks
  "weighted": {"text", "tokens", "weights"}: ComfyUI's SDTokenizer.tokenize_with_weights for SD1
              (comfy/sd1_clip.py: escape_important, token_weights, 77-token windows padded with
              the end token, groups of >= 8 tokens split across windows), with each segment
              tokenized by the same CLIPTokenizer; no embedding directory. Hand-picked prompts
              and 40 seeded random strings of parentheses, colons, numbers, escapes and words.

Regenerate (developers only; CI reads the committed JSON):
    /opt/refenv/bin/python tests/reference/make_token_goldens.py
"""
import gzip
import json
import os
import re

import transformers
from transformers import CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "data", "clip", "bpe_simple_vocab_16e6.txt.gz")
OUT = os.path.join(ROOT, "tests", "data", "goldens", "tokens.json")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer():
    lines = gzip.open(VOCAB).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


PLAIN = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0no-break\u3000ideographic\u2003em spaces",
    "masterpiece, best quality, ultra-detailed, 8k, (extremely detailed CG unity 8k wallpaper)",
    "it's what they're saying: we'll see, I'd say, you've, I'm, don't",
    "IT'S UPPERCASE CONTRACTIONS WE'RE",
    "rock'n'roll o'clock 'quoted' ''double''",
    "don't!!'s ...'s",
    "numbers 1234567890 3.14159 1,000,000 -42 +7 1e10 0x1F",
    "version 2.0.1-beta+build.5",
    "café naïve résumé Ångström façade jalapeño",
    "cafe\u0301 decomposed e\u0301 and n\u0303",
    "Straße groß ǅ ǈ ǋ ǲ",
    "İstanbul and DİYARBAKIR",
    "ΑΒΓΔ Ελληνικά σοφία ΣΟΦΟΣ",
    "Москва Привет мир",
    "עברית العربية فارسی",
    "हिन्दी भाषा",
    "ภาษาไทย",
    "你好世界，这是一只猫。",
    "日本語のテキスト、カタカナとひらがな",
    "한국어 텍스트 안녕하세요",
    "\u1100\u1161\u11a8 hangul jamo",
    "emoji 😀😃😄 🐱‍👤 👩‍👩‍👧‍👦 🇯🇵 ❤️ ✨",
    "skin tones 👍🏽👍🏿",
    "math ∑∫√∞≠≤≥ ½ ¾ ² ³ ⅷ Ⅻ",
    "fullwidth ＡＢＣ１２３",
    "Ω\u2126 Å\u212b K\u212a",
    "ligatures ﬁ ﬂ ﬀ",
    "punctuation!!! ??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ~~~",
    "brackets (round) [square] {curly} <angle>",
    "html &amp; &lt;tag&gt; &quot;quoted&quot;",
    "urls https://example.com/path?query=1&b=2#frag",
    "email someone@example.org",
    "path/to/file.safetensors C:\\Windows\\System32",
    "a <|endoftext|> b <|startoftext|> c",
    "<|ENDOFTEXT|> <|endoftext|",
    "control \x00\x01\x1b[31m chars \x7f",
    "zero\u200bwidth\u200cjoiner\u200d and bom \ufeff",
    "soft\u00adhyphen",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "snake_case_words camelCaseWords kebab-case-words",
    "x" * 5 + "y" * 5 + "1" * 5,
    "weights (word:1.2) [word] {word} ((nested)) \\(escaped\\)",
    "embedding:easynegative, lowres",
    "a 1girl, solo, long hair, looking at viewer, smile, blue eyes, blonde hair, dress",
    "Mixed CASE with ÜMLAUTS and ÉÈÊ",
    "old-style ſ long s and ﬆ",
    "Cherokee ᏣᎳᎩ Ꭰ and Georgian ᲐᲑᲒ",
    " ".join(["word%d" % i for i in range(60)]),
    ("a very long prompt about a beautiful landscape with mountains, rivers, forests, "
     "clouds, the sun setting behind the hills, birds flying, a small cottage with smoke "
     "rising from the chimney, flowers in the meadow, a wooden fence, sheep grazing, "
     "dramatic lighting, golden hour, highly detailed, photorealistic, 8k, trending on "
     "artstation, by greg rutkowski and alphonse mucha, octane render, unreal engine"),
]

WEIGHTED = [
    "",
    "a photo of a cat",
    "(masterpiece:1.2), best quality, (worst quality:0.5)",
    "((double)) (((triple))) (single)",
    "((nested:1.5) outer)",
    "(a (b:0.5) c:2.0)",
    "[not special] {not special either}",
    "\\(escaped\\) and \\(half (real:1.3)",
    "unbalanced (open",
    "unbalanced close) here",
    "(colon: in text)",
    "(x:y:1.25)",
    "(:1.5) empty name",
    "(time 10:30)",
    "(weight with spaces: 1.5 )",
    "(sci:1e-1) (neg:-0.5) (big:1e2)",
    "embedding:easynegative, lowres",
    "a embedding:foo bar",
    " ".join(["word%d" % i for i in range(80)]),
    "(" + " ".join(["long%d" % i for i in range(80)]) + ":1.1), tail",
    ", ".join(["tag%d" % i for i in range(40)]),
    "short " * 36 + "(seven token group a b c d e f)",
    "(" + "w " * 74 + ") (a b c d e f g h i j)",
]


def parse_parentheses(text):
    out, cur, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if cur:
                    out.append(cur)
                cur = "("
            else:
                cur += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                out.append(cur + ")")
                cur = ""
            else:
                cur += ch
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def token_weights(text, weight):
    out = []
    for part in parse_parentheses(text):
        w = weight
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            part = part[1:-1]
            colon = part.rfind(":")
            w *= 1.1
            if colon > 0:
                try:
                    w = float(part[colon + 1:])
                    part = part[:colon]
                except ValueError:
                    pass
            out += token_weights(part, w)
        else:
            out.append((part, weight))
    return out


def comfy_windows(tok, text):
    bos, eos = 49406, 49407
    text = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    groups = []
    for segment, weight in token_weights(text, 1.0):
        segment = segment.replace("\0\1", ")").replace("\0\2", "(")
        pieces = re.split(" embedding:|\nembedding:", segment)
        words = [pieces[0]] + ["embedding:" + p for p in pieces[1:]]
        for word in [w for w in words if w != ""]:
            groups.append([(t, weight) for t in tok(word)["input_ids"][1:-1]])
    windows, batch = [], [(bos, 1.0)]
    windows.append(batch)
    for group in groups:
        large = len(group) >= 8
        while group:
            if len(group) + len(batch) > 76:
                room = 77 - len(batch) - 1
                if large:
                    batch.extend(group[:room])
                    batch.append((eos, 1.0))
                    group = group[room:]
                else:
                    batch.append((eos, 1.0))
                    batch.extend([(eos, 1.0)] * room)
                batch = [(bos, 1.0)]
                windows.append(batch)
            else:
                batch.extend(group)
                group = []
    batch.append((eos, 1.0))
    batch.extend([(eos, 1.0)] * (77 - len(batch)))
    return windows


# Code point pools for random strings (seeded): combining marks in random order exercise NFC's
# canonical reordering and composition; the rest the letter/number/case tables.
POOLS = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x591, 0x5C7),
    (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF),
    (0x2000, 0x206F), (0x2070, 0x218F), (0x2460, 0x24FF), (0x3000, 0x30FF), (0x4E00, 0x4E80),
    (0xAC00, 0xAD00), (0xF900, 0xFA2D), (0xFB00, 0xFB4F), (0xFF00, 0xFFEF), (0x1D400, 0x1D4FF),
    (0x1F300, 0x1F64F), (0x10400, 0x1044F),
]


def random_strings(n, seed=1234):
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(POOLS)
            cp = rng.randint(lo, hi)
            if 0xD800 <= cp <= 0xDFFF:
                continue
            chars.append(chr(cp))
        out.append("".join(chars))
    return out


WEIGHT_PIECES = ["(", "(", ")", ")", ":", ":1.2", ":0.5", ": 2 ", ":x", "\\(", "\\)", "\\", "[", "]",
                 " ", " ", "cat", "dog", "a photo", ",", "1.5", "embedding:foo", "\n", "e", "_", "1_0"]


def random_weighted(n, seed=4321):
    import random
    rng = random.Random(seed)
    return ["".join(rng.choice(WEIGHT_PIECES) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def main():
    tok = build_tokenizer()
    plain = [{"text": t, "ids": tok(t)["input_ids"]} for t in PLAIN + random_strings(60)]
    weighted = []
    for t in WEIGHTED + random_weighted(40):
        windows = comfy_windows(tok, t)
        weighted.append({"text": t, "tokens": [[i for i, _ in w] for w in windows],
                         "weights": [[w for _, w in win] for win in windows]})
    doc = {"generator": "tests/reference/make_token_goldens.py",
           "reference": "transformers %s CLIPTokenizer; ComfyUI sd1_clip.py weighting" % transformers.__version__,
           "plain": plain, "weighted": weighted}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print("wrote %s: %d plain, %d weighted" % (OUT, len(plain), len(weighted)))


if __name__ == "__main__":
    main()
