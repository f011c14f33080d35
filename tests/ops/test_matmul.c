/* matmul / linear against the plain-C reference (tests/support/ref_ops.c) on odd shapes.
 *
 * Tolerance: |got - want| <= atol + rtol * |want| with atol = 2e-4, rtol = 1e-4 for inputs in
 * [-1, 1] and K up to 2000: fp32 accumulation in a different order than the double reference
 * drifts by about sqrt(K) * 2^-24 * |partial sums|, well below that. f16-stored operands are
 * compared against a reference fed the same f16-rounded values, so the same bound holds.
 * Every case runs on both fp32 routes where this device has the host route
 * (sd_cl_host_fp32: oneDNN's fp32 matmul) and on the OpenCL kernels. */
#include "test.h"
#include "support/ref_ops.h"
#include "runtime-opencl/dnnl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 2e-4
#define RTOL 1e-4

static sd_context *ctx;
static sd_cl *cl;

static sd_dtensor *make(sd_dtype dt, int ndim, const int64_t *shape, float *host)
{
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, dt, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    return t;
}

/* One batched matmul case; returns the error ratio (<= 1 passes). */
static double matmul_case_a(int batch, int b_batch, int M, int K, int N, bool ta, bool tb, bool with_bias,
                            sd_act act, float alpha, sd_dtype adt, sd_dtype bdt, unsigned seed)
{
    size_t na = (size_t)batch * M * K, nb = (size_t)b_batch * K * N, nc = (size_t)batch * M * N;
    float *a = malloc(na * 4), *b = malloc(nb * 4), *bias = malloc((size_t)N * 4);
    float *want = malloc(nc * 4), *got = malloc(nc * 4);
    ref_random(a, na, seed, -1, 1);
    ref_random(b, nb, seed + 1, -1, 1);
    ref_random(bias, (size_t)N, seed + 2, -1, 1);
    if (bdt == SD_DTYPE_F16)
        ref_round_f16(b, nb);
    if (adt == SD_DTYPE_F16)
        ref_round_f16(a, na);
    int64_t as[3] = {batch, ta ? K : M, ta ? M : K}, bs[3] = {b_batch, tb ? N : K, tb ? K : N}, cs[1] = {N};
    sd_dtensor *ta_ = make(adt, 3, as, a), *tb_ = make(bdt, 3, bs, b);
    sd_dtensor *tbias = with_bias ? make(SD_DTYPE_F32, 1, cs, bias) : NULL, *out = NULL;
    double err = INFINITY;
    if (sd_op_matmul(cl, ta_, ta, tb_, tb, tbias, act, alpha, &out) == SD_OK) {
        CHECK_EQ_INT(out->ndim, 3);
        CHECK(out->shape[0] == batch && out->shape[1] == M && out->shape[2] == N);
        CHECK_EQ_INT(sd_dtensor_download(out, got), SD_OK);
        ref_matmul(a, ta, b, tb, with_bias ? bias : NULL, act, alpha, batch, b_batch, M, K, N, want);
        err = ref_max_err(got, want, nc, ATOL, RTOL);
    } else {
        CHECK_MSG(0, "sd_op_matmul: %s", sd_context_errmsg(ctx));
    }
    sd_dtensor_free(out);
    sd_dtensor_free(ta_);
    sd_dtensor_free(tb_);
    sd_dtensor_free(tbias);
    free(a);
    free(b);
    free(bias);
    free(want);
    free(got);
    return err;
}

static double matmul_case(int batch, int b_batch, int M, int K, int N, bool ta, bool tb, bool with_bias,
                          sd_act act, float alpha, sd_dtype bdt, unsigned seed)
{
    return matmul_case_a(batch, b_batch, M, K, N, ta, tb, with_bias, act, alpha, SD_DTYPE_F32, bdt, seed);
}

static void test_matmul_transposes(void)
{
    for (int t = 0; t < 4; t++) {
        double e = matmul_case(3, 3, 37, 53, 71, t & 1, t & 2, false, SD_ACT_NONE, 1.0f, SD_DTYPE_F32, 10 + t);
        CHECK_MSG(e <= 1.0, "trans_a %d trans_b %d: error ratio %g", t & 1, !!(t & 2), e);
    }
}

static void test_matmul_bias_act_alpha(void)
{
    static const sd_act acts[] = {SD_ACT_NONE, SD_ACT_SILU, SD_ACT_GELU};
    for (int i = 0; i < 3; i++) {
        double e = matmul_case(2, 1, 45, 29, 33, false, true, true, acts[i], 0.37f, SD_DTYPE_F32, 20 + i);
        CHECK_MSG(e <= 1.0, "act %d: error ratio %g", i, e);
    }
}

/* alpha without a bias (the host route scales the product), and with an f16 A (widened per call). */
static void test_matmul_alpha_f16_a(void)
{
    double e = matmul_case(2, 2, 33, 40, 17, true, false, false, SD_ACT_GELU, 0.125f, SD_DTYPE_F16, 25);
    CHECK_MSG(e <= 1.0, "alpha, no bias: error ratio %g", e);
    e = matmul_case_a(3, 1, 21, 35, 19, true, true, true, SD_ACT_SILU, 1.0f, SD_DTYPE_F16, SD_DTYPE_F16, 26);
    CHECK_MSG(e <= 1.0, "f16 A and B, transposed, shared B: error ratio %g", e);
}

static void test_matmul_f16_weights(void)
{
    double e = matmul_case(2, 2, 19, 67, 97, false, false, true, SD_ACT_SILU, 1.0f, SD_DTYPE_F16, 30);
    CHECK_MSG(e <= 1.0, "f16 B: error ratio %g", e);
    e = matmul_case(1, 1, 64, 96, 64, false, true, false, SD_ACT_NONE, 1.0f, SD_DTYPE_F16, 31);
    CHECK_MSG(e <= 1.0, "f16 B transposed, full tiles: error ratio %g", e);
}

