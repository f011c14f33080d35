/* The annotators' 8-bit image steps (ml/annotators/aux_image.h) against OpenCV 4 (no IPP) and
 * numpy (goldens from tests/reference/make_aux_goldens.py): cv2.resize INTER_CUBIC and
 * INTER_AREA through resize_image_with_pad on five shapes (enlarging, shrinking, the 2x fast
 * path, unchanged, a row of 273 samples), byte for byte; the float conversion's truncation;
 * Otsu's threshold on a two-level histogram; the detectors' scribble ending (nms, the 8-bit
 * fixed-point GaussianBlur) byte for byte; bad sizes. */
#include "test.h"
#include "support/aux_cases.h"
#include "support/golden.h"
#include "ml/annotators/aux_image.h"
#include <stdlib.h>

static sd_context *ctx;

static void test_resize_goldens(void)
{
    for (size_t i = 0; i < AUX_N_CASES; i++) {
        const aux_case *c = &aux_cases[i];
        char name[64];
        snprintf(name, sizeof name, "aux_in_%s.u8", c->name);
        sd_img8 in = {c->h, c->w, 3, test_read_golden(name, (size_t)c->h * c->w * 3)};
        for (int m = 0; m < 2 && in.px; m++) {
            snprintf(name, sizeof name, "aux_resize_%s_%s.u8", m ? "area" : "cubic", c->name);
            unsigned char *want = test_read_golden(name, (size_t)c->th * c->tw * 3);
            sd_img8 out;
            int64_t th, tw;
            CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &in, 64, m ? SD_AUX_AREA : SD_AUX_CUBIC, &out, &th, &tw), SD_OK);
            CHECK_EQ_INT(th, c->th);
            CHECK_EQ_INT(tw, c->tw);
            CHECK_EQ_INT(out.h, (th + 63) / 64 * 64);
            CHECK_EQ_INT(out.w, (tw + 63) / 64 * 64);
            int bad = 0;
            for (int y = 0; want && th == c->th && tw == c->tw && y < out.h; y++)
                for (int x = 0; x < out.w * 3; x++) { /* edge padding repeats the last row / column */
                    int sy = y < th ? y : (int)th - 1, sx = x < tw * 3 ? x : (int)(tw - 1) * 3 + x % 3;
                    bad += out.px[y * out.w * 3 + x] != want[sy * tw * 3 + sx];
                }
            CHECK_MSG(bad == 0, "%s: %d samples differ", name, bad);
            sd_img8_free(&out);
            free(want);
        }
        free(in.px);
    }
}

static void test_from_float(void)
{
    /* trunc(v * 255) in float32: 0.999 -> 254, negatives and overflow clipped; 1 channel repeated */
    float px[4] = {0.999f, -0.5f, 2.0f, 100.0f / 255.0f};
    sd_img8 img;
    CHECK_EQ_INT(sd_aux_from_float(ctx, px, 1, 4, 1, &img), SD_OK);
    unsigned char want[12] = {254, 254, 254, 0, 0, 0, 255, 255, 255, 100, 100, 100};
    CHECK(img.px && memcmp(img.px, want, 12) == 0);
    sd_img8_free(&img);
    float rgba[4] = {1.0f, 0.0f, 0.0f, 0.5f}; /* red over white at alpha 127/255: numpy gives 127.99999 */
    CHECK_EQ_INT(sd_aux_from_float(ctx, rgba, 1, 1, 4, &img), SD_OK);
    CHECK(img.px && img.px[0] == 255 && img.px[1] == 127 && img.px[2] == 127);
    sd_img8_free(&img);
    CHECK_EQ_INT(sd_aux_from_float(ctx, px, 1, 2, 2, &img), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "2 channels");
}

static void test_otsu(void)
{
    unsigned char v[10] = {10, 10, 10, 10, 200, 200, 200, 200, 200, 200};
    CHECK_EQ_INT(sd_aux_otsu_threshold(v, 10), 10); /* the first level of the best split */
    unsigned char flat[3] = {7, 7, 7};
    CHECK_EQ_INT(sd_aux_otsu_threshold(flat, 3), 0);
}

/* The detectors' scribble ending (nms, 8-bit GaussianBlur, thresholds) on the reference's own
 * planes: HED's safe map (FakeScribblePreprocessor), and PiDiNet's safe map with the ending, the
 * cut to 77 x 64 and the ending again (Scribble_PiDiNet_Preprocessor). */
static void test_scribble_lines(void)
{
    unsigned char *hed = test_read_golden("hed_safe.u8", 128 * 64), *want = test_read_golden("hed_scribble.u8", 128 * 64);
    CHECK_EQ_INT(sd_aux_scribble_lines(ctx, hed, 128, 64), SD_OK);
    CHECK(hed && want && memcmp(hed, want, 128 * 64) == 0);
    free(hed);
    free(want);
    unsigned char *pidi = test_read_golden("pidinet_safe.u8", 128 * 64);
    want = test_read_golden("pidinet_scribble.u8", 77 * 64);
    CHECK_EQ_INT(sd_aux_scribble_lines(ctx, pidi, 128, 64), SD_OK);
    CHECK_EQ_INT(sd_aux_scribble_lines(ctx, pidi, 77, 64), SD_OK); /* the first 77 rows */
    int bad = 0;
    for (int i = 0; pidi && want && i < 77 * 64; i++)
        bad += pidi[i] != want[i];
    CHECK_MSG(bad == 0, "Scribble_PiDiNet ending: %d samples differ", bad);
    free(pidi);
    free(want);
}

static void test_bad_sizes(void)
{
    sd_img8 img, out;
    int64_t th, tw;
    CHECK_EQ_INT(sd_img8_new(ctx, 1, 1, 3, &img), SD_OK);
    CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &img, 1 << 25, SD_AUX_CUBIC, &out, &th, &tw), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "resolution 33554432");
    sd_img8_free(&img);
    CHECK_EQ_INT(sd_img8_new(ctx, (int64_t)1 << 40, 1, 3, &img), SD_ERR_LIMIT);
}

/* INTER_LANCZOS4 on a float32 plane (9 x 7 to 72 x 56 and 13 x 11) against cv2.resize. */
static void test_lanczos(void)
{
    float *in = test_read_golden("pose_lanczos_in.f32", 9 * 7 * sizeof(float));
    const int sizes[2][2] = {{72, 56}, {13, 11}};
    for (int k = 0; k < 2 && in; k++) {
        int h = sizes[k][0], w = sizes[k][1];
        char name[48];
        snprintf(name, sizeof name, "pose_lanczos_%dx%d.f32", h, w);
        float *want = test_read_golden(name, (size_t)(h * w) * sizeof(float)), *got = malloc(sizeof *got * (size_t)(h * w));
        CHECK_EQ_INT(sd_aux_resize_lanczos4_f32(ctx, in, 9, 7, got, h, w), SD_OK);
        double worst = want ? test_max_abs_diff(got, want, (size_t)(h * w)) : 1;
        printf("  lanczos4 %dx%d: max abs error %.3g\n", h, w, worst);
        CHECK(worst == 0.0);
        free(want), free(got);
    }
    free(in);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    RUN(test_resize_goldens);
    RUN(test_from_float);
    RUN(test_otsu);
    RUN(test_lanczos);
    RUN(test_scribble_lines);
    RUN(test_bad_sizes);
    sd_context_free(ctx);
    return test_summary("test_aux_image");
}
