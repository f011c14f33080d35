/* Plain-C reference implementations for op tests. Clear loops, double accumulators. */
#include "ref_ops.h"
#include <math.h>
#include <stdlib.h>

void ref_random(float *p, size_t n, unsigned seed, float lo, float hi)
{
    unsigned s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = lo + (hi - lo) * (float)(s >> 8) / 16777216.0f;
    }
}

void ref_round_f16(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = sd_half_to_float(sd_float_to_half(p[i]));
}

double ref_act(double x, sd_act act)
{
    switch (act) {
    case SD_ACT_SILU: return x / (1.0 + exp(-x));
    case SD_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case SD_ACT_NONE: break;
    }
    return x;
}

void ref_matmul(const float *a, bool ta, const float *b, bool tb, const float *bias, sd_act act, float alpha,
                int batch, int b_batch, int M, int K, int N, float *c)
{
    for (int bi = 0; bi < batch; bi++) {
        const float *A = a + (size_t)bi * M * K;
        const float *Bm = b + (size_t)(b_batch == 1 ? 0 : bi) * K * N;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)(ta ? A[(size_t)k * M + m] : A[(size_t)m * K + k]) *
                         (double)(tb ? Bm[(size_t)n * K + k] : Bm[(size_t)k * N + n]);
                s = alpha * s + (bias ? bias[n] : 0.0);
                c[((size_t)bi * M + m) * N + n] = (float)ref_act(s, act);
            }
    }
}

void ref_conv2d(const float *x, const float *w, const float *bias, int B, int C, int H, int W, int O, int KH,
                int KW, const sd_conv2d_params *p, float *out)
{
    int OH = (H + 2 * p->pad_h - KH) / p->stride_h + 1, OW = (W + 2 * p->pad_w - KW) / p->stride_w + 1;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double s = bias ? bias[o] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int kh = 0; kh < KH; kh++) {
                            int ih = oh * p->stride_h - p->pad_h + kh;
                            if (ih < 0 || ih >= H)
                                continue;
                            for (int kw = 0; kw < KW; kw++) {
                                int iw = ow * p->stride_w - p->pad_w + kw;
                                if (iw < 0 || iw >= W)
                                    continue;
                                s += (double)x[(((size_t)b * C + c) * H + ih) * W + iw] *
                                     (double)w[(((size_t)o * C + c) * KH + kh) * KW + kw];
                            }
                        }
                    out[(((size_t)b * O + o) * OH + oh) * OW + ow] = (float)ref_act(s, p->act);
                }
}

void ref_attention(const float *q, const float *k, const float *v, const float *mask, int mb, int mq, int B,
                   int Nq, int Nk, int H, int D, int q0, int q1, float *out)
{
    size_t C = (size_t)H * D;
    double *s = malloc((size_t)Nk * sizeof *s);
    double scale = 1.0 / sqrt((double)D);
    for (int b = 0; b < B && s; b++)
        for (int h = 0; h < H; h++)
            for (int i = q0; i < q1; i++) {
                const float *qi = q + ((size_t)b * Nq + i) * C + (size_t)h * D;
                const float *mrow = mask ? mask + ((size_t)(mb == 1 ? 0 : b) * mq + (mq == 1 ? 0 : i)) * Nk : NULL;
                double mx = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    const float *kj = k + ((size_t)b * Nk + j) * C + (size_t)h * D;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)qi[e] * kj[e];
                    s[j] = d * scale + (mrow ? mrow[j] : 0.0);
                    if (s[j] > mx)
                        mx = s[j];
                }
                double sum = 0;
                for (int j = 0; j < Nk; j++) {
                    s[j] = mx == -INFINITY ? 0.0 : exp(s[j] - mx);
                    sum += s[j];
                }
                float *oi = out + ((size_t)b * Nq + i) * C + (size_t)h * D;
                for (int e = 0; e < D; e++) {
                    double acc = 0;
                    for (int j = 0; j < Nk; j++)
                        acc += s[j] * v[((size_t)b * Nk + j) * C + (size_t)h * D + e];
                    oi[e] = sum > 0 ? (float)(acc / sum) : 0.0f;
                }
            }
    free(s);
}

double ref_max_err(const float *got, const float *want, size_t n, double atol, double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / (atol + rtol * fabs((double)want[i]));
        if (!(e <= worst)) /* NaN counts as worst */
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}
