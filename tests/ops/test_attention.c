/* Fused attention against the plain-C reference softmax(Q K^T / sqrt(D) + mask) V.
 *
 * Tolerance: |got - want| <= ATOL + RTOL |want|, ATOL = 1e-4 and RTOL = 1e-4, with q, k, v in
 * [-1, 1]: the output is a convex combination of v rows; fp32 dot products over D <= 160, the
 * kernel's 2^x polynomial (relative error < 2e-7) and fp32 running sums over up to 16384 keys
 * stay well inside that. Long sequences (4096, 16384 keys) are checked on a subset of query rows
 * so the double-precision reference stays fast.
 *
 * The bf16 precision (runtime-opencl/attn_bf16.c on CPUs with AVX512-BF16) is checked against
 * the same reference fed bf16-rounded q, k and v. Its scores are exact bf16 products summed in
 * fp32, so what is left is the rounding of the probabilities to bf16 for P V (relative error at
 * most 2^-8 each, and l sums the unrounded ones): the output moves by at most 2^-8 max|v| =
 * 0.0039 (v in [-1, 1]); ATOL_BF16 = 0.0041 adds the fp32 bound above. On a CPU without
 * AVX512-BF16 the bf16 precision must give the fp32 kernel's result bit for bit.
 *
 * fp32 runs on two routes: the OpenCL kernel (kernels/attention.cl) and, where sd_cl_host_fp32
 * allows host routes, the host loop of runtime-opencl/attn_f32.c. Odd shapes are checked on each
 * against the reference, and the host loop must give the kernel's bits (test_routes_bits). */
#include "test.h"
#include "support/ref_ops.h"
#include "runtime-opencl/attn_bf16.h"
#include "runtime-opencl/attn_f32.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-4
#define RTOL 1e-4
#define ATOL_BF16 0.0041

/* Rounds to bfloat16, nearest even (what the CPU's conversion does for normal values). */
static void round_bf16(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &p[i], 4);
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        memcpy(&p[i], &u, 4);
    }
}

static sd_context *ctx;
static sd_cl *cl;

typedef struct attn_case {
    int B, Nq, Nk, H, D;
    sd_dtype kvdt;
    int mask_kind; /* 0 none, 1 [Nq, Nk] random with some -inf, 2 [B, 1, Nk] key padding, 3 causal [Nq, Nk],
                      4 [1, Nk] random with some -inf (one row for every batch and query) */
    int rows;      /* query rows checked: 0 all, else this many spread over Nq */
} attn_case;

static sd_dtensor *upload(sd_dtype dt, int ndim, const int64_t *shape, const float *host)
{
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, dt, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    return t;
}

static float *make_mask(const attn_case *c, int *mb, int *mq, int64_t *shape, int *ndim)
{
    *mb = 1;
    *mq = c->Nq;
    *ndim = 2;
    shape[0] = c->Nq;
    shape[1] = c->Nk;
    if (c->mask_kind == 4) {
        *mq = 1;
        shape[0] = 1;
    }
    if (c->mask_kind == 2) {
        *mb = c->B;
        *mq = 1;
        *ndim = 3;
        shape[0] = c->B;
        shape[1] = 1;
        shape[2] = c->Nk;
    }
    size_t n = (size_t)*mb * *mq * c->Nk;
    float *m = malloc(n * sizeof *m);
    ref_random(m, n, 77, -2, 2);
    for (size_t i = 0; i < n; i++) {
        size_t row = i / (size_t)c->Nk, col = i % (size_t)c->Nk;
        if ((c->mask_kind == 1 || c->mask_kind == 4) && (i * 2654435761u) % 5 == 0)
            m[i] = -INFINITY;
        if (c->mask_kind == 2)
            m[i] = (int)col >= c->Nk - 3 - (int)row ? -INFINITY : 0.0f; /* last keys padded */
        if (c->mask_kind == 3)
            m[i] = col > row % (size_t)c->Nq ? -INFINITY : 0.0f;
    }
    if (c->mask_kind == 1 && c->Nq > 2)
        for (int j = 0; j < c->Nk; j++) /* row 1 fully masked: its output must be zeros */
            m[(size_t)1 * c->Nk + (size_t)j] = -INFINITY;
    return m;
}

/* In the bf16 precision: out compared with the fp32 precision's result of the same inputs
 * (differs when the bf16 loop runs, else identical); q, k, v rounded for the reference. */
static bool bf16_loop(void)
{
    return sd_attn_bf16_route() != SD_ATTN_BF16_NONE;
}

