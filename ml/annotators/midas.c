/* MiDaS DPT-Hybrid on the op API. */
#include "ml/annotators/midas.h"
#include "ml/annotators/dpt.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_image.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKBONE "pretrained.model.patch_embed.backbone"
#define GN_GROUPS 32
#define GN_EPS 1e-5f
#define STD_EPS 1e-8

/* A weight-standardised convolution kernel of the backbone. */
typedef struct std_conv {
    const char *name; /* the file's tensor name (owned by the file) */
    sd_dtensor *w;
} std_conv;

struct sd_midas {
    sd_cl *cl;
    sd_midas_config cfg;
    sd_weights *w;
    sd_dpt dpt;
    float *pos; /* pretrained.model.pos_embed, [1 + grid^2, dim] */
    std_conv *convs;
    size_t n_convs;
};

/* ---- Inspection ---- */

static const sd_st_tensor *shaped(const sd_safetensors *st, const char *name, int ndim, const int64_t *shape)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    bool ok = t && t->ndim == ndim && sd_st_dtype_is_weight(t->dtype);
    for (int d = 0; ok && d < ndim; d++)
        ok = shape[d] < 0 || t->shape[d] == shape[d];
    return ok ? t : NULL;
}

/* Tensor `name` must have ndim dimensions equal to shape (-1: any); *t receives it. */
static sd_status expect(sd_context *ctx, const sd_safetensors *st, const char *name, int ndim, const int64_t *shape,
                        const sd_st_tensor **t)
{
    const sd_st_tensor *found = shaped(st, name, ndim, shape);
    if (t)
        *t = found;
    if (found)
        return SD_OK;
    if (!sd_safetensors_find(st, name))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a MiDaS DPT-Hybrid network: tensor '%s' is missing",
                            sd_safetensors_path(st), name);
    return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for MiDaS DPT-Hybrid",
                        sd_safetensors_path(st), name);
}

/* Conv `name`.weight [o, i, k, k] (-1: any), its first dimension into *o_out. */
static sd_status expect_conv(sd_context *ctx, const sd_safetensors *st, const char *name, int64_t o, int64_t i,
                             int64_t k, int64_t *o_out)
{
    char full[160];
    const sd_st_tensor *t = NULL;
    snprintf(full, sizeof full, "%s.weight", name);
    sd_status s = expect(ctx, st, full, 4, (const int64_t[]){o, i, k, k}, &t);
    if (!s && o_out)
        *o_out = t->shape[0];
    return s;
}

static sd_status inspect_backbone(sd_context *ctx, const sd_safetensors *st, sd_midas_config *c)
{
    int64_t stem = 0, in;
    char name[160];
    sd_status s = expect_conv(ctx, st, BACKBONE ".stem.conv", -1, 3, 7, &stem);
    if (s)
        return s;
    in = stem;
    for (int g = 0; g < SD_MIDAS_STAGES; g++) {
        int n = 0;
        int64_t out = 0, mid = 0;
        for (; n < SD_MIDAS_MAX_BLOCKS; n++) {
            snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.%d.conv1.weight", g, n);
            if (!sd_safetensors_find(st, name))
                break;
            snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.%d.conv1", g, n);
            if ((s = expect_conv(ctx, st, name, -1, in, 1, &mid)))
                return s;
            snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.%d.conv2", g, n);
            if ((s = expect_conv(ctx, st, name, mid, mid, 3, NULL)))
                return s;
            snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.%d.conv3", g, n);
            if ((s = expect_conv(ctx, st, name, -1, mid, 1, &out)))
                return s;
            if (n == 0) {
                snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.0.downsample.conv", g);
                if ((s = expect_conv(ctx, st, name, out, in, 1, NULL)))
                    return s;
            }
            if (mid % GN_GROUPS || out % GN_GROUPS)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: stage %d has widths that are not multiples of %d",
                                    sd_safetensors_path(st), g, GN_GROUPS);
            in = out;
        }
        if (n == 0) {
            snprintf(name, sizeof name, BACKBONE ".stages.%d.blocks.0.conv1.weight", g);
            return expect(ctx, st, name, 4, (const int64_t[]){-1, in, 1, 1}, NULL);
        }
        c->blocks[g] = n, c->width[g] = (int)out;
    }
    if (stem % GN_GROUPS)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: stem width %lld is not a multiple of %d", sd_safetensors_path(st),
                            (long long)stem, GN_GROUPS);
    c->stem = (int)stem;
    return SD_OK;
}

