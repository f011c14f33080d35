/* Both CLIP towers with projections (see clip_pair.h). */
#include "ml/vision/clip_pair.h"
#include "ml/text/clip.h"
#include "ml/text/clip_tokenizer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 77
#define BATCH 32
#define PACK 256     /* own tokens per packed sequence of texts sharing a prefix */
#define MIN_SHARED 2 /* shared tokens (the start token and more) worth packing */

struct sd_clip_pair {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_clip_config text;
    float *projection;    /* transformers: text_projection.weight [dim, width]; NULL for open_clip */
    int dim;
    sd_clip_model *base;
    sd_clip_model *windows[WINDOW + 1]; /* by length, created on first use */
    sd_clip_tokenizer *tok;
    sd_clip_vision_config vcfg;
    sd_clip_vision *vision;
};

static const sd_st_tensor *find2(const sd_safetensors *st, const char *name, int64_t *d0, int64_t *d1)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    if (!t || t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > INT32_MAX || t->shape[1] > INT32_MAX)
        return NULL;
    *d0 = t->shape[0];
    *d1 = t->shape[1];
    return t;
}

/* The text tower's configuration from its shapes; prefix "text_model." or "" (open_clip). */
static sd_status inspect_text(sd_context *ctx, const sd_safetensors *st, bool open_clip, sd_clip_config *c,
                              const char **prefix)
{
    static const char *const names[2][5] = {
        {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
         "text_model.encoder.layers.0.mlp.fc1.weight", "text_model.encoder.layers.%d.layer_norm1.weight",
         "text_projection.weight"},
        {"token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight",
         "transformer.resblocks.%d.ln_1.weight", "text_projection"}};
    const char *const *n = names[open_clip];
    int64_t v, w, pos, pw, ff, fw, p0, p1;
    *prefix = open_clip ? "" : "text_model.";
    memset(c, 0, sizeof *c);
    if (!find2(st, n[0], &v, &w) || !find2(st, n[1], &pos, &pw) || !find2(st, n[2], &ff, &fw) ||
        !find2(st, n[4], &p0, &p1) || pw != w || fw != w || (open_clip ? p0 : p1) != w || pos < 2)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: no CLIP text tower with its projection (tensors %s, %s, %s, %s of matching shapes)",
                            sd_safetensors_path(st), n[0], n[1], n[2], n[4]);
    c->open_clip = open_clip;
    c->vocab = (int)v;
    c->width = (int)w;
    c->positions = (int)(pos < WINDOW ? pos : WINDOW);
    c->intermediate = (int)ff;
    c->heads = c->width >= 64 && c->width % 64 == 0 ? c->width / 64 : 1;
    c->gelu = c->width > 768; /* OpenAI's towers use quick GELU, LAION's larger ones GELU */
    c->projection = open_clip ? (int)p1 : 0;
    char name[128];
    for (;;) {
        snprintf(name, sizeof name, n[3], c->layers);
        if (!sd_safetensors_find(st, name) || c->layers >= 64)
            break;
        c->layers++;
    }
    if (c->vocab < SD_CLIP_VOCAB || c->positions < WINDOW || c->layers < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP text tower with %d tokens, %d positions, %d layers "
                            "(needs the %d-token vocabulary and %d positions)", sd_safetensors_path(st), c->vocab,
                            c->positions, c->layers, SD_CLIP_VOCAB, WINDOW);
    return SD_OK;
}

