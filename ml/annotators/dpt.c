/* DPT building blocks on the op API. */
#include "ml/annotators/dpt.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f

sd_status sd_dpt_upload(sd_cl *cl, int ndim, const int64_t *shape, const float *host, sd_dtensor **out)
{
    sd_status s = sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return s;
}

sd_status sd_dpt_conv(const sd_dpt *d, const sd_dtensor *x, const char *name, const sd_dtensor *w_plain, int stride,
                      int pad, bool bias, bool relu, sd_dtensor **out)
{
    const sd_dtensor *w = w_plain, *b = NULL;
    sd_status s = SD_OK;
    if (!w)
        s = sd_weights_getf(d->w, &w, "%s.weight", name);
    if (!s && bias)
        s = sd_weights_getf(d->w, &b, "%s.bias", name);
    sd_conv2d_params p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad};
    if (!s)
        s = sd_op_conv2d(d->cl, x, w, b, &p, out);
    if (!s && relu)
        s = sd_op_leaky_relu_into(d->cl, *out, 0.0f, *out, 0);
    return s;
}

/* The [in, out] matrix of torch's bilinear interpolation along one axis: align_corners, or the
 * half-pixel form with scale in / out (source indices clamped at 0). */
static void bilinear_matrix(int64_t in, int64_t out, bool align_corners, float *m)
{
    float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : (float)in / (float)out;
    memset(m, 0, sizeof *m * (size_t)(in * out));
    for (int64_t o = 0; o < out; o++) {
        float src = align_corners ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        src = src < 0.0f ? 0.0f : src;
        int64_t i0 = (int64_t)src, i1 = i0 + (i0 < in - 1);
        float l1 = src - (float)i0;
        m[i0 * out + o] += 1.0f - l1;
        m[i1 * out + o] += l1;
    }
}

/* x [..., M, K] times the host matrix mat [K, N]: *out new [..., M, N]. */
static sd_status times_matrix(sd_cl *cl, const sd_dtensor *x, const float *mat, int64_t k, int64_t n, sd_dtensor **out)
{
    sd_dtensor *b = NULL;
    sd_status s = sd_dpt_upload(cl, 2, (const int64_t[]){k, n}, mat, &b);
    if (!s)
        s = sd_op_matmul(cl, x, false, b, false, NULL, SD_ACT_NONE, 1.0f, out);
    sd_dtensor_free(b);
    return s;
}

sd_status sd_dpt_resize_bilinear(sd_cl *cl, sd_dtensor **x, int64_t oh, int64_t ow, bool align_corners)
{
    int64_t c = (*x)->shape[1], h = (*x)->shape[2], w = (*x)->shape[3];
    float *mw = malloc(sizeof *mw * (size_t)(w * ow)), *mh = malloc(sizeof *mh * (size_t)(h * oh));
    sd_dtensor *a = NULL, *b = NULL;
    sd_status s = !mw || !mh ? sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
    if (!s) {
        bilinear_matrix(w, ow, align_corners, mw);
        bilinear_matrix(h, oh, align_corners, mh);
        s = sd_dtensor_reshape(*x, 3, (const int64_t[]){c, h, w});
    }
    if (!s && !(s = times_matrix(cl, *x, mw, w, ow, &a)) && !(s = sd_op_transpose(cl, a, NULL, &b))) {
        sd_dtensor_free(a);
        a = NULL;
        if (!(s = times_matrix(cl, b, mh, h, oh, &a))) { /* [C, ow, oh] */
            sd_dtensor_free(b);
            b = NULL;
            if (!(s = sd_op_transpose(cl, a, NULL, &b)))
                s = sd_dtensor_reshape(b, 4, (const int64_t[]){1, c, oh, ow});
        }
    }
    free(mw);
    free(mh);
    sd_dtensor_free(a);
    sd_dtensor_free(*x);
    *x = s ? NULL : b;
    if (s)
        sd_dtensor_free(b);
    return s;
}

/* ResidualConvUnit `name`: x + conv2(relu(conv1(relu(x)))), added into x. */
static sd_status residual_unit(const sd_dpt *d, const char *name, sd_dtensor *x)
{
    char n1[160], n2[160];
    snprintf(n1, sizeof n1, "%s.conv1", name);
    snprintf(n2, sizeof n2, "%s.conv2", name);
    sd_dtensor *a = NULL, *b = NULL;
    sd_status s = sd_op_clamp(d->cl, x, 0.0f, INFINITY, &a);
    if (!s && !(s = sd_dpt_conv(d, a, n1, NULL, 1, 1, true, true, &b))) {
        sd_dtensor_free(a);
        a = NULL;
        if (!(s = sd_dpt_conv(d, b, n2, NULL, 1, 1, true, false, &a)))
            s = sd_op_axpy_into(d->cl, 1.0f, a, NULL, x, 0);
    }
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    return s;
}

