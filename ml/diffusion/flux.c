/* The FLUX transformer on the op library. See flux.h. */
#include "ml/diffusion/flux.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-6f          /* LayerNorm and RMSNorm epsilon */
#define TIME_DIM 256       /* sinusoidal embedding width of the time and guidance MLPs */
#define TIME_FACTOR 1000.0f
#define MAX_TEMPS 16

struct sd_flux {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_flux_config cfg;
    sd_weights *w;
    uint64_t serial;
};

/* ---- configuration ---- */

static const sd_st_tensor *findf(const sd_safetensors *st, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const sd_st_tensor *findf(const sd_safetensors *st, const char *prefix, const char *fmt, ...)
{
    char name[256];
    int k = snprintf(name, sizeof name, "%s", prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + k, sizeof name - (size_t)k, fmt, ap);
    va_end(ap);
    return sd_safetensors_find(st, name);
}

bool sd_flux_present(const sd_safetensors *st, const char *prefix)
{
    return findf(st, prefix, "double_blocks.0.img_attn.qkv.weight") != NULL;
}

/* Requires <prefix><name> with shape [d0] (d1 < 0) or [d0, d1]. */
static sd_status need(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *name, int64_t d0,
                      int64_t d1)
{
    const sd_st_tensor *t = findf(st, prefix, "%s", name);
    int ndim = d1 < 0 ? 1 : 2;
    if (!t)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s%s' is missing (FLUX transformer)",
                            sd_safetensors_path(st), prefix, name);
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1))
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: tensor '%s%s' has shape [%lld%s%lld] (%d dimensions), the FLUX transformer needs "
                            "[%lld%s%lld]",
                            sd_safetensors_path(st), prefix, name, (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                            t->ndim > 1 ? (long long)t->shape[1] : 0LL, t->ndim, (long long)d0,
                            ndim > 1 ? ", " : "", ndim > 1 ? (long long)d1 : 0LL);
    return SD_OK;
}

/* A Linear layer <name>.weight [rows, cols] with its bias [rows]. */
static sd_status need_linear(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *name,
                             int64_t rows, int64_t cols)
{
    char w[200], b[200];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    sd_status s = need(ctx, st, prefix, w, rows, cols);
    return s ? s : need(ctx, st, prefix, b, rows, -1);
}

/* The first dimension (dim 0) or second (dim 1) of a 2-D tensor, or -1 when absent or not 2-D. */
static int64_t dim_of(const sd_safetensors *st, const char *prefix, const char *name, int dim)
{
    const sd_st_tensor *t = findf(st, prefix, "%s", name);
    return t && t->ndim == 2 && t->shape[dim] > 0 && t->shape[dim] <= INT32_MAX ? t->shape[dim] : -1;
}

/* One tensor a block needs: <block><suffix>, a Linear (weight [rows, cols] and bias) or, with
 * cols < 0, a norm scale [rows]. */
typedef struct block_tensor {
    const char *suffix;
    int64_t rows, cols;
} block_tensor;

static sd_status check_block(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *block,
                             const block_tensor *list, int n)
{
    char name[200];
    sd_status s = SD_OK;
    for (int k = 0; !s && k < n; k++) {
        snprintf(name, sizeof name, "%s%s", block, list[k].suffix);
        s = list[k].cols < 0 ? need(ctx, st, prefix, name, list[k].rows, -1)
                             : need_linear(ctx, st, prefix, name, list[k].rows, list[k].cols);
    }
    return s;
}

static sd_status check_double(sd_context *ctx, const sd_safetensors *st, const char *prefix,
                              const sd_flux_config *c, int i)
{
    int64_t h = c->hidden, m = c->mlp_hidden, d = c->head_dim;
    const block_tensor list[] = {{"mod.lin", 6 * h, h},     {"attn.qkv", 3 * h, h},
                                 {"attn.proj", h, h},       {"attn.norm.query_norm.scale", d, -1},
                                 {"attn.norm.key_norm.scale", d, -1}, {"mlp.0", m, h},
                                 {"mlp.2", h, m}};
    char block[64];
    sd_status s = SD_OK;
    for (int k = 0; !s && k < 2; k++) {
        snprintf(block, sizeof block, "double_blocks.%d.%s_", i, k ? "txt" : "img");
        s = check_block(ctx, st, prefix, block, list, (int)(sizeof list / sizeof list[0]));
    }
    return s;
}

