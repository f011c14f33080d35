/* Kept forms of constant tensors (sd_dtensor_set_constant): linear, matmul (with at most
 * SD_GEMM_KEEP_MAX_ROWS rows of A) and Winograd conv2d compute a constant operand's packed /
 * transformed form once (stats.derived_builds), give
 * bit-identical results to the same op on a plain tensor, share the form with struct-copy views,
 * drop it when the tensor is written, and return its memory when the tensor is freed. */
#include "test.h"
#include "support/ref_ops.h"
#include "runtime-opencl/dnnl.h"
#include <stdlib.h>
#include <string.h>

#define KEEP_LIMIT ((size_t)64 << 20) /* the tests' limit (the runtime's default keeps nothing) */

static sd_context *ctx;
static sd_cl *cl;

static sd_dtensor *make(sd_dtype dt, int ndim, const int64_t *shape, unsigned seed)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *host = malloc(n * sizeof *host);
    ref_random(host, n, seed, -1, 1);
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, dt, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    free(host);
    return t;
}

/* True when a and b hold the same values bit for bit; frees both. */
static bool same_and_free(sd_dtensor *a, sd_dtensor *b)
{
    bool same = false;
    if (a && b && a->numel == b->numel) {
        float *ha = malloc(a->numel * 4), *hb = malloc(b->numel * 4);
        same = sd_dtensor_download(a, ha) == SD_OK && sd_dtensor_download(b, hb) == SD_OK &&
               memcmp(ha, hb, a->numel * 4) == 0;
        free(ha);
        free(hb);
    }
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    return same;
}

static void test_linear_kept_once(void)
{
    size_t live0 = cl->stats.live_bytes;
    int64_t xs[] = {3, 37, 70}, ws[] = {45, 70}, bs[] = {45};
    sd_dtensor *x = make(SD_DTYPE_F32, 3, xs, 1), *w = make(SD_DTYPE_F16, 2, ws, 2);
    sd_dtensor *plain = make(SD_DTYPE_F16, 2, ws, 2), *bias = make(SD_DTYPE_F32, 1, bs, 3);
    sd_dtensor *y1 = NULL, *y2 = NULL, *ref = NULL;
    size_t bytes0 = cl->stats.derived_bytes;
    int builds0 = cl->stats.derived_builds;
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, plain, bias, SD_ACT_NONE, &ref), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0); /* plain weights keep nothing */
    CHECK_EQ_INT(sd_op_linear(cl, x, w, bias, SD_ACT_NONE, &y1), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1);
    /* 45 columns padded to 2 panels of 32, 70 deep, f32. */
    CHECK(cl->stats.derived_bytes - bytes0 >= (size_t)64 * 70 * 4);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, bias, SD_ACT_NONE, &y2), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1); /* reused */
    CHECK(same_and_free(y2, ref));
    CHECK_EQ_INT(sd_op_linear(cl, x, plain, bias, SD_ACT_NONE, &ref), SD_OK);
    CHECK(same_and_free(y1, ref));

    /* A struct-copy view (as ml/diffusion/unet.c makes for 1x1 kernels) shares the kept form. */
    sd_dtensor view = *w;
    view.ndim = 2;
    CHECK_EQ_INT(sd_op_linear(cl, x, &view, bias, SD_ACT_NONE, &y1), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1);
    sd_dtensor_free(y1);

    /* Writing the tensor drops the kept form; the next call packs the new values. */
    size_t nw = 45 * 70;
    float *host = malloc(nw * 4);
    ref_random(host, nw, 9, -1, 1);
    CHECK_EQ_INT(sd_dtensor_upload(w, host), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    CHECK_EQ_INT(sd_dtensor_upload(plain, host), SD_OK);
    free(host);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, bias, SD_ACT_NONE, &y1), SD_OK);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 2);
    CHECK_EQ_INT(sd_op_linear(cl, x, plain, bias, SD_ACT_NONE, &ref), SD_OK);
    CHECK(same_and_free(y1, ref));

    /* Freeing the weight returns its kept form. */
    sd_dtensor_free(w);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_dtensor_free(plain);
    sd_dtensor_free(x);
    sd_dtensor_free(bias);
    CHECK_EQ_INT(cl->stats.live_bytes, live0);
}

