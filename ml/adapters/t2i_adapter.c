/* T2I-Adapters (full and light) on the op API. See t2i_adapter.h. */
#include "ml/adapters/t2i_adapter.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 16384
#define MAX_LIGHT_RB 16

struct sd_t2i_adapter {
    sd_context *ctx;
    sd_safetensors *alias; /* diffusers layout: the file's tensors under ComfyUI's names */
    const sd_safetensors *st;
    sd_dtype dtype;
    sd_t2i_config cfg;
    sd_weights *w; /* created on the first forward */
};

bool sd_t2i_adapter_detect(const sd_safetensors *st)
{
    return sd_safetensors_find(st, "adapter.body.0.resnets.0.block1.weight") ||
           sd_safetensors_find(st, "body.0.in_conv.weight") || sd_safetensors_find(st, "conv_in.weight");
}

/* ComfyUI's prefix mapping of a diffusers name into out; false when no prefix matches. */
static bool comfy_name(void *user, const char *name, char *out, size_t size)
{
    (void)user;
    int i, j, n = 0;
    if (sscanf(name, "adapter.body.%d.resnets.%d.%n", &i, &j, &n) == 2 && n > 0 && i >= 0 && i < 4 && j >= 0 && j < 2)
        return (size_t)snprintf(out, size, "body.%d.%s", 2 * i + j, name + n) < size;
    n = 0;
    if (sscanf(name, "adapter.body.%d.%n", &i, &n) == 1 && n > 0 && i >= 0 && i < 4)
        return (size_t)snprintf(out, size, "body.%d.%s", 2 * i, name + n) < size;
    if (strncmp(name, "adapter.", 8) == 0)
        return (size_t)snprintf(out, size, "%s", name + 8) < size;
    return false;
}

/* ---- layout checks ---- */

/* Checks the conv <base>.weight [o, i, k, k] and <base>.bias [o]. */
static sd_status expect_conv(sd_context *ctx, const sd_safetensors *st, const char *base, int64_t o, int64_t i,
                             int64_t k)
{
    char name[128];
    snprintf(name, sizeof name, "%s.weight", base);
    const sd_st_tensor *w = sd_safetensors_find(st, name);
    bool ok = w && w->ndim == 4 && sd_st_dtype_is_weight(w->dtype) && w->shape[0] == o && w->shape[1] == i &&
              w->shape[2] == k && w->shape[3] == k;
    if (ok) {
        snprintf(name, sizeof name, "%s.bias", base);
        const sd_st_tensor *b = sd_safetensors_find(st, name);
        ok = b && b->ndim == 1 && sd_st_dtype_is_weight(b->dtype) && b->shape[0] == o;
    }
    if (ok)
        return SD_OK;
    return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor '%s' is %s (expected [%lld, %lld, %lld, %lld])",
                        sd_safetensors_path(st), name, sd_safetensors_find(st, name) ? "misshapen" : "missing",
                        (long long)o, (long long)i, (long long)k, (long long)k);
}

static sd_status expectf(sd_context *ctx, const sd_safetensors *st, int64_t o, int64_t i, int64_t k, const char *fmt,
                         ...) __attribute__((format(printf, 6, 7)));

