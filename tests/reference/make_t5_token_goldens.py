#!/usr/bin/env python3
"""Writes tests/data/goldens/t5_tokens.json: T5 v1.1 token ids from transformers' T5TokenizerFast
built from the vocabulary sdflow embeds (data/t5/tokenizer.json.gz; nothing is downloaded):
[{"text", "ids"}], ids = tokenizer(text)["input_ids"] (pieces then </s> = 1, no padding, no
truncation), for hand-picked prompts (Unicode normalisation, digits, punctuation, whitespace,
special tokens, combining marks, emoji, long prompts) and 120 seeded random strings drawn from
ASCII, Latin, Greek, Cyrillic, CJK, fullwidth, combining marks, symbols, emoji and whitespace.

Regenerate (developers only; CI reads the committed JSON):
    python3 tests/reference/make_t5_token_goldens.py
"""
import gzip
import json
import os
import random

from tokenizers import Tokenizer
from transformers import T5TokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "data", "t5", "tokenizer.json.gz")
OUT = os.path.join(ROOT, "tests", "data", "goldens", "t5_tokens.json")

HAND = [
    "", " ", "   ", "a", "a photo of a cat", "A Photo Of A CAT", "  leading and trailing spaces   ",
    "a  b", "a   b  c    d", "tabs\tand\nnewlines\r\nand\u00a0no-break\u3000ideographic\u2003em spaces",
    "masterpiece, best quality, ultra-detailed, 8k, (extremely detailed CG unity 8k wallpaper)",
    "A cinematic shot of a baby racoon wearing an intricate italian priest robe.",
    "it's what they're saying: we'll see, I'd say, you've, I'm, don't",
    "1234567890 3.14159 1,000,000 -42 +7 1e-5 0x1F 2024-12-06 12:30:45 50% $19.99 #1",
    "!!!??? ... --- *** ((( ))) [[[ ]]] {{{ }}} <<< >>> /// \\\\\\ ||| ~~~ ^^^ @@@ &&& ___ ===",
    "\"double\" 'single' `back` «guillemets» „low“ ‚single‘ 「corner」 『white』",
    "Straße Ärger Öl Übermut café naïve résumé coöperate façade jalapeño",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ！？ （ｘ） ＜ｔａｇ＞",
    "ﬁ ﬂ ﬀ ﬃ ﬄ ĳ Ǆ ǅ ǆ Ⅻ ⅷ ① ⑳ ㈱ ㍿ ™ ℃ ℉ № ½ ¾ x² H₂O µ Ω Å K",
    "e\u0301 a\u0301\u0301 ｅ\u0301 o\u0308 n\u0303 \u0301alone u\u0308\u0304",
    "한국어 텍스트 \u1100\u1161\u11a8 日本語のテキスト ｶﾀｶﾅ ﾊﾟ 中文文本 繁體字",
    "Ελληνικά κείμενο Русский текст українська Ѐ ѐ",
    "עברית טקסט العربية نص हिन्दी पाठ ภาษาไทย ລາວ",
    "emoji 😀 😀😀 👍🏽 👨‍👩‍👧 ❤️ ©️ ®\u200d🇺🇸 🇫🇷🇩🇪 1️⃣ 🏳️‍🌈",
    "zero\u200bwidth\u200cjoiner\u200dand\ufeffbom\u2060word",
    "control\x00\x01\x07\x1b\x7f chars \x85 and \u2028 line \u2029 para",
    "x</s>y", "x </s> y", "</s>", "</s>y", " </s>y", "<pad>", "hello<pad>world", "<pad><pad>x", "<unk> x",
    "x <extra_id_0> y <extra_id_99> z <extra_id_100> <Extra_id_1>", "<extra_id_5>y", "<</s>>",
    "＜/ｓ＞ ＜extra_id_0＞ ＜pad＞",
    "▁ ▁▁x a▁b a ▁ b ▁", "__init__ snake_case kebab-case CamelCase dot.separated path/to/file.png",
    "https://example.com/a?b=c&d=e#frag user@example.org",
    "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306 stacked marks",
    "\u0915\u094d\u0937 \u0915\u094d\u200d\u0937 conjuncts",
    "...", "…", "—–-", "•·∙", "←→↑↓⇒", "∑∫√∞≠≤≥±×÷",
    "((masterpiece:1.2)), (best quality), [worse], {curly}, <lora:foo:0.8>, embedding:bar",
    "a painting of a fox sitting in a field at sunrise in the style of Claude Monet",
    "photograph of an astronaut riding a horse, 35mm, f/1.8, bokeh, golden hour, highly detailed",
    "UPPER lower MiXeD 123abc abc123 a1b2c3",
    "\t\n\r\x0b\x0c leading control whitespace",
    "trailing whitespace \t\n\u3000\u00a0",
    "ǰ ΐ ﬓ ﬔ ﬕ İ ı ſ ẞ ß",
    "𝔄𝔅ℭ 𝐀𝐁𝐂 𝟎𝟏𝟐 mathematical alphanumerics",
    "Ⓐⓑⓒ ⒜ ⑴ ⒈ ㊀ enclosed",
    "ＡＢ\u0301 ﾞﾟ ｶﾞ ｯ",
    "²\u1ae2photo \u1ad0x marks assigned after Unicode 16",
]
LONG = [
    ", ".join(["a beautiful landscape with mountains and a lake"] * 12),
    " ".join(str(i) for i in range(300)),
    "word " * 200,
    "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(400)),
    "supercalifragilisticexpialidocious" * 20,
]

POOLS = [
    [chr(c) for c in range(0x20, 0x7F)],
    [chr(c) for c in range(0xA0, 0x250)],
    [chr(c) for c in range(0x370, 0x3D0)] + [chr(c) for c in range(0x400, 0x460)],
    [chr(c) for c in range(0x4E00, 0x4E80)] + [chr(c) for c in range(0x3040, 0x30FF)],
    [chr(c) for c in range(0xFF01, 0xFF9F)],
    [chr(c) for c in range(0x300, 0x370)],
    [chr(c) for c in range(0x2000, 0x2070)] + [chr(c) for c in range(0x2100, 0x2190)] + [chr(c) for c in range(0x2460, 0x24FF)],
    [chr(c) for c in range(0x1F300, 0x1F64F)] + ["\u200d", "\ufe0f", "\U0001F3FB"],
    [" ", "  ", "\t", "\n", "\u3000", "\u00a0", "\u2581", "</s>", "<pad>", "<extra_id_3>"],
    [chr(c) for c in range(0xAC00, 0xAC40)] + [chr(c) for c in range(0x1100, 0x1120)] + [chr(c) for c in range(0x900, 0x980)],
    ["cat", "dog", "photo", "of", "the", "a", "in", "style", "by", "highly", "detailed", "4k", ",", ".", "(", ")", ":1.2"],
]


def random_texts(n):
    rng = random.Random(20261206)
    out = []
    for _ in range(n):
        pools = rng.sample(POOLS, rng.randint(1, 3))
        length = rng.randint(1, 40)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return out


def main():
    tok = T5TokenizerFast(tokenizer_object=Tokenizer.from_str(gzip.open(VOCAB).read().decode("utf-8")))
    texts = HAND + LONG + random_texts(120)
    rows = [{"text": t, "ids": tok(t)["input_ids"]} for t in texts]
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(OUT, len(rows), "prompts")


if __name__ == "__main__":
    main()