static void test_linear_many_rows_not_kept(void)
{
    /* 300 rows > SD_GEMM_KEEP_MAX_ROWS: packed per call, nothing kept. */
    int64_t xs[] = {300, 40}, ws[] = {20, 40};
    sd_dtensor *x = make(SD_DTYPE_F32, 2, xs, 10), *w = make(SD_DTYPE_F16, 2, ws, 11);
    sd_dtensor *plain = make(SD_DTYPE_F16, 2, ws, 11), *y = NULL, *ref = NULL;
    int builds0 = cl->stats.derived_builds;
    size_t bytes0 = cl->stats.derived_bytes;
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_NONE, &y), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, plain, NULL, SD_ACT_NONE, &ref), SD_OK);
    CHECK(same_and_free(y, ref));
    CHECK_EQ_INT(cl->stats.derived_builds, builds0);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_dtensor_free(x);
    sd_dtensor_free(w);
    sd_dtensor_free(plain);
}

static void test_keep_limit(void)
{
    /* A limit below one form's size keeps nothing; results stay the same. */
    int64_t xs[] = {10, 40}, ws[] = {20, 40};
    sd_dtensor *x = make(SD_DTYPE_F32, 2, xs, 12), *w = make(SD_DTYPE_F16, 2, ws, 13);
    sd_dtensor *plain = make(SD_DTYPE_F16, 2, ws, 13), *y = NULL, *ref = NULL;
    int builds0 = cl->stats.derived_builds;
    size_t bytes0 = cl->stats.derived_bytes;
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    sd_cl_set_keep_limit(cl, bytes0 + 32 * 40 * 4 - 1);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_NONE, &y), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, plain, NULL, SD_ACT_NONE, &ref), SD_OK);
    CHECK(same_and_free(y, ref));
    CHECK_EQ_INT(cl->stats.derived_builds, builds0);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_cl_set_keep_limit(cl, KEEP_LIMIT);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_NONE, &y), SD_OK);
    sd_dtensor_free(y);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1);
    sd_dtensor_free(x);
    sd_dtensor_free(w);
    sd_dtensor_free(plain);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
}

static void test_matmul_kept_per_layout(void)
{
    int64_t as[] = {2, 33, 40}, bs[] = {40, 50};
    sd_dtensor *a = make(SD_DTYPE_F32, 3, as, 4), *b = make(SD_DTYPE_F32, 2, bs, 5);
    sd_dtensor *plain = make(SD_DTYPE_F32, 2, bs, 5), *o1 = NULL, *o2 = NULL, *ref = NULL;
    int builds0 = cl->stats.derived_builds;
    size_t bytes0 = cl->stats.derived_bytes;
    CHECK_EQ_INT(sd_dtensor_set_constant(b), SD_OK);
    /* b [40, 50] as B (K 40, N 50), then transposed (K 50, N 40): two layouts, two forms. */
    for (int rep = 0; rep < 2; rep++) {
        CHECK_EQ_INT(sd_op_matmul(cl, a, false, b, false, NULL, SD_ACT_NONE, 1.0f, &o1), SD_OK);
        CHECK_EQ_INT(sd_op_matmul(cl, a, false, plain, false, NULL, SD_ACT_NONE, 1.0f, &ref), SD_OK);
        CHECK(same_and_free(o1, ref));
        int64_t a2s[] = {2, 33, 50};
        sd_dtensor *a2 = make(SD_DTYPE_F32, 3, a2s, 6);
        CHECK_EQ_INT(sd_op_matmul(cl, a2, false, b, true, NULL, SD_ACT_NONE, 1.0f, &o2), SD_OK);
        CHECK_EQ_INT(sd_op_matmul(cl, a2, false, plain, true, NULL, SD_ACT_NONE, 1.0f, &ref), SD_OK);
        CHECK(same_and_free(o2, ref));
        sd_dtensor_free(a2);
        CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 2);
    }
    sd_dtensor_free(b);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_dtensor_free(plain);
    sd_dtensor_free(a);
}

