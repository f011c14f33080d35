/* RRDBNet (ESRGAN / Real-ESRGAN) on the op library; see esrgan.h.
 *
 * A dense block's input and its four growth outputs live in one [1, nf + 4 gc, H, W] tensor:
 * each LeakyReLU writes its conv's output into the next channel range (ops_esrgan.h), and conv J
 * reads the first nf + (J-1) gc channels, which for batch 1 are a prefix of that buffer (a
 * borrowed view, see prefix()). The block's residual update rewrites channels [0, nf) in place,
 * so the buffer carries the features from block to block. */
#include "ml/upscale/esrgan.h"
#include "core/checked.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LRELU_SLOPE 0.2f
#define RESIDUAL_SCALE 0.2f

struct sd_esrgan {
    sd_cl *cl;
    sd_esrgan_config cfg;
    sd_weights *w;
};

const char *sd_esrgan_layout_name(sd_esrgan_layout layout)
{
    switch (layout) {
    case SD_ESRGAN_NEW: return "new";
    case SD_ESRGAN_OLD: return "old";
    case SD_ESRGAN_BSRGAN: return "BSRGAN";
    }
    return "?";
}

/* ---- tensor names ---- */

typedef enum conv_role { ROLE_FIRST, ROLE_DENSE, ROLE_BODY, ROLE_UP, ROLE_HR, ROLE_LAST } conv_role;

/* The name (without ".weight"/".bias") of a conv in layout: block i, dense block k (1..3) and
 * conv j (1..5) for ROLE_DENSE, step u (1..n_up) for ROLE_UP. */
static void conv_name(sd_esrgan_layout layout, const sd_esrgan_config *c, conv_role role, int i, int k, int j,
                      char *buf, size_t size)
{
    int up_end = 3 * c->n_up; /* old layout: index of the last upsampling conv */
    switch (role) {
    case ROLE_FIRST: snprintf(buf, size, "%s", layout == SD_ESRGAN_OLD ? "model.0" : "conv_first"); break;
    case ROLE_DENSE:
        if (layout == SD_ESRGAN_NEW)
            snprintf(buf, size, "body.%d.rdb%d.conv%d", i, k, j);
        else if (layout == SD_ESRGAN_BSRGAN)
            snprintf(buf, size, "RRDB_trunk.%d.RDB%d.conv%d", i, k, j);
        else
            snprintf(buf, size, "model.1.sub.%d.RDB%d.conv%d.0", i, k, j);
        break;
    case ROLE_BODY:
        if (layout == SD_ESRGAN_OLD)
            snprintf(buf, size, "model.1.sub.%d", c->blocks);
        else
            snprintf(buf, size, "%s", layout == SD_ESRGAN_NEW ? "conv_body" : "trunk_conv");
        break;
    case ROLE_UP:
        if (layout == SD_ESRGAN_OLD)
            snprintf(buf, size, "model.%d", 3 * i);
        else
            snprintf(buf, size, layout == SD_ESRGAN_NEW ? "conv_up%d" : "upconv%d", i);
        break;
    case ROLE_HR:
        if (layout == SD_ESRGAN_OLD)
            snprintf(buf, size, "model.%d", up_end + 2);
        else
            snprintf(buf, size, "%s", layout == SD_ESRGAN_NEW ? "conv_hr" : "HRconv");
        break;
    case ROLE_LAST:
        if (layout == SD_ESRGAN_OLD)
            snprintf(buf, size, "model.%d", up_end + 4);
        else
            snprintf(buf, size, "conv_last");
        break;
    }
}

/* Input and output channels of a conv. */
static void conv_channels(const sd_esrgan_config *c, conv_role role, int j, int *cin, int *cout)
{
    *cin = c->nf;
    *cout = c->nf;
    if (role == ROLE_FIRST)
        *cin = c->in_nc;
    else if (role == ROLE_LAST)
        *cout = c->out_nc;
    else if (role == ROLE_DENSE) {
        *cin = c->nf + (j - 1) * c->gc;
        *cout = j == 5 ? c->nf : c->gc;
    }
}

