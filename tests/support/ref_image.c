/* Plain-C references for the image ops. See ref_image.h. */
#include "ref_image.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- torch interpolate, per output pixel in 2-D ---- */

static int64_t nearest_exact(int64_t o, int64_t n_in, int64_t n_out)
{
    float scale = (float)n_in / (float)n_out;
    return clampi((int64_t)floorf((float)((o + 0.5) * scale)), 0, n_in - 1);
}

/* Source index and fraction for linear/cubic (align_corners=False). */
static void src_index(int64_t o, int64_t n_in, int64_t n_out, bool cubic, int64_t *i, float *l)
{
    float scale = (float)n_in / (float)n_out;
    float s = scale * ((float)o + 0.5f) - 0.5f;
    if (!cubic && s < 0.0f)
        s = 0.0f;
    *i = (int64_t)floorf(s);
    if (*i > n_in - 1)
        *i = n_in - 1;
    *l = fminf(fmaxf(s - (float)*i, 0.0f), 1.0f);
}

static double cubic_w(double x) /* Keys kernel, A = -0.75 */
{
    const double a = -0.75;
    x = fabs(x);
    if (x <= 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0)
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

/* ---- PIL ---- */

static double sinc(double x) { return x == 0.0 ? 1.0 : sin(M_PI * x) / (M_PI * x); }
static double lanczos(double x) { return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

/* Coefficients of output o (PIL precompute_coeffs): first input index, count, weights. */
static int pil_coeffs(int64_t o, int64_t n_in, int64_t n_out, double *k, int64_t *first)
{
    double scale = (double)n_in / n_out, fs = scale > 1.0 ? scale : 1.0, support = 3.0 * fs;
    double center = (o + 0.5) * scale, sum = 0.0;
    int64_t lo = (int64_t)(center - support + 0.5), hi = (int64_t)(center + support + 0.5);
    lo = lo < 0 ? 0 : lo;
    hi = hi > n_in ? n_in : hi;
    for (int64_t x = lo; x < hi; x++) {
        k[x - lo] = lanczos((x - center + 0.5) / fs);
        sum += k[x - lo];
    }
    for (int64_t x = lo; x < hi; x++)
        if (sum != 0.0)
            k[x - lo] /= sum;
    *first = lo;
    return (int)(hi - lo);
}

/* One PIL pass along an axis of length n_in -> n_out; `stride` between samples, `count` lines
 * of samples at line pitch `pitch_in` / `pitch_out`. u8: fixed point with clip8. */
static void pil_pass(const float *in, float *out, int64_t n_in, int64_t n_out, int64_t stride_in,
                     int64_t stride_out, int64_t lines, int64_t (*line_in)(int64_t, void *),
                     int64_t (*line_out)(int64_t, void *), void *ud, bool u8)
{
    double *k = malloc(sizeof(double) * (size_t)(n_in + 1));
    for (int64_t o = 0; o < n_out; o++) {
        int64_t first;
        int cnt = pil_coeffs(o, n_in, n_out, k, &first);
        for (int64_t l = 0; l < lines; l++) {
            const float *p = in + line_in(l, ud);
            if (u8) {
                int32_t ss = 1 << 21;
                for (int j = 0; j < cnt; j++) {
                    int32_t kk = k[j] < 0 ? (int32_t)(-0.5 + k[j] * (1 << 22)) : (int32_t)(0.5 + k[j] * (1 << 22));
                    ss += (int32_t)p[(first + j) * stride_in] * kk;
                }
                ss >>= 22;
                out[line_out(l, ud) + o * stride_out] = (float)(ss < 0 ? 0 : ss > 255 ? 255 : ss);
            } else {
                double ss = 0.0;
                for (int j = 0; j < cnt; j++)
                    ss += p[(first + j) * stride_in] * k[j];
                out[line_out(l, ud) + o * stride_out] = (float)ss;
            }
        }
    }
    free(k);
}

typedef struct geo { int64_t h, w, c, ow, oh; } geo;
/* Horizontal pass lines: (b, y, ch) of the input / the intermediate image. */
static int64_t hline_in(int64_t l, void *u)
{
    geo *g = u;
    int64_t ch = l % g->c, row = l / g->c;
    return row * g->w * g->c + ch;
}
static int64_t hline_out(int64_t l, void *u)
{
    geo *g = u;
    int64_t ch = l % g->c, row = l / g->c;
    return row * g->ow * g->c + ch;
}
/* Vertical pass lines: (b, x, ch) of the intermediate / output image. */
static int64_t vline_in(int64_t l, void *u)
{
    geo *g = u;
    int64_t per = g->ow * g->c, b = l / per, r = l % per;
    return b * g->h * per + r;
}
static int64_t vline_out(int64_t l, void *u)
{
    geo *g = u;
    int64_t per = g->ow * g->c, b = l / per, r = l % per;
    return b * g->oh * per + r;
}

/* PIL: one fixed-point (u8) or double pass per axis whose size changes; the vertical pass
 * first when the height shrinks while the width grows (Pillow 13's order). */
static void ref_lanczos(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                        bool u8, float *y)
{
    size_t n_in = (size_t)(b * h * w * c), n_out = (size_t)(b * oh * ow * c);
    size_t n_mid = (size_t)(b * (h > oh ? h : oh) * (w > ow ? w : ow) * c);
    float *src = malloc(n_in * sizeof *src), *mid = malloc(n_mid * sizeof *mid);
    for (size_t i = 0; i < n_in; i++) /* ComfyUI: np.clip(255. * x, 0, 255).astype(np.uint8) */
        src[i] = u8 ? truncf(fminf(fmaxf(x[i] * 255.0f, 0.0f), 255.0f)) : x[i];
    bool vfirst = oh < h && ow > w;
    int64_t mh = vfirst ? oh : h, mw = vfirst ? w : ow; /* intermediate size */
    if (vfirst) {
        geo g = {h, w, c, w, oh};
        pil_pass(src, mid, h, oh, w * c, w * c, b * w * c, vline_in, vline_out, &g, u8);
    } else if (ow != w) {
        geo g = {h, w, c, ow, h};
        pil_pass(src, mid, w, ow, c, c, b * h * c, hline_in, hline_out, &g, u8);
    } else {
        memcpy(mid, src, n_in * sizeof *src);
    }
    if (vfirst) {
        geo g = {mh, mw, c, ow, oh};
        pil_pass(mid, y, w, ow, c, c, b * oh * c, hline_in, hline_out, &g, u8);
    } else if (oh != h) {
        geo g = {h, ow, c, ow, oh};
        pil_pass(mid, y, h, oh, ow * c, ow * c, b * ow * c, vline_in, vline_out, &g, u8);
    } else {
        memcpy(y, mid, n_out * sizeof *y);
    }
    if (u8)
        for (size_t i = 0; i < n_out; i++)
            y[i] = y[i] / 255.0f;
    free(src);
    free(mid);
}

void ref_resize(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                sd_resize_method method, float *y)
{
    if (method == SD_RESIZE_LANCZOS || method == SD_RESIZE_LANCZOS_U8) {
        ref_lanczos(x, b, h, w, c, oh, ow, method == SD_RESIZE_LANCZOS_U8, y);
        return;
    }
#define X(bb, yy, xx, ch) x[(((bb) * h + (yy)) * w + (xx)) * c + (ch)]
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++)
                for (int64_t ch = 0; ch < c; ch++) {
                    double v = 0.0;
                    if (method == SD_RESIZE_NEAREST_EXACT) {
                        v = X(bb, nearest_exact(oy, h, oh), nearest_exact(ox, w, ow), ch);
                    } else if (method == SD_RESIZE_BILINEAR) {
                        int64_t iy, ix;
                        float ly, lx;
                        src_index(oy, h, oh, false, &iy, &ly);
                        src_index(ox, w, ow, false, &ix, &lx);
                        int64_t iy1 = iy < h - 1 ? iy + 1 : iy, ix1 = ix < w - 1 ? ix + 1 : ix;
                        v = (1 - ly) * ((1 - lx) * X(bb, iy, ix, ch) + lx * X(bb, iy, ix1, ch)) +
                            ly * ((1 - lx) * X(bb, iy1, ix, ch) + lx * X(bb, iy1, ix1, ch));
                    } else if (method == SD_RESIZE_BICUBIC) {
                        int64_t iy, ix;
                        float ly, lx;
                        src_index(oy, h, oh, true, &iy, &ly);
                        src_index(ox, w, ow, true, &ix, &lx);
                        for (int m = -1; m <= 2; m++)
                            for (int n = -1; n <= 2; n++)
                                v += cubic_w(m - (double)ly) * cubic_w(n - (double)lx) *
                                     X(bb, clampi(iy + m, 0, h - 1), clampi(ix + n, 0, w - 1), ch);
                    } else { /* area */
                        int64_t y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
                        int64_t x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
                        for (int64_t yy = y0; yy < y1; yy++)
                            for (int64_t xx = x0; xx < x1; xx++)
                                v += X(bb, yy, xx, ch);
                        v /= (double)((y1 - y0) * (x1 - x0));
                    }
                    y[((bb * oh + oy) * ow + ox) * c + ch] = (float)v;
                }
#undef X
}

void ref_crop(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t top, int64_t left,
              int64_t ch, int64_t cw, float *y)
{
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < ch; yy++)
            for (int64_t xx = 0; xx < cw; xx++)
                for (int64_t k = 0; k < c; k++)
                    y[((bb * ch + yy) * cw + xx) * c + k] = x[((bb * h + top + yy) * w + left + xx) * c + k];
}