static sd_status check_single(sd_context *ctx, const sd_safetensors *st, const char *prefix,
                              const sd_flux_config *c, int i)
{
    int64_t h = c->hidden, m = c->mlp_hidden, d = c->head_dim;
    const block_tensor list[] = {{"modulation.lin", 3 * h, h}, {"linear1", 3 * h + m, h}, {"linear2", h, h + m},
                                 {"norm.query_norm.scale", d, -1}, {"norm.key_norm.scale", d, -1}};
    char block[64];
    snprintf(block, sizeof block, "single_blocks.%d.", i);
    return check_block(ctx, st, prefix, block, list, (int)(sizeof list / sizeof list[0]));
}

/* An MLPEmbedder <name>.in_layer [h, in], <name>.out_layer [h, h]. */
static sd_status check_mlp_embedder(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *name,
                                    int64_t in, int64_t h)
{
    char a[96], b[96];
    snprintf(a, sizeof a, "%s.in_layer", name);
    snprintf(b, sizeof b, "%s.out_layer", name);
    sd_status s = need_linear(ctx, st, prefix, a, h, in);
    return s ? s : need_linear(ctx, st, prefix, b, h, h);
}

sd_status sd_flux_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_flux_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *path = sd_safetensors_path(st);
    int64_t hidden = dim_of(st, prefix, "img_in.weight", 0), in = dim_of(st, prefix, "img_in.weight", 1);
    const sd_st_tensor *qn = findf(st, prefix, "double_blocks.0.img_attn.norm.query_norm.scale");
    int64_t mlp = dim_of(st, prefix, "double_blocks.0.img_mlp.0.weight", 0);
    int64_t ctxw = dim_of(st, prefix, "txt_in.weight", 1), vec = dim_of(st, prefix, "vector_in.in_layer.weight", 1);
    int64_t out = dim_of(st, prefix, "final_layer.linear.weight", 0);
    const char *names[] = {"img_in.weight", "double_blocks.0.img_attn.norm.query_norm.scale",
                           "double_blocks.0.img_mlp.0.weight", "txt_in.weight", "vector_in.in_layer.weight",
                           "final_layer.linear.weight"};
    int64_t got[] = {hidden, qn && qn->ndim == 1 ? qn->shape[0] : -1, mlp, ctxw, vec, out};
    for (int i = 0; i < 6; i++)
        if (got[i] < 1)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s%s' is %s (FLUX transformer)", path, prefix, names[i],
                                findf(st, prefix, "%s", names[i]) ? "misshapen" : "missing");
    int64_t hd = got[1];
    if (in % (SD_FLUX_PATCH * SD_FLUX_PATCH) || out % (SD_FLUX_PATCH * SD_FLUX_PATCH) || hd % 32 || hd > 512 ||
        hidden % hd || hidden / hd > 64)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: FLUX transformer of width %lld, head width %lld, %lld input and %lld output features "
                            "is not one sdflow runs (head width a multiple of 32 up to 512, at most 64 heads)",
                            path, (long long)hidden, (long long)hd, (long long)in, (long long)out);
    cfg->hidden = (int)hidden;
    cfg->head_dim = (int)hd;
    cfg->heads = (int)(hidden / hd);
    cfg->axes_dim[0] = (int)hd / 8;
    cfg->axes_dim[1] = cfg->axes_dim[2] = (int)(7 * hd / 16);
    cfg->in_channels = (int)(in / 4);
    cfg->out_channels = (int)(out / 4);
    cfg->mlp_hidden = (int)mlp;
    cfg->context_dim = (int)ctxw;
    cfg->vec_dim = (int)vec;
    cfg->guidance = findf(st, prefix, "guidance_in.in_layer.weight") != NULL;
    while (findf(st, prefix, "double_blocks.%d.img_attn.qkv.weight", cfg->depth))
        cfg->depth++;
    while (findf(st, prefix, "single_blocks.%d.linear1.weight", cfg->depth_single))
        cfg->depth_single++;
    sd_status s = need_linear(ctx, st, prefix, "img_in", hidden, in);
    if (!s)
        s = need_linear(ctx, st, prefix, "txt_in", hidden, ctxw);
    if (!s)
        s = check_mlp_embedder(ctx, st, prefix, "time_in", TIME_DIM, hidden);
    if (!s)
        s = check_mlp_embedder(ctx, st, prefix, "vector_in", vec, hidden);
    if (!s && cfg->guidance)
        s = check_mlp_embedder(ctx, st, prefix, "guidance_in", TIME_DIM, hidden);
    for (int i = 0; !s && i < cfg->depth; i++)
        s = check_double(ctx, st, prefix, cfg, i);
    for (int i = 0; !s && i < cfg->depth_single; i++)
        s = check_single(ctx, st, prefix, cfg, i);
    if (!s)
        s = need_linear(ctx, st, prefix, "final_layer.adaLN_modulation.1", 2 * hidden, hidden);
    if (!s)
        s = need_linear(ctx, st, prefix, "final_layer.linear", out, hidden);
    return s;
}

