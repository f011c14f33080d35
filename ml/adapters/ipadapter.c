/* IP-Adapter (see ipadapter.h): the image projections and the decoupled cross-attention. */
#include "ml/adapters/ipadapter.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IPA_LN_EPS 1e-5f

const char *const sd_ipa_weight_type_names[] = {
    "linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output", "weak middle",
    "strong middle", "style transfer", "composition", "strong style transfer", "style and composition",
    "style transfer precise", "composition precise", NULL};
const char *const sd_ipa_scaling_names[] = {"V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty", NULL};

struct sd_ipadapter {
    int refs;
    sd_cl *cl;
    sd_safetensors *st;
    sd_ipadapter_config cfg;
    sd_weights *w;
};

static const sd_st_tensor *find(const sd_safetensors *st, const char *name)
{
    return sd_safetensors_find(st, name);
}

static int dim(const sd_st_tensor *t, int i)
{
    return t && i < t->ndim ? (int)t->shape[i] : 0;
}

/* The layers of a Resampler under prefix: "<prefix>.layers.N.0.to_q.weight" for N = 0, 1, ... */
static int count_layers(const sd_safetensors *st, const char *prefix)
{
    char name[96];
    int n = 0;
    for (;;) {
        snprintf(name, sizeof name, "%s.layers.%d.0.to_q.weight", prefix, n);
        if (!find(st, name))
            return n;
        n++;
    }
}

/* Whether the file's base name holds word (ASCII case-insensitive), as ComfyUI_IPAdapter_plus
 * tells FaceID Plus v2 and portrait unnorm files by their names. */
