/* comfyui_controlnet_aux's 8-bit image steps as numpy and OpenCV 4 (no IPP) compute them. */
#include "ml/annotators/aux_image.h"
#include "core/checked.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { COEF_BITS = 11, COEF_ONE = 1 << COEF_BITS }; /* INTER_RESIZE_COEF_BITS / _SCALE */
enum { MAX_SIDE = 1 << 24 };                         /* bound on any side: indexes fit an int */

sd_status sd_img8_new(sd_context *ctx, int64_t h, int64_t w, int64_t c, sd_img8 *out)
{
    int64_t dims[3] = {h, w, c};
    size_t n;
    memset(out, 0, sizeof *out);
    if (h < 1 || w < 1 || c < 1 || h > MAX_SIDE || w > MAX_SIDE || !sd_shape_bytes(dims, 3, 1, &n))
        return sd_set_error(ctx, SD_ERR_LIMIT, "image of %lldx%lldx%lld is too large", (long long)h, (long long)w,
                            (long long)c);
    if (!(out->px = calloc(n, 1)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)h, (long long)w);
    out->h = h, out->w = w, out->c = c;
    return SD_OK;
}

void sd_img8_free(sd_img8 *img)
{
    if (img) {
        free(img->px);
        memset(img, 0, sizeof *img);
    }
}

static unsigned char sat_u8(long v)
{
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* numpy's float32 -> uint8 cast of a value the annotators have clipped or know in range. */
static unsigned char trunc_u8(float v)
{
    return !(v > 0.0f) ? 0 : v >= 255.0f ? 255 : (unsigned char)v;
}

sd_status sd_aux_from_float(sd_context *ctx, const float *src, int64_t h, int64_t w, int64_t c, sd_img8 *out)
{
    memset(out, 0, sizeof *out);
    if (c != 1 && c != 3 && c != 4)
        return sd_set_error(ctx, SD_ERR_INVALID, "images with %lld channels are not supported (1, 3 or 4)",
                            (long long)c);
    sd_status st = sd_img8_new(ctx, h, w, 3, out);
    if (st)
        return st;
    for (int64_t i = 0; i < h * w; i++) {
        const float *s = src + i * c;
        unsigned char *d = out->px + i * 3;
        float px[4];
        for (int64_t k = 0; k < c; k++)
            px[k] = (float)trunc_u8(s[k] * 255.0f);
        for (int k = 0; k < 3; k++) {
            if (c == 4) { /* HWC3: colour over white by alpha, in float32, truncated */
                float a = px[3] / 255.0f;
                d[k] = trunc_u8(px[k] * a + 255.0f * (1.0f - a));
            } else {
                d[k] = (unsigned char)px[c == 1 ? 0 : k];
            }
        }
    }
    return SD_OK;
}

/* ---- INTER_AREA when shrinking ---- */

typedef struct area_tap {
    int di, si; /* destination and source index (in pixels) */
    float alpha;
} area_tap;

/* computeResizeAreaTab: the source cells covering each destination cell and their weights.
 * tab has room for 2 * ssize + dsize taps; returns the count. */
static int area_tabs(int ssize, int dsize, double scale, area_tap *tab)
{
    int k = 0;
    for (int dx = 0; dx < dsize; dx++) {
        double fsx1 = dx * scale, fsx2 = fsx1 + scale;
        double cell = fmin(scale, ssize - fsx1);
        int sx1 = (int)ceil(fsx1), sx2 = (int)floor(fsx2);
        sx2 = sx2 < ssize - 1 ? sx2 : ssize - 1;
        sx1 = sx1 < sx2 ? sx1 : sx2;
        if (sx1 - fsx1 > 1e-3)
            tab[k++] = (area_tap){dx, sx1 - 1, (float)((sx1 - fsx1) / cell)};
        for (int sx = sx1; sx < sx2; sx++)
            tab[k++] = (area_tap){dx, sx, (float)(1.0 / cell)};
        if (fsx2 - sx2 > 1e-3)
            tab[k++] = (area_tap){dx, sx2, (float)(fmin(fmin(fsx2 - sx2, 1.0), cell) / cell)};
    }
    return k;
}

/* A planar or interleaved image of 8-bit or float samples (one of u8, f32 set). */
typedef struct area_image {
    int h, w, cn;
    unsigned char *u8;
    float *f32;
} area_image;

/* ResizeArea_Invoker: float accumulation per destination row; to 8 bits rounded half to even. */
static sd_status area_general(sd_context *ctx, const area_image *src, area_image *dst, double sx, double sy)
{
    int sw = src->w, sh = src->h, dw = dst->w, dh = dst->h, cn = src->cn;
    area_tap *xt = malloc(sizeof *xt * (size_t)(2 * sw + dw)), *yt = malloc(sizeof *yt * (size_t)(2 * sh + dh));
    float *buf = malloc(sizeof *buf * (size_t)dw * cn), *sum = calloc((size_t)dw * cn, sizeof *sum);
    if (!xt || !yt || !buf || !sum) {
        free(xt), free(yt), free(buf), free(sum);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory resizing a %dx%d image", sh, sw);
    }
    int nx = area_tabs(sw, dw, sx, xt), ny = area_tabs(sh, dh, sy, yt), prev = yt[0].di;
    for (int j = 0; j <= ny; j++) {
        int dy = j < ny ? yt[j].di : -1;
        if (dy != prev) { /* row prev is complete */
            size_t row = (size_t)prev * dw * cn;
            for (int x = 0; x < dw * cn; x++) {
                if (dst->u8)
                    dst->u8[row + x] = sat_u8(lrintf(sum[x]));
                else
                    dst->f32[row + x] = sum[x];
            }
            memset(sum, 0, sizeof *sum * (size_t)dw * cn);
            prev = dy;
        }
        if (j == ny)
            break;
        size_t srow = (size_t)yt[j].si * sw * cn;
        memset(buf, 0, sizeof *buf * (size_t)dw * cn);
        for (int k = 0; k < nx; k++)
            for (int ch = 0; ch < cn; ch++) {
                size_t i = srow + (size_t)xt[k].si * cn + ch;
                float v = src->u8 ? (float)src->u8[i] : src->f32[i];
                buf[xt[k].di * cn + ch] = buf[xt[k].di * cn + ch] + v * xt[k].alpha;
            }
        float beta = yt[j].alpha;
        for (int x = 0; x < dw * cn; x++)
            sum[x] = sum[x] + beta * buf[x];
    }
    free(xt), free(yt), free(buf), free(sum);
    return SD_OK;
}

sd_status sd_aux_resize_area_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst, int64_t dh,
                                 int64_t dw)
{
    double sx = 1.0 / ((double)dw / (double)sw), sy = 1.0 / ((double)dh / (double)sh);
    if (sx < 1 || sy < 1 || (fabs(sx - lrint(sx)) < DBL_EPSILON && fabs(sy - lrint(sy)) < DBL_EPSILON))
        return sd_set_error(ctx, SD_ERR_INVALID, "INTER_AREA of a float plane %lldx%lld to %lldx%lld: only "
                            "shrinking by fractional factors is implemented", (long long)sh, (long long)sw,
                            (long long)dh, (long long)dw);
    area_image s = {(int)sh, (int)sw, 1, NULL, (float *)src}, d = {(int)dh, (int)dw, 1, NULL, dst};
    return area_general(ctx, &s, &d, sx, sy);
}

