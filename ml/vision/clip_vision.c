/* CLIP image tower (see clip_vision.h). The patch embedding runs on the device; the class token
 * and position embeddings are added on the host (257 rows; SigLIP: 729 and no class token), the
 * layers run on the op library (ml/text/clip_layer.h), and the class token's projection is done
 * on the host in double. */
#include "ml/vision/clip_vision.h"
#include "ml/text/clip_layer.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tensor names outside the layers, relative to the prefix (proj: see projection_name). */
typedef struct vision_names {
    const char *patch, *cls, *position, *pre_norm, *post_norm, *patch_bias;
} vision_names;

static const vision_names hf_names = {"embeddings.patch_embedding.weight", "embeddings.class_embedding",
                                      "embeddings.position_embedding.weight", "pre_layrnorm", "post_layernorm",
                                      "embeddings.patch_embedding.bias"};
static const vision_names open_clip_names = {"conv1.weight", "class_embedding", "positional_embedding", "ln_pre",
                                             "ln_post", NULL};

#define SIGLIP_LN_EPS 1e-6f
#define SIGLIP_HEAD_DIM 72 /* so400m: 1152 wide, 16 heads */

struct sd_clip_vision {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_clip_vision_config cfg;
    sd_weights *w;
    float *proj; /* [projection, width] on the host, read on first use */
};

static const sd_st_tensor *find(const sd_safetensors *st, const char *prefix, const char *name)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return sd_safetensors_find(st, full);
}

/* The projection's full name: <prefix>proj ([width, projection]) in open_clip's layout,
 * visual_projection.weight ([projection, width]) beside vision_model. in transformers'. */
static void projection_name(const sd_clip_vision_config *c, char *out, size_t size)
{
    if (c->open_clip) {
        snprintf(out, size, "%sproj", c->prefix);
        return;
    }
    size_t n = strlen(c->prefix), tail = strlen("vision_model.");
    n = n >= tail ? n - tail : 0;
    snprintf(out, size, "%.*svisual_projection.weight", (int)n, c->prefix);
}

static bool is_2d(const sd_st_tensor *t, int64_t a, int64_t b)
{
    return t && t->ndim == 2 && t->shape[0] == a && t->shape[1] == b;
}

sd_status sd_clip_vision_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix,
                                 sd_clip_vision_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (!prefix)
        prefix = sd_safetensors_has_prefix(st, "vision_model.") ? "vision_model." : "visual.";
    snprintf(cfg->prefix, sizeof cfg->prefix, "%s", prefix);
    cfg->open_clip = find(st, prefix, open_clip_names.patch) != NULL;
    const vision_names *n = cfg->open_clip ? &open_clip_names : &hf_names;
    const sd_st_tensor *patch = find(st, prefix, n->patch), *pos = find(st, prefix, n->position);
    const char *path = sd_safetensors_path(st);
    if (!patch || patch->ndim != 4 || patch->shape[1] != 3 || patch->shape[2] != patch->shape[3] || !pos ||
        pos->ndim != 2 || pos->shape[1] != patch->shape[0])
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a CLIP vision model (no %s%s with a position table)", path,
                            prefix, n->patch);
    cfg->width = (int)patch->shape[0];
    cfg->patch = (int)patch->shape[2];
    cfg->siglip = !cfg->open_clip && !find(st, prefix, n->cls) && find(st, prefix, n->patch_bias);
    int64_t cls = !cfg->siglip, grid = (int64_t)llround(sqrt((double)(pos->shape[0] - cls)));
    if (grid < 1 || grid * grid + cls != pos->shape[0])
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: position table of %lld rows is no square grid%s", path,
                            (long long)pos->shape[0], cls ? " plus a class token" : "");
    cfg->image_size = (int)grid * cfg->patch;
    char name[200];
    for (;;) {
        snprintf(name, sizeof name, cfg->open_clip ? "transformer.resblocks.%d.ln_1.weight"
                                                   : "encoder.layers.%d.layer_norm1.weight", cfg->layers);
        if (!find(st, prefix, name))
            break;
        cfg->layers++;
    }
    const sd_st_tensor *fc1 = find(st, prefix, cfg->open_clip ? "transformer.resblocks.0.mlp.c_fc.weight"
                                                              : "encoder.layers.0.mlp.fc1.weight");
    if (cfg->layers < 2 || !fc1 || fc1->ndim != 2 || fc1->shape[1] != cfg->width)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP vision model with %d layers or no MLP of width %d", path,
                            cfg->layers, cfg->width);
    cfg->intermediate = (int)fc1->shape[0];
    if (cfg->siglip) {
        cfg->heads = cfg->width % SIGLIP_HEAD_DIM ? (cfg->width % 64 ? 1 : cfg->width / 64) : cfg->width / SIGLIP_HEAD_DIM;
        return SD_OK;
    }
    projection_name(cfg, name, sizeof name);
    const sd_st_tensor *proj = sd_safetensors_find(st, name);
    if (proj && proj->ndim == 2)
        cfg->projection = (int)proj->shape[cfg->open_clip ? 1 : 0];
    if (!proj || !(cfg->open_clip ? is_2d(proj, cfg->width, cfg->projection) : is_2d(proj, cfg->projection, cfg->width)))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP vision projection '%s' is missing or not of width %d", path,
                            name, cfg->width);
    cfg->heads = (cfg->width == 1280 || cfg->width == 1664) ? 16 : cfg->width % 64 ? 1 : cfg->width / 64;
    cfg->gelu = cfg->width > 1024;
    return SD_OK;
}