/* Calls fn for every conv of the network in forward order; stops at the first failure. */
typedef sd_status (*conv_fn)(void *user, conv_role role, int i, int k, int j);

static sd_status each_conv(const sd_esrgan_config *c, conv_fn fn, void *user)
{
    sd_status st = fn(user, ROLE_FIRST, 0, 0, 0);
    for (int i = 0; !st && i < c->blocks; i++)
        for (int k = 1; !st && k <= 3; k++)
            for (int j = 1; !st && j <= 5; j++)
                st = fn(user, ROLE_DENSE, i, k, j);
    if (!st)
        st = fn(user, ROLE_BODY, 0, 0, 0);
    for (int u = 1; !st && u <= c->n_up; u++)
        st = fn(user, ROLE_UP, u, 0, 0);
    if (!st)
        st = fn(user, ROLE_HR, 0, 0, 0);
    if (!st)
        st = fn(user, ROLE_LAST, 0, 0, 0);
    return st;
}

/* ---- inspection ---- */

static const sd_st_tensor *find(const sd_safetensors *st, const char *fmt, int a, int b)
{
    char name[160];
    snprintf(name, sizeof name, fmt, a, b);
    return sd_safetensors_find(st, name);
}

/* Consecutive blocks present from 0 (fmt takes the block index). */
static int count_from(const sd_safetensors *st, const char *fmt, int first)
{
    int n = 0;
    while (n <= SD_ESRGAN_MAX_BLOCKS && find(st, fmt, n + first, 0))
        n++;
    return n;
}

/* The highest N of a tensor named "model.N.<...>", or -1. */
static int old_last_index(const sd_safetensors *st)
{
    int last = -1;
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const char *name = sd_safetensors_at(st, i)->name;
        char *end;
        if (strncmp(name, "model.", 6) != 0 || name[6] < '0' || name[6] > '9')
            continue;
        long n = strtol(name + 6, &end, 10);
        if (*end == '.' && n > last && n < 1000)
            last = (int)n;
    }
    return last;
}

typedef struct check_ctx {
    sd_context *ctx;
    const sd_safetensors *st;
    const sd_esrgan_config *cfg;
} check_ctx;

static void describe(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int d = 0; d < ndim && len < size; d++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "[", (long long)shape[d]);
    if (len < size)
        snprintf(buf + len, size - len, ndim ? "]" : "[]");
}

/* Checks that a conv's weight [cout, cin, 3, 3] and bias [cout] exist with weight dtypes. */
static sd_status check_conv(void *user, conv_role role, int i, int k, int j)
{
    const check_ctx *cc = user;
    char base[128], name[160], want[64], got[64];
    int cin, cout;
    conv_name(cc->cfg->layout, cc->cfg, role, i, k, j, base, sizeof base);
    conv_channels(cc->cfg, role, j, &cin, &cout);
    for (int part = 0; part < 2; part++) {
        snprintf(name, sizeof name, "%s.%s", base, part ? "bias" : "weight");
        int64_t shape[4] = {cout, cin, 3, 3};
        int ndim = part ? 1 : 4;
        describe(shape, ndim, want, sizeof want);
        const sd_st_tensor *t = sd_safetensors_find(cc->st, name);
        if (!t)
            return sd_set_error(cc->ctx, SD_ERR_INVALID, "%s: ESRGAN tensor '%s' %s is missing",
                                sd_safetensors_path(cc->st), name, want);
        bool same = t->ndim == ndim && sd_st_dtype_is_weight(t->dtype);
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == shape[d];
        if (!same) {
            describe(t->shape, t->ndim, got, sizeof got);
            return sd_set_error(cc->ctx, SD_ERR_INVALID, "%s: ESRGAN tensor '%s' is %s %s, expected %s F32/F16/BF16",
                                sd_safetensors_path(cc->st), name, got, sd_st_dtype_name(t->dtype), want);
        }
    }
    return SD_OK;
}

/* A dimension as an int for the range checks: anything above 1 << 20 reads as 1 << 20. */
static int small(int64_t v)
{
    return v > (1 << 20) ? 1 << 20 : (int)v;
}

