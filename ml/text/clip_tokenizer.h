/* OpenAI CLIP's byte-level BPE tokenizer, with the behaviour of transformers' CLIPTokenizer
 * (the tokenizers-backed one ComfyUI loads for SD1):
 *
 *   1. the literal special tokens "<|startoftext|>" / "<|endoftext|>" in the raw text become
 *      49406 / 49407; the text between them is processed as follows;
 *   2. normalisation: Unicode NFC, every run of whitespace (White_Space) becomes one space,
 *      full Unicode lowercase per code point;
 *   3. pre-tokenisation by the regex 's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (alternatives tried in order at each position; text no alternative matches, i.e.
 *      whitespace, is dropped). transformers' pattern also lists the special tokens, but its
 *      following ByteLevel step re-splits them with GPT-2's pattern into "<|", word, "|>",
 *      which is what the pattern without them gives;
 *   4. each piece's UTF-8 bytes are mapped to CLIP's byte characters, "</w>" is appended to the
 *      last one, and the BPE merges of bpe_simple_vocab_16e6.txt are applied by rank.
 *
 * The vocabulary is embedded at build time (data/clip/bpe_simple_vocab_16e6.txt.gz, MIT licence
 * in data/clip/LICENSE). Unicode tables (letters, numbers, case, NFC) cover all planes, from the
 * Unicode version of the Python that generated ml/text/clip_unicode.c. Known gaps: none in the
 * tokenizer itself; characters assigned in later Unicode versions are classified as unassigned. */
#ifndef SD_ML_CLIP_TOKENIZER_H
#define SD_ML_CLIP_TOKENIZER_H

#include "core/context.h"
#include <stdint.h>

#define SD_CLIP_BOS 49406
#define SD_CLIP_EOS 49407
#define SD_CLIP_VOCAB 49408
#define SD_CLIP_MAX_TEXT (1u << 20) /* bytes of prompt text accepted */

typedef struct sd_clip_tokenizer sd_clip_tokenizer;

/* Builds the tokenizer from the embedded vocabulary (a few milliseconds). The tokenizer is
 * immutable afterwards and may be shared between threads. SD_ERR_NOMEM, or SD_ERR_PARSE if the
 * embedded vocabulary is damaged. */
sd_status sd_clip_tokenizer_new(sd_context *ctx, sd_clip_tokenizer **out);
void sd_clip_tokenizer_free(sd_clip_tokenizer *tok); /* NULL-safe */

/* Tokenizes len bytes of UTF-8 text (steps 1-4 above) and appends the token ids, without a
 * leading BOS or trailing EOS, to the growable array *ids (*n ids, *cap allocated; start with
 * NULL/0/0; free() it). SD_ERR_INVALID for text that is not valid UTF-8 (message gives the byte
 * offset), SD_ERR_LIMIT for text over SD_CLIP_MAX_TEXT bytes, SD_ERR_NOMEM. */
sd_status sd_clip_tokenize(sd_context *ctx, const sd_clip_tokenizer *tok, const char *text, size_t len,
                           int32_t **ids, size_t *n, size_t *cap);

/* The vocabulary string of a token id (byte characters, "</w>" marking a word end), or NULL
 * when id is out of range. */
const char *sd_clip_token_string(const sd_clip_tokenizer *tok, int32_t id);

#endif