static sd_status inspect_vit(sd_context *ctx, const sd_safetensors *st, sd_midas_config *c)
{
    int64_t d = 0;
    const sd_st_tensor *pos = NULL;
    sd_status s = expect_conv(ctx, st, "pretrained.model.patch_embed.proj", -1, c->width[2], 1, &d);
    if (s)
        return s;
    if (d % 64 || d > 64 * 64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: ViT width %lld is not a multiple of 64", sd_safetensors_path(st),
                            (long long)d);
    if ((s = expect(ctx, st, "pretrained.model.cls_token", 3, (const int64_t[]){1, 1, d}, NULL)) ||
        (s = expect(ctx, st, "pretrained.model.pos_embed", 3, (const int64_t[]){1, -1, d}, &pos)))
        return s;
    int64_t n = pos->shape[1] - 1, g = (int64_t)lround(sqrt((double)n));
    if (n < 1 || g * g != n)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor 'pretrained.model.pos_embed' is not [1, 1 + g^2, dim]",
                            sd_safetensors_path(st));
    int b = 0;
    while (b < SD_MIDAS_MAX_BLOCKS && sd_safetensors_findf(st, "pretrained.model.blocks.%d.attn.qkv.weight", b))
        b++;
    if (b < 2)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: fewer than 2 ViT blocks", sd_safetensors_path(st));
    const char *ro[2] = {"pretrained.act_postprocess3.0.project.0.weight", "pretrained.act_postprocess4.0.project.0.weight"};
    for (int i = 0; i < 2; i++)
        if ((s = expect(ctx, st, ro[i], 2, (const int64_t[]){d, 2 * d}, NULL)))
            return s;
    if ((s = expect_conv(ctx, st, "pretrained.act_postprocess3.3", -1, d, 1, NULL)) ||
        (s = expect_conv(ctx, st, "pretrained.act_postprocess4.3", -1, d, 1, NULL)) ||
        (s = expect_conv(ctx, st, "pretrained.act_postprocess4.4", -1, -1, 3, NULL)))
        return s;
    c->dim = (int)d, c->heads = (int)(d / 64), c->depth = b, c->grid = (int)g;
    c->hooks[0] = 2 * b / 3, c->hooks[1] = b - 1;
    return SD_OK;
}

