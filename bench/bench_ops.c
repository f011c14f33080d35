/* bench_ops: GFLOP/s of the OpenCL op library on SD1.5-shaped work, with OpenBLAS sgemm measured
 * in the same run as the peer (printed as ratios). Not a test: it prints figures, never fails on
 * time. The variants of one row are timed interleaved, one run each in turn, and each figure is
 * the best of N runs, so a shared machine's load hits them alike.
 *
 *   OPENBLAS_CORETYPE=SkylakeX bench_ops [--reps N] [--only gemm|conv|attn|kept|quant|int8] [--cpu]
 *
 * --cpu times each run by the process's CPU time (all threads) instead of the wall clock, so the
 * figures are GFLOP per CPU-second: on a loaded machine, where other processes stretch the wall
 * time, they still compare routes (run OpenMP with OMP_WAIT_POLICY=passive, or its spinning counts).
 *
 * docs/benchmarks.md records results and the exact command. */
#include "runtime-opencl/ops.h"
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/linear_int8.h"
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
static bool cpu_time; /* --cpu */
static sd_cl *cl;

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The clock of the figures: wall, or the process's CPU time with --cpu. */
static double now(void)
{
    return clock_s(cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
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

static void die(const char *what)
{
    fprintf(stderr, "bench_ops: %s: %s\n", what, cl ? sd_context_errmsg(cl->ctx) : "out of memory");
    exit(1);
}

static sd_dtensor *upload(sd_dtype dt, int ndim, const int64_t *shape, unsigned seed)
{
    sd_dtensor *t = NULL;
    if (sd_dtensor_new(cl, dt, ndim, shape, &t))
        die("allocate");
    float *h = random_floats(t->numel, seed);
    if (!h || sd_dtensor_upload(t, h))
        die("upload");
    free(h);
    return t;
}

/* One benchmark variant: run() does the work once (waiting for the device). */
typedef struct variant {
    void (*run)(struct variant *v);
    double best, best_cpu; /* seconds: wall clock, and the process's CPU time (every thread) */
    /* device operands */
    sd_dtensor *a, *b, *c;
    sd_conv2d_params conv;
    int heads;
    int int8_route; /* bench_quant_routes: -1 fp32, else bf16 with the int8 route capped at this sd_int8_isa */
    /* host operands (peer) */
    float *ha, *hb, *hcol, *hc;
    int M, K, N, C, HW;
    int route; /* 0: the runtime's choice; 1: the OpenCL kernels; 2: the fp32 host routes (oneDNN) */
} variant;

/* Runs every variant once per round, reps rounds after one warm-up round (kernel builds), and
 * keeps each one's best time. */
static void time_interleaved(variant *const *vs, int n)
{
    for (int i = 0; i < n; i++)
        vs[i]->best = vs[i]->best_cpu = INFINITY;
    bool host0 = cl->host_fp32;
    for (int r = 0; r <= reps; r++)
        for (int i = 0; i < n; i++) {
            cl->host_fp32 = vs[i]->route ? vs[i]->route == 2 : host0;
            double t0 = now(), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            vs[i]->run(vs[i]);
            double t = now() - t0, c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
            if (r > 0 && t < vs[i]->best)
                vs[i]->best = t;
            if (r > 0 && c < vs[i]->best_cpu)
                vs[i]->best_cpu = c;
        }
    cl->host_fp32 = host0;
}

static void finish(void)
{
    if (sd_cl_finish(cl))
        die("finish");
}

/* ---- linear layers: y [M, N] = x [M, K] w [N, K]^T ---- */

static void run_linear(variant *v)
{
    sd_dtensor *y = NULL;
    if (sd_op_linear(cl, v->a, v->b, NULL, SD_ACT_NONE, &y))
        die("linear");
    finish();
    sd_dtensor_free(y);
}

static void linear_setup(variant *v, int M, int K, int N, sd_dtype wdt)
{
    int64_t xs[] = {M, K}, ws[] = {N, K};
    memset(v, 0, sizeof *v);
    v->run = run_linear;
    v->a = upload(SD_DTYPE_F32, 2, xs, 1);
    v->b = upload(wdt, 2, ws, 2);
}

static void variant_free(variant *v)
{
    sd_dtensor_free(v->a);
    sd_dtensor_free(v->b);
    sd_dtensor_free(v->c);
    free(v->ha);
    free(v->hb);
    free(v->hcol);
    free(v->hc);
}

#ifdef SDFLOW_HAVE_OPENBLAS
static void run_blas_linear(variant *v)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, v->M, v->N, v->K, 1.0f, v->ha, v->K, v->hb, v->K, 0.0f,
                v->hc, v->N);
}

