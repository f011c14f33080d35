/* The informative-drawings Generator on the op API. */
#include "ml/annotators/lineart.h"
#include "ml/annotators/conv_transpose.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_image.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct sd_lineart {
    sd_cl *cl;
    sd_lineart_config cfg;
    sd_weights *w;
    sd_dtensor *up_w[2]; /* model3.{0,3} as plain convolutions (flipped, in/out swapped) */
};

/* Checks conv `name`.weight [o, i, k, k] (any dtype weights may have) and its bias [bias_n]. */
static sd_status expect_conv(sd_context *ctx, const sd_safetensors *st, const char *name, int64_t o, int64_t i,
                             int64_t k, int64_t bias_n)
{
    char full[96];
    for (int part = 0; part < 2; part++) {
        snprintf(full, sizeof full, "%s.%s", name, part ? "bias" : "weight");
        const sd_st_tensor *t = sd_safetensors_find(st, full);
        int64_t want[4] = {part ? bias_n : o, i, k, k};
        bool ok = t && t->ndim == (part ? 1 : 4) && sd_st_dtype_is_weight(t->dtype);
        for (int d = 0; ok && d < t->ndim; d++)
            ok = t->shape[d] == want[d];
        if (!t)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a line art network: tensor '%s' is missing",
                                sd_safetensors_path(st), full);
        if (!ok)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for a line art network",
                                sd_safetensors_path(st), full);
    }
    return SD_OK;
}

sd_status sd_lineart_inspect(sd_context *ctx, const sd_safetensors *st, sd_lineart_config *out)
{
    sd_status s;
    const sd_st_tensor *t = sd_safetensors_find(st, "model0.1.weight");
    int64_t b = t && t->ndim == 4 ? t->shape[0] : 0;
    if (b < 1 || b > SD_LINEART_MAX_BASE)
        return expect_conv(ctx, st, "model0.1", b < 1 ? 1 : SD_LINEART_MAX_BASE, 3, 7, 1);
    if ((s = expect_conv(ctx, st, "model0.1", b, 3, 7, b)) || (s = expect_conv(ctx, st, "model1.0", 2 * b, b, 3, 2 * b)) ||
        (s = expect_conv(ctx, st, "model1.3", 4 * b, 2 * b, 3, 4 * b)))
        return s;
    int n = 0;
    char name[64];
    for (;; n++) {
        snprintf(name, sizeof name, "model2.%d.conv_block.1.weight", n);
        if (!sd_safetensors_find(st, name))
            break;
        if (n == SD_LINEART_MAX_BLOCKS)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: more than %d residual blocks", sd_safetensors_path(st),
                                SD_LINEART_MAX_BLOCKS);
        for (int c = 1; c <= 5; c += 4) {
            snprintf(name, sizeof name, "model2.%d.conv_block.%d", n, c);
            if ((s = expect_conv(ctx, st, name, 4 * b, 4 * b, 3, 4 * b)))
                return s;
        }
    }
    /* ConvTranspose2d weights are [in, out, k, k] */
    if ((s = expect_conv(ctx, st, "model3.0", 4 * b, 2 * b, 3, 2 * b)) ||
        (s = expect_conv(ctx, st, "model3.3", 2 * b, b, 3, b)) || (s = expect_conv(ctx, st, "model4.1", 1, b, 7, 1)))
        return s;
    out->base = (int)b, out->blocks = n;
    return SD_OK;
}

