/* Depth Anything V2 (DINOv2 encoder, DPT head) on the op API. */
#include "ml/annotators/depth_anything.h"
#include "ml/annotators/conv_transpose.h"
#include "ml/annotators/dpt.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATCH 14
#define LN_EPS 1e-6f

struct sd_depth_anything {
    sd_cl *cl;
    sd_depth_anything_config cfg;
    sd_weights *w;
    sd_dpt dpt;                /* cl and w */
    float *pos;                /* pretrained.pos_embed, [1 + grid^2, dim] */
    sd_dtensor *up_w[2];       /* resize_layers.{0,1} as plain convolutions */
};

/* Checks that tensor <name> exists with ndim dimensions equal to shape (weights of any float
 * dtype). */
static sd_status expect(sd_context *ctx, const sd_safetensors *st, int ndim, const int64_t *shape, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));
static sd_status expect(sd_context *ctx, const sd_safetensors *st, int ndim, const int64_t *shape, const char *fmt,
                        ...)
{
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    bool ok = t && t->ndim == ndim && sd_st_dtype_is_weight(t->dtype);
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == shape[d];
    if (!t)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a Depth Anything V2 network: tensor '%s' is missing",
                            sd_safetensors_path(st), name);
    if (!ok)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for Depth Anything V2",
                            sd_safetensors_path(st), name);
    return SD_OK;
}

#define SHAPE(...) (sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

/* Conv `name`: weight [o, i, k, k], and bias [o] when bias is set. */
static sd_status expect_conv(sd_context *ctx, const sd_safetensors *st, const char *name, int64_t o, int64_t i,
                             int64_t k, bool bias)
{
    sd_status s = expect(ctx, st, SHAPE(o, i, k, k), "depth_head.%s.weight", name);
    if (!s && bias)
        s = expect(ctx, st, SHAPE(o), "depth_head.%s.bias", name);
    return s;
}

/* The first dimension of tensor name (0 when absent or not ndim-dimensional). */
static int64_t dim0(const sd_safetensors *st, const char *name, int ndim)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    return t && t->ndim == ndim ? t->shape[0] : 0;
}

static sd_status inspect_vit(sd_context *ctx, const sd_safetensors *st, sd_depth_anything_config *c)
{
    sd_status s;
    int64_t d = dim0(st, "pretrained.patch_embed.proj.weight", 4);
    if (d < 64 || d % 64 || d > 64 * 64)
        return expect(ctx, st, SHAPE(d < 64 ? 384 : d - d % 64, 3, PATCH, PATCH), "pretrained.patch_embed.proj.weight");
    const sd_st_tensor *pos = sd_safetensors_find(st, "pretrained.pos_embed");
    int64_t n = pos && pos->ndim == 3 ? pos->shape[1] - 1 : 0, g = (int64_t)lround(sqrt((double)n));
    if (n < 1 || g * g != n)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor 'pretrained.pos_embed' is not [1, 1 + g^2, dim]",
                            sd_safetensors_path(st));
    if ((s = expect(ctx, st, SHAPE(d, 3, PATCH, PATCH), "pretrained.patch_embed.proj.weight")) ||
        (s = expect(ctx, st, SHAPE(d), "pretrained.patch_embed.proj.bias")) ||
        (s = expect(ctx, st, SHAPE(1, 1, d), "pretrained.cls_token")) ||
        (s = expect(ctx, st, SHAPE(1, 1 + n, d), "pretrained.pos_embed")) ||
        (s = expect(ctx, st, SHAPE(d), "pretrained.norm.weight")) || (s = expect(ctx, st, SHAPE(d), "pretrained.norm.bias")))
        return s;
    if (sd_safetensors_find(st, "pretrained.blocks.0.mlp.w12.weight"))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: a SwiGLU MLP (ViT-g) is not supported", sd_safetensors_path(st));
    int64_t hid = dim0(st, "pretrained.blocks.0.mlp.fc1.weight", 2);
    int b = 0;
    for (; sd_safetensors_findf(st, "pretrained.blocks.%d.norm1.weight", b); b++) {
        if (b == SD_DEPTH_ANYTHING_MAX_BLOCKS)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: more than %d blocks", sd_safetensors_path(st),
                                SD_DEPTH_ANYTHING_MAX_BLOCKS);
        const char *p = "pretrained.blocks";
        if ((s = expect(ctx, st, SHAPE(d), "%s.%d.norm1.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.norm1.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(3 * d, d), "%s.%d.attn.qkv.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(3 * d), "%s.%d.attn.qkv.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(d, d), "%s.%d.attn.proj.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.attn.proj.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.ls1.gamma", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.norm2.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.norm2.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(hid ? hid : 1, d), "%s.%d.mlp.fc1.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(hid), "%s.%d.mlp.fc1.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(d, hid), "%s.%d.mlp.fc2.weight", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.mlp.fc2.bias", p, b)) ||
            (s = expect(ctx, st, SHAPE(d), "%s.%d.ls2.gamma", p, b)))
            return s;
    }
    if (b == 0 || b % 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %d ViT blocks, not a positive multiple of 4",
                            sd_safetensors_path(st), b);
    for (int i = 0; i < 4; i++) /* 24 blocks (ViT-L): 4, 11, 17, 23 */
        c->layers[i] = b == 24 && i == 0 ? 4 : (i + 1) * (b / 4) - 1;
    c->dim = (int)d, c->heads = (int)(d / 64), c->blocks = b, c->hidden = (int)hid, c->grid = (int)g;
    return SD_OK;
}

