/* BLIP captioning on the op library (see blip.h). The text decoder keeps a key/value cache: the
 * self-attention keys and values of the tokens so far, per layer, so each step runs only the
 * newest token (beam search reorders the cache by the beams it keeps); the image's
 * cross-attention keys and values are computed once per caption. */
#include "ml/vision/blip.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_image.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIS_EPS 1e-5f
#define TXT_EPS 1e-12f
#define VIS "vision_model."
#define VLAYER VIS "encoder.layers.%d."
#define TXT "text_decoder.bert."
#define TLAYER TXT "encoder.layer.%d."
#define HEAD "text_decoder.cls.predictions."
#define NEG_INF (-INFINITY)
#define BEAM_NONE (-1.0e9f) /* transformers' score for "no beam here" */

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

struct sd_blip {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_blip_config cfg;
    sd_weights *w;
    const char *decoder; /* the output projection: cls.predictions.decoder or the tied embeddings */
};

/* ---- configuration ---- */

/* The tensor named by fmt (with l), which must have ndim dimensions; its shape into *t. */
static sd_status probe(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor **t, int ndim, const char *fmt,
                       int l)
{
    char name[200];
    snprintf(name, sizeof name, fmt, l);
    *t = sd_safetensors_find(st, name);
    if (!*t)
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: missing tensor '%s' (BLIP caption model)",
                            sd_safetensors_path(st), name);
    if ((*t)->ndim != ndim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has %d dimensions, BLIP needs %d",
                            sd_safetensors_path(st), name, (*t)->ndim, ndim);
    return SD_OK;
}

/* Requires the tensor named by fmt (with l) to have shape [d0] (d1 == 0) or [d0, d1]. */
static sd_status need(sd_context *ctx, const sd_safetensors *st, int64_t d0, int64_t d1, const char *fmt, int l)
{
    const sd_st_tensor *t;
    sd_status s = probe(ctx, st, &t, d1 ? 2 : 1, fmt, l);
    if (!s && (t->shape[0] != d0 || (d1 && t->shape[1] != d1)))
        s = sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has shape [%lld%s%lld], BLIP needs [%lld%s%lld]",
                         sd_safetensors_path(st), t->name, (long long)t->shape[0], d1 ? ", " : "",
                         d1 ? (long long)t->shape[1] : 0LL, (long long)d0, d1 ? ", " : "", d1 ? (long long)d1 : 0LL);
    return s;
}

/* A Linear layer <fmt>.weight [out, in] and .bias [out]. */
static sd_status need_linear(sd_context *ctx, const sd_safetensors *st, int64_t out, int64_t in, const char *fmt, int l)
{
    char name[200];
    snprintf(name, sizeof name, "%s.weight", fmt);
    sd_status s = need(ctx, st, out, in, name, l);
    snprintf(name, sizeof name, "%s.bias", fmt);
    return s ? s : need(ctx, st, out, 0, name, l);
}

static sd_status need_norm(sd_context *ctx, const sd_safetensors *st, int64_t width, const char *fmt, int l)
{
    char name[200];
    snprintf(name, sizeof name, "%s.weight", fmt);
    sd_status s = need(ctx, st, width, 0, name, l);
    snprintf(name, sizeof name, "%s.bias", fmt);
    return s ? s : need(ctx, st, width, 0, name, l);
}

static int count_layers(const sd_safetensors *st, const char *fmt)
{
    char name[200];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, n);
        if (!sd_safetensors_find(st, name))
            return n;
    }
}

static sd_status heads_ok(sd_context *ctx, const sd_safetensors *st, int width, const char *what)
{
    if (width % SD_BLIP_HEAD_DIM == 0 && width / SD_BLIP_HEAD_DIM <= 64)
        return SD_OK;
    return sd_set_error(ctx, SD_ERR_INVALID, "%s: BLIP %s width %d is not a multiple of the %d-wide attention heads",
                        sd_safetensors_path(st), what, width, SD_BLIP_HEAD_DIM);
}

