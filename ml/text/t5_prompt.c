/* T5 prompts with ComfyUI's weighting and padding (see t5_prompt.h). */
#include "ml/text/t5_prompt.h"
#include "ml/text/prompt_weights.h"
#include <stdlib.h>
#include <string.h>

void sd_t5_prompt_free(sd_t5_prompt *p)
{
    free(p->ids);
    free(p->weights);
    memset(p, 0, sizeof *p);
}

/* Appends n ids, each of weight w. */
static sd_status append(sd_context *ctx, sd_t5_prompt *p, size_t *cap, const int32_t *ids, size_t n, double w)
{
    if (p->n + n > *cap) {
        size_t want = *cap ? *cap : 64;
        while (want < p->n + n)
            want *= 2;
        int32_t *ni = realloc(p->ids, want * sizeof *ni);
        if (ni)
            p->ids = ni;
        double *nw = ni ? realloc(p->weights, want * sizeof *nw) : NULL;
        if (!nw)
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the T5 prompt");
        p->weights = nw;
        *cap = want;
    }
    for (size_t i = 0; i < n; i++) {
        p->ids[p->n + i] = ids[i];
        p->weights[p->n + i] = w;
    }
    p->n += n;
    p->weighted |= n && w != 1.0;
    return SD_OK;
}

/* Tokenizes each space-separated word of a segment on its own, without its end token. */
static sd_status add_segment(sd_context *ctx, const sd_t5_tokenizer *tok, const sd_prompt_segment *seg,
                             sd_t5_prompt *p, size_t *cap)
{
    sd_status st = SD_OK;
    for (const char *s = seg->text; !st && *s;) {
        size_t len = strcspn(s, " \n");
        if (len) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (!(st = sd_t5_tokenize(ctx, tok, s, len, &ids, &n)))
                st = append(ctx, p, cap, ids, n - 1, seg->weight); /* n >= 1: the end token */
            free(ids);
        }
        s += len;
        if (*s)
            s++;
    }
    return st;
}

sd_status sd_t5_prompt_tokenize(sd_context *ctx, const sd_t5_tokenizer *tok, const char *text, size_t min_length,
                                sd_t5_prompt *out)
{
    memset(out, 0, sizeof *out);
    sd_prompt_segment *segs = NULL;
    size_t n_segs = 0, cap = 0;
    sd_status st = sd_prompt_parse_weights(ctx, text, &segs, &n_segs);
    for (size_t i = 0; !st && i < n_segs; i++)
        st = add_segment(ctx, tok, &segs[i], out, &cap);
    const int32_t eos = SD_T5_EOS, pad = SD_T5_PAD;
    if (!st)
        st = append(ctx, out, &cap, &eos, 1, 1.0);
    while (!st && out->n < min_length)
        st = append(ctx, out, &cap, &pad, 1, 1.0);
    sd_prompt_segments_free(segs, n_segs);
    if (st)
        sd_t5_prompt_free(out);
    return st;
}