sd_status sd_lineart_new(sd_cl *cl, const sd_safetensors *st, sd_lineart **out)
{
    sd_status s;
    *out = NULL;
    sd_lineart *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if ((s = sd_lineart_inspect(cl->ctx, st, &m->cfg)) || (s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &m->w)) ||
        (s = sd_conv_transpose_upload(cl, st, "model3.0.weight", &m->up_w[0])) ||
        (s = sd_conv_transpose_upload(cl, st, "model3.3.weight", &m->up_w[1]))) {
        sd_lineart_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_lineart_free(sd_lineart *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    sd_dtensor_free(m->up_w[0]);
    sd_dtensor_free(m->up_w[1]);
    free(m);
}

/* torch ReflectionPad2d(p) of an NCHW tensor: *out is new. */
static sd_status reflect_pad(sd_cl *cl, sd_dtensor *x, int p, sd_dtensor **out)
{
    int64_t nchw[4] = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    int64_t as_img[4] = {nchw[0] * nchw[1], nchw[2], nchw[3], 1};
    sd_status s = sd_dtensor_reshape(x, 4, as_img);
    if (!s)
        s = sd_op_pad(cl, x, p, p, p, p, SD_PAD_REFLECT, 0.0f, out);
    sd_dtensor_reshape(x, 4, nchw);
    if (!s)
        s = sd_dtensor_reshape(*out, 4, (const int64_t[]){nchw[0], nchw[1], nchw[2] + 2 * p, nchw[3] + 2 * p});
    return s;
}

/* One stage on h (consumed): [reflect pad], conv `name` (or the plain form of a transposed
 * one: zero-spread input, weights w_plain), then instance norm and ReLU as asked. */
typedef struct stage {
    const char *name;
    int reflect, stride, pad;
    const sd_dtensor *w_plain;
    bool norm, relu;
} stage;

static sd_status run_stage(sd_lineart *m, sd_dtensor **h, const stage *sg)
{
    sd_status s = SD_OK;
    sd_dtensor *t = NULL, *u = NULL;
    const sd_dtensor *w = sg->w_plain, *b = NULL;
    if (sg->reflect)
        s = reflect_pad(m->cl, *h, sg->reflect, &t);
    else if (w)
        s = sd_op_zero_insert(m->cl, *h, 2, 1, 2, &t); /* stride 2, padding 1, output_padding 1 */
    if (!s && !w)
        s = sd_weights_getf(m->w, &w, "%s.weight", sg->name);
    if (!s)
        s = sd_weights_getf(m->w, &b, "%s.bias", sg->name);
    sd_conv2d_params p = {.stride_h = sg->stride, .stride_w = sg->stride, .pad_h = sg->pad, .pad_w = sg->pad};
    if (!s)
        s = sd_op_conv2d(m->cl, t ? t : *h, w, b, &p, &u);
    sd_dtensor_free(t);
    sd_dtensor_free(*h);
    *h = NULL;
    if (!s && sg->norm) {
        s = sd_op_group_norm(m->cl, u, (int)u->shape[1], 1e-5f, NULL, NULL, false, &t);
        sd_dtensor_free(u);
        u = t;
    }
    if (!s && sg->relu)
        s = sd_op_leaky_relu_into(m->cl, u, 0.0f, u, 0);
    if (s)
        sd_dtensor_free(u);
    else
        *h = u;
    return s;
}

sd_status sd_lineart_forward(sd_lineart *m, const sd_dtensor *x, sd_dtensor **out)
{
    char d[96];
    *out = NULL;
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % 4 || x->shape[3] % 4 ||
        x->shape[2] < 8 || x->shape[3] < 8)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID,
                            "line art: input %s is not [1, 3, H, W] with H, W multiples of 4 from 8",
                            sd_dtensor_describe(x, d, sizeof d));
    sd_dtensor *h = NULL;
    sd_status s = sd_op_scale(m->cl, x, 1.0f, 0.0f, &h); /* a copy the stages may consume */
    const stage head[] = {{"model0.1", 3, 1, 0, NULL, true, true},
                          {"model1.0", 0, 2, 1, NULL, true, true},
                          {"model1.3", 0, 2, 1, NULL, true, true}};
    for (size_t i = 0; !s && i < 3; i++)
        s = run_stage(m, &h, &head[i]);
    for (int r = 0; !s && r < m->cfg.blocks; r++) {
        char n1[48], n5[48];
        snprintf(n1, sizeof n1, "model2.%d.conv_block.1", r);
        snprintf(n5, sizeof n5, "model2.%d.conv_block.5", r);
        stage a = {n1, 1, 1, 0, NULL, true, true}, b = {n5, 1, 1, 0, NULL, true, false};
        sd_dtensor *res = NULL;
        if (!(s = sd_op_scale(m->cl, h, 1.0f, 0.0f, &res)) && !(s = run_stage(m, &res, &a)) &&
            !(s = run_stage(m, &res, &b)))
            s = sd_op_axpy_into(m->cl, 1.0f, res, NULL, h, 0); /* h += block(h) */
        sd_dtensor_free(res);
    }
    const stage tail[] = {{"model3.0", 0, 1, 0, m->up_w[0], true, true},
                          {"model3.3", 0, 1, 0, m->up_w[1], true, true},
                          {"model4.1", 3, 1, 0, NULL, false, false}};
    for (size_t i = 0; !s && i < 3; i++)
        s = run_stage(m, &h, &tail[i]);
    if (s)
        sd_dtensor_free(h);
    else
        *out = h;
    return s;
}

void sd_lineart_map(const float *logits, size_t n, unsigned char *map)
{
    for (size_t i = 0; i < n; i++) {
        float v = 1.0f / (1.0f + expf(-logits[i])) * 255.0f;
        map[i] = (unsigned char)(255 - (v >= 255.0f ? 255 : v > 0.0f ? (int)v : 0));
    }
}