static void blas_linear_setup(variant *v, int M, int K, int N)
{
    memset(v, 0, sizeof *v);
    v->run = run_blas_linear;
    v->M = M;
    v->K = K;
    v->N = N;
    v->ha = random_floats((size_t)M * K, 1);
    v->hb = random_floats((size_t)N * K, 2);
    v->hc = malloc((size_t)M * N * sizeof(float));
    if (!v->ha || !v->hb || !v->hc)
        die("host memory");
}
#endif

/* Whether the fp32 host routes can run here (a CPU device, a build with oneDNN). */
static bool host_able(void)
{
    return sd_dnnl_available() && (cl->type & CL_DEVICE_TYPE_CPU);
}

static void bench_gemm(void)
{
    static const int shapes[][3] = {{4096, 320, 320}, {4096, 320, 1280}, {4096, 1280, 320}, {1024, 640, 2560},
                                    {256, 1280, 1280}, {77, 768, 320}};
    bool host = host_able();
    printf("\nlinear M x K x N (y = x w^T)  GF/s: OpenCL f32 w  f16 w  oneDNN f32 w  f16 w   OpenBLAS  "
           "oneDNN f16 / OpenCL f16\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int M = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
        variant v32, v16, h32, h16, vb;
        linear_setup(&v32, M, K, N, SD_DTYPE_F32);
        linear_setup(&v16, M, K, N, SD_DTYPE_F16);
        linear_setup(&h32, M, K, N, SD_DTYPE_F32);
        linear_setup(&h16, M, K, N, SD_DTYPE_F16);
        v32.route = v16.route = 1;
        h32.route = h16.route = 2;
        variant *vs[5] = {&v32, &v16, &h32, &h16};
        int n = host ? 4 : 2;
        double flops = 2.0 * M * K * N;
#ifdef SDFLOW_HAVE_OPENBLAS
        blas_linear_setup(&vb, M, K, N);
        vs[n++] = &vb;
#else
        memset(&vb, 0, sizeof vb);
        vb.best = INFINITY;
#endif
        if (!host)
            h32.best = h16.best = INFINITY;
        time_interleaved(vs, n);
        printf("  %5d x %4d x %4d              %9.1f %6.1f %12.1f %6.1f %10.1f %14.0f%%\n", M, K, N,
               flops / v32.best * 1e-9, flops / v16.best * 1e-9, flops / h32.best * 1e-9, flops / h16.best * 1e-9,
               flops / vb.best * 1e-9, 100 * v16.best / h16.best);
        variant_free(&vb);
        variant_free(&v32);
        variant_free(&v16);
        variant_free(&h32);
        variant_free(&h16);
        fflush(stdout);
    }
    printf("  (0.0: not measured in this build; the OpenCL and oneDNN columns ignore SDFLOW_CPU_ROUTES)\n");
}

/* ---- linear with a weight kept in block form (dequantised in the B pack step) ---- */

/* w [N, K] of a 32-element block type (Q8_0, Q4_0: f16 scale first) with random quants. */
static void linear_blocks_setup(variant *v, int M, int K, int N, sd_dtype wdt)
{
    int64_t xs[] = {M, K}, ws[] = {N, K};
    size_t be, bb;
    sd_dtype_block(wdt, &be, &bb);
    size_t nblocks = (size_t)N * K / be;
    unsigned char *blocks = malloc(nblocks * bb);
    float *r = random_floats(nblocks * bb, 3);
    if (!blocks || !r)
        die("host memory");
    for (size_t i = 0; i < nblocks * bb; i++)
        blocks[i] = (unsigned char)((r[i] + 0.5f) * 255.0f);
    size_t at = wdt == SD_DTYPE_Q6_K ? 208 : 0; /* where the block's f16 scale d lies */
    for (size_t i = 0; i < nblocks; i++) {
        blocks[i * bb + at] = 0x1f; /* scale 0.01 (f16 0x211f) */
        blocks[i * bb + at + 1] = 0x21;
    }
    memset(v, 0, sizeof *v);
    v->run = run_linear;
    v->a = upload(SD_DTYPE_F32, 2, xs, 1);
    if (sd_dtensor_new_blocks(cl, wdt, 2, ws, blocks, nblocks * bb, &v->b))
        die("upload blocks");
    free(blocks);
    free(r);
}