static sd_status unknown_layout(sd_context *ctx, const sd_safetensors *st)
{
    size_t n = sd_safetensors_count(st);
    char found[400] = "";
    size_t len = 0;
    for (size_t i = 0; i < n && i < 3 && len < sizeof found; i++)
        len += (size_t)snprintf(found + len, sizeof found - len, "%s'%s'", i ? ", " : "", sd_safetensors_at(st, i)->name);
    return sd_set_error(ctx, SD_ERR_INVALID,
                        "%s: unknown upscale model layout: not an ESRGAN/RRDBNet file (looked for conv_first + "
                        "body.0.rdb1.conv1, conv_first + RRDB_trunk.0.RDB1.conv1, or model.0 + "
                        "model.1.sub.0.RDB1.conv1.0); found %zu tensors%s%s",
                        sd_safetensors_path(st), n, n ? ": " : "", found);
}

sd_status sd_esrgan_inspect(sd_context *ctx, const sd_safetensors *st, sd_esrgan_config *out)
{
    const char *path = sd_safetensors_path(st);
    sd_esrgan_config c = {0};
    const char *first_fmt, *dense_fmt;
    if (sd_safetensors_find(st, "conv_first.weight") && sd_safetensors_find(st, "body.0.rdb1.conv1.weight")) {
        c.layout = SD_ESRGAN_NEW;
        first_fmt = "conv_first.weight";
        dense_fmt = "body.%d.rdb1.conv1.weight";
    } else if (sd_safetensors_find(st, "conv_first.weight") &&
               sd_safetensors_find(st, "RRDB_trunk.0.RDB1.conv1.weight")) {
        c.layout = SD_ESRGAN_BSRGAN;
        first_fmt = "conv_first.weight";
        dense_fmt = "RRDB_trunk.%d.RDB1.conv1.weight";
    } else if (sd_safetensors_find(st, "model.0.weight") &&
               sd_safetensors_find(st, "model.1.sub.0.RDB1.conv1.0.weight")) {
        c.layout = SD_ESRGAN_OLD;
        first_fmt = "model.0.weight";
        dense_fmt = "model.1.sub.%d.RDB1.conv1.0.weight";
    } else if (sd_safetensors_find(st, "model.1.sub.0.RDB1.conv1x1.weight")) {
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ESRGAN+ files (RDB conv1x1 paths) are not supported", path);
    } else {
        return unknown_layout(ctx, st);
    }
    if (c.layout == SD_ESRGAN_OLD && sd_safetensors_find(st, "model.1.sub.0.RDB1.conv1x1.weight"))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ESRGAN+ files (RDB conv1x1 paths) are not supported", path);

    const sd_st_tensor *first = sd_safetensors_find(st, first_fmt);
    const sd_st_tensor *dense = find(st, dense_fmt, 0, 0);
    c.blocks = count_from(st, dense_fmt, 0);
    if (first->ndim != 4 || dense->ndim != 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ESRGAN convolution weights must be 4-D", path);
    c.nf = small(first->shape[0]);
    c.in_nc = small(first->shape[1]);
    c.gc = small(dense->shape[0]);
    if (c.layout == SD_ESRGAN_OLD) {
        int seq_len = old_last_index(st) + 1;
        if (seq_len < 5 || (seq_len - 5) % 3 != 0)
            return sd_set_error(ctx, SD_ERR_INVALID,
                                "%s: old-layout ESRGAN ends at model.%d; expected model.4, model.7, model.10, ... "
                                "(HR conv and last conv after the 2x steps)",
                                path, seq_len - 1);
        c.n_up = (seq_len - 5) / 3;
    } else {
        c.n_up = count_from(st, c.layout == SD_ESRGAN_NEW ? "conv_up%d.weight" : "upconv%d.weight", 1);
    }
    char last_name[64];
    conv_name(c.layout, &c, ROLE_LAST, 0, 0, 0, last_name, sizeof last_name);
    strcat(last_name, ".weight");
    const sd_st_tensor *last = sd_safetensors_find(st, last_name);
    if (!last || last->ndim != 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ESRGAN tensor '%s' is missing or not 4-D", path, last_name);
    c.out_nc = small(last->shape[0]);
    if (c.blocks < 1 || c.blocks > SD_ESRGAN_MAX_BLOCKS || c.nf < 1 || c.nf > SD_ESRGAN_MAX_FEATURES || c.gc < 1 ||
        c.gc > SD_ESRGAN_MAX_FEATURES || c.n_up > SD_ESRGAN_MAX_UP || c.in_nc < 1 || c.out_nc < 1 ||
        c.in_nc > 64 || c.out_nc > 64)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: ESRGAN with %d blocks, %d features, %d growth channels, %d 2x steps, %d -> %d "
                            "channels is outside the supported range (blocks 1..%d, features 1..%d, 2x steps 0..%d, "
                            "channels 1..64)",
                            path, c.blocks, c.nf, c.gc, c.n_up, c.in_nc, c.out_nc, SD_ESRGAN_MAX_BLOCKS,
                            SD_ESRGAN_MAX_FEATURES, SD_ESRGAN_MAX_UP);
    /* spandrel's rule: an input of 4x or 16x the output channels is a pixel-unshuffled image. */
    c.shuffle = c.in_nc == 4 * c.out_nc ? 2 : c.in_nc == 16 * c.out_nc ? 4 : 1;
    c.image_channels = c.in_nc / (c.shuffle * c.shuffle);
    if ((1 << c.n_up) < c.shuffle)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: ESRGAN with pixel-unshuffle %d and %d 2x steps would shrink the image", path,
                            c.shuffle, c.n_up);
    c.scale = (1 << c.n_up) / c.shuffle;
    check_ctx cc = {ctx, st, &c};
    sd_status s = each_conv(&c, check_conv, &cc);
    if (s)
        return s;
    *out = c;
    return SD_OK;
}