/* ---- model ---- */

static atomic_uint_fast64_t next_serial = 1; /* sd_flux_serial's */

sd_status sd_flux_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype weight_dtype,
                      sd_flux **out)
{
    *out = NULL;
    sd_flux *f = calloc(1, sizeof *f);
    if (!f)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    f->serial = atomic_fetch_add(&next_serial, 1);
    f->cl = cl;
    f->st = st;
    sd_status s = sd_flux_inspect(cl->ctx, st, prefix, &f->cfg);
    if (!s)
        s = sd_weights_new(cl, st, prefix, weight_dtype, &f->w);
    if (s) {
        sd_flux_free(f);
        return s;
    }
    *out = f;
    return SD_OK;
}

sd_status sd_flux_new_patched(sd_flux *base, const sd_weight_patcher *patcher, sd_flux **out)
{
    *out = NULL;
    sd_flux *f = calloc(1, sizeof *f);
    if (!f)
        return sd_set_error(base->cl->ctx, SD_ERR_NOMEM, "out of memory");
    *f = (sd_flux){.cl = base->cl, .st = base->st, .cfg = base->cfg, .serial = atomic_fetch_add(&next_serial, 1)};
    sd_status s = sd_weights_new_patched(base->w, patcher, &f->w);
    if (s) {
        free(f);
        return s;
    }
    *out = f;
    return SD_OK;
}

void sd_flux_free(sd_flux *f)
{
    if (!f)
        return;
    sd_weights_free(f->w);
    free(f);
}

const sd_flux_config *sd_flux_config_of(const sd_flux *f)
{
    return &f->cfg;
}

sd_status sd_flux_weight(sd_flux *f, const char *name, const sd_dtensor **out)
{
    return sd_weights_get(f->w, name, out);
}

uint64_t sd_flux_serial(const sd_flux *f)
{
    return f->serial;
}

/* ---- building blocks ---- */

/* Temporaries of one function, freed together. */
typedef struct temps {
    sd_dtensor *t[MAX_TEMPS];
    int n;
} temps;

static sd_dtensor **tmp(temps *T)
{
    return &T->t[T->n++];
}

static void temps_free(temps *T)
{
    for (int i = 0; i < T->n; i++)
        sd_dtensor_free(T->t[i]);
    T->n = 0;
}

/* out = act(x W^T + b) for the Linear layer <name>.weight / <name>.bias. */
static sd_status linear(sd_flux *f, const sd_dtensor *x, const char *name, sd_act act, sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = sd_weights_getf_linear(f->w, &w, "%s.weight", name);
    if (!s)
        s = sd_weights_getf(f->w, &b, "%s.bias", name);
    return s ? s : sd_op_linear(f->cl, x, w, b, act, out);
}

/* An MLPEmbedder: out_layer(silu(in_layer(x))). */
static sd_status mlp_embedder(sd_flux *f, const sd_dtensor *x, const char *name, sd_dtensor **out)
{
    char a[96], b[96];
    sd_dtensor *h = NULL;
    snprintf(a, sizeof a, "%s.in_layer", name);
    snprintf(b, sizeof b, "%s.out_layer", name);
    sd_status s = linear(f, x, a, SD_ACT_SILU, &h);
    if (!s)
        s = linear(f, h, b, SD_ACT_NONE, out);
    sd_dtensor_free(h);
    return s;
}

/* The Linear <name> on silu(vec) [B, H], split into n chunks each reshaped to [B, 1, H]. */
static sd_status modulation(sd_flux *f, const sd_dtensor *vs, const char *name, int n, sd_dtensor **chunks)
{
    sd_dtensor *m = NULL;
    int64_t b = vs->shape[0], h = f->cfg.hidden, shape[3] = {b, 1, h};
    sd_status s = linear(f, vs, name, SD_ACT_NONE, &m);
    for (int i = 0; !s && i < n; i++)
        if (!(s = sd_op_slice(f->cl, m, 1, i * h, h, &chunks[i])))
            s = sd_dtensor_reshape(chunks[i], 3, shape);
    sd_dtensor_free(m);
    return s;
}