static sd_status inspect_decoder(sd_context *ctx, const sd_safetensors *st, sd_midas_config *c)
{
    int64_t f = 0, c3 = 0, c4 = 0;
    sd_status s;
    if ((s = expect_conv(ctx, st, "scratch.layer1_rn", -1, c->width[0], 3, &f)) ||
        (s = expect_conv(ctx, st, "scratch.layer2_rn", f, c->width[1], 3, NULL)) ||
        (s = expect_conv(ctx, st, "pretrained.act_postprocess3.3", -1, c->dim, 1, &c3)) ||
        (s = expect_conv(ctx, st, "pretrained.act_postprocess4.3", -1, c->dim, 1, &c4)) ||
        (s = expect_conv(ctx, st, "pretrained.act_postprocess4.4", c4, c4, 3, NULL)) ||
        (s = expect_conv(ctx, st, "scratch.layer3_rn", f, c3, 3, NULL)) ||
        (s = expect_conv(ctx, st, "scratch.layer4_rn", f, c4, 3, NULL)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv.0", f / 2, f, 3, NULL)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv.2", 32, f / 2, 3, NULL)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv.4", 1, 32, 1, NULL)))
        return s;
    char name[96];
    for (int i = 1; i <= 4; i++) {
        snprintf(name, sizeof name, "scratch.refinenet%d.out_conv", i);
        if ((s = expect_conv(ctx, st, name, f, f, 1, NULL)))
            return s;
        for (int u = i == 4 ? 2 : 1; u <= 2; u++)
            for (int k = 1; k <= 2; k++) {
                snprintf(name, sizeof name, "scratch.refinenet%d.resConfUnit%d.conv%d", i, u, k);
                if ((s = expect_conv(ctx, st, name, f, f, 3, NULL)))
                    return s;
            }
    }
    c->features = (int)f;
    return SD_OK;
}

sd_status sd_midas_inspect(sd_context *ctx, const sd_safetensors *st, sd_midas_config *out)
{
    sd_midas_config c = {0};
    sd_status s = inspect_backbone(ctx, st, &c);
    if (!s && !(s = inspect_vit(ctx, st, &c)) && !(s = inspect_decoder(ctx, st, &c)))
        *out = c;
    return s;
}

/* ---- Loading ---- */

/* StdConv2d's kernel: each output channel's weights less their mean, over sqrt(var + 1e-8). */
static void standardise(float *w, int64_t o, int64_t n)
{
    for (int64_t c = 0; c < o; c++) {
        float *r = w + c * n;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            mean += r[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++)
            var += (r[i] - mean) * (r[i] - mean);
        double inv = 1.0 / sqrt(var / (double)n + STD_EPS);
        for (int64_t i = 0; i < n; i++)
            r[i] = (float)((r[i] - mean) * inv);
    }
}

/* Uploads every 4-D tensor of the backbone standardised. */
static sd_status load_std_convs(sd_midas *m, const sd_safetensors *st)
{
    size_t n = sd_safetensors_count(st), len = strlen(BACKBONE);
    if (!(m->convs = calloc(n, sizeof *m->convs)))
        return sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (t->ndim != 4 || strncmp(t->name, BACKBONE ".", len + 1))
            continue;
        float *host = malloc(sizeof *host * t->numel);
        sd_status s = host ? sd_safetensors_read_f32(m->cl->ctx, st, t, host, t->numel)
                           : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
        if (!s) {
            standardise(host, t->shape[0], (int64_t)t->numel / t->shape[0]);
            s = sd_dpt_upload(m->cl, 4, t->shape, host, &m->convs[m->n_convs].w);
        }
        free(host);
        if (s)
            return s;
        m->convs[m->n_convs++].name = t->name;
    }
    return SD_OK;
}

sd_status sd_midas_new(sd_cl *cl, const sd_safetensors *st, sd_midas **out)
{
    sd_status s;
    *out = NULL;
    sd_midas *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if (!(s = sd_midas_inspect(cl->ctx, st, &m->cfg))) {
        const sd_st_tensor *pos = sd_safetensors_find(st, "pretrained.model.pos_embed");
        if (!(m->pos = malloc(sizeof *m->pos * pos->numel)))
            s = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        else
            s = sd_safetensors_read_f32(cl->ctx, st, pos, m->pos, pos->numel);
    }
    if (!s && !(s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &m->w))) {
        m->dpt = (sd_dpt){cl, m->w};
        s = load_std_convs(m, st);
    }
    if (s) {
        sd_midas_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_midas_free(sd_midas *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_convs; i++)
        sd_dtensor_free(m->convs[i].w);
    free(m->convs);
    sd_weights_free(m->w);
    free(m->pos);
    free(m);
}

/* ---- Backbone ---- */

static const sd_dtensor *std_weight(const sd_midas *m, const char *name)
{
    for (size_t i = 0; i < m->n_convs; i++)
        if (!strcmp(m->convs[i].name, name))
            return m->convs[i].w;
    return NULL;
}

/* TF "same" padding of one side of size n for kernel k and stride s: before, after. */
static void same_pad(int64_t n, int k, int s, int64_t *before, int64_t *after)
{
    int64_t total = ((n + s - 1) / s - 1) * s + k - n;
    total = total < 0 ? 0 : total;
    *before = total / 2, *after = total - total / 2;
}