/* ---- model ---- */

sd_status sd_esrgan_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_esrgan **out)
{
    *out = NULL;
    sd_esrgan_config cfg;
    sd_status s = sd_esrgan_inspect(cl->ctx, st, &cfg);
    if (s)
        return s;
    sd_esrgan *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    m->cfg = cfg;
    if ((s = sd_weights_new(cl, st, "", weight_dtype, &m->w))) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_esrgan_free(sd_esrgan *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    free(m);
}

const sd_esrgan_config *sd_esrgan_config_of(const sd_esrgan *m)
{
    return &m->cfg;
}

/* The first c channels of t [1, C, H, W] as a tensor borrowing t's buffer: with batch 1 they are
 * a prefix of it. Never freed; valid while t lives. */
static sd_dtensor prefix(const sd_dtensor *t, int64_t c)
{
    sd_dtensor v = *t;
    v.shape[1] = c;
    v.numel = (size_t)(c * t->shape[2] * t->shape[3]);
    return v;
}

static void replace(sd_dtensor **x, sd_dtensor *y)
{
    sd_dtensor_free(*x);
    *x = y;
}

/* A 3x3 conv with padding 1 of the layer (role, i, k, j). */
static sd_status conv(sd_esrgan *m, conv_role role, int i, int k, int j, const sd_dtensor *x, sd_dtensor **out)
{
    char base[128];
    const sd_dtensor *w, *b;
    conv_name(m->cfg.layout, &m->cfg, role, i, k, j, base, sizeof base);
    sd_status s = sd_weights_getf(m->w, &w, "%s.weight", base);
    if (!s)
        s = sd_weights_getf(m->w, &b, "%s.bias", base);
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .act = SD_ACT_NONE};
    return s ? s : sd_op_conv2d(m->cl, x, w, b, &p, out);
}

/* One residual dense block (block i, dense block k) on cat, whose channels [0, nf) hold its
 * input and receive its output. */