static bool name_has(const char *path, const char *word)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(word);
    for (; *base; base++) {
        size_t i = 0;
        while (i < n && base[i] && (base[i] | 0x20) == word[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* FaceID (MLPProjModelFaceId: image_proj.proj.0 / proj.2 / norm) and FaceID Plus
 * (ProjModelFaceIdPlus: the same and image_proj.perceiver_resampler.*). */
static sd_status inspect_faceid(sd_context *ctx, const sd_safetensors *st, bool plus, sd_ipadapter_config *cfg)
{
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *p0 = find(st, "image_proj.proj.0.weight"), *p2 = find(st, "image_proj.proj.2.weight");
    cfg->kind = plus ? SD_IPA_FACEID_PLUS : SD_IPA_FACEID;
    cfg->id_dim = dim(p0, 1);
    cfg->portrait = !plus && !find(st, "ip_adapter.0.to_q_lora.down.weight");
    cfg->portrait_unnorm = cfg->portrait && name_has(path, "unnorm");
    cfg->faceid_v2 = plus && name_has(path, "plusv2");
    int out = dim(p2, 0);
    if (!p0 || !p2 || p0->ndim != 2 || p2->ndim != 2 || dim(p2, 1) != dim(p0, 0) || cfg->cross_dim < 1 ||
        out % cfg->cross_dim || !find(st, "image_proj.norm.weight"))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: FaceID image projection tensors missing or of unexpected shapes",
                            path);
    cfg->tokens = out / cfg->cross_dim;
    if (!plus)
        return SD_OK;
    const sd_st_tensor *pin = find(st, "image_proj.perceiver_resampler.proj_in.weight");
    const sd_st_tensor *q = find(st, "image_proj.perceiver_resampler.layers.0.0.to_q.weight");
    cfg->dim = dim(pin, 0);
    cfg->clip_dim = dim(pin, 1);
    cfg->heads = dim(q, 0) / 64;
    cfg->depth = count_layers(st, "image_proj.perceiver_resampler");
    if (cfg->dim != cfg->cross_dim || cfg->heads < 1 || dim(q, 0) % 64 || cfg->depth < 1 ||
        dim(find(st, "image_proj.perceiver_resampler.proj_out.weight"), 0) != cfg->cross_dim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: FaceID Plus Resampler tensors missing or of unexpected shapes",
                            path);
    return SD_OK;
}

sd_status sd_ipadapter_inspect(sd_context *ctx, const sd_safetensors *st, sd_ipadapter_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *k1 = find(st, "ip_adapter.1.to_k_ip.weight");
    if (!k1 || k1->ndim != 2)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not an IP-Adapter (no ip_adapter.1.to_k_ip.weight)", path);
    cfg->cross_dim = dim(k1, 1);
    cfg->sdxl = cfg->cross_dim == 2048;
    char name[64];
    for (;;) {
        snprintf(name, sizeof name, "ip_adapter.%d.to_k_ip.weight", 2 * cfg->layers + 1);
        if (!find(st, name))
            break;
        cfg->layers++;
    }
    if (cfg->layers < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: IP-Adapter without attention layers", path);
    if (find(st, "image_proj.perceiver_resampler.proj_in.weight"))
        return inspect_faceid(ctx, st, true, cfg);
    if (find(st, "image_proj.proj.2.weight") && !find(st, "image_proj.proj.3.weight"))
        return inspect_faceid(ctx, st, false, cfg);
    const sd_st_tensor *t;
    if ((t = find(st, "image_proj.latents"))) {
        const sd_st_tensor *pin = find(st, "image_proj.proj_in.weight"), *q = find(st, "image_proj.layers.0.0.to_q.weight");
        cfg->kind = SD_IPA_PLUS;
        cfg->tokens = dim(t, 1);
        cfg->dim = dim(t, 2);
        cfg->clip_dim = dim(pin, 1);
        cfg->heads = dim(q, 0) / 64;
        cfg->depth = count_layers(st, "image_proj");
        if (t->ndim != 3 || !pin || cfg->heads < 1 || cfg->depth < 1 || dim(q, 0) % 64)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: IP-Adapter Resampler tensors missing or of unexpected shapes",
                                path);
    } else if ((t = find(st, "image_proj.proj.3.weight"))) {
        cfg->kind = SD_IPA_FULL;
        cfg->clip_dim = dim(find(st, "image_proj.proj.0.weight"), 1);
    } else if ((t = find(st, "image_proj.proj.weight")) && t->ndim == 2 && cfg->cross_dim > 0 &&
               t->shape[0] % cfg->cross_dim == 0) {
        cfg->kind = SD_IPA_PLAIN;
        cfg->tokens = (int)(t->shape[0] / cfg->cross_dim);
        cfg->clip_dim = dim(t, 1);
    } else {
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: IP-Adapter image projection not recognised", path);
    }
    if (cfg->clip_dim < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: IP-Adapter without CLIP input", path);
    return SD_OK;
}

sd_status sd_ipadapter_new(sd_cl *cl, sd_safetensors *st, const sd_ipadapter_config *cfg, sd_ipadapter **out)
{
    *out = NULL;
    sd_ipadapter *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    *m = (sd_ipadapter){.refs = 1, .cl = cl, .st = st, .cfg = *cfg};
    sd_status s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &m->w);
    if (s) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

sd_ipadapter *sd_ipadapter_ref(sd_ipadapter *m)
{
    m->refs++;
    return m;
}

void sd_ipadapter_unref(sd_ipadapter *m)
{
    if (!m || --m->refs > 0)
        return;
    sd_weights_free(m->w);
    sd_safetensors_close(m->st);
    free(m);
}

const sd_ipadapter_config *sd_ipadapter_config_of(const sd_ipadapter *m)
{
    return &m->cfg;
}

/* ---- Image projections ---- */

static sd_status lin(sd_ipadapter *m, const char *base, bool bias, const sd_dtensor *x, sd_dtensor **out)
{
    const sd_dtensor *w, *b = NULL;
    sd_status s = sd_weights_getf(m->w, &w, "%s.weight", base);
    if (!s && bias)
        s = sd_weights_getf(m->w, &b, "%s.bias", base);
    return s ? s : sd_op_linear(m->cl, x, w, b, SD_ACT_NONE, out);
}

static sd_status norm(sd_ipadapter *m, const char *base, const sd_dtensor *x, sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_status s = sd_weights_getf(m->w, &g, "%s.weight", base);
    if (!s)
        s = sd_weights_getf(m->w, &b, "%s.bias", base);
    return s ? s : sd_op_layer_norm(m->cl, x, IPA_LN_EPS, g, b, out);
}

/* Moves *y into *x when s is SD_OK (freeing the old *x), else frees *y; *y becomes NULL. Called as
 * step(op(..., &y), &x, &y): *y is read after the op has set it. */
static sd_status step(sd_status s, sd_dtensor **x, sd_dtensor **y)
{
    sd_dtensor *t = *y;
    *y = NULL;
    if (s) {
        sd_dtensor_free(t);
        return s;
    }
    sd_dtensor_free(*x);
    *x = t;
    return SD_OK;
}

static sd_status add_to(sd_ipadapter *m, sd_dtensor **x, sd_dtensor *y)
{
    sd_dtensor *sum = NULL;
    sd_status s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, y, &sum);
    sd_dtensor_free(y);
    return step(s, x, &sum);
}

/* One perceiver-attention layer and feed-forward of the Resampler under prefix on *lat, image
 * features x. */
static sd_status resampler_layer(sd_ipadapter *m, const char *prefix, int i, const sd_dtensor *x, sd_dtensor **lat)
{
    const sd_ipadapter_config *c = &m->cfg;
    char base[96];
    sd_dtensor *xn = NULL, *ln = NULL, *q = NULL, *kvin = NULL, *kv = NULL, *k = NULL, *v = NULL, *a = NULL, *o = NULL;
    snprintf(base, sizeof base, "%s.layers.%d.0.norm1", prefix, i);
    sd_status s = norm(m, base, x, &xn);
    snprintf(base, sizeof base, "%s.layers.%d.0.norm2", prefix, i);
    if (!s) s = norm(m, base, *lat, &ln);
    snprintf(base, sizeof base, "%s.layers.%d.0.to_q", prefix, i);
    if (!s) s = lin(m, base, false, ln, &q);
    if (!s) s = sd_op_concat(m->cl, xn, ln, 1, &kvin);
    snprintf(base, sizeof base, "%s.layers.%d.0.to_kv", prefix, i);
    if (!s) s = lin(m, base, false, kvin, &kv);
    int64_t inner = (int64_t)c->heads * 64;
    if (!s) s = sd_op_slice(m->cl, kv, 2, 0, inner, &k);
    if (!s) s = sd_op_slice(m->cl, kv, 2, inner, inner, &v);
    if (!s) s = sd_op_attention(m->cl, q, k, v, c->heads, NULL, &a);
    snprintf(base, sizeof base, "%s.layers.%d.0.to_out", prefix, i);
    if (!s) s = lin(m, base, false, a, &o);
    if (!s) s = add_to(m, lat, o), o = NULL;
    sd_dtensor_free(xn), sd_dtensor_free(ln), sd_dtensor_free(q), sd_dtensor_free(kvin), sd_dtensor_free(kv);
    sd_dtensor_free(k), sd_dtensor_free(v), sd_dtensor_free(a), sd_dtensor_free(o);
    /* latents += FF(latents): LayerNorm, Linear, GELU, Linear (no biases) */
    sd_dtensor *h = NULL, *g = NULL;
    snprintf(base, sizeof base, "%s.layers.%d.1.0", prefix, i);
    if (!s) s = norm(m, base, *lat, &h);
    snprintf(base, sizeof base, "%s.layers.%d.1.1", prefix, i);
    if (!s) s = step(lin(m, base, false, h, &g), &h, &g);
    if (!s) s = step(sd_op_unary(m->cl, SD_UNARY_GELU, h, &g), &h, &g);
    snprintf(base, sizeof base, "%s.layers.%d.1.3", prefix, i);
    if (!s) s = lin(m, base, false, h, &g);
    if (!s) s = add_to(m, lat, g);
    sd_dtensor_free(h);
    return s;
}

/* The Resampler under prefix: *lat [n, Q, dim] (consumed) attends to proj_in(x) through depth
 * layers; proj_out, norm_out into *out. */
static sd_status resampler_run(sd_ipadapter *m, const char *prefix, const sd_dtensor *x, sd_dtensor **lat,
                               sd_dtensor **out)
{
    char base[96];
    sd_dtensor *xp = NULL, *t = NULL;
    snprintf(base, sizeof base, "%s.proj_in", prefix);
    sd_status s = lin(m, base, true, x, &xp);
    for (int i = 0; !s && i < m->cfg.depth; i++)
        s = resampler_layer(m, prefix, i, xp, lat);
    snprintf(base, sizeof base, "%s.proj_out", prefix);
    if (!s) s = lin(m, base, true, *lat, &t);
    snprintf(base, sizeof base, "%s.norm_out", prefix);
    if (!s) s = norm(m, base, t, out);
    sd_dtensor_free(xp), sd_dtensor_free(t), sd_dtensor_free(*lat);
    *lat = NULL;
    return s;
}

/* The plus Resampler: the file's latents, repeated for n images, attend to x. */
static sd_status resampler(sd_ipadapter *m, const sd_dtensor *x, int n, sd_dtensor **out)
{
    const sd_ipadapter_config *c = &m->cfg;
    size_t per = (size_t)c->tokens * (size_t)c->dim;
    float *host = malloc((size_t)n * per * sizeof *host);
    sd_dtensor *lat = NULL;
    const sd_st_tensor *lt = find(m->st, "image_proj.latents");
    sd_status s = host ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = sd_safetensors_read_f32(m->cl->ctx, m->st, lt, host, per);
    for (int i = 1; !s && i < n; i++)
        memcpy(host + (size_t)i * per, host, per * sizeof *host);
    int64_t shape[3] = {n, c->tokens, c->dim};
    if (!s) s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, &lat);
    if (!s) s = sd_dtensor_upload(lat, host);
    if (!s)
        s = resampler_run(m, "image_proj", x, &lat, out);
    free(host);
    sd_dtensor_free(lat);
    return s;
}

sd_status sd_ipadapter_project(sd_ipadapter *m, const float *features, int n, int in_tokens, float *out)
{
    const sd_ipadapter_config *c = &m->cfg;
    int64_t shape[3] = {n, in_tokens, c->clip_dim};
    sd_dtensor *x = NULL, *y = NULL, *z = NULL;
    sd_status s = n < 1 || in_tokens < 1 ? sd_set_error(m->cl->ctx, SD_ERR_INVALID, "IP-Adapter: no image features")
                                         : sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, &x);
    if (!s) s = sd_dtensor_upload(x, features);
    switch (c->kind) {
    case SD_IPA_PLAIN: /* Linear -> [n, tokens, cross] -> LayerNorm */
        if (!s) s = lin(m, "image_proj.proj", true, x, &y);
        if (!s) s = sd_dtensor_reshape(y, 3, (const int64_t[]){n, c->tokens, c->cross_dim});
        if (!s) s = norm(m, "image_proj.norm", y, &z);
        break;
    case SD_IPA_FULL: /* per token: Linear, GELU, Linear, LayerNorm */
        if (!s) s = lin(m, "image_proj.proj.0", true, x, &y);
        if (!s) s = step(sd_op_unary(m->cl, SD_UNARY_GELU, y, &z), &y, &z);
        if (!s) s = step(lin(m, "image_proj.proj.2", true, y, &z), &y, &z);
        if (!s) s = norm(m, "image_proj.proj.3", y, &z);
        break;
    case SD_IPA_PLUS:
        if (!s) s = resampler(m, x, n, &z);
        break;
    default:
        if (!s) s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "a FaceID model takes face embeddings, not CLIP features");
        break;
    }
    if (!s) s = sd_dtensor_download(z, out);
    sd_dtensor_free(x), sd_dtensor_free(y), sd_dtensor_free(z);
    if (s)
        sd_error_prefix(m->cl->ctx, "IP-Adapter");
    return s;
}

