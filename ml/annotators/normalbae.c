/* The BAE normal network (EfficientNet-B5 encoder, uncertainty-guided decoder) on the op API. */
#include "ml/annotators/normalbae.h"
#include "ml/annotators/dpt.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_image.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define ENC "encoder.original_model."
#define DIMS(...) (const int64_t[]){__VA_ARGS__}
#define MAX_WIDTH (64 * 1024)
#define ENC_EPS 1e-3f /* tf_ models' BatchNorm */
#define DEC_EPS 1e-5f /* nn.BatchNorm2d's default */
#define LEAKY 0.01f
#define MIN_KAPPA 0.01f

static const int stage_stride[SD_NORMALBAE_STAGES] = {1, 2, 2, 2, 1, 2, 1};
/* The decoder's skips: up1..up4 take the outputs of stages 4, 2, 1, 0. */
static const int skip_stage[4] = {4, 2, 1, 0};

/* A convolution with its BatchNorm folded in: w [O, C / groups, k, k], b [O]. */
typedef struct bconv {
    sd_dtensor *w, *b;
    int k, stride, groups;
} bconv;

/* A block: DS (depthwise-separable) uses dw, se_r, se_e, proj; IR all five. */
typedef struct bblock {
    bool ds, skip;
    bconv expand, dw, se_r, se_e, proj;
} bblock;

struct sd_normalbae {
    sd_cl *cl;
    sd_normalbae_config cfg;
    bconv stem, head;
    bblock *blocks; /* all stages in order */
    int n_blocks;
    bconv conv2, up[4][2], res8, mlp[3][4];
};

/* ---- Checking the file ---- */

typedef struct checker {
    sd_context *ctx;
    const sd_safetensors *st;
    const char *prefix;
} checker;

static const sd_st_tensor *find(const checker *c, char *full, size_t size, const char *fmt, va_list ap)
{
    int n = snprintf(full, size, "%s", c->prefix);
    vsnprintf(full + n, size - (size_t)n, fmt, ap);
    return sd_safetensors_find(c->st, full);
}

/* Dimension i of tensor <prefix><name>, or -1 when it is missing or has other than nd dims. */
static int64_t dim(const checker *c, int nd, int i, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int64_t dim(const checker *c, int nd, int i, const char *fmt, ...)
{
    char full[160];
    va_list ap;
    va_start(ap, fmt);
    const sd_st_tensor *t = find(c, full, sizeof full, fmt, ap);
    va_end(ap);
    return t && t->ndim == nd && t->shape[i] >= 1 && t->shape[i] <= MAX_WIDTH ? t->shape[i] : -1;
}

/* Checks tensor <prefix><name> has dims d (nd of them; a weight dtype). */
static sd_status expect(const checker *c, int nd, const int64_t *d, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sd_status expect(const checker *c, int nd, const int64_t *d, const char *fmt, ...)
{
    char full[160];
    va_list ap;
    va_start(ap, fmt);
    const sd_st_tensor *t = find(c, full, sizeof full, fmt, ap);
    va_end(ap);
    bool ok = t && t->ndim == nd && sd_st_dtype_is_weight(t->dtype);
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == d[i];
    if (!t)
        return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: not a BAE normal network: tensor '%s' is missing",
                            sd_safetensors_path(c->st), full);
    if (!ok)
        return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for BAE",
                            sd_safetensors_path(c->st), full);
    return SD_OK;
}

/* <name>.weight, .bias, .running_mean and .running_var of a BatchNorm of n channels. */
static sd_status expect_bn(const checker *c, int64_t n, const char *name)
{
    static const char *const parts[] = {"weight", "bias", "running_mean", "running_var"};
    sd_status s = SD_OK;
    for (int i = 0; !s && i < 4; i++)
        s = expect(c, 1, DIMS(n), "%s.%s", name, parts[i]);
    return s;
}

