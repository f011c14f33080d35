/* Basic ops (runtime-opencl/ops_basic.h) against the plain-C references in
 * tests/support/ref_basic.c on random data with odd shapes (sizes that are not multiples of the
 * kernels' 8-wide vectors or 64-element runs). Tolerances are stated at each check: fp32 kernels
 * against double references. */
#include "test.h"
#include "support/ops_check.h"
#include "support/ref_basic.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

static size_t numel(int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

/* Group norm of random data (offset + [-1, 1)) against the reference, both kernel variants (the
 * GPU one with local-memory reductions runs on any device) and, when affine, gamma/beta stored
 * as f32 and as f16 (the reference then uses the f16-rounded values). */
static void group_norm_case(int ndim, const int64_t *shape, int groups, bool affine, bool silu, float offset,
                            double tol)
{
    size_t n = numel(ndim, shape);
    int64_t c = shape[1], hw = (int64_t)(n / (size_t)shape[0] / (size_t)c);
    float *x = ops_random(n, offset - 1.0f, offset + 1.0f, 1);
    float *g = ops_random((size_t)c, 0.5f, 1.5f, 2), *b = ops_random((size_t)c, -0.5f, 0.5f, 3);
    float *g16 = malloc((size_t)c * sizeof *g16), *b16 = malloc((size_t)c * sizeof *b16);
    float *ref = malloc(n * sizeof *ref), *ref16 = malloc(n * sizeof *ref16);
    sd_dtensor *dx = ops_upload(x, ndim, shape), *dg = ops_upload(g, 1, &c), *db = ops_upload(b, 1, &c);
    sd_dtensor *dg16 = ops_upload_f16(g, 1, &c, g16), *db16 = ops_upload_f16(b, 1, &c, b16);
    ref_group_norm(x, shape[0], c, hw, groups, 1e-5f, affine ? g : NULL, affine ? b : NULL, silu, ref);
    ref_group_norm(x, shape[0], c, hw, groups, 1e-5f, g16, b16, silu, ref16);
    for (int variant = SD_VARIANT_CPU; variant <= SD_VARIANT_GPU; variant++)
        for (int f16 = 0; f16 <= (affine ? 1 : 0); f16++) {
            sd_dtensor *out = NULL;
            CHECK_EQ_INT(sd_op_group_norm_variant(ops_cl(), dx, groups, 1e-5f, affine ? (f16 ? dg16 : dg) : NULL,
                                                  affine ? (f16 ? db16 : db) : NULL, silu, (sd_op_variant)variant,
                                                  &out),
                         SD_OK);
            CHECK_MSG(ops_expect("group_norm", out, ndim, shape, f16 ? ref16 : ref, tol, tol),
                      "variant %s, weights %s", variant == SD_VARIANT_CPU ? "cpu" : "gpu", f16 ? "f16" : "f32");
            sd_dtensor_free(out);
        }
    sd_dtensor *all[] = {dx, dg, db, dg16, db16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sd_dtensor_free(all[i]);
    float *host[] = {x, g, b, g16, b16, ref, ref16};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
}

static void test_group_norm(void)
{
    /* Normalised values are O(1): 2e-5 absolute + relative covers fp32 summation over groups of
     * up to 10^4 values. */
    group_norm_case(4, SHAPE(2, 64, 7, 9), 32, true, false, 0.0f, 2e-5);
    group_norm_case(4, SHAPE(1, 96, 13, 11), 32, true, true, 0.0f, 2e-5);
    group_norm_case(4, SHAPE(1, 320, 33, 31), 32, false, false, 0.0f, 2e-5);
    group_norm_case(3, SHAPE(3, 32, 5), 8, true, true, 0.0f, 2e-5);
    group_norm_case(5, SHAPE(1, 64, 3, 5, 7), 32, true, false, 0.0f, 2e-5);
    group_norm_case(2, SHAPE(3, 96), 32, true, true, 0.0f, 2e-5); /* [N, C]: groups of 3 values */
    /* Mean 100, spread 1: the blockwise (Chan) variance stays accurate where a one-pass
     * sum-of-squares in fp32 would lose every digit. Input rounding is ~1e-5 of the spread. */
    group_norm_case(4, SHAPE(1, 64, 45, 47), 32, true, false, 100.0f, 1e-4);

    /* An empty batch is valid and gives an empty result. */
    sd_dtensor *empty = NULL, *eout = NULL;
    CHECK_EQ_INT(sd_dtensor_new(ops_cl(), SD_DTYPE_F32, 4, SHAPE(0, 32, 4, 4), &empty), SD_OK);
    CHECK_EQ_INT(sd_op_group_norm(ops_cl(), empty, 32, 1e-5f, NULL, NULL, true, &eout), SD_OK);
    CHECK(eout && eout->numel == 0 && eout->shape[1] == 32);
    sd_dtensor_free(eout);
    sd_dtensor_free(empty);

    sd_dtensor *x = ops_upload_random(0, 1, 5, 3, SHAPE(3, 10, 4)), *out = NULL;
    CHECK_EQ_INT(sd_op_group_norm(ops_cl(), x, 32, 1e-5f, NULL, NULL, false, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "group_norm: [3, 10, 4] f32 does not split into 32 groups");
    int64_t five = 5;
    sd_dtensor *g = ops_upload_random(0, 1, 6, 1, &five);
    CHECK_EQ_INT(sd_op_group_norm(ops_cl(), x, 2, 1e-5f, g, g, false, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "must have 10 elements");
    CHECK_EQ_INT(sd_op_group_norm(ops_cl(), x, 2, 1e-5f, g, NULL, false, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "gamma and beta must be given together");
    sd_dtensor_free(g);
    sd_dtensor_free(x);
}

static void test_layer_norm(void)
{
    /* Affine modes: 0 none, 1 f32 gamma/beta, 2 f16-stored gamma/beta (reference on the rounded
     * values). O(1) outputs, rows of up to 1283 values: 1e-5 absolute + relative. */
    const int64_t shapes[3][3] = {{3, 5, 77}, {2, 1, 1283}, {1, 7, 3}};
    for (int s = 0; s < 3; s++)
        for (int mode = 0; mode < 3; mode++) {
            const int64_t *shape = shapes[s];
            size_t n = numel(3, shape);
            int64_t d = shape[2];
            float *x = ops_random(n, -3.0f, 5.0f, 10 + s), *g = ops_random((size_t)d, 0.5f, 1.5f, 11);
            float *b = ops_random((size_t)d, -1.0f, 1.0f, 12), *ref = malloc(n * sizeof *ref);
            float *gr = malloc((size_t)d * sizeof *gr), *br = malloc((size_t)d * sizeof *br);
            sd_dtensor *dx = ops_upload(x, 3, shape), *dg = NULL, *db = NULL, *out = NULL;
            if (mode == 1) {
                dg = ops_upload(g, 1, &d);
                db = ops_upload(b, 1, &d);
                memcpy(gr, g, (size_t)d * sizeof *gr);
                memcpy(br, b, (size_t)d * sizeof *br);
            } else if (mode == 2) {
                dg = ops_upload_f16(g, 1, &d, gr);
                db = ops_upload_f16(b, 1, &d, br);
            }
            ref_layer_norm(x, (int64_t)(n / (size_t)d), d, 1e-5f, mode ? gr : NULL, mode ? br : NULL, ref);
            for (int variant = SD_VARIANT_CPU; variant <= SD_VARIANT_GPU; variant++) {
                CHECK_EQ_INT(sd_op_layer_norm_variant(ops_cl(), dx, 1e-5f, dg, db, (sd_op_variant)variant, &out),
                             SD_OK);
                CHECK_MSG(ops_expect("layer_norm", out, 3, shape, ref, 1e-5, 1e-5), "d %lld, affine mode %d, %s",
                          (long long)d, mode, variant == SD_VARIANT_CPU ? "cpu" : "gpu");
                sd_dtensor_free(out);
                out = NULL;
            }
            sd_dtensor_free(dx);
            sd_dtensor_free(dg);
            sd_dtensor_free(db);
            free(x);
            free(g);
            free(b);
            free(gr);
            free(br);
            free(ref);
        }
    /* Mixed dtypes are refused. */
    int64_t d = 4;
    float v[4] = {1, 2, 3, 4};
    sd_dtensor *x = ops_upload(v, 1, &d), *g = ops_upload(v, 1, &d), *b = ops_upload_f16(v, 1, &d, NULL), *out = NULL;
    CHECK_EQ_INT(sd_op_layer_norm(ops_cl(), x, 1e-5f, g, b, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "layer_norm: gamma and beta must have the same dtype");
    sd_dtensor_free(x);
    sd_dtensor_free(g);
    sd_dtensor_free(b);
}

/* RMS norm against a double-precision reference; rows of 1 to 1283 values (tails past the
 * 8-wide loop), O(1) outputs: 1e-5 absolute + relative. A wrong gamma is refused. */
static void test_rms_norm(void)
{
    const int64_t shapes[3][2] = {{5, 77}, {2, 1283}, {7, 3}};
    for (int s = 0; s < 3; s++) {
        const int64_t *shape = shapes[s];
        int64_t d = shape[1];
        size_t n = numel(2, shape);
        float *x = ops_random(n, -3.0f, 5.0f, 20 + s), *g = ops_random((size_t)d, 0.5f, 1.5f, 21);
        float *ref = malloc(n * sizeof *ref);
        for (int64_t r = 0; r < shape[0]; r++) {
            double ss = 0;
            for (int64_t i = 0; i < d; i++)
                ss += (double)x[r * d + i] * x[r * d + i];
            double inv = 1.0 / sqrt(ss / (double)d + 1e-6);
            for (int64_t i = 0; i < d; i++)
                ref[r * d + i] = (float)(x[r * d + i] * inv * g[i]);
        }
        sd_dtensor *dx = ops_upload(x, 2, shape), *dg = ops_upload(g, 1, &d), *out = NULL;
        CHECK_EQ_INT(sd_op_rms_norm(ops_cl(), dx, 1e-6f, dg, &out), SD_OK);
        CHECK_MSG(ops_expect("rms_norm", out, 2, shape, ref, 1e-5, 1e-5), "d %lld", (long long)d);
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        sd_dtensor_free(dg);
        free(x);
        free(g);
        free(ref);
    }
    int64_t d = 4, three = 3;
    float v[4] = {1, 2, 3, 4};
    sd_dtensor *x = ops_upload(v, 1, &d), *g = ops_upload(v, 1, &three), *out = NULL;
    CHECK_EQ_INT(sd_op_rms_norm(ops_cl(), x, 1e-6f, g, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "rms_norm: gamma");
    sd_dtensor_free(x);
    sd_dtensor_free(g);
}

static void test_softmax(void)
{
    const int64_t shapes[4][2] = {{7, 77}, {3, 1029}, {5, 1}, {2, 4099}};
    for (int s = 0; s < 4; s++) {
        size_t n = numel(2, shapes[s]);
        float *x = ops_random(n, -20.0f, 20.0f, 20 + s), *ref = malloc(n * sizeof *ref);
        if (s == 0) {
            for (int i = 0; i < 40; i++)
                x[77 + i] = -INFINITY; /* a masked run in row 1 */
            for (int i = 0; i < 77; i++)
                x[3 * 77 + i] = -INFINITY; /* row 3 fully masked: NaN, as torch */
        }
        ref_softmax(x, shapes[s][0], shapes[s][1], ref);
        sd_dtensor *dx = ops_upload(x, 2, shapes[s]);
        for (int variant = SD_VARIANT_CPU; variant <= SD_VARIANT_GPU; variant++) {
            sd_dtensor *out = NULL;
            CHECK_EQ_INT(sd_op_softmax_variant(ops_cl(), dx, (sd_op_variant)variant, &out), SD_OK);
            /* Probabilities in [0, 1]: 1e-6 absolute + 1e-5 relative (fp32 exp and sums). */
            CHECK_MSG(ops_expect("softmax", out, 2, shapes[s], ref, 1e-6, 1e-5), "%s",
                      variant == SD_VARIANT_CPU ? "cpu" : "gpu");
            if (s == 0) {
                float *got = out ? ops_download(out) : NULL;
                CHECK(got && isnan(got[3 * 77]) && isnan(ref[3 * 77]) && got[77] == 0.0f);
                free(got);
            }
            sd_dtensor_free(out);
        }
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
}

static void test_unary(void)
{
    const int64_t shape[3] = {3, 13, 61}; /* 2379 values: full 64-runs plus a 11-value tail */
    size_t n = numel(3, shape);
    float *x = ops_random(n, -8.0f, 8.0f, 30), *ref = malloc(n * sizeof *ref);
    static const char *const names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid"};
    for (int op = SD_UNARY_SILU; op <= SD_UNARY_SIGMOID; op++) {
        ref_unary((sd_unary)op, x, n, ref);
        sd_dtensor *dx = ops_upload(x, 3, shape), *out = NULL;
        CHECK_EQ_INT(sd_op_unary(ops_cl(), (sd_unary)op, dx, &out), SD_OK);
        /* fp32 exp/erf/tanh within a few ulp: 1e-6 absolute + 4e-6 relative. */
        CHECK_MSG(ops_expect(names[op], out, 3, shape, ref, 1e-6, 4e-6), "unary %s", names[op]);
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
    }
    sd_dtensor *dx = ops_upload(x, 3, shape), *out = NULL;
    CHECK_EQ_INT(sd_op_unary(ops_cl(), (sd_unary)7, dx, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "unary: unknown activation 7");
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

static void test_geglu(void)
{
    const int64_t shapes[2][3] = {{3, 5, 154}, {1, 2, 640}};
    for (int s = 0; s < 2; s++) {
        size_t n = numel(3, shapes[s]);
        int64_t d = shapes[s][2] / 2, oshape[3] = {shapes[s][0], shapes[s][1], d};
        float *x = ops_random(n, -4.0f, 4.0f, 40 + s), *ref = malloc(n / 2 * sizeof *ref);
        ref_geglu(x, shapes[s][0] * shapes[s][1], d, ref);
        sd_dtensor *dx = ops_upload(x, 3, shapes[s]), *out = NULL;
        CHECK_EQ_INT(sd_op_geglu(ops_cl(), dx, &out), SD_OK);
        CHECK(ops_expect("geglu", out, 3, oshape, ref, 2e-6, 4e-6)); /* products of O(4) values */
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
    sd_dtensor *odd = ops_upload_random(0, 1, 45, 2, SHAPE(3, 5)), *out = NULL;
    CHECK_EQ_INT(sd_op_geglu(ops_cl(), odd, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "geglu: last dimension of [3, 5] f32 must be even");
    sd_dtensor_free(odd);
}

static void binary_case(sd_binary op, int na, const int64_t *sa, int nb, const int64_t *sb, int ny,
                        const int64_t *sy)
{
    size_t n_a = numel(na, sa), n_b = numel(nb, sb), n_y = numel(ny, sy);
    float *a = ops_random(n_a, -2.0f, 2.0f, 50), *b = ops_random(n_b, -2.0f, 2.0f, 51);
    float *ref = malloc(n_y * sizeof *ref);
    ref_binary(op, a, sa, na, b, sb, nb, ref);
    sd_dtensor *da = ops_upload(a, na, sa), *db = ops_upload(b, nb, sb), *out = NULL;
    CHECK_EQ_INT(sd_op_binary(ops_cl(), op, da, db, &out), SD_OK);
    CHECK(ops_expect(op == SD_BINARY_ADD ? "add" : "mul", out, ny, sy, ref, 0.0, 0.0)); /* exact */
    sd_dtensor_free(out);
    sd_dtensor_free(da);
    sd_dtensor_free(db);
    free(a);
    free(b);
    free(ref);
}

static void test_binary(void)
{
    for (int op = SD_BINARY_ADD; op <= SD_BINARY_MUL; op++) {
        binary_case(op, 4, SHAPE(2, 3, 5, 67), 4, SHAPE(2, 3, 5, 67), 4, SHAPE(2, 3, 5, 67));
        binary_case(op, 4, SHAPE(2, 40, 9, 11), 3, SHAPE(40, 1, 1), 4, SHAPE(2, 40, 9, 11)); /* bias */
        binary_case(op, 3, SHAPE(2, 1, 5), 2, SHAPE(3, 1), 3, SHAPE(2, 3, 5));
        binary_case(op, 3, SHAPE(4, 1, 70), 3, SHAPE(1, 5, 70), 3, SHAPE(4, 5, 70));
        binary_case(op, 5, SHAPE(2, 3, 4, 5, 6), 4, SHAPE(3, 1, 5, 1), 5, SHAPE(2, 3, 4, 5, 6));
        binary_case(op, 2, SHAPE(3, 131), 1, SHAPE(1), 2, SHAPE(3, 131));
        binary_case(op, 1, SHAPE(1), 3, SHAPE(2, 2, 77), 3, SHAPE(2, 2, 77));
    }
    sd_dtensor *a = ops_upload_random(0, 1, 52, 2, SHAPE(2, 3));
    sd_dtensor *b = ops_upload_random(0, 1, 53, 1, SHAPE(4)), *out = NULL;
    CHECK_EQ_INT(sd_op_binary(ops_cl(), SD_BINARY_ADD, a, b, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "add: shapes [2, 3] f32 and [4] f32 do not broadcast");
    sd_dtensor_free(a);
    sd_dtensor_free(b);
}

static void test_scale_clamp(void)
{
    const int64_t shape[2] = {7, 131};
    size_t n = numel(2, shape);
    float *x = ops_random(n, -3.0f, 3.0f, 60), *ref = malloc(n * sizeof *ref);
    sd_dtensor *dx = ops_upload(x, 2, shape), *out = NULL;
    for (size_t i = 0; i < n; i++)
        ref[i] = x[i] * -1.0f + 1.0f;
    CHECK_EQ_INT(sd_op_scale(ops_cl(), dx, -1.0f, 1.0f, &out), SD_OK);
    CHECK(ops_expect("invert", out, 2, shape, ref, 0.0, 0.0)); /* one exact fma/mul-add in fp32 */
    sd_dtensor_free(out);
    for (size_t i = 0; i < n; i++)
        ref[i] = x[i] * 0.18215f;
    CHECK_EQ_INT(sd_op_scale(ops_cl(), dx, 0.18215f, 0.0f, &out), SD_OK);
    CHECK(ops_expect("scale", out, 2, shape, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    for (size_t i = 0; i < n; i++)
        ref[i] = fminf(fmaxf(x[i], -1.0f), 0.5f);
    CHECK_EQ_INT(sd_op_clamp(ops_cl(), dx, -1.0f, 0.5f, &out), SD_OK);
    CHECK(ops_expect("clamp", out, 2, shape, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    CHECK_EQ_INT(sd_op_clamp(ops_cl(), dx, 1.0f, 0.0f, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "clamp: min 1 is above max 0");
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

static void test_concat_slice(void)
{
    /* Concat along each dimension of [2, 3, 5, 7] with a partner of size 4 there. */
    for (int dim = 0; dim < 4; dim++) {
        int64_t sa[4] = {2, 3, 5, 7}, sb[4] = {2, 3, 5, 7}, sy[4] = {2, 3, 5, 7};
        sb[dim] = 4;
        sy[dim] = sa[dim] + 4;
        size_t na = numel(4, sa), nb = numel(4, sb);
        float *a = ops_random(na, -1, 1, 70), *b = ops_random(nb, -1, 1, 71), *ref = malloc((na + nb) * sizeof *ref);
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < dim; i++)
            outer *= sa[i];
        for (int i = dim + 1; i < 4; i++)
            inner *= sa[i];
        ref_concat(a, b, outer, sa[dim], 4, inner, ref);
        sd_dtensor *da = ops_upload(a, 4, sa), *db = ops_upload(b, 4, sb), *out = NULL;
        CHECK_EQ_INT(sd_op_concat(ops_cl(), da, db, dim, &out), SD_OK);
        CHECK_MSG(ops_expect("concat", out, 4, sy, ref, 0.0, 0.0), "concat dim %d", dim);
        /* Slicing the result gives back b. */
        sd_dtensor *back = NULL;
        CHECK_EQ_INT(sd_op_slice(ops_cl(), out, dim, sa[dim], 4, &back), SD_OK);
        CHECK_MSG(ops_expect("slice", back, 4, sb, b, 0.0, 0.0), "slice dim %d", dim);
        sd_dtensor_free(back);
        sd_dtensor_free(out);
        sd_dtensor_free(da);
        sd_dtensor_free(db);
        free(a);
        free(b);
        free(ref);
    }
    /* Slice of a long row (vector path) from an offset. */
    float *x = ops_random(3 * 300, -1, 1, 72), *ref = malloc(3 * 150 * sizeof *ref);
    ref_slice(x, 3, 300, 1, 77, 150, ref);
    sd_dtensor *dx = ops_upload(x, 2, SHAPE(3, 300)), *out = NULL;
    CHECK_EQ_INT(sd_op_slice(ops_cl(), dx, 1, 77, 150, &out), SD_OK);
    CHECK(ops_expect("slice row", out, 2, SHAPE(3, 150), ref, 0.0, 0.0));
    sd_dtensor_free(out);
    CHECK_EQ_INT(sd_op_slice(ops_cl(), dx, 1, 200, 101, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "slice: [200, 301) along dimension 1 is outside [3, 300] f32");
    sd_dtensor *other = ops_upload(x, 2, SHAPE(4, 200));
    CHECK_EQ_INT(sd_op_concat(ops_cl(), dx, other, 0, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "do not concatenate along dimension 0");
    sd_dtensor_free(other);
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

static void test_upsample(void)
{
    const int64_t shapes[3][4] = {{2, 3, 5, 13}, {1, 1, 1, 1}, {1, 4, 8, 8}};
    for (int s = 0; s < 3; s++) {
        size_t n = numel(4, shapes[s]);
        int64_t oshape[4] = {shapes[s][0], shapes[s][1], 2 * shapes[s][2], 2 * shapes[s][3]};
        float *x = ops_random(n, -1, 1, 80 + s), *ref = malloc(4 * n * sizeof *ref);
        ref_upsample2x(x, shapes[s][0] * shapes[s][1], shapes[s][2], shapes[s][3], ref);
        sd_dtensor *dx = ops_upload(x, 4, shapes[s]), *out = NULL;
        CHECK_EQ_INT(sd_op_upsample_nearest2x(ops_cl(), dx, &out), SD_OK);
        CHECK(ops_expect("upsample", out, 4, oshape, ref, 0.0, 0.0));
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
}

/* conv2d_direct against a plain double loop: depthwise 3x3 and 5x5, dense dilated 3x3 with
 * bias, a grouped 2-channel-per-group case; a shape that does not fit refused. */
static void test_conv2d_direct(void)
{
    const int cases[4][6] = {/* C, O, K, groups, pad, dil */ {5, 5, 3, 5, 1, 1}, {4, 4, 5, 4, 2, 1},
                             {3, 6, 3, 1, 5, 5}, {4, 6, 3, 2, 1, 1}};
    for (int t = 0; t < 4; t++) {
        int C = cases[t][0], O = cases[t][1], K = cases[t][2], G = cases[t][3], pad = cases[t][4], dil = cases[t][5];
        int H = 9, W = 11, OH = H + 2 * pad - dil * (K - 1), OW = W + 2 * pad - dil * (K - 1), cg = C / G;
        float *x = ops_random((size_t)(2 * C * H * W), -1, 1, 50 + t), *w = ops_random((size_t)(O * cg * K * K), -1, 1, 54 + t);
        float *b = ops_random((size_t)O, -1, 1, 58 + t), *ref = malloc(sizeof *ref * (size_t)(2 * O * OH * OW));
        for (int n = 0; n < 2; n++)
            for (int o = 0; o < O; o++)
                for (int yy = 0; yy < OH; yy++)
                    for (int xx = 0; xx < OW; xx++) {
                        double acc = t == 2 ? b[o] : 0.0;
                        for (int i = 0; i < cg; i++)
                            for (int ky = 0; ky < K; ky++)
                                for (int kx = 0; kx < K; kx++) {
                                    int iy = yy - pad + ky * dil, ix = xx - pad + kx * dil;
                                    if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                        acc += (double)w[((o * cg + i) * K + ky) * K + kx] *
                                               x[((n * C + o / (O / G) * cg + i) * H + iy) * W + ix];
                                }
                        ref[((n * O + o) * OH + yy) * OW + xx] = (float)acc;
                    }
        sd_dtensor *dx = ops_upload(x, 4, SHAPE(2, C, H, W)), *dw = ops_upload(w, 4, SHAPE(O, cg, K, K));
        sd_dtensor *db = ops_upload(b, 1, SHAPE(O)), *out = NULL;
        CHECK_EQ_INT(sd_op_conv2d_direct(ops_cl(), dx, dw, t == 2 ? db : NULL, G, pad, dil, &out), SD_OK);
        CHECK_MSG(ops_expect("conv2d_direct", out, 4, SHAPE(2, O, OH, OW), ref, 1e-5, 1e-5), "case %d", t);
        if (t == 0) {
            sd_dtensor *bad = NULL;
            CHECK_EQ_INT(sd_op_conv2d_direct(ops_cl(), dx, dw, NULL, 5, 0, 9, &bad), SD_ERR_INVALID);
            CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "conv2d_direct: [2, 5, 9, 11] f32 with weight [5, 1, 3, 3] f32");
        }
        sd_dtensor_free(out), sd_dtensor_free(dx), sd_dtensor_free(dw), sd_dtensor_free(db);
        free(x), free(w), free(b), free(ref);
    }
}

/* zero_insert against a plain loop: stride 2 with 1 / 2 zeros around (a transposed 3x3
 * convolution's input), stride 3 without; out-of-range arguments refused. */
static void test_zero_insert(void)
{
    const int params[2][3] = {{2, 1, 2}, {3, 0, 0}};
    for (int s = 0; s < 2; s++) {
        int st = params[s][0], b = params[s][1], a = params[s][2];
        int64_t shape[4] = {1, 2, 3, 4}, oh = 2 * st + 1 + b + a, ow = 3 * st + 1 + b + a;
        int64_t oshape[4] = {1, 2, oh, ow};
        float *x = ops_random(24, -1, 1, 60 + s), *ref = calloc((size_t)(2 * oh * ow), sizeof *ref);
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++)
                    ref[(c * oh + b + i * st) * ow + b + j * st] = x[(c * 3 + i) * 4 + j];
        sd_dtensor *dx = ops_upload(x, 4, shape), *out = NULL;
        CHECK_EQ_INT(sd_op_zero_insert(ops_cl(), dx, st, b, a, &out), SD_OK);
        CHECK(ops_expect("zero_insert", out, 4, oshape, ref, 0.0, 0.0));
        if (s == 1) {
            sd_dtensor *bad = NULL;
            CHECK_EQ_INT(sd_op_zero_insert(ops_cl(), dx, 9, 0, 0, &bad), SD_ERR_INVALID);
            CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "zero_insert: cannot spread [1, 2, 3, 4] f32 by 9");
        }
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
}

/* max_pool2x2 against a plain loop: even and odd sizes (the last row / column dropped), a
 * 2x2 plane, NaN propagated, too small refused. */
static void test_max_pool(void)
{
    const int64_t shapes[3][4] = {{2, 3, 6, 8}, {1, 2, 5, 7}, {1, 1, 2, 2}};
    for (int s = 0; s < 3; s++) {
        int64_t p = shapes[s][0] * shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        int64_t oshape[4] = {shapes[s][0], shapes[s][1], h / 2, w / 2};
        float *x = ops_random((size_t)(p * h * w), -1, 1, 70 + s), *ref = malloc(sizeof *ref * (size_t)(p * h * w));
        if (s == 2)
            x[3] = NAN;
        for (int64_t i = 0; i < p * (h / 2) * (w / 2); i++) {
            int64_t c = i / ((h / 2) * (w / 2)), oy = i / (w / 2) % (h / 2), ox = i % (w / 2);
            const float *q = x + (c * h + 2 * oy) * w + 2 * ox;
            float m = fmaxf(fmaxf(q[0], q[1]), fmaxf(q[w], q[w + 1]));
            ref[i] = isnan(q[0]) || isnan(q[1]) || isnan(q[w]) || isnan(q[w + 1]) ? NAN : m;
        }
        sd_dtensor *dx = ops_upload(x, 4, shapes[s]), *out = NULL;
        CHECK_EQ_INT(sd_op_max_pool2x2(ops_cl(), dx, &out), SD_OK);
        float got[4] = {0};
        if (s == 2 && out) {
            CHECK_EQ_INT(sd_dtensor_download(out, got), SD_OK);
            CHECK(isnan(got[0]));
        } else {
            CHECK(ops_expect("max_pool2x2", out, 4, oshape, ref, 0.0, 0.0));
        }
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
    float one[3] = {1, 2, 3};
    sd_dtensor *dx = ops_upload(one, 2, SHAPE(1, 3)), *out = NULL;
    CHECK_EQ_INT(sd_op_max_pool2x2(ops_cl(), dx, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "max_pool2x2: [1, 3] f32 needs at least 2x2");
    sd_dtensor_free(dx);
}

/* avg_pool2x2 against a plain loop of torch's rule (padding H % 2, W % 2, zeros counted): even,
 * odd and 1x1 planes. */
static void test_avg_pool(void)
{
    const int64_t shapes[3][4] = {{2, 3, 6, 8}, {1, 2, 5, 7}, {1, 1, 1, 1}};
    for (int s = 0; s < 3; s++) {
        int64_t p = shapes[s][0] * shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        int64_t oh = (h + 1) / 2, ow = (w + 1) / 2, oshape[4] = {shapes[s][0], shapes[s][1], oh, ow};
        float *x = ops_random((size_t)(p * h * w), -1, 1, 80 + s), *ref = malloc(sizeof *ref * (size_t)(p * oh * ow));
        for (int64_t i = 0; i < p * oh * ow; i++) {
            int64_t c = i / (oh * ow), oy = i / ow % oh, ox = i % ow;
            float sum = 0.0f;
            for (int64_t dy = 0; dy < 2; dy++)
                for (int64_t dx = 0; dx < 2; dx++) {
                    int64_t iy = 2 * oy - h % 2 + dy, ix = 2 * ox - w % 2 + dx;
                    if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                        sum += x[(c * h + iy) * w + ix];
                }
            ref[i] = sum / 4.0f;
        }
        sd_dtensor *dx = ops_upload(x, 4, shapes[s]), *out = NULL;
        CHECK_EQ_INT(sd_op_avg_pool2x2(ops_cl(), dx, &out), SD_OK);
        CHECK(ops_expect("avg_pool2x2", out, 4, oshape, ref, 0.0, 0.0));
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
}

/* Sizes the UNet meets on odd latents (3 -> 5, 5 -> 9, 4 -> 7), shrinking, identity and 2x. */
static void test_upsample_to_size(void)
{
    static const int64_t cases[][4] = {{3, 4, 5, 7}, {5, 7, 9, 14}, {2, 3, 3, 5}, {6, 6, 4, 5}, {3, 3, 3, 3},
                                       {3, 5, 6, 10}, {1, 1, 7, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t h = cases[c][0], w = cases[c][1], oh = cases[c][2], ow = cases[c][3];
        int64_t shape[4] = {2, 3, h, w}, oshape[4] = {2, 3, oh, ow};
        float *x = ops_random((size_t)(6 * h * w), -1, 1, 90 + (unsigned)c), *ref = malloc((size_t)(6 * oh * ow) * sizeof *ref);
        ref_upsample_nearest(x, 6, h, w, oh, ow, ref);
        sd_dtensor *dx = ops_upload(x, 4, shape), *out = NULL;
        CHECK_EQ_INT(sd_op_upsample_nearest(ops_cl(), dx, oh, ow, &out), SD_OK);
        CHECK_MSG(ops_expect("upsample_nearest", out, 4, oshape, ref, 0.0, 0.0), "%lldx%lld -> %lldx%lld",
                  (long long)w, (long long)h, (long long)ow, (long long)oh);
        sd_dtensor_free(out);
        sd_dtensor_free(dx);
        free(x);
        free(ref);
    }
    /* torch's indices for 3 -> 5: floor(o * 0.6) = 0, 0, 1, 1, 2 */
    float row[3] = {10, 20, 30}, want[5] = {10, 10, 20, 20, 30};
    int64_t s1[2] = {1, 3}, s2[2] = {1, 5};
    sd_dtensor *dx = ops_upload(row, 2, s1), *out = NULL;
    CHECK_EQ_INT(sd_op_upsample_nearest(ops_cl(), dx, 1, 5, &out), SD_OK);
    CHECK(ops_expect("upsample_nearest 3 -> 5", out, 2, s2, want, 0.0, 0.0));
    sd_dtensor_free(out);
    CHECK_EQ_INT(sd_op_upsample_nearest(ops_cl(), dx, 0, 5, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ops_cl()->ctx), "upsample_nearest: [1, 3] f32 to 5x0");
    sd_dtensor_free(dx);
}

static void test_timestep_embedding(void)
{
    const float t[5] = {0.0f, 1.0f, 999.0f, 500.5f, 37.0f};
    const int dims[3] = {320, 7, 2};
    for (int s = 0; s < 3; s++) {
        int64_t n = 5, oshape[2] = {5, dims[s]};
        float *ref = malloc((size_t)(5 * dims[s]) * sizeof *ref);
        ref_timestep_embedding(t, n, dims[s], 10000.0, ref);
        sd_dtensor *dt = ops_upload(t, 1, &n), *out = NULL;
        CHECK_EQ_INT(sd_op_timestep_embedding(ops_cl(), dt, dims[s], 10000.0f, &out), SD_OK);
        /* Arguments up to ~1000 rad: one ulp of the fp32 argument (6e-5) moves cos/sin by as
         * much; fp32 exp within a few ulp of the frequency: 5e-4 absolute. */
        CHECK_MSG(ops_expect("timestep_embedding", out, 2, oshape, ref, 5e-4, 0.0), "dim %d", dims[s]);
        sd_dtensor_free(out);
        sd_dtensor_free(dt);
        free(ref);
    }
    /* Exact values at t = 0: cos 1, sin 0. */
    int64_t one = 1;
    float zero = 0.0f;
    sd_dtensor *dt = ops_upload(&zero, 1, &one), *out = NULL;
    CHECK_EQ_INT(sd_op_timestep_embedding(ops_cl(), dt, 4, 10000.0f, &out), SD_OK);
    float *got = out ? ops_download(out) : NULL;
    CHECK(got && got[0] == 1.0f && got[1] == 1.0f && got[2] == 0.0f && got[3] == 0.0f);
    free(got);
    sd_dtensor_free(out);
    CHECK_EQ_INT(sd_op_timestep_embedding(ops_cl(), dt, 1, 10000.0f, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "dim >= 2 (got 1)");
    sd_dtensor_free(dt);
}

/* weight_add: f32 and f16-stored weights plus an f32 delta; the f16 result is the f16 rounding
 * of the f32 sum (exact comparison through the host's round-to-nearest-even conversion). */
static void test_weight_add(void)
{
    const int64_t shape[4] = {5, 3, 3, 7}; /* 315 elements: not a multiple of the 64-element run */
    size_t n = numel(4, shape);
    float *w = ops_random(n, -1.0f, 1.0f, 71), *d = ops_random(n, -0.1f, 0.1f, 72), *ref = malloc(n * sizeof *ref);
    float *w16 = malloc(n * sizeof *w16);
    sd_dtensor *dw = ops_upload(w, 4, shape), *dd = ops_upload(d, 1, (const int64_t[]){(int64_t)n}), *out = NULL;
    for (size_t i = 0; i < n; i++)
        ref[i] = w[i] + d[i];
    CHECK_EQ_INT(sd_op_weight_add(ops_cl(), dw, dd, &out), SD_OK);
    CHECK(ops_expect("weight_add f32", out, 4, shape, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    sd_dtensor *dw16 = ops_upload_f16(w, 4, shape, w16);
    for (size_t i = 0; i < n; i++)
        ref[i] = sd_half_to_float(sd_float_to_half(w16[i] + d[i]));
    CHECK_EQ_INT(sd_op_weight_add(ops_cl(), dw16, dd, &out), SD_OK);
    CHECK(out && out->dtype == SD_DTYPE_F16);
    CHECK(ops_expect("weight_add f16", out, 4, shape, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    sd_dtensor *short_delta = ops_upload(d, 1, (const int64_t[]){7});
    CHECK_EQ_INT(sd_op_weight_add(ops_cl(), dw, short_delta, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "weight_add: delta of 7 f32 elements for a weight of 315 elements");
    sd_dtensor_free(short_delta);
    sd_dtensor_free(dw16);
    sd_dtensor_free(dw);
    sd_dtensor_free(dd);
    free(w);
    free(w16);
    free(d);
    free(ref);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_group_norm);
    RUN(test_layer_norm);
    RUN(test_rms_norm);
    RUN(test_softmax);
    RUN(test_unary);
    RUN(test_geglu);
    RUN(test_binary);
    RUN(test_scale_clamp);
    RUN(test_concat_slice);
    RUN(test_upsample);
    RUN(test_max_pool);
    RUN(test_avg_pool);
    RUN(test_zero_insert);
    RUN(test_conv2d_direct);
    RUN(test_upsample_to_size);
    RUN(test_timestep_embedding);
    RUN(test_weight_add);
    ops_cl_release();
    return test_summary("test_ops_basic");
}