/* A new device tensor of the given shape holding data. */
static sd_status upload_new(sd_cl *cl, const float *data, int ndim, const int64_t *shape, sd_dtensor **out)
{
    sd_status s = sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, data))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return s;
}

sd_status sd_ipadapter_project_faceid(sd_ipadapter *m, const float *faceid, const float *clip, int n, int in_tokens,
                                      float v2_scale, float *out)
{
    const sd_ipadapter_config *c = &m->cfg;
    bool plus = c->kind == SD_IPA_FACEID_PLUS;
    sd_dtensor *x = NULL, *y = NULL, *z = NULL, *h = NULL, *lat = NULL, *r = NULL;
    sd_status s = SD_OK;
    if (c->kind != SD_IPA_FACEID && !plus)
        s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "not a FaceID model");
    else if (n < 1 || (plus && (!clip || in_tokens < 1)))
        s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "no face embeddings%s", plus ? " or face CLIP features" : "");
    if (!s) s = upload_new(m->cl, faceid, 2, (const int64_t[]){n, c->id_dim}, &x);
    /* MLPProjModelFaceId: Linear, GELU, Linear -> [n, tokens, cross] -> LayerNorm */
    if (!s) s = lin(m, "image_proj.proj.0", true, x, &y);
    if (!s) s = step(sd_op_unary(m->cl, SD_UNARY_GELU, y, &z), &y, &z);
    if (!s) s = step(lin(m, "image_proj.proj.2", true, y, &z), &y, &z);
    if (!s) s = sd_dtensor_reshape(y, 3, (const int64_t[]){n, c->tokens, c->cross_dim});
    if (!s) s = step(norm(m, "image_proj.norm", y, &z), &y, &z);
    if (!s && plus) { /* the id tokens y are the Resampler's latents; v2: y + scale * resampler */
        s = upload_new(m->cl, clip, 3, (const int64_t[]){n, in_tokens, c->clip_dim}, &h);
        if (!s) s = sd_op_scale(m->cl, y, 1.0f, 0.0f, &lat);
        if (!s) s = resampler_run(m, "image_proj.perceiver_resampler", h, &lat, &r);
        if (!s && c->faceid_v2) {
            s = step(sd_op_scale(m->cl, r, v2_scale, 0.0f, &z), &r, &z);
            if (!s) s = add_to(m, &y, r), r = NULL;
        } else if (!s)
            s = step(SD_OK, &y, &r);
    }
    if (!s) s = sd_dtensor_download(y, out);
    sd_dtensor_free(x), sd_dtensor_free(y), sd_dtensor_free(z), sd_dtensor_free(h), sd_dtensor_free(lat);
    sd_dtensor_free(r);
    if (s)
        sd_error_prefix(m->cl->ctx, "FaceID IP-Adapter");
    return s;
}