sd_status sd_dpt_fusion(const sd_dpt *d, const char *name, sd_dtensor **path, sd_dtensor *skip, int64_t oh,
                        int64_t ow)
{
    char part[160];
    sd_status s = SD_OK;
    snprintf(part, sizeof part, "%s.resConfUnit1", name);
    if (skip && !(s = residual_unit(d, part, skip)))
        s = sd_op_axpy_into(d->cl, 1.0f, skip, NULL, *path, 0);
    snprintf(part, sizeof part, "%s.resConfUnit2", name);
    if (!s && !(s = residual_unit(d, part, *path)) && !(s = sd_dpt_resize_bilinear(d->cl, path, oh, ow, true))) {
        sd_dtensor *o = NULL;
        snprintf(part, sizeof part, "%s.out_conv", name);
        s = sd_dpt_conv(d, *path, part, NULL, 1, 0, true, false, &o);
        sd_dtensor_free(*path);
        *path = o;
    }
    return s;
}

/* *t += branch, scaled by gamma when given (a new tensor replaces *t; branch is consumed). */
static sd_status add_branch(sd_cl *cl, sd_dtensor **t, sd_dtensor *branch, const sd_dtensor *gamma)
{
    sd_dtensor *g = NULL, *sum = NULL;
    sd_status s = gamma ? sd_op_binary(cl, SD_BINARY_MUL, branch, gamma, &g) : SD_OK;
    if (!s && !(s = sd_op_binary(cl, SD_BINARY_ADD, *t, g ? g : branch, &sum))) {
        sd_dtensor_free(*t);
        *t = sum;
    }
    sd_dtensor_free(g);
    sd_dtensor_free(branch);
    return s;
}

/* Tensor <block>.<part> into *out. */
static sd_status block_w(const sd_dpt *d, const char *block, const char *part, const sd_dtensor **out)
{
    return sd_weights_getf(d->w, out, "%s.%s", block, part);
}

/* x + [ls1 *] attn(norm1(x)). */
static sd_status vit_attention(const sd_dpt *d, const char *n, int heads, bool ls, sd_dtensor **t)
{
    sd_cl *cl = d->cl;
    const sd_dtensor *g, *b, *wq, *bq, *wp, *bp, *gamma = NULL;
    sd_status s;
    if ((s = block_w(d, n, "norm1.weight", &g)) || (s = block_w(d, n, "norm1.bias", &b)) ||
        (s = block_w(d, n, "attn.qkv.weight", &wq)) || (s = block_w(d, n, "attn.qkv.bias", &bq)) ||
        (s = block_w(d, n, "attn.proj.weight", &wp)) || (s = block_w(d, n, "attn.proj.bias", &bp)) ||
        (ls && (s = block_w(d, n, "ls1.gamma", &gamma))))
        return s;
    int64_t dim = (*t)->shape[2];
    sd_dtensor *h = NULL, *qkv = NULL, *q = NULL, *k = NULL, *v = NULL, *a = NULL, *o = NULL;
    if (!(s = sd_op_layer_norm(cl, *t, LN_EPS, g, b, &h)) && !(s = sd_op_linear(cl, h, wq, bq, SD_ACT_NONE, &qkv)) &&
        !(s = sd_op_slice(cl, qkv, 2, 0, dim, &q)) && !(s = sd_op_slice(cl, qkv, 2, dim, dim, &k)) &&
        !(s = sd_op_slice(cl, qkv, 2, 2 * dim, dim, &v)) && !(s = sd_op_attention(cl, q, k, v, heads, NULL, &a)) &&
        !(s = sd_op_linear(cl, a, wp, bp, SD_ACT_NONE, &o))) {
        s = add_branch(cl, t, o, gamma);
        o = NULL;
    }
    sd_dtensor_free(h), sd_dtensor_free(qkv), sd_dtensor_free(q), sd_dtensor_free(k), sd_dtensor_free(v);
    sd_dtensor_free(a), sd_dtensor_free(o);
    return s;
}

/* x + [ls2 *] fc2(gelu(fc1(norm2(x)))). */
static sd_status vit_mlp(const sd_dpt *d, const char *n, bool ls, sd_dtensor **t)
{
    sd_cl *cl = d->cl;
    const sd_dtensor *g, *b, *w1, *b1, *w2, *b2, *gamma = NULL;
    sd_status s;
    if ((s = block_w(d, n, "norm2.weight", &g)) || (s = block_w(d, n, "norm2.bias", &b)) ||
        (s = block_w(d, n, "mlp.fc1.weight", &w1)) || (s = block_w(d, n, "mlp.fc1.bias", &b1)) ||
        (s = block_w(d, n, "mlp.fc2.weight", &w2)) || (s = block_w(d, n, "mlp.fc2.bias", &b2)) ||
        (ls && (s = block_w(d, n, "ls2.gamma", &gamma))))
        return s;
    sd_dtensor *h = NULL, *u = NULL, *o = NULL;
    if (!(s = sd_op_layer_norm(cl, *t, LN_EPS, g, b, &h)) && !(s = sd_op_linear(cl, h, w1, b1, SD_ACT_GELU, &u)) &&
        !(s = sd_op_linear(cl, u, w2, b2, SD_ACT_NONE, &o))) {
        s = add_branch(cl, t, o, gamma);
        o = NULL;
    }
    sd_dtensor_free(h), sd_dtensor_free(u), sd_dtensor_free(o);
    return s;
}

sd_status sd_dpt_vit_block(const sd_dpt *d, const char *name, int heads, bool layer_scale, sd_dtensor **t)
{
    sd_status s = vit_attention(d, name, heads, layer_scale, t);
    return s ? s : vit_mlp(d, name, layer_scale, t);
}