static void bench_quant(void)
{
    int M = 4096, K = 3072, N = 3072;
    variant v16, v8, v4;
    linear_setup(&v16, M, K, N, SD_DTYPE_F16);
    linear_blocks_setup(&v8, M, K, N, SD_DTYPE_Q8_0);
    linear_blocks_setup(&v4, M, K, N, SD_DTYPE_Q4_0);
    variant *vs[] = {&v16, &v8, &v4};
    time_interleaved(vs, 3);
    double flops = 2.0 * M * K * N;
    printf("\nlinear M x K x N, weight kept as   GF/s: f16     Q8_0    Q4_0   ratio Q8_0   ratio Q4_0\n");
    printf("  %5d x %4d x %4d                  %7.1f %7.1f %7.1f %10.0f%% %10.0f%%\n", M, K, N, flops / v16.best * 1e-9,
           flops / v8.best * 1e-9, flops / v4.best * 1e-9, 100 * v16.best / v8.best, 100 * v16.best / v4.best);
    variant_free(&v16);
    variant_free(&v8);
    variant_free(&v4);
    fflush(stdout);
}

/* run_linear in v->int8_route's precision and int8 route. */
static void run_linear_route(variant *v)
{
    sd_int8_isa prior = sd_linear_int8_cap(v->int8_route < 0 ? SD_INT8_NONE : (sd_int8_isa)v->int8_route);
    if (sd_context_set_precision(cl->ctx, v->int8_route < 0 ? "fp32" : "bf16"))
        die("precision");
    run_linear(v);
    sd_context_set_precision(cl->ctx, "fp32");
    sd_linear_int8_cap(prior);
}

/* FLUX's linear shapes (a modulation of one token; 512 text tokens; 4096 + 512 tokens: qkv/proj,
 * MLP up, MLP down) with Q8_0 / Q4_0 / Q4_K / Q6_K weights:
 * fp32 (dequantised in the B pack step), bf16 by expanding the weight to f32 for oneDNN, and the
 * int8 route (runtime-opencl/linear_int8.c) on AVX512-VNNI and on AMX-INT8 where present. */
static void bench_quant_routes(void)
{
    static const int shapes[][3] = {{1, 3072, 18432},     {512, 3072, 3072},   {4608, 3072, 3072},
                                    {4608, 3072, 12288}, {4608, 12288, 3072}};
    static const sd_dtype types[] = {SD_DTYPE_Q8_0, SD_DTYPE_Q4_0, SD_DTYPE_Q4_K, SD_DTYPE_Q6_K};
    int routes = (int)sd_linear_int8_route();
    printf("\nlinear M x K x N, weight (wall clock; per CPU-second)   fp32  bf16 expand   int8 VNNI    int8 AMX\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            int M = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
            variant v[4], *vs[4];
            for (int r = 0; r < 2 + routes; r++) {
                linear_blocks_setup(&v[r], M, K, N, types[t]);
                v[r].run = run_linear_route;
                v[r].int8_route = r - 1;
                vs[r] = &v[r];
            }
            time_interleaved(vs, 2 + routes);
            double flops = 2.0 * M * K * N;
            for (int cpu = 0; cpu < 2; cpu++) {
                printf("  %5d x %5d x %5d %s %s", M, K, N, sd_dtype_name(types[t]), cpu ? "GF/cpu-s" : "GF/s    ");
                for (int r = 0; r < 4; r++)
                    r < 2 + routes ? printf(" %11.1f", flops / (cpu ? v[r].best_cpu : v[r].best) * 1e-9)
                                   : printf("         n/a");
                printf("\n");
            }
            for (int r = 0; r < 2 + routes; r++)
                variant_free(&v[r]);
            fflush(stdout);
        }
}