/* ---- Weights per layer ---- */

/* ComfyUI_IPAdapter_plus's per-transformer weight tables (ipadapter_execute) for the dictionary
 * types: the weight at transformer t, or -1 when t is not in the table; *swap for the "precise"
 * types' swapped sides. weight_composition is the node's default, 1. */
static double table_weight(sd_ipa_weight_type type, bool sdxl, int t, double w, bool *swap)
{
    static const double one = 1.0;
    bool sd1_style = t <= 3 || t >= 9; /* SD1.5's style layers */
    switch (type) {
    case SD_IPA_STYLE_TRANSFER:
        return sdxl ? (t == 6 ? w : -1) : sd1_style ? w : -1;
    case SD_IPA_COMPOSITION:
        return sdxl ? (t == 3 ? w : -1) : t == 4 ? w * 0.25 : t == 5 ? w : -1;
    case SD_IPA_STRONG_STYLE_TRANSFER:
        return sdxl ? (t == 3 ? -1 : w) : (t == 4 || t == 5) ? -1 : w;
    case SD_IPA_STYLE_AND_COMPOSITION:
        if (sdxl)
            return t == 3 ? one : t == 6 ? w : -1;
        return t == 4 ? one * 0.25 : t == 5 ? one : sd1_style ? w : -1;
    case SD_IPA_STYLE_TRANSFER_PRECISE:
        *swap = sdxl ? t == 3 : (t == 4 || t == 5);
        if (sdxl)
            return t == 3 || t == 6 ? w : -1;
        return t == 4 ? w * 0.25 : t == 5 ? w : sd1_style ? w : -1;
    case SD_IPA_COMPOSITION_PRECISE:
        *swap = sdxl ? t != 3 : (t != 4 && t != 5);
        if (sdxl)
            return t == 3 || t == 6 ? w : w * 0.1;
        return t == 4 ? w * 0.25 : t == 5 ? w : (t >= 6 && t <= 8) ? w * 0.1 : w;
    default:
        return w;
    }
}

