/* Fused flash-style attention: out = softmax(Q K^T * scale + mask) V for every (batch, head),
 * with an online softmax over key blocks; the score matrix is never stored.
 *
 * One work-item owns BQ query rows of one (batch, head) and walks all keys in blocks of BK = 32;
 * each block serves the rows in register blocks of RB = 8 (the block stays in L1 meanwhile):
 *   1. scores s[r] (two float16 over the block's keys) = sum_d q[r][d] * Kp[d][0..31], where Kp
 *      is K transposed into 32-key panels by attn_pack_k (contiguous vector loads);
 *   2. running max / sum update per row (online softmax), p = 2^(s - max) (scores in log2 units)
 *      kept in private memory;
 *   3. o[r][:] = o[r][:] * exp(max_old - max_new) + sum_j p[r][j] * V[j][:], up to 48 head-dim
 *      columns at a time (three float16 per row) so the accumulators stay in registers.
 * Work-group size 1, no local memory, no barriers (docs/design.md §7).
 *
 * Build options: -DHD=<head dim> (compile-time, so the d loops unroll), -DBQ=<rows>,
 * -DKV_HALF when K and V are stored as f16. Layouts: q/out [B, Nq, H*HD], k/v [B, Nk, H*HD]. */
#ifndef HD
#error "HD (head dim) must be defined"
#endif
#define RB 8 /* rows per register block */
#ifndef BQ
#error "BQ (query rows per work-item) must be defined"
#endif
#if BQ % RB != 0
#error "BQ (query rows per work-item) must be a multiple of RB"
#endif
#define BK 32

#ifdef KV_HALF
typedef half kv_t;
#define LOAD_KV(p, i) vload_half((i), (p))
#else
typedef float kv_t;
#define LOAD_KV(p, i) ((p)[i])
#endif

/* Kp[b][h][kb][d][j] = K[b][kb*BK + j][h*HD + d] (BK = 32 keys per panel); keys past Nk repeat
 * key Nk-1 (their scores are set to -inf). Global: (ceil(Nk / BK), H, B). */
__kernel void attn_pack_k(__global const kv_t *k, __global float *kp, int Nk, int H)
{
    int kb = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    long C = (long)H * HD;
    int nkb = (Nk + BK - 1) / BK;
    __global float *dst = kp + (((long)b * H + h) * nkb + kb) * (HD * BK);
    for (int j = 0; j < BK; j++) {
        int key = min(kb * BK + j, Nk - 1);
        __global const kv_t *src = k + ((long)b * Nk + key) * C + (long)h * HD;
        for (int d = 0; d < HD; d++)
            dst[d * BK + j] = (float)LOAD_KV(src, d);
    }
}

/* 2^x for x <= 0 (scores minus their running max, in log2 units): 2^round(x) from the exponent
 * bits times a degree-7 Taylor polynomial of 2^f on [-0.5, 0.5] (relative error < 2e-7).
 * x <= -127, including -inf (masked keys), gives exactly 0. */
float16 exp2_neg16(float16 x)
{
    x = fmax(x, -127.0f);
    float16 n = rint(x);
    float16 f = (x - n) * 0.69314718055994531f;
    float16 p = 1.0f / 5040.0f;
    p = fma(p, f, 1.0f / 720.0f);
    p = fma(p, f, 1.0f / 120.0f);
    p = fma(p, f, 1.0f / 24.0f);
    p = fma(p, f, 1.0f / 6.0f);
    p = fma(p, f, 0.5f);
    p = fma(p, f, 1.0f);
    p = fma(p, f, 1.0f);
    int16 e = (convert_int16(n) + 127) << 23;
    return p * as_float16(e);
}

float hmax16(float16 v)
{
    float8 a = fmax(v.lo, v.hi);
    float4 b = fmax(a.lo, a.hi);
    float2 c = fmax(b.lo, b.hi);
    return fmax(c.x, c.y);
}

