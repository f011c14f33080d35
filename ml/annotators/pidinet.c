/* PiDiNet (carv4, CDCM + CSAM) on the op API. */
#include "ml/annotators/pidinet.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_image.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STAGES = 4, BLOCKS = 15, CSAM_MID = 4 };
static const int stage_blocks[STAGES] = {3, 4, 4, 4};
static const int dilation[4] = {5, 7, 9, 11};
typedef enum pdc { PDC_CD, PDC_AD, PDC_RD, PDC_CV } pdc;

/* carv4: layer i is cd, ad, rd, cv for i mod 4 (layer 0 the init block). */
static pdc layer_pdc(int layer)
{
    return (pdc)(layer % 4);
}

struct sd_pidinet {
    sd_cl *cl;
    sd_pidinet_config cfg;
    sd_weights *w;
    sd_dtensor *init_w;         /* converted init_block */
    sd_dtensor *dw[BLOCKS];     /* converted depthwise conv1 of each block */
};

static int stage_width(const sd_pidinet_config *c, int s)
{
    return c->channels * (s == 0 ? 1 : s == 1 ? 2 : 4);
}

/* Checks tensor <prefix><name> has dims d (nd of them; any weight dtype). */
static sd_status expect(sd_context *ctx, const sd_safetensors *st, const sd_pidinet_config *c, int nd,
                        const int64_t *d, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static sd_status expect(sd_context *ctx, const sd_safetensors *st, const sd_pidinet_config *c, int nd,
                        const int64_t *d, const char *fmt, ...)
{
    char name[96], full[112];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s%s", c->module_prefix ? "module." : "", name);
    const sd_st_tensor *t = sd_safetensors_find(st, full);
    bool ok = t && t->ndim == nd && sd_st_dtype_is_weight(t->dtype);
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == d[i];
    if (!t)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a PiDiNet network: tensor '%s' is missing",
                            sd_safetensors_path(st), full);
    if (!ok)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for PiDiNet",
                            sd_safetensors_path(st), full);
    return SD_OK;
}

#define DIMS(...) (const int64_t[]){__VA_ARGS__}

sd_status sd_pidinet_inspect(sd_context *ctx, const sd_safetensors *st, sd_pidinet_config *out)
{
    sd_status s;
    sd_pidinet_config c = {.module_prefix = !sd_safetensors_find(st, "init_block.weight") &&
                                            sd_safetensors_find(st, "module.init_block.weight")};
    const sd_st_tensor *t = sd_safetensors_find(st, c.module_prefix ? "module.init_block.weight" : "init_block.weight");
    const sd_st_tensor *d = sd_safetensors_find(st, c.module_prefix ? "module.dilations.0.conv1.weight"
                                                                    : "dilations.0.conv1.weight");
    c.channels = t && t->ndim == 4 && t->shape[0] <= SD_PIDINET_MAX_WIDTH ? (int)t->shape[0] : 1;
    c.dil = d && d->ndim == 4 && d->shape[0] <= SD_PIDINET_MAX_WIDTH ? (int)d->shape[0] : 1;
    int64_t C = c.channels, D = c.dil;
    if ((s = expect(ctx, st, &c, 4, DIMS(C, 3, 3, 3), "init_block.weight")))
        return s;
    for (int sg = 0, cin = (int)C; sg < STAGES; sg++) {
        int64_t cout = stage_width(&c, sg);
        for (int k = 0; k < stage_blocks[sg]; k++) {
            if ((s = expect(ctx, st, &c, 4, DIMS(cin, 1, 3, 3), "block%d_%d.conv1.weight", sg + 1, k + 1)) ||
                (s = expect(ctx, st, &c, 4, DIMS(cout, cin, 1, 1), "block%d_%d.conv2.weight", sg + 1, k + 1)))
                return s;
            if (sg > 0 && k == 0 &&
                ((s = expect(ctx, st, &c, 4, DIMS(cout, cin, 1, 1), "block%d_1.shortcut.weight", sg + 1)) ||
                 (s = expect(ctx, st, &c, 1, DIMS(cout), "block%d_1.shortcut.bias", sg + 1))))
                return s;
            cin = (int)cout;
        }
        if ((s = expect(ctx, st, &c, 4, DIMS(D, cout, 1, 1), "dilations.%d.conv1.weight", sg)) ||
            (s = expect(ctx, st, &c, 1, DIMS(D), "dilations.%d.conv1.bias", sg)) ||
            (s = expect(ctx, st, &c, 4, DIMS(CSAM_MID, D, 1, 1), "attentions.%d.conv1.weight", sg)) ||
            (s = expect(ctx, st, &c, 1, DIMS(CSAM_MID), "attentions.%d.conv1.bias", sg)) ||
            (s = expect(ctx, st, &c, 4, DIMS(1, CSAM_MID, 3, 3), "attentions.%d.conv2.weight", sg)) ||
            (s = expect(ctx, st, &c, 4, DIMS(1, D, 1, 1), "conv_reduces.%d.conv.weight", sg)) ||
            (s = expect(ctx, st, &c, 1, DIMS(1), "conv_reduces.%d.conv.bias", sg)))
            return s;
        for (int k = 0; k < 4; k++)
            if ((s = expect(ctx, st, &c, 4, DIMS(D, D, 3, 3), "dilations.%d.conv2_%d.weight", sg, k + 1)))
                return s;
    }
    if ((s = expect(ctx, st, &c, 4, DIMS(1, 4, 1, 1), "classifier.weight")) ||
        (s = expect(ctx, st, &c, 1, DIMS(1), "classifier.bias")))
        return s;
    *out = c;
    return SD_OK;
}