/* ---- 3x3 convolutions, padding 1, C -> C channels ---- */

static void run_conv(variant *v)
{
    sd_dtensor *y = NULL;
    if (sd_op_conv2d(cl, v->a, v->b, NULL, &v->conv, &y))
        die("conv2d");
    finish();
    sd_dtensor_free(y);
}

static void conv_setup(variant *v, int C, int HW, sd_dtype wdt, sd_conv_algo algo)
{
    int64_t xs[] = {1, C, HW, HW}, ws[] = {C, C, 3, 3};
    memset(v, 0, sizeof *v);
    v->run = run_conv;
    v->a = upload(SD_DTYPE_F32, 4, xs, 3);
    v->b = upload(wdt, 4, ws, 4);
    v->conv = (sd_conv2d_params){1, 1, 1, 1, SD_ACT_NONE, algo};
}

#ifdef SDFLOW_HAVE_OPENBLAS
/* The peer: im2col on the host, then one sgemm [C, 9C] x [9C, HW*HW]; both timed. */
static void run_blas_conv(variant *v)
{
    int C = v->C, HW = v->HW;
    size_t P = (size_t)HW * HW;
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                float *dst = v->hcol + ((size_t)c * 9 + (size_t)kh * 3 + (size_t)kw) * P;
                for (int oh = 0; oh < HW; oh++) {
                    int ih = oh + kh - 1;
                    for (int ow = 0; ow < HW; ow++) {
                        int iw = ow + kw - 1;
                        dst[(size_t)oh * HW + ow] = ih >= 0 && ih < HW && iw >= 0 && iw < HW
                            ? v->ha[((size_t)c * HW + (size_t)ih) * HW + (size_t)iw] : 0.0f;
                    }
                }
            }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, (int)P, 9 * C, 1.0f, v->hb, 9 * C, v->hcol, (int)P,
                0.0f, v->hc, (int)P);
}

static void blas_conv_setup(variant *v, int C, int HW)
{
    size_t P = (size_t)HW * HW;
    memset(v, 0, sizeof *v);
    v->run = run_blas_conv;
    v->C = C;
    v->HW = HW;
    v->ha = random_floats((size_t)C * P, 3);
    v->hb = random_floats((size_t)C * C * 9, 4);
    v->hcol = malloc((size_t)C * 9 * P * sizeof(float));
    v->hc = malloc((size_t)C * P * sizeof(float));
    if (!v->ha || !v->hb || !v->hcol || !v->hc)
        die("host memory");
}
#endif

static void bench_conv(void)
{
    static const int shapes[][2] = {{320, 64}, {640, 32}, {1280, 16}, {1280, 8},
                                    {512, 64}, {512, 128}, {256, 256}, {128, 256}};
    bool host = host_able();
    printf("\nconv 3x3 pad 1, C -> C @ HxW   GF/s: gemm f32  wino f32  auto f16  oneDNN f32 w  f16 w  "
           "im2col+sgemm  oneDNN f16 / auto f16\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int C = shapes[i][0], HW = shapes[i][1];
        variant vg, vw, v16, h32, h16, vb;
        conv_setup(&vg, C, HW, SD_DTYPE_F32, SD_CONV_GEMM);
        conv_setup(&vw, C, HW, SD_DTYPE_F32, SD_CONV_WINOGRAD);
        conv_setup(&v16, C, HW, SD_DTYPE_F16, SD_CONV_AUTO);
        conv_setup(&h32, C, HW, SD_DTYPE_F32, SD_CONV_ONEDNN);
        conv_setup(&h16, C, HW, SD_DTYPE_F16, SD_CONV_ONEDNN);
        v16.route = 1;
        h32.route = h16.route = 2;
        variant *vs[6] = {&vg, &vw, &v16, &h32, &h16};
        int n = host ? 5 : 3;
        double flops = 2.0 * C * C * 9.0 * HW * HW;
#ifdef SDFLOW_HAVE_OPENBLAS
        blas_conv_setup(&vb, C, HW);
        vs[n++] = &vb;
#else
        memset(&vb, 0, sizeof vb);
        vb.best = INFINITY;
#endif
        if (!host)
            h32.best = h16.best = INFINITY;
        time_interleaved(vs, n);
        printf("  %4d @ %3dx%-3d                    %9.1f %9.1f %9.1f %13.1f %6.1f %13.1f %20.0f%%\n", C, HW, HW,
               flops / vg.best * 1e-9, flops / vw.best * 1e-9, flops / v16.best * 1e-9, flops / h32.best * 1e-9,
               flops / h16.best * 1e-9, flops / vb.best * 1e-9, 100 * v16.best / h16.best);
        variant_free(&vb);
        variant_free(&vg);
        variant_free(&vw);
        variant_free(&v16);
        variant_free(&h32);
        variant_free(&h16);
        fflush(stdout);
    }
    printf("  (Winograd figures count the direct convolution's flops; auto f16: the OpenCL kernels' choice)\n");
}