/* resizeAreaFast: whole-number scales; the 2x2 case rounds (sum + 2) >> 2 as OpenCV's vector
 * code does, others round sum / area half to even. */
static void area_fast(const sd_img8 *src, sd_img8 *dst, int fx, int fy)
{
    int cn = (int)src->c, sw = (int)src->w;
    float inv = 1.0f / (float)(fx * fy);
    for (int64_t y = 0; y < dst->h; y++)
        for (int64_t x = 0; x < dst->w; x++)
            for (int ch = 0; ch < cn; ch++) {
                int s = 0;
                for (int j = 0; j < fy; j++)
                    for (int i = 0; i < fx; i++)
                        s += src->px[((y * fy + j) * sw + x * fx + i) * cn + ch];
                dst->px[(y * dst->w + x) * cn + ch] =
                    fx == 2 && fy == 2 ? (unsigned char)((s + 2) >> 2) : sat_u8(lrintf((float)s * inv));
            }
}

/* ---- INTER_CUBIC, and INTER_AREA when enlarging (linear weights) ---- */

typedef struct axis_taps {
    int *ofs;     /* first source index per destination index */
    short *alpha; /* ksize fixed-point weights per destination index */
} axis_taps;

static void cubic_weights(float x, float c[4])
{
    const float A = -0.75f;
    c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    c[3] = 1.f - c[0] - c[1] - c[2];
}

static void lanczos4_weights(float x, float *w);