sd_status sd_clip_pair_new(sd_cl *cl, const sd_safetensors *st, sd_clip_pair **out)
{
    sd_context *ctx = cl->ctx;
    *out = NULL;
    sd_clip_pair *p = calloc(1, sizeof *p);
    if (!p)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    p->cl = cl;
    p->st = st;
    bool open_clip = !sd_safetensors_find(st, "text_model.embeddings.token_embedding.weight") &&
                     sd_safetensors_find(st, "token_embedding.weight");
    const char *prefix;
    sd_status s = inspect_text(ctx, st, open_clip, &p->text, &prefix);
    if (!s)
        s = sd_clip_vision_inspect(ctx, st, NULL, &p->vcfg);
    p->dim = open_clip ? p->text.projection : 0;
    if (!s && !open_clip) {
        int64_t d0, d1;
        const sd_st_tensor *t = find2(st, "text_projection.weight", &d0, &d1);
        p->dim = (int)d0;
        if (!(p->projection = malloc((size_t)d0 * (size_t)d1 * sizeof *p->projection)))
            s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        else
            s = sd_safetensors_read_f32(ctx, st, t, p->projection, (size_t)d0 * (size_t)d1);
    }
    if (!s && p->vcfg.projection != p->dim)
        s = sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP text features have %d values, image features %d",
                         sd_safetensors_path(st), p->dim, p->vcfg.projection);
    if (!s) s = sd_clip_model_new(cl, st, prefix, &p->text, SD_DTYPE_F32, &p->base);
    if (!s) s = sd_clip_vision_new(cl, st, &p->vcfg, SD_DTYPE_F32, &p->vision);
    if (!s) s = sd_clip_tokenizer_new(ctx, &p->tok);
    if (s) {
        sd_clip_pair_free(p);
        return s;
    }
    *out = p;
    return SD_OK;
}

void sd_clip_pair_free(sd_clip_pair *p)
{
    if (!p)
        return;
    for (int i = 0; i <= WINDOW; i++)
        sd_clip_model_free(p->windows[i]);
    sd_clip_model_free(p->base);
    sd_clip_vision_free(p->vision);
    sd_clip_tokenizer_free(p->tok);
    free(p->projection);
    free(p);
}

int sd_clip_pair_dim(const sd_clip_pair *p)
{
    return p->dim;
}

const sd_clip_vision_config *sd_clip_pair_vision_config(const sd_clip_pair *p)
{
    return &p->vcfg;
}

static void normalize(float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < n; i++)
        v[i] *= inv;
}