/* flops / seconds in GF/s as text (one of four rotating buffers, so one printf can take several). */
static const char *gflops(double flops, double seconds)
{
    static char buf[4][16];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%.1f", flops / seconds * 1e-9);
    return b;
}

/* ---- attention: q [1, Nq, H*D], k/v [1, Nk, H*D], fp32 and bf16 precision, against this library's GEMM ---- */

static void run_attn(variant *v)
{
    sd_dtensor *y = NULL;
    if (sd_op_attention(cl, v->a, v->b, v->c, v->heads, NULL, &y))
        die("attention");
    finish();
    sd_dtensor_free(y);
}

/* run_attn on the OpenCL kernel (kernels/attention.cl) where sd_cl_host_fp32 would take the fp32
 * host loop (runtime-opencl/attn_f32.c). */
static void run_attn_opencl(variant *v)
{
    bool host = cl->host_fp32;
    cl->host_fp32 = false;
    run_attn(v);
    cl->host_fp32 = host;
}

/* run_attn in the bf16 precision (runtime-opencl/attn_bf16.c where the CPU has AVX512-BF16). */
static void run_attn_bf16(variant *v)
{
    if (sd_context_set_precision(cl->ctx, "bf16"))
        die("precision bf16");
    run_attn(v);
    sd_context_set_precision(cl->ctx, "fp32");
}

static void bench_attn(void)
{
    /* SD1.5 self/cross at 64x64, 32x32 and 16x16 latents, SDXL's 64-dim heads, FLUX's 4096 + 512
     * tokens (4 of its 24 heads, to keep the run short; per-head cost is what counts), the VAE's
     * single 512-dim head at 64x64. bench/attn_peer.py prints PyTorch's figures on the same shapes. */
    static const int shapes[][4] = {{4096, 4096, 8, 40}, {4096, 77, 8, 40},    {1024, 1024, 8, 80},
                                    {1024, 77, 8, 80},   {256, 256, 8, 160},   {4096, 4096, 10, 64},
                                    {4608, 4608, 4, 128}, {4096, 4096, 1, 512}};
#ifdef SDFLOW_HAVE_DNNL
    bool bf16 = true;
#else
    bool bf16 = false;
#endif
    bool host = sd_cl_host_fp32(cl);
    printf("\nattention Nq x Nk, heads x dim   fp32 GF/s (OpenCL   host)   bf16 GF/s   GEMM GF/s (linear "
           "4096x320x1280 f32)\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int Nq = shapes[i][0], Nk = shapes[i][1], H = shapes[i][2], D = shapes[i][3];
        int64_t qs[] = {1, Nq, (int64_t)H * D}, ks[] = {1, Nk, (int64_t)H * D};
        variant va = {.run = run_attn_opencl, .heads = H}, vh = {.run = run_attn, .heads = H};
        variant vb = {.run = run_attn_bf16, .heads = H}, vg;
        va.a = vh.a = vb.a = upload(SD_DTYPE_F32, 3, qs, 5);
        va.b = vh.b = vb.b = upload(SD_DTYPE_F32, 3, ks, 6);
        va.c = vh.c = vb.c = upload(SD_DTYPE_F32, 3, ks, 7);
        linear_setup(&vg, 4096, 320, 1280, SD_DTYPE_F32);
        variant *vs[4] = {&vg, &va}, **at = vs + 2;
        if (host)
            *at++ = &vh;
        if (bf16)
            *at++ = &vb;
        time_interleaved(vs, (int)(at - vs));
        double flops = 4.0 * H * (double)Nq * Nk * D; /* QK^T and PV */
        printf("  %5d x %4d, %2d x %-3d            %9.1f %7s   %9s   %10.1f\n", Nq, Nk, H, D, flops / va.best * 1e-9,
               host ? gflops(flops, vh.best) : "n/a", bf16 ? gflops(flops, vb.best) : "n/a",
               2.0 * 4096 * 320 * 1280 / vg.best * 1e-9);
        variant_free(&va);
        variant_free(&vg);
        fflush(stdout);
    }
}

