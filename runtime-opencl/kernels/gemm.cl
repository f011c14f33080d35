/* GEMM on packed operands: C[M,N] = act(alpha * A[M,K] B[K,N] + bias), per batch.
 *
 * CPU layout (docs/design.md §7): one work-item computes an MR x NR register tile (NR = 32 columns
 * as two float16 vectors) over the whole K, reading
 *   Ap[ip][k][MR]  (A packed in panels of MR rows, zero-padded), and
 *   Bp[jp][k][NR]  (B packed in panels of NR columns, zero-padded),
 * so the inner loop is two contiguous vector loads of B, one of A, and MR * 2 vector FMAs.
 * Launched with work-group size 1; no local memory, no barriers.
 *
 * Build options: -DMR=<rows>, -DA_HALF / -DB_HALF when the source of the pack kernels is f16
 * (vload_half; arithmetic stays fp32), -DA_ROWS to read A unpacked from f32 rows. */
#ifndef MR
#define MR 8
#endif
#define NR 32

#ifdef A_HALF
#define LOAD_A(p, i) vload_half((i), (p))
typedef half a_t;
#else
#define LOAD_A(p, i) ((p)[i])
typedef float a_t;
#endif
#ifdef B_HALF
#define LOAD_B(p, i) vload_half((i), (p))
typedef half b_t;
#else
#define LOAD_B(p, i) ((p)[i])
typedef float b_t;
#endif

/* IEEE binary16 bit patterns to float: the exponent/mantissa bits shifted into place and
 * rescaled by 2^112 (exact for normal and subnormal halves), inf/nan mapped explicitly. */
float16 half16_to_float16(ushort16 h)
{
    uint16 u = convert_uint16(h);
    uint16 em = u & 0x7fffu;
    float16 f = as_float16(em << 13) * 0x1p112f;
    uint16 bits = em >= 0x7c00u ? (em << 13) | 0x7f800000u : as_uint16(f);
    return as_float16(bits | ((u & 0x8000u) << 16));
}

/* Activations (ops.h sd_act): 0 none, 1 SiLU, 2 GELU (erf form). */
#define ACT_NONE 0
#define ACT_SILU 1
#define ACT_GELU 2

float16 activate16(float16 x, int act)
{
    if (act == ACT_SILU)
        return x / (1.0f + exp(-x));
    if (act == ACT_GELU)
        return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    return x;
}

/* Ap[b][ip][k][r] = A[b][ip*MR + r][k] (0 outside M). A element (m, k) is at
 * a[off + b * s_b + m * s_m + k * s_k]. Global: (ceil(M / MR), batch). */
__kernel void gemm_pack_a(__global const a_t *a, long off, __global float *ap, int M, int K, long s_m,
                          long s_k, long s_b, long ap_bs)
{
    int ip = get_global_id(0), b = get_global_id(1);
    __global const a_t *src = a + off + b * s_b;
    __global float *dst = ap + b * ap_bs + (long)ip * K * MR;
    int rows = min(MR, M - ip * MR);
    for (int k = 0; k < K; k++) {
        for (int r = 0; r < MR; r++)
            dst[(long)k * MR + r] = r < rows ? (float)LOAD_A(src, (long)(ip * MR + r) * s_m + k * s_k) : 0.0f;
    }
}

/* Bp[b][jp][k][j] = B[b][k][jp*NR + j] (0 outside N). B element (k, n) is at
 * bsrc[off + b * s_b + k * s_k + n * s_n]. Global: (ceil(N / NR), batch). */
__kernel void gemm_pack_b(__global const b_t *bsrc, long off, __global float *bp, int N, int K, long s_k,
                          long s_n, long s_b, long bp_bs)
{
    int jp = get_global_id(0), b = get_global_id(1);
    __global const b_t *src = bsrc + off + b * s_b;
    __global float *dst = bp + b * bp_bs + (long)jp * K * NR;
    int cols = min(NR, N - jp * NR);
    if (cols == NR && s_n == 1) {
        for (int k = 0; k < K; k++) {
            __global const b_t *row = src + k * s_k + jp * NR;
#ifdef B_HALF
            vstore16(vload_half16(0, row), 0, dst + (long)k * NR);
            vstore16(vload_half16(1, row), 1, dst + (long)k * NR);
#else
            vstore16(vload16(0, row), 0, dst + (long)k * NR);
            vstore16(vload16(1, row), 1, dst + (long)k * NR);
#endif
        }
        return;
    }
#ifdef B_HALF
    if (s_k == 1) {
        /* Rows of B^T (torch Linear weights): 16 columns x 16 k-values at a time, converted as
         * vectors (vector bit arithmetic; vload_half is scalar software on some CPU drivers) and
         * transposed through private memory, so that the stores are whole 16-float rows. */
        int k = 0;
        for (; k + 16 <= K; k += 16) {
            for (int j0 = 0; j0 < NR; j0 += 16) {
                float t[16][16];
                for (int j = 0; j < 16; j++) {
                    __global const ushort *col =
                        (__global const ushort *)src + (long)(jp * NR + min(j0 + j, cols - 1)) * s_n + k;
                    vstore16(j0 + j < cols ? half16_to_float16(vload16(0, col)) : (float16)(0.0f), 0, t[j]);
                }
                for (int u = 0; u < 16; u++) {
                    float16 row;
                    row.s0 = t[0][u]; row.s1 = t[1][u]; row.s2 = t[2][u]; row.s3 = t[3][u];
                    row.s4 = t[4][u]; row.s5 = t[5][u]; row.s6 = t[6][u]; row.s7 = t[7][u];
                    row.s8 = t[8][u]; row.s9 = t[9][u]; row.sa = t[10][u]; row.sb = t[11][u];
                    row.sc = t[12][u]; row.sd = t[13][u]; row.se = t[14][u]; row.sf = t[15][u];
                    vstore16(row, 0, dst + (long)(k + u) * NR + j0);
                }
            }
        }
        for (; k < K; k++)
            for (int j = 0; j < NR; j++)
                dst[(long)k * NR + j] = j < cols ? vload_half(k, src + (long)(jp * NR + j) * s_n) : 0.0f;
        return;
    }
#endif
    for (int k = 0; k < K; k++)
        for (int j = 0; j < NR; j++)
            dst[(long)k * NR + j] = j < cols ? (float)LOAD_B(src, k * s_k + (long)(jp * NR + j) * s_n) : 0.0f;
}

