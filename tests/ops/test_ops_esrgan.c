/* RRDBNet ops (runtime-opencl/ops_esrgan.h) against plain-C references on odd shapes: LeakyReLU
 * and the scaled residual add into channel ranges (also in place), pixel unshuffle with reflect
 * padding. LeakyReLU and the unshuffle are exact; the add is one fp32 multiply and one add, so
 * results match the reference bit for bit. */
#include "test.h"
#include "support/ops_check.h"
#include "runtime-opencl/ops_esrgan.h"
#include <stdlib.h>
#include <string.h>

static size_t numel4(const int64_t *s) { return (size_t)(s[0] * s[1] * s[2] * s[3]); }

/* ref[b, off + c, p] = f(x[b, c, p]) over dst's layout; other channels keep dst's values. */
static void ref_into(const float *x, const float *c, float alpha, float slope, bool axpy, const int64_t *xs,
                     int64_t cd, int64_t off, float *dst)
{
    size_t plane = (size_t)(xs[2] * xs[3]), n = (size_t)xs[1] * plane;
    for (int64_t b = 0; b < xs[0]; b++)
        for (size_t j = 0; j < n; j++) {
            size_t o = (size_t)b * (size_t)cd * plane + (size_t)off * plane + j;
            float v = x[(size_t)b * n + j];
            if (axpy)
                dst[o] = alpha * v + (c ? c[(size_t)b * n + j] : dst[o]);
            else
                dst[o] = v >= 0.0f ? v : v * slope;
        }
}

static void into_case(const int64_t *xs, int64_t cd, int64_t off, bool axpy, bool with_c)
{
    int64_t ds[4] = {xs[0], cd, xs[2], xs[3]};
    float *x = ops_random(numel4(xs), -1, 1, 3), *c = ops_random(numel4(xs), -1, 1, 4);
    float *d = ops_random(numel4(ds), -1, 1, 5), *ref = malloc(numel4(ds) * sizeof *ref);
    memcpy(ref, d, numel4(ds) * sizeof *ref);
    ref_into(x, with_c ? c : NULL, 0.2f, 0.2f, axpy, xs, cd, off, ref);
    sd_dtensor *dx = ops_upload(x, 4, xs), *dc = ops_upload(c, 4, xs), *dd = ops_upload(d, 4, ds);
    if (axpy)
        CHECK_EQ_INT(sd_op_axpy_into(ops_cl(), 0.2f, dx, with_c ? dc : NULL, dd, off), SD_OK);
    else
        CHECK_EQ_INT(sd_op_leaky_relu_into(ops_cl(), dx, 0.2f, dd, off), SD_OK);
    CHECK(ops_expect(axpy ? "axpy_into" : "leaky_relu_into", dd, 4, ds, ref, axpy ? 1e-7 : 0.0, axpy ? 1.2e-7 : 0.0));
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    sd_dtensor_free(dd);
    free(x);
    free(c);
    free(d);
    free(ref);
}

static void test_into(void)
{
    const int64_t a[4] = {1, 3, 7, 9}, b[4] = {2, 5, 13, 11}, c[4] = {1, 32, 16, 16};
    into_case(a, 3, 0, false, false);
    into_case(a, 10, 7, false, false);
    into_case(b, 9, 2, false, false);
    into_case(c, 160, 128, false, false);
    into_case(a, 8, 4, true, true);
    into_case(b, 5, 0, true, false);
    into_case(c, 64, 16, true, false);
}

static void test_in_place(void)
{
    /* leaky_relu and axpy reading and writing the same tensor. */
    const int64_t s[4] = {1, 4, 9, 23};
    size_t n = numel4(s);
    float *x = ops_random(n, -2, 2, 9), *c = ops_random(n, -1, 1, 10), *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) {
        float v = x[i] >= 0.0f ? x[i] : x[i] * 0.2f;
        ref[i] = 0.2f * v + c[i];
    }
    sd_dtensor *dx = ops_upload(x, 4, s), *dc = ops_upload(c, 4, s);
    CHECK_EQ_INT(sd_op_leaky_relu_into(ops_cl(), dx, 0.2f, dx, 0), SD_OK);
    CHECK_EQ_INT(sd_op_axpy_into(ops_cl(), 0.2f, dx, dc, dx, 0), SD_OK);
    CHECK(ops_expect("in place", dx, 4, s, ref, 1e-7, 1.2e-7));
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    free(x);
    free(c);
    free(ref);
}