static sd_status expectf(sd_context *ctx, const sd_safetensors *st, int64_t o, int64_t i, int64_t k, const char *fmt,
                         ...)
{
    char base[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    return expect_conv(ctx, st, base, o, i, k);
}

static sd_status inspect_full(sd_context *ctx, const sd_safetensors *st, sd_t2i_config *c)
{
    const sd_st_tensor *in = sd_safetensors_find(st, "conv_in.weight"), *b2 = sd_safetensors_find(st, "body.0.block2.weight");
    if (!in || in->ndim != 4 || in->shape[0] < 1 || in->shape[0] > MAX_WIDTH / 4 || !b2 || b2->ndim != 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor '%s' is missing or misshapen",
                            sd_safetensors_path(st), !in || in->ndim != 4 ? "conv_in.weight" : "body.0.block2.weight");
    c->cin = (int)in->shape[1];
    c->ksize = (int)b2->shape[2];
    c->xl = c->cin == 256 || c->cin == 768; /* ComfyUI's test */
    c->unshuffle = c->xl ? 16 : 8;
    c->nums_rb = 2;
    int64_t c0 = in->shape[0];
    for (int l = 0; l < SD_T2I_LEVELS; l++)
        c->width[l] = (int)(c0 << (l < 2 ? l : 2));
    c->use_conv = false;
    for (size_t i = 0; i < sd_safetensors_count(st) && !c->use_conv; i++) {
        const char *n = sd_safetensors_at(st, i)->name;
        size_t len = strlen(n);
        c->use_conv = len >= 18 && strcmp(n + len - 18, "down_opt.op.weight") == 0;
    }
    if (c->ksize != 1 && c->ksize != 3)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor 'body.0.block2.weight' has kernel %d (1 or 3)",
                            sd_safetensors_path(st), c->ksize);
    sd_status s = expect_conv(ctx, st, "conv_in", c0, c->cin, 3);
    for (int l = 0; !s && l < SD_T2I_LEVELS; l++)
        for (int j = 0; !s && j < c->nums_rb; j++) {
            int k = l * c->nums_rb + j;
            int64_t in_c = j == 0 && l > 0 ? c->width[l - 1] : c->width[l], out_c = c->width[l];
            bool down = j == 0 && (c->xl ? l == 2 : l > 0);
            if (down && c->use_conv)
                s = expectf(ctx, st, in_c, in_c, 3, "body.%d.down_opt.op", k);
            if (!s && in_c != out_c)
                s = expectf(ctx, st, out_c, in_c, c->ksize, "body.%d.in_conv", k);
            if (!s)
                s = expectf(ctx, st, out_c, out_c, 3, "body.%d.block1", k);
            if (!s)
                s = expectf(ctx, st, out_c, out_c, c->ksize, "body.%d.block2", k);
        }
    return s;
}

static sd_status inspect_light(sd_context *ctx, const sd_safetensors *st, sd_t2i_config *c)
{
    const sd_st_tensor *in = sd_safetensors_find(st, "body.0.in_conv.weight");
    if (!in || in->ndim != 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor 'body.0.in_conv.weight' is misshapen",
                            sd_safetensors_path(st));
    c->light = true;
    c->cin = (int)in->shape[1];
    c->unshuffle = 8;
    c->nums_rb = 0;
    while (c->nums_rb < MAX_LIGHT_RB && sd_safetensors_findf(st, "body.0.body.%d.block1.weight", c->nums_rb))
        c->nums_rb++;
    if (c->nums_rb < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor 'body.0.body.0.block1.weight' is missing",
                            sd_safetensors_path(st));
    sd_status s = SD_OK;
    int64_t prev = c->cin;
    for (int l = 0; !s && l < SD_T2I_LEVELS; l++) {
        const sd_st_tensor *out = sd_safetensors_findf(st, "body.%d.out_conv.weight", l);
        if (!out || out->ndim != 4 || out->shape[0] < 4 || out->shape[0] > MAX_WIDTH)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter tensor 'body.%d.out_conv.weight' is %s",
                                sd_safetensors_path(st), l, out ? "misshapen" : "missing");
        c->width[l] = (int)out->shape[0];
        int64_t inter = c->width[l] / 4;
        s = expectf(ctx, st, inter, prev, 1, "body.%d.in_conv", l);
        for (int j = 0; !s && j < c->nums_rb; j++) {
            s = expectf(ctx, st, inter, inter, 3, "body.%d.body.%d.block1", l, j);
            if (!s)
                s = expectf(ctx, st, inter, inter, 3, "body.%d.body.%d.block2", l, j);
        }
        if (!s)
            s = expectf(ctx, st, c->width[l], inter, 1, "body.%d.out_conv", l);
        prev = c->width[l];
    }
    return s;
}