sd_status sd_clip_vision_new(sd_cl *cl, const sd_safetensors *st, const sd_clip_vision_config *cfg,
                             sd_dtype weight_dtype, sd_clip_vision **out)
{
    *out = NULL;
    if (cfg->heads < 1 || cfg->width % cfg->heads)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "CLIP vision: width %d not divisible by %d heads", cfg->width,
                            cfg->heads);
    sd_clip_vision *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    *m = (sd_clip_vision){.cl = cl, .st = st, .cfg = *cfg};
    sd_status s = sd_weights_new(cl, st, cfg->prefix, weight_dtype, &m->w);
    if (s) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_clip_vision_free(sd_clip_vision *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    free(m->proj);
    free(m);
}

const sd_clip_vision_config *sd_clip_vision_config_of(const sd_clip_vision *m)
{
    return &m->cfg;
}

/* The whole float tensor <prefix>name of n elements into a new host array. */
static sd_status read_host(sd_clip_vision *m, const char *full, size_t n, float **out)
{
    const sd_st_tensor *t = sd_safetensors_find(m->st, full);
    if (!t || t->numel != n)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "%s: CLIP vision tensor '%s' is missing or not of %zu values",
                            sd_safetensors_path(m->st), full, n);
    if (!(*out = malloc(n * sizeof **out)))
        return sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_safetensors_read_f32(m->cl->ctx, m->st, t, *out, n);
    if (s) {
        free(*out);
        *out = NULL;
    }
    return s;
}

/* x [batch, tokens, width]: class token and patch embeddings plus position embeddings. */
static sd_status embed(sd_clip_vision *m, const float *pixels, int batch, sd_dtensor **out)
{
    const sd_clip_vision_config *c = &m->cfg;
    const vision_names *n = c->open_clip ? &open_clip_names : &hf_names;
    int64_t size = c->image_size, width = c->width, tokens = sd_clip_vision_tokens(c), ncls = !c->siglip;
    int64_t patches = tokens - ncls;
    int64_t pshape[4] = {batch, 3, size, size};
    sd_conv2d_params conv = {.stride_h = c->patch, .stride_w = c->patch};
    sd_dtensor *px = NULL, *feat = NULL, *seq = NULL;
    const sd_dtensor *kernel, *bias = NULL;
    float *host = malloc((size_t)(batch * tokens * width) * sizeof *host), *cls = NULL, *pos = NULL;
    char name[200];
    sd_status s = host ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 4, pshape, &px);
    if (!s) s = sd_dtensor_upload(px, pixels);
    if (!s) s = sd_weights_get(m->w, n->patch, &kernel);
    if (!s && c->siglip) s = sd_weights_get(m->w, n->patch_bias, &bias);
    if (!s) s = sd_op_conv2d(m->cl, px, kernel, bias, &conv, &feat); /* [B, W, g, g] */
    int64_t fshape[3] = {batch, width, patches};
    if (!s) s = sd_dtensor_reshape(feat, 3, fshape);
    if (!s) s = sd_op_transpose(m->cl, feat, NULL, &seq); /* [B, g*g, W] */
    snprintf(name, sizeof name, "%s%s", c->prefix, n->cls);
    if (!s && ncls) s = read_host(m, name, (size_t)width, &cls);
    snprintf(name, sizeof name, "%s%s", c->prefix, n->position);
    if (!s) s = read_host(m, name, (size_t)(tokens * width), &pos);
    float *rows = host ? host + (size_t)(batch * ncls * width) : NULL; /* patches after room for B class rows */
    if (!s) s = sd_dtensor_download(seq, rows);
    for (int64_t b = 0; !s && b < batch; b++) { /* reorder in place: [B][1 + g*g][W] (SigLIP: as they are) */
        float *dst = host + (size_t)(b * tokens * width);
        if (ncls) {
            memmove(dst + width, rows + (size_t)(b * patches * width), (size_t)(patches * width) * sizeof *dst);
            memcpy(dst, cls, (size_t)width * sizeof *dst);
        }
        for (int64_t i = 0; i < tokens * width; i++)
            dst[i] += pos[i];
    }
    int64_t shape[3] = {batch, tokens, width};
    if (!s) s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    sd_dtensor_free(px);
    sd_dtensor_free(feat);
    sd_dtensor_free(seq);
    free(host);
    free(cls);
    free(pos);
    return s;
}