static sd_status inspect_vision(sd_context *ctx, const sd_safetensors *st, sd_blip_config *c)
{
    const sd_st_tensor *patch, *pos, *fc1;
    sd_status s = probe(ctx, st, &patch, 4, VIS "embeddings.patch_embedding.weight", 0);
    if (!s)
        s = probe(ctx, st, &pos, 3, VIS "embeddings.position_embedding", 0);
    if (!s)
        s = probe(ctx, st, &fc1, 2, VLAYER "mlp.fc1.weight", 0);
    if (s)
        return s;
    c->vis_width = (int)patch->shape[0];
    c->patch = (int)patch->shape[2];
    int64_t grid = (int64_t)llround(sqrt((double)(pos->shape[1] - 1)));
    if (patch->shape[1] != 3 || patch->shape[3] != c->patch || c->patch < 1 || c->patch > 64 || grid < 1 ||
        grid * grid + 1 != pos->shape[1] || grid > 256 || pos->shape[2] != c->vis_width)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: BLIP vision embeddings of unexpected shapes", sd_safetensors_path(st));
    c->image_size = (int)grid * c->patch;
    c->vis_ff = (int)fc1->shape[0];
    c->vis_layers = count_layers(st, VLAYER "self_attn.qkv.weight");
    int64_t w = c->vis_width;
    const sd_st_tensor *cls;
    if (!(s = heads_ok(ctx, st, c->vis_width, "vision")) &&
        !(s = probe(ctx, st, &cls, 3, VIS "embeddings.class_embedding", 0)) &&
        (cls->shape[0] != 1 || cls->shape[1] != 1 || cls->shape[2] != w))
        s = sd_set_error(ctx, SD_ERR_INVALID, "%s: BLIP tensor '%s' is not [1, 1, %d]", sd_safetensors_path(st),
                         cls->name, c->vis_width);
    if (!s)
        s = need(ctx, st, w, 0, VIS "embeddings.patch_embedding.bias", 0);
    for (int l = 0; !s && l < c->vis_layers; l++) {
        s = need_norm(ctx, st, w, VLAYER "layer_norm1", l);
        if (!s) s = need_norm(ctx, st, w, VLAYER "layer_norm2", l);
        if (!s) s = need_linear(ctx, st, 3 * w, w, VLAYER "self_attn.qkv", l);
        if (!s) s = need_linear(ctx, st, w, w, VLAYER "self_attn.projection", l);
        if (!s) s = need_linear(ctx, st, c->vis_ff, w, VLAYER "mlp.fc1", l);
        if (!s) s = need_linear(ctx, st, w, c->vis_ff, VLAYER "mlp.fc2", l);
    }
    return s ? s : need_norm(ctx, st, w, VIS "post_layernorm", 0);
}

static sd_status inspect_text(sd_context *ctx, const sd_safetensors *st, sd_blip_config *c)
{
    const sd_st_tensor *word, *pos, *ff;
    sd_status s = probe(ctx, st, &word, 2, TXT "embeddings.word_embeddings.weight", 0);
    if (!s)
        s = probe(ctx, st, &pos, 2, TXT "embeddings.position_embeddings.weight", 0);
    if (!s)
        s = probe(ctx, st, &ff, 2, TLAYER "intermediate.dense.weight", 0);
    if (s)
        return s;
    if (word->shape[0] < 2 || word->shape[0] > INT32_MAX || pos->shape[0] < 2 || pos->shape[0] > 4096 ||
        pos->shape[1] != word->shape[1])
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: BLIP text embeddings of unexpected shapes", sd_safetensors_path(st));
    c->vocab = (int)word->shape[0];
    c->txt_width = (int)word->shape[1];
    c->positions = (int)pos->shape[0];
    c->txt_ff = (int)ff->shape[0];
    c->txt_layers = count_layers(st, TLAYER "attention.self.query.weight");
    int64_t w = c->txt_width, v = c->vis_width;
    if (!(s = heads_ok(ctx, st, c->txt_width, "text")))
        s = need_norm(ctx, st, w, TXT "embeddings.LayerNorm", 0);
    static const char *const attn[2] = {TLAYER "attention.", TLAYER "crossattention."};
    for (int l = 0; !s && l < c->txt_layers; l++) {
        for (int a = 0; !s && a < 2; a++) {
            char f[160];
            snprintf(f, sizeof f, "%sself.query", attn[a]);
            s = need_linear(ctx, st, w, w, f, l);
            snprintf(f, sizeof f, "%sself.key", attn[a]);
            if (!s) s = need_linear(ctx, st, w, a ? v : w, f, l);
            snprintf(f, sizeof f, "%sself.value", attn[a]);
            if (!s) s = need_linear(ctx, st, w, a ? v : w, f, l);
            snprintf(f, sizeof f, "%soutput.dense", attn[a]);
            if (!s) s = need_linear(ctx, st, w, w, f, l);
            snprintf(f, sizeof f, "%soutput.LayerNorm", attn[a]);
            if (!s) s = need_norm(ctx, st, w, f, l);
        }
        if (!s) s = need_linear(ctx, st, c->txt_ff, w, TLAYER "intermediate.dense", l);
        if (!s) s = need_linear(ctx, st, w, c->txt_ff, TLAYER "output.dense", l);
        if (!s) s = need_norm(ctx, st, w, TLAYER "output.LayerNorm", l);
    }
    if (!s) s = need_linear(ctx, st, w, w, HEAD "transform.dense", 0);
    if (!s) s = need_norm(ctx, st, w, HEAD "transform.LayerNorm", 0);
    if (!s) s = need(ctx, st, c->vocab, 0, HEAD "bias", 0);
    if (!s && sd_safetensors_find(st, HEAD "decoder.weight"))
        s = need(ctx, st, c->vocab, w, HEAD "decoder.weight", 0);
    return s;
}