static sd_status inspect_head(sd_context *ctx, const sd_safetensors *st, sd_depth_anything_config *c)
{
    sd_status s;
    char name[64];
    int64_t f = dim0(st, "depth_head.scratch.layer1_rn.weight", 4);
    if (f < 2 || f % 2 || f > 4096)
        return expect_conv(ctx, st, "scratch.layer1_rn", f < 2 ? 64 : f + f % 2, 1, 3, false);
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "depth_head.projects.%d.weight", i);
        int64_t o = dim0(st, name, 4);
        c->out_ch[i] = (int)(o < 1 || o > 8192 ? 1 : o);
        snprintf(name, sizeof name, "projects.%d", i);
        if ((s = expect_conv(ctx, st, name, c->out_ch[i], c->dim, 1, true)))
            return s;
        snprintf(name, sizeof name, "scratch.layer%d_rn", i + 1);
        if ((s = expect_conv(ctx, st, name, f, c->out_ch[i], 3, false)))
            return s;
        for (int u = i == 3 ? 2 : 1; u <= 2; u++) /* refinenet4 has no skip input */
            for (int k = 1; k <= 2; k++) {
                snprintf(name, sizeof name, "scratch.refinenet%d.resConfUnit%d.conv%d", i + 1, u, k);
                if ((s = expect_conv(ctx, st, name, f, f, 3, true)))
                    return s;
            }
        snprintf(name, sizeof name, "scratch.refinenet%d.out_conv", i + 1);
        if ((s = expect_conv(ctx, st, name, f, f, 1, true)))
            return s;
    }
    /* ConvTranspose2d weights are [in, out, k, k] */
    if ((s = expect_conv(ctx, st, "resize_layers.0", c->out_ch[0], c->out_ch[0], 4, true)) ||
        (s = expect_conv(ctx, st, "resize_layers.1", c->out_ch[1], c->out_ch[1], 2, true)) ||
        (s = expect_conv(ctx, st, "resize_layers.3", c->out_ch[3], c->out_ch[3], 3, true)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv1", f / 2, f, 3, true)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv2.0", 32, f / 2, 3, true)) ||
        (s = expect_conv(ctx, st, "scratch.output_conv2.2", 1, 32, 1, true)))
        return s;
    c->features = (int)f;
    return SD_OK;
}

sd_status sd_depth_anything_inspect(sd_context *ctx, const sd_safetensors *st, sd_depth_anything_config *out)
{
    sd_depth_anything_config c = {0};
    sd_status s = inspect_vit(ctx, st, &c);
    if (!s && !(s = inspect_head(ctx, st, &c)))
        *out = c;
    return s;
}