/* x [1, C, H, W] zero-padded by top/bottom/left/right: *out new. */
static sd_status pad_nchw(sd_cl *cl, sd_dtensor *x, int64_t t, int64_t b, int64_t l, int64_t r, sd_dtensor **out)
{
    int64_t c = x->shape[1], h = x->shape[2], w = x->shape[3];
    sd_status s = sd_dtensor_reshape(x, 4, (const int64_t[]){c, h, w, 1});
    if (!s)
        s = sd_op_pad(cl, x, t, b, l, r, SD_PAD_CONSTANT, 0.0f, out);
    sd_dtensor_reshape(x, 4, (const int64_t[]){1, c, h, w});
    if (!s)
        s = sd_dtensor_reshape(*out, 4, (const int64_t[]){1, c, h + t + b, w + l + r});
    return s;
}

/* StdConv2dSame <prefix>.<conv> (k x k, stride), then GroupNorm <prefix>.<norm> with ReLU when
 * asked: *out new. x keeps its shape (pad_nchw reshapes it only for the padding). */
static sd_status std_conv_norm(sd_midas *m, const sd_dtensor *x, const char *prefix, const char *conv,
                               const char *norm, int stride, bool relu, sd_dtensor **out)
{
    char name[192];
    snprintf(name, sizeof name, "%s.%s.weight", prefix, conv);
    const sd_dtensor *w = std_weight(m, name), *g = NULL, *b = NULL;
    if (!w)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "MiDaS: tensor '%s' is missing", name);
    int k = (int)w->shape[2];
    int64_t t, bo, l, r;
    same_pad(x->shape[2], k, stride, &t, &bo);
    same_pad(x->shape[3], k, stride, &l, &r);
    sd_dtensor *p = NULL, *c = NULL;
    sd_status s = SD_OK;
    int pad = 0;
    if (t == bo && l == r)
        pad = (int)t;
    else
        s = pad_nchw(m->cl, (sd_dtensor *)x, t, bo, l, r, &p);
    sd_conv2d_params cp = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad};
    if (!s)
        s = sd_op_conv2d(m->cl, p ? p : x, w, NULL, &cp, &c);
    if (!s && !(s = sd_weights_getf(m->w, &g, "%s.%s.weight", prefix, norm)) &&
        !(s = sd_weights_getf(m->w, &b, "%s.%s.bias", prefix, norm)) &&
        !(s = sd_op_group_norm(m->cl, c, GN_GROUPS, GN_EPS, g, b, false, out)) && relu)
        s = sd_op_leaky_relu_into(m->cl, *out, 0.0f, *out, 0);
    sd_dtensor_free(p);
    sd_dtensor_free(c);
    return s;
}

/* max_pool2d 3x3 stride 2 with "same" padding of x [1, C, H, W] holding values >= 0 (after a
 * ReLU, so zero padding equals the -inf padding), on the host: *out new. */
static sd_status max_pool_same(sd_midas *m, const sd_dtensor *x, sd_dtensor **out)
{
    int64_t c = x->shape[1], h = x->shape[2], w = x->shape[3], oh = (h + 1) / 2, ow = (w + 1) / 2, t, b, l, r;
    same_pad(h, 3, 2, &t, &b);
    same_pad(w, 3, 2, &l, &r);
    float *in = malloc(sizeof *in * x->numel), *o = malloc(sizeof *o * (size_t)(c * oh * ow));
    sd_status s = !in || !o ? sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory") : sd_dtensor_download(x, in);
    for (int64_t ch = 0; !s && ch < c; ch++)
        for (int64_t y = 0; y < oh; y++)
            for (int64_t xx = 0; xx < ow; xx++) {
                float v = 0.0f;
                for (int64_t dy = 0; dy < 3; dy++)
                    for (int64_t dx = 0; dx < 3; dx++) {
                        int64_t sy = 2 * y + dy - t, sx = 2 * xx + dx - l;
                        if (sy >= 0 && sy < h && sx >= 0 && sx < w && in[(ch * h + sy) * w + sx] > v)
                            v = in[(ch * h + sy) * w + sx];
                    }
                o[(ch * oh + y) * ow + xx] = v;
            }
    if (!s)
        s = sd_dpt_upload(m->cl, 4, (const int64_t[]){1, c, oh, ow}, o, out);
    free(in), free(o);
    return s;
}

