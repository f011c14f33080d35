/* LDM AutoencoderKL (see vae.h). ResBlocks are GroupNorm(32, eps 1e-6)+SiLU, conv3x3 twice, with a
 * 1x1 shortcut when the width changes; the mid block has one single-head attention whose head
 * size is the full width (512 in SD1), run through the fused attention op. */
#include "ml/vae/vae.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdlib.h>

#define VAE_NORM_EPS 1e-6f

struct sd_vae {
    sd_cl *cl;
    sd_vae_config config;
    sd_weights *w;
};

sd_status sd_vae_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, const sd_vae_config *config,
                     sd_dtype weight_dtype, sd_vae **out)
{
    *out = NULL;
    sd_vae *v = calloc(1, sizeof *v);
    if (!v)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    v->cl = cl;
    v->config = *config;
    sd_status s = sd_weights_new(cl, st, prefix, weight_dtype, &v->w);
    if (s) {
        free(v);
        return s;
    }
    *out = v;
    return SD_OK;
}

void sd_vae_free(sd_vae *v)
{
    if (!v)
        return;
    sd_weights_free(v->w);
    free(v);
}

const sd_vae_config *sd_vae_config_of(const sd_vae *v)
{
    return &v->config;
}

/* buf = a "." b; a name too long for buf becomes "" (reported as a missing tensor). */
static void join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s.%s", a, b);
    if (n < 0 || (size_t)n >= size)
        buf[0] = '\0';
}

/* Replaces *x with y (freeing the old tensor); convenient for x = f(x) chains. */
static void replace(sd_dtensor **x, sd_dtensor *y)
{
    sd_dtensor_free(*x);
    *x = y;
}

static sd_status conv(sd_vae *v, const char *name, const sd_dtensor *x, int stride, int pad, sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = sd_weights_getf(v->w, &w, "%s.weight", name);
    if (!s)
        s = sd_weights_getf(v->w, &b, "%s.bias", name);
    sd_conv2d_params p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .act = SD_ACT_NONE};
    return s ? s : sd_op_conv2d(v->cl, x, w, b, &p, out);
}

/* A conv whose padding follows from its kernel size: 3x3 pad 1, 1x1 pad 0. */
static sd_status conv_same(sd_vae *v, const char *name, const sd_dtensor *x, sd_dtensor **out)
{
    char wname[200];
    join(wname, sizeof wname, name, "weight");
    const sd_st_tensor *t = sd_weights_info(v->w, wname);
    int pad = t && t->ndim == 4 ? (int)(t->shape[2] / 2) : 0;
    return conv(v, name, x, 1, pad, out);
}

static sd_status norm(sd_vae *v, const char *name, const sd_dtensor *x, bool silu, sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_status s = sd_weights_getf(v->w, &g, "%s.weight", name);
    if (!s)
        s = sd_weights_getf(v->w, &b, "%s.bias", name);
    return s ? s : sd_op_group_norm(v->cl, x, v->config.norm_groups, VAE_NORM_EPS, g, b, silu, out);
}

/* ResnetBlock: x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the skip through nin_shortcut when
 * the width changes. Replaces *x. */
static sd_status resblock(sd_vae *v, const char *name, sd_dtensor **x)
{
    char n[200];
    sd_dtensor *h = NULL, *t = NULL, *skip = NULL, *sum = NULL;
    join(n, sizeof n, name, "norm1");
    sd_status s = norm(v, n, *x, true, &h);
    join(n, sizeof n, name, "conv1");
    if (!s) s = conv(v, n, h, 1, 1, &t);
    replace(&h, NULL);
    join(n, sizeof n, name, "norm2");
    if (!s) s = norm(v, n, t, true, &h);
    replace(&t, NULL);
    join(n, sizeof n, name, "conv2");
    if (!s) s = conv(v, n, h, 1, 1, &t);
    join(n, sizeof n, name, "nin_shortcut.weight");
    if (!s && sd_weights_has(v->w, n)) {
        join(n, sizeof n, name, "nin_shortcut");
        s = conv(v, n, *x, 1, 0, &skip);
    }
    if (!s) s = sd_op_binary(v->cl, SD_BINARY_ADD, skip ? skip : *x, t, &sum);
    if (!s)
        replace(x, sum);
    sd_dtensor_free(h);
    sd_dtensor_free(t);
    sd_dtensor_free(skip);
    return s;
}