/* cv::resize's coefficient tables along one axis of ksize taps: for cubic (4) and Lanczos (8)
 * the source index of the first tap (sx - 1, sx - 3, unclamped); for area-as-linear (2) the
 * first of 2 (clamped inside the image). */
static void axis_weights(int ssize, int dsize, int ksize, axis_taps *t)
{
    double inv = (double)dsize / ssize, scale = 1.0 / inv;
    bool cubic = ksize > 2;
    for (int d = 0; d < dsize; d++) {
        int sx;
        float fx, cb[8];
        if (cubic) {
            fx = (float)((d + 0.5) * scale - 0.5);
            sx = (int)floorf(fx);
            fx -= (float)sx;
        } else {
            sx = (int)floor(d * scale);
            fx = (float)((d + 1) - (sx + 1) * inv);
            fx = fx <= 0 ? 0.f : fx - floorf(fx);
        }
        if (!cubic && (sx < 0 || sx >= ssize - 1)) {
            fx = 0.f;
            sx = sx < 0 ? 0 : ssize - 1;
        }
        if (ksize == 8)
            lanczos4_weights(fx, cb);
        else if (cubic)
            cubic_weights(fx, cb);
        else
            cb[0] = 1.f - fx, cb[1] = fx;
        t->ofs[d] = cubic ? sx - (ksize / 2 - 1) : sx;
        for (int k = 0; k < ksize; k++)
            t->alpha[d * ksize + k] = (short)lrintf(cb[k] * COEF_ONE);
    }
}

static int clampi(int v, int hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

/* HResizeCubic / HResizeLanczos4 / HResizeLinear on one source row: fixed-point sums per destination sample. */
static void hresize(const unsigned char *s, int sw, int cn, const axis_taps *xt, int dw, int ksize, int *out)
{
    for (int d = 0; d < dw; d++)
        for (int ch = 0; ch < cn; ch++) {
            int v = 0;
            if (ksize == 2 && xt->ofs[d] == sw - 1) { /* the right border: the sample itself */
                out[d * cn + ch] = s[(sw - 1) * cn + ch] * COEF_ONE;
                continue;
            }
            for (int k = 0; k < ksize; k++)
                v += s[clampi(xt->ofs[d] + k, sw - 1) * cn + ch] * xt->alpha[d * ksize + k];
            out[d * cn + ch] = v;
        }
}

/* VResizeCubic / VResizeLanczos4 / VResizeLinear to 8 bits. Cubic: OpenCV's vector code (float
 * sums rounded half to even) for whole groups of 8 samples, its integer code for the rest.
 * Lanczos: integer sums rounded (no vector code for 8 bits). Linear: 16-bit high products
 * everywhere (its vector code and its 8-bit specialisation of the scalar code). */
static void vresize(int *const *rows, const short *beta, int ksize, int width, unsigned char *d)
{
    int nvec = width - width % 8;
    for (int x = 0; x < width; x++) {
        long v;
        if (ksize == 4 && x < nvec) {
            const float sc = 1.f / (COEF_ONE * COEF_ONE);
            float t = (float)rows[3][x] * (beta[3] * sc);
            t = (float)rows[2][x] * (beta[2] * sc) + t;
            t = (float)rows[1][x] * (beta[1] * sc) + t;
            t = (float)rows[0][x] * (beta[0] * sc) + t;
            v = lrintf(t);
        } else if (ksize == 2) {
            v = ((((rows[0][x] >> 4) * beta[0]) >> 16) + (((rows[1][x] >> 4) * beta[1]) >> 16) + 2) >> 2;
        } else {
            int64_t s = 0;
            for (int k = 0; k < ksize; k++)
                s += (int64_t)rows[k][x] * beta[k];
            v = (long)((s + (1 << (2 * COEF_BITS - 1))) >> (2 * COEF_BITS));
        }
        d[x] = sat_u8(v);
    }
}

static sd_status resize_generic(sd_context *ctx, const sd_img8 *src, sd_img8 *dst, int ksize)
{
    int sw = (int)src->w, sh = (int)src->h, dw = (int)dst->w, dh = (int)dst->h, cn = (int)src->c;
    int width = dw * cn;
    axis_taps xt = {malloc(sizeof(int) * dw), malloc(sizeof(short) * ksize * dw)};
    axis_taps yt = {malloc(sizeof(int) * dh), malloc(sizeof(short) * ksize * dh)};
    int *buf = malloc(sizeof(int) * (size_t)ksize * width);
    sd_status st = SD_OK;
    if (!xt.ofs || !xt.alpha || !yt.ofs || !yt.alpha || !buf) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory resizing a %dx%d image", sh, sw);
        goto done;
    }
    axis_weights(sw, dw, ksize, &xt);
    axis_weights(sh, dh, ksize, &yt);
    for (int y = 0; y < dh; y++) {
        int *rows[8];
        for (int k = 0; k < ksize; k++) {
            int sy = clampi(yt.ofs[y] + k, sh - 1);
            rows[k] = buf + (size_t)k * width;
            hresize(src->px + (size_t)sy * sw * cn, sw, cn, &xt, dw, ksize, rows[k]);
        }
        vresize(rows, yt.alpha + y * ksize, ksize, width, dst->px + (size_t)y * width);
    }
done:
    free(xt.ofs), free(xt.alpha), free(yt.ofs), free(yt.alpha), free(buf);
    return st;
}