/* One bottleneck: relu(norm3(conv3(relu(norm2(conv2(relu(norm1(conv1 x))))))) + shortcut), the
 * shortcut the downsample of x on a stage's first block. *x is replaced. */
static sd_status bottleneck(sd_midas *m, int stage, int block, sd_dtensor **x)
{
    char p[128];
    snprintf(p, sizeof p, BACKBONE ".stages.%d.blocks.%d", stage, block);
    int stride = block == 0 && stage > 0 ? 2 : 1;
    sd_dtensor *sc = NULL, *a = NULL, *b = NULL;
    sd_status s = block == 0 ? std_conv_norm(m, *x, p, "downsample.conv", "downsample.norm", stride, false, &sc) : SD_OK;
    if (!s && !(s = std_conv_norm(m, *x, p, "conv1", "norm1", 1, true, &a)) &&
        !(s = std_conv_norm(m, a, p, "conv2", "norm2", stride, true, &b))) {
        sd_dtensor_free(a);
        a = NULL;
        if (!(s = std_conv_norm(m, b, p, "conv3", "norm3", 1, false, &a)) &&
            !(s = sd_op_axpy_into(m->cl, 1.0f, sc ? sc : *x, NULL, a, 0)) &&
            !(s = sd_op_leaky_relu_into(m->cl, a, 0.0f, a, 0))) {
            sd_dtensor_free(*x);
            *x = a;
            a = NULL;
        }
    }
    sd_dtensor_free(sc), sd_dtensor_free(a), sd_dtensor_free(b);
    return s;
}

/* The backbone on x: stage outputs into stages[0..2] (new). */
static sd_status backbone(sd_midas *m, const sd_dtensor *x, sd_dtensor **stages)
{
    sd_dtensor *h = NULL, *p = NULL;
    sd_status s = std_conv_norm(m, x, BACKBONE ".stem", "conv", "norm", 2, true, &h);
    if (!s && !(s = max_pool_same(m, h, &p))) {
        sd_dtensor_free(h);
        h = p;
    }
    for (int g = 0; !s && g < SD_MIDAS_STAGES; g++) {
        for (int b = 0; !s && b < m->cfg.blocks[g]; b++)
            s = bottleneck(m, g, b, &h);
        if (!s)
            s = sd_op_scale(m->cl, h, 1.0f, 0.0f, &stages[g]);
    }
    sd_dtensor_free(h);
    return s;
}

/* ---- ViT and decoder ---- */

/* _resize_pos_embed: the cls row, then the grid resized to gh x gw by torch's bilinear
 * interpolation (align_corners False). out: [1 + gh gw, dim]. */
static void position_embedding(const sd_midas *m, int64_t gh, int64_t gw, float *out)
{
    int64_t d = m->cfg.dim, g = m->cfg.grid;
    memcpy(out, m->pos, sizeof *out * (size_t)d);
    const float *grid = m->pos + d;
    float sh = (float)g / (float)gh, sw = (float)g / (float)gw;
    for (int64_t y = 0; y < gh; y++) {
        float fy = sh * ((float)y + 0.5f) - 0.5f;
        fy = fy < 0 ? 0 : fy;
        int64_t y0 = (int64_t)fy, y1 = y0 + (y0 < g - 1);
        float ly1 = fy - (float)y0, ly0 = 1.0f - ly1;
        for (int64_t x = 0; x < gw; x++) {
            float fx = sw * ((float)x + 0.5f) - 0.5f;
            fx = fx < 0 ? 0 : fx;
            int64_t x0 = (int64_t)fx, x1 = x0 + (x0 < g - 1);
            float lx1 = fx - (float)x0, lx0 = 1.0f - lx1;
            float *o = out + (1 + y * gw + x) * d;
            for (int64_t c = 0; c < d; c++)
                o[c] = ly0 * (lx0 * grid[(y0 * g + x0) * d + c] + lx1 * grid[(y0 * g + x1) * d + c]) +
                       ly1 * (lx0 * grid[(y1 * g + x0) * d + c] + lx1 * grid[(y1 * g + x1) * d + c]);
        }
    }
}

