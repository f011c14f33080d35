/* ControlNetHED_Apache2 on the op API, and HEDdetector's edge map. */
#include "ml/annotators/hed.h"
#include "ml/annotators/aux_image.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct sd_hed {
    sd_cl *cl;
    sd_hed_config cfg;
    sd_weights *w;
    sd_dtensor *neg_norm; /* -norm [1, 3, 1, 1] */
};

/* Checks that tensor `name` of st has the given 4-D (or 1-D: d1..d3 = 0) shape. */
static sd_status expect(sd_context *ctx, const sd_safetensors *st, const char *name, int64_t d0, int64_t d1,
                        int64_t d2, int64_t d3)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    int nd = d1 ? 4 : 1;
    int64_t want[4] = {d0, d1, d2, d3};
    bool ok = t && t->ndim == nd && sd_st_dtype_is_weight(t->dtype);
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == want[i];
    if (ok)
        return SD_OK;
    if (!t)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a HED network: tensor '%s' is missing",
                            sd_safetensors_path(st), name);
    return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has the wrong shape or dtype for a HED network",
                        sd_safetensors_path(st), name);
}

sd_status sd_hed_inspect(sd_context *ctx, const sd_safetensors *st, sd_hed_config *out)
{
    sd_status s;
    char name[64];
    if ((s = expect(ctx, st, "norm", 1, 3, 1, 1)))
        return s;
    int64_t cin = 3;
    for (int b = 0; b < SD_HED_BLOCKS; b++) {
        snprintf(name, sizeof name, "block%d.convs.0.weight", b + 1);
        const sd_st_tensor *t = sd_safetensors_find(st, name);
        int64_t width = t && t->ndim == 4 ? t->shape[0] : 0;
        if (width < 1 || width > SD_HED_MAX_WIDTH)
            return expect(ctx, st, name, width < 1 ? 1 : SD_HED_MAX_WIDTH, cin, 3, 3);
        int n = 0;
        for (;; n++) {
            snprintf(name, sizeof name, "block%d.convs.%d.weight", b + 1, n);
            if (!sd_safetensors_find(st, name))
                break;
            if (n == SD_HED_MAX_CONVS)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: HED block %d has more than %d convolutions",
                                    sd_safetensors_path(st), b + 1, SD_HED_MAX_CONVS);
            if ((s = expect(ctx, st, name, width, n ? width : cin, 3, 3)))
                return s;
            snprintf(name, sizeof name, "block%d.convs.%d.bias", b + 1, n);
            if ((s = expect(ctx, st, name, width, 0, 0, 0)))
                return s;
        }
        snprintf(name, sizeof name, "block%d.projection.weight", b + 1);
        if ((s = expect(ctx, st, name, 1, width, 1, 1)))
            return s;
        snprintf(name, sizeof name, "block%d.projection.bias", b + 1);
        if ((s = expect(ctx, st, name, 1, 0, 0, 0)))
            return s;
        out->width[b] = (int)width, out->convs[b] = n;
        cin = width;
    }
    return SD_OK;
}

sd_status sd_hed_new(sd_cl *cl, const sd_safetensors *st, sd_hed **out)
{
    sd_status s;
    float norm[3];
    *out = NULL;
    sd_hed *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    if ((s = sd_hed_inspect(cl->ctx, st, &m->cfg)) ||
        (s = sd_safetensors_read_f32(cl->ctx, st, sd_safetensors_find(st, "norm"), norm, 3)) ||
        (s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &m->w)) ||
        (s = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, 1, 1}, &m->neg_norm))) {
        sd_hed_free(m);
        return s;
    }
    for (int i = 0; i < 3; i++)
        norm[i] = -norm[i];
    if ((s = sd_dtensor_upload(m->neg_norm, norm))) {
        sd_hed_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_hed_free(sd_hed *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    sd_dtensor_free(m->neg_norm);
    free(m);
}

/* conv (3x3 padding 1, or the 1x1 projection) of block b: *out is new. */
static sd_status conv(sd_hed *m, const sd_dtensor *x, int b, int i, sd_dtensor **out)
{
    sd_status s;
    const sd_dtensor *w, *bias;
    bool proj = i < 0;
    if ((s = proj ? sd_weights_getf(m->w, &w, "block%d.projection.weight", b + 1)
                  : sd_weights_getf(m->w, &w, "block%d.convs.%d.weight", b + 1, i)) ||
        (s = proj ? sd_weights_getf(m->w, &bias, "block%d.projection.bias", b + 1)
                  : sd_weights_getf(m->w, &bias, "block%d.convs.%d.bias", b + 1, i)))
        return s;
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1, .pad_h = proj ? 0 : 1, .pad_w = proj ? 0 : 1};
    return sd_op_conv2d(m->cl, x, w, bias, &p, out);
}

