/* OpenPose people from maps (ml/annotators/pose_keypoints.h) against body.py's post-processing
 * re-written in tests/reference/make_pose_keypoint_goldens.py, on synthetic 64x48 maps (two
 * people, noise, a stray bump): the same people, keypoints, total scores (to 1e-9) and part
 * counts. Also the Gaussian filter against a plain double loop on a tiny plane (reflect at the
 * borders, a line shorter than the kernel). */
#include "test.h"
#include "support/golden.h"
#include "core/half.h"
#include "ml/annotators/pose_keypoints.h"
#include <math.h>
#include <stdlib.h>

enum { H = 48, W = 64 };

static void test_people(void)
{
    size_t nh = (size_t)H * W * 19, np = (size_t)H * W * 38;
    uint16_t *raw = test_read_golden("pose_maps.f16", (nh + np) * 2);
    double *people = test_read_golden("pose_people.f64", 2 * 56 * sizeof(double));
    double *heat = malloc(nh * sizeof *heat), *paf = malloc(np * sizeof *paf);
    if (!raw || !people || !heat || !paf) {
        free(raw), free(people), free(heat), free(paf);
        return;
    }
    for (size_t i = 0; i < nh; i++)
        heat[i] = sd_half_to_float(raw[i]);
    for (size_t i = 0; i < np; i++)
        paf[i] = sd_half_to_float(raw[nh + i]);
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_pose_person *got = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sd_pose_find_people(ctx, heat, paf, H, W, &got, &n), SD_OK);
    CHECK_EQ_INT((int)n, 2);
    for (size_t j = 0; j < n && j < 2; j++) {
        const double *want = people + j * 56;
        for (int p = 0; p < SD_POSE_BODY_POINTS; p++) {
            const sd_pose_point *q = &got[j].points[p];
            CHECK_MSG(q->present == (want[3 * p + 2] != 0.0) &&
                          (!q->present || (q->x == want[3 * p] && q->y == want[3 * p + 1])),
                      "person %zu point %d: (%g, %g, %d), want (%g, %g, %g)", j, p, q->x, q->y, q->present,
                      want[3 * p], want[3 * p + 1], want[3 * p + 2]);
        }
        CHECK_MSG(fabs(got[j].score - want[54]) < 1e-9, "person %zu score %.12g, want %.12g", j, got[j].score, want[54]);
        CHECK_EQ_INT(got[j].parts, (int)want[55]);
    }
    free(got);
    sd_context_free(ctx);
    free(raw), free(people), free(heat), free(paf);
}

/* gaussian_filter on 5 x 3 (sigma 1: radius 4, longer than both sides) against direct sums. */
static void test_gaussian(void)
{
    enum { h = 5, w = 3 };
    double in[h * w], out[h * w], tmp[h * w], wt[9], sum = 0;
    for (int i = 0; i < h * w; i++)
        in[i] = sin(0.7 * i) + 1.0;
    for (int i = -4; i <= 4; i++)
        sum += wt[i + 4] = exp(-0.5 * i * i);
    for (int i = 0; i < 9; i++)
        wt[i] /= sum;
    /* reflect: index -1 -> 0, -2 -> 1, n -> n - 1, ... periodic with 2n */
#define REFL(i, n) ((((i) % (2 * (n))) + 2 * (n)) % (2 * (n)) < (n) ? (((i) % (2 * (n))) + 2 * (n)) % (2 * (n)) \
                    : 2 * (n) - 1 - (((i) % (2 * (n))) + 2 * (n)) % (2 * (n)))
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double s = 0;
            for (int k = -4; k <= 4; k++)
                s += wt[k + 4] * in[REFL(y + k, h) * w + x];
            tmp[y * w + x] = s;
        }
    double want[h * w];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double s = 0;
            for (int k = -4; k <= 4; k++)
                s += wt[k + 4] * tmp[y * w + REFL(x + k, w)];
            want[y * w + x] = s;
        }
#undef REFL
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK_EQ_INT(sd_pose_gaussian_filter(ctx, in, h, w, 1.0, out), SD_OK);
    double worst = 0;
    for (int i = 0; i < h * w; i++)
        worst = fmax(worst, fabs(out[i] - want[i]));
    CHECK_MSG(worst < 1e-12, "gaussian filter off by %g", worst);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_people);
    RUN(test_gaussian);
    return test_summary("test_pose_keypoints");
}