sd_status sd_t2i_adapter_new(sd_context *ctx, const sd_safetensors *st, sd_dtype dtype, sd_t2i_adapter **out)
{
    *out = NULL;
    sd_t2i_adapter *a = calloc(1, sizeof *a);
    if (!a)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    a->ctx = ctx;
    a->dtype = dtype;
    sd_status s = SD_OK;
    if (sd_safetensors_find(st, "adapter.body.0.resnets.0.block1.weight"))
        s = sd_safetensors_alias_map(ctx, st, comfy_name, NULL, &a->alias);
    a->st = a->alias ? a->alias : st;
    if (!s)
        s = sd_safetensors_find(a->st, "body.0.in_conv.weight") ? inspect_light(ctx, a->st, &a->cfg)
                                                                 : inspect_full(ctx, a->st, &a->cfg);
    sd_t2i_config *c = &a->cfg;
    c->input_channels = s ? 0 : c->cin / (c->unshuffle * c->unshuffle);
    if (!s && (c->input_channels < 1 || c->cin != c->input_channels * c->unshuffle * c->unshuffle))
        s = sd_set_error(ctx, SD_ERR_INVALID, "%s: T2I-Adapter takes %d channels, not a multiple of %d",
                         sd_safetensors_path(st), c->cin, c->unshuffle * c->unshuffle);
    static const int sd1_blocks[SD_T2I_LEVELS] = {2, 5, 8, 11}, xl_blocks[SD_T2I_LEVELS] = {3, 5, 8, -1};
    c->input_blocks = c->xl ? 9 : 12;
    memcpy(c->feature_block, c->xl ? xl_blocks : sd1_blocks, sizeof c->feature_block);
    if (s) {
        sd_t2i_adapter_free(a);
        return s;
    }
    *out = a;
    return SD_OK;
}

void sd_t2i_adapter_free(sd_t2i_adapter *a)
{
    if (!a)
        return;
    sd_weights_free(a->w);
    sd_safetensors_close(a->alias);
    free(a);
}

const sd_t2i_config *sd_t2i_adapter_config(const sd_t2i_adapter *a)
{
    return &a->cfg;
}

void sd_t2i_adapter_hint_size(const sd_t2i_adapter *a, int64_t h, int64_t w, int64_t *hint_h, int64_t *hint_w)
{
    int64_t u = a->cfg.unshuffle;
    *hint_h = (8 * h + u - 1) / u * u;
    *hint_w = (8 * w + u - 1) / u * u;
}

/* ---- forward ---- */

/* *x = conv <base>(*x) (kernel k, "same" padding, stride), replacing *x; ReLU when relu. */
static sd_status conv(sd_t2i_adapter *a, sd_cl *cl, const char *base, int stride, bool relu, sd_dtensor **x)
{
    const sd_dtensor *w, *b;
    sd_dtensor *y = NULL;
    sd_status s = sd_weights_getf(a->w, &w, "%s.weight", base);
    if (!s)
        s = sd_weights_getf(a->w, &b, "%s.bias", base);
    int pad = s ? 0 : (int)(w->shape[3] / 2);
    sd_conv2d_params p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad};
    if (!s)
        s = sd_op_conv2d(cl, *x, w, b, &p, &y);
    if (!s && relu)
        s = sd_op_leaky_relu_into(cl, y, 0.0f, y, 0);
    sd_dtensor_free(*x);
    *x = y;
    return s;
}

/* *x = block2(relu(block1(*x))) + *x for the block at base. */
static sd_status resnet(sd_t2i_adapter *a, sd_cl *cl, const char *base, sd_dtensor **x)
{
    char name[96];
    sd_dtensor *h = NULL, *sum = NULL;
    sd_status s = sd_dtensor_new(cl, SD_DTYPE_F32, (*x)->ndim, (*x)->shape, &h);
    if (!s)
        s = sd_dtensor_copy(h, *x);
    snprintf(name, sizeof name, "%s.block1", base);
    if (!s)
        s = conv(a, cl, name, 1, true, &h);
    snprintf(name, sizeof name, "%s.block2", base);
    if (!s)
        s = conv(a, cl, name, 1, false, &h);
    if (!s)
        s = sd_op_binary(cl, SD_BINARY_ADD, h, *x, &sum);
    sd_dtensor_free(h);
    if (!s) {
        sd_dtensor_free(*x);
        *x = sum;
    }
    return s;
}