static int reflect(int i, int n)
{
    if (n == 1)
        return 0;
    int period = 2 * (n - 1);
    i %= period;
    return i < n ? i : period - i;
}

static void unshuffle_case(int64_t b, int64_t ch, int64_t h, int64_t w, int r)
{
    int64_t xs[4] = {b, ch, h, w}, oh = (h + r - 1) / r, ow = (w + r - 1) / r;
    int64_t os[4] = {b, ch * r * r, oh, ow};
    float *x = ops_random(numel4(xs), -1, 1, 21), *ref = malloc(numel4(os) * sizeof *ref);
    for (int64_t n = 0; n < b; n++)
        for (int64_t c = 0; c < ch; c++)
            for (int i = 0; i < r; i++)
                for (int j = 0; j < r; j++)
                    for (int64_t y = 0; y < oh; y++)
                        for (int64_t xx = 0; xx < ow; xx++) {
                            int64_t oc = (c * r + i) * r + j;
                            int sy = reflect((int)(y * r + i), (int)h), sx = reflect((int)(xx * r + j), (int)w);
                            ref[((n * os[1] + oc) * oh + y) * ow + xx] = x[((n * ch + c) * h + sy) * w + sx];
                        }
    sd_dtensor *dx = ops_upload(x, 4, xs), *out = NULL;
    CHECK_EQ_INT(sd_op_pixel_unshuffle(ops_cl(), dx, r, &out), SD_OK);
    CHECK(ops_expect("pixel_unshuffle", out, 4, os, ref, 0.0, 0.0));
    sd_dtensor_free(dx);
    sd_dtensor_free(out);
    free(x);
    free(ref);
}

static void test_unshuffle(void)
{
    unshuffle_case(1, 3, 8, 6, 2);
    unshuffle_case(2, 3, 7, 9, 2); /* reflect-padded to 8 x 10 */
    unshuffle_case(1, 3, 5, 6, 4);
    unshuffle_case(1, 1, 1, 3, 4); /* pads longer than the image reflect repeatedly */
    unshuffle_case(2, 3, 32, 16, 16); /* the SDXL T2I-Adapter's factor */
}

static void test_errors(void)
{
    sd_cl *cl = ops_cl();
    float v[64] = {0};
    sd_dtensor *x = ops_upload(v, 4, (const int64_t[]){1, 4, 2, 2}), *d = ops_upload(v, 4, (const int64_t[]){1, 6, 2, 2});
    sd_dtensor *odd = ops_upload(v, 4, (const int64_t[]){1, 4, 2, 3}), *out = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_op_leaky_relu_into(cl, x, 0.2f, d, 3), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(cl->ctx),
                 "leaky_relu: [1, 4, 2, 2] f32 does not fit channels from 3 of [1, 6, 2, 2] f32");
    CHECK_EQ_INT(sd_op_axpy_into(cl, 1.0f, x, odd, d, 0), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(cl->ctx), "axpy: [1, 4, 2, 2] f32 and [1, 4, 2, 3] f32 differ");
    CHECK_EQ_INT(sd_op_pixel_unshuffle(cl, x, 17, &out), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(cl->ctx), "pixel_unshuffle: input [1, 4, 2, 2] f32 with factor 17");
    CHECK(out == NULL);
    sd_dtensor_free(x);
    sd_dtensor_free(d);
    sd_dtensor_free(odd);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_into);
    RUN(test_in_place);
    RUN(test_unshuffle);
    RUN(test_errors);
    ops_cl_release();
    return test_summary("test_ops_esrgan");
}