/* One MR x NR tile of C. Global: (ceil(N / NR), ceil(M / MR), batch), or (ceil(M / MR),
 * ceil(N / NR), batch) when m_fastest (consecutive work-items then share a B panel); work-group
 * size 1.
 * A is packed (ap as written by gemm_pack_a, ap_bs floats per batch) or, built with -DA_ROWS,
 * plain rows (f32, or f16 with -DA_HALF): element (m, k) at ap[b * ap_bs + m * lda + k] (rows
 * past M re-read row M-1; their results are not stored).
 * bias_mode: 0 none, 1 bias[n] (per column, linear), 2 bias[m] (per row, convolution).
 * C element (m, n) of batch b is at c[c_off + b * c_bs + m * ldc + n]. */
#ifdef A_ROWS
typedef a_t ap_t;
#else
typedef float ap_t;
#endif
__kernel void gemm_tile(__global const ap_t *ap, __global const float *bp, __global float *c,
                        __global const float *bias, int M, int N, int K, int lda, int ldc, long ap_bs,
                        long bp_bs, long c_off, long c_bs, float alpha, int bias_mode, int act, int m_fastest)
{
    int jp = get_global_id(m_fastest ? 1 : 0), ip = get_global_id(m_fastest ? 0 : 1), b = get_global_id(2);
    __global const float *B = bp + b * bp_bs + (long)jp * K * NR;
#ifdef A_ROWS
    __global const a_t *arow[MR];
#pragma unroll
    for (int r = 0; r < MR; r++)
        arow[r] = ap + b * ap_bs + (long)min(ip * MR + r, M - 1) * lda;
#else
    __global const float *A = ap + b * ap_bs + (long)ip * K * MR;
#endif
    float16 acc0[MR], acc1[MR];
#pragma unroll
    for (int r = 0; r < MR; r++) {
        acc0[r] = (float16)(0.0f);
        acc1[r] = (float16)(0.0f);
    }
    int k = 0;
#if defined(A_ROWS) && defined(A_HALF)
    /* f16 rows: convert 16 k-steps of every row at once (vector bit arithmetic; vload_half is
     * scalar software on some CPU drivers), then broadcast from private memory. */
    for (; k + 16 <= K; k += 16) {
        float at[MR][16];
#pragma unroll
        for (int r = 0; r < MR; r++)
            vstore16(half16_to_float16(vload16(0, (__global const ushort *)arow[r] + k)), 0, at[r]);
        for (int kk = 0; kk < 16; kk++) {
            float16 b0 = vload16(0, B), b1 = vload16(1, B);
#pragma unroll
            for (int r = 0; r < MR; r++) {
                float16 av = (float16)(at[r][kk]);
                acc0[r] = fma(av, b0, acc0[r]);
                acc1[r] = fma(av, b1, acc1[r]);
            }
            B += NR;
        }
    }
#endif
    for (; k < K; k++) {
        float16 b0 = vload16(0, B), b1 = vload16(1, B);
#pragma unroll
        for (int r = 0; r < MR; r++) {
#ifdef A_ROWS
            float16 av = (float16)((float)LOAD_A(arow[r], k));
#else
            float16 av = (float16)(A[r]);
#endif
            acc0[r] = fma(av, b0, acc0[r]);
            acc1[r] = fma(av, b1, acc1[r]);
        }
#ifndef A_ROWS
        A += MR;
#endif
        B += NR;
    }
    int n0 = jp * NR;
    int cols = min(NR, N - n0);
    float16 bias0 = (float16)(0.0f), bias1 = (float16)(0.0f);
    if (bias_mode == 1) {
        if (cols == NR) {
            bias0 = vload16(0, bias + n0);
            bias1 = vload16(1, bias + n0);
        } else {
            float tmp[NR];
            for (int j = 0; j < NR; j++)
                tmp[j] = j < cols ? bias[n0 + j] : 0.0f;
            bias0 = vload16(0, tmp);
            bias1 = vload16(1, tmp);
        }
    }
    __global float *C = c + c_off + b * c_bs + n0;
#pragma unroll
    for (int r = 0; r < MR; r++) {
        int m = ip * MR + r;
        if (m >= M)
            break;
        float16 rb = bias_mode == 2 ? (float16)(bias[m]) : (float16)(0.0f);
        float16 v0 = activate16(alpha * acc0[r] + bias0 + rb, act);
        float16 v1 = activate16(alpha * acc1[r] + bias1 + rb, act);
        __global float *row = C + (long)m * ldc;
        if (cols == NR) {
            vstore16(v0, 0, row);
            vstore16(v1, 1, row);
        } else {
            float tmp[NR];
            vstore16(v0, 0, tmp);
            vstore16(v1, 1, tmp);
            for (int j = 0; j < cols; j++)
                row[j] = tmp[j];
        }
    }
}
