/* OpenPose skeleton drawing (ml/annotators/pose_draw.h) against comfyui_controlnet_aux's
 * draw_bodypose re-written with OpenCV 4.14's own cv2.ellipse2Poly / fillConvexPoly / circle
 * (tests/reference/make_pose_draw_goldens.py), byte for byte: all points inside; missing points,
 * points outside the canvas and a zero-length limb; xinsr stick scaling on a 640x520 canvas.
 * Also cv::ellipse2Poly's points for a few ellipses computed by hand. */
#include "test.h"
#include "support/golden.h"
#include "ml/annotators/pose_draw.h"
#include <stdlib.h>
#include <string.h>

static void draw_case(const char *name, int w, int h, bool xinsr)
{
    char file[64];
    snprintf(file, sizeof file, "pose_draw_%s.f64", name);
    double *rows = test_read_golden(file, 18 * 3 * sizeof(double));
    snprintf(file, sizeof file, "pose_draw_%s.u8", name);
    size_t bytes = (size_t)w * (size_t)h * 3;
    uint8_t *want = test_read_golden(file, bytes), *got = calloc(bytes, 1);
    if (rows && want && got) {
        sd_pose_point pts[SD_POSE_BODY_POINTS];
        for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
            pts[k] = (sd_pose_point){rows[3 * k], rows[3 * k + 1], rows[3 * k + 2] != 0.0};
        sd_pose_draw_body(got, w, h, pts, xinsr);
        size_t first, diff = test_count_diff_u8(got, want, bytes, &first);
        CHECK_MSG(diff == 0, "%s: %zu bytes differ, the first at pixel (%zu, %zu)", name, diff, first / 3 % (size_t)w,
                  first / 3 / (size_t)w);
    }
    free(rows);
    free(want);
    free(got);
}

static void test_body(void)
{
    draw_case("full", 128, 96, false);
    draw_case("edges", 128, 96, false);
    draw_case("xinsr", 640, 520, true);
}

/* Axis-aligned ellipses at delta 90: the four vertices; a zero-size one: the centre twice. */
static void test_ellipse2poly(void)
{
    int p[16];
    size_t n = sd_cv_ellipse2poly(10, 20, 5, 3, 0, 0, 360, 90, p, 8);
    CHECK_EQ_INT((int)n, 5);
    const int want[10] = {15, 20, 10, 23, 5, 20, 10, 17, 15, 20};
    CHECK(memcmp(p, want, sizeof want) == 0);
    n = sd_cv_ellipse2poly(7, 8, 0, 0, 30, 0, 360, 1, p, 8);
    CHECK_EQ_INT((int)n, 2);
    CHECK(p[0] == 7 && p[1] == 8 && p[2] == 7 && p[3] == 8);
}

int main(void)
{
    RUN(test_body);
    RUN(test_ellipse2poly);
    return test_summary("test_pose_draw");
}