sd_status sd_blip_inspect(sd_context *ctx, const sd_safetensors *st, sd_blip_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    sd_status s = inspect_vision(ctx, st, cfg);
    return s ? s : inspect_text(ctx, st, cfg);
}

sd_status sd_blip_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_blip **out)
{
    *out = NULL;
    sd_blip *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    m->st = st;
    m->decoder = sd_safetensors_find(st, HEAD "decoder.weight") ? HEAD "decoder.weight"
                                                                : TXT "embeddings.word_embeddings.weight";
    sd_status s = sd_blip_inspect(cl->ctx, st, &m->cfg);
    if (!s)
        s = sd_weights_new(cl, st, "", weight_dtype, &m->w);
    if (s) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_blip_free(sd_blip *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    free(m);
}

const sd_blip_config *sd_blip_config_of(const sd_blip *m)
{
    return &m->cfg;
}

/* ---- building blocks ---- */

static sd_status upload(sd_cl *cl, const float *host, int ndim, const int64_t *shape, sd_dtensor **out)
{
    sd_status s = sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return s;
}

/* *x becomes y (the old *x is freed) when s is SD_OK; returns s. */
static sd_status replace(sd_status s, sd_dtensor **x, sd_dtensor *y)
{
    if (s)
        return s;
    sd_dtensor_free(*x);
    *x = y;
    return SD_OK;
}

/* The tensors <fmt % l>.weight and <fmt % l>.bias. */
static sd_status weight_bias(sd_blip *m, const char *fmt, int l, const sd_dtensor **w, const sd_dtensor **b)
{
    char base[160], name[200];
    snprintf(base, sizeof base, fmt, l);
    snprintf(name, sizeof name, "%s.weight", base);
    sd_status s = sd_weights_get(m->w, name, w);
    snprintf(name, sizeof name, "%s.bias", base);
    return s ? s : sd_weights_get(m->w, name, b);
}

/* The Linear layer <fmt % l> applied to x. */
static sd_status linear(sd_blip *m, const sd_dtensor *x, sd_act act, sd_dtensor **out, const char *fmt, int l)
{
    const sd_dtensor *w, *b;
    sd_status s = weight_bias(m, fmt, l, &w, &b);
    return s ? s : sd_op_linear(m->cl, x, w, b, act, out);
}

static sd_status layer_norm(sd_blip *m, const sd_dtensor *x, float eps, sd_dtensor **out, const char *fmt, int l)
{
    const sd_dtensor *g, *b;
    sd_status s = weight_bias(m, fmt, l, &g, &b);
    return s ? s : sd_op_layer_norm(m->cl, x, eps, g, b, out);
}

/* *x += y; frees y. */
static sd_status add_into(sd_blip *m, sd_dtensor **x, sd_dtensor *y)
{
    sd_dtensor *sum = NULL;
    sd_status s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, y, &sum);
    sd_dtensor_free(y);
    return replace(s, x, sum);
}

/* ---- vision tower ---- */

sd_status sd_blip_preprocess(sd_cl *cl, const float *rgb, int64_t h, int64_t w, int size, float *pixels)
{
    int64_t shape[4] = {1, h, w, 3};
    sd_dtensor *x = NULL, *y = NULL;
    size_t n = (size_t)size * (size_t)size;
    float *host = malloc(n * 3 * sizeof *host);
    sd_status s = host ? upload(cl, rgb, 4, shape, &x) : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = sd_op_resize(cl, x, size, size, SD_RESIZE_BICUBIC, &y);
    if (!s)
        s = sd_dtensor_download(y, host);
    for (size_t i = 0; !s && i < n; i++)
        for (int c = 0; c < 3; c++)
            pixels[(size_t)c * n + i] = (host[i * 3 + (size_t)c] - clip_mean[c]) / clip_std[c];
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    free(host);
    return s;
}