/* One axis of cv::resize's INTER_CUBIC on floating-point data: per destination index the first
 * of 4 source taps (unclamped) and their float weights. */
static void cubic_axis_f(int ssize, int dsize, int *ofs, float *alpha)
{
    double scale = 1.0 / ((double)dsize / ssize);
    for (int d = 0; d < dsize; d++) {
        float fx = (float)((d + 0.5) * scale - 0.5);
        int sx = (int)floorf(fx);
        cubic_weights(fx - (float)sx, alpha + 4 * d);
        ofs[d] = sx - 1;
    }
}

sd_status sd_aux_resize_cubic_f64(sd_context *ctx, const double *src, int64_t sh, int64_t sw, int64_t cn, double *dst,
                                  int64_t dh, int64_t dw)
{
    int *xo = malloc(sizeof(int) * (size_t)dw), *yo = malloc(sizeof(int) * (size_t)dh);
    float *xa = malloc(sizeof(float) * 4 * (size_t)dw), *ya = malloc(sizeof(float) * 4 * (size_t)dh);
    double *rows = malloc(sizeof(double) * 4 * (size_t)(dw * cn));
    sd_status st = SD_OK;
    if (!xo || !yo || !xa || !ya || !rows) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory resizing a %lldx%lld image", (long long)sw, (long long)sh);
        goto done;
    }
    cubic_axis_f((int)sw, (int)dw, xo, xa);
    cubic_axis_f((int)sh, (int)dh, yo, ya);
    for (int64_t y = 0; y < dh; y++) {
        for (int k = 0; k < 4; k++) { /* HResizeCubic of the 4 source rows (replicated borders) */
            const double *s = src + (size_t)clampi(yo[y] + k, (int)sh - 1) * sw * cn;
            double *r = rows + (size_t)k * dw * cn;
            for (int64_t x = 0; x < dw; x++)
                for (int64_t c = 0; c < cn; c++) {
                    const float *a = xa + 4 * x;
                    double v = s[clampi(xo[x], (int)sw - 1) * cn + c] * a[0];
                    for (int j = 1; j < 4; j++)
                        v += s[clampi(xo[x] + j, (int)sw - 1) * cn + c] * a[j];
                    r[x * cn + c] = v;
                }
        }
        const float *b = ya + 4 * y;
        double *d = dst + (size_t)y * dw * cn;
        for (int64_t i = 0; i < dw * cn; i++) /* VResizeCubic */
            d[i] = rows[i] * b[0] + rows[dw * cn + i] * b[1] + rows[2 * dw * cn + i] * b[2] + rows[3 * dw * cn + i] * b[3];
    }
done:
    free(xo), free(yo), free(xa), free(ya), free(rows);
    return st;
}

sd_status sd_aux_resize(sd_context *ctx, const sd_img8 *src, int64_t dh, int64_t dw, sd_aux_interp interp,
                        sd_img8 *out)
{
    sd_status st = sd_img8_new(ctx, dh, dw, src->c, out);
    if (st)
        return st;
    if (dh == src->h && dw == src->w) {
        memcpy(out->px, src->px, (size_t)(dh * dw * src->c));
        return SD_OK;
    }
    double sx = 1.0 / ((double)dw / (double)src->w), sy = 1.0 / ((double)dh / (double)src->h);
    if (interp == SD_AUX_AREA && sx >= 1 && sy >= 1) {
        int ix = (int)lrint(sx), iy = (int)lrint(sy);
        if (fabs(sx - ix) < DBL_EPSILON && fabs(sy - iy) < DBL_EPSILON)
            area_fast(src, out, ix, iy);
        else
        {
            area_image si = {(int)src->h, (int)src->w, (int)src->c, src->px, NULL};
            area_image di = {(int)dh, (int)dw, (int)src->c, out->px, NULL};
            st = area_general(ctx, &si, &di, sx, sy);
        }
    } else {
        st = resize_generic(ctx, src, out, interp == SD_AUX_LANCZOS4 ? 8 : interp == SD_AUX_CUBIC ? 4 : 2);
    }
    if (st)
        sd_img8_free(out);
    return st;
}