static sd_status dense_block(sd_esrgan *m, int i, int k, sd_dtensor *cat)
{
    const sd_esrgan_config *c = &m->cfg;
    sd_status s = SD_OK;
    sd_dtensor *y = NULL;
    for (int j = 1; !s && j <= 4; j++) {
        sd_dtensor in = prefix(cat, c->nf + (j - 1) * c->gc);
        s = conv(m, ROLE_DENSE, i, k, j, &in, &y);
        if (!s)
            s = sd_op_leaky_relu_into(m->cl, y, LRELU_SLOPE, cat, c->nf + (j - 1) * c->gc);
        replace(&y, NULL);
    }
    if (!s)
        s = conv(m, ROLE_DENSE, i, k, 5, cat, &y);
    if (!s)
        s = sd_op_axpy_into(m->cl, RESIDUAL_SCALE, y, NULL, cat, 0);
    sd_dtensor_free(y);
    return s;
}

/* The RRDB trunk and conv_body on feat [1, nf, H, W]: *out = feat + conv_body(RRDBs(feat)). */
static sd_status trunk(sd_esrgan *m, const sd_dtensor *feat, sd_dtensor **out)
{
    const sd_esrgan_config *c = &m->cfg;
    int64_t shape[4] = {1, c->nf + 4 * c->gc, feat->shape[2], feat->shape[3]};
    sd_dtensor *cat = NULL, *saved = NULL, *body = NULL;
    sd_status s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 4, shape, &cat);
    if (!s)
        s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 4, feat->shape, &saved);
    if (!s)
        s = sd_op_leaky_relu_into(m->cl, feat, 1.0f, cat, 0); /* slope 1: a copy */
    for (int i = 0; !s && i < c->blocks; i++) {
        sd_dtensor x = prefix(cat, c->nf);
        s = sd_dtensor_copy(saved, &x);
        for (int k = 1; !s && k <= 3; k++)
            s = dense_block(m, i, k, cat);
        if (!s)
            s = sd_op_axpy_into(m->cl, RESIDUAL_SCALE, &x, saved, cat, 0);
    }
    if (!s) {
        sd_dtensor x = prefix(cat, c->nf);
        s = conv(m, ROLE_BODY, 0, 0, 0, &x, &body);
    }
    if (!s)
        s = sd_op_binary(m->cl, SD_BINARY_ADD, feat, body, out);
    sd_dtensor_free(cat);
    sd_dtensor_free(saved);
    sd_dtensor_free(body);
    return s;
}

sd_status sd_esrgan_forward(sd_esrgan *m, const sd_dtensor *x, sd_dtensor **out)
{
    *out = NULL;
    const sd_esrgan_config *c = &m->cfg;
    char d[96];
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != c->image_channels || x->shape[2] < 1 ||
        x->shape[3] < 1 || x->dtype != SD_DTYPE_F32)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "ESRGAN: input %s is not [1, %d, H, W] f32",
                            sd_dtensor_describe(x, d, sizeof d), c->image_channels);
    sd_dtensor *in = NULL, *feat = NULL, *f = NULL, *y = NULL, *cut = NULL;
    sd_status s = SD_OK;
    if (c->shuffle > 1)
        s = sd_op_pixel_unshuffle(m->cl, x, c->shuffle, &in);
    if (!s)
        s = conv(m, ROLE_FIRST, 0, 0, 0, in ? in : x, &feat);
    replace(&in, NULL);
    if (!s)
        s = trunk(m, feat, &f);
    replace(&feat, NULL);
    for (int u = 1; !s && u <= c->n_up; u++) {
        s = sd_op_upsample_nearest2x(m->cl, f, &y);
        replace(&f, NULL);
        if (!s)
            s = conv(m, ROLE_UP, u, 0, 0, y, &f);
        replace(&y, NULL);
        if (!s)
            s = sd_op_leaky_relu_into(m->cl, f, LRELU_SLOPE, f, 0);
    }
    if (!s)
        s = conv(m, ROLE_HR, 0, 0, 0, f, &y);
    replace(&f, NULL);
    if (!s)
        s = sd_op_leaky_relu_into(m->cl, y, LRELU_SLOPE, y, 0);
    if (!s)
        s = conv(m, ROLE_LAST, 0, 0, 0, y, &f);
    replace(&y, NULL);
    /* The unshuffle padded to a multiple of its factor: cut the output back to scale x the input. */
    int64_t oh = x->shape[2] * c->scale, ow = x->shape[3] * c->scale;
    if (!s && f->shape[2] != oh) {
        s = sd_op_slice(m->cl, f, 2, 0, oh, &cut);
        replace(&f, cut);
        cut = NULL;
    }
    if (!s && f->shape[3] != ow) {
        s = sd_op_slice(m->cl, f, 3, 0, ow, &cut);
        replace(&f, cut);
    }
    if (s) {
        sd_dtensor_free(f);
        sd_error_prefix(m->cl->ctx, "ESRGAN");
        return s;
    }
    *out = f;
    return SD_OK;
}