/* AttnBlock: x + proj_out(attention(q, k, v)) with q, k, v 1x1 convs of norm(x), one head of
 * size C over the H*W positions, through the fused attention op (no [HW, HW] score matrix).
 * Replaces *x. */
static sd_status attnblock(sd_vae *v, const char *name, sd_dtensor **x)
{
    char n[200];
    int64_t b = (*x)->shape[0], c = (*x)->shape[1], hh = (*x)->shape[2], ww = (*x)->shape[3];
    int64_t flat[3] = {b, c, hh * ww}, img[4] = {b, c, hh, ww};
    const char *proj[3] = {"q", "k", "v"};
    sd_dtensor *h = NULL, *qkv[3] = {NULL, NULL, NULL}, *tokens[3] = {NULL, NULL, NULL}, *o = NULL, *ot = NULL,
               *p = NULL, *sum = NULL;
    join(n, sizeof n, name, "norm");
    sd_status s = norm(v, n, *x, false, &h);
    for (int i = 0; i < 3 && !s; i++) {
        join(n, sizeof n, name, proj[i]);
        s = conv(v, n, h, 1, 0, &qkv[i]);
        if (!s) s = sd_dtensor_reshape(qkv[i], 3, flat);
        if (!s) s = sd_op_transpose(v->cl, qkv[i], NULL, &tokens[i]); /* [B, HW, C] */
        replace(&qkv[i], NULL);
    }
    replace(&h, NULL);
    if (!s) s = sd_op_attention(v->cl, tokens[0], tokens[1], tokens[2], 1, NULL, &o);
    for (int i = 0; i < 3; i++)
        replace(&tokens[i], NULL);
    join(n, sizeof n, name, "proj_out");
    /* Back to NCHW, then proj_out (a 1x1 conv) and the residual. */
    if (!s) s = sd_op_transpose(v->cl, o, NULL, &ot);
    replace(&o, NULL);
    if (!s) s = sd_dtensor_reshape(ot, 4, img);
    if (!s) s = conv(v, n, ot, 1, 0, &p);
    if (!s) s = sd_op_binary(v->cl, SD_BINARY_ADD, *x, p, &sum);
    if (!s)
        replace(x, sum);
    sd_dtensor_free(ot);
    sd_dtensor_free(p);
    return s;
}

static sd_status mid(sd_vae *v, const char *part, sd_dtensor **x)
{
    char n[200];
    join(n, sizeof n, part, "mid.block_1");
    sd_status s = resblock(v, n, x);
    join(n, sizeof n, part, "mid.attn_1");
    if (!s) s = attnblock(v, n, x);
    join(n, sizeof n, part, "mid.block_2");
    if (!s) s = resblock(v, n, x);
    return s;
}

/* LDM Downsample: zero-pad right and bottom by one, then a stride-2 3x3 conv without padding. */
static sd_status downsample(sd_vae *v, const char *name, sd_dtensor **x)
{
    int64_t b = (*x)->shape[0], c = (*x)->shape[1], hh = (*x)->shape[2], ww = (*x)->shape[3];
    int64_t row_shape[4] = {b, c, 1, ww}, col_shape[4] = {b, c, hh + 1, 1};
    sd_dtensor *row = NULL, *col = NULL, *t = NULL, *padded = NULL, *y = NULL;
    sd_status s = sd_dtensor_zeros(v->cl, SD_DTYPE_F32, 4, row_shape, &row);
    if (!s) s = sd_dtensor_zeros(v->cl, SD_DTYPE_F32, 4, col_shape, &col);
    if (!s) s = sd_op_concat(v->cl, *x, row, 2, &t);
    if (!s) s = sd_op_concat(v->cl, t, col, 3, &padded);
    if (!s) s = conv(v, name, padded, 2, 0, &y);
    if (!s)
        replace(x, y);
    sd_dtensor_free(row);
    sd_dtensor_free(col);
    sd_dtensor_free(t);
    sd_dtensor_free(padded);
    return s;
}

static sd_status upsample(sd_vae *v, const char *name, sd_dtensor **x)
{
    sd_dtensor *up = NULL, *y = NULL;
    sd_status s = sd_op_upsample_nearest2x(v->cl, *x, &up);
    if (!s) s = conv(v, name, up, 1, 1, &y);
    if (!s)
        replace(x, y);
    sd_dtensor_free(up);
    return s;
}