/* (1 + scale) * LayerNorm(x) + shift, the norm without affine parameters. */
static sd_status modulate(sd_flux *f, const sd_dtensor *x, const sd_dtensor *shift, const sd_dtensor *scale,
                          sd_dtensor **out)
{
    temps T = {0};
    sd_dtensor **n = tmp(&T), **s1 = tmp(&T), **p = tmp(&T);
    sd_status s = sd_op_layer_norm(f->cl, x, EPS, NULL, NULL, n);
    if (!s)
        s = sd_op_scale(f->cl, scale, 1.0f, 1.0f, s1);
    if (!s)
        s = sd_op_binary(f->cl, SD_BINARY_MUL, *n, *s1, p);
    if (!s)
        s = sd_op_binary(f->cl, SD_BINARY_ADD, *p, shift, out);
    temps_free(&T);
    return s;
}

/* *x += gate * y (gate [B, 1, H]); replaces *x. */
static sd_status gated_add(sd_flux *f, sd_dtensor **x, const sd_dtensor *gate, const sd_dtensor *y)
{
    sd_dtensor *g = NULL, *r = NULL;
    sd_status s = sd_op_binary(f->cl, SD_BINARY_MUL, gate, y, &g);
    if (!s && !(s = sd_op_binary(f->cl, SD_BINARY_ADD, *x, g, &r))) {
        sd_dtensor_free(*x);
        *x = r;
    }
    sd_dtensor_free(g);
    return s;
}

/* RMSNorm per head of x [B, L, heads * D] with scale [D]: a new tensor of x's shape. */
static sd_status head_norm(sd_flux *f, const sd_dtensor *x, const char *scale_name, sd_dtensor **out)
{
    const sd_dtensor *g;
    const sd_flux_config *c = &f->cfg;
    sd_dtensor view = *x;
    int64_t heads[4] = {x->shape[0], x->shape[1], c->heads, c->head_dim};
    sd_status s = sd_weights_get_f32(f->w, scale_name, &g);
    if (!s)
        s = sd_dtensor_reshape(&view, 4, heads);
    if (!s)
        s = sd_op_rms_norm(f->cl, &view, EPS, g, out);
    if (!s)
        s = sd_dtensor_reshape(*out, 3, x->shape);
    return s;
}

/* q, k, v from a fused projection qkv [B, L, 3H] (its first 3H features when wider), q and k
 * normalised with <norm>.query_norm / key_norm. */
static sd_status split_qkv(sd_flux *f, const sd_dtensor *qkv, const char *norm, sd_dtensor **q, sd_dtensor **k,
                           sd_dtensor **v)
{
    int64_t h = f->cfg.hidden;
    char qn[160], kn[160];
    sd_dtensor *rq = NULL, *rk = NULL;
    snprintf(qn, sizeof qn, "%s.query_norm.scale", norm);
    snprintf(kn, sizeof kn, "%s.key_norm.scale", norm);
    sd_status s = sd_op_slice(f->cl, qkv, 2, 0, h, &rq);
    if (!s)
        s = sd_op_slice(f->cl, qkv, 2, h, h, &rk);
    if (!s)
        s = sd_op_slice(f->cl, qkv, 2, 2 * h, h, v);
    if (!s)
        s = head_norm(f, rq, qn, q);
    if (!s)
        s = head_norm(f, rk, kn, k);
    sd_dtensor_free(rq);
    sd_dtensor_free(rk);
    return s;
}

/* Joint attention with RoPE on q and k and the key bias mask (NULL: none): [B, L, H] out. */
static sd_status attend(sd_flux *f, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                        const sd_dtensor *pe, const sd_dtensor *mask, sd_dtensor **out)
{
    sd_dtensor *rq = NULL, *rk = NULL;
    sd_status s = sd_op_rope(f->cl, q, pe, f->cfg.heads, &rq);
    if (!s)
        s = sd_op_rope(f->cl, k, pe, f->cfg.heads, &rk);
    if (!s)
        s = sd_op_attention(f->cl, rq, rk, v, f->cfg.heads, mask, out);
    sd_dtensor_free(rq);
    sd_dtensor_free(rk);
    return s;
}