void ref_pad(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t top, int64_t bottom,
             int64_t left, int64_t right, sd_pad_mode mode, float value, float *y)
{
    int64_t oh = h + top + bottom, ow = w + left + right;
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < oh; yy++)
            for (int64_t xx = 0; xx < ow; xx++)
                for (int64_t k = 0; k < c; k++) {
                    int64_t sy = yy - top, sx = xx - left;
                    bool in = sy >= 0 && sy < h && sx >= 0 && sx < w;
                    float v = value;
                    if (mode == SD_PAD_REFLECT) {
                        sy = sy < 0 ? -sy : sy >= h ? 2 * (h - 1) - sy : sy;
                        sx = sx < 0 ? -sx : sx >= w ? 2 * (w - 1) - sx : sx;
                    }
                    if (in || mode != SD_PAD_CONSTANT)
                        v = x[((bb * h + clampi(sy, 0, h - 1)) * w + clampi(sx, 0, w - 1)) * c + k];
                    y[((bb * oh + yy) * ow + xx) * c + k] = v;
                }
}

static int64_t reflect(int64_t i, int64_t n)
{
    while (i < 0 || i >= n) {
        if (n == 1)
            return 0;
        i = i < 0 ? -i : 2 * (n - 1) - i;
    }
    return i;
}

