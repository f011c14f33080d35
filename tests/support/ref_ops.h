/* Plain-C references for the OpenCL ops (double accumulation), and helpers for op tests. */
#ifndef SD_TEST_REF_OPS_H
#define SD_TEST_REF_OPS_H

#include "runtime-opencl/ops.h"

/* Uniform floats in [lo, hi) from a small LCG (deterministic per seed). */
void ref_random(float *p, size_t n, unsigned seed, float lo, float hi);
/* Rounds every value through fp16 storage (what an f16 tensor holds). */
void ref_round_f16(float *p, size_t n);

double ref_act(double x, sd_act act);

/* c[b][m][n] = act(alpha * sum_k A(b,m,k) B(b,k,n) + bias[n]); A(b,m,k) = a[b*M*K + (ta ? k*M+m :
 * m*K+k)], B likewise with tb; b_batch 1 shares B. */
void ref_matmul(const float *a, bool ta, const float *b, bool tb, const float *bias, sd_act act, float alpha,
                int batch, int b_batch, int M, int K, int N, float *c);

/* torch Conv2d, groups 1: x [B,C,H,W], w [O,C,KH,KW], bias [O] or NULL, out [B,O,OH,OW]. */
void ref_conv2d(const float *x, const float *w, const float *bias, int B, int C, int H, int W, int O, int KH,
                int KW, const sd_conv2d_params *p, float *out);

/* Attention for query rows [q0, q1) of every batch and head: q [B,Nq,H*D], k/v [B,Nk,H*D], mask NULL
 * or [mb][mq][Nk] (mb 1 or B, mq 1 or Nq). out has the full [B,Nq,H*D] layout; only those rows
 * are written. */
void ref_attention(const float *q, const float *k, const float *v, const float *mask, int mb, int mq, int B,
                   int Nq, int Nk, int H, int D, int q0, int q1, float *out);

/* Largest |got - want| / (atol + rtol * |want|) over n values: <= 1 means within tolerance. */
double ref_max_err(const float *got, const float *want, size_t n, double atol, double rtol);

#endif