/* One stream's half of a double block before attention: modulation chunks into mod[0..5]
 * (shift, scale, gate twice) and its normalised q, k, v. */
static sd_status double_pre(sd_flux *f, int i, const char *side, const sd_dtensor *x, const sd_dtensor *vs,
                            sd_dtensor **mod, sd_dtensor **q, sd_dtensor **k, sd_dtensor **v)
{
    char name[160], norm[160];
    sd_dtensor *m = NULL, *qkv = NULL;
    snprintf(name, sizeof name, "double_blocks.%d.%s_mod.lin", i, side);
    sd_status s = modulation(f, vs, name, 6, mod);
    snprintf(name, sizeof name, "double_blocks.%d.%s_attn.qkv", i, side);
    snprintf(norm, sizeof norm, "double_blocks.%d.%s_attn.norm", i, side);
    if (!s)
        s = modulate(f, x, mod[0], mod[1], &m);
    if (!s)
        s = linear(f, m, name, SD_ACT_NONE, &qkv);
    if (!s)
        s = split_qkv(f, qkv, norm, q, k, v);
    sd_dtensor_free(m);
    sd_dtensor_free(qkv);
    return s;
}

/* One stream's half of a double block after attention: x += gate1 proj(a);
 * x += gate2 mlp(modulate(x)). Replaces *x. */
static sd_status double_post(sd_flux *f, int i, const char *side, sd_dtensor **x, sd_dtensor *const *mod,
                             const sd_dtensor *a)
{
    char name[160];
    temps T = {0};
    sd_dtensor **p = tmp(&T), **m = tmp(&T), **h = tmp(&T), **y = tmp(&T);
    snprintf(name, sizeof name, "double_blocks.%d.%s_attn.proj", i, side);
    sd_status s = linear(f, a, name, SD_ACT_NONE, p);
    if (!s)
        s = gated_add(f, x, mod[2], *p);
    if (!s)
        s = modulate(f, *x, mod[3], mod[4], m);
    snprintf(name, sizeof name, "double_blocks.%d.%s_mlp.0", i, side);
    if (!s && !(s = linear(f, *m, name, SD_ACT_NONE, h)))
        s = sd_op_unary(f->cl, SD_UNARY_GELU_TANH, *h, y);
    snprintf(name, sizeof name, "double_blocks.%d.%s_mlp.2", i, side);
    sd_dtensor_free(*m);
    *m = NULL;
    if (!s)
        s = linear(f, *y, name, SD_ACT_NONE, m);
    if (!s)
        s = gated_add(f, x, mod[5], *m);
    temps_free(&T);
    return s;
}

static void free_all(sd_dtensor **t, int n)
{
    for (int i = 0; i < n; i++) {
        sd_dtensor_free(t[i]);
        t[i] = NULL;
    }
}

/* A double-stream block; replaces *img and *txt. */
static sd_status double_block(sd_flux *f, int i, sd_dtensor **img, sd_dtensor **txt, const sd_dtensor *vs,
                              const sd_dtensor *pe, const sd_dtensor *mask)
{
    sd_dtensor *im[6] = {0}, *tm[6] = {0}, *iq = NULL, *ik = NULL, *iv = NULL, *tq = NULL, *tk = NULL, *tv = NULL;
    sd_dtensor *q = NULL, *k = NULL, *v = NULL, *a = NULL, *ta = NULL, *ia = NULL;
    int64_t nt = (*txt)->shape[1], ni = (*img)->shape[1];
    sd_status s = double_pre(f, i, "img", *img, vs, im, &iq, &ik, &iv);
    if (!s)
        s = double_pre(f, i, "txt", *txt, vs, tm, &tq, &tk, &tv);
    if (!s)
        s = sd_op_concat(f->cl, tq, iq, 1, &q);
    if (!s)
        s = sd_op_concat(f->cl, tk, ik, 1, &k);
    if (!s)
        s = sd_op_concat(f->cl, tv, iv, 1, &v);
    if (!s)
        s = attend(f, q, k, v, pe, mask, &a);
    if (!s)
        s = sd_op_slice(f->cl, a, 1, 0, nt, &ta);
    if (!s)
        s = sd_op_slice(f->cl, a, 1, nt, ni, &ia);
    if (!s)
        s = double_post(f, i, "img", img, im, ia);
    if (!s)
        s = double_post(f, i, "txt", txt, tm, ta);
    sd_dtensor *rest[] = {iq, ik, iv, tq, tk, tv, q, k, v, a, ta, ia};
    free_all(rest, 12);
    free_all(im, 6);
    free_all(tm, 6);
    return s;
}