/* One pre-LayerNorm ViT block on *x [1, N, W]. */
static sd_status vision_block(sd_blip *m, int l, sd_dtensor **x)
{
    int64_t w = m->cfg.vis_width;
    sd_dtensor *h = NULL, *all = NULL, *q = NULL, *k = NULL, *v = NULL, *a = NULL, *o = NULL;
    sd_status s = layer_norm(m, *x, VIS_EPS, &h, VLAYER "layer_norm1", l);
    if (!s) s = linear(m, h, SD_ACT_NONE, &all, VLAYER "self_attn.qkv", l);
    if (!s) s = sd_op_slice(m->cl, all, 2, 0, w, &q);
    if (!s) s = sd_op_slice(m->cl, all, 2, w, w, &k);
    if (!s) s = sd_op_slice(m->cl, all, 2, 2 * w, w, &v);
    if (!s) s = sd_op_attention(m->cl, q, k, v, (int)(w / SD_BLIP_HEAD_DIM), NULL, &a);
    if (!s) s = linear(m, a, SD_ACT_NONE, &o, VLAYER "self_attn.projection", l);
    if (!s) s = add_into(m, x, o), o = NULL;
    sd_dtensor_free(h), h = NULL;
    sd_dtensor_free(a), a = NULL;
    if (!s) s = layer_norm(m, *x, VIS_EPS, &h, VLAYER "layer_norm2", l);
    if (!s) s = linear(m, h, SD_ACT_GELU, &a, VLAYER "mlp.fc1", l);
    if (!s) s = linear(m, a, SD_ACT_NONE, &o, VLAYER "mlp.fc2", l);
    if (!s) s = add_into(m, x, o), o = NULL;
    sd_dtensor_free(h);
    sd_dtensor_free(all);
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    sd_dtensor_free(a);
    sd_dtensor_free(o);
    return s;
}

/* [class token; patch embeddings] + position embeddings: [1, 1 + grid^2, W]. */
static sd_status vision_embed(sd_blip *m, const float *pixels, sd_dtensor **out)
{
    const sd_blip_config *c = &m->cfg;
    int64_t size = c->image_size, grid = size / c->patch, w = c->vis_width;
    int64_t shape[4] = {1, 3, size, size}, tokens[3] = {1, w, grid * grid};
    const sd_dtensor *pw, *pb, *cls, *pos;
    sd_dtensor *x = NULL, *p = NULL, *t = NULL, *cat = NULL;
    sd_conv2d_params conv = {.stride_h = c->patch, .stride_w = c->patch};
    sd_status s = upload(m->cl, pixels, 4, shape, &x);
    if (!s) s = sd_weights_get(m->w, VIS "embeddings.patch_embedding.weight", &pw);
    if (!s) s = sd_weights_get(m->w, VIS "embeddings.patch_embedding.bias", &pb);
    if (!s) s = sd_weights_get_f32(m->w, VIS "embeddings.class_embedding", &cls);
    if (!s) s = sd_weights_get_f32(m->w, VIS "embeddings.position_embedding", &pos);
    if (!s) s = sd_op_conv2d(m->cl, x, pw, pb, &conv, &p);
    if (!s) s = sd_dtensor_reshape(p, 3, tokens);
    if (!s) s = sd_op_transpose(m->cl, p, NULL, &t);
    if (!s) s = sd_op_concat(m->cl, cls, t, 1, &cat);
    if (!s) s = sd_op_binary(m->cl, SD_BINARY_ADD, cat, pos, out);
    sd_dtensor_free(x);
    sd_dtensor_free(p);
    sd_dtensor_free(t);
    sd_dtensor_free(cat);
    return s;
}

sd_status sd_blip_encode_image(sd_blip *m, const float *pixels, sd_dtensor **out)
{
    sd_dtensor *x = NULL;
    *out = NULL;
    sd_status s = vision_embed(m, pixels, &x);
    for (int l = 0; !s && l < m->cfg.vis_layers; l++)
        s = vision_block(m, l, &x);
    if (!s)
        s = layer_norm(m, x, VIS_EPS, out, VIS "post_layernorm", 0);
    sd_dtensor_free(x);
    if (s)
        sd_error_prefix(m->cl->ctx, "BLIP vision tower");
    return s;
}

/* ---- text decoder ---- */

typedef struct decoder {
    sd_blip *m;
    int batch;
    sd_dtensor **key, **value; /* per layer: cross-attention keys and values [batch, N, txt_width] */
    sd_dtensor **past_key, **past_value; /* per layer: self-attention cache [batch, len, txt_width] */
    int len;                             /* tokens in the cache */
} decoder;

static void decoder_free(decoder *d)
{
    for (int l = 0; d->key && l < d->m->cfg.txt_layers; l++) {
        sd_dtensor_free(d->key[l]);
        sd_dtensor_free(d->value[l]);
    }
    for (int l = 0; d->past_key && l < d->m->cfg.txt_layers; l++) {
        sd_dtensor_free(d->past_key[l]);
        sd_dtensor_free(d->past_value[l]);
    }
    free(d->key);
    free(d->value);
    free(d->past_key);
    free(d->past_value);
}

