/* The BERT WordPiece vocabulary of BLIP's decoder (bert-base-uncased's vocab.txt, one token per
 * line, id = line number) and decoding ids to text as transformers' BertTokenizer.decode with
 * skip_special_tokens and clean_up_tokenization_spaces. Tokens past the file (BLIP adds [DEC]
 * and [ENC] after it) and BERT's special tokens are skipped. */
#ifndef SD_ML_WORDPIECE_H
#define SD_ML_WORDPIECE_H

#include "core/context.h"
#include <stdint.h>

typedef struct sd_wordpiece sd_wordpiece;

/* Parses vocab.txt's text (len bytes; path names it in errors): SD_ERR_PARSE for an empty
 * vocabulary, an empty line (a token must not be empty) or one without [SEP]. */
sd_status sd_wordpiece_parse(sd_context *ctx, const char *path, const char *text, size_t len, sd_wordpiece **out);
void sd_wordpiece_free(sd_wordpiece *v); /* NULL-safe */
int sd_wordpiece_size(const sd_wordpiece *v);
/* The id of token, or -1. */
int sd_wordpiece_id(const sd_wordpiece *v, const char *token);

/* The text of ids[0..n): tokens joined by spaces, "##" continuations glued to the token before,
 * special and out-of-vocabulary ids skipped, then transformers' clean-up of spaces before
 * punctuation and English contractions, trimmed. *out is malloc'd. */
sd_status sd_wordpiece_decode(sd_context *ctx, const sd_wordpiece *v, const int32_t *ids, int n, char **out);

#endif