/* Source index and weight of the second tap along one axis of a float INTER_LINEAR resize. */
static void linear_f32_axis(int64_t ssize, int64_t dsize, int64_t *ofs, float *frac)
{
    double scale = 1.0 / ((double)dsize / (double)ssize);
    for (int64_t d = 0; d < dsize; d++) {
        float fx = (float)((d + 0.5) * scale - 0.5);
        int64_t sx = (int64_t)floorf(fx);
        fx -= (float)sx;
        if (sx < 0 || sx >= ssize - 1) { /* outside: the border sample alone */
            fx = 0.f;
            sx = sx < 0 ? 0 : ssize - 1;
        }
        ofs[d] = sx, frac[d] = fx;
    }
}

sd_status sd_aux_resize_linear_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst, int64_t dh,
                                   int64_t dw)
{
    if (sh == dh && sw == dw) {
        memcpy(dst, src, sizeof *dst * (size_t)(dh * dw));
        return SD_OK;
    }
    int64_t *xo = malloc(sizeof *xo * (size_t)(dw + dh)), *yo = xo ? xo + dw : NULL;
    float *xf = malloc(sizeof *xf * (size_t)(dw + dh)), *yf = xf ? xf + dw : NULL;
    float *rows = malloc(sizeof *rows * (size_t)(2 * dw));
    if (!xo || !xf || !rows) {
        free(xo), free(xf), free(rows);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory resizing a %lldx%lld plane", (long long)sh,
                            (long long)sw);
    }
    linear_f32_axis(sw, dw, xo, xf);
    linear_f32_axis(sh, dh, yo, yf);
    for (int64_t y = 0; y < dh; y++) {
        for (int k = 0; k < 2; k++) {
            const float *s = src + (yo[y] + k < sh ? yo[y] + k : sh - 1) * sw;
            for (int64_t x = 0; x < dw; x++)
                rows[k * dw + x] = xo[x] == sw - 1 ? s[sw - 1] : s[xo[x]] * (1.f - xf[x]) + s[xo[x] + 1] * xf[x];
        }
        float b0 = 1.f - yf[y], b1 = yf[y];
        for (int64_t x = 0; x < dw; x++)
            dst[y * dw + x] = rows[x] * b0 + rows[dw + x] * b1;
    }
    free(xo), free(xf), free(rows);
    return SD_OK;
}

/* OpenCV's interpolateLanczos4: the 8 weights for fraction x, normalised in float. */
static void lanczos4_weights(float x, float *w)
{
    static const double s45 = 0.70710678118654752440084436210485;
    static const double cs[8][2] = {{1, 0}, {-s45, -s45}, {0, 1}, {s45, -s45}, {-1, 0}, {s45, s45}, {0, -1}, {-s45, s45}};
    float sum = 0;
    double y0 = -(x + 3) * M_PI * 0.25, s0 = sin(y0), c0 = cos(y0);
    for (int i = 0; i < 8; i++) {
        float yi = x + 3 - (float)i;
        if (fabsf(yi) >= 1e-6f) {
            double y = -yi * M_PI * 0.25;
            w[i] = (float)((cs[i][0] * s0 + cs[i][1] * c0) / (y * y));
        } else {
            w[i] = 1e30f;
        }
        sum += w[i];
    }
    sum = 1.f / sum;
    for (int i = 0; i < 8; i++)
        w[i] *= sum;
}

/* Per output index along an axis of n -> m: the first source tap (floor(fx) - 3) and 8 weights. */
static void lanczos4_axis(int64_t n, int64_t m, int64_t *first, float *w)
{
    double scale = 1.0 / ((double)m / (double)n);
    for (int64_t d = 0; d < m; d++) {
        float f = (float)(((double)d + 0.5) * scale - 0.5);
        int64_t s = (int64_t)floorf(f);
        first[d] = s - 3;
        lanczos4_weights(f - (float)s, w + d * 8);
    }
}