/* Patch projection of the last stage, cls token and positions: *t new [1, 1 + gh gw, D]. */
static sd_status vit_tokens(sd_midas *m, const sd_dtensor *f, sd_dtensor **t)
{
    int64_t d = m->cfg.dim, gh = f->shape[2], gw = f->shape[3], n = 1 + gh * gw;
    const sd_dtensor *cls;
    sd_dtensor *p = NULL, *pt = NULL, *cat = NULL, *pos = NULL;
    float *host = malloc(sizeof *host * (size_t)(n * d));
    sd_status s = host ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s && !(s = sd_dpt_conv(&m->dpt, f, "pretrained.model.patch_embed.proj", NULL, 1, 0, true, false, &p)) &&
        !(s = sd_weights_get_f32(m->w, "pretrained.model.cls_token", &cls)) &&
        !(s = sd_dtensor_reshape(p, 3, (const int64_t[]){1, d, gh * gw})) && !(s = sd_op_transpose(m->cl, p, NULL, &pt)) &&
        !(s = sd_op_concat(m->cl, cls, pt, 1, &cat))) {
        position_embedding(m, gh, gw, host);
        if (!(s = sd_dpt_upload(m->cl, 3, (const int64_t[]){1, n, d}, host, &pos)))
            s = sd_op_binary(m->cl, SD_BINARY_ADD, cat, pos, t);
    }
    free(host);
    sd_dtensor_free(p), sd_dtensor_free(pt), sd_dtensor_free(cat), sd_dtensor_free(pos);
    return s;
}

/* act_postprocess<k> on the tokens t: gelu(Linear([token, cls])) as a map [1, D, gh, gw], its
 * 1x1 conv, and for k = 4 the 3x3 stride-2 conv: *out new. */
static sd_status postprocess(sd_midas *m, int k, const sd_dtensor *t, int64_t gh, int64_t gw, sd_dtensor **out)
{
    sd_cl *cl = m->cl;
    int64_t d = m->cfg.dim;
    char name[96];
    const sd_dtensor *w, *b;
    sd_dtensor *wl = NULL, *wr = NULL, *tok = NULL, *cls = NULL, *a = NULL, *c = NULL, *sum = NULL, *g = NULL,
               *map = NULL, *o = NULL;
    snprintf(name, sizeof name, "pretrained.act_postprocess%d.0.project.0", k);
    sd_status s;
    if (!(s = sd_weights_getf(m->w, &w, "%s.weight", name)) && !(s = sd_weights_getf(m->w, &b, "%s.bias", name)) &&
        !(s = sd_op_slice(cl, w, 1, 0, d, &wl)) && !(s = sd_op_slice(cl, w, 1, d, d, &wr)) &&
        !(s = sd_op_slice(cl, t, 1, 1, gh * gw, &tok)) && !(s = sd_op_slice(cl, t, 1, 0, 1, &cls)) &&
        !(s = sd_op_linear(cl, tok, wl, NULL, SD_ACT_NONE, &a)) && !(s = sd_op_linear(cl, cls, wr, b, SD_ACT_NONE, &c)) &&
        !(s = sd_op_binary(cl, SD_BINARY_ADD, a, c, &sum)) && !(s = sd_op_unary(cl, SD_UNARY_GELU, sum, &g)) &&
        !(s = sd_op_transpose(cl, g, NULL, &map)) &&
        !(s = sd_dtensor_reshape(map, 4, (const int64_t[]){1, d, gh, gw}))) {
        snprintf(name, sizeof name, "pretrained.act_postprocess%d.3", k);
        s = sd_dpt_conv(&m->dpt, map, name, NULL, 1, 0, true, false, k == 3 ? out : &o);
        if (!s && k == 4)
            s = sd_dpt_conv(&m->dpt, o, "pretrained.act_postprocess4.4", NULL, 2, 1, true, false, out);
    }
    sd_dtensor_free(wl), sd_dtensor_free(wr), sd_dtensor_free(tok), sd_dtensor_free(cls), sd_dtensor_free(a);
    sd_dtensor_free(c), sd_dtensor_free(sum), sd_dtensor_free(g), sd_dtensor_free(map), sd_dtensor_free(o);
    return s;
}

