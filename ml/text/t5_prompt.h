/* T5 prompts as ComfyUI's SDTokenizer makes them for T5-XXL (comfy/sd1_clip.py with FLUX's
 * T5XXLTokenizer: no start token, pad 0, one unbounded window, min_length 256):
 *
 *   - weighting as for CLIP (ml/text/prompt_weights.h: "(text)", "(text:w)", "\(" escapes);
 *   - each weighted segment is split at spaces (newlines become spaces; empty words dropped) and
 *     every word is tokenized on its own (ml/text/t5_tokenizer.h), without its end token;
 *   - then one end token (</s>, weight 1) and <pad> (0, weight 1) up to min_length tokens.
 *
 * "embedding:NAME" is plain text here (sdflow reads no T5 embeddings). */
#ifndef SD_ML_T5_PROMPT_H
#define SD_ML_T5_PROMPT_H

#include "ml/text/t5_tokenizer.h"
#include <stdbool.h>
#include <stddef.h>

#define SD_T5_FLUX_MIN_LENGTH 256 /* FLUX's T5XXLTokenizer min_length */

typedef struct sd_t5_prompt {
    int32_t *ids;    /* n token ids */
    double *weights; /* their weights */
    size_t n;
    bool weighted;   /* some weight is not 1 */
} sd_t5_prompt;

/* Tokenizes text as above into *out (zeroed first; free with sd_t5_prompt_free). Errors of
 * sd_t5_tokenize (invalid UTF-8, limit, memory). */
sd_status sd_t5_prompt_tokenize(sd_context *ctx, const sd_t5_tokenizer *tok, const char *text, size_t min_length,
                                sd_t5_prompt *out);
void sd_t5_prompt_free(sd_t5_prompt *p);

#endif