/* ---- tiled upscale (comfy.utils.tiled_scale) ---- */

/* Runs the network on the host tile src [th, tw, C] into dst [scale th, scale tw, out_nc]. */
static sd_status run_tile(sd_esrgan *m, const float *src, int64_t th, int64_t tw, float *dst)
{
    const sd_esrgan_config *c = &m->cfg;
    int64_t hwc[3] = {1, th * tw, c->image_channels}, nchw[4] = {1, c->image_channels, th, tw};
    sd_dtensor *t = NULL, *x = NULL, *y = NULL, *o = NULL;
    sd_status s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, hwc, &t);
    if (!s)
        s = sd_dtensor_upload(t, src);
    if (!s)
        s = sd_op_transpose(m->cl, t, NULL, &x);
    if (!s)
        s = sd_dtensor_reshape(x, 4, nchw);
    if (!s)
        s = sd_esrgan_forward(m, x, &y);
    if (!s) {
        int64_t flat[3] = {1, c->out_nc, y->shape[2] * y->shape[3]};
        s = sd_dtensor_reshape(y, 3, flat);
    }
    if (!s)
        s = sd_op_transpose(m->cl, y, NULL, &o);
    if (!s)
        s = sd_dtensor_download(o, dst);
    sd_dtensor_free(t);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    sd_dtensor_free(o);
    return s;
}

/* Tile starts along one axis of `size` (ComfyUI: range(0, size - overlap, tile - overlap), or
 * just 0 when the axis fits one tile); returns the count, starts in *pos (malloc'd). */
static int64_t tile_starts(int64_t size, int64_t tile, int64_t overlap, int64_t **pos)
{
    int64_t n = size <= tile ? 1 : (size - overlap + (tile - overlap) - 1) / (tile - overlap);
    *pos = malloc((size_t)n * sizeof **pos);
    for (int64_t i = 0; *pos && i < n; i++)
        (*pos)[i] = size <= tile ? 0 : i * (tile - overlap);
    return n;
}

/* Feather weight at output index t of a tile side of length len (ComfyUI's mask): (t + 1) / f
 * near the start, (len - t) / f near the end, their product where both apply; 1 when f >= len. */
static float feather(int64_t t, int64_t len, int64_t f)
{
    float v = 1.0f;
    if (f >= len)
        return v;
    if (t < f)
        v *= (float)((double)(t + 1) / (double)f);
    if (len - 1 - t < f)
        v *= (float)((double)(len - t) / (double)f);
    return v;
}