/* norm_out + SiLU + conv_out of the encoder or decoder. Replaces *x. */
static sd_status head(sd_vae *v, const char *part, sd_dtensor **x)
{
    char n[200];
    sd_dtensor *h = NULL, *y = NULL;
    join(n, sizeof n, part, "norm_out");
    sd_status s = norm(v, n, *x, true, &h);
    join(n, sizeof n, part, "conv_out");
    if (!s) s = conv(v, n, h, 1, 1, &y);
    if (!s)
        replace(x, y);
    sd_dtensor_free(h);
    return s;
}

static sd_status check_input(sd_vae *v, const sd_dtensor *x, int channels, int multiple, const char *what)
{
    char desc[96];
    if (x->ndim != 4 || x->shape[1] != channels || x->shape[2] % multiple || x->shape[3] % multiple ||
        x->shape[2] < 1 || x->shape[3] < 1)
        return sd_set_error(v->cl->ctx, SD_ERR_INVALID,
                            "VAE %s: input %s is not [batch, %d, H, W] with H and W multiples of %d", what,
                            sd_dtensor_describe(x, desc, sizeof desc), channels, multiple);
    return SD_OK;
}

sd_status sd_vae_decode(sd_vae *v, const sd_dtensor *z, sd_dtensor **out)
{
    *out = NULL;
    const sd_vae_config *c = &v->config;
    sd_status s = check_input(v, z, c->z_channels, 1, "decode");
    sd_dtensor *x = NULL;
    char n[200];
    if (!s && c->no_quant_conv) { /* FLUX: the decoder reads z as it is */
        if (!(s = sd_dtensor_new(v->cl, SD_DTYPE_F32, z->ndim, z->shape, &x)))
            s = sd_dtensor_copy(x, z);
    } else if (!s) {
        s = conv_same(v, "post_quant_conv", z, &x);
    }
    if (!s) {
        sd_dtensor *h = NULL;
        s = conv(v, "decoder.conv_in", x, 1, 1, &h);
        replace(&x, h);
    }
    if (!s) s = mid(v, "decoder", &x);
    for (int level = c->n_levels - 1; !s && level >= 0; level--) {
        for (int j = 0; !s && j < c->num_res_blocks + 1; j++) {
            snprintf(n, sizeof n, "decoder.up.%d.block.%d", level, j);
            s = resblock(v, n, &x);
        }
        if (!s && level != 0) {
            snprintf(n, sizeof n, "decoder.up.%d.upsample.conv", level);
            s = upsample(v, n, &x);
        }
    }
    if (!s) s = head(v, "decoder", &x);
    if (s) {
        sd_dtensor_free(x);
        sd_error_prefix(v->cl->ctx, "VAE decode");
        return s;
    }
    *out = x;
    return SD_OK;
}

sd_status sd_vae_encode(sd_vae *v, const sd_dtensor *image, sd_dtensor **out)
{
    *out = NULL;
    const sd_vae_config *c = &v->config;
    sd_status s = check_input(v, image, c->in_channels, 1 << (c->n_levels - 1), "encode");
    sd_dtensor *x = NULL, *moments = NULL;
    char n[200];
    if (!s) s = conv(v, "encoder.conv_in", image, 1, 1, &x);
    for (int level = 0; !s && level < c->n_levels; level++) {
        for (int j = 0; !s && j < c->num_res_blocks; j++) {
            snprintf(n, sizeof n, "encoder.down.%d.block.%d", level, j);
            s = resblock(v, n, &x);
        }
        if (!s && level != c->n_levels - 1) {
            snprintf(n, sizeof n, "encoder.down.%d.downsample.conv", level);
            s = downsample(v, n, &x);
        }
    }
    if (!s) s = mid(v, "encoder", &x);
    if (!s) s = head(v, "encoder", &x);
    if (!s && c->no_quant_conv) {
        moments = x;
        x = NULL;
    } else if (!s) {
        s = conv_same(v, "quant_conv", x, &moments);
    }
    /* The posterior mean: the first embed_dim channels of the moments (the rest is log-variance). */
    if (!s) s = sd_op_slice(v->cl, moments, 1, 0, c->embed_dim, out);
    sd_dtensor_free(x);
    sd_dtensor_free(moments);
    if (s)
        sd_error_prefix(v->cl->ctx, "VAE encode");
    return s;
}
