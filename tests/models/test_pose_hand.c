/* OpenPose hand steps (ml/annotators/pose_hand.h, pose_draw.h's hand drawing) and the resizes
 * they use (aux_image.h: 8-bit INTER_LANCZOS4, float INTER_AREA) against the reference re-stated
 * in tests/reference/make_pose_hand_goldens.py with OpenCV 4.14 and scipy: util.draw_handpose
 * byte for byte (thick lines, missing points, points on the border), util.handDetect's boxes
 * (missing arms, small and clipped boxes), Hand.__call__'s peak step, and cv2.resize; and the
 * averaged heatmaps of the tiny random hand network over the four scales of a 70-pixel box
 * (within 1e-3 of the largest map value; 2.5e-4 measured) and detect_hands' keypoints from them
 * (equal). */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "ml/annotators/aux_image.h"
#include "ml/annotators/pose_draw.h"
#include "ml/annotators/pose_hand.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Checks that the w-wide RGB images got and want are equal; reports the first difference. */
static void expect_equal(const char *name, const uint8_t *got, const uint8_t *want, size_t bytes, int w)
{
    size_t first, diff = test_count_diff_u8(got, want, bytes, &first);
    CHECK_MSG(diff == 0, "%s: %zu bytes differ, the first at pixel (%zu, %zu)", name, diff, first / 3 % (size_t)w,
              first / 3 / (size_t)w);
}

static void draw_case(const char *name, int w, int h)
{
    char file[64];
    snprintf(file, sizeof file, "pose_hand_draw_%s.f32", name);
    float *pts = test_read_golden(file, SD_POSE_HAND_POINTS * 2 * sizeof(float));
    snprintf(file, sizeof file, "pose_hand_draw_%s.u8", name);
    size_t bytes = (size_t)w * (size_t)h * 3;
    uint8_t *want = test_read_golden(file, bytes), *got = calloc(bytes, 1);
    if (pts && want && got) {
        sd_pose_draw_hand(got, w, h, (const float(*)[2])pts);
        expect_equal(name, got, want, bytes, w);
    }
    free(pts), free(want), free(got);
}

static void test_draw(void)
{
    draw_case("small", 96, 80);
    draw_case("large", 300, 260);
}

static void test_boxes(void)
{
    enum { CASES = 8 };
    double *rows = test_read_golden("pose_hand_boxes.f64", CASES * 19 * 3 * sizeof(double));
    int32_t *want = test_read_golden("pose_hand_boxes.i32", CASES * 9 * sizeof(int32_t));
    for (int c = 0; rows && want && c < CASES; c++) {
        const double *r = rows + c * 19 * 3;
        sd_pose_person p = {0};
        for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
            p.points[k] = (sd_pose_point){r[3 * k], r[3 * k + 1], r[3 * k + 2] != 0.0};
        sd_pose_hand_box b[2];
        int n = sd_pose_hand_boxes(&p, (int)r[54], (int)r[55], b);
        const int32_t *e = want + c * 9;
        CHECK_MSG(n == e[0], "case %d: %d boxes, want %d", c, n, (int)e[0]);
        for (int i = 0; i < n && n == e[0]; i++)
            CHECK_MSG(b[i].x == e[1 + 4 * i] && b[i].y == e[2 + 4 * i] && b[i].size == e[3 + 4 * i] &&
                          b[i].left == (e[4 + 4 * i] != 0),
                      "case %d box %d: (%d, %d, %d, %d), want (%d, %d, %d, %d)", c, i, b[i].x, b[i].y, b[i].size,
                      b[i].left, (int)e[1 + 4 * i], (int)e[2 + 4 * i], (int)e[3 + 4 * i], (int)e[4 + 4 * i]);
    }
    free(rows), free(want);
}

static void test_peaks(void)
{
    enum { PLANES = 6, N = SD_POSE_HAND_MAP * SD_POSE_HAND_MAP };
    float *heat = test_read_golden("pose_hand_peaks.f32", PLANES * N * sizeof(float));
    int32_t *want = test_read_golden("pose_hand_peaks.i32", PLANES * 2 * sizeof(int32_t));
    double *plane = malloc(sizeof *plane * N);
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    for (int k = 0; heat && want && plane && k < PLANES; k++) {
        for (int i = 0; i < N; i++)
            plane[i] = heat[k * N + i];
        int x = -1, y = -1;
        CHECK(sd_pose_hand_peak(ctx, plane, 70, 90, &x, &y) == SD_OK);
        CHECK_MSG(x == want[2 * k] && y == want[2 * k + 1], "plane %d: (%d, %d), want (%d, %d)", k, x, y,
                  (int)want[2 * k], (int)want[2 * k + 1]);
    }
    sd_context_free(ctx);
    free(heat), free(want), free(plane);
}