sd_status sd_esrgan_upscale(sd_esrgan *m, const float *img, int64_t h, int64_t w, int64_t tile, int64_t overlap,
                            sd_esrgan_progress progress, void *user, float *out)
{
    const sd_esrgan_config *c = &m->cfg;
    sd_context *ctx = m->cl->ctx;
    int64_t cin = c->image_channels, cout = c->out_nc, sc = c->scale;
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sd_set_error(ctx, SD_ERR_INVALID, "ESRGAN upscale: overlap %lld must be below the tile size %lld",
                            (long long)overlap, (long long)tile);
    if (h < 1 || w < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "ESRGAN upscale: empty image");
    if (h <= tile && w <= tile) {
        sd_status s = run_tile(m, img, h, w, out);
        if (!s && progress)
            s = progress(user, 1, 1);
        return s;
    }
    int64_t *ys = NULL, *xs = NULL;
    int64_t ny = tile_starts(h, tile, overlap, &ys), nx = tile_starts(w, tile, overlap, &xs);
    int64_t th_max = h < tile ? h : tile, tw_max = w < tile ? w : tile, oh = h * sc, ow = w * sc;
    int64_t fe = (int64_t)nearbyint((double)overlap * (double)sc); /* feather, output pixels */
    size_t out_n, in_tile_n, out_tile_n;
    sd_status s = SD_OK;
    float *div = NULL, *src = NULL, *dst = NULL;
    if (!sd_mul_size((size_t)oh * (size_t)ow, (size_t)cout, &out_n) ||
        !sd_mul_size((size_t)(th_max * tw_max), (size_t)cin, &in_tile_n) ||
        !sd_mul_size(in_tile_n / (size_t)cin * (size_t)(sc * sc), (size_t)cout, &out_tile_n)) {
        s = sd_set_error(ctx, SD_ERR_LIMIT, "ESRGAN upscale: %lldx%lld image too large", (long long)w, (long long)h);
        goto done;
    }
    div = calloc((size_t)(oh * ow), sizeof *div);
    src = malloc(in_tile_n * sizeof *src);
    dst = malloc(out_tile_n * sizeof *dst);
    if (!ys || !xs || !div || !src || !dst) {
        s = sd_set_error(ctx, SD_ERR_NOMEM, "ESRGAN upscale: out of memory");
        goto done;
    }
    memset(out, 0, out_n * sizeof *out);
    for (int64_t ty = 0; !s && ty < ny; ty++)
        for (int64_t tx = 0; !s && tx < nx; tx++) {
            int64_t y0 = ys[ty], x0 = xs[tx];
            int64_t th = h - y0 < tile ? h - y0 : tile, tw = w - x0 < tile ? w - x0 : tile;
            for (int64_t y = 0; y < th; y++)
                memcpy(src + (size_t)(y * tw * cin), img + (size_t)(((y0 + y) * w + x0) * cin),
                       (size_t)(tw * cin) * sizeof *src);
            if ((s = run_tile(m, src, th, tw, dst)))
                break;
            int64_t toh = th * sc, tow = tw * sc;
            for (int64_t y = 0; y < toh; y++) {
                float my = feather(y, toh, fe);
                for (int64_t x = 0; x < tow; x++) {
                    float wgt = my * feather(x, tow, fe);
                    size_t o = (size_t)((y0 * sc + y) * ow + x0 * sc + x);
                    const float *p = dst + (size_t)((y * tow + x) * cout);
                    for (int64_t ch = 0; ch < cout; ch++)
                        out[o * (size_t)cout + (size_t)ch] += p[ch] * wgt;
                    div[o] += wgt;
                }
            }
            if (progress)
                s = progress(user, (int)(ty * nx + tx + 1), (int)(ny * nx));
        }
    for (size_t o = 0; !s && o < (size_t)(oh * ow); o++)
        for (int64_t ch = 0; ch < cout; ch++)
            out[o * (size_t)cout + (size_t)ch] /= div[o];
done:
    free(ys);
    free(xs);
    free(div);
    free(src);
    free(dst);
    return s;
}

sd_status sd_esrgan_upscale_fit(sd_esrgan *m, const float *img, int64_t h, int64_t w, int64_t *tile, int64_t min_tile,
                                int64_t overlap, sd_esrgan_progress progress, void *user, float *out)
{
    sd_status s;
    while ((s = sd_esrgan_upscale(m, img, h, w, *tile, overlap, progress, user, out)) &&
           (s == SD_ERR_NOMEM || s == SD_ERR_LIMIT) && *tile / 2 >= min_tile && *tile / 2 > overlap) {
        *tile /= 2;
        sd_cl_pool_trim(m->cl);
    }
    return s;
}

/* ---- random weights ---- */

typedef struct layout_list {
    const sd_esrgan_config *cfg;
    sd_st_entry *entries;
    char (*names)[128];
    char (*seed_names)[128]; /* the new layout's name of each tensor */
    int64_t *fan_in;
    size_t n;
    sd_st_dtype dtype;
    uint64_t seed;
} layout_list;