/* se.conv_reduce and se.conv_expand of block `b` on c channels. */
static sd_status expect_se(const checker *c, const char *b, int64_t ch)
{
    sd_status s;
    int64_t rd = dim(c, 4, 0, "%s.se.conv_reduce.weight", b);
    if ((s = expect(c, 4, DIMS(rd, ch, 1, 1), "%s.se.conv_reduce.weight", b)) ||
        (s = expect(c, 1, DIMS(rd), "%s.se.conv_reduce.bias", b)) ||
        (s = expect(c, 4, DIMS(ch, rd, 1, 1), "%s.se.conv_expand.weight", b)))
        return s;
    return expect(c, 1, DIMS(ch), "%s.se.conv_expand.bias", b);
}

/* Kernel size of depthwise conv `b`.conv_dw on ch channels (odd, 1..9), or -1. */
static int64_t dw_kernel(const checker *c, const char *b, int64_t ch)
{
    int64_t k = dim(c, 4, 2, "%s.conv_dw.weight", b);
    return k >= 1 && k <= 9 && k % 2 && dim(c, 4, 0, "%s.conv_dw.weight", b) == ch ? k : -1;
}

/* Block `b` from cin channels (stage 0: depthwise-separable) -> *cout. */
static sd_status expect_block(const checker *c, const char *b, bool ds, int64_t cin, int64_t *cout)
{
    sd_status s;
    int64_t mid = ds ? cin : dim(c, 4, 0, "%s.conv_pw.weight", b), k = dw_kernel(c, b, mid);
    *cout = dim(c, 4, 0, ds ? "%s.conv_pw.weight" : "%s.conv_pwl.weight", b);
    char bn[96];
    snprintf(bn, sizeof bn, "%s.bn1", b);
    if (!ds && ((s = expect(c, 4, DIMS(mid, cin, 1, 1), "%s.conv_pw.weight", b)) || (s = expect_bn(c, mid, bn))))
        return s;
    snprintf(bn, sizeof bn, "%s.%s", b, ds ? "bn1" : "bn2");
    if ((s = expect(c, 4, DIMS(mid, 1, k, k), "%s.conv_dw.weight", b)) || (s = expect_bn(c, mid, bn)) ||
        (s = expect_se(c, b, mid)))
        return s;
    snprintf(bn, sizeof bn, "%s.%s", b, ds ? "bn2" : "bn3");
    if ((s = expect(c, 4, DIMS(*cout, mid, 1, 1), ds ? "%s.conv_pw.weight" : "%s.conv_pwl.weight", b)))
        return s;
    return expect_bn(c, *cout, bn);
}

/* The decoder on the encoder's widths. */
static sd_status expect_decoder(const checker *c, const sd_normalbae_config *cfg)
{
    sd_status s;
    int64_t d0 = dim(c, 4, 0, "decoder.conv2.weight"), prev = d0, up2 = 0;
    if ((s = expect(c, 4, DIMS(d0, cfg->head, 1, 1), "decoder.conv2.weight")) ||
        (s = expect(c, 1, DIMS(d0), "decoder.conv2.bias")))
        return s;
    for (int i = 0; i < 4; i++) {
        int64_t o = dim(c, 4, 0, "decoder.up%d._net.0.weight", i + 1);
        char bn[48];
        if ((s = expect(c, 4, DIMS(o, prev + cfg->width[skip_stage[i]], 3, 3), "decoder.up%d._net.0.weight", i + 1)))
            return s;
        for (int j = 0; j < 2; j++) {
            snprintf(bn, sizeof bn, "decoder.up%d._net.%d", i + 1, 3 * j + 1);
            if ((j && (s = expect(c, 4, DIMS(o, o, 3, 3), "decoder.up%d._net.3.weight", i + 1))) ||
                (s = expect(c, 1, DIMS(o), "decoder.up%d._net.%d.bias", i + 1, 3 * j)) || (s = expect_bn(c, o, bn)))
                return s;
        }
        up2 = i == 1 ? o : up2;
        prev = o;
        if (i >= 1) { /* the refinement MLP on this level's features */
            int r = 1 << (3 - i); /* res4, res2, res1 */
            int64_t h = dim(c, 3, 0, "decoder.out_conv_res%d.0.weight", r), in = o + 4;
            for (int l = 0; l < 4; l++, in = h) {
                int64_t out = l == 3 ? 4 : h;
                if ((s = expect(c, 3, DIMS(out, in, 1), "decoder.out_conv_res%d.%d.weight", r, 2 * l)) ||
                    (s = expect(c, 1, DIMS(out), "decoder.out_conv_res%d.%d.bias", r, 2 * l)))
                    return s;
            }
        }
    }
    if ((s = expect(c, 4, DIMS(4, up2, 3, 3), "decoder.out_conv_res8.weight")))
        return s;
    return expect(c, 1, DIMS(4), "decoder.out_conv_res8.bias");
}