/* A pixel-difference 3x3 kernel w (9 values) as a plain kernel: 3x3 for cd, ad, cv, 5x5 for rd
 * (out holds 25). Returns the kernel size. */
static int convert_pdc(pdc type, const float *w, float *out)
{
    static const int ad_perm[9] = {3, 0, 1, 6, 4, 2, 7, 8, 5};
    static const int rd_outer[8] = {0, 2, 4, 10, 14, 20, 22, 24}, rd_inner[8] = {6, 7, 8, 11, 13, 16, 17, 18};
    float sum = 0;
    switch (type) {
    case PDC_CD: /* torch: w.sum(dim=[2, 3]) summed in order */
        for (int i = 0; i < 9; i++)
            sum += w[i];
        for (int i = 0; i < 9; i++)
            out[i] = w[i];
        out[4] = w[4] - sum;
        return 3;
    case PDC_AD:
        for (int i = 0; i < 9; i++)
            out[i] = w[i] - w[ad_perm[i]];
        return 3;
    case PDC_RD:
        memset(out, 0, 25 * sizeof *out);
        for (int i = 0; i < 8; i++) {
            out[rd_outer[i]] = w[i + 1];
            out[rd_inner[i]] = -w[i + 1];
        }
        return 5;
    case PDC_CV:
        break;
    }
    memcpy(out, w, 9 * sizeof *out);
    return 3;
}

/* Reads [o, i, 3, 3] tensor `name`, converts every kernel with `type` and uploads it. */
static sd_status upload_pdc(sd_cl *cl, const sd_safetensors *st, const sd_pidinet_config *c, const char *name,
                            pdc type, sd_dtensor **out)
{
    char full[112];
    snprintf(full, sizeof full, "%s%s", c->module_prefix ? "module." : "", name);
    const sd_st_tensor *t = sd_safetensors_find(st, full);
    size_t kernels = t->numel / 9;
    float *src = malloc(sizeof *src * t->numel), *dst = malloc(sizeof *dst * kernels * 25);
    sd_status s = !src || !dst ? sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
    if (!s)
        s = sd_safetensors_read_f32(cl->ctx, st, t, src, t->numel);
    int k = 3;
    for (size_t i = 0; !s && i < kernels; i++) {
        float tmp[25];
        k = convert_pdc(type, src + 9 * i, tmp);
        memcpy(dst + (size_t)k * k * i, tmp, sizeof(float) * (size_t)(k * k));
    }
    if (!s && !(s = sd_dtensor_new(cl, SD_DTYPE_F32, 4, DIMS(t->shape[0], t->shape[1], k, k), out)) &&
        (s = sd_dtensor_upload(*out, dst))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(src);
    free(dst);
    return s;
}

sd_status sd_pidinet_new(sd_cl *cl, const sd_safetensors *st, sd_pidinet **out)
{
    sd_status s;
    *out = NULL;
    sd_pidinet *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if ((s = sd_pidinet_inspect(cl->ctx, st, &m->cfg)) ||
        (s = sd_weights_new(cl, st, m->cfg.module_prefix ? "module." : "", SD_DTYPE_F32, &m->w)) ||
        (s = upload_pdc(cl, st, &m->cfg, "init_block.weight", layer_pdc(0), &m->init_w)))
        goto fail;
    for (int sg = 0, b = 0; sg < STAGES; sg++)
        for (int k = 0; k < stage_blocks[sg]; k++, b++) {
            char name[48];
            snprintf(name, sizeof name, "block%d_%d.conv1.weight", sg + 1, k + 1);
            if ((s = upload_pdc(cl, st, &m->cfg, name, layer_pdc(b + 1), &m->dw[b])))
                goto fail;
        }
    *out = m;
    return SD_OK;
fail:
    sd_pidinet_free(m);
    return s;
}

void sd_pidinet_free(sd_pidinet *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    sd_dtensor_free(m->init_w);
    for (int b = 0; b < BLOCKS; b++)
        sd_dtensor_free(m->dw[b]);
    free(m);
}

/* A convolution with the file's weight <name>.weight (and <name>.bias when has_bias), stride 1. */
static sd_status conv(sd_pidinet *m, const sd_dtensor *x, const char *name, bool has_bias, int pad, sd_dtensor **out)
{
    sd_status s;
    const sd_dtensor *w, *b = NULL;
    if ((s = sd_weights_getf(m->w, &w, "%s.weight", name)) ||
        (has_bias && (s = sd_weights_getf(m->w, &b, "%s.bias", name))))
        return s;
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1, .pad_h = pad, .pad_w = pad};
    return sd_op_conv2d(m->cl, x, w, b, &p, out);
}