/* The cross-attention keys and values of image [1, N, vis_width] for `batch` sequences. */
static sd_status decoder_init(decoder *d, sd_blip *m, const sd_dtensor *image, int batch)
{
    const sd_blip_config *c = &m->cfg;
    *d = (decoder){.m = m, .batch = batch};
    if (image->ndim != 3 || image->shape[0] != 1 || image->shape[2] != c->vis_width)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "BLIP: image features are not [1, N, %d]", c->vis_width);
    size_t one = (size_t)image->shape[1] * (size_t)c->vis_width;
    float *host = malloc(one * (size_t)batch * sizeof *host);
    d->key = calloc((size_t)c->txt_layers, sizeof *d->key);
    d->value = calloc((size_t)c->txt_layers, sizeof *d->value);
    d->past_key = calloc((size_t)c->txt_layers, sizeof *d->past_key);
    d->past_value = calloc((size_t)c->txt_layers, sizeof *d->past_value);
    sd_dtensor *tiled = NULL;
    sd_status s = host && d->key && d->value && d->past_key && d->past_value ? sd_dtensor_download(image, host)
                                             : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int b = 1; !s && b < batch; b++)
        memcpy(host + one * (size_t)b, host, one * sizeof *host);
    int64_t shape[3] = {batch, image->shape[1], c->vis_width};
    if (!s)
        s = upload(m->cl, host, 3, shape, &tiled);
    for (int l = 0; !s && l < c->txt_layers; l++) {
        s = linear(m, tiled, SD_ACT_NONE, &d->key[l], TLAYER "crossattention.self.key", l);
        if (!s)
            s = linear(m, tiled, SD_ACT_NONE, &d->value[l], TLAYER "crossattention.self.value", l);
    }
    free(host);
    sd_dtensor_free(tiled);
    if (s)
        decoder_free(d);
    return s;
}

/* Word + position embeddings of the newest token of ids [batch, len] (position len - 1), then
 * the embeddings' LayerNorm: [batch, 1, txt_width]. */
static sd_status text_embed(decoder *d, const int32_t *ids, int len, sd_dtensor **out)
{
    sd_blip *m = d->m;
    size_t w = (size_t)m->cfg.txt_width;
    const sd_st_tensor *word = sd_weights_info(m->w, TXT "embeddings.word_embeddings.weight");
    const sd_st_tensor *pos = sd_weights_info(m->w, TXT "embeddings.position_embeddings.weight");
    float *host = malloc((size_t)d->batch * w * sizeof *host), *row = malloc(w * sizeof *row);
    sd_status s = host && row ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int b = 0, p = len - 1; !s && b < d->batch; b++) {
        float *dst = host + (size_t)b * w;
        int32_t id = ids[(size_t)b * (size_t)len + (size_t)p];
        if (id < 0 || id >= m->cfg.vocab)
            s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "BLIP: token id %d outside the vocabulary of %d", id,
                             m->cfg.vocab);
        if (!s)
            s = sd_safetensors_read_f32_range(m->cl->ctx, m->st, word, (size_t)id * w, w, dst);
        if (!s)
            s = sd_safetensors_read_f32_range(m->cl->ctx, m->st, pos, (size_t)p * w, w, row);
        for (size_t i = 0; !s && i < w; i++)
            dst[i] += row[i];
    }
    int64_t shape[3] = {d->batch, 1, (int64_t)w};
    sd_dtensor *x = NULL;
    if (!s)
        s = upload(m->cl, host, 3, shape, &x);
    if (!s)
        s = layer_norm(m, x, TXT_EPS, out, TXT "embeddings.LayerNorm", 0);
    sd_dtensor_free(x);
    free(host);
    free(row);
    return s;
}

/* *cache = [*cache; y] along the sequence (y itself when the cache is empty); frees y. */
static sd_status append(sd_cl *cl, sd_dtensor **cache, sd_dtensor *y)
{
    if (!*cache) {
        *cache = y;
        return SD_OK;
    }
    sd_dtensor *cat = NULL;
    sd_status s = sd_op_concat(cl, *cache, y, 1, &cat);
    sd_dtensor_free(y);
    return replace(s, cache, cat);
}

/* A BERT attention sub-layer on the newest token x [batch, 1, W]: x = LN(x + dense(attention(
 * query(x), k, v))). Self-attention appends x's key and value to layer l's cache and attends to
 * the whole cache (every earlier token: the causal mask needs no tensor); cross-attention takes
 * the image's keys and values of layer l. */
