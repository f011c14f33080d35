/* The T5 v1.1 SentencePiece unigram tokenizer (FLUX's and SD3's T5-XXL), with the behaviour of
 * transformers' T5TokenizerFast on the tokenizer.json sdflow embeds:
 *
 *   1. the added tokens (<pad> 0, </s> 1, <unk> 2, <extra_id_0..99> 32099..32000) are cut out of
 *      the raw text first (leftmost, longest); the text between them is processed as follows;
 *   2. normalisation: the Precompiled (nmt_nfkc) character map of tokenizer.json applied per
 *      extended grapheme cluster as the tokenizers library does it (a cluster of fewer than 6
 *      bytes whose shortest prefix is in the map becomes that prefix's replacement; otherwise each
 *      code point is mapped or kept), then trailing White_Space stripped, then every run of two or
 *      more spaces replaced by "▁";
 *   3. Metaspace pre-tokenisation: spaces become "▁", a "▁" is prepended to the text that starts
 *      the prompt (not to text after an added token), and the text is split before each "▁";
 *   4. each piece is segmented by the unigram model (best sum of piece scores, ties to the
 *      earlier start; a character no piece covers is <unk>, scored min - 10, and consecutive
 *      <unk> fuse into one);
 *   5. </s> (1) is appended. Padding (with <pad> 0) is the caller's.
 *
 * The vocabulary is embedded at build time (data/t5/tokenizer.json.gz, Apache-2.0 licence in
 * data/t5/LICENSE). Grapheme-cluster properties come from ml/text/t5_unicode.c. */
#ifndef SD_ML_T5_TOKENIZER_H
#define SD_ML_T5_TOKENIZER_H

#include "core/context.h"
#include <stdint.h>

#define SD_T5_PAD 0
#define SD_T5_EOS 1
#define SD_T5_UNK 2
#define SD_T5_MAX_TEXT (1u << 20) /* bytes of prompt text accepted */

typedef struct sd_t5_tokenizer sd_t5_tokenizer;

/* Builds the tokenizer from the embedded vocabulary (about 65 ms). Immutable afterwards
 * and may be shared between threads. SD_ERR_NOMEM, or SD_ERR_PARSE if the embedded vocabulary
 * is damaged. */
sd_status sd_t5_tokenizer_new(sd_context *ctx, sd_t5_tokenizer **out);
void sd_t5_tokenizer_free(sd_t5_tokenizer *tok); /* NULL-safe */

/* Tokenizes len bytes of UTF-8 text (steps 1-5 above): *ids (malloc'd, free() it) holds *n ids
 * ending with </s>. SD_ERR_INVALID for text that is not valid UTF-8 (the message gives the
 * byte offset), SD_ERR_LIMIT for text over SD_T5_MAX_TEXT bytes, SD_ERR_NOMEM. */
sd_status sd_t5_tokenize(sd_context *ctx, const sd_t5_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                         size_t *n);

/* Number of ids (32100) and the piece of an id ("▁cat"), or NULL when out of range. */
size_t sd_t5_vocab_size(const sd_t5_tokenizer *tok);
const char *sd_t5_piece(const sd_t5_tokenizer *tok, int32_t id);

#endif