double sd_ipa_site_weight(const sd_ipa_patch *p, const sd_unet_attn_site *site, bool *swap)
{
    double w = p->weight, layers = p->model->cfg.sdxl ? 11 : 16, t = site->transformer;
    *swap = false;
    switch (p->weight_type) {
    case SD_IPA_LINEAR:
        return w;
    case SD_IPA_EASE_IN:
        return w * (0.05 + 0.95 * (1 - t / layers));
    case SD_IPA_EASE_OUT:
        return w * (0.05 + 0.95 * (t / layers));
    case SD_IPA_EASE_IN_OUT:
        return w * (0.05 + 0.95 * (1 - fabs(t - layers / 2) / (layers / 2)));
    case SD_IPA_REVERSE_IN_OUT:
        return w * (0.05 + 0.95 * (fabs(t - layers / 2) / (layers / 2)));
    case SD_IPA_WEAK_INPUT:
        return site->part == SD_UNET_INPUT ? w * 0.2 : w;
    case SD_IPA_WEAK_OUTPUT:
        return site->part == SD_UNET_OUTPUT ? w * 0.2 : w;
    case SD_IPA_WEAK_MIDDLE:
        return site->part == SD_UNET_MIDDLE ? w * 0.2 : w;
    case SD_IPA_STRONG_MIDDLE:
        return site->part != SD_UNET_MIDDLE ? w * 0.2 : w;
    default: {
        double tw = table_weight(p->weight_type, p->model->cfg.sdxl, site->transformer, w, swap);
        return tw < 0 ? 0 : tw;
    }
    }
}