static sd_status attention(decoder *d, int l, bool cross, sd_dtensor **x)
{
    sd_blip *m = d->m;
    const char *base = cross ? TLAYER "crossattention." : TLAYER "attention.";
    char f[160];
    sd_dtensor *q = NULL, *k = NULL, *v = NULL, *a = NULL, *o = NULL, *y = NULL;
    snprintf(f, sizeof f, "%sself.query", base);
    sd_status s = linear(m, *x, SD_ACT_NONE, &q, f, l);
    if (!s && !cross) {
        snprintf(f, sizeof f, "%sself.key", base);
        s = linear(m, *x, SD_ACT_NONE, &k, f, l);
        snprintf(f, sizeof f, "%sself.value", base);
        if (!s)
            s = linear(m, *x, SD_ACT_NONE, &v, f, l);
        if (!s)
            s = append(m->cl, &d->past_key[l], k), k = NULL;
        if (!s)
            s = append(m->cl, &d->past_value[l], v), v = NULL;
    }
    int heads = m->cfg.txt_width / SD_BLIP_HEAD_DIM;
    if (!s)
        s = sd_op_attention(m->cl, q, cross ? d->key[l] : d->past_key[l], cross ? d->value[l] : d->past_value[l],
                            heads, NULL, &a);
    snprintf(f, sizeof f, "%soutput.dense", base);
    if (!s) s = linear(m, a, SD_ACT_NONE, &o, f, l);
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    sd_dtensor_free(a);
    if (!s) s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, o, &y);
    sd_dtensor_free(o);
    snprintf(f, sizeof f, "%soutput.LayerNorm", base);
    sd_dtensor *n = NULL;
    if (!s) s = layer_norm(m, y, TXT_EPS, &n, f, l);
    sd_dtensor_free(y);
    return replace(s, x, n);
}

/* x = LN(x + output.dense(gelu(intermediate.dense(x)))). */
static sd_status feed_forward(decoder *d, int l, sd_dtensor **x)
{
    sd_blip *m = d->m;
    sd_dtensor *h = NULL, *o = NULL, *y = NULL, *n = NULL;
    sd_status s = linear(m, *x, SD_ACT_GELU, &h, TLAYER "intermediate.dense", l);
    if (!s) s = linear(m, h, SD_ACT_NONE, &o, TLAYER "output.dense", l);
    if (!s) s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, o, &y);
    if (!s) s = layer_norm(m, y, TXT_EPS, &n, TLAYER "output.LayerNorm", l);
    sd_dtensor_free(h);
    sd_dtensor_free(o);
    sd_dtensor_free(y);
    return replace(s, x, n);
}

/* The next-token logits [batch, vocab] of ids [batch, len], whose first len - 1 tokens are in
 * the cache (which then holds len). */
static sd_status decoder_logits(decoder *d, const int32_t *ids, int len, float *logits)
{
    sd_blip *m = d->m;
    sd_dtensor *x = NULL, *t = NULL, *n = NULL, *out = NULL;
    const sd_dtensor *dw, *db;
    if (d->len != len - 1)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "BLIP: decoder cache of %d tokens, sequence of %d", d->len, len);
    sd_status s = text_embed(d, ids, len, &x);
    for (int l = 0; !s && l < m->cfg.txt_layers; l++) {
        s = attention(d, l, false, &x);
        if (!s) s = attention(d, l, true, &x);
        if (!s) s = feed_forward(d, l, &x);
    }
    if (!s) d->len = len;
    if (!s) s = linear(m, x, SD_ACT_GELU, &t, HEAD "transform.dense", 0);
    if (!s) s = layer_norm(m, t, TXT_EPS, &n, HEAD "transform.LayerNorm", 0);
    if (!s) s = sd_weights_get(m->w, m->decoder, &dw);
    if (!s) s = sd_weights_get(m->w, HEAD "bias", &db);
    if (!s) s = sd_op_linear(m->cl, n, dw, db, SD_ACT_NONE, &out);
    if (!s) s = sd_dtensor_download(out, logits);
    sd_dtensor_free(x);
    sd_dtensor_free(t);
    sd_dtensor_free(n);
    sd_dtensor_free(out);
    return s;
}

/* Row b of *t [batch, len, W] becomes its old row from[b]. */
static sd_status reorder_rows(sd_cl *cl, sd_dtensor **t, const int *from)
{
    int64_t batch = (*t)->shape[0];
    size_t row = (size_t)(*t)->shape[1] * (size_t)(*t)->shape[2];
    float *old = malloc((size_t)batch * row * sizeof *old), *neu = malloc((size_t)batch * row * sizeof *neu);
    sd_dtensor *y = NULL;
    sd_status s = old && neu ? sd_dtensor_download(*t, old) : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t b = 0; !s && b < batch; b++)
        memcpy(neu + (size_t)b * row, old + (size_t)from[b] * row, row * sizeof *neu);
    if (!s)
        s = upload(cl, neu, 3, (*t)->shape, &y);
    free(old);
    free(neu);
    return replace(s, t, y);
}