/* The decoder on the four layers: *out new [1, 1, H, W]. */
static sd_status decoder(sd_midas *m, sd_dtensor **layer, sd_dtensor **out)
{
    sd_dtensor *rn[4] = {0}, *path = NULL, *a = NULL;
    char name[48];
    sd_status s = SD_OK;
    for (int i = 0; !s && i < 4; i++) {
        snprintf(name, sizeof name, "scratch.layer%d_rn", i + 1);
        s = sd_dpt_conv(&m->dpt, layer[i], name, NULL, 1, 1, false, false, &rn[i]);
    }
    for (int i = 3; !s && i >= 0; i--) {
        snprintf(name, sizeof name, "scratch.refinenet%d", i + 1);
        if (i == 3) {
            path = rn[3];
            rn[3] = NULL;
        }
        s = sd_dpt_fusion(&m->dpt, name, &path, i == 3 ? NULL : rn[i], 2 * path->shape[2], 2 * path->shape[3]);
    }
    if (!s && !(s = sd_dpt_conv(&m->dpt, path, "scratch.output_conv.0", NULL, 1, 1, true, false, &a)) &&
        !(s = sd_dpt_resize_bilinear(m->cl, &a, 2 * a->shape[2], 2 * a->shape[3], false))) {
        sd_dtensor_free(path);
        path = NULL;
        if (!(s = sd_dpt_conv(&m->dpt, a, "scratch.output_conv.2", NULL, 1, 1, true, true, &path)))
            s = sd_dpt_conv(&m->dpt, path, "scratch.output_conv.4", NULL, 1, 0, true, true, out);
    }
    for (int i = 0; i < 4; i++)
        sd_dtensor_free(rn[i]);
    sd_dtensor_free(path), sd_dtensor_free(a);
    return s;
}

sd_status sd_midas_forward(sd_midas *m, const sd_dtensor *x, sd_dtensor **out)
{
    char d[96];
    *out = NULL;
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % 32 || x->shape[3] % 32 ||
        x->shape[2] < 32 || x->shape[3] < 32)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID,
                            "MiDaS: input %s is not [1, 3, H, W] with H, W positive multiples of 32",
                            sd_dtensor_describe(x, d, sizeof d));
    sd_dtensor *stages[SD_MIDAS_STAGES] = {0}, *t = NULL, *layer[4] = {0};
    sd_status s = backbone(m, x, stages);
    int64_t gh = 0, gw = 0;
    if (!s) {
        gh = stages[2]->shape[2], gw = stages[2]->shape[3];
        s = vit_tokens(m, stages[2], &t);
    }
    for (int i = 0, k = 0; !s && k < 2; i++) {
        char name[48];
        snprintf(name, sizeof name, "pretrained.model.blocks.%d", i);
        s = sd_dpt_vit_block(&m->dpt, name, m->cfg.heads, false, &t);
        for (; !s && k < 2 && i == m->cfg.hooks[k]; k++)
            s = postprocess(m, 3 + k, t, gh, gw, &layer[2 + k]);
    }
    if (!s) {
        layer[0] = stages[0], layer[1] = stages[1];
        stages[0] = stages[1] = NULL;
        s = decoder(m, layer, out);
    }
    for (int i = 0; i < SD_MIDAS_STAGES; i++)
        sd_dtensor_free(stages[i]);
    for (int i = 0; i < 4; i++)
        sd_dtensor_free(layer[i]);
    sd_dtensor_free(t);
    return s;
}