static void check_bf16_route(const attn_case *c, sd_dtensor *tq, sd_dtensor *tk, sd_dtensor *tv, sd_dtensor *tm,
                             const float *got, float *q, float *k, float *v, size_t nq, size_t nk)
{
    sd_dtensor *out32 = NULL;
    float *got32 = malloc(nq * 4);
    CHECK_EQ_INT(sd_context_set_precision(ctx, "fp32"), SD_OK);
    CHECK_EQ_INT(sd_op_attention(cl, tq, tk, tv, c->H, tm, &out32), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(ctx, "bf16"), SD_OK);
    if (out32 && got32 && sd_dtensor_download(out32, got32) == SD_OK) {
        bool same = memcmp(got, got32, nq * 4) == 0;
        CHECK_MSG(same != bf16_loop(), "bf16 output %s the fp32 kernel's (bf16 loop %s)",
                  same ? "equals" : "differs from", bf16_loop() ? "available" : "unavailable");
    }
    sd_dtensor_free(out32);
    free(got32);
    if (bf16_loop()) {
        round_bf16(q, nq);
        round_bf16(k, nk);
        round_bf16(v, nk);
    }
}

static double run_case(const attn_case *c, unsigned seed)
{
    size_t C = (size_t)c->H * c->D, nq = (size_t)c->B * c->Nq * C, nk = (size_t)c->B * c->Nk * C;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *got = malloc(nq * 4);
    float *want = calloc(nq, 4);
    ref_random(q, nq, seed, -1, 1);
    ref_random(k, nk, seed + 1, -1, 1);
    ref_random(v, nk, seed + 2, -1, 1);
    if (c->kvdt == SD_DTYPE_F16) {
        ref_round_f16(k, nk);
        ref_round_f16(v, nk);
    }
    int64_t qs[] = {c->B, c->Nq, (int64_t)C}, ks[] = {c->B, c->Nk, (int64_t)C}, ms[3];
    int mb = 1, mq = 1, mnd = 2;
    float *mask = c->mask_kind ? make_mask(c, &mb, &mq, ms, &mnd) : NULL;
    sd_dtensor *tq = upload(SD_DTYPE_F32, 3, qs, q), *tk = upload(c->kvdt, 3, ks, k);
    sd_dtensor *tv = upload(c->kvdt, 3, ks, v), *tm = mask ? upload(SD_DTYPE_F32, mnd, ms, mask) : NULL;
    sd_dtensor *out = NULL;
    double err = INFINITY;
    if (sd_op_attention(cl, tq, tk, tv, c->H, tm, &out) == SD_OK) {
        CHECK(sd_dtensor_same_shape(out, tq));
        CHECK_EQ_INT(sd_dtensor_download(out, got), SD_OK);
        bool bf16 = sd_context_bf16(ctx);
        if (bf16)
            check_bf16_route(c, tq, tk, tv, tm, got, q, k, v, nq, nk);
        double atol = bf16 && bf16_loop() ? ATOL_BF16 : ATOL;
        err = 0;
        int blocks = c->rows ? 4 : 1, per = c->rows ? c->rows / 4 : c->Nq;
        for (int blk = 0; blk < blocks; blk++) {
            /* spread: start, two in the middle, end */
            int q0 = blocks == 1 ? 0 : (int)((long)(c->Nq - per) * blk / (blocks - 1));
            ref_attention(q, k, v, mask, mb, mq, c->B, c->Nq, c->Nk, c->H, c->D, q0, q0 + per, want);
            for (int b = 0; b < c->B; b++) {
                size_t off = ((size_t)b * c->Nq + (size_t)q0) * C;
                double e = ref_max_err(got + off, want + off, (size_t)per * C, atol, RTOL);
                if (e > err)
                    err = e;
            }
        }
        if (c->mask_kind == 1 && c->Nq > 2 && (!c->rows)) {
            bool zeros = true;
            for (size_t i = 0; i < C; i++)
                zeros = zeros && got[C + i] == 0.0f;
            CHECK_MSG(zeros, "fully masked query row is not zero");
        }
    } else {
        CHECK_MSG(0, "sd_op_attention: %s", sd_context_errmsg(ctx));
    }
    sd_dtensor_free(out);
    sd_dtensor_free(tq);
    sd_dtensor_free(tk);
    sd_dtensor_free(tv);
    sd_dtensor_free(tm);
    free(q);
    free(k);
    free(v);
    free(got);
    free(want);
    free(mask);
    return err;
}