/* ---- The attn2 hook ---- */

/* Device tokens [batch, T, cross] for patch p: negative items take uncond, the others cond
 * (swapped: the negative items cond, the others zeros). */
static sd_status call_tokens(sd_ipa_call *c, const sd_ipa_patch *p, bool swap, sd_dtensor **out)
{
    size_t per = (size_t)p->n_tokens * (size_t)p->model->cfg.cross_dim;
    float *host = calloc((size_t)c->batch * per, sizeof *host);
    if (!host)
        return sd_set_error(c->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t b = 0; b < c->batch; b++) {
        const float *src = swap ? (c->negative[b] ? p->cond : NULL) : c->negative[b] ? p->uncond : p->cond;
        if (src)
            memcpy(host + (size_t)b * per, src, per * sizeof *host);
    }
    int64_t shape[3] = {c->batch, p->n_tokens, p->model->cfg.cross_dim};
    sd_status s = sd_dtensor_new(c->cl, SD_DTYPE_F32, 3, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(host);
    return s;
}

/* v = (v - mean_tokens(v)) + mean_tokens(v) * w, per item and channel (K+mean(V)). */
static sd_status scale_mean(sd_cl *cl, sd_dtensor **v, float w)
{
    int64_t b = (*v)->shape[0], n = (*v)->shape[1], ch = (*v)->shape[2];
    float *host = malloc((size_t)(b * n * ch) * sizeof *host);
    sd_status s = host ? sd_dtensor_download(*v, host) : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !s && i < b; i++)
        for (int64_t j = 0; j < ch; j++) {
            float *col = host + i * n * ch + j, mean = 0.0f;
            for (int64_t t = 0; t < n; t++)
                mean += col[t * ch];
            mean /= (float)n;
            for (int64_t t = 0; t < n; t++)
                col[t * ch] = (col[t * ch] - mean) + mean * w;
        }
    if (!s)
        s = sd_dtensor_upload(*v, host);
    free(host);
    return s;
}