/* open_clip's window of text: start, at most 75 tokens, end. *ids malloc'd, *n its length. */
static sd_status window_ids(sd_clip_pair *p, const char *text, int32_t **ids, int *n)
{
    int32_t *t = NULL;
    size_t len = 0, cap = 0;
    sd_status s = sd_clip_tokenize(p->cl->ctx, p->tok, text, strlen(text), &t, &len, &cap);
    if (s) {
        free(t);
        return s;
    }
    size_t keep = len < WINDOW - 2 ? len : WINDOW - 2;
    int32_t *w = malloc((keep + 2) * sizeof *w);
    if (!w) {
        free(t);
        return sd_set_error(p->cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    w[0] = SD_CLIP_BOS;
    if (keep)
        memcpy(w + 1, t, keep * sizeof *w);
    w[keep + 1] = SD_CLIP_EOS;
    free(t);
    *ids = w;
    *n = (int)keep + 2;
    return SD_OK;
}

sd_status sd_clip_pair_count_tokens(sd_clip_pair *p, const char *text, int *tokens)
{
    int32_t *t = NULL;
    size_t len = 0, cap = 0;
    sd_status s = sd_clip_tokenize(p->cl->ctx, p->tok, text, strlen(text), &t, &len, &cap);
    free(t);
    *tokens = (int)(len < INT32_MAX ? len : INT32_MAX);
    return s;
}

/* out = unit-length features of a pooled output (projected when the pair holds the projection). */
static void finish(const sd_clip_pair *p, const float *src, float *dst)
{
    int width = p->text.width;
    if (p->projection)
        for (int j = 0; j < p->dim; j++) { /* text_projection.weight [dim, width] */
            double acc = 0;
            for (int k = 0; k < width; k++)
                acc += (double)src[k] * p->projection[(size_t)j * (size_t)width + (size_t)k];
            dst[j] = (float)acc;
        }
    else
        memcpy(dst, src, (size_t)p->dim * sizeof *dst);
    normalize(dst, p->dim);
}

/* Features of `batch` windows of length len (ids [batch * len]) into out[order[i]]. */
static sd_status encode_group(sd_clip_pair *p, int len, const int32_t *ids, int batch, const int *order, float *out)
{
    sd_context *ctx = p->cl->ctx;
    sd_status s = SD_OK;
    if (!p->windows[len])
        s = sd_clip_model_new_window(p->base, len, &p->windows[len]);
    int width = p->text.width, pw = sd_clip_pooled_width(&p->text);
    float *hidden = malloc((size_t)batch * (size_t)len * (size_t)width * sizeof *hidden);
    float *pooled = malloc((size_t)batch * (size_t)pw * sizeof *pooled);
    if (!s && (!hidden || !pooled))
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = sd_clip_encode(p->windows[len], ids, batch, 0, hidden, pooled);
    for (int b = 0; !s && b < batch; b++)
        finish(p, pooled + (size_t)b * (size_t)pw, out + (size_t)order[b] * (size_t)p->dim);
    free(hidden);
    free(pooled);
    return s;
}

/* The number of leading tokens all windows ids[0..n) share, each keeping at least its last. */
static int shared_prefix(int32_t *const *ids, const int *lens, int n)
{
    int shared = lens[0] - 1;
    for (int i = 1; i < n; i++) {
        int k = 0;
        while (k < shared && k < lens[i] - 1 && ids[i][k] == ids[0][k])
            k++;
        shared = k;
    }
    return shared;
}

/* Features of windows ids[0..n) that share their first `shared` tokens: the prefix is encoded
 * once per pack of at most PACK own tokens (sd_clip_encode_packed), exactly as whole windows. */
static sd_status encode_shared(sd_clip_pair *p, int32_t *const *ids, const int *lens, int n, int shared, float *out)
{
    int pw = sd_clip_pooled_width(&p->text);
    const int32_t **own = malloc((size_t)n * sizeof *own);
    int *own_len = malloc((size_t)n * sizeof *own_len);
    float *pooled = malloc((size_t)n * (size_t)pw * sizeof *pooled);
    sd_status s = own && own_len && pooled ? SD_OK : sd_set_error(p->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++)
        own[i] = ids[i] + shared, own_len[i] = lens[i] - shared;
    for (int first = 0, m; !s && first < n; first += m) {
        int tokens = own_len[first];
        for (m = 1; first + m < n && tokens + own_len[first + m] <= PACK; m++)
            tokens += own_len[first + m];
        s = sd_clip_encode_packed(p->base, ids[0], shared, own + first, own_len + first, m,
                                  pooled + (size_t)first * (size_t)pw);
    }
    for (int i = 0; !s && i < n; i++)
        finish(p, pooled + (size_t)i * (size_t)pw, out + (size_t)i * (size_t)p->dim);
    free(own);
    free(own_len);
    free(pooled);
    return s;
}

sd_status sd_clip_pair_text_features(sd_clip_pair *p, const char *const *texts, int n, float *out)
{
    sd_context *ctx = p->cl->ctx;
    int32_t **ids = calloc((size_t)n + 1, sizeof *ids), *batch = malloc((size_t)BATCH * WINDOW * sizeof *batch);
    int *lens = calloc((size_t)n + 1, sizeof *lens), order[BATCH];
    sd_status s = ids && lens && batch ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++)
        s = window_ids(p, texts[i], &ids[i], &lens[i]);
    int shared = s || n < 2 ? 0 : shared_prefix(ids, lens, n);
    if (shared >= MIN_SHARED)
        s = encode_shared(p, ids, lens, n, shared, out);
    for (int len = 2; !s && shared < MIN_SHARED && len <= WINDOW; len++) {
        int m = 0;
        for (int i = 0; !s && i < n; i++) {
            if (lens[i] != len)
                continue;
            memcpy(batch + (size_t)m * (size_t)len, ids[i], (size_t)len * sizeof *batch);
            order[m++] = i;
            if (m == BATCH) {
                s = encode_group(p, len, batch, m, order, out);
                m = 0;
            }
        }
        if (!s && m)
            s = encode_group(p, len, batch, m, order, out);
    }
    for (int i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    free(batch);
    return s;
}

sd_status sd_clip_pair_image_features(sd_clip_pair *p, const float *pixels, float *out)
{
    sd_status s = sd_clip_vision_encode(p->vision, pixels, 1, out, NULL, NULL);
    if (!s)
        normalize(out, p->dim);
    return s;
}

static sd_status encode_cb(void *user, const char *const *texts, int n, float *out)
{
    return sd_clip_pair_text_features(user, texts, n, out);
}

static sd_status count_cb(void *user, const char *text, int *tokens)
{
    return sd_clip_pair_count_tokens(user, text, tokens);
}

sd_text_encoder sd_clip_pair_encoder(sd_clip_pair *p)
{
    return (sd_text_encoder){.dim = p->dim, .encode = encode_cb, .count = count_cb, .user = p};
}