void ref_blur_comfy(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int radius, float sigma,
                    float *y)
{
    int n = 2 * radius + 1;
    double *k = malloc(sizeof(double) * (size_t)(n * n)), sum = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double ti = n == 1 ? -1.0 : -1.0 + 2.0 * i / (n - 1), tj = n == 1 ? -1.0 : -1.0 + 2.0 * j / (n - 1);
            double d = sqrt(ti * ti + tj * tj);
            k[i * n + j] = exp(-(d * d) / (2.0 * sigma * sigma));
            sum += k[i * n + j];
        }
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++)
                for (int64_t ch = 0; ch < c; ch++) {
                    double v = 0.0;
                    for (int i = 0; i < n; i++)
                        for (int j = 0; j < n; j++)
                            v += k[i * n + j] / sum *
                                 x[((bb * h + reflect(yy + i - radius, h)) * w + reflect(xx + j - radius, w)) * c + ch];
                    y[((bb * h + yy) * w + xx) * c + ch] = (float)v;
                }
    free(k);
}

void ref_sobel(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, float *gx, float *gy)
{
    static const int kx[3][3] = {{-1, 0, 1}, {-2, 0, 2}, {-1, 0, 1}};
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++)
                for (int64_t ch = 0; ch < c; ch++) {
                    double sx = 0.0, sy = 0.0;
                    for (int i = 0; i < 3; i++)
                        for (int j = 0; j < 3; j++) {
                            double v = x[((bb * h + clampi(yy + i - 1, 0, h - 1)) * w + clampi(xx + j - 1, 0, w - 1)) * c + ch];
                            sx += kx[i][j] * v;
                            sy += kx[j][i] * v;
                        }
                    size_t o = (size_t)(((bb * h + yy) * w + xx) * c + ch);
                    gx[o] = (float)sx;
                    gy[o] = (float)sy;
                }
}