static void check_cases(const attn_case *cases, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        const attn_case *c = &cases[i];
        double e = run_case(c, seed + 11 * (unsigned)i);
        CHECK_MSG(e <= 1.0, "case %zu: B%d Nq%d Nk%d H%d D%d kv %s mask %d: error ratio %g", i, c->B, c->Nq, c->Nk,
                  c->H, c->D, sd_dtype_name(c->kvdt), c->mask_kind, e);
    }
}

#define F32 SD_DTYPE_F32
#define F16 SD_DTYPE_F16

static void test_head_dims(void)
{
    /* Every head-dim path (one program per head dim, so the list is kept short): scalar tail
     * only (1), one float8 (8), float8 + tail (13), 32 + 8 (40), 48 + 16 (64), 48 + 32 (80),
     * 2 x 48 + tail (100), 3 x 48 + 16 (160), 10 x 48 + 32 (512, the VAE). */
    static const attn_case cases[] = {
        {2, 19, 70, 3, 8, F32, 0, 0},   {1, 21, 33, 2, 13, F32, 0, 0},  {2, 37, 45, 5, 40, F32, 0, 0},
        {1, 33, 31, 2, 64, F32, 0, 0},  {1, 25, 90, 2, 80, F32, 0, 0},  {1, 11, 50, 1, 100, F32, 0, 0},
        {1, 15, 47, 2, 160, F32, 0, 0}, {1, 10, 20, 1, 1, F32, 0, 0},   {1, 21, 40, 1, 512, F32, 0, 0},
    };
    check_cases(cases, sizeof cases / sizeof cases[0], 500);
}

static void test_shapes(void)
{
    static const attn_case cases[] = {
        {1, 1, 1, 1, 8, F32, 0, 0},      /* one query, one key */
        {1, 1, 77, 8, 40, F32, 0, 0},    /* one query, text keys */
        {2, 300, 77, 8, 40, F32, 0, 0},  /* SD1.5 cross-attention */
        {1, 50, 77, 20, 64, F32, 0, 0},  /* 20 heads (SDXL) */
        {1, 64, 64, 8, 40, F16, 0, 0},   /* f16 K/V */
        {1, 33, 100, 5, 40, F16, 0, 0},
    };
    check_cases(cases, sizeof cases / sizeof cases[0], 600);
}

static void test_masks(void)
{
    static const attn_case cases[] = {
        {2, 23, 41, 3, 13, F32, 1, 0},  /* random additive mask with -inf, one fully masked row */
        {3, 20, 39, 2, 40, F32, 2, 0},  /* per-batch key padding [B, 1, Nk] */
        {1, 77, 77, 12, 64, F32, 3, 0}, /* causal (CLIP text encoder) */
    };
    check_cases(cases, sizeof cases / sizeof cases[0], 700);
}

static void test_4096_tokens(void)
{
    static const attn_case cases[] = {{1, 4096, 4096, 8, 40, F32, 0, 64}};
    check_cases(cases, 1, 800);
}

static void test_beyond_max_alloc(void)
{
    /* Enough heads at 16384 x 16384 that the unfused score matrix (H * Nq * Nk floats) would
     * exceed the device's largest allocation; the fused op still runs, in bounded memory. */
    int N = 16384, D = 8;
    double per_head = 4.0 * N * N;
    int H = (int)((double)cl->max_alloc / per_head) + 1;
    CHECK(per_head * H > (double)cl->max_alloc);
    size_t peak_before = cl->stats.peak_bytes;
    attn_case c = {1, N, N, H, D, F32, 0, 8};
    double e = run_case(&c, 900);
    CHECK_MSG(e <= 1.0, "16384 tokens, %d heads: error ratio %g", H, e);
    /* q, k, v, out and packed K: a few MB, far below the score matrix. */
    size_t tensors = 5 * (size_t)N * H * D * 4;
    CHECK_MSG(cl->stats.peak_bytes <= peak_before + 2 * tensors + ((size_t)16 << 20),
              "peak device memory %zu bytes", cl->stats.peak_bytes);
}

/* Shapes that hit the host loop's edges: query rows not a multiple of its register block (8),
 * task step (32, 16 or 8 by head dim) or scheduled chunk (64); keys not a multiple of 32, up to
 * and past the all-heads schedule (256 keys); odd head dims on each step size; both mask
 * broadcasts and neither; f16 K/V; one key. */