static void test_matmul_edges(void)
{
    double e = matmul_case(1, 1, 1, 1, 1, false, false, true, SD_ACT_GELU, 1.0f, SD_DTYPE_F32, 40);
    CHECK_MSG(e <= 1.0, "1x1x1: error ratio %g", e);
    e = matmul_case(1, 1, 9, 2000, 33, false, true, false, SD_ACT_NONE, 1.0f, SD_DTYPE_F32, 41);
    CHECK_MSG(e <= 1.0, "K=2000: error ratio %g", e);
    e = matmul_case(1, 1, 257, 7, 31, true, false, false, SD_ACT_NONE, 1.0f, SD_DTYPE_F32, 42);
    CHECK_MSG(e <= 1.0, "tall: error ratio %g", e);
    /* Packed B above 2 MiB: work-items sweep M fastest. */
    e = matmul_case(2, 1, 21, 1100, 520, false, true, true, SD_ACT_SILU, 1.0f, SD_DTYPE_F16, 43);
    CHECK_MSG(e <= 1.0, "large B: error ratio %g", e);
}

static void test_linear(void)
{
    for (int dt = 0; dt < 2; dt++) {
        int B = 2, T = 45, K = 67, N = 33;
        size_t nx = (size_t)B * T * K, nw = (size_t)N * K, ny = (size_t)B * T * N;
        float *x = malloc(nx * 4), *w = malloc(nw * 4), *bias = malloc((size_t)N * 4);
        float *want = malloc(ny * 4), *got = malloc(ny * 4);
        ref_random(x, nx, 50, -1, 1);
        ref_random(w, nw, 51, -1, 1);
        ref_random(bias, (size_t)N, 52, -1, 1);
        if (dt == SD_DTYPE_F16)
            ref_round_f16(w, nw);
        int64_t xs[] = {B, T, K}, ws[] = {N, K}, bs[] = {N};
        sd_dtensor *tx = make(SD_DTYPE_F32, 3, xs, x), *tw = make((sd_dtype)dt, 2, ws, w);
        sd_dtensor *tb = make(SD_DTYPE_F32, 1, bs, bias), *y = NULL;
        CHECK_EQ_INT(sd_op_linear(cl, tx, tw, tb, SD_ACT_GELU, &y), SD_OK);
        if (y) {
            CHECK(y->ndim == 3 && y->shape[0] == B && y->shape[1] == T && y->shape[2] == N);
            CHECK_EQ_INT(sd_dtensor_download(y, got), SD_OK);
            /* linear = matmul with B = w^T */
            ref_matmul(x, false, w, true, bias, SD_ACT_GELU, 1.0f, 1, 1, B * T, K, N, want);
            double e = ref_max_err(got, want, ny, ATOL, RTOL);
            CHECK_MSG(e <= 1.0, "linear %s: error ratio %g", sd_dtype_name((sd_dtype)dt), e);
        }
        sd_dtensor_free(y);
        sd_dtensor_free(tx);
        sd_dtensor_free(tw);
        sd_dtensor_free(tb);
        free(x);
        free(w);
        free(bias);
        free(want);
        free(got);
    }
}

static void test_bad_shapes(void)
{
    int64_t as[] = {4, 5}, bs[] = {6, 7}, ws[] = {3, 6}, bias_s[] = {4};
    sd_dtensor *a = NULL, *b = NULL, *w = NULL, *bias = NULL, *out = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, as, &a), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, bs, &b), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, ws, &w), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, bias_s, &bias), SD_OK);
    size_t live = cl->stats.live_bytes;
    CHECK_EQ_INT(sd_op_matmul(cl, a, false, b, false, NULL, SD_ACT_NONE, 1.0f, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "matmul: incompatible shapes a [4, 5] f32, b [6, 7] f32");
    CHECK_EQ_INT(sd_op_linear(cl, a, w, NULL, SD_ACT_NONE, &out), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "linear: input [4, 5] f32 does not fit weight [3, 6] f32");
    CHECK_EQ_INT(sd_op_linear(cl, b, w, bias, SD_ACT_NONE, &out), SD_ERR_INVALID); /* bias [4] vs N 3 */
    CHECK_STR_EQ(sd_context_errmsg(ctx), "linear: input [6, 7] f32 does not fit weight [3, 6] f32 and bias");
    CHECK_EQ_INT(cl->stats.live_bytes, live); /* nothing allocated by the failed calls */
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    sd_dtensor_free(w);
    sd_dtensor_free(bias);
}

int main(void)
{
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "test_matmul: %s\n", ctx ? sd_context_errmsg(ctx) : "no memory");
        return 1;
    }
    sd_dnnl_f32_set_min_flops(0); /* the host routes take every size (odd small shapes) */
    bool host_able = sd_cl_host_fp32(cl);
    for (int route = 0; route < (host_able ? 2 : 1); route++) {
        cl->host_fp32 = route == 1;
        printf("route: %s\n", route ? "host (oneDNN fp32)" : "OpenCL kernels");
        RUN(test_matmul_transposes);
        RUN(test_matmul_bias_act_alpha);
        RUN(test_matmul_alpha_f16_a);
        RUN(test_matmul_f16_weights);
        RUN(test_matmul_edges);
        RUN(test_linear);
        RUN(test_bad_shapes);
        /* the engine exists exactly when the host route ran */
        CHECK_MSG((cl->dnnl != NULL) == (route == 1), "route %d: oneDNN engine %s", route, cl->dnnl ? "made" : "unused");
    }
    sd_context_free(ctx);
    return test_summary("test_matmul");
}
