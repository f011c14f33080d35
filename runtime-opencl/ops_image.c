/* Image ops: host side of kernels/ops_image.cl. See ops_image.h. */
#include "runtime-opencl/ops_image.h"
#include "core/checked.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KFILE "ops_image.cl"
#define PRECISION_BITS 22 /* PIL's 8-bit resampling precision, as in the kernel */
#define RESAMPLE_RUN 32   /* inner elements per work-item in resample_axis (kernel's RUN) */
#define RESAMPLE_OBLK 8   /* output positions per work-item (kernel's OBLK) */

static sd_status kernel(sd_cl *cl, const char *name, cl_kernel *k)
{
    return sd_cl_kernel(cl, KFILE, name, NULL, k);
}

/* Checks that x is an f32 [B, H, W, C] image whose sizes fit the kernels' 32-bit indices. */
static sd_status require_image(sd_cl *cl, const char *op, const sd_dtensor *x)
{
    char d[96];
    if (x->dtype != SD_DTYPE_F32 || x->ndim != 4)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: image %s must be f32 [B, H, W, C]", op,
                            sd_dtensor_describe(x, d, sizeof d));
    if (x->shape[1] > INT32_MAX || x->shape[2] > INT32_MAX || x->shape[2] * x->shape[3] > INT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "%s: image %s is too large", op,
                            sd_dtensor_describe(x, d, sizeof d));
    return SD_OK;
}

static sd_status new_image(sd_cl *cl, int64_t b, int64_t h, int64_t w, int64_t c, sd_dtensor **out)
{
    int64_t shape[4] = {b, h, w, c};
    return sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, out);
}

/* ---- Tap tables ----
 * One resampling axis: output o reads input[idx[o*taps + k]] * w[o*taps + k] (k < taps; padding
 * taps have weight 0); wi holds PIL's fixed-point weights (LANCZOS_U8 only, else NULL). */
typedef struct resize_taps {
    int taps;
    int *idx;
    float *w;
    int *wi;
} resize_taps;

static void taps_free(resize_taps *t);

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