/* A single-stream block over x = [txt, img]; replaces *x. */
static sd_status single_block(sd_flux *f, int i, sd_dtensor **x, const sd_dtensor *vs, const sd_dtensor *pe,
                              const sd_dtensor *mask)
{
    const sd_flux_config *c = &f->cfg;
    char name[160];
    sd_dtensor *mod[3] = {0};
    temps T = {0};
    sd_dtensor **m = tmp(&T), **l1 = tmp(&T), **q = tmp(&T), **k = tmp(&T), **v = tmp(&T), **a = tmp(&T);
    sd_dtensor **mlp = tmp(&T), **g = tmp(&T), **cat = tmp(&T), **o = tmp(&T);
    snprintf(name, sizeof name, "single_blocks.%d.modulation.lin", i);
    sd_status s = modulation(f, vs, name, 3, mod);
    if (!s)
        s = modulate(f, *x, mod[0], mod[1], m);
    snprintf(name, sizeof name, "single_blocks.%d.linear1", i);
    if (!s)
        s = linear(f, *m, name, SD_ACT_NONE, l1);
    snprintf(name, sizeof name, "single_blocks.%d.norm", i);
    if (!s)
        s = split_qkv(f, *l1, name, q, k, v);
    if (!s)
        s = attend(f, *q, *k, *v, pe, mask, a);
    if (!s)
        s = sd_op_slice(f->cl, *l1, 2, 3 * (int64_t)c->hidden, c->mlp_hidden, mlp);
    if (!s)
        s = sd_op_unary(f->cl, SD_UNARY_GELU_TANH, *mlp, g);
    if (!s)
        s = sd_op_concat(f->cl, *a, *g, 2, cat);
    snprintf(name, sizeof name, "single_blocks.%d.linear2", i);
    if (!s)
        s = linear(f, *cat, name, SD_ACT_NONE, o);
    if (!s)
        s = gated_add(f, x, mod[2], *o);
    temps_free(&T);
    free_all(mod, 3);
    return s;
}

/* The final layer: linear((1 + scale) LayerNorm(x) + shift) with shift, scale from
 * adaLN_modulation.1(silu(vec)). */
static sd_status final_layer(sd_flux *f, const sd_dtensor *x, const sd_dtensor *vs, sd_dtensor **out)
{
    sd_dtensor *mod[2] = {0}, *m = NULL;
    sd_status s = modulation(f, vs, "final_layer.adaLN_modulation.1", 2, mod);
    if (!s)
        s = modulate(f, x, mod[0], mod[1], &m);
    if (!s)
        s = linear(f, m, "final_layer.linear", SD_ACT_NONE, out);
    sd_dtensor_free(m);
    free_all(mod, 2);
    return s;
}

/* ---- inputs and outputs ---- */

static sd_status upload_host(sd_cl *cl, int ndim, const int64_t *shape, const float *host, sd_dtensor **out)
{
    sd_status s = sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return s;
}

/* The RoPE table [ntxt + hp * wp, head_dim / 2, 2] of (cos, sin): text ids all zero, image id of
 * the patch at (row, column) = (0, row, column); per axis a pair j of axis width d turns by
 * pos / theta^(2j / d), in double precision as BFL's rope. */
static sd_status rope_table(sd_flux *f, int64_t ntxt, int64_t hp, int64_t wp, sd_dtensor **out)
{
    const sd_flux_config *c = &f->cfg;
    int64_t n = ntxt + hp * wp, half = c->head_dim / 2;
    float *pe = malloc((size_t)n * (size_t)half * 2 * sizeof *pe);
    if (!pe)
        return sd_set_error(f->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t t = 0; t < n; t++) {
        int64_t p = t - ntxt;
        double pos[3] = {0, p < 0 ? 0 : (double)(p / wp), p < 0 ? 0 : (double)(p % wp)};
        float *row = pe + (size_t)t * (size_t)half * 2;
        for (int a = 0, j0 = 0; a < 3; j0 += c->axes_dim[a] / 2, a++)
            for (int j = 0; j < c->axes_dim[a] / 2; j++) {
                double ang = pos[a] / pow(SD_FLUX_THETA, 2.0 * j / c->axes_dim[a]);
                row[(j0 + j) * 2] = (float)cos(ang);
                row[(j0 + j) * 2 + 1] = (float)sin(ang);
            }
    }
    int64_t shape[3] = {n, half, 2};
    sd_status s = upload_host(f->cl, 3, shape, pe, out);
    free(pe);
    return s;
}