static sd_status add_conv(void *user, conv_role role, int i, int k, int j)
{
    layout_list *l = user;
    char base[96], seed_base[96];
    int cin, cout;
    conv_name(l->cfg->layout, l->cfg, role, i, k, j, base, sizeof base);
    conv_name(SD_ESRGAN_NEW, l->cfg, role, i, k, j, seed_base, sizeof seed_base);
    conv_channels(l->cfg, role, j, &cin, &cout);
    for (int part = 0; part < 2; part++) {
        size_t e = l->n++;
        if (l->entries) {
            snprintf(l->names[e], sizeof l->names[e], "%s.%s", base, part ? "bias" : "weight");
            snprintf(l->seed_names[e], sizeof l->seed_names[e], "%s.%s", seed_base, part ? "bias" : "weight");
            l->entries[e] = (sd_st_entry){.name = l->names[e], .dtype = l->dtype, .ndim = part ? 1 : 4,
                                          .shape = {cout, cin, 3, 3}};
            l->fan_in[e] = (int64_t)cin * 9;
        }
    }
    return SD_OK;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static sd_status fill_random(void *user, size_t index, void *dst, size_t nbytes)
{
    const layout_list *l = user;
    uint64_t state = l->seed;
    for (const char *p = l->seed_names[index]; *p; p++) /* FNV-1a of the name, mixed with the seed */
        state = (state ^ (unsigned char)*p) * 0x100000001b3ull;
    double bound = 1.0 / sqrt((double)l->fan_in[index]);
    size_t esize = sd_st_dtype_size(l->dtype);
    unsigned char *out = dst;
    for (size_t i = 0; i < nbytes / esize; i++) {
        float v = (float)((2.0 * ((double)(splitmix64(&state) >> 11) * 0x1.0p-53) - 1.0) * bound);
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        if (l->dtype == SD_ST_F16)
            bits = sd_float_to_half(v);
        else if (l->dtype == SD_ST_BF16)
            bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16; /* round to nearest even */
        for (size_t b = 0; b < esize; b++)
            out[i * esize + b] = (unsigned char)(bits >> (8 * b));
    }
    return SD_OK;
}

sd_status sd_esrgan_write_random(sd_context *ctx, const char *path, const sd_esrgan_config *cfg, sd_st_dtype dtype,
                                 uint64_t seed)
{
    if (!sd_st_dtype_is_weight(dtype))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: weights must be F32, F16 or BF16", path);
    if (cfg->blocks < 1 || cfg->blocks > SD_ESRGAN_MAX_BLOCKS || cfg->nf < 1 || cfg->nf > SD_ESRGAN_MAX_FEATURES ||
        cfg->gc < 1 || cfg->gc > SD_ESRGAN_MAX_FEATURES || cfg->n_up < 0 || cfg->n_up > SD_ESRGAN_MAX_UP ||
        cfg->in_nc < 1 || cfg->in_nc > 64 || cfg->out_nc < 1 || cfg->out_nc > 64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ESRGAN configuration out of range", path);
    layout_list l = {.cfg = cfg, .dtype = dtype, .seed = seed};
    each_conv(cfg, add_conv, &l); /* count */
    size_t n = l.n;
    l.entries = calloc(n, sizeof *l.entries);
    l.names = calloc(n, sizeof *l.names);
    l.seed_names = calloc(n, sizeof *l.seed_names);
    l.fan_in = calloc(n, sizeof *l.fan_in);
    sd_status s;
    if (!l.entries || !l.names || !l.seed_names || !l.fan_in) {
        s = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    } else {
        l.n = 0;
        each_conv(cfg, add_conv, &l);
        char seed_text[32];
        snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
        const char *meta[] = {"format", "pt", "sdflow.random_seed", seed_text, NULL};
        s = sd_safetensors_write(ctx, path, l.entries, n, meta, fill_random, &l);
    }
    free(l.entries);
    free(l.names);
    free(l.seed_names);
    free(l.fan_in);
    return s;
}
