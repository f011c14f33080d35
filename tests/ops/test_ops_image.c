/* Image ops (runtime-opencl/ops_image.h) against the plain-C references in
 * tests/support/ref_image.c on random images with odd sizes, and against goldens written by
 * tests/reference/make_resize_goldens.py from torch, PIL and kornia (what ComfyUI runs). */
#include "test.h"
#include "support/ops_check.h"
#include "support/ref_image.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {"nearest_exact", "bilinear", "bicubic", "area", "lanczos", "lanczos_u8"};

/* Tolerance of each method against the references and goldens (values in [0, 1]): nearest and
 * the uint8 Lanczos path are exact; the others are fp32 sums of at most a few dozen products,
 * computed separably here and in 2-D by torch (or in double by PIL's float path). */
static double method_tol(sd_resize_method m)
{
    return (m == SD_RESIZE_NEAREST_EXACT || m == SD_RESIZE_LANCZOS_U8) ? 0.0 : 3e-6;
}

static void test_resize_vs_reference(void)
{
    const int64_t in[3][4] = {{2, 13, 17, 3}, {1, 9, 31, 1}, {1, 40, 6, 4}};
    const int64_t outs[4][2] = {{29, 23}, {5, 7}, {9, 64}, {3, 3}};
    for (int s = 0; s < 3; s++) {
        const int64_t *sh = in[s];
        size_t n = (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
        float *x = ops_random(n, -0.1f, 1.1f, 100 + s); /* beyond [0, 1]: exercises the clip */
        sd_dtensor *dx = ops_upload(x, 4, sh);
        for (int o = 0; o < 4; o++)
            for (int m = SD_RESIZE_NEAREST_EXACT; m <= SD_RESIZE_LANCZOS_U8; m++) {
                int64_t osh[4] = {sh[0], outs[o][0], outs[o][1], sh[3]};
                size_t on = (size_t)(osh[0] * osh[1] * osh[2] * osh[3]);
                float *ref = malloc(on * sizeof *ref);
                ref_resize(x, sh[0], sh[1], sh[2], sh[3], osh[1], osh[2], (sd_resize_method)m, ref);
                sd_dtensor *out = NULL;
                CHECK_EQ_INT(sd_op_resize(ops_cl(), dx, osh[1], osh[2], (sd_resize_method)m, &out), SD_OK);
                CHECK_MSG(ops_expect(method_names[m], out, 4, osh, ref, method_tol(m), 0.0),
                          "resize %s %lldx%lld -> %lldx%lld", method_names[m], (long long)sh[1], (long long)sh[2],
                          (long long)osh[1], (long long)osh[2]);
                sd_dtensor_free(out);
                free(ref);
            }
        sd_dtensor_free(dx);
        free(x);
    }
}

static void test_resize_goldens(void)
{
    int nd;
    int64_t ish[5];
    float *img = ops_read_golden("resize_input.bin", &nd, ish);
    CHECK(img && nd == 4);
    if (!img)
        return;
    sd_dtensor *dx = ops_upload(img, 4, ish);
    const int64_t sizes[4][2] = {{29, 23}, {7, 5}, {6, 31}, {13, 40}};
    for (int s = 0; s < 4; s++)
        for (int m = SD_RESIZE_NEAREST_EXACT; m <= SD_RESIZE_LANCZOS_U8; m++) {
            char name[64];
            snprintf(name, sizeof name, "resize_%s_%lldx%lld.bin", method_names[m], (long long)sizes[s][0],
                     (long long)sizes[s][1]);
            int gnd;
            int64_t gsh[5];
            float *gold = ops_read_golden(name, &gnd, gsh);
            CHECK_MSG(gold != NULL, "golden %s", name);
            if (!gold)
                continue;
            sd_dtensor *out = NULL;
            CHECK_EQ_INT(sd_op_resize(ops_cl(), dx, sizes[s][0], sizes[s][1], (sd_resize_method)m, &out), SD_OK);
            CHECK_MSG(ops_expect(name, out, gnd, gsh, gold, method_tol(m), 0.0), "op vs %s", name);
            /* The C reference agrees with torch/PIL too (so the random-data checks mean something). */
            size_t on = (size_t)(gsh[0] * gsh[1] * gsh[2] * gsh[3]);
            float *ref = malloc(on * sizeof *ref);
            ref_resize(img, ish[0], ish[1], ish[2], ish[3], gsh[1], gsh[2], (sd_resize_method)m, ref);
            CHECK_MSG(ops_max_diff(ref, gold, on) <= method_tol(m), "reference vs %s: %g", name,
                      ops_max_diff(ref, gold, on));
            free(ref);
            sd_dtensor_free(out);
            free(gold);
        }
    /* Identity size: an exact copy (torch's formulas are the identity; PIL copies). */
    sd_dtensor *same = NULL;
    CHECK_EQ_INT(sd_op_resize(ops_cl(), dx, ish[1], ish[2], SD_RESIZE_BICUBIC, &same), SD_OK);
    CHECK(ops_expect("identity resize", same, 4, ish, img, 0.0, 0.0));
    sd_dtensor_free(same);
    CHECK_EQ_INT(sd_op_resize(ops_cl(), dx, 0, 5, SD_RESIZE_BILINEAR, &same), SD_ERR_INVALID);
    CHECK(same == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "resize: cannot resize [2, 13, 17, 3] f32 to 5x0");
    CHECK_EQ_INT(sd_op_resize(ops_cl(), dx, 5, 5, (sd_resize_method)9, &same), SD_ERR_INVALID);
    CHECK(same == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "resize: unknown method 9");
    sd_dtensor_free(dx);
    free(img);
}

static void test_crop_pad(void)
{
    const int64_t sh[4] = {2, 11, 13, 3};
    size_t n = 2 * 11 * 13 * 3;
    float *x = ops_random(n, 0, 1, 110);
    sd_dtensor *dx = ops_upload(x, 4, sh), *out = NULL;
    int64_t csh[4] = {2, 4, 9, 3};
    float *ref = malloc(n * 4 * sizeof *ref);
    ref_crop(x, 2, 11, 13, 3, 5, 3, 4, 9, ref);
    CHECK_EQ_INT(sd_op_crop(ops_cl(), dx, 5, 3, 4, 9, &out), SD_OK);
    CHECK(ops_expect("crop", out, 4, csh, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    CHECK_EQ_INT(sd_op_crop(ops_cl(), dx, 8, 0, 4, 13, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "crop: 13x4 at (0, 8) is outside [2, 11, 13, 3] f32");
    for (int mode = SD_PAD_CONSTANT; mode <= SD_PAD_REFLECT; mode++) {
        int64_t psh[4] = {2, 11 + 3 + 0, 13 + 5 + 2, 3};
        ref_pad(x, 2, 11, 13, 3, 3, 0, 5, 2, (sd_pad_mode)mode, 0.5f, ref);
        CHECK_EQ_INT(sd_op_pad(ops_cl(), dx, 3, 0, 5, 2, (sd_pad_mode)mode, 0.5f, &out), SD_OK);
        CHECK_MSG(ops_expect("pad", out, 4, psh, ref, 0.0, 0.0), "pad mode %d", mode);
        sd_dtensor_free(out);
    }
    /* An NCHW tensor [2, 3, 5, 7] pads H and W as [6, 5, 7, 1]. */
    int64_t nchw[4] = {2, 3, 5, 7}, as_img[4] = {6, 5, 7, 1}, padded[4] = {6, 6, 9, 1};
    sd_dtensor *t = ops_upload(x, 4, nchw);
    CHECK_EQ_INT(sd_dtensor_reshape(t, 4, as_img), SD_OK);
    ref_pad(x, 6, 5, 7, 1, 1, 0, 0, 2, SD_PAD_CONSTANT, 0.0f, ref);
    CHECK_EQ_INT(sd_op_pad(ops_cl(), t, 1, 0, 0, 2, SD_PAD_CONSTANT, 0.0f, &out), SD_OK);
    CHECK(ops_expect("pad NCHW", out, 4, padded, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    sd_dtensor_free(t);
    CHECK_EQ_INT(sd_op_pad(ops_cl(), dx, -1, 0, 0, 0, SD_PAD_CONSTANT, 0.0f, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "pad: cannot pad [2, 11, 13, 3] f32 by -1/0/0/0");
    CHECK_EQ_INT(sd_op_pad(ops_cl(), dx, 0, 0, 13, 0, SD_PAD_REFLECT, 0.0f, &out), SD_ERR_INVALID);
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

static void test_blur(void)
{
    int nd;
    int64_t sh[5];
    float *img = ops_read_golden("resize_input.bin", &nd, sh);
    CHECK(img != NULL);
    if (!img)
        return;
    sd_dtensor *dx = ops_upload(img, 4, sh);
    size_t n = (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
    float *ref = malloc(n * sizeof *ref);
    const struct { int r; float s; const char *golden; } cases[] = {
        {1, 1.0f, "blur_r1_s1.bin"}, {3, 1.5f, "blur_r3_s1.5.bin"}, {6, 0.4f, "blur_r6_s0.4.bin"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float k[13];
        sd_blur_kernel_comfy(cases[i].r, cases[i].s, k);
        sd_dtensor *out = NULL;
        CHECK_EQ_INT(sd_op_blur(ops_cl(), dx, cases[i].r, k, &out), SD_OK);
        ref_blur_comfy(img, sh[0], sh[1], sh[2], sh[3], cases[i].r, cases[i].s, ref);
        /* Weighted means of values in [0, 1]: separable fp32 vs 2-D double, 2e-6. */
        CHECK_MSG(ops_expect("blur", out, 4, sh, ref, 2e-6, 0.0), "blur r%d", cases[i].r);
        int gnd;
        int64_t gsh[5];
        float *gold = ops_read_golden(cases[i].golden, &gnd, gsh);
        CHECK_MSG(gold && ops_expect(cases[i].golden, out, gnd, gsh, gold, 2e-6, 0.0), "blur vs %s", cases[i].golden);
        free(gold);
        sd_dtensor_free(out);
    }
    /* Radius larger than the image: the mirror repeats instead of failing. */
    float one_row[4] = {0.0f, 1.0f, 0.0f, 1.0f}, k[9], out4[4];
    int64_t tiny[4] = {1, 1, 4, 1};
    sd_blur_kernel_comfy(4, 2.0f, k);
    sd_dtensor *dt = ops_upload(one_row, 4, tiny), *out = NULL;
    CHECK_EQ_INT(sd_op_blur(ops_cl(), dt, 4, k, &out), SD_OK);
    ref_blur_comfy(one_row, 1, 1, 4, 1, 4, 2.0f, out4);
    CHECK(ops_expect("blur tiny", out, 4, tiny, out4, 2e-6, 0.0));
    sd_dtensor_free(out);
    sd_dtensor_free(dt);
    sd_dtensor_free(dx);
    free(ref);
    free(img);
}

static void test_sobel(void)
{
    const int64_t sh[4] = {2, 7, 10, 3};
    size_t n = 2 * 7 * 10 * 3;
    float *x = ops_random(n, 0, 1, 120), *rx = malloc(n * sizeof *rx), *ry = malloc(n * sizeof *ry);
    ref_sobel(x, 2, 7, 10, 3, rx, ry);
    sd_dtensor *dx = ops_upload(x, 4, sh), *gx = NULL, *gy = NULL;
    CHECK_EQ_INT(sd_op_sobel(ops_cl(), dx, &gx, &gy), SD_OK);
    /* Eight-term sums of values in [0, 1]: 2e-6. */
    CHECK(ops_expect("sobel gx", gx, 4, sh, rx, 2e-6, 0.0));
    CHECK(ops_expect("sobel gy", gy, 4, sh, ry, 2e-6, 0.0));
    sd_dtensor_free(gx);
    sd_dtensor_free(gy);
    sd_dtensor_free(dx);
    free(x);
    free(rx);
    free(ry);
}

/* Number of pixels whose value differs between two [.., 3] edge maps. */
static size_t count_diff(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

static void test_canny_goldens(void)
{
    int nd;
    int64_t sh[5];
    float *img = ops_read_golden("canny_input.bin", &nd, sh);
    CHECK(img != NULL);
    if (!img)
        return;
    size_t n = (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
    sd_dtensor *dx = ops_upload(img, 4, sh);
    const struct { float lo, hi; const char *golden; } cases[] = {{0.4f, 0.8f, "canny_0.4_0.8.bin"},
                                                                 {0.1f, 0.3f, "canny_0.1_0.3.bin"}};
    for (int i = 0; i < 2; i++) {
        int gnd;
        int64_t gsh[5];
        float *gold = ops_read_golden(cases[i].golden, &gnd, gsh);
        sd_dtensor *out = NULL;
        CHECK_EQ_INT(sd_op_canny(ops_cl(), dx, cases[i].lo, cases[i].hi, &out), SD_OK);
        float *got = out ? ops_download(out) : NULL;
        float *ref = malloc(n * sizeof *ref);
        ref_canny(img, sh[0], sh[1], sh[2], sh[3], cases[i].lo, cases[i].hi, ref);
        /* Edge maps are 0/1 decisions: identical to kornia's and to the reference. */
        CHECK_MSG(gold && got && count_diff(got, gold, n) == 0, "canny vs %s: %zu pixels differ", cases[i].golden,
                  gold && got ? count_diff(got, gold, n) / 3 : 0);
        CHECK_MSG(gold && count_diff(ref, gold, n) == 0, "reference vs %s", cases[i].golden);
        free(ref);
        free(got);
        free(gold);
        sd_dtensor_free(out);
    }
    sd_dtensor *out = NULL;
    CHECK_EQ_INT(sd_op_canny(ops_cl(), dx, 0.5f, 0.4f, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(ops_cl()->ctx->errmsg, "canny: thresholds must satisfy 0 < low <= high (got low 0.5, high 0.4)");
    sd_dtensor_free(dx);
    free(img);
}

static void test_canny_synthetic(void)
{
    /* A white 12x12 square with a half-grey rim on black in a 31x37 image (the rim puts the
     * gradient maximum on one pixel; a hard step ties two and NMS keeps neither): edges trace
     * the rim, nothing else lights up, and every row through the square has both sides. */
    const int64_t h = 31, w = 37, sh[4] = {1, 31, 37, 3};
    float *x = calloc((size_t)(h * w * 3), sizeof *x);
    for (int64_t yy = 9; yy < 23; yy++)
        for (int64_t xx = 11; xx < 25; xx++) {
            bool rim = yy == 9 || yy == 22 || xx == 11 || xx == 24;
            for (int k = 0; k < 3; k++)
                x[(yy * w + xx) * 3 + k] = rim ? 0.5f : 1.0f;
        }
    sd_dtensor *dx = ops_upload(x, 4, sh), *out = NULL;
    CHECK_EQ_INT(sd_op_canny(ops_cl(), dx, 0.4f, 0.8f, &out), SD_OK);
    float *e = out ? ops_download(out) : NULL;
    CHECK(e != NULL);
    if (e) {
        size_t on = 0, far = 0;
        for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++) {
                float v = e[(yy * w + xx) * 3];
                CHECK(v == e[(yy * w + xx) * 3 + 1] && v == e[(yy * w + xx) * 3 + 2]);
                on += v == 1.0f;
                bool near = yy >= 8 && yy <= 23 && xx >= 10 && xx <= 25 && !(yy >= 12 && yy <= 19 && xx >= 14 && xx <= 21);
                far += v == 1.0f && !near;
            }
        CHECK_MSG(on >= 40, "only %zu edge pixels", on);
        CHECK_EQ_INT(far, 0);
        /* Every row crossing the square has an edge on its left and right sides. */
        for (int64_t yy = 12; yy < 20; yy++) {
            bool left = false, right = false;
            for (int64_t xx = 10; xx <= 14; xx++)
                left |= e[(yy * w + xx) * 3] == 1.0f;
            for (int64_t xx = 21; xx <= 25; xx++)
                right |= e[(yy * w + xx) * 3] == 1.0f;
            CHECK_MSG(left && right, "row %lld lacks an edge", (long long)yy);
        }
        float *ref = malloc((size_t)(h * w * 3) * sizeof *ref);
        ref_canny(x, 1, h, w, 3, 0.4f, 0.8f, ref);
        CHECK_EQ_INT(count_diff(e, ref, (size_t)(h * w * 3)), 0);
        free(ref);
    }
    free(e);
    sd_dtensor_free(out);
    sd_dtensor_free(dx);
    free(x);
}

static void test_canny_random(void)
{
    /* Smooth random blobs (noise blurred by the op itself) at an odd size, batch 2, one channel. */
    const int64_t sh[4] = {2, 23, 29, 1};
    size_t n = 2 * 23 * 29;
    float *x = ops_random(n, 0, 1, 130), *ref = malloc(n * 3 * sizeof *ref);
    sd_dtensor *dx = ops_upload(x, 4, sh), *out = NULL;
    CHECK_EQ_INT(sd_op_canny(ops_cl(), dx, 0.1f, 0.2f, &out), SD_OK);
    float *got = out ? ops_download(out) : NULL;
    ref_canny(x, 2, 23, 29, 1, 0.1f, 0.2f, ref);
    /* fp32 kernels vs a double reference: a decision may flip only where a magnitude equals a
     * threshold or its neighbour to rounding; allow 0.5% of pixels. */
    size_t diff = got ? count_diff(got, ref, n * 3) / 3 : n;
    CHECK_MSG(diff * 200 <= n, "%zu of %zu pixels differ", diff, n);
    free(got);
    sd_dtensor_free(out);
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

static void test_canny_hysteresis_chain(void)
{
    /* A vertical line whose brightness grows from top to bottom: only its lower end is a strong
     * edge, the rest is weak and reaches it only along the line, so hysteresis must carry the
     * promotion up 50 rows. */
    const int64_t h = 64, w = 9, sh[4] = {1, 64, 9, 1};
    float *x = calloc((size_t)(h * w), sizeof *x), *ref = malloc((size_t)(h * w * 3) * sizeof *ref);
    for (int64_t yy = 2; yy < h - 2; yy++)
        x[yy * w + 4] = 0.1f + 0.9f * (float)yy / (float)(h - 1);
    sd_dtensor *dx = ops_upload(x, 4, sh), *out = NULL;
    CHECK_EQ_INT(sd_op_canny(ops_cl(), dx, 0.05f, 0.5f, &out), SD_OK);
    float *e = out ? ops_download(out) : NULL;
    ref_canny(x, 1, h, w, 1, 0.05f, 0.5f, ref);
    CHECK(e && count_diff(e, ref, (size_t)(h * w * 3)) == 0);
    int top = 0;
    for (int64_t yy = 4; yy < 12 && e; yy++)
        for (int64_t xx = 0; xx < w; xx++)
            top += e[(yy * w + xx) * 3] == 1.0f;
    CHECK_MSG(top >= 8, "only %d edge pixels near the weak top of the line", top);
    free(e);
    sd_dtensor_free(out);
    sd_dtensor_free(dx);
    free(x);
    free(ref);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_resize_vs_reference);
    RUN(test_resize_goldens);
    RUN(test_crop_pad);
    RUN(test_blur);
    RUN(test_sobel);
    RUN(test_canny_goldens);
    RUN(test_canny_synthetic);
    RUN(test_canny_random);
    RUN(test_canny_hysteresis_chain);
    ops_cl_release();
    return test_summary("test_ops_image");
}