/* Between x [B, C, h, w] on the host and [B, hp * wp, C * 4] tokens with features (c, ph, pw)
 * (ComfyUI's pad_to_patch_size and rearrange): to_tokens reads x padded circularly to even sizes,
 * otherwise the tokens are written back into x cropped to h x w. */
static void patch_copy(float *x, float *tok, int64_t b, int64_t ch, int64_t h, int64_t w, bool to_tokens)
{
    int64_t hp = (h + 1) / 2, wp = (w + 1) / 2;
    size_t o = 0;
    for (int64_t n = 0; n < b; n++)
        for (int64_t i = 0; i < hp; i++)
            for (int64_t j = 0; j < wp; j++)
                for (int64_t c = 0; c < ch; c++)
                    for (int64_t di = 0; di < 2; di++)
                        for (int64_t dj = 0; dj < 2; dj++, o++) {
                            int64_t y = 2 * i + di, xx = 2 * j + dj;
                            if (to_tokens)
                                tok[o] = x[((n * ch + c) * h + y % h) * w + xx % w];
                            else if (y < h && xx < w)
                                x[((n * ch + c) * h + y) * w + xx] = tok[o];
                        }
}

/* The modulation vector's SiLU: silu(time_in(emb(t)) + guidance_in(emb(g)) + vector_in(y)). */
static sd_status vector(sd_flux *f, int64_t b, const float *timesteps, const sd_dtensor *y, const float *guidance,
                        sd_dtensor **out)
{
    temps T = {0};
    sd_dtensor **tt = tmp(&T), **te = tmp(&T), **vec = tmp(&T), **g = tmp(&T), **ge = tmp(&T), **gv = tmp(&T);
    sd_dtensor **yv = tmp(&T), **sum = tmp(&T), **sum2 = tmp(&T);
    float *host = malloc((size_t)b * sizeof *host);
    if (!host)
        return sd_set_error(f->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < b; i++)
        host[i] = TIME_FACTOR * timesteps[i];
    sd_status s = upload_host(f->cl, 1, &b, host, tt);
    if (!s)
        s = sd_op_timestep_embedding(f->cl, *tt, TIME_DIM, 10000.0f, te);
    if (!s)
        s = mlp_embedder(f, *te, "time_in", vec);
    if (!s && f->cfg.guidance && guidance) {
        for (int64_t i = 0; i < b; i++)
            host[i] = TIME_FACTOR * guidance[i];
        if (!(s = upload_host(f->cl, 1, &b, host, g)) &&
            !(s = sd_op_timestep_embedding(f->cl, *g, TIME_DIM, 10000.0f, ge)) &&
            !(s = mlp_embedder(f, *ge, "guidance_in", gv)) &&
            !(s = sd_op_binary(f->cl, SD_BINARY_ADD, *vec, *gv, sum))) {
            sd_dtensor *t = *vec;
            *vec = *sum;
            *sum = t;
        }
    }
    if (!s)
        s = mlp_embedder(f, y, "vector_in", yv);
    if (!s)
        s = sd_op_binary(f->cl, SD_BINARY_ADD, *vec, *yv, sum2);
    if (!s)
        s = sd_op_unary(f->cl, SD_UNARY_SILU, *sum2, out);
    free(host);
    temps_free(&T);
    return s;
}

static sd_status check_inputs(sd_flux *f, const sd_dtensor *x, const sd_dtensor *context, const sd_dtensor *y)
{
    const sd_flux_config *c = &f->cfg;
    char dx[96], dc[96], dy[96];
    if (x->ndim != 4 || x->shape[1] != c->in_channels || context->ndim != 3 || context->shape[0] != x->shape[0] ||
        context->shape[2] != c->context_dim || !y || y->ndim != 2 || y->shape[0] != x->shape[0] ||
        y->shape[1] != c->vec_dim || context->shape[1] < 1)
        return sd_set_error(f->cl->ctx, SD_ERR_INVALID,
                            "%s: the FLUX transformer needs a [B, %d, h, w] latent, [B, tokens, %d] context and "
                            "[B, %d] pooled vector; got %s, %s, %s",
                            sd_safetensors_path(f->st), c->in_channels, c->context_dim, c->vec_dim,
                            sd_dtensor_describe(x, dx, sizeof dx), sd_dtensor_describe(context, dc, sizeof dc),
                            y ? sd_dtensor_describe(y, dy, sizeof dy) : "none");
    return SD_OK;
}

