/* GEMM on packed operands: C[M,N] = act(alpha * A[M,K] B[K,N] + bias), per batch.
 *
 * CPU layout (DESIGN.md §7): one work-item computes an MR x NR register tile (NR = 32 columns
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
    for (int k = 0; k < K; k++)
        for (int j = 0; j < NR; j++)
            dst[(long)k * NR + j] = j < cols ? (float)LOAD_B(src, k * s_k + (long)(jp * NR + j) * s_n) : 0.0f;
}

/* One MR x NR tile of C. Global: (ceil(N / NR), ceil(M / MR), batch); work-group size 1.
 * A is packed (ap as written by gemm_pack_a, ap_bs floats per batch) or, built with -DA_ROWS,
 * plain f32 rows: element (m, k) at ap[b * ap_bs + m * lda + k] (rows past M re-read row M-1;
 * their results are not stored).
 * bias_mode: 0 none, 1 bias[n] (per column, linear), 2 bias[m] (per row, convolution).
 * C element (m, n) of batch b is at c[c_off + b * c_bs + m * ldc + n]. */
__kernel void gemm_tile(__global const float *ap, __global const float *bp, __global float *c,
                        __global const float *bias, int M, int N, int K, int lda, int ldc, long ap_bs,
                        long bp_bs, long c_off, long c_bs, float alpha, int bias_mode, int act)
{
    int jp = get_global_id(0), ip = get_global_id(1), b = get_global_id(2);
    __global const float *B = bp + b * bp_bs + (long)jp * K * NR;
#ifdef A_ROWS
    __global const float *arow[MR];
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
    for (int k = 0; k < K; k++) {
        float16 b0 = vload16(0, B), b1 = vload16(1, B);
#pragma unroll
        for (int r = 0; r < MR; r++) {
#ifdef A_ROWS
            float16 av = (float16)(arow[r][k]);
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