/* embeds [batch, projection] = post_norm(x[:, 0]) projected. */
static sd_status project(sd_clip_vision *m, const sd_clip_layers *t, const sd_dtensor *x, int batch, float *embeds)
{
    const sd_clip_vision_config *c = &m->cfg;
    size_t width = (size_t)c->width, proj = (size_t)c->projection;
    sd_dtensor *cls = NULL, *normed = NULL;
    float *host = malloc((size_t)batch * width * sizeof *host);
    sd_status s = host ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s && !m->proj) {
        char name[200];
        projection_name(c, name, sizeof name);
        s = read_host(m, name, width * proj, &m->proj);
    }
    if (!s) s = sd_op_slice(m->cl, x, 1, 0, 1, &cls);
    if (!s) s = sd_clip_layer_norm(t, c->open_clip ? open_clip_names.post_norm : hf_names.post_norm, 0, cls, &normed);
    if (!s) s = sd_dtensor_download(normed, host);
    for (int b = 0; !s && b < batch; b++)
        for (size_t j = 0; j < proj; j++) {
            double acc = 0;
            for (size_t k = 0; k < width; k++) /* open_clip: [width, proj]; transformers: [proj, width] */
                acc += (double)host[(size_t)b * width + k] * m->proj[c->open_clip ? k * proj + j : j * width + k];
            embeds[(size_t)b * proj + j] = (float)acc;
        }
    sd_dtensor_free(cls);
    sd_dtensor_free(normed);
    free(host);
    return s;
}

/* *x = LayerNorm <name>(*x). */
static sd_status norm_in_place(const sd_clip_layers *t, const char *name, sd_dtensor **x)
{
    sd_dtensor *normed = NULL;
    sd_status s = sd_clip_layer_norm(t, name, 0, *x, &normed);
    if (!s) {
        sd_dtensor_free(*x);
        *x = normed;
    }
    return s;
}

sd_status sd_clip_vision_encode(sd_clip_vision *m, const float *pixels, int batch, float *embeds, float *last,
                                float *penult)
{
    const sd_clip_vision_config *c = &m->cfg;
    if (batch < 1)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "CLIP vision: batch %d", batch);
    sd_clip_layers t = {.cl = m->cl, .w = m->w, .open_clip = c->open_clip, .width = c->width, .heads = c->heads,
                        .gelu = c->gelu, .gelu_tanh = c->siglip, .eps = c->siglip ? SIGLIP_LN_EPS : 0};
    const vision_names *n = c->open_clip ? &open_clip_names : &hf_names;
    sd_dtensor *x = NULL;
    sd_status s = embed(m, pixels, batch, &x);
    if (!s && !c->siglip) s = norm_in_place(&t, n->pre_norm, &x);
    for (int l = 0; !s && l < c->layers; l++) {
        s = sd_clip_layer(&t, l, &x);
        if (!s && penult && l == c->layers - 2)
            s = sd_dtensor_download(x, penult);
    }
    if (!s && c->siglip) s = norm_in_place(&t, n->post_norm, &x);
    if (!s && last)
        s = sd_dtensor_download(x, last);
    if (!s && embeds)
        s = c->siglip ? sd_dtensor_download(x, embeds) : project(m, &t, x, batch, embeds);
    sd_dtensor_free(x);
    if (s)
        sd_error_prefix(m->cl->ctx, "CLIP vision");
    return s;
}

/* ---- Preprocessing ---- */

/* torch's antialiased bicubic filter (Keys, a = -0.5, as Pillow). */
static float aa_cubic(float x)
{
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f)
        return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f)
        return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

/* One axis of torch's upsample_bicubic2d_aa, float arithmetic in its order: out[i] =
 * sum_j w[j] in[first + j] over the span centred on scale (i + 0.5), weights normalised. */
typedef struct aa_axis {
    int64_t *first, *count;
    float *w; /* [out][taps] */
    int taps;
} aa_axis;

static bool aa_axis_init(aa_axis *a, int64_t in, int64_t out)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? 2.0f * scale : 2.0f, invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    a->taps = (int)ceilf(support) * 2 + 1;
    a->first = malloc((size_t)out * sizeof *a->first);
    a->count = malloc((size_t)out * sizeof *a->count);
    a->w = calloc((size_t)out * (size_t)a->taps, sizeof *a->w);
    if (!a->first || !a->count || !a->w)
        return false;
    for (int64_t i = 0; i < out; i++) {
        float center = scale * ((float)i + 0.5f), total = 0.0f, *w = a->w + i * a->taps;
        int64_t lo = (int64_t)(center - support + 0.5f), hi = (int64_t)(center + support + 0.5f);
        lo = lo < 0 ? 0 : lo;
        hi = hi > in ? in : hi;
        a->first[i] = lo;
        a->count[i] = hi - lo < a->taps ? hi - lo : a->taps;
        for (int64_t j = 0; j < a->count[i]; j++)
            total += w[j] = aa_cubic(((float)(j + lo) - center + 0.5f) * invscale);
        for (int64_t j = 0; total != 0.0f && j < a->count[i]; j++)
            w[j] /= total;
    }
    return true;
}