/* torch's cubic convolution weights for fraction t (A = -0.75), in float as torch computes. */
static void cubic_weights(float t, float w[4])
{
    const float a = -0.75f;
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = x2 + 1.0f;
    w[0] = ((a * x1 - 5.0f * a) * x1 + 8.0f * a) * x1 - 4.0f * a;
    w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    w[2] = ((a + 2.0f) * x2 - (a + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((a * x3 - 5.0f * a) * x3 + 8.0f * a) * x3 - 4.0f * a;
}

static bool taps_alloc(resize_taps *t, int64_t n_out, int taps, bool fixed)
{
    size_t n;
    t->taps = taps;
    t->idx = NULL;
    t->w = NULL;
    t->wi = NULL;
    if (!sd_mul_size((size_t)n_out, (size_t)taps, &n))
        return false;
    t->idx = calloc(n, sizeof *t->idx);
    t->w = calloc(n, sizeof *t->w);
    if (fixed)
        t->wi = calloc(n, sizeof *t->wi);
    if (!t->idx || !t->w || (fixed && !t->wi)) {
        taps_free(t);
        return false;
    }
    return true;
}

static void taps_free(resize_taps *t)
{
    free(t->idx);
    free(t->w);
    free(t->wi);
    t->idx = NULL;
    t->w = NULL;
    t->wi = NULL;
}

/* PIL's precompute_coeffs for LANCZOS (support 3, scaled by the downscale factor). */
static bool taps_lanczos(int64_t n_in, int64_t n_out, bool fixed, resize_taps *t)
{
    double scale = (double)n_in / (double)n_out;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    if (!taps_alloc(t, n_out, ksize, fixed))
        return false;
    double *k = malloc((size_t)ksize * sizeof *k);
    if (!k) {
        taps_free(t);
        return false;
    }
    for (int64_t o = 0; o < n_out; o++) {
        double center = ((double)o + 0.5) * scale, ss = 1.0 / filterscale, ww = 0.0;
        int64_t xmin = (int64_t)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int64_t xmax = (int64_t)(center + support + 0.5);
        if (xmax > n_in)
            xmax = n_in;
        xmax -= xmin;
        for (int64_t x = 0; x < xmax; x++) {
            k[x] = lanczos3(((double)(x + xmin) - center + 0.5) * ss);
            ww += k[x];
        }
        for (int64_t x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            size_t i = (size_t)o * (size_t)ksize + (size_t)x;
            t->idx[i] = (int)(x < xmax ? xmin + x : xmin);
            t->w[i] = (float)v;
            if (fixed)
                t->wi[i] = v < 0 ? (int)(-0.5 + v * (1 << PRECISION_BITS)) : (int)(0.5 + v * (1 << PRECISION_BITS));
        }
    }
    free(k);
    return true;
}

/* Builds the taps mapping n_in samples to n_out (both >= 1) for method; false when memory runs
 * out. */
static bool taps_build(sd_resize_method method, int64_t n_in, int64_t n_out, resize_taps *t)
{
    /* torch: scale = (float)in / out; source index of output o: scale * (o + 0.5) - 0.5. */
    float scale = (float)n_in / (float)n_out;
    switch (method) {
    case SD_RESIZE_NEAREST_EXACT:
        if (!taps_alloc(t, n_out, 1, false))
            return false;
        for (int64_t o = 0; o < n_out; o++) {
            int64_t i = (int64_t)floorf((float)(((double)o + 0.5) * (double)scale));
            t->idx[o] = (int)(i < n_in - 1 ? i : n_in - 1);
            t->w[o] = 1.0f;
        }
        return true;
    case SD_RESIZE_BILINEAR:
        if (!taps_alloc(t, n_out, 2, false))
            return false;
        for (int64_t o = 0; o < n_out; o++) {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            if (src < 0.0f)
                src = 0.0f;
            int64_t i = (int64_t)floorf(src);
            if (i > n_in - 1)
                i = n_in - 1;
            float l = fminf(fmaxf(src - (float)i, 0.0f), 1.0f);
            t->idx[2 * o] = (int)i;
            t->idx[2 * o + 1] = (int)(i < n_in - 1 ? i + 1 : i);
            t->w[2 * o] = 1.0f - l;
            t->w[2 * o + 1] = l;
        }
        return true;
    case SD_RESIZE_BICUBIC:
        if (!taps_alloc(t, n_out, 4, false))
            return false;
        for (int64_t o = 0; o < n_out; o++) {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            int64_t i = (int64_t)floorf(src);
            if (i > n_in - 1)
                i = n_in - 1;
            float l = fminf(fmaxf(src - (float)i, 0.0f), 1.0f);
            cubic_weights(l, &t->w[4 * o]);
            for (int k = 0; k < 4; k++) {
                int64_t j = i - 1 + k;
                t->idx[4 * o + k] = (int)(j < 0 ? 0 : j > n_in - 1 ? n_in - 1 : j);
            }
        }
        return true;
    case SD_RESIZE_AREA: {
        /* adaptive_avg_pool: window [floor(o in / out), ceil((o+1) in / out)). */
        int taps = 0;
        for (int64_t o = 0; o < n_out; o++) {
            int64_t s = o * n_in / n_out, e = ((o + 1) * n_in + n_out - 1) / n_out;
            if (e - s > taps)
                taps = (int)(e - s);
        }
        if (!taps_alloc(t, n_out, taps, false))
            return false;
        for (int64_t o = 0; o < n_out; o++) {
            int64_t s = o * n_in / n_out, e = ((o + 1) * n_in + n_out - 1) / n_out;
            for (int k = 0; k < taps; k++) {
                t->idx[o * taps + k] = (int)(s + k < e ? s + k : s);
                t->w[o * taps + k] = s + k < e ? 1.0f / (float)(e - s) : 0.0f;
            }
        }
        return true;
    }
    case SD_RESIZE_LANCZOS:
        return taps_lanczos(n_in, n_out, false, t);
    case SD_RESIZE_LANCZOS_U8:
        return taps_lanczos(n_in, n_out, true, t);
    }
    return false;
}

/* Uploads a host array into a pooled buffer. */
static sd_status upload_array(sd_cl *cl, const void *data, size_t bytes, const char *what, cl_mem *buf,
                              size_t *cap)
{
    sd_status st = sd_cl_buffer_get(cl, bytes, what, buf, cap);
    if (st)
        return st;
    if ((st = sd_cl_write(cl, *buf, 0, bytes, data))) {
        sd_cl_buffer_release(cl, *buf, *cap);
        *buf = NULL;
    }
    return st;
}

/* One resampling pass of x viewed as [outer, n_in, inner] into a new [outer, n_out, inner]
 * tensor with the given 4-D shape. */
static sd_status resample_pass(sd_cl *cl, const sd_dtensor *x, const resize_taps *t, bool fixed,
                               size_t outer, size_t n_in, size_t n_out, size_t inner,
                               const int64_t shape[4], sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    cl_mem idx = NULL, w = NULL;
    size_t idx_cap = 0, w_cap = 0, n = n_out * (size_t)t->taps;
    sd_dtensor *y = NULL;
    if ((st = kernel(cl, fixed ? "resample_axis_u8" : "resample_axis", &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &y)) ||
        (st = upload_array(cl, t->idx, n * sizeof(int), "resize taps", &idx, &idx_cap)) ||
        (st = upload_array(cl, fixed ? (const void *)t->wi : (const void *)t->w, n * 4, "resize weights",
                           &w, &w_cap)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_MEM(idx), SD_ARG_MEM(w),
                        SD_ARG_UINT(t->taps), SD_ARG_UINT(n_in), SD_ARG_UINT(n_out), SD_ARG_UINT(inner)};
    size_t global[3] = {(inner + RESAMPLE_RUN - 1) / RESAMPLE_RUN, (n_out + RESAMPLE_OBLK - 1) / RESAMPLE_OBLK, outer};
    if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    if (idx)
        sd_cl_buffer_release(cl, idx, idx_cap);
    if (w)
        sd_cl_buffer_release(cl, w, w_cap);
    sd_dtensor_free(y);
    return st;
}

/* Runs an elementwise image kernel (x, y, [extra mem,] n) into a new tensor of x's shape. */
static sd_status map_kernel(sd_cl *cl, const char *name, const sd_dtensor *x, cl_mem extra, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    if ((st = kernel(cl, name, &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, x->shape, &y)))
        goto done;
    sd_cl_arg with[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_MEM(extra), SD_ARG_LONG(x->numel)};
    sd_cl_arg without[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_LONG(x->numel)};
    size_t global = x->numel;
    if ((st = extra ? sd_cl_launch(cl, k, 1, &global, NULL, SD_NARGS(with), with)
                    : sd_cl_launch(cl, k, 1, &global, NULL, SD_NARGS(without), without)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* One pass along W (horizontal) or H of cur into a new tensor. */
static sd_status axis_pass(sd_cl *cl, const sd_dtensor *cur, bool horizontal, const resize_taps *t,
                           bool fixed, int64_t n_out, sd_dtensor **out)
{
    int64_t b = cur->shape[0], h = cur->shape[1], w = cur->shape[2], c = cur->shape[3];
    if (horizontal) {
        int64_t shape[4] = {b, h, n_out, c};
        return resample_pass(cl, cur, t, fixed, (size_t)(b * h), (size_t)w, (size_t)n_out, (size_t)c, shape, out);
    }
    int64_t shape[4] = {b, n_out, w, c};
    return resample_pass(cl, cur, t, fixed, (size_t)b, (size_t)h, (size_t)n_out, (size_t)(w * c), shape, out);
}

/* Resamples with tap tables, one pass per axis whose size changes. The order is Pillow's
 * (observed with Pillow 13, which the 8-bit path must match bit for bit): the vertical pass
 * first when the height shrinks while the width grows, else the horizontal pass first. */
static sd_status resample_2d(sd_cl *cl, const sd_dtensor *x, int64_t out_h, int64_t out_w,
                             sd_resize_method method, sd_dtensor **out)
{
    sd_status st = SD_OK;
    bool fixed = method == SD_RESIZE_LANCZOS_U8;
    int64_t h = x->shape[1], w = x->shape[2];
    resize_taps tw = {0}, th = {0};
    sd_dtensor *mid = NULL, *y = NULL;
    if ((w != out_w && !taps_build(method, w, out_w, &tw)) ||
        (h != out_h && !taps_build(method, h, out_h, &th))) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "resize: out of memory for tap tables");
        goto done;
    }
    bool vertical_first = out_h < h && out_w > w;
    bool need[2] = {vertical_first ? h != out_h : w != out_w, vertical_first ? w != out_w : h != out_h};
    const sd_dtensor *cur = x;
    for (int pass = 0; pass < 2; pass++) {
        if (!need[pass])
            continue;
        bool horizontal = (pass == 0) != vertical_first;
        sd_dtensor *next = NULL;
        if ((st = axis_pass(cl, cur, horizontal, horizontal ? &tw : &th, fixed, horizontal ? out_w : out_h, &next)))
            goto done;
        sd_dtensor_free(mid);
        mid = next;
        cur = mid;
    }
    if (cur == x) {
        if ((st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, x->shape, &y)) || (st = sd_dtensor_copy(y, x)))
            goto done;
    } else {
        y = mid;
        mid = NULL;
    }
    *out = y;
    y = NULL;
done:
    taps_free(&tw);
    taps_free(&th);
    sd_dtensor_free(mid);
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_resize(sd_cl *cl, const sd_dtensor *x, int64_t out_h, int64_t out_w,
                       sd_resize_method method, sd_dtensor **out)
{
    sd_status st;
    sd_dtensor *q = NULL, *r = NULL, *y = NULL;
    cl_mem lut = NULL;
    size_t lut_cap = 0;
    char d[96];
    *out = NULL;
    if ((st = require_image(cl, "resize", x)))
        return st;
    if (out_h < 1 || out_w < 1 || out_h > INT32_MAX || out_w > INT32_MAX || out_w * x->shape[3] > INT32_MAX ||
        x->shape[1] < 1 || x->shape[2] < 1)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "resize: cannot resize %s to %lldx%lld",
                            sd_dtensor_describe(x, d, sizeof d), (long long)out_w, (long long)out_h);
    if ((unsigned)method > SD_RESIZE_LANCZOS_U8)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "resize: unknown method %d", (int)method);
    if (method != SD_RESIZE_LANCZOS_U8)
        return resample_2d(cl, x, out_h, out_w, method, out);
    /* ComfyUI's lanczos: to uint8 levels, PIL's 8-bit passes, back to [0, 1]. */
    float table[256];
    for (int i = 0; i < 256; i++)
        table[i] = (float)i / 255.0f;
    if ((st = upload_array(cl, table, sizeof table, "lanczos level table", &lut, &lut_cap)) ||
        (st = map_kernel(cl, "quantize_u8", x, NULL, &q)) ||
        (st = resample_2d(cl, q, out_h, out_w, method, &r)) || (st = map_kernel(cl, "dequantize_u8", r, lut, &y)))
        goto done;
    *out = y;
    y = NULL;
done:
    if (lut)
        sd_cl_buffer_release(cl, lut, lut_cap);
    sd_dtensor_free(q);
    sd_dtensor_free(r);
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_crop(sd_cl *cl, const sd_dtensor *x, int64_t top, int64_t left, int64_t h, int64_t w,
                     sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_image(cl, "crop", x)))
        return st;
    if (top < 0 || left < 0 || h < 1 || w < 1 || top > x->shape[1] - h || left > x->shape[2] - w)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "crop: %lldx%lld at (%lld, %lld) is outside %s",
                            (long long)w, (long long)h, (long long)left, (long long)top,
                            sd_dtensor_describe(x, d, sizeof d));
    if ((st = kernel(cl, "crop_rows", &k)) || (st = new_image(cl, x->shape[0], h, w, x->shape[3], &y)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(x->shape[1]),
                        SD_ARG_UINT(x->shape[2]), SD_ARG_UINT(x->shape[3]), SD_ARG_UINT(h),
                        SD_ARG_UINT(w), SD_ARG_UINT(top), SD_ARG_UINT(left)};
    size_t rows = (size_t)(x->shape[0] * h);
    if (y->numel && (st = sd_cl_launch(cl, k, 1, &rows, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_pad(sd_cl *cl, const sd_dtensor *x, int64_t top, int64_t bottom, int64_t left,
                    int64_t right, sd_pad_mode mode, float value, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_image(cl, "pad", x)))
        return st;
    const int64_t lim = INT32_MAX / 4;
    if (top < 0 || bottom < 0 || left < 0 || right < 0 || top > lim || bottom > lim || left > lim ||
        right > lim || x->shape[1] + top + bottom > INT32_MAX || x->shape[2] + left + right > INT32_MAX ||
        (mode == SD_PAD_EDGE && (x->shape[1] == 0 || x->shape[2] == 0)) ||
        (mode == SD_PAD_REFLECT && (top >= x->shape[1] || bottom >= x->shape[1] || left >= x->shape[2] ||
                                    right >= x->shape[2])))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "pad: cannot pad %s by %lld/%lld/%lld/%lld",
                            sd_dtensor_describe(x, d, sizeof d), (long long)top, (long long)bottom,
                            (long long)left, (long long)right);
    int64_t oh = x->shape[1] + top + bottom, ow = x->shape[2] + left + right;
    if ((st = kernel(cl, "pad_image", &k)) || (st = new_image(cl, x->shape[0], oh, ow, x->shape[3], &y)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(x->shape[1]),
                        SD_ARG_UINT(x->shape[2]), SD_ARG_UINT(x->shape[3]), SD_ARG_UINT(oh),
                        SD_ARG_UINT(ow), SD_ARG_UINT(top), SD_ARG_UINT(left),
                        SD_ARG_INT((int)mode), SD_ARG_FLOAT(value)};
    size_t global[3] = {(size_t)ow, (size_t)oh, (size_t)x->shape[0]};
    if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* ---- Blur ---- */

void sd_blur_kernel_comfy(int radius, float sigma, float *k)
{
    int n = 2 * radius + 1;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double t = n == 1 ? -1.0 : -1.0 + 2.0 * i / (n - 1);
        k[i] = (float)exp(-(t * t) / (2.0 * (double)sigma * (double)sigma));
        sum += k[i];
    }
    for (int i = 0; i < n; i++)
        k[i] = (float)(k[i] / sum);
}

void sd_blur_kernel_gaussian(int radius, float sigma, float *k)
{
    double sum = 0.0;
    for (int i = -radius; i <= radius; i++) {
        k[i + radius] = (float)exp(-(double)(i * i) / (2.0 * (double)sigma * (double)sigma));
        sum += k[i + radius];
    }
    for (int i = 0; i <= 2 * radius; i++)
        k[i] = (float)(k[i] / sum);
}

/* Mirror index i into [0, n) without repeating the edge sample (period 2n - 2). */
static int64_t reflect_index(int64_t i, int64_t n)
{
    if (n == 1)
        return 0;
    int64_t p = 2 * n - 2;
    i %= p;
    if (i < 0)
        i += p;
    return i < n ? i : p - i;
}

static bool taps_blur(int64_t n, int radius, const float *k, resize_taps *t)
{
    int taps = 2 * radius + 1;
    if (!taps_alloc(t, n, taps, false))
        return false;
    for (int64_t o = 0; o < n; o++)
        for (int j = 0; j < taps; j++) {
            t->idx[o * taps + j] = (int)reflect_index(o + j - radius, n);
            t->w[o * taps + j] = k[j];
        }
    return true;
}

sd_status sd_op_blur(sd_cl *cl, const sd_dtensor *x, int radius, const float *k, sd_dtensor **out)
{
    sd_status st;
    resize_taps tw = {0}, th = {0};
    sd_dtensor *mid = NULL, *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_image(cl, "blur", x)))
        return st;
    if (radius < 0 || radius > 1024 || x->shape[1] < 1 || x->shape[2] < 1)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "blur: radius %d on %s", radius,
                            sd_dtensor_describe(x, d, sizeof d));
    int64_t b = x->shape[0], h = x->shape[1], w = x->shape[2], c = x->shape[3];
    if (!taps_blur(w, radius, k, &tw) || !taps_blur(h, radius, k, &th)) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "blur: out of memory for tap tables");
        goto done;
    }
    if ((st = resample_pass(cl, x, &tw, false, (size_t)(b * h), (size_t)w, (size_t)w, (size_t)c, x->shape, &mid)) ||
        (st = resample_pass(cl, mid, &th, false, (size_t)b, (size_t)h, (size_t)h, (size_t)(w * c), x->shape, &y)))
        goto done;
    *out = y;
    y = NULL;