static int64_t clamp_index(int64_t i, int64_t n)
{
    return i < 0 ? 0 : i >= n ? n - 1 : i;
}

sd_status sd_aux_resize_lanczos4_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst,
                                     int64_t dh, int64_t dw)
{
    if (sh == dh && sw == dw) {
        memcpy(dst, src, sizeof *dst * (size_t)(dh * dw));
        return SD_OK;
    }
    int64_t *xo = malloc(sizeof *xo * (size_t)(dw + dh)), *yo = xo ? xo + dw : NULL;
    float *xw = malloc(sizeof *xw * (size_t)(8 * (dw + dh))), *yw = xw ? xw + 8 * dw : NULL;
    float *rows = malloc(sizeof *rows * (size_t)(sh * dw));
    if (!xo || !xw || !rows) {
        free(xo), free(xw), free(rows);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory resizing a %lldx%lld plane", (long long)sh,
                            (long long)sw);
    }
    lanczos4_axis(sw, dw, xo, xw);
    lanczos4_axis(sh, dh, yo, yw);
    for (int64_t y = 0; y < sh; y++) /* horizontal pass: taps clamped to the border, summed in order */
        for (int64_t x = 0; x < dw; x++) {
            const float *s = src + y * sw, *w = xw + x * 8;
            float v = 0;
            for (int k = 0; k < 8; k++)
                v += s[clamp_index(xo[x] + k, sw)] * w[k];
            rows[y * dw + x] = v;
        }
    for (int64_t y = 0; y < dh; y++) {
        const float *w = yw + y * 8, *r[8];
        for (int k = 0; k < 8; k++)
            r[k] = rows + clamp_index(yo[y] + k, sh) * dw;
        /* the vertical pass: OpenCV's 4-lane vector loop sums from the last row back, the
         * scalar tail from the first row on */
        int64_t vec = dw - dw % 4;
        for (int64_t x = 0; x < dw; x++) {
            float v;
            if (x < vec) {
                v = r[7][x] * w[7];
                for (int k = 6; k >= 0; k--)
                    v = r[k][x] * w[k] + v;
            } else {
                v = r[0][x] * w[0];
                for (int k = 1; k < 8; k++)
                    v += r[k][x] * w[k];
            }
            dst[y * dw + x] = v;
        }
    }
    free(xo), free(xw), free(rows);
    return SD_OK;
}

static int64_t pad64(int64_t x)
{
    return (x + 63) / 64 * 64;
}

bool sd_aux_target_size(int64_t h, int64_t w, int64_t resolution, int64_t *th, int64_t *tw)
{
    double k = (double)resolution / (double)(h < w ? h : w);
    double fh = nearbyint((double)h * k), fw = nearbyint((double)w * k);
    if (!(fh >= 1 && fw >= 1 && fh <= MAX_SIDE && fw <= MAX_SIDE))
        return false;
    *th = (int64_t)fh, *tw = (int64_t)fw;
    return true;
}

sd_status sd_aux_resize_with_pad(sd_context *ctx, const sd_img8 *src, int64_t resolution, sd_aux_interp up,
                                 sd_img8 *out, int64_t *th, int64_t *tw)
{
    double k = (double)resolution / (double)(src->h < src->w ? src->h : src->w);
    if (!sd_aux_target_size(src->h, src->w, resolution, th, tw))
        return sd_set_error(ctx, SD_ERR_LIMIT, "resolution %lld makes a %.0fx%.0f image", (long long)resolution,
                            nearbyint((double)src->h * k), nearbyint((double)src->w * k));
    sd_img8 r;
    sd_status st = sd_aux_resize(ctx, src, *th, *tw, k > 1 ? up : SD_AUX_AREA, &r);
    if (st)
        return st;
    int64_t ph = pad64(*th), pw = pad64(*tw), cn = r.c;
    if (!(st = sd_img8_new(ctx, ph, pw, cn, out)))
        for (int64_t y = 0; y < ph; y++) {
            const unsigned char *s = r.px + (y < *th ? y : *th - 1) * *tw * cn;
            unsigned char *d = out->px + y * pw * cn;
            memcpy(d, s, (size_t)(*tw * cn));
            for (int64_t x = *tw; x < pw; x++)
                memcpy(d + x * cn, s + (*tw - 1) * cn, (size_t)cn);
        }
    sd_img8_free(&r);
    return st;
}

/* ---- GaussianBlur on float32 ---- */

