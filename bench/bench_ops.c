/* bench_ops: GFLOP/s of the OpenCL op library on SD1.5-shaped work, with OpenBLAS sgemm measured
 * in the same run as the peer (printed as ratios). Not a test: it prints figures, never fails on
 * time. Each figure is the best of N runs (the machine may be shared).
 *
 *   OPENBLAS_CORETYPE=SkylakeX bench_ops [--reps N] [--only gemm|conv|attn]
 *
 * docs/benchmarks.md records results and the exact command. */
#include "runtime-opencl/ops.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef SDFLOW_HAVE_OPENBLAS
#include <cblas.h>
#endif

static int reps = 5;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *random_floats(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n && p; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

static sd_dtensor *upload(sd_cl *cl, sd_dtype dt, int ndim, const int64_t *shape, unsigned seed)
{
    sd_dtensor *t = NULL;
    if (sd_dtensor_new(cl, dt, ndim, shape, &t))
        return NULL;
    float *h = random_floats(t->numel, seed);
    if (!h || sd_dtensor_upload(t, h)) {
        sd_dtensor_free(t);
        t = NULL;
    }
    free(h);
    return t;
}

static void die(sd_cl *cl, const char *what)
{
    fprintf(stderr, "bench_ops: %s: %s\n", what, sd_context_errmsg(cl->ctx));
    exit(1);
}

/* ---- GEMM (linear layers): x [M, K] times w [N, K]^T ---- */

static double bench_linear(sd_cl *cl, int M, int K, int N, sd_dtype wdt)
{
    int64_t xs[] = {M, K}, ws[] = {N, K};
    sd_dtensor *x = upload(cl, SD_DTYPE_F32, 2, xs, 1), *w = upload(cl, wdt, 2, ws, 2), *y = NULL;
    if (!x || !w)
        die(cl, "upload");
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        if (sd_op_linear(cl, x, w, NULL, SD_ACT_NONE, &y) || sd_cl_finish(cl))
            die(cl, "linear");
        double t = now() - t0;
        if (r > 0 && t < best) /* the first run builds the kernels */
            best = t;
        sd_dtensor_free(y);
    }
    sd_dtensor_free(x);
    sd_dtensor_free(w);
    return 2.0 * M * K * N / best * 1e-9;
}

#ifdef SDFLOW_HAVE_OPENBLAS
static double blas_linear(int M, int K, int N)
{
    float *x = random_floats((size_t)M * K, 1), *w = random_floats((size_t)N * K, 2);
    float *y = malloc((size_t)M * N * sizeof *y);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    free(x);
    free(w);
    free(y);
    return 2.0 * M * K * N / best * 1e-9;
}
#endif

static void run_gemm(sd_cl *cl)
{
    static const int shapes[][3] = {{4096, 320, 320}, {4096, 320, 1280}, {1024, 640, 2560}, {77, 768, 320}};
    printf("\nlinear (M x K x N, y = x w^T)      f32 w GF/s  f16 w GF/s  OpenBLAS GF/s  ratio f32\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int M = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
        double g32 = bench_linear(cl, M, K, N, SD_DTYPE_F32);
        double g16 = bench_linear(cl, M, K, N, SD_DTYPE_F16);
#ifdef SDFLOW_HAVE_OPENBLAS
        double gb = blas_linear(M, K, N);
        printf("  %5d x %4d x %4d               %10.1f  %10.1f  %13.1f  %8.0f%%\n", M, K, N, g32, g16, gb,
               100.0 * g32 / gb);
#else
        printf("  %5d x %4d x %4d               %10.1f  %10.1f  %13s\n", M, K, N, g32, g16, "n/a");
#endif
        fflush(stdout);
    }
}

/* ---- 3x3 convolutions, padding 1, C -> C channels ---- */

static double bench_conv(sd_cl *cl, int C, int HW, sd_dtype wdt, sd_conv_algo algo)
{
    int64_t xs[] = {1, C, HW, HW}, ws[] = {C, C, 3, 3};
    sd_dtensor *x = upload(cl, SD_DTYPE_F32, 4, xs, 3), *w = upload(cl, wdt, 4, ws, 4), *y = NULL;
    if (!x || !w)
        die(cl, "upload");
    sd_conv2d_params p = {1, 1, 1, 1, SD_ACT_NONE, algo};
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        if (sd_op_conv2d(cl, x, w, NULL, &p, &y) || sd_cl_finish(cl))
            die(cl, "conv2d");
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
        sd_dtensor_free(y);
    }
    sd_dtensor_free(x);
    sd_dtensor_free(w);
    return 2.0 * C * C * 9.0 * HW * HW / best * 1e-9;
}