/* The attention mask at a layer of seq tokens: ComfyUI_IPAdapter_plus's grid (mask_h from the
 * latent's aspect), bilinear (align_corners false), flattened, centre-padded with zeros or
 * cropped to seq; [batch, seq, 1] on the device. */
static sd_status layer_mask(sd_ipa_call *c, const sd_ipa_patch *p, const sd_unet_attn_site *site, int64_t seq,
                            sd_dtensor **out)
{
    double oh = (double)site->latent_h, ow = (double)site->latent_w;
    int64_t mh = (int64_t)(oh / sqrt(oh * ow / (double)seq));
    mh = mh < 1 ? 1 : mh;
    mh = mh + (seq % mh != 0);
    int64_t mw = seq / mh, len = mh * mw;
    float *grid = malloc((size_t)(len > 0 ? len : 1) * sizeof *grid), *host = calloc((size_t)(c->batch * seq), sizeof *host);
    if (!grid || !host) {
        free(grid), free(host);
        return sd_set_error(c->cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    for (int64_t y = 0; y < mh; y++) {
        float sy = fmaxf(((float)y + 0.5f) * (float)p->mask_h / (float)mh - 0.5f, 0.0f);
        int64_t y0 = (int64_t)sy, y1 = y0 + 1 < p->mask_h ? y0 + 1 : p->mask_h - 1;
        float fy = sy - (float)y0;
        for (int64_t x = 0; x < mw; x++) {
            float sx = fmaxf(((float)x + 0.5f) * (float)p->mask_w / (float)mw - 0.5f, 0.0f);
            int64_t x0 = (int64_t)sx, x1 = x0 + 1 < p->mask_w ? x0 + 1 : p->mask_w - 1;
            float fx = sx - (float)x0;
            const float *m = p->mask;
            grid[y * mw + x] = (1 - fy) * ((1 - fx) * m[y0 * p->mask_w + x0] + fx * m[y0 * p->mask_w + x1]) +
                               fy * ((1 - fx) * m[y1 * p->mask_w + x0] + fx * m[y1 * p->mask_w + x1]);
        }
    }
    int64_t pad = len < seq ? (seq - len) / 2 : 0, crop = len > seq ? (len - seq) / 2 : 0;
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t i = 0; i < seq; i++) {
            int64_t j = i - pad + crop;
            host[b * seq + i] = j >= 0 && j < len ? grid[j] : 0.0f;
        }
    int64_t shape[3] = {c->batch, seq, 1};
    sd_status s = sd_dtensor_new(c->cl, SD_DTYPE_F32, 3, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(grid), free(host);
    return s;
}

/* out_ip of one patch at one site: attention of q over the patch's image tokens, weighted. */
static sd_status patch_attention(sd_ipa_call *c, size_t i, const sd_unet_attn_site *site, const sd_dtensor *q,
                                 int heads, double w, bool swap, sd_dtensor **out)
{
    const sd_ipa_patch *p = c->patches[i];
    sd_dtensor **tokens = &c->tokens[2 * i + swap], *k = NULL, *v = NULL, *t = NULL;
    const sd_dtensor *wk, *wv;
    int key = 2 * site->number + 1;
    sd_status s = *tokens ? SD_OK : call_tokens(c, p, swap, tokens);
    if (!s) s = sd_weights_getf(p->model->w, &wk, "ip_adapter.%d.to_k_ip.weight", key);
    if (!s) s = sd_weights_getf(p->model->w, &wv, "ip_adapter.%d.to_v_ip.weight", key);
    if (!s) s = sd_op_linear(c->cl, *tokens, wk, NULL, SD_ACT_NONE, &k);
    if (!s) s = sd_op_linear(c->cl, *tokens, wv, NULL, SD_ACT_NONE, &v);
    float fw = (float)w;
    if (p->scaling == SD_IPA_KV_PENALTY || p->scaling == SD_IPA_K_MEAN_V_PENALTY)
        fw = (float)(w * ((double)q->shape[2] / 1280.0));
    if (!s && p->scaling != SD_IPA_V_ONLY)
        s = step(sd_op_scale(c->cl, k, fw, 0.0f, &t), &k, &t);
    if (!s && (p->scaling == SD_IPA_KV || p->scaling == SD_IPA_KV_PENALTY))
        s = step(sd_op_scale(c->cl, v, fw, 0.0f, &t), &v, &t);
    if (!s && p->scaling == SD_IPA_K_MEAN_V_PENALTY)
        s = scale_mean(c->cl, &v, fw);
    if (!s) s = sd_op_attention(c->cl, q, k, v, heads, NULL, out);
    if (!s && p->scaling == SD_IPA_V_ONLY)
        s = step(sd_op_scale(c->cl, *out, fw, 0.0f, &t), out, &t);
    if (!s && p->mask) {
        sd_dtensor *m = NULL;
        s = layer_mask(c, p, site, q->shape[1], &m);
        if (!s) s = step(sd_op_binary(c->cl, SD_BINARY_MUL, *out, m, &t), out, &t);
        sd_dtensor_free(m);
    }
    sd_dtensor_free(k), sd_dtensor_free(v);
    return s;
}

sd_status sd_ipa_attn2(void *user, const sd_unet_attn_site *site, const sd_dtensor *q, int heads, sd_dtensor **out)
{
    sd_ipa_call *c = user;
    sd_status s = SD_OK;
    for (size_t i = 0; !s && i < c->n_patches; i++) {
        const sd_ipa_patch *p = c->patches[i];
        bool swap;
        double w = sd_ipa_site_weight(p, site, &swap);
        if (c->sigma > p->sigma_start || c->sigma < p->sigma_end || w == 0 || site->number >= p->model->cfg.layers)
            continue;
        sd_dtensor *a = NULL, *sum = NULL;
        s = patch_attention(c, i, site, q, heads, w, swap, &a);
        if (!s) s = sd_op_binary(c->cl, SD_BINARY_ADD, *out, a, &sum);
        if (!s) s = step(SD_OK, out, &sum);
        sd_dtensor_free(a);
    }
    if (s)
        sd_error_prefix(c->cl->ctx, "IP-Adapter");
    return s;
}

void sd_ipa_call_release(sd_ipa_call *c)
{
    for (size_t i = 0; c->tokens && i < 2 * c->n_patches; i++) {
        sd_dtensor_free(c->tokens[i]);
        c->tokens[i] = NULL;
    }
}

/* ---- Patches and stacks ---- */

void sd_ipa_patch_free(sd_ipa_patch *p)
{
    if (!p)
        return;
    sd_ipadapter_unref(p->model);
    free(p->cond);
    free(p->uncond);
    free(p->mask);
    free(p);
}

struct sd_ipa_stack {
    int refs;
    sd_ipa_patch *patch;
    sd_ipa_stack *below; /* one reference */
    size_t count;
};

sd_ipa_stack *sd_ipa_stack_push(sd_ipa_stack *base, sd_ipa_patch *p)
{
    sd_ipa_stack *s = malloc(sizeof *s);
    if (!s) {
        sd_ipa_patch_free(p);
        return NULL;
    }
    *s = (sd_ipa_stack){.refs = 1, .patch = p, .below = sd_ipa_stack_ref(base), .count = sd_ipa_stack_count(base) + 1};
    return s;
}

sd_ipa_stack *sd_ipa_stack_ref(sd_ipa_stack *s)
{
    if (s)
        s->refs++;
    return s;
}

void sd_ipa_stack_unref(sd_ipa_stack *s)
{
    while (s && --s->refs == 0) {
        sd_ipa_stack *below = s->below;
        sd_ipa_patch_free(s->patch);
        free(s);
        s = below;
    }
}

size_t sd_ipa_stack_count(const sd_ipa_stack *s)
{
    return s ? s->count : 0;
}

void sd_ipa_stack_list(const sd_ipa_stack *s, const sd_ipa_patch **out)
{
    for (; s; s = s->below)
        out[s->count - 1] = s->patch;
}
