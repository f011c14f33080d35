/* Plain-C references for the basic ops. See ref_basic.h. */
#include "ref_basic.h"
#include <math.h>

void ref_group_norm(const float *x, int64_t n, int64_t c, int64_t hw, int groups, float eps,
                    const float *gamma, const float *beta, bool silu, float *y)
{
    int64_t cpg = c / groups, len = cpg * hw;
    for (int64_t b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            const float *p = x + (b * c + g * cpg) * hw;
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < len; i++)
                mean += p[i];
            mean /= (double)len;
            for (int64_t i = 0; i < len; i++)
                var += (p[i] - mean) * (p[i] - mean);
            var /= (double)len;
            double rstd = 1.0 / sqrt(var + eps);
            for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ch++)
                for (int64_t i = 0; i < hw; i++) {
                    size_t at = (size_t)((b * c + ch) * hw + i);
                    double v = (x[at] - mean) * rstd;
                    if (gamma)
                        v = v * gamma[ch] + beta[ch];
                    if (silu)
                        v = v / (1.0 + exp(-v));
                    y[at] = (float)v;
                }
        }
}

void ref_layer_norm(const float *x, int64_t rows, int64_t d, float eps, const float *gamma,
                    const float *beta, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * d;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < d; i++)
            mean += p[i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++)
            var += (p[i] - mean) * (p[i] - mean);
        var /= (double)d;
        double rstd = 1.0 / sqrt(var + eps);
        for (int64_t i = 0; i < d; i++) {
            double v = (p[i] - mean) * rstd;
            y[r * d + i] = (float)(gamma ? v * gamma[i] + beta[i] : v);
        }
    }
}

void ref_softmax(const float *x, int64_t rows, int64_t d, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * d;
        double m = -INFINITY, s = 0.0;
        for (int64_t i = 0; i < d; i++)
            m = p[i] > m ? p[i] : m;
        for (int64_t i = 0; i < d; i++)
            s += exp(p[i] - m);
        for (int64_t i = 0; i < d; i++)
            y[r * d + i] = (float)(exp(p[i] - m) / s);
    }
}

double ref_unary1(sd_unary op, double x)
{
    switch (op) {
    case SD_UNARY_SILU:
        return x / (1.0 + exp(-x));
    case SD_UNARY_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case SD_UNARY_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case SD_UNARY_QUICK_GELU:
        return x / (1.0 + exp(-1.702 * x));
    case SD_UNARY_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    }
    return NAN;
}

void ref_unary(sd_unary op, const float *x, size_t n, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = (float)ref_unary1(op, x[i]);
}

void ref_geglu(const float *x, int64_t rows, int64_t d, float *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < d; i++)
            y[r * d + i] = (float)(x[r * 2 * d + i] * ref_unary1(SD_UNARY_GELU, x[r * 2 * d + d + i]));
}

void ref_binary(sd_binary op, const float *a, const int64_t *sa, int na, const float *b,
                const int64_t *sb, int nb, float *y)
{
    int n = na > nb ? na : nb;
    int64_t da[8], db[8], dy[8];
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        da[i] = i - (n - na) >= 0 ? sa[i - (n - na)] : 1;
        db[i] = i - (n - nb) >= 0 ? sb[i - (n - nb)] : 1;
        dy[i] = da[i] > db[i] ? da[i] : db[i];
        total *= (size_t)dy[i];
    }
    for (size_t lin = 0; lin < total; lin++) {
        size_t rest = lin, ia = 0, ib = 0, ma = 1, mb = 1;
        for (int i = n - 1; i >= 0; i--) {
            size_t idx = rest % (size_t)dy[i];
            rest /= (size_t)dy[i];
            ia += (da[i] == 1 ? 0 : idx) * ma;
            ib += (db[i] == 1 ? 0 : idx) * mb;
            ma *= (size_t)da[i];
            mb *= (size_t)db[i];
        }
        y[lin] = op == SD_BINARY_ADD ? a[ia] + b[ib] : a[ia] * b[ib];
    }
}

void ref_concat(const float *a, const float *b, int64_t outer, int64_t la, int64_t lb, int64_t inner,
                float *y)
{
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < la * inner; i++)
            y[o * (la + lb) * inner + i] = a[o * la * inner + i];
        for (int64_t i = 0; i < lb * inner; i++)
            y[o * (la + lb) * inner + la * inner + i] = b[o * lb * inner + i];
    }
}

void ref_slice(const float *x, int64_t outer, int64_t l, int64_t inner, int64_t start, int64_t len,
               float *y)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < len; k++)
            for (int64_t i = 0; i < inner; i++)
                y[(o * len + k) * inner + i] = x[(o * l + start + k) * inner + i];
}

void ref_upsample2x(const float *x, int64_t planes, int64_t h, int64_t w, float *y)
{
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < 2 * h; oy++)
            for (int64_t ox = 0; ox < 2 * w; ox++)
                y[(p * 2 * h + oy) * 2 * w + ox] = x[(p * h + oy / 2) * w + ox / 2];
}

void ref_upsample_nearest(const float *x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, float *y)
{
    float sh = (float)h / (float)oh, sw = (float)w / (float)ow; /* torch's nearest_idx */
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < oh; oy++) {
            int64_t iy = (int64_t)floorf((float)oy * sh);
            iy = iy < h - 1 ? iy : h - 1;
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t ix = (int64_t)floorf((float)ox * sw);
                ix = ix < w - 1 ? ix : w - 1;
                y[(p * oh + oy) * ow + ox] = x[(p * h + iy) * w + ix];
            }
        }
}

void ref_timestep_embedding(const float *t, int64_t n, int dim, double max_period, float *y)
{
    int half = dim / 2;
    for (int64_t b = 0; b < n; b++) {
        for (int i = 0; i < half; i++) {
            /* torch computes the frequencies and arguments in float32. */
            float f = expf((float)-log(max_period) * (float)i / (float)half);
            float arg = t[b] * f;
            y[b * dim + i] = (float)cos(arg);
            y[b * dim + half + i] = (float)sin(arg);
        }
        if (dim % 2)
            y[b * dim + dim - 1] = 0.0f;
    }
}