static const attn_case odd[] = {
    {2, 150, 300, 3, 33, F32, 1, 0}, {3, 70, 45, 2, 129, F16, 2, 0}, {2, 41, 97, 1, 257, F32, 4, 0},
    {1, 9, 5, 4, 1, F16, 3, 0},      {1, 100, 1, 2, 511, F32, 0, 0}, {2, 65, 77, 8, 40, F16, 2, 0},
    {1, 33, 257, 2, 16, F32, 4, 0},  {1, 130, 256, 3, 7, F16, 1, 0}, {2, 17, 31, 5, 80, F32, 4, 0},
};

/* The odd cases against the reference on the OpenCL kernel and, where this CPU allows host
 * routes, on the host loop. */
static void test_fp32_routes(void)
{
    bool host = cl->host_fp32;
    printf("fp32 attention host loop on this CPU: %s\n", host && sd_attn_f32_available() ? "yes" : "no");
    for (int route = 0; route < (host ? 2 : 1); route++) {
        cl->host_fp32 = route == 1;
        check_cases(odd, sizeof odd / sizeof odd[0], 1100);
    }
    cl->host_fp32 = host;
}

/* The fp32 output of case ac (q, k = v random, the case's mask) on `c`'s route; NULL on failure. */
static float *route_output(sd_cl *c, const attn_case *ac)
{
    size_t C = (size_t)ac->H * ac->D, nq = (size_t)ac->B * ac->Nq * C, nk = (size_t)ac->B * ac->Nk * C;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *got = malloc(nq * 4);
    int64_t qs[] = {ac->B, ac->Nq, (int64_t)C}, ks[] = {ac->B, ac->Nk, (int64_t)C}, ms[3];
    int mb, mq, mnd;
    float *mask = ac->mask_kind ? make_mask(ac, &mb, &mq, ms, &mnd) : NULL;
    ref_random(q, nq, 31, -1, 1);
    ref_random(k, nk, 32, -1, 1);
    if (ac->kvdt == F16)
        ref_round_f16(k, nk);
    sd_cl *prior = cl;
    cl = c;
    sd_dtensor *tq = upload(F32, 3, qs, q), *tk = upload(ac->kvdt, 3, ks, k), *out = NULL;
    sd_dtensor *tm = mask ? upload(F32, mnd, ms, mask) : NULL;
    CHECK_EQ_INT(sd_op_attention(c, tq, tk, tk, ac->H, tm, &out), SD_OK);
    if (!out || sd_dtensor_download(out, got) != SD_OK) {
        free(got);
        got = NULL;
    }
    sd_dtensor_free(tq);
    sd_dtensor_free(tk);
    sd_dtensor_free(tm);
    sd_dtensor_free(out);
    cl = prior;
    free(q);
    free(k);
    free(mask);
    return got;
}

/* Whether the outputs of case ac on cl with host routes `a` and `b` are the same bits. */
static bool same_bits(const attn_case *ac, bool a, bool b)
{
    bool host = cl->host_fp32;
    cl->host_fp32 = a;
    float *x = route_output(cl, ac);
    cl->host_fp32 = b;
    float *y = route_output(cl, ac);
    cl->host_fp32 = host;
    bool same = x && y && memcmp(x, y, (size_t)ac->B * ac->Nq * ac->H * ac->D * 4) == 0;
    CHECK(x && y);
    free(x);
    free(y);
    return same;
}

/* SDFLOW_CPU_ROUTES=opencl turns host routes off (the OpenCL kernel, today's bits). The host
 * loop does the kernel's fp32 operations in the kernel's order (the same FMA chains over d and
 * over keys, 2^x polynomial, rescale vector, lane-wise sums and reduction tree; PoCL contracts
 * the mask's multiply-add as the loop's FMA does), so it gives the kernel's bits too. */
static void test_routes_bits(void)
{
    sd_context *ctx2 = NULL;
    sd_cl *cl2 = NULL;
    setenv("SDFLOW_CPU_ROUTES", "opencl", 1);
    CHECK_EQ_INT(sd_context_new(&ctx2), SD_OK);
    CHECK(ctx2 && sd_cl_get(ctx2, &cl2) == SD_OK);
    unsetenv("SDFLOW_CPU_ROUTES");
    CHECK(cl2 && !sd_cl_host_fp32(cl2));
    sd_context_free(ctx2);
    if (!cl->host_fp32 || !sd_attn_f32_available())
        return;
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        CHECK_MSG(same_bits(&odd[i], false, true), "odd case %zu: the host loop's bits differ from the kernel's", i);
    attn_case big = {1, 4096, 4096, 2, 40, F32, 0, 0};
    CHECK_MSG(same_bits(&big, false, true), "4096 tokens: the host loop's bits differ from the kernel's");
}