done:
    taps_free(&tw);
    taps_free(&th);
    sd_dtensor_free(mid);
    sd_dtensor_free(y);
    return st;
}

/* ---- Sobel and Canny ---- */

sd_status sd_op_sobel(sd_cl *cl, const sd_dtensor *x, sd_dtensor **gx, sd_dtensor **gy)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *a = NULL, *b = NULL;
    *gx = *gy = NULL;
    if ((st = require_image(cl, "sobel", x)) || (st = kernel(cl, "sobel", &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, x->shape, &a)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, x->shape, &b)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(a->buf), SD_ARG_MEM(b->buf),
                        SD_ARG_UINT(x->shape[1]), SD_ARG_UINT(x->shape[2]), SD_ARG_UINT(x->shape[3])};
    size_t global[3] = {(size_t)x->shape[2], (size_t)x->shape[1], (size_t)x->shape[0]};
    if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
        goto done;
    *gx = a;
    *gy = b;
    a = b = NULL;
done:
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    return st;
}

/* Runs the row and column hysteresis sweeps until a round changes no pixel (one flag read back
 * per round). */
static sd_status hysteresis(sd_cl *cl, sd_dtensor *edges, int64_t b, int64_t h, int64_t w)
{
    sd_status st;
    cl_kernel kr, kc;
    cl_mem flag = NULL;
    size_t flag_cap = 0;
    if ((st = kernel(cl, "canny_hysteresis_rows", &kr)) || (st = kernel(cl, "canny_hysteresis_cols", &kc)) ||
        (st = sd_cl_buffer_get(cl, sizeof(cl_int), "canny flag", &flag, &flag_cap)))
        goto done;
    for (;;) {
        cl_int changed = 0;
        if ((st = sd_cl_write(cl, flag, 0, sizeof changed, &changed)))
            goto done;
        sd_cl_arg args[] = {SD_ARG_MEM(edges->buf), SD_ARG_MEM(flag), SD_ARG_UINT(h), SD_ARG_UINT(w)};
        size_t rows[2] = {(size_t)h, (size_t)b}, cols[2] = {(size_t)w, (size_t)b};
        if ((st = sd_cl_launch(cl, kr, 2, rows, NULL, SD_NARGS(args), args)) ||
            (st = sd_cl_launch(cl, kc, 2, cols, NULL, SD_NARGS(args), args)) ||
            (st = sd_cl_read(cl, flag, 0, sizeof changed, &changed)))
            goto done;
        if (!changed)
            break;
    }
done:
    if (flag)
        sd_cl_buffer_release(cl, flag, flag_cap);
    return st;
}