/* The cache of beam b becomes that of beam from[b] (beam search keeping the beams it chose). */
static sd_status decoder_reorder(decoder *d, const int *from)
{
    sd_status s = SD_OK;
    bool same = true;
    for (int b = 0; b < d->batch; b++)
        same = same && from[b] == b;
    for (int l = 0; !s && !same && l < d->m->cfg.txt_layers && d->past_key[l]; l++) {
        s = reorder_rows(d->m->cl, &d->past_key[l], from);
        if (!s)
            s = reorder_rows(d->m->cl, &d->past_value[l], from);
    }
    return s;
}

/* ---- generation ---- */

/* transformers' logits processors in generate()'s order: the repetition penalty on every
 * distinct id of the sequence (scores below 0 multiplied, others divided), then the end token forbidden while
 * the sequence is shorter than min_length. */
static void process(float *scores, int vocab, const int32_t *seq, int len, const sd_blip_generate_params *p)
{
    for (int i = 0; p->repetition_penalty != 1.0f && i < len; i++) {
        bool seen = false; /* once per distinct id, as transformers' gather and scatter */
        for (int j = 0; j < i && !seen; j++)
            seen = seq[j] == seq[i];
        float *v = &scores[seq[i]];
        if (!seen)
            *v = *v < 0 ? *v * p->repetition_penalty : *v / p->repetition_penalty;
    }
    if (len < p->min_length && p->eos >= 0 && p->eos < vocab)
        scores[p->eos] = NEG_INF;
}

static void log_softmax(float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    float lse = mx + (float)log(sum);
    for (int i = 0; i < n; i++)
        x[i] -= lse;
}

static sd_status greedy(decoder *d, const sd_blip_generate_params *p, float *logits, int32_t *ids, int *n,
                        sd_status (*progress)(void *, int, int), void *user)
{
    int vocab = d->m->cfg.vocab, len = 1;
    ids[0] = p->bos;
    sd_status s = SD_OK;
    while (!s && len < p->max_length) {
        s = decoder_logits(d, ids, len, logits);
        if (s)
            break;
        process(logits, vocab, ids, len, p);
        int best = 0;
        for (int i = 1; i < vocab; i++)
            best = logits[i] > logits[best] ? i : best;
        ids[len++] = best;
        if (progress)
            s = progress(user, len - 1, p->max_length - 1);
        if (best == p->eos)
            break;
    }
    *n = len;
    return s;
}

typedef struct candidate {
    float score;
    int beam, token;
} candidate;

static int by_score_desc(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    return (x->score < y->score) - (x->score > y->score);
}

/* Beam search as transformers' _beam_search with one sequence: at each step the 2 * beams best
 * continuations of all running beams; the best `beams` that did not finish keep running; those
 * among the first `beams` that finished (end token or max_length) join the finished set with
 * their score divided by their generated length; stop when every continuation finished or
 * no running beam can beat the worst finished one. */