sd_status sd_hed_forward(sd_hed *m, const sd_dtensor *x, sd_dtensor *proj[SD_HED_BLOCKS])
{
    sd_status s;
    char d[96];
    for (int b = 0; b < SD_HED_BLOCKS; b++)
        proj[b] = NULL;
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] % 16 || x->shape[3] % 16)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "HED: input %s is not [1, 3, H, W] with H, W multiples of 16",
                            sd_dtensor_describe(x, d, sizeof d));
    sd_dtensor *h = NULL, *t = NULL;
    s = sd_op_binary(m->cl, SD_BINARY_ADD, x, m->neg_norm, &h);
    for (int b = 0; !s && b < SD_HED_BLOCKS; b++) {
        if (b > 0) {
            s = sd_op_max_pool2x2(m->cl, h, &t);
            sd_dtensor_free(h);
            h = t, t = NULL;
        }
        for (int i = 0; !s && i < m->cfg.convs[b]; i++) {
            if (!(s = conv(m, h, b, i, &t)))
                s = sd_op_leaky_relu_into(m->cl, t, 0.0f, t, 0); /* ReLU in place */
            sd_dtensor_free(h);
            h = t, t = NULL;
        }
        if (!s)
            s = conv(m, h, b, -1, &proj[b]);
    }
    sd_dtensor_free(h);
    if (s)
        for (int b = 0; b < SD_HED_BLOCKS; b++) {
            sd_dtensor_free(proj[b]);
            proj[b] = NULL;
        }
    return s;
}

sd_status sd_hed_edge_map(sd_context *ctx, const float *const proj[SD_HED_BLOCKS], const int64_t ph[SD_HED_BLOCKS],
                          const int64_t pw[SD_HED_BLOCKS], int64_t h, int64_t w, bool safe, unsigned char *map)
{
    size_t n = (size_t)(h * w);
    float *e = malloc(sizeof *e * n * SD_HED_BLOCKS);
    if (!e)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld edge map", (long long)w, (long long)h);
    sd_status s = SD_OK;
    for (int b = 0; !s && b < SD_HED_BLOCKS; b++)
        s = sd_aux_resize_linear_f32(ctx, proj[b], ph[b], pw[b], e + b * n, h, w);
    for (size_t i = 0; !s && i < n; i++) {
        float sum = e[i]; /* numpy's float32 mean along the last axis: summed in order */
        for (int b = 1; b < SD_HED_BLOCKS; b++)
            sum += e[b * n + i];
        double edge = 1.0 / (1.0 + exp(-(double)(sum / (float)SD_HED_BLOCKS)));
        if (safe) { /* safe_step(x, 2): trunc(3 x) / 2 in float32 */
            float v = (float)((int)((float)edge * 3.0f)) / 2.0f;
            float px = v * 255.0f;
            map[i] = px >= 255.0f ? 255 : px > 0.0f ? (unsigned char)px : 0;
        } else {
            double px = edge * 255.0;
            map[i] = px >= 255.0 ? 255 : px > 0.0 ? (unsigned char)px : 0;
        }
    }
    free(e);
    return s;
}