static void test_resize(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    uint8_t *px = test_read_golden("pose_resize_src.u8", 37 * 29 * 3);
    sd_img8 src = {37, 29, 3, px};
    static const int sizes[3][2] = {{184, 144}, {61, 45}, {37, 64}};
    for (int i = 0; px && i < 3; i++) {
        char file[64];
        int h = sizes[i][0], w = sizes[i][1];
        snprintf(file, sizeof file, "pose_resize_u8_%dx%d.u8", h, w);
        uint8_t *want = test_read_golden(file, (size_t)h * w * 3);
        sd_img8 out = {0};
        CHECK(sd_aux_resize(ctx, &src, h, w, SD_AUX_LANCZOS4, &out) == SD_OK);
        if (want && out.px)
            expect_equal(file, out.px, want, (size_t)h * w * 3, w);
        sd_img8_free(&out);
        free(want);
    }
    free(px);
    float *f = test_read_golden("pose_resize_area.f32", (184 * 184 + 128 * 128) * sizeof(float));
    float *got = malloc(sizeof *got * 128 * 128);
    if (f && got) {
        CHECK(sd_aux_resize_area_f32(ctx, f, 184, 184, got, 128, 128) == SD_OK);
        CHECK_MSG(memcmp(got, f + 184 * 184, sizeof *got * 128 * 128) == 0, "float INTER_AREA differs by %g",
                  test_max_abs_diff(got, f + 184 * 184, 128 * 128));
        CHECK(sd_aux_resize_area_f32(ctx, f, 184, 184, got, 92, 92) == SD_ERR_INVALID); /* a whole factor */
    }
    free(f), free(got);
    sd_context_free(ctx);
}

static void test_maps(void)
{
    enum { M = SD_POSE_HAND_MAP, SUB = M / 4, C = SD_POSE_HAND };
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_golden_path("pose_hand.safetensors");
    uint8_t *px = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    float *want = test_read_golden("pose_hand_maps.f32", SUB * SUB * C * sizeof(float));
    double *avg = malloc(sizeof *avg * M * M * C);
    sd_safetensors *st = NULL;
    sd_pose_net *net = NULL;
    sd_img8 src = {48, 40, 3, px}, padded = {0};
    int64_t th, tw;
    CHECK_MSG(sd_safetensors_open(ctx, path, &st) == SD_OK && sd_pose_net_new(ops_cl(), st, SD_POSE_HAND_NET, &net) == SD_OK,
              "%s", sd_context_errmsg(ctx));
    if (px)
        CHECK(sd_aux_resize_with_pad(ctx, &src, 192, SD_AUX_CUBIC, &padded, &th, &tw) == SD_OK);
    const sd_pose_hand_box box = {30, 40, 70, true};
    if (net && padded.px && want && avg) {
        CHECK_MSG(sd_pose_hand_maps(ops_cl(), net, &padded, &box, avg) == SD_OK, "%s", sd_context_errmsg(ctx));
        double err = 0, top = 0;
        for (int y = 0; y < SUB; y++)
            for (int x = 0; x < SUB; x++)
                for (int c = 0; c < C; c++) {
                    double r = want[(y * SUB + x) * C + c], g = avg[((size_t)(4 * y) * M + 4 * x) * C + c];
                    err = fabs(g - r) > err ? fabs(g - r) : err;
                    top = fabs(r) > top ? fabs(r) : top;
                }
        printf("  hand maps: max abs error %.3g of %.3g\n", err, top);
        CHECK(err <= 1e-3 * top); /* float32 noise of six 7x7 stages at up to 736 x 736 */
        float pts[SD_POSE_HAND_POINTS][2];
        float *wp = test_read_golden("pose_hand_points.f32", sizeof pts);
        CHECK(sd_pose_hand_keypoints(ops_cl(), net, &padded, &box, pts) == SD_OK);
        CHECK(wp && memcmp(pts, wp, sizeof pts) == 0);
        free(wp);
    }
    sd_pose_net_free(net);
    sd_safetensors_close(st);
    sd_img8_free(&padded);
    free(path), free(px), free(want), free(avg);
}

int main(void)
{
    RUN(test_draw);
    RUN(test_boxes);
    RUN(test_peaks);
    RUN(test_resize);
    RUN(test_maps);
    return test_summary("test_pose_hand");
}