/* ---- kept weight forms: the same ops with plain and constant (sd_dtensor_set_constant) f16 weights ---- */

static void bench_kept(void)
{
    static const int lin[][3] = {{4096, 320, 320}, {1024, 640, 2560}, {256, 1280, 1280},
                                 {64, 1280, 10240}, {77, 768, 320}, {2, 1280, 1280}};
    sd_cl_set_keep_limit(cl, SIZE_MAX);
    printf("\nf16 weights packed per call vs kept   GF/s: per call     kept   speedup\n");
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
        int M = lin[i][0], K = lin[i][1], N = lin[i][2];
        variant vp, vk;
        linear_setup(&vp, M, K, N, SD_DTYPE_F16);
        linear_setup(&vk, M, K, N, SD_DTYPE_F16);
        if (sd_dtensor_set_constant(vk.b))
            die("set_constant");
        variant *vs[] = {&vp, &vk};
        time_interleaved(vs, 2);
        double flops = 2.0 * M * K * N;
        printf("  linear %5d x %4d x %5d                %9.1f %8.1f %8.2fx\n", M, K, N, flops / vp.best * 1e-9,
               flops / vk.best * 1e-9, vp.best / vk.best);
        variant_free(&vp);
        variant_free(&vk);
        fflush(stdout);
    }
    static const int conv[][2] = {{320, 64}, {512, 64}, {640, 32}, {1280, 16}};
    for (size_t i = 0; i < sizeof conv / sizeof conv[0]; i++) {
        int C = conv[i][0], HW = conv[i][1];
        variant vp, vk;
        conv_setup(&vp, C, HW, SD_DTYPE_F16, SD_CONV_WINOGRAD);
        conv_setup(&vk, C, HW, SD_DTYPE_F16, SD_CONV_WINOGRAD);
        if (sd_dtensor_set_constant(vk.b))
            die("set_constant");
        variant *vs[] = {&vp, &vk};
        time_interleaved(vs, 2);
        double flops = 2.0 * C * C * 9.0 * HW * HW;
        printf("  winograd 3x3 %4d @ %3dx%-3d             %9.1f %8.1f %8.2fx\n", C, HW, HW, flops / vp.best * 1e-9,
               flops / vk.best * 1e-9, vp.best / vk.best);
        variant_free(&vp);
        variant_free(&vk);
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
        else if (!strcmp(argv[i], "--cpu"))
            cpu_time = true;
        else {
            fprintf(stderr, "usage: bench_ops [--reps N] [--only gemm|conv|attn|kept|quant|int8] [--cpu]\n");
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "bench_ops: %s\n", ctx ? sd_context_errmsg(ctx) : "out of memory");
        return 1;
    }
    printf("device: %s (%s), best of %d interleaved runs each%s\n", cl->device_name, cl->driver_version, reps,
           cpu_time ? " by CPU time (GF/s: GFLOP per CPU-second)" : "");
#ifdef SDFLOW_HAVE_OPENBLAS
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("peer: %s, OPENBLAS_CORETYPE=%s\n", openblas_get_config(), core ? core : "(unset)");
#endif
    if (!only || !strcmp(only, "gemm"))
        bench_gemm();
    if (!only || !strcmp(only, "conv"))
        bench_conv();
    if (!only || !strcmp(only, "attn"))
        bench_attn();
    if (!only || !strcmp(only, "kept"))
        bench_kept();
    if (!only || !strcmp(only, "quant"))
        bench_quant();
    if (!only || !strcmp(only, "quant") || !strcmp(only, "int8"))
        bench_quant_routes();
    sd_context_free(ctx);
    return 0;
}