sd_status sd_normalbae_inspect(sd_context *ctx, const sd_safetensors *st, sd_normalbae_config *out)
{
    static const char *const prefixes[] = {"", "module.", "model.", "model.module."};
    checker c = {ctx, st, ""};
    sd_normalbae_config cfg = {.prefix = ""};
    for (int i = 0; i < 4; i++) {
        char full[64];
        snprintf(full, sizeof full, "%s" ENC "conv_stem.weight", prefixes[i]);
        if (sd_safetensors_find(st, full)) {
            c.prefix = cfg.prefix = prefixes[i];
            break;
        }
    }
    sd_status s;
    int64_t ch = dim(&c, 4, 0, ENC "conv_stem.weight");
    if ((s = expect(&c, 4, DIMS(ch, 3, 3, 3), ENC "conv_stem.weight")) || (s = expect_bn(&c, ch, ENC "bn1")))
        return s;
    cfg.stem = (int)ch;
    for (int sg = 0; sg < SD_NORMALBAE_STAGES; sg++) {
        while (dim(&c, 4, 0, ENC "blocks.%d.%d.conv_dw.weight", sg, cfg.blocks[sg]) > 0)
            if (++cfg.blocks[sg] > SD_NORMALBAE_MAX_BLOCKS)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: stage %d of the BAE encoder has more than %d blocks",
                                    sd_safetensors_path(st), sg, SD_NORMALBAE_MAX_BLOCKS);
        for (int j = 0; j < (cfg.blocks[sg] ? cfg.blocks[sg] : 1); j++) {
            char b[64];
            int64_t cout;
            snprintf(b, sizeof b, ENC "blocks.%d.%d", sg, j);
            if ((s = expect_block(&c, b, sg == 0, ch, &cout)))
                return s;
            if (j && cout != ch)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s%s.%s.weight' changes the width inside "
                                    "a stage", sd_safetensors_path(st), c.prefix, b, sg ? "conv_pwl" : "conv_pw");
            ch = cout;
        }
        cfg.width[sg] = (int)ch;
    }
    int64_t head = dim(&c, 4, 0, ENC "conv_head.weight");
    if ((s = expect(&c, 4, DIMS(head, ch, 1, 1), ENC "conv_head.weight")))
        return s;
    cfg.head = (int)head;
    if ((s = expect_decoder(&c, &cfg)))
        return s;
    *out = cfg;
    return SD_OK;
}

/* ---- Loading: convolutions with their BatchNorm folded in ---- */

typedef struct loader {
    sd_cl *cl;
    const sd_safetensors *st;
    const char *prefix;
} loader;