static void test_winograd_kept_once(void)
{
    int64_t xs[] = {1, 6, 13, 11}, ws[] = {7, 6, 3, 3};
    sd_dtensor *x = make(SD_DTYPE_F32, 4, xs, 7), *w = make(SD_DTYPE_F16, 4, ws, 8);
    sd_dtensor *plain = make(SD_DTYPE_F16, 4, ws, 8), *y = NULL, *ref = NULL;
    sd_conv2d_params p = {1, 1, 1, 1, SD_ACT_NONE, SD_CONV_WINOGRAD};
    int builds0 = cl->stats.derived_builds;
    size_t bytes0 = cl->stats.derived_bytes;
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    for (int rep = 0; rep < 2; rep++) {
        CHECK_EQ_INT(sd_op_conv2d(cl, x, w, NULL, &p, &y), SD_OK);
        CHECK_EQ_INT(sd_op_conv2d(cl, x, plain, NULL, &p, &ref), SD_OK);
        CHECK(same_and_free(y, ref));
        CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1);
        CHECK(cl->stats.derived_bytes - bytes0 >= (size_t)36 * 7 * 6 * 4); /* U [36, O, C] f32 */
    }
    /* The GEMM path reads the kernel in place: nothing more is kept. */
    p.algo = SD_CONV_GEMM;
    CHECK_EQ_INT(sd_op_conv2d(cl, x, w, NULL, &p, &y), SD_OK);
    sd_dtensor_free(y);
    CHECK_EQ_INT(cl->stats.derived_builds, builds0 + 1);
    sd_dtensor_free(w);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_dtensor_free(plain);
    sd_dtensor_free(x);
}

/* Leaves a free buffer of `bytes` in the runtime's pool. */
static void pool_offer(size_t bytes)
{
    cl_mem buf = NULL;
    size_t cap = 0;
    CHECK_EQ_INT(sd_cl_buffer_get(cl, bytes, "test buffer", &buf, &cap), SD_OK);
    sd_cl_buffer_release(cl, buf, cap);
}

/* A kept form holds a buffer of its own size, not a larger free one from the pool (which a
 * transient buffer may take): with a free buffer 1.75 times the form's size in the pool, the
 * packed linear weights, the Winograd transform and the bf16 product form each keep their size. */
static void test_kept_forms_exact_size(void)
{
    int64_t xs[] = {1, 5, 70}, ws[] = {45, 70}, cx[] = {1, 6, 13, 11}, cw[] = {7, 6, 3, 3};
    sd_dtensor *x = make(SD_DTYPE_F32, 3, xs, 1), *w = make(SD_DTYPE_F16, 2, ws, 2);
    sd_dtensor *xc = make(SD_DTYPE_F32, 4, cx, 3), *wc = make(SD_DTYPE_F16, 4, cw, 4), *y = NULL;
    sd_conv2d_params p = {1, 1, 1, 1, SD_ACT_NONE, SD_CONV_WINOGRAD};
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    CHECK_EQ_INT(sd_dtensor_set_constant(wc), SD_OK);
    size_t packed = (size_t)64 * 70 * 4, wino = ((size_t)36 * 7 * 6 * 4 + 255) / 256 * 256; /* the pool's rounding */
    size_t bytes0 = cl->stats.derived_bytes;
    pool_offer(packed * 7 / 4);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_NONE, &y), SD_OK);
    sd_dtensor_free(y);
    CHECK_EQ_INT(cl->stats.derived_bytes - bytes0, packed);
    pool_offer(wino * 7 / 4);
    CHECK_EQ_INT(sd_op_conv2d(cl, xc, wc, NULL, &p, &y), SD_OK);
    sd_dtensor_free(y);
    CHECK_EQ_INT(cl->stats.derived_bytes - bytes0, packed + wino);
    sd_dtensor_free(w);
    sd_dtensor_free(wc);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    if (sd_dnnl_available() && (cl->type & CL_DEVICE_TYPE_CPU)) {
        /* bf16: the product's form is at most the bf16 weight padded by oneDNN's blocking. */
        int64_t bw[] = {512, 256}, bx[] = {1, 5, 256};
        sd_dtensor *wb = make(SD_DTYPE_F16, 2, bw, 5), *xb = make(SD_DTYPE_F32, 3, bx, 6);
        CHECK_EQ_INT(sd_dtensor_set_constant(wb), SD_OK);
        size_t bf16 = (size_t)512 * 256 * 2;
        pool_offer(bf16 * 7 / 4);
        CHECK_EQ_INT(sd_context_set_precision(ctx, "bf16"), SD_OK);
        CHECK_EQ_INT(sd_op_linear(cl, xb, wb, NULL, SD_ACT_NONE, &y), SD_OK);
        CHECK_EQ_INT(sd_context_set_precision(ctx, "fp32"), SD_OK);
        sd_dtensor_free(y);
        CHECK(cl->stats.derived_bytes - bytes0 >= bf16 && cl->stats.derived_bytes - bytes0 < bf16 * 5 / 4);
        sd_dtensor_free(wb);
        sd_dtensor_free(xb);
    }
    sd_dtensor_free(x);
    sd_dtensor_free(xc);
}

