/* OpenPose face steps (ml/annotators/pose_face.h, pose_draw.h's face drawing) against the
 * reference re-stated in tests/reference/make_pose_face_goldens.py with OpenCV 4.14 and torch:
 * util.draw_facepose byte for byte (missing points, points on the border), util.faceDetect's
 * boxes (missing nose, eyes and ears; small, cut and corner boxes), F.interpolate's bilinear
 * align_corners resize (within 1e-6), and detect_face's keypoints with the tiny random face
 * network for a box cut at the image's edge and one inside (the same parts found; each point
 * within a pixel, 0 measured). */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "ml/annotators/aux_image.h"
#include "ml/annotators/pose_draw.h"
#include "ml/annotators/pose_face.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_draw(void)
{
    enum { W = 96, H = 80, BYTES = W * H * 3 };
    float *pts = test_read_golden("pose_face_draw.f32", SD_POSE_FACE_POINTS * 2 * sizeof(float));
    uint8_t *want = test_read_golden("pose_face_draw.u8", BYTES), *got = calloc(BYTES, 1);
    if (pts && want && got) {
        sd_pose_draw_face(got, W, H, (const float(*)[2])pts, SD_POSE_FACE_POINTS);
        size_t first, diff = test_count_diff_u8(got, want, BYTES, &first);
        CHECK_MSG(diff == 0, "%zu bytes differ, the first at pixel (%zu, %zu)", diff, first / 3 % W, first / 3 / W);
    }
    free(pts), free(want), free(got);
}

static void test_boxes(void)
{
    enum { CASES = 8 };
    double *rows = test_read_golden("pose_face_boxes.f64", CASES * 19 * 3 * sizeof(double));
    int32_t *want = test_read_golden("pose_face_boxes.i32", CASES * 4 * sizeof(int32_t));
    for (int c = 0; rows && want && c < CASES; c++) {
        const double *r = rows + c * 19 * 3;
        const int32_t *e = want + c * 4;
        sd_pose_person p = {0};
        for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
            p.points[k] = (sd_pose_point){r[3 * k], r[3 * k + 1], r[3 * k + 2] != 0.0};
        sd_pose_face_box b = {-1, -1, -1};
        bool found = sd_pose_face_box_find(&p, (int)r[54], (int)r[55], &b);
        CHECK_MSG(found == (e[0] != 0), "case %d: found %d, want %d", c, found, (int)e[0]);
        if (found && e[0])
            CHECK_MSG(b.x == e[1] && b.y == e[2] && b.size == e[3], "case %d: (%d, %d, %d), want (%d, %d, %d)", c,
                      b.x, b.y, b.size, (int)e[1], (int)e[2], (int)e[3]);
    }
    free(rows), free(want);
}

static void test_bilinear(void)
{
    enum { SH = 7, SW = 6, DH = 37, DW = 29 };
    float *f = test_read_golden("pose_face_bilinear.f32", (2 * SH * SW + DH * DW) * sizeof(float));
    float got[DH * DW];
    if (!f)
        return;
    sd_pose_resize_bilinear_corners(f, SH, SW, got, DH, DW);
    CHECK_MSG(test_max_abs_diff(got, f + SH * SW, DH * DW) <= 1e-6, "enlarged: %g",
              test_max_abs_diff(got, f + SH * SW, DH * DW));
    sd_pose_resize_bilinear_corners(f, SH, SW, got, SH, SW);
    CHECK(memcmp(got, f + SH * SW + DH * DW, sizeof *got * SH * SW) == 0);
    free(f);
}

static void test_keypoints(void)
{
    enum { ROWS = SD_POSE_FACE_POINTS + 1 };
    static const sd_pose_face_box boxes[2] = {{150, 40, 70}, {20, 30, 100}};
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_golden_path("pose_face.pth");
    uint8_t *px = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    float *want = test_read_golden("pose_face_points.f32", 2 * ROWS * 2 * sizeof(float));
    sd_safetensors *st = NULL;
    sd_pose_net *net = NULL;
    sd_img8 src = {48, 40, 3, px}, padded = {0};
    int64_t th, tw;
    CHECK_MSG(sd_safetensors_open(ctx, path, &st) == SD_OK && sd_pose_net_new(ops_cl(), st, SD_POSE_FACE_NET, &net) == SD_OK,
              "%s", sd_context_errmsg(ctx));
    if (px)
        CHECK(sd_aux_resize_with_pad(ctx, &src, 192, SD_AUX_CUBIC, &padded, &th, &tw) == SD_OK);
    for (int b = 0; net && padded.px && want && b < 2; b++) {
        float pts[SD_POSE_FACE_POINTS][2];
        size_t n = 0;
        const float *w = want + b * ROWS * 2;
        CHECK_MSG(sd_pose_face_keypoints(ops_cl(), net, &padded, &boxes[b], pts, &n) == SD_OK, "%s",
                  sd_context_errmsg(ctx));
        CHECK_MSG(n == (size_t)w[0] && n > 0 && n < SD_POSE_FACE_POINTS, "box %d: %zu points, want %g", b, n,
                  (double)w[0]);
        double err = 0; /* in pixels */
        for (size_t k = 0; k < n && n == (size_t)w[0]; k++) {
            err = fmax(err, fabs((double)pts[k][0] - w[2 + 2 * k]) * (double)padded.w);
            err = fmax(err, fabs((double)pts[k][1] - w[3 + 2 * k]) * (double)padded.h);
        }
        printf("  face box %d: %zu points, max error %.3g pixels\n", b, n, err);
        CHECK(err <= 1.0);
    }
    sd_pose_net_free(net);
    sd_safetensors_close(st);
    sd_img8_free(&padded);
    free(path), free(px), free(want);
}

int main(void)
{
    RUN(test_draw);
    RUN(test_boxes);
    RUN(test_bilinear);
    RUN(test_keypoints);
    return test_summary("test_pose_face");
}