enum { MAX_HALF = 4096 }; /* the largest half-width of a blur kernel */

/* getGaussianKernelBitExact: half of the symmetric kernel, centre first (n = 2 * half + 1). */
static void gaussian_kernel_d(int half, double sigma, double *k)
{
    int n = 2 * half + 1;
    double scale2 = -0.125 / (sigma * sigma), sum = 0, v[MAX_HALF];
    for (int i = 0, x = 1 - n; i < half; i++, x += 2) {
        v[i] = exp((double)(x * x) * scale2);
        sum += v[i];
    }
    sum = 1.0 / (sum * 2 + 1);
    k[0] = sum;
    for (int i = 0; i < half; i++)
        k[half - i] = v[i] * sum;
}

static void gaussian_kernel(int half, double sigma, float *k)
{
    double d[MAX_HALF + 1];
    gaussian_kernel_d(half, sigma, d);
    for (int i = 0; i <= half; i++)
        k[i] = (float)d[i];
}

static int reflect101(int i, int n)
{
    if (n == 1)
        return 0;
    while (i < 0 || i >= n)
        i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

sd_status sd_aux_gaussian_blur(sd_context *ctx, const float *src, int64_t h, int64_t w, int64_t c, double sigma,
                               float *dst)
{
    int half = (int)lrint(sigma * 4 * 2 + 1) / 2; /* ksize = cvRound(8 sigma + 1) | 1 */
    if (!(sigma > 0) || half >= MAX_HALF)
        return sd_set_error(ctx, SD_ERR_INVALID, "Gaussian sigma %g is out of range", sigma);
    float k[MAX_HALF + 1];
    gaussian_kernel(half, sigma, k);
    int W = (int)w, H = (int)h, cn = (int)c;
    float *rows = malloc(sizeof(float) * (size_t)(h * w * c));
    if (!rows)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory blurring a %dx%d image", H, W);
    /* Row filter: ksize <= 5 uses the symmetric small filter (centre, then pairs), larger
     * kernels the plain one (taps left to right). */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int ch = 0; ch < cn; ch++) {
                const float *s = src + (size_t)y * W * cn + ch;
#define S(xx) s[(size_t)reflect101(xx, W) * cn]
                float acc;
                if (half <= 2) {
                    acc = S(x) * k[0];
                    for (int j = 1; j <= half; j++)
                        acc = acc + (S(x - j) + S(x + j)) * k[j];
                } else {
                    acc = k[half] * S(x - half);
                    for (int j = -half + 1; j <= half; j++)
                        acc = acc + k[abs(j)] * S(x + j);
                }
#undef S
                rows[((size_t)y * W + x) * cn + ch] = acc;
            }
    /* Column filter (symmetric): centre, then pairs of rows. */
    size_t stride = (size_t)W * cn;
    for (int y = 0; y < H; y++)
        for (size_t i = 0; i < stride; i++) {
            float acc = rows[(size_t)y * stride + i] * k[0];
            for (int j = 1; j <= half; j++)
                acc = acc + (rows[(size_t)reflect101(y + j, H) * stride + i] +
                             rows[(size_t)reflect101(y - j, H) * stride + i]) * k[j];
            dst[(size_t)y * stride + i] = acc;
        }
    free(rows);
    return SD_OK;
}

sd_status sd_aux_gaussian_blur_u8(sd_context *ctx, const unsigned char *src, int64_t h, int64_t w, double sigma,
                                  unsigned char *dst)
{
    int half = (int)lrint(sigma * 3 * 2 + 1) / 2; /* ksize = cvRound(6 sigma + 1) | 1 for 8 bits */
    if (!(sigma > 0) || half >= MAX_HALF)
        return sd_set_error(ctx, SD_ERR_INVALID, "Gaussian sigma %g is out of range", sigma);
    double kd[MAX_HALF + 1], err = 0;
    int k[MAX_HALF + 1], sum = 0;
    gaussian_kernel_d(half, sigma, kd);
    for (int i = half; i >= 1; i--) { /* getGaussianKernelFixedPoint_ED: Q8, outermost tap first */
        double adj = kd[i] * 256.0 + err;
        k[i] = (int)lrint(adj);
        err = adj - k[i];
        sum += k[i];
    }
    k[0] = 256 - 2 * sum;
    int H = (int)h, W = (int)w;
    uint32_t *rows = malloc(sizeof *rows * (size_t)(h * w));
    if (!rows)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory blurring a %dx%d image", H, W);
    for (int y = 0; y < H; y++) /* rows: exact Q8 sums */
        for (int x = 0; x < W; x++) {
            const unsigned char *s = src + (size_t)y * W;
            uint32_t acc = (uint32_t)k[0] * s[x];
            for (int j = 1; j <= half; j++)
                acc += (uint32_t)k[j] * (s[reflect101(x - j, W)] + s[reflect101(x + j, W)]);
            rows[(size_t)y * W + x] = acc;
        }
    for (int y = 0; y < H; y++) /* columns: Q16, rounded half up */
        for (int x = 0; x < W; x++) {
            uint64_t acc = (uint64_t)k[0] * rows[(size_t)y * W + x];
            for (int j = 1; j <= half; j++)
                acc += (uint64_t)k[j] * (rows[(size_t)reflect101(y - j, H) * W + x] + rows[(size_t)reflect101(y + j, H) * W + x]);
            acc = (acc + (1u << 15)) >> 16;
            dst[(size_t)y * W + x] = (unsigned char)(acc > 255 ? 255 : acc);
        }
    free(rows);
    return SD_OK;
}