#ifdef SDFLOW_HAVE_DNNL
/* The bf16 precision on each route this CPU has (AMX, AVX512-BF16, and capped to none: the
 * fp32 kernel, bit for bit): every head-dim path of the loops (pairs: odd D; AMX: d padded to
 * 32; 16-column chunks: 1, 2, 3 and 3 + remainder), key blocks with a partial tail, every mask
 * kind, f16 K/V, more keys than one AMX key block (256) with a partial tail. */
static void bf16_cases(void)
{
    static const attn_case cases[] = {
        {2, 37, 77, 2, 40, F32, 0, 0},  {1, 21, 33, 2, 5, F16, 1, 0},   {1, 19, 70, 1, 1, F32, 0, 0},
        {2, 17, 45, 3, 64, F32, 2, 0},  {1, 25, 90, 2, 80, F16, 0, 0},  {1, 11, 50, 1, 128, F32, 0, 0},
        {1, 15, 47, 2, 160, F32, 3, 0}, {1, 21, 40, 1, 512, F32, 0, 0}, {1, 77, 77, 12, 64, F32, 3, 0},
        {1, 19, 300, 2, 40, F32, 1, 0}, {1, 4096, 4096, 8, 40, F16, 0, 64},
    };
    CHECK_EQ_INT(sd_context_set_precision(ctx, "bf16"), SD_OK);
    check_cases(cases, sizeof cases / sizeof cases[0], 1000);
    CHECK_EQ_INT(sd_context_set_precision(ctx, "fp32"), SD_OK);
}

static void test_bf16(void)
{
    static const sd_attn_bf16_isa routes[] = {SD_ATTN_BF16_AMX, SD_ATTN_BF16_AVX512, SD_ATTN_BF16_NONE};
    sd_attn_bf16_isa have = sd_attn_bf16_route();
    printf("bf16 attention route on this CPU: %s\n",
           have == SD_ATTN_BF16_AMX ? "AMX" : have == SD_ATTN_BF16_AVX512 ? "AVX512-BF16" : "none");
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i] > have)
            continue;
        sd_attn_bf16_isa prior = sd_attn_bf16_cap(routes[i]);
        bf16_cases();
        sd_attn_bf16_cap(prior);
    }
}

#endif

static void test_bad_inputs(void)
{
    int64_t qs[] = {1, 5, 12}, ks[] = {1, 7, 12}, k2[] = {1, 7, 10}, ms[] = {4, 7}, wide[] = {1, 5, 513};
    sd_dtensor *q = NULL, *k = NULL, *kb = NULL, *m = NULL, *out = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_dtensor_new(cl, F32, 3, qs, &q), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, F32, 3, ks, &k), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, F32, 3, k2, &kb), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, F32, 2, ms, &m), SD_OK);
    size_t live = cl->stats.live_bytes;
    CHECK_EQ_INT(sd_op_attention(cl, q, k, k, 5, NULL, &out), SD_ERR_INVALID); /* 12 % 5 != 0 */
    CHECK(out == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "attention: q [1, 5, 12] f32, k [1, 7, 12] f32, v [1, 7, 12] f32, 5 heads do not fit");
    CHECK_EQ_INT(sd_op_attention(cl, q, kb, kb, 2, NULL, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "k [1, 7, 10] f32");
    CHECK_EQ_INT(sd_op_attention(cl, q, k, k, 2, m, &out), SD_ERR_INVALID); /* mask rows 4, not 5 or 1 */
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "2 heads and the mask do not fit");
    sd_dtensor *qw = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, F32, 3, wide, &qw), SD_OK);
    live = cl->stats.live_bytes;
    CHECK_EQ_INT(sd_op_attention(cl, qw, qw, qw, 1, NULL, &out), SD_ERR_INVALID); /* head dim 513 */
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "q [1, 5, 513] f32");
    CHECK_EQ_INT(cl->stats.live_bytes, live);
    sd_dtensor_free(qw);
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(kb);
    sd_dtensor_free(m);
}

int main(void)
{
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "test_attention: %s\n", ctx ? sd_context_errmsg(ctx) : "no memory");
        return 1;
    }
    RUN(test_head_dims);
    RUN(test_shapes);
    RUN(test_masks);
    RUN(test_4096_tokens);
    RUN(test_beyond_max_alloc);
    RUN(test_bad_inputs);
    RUN(test_fp32_routes);
    RUN(test_routes_bits);
#ifdef SDFLOW_HAVE_DNNL
    RUN(test_bf16);
#endif
    sd_context_free(ctx);
    return test_summary("test_attention");
}