static sd_status avg_pool(sd_cl *cl, sd_dtensor **x)
{
    sd_dtensor *y = NULL;
    sd_status s = sd_op_avg_pool2x2(cl, *x, &y);
    sd_dtensor_free(*x);
    *x = y;
    return s;
}

/* Level l of a full adapter on *x. */
static sd_status level_full(sd_t2i_adapter *a, sd_cl *cl, int l, sd_dtensor **x)
{
    const sd_t2i_config *c = &a->cfg;
    char base[48], name[96];
    sd_status s = SD_OK;
    for (int j = 0; !s && j < c->nums_rb; j++) {
        int k = l * c->nums_rb + j;
        snprintf(base, sizeof base, "body.%d", k);
        bool down = j == 0 && (c->xl ? l == 2 : l > 0);
        snprintf(name, sizeof name, "%s.down_opt.op", base);
        if (down)
            s = c->use_conv ? conv(a, cl, name, 2, false, x) : avg_pool(cl, x);
        snprintf(name, sizeof name, "%s.in_conv", base);
        if (!s && j == 0 && l > 0 && c->width[l - 1] != c->width[l])
            s = conv(a, cl, name, 1, false, x);
        if (!s)
            s = resnet(a, cl, base, x);
    }
    return s;
}

/* Level l of a light adapter (an extractor) on *x. */
static sd_status level_light(sd_t2i_adapter *a, sd_cl *cl, int l, sd_dtensor **x)
{
    char name[96];
    sd_status s = l > 0 ? avg_pool(cl, x) : SD_OK;
    snprintf(name, sizeof name, "body.%d.in_conv", l);
    if (!s)
        s = conv(a, cl, name, 1, false, x);
    for (int j = 0; !s && j < a->cfg.nums_rb; j++) {
        snprintf(name, sizeof name, "body.%d.body.%d", l, j);
        s = resnet(a, cl, name, x);
    }
    snprintf(name, sizeof name, "body.%d.out_conv", l);
    if (!s)
        s = conv(a, cl, name, 1, false, x);
    return s;
}

sd_status sd_t2i_adapter_forward(sd_t2i_adapter *a, const sd_dtensor *hint, sd_dtensor *features[SD_T2I_LEVELS])
{
    const sd_t2i_config *c = &a->cfg;
    for (int l = 0; l < SD_T2I_LEVELS; l++)
        features[l] = NULL;
    char d[96];
    if (hint->ndim != 4 || hint->dtype != SD_DTYPE_F32 || hint->shape[1] != c->input_channels ||
        hint->shape[2] < 1 || hint->shape[3] < 1 || hint->shape[2] % c->unshuffle || hint->shape[3] % c->unshuffle)
        return sd_set_error(a->ctx, SD_ERR_INVALID,
                            "t2i-adapter: hint %s is not an f32 [B, %d, H, W] image with H, W multiples of %d",
                            sd_dtensor_describe(hint, d, sizeof d), c->input_channels, c->unshuffle);
    sd_cl *cl;
    sd_dtensor *x = NULL;
    sd_status s = sd_cl_get(a->ctx, &cl);
    if (!s && !a->w)
        s = sd_weights_new(cl, a->st, "", a->dtype, &a->w);
    if (!s) /* the sizes are multiples of r: pixel_unshuffle pads nothing */
        s = sd_op_pixel_unshuffle(cl, hint, c->unshuffle, &x);
    if (!s && !c->light)
        s = conv(a, cl, "conv_in", 1, false, &x);
    for (int l = 0; !s && l < SD_T2I_LEVELS; l++) {
        s = c->light ? level_light(a, cl, l, &x) : level_full(a, cl, l, &x);
        if (!s) {
            s = sd_dtensor_new(cl, SD_DTYPE_F32, 4, x->shape, &features[l]);
            if (!s)
                s = sd_dtensor_copy(features[l], x);
        }
    }
    sd_dtensor_free(x);
    if (s) {
        for (int l = 0; l < SD_T2I_LEVELS; l++)
            sd_dtensor_free(features[l]), features[l] = NULL;
        sd_error_prefix(a->ctx, "t2i-adapter");
    }
    return s;
}