sd_status sd_op_canny(sd_cl *cl, const sd_dtensor *x, float low, float high, sd_dtensor **out)
{
    sd_status st;
    cl_kernel kg, km, kn, ko;
    sd_dtensor *gray = NULL, *blur = NULL, *gx = NULL, *gy = NULL, *mag = NULL, *edges = NULL, *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_image(cl, "canny", x)))
        return st;
    if ((x->shape[3] != 3 && x->shape[3] != 1) || x->shape[1] < 1 || x->shape[2] < 1)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "canny: image %s must have 1 or 3 channels",
                            sd_dtensor_describe(x, d, sizeof d));
    if (!(low > 0.0f) || !(low <= high))
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "canny: thresholds must satisfy 0 < low <= high (got low %g, high %g)", low, high);
    int64_t b = x->shape[0], h = x->shape[1], w = x->shape[2];
    size_t n = (size_t)(b * h * w);
    int64_t plane_shape[4] = {b, h, w, 1};
    float k5[5];
    sd_blur_kernel_gaussian(2, 1.0f, k5);
    if ((st = kernel(cl, "rgb_to_gray", &kg)) || (st = kernel(cl, "canny_magnitude", &km)) ||
        (st = kernel(cl, "canny_nms", &kn)) || (st = kernel(cl, "canny_to_rgb", &ko)))
        goto done;
    const sd_dtensor *src = x;
    if (x->shape[3] == 3) {
        if ((st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, plane_shape, &gray)))
            goto done;
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(gray->buf), SD_ARG_LONG(n)};
        if ((st = sd_cl_launch(cl, kg, 1, &n, NULL, SD_NARGS(args), args)))
            goto done;
        src = gray;
    }
    if ((st = sd_op_blur(cl, src, 2, k5, &blur)) || (st = sd_op_sobel(cl, blur, &gx, &gy)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, plane_shape, &mag)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, plane_shape, &edges)) ||
        (st = new_image(cl, b, h, w, 3, &y)))
        goto done;
    sd_cl_arg margs[] = {SD_ARG_MEM(gx->buf), SD_ARG_MEM(gy->buf), SD_ARG_MEM(mag->buf), SD_ARG_LONG(n),
                         SD_ARG_FLOAT(1e-6f)};
    if ((st = sd_cl_launch(cl, km, 1, &n, NULL, SD_NARGS(margs), margs)))
        goto done;
    sd_cl_arg nargs[] = {SD_ARG_MEM(mag->buf), SD_ARG_MEM(gx->buf), SD_ARG_MEM(gy->buf), SD_ARG_MEM(edges->buf),
                         SD_ARG_UINT(h), SD_ARG_UINT(w), SD_ARG_FLOAT(low), SD_ARG_FLOAT(high)};
    size_t global[3] = {(size_t)w, (size_t)h, (size_t)b};
    if ((st = sd_cl_launch(cl, kn, 3, global, NULL, SD_NARGS(nargs), nargs)) ||
        (st = hysteresis(cl, edges, b, h, w)))
        goto done;
    sd_cl_arg oargs[] = {SD_ARG_MEM(edges->buf), SD_ARG_MEM(y->buf), SD_ARG_LONG(n)};
    if ((st = sd_cl_launch(cl, ko, 1, &n, NULL, SD_NARGS(oargs), oargs)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(gray);
    sd_dtensor_free(blur);
    sd_dtensor_free(gx);
    sd_dtensor_free(gy);
    sd_dtensor_free(mag);
    sd_dtensor_free(edges);
    sd_dtensor_free(y);
    return st;
}