static void aa_axis_free(aa_axis *a)
{
    free(a->first);
    free(a->count);
    free(a->w);
}

/* dst[o * ostride] = resampled src[i * istride] for n independent lines (line step lstep). */
static void aa_apply(const aa_axis *a, int64_t out, const float *src, int64_t istride, float *dst, int64_t ostride)
{
    for (int64_t i = 0; i < out; i++) {
        const float *w = a->w + i * a->taps;
        float acc = src[a->first[i] * istride] * w[0];
        for (int64_t j = 1; j < a->count[i]; j++)
            acc += src[(a->first[i] + j) * istride] * w[j];
        dst[i * ostride] = acc;
    }
}

/* Resizes one channel plane [h, w] to [oh, ow]: rows (width) first, then columns, as torch. */
static void resize_plane(const aa_axis *ax, const aa_axis *ay, const float *src, int64_t h, int64_t w, float *tmp,
                         int64_t oh, int64_t ow, float *dst)
{
    for (int64_t y = 0; y < h; y++)
        aa_apply(ax, ow, src + y * w, 1, tmp + y * ow, 1);
    for (int64_t x = 0; x < ow; x++)
        aa_apply(ay, oh, tmp + x, ow, dst + x, ow);
}

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
static const float siglip_mean_std[3] = {0.5f, 0.5f, 0.5f};

/* clip_preprocess with the given mean and std. */
static sd_status preprocess(sd_context *ctx, const float *image, int64_t h, int64_t w, int size, bool crop,
                            const float *mean, const float *std, float *out)
{
    if (h < 1 || w < 1 || size < 1 || h > 1 << 16 || w > 1 << 16)
        return sd_set_error(ctx, SD_ERR_INVALID, "CLIP vision: cannot preprocess a %lldx%lld image", (long long)w,
                            (long long)h);
    int64_t oh = size, ow = size;
    bool resize = h != size || w != size;
    if (resize && crop) {
        double scale = (double)size / (double)(h < w ? h : w);
        oh = (int64_t)nearbyint(scale * (double)h); /* Python's round(): half to even */
        ow = (int64_t)nearbyint(scale * (double)w);
    }
    if (!resize)
        oh = h, ow = w;
    float *planes = malloc((size_t)(h * w) * sizeof *planes), *tmp = malloc((size_t)(h * ow) * sizeof *tmp);
    float *res = malloc((size_t)(oh * ow) * sizeof *res);
    aa_axis ax = {0}, ay = {0};
    bool ok = planes && tmp && res && (!resize || (aa_axis_init(&ax, w, ow) && aa_axis_init(&ay, h, oh)));
    int64_t top = (oh - size) / 2, left = (ow - size) / 2;
    for (int c = 0; ok && c < 3; c++) {
        for (int64_t i = 0; i < h * w; i++)
            planes[i] = image[i * 3 + c];
        if (resize)
            resize_plane(&ax, &ay, planes, h, w, tmp, oh, ow, res);
        else
            memcpy(res, planes, (size_t)(h * w) * sizeof *res);
        for (int64_t y = 0; y < size; y++)
            for (int64_t x = 0; x < size; x++) {
                float v = 255.0f * res[(y + top) * ow + x + left];
                v = nearbyintf(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v) / 255.0f;
                out[((int64_t)c * size + y) * size + x] = (v - mean[c]) / std[c];
            }
    }
    aa_axis_free(&ax);
    aa_axis_free(&ay);
    free(planes);
    free(tmp);
    free(res);
    return ok ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
}

sd_status sd_clip_vision_preprocess(sd_context *ctx, const float *image, int64_t h, int64_t w, int size, bool crop,
                                    float *out)
{
    return preprocess(ctx, image, h, w, size, crop, clip_mean, clip_std, out);
}

sd_status sd_clip_vision_preprocess_for(sd_context *ctx, const sd_clip_vision_config *cfg, const float *image,
                                        int64_t h, int64_t w, bool crop, float *out)
{
    const float *mean = cfg->siglip ? siglip_mean_std : clip_mean, *std = cfg->siglip ? siglip_mean_std : clip_std;
    return preprocess(ctx, image, h, w, cfg->image_size, crop, mean, std, out);
}