/* Tensor <prefix><name> as new host floats (*out; the caller frees), *n (NULL: not wanted) of them. */
static sd_status read_host(const loader *l, const char *name, float **out, size_t *n)
{
    const sd_st_tensor *t = sd_safetensors_findf(l->st, "%s%s", l->prefix, name);
    *out = NULL;
    if (!t) /* checked by the inspection */
        return sd_set_error(l->cl->ctx, SD_ERR_INVALID, "%s: tensor '%s%s' is missing", sd_safetensors_path(l->st),
                            l->prefix, name);
    if (!(*out = malloc(sizeof **out * (t->numel ? t->numel : 1))))
        return sd_set_error(l->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (n)
        *n = t->numel;
    sd_status s = sd_safetensors_read_f32(l->cl->ctx, l->st, t, *out, t->numel);
    if (s) {
        free(*out);
        *out = NULL;
    }
    return s;
}

/* Convolution `name` (.weight; .bias when has_bias) with BatchNorm `bn` (NULL: none; its eps)
 * folded in: w * g / sqrt(v + eps), (b - m) * g / sqrt(v + eps) + beta. */
static sd_status load_conv(const loader *l, const char *name, bool has_bias, const char *bn, float eps, int stride,
                           bool depthwise, bconv *out)
{
    char full[128];
    float *w = NULL, *b = NULL, *p[4] = {0};
    size_t nw = 0;
    const sd_st_tensor *t = sd_safetensors_findf(l->st, "%s%s.weight", l->prefix, name);
    int64_t o = t ? t->shape[0] : 0;
    snprintf(full, sizeof full, "%s.weight", name);
    sd_status s = read_host(l, full, &w, &nw);
    if (!s && has_bias) {
        snprintf(full, sizeof full, "%s.bias", name);
        s = read_host(l, full, &b, NULL);
    } else if (!s && !(b = calloc((size_t)o, sizeof *b))) {
        s = sd_set_error(l->cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    static const char *const parts[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; !s && bn && i < 4; i++) {
        snprintf(full, sizeof full, "%s.%s", bn, parts[i]);
        s = read_host(l, full, &p[i], NULL);
    }
    size_t per = o ? nw / (size_t)o : 0;
    for (int64_t c = 0; !s && bn && c < o; c++) {
        float g = p[0][c] / sqrtf(p[3][c] + eps);
        for (size_t i = 0; i < per; i++)
            w[(size_t)c * per + i] *= g;
        b[c] = (b[c] - p[2][c]) * g + p[1][c];
    }
    int k = t && t->ndim == 4 ? (int)t->shape[3] : 1;
    *out = (bconv){.k = k, .stride = stride, .groups = depthwise ? (int)o : 1};
    if (!s)
        s = sd_dpt_upload(l->cl, 4, DIMS(o, (int64_t)(per / (size_t)(k * k)), k, k), w, &out->w);
    if (!s)
        s = sd_dpt_upload(l->cl, 1, DIMS(o), b, &out->b);
    free(w), free(b);
    for (int i = 0; i < 4; i++)
        free(p[i]);
    return s;
}

static void bconv_free(bconv *c)
{
    sd_dtensor_free(c->w);
    sd_dtensor_free(c->b);
}

/* Block `b` (ENC "blocks.S.J"); ds: depthwise-separable. */
static sd_status load_block(const loader *l, const char *b, bool ds, int stride, bblock *out)
{
    char n[4][112];
    sd_status s;
    out->ds = ds;
    snprintf(n[0], sizeof n[0], "%s.conv_dw", b);
    snprintf(n[1], sizeof n[1], "%s.%s", b, ds ? "bn1" : "bn2");
    if ((s = load_conv(l, n[0], false, n[1], ENC_EPS, stride, true, &out->dw)))
        return s;
    snprintf(n[0], sizeof n[0], "%s.se.conv_reduce", b);
    snprintf(n[1], sizeof n[1], "%s.se.conv_expand", b);
    snprintf(n[2], sizeof n[2], "%s.%s", b, ds ? "conv_pw" : "conv_pwl");
    snprintf(n[3], sizeof n[3], "%s.%s", b, ds ? "bn2" : "bn3");
    if ((s = load_conv(l, n[0], true, NULL, 0, 1, false, &out->se_r)) ||
        (s = load_conv(l, n[1], true, NULL, 0, 1, false, &out->se_e)) ||
        (s = load_conv(l, n[2], false, n[3], ENC_EPS, 1, false, &out->proj)))
        return s;
    if (!ds) {
        snprintf(n[0], sizeof n[0], "%s.conv_pw", b);
        snprintf(n[1], sizeof n[1], "%s.bn1", b);
        if ((s = load_conv(l, n[0], false, n[1], ENC_EPS, 1, false, &out->expand)))
            return s;
    }
    int64_t cin = ds ? out->dw.w->shape[0] : out->expand.w->shape[1];
    out->skip = stride == 1 && cin == out->proj.w->shape[0];
    return SD_OK;
}

static sd_status load_decoder(const loader *l, sd_normalbae *m)
{
    sd_status s;
    char name[64], bn[64];
    if ((s = load_conv(l, "decoder.conv2", true, NULL, 0, 1, false, &m->conv2)) ||
        (s = load_conv(l, "decoder.out_conv_res8", true, NULL, 0, 1, false, &m->res8)))
        return s;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            snprintf(name, sizeof name, "decoder.up%d._net.%d", i + 1, 3 * j);
            snprintf(bn, sizeof bn, "decoder.up%d._net.%d", i + 1, 3 * j + 1);
            if ((s = load_conv(l, name, true, bn, DEC_EPS, 1, false, &m->up[i][j])))
                return s;
        }
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 4; j++) {
            snprintf(name, sizeof name, "decoder.out_conv_res%d.%d", 4 >> r, 2 * j);
            if ((s = load_conv(l, name, true, NULL, 0, 1, false, &m->mlp[r][j])))
                return s;
        }
    return SD_OK;
}

sd_status sd_normalbae_new(sd_cl *cl, const sd_safetensors *st, sd_normalbae **out)
{
    sd_status s;
    *out = NULL;
    sd_normalbae *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if ((s = sd_normalbae_inspect(cl->ctx, st, &m->cfg)))
        goto fail;
    loader l = {cl, st, m->cfg.prefix};
    for (int sg = 0; sg < SD_NORMALBAE_STAGES; sg++)
        m->n_blocks += m->cfg.blocks[sg];
    if (!(m->blocks = calloc((size_t)m->n_blocks, sizeof *m->blocks))) {
        s = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((s = load_conv(&l, ENC "conv_stem", false, ENC "bn1", ENC_EPS, 2, false, &m->stem)) ||
        (s = load_conv(&l, ENC "conv_head", false, NULL, 0, 1, false, &m->head)))
        goto fail;
    for (int sg = 0, i = 0; sg < SD_NORMALBAE_STAGES; sg++)
        for (int j = 0; j < m->cfg.blocks[sg]; j++, i++) {
            char b[64];
            snprintf(b, sizeof b, ENC "blocks.%d.%d", sg, j);
            if ((s = load_block(&l, b, sg == 0, j ? 1 : stage_stride[sg], &m->blocks[i])))
                goto fail;
        }
    if ((s = load_decoder(&l, m)))
        goto fail;
    *out = m;
    return SD_OK;
fail:
    sd_normalbae_free(m);
    return s;
}

void sd_normalbae_free(sd_normalbae *m)
{
    if (!m)
        return;
    bconv_free(&m->stem), bconv_free(&m->head), bconv_free(&m->conv2), bconv_free(&m->res8);
    for (int i = 0; m->blocks && i < m->n_blocks; i++) {
        bblock *b = &m->blocks[i];
        bconv_free(&b->expand), bconv_free(&b->dw), bconv_free(&b->se_r), bconv_free(&b->se_e), bconv_free(&b->proj);
    }
    for (int i = 0; i < 4; i++)
        bconv_free(&m->up[i][0]), bconv_free(&m->up[i][1]);
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 4; j++)
            bconv_free(&m->mlp[r][j]);
    free(m->blocks);
    free(m);
}

/* ---- Running ---- */

/* TF "same" zero padding of x [1, C, H, W] for a k x k kernel at stride 2 (the smaller half
 * before), plus one row / column after where needed to make the stride-1 output of the padded
 * input even (that row only reaches outputs a stride of 2 drops): *out new. */
static sd_status pad_same(sd_cl *cl, sd_dtensor *x, int k, sd_dtensor **out)
{
    int64_t c = x->shape[1], h = x->shape[2], w = x->shape[3], pad[2];
    for (int i = 0; i < 2; i++) {
        int64_t n = i ? w : h, p = (n + 1) / 2 * 2 - 2 + k - n;
        pad[i] = p > 0 ? p : 0;
    }
    int64_t eh = (h + pad[0] - k + 1) % 2, ew = (w + pad[1] - k + 1) % 2;
    sd_status s = sd_dtensor_reshape(x, 4, DIMS(c, h, w, 1));
    if (!s)
        s = sd_op_pad(cl, x, pad[0] / 2, pad[0] - pad[0] / 2 + eh, pad[1] / 2, pad[1] - pad[1] / 2 + ew,
                      SD_PAD_CONSTANT, 0.0f, out);
    sd_status r = sd_dtensor_reshape(x, 4, DIMS(1, c, h, w));
    if (!s && !(s = r))
        s = sd_dtensor_reshape(*out, 4, DIMS(1, c, (*out)->shape[1], (*out)->shape[2]));
    return sd_dtensor_drop_on_error(out, s);
}

/* Convolution c on x ("same" padding) with act (NONE or SILU): *out new. Depthwise convolutions
 * at stride 2 run at stride 1 on the padded input and keep every second output. */
static sd_status conv(sd_cl *cl, const bconv *c, sd_dtensor *x, sd_act act, sd_dtensor **out)
{
    sd_status s = SD_OK;
    sd_dtensor *p = NULL, *t = NULL;
    *out = NULL;
    if (c->stride == 2)
        s = pad_same(cl, x, c->k, &p);
    const sd_dtensor *in = p ? p : x;
    int pad = c->stride == 2 ? 0 : c->k / 2;
    if (!s && c->groups == 1) {
        sd_conv2d_params cp = {.stride_h = c->stride, .stride_w = c->stride, .pad_h = pad, .pad_w = pad, .act = act};
        s = sd_op_conv2d(cl, in, c->w, c->b, &cp, out);
    } else if (!s) {
        s = sd_op_conv2d_direct(cl, in, c->w, c->b, c->groups, pad, 1, &t);
        if (!s && c->stride == 2)
            s = sd_op_upsample_nearest(cl, t, t->shape[2] / 2, t->shape[3] / 2, out);
        else if (!s)
            *out = t, t = NULL;
        if (!s && act == SD_ACT_SILU) {
            sd_dtensor *y = *out;
            s = sd_op_unary(cl, SD_UNARY_SILU, y, out);
            sd_dtensor_free(y);
        }
    }
    sd_dtensor_free(p);
    sd_dtensor_free(t);
    return sd_dtensor_drop_on_error(out, s);
}

/* x * sigmoid(se_e(silu(se_r(mean x)))) for *x [1, C, H, W] (replaced). */
static sd_status squeeze_excite(sd_cl *cl, const bblock *b, sd_dtensor **x)
{
    int64_t c = (*x)->shape[1], h = (*x)->shape[2], w = (*x)->shape[3];
    sd_dtensor *mean = NULL, *r = NULL, *e = NULL, *g = NULL, *y = NULL;
    sd_status s = sd_dtensor_reshape(*x, 4, DIMS(c, h, w, 1));
    if (!s)
        s = sd_op_resize(cl, *x, 1, 1, SD_RESIZE_AREA, &mean);
    sd_status back = sd_dtensor_reshape(*x, 4, DIMS(1, c, h, w));
    if (!s && !(s = back) && !(s = sd_dtensor_reshape(mean, 4, DIMS(1, c, 1, 1))) &&
        !(s = conv(cl, &b->se_r, mean, SD_ACT_SILU, &r)) && !(s = conv(cl, &b->se_e, r, SD_ACT_NONE, &e)) &&
        !(s = sd_op_unary(cl, SD_UNARY_SIGMOID, e, &g)) && !(s = sd_op_binary(cl, SD_BINARY_MUL, *x, g, &y))) {
        sd_dtensor_free(*x);
        *x = y;
    }
    sd_dtensor_free(mean), sd_dtensor_free(r), sd_dtensor_free(e), sd_dtensor_free(g);
    return s;
}

/* Block b on x: *out new. */
static sd_status block(sd_cl *cl, const bblock *b, sd_dtensor *x, sd_dtensor **out)
{
    sd_dtensor *e = NULL, *d = NULL;
    sd_status s = b->ds ? SD_OK : conv(cl, &b->expand, x, SD_ACT_SILU, &e);
    if (!s)
        s = conv(cl, &b->dw, b->ds ? x : e, SD_ACT_SILU, &d);
    if (!s)
        s = squeeze_excite(cl, b, &d);
    if (!s)
        s = conv(cl, &b->proj, d, SD_ACT_NONE, out);
    if (!s && b->skip)
        s = sd_op_axpy_into(cl, 1.0f, x, NULL, *out, 0); /* out + x */
    sd_dtensor_free(e);
    sd_dtensor_free(d);
    return sd_dtensor_drop_on_error(out, s);
}

/* The encoder on x: the outputs of stages 4, 2, 1 and 0 (skips[i] for up(i + 1)) and
 * conv_head's (*head); all new. */
static sd_status encode(sd_normalbae *m, const sd_dtensor *x, sd_dtensor *skips[4], sd_dtensor **head)
{
    sd_dtensor *h = NULL;
    /* the stem's padding reshapes x for a moment and restores it */
    sd_status s = conv(m->cl, &m->stem, (sd_dtensor *)x, SD_ACT_SILU, &h);
    for (int sg = 0, i = 0; !s && sg < SD_NORMALBAE_STAGES; sg++) {
        for (int j = 0; !s && j < m->cfg.blocks[sg]; j++, i++) {
            sd_dtensor *y = NULL;
            s = block(m->cl, &m->blocks[i], h, &y);
            bool kept = false;
            for (int k = 0; k < 4; k++)
                kept |= skips[k] == h;
            if (!kept)
                sd_dtensor_free(h);
            h = y;
        }
        for (int k = 0; k < 4; k++)
            if (skip_stage[k] == sg)
                skips[k] = h;
    }
    if (!s)
        s = conv(m->cl, &m->head, h, SD_ACT_NONE, head);
    bool kept = false;
    for (int k = 0; k < 4; k++)
        kept |= skips[k] == h;
    if (!kept)
        sd_dtensor_free(h);
    return s;
}

/* A copy of x (new). */
static sd_status copy(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    return sd_op_scale(cl, x, 1.0f, 0.0f, out);
}

/* UpSampleBN i: *x (replaced) resized to skip's size (bilinear, align_corners), concatenated
 * with skip, two convolutions with LeakyReLU. */
static sd_status up(sd_normalbae *m, int i, sd_dtensor **x, const sd_dtensor *skip)
{
    sd_dtensor *cat = NULL, *t = NULL, *y = NULL;
    sd_status s = sd_dpt_resize_bilinear(m->cl, x, skip->shape[2], skip->shape[3], true);
    if (!s)
        s = sd_op_concat(m->cl, *x, skip, 1, &cat);
    if (!s && !(s = conv(m->cl, &m->up[i][0], cat, SD_ACT_NONE, &t)) &&
        !(s = sd_op_leaky_relu_into(m->cl, t, LEAKY, t, 0)) && !(s = conv(m->cl, &m->up[i][1], t, SD_ACT_NONE, &y)) &&
        !(s = sd_op_leaky_relu_into(m->cl, y, LEAKY, y, 0))) {
        sd_dtensor_free(*x);
        *x = y, y = NULL;
    }
    sd_dtensor_free(cat), sd_dtensor_free(t), sd_dtensor_free(y);
    return s;
}

/* norm_normalize on v, 4 planes of hw floats, in place (float32 as torch). */
static void norm_normalize(float *v, size_t hw)
{
    for (size_t i = 0; i < hw; i++) {
        float x = v[i], y = v[hw + i], z = v[2 * hw + i], k = v[3 * hw + i];
        float n = sqrtf(x * x + y * y + z * z) + 1e-10f;
        v[i] = x / n, v[hw + i] = y / n, v[2 * hw + i] = z / n;
        v[3 * hw + i] = ((k > 0.0f ? k : expm1f(k)) + 1.0f) + MIN_KAPPA;
    }
}

/* The prediction t [1, 4, h, w] normalised into host (4 h w floats) and, when dev is given, as a
 * new device tensor. */
static sd_status normalise(sd_cl *cl, const sd_dtensor *t, float *host, sd_dtensor **dev)
{
    size_t hw = (size_t)(t->shape[2] * t->shape[3]);
    sd_status s = sd_dtensor_download(t, host);
    if (!s)
        norm_normalize(host, hw);
    if (!s && dev)
        s = sd_dpt_upload(cl, 4, t->shape, host, dev);
    return s;
}

/* Refinement r (out_conv_res4, res2, res1) on feat (consumed) and the prediction *pred (replaced
 * by the new one unless last; host receives it). */
static sd_status refine(sd_normalbae *m, int r, sd_dtensor *feat, sd_dtensor **pred, float *host, bool last)
{
    int64_t h = feat->shape[2] * 2, w = feat->shape[3] * 2;
    sd_dtensor *cat = NULL, *t = NULL;
    sd_status s = sd_dpt_resize_bilinear(m->cl, &feat, h, w, true);
    if (!s)
        s = sd_dpt_resize_bilinear(m->cl, pred, h, w, true);
    if (!s)
        s = sd_op_concat(m->cl, feat, *pred, 1, &cat);
    for (int j = 0; !s && j < 4; j++) {
        s = conv(m->cl, &m->mlp[r][j], cat, SD_ACT_NONE, &t);
        if (!s && j < 3)
            s = sd_op_leaky_relu_into(m->cl, t, 0.0f, t, 0); /* ReLU */
        sd_dtensor_free(cat);
        cat = t, t = NULL;
    }
    sd_dtensor_free(*pred);
    *pred = NULL;
    if (!s)
        s = normalise(m->cl, cat, host, last ? NULL : pred);
    sd_dtensor_free(feat);
    sd_dtensor_free(cat);
    return s;
}

sd_status sd_normalbae_forward(sd_normalbae *m, const sd_dtensor *x, float *out)
{
    char d[96];
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % 32 || x->shape[3] % 32 ||
        x->shape[2] < 32 || x->shape[3] < 32)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "BAE: input %s is not [1, 3, H, W] with H, W multiples of 32",
                            sd_dtensor_describe(x, d, sizeof d));
    sd_dtensor *skips[4] = {0}, *dec = NULL, *feats[3] = {0}, *pred = NULL;
    sd_status s = encode(m, x, skips, &dec);
    sd_dtensor *d0 = NULL;
    if (!s && !(s = conv(m->cl, &m->conv2, dec, SD_ACT_NONE, &d0)))
        sd_dtensor_free(dec), dec = d0;
    /* dec through up1..up4; copies of up2, up3 and up4's outputs for the refinements */
    for (int i = 0; !s && i < 4; i++)
        if (!(s = up(m, i, &dec, skips[i])) && i >= 1)
            s = copy(m->cl, dec, &feats[i - 1]);
    float *host = NULL;
    if (!s && !(host = malloc(sizeof *host * 4 * (size_t)(x->shape[2] * x->shape[3]))))
        s = sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    sd_dtensor *t = NULL;
    if (!s && !(s = conv(m->cl, &m->res8, feats[0], SD_ACT_NONE, &t)))
        s = normalise(m->cl, t, host, &pred);
    sd_dtensor_free(t);
    for (int r = 0; !s && r < 3; r++) {
        s = refine(m, r, feats[r], &pred, r == 2 ? out : host, r == 2);
        feats[r] = NULL;
    }
    for (int i = 0; i < 4; i++)
        sd_dtensor_free(skips[i]);
    for (int i = 0; i < 3; i++)
        sd_dtensor_free(feats[i]);
    sd_dtensor_free(dec), sd_dtensor_free(pred);
    free(host);
    return s;
}

void sd_normalbae_input(const unsigned char *px, int64_t h, int64_t w, float *x)
{
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    int64_t hw = h * w;
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < hw; i++)
            x[c * hw + i] = ((float)px[i * 3 + c] / 255.0f - mean[c]) / std[c];
}

void sd_normalbae_map(const float *normals, size_t hw, unsigned char *rgb)
{
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = (normals[c * hw + i] + 1.0f) * 0.5f;
            v = (v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v) * 255.0f;
            rgb[i * 3 + c] = v >= 255.0f ? 255 : (unsigned char)v;
        }
}