#ifdef SDFLOW_HAVE_OPENBLAS
/* The peer: im2col on the host, then one sgemm [C, 9C] x [9C, HW*HW]; both timed. */
static double blas_conv(int C, int HW)
{
    size_t K = (size_t)C * 9, P = (size_t)HW * HW;
    float *x = random_floats((size_t)C * P, 3), *w = random_floats((size_t)C * K, 4);
    float *col = malloc(K * P * sizeof *col), *y = malloc((size_t)C * P * sizeof *y);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < 3; kh++)
                for (int kw = 0; kw < 3; kw++) {
                    float *dst = col + ((size_t)c * 9 + (size_t)kh * 3 + (size_t)kw) * P;
                    for (int oh = 0; oh < HW; oh++) {
                        int ih = oh + kh - 1;
                        for (int ow = 0; ow < HW; ow++) {
                            int iw = ow + kw - 1;
                            dst[(size_t)oh * HW + ow] = ih >= 0 && ih < HW && iw >= 0 && iw < HW
                                ? x[((size_t)c * HW + (size_t)ih) * HW + (size_t)iw] : 0.0f;
                        }
                    }
                }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, (int)P, (int)K, 1.0f, w, (int)K, col, (int)P,
                    0.0f, y, (int)P);
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    free(x);
    free(w);
    free(col);
    free(y);
    return 2.0 * C * C * 9.0 * HW * HW / best * 1e-9;
}
#endif

static void run_conv(sd_cl *cl)
{
    static const int shapes[][2] = {{320, 64}, {640, 32}, {1280, 16}, {1280, 8}, {512, 64}, {128, 256}};
    printf("\nconv 3x3 pad 1 (C -> C @ HxW)   GF/s: gemm f32  wino f32  auto f16   im2col+sgemm  ratio auto f32\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int C = shapes[i][0], HW = shapes[i][1];
        double gg = bench_conv(cl, C, HW, SD_DTYPE_F32, SD_CONV_GEMM);
        double gw = bench_conv(cl, C, HW, SD_DTYPE_F32, SD_CONV_WINOGRAD);
        double g16 = bench_conv(cl, C, HW, SD_DTYPE_F16, SD_CONV_AUTO);
        bool wino = HW >= 64 && C >= 256; /* what AUTO picks (conv.c) */
        double ga = wino ? gw : gg;
#ifdef SDFLOW_HAVE_OPENBLAS
        double gb = blas_conv(C, HW);
        printf("  %4d @ %3dx%-3d                    %9.1f %9.1f %9.1f %14.1f %14.0f%%\n", C, HW, HW, gg, gw, g16, gb,
               100.0 * ga / gb);
#else
        printf("  %4d @ %3dx%-3d                    %9.1f %9.1f %9.1f %14s\n", C, HW, HW, gg, gw, g16, "n/a");
#endif
        fflush(stdout);
    }
    printf("  (Winograd figures count the direct convolution's flops)\n");
}

/* ---- attention: q [1, Nq, H*D], k/v [1, Nk, H*D] ---- */

static double bench_attn(sd_cl *cl, int Nq, int Nk, int H, int D)
{
    int64_t qs[] = {1, Nq, (int64_t)H * D}, ks[] = {1, Nk, (int64_t)H * D};
    sd_dtensor *q = upload(cl, SD_DTYPE_F32, 3, qs, 5), *k = upload(cl, SD_DTYPE_F32, 3, ks, 6);
    sd_dtensor *v = upload(cl, SD_DTYPE_F32, 3, ks, 7), *y = NULL;
    if (!q || !k || !v)
        die(cl, "upload");
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        if (sd_op_attention(cl, q, k, v, H, NULL, &y) || sd_cl_finish(cl))
            die(cl, "attention");
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
        sd_dtensor_free(y);
    }
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    return 4.0 * H * (double)Nq * Nk * D / best * 1e-9; /* QK^T and PV */
}

static void run_attn(sd_cl *cl)
{
    static const int shapes[][4] = {{4096, 4096, 8, 40}, {4096, 77, 8, 40}, {1024, 1024, 8, 80}, {1024, 77, 8, 80}};
    /* The reference GEMM rate: this library's linear 4096x320x1280 in the same run. */
    double gemm = bench_linear(cl, 4096, 320, 1280, SD_DTYPE_F32);
    printf("\nattention (Nq x Nk, heads x dim)     GF/s   vs GEMM %.1f GF/s\n", gemm);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double g = bench_attn(cl, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
        printf("  %5d x %4d, %d x %-3d            %7.1f   %6.0f%%\n", shapes[i][0], shapes[i][1], shapes[i][2],
               shapes[i][3], g, 100.0 * g / gemm);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_ops [--reps N] [--only gemm|conv|attn]\n");
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    sd_context *ctx = NULL;
    sd_cl *cl = NULL;
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "bench_ops: %s\n", ctx ? sd_context_errmsg(ctx) : "out of memory");
        return 1;
    }
    printf("device: %s (%s), best of %d runs each\n", cl->device_name, cl->driver_version, reps);
#ifdef SDFLOW_HAVE_OPENBLAS
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("peer: OpenBLAS %s, OPENBLAS_CORETYPE=%s\n", openblas_get_config(), core ? core : "(unset)");
#endif
    if (!only || !strcmp(only, "gemm"))
        run_gemm(cl);
    if (!only || !strcmp(only, "conv"))
        run_conv(cl);
    if (!only || !strcmp(only, "attn"))
        run_attn(cl);
    sd_context_free(ctx);
    return 0;
}