sd_status sd_depth_anything_new(sd_cl *cl, const sd_safetensors *st, sd_depth_anything **out)
{
    sd_status s;
    *out = NULL;
    sd_depth_anything *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if (!(s = sd_depth_anything_inspect(cl->ctx, st, &m->cfg))) {
        const sd_st_tensor *pos = sd_safetensors_find(st, "pretrained.pos_embed");
        if (!(m->pos = malloc(sizeof *m->pos * pos->numel)))
            s = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        else
            s = sd_safetensors_read_f32(cl->ctx, st, pos, m->pos, pos->numel);
    }
    if (!s && !(s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &m->w)))
        m->dpt = (sd_dpt){cl, m->w};
    if (s ||
        (s = sd_conv_transpose_upload(cl, st, "depth_head.resize_layers.0.weight", &m->up_w[0])) ||
        (s = sd_conv_transpose_upload(cl, st, "depth_head.resize_layers.1.weight", &m->up_w[1]))) {
        sd_depth_anything_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_depth_anything_free(sd_depth_anything *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    sd_dtensor_free(m->up_w[0]);
    sd_dtensor_free(m->up_w[1]);
    free(m->pos);
    free(m);
}

/* ---- Host-side pieces ---- */

/* torch's cubic convolution weights (A = -0.75) for fraction t. */
static void torch_cubic(float t, float c[4])
{
    const float A = -0.75f;
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = 2.0f - t;
    c[0] = ((A * x1 - 5 * A) * x1 + 8 * A) * x1 - 4 * A;
    c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    c[2] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
    c[3] = ((A * x3 - 5 * A) * x3 + 8 * A) * x3 - 4 * A;
}

/* One output index of F.interpolate(mode="bicubic", align_corners=False, scale_factor=scale):
 * the first of its 4 source indices (unclamped) and their weights. */
static int cubic_source(int64_t dst, double scale, float c[4])
{
    float s = (float)(1.0 / scale), real = s * ((float)dst + 0.5f) - 0.5f, f = floorf(real);
    torch_cubic(real - f, c);
    return (int)f - 1;
}

static int64_t clamp64(int64_t v, int64_t hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

/* DINOv2's interpolate_pos_encoding for an hp x wp token grid: the cls row, then the grid
 * resized by bicubic interpolation with scale factors ((hp + 0.1) / g, (wp + 0.1) / g), unless
 * the grid is already square of that size. out: [1 + hp wp, dim]. */
static void position_embedding(const sd_depth_anything *m, int64_t hp, int64_t wp, float *out)
{
    int64_t d = m->cfg.dim, g = m->cfg.grid;
    memcpy(out, m->pos, sizeof *out * (size_t)((1 + g * g) * d));
    if (hp == g && wp == g)
        return;
    const float *grid = m->pos + d;
    for (int64_t y = 0; y < hp; y++) {
        float cy[4], cx[4];
        int y0 = cubic_source(y, ((double)hp + 0.1) / (double)g, cy);
        for (int64_t x = 0; x < wp; x++) {
            int x0 = cubic_source(x, ((double)wp + 0.1) / (double)g, cx);
            float *o = out + (1 + y * wp + x) * d;
            for (int64_t ch = 0; ch < d; ch++) {
                float rows[4];
                for (int j = 0; j < 4; j++) {
                    const float *r = grid + clamp64(y0 + j, g - 1) * g * d + ch;
                    rows[j] = r[clamp64(x0, g - 1) * d] * cx[0] + r[clamp64(x0 + 1, g - 1) * d] * cx[1] +
                              r[clamp64(x0 + 2, g - 1) * d] * cx[2] + r[clamp64(x0 + 3, g - 1) * d] * cx[3];
                }
                o[ch] = rows[0] * cy[0] + rows[1] * cy[1] + rows[2] * cy[2] + rows[3] * cy[3];
            }
        }
    }
}

/* ---- Device pieces ---- */

/* Patch embedding, cls token and position embedding of x [1, 3, 14 hp, 14 wp]: *t new
 * [1, 1 + hp wp, D]. */
static sd_status vit_tokens(sd_depth_anything *m, const sd_dtensor *x, int64_t hp, int64_t wp, sd_dtensor **t)
{
    sd_cl *cl = m->cl;
    int64_t d = m->cfg.dim, n = 1 + hp * wp;
    const sd_dtensor *w, *b, *cls;
    sd_dtensor *p = NULL, *pt = NULL, *cat = NULL, *pos = NULL;
    float *host = malloc(sizeof *host * (size_t)(n * d));
    sd_conv2d_params cp = {.stride_h = PATCH, .stride_w = PATCH};
    sd_status s = host ? SD_OK : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s && !(s = sd_weights_get(m->w, "pretrained.patch_embed.proj.weight", &w)) &&
        !(s = sd_weights_get(m->w, "pretrained.patch_embed.proj.bias", &b)) &&
        !(s = sd_weights_get_f32(m->w, "pretrained.cls_token", &cls)) && !(s = sd_op_conv2d(cl, x, w, b, &cp, &p)) &&
        !(s = sd_dtensor_reshape(p, 3, (const int64_t[]){1, d, hp * wp})) && !(s = sd_op_transpose(cl, p, NULL, &pt)) &&
        !(s = sd_op_concat(cl, cls, pt, 1, &cat))) {
        position_embedding(m, hp, wp, host);
        if (!(s = sd_dpt_upload(cl, 3, (const int64_t[]){1, n, d}, host, &pos)))
            s = sd_op_binary(cl, SD_BINARY_ADD, cat, pos, t);
    }
    free(host);
    sd_dtensor_free(p), sd_dtensor_free(pt), sd_dtensor_free(cat), sd_dtensor_free(pos);
    return s;
}

/* The final norm of the tokens t, without the cls token, as a map [1, D, hp, wp]: *out new. */
static sd_status vit_feature(sd_depth_anything *m, const sd_dtensor *t, int64_t hp, int64_t wp, sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_dtensor *n = NULL, *s1 = NULL;
    sd_status s;
    if (!(s = sd_weights_get(m->w, "pretrained.norm.weight", &g)) && !(s = sd_weights_get(m->w, "pretrained.norm.bias", &b)) &&
        !(s = sd_op_layer_norm(m->cl, t, LN_EPS, g, b, &n)) && !(s = sd_op_slice(m->cl, n, 1, 1, hp * wp, &s1)) &&
        !(s = sd_op_transpose(m->cl, s1, NULL, out)))
        s = sd_dtensor_reshape(*out, 4, (const int64_t[]){1, m->cfg.dim, hp, wp});
    sd_dtensor_free(n), sd_dtensor_free(s1);
    return s;
}

/* The head's input i from feature f [1, D, hp, wp]: projection, resize layer, *_rn conv. */
static sd_status head_layer(sd_depth_anything *m, int i, const sd_dtensor *f, sd_dtensor **out)
{
    char name[48];
    sd_dtensor *p = NULL, *r = NULL, *z = NULL;
    snprintf(name, sizeof name, "depth_head.projects.%d", i);
    sd_status s = sd_dpt_conv(&m->dpt, f, name, NULL, 1, 0, true, false, &p);
    if (!s && i < 2) { /* transposed conv, kernel = stride = 4 or 2, as a plain one */
        int k = i == 0 ? 4 : 2;
        snprintf(name, sizeof name, "depth_head.resize_layers.%d", i);
        if (!(s = sd_op_zero_insert(m->cl, p, k, k - 1, k - 1, &z)))
            s = sd_dpt_conv(&m->dpt, z, name, m->up_w[i], 1, 0, true, false, &r);
    } else if (!s && i == 3) {
        s = sd_dpt_conv(&m->dpt, p, "depth_head.resize_layers.3", NULL, 2, 1, true, false, &r);
    }
    snprintf(name, sizeof name, "depth_head.scratch.layer%d_rn", i + 1);
    if (!s)
        s = sd_dpt_conv(&m->dpt, r ? r : p, name, NULL, 1, 1, false, false, out);
    sd_dtensor_free(p), sd_dtensor_free(r), sd_dtensor_free(z);
    return s;
}

/* The DPT head on the four *_rn maps (consumed): *out new [1, 1, 14 hp, 14 wp]. */
static sd_status head(sd_depth_anything *m, sd_dtensor **rn, int64_t hp, int64_t wp, sd_dtensor **out)
{
    sd_dtensor *path = rn[3], *a = NULL;
    rn[3] = NULL;
    sd_status s = sd_dpt_fusion(&m->dpt, "depth_head.scratch.refinenet4", &path, NULL, rn[2]->shape[2], rn[2]->shape[3]);
    for (int i = 2; !s && i >= 0; i--) {
        int64_t oh = i ? rn[i - 1]->shape[2] : 2 * rn[0]->shape[2], ow = i ? rn[i - 1]->shape[3] : 2 * rn[0]->shape[3];
        char name[48];
        snprintf(name, sizeof name, "depth_head.scratch.refinenet%d", i + 1);
        s = sd_dpt_fusion(&m->dpt, name, &path, rn[i], oh, ow);
    }
    if (!s && !(s = sd_dpt_conv(&m->dpt, path, "depth_head.scratch.output_conv1", NULL, 1, 1, true, false, &a)) &&
        !(s = sd_dpt_resize_bilinear(m->cl, &a, PATCH * hp, PATCH * wp, true))) {
        sd_dtensor_free(path);
        path = NULL;
        if (!(s = sd_dpt_conv(&m->dpt, a, "depth_head.scratch.output_conv2.0", NULL, 1, 1, true, true, &path)))
            s = sd_dpt_conv(&m->dpt, path, "depth_head.scratch.output_conv2.2", NULL, 1, 0, true, true, out);
    }
    sd_dtensor_free(path), sd_dtensor_free(a);
    return s;
}

sd_status sd_depth_anything_forward(sd_depth_anything *m, const sd_dtensor *x, sd_dtensor **out)
{
    char d[96];
    *out = NULL;
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % PATCH || x->shape[3] % PATCH ||
        x->shape[2] < PATCH || x->shape[3] < PATCH)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID,
                            "Depth Anything: input %s is not [1, 3, H, W] with H, W positive multiples of 14",
                            sd_dtensor_describe(x, d, sizeof d));
    int64_t hp = x->shape[2] / PATCH, wp = x->shape[3] / PATCH;
    sd_dtensor *t = NULL, *rn[4] = {0};
    sd_status s = vit_tokens(m, x, hp, wp, &t);
    for (int i = 0, l = 0; !s && l < 4; i++) {
        char name[48];
        snprintf(name, sizeof name, "pretrained.blocks.%d", i);
        if (!(s = sd_dpt_vit_block(&m->dpt, name, m->cfg.heads, true, &t)) && i == m->cfg.layers[l]) {
            sd_dtensor *f = NULL;
            if (!(s = vit_feature(m, t, hp, wp, &f)))
                s = head_layer(m, l, f, &rn[l]);
            sd_dtensor_free(f);
            l++;
        }
    }
    sd_dtensor_free(t);
    if (!s)
        s = head(m, rn, hp, wp, out);
    for (int l = 0; l < 4; l++)
        sd_dtensor_free(rn[l]);
    return s;
}