/* The fp32 host routes (sd_cl_host_fp32: oneDNN) keep nothing with constant f16 weights (they
 * are widened per call), and give the same bits on every call. */
static void test_host_routes_keep_nothing(void)
{
    int64_t xs[] = {2, 37, 70}, ws[] = {45, 70}, cx[] = {1, 6, 13, 11}, cw[] = {7, 6, 3, 3};
    sd_dtensor *x = make(SD_DTYPE_F32, 3, xs, 1), *w = make(SD_DTYPE_F16, 2, ws, 2);
    sd_dtensor *xc = make(SD_DTYPE_F32, 4, cx, 3), *wc = make(SD_DTYPE_F16, 4, cw, 4), *y1 = NULL, *y2 = NULL;
    sd_conv2d_params p = {1, 1, 1, 1, SD_ACT_SILU, SD_CONV_ONEDNN};
    CHECK_EQ_INT(sd_dtensor_set_constant(w), SD_OK);
    CHECK_EQ_INT(sd_dtensor_set_constant(wc), SD_OK);
    int builds0 = cl->stats.derived_builds;
    size_t bytes0 = cl->stats.derived_bytes;
    cl->host_fp32 = true;
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_GELU, &y1), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, w, NULL, SD_ACT_GELU, &y2), SD_OK);
    CHECK(same_and_free(y1, y2));
    CHECK_EQ_INT(sd_op_conv2d(cl, xc, wc, NULL, &p, &y1), SD_OK);
    CHECK_EQ_INT(sd_op_conv2d(cl, xc, wc, NULL, &p, &y2), SD_OK);
    CHECK(same_and_free(y1, y2));
    cl->host_fp32 = false;
    CHECK_EQ_INT(cl->stats.derived_builds, builds0);
    CHECK_EQ_INT(cl->stats.derived_bytes, bytes0);
    sd_dtensor_free(x);
    sd_dtensor_free(w);
    sd_dtensor_free(xc);
    sd_dtensor_free(wc);
}

int main(void)
{
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "test_weight_cache: %s\n", ctx ? sd_context_errmsg(ctx) : "no memory");
        return 1;
    }
    CHECK_EQ_INT(cl->keep_limit, 0); /* nothing kept unless SDFLOW_PACKED_WEIGHTS or the API asks */
    cl->host_fp32 = false;           /* the OpenCL kernels' kept forms (the fp32 host routes keep none) */
    sd_cl_set_keep_limit(cl, KEEP_LIMIT);
    sd_dnnl_f32_set_min_flops(0); /* the host routes take every size (odd small shapes) */
    RUN(test_linear_kept_once);
    RUN(test_linear_many_rows_not_kept);
    RUN(test_keep_limit);
    RUN(test_matmul_kept_per_layout);
    RUN(test_winograd_kept_once);
    RUN(test_kept_forms_exact_size);
    if (sd_dnnl_available() && (cl->type & CL_DEVICE_TYPE_CPU))
        RUN(test_host_routes_keep_nothing);
    sd_context_free(ctx);
    return test_summary("test_weight_cache");
}