sd_status sd_aux_nms(sd_context *ctx, const unsigned char *src, int64_t h, int64_t w, int threshold, double sigma,
                     unsigned char *dst)
{
    size_t n = (size_t)(h * w);
    float *x = malloc(sizeof *x * n * 2), *g = x ? x + n : NULL;
    if (!x)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)w, (long long)h);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)src[i];
    sd_status st = sd_aux_gaussian_blur(ctx, x, h, w, 1, sigma, g);
    /* y = g where g is the largest of itself and its two neighbours along one of the four
     * directions (cv2.dilate with a 3-tap line; outside the image does not count), else 0 */
    static const int dirs[4][2] = {{0, 1}, {1, 0}, {1, 1}, {1, -1}};
    for (int64_t yy = 0; !st && yy < h; yy++)
        for (int64_t xx = 0; xx < w; xx++) {
            float v = g[yy * w + xx];
            bool keep = false;
            for (int d = 0; d < 4 && !keep; d++) {
                float m = v;
                for (int s = -1; s <= 1; s += 2) {
                    int64_t ny = yy + s * dirs[d][0], nx = xx + s * dirs[d][1];
                    if (ny >= 0 && ny < h && nx >= 0 && nx < w && g[ny * w + nx] > m)
                        m = g[ny * w + nx];
                }
                keep = m == v;
            }
            dst[yy * w + xx] = keep && v > (float)threshold ? 255 : 0;
        }
    free(x);
    return st;
}

sd_status sd_aux_scribble_lines(sd_context *ctx, unsigned char *map, int64_t h, int64_t w)
{
    unsigned char *t = malloc((size_t)(h * w));
    if (!t)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)w, (long long)h);
    sd_status st = sd_aux_nms(ctx, map, h, w, 127, 3.0, t);
    if (!st)
        st = sd_aux_gaussian_blur_u8(ctx, t, h, w, 3.0, map);
    for (int64_t i = 0; !st && i < h * w; i++)
        map[i] = map[i] > 4 ? 255 : 0;
    free(t);
    return st;
}

void sd_aux_rgb_to_gray(const sd_img8 *img, unsigned char *gray)
{
    for (int64_t i = 0; i < img->h * img->w; i++) {
        const unsigned char *p = img->px + i * 3;
        gray[i] = (unsigned char)((p[0] * 9798 + p[1] * 19235 + p[2] * 3735 + (1 << 14)) >> 15);
    }
}

int sd_aux_otsu_threshold(const unsigned char *v, size_t n)
{
    double hist[256] = {0}, mu = 0, scale = 1.0 / (double)n, mu1 = 0, q1 = 0, best = 0;
    int best_i = 0;
    for (size_t i = 0; i < n; i++)
        hist[v[i]]++;
    for (int i = 0; i < 256; i++)
        mu += i * hist[i];
    mu *= scale;
    for (int i = 0; i < 256; i++) {
        double p = hist[i] * scale;
        mu1 *= q1;
        q1 += p;
        double q2 = 1. - q1;
        if (fmin(q1, q2) < FLT_EPSILON || fmax(q1, q2) > 1. - FLT_EPSILON)
            continue;
        mu1 = (mu1 + i * p) / q1;
        double mu2 = (mu - q1 * mu1) / q2, sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if (sigma > best)
            best = sigma, best_i = i;
    }
    return best_i;
}