static sd_status relu(sd_cl *cl, sd_dtensor *x)
{
    return sd_op_leaky_relu_into(cl, x, 0.0f, x, 0);
}

/* Block b (stage sg, index k) on *h (replaced). */
static sd_status block(sd_pidinet *m, int b, int sg, int k, sd_dtensor **h)
{
    sd_status s = SD_OK;
    sd_dtensor *x = *h, *t = NULL, *y = NULL, *sc = NULL;
    char name[48];
    bool down = sg > 0 && k == 0;
    if (down && !(s = sd_op_max_pool2x2(m->cl, *h, &x)))
        sd_dtensor_free(*h);
    *h = NULL;
    if (!s)
        s = sd_op_conv2d_direct(m->cl, x, m->dw[b], NULL, (int)x->shape[1], (int)m->dw[b]->shape[2] / 2, 1, &t);
    if (!s)
        s = relu(m->cl, t);
    snprintf(name, sizeof name, "block%d_%d.conv2", sg + 1, k + 1);
    if (!s)
        s = conv(m, t, name, false, 0, &y);
    snprintf(name, sizeof name, "block%d_1.shortcut", sg + 1);
    if (!s && down)
        s = conv(m, x, name, true, 0, &sc);
    if (!s)
        s = sd_op_axpy_into(m->cl, 1.0f, down ? sc : x, NULL, y, 0); /* y + x */
    sd_dtensor_free(t);
    sd_dtensor_free(sc);
    sd_dtensor_free(x);
    if (s)
        sd_dtensor_free(y);
    else
        *h = y;
    return s;
}

