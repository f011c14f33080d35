/* Fuzzes the CLIP tokenizer and ComfyUI prompt weighting (ml/text/clip_tokenizer.c,
 * ml/text/prompt_weights.c) on arbitrary bytes, as CLIPTextEncode's text reaches them:
 * sd_clip_tokenize on the raw bytes (invalid UTF-8 included), sd_prompt_parse_weights, and
 * sd_prompt_tokenize with an embedding lookup (names of 1-3 letters exist, with that many
 * vectors) so the "embedding:" path is covered. */
#include "fuzz_util.h"
#include "ml/text/prompt_weights.h"
#include <stdlib.h>
#include <string.h>

static sd_clip_tokenizer *tokenizer;

static int lookup(void *user, const char *name)
{
    (void)user;
    size_t n = strlen(name);
    return n >= 1 && n <= 3 ? (int)n : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    if (!tokenizer && sd_clip_tokenizer_new(ctx, &tokenizer) != SD_OK)
        abort();
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    sd_status st = sd_clip_tokenize(ctx, tokenizer, (const char *)data, size, &ids, &n, &cap);
    fuzz_check_error(ctx, st);
    for (size_t i = 0; i < n; i++)
        if (!sd_clip_token_string(tokenizer, ids[i]))
            abort();
    free(ids);

    char *text = malloc(size + 1); /* prompts are NUL-terminated strings */
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sd_prompt_segment *segs = NULL;
    size_t n_segs = 0;
    st = sd_prompt_parse_weights(ctx, text, &segs, &n_segs);
    fuzz_check_error(ctx, st);
    sd_prompt_segments_free(segs, n_segs);

    sd_prompt_tokens toks;
    st = sd_prompt_tokenize(ctx, tokenizer, text, (size & 1) ? lookup : NULL, NULL, &toks);
    fuzz_check_error(ctx, st);
    if (st == SD_OK)
        sd_prompt_tokens_free(&toks);
    free(text);
    return 0;
}