/* image2tensor's Resize: the side scaled by `scale`, rounded to a multiple of 14 (up when that
 * falls below input_size). */
static int64_t net_side(double scale, int64_t side, int input_size)
{
    double x = scale * (double)side;
    int64_t y = (int64_t)(nearbyint(x / PATCH) * PATCH);
    return y < input_size ? (int64_t)(ceil(x / PATCH) * PATCH) : y;
}

sd_status sd_depth_anything_infer(sd_depth_anything *m, const sd_img8 *img, int input_size, float *depth)
{
    sd_context *ctx = m->cl->ctx;
    double sh = (double)input_size / (double)img->h, sw = (double)input_size / (double)img->w, k = sh > sw ? sh : sw;
    int64_t nh = net_side(k, img->h, input_size), nw = net_side(k, img->w, input_size), n = nh * nw;
    int64_t hw = img->h * img->w;
    static const double mean[3] = {0.485, 0.456, 0.406}, stdv[3] = {0.229, 0.224, 0.225};
    double *src = malloc(sizeof *src * (size_t)(3 * hw)), *dst = malloc(sizeof *dst * (size_t)(3 * n));
    float *x = malloc(sizeof *x * (size_t)(3 * n));
    sd_dtensor *dx = NULL, *y = NULL;
    sd_status s = !src || !dst || !x ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld image",
                                                     (long long)nw, (long long)nh)
                                     : SD_OK;
    for (int64_t i = 0; !s && i < 3 * hw; i++)
        src[i] = img->px[i] / 255.0;
    if (!s)
        s = sd_aux_resize_cubic_f64(ctx, src, img->h, img->w, 3, dst, nh, nw);
    for (int64_t i = 0; !s && i < n; i++)
        for (int c = 0; c < 3; c++)
            x[c * n + i] = (float)((dst[i * 3 + c] - mean[c]) / stdv[c]);
    if (!s && !(s = sd_dpt_upload(m->cl, 4, (const int64_t[]){1, 3, nh, nw}, x, &dx)) &&
        !(s = sd_depth_anything_forward(m, dx, &y)) && !(s = sd_dpt_resize_bilinear(m->cl, &y, img->h, img->w, true)))
        s = sd_dtensor_download(y, depth);
    free(src), free(dst), free(x);
    sd_dtensor_free(dx), sd_dtensor_free(y);
    return s;
}

void sd_depth_anything_map(const float *depth, size_t n, unsigned char *map)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        lo = depth[i] < lo ? depth[i] : lo;
        hi = depth[i] > hi ? depth[i] : hi;
    }
    float range = hi - lo;
    for (size_t i = 0; i < n; i++) {
        float v = range > 0 ? (depth[i] - lo) / range * 255.0f : 0.0f;
        map[i] = (unsigned char)(v >= 255.0f ? 255 : v > 0.0f ? (int)v : 0);
    }
}