void ref_canny(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, float low, float high, float *y)
{
    size_t n = (size_t)(b * h * w);
    float *gray = malloc(n * sizeof *gray), *blur = malloc(n * sizeof *blur);
    float *gx = malloc(n * sizeof *gx), *gy = malloc(n * sizeof *gy), *mag = malloc(n * sizeof *mag);
    float *e = malloc(n * sizeof *e);
    for (size_t i = 0; i < n; i++)
        gray[i] = c == 3 ? 0.299f * x[3 * i] + 0.587f * x[3 * i + 1] + 0.114f * x[3 * i + 2] : x[i];
    double g[5], gs = 0.0;
    for (int i = 0; i < 5; i++)
        gs += g[i] = exp(-(double)((i - 2) * (i - 2)) / 2.0);
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++) {
                double v = 0.0;
                for (int i = 0; i < 5; i++)
                    for (int j = 0; j < 5; j++)
                        v += g[i] * g[j] / (gs * gs) * gray[(bb * h + reflect(yy + i - 2, h)) * w + reflect(xx + j - 2, w)];
                blur[(bb * h + yy) * w + xx] = (float)v;
            }
    ref_sobel(blur, b, h, w, 1, gx, gy);
    for (size_t i = 0; i < n; i++)
        mag[i] = (float)sqrt((double)gx[i] * gx[i] + (double)gy[i] * gy[i] + 1e-6);
    /* kornia: angle rounded to 45 degrees; neighbour offsets of its 8 NMS kernels. */
    static const int dx[8] = {1, 1, 0, -1, -1, -1, 0, 1}, dy[8] = {0, 1, 1, 1, 0, -1, -1, -1};
    for (int64_t bb = 0; bb < b; bb++)
        for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++) {
                size_t i = (size_t)((bb * h + yy) * w + xx);
                double a = nearbyint(atan2(gy[i], gx[i]) * 180.0 / M_PI / 45.0);
                int pos = (int)fmod(fmod(a, 8.0) + 8.0, 8.0), neg = (pos + 4) % 8;
                float m = mag[i], nb[2];
                int ks[2] = {pos, neg};
                for (int s = 0; s < 2; s++) {
                    int64_t nx = xx + dx[ks[s]], ny = yy + dy[ks[s]];
                    nb[s] = nx >= 0 && nx < w && ny >= 0 && ny < h ? mag[(bb * h + ny) * w + nx] : 0.0f;
                }
                bool is_max = fminf(m - nb[0], m - nb[1]) > 0.0f;
                float mm = is_max ? m : 0.0f;
                e[i] = (mm > low ? 0.5f : 0.0f) + (mm > high ? 0.5f : 0.0f);
            }
    /* Hysteresis as kornia: repeat until stable; weak pixels next to strong ones become strong. */
    bool changed = true;
    while (changed) {
        changed = false;
        for (int64_t bb = 0; bb < b; bb++)
            for (int64_t yy = 0; yy < h; yy++)
                for (int64_t xx = 0; xx < w; xx++) {
                    size_t i = (size_t)((bb * h + yy) * w + xx);
                    if (e[i] != 0.5f)
                        continue;
                    for (int64_t ny = yy - 1; ny <= yy + 1; ny++)
                        for (int64_t nx = xx - 1; nx <= xx + 1; nx++)
                            if (ny >= 0 && ny < h && nx >= 0 && nx < w && e[(bb * h + ny) * w + nx] == 1.0f &&
                                e[i] != 1.0f) {
                                e[i] = 1.0f;
                                changed = true;
                            }
                }
    }
    for (size_t i = 0; i < n; i++)
        y[3 * i] = y[3 * i + 1] = y[3 * i + 2] = e[i] == 1.0f ? 1.0f : 0.0f;
    free(gray);
    free(blur);
    free(gx);
    free(gy);
    free(mag);
    free(e);
}