sd_status sd_flux_forward(sd_flux *f, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                          const sd_dtensor *y, const float *guidance, sd_dtensor **out)
{
    return sd_flux_forward_biased(f, x, timesteps, context, y, guidance, NULL, out);
}

/* The attention mask [1, ntxt + nimg]: txt_bias on the text keys, 0 on the image keys. */
static sd_status key_mask(sd_flux *f, const float *txt_bias, int64_t ntxt, int64_t nimg, sd_dtensor **out)
{
    int64_t shape[2] = {1, ntxt + nimg};
    float *host = calloc((size_t)(ntxt + nimg), sizeof *host);
    if (!host)
        return sd_set_error(f->cl->ctx, SD_ERR_NOMEM, "out of memory");
    memcpy(host, txt_bias, (size_t)ntxt * sizeof *host);
    sd_status s = upload_host(f->cl, 2, shape, host, out);
    free(host);
    return s;
}

sd_status sd_flux_forward_biased(sd_flux *f, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                                 const sd_dtensor *y, const float *guidance, const float *txt_bias, sd_dtensor **out)
{
    const sd_flux_config *c = &f->cfg;
    *out = NULL;
    sd_status s = check_inputs(f, x, context, y);
    if (s)
        return s;
    int64_t b = x->shape[0], h = x->shape[2], w = x->shape[3], hp = (h + 1) / 2, wp = (w + 1) / 2;
    int64_t ntok = hp * wp, nt = context->shape[1], feat = 4 * (int64_t)c->in_channels;
    int64_t ofeat = 4 * (int64_t)c->out_channels;
    size_t nin = (size_t)(b * ntok * feat), nout = (size_t)(b * ntok * ofeat);
    float *xh = malloc(x->numel * sizeof *xh), *tok = malloc((nin > nout ? nin : nout) * sizeof *tok);
    float *oh = malloc((size_t)(b * c->out_channels * h * w) * sizeof *oh);
    temps T = {0};
    sd_dtensor **patches = tmp(&T), **img = tmp(&T), **txt = tmp(&T), **vs = tmp(&T), **pe = tmp(&T);
    sd_dtensor **joint = tmp(&T), **iout = tmp(&T), **fin = tmp(&T), **mask = tmp(&T);
    if (!xh || !tok || !oh)
        s = sd_set_error(f->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = sd_dtensor_download(x, xh);
    if (!s) {
        patch_copy(xh, tok, b, c->in_channels, h, w, true);
        int64_t shape[3] = {b, ntok, feat};
        s = upload_host(f->cl, 3, shape, tok, patches);
    }
    if (!s)
        s = linear(f, *patches, "img_in", SD_ACT_NONE, img);
    if (!s)
        s = vector(f, b, timesteps, y, guidance, vs);
    if (!s)
        s = linear(f, context, "txt_in", SD_ACT_NONE, txt);
    if (!s)
        s = rope_table(f, nt, hp, wp, pe);
    if (!s && txt_bias)
        s = key_mask(f, txt_bias, nt, ntok, mask);
    for (int i = 0; !s && i < c->depth; i++)
        s = double_block(f, i, img, txt, *vs, *pe, *mask);
    if (!s)
        s = sd_op_concat(f->cl, *txt, *img, 1, joint);
    for (int i = 0; !s && i < c->depth_single; i++)
        s = single_block(f, i, joint, *vs, *pe, *mask);
    if (!s)
        s = sd_op_slice(f->cl, *joint, 1, nt, ntok, iout);
    if (!s)
        s = final_layer(f, *iout, *vs, fin);
    if (!s)
        s = sd_dtensor_download(*fin, tok);
    if (!s) {
        patch_copy(oh, tok, b, c->out_channels, h, w, false);
        int64_t shape[4] = {b, c->out_channels, h, w};
        s = upload_host(f->cl, 4, shape, oh, out);
    }
    temps_free(&T);
    free(xh);
    free(tok);
    free(oh);
    return s;
}