/* CDCM, CSAM and the map reduction of stage i's output f (consumed) -> *e [1, 1, h, w]. */
static sd_status side_output(sd_pidinet *m, int i, sd_dtensor *f, sd_dtensor **e)
{
    sd_status s;
    char name[48];
    sd_dtensor *t = NULL, *d = NULL, *u = NULL, *r = NULL, *a = NULL, *g = NULL;
    snprintf(name, sizeof name, "dilations.%d.conv1", i);
    if (!(s = relu(m->cl, f)))
        s = conv(m, f, name, true, 0, &t);
    sd_dtensor_free(f);
    for (int k = 0; !s && k < 4; k++) { /* conv2_1(t) + conv2_2(t) + conv2_3(t) + conv2_4(t) */
        const sd_dtensor *w;
        if (!(s = sd_weights_getf(m->w, &w, "dilations.%d.conv2_%d.weight", i, k + 1)) &&
            !(s = sd_op_conv2d_direct(m->cl, t, w, NULL, 1, dilation[k], dilation[k], k ? &u : &d)) && k)
            s = sd_op_axpy_into(m->cl, 1.0f, u, NULL, d, 0);
        sd_dtensor_free(u);
        u = NULL;
    }
    sd_dtensor_free(t);
    t = NULL;
    /* CSAM: d * sigmoid(conv2(conv1(relu(d)))) */
    if (!s && !(s = sd_op_scale(m->cl, d, 1.0f, 0.0f, &r)) && !(s = relu(m->cl, r))) {
        snprintf(name, sizeof name, "attentions.%d.conv1", i);
        s = conv(m, r, name, true, 0, &a);
    }
    snprintf(name, sizeof name, "attentions.%d.conv2", i);
    if (!s)
        s = conv(m, a, name, false, 1, &t);
    if (!s)
        s = sd_op_unary(m->cl, SD_UNARY_SIGMOID, t, &g);
    if (!s)
        s = sd_op_binary(m->cl, SD_BINARY_MUL, d, g, &u);
    snprintf(name, sizeof name, "conv_reduces.%d.conv", i);
    if (!s)
        s = conv(m, u, name, true, 0, e);
    sd_dtensor_free(t), sd_dtensor_free(d), sd_dtensor_free(u), sd_dtensor_free(r), sd_dtensor_free(a),
        sd_dtensor_free(g);
    return s;
}

/* F.interpolate(e, (H, W), "bilinear", align_corners=False) of e [1, 1, h, w] (consumed). */
static sd_status upsample(sd_cl *cl, sd_dtensor *e, int64_t H, int64_t W, sd_dtensor **out)
{
    sd_status s = sd_dtensor_reshape(e, 4, DIMS(1, e->shape[2], e->shape[3], 1));
    if (!s)
        s = sd_op_resize(cl, e, H, W, SD_RESIZE_BILINEAR, out);
    if (!s)
        s = sd_dtensor_reshape(*out, 4, DIMS(1, 1, H, W));
    sd_dtensor_free(e);
    return s;
}

sd_status sd_pidinet_forward(sd_pidinet *m, const sd_dtensor *x, sd_dtensor **out)
{
    char d[96];
    *out = NULL;
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % 8 || x->shape[3] % 8 ||
        x->shape[2] < 8 || x->shape[3] < 8)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "PiDiNet: input %s is not [1, 3, H, W] with H, W multiples of 8",
                            sd_dtensor_describe(x, d, sizeof d));
    int64_t H = x->shape[2], W = x->shape[3];
    sd_dtensor *h = NULL, *feats[STAGES] = {0}, *maps = NULL, *t = NULL;
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
    sd_status s = sd_op_conv2d(m->cl, x, m->init_w, NULL, &p, &h);
    for (int sg = 0, b = 0; !s && sg < STAGES; sg++) {
        for (int k = 0; !s && k < stage_blocks[sg]; k++, b++)
            s = block(m, b, sg, k, &h);
        if (!s) /* a copy kept for the stage's side output */
            s = sd_op_scale(m->cl, h, 1.0f, 0.0f, &feats[sg]);
    }
    sd_dtensor_free(h);
    h = NULL;
    for (int i = 0; !s && i < STAGES; i++) { /* the four maps, concatenated along channels */
        sd_dtensor *e = NULL, *up = NULL;
        s = side_output(m, i, feats[i], &e);
        feats[i] = NULL;
        if (!s)
            s = upsample(m->cl, e, H, W, &up);
        else
            sd_dtensor_free(e);
        if (!s && maps) {
            s = sd_op_concat(m->cl, maps, up, 1, &t);
            sd_dtensor_free(maps);
            sd_dtensor_free(up);
            maps = t, t = NULL;
        } else if (!s) {
            maps = up;
        }
    }
    for (int i = 0; i < STAGES; i++)
        sd_dtensor_free(feats[i]);
    if (!s)
        s = conv(m, maps, "classifier", true, 0, out);
    sd_dtensor_free(maps);
    return s;
}

void sd_pidinet_map(const float *logits, size_t n, bool safe, unsigned char *map)
{
    for (size_t i = 0; i < n; i++) {
        float e = 1.0f / (1.0f + expf(-logits[i]));
        if (safe) /* safe_step(x, 2): trunc(3 x) / 2 in float32 */
            e = (float)((int)(e * 3.0f)) / 2.0f;
        float v = e * 255.0f;
        map[i] = v >= 255.0f ? 255 : v > 0.0f ? (unsigned char)v : 0;
    }
}