float hsum16(float16 v)
{
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* One segment of step 3: columns [d, d + 16*NV + 8*W8) of o for the RB rows of a group, NV
 * float16 and (W8) one float8 accumulator per row, so up to 3 * RB vector registers hold the
 * accumulators. */
#ifdef KV_HALF
#define VLOAD16(i, p) vload_half16((i), (p))
#define VLOAD8(i, p) vload_half8((i), (p))
#else
#define VLOAD16(i, p) vload16((i), (p))
#define VLOAD8(i, p) vload8((i), (p))
#endif
#define PV_SEGMENT(NV, W8)                                                                        \
    {                                                                                             \
        float16 acc[RB][(NV) > 0 ? (NV) : 1];                                                     \
        float8 acc8[RB];                                                                          \
        _Pragma("unroll") for (int r = 0; r < RB; r++) {                                          \
            _Pragma("unroll") for (int u = 0; u < (NV); u++)                                      \
                acc[r][u] = vload16(u, &og[r][d]) * ag[r];                                      \
            if (W8)                                                                               \
                acc8[r] = vload8(0, &og[r][d + 16 * (NV)]) * ag[r];                             \
        }                                                                                         \
        for (int j = 0; j < valid; j++) {                                                         \
            __global const kv_t *vrow = vb + (long)(k0 + j) * C + d;                              \
            float16 vv[(NV) > 0 ? (NV) : 1];                                                      \
            _Pragma("unroll") for (int u = 0; u < (NV); u++) vv[u] = VLOAD16(u, vrow);            \
            float8 v8 = (W8) ? VLOAD8(0, vrow + 16 * (NV)) : (float8)(0.0f);                      \
            _Pragma("unroll") for (int r = 0; r < RB; r++) {                                      \
                float pj = pg[r][j];                                                              \
                _Pragma("unroll") for (int u = 0; u < (NV); u++)                                  \
                    acc[r][u] = fma((float16)(pj), vv[u], acc[r][u]);                             \
                if (W8)                                                                           \
                    acc8[r] = fma((float8)(pj), v8, acc8[r]);                                     \
            }                                                                                     \
        }                                                                                         \
        _Pragma("unroll") for (int r = 0; r < RB; r++) {                                          \
            _Pragma("unroll") for (int u = 0; u < (NV); u++) vstore16(acc[r][u], u, &og[r][d]);    \
            if (W8)                                                                               \
                vstore8(acc8[r], 0, &og[r][d + 16 * (NV)]);                                        \
        }                                                                                         \
        d += 16 * (NV) + 8 * (W8);                                                                \
    }

/* Global: (ceil(Nq / BQ), H, B). Scores are kept in log2 units: scale includes log2(e) and the
 * mask is multiplied by it. mask: NULL or additive f32, row (b, i) at
 * mask[(mb == 1 ? 0 : b) * mb_stride + (mq == 1 ? 0 : i) * Nk]. */
__kernel void attn_fwd(__global const float *q, __global const float *kp, __global const kv_t *v,
                       __global const float *mask, __global float *out, int Nq, int Nk, int H, float scale,
                       int mb, int mq, long mb_stride)
{
    int qb = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    long C = (long)H * HD;
    int nkb = (Nk + BK - 1) / BK;
    int q0 = qb * BQ;
    __global const float *kpanel = kp + ((long)b * H + h) * nkb * (HD * BK);
    __global const kv_t *vb = v + (long)b * Nk * C + (long)h * HD;

    float qs[BQ][HD];   /* queries, pre-scaled */
    float o[BQ][HD];    /* unnormalised output rows */
    float pr[BQ][BK];   /* probabilities of the current key block */
    float m[BQ], alpha[BQ], alpha16[16];
    float16 lv[BQ];     /* running sums of p, lane-wise (reduced once at the end) */
    __global const float *mrow[BQ];
    for (int r = 0; r < BQ; r++) {
        int i = min(q0 + r, Nq - 1);
        __global const float *src = q + ((long)b * Nq + i) * C + (long)h * HD;
        for (int d = 0; d < HD; d++) {
            qs[r][d] = src[d] * scale;
            o[r][d] = 0.0f;
        }
        m[r] = -INFINITY;
        lv[r] = (float16)(0.0f);
        mrow[r] = mask ? mask + (mb == 1 ? 0 : b) * mb_stride + (long)(mq == 1 ? 0 : i) * Nk : 0;
    }

    for (int kb = 0; kb < nkb; kb++) {
        __global const float *kpb = kpanel + (long)kb * (HD * BK);
        int k0 = kb * BK, valid = min(BK, Nk - k0);
        /* Row groups of RB share the key block, which stays in L1 between groups. */
        for (int g = 0; g < BQ; g += RB) {
            float (*qg)[HD] = qs + g, (*og)[HD] = o + g, (*pg)[BK] = pr + g;
            float *mg = m + g, *ag = alpha + g;
            float16 *lg = lv + g;
            __global const float **mrg = mrow + g;
            /* 1. scores: two float16 (32 keys) per row */
            float16 s0[RB], s1[RB];
#pragma unroll
            for (int r = 0; r < RB; r++) {
                s0[r] = (float16)(0.0f);
                s1[r] = (float16)(0.0f);
            }
            for (int d = 0; d < HD; d++) {
                float16 k0v = vload16(0, kpb + d * BK), k1v = vload16(1, kpb + d * BK);
#pragma unroll
                for (int r = 0; r < RB; r++) {
                    float16 qv = (float16)(qg[r][d]);
                    s0[r] = fma(qv, k0v, s0[r]);
                    s1[r] = fma(qv, k1v, s1[r]);
                }
            }
            /* 2. mask, online softmax. Keys past Nk (last block) get -inf through a vector select. */
            float16 pad0 = (float16)(0.0f), pad1 = (float16)(0.0f);
            if (valid < BK) {
                int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                pad0 = select((float16)(0.0f), (float16)(-INFINITY), lane >= (int16)(valid));
                pad1 = select((float16)(0.0f), (float16)(-INFINITY), lane + 16 >= (int16)(valid));
            }
#pragma unroll
            for (int r = 0; r < RB; r++) {
                s0[r] += pad0;
                s1[r] += pad1;
                if (mask && valid == BK) {
                    s0[r] = fma(vload16(0, mrg[r] + k0), (float16)(M_LOG2E_F), s0[r]);
                    s1[r] = fma(vload16(1, mrg[r] + k0), (float16)(M_LOG2E_F), s1[r]);
                } else if (mask) {
                    float tmp[BK];
                    vstore16(s0[r], 0, tmp);
                    vstore16(s1[r], 1, tmp);
                    for (int j = 0; j < valid; j++)
                        tmp[j] += mrg[r][k0 + j] * M_LOG2E_F;
                    s0[r] = vload16(0, tmp);
                    s1[r] = vload16(1, tmp);
                }
            }
            /* running max per row; the rescale factors 2^(max_old - max_new) of all rows in one vector */
            float mnew[RB], dm[16];
#pragma unroll
            for (int r = 0; r < RB; r++) {
                mnew[r] = fmax(mg[r], hmax16(fmax(s0[r], s1[r])));
                float msafe = mnew[r] == -INFINITY ? 0.0f : mnew[r];
                dm[r] = mg[r] - msafe;
                mg[r] = msafe;
            }
            for (int r = RB; r < 16; r++)
                dm[r] = 0.0f;
            vstore16(exp2_neg16(vload16(0, dm)), 0, alpha16);
#pragma unroll
            for (int r = 0; r < RB; r++) {
                ag[r] = alpha16[r];
                float16 p0 = exp2_neg16(s0[r] - mg[r]), p1 = exp2_neg16(s1[r] - mg[r]);
                lg[r] = fma(lg[r], (float16)(ag[r]), p0 + p1);
                mg[r] = mnew[r];
                vstore16(p0, 0, pg[r]);
                vstore16(p1, 1, pg[r]);
            }
            /* 3. o = o * alpha + p V over head-dim segments of up to 48 columns */
            int d = 0;
            for (int seg = 0; seg < HD / 48; seg++)
                PV_SEGMENT(3, 0)
    #if HD % 48 >= 32
            PV_SEGMENT(2, (HD % 16 >= 8))
    #elif HD % 48 >= 16
            PV_SEGMENT(1, (HD % 16 >= 8))
    #elif HD % 16 >= 8
            PV_SEGMENT(0, 1)
    #endif
            for (; d < HD; d++) {
                float acc[RB];
#pragma unroll
                for (int r = 0; r < RB; r++)
                    acc[r] = og[r][d] * ag[r];
                for (int j = 0; j < valid; j++) {
                    float vv = (float)LOAD_KV(vb, (long)(k0 + j) * C + d);
#pragma unroll
                    for (int r = 0; r < RB; r++)
                        acc[r] = fma(pg[r][j], vv, acc[r]);
                }
#pragma unroll
                for (int r = 0; r < RB; r++)
                    og[r][d] = acc[r];
            }
        }
    }

    for (int r = 0; r < BQ && q0 + r < Nq; r++) {
        float l = hsum16(lv[r]);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        __global float *dst = out + ((long)b * Nq + q0 + r) * C + (long)h * HD;
        for (int d = 0; d < HD; d++)
            dst[d] = o[r][d] * inv;
    }
}