static sd_status beam_search(decoder *d, const sd_blip_generate_params *p, float *logits, int32_t *ids, int *n,
                             sd_status (*progress)(void *, int, int), void *user)
{
    int nb = p->num_beams, k = 2 * nb, vocab = d->m->cfg.vocab, max = p->max_length;
    size_t cells = (size_t)nb * (size_t)max;
    int32_t *run = calloc(cells, sizeof *run), *next = calloc(cells, sizeof *next);
    int32_t *done = calloc(cells, sizeof *done), *packed = calloc(cells, sizeof *packed);
    float *run_score = malloc((size_t)nb * sizeof *run_score), *done_score = malloc((size_t)nb * sizeof *done_score);
    int *done_len = calloc((size_t)nb, sizeof *done_len);
    bool *finished = calloc((size_t)nb, sizeof *finished);
    candidate *top = malloc((size_t)k * sizeof *top), *all = malloc((size_t)nb * (size_t)vocab * sizeof *all);
    sd_status s = run && next && done && packed && run_score && done_score && done_len && finished && top && all
                      ? SD_OK
                      : sd_set_error(d->m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int b = 0; !s && b < nb; b++) {
        run[(size_t)b * (size_t)max] = p->bos;
        run_score[b] = b ? BEAM_NONE : 0.0f;
        done_score[b] = BEAM_NONE;
    }
    bool improvable = true;
    for (int len = 1; !s && len < max;) {
        for (int b = 0; b < nb; b++) /* rows `max` apart -> `len` apart */
            memcpy(packed + (size_t)b * (size_t)len, run + (size_t)b * (size_t)max, (size_t)len * sizeof *packed);
        if ((s = decoder_logits(d, packed, len, logits)))
            break;
        size_t c = 0;
        for (int b = 0; b < nb; b++) {
            float *row = logits + (size_t)b * (size_t)vocab;
            log_softmax(row, vocab);
            process(row, vocab, run + (size_t)b * (size_t)max, len, p);
            for (int v = 0; v < vocab; v++)
                all[c++] = (candidate){row[v] + run_score[b], b, v};
        }
        qsort(all, c, sizeof *all, by_score_desc);
        memcpy(top, all, (size_t)k * sizeof *top);
        bool hit[64], all_hit = true;
        for (int i = 0; i < k; i++) {
            hit[i] = top[i].token == p->eos || len + 1 >= max;
            all_hit = all_hit && hit[i];
        }
        /* finished beams: merge the new ones (first nb only) with the kept ones, best first */
        for (int i = 0; i < nb && improvable; i++) {
            if (!hit[i])
                continue;
            float score = top[i].score / (float)len; /* generated length len + 1 - 1 (the start token) */
            int worst = 0;
            for (int b = 1; b < nb; b++)
                worst = done_score[b] < done_score[worst] ? b : worst;
            if (score <= done_score[worst])
                continue;
            memcpy(done + (size_t)worst * (size_t)max, run + (size_t)top[i].beam * (size_t)max, (size_t)len * sizeof *done);
            done[(size_t)worst * (size_t)max + (size_t)len] = top[i].token;
            done_score[worst] = score;
            done_len[worst] = len + 1;
            finished[worst] = true;
        }
        /* running beams: the best nb continuations that did not finish (an empty slot keeps
         * beam 0's cache under the score of no beam) */
        int kept = 0, from[32];
        for (int i = 0; i < k && kept < nb; i++) {
            if (hit[i])
                continue;
            int32_t *dst = next + (size_t)kept * (size_t)max;
            memcpy(dst, run + (size_t)top[i].beam * (size_t)max, (size_t)len * sizeof *dst);
            dst[len] = top[i].token;
            from[kept] = top[i].beam;
            run_score[kept++] = top[i].score;
        }
        for (; kept < nb; kept++)
            run_score[kept] = BEAM_NONE, from[kept] = 0;
        if ((s = decoder_reorder(d, from)))
            break;
        int32_t *t = run;
        run = next;
        next = t;
        len++;
        /* transformers' heuristic (early_stopping false): the best running beam at its current
         * length against the worst finished one, once every slot holds a finished beam */
        bool all_finished = true;
        float worst = done_score[0];
        for (int b = 0; b < nb; b++) {
            all_finished = all_finished && finished[b];
            worst = done_score[b] < worst ? done_score[b] : worst;
        }
        improvable = improvable && (!all_finished || run_score[0] / (float)(len - 1) > worst);
        if (progress)
            s = progress(user, len - 1, max - 1);
        if (!improvable || all_hit)
            break;
    }
    int best = -1;
    for (int b = 0; b < nb; b++)
        if (finished[b] && (best < 0 || done_score[b] > done_score[best]))
            best = b;
    if (!s && best < 0)
        s = sd_set_error(d->m->cl->ctx, SD_ERR_INVALID, "BLIP: beam search finished no caption");
    if (!s) {
        memcpy(ids, done + (size_t)best * (size_t)max, (size_t)done_len[best] * sizeof *ids);
        *n = done_len[best];
    }
    free(run);
    free(next);
    free(done);
    free(packed);
    free(run_score);
    free(done_score);
    free(done_len);
    free(finished);
    free(top);
    free(all);
    return s;
}

sd_status sd_blip_generate(sd_blip *m, const sd_dtensor *image, const sd_blip_generate_params *p, int32_t *ids,
                           int *n, sd_status (*progress)(void *user, int step, int steps), void *user)
{
    *n = 0;
    if (p->num_beams < 1 || p->num_beams > 32 || p->max_length < 2 || p->max_length > m->cfg.positions ||
        p->min_length < 0 || p->bos < 0 || p->bos >= m->cfg.vocab)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID,
                            "BLIP: num_beams %d (1..32), max_length %d (2..%d), min_length %d or start id %d out of range",
                            p->num_beams, p->max_length, m->cfg.positions, p->min_length, p->bos);
    decoder d;
    float *logits = malloc((size_t)p->num_beams * (size_t)m->cfg.vocab * sizeof *logits);
    sd_status s = logits ? decoder_init(&d, m, image, p->num_beams) : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) {
        s = p->num_beams == 1 ? greedy(&d, p, logits, ids, n, progress, user)
                              : beam_search(&d, p, logits, ids, n, progress, user);
        decoder_free(&d);
    }
    free(logits);
    if (s && s != SD_ERR_INTERRUPTED)
        sd_error_prefix(m->cl->ctx, "BLIP text decoder");
    return s;
}
