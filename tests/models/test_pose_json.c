/* The POSE_KEYPOINT text (ml/annotators/pose_json.h) against encode_poses_as_dict dumped by
 * Python's json.dumps(indent=4) (tests/reference/make_pose_json_goldens.py), character for
 * character: people with and without hands and faces (a short and a full face list), missing
 * points, an image with no people; and Python's float repr on a few values by hand. */
#include "test.h"
#include "support/golden.h"
#include "ml/annotators/pose_json.h"
#include <stdlib.h>
#include <string.h>

static void test_json(void)
{
    enum { FRAMES = 3, PERSON = 18 * 3 + 2 + 2 * 21 * 2 + 1 + 71 * 2, ROWS = 3 * 3 + 3 * PERSON };
    double *in = test_read_golden("pose_json_in.f64", ROWS * sizeof(double));
    char *path = test_golden_path("pose_json.txt");
    FILE *f = fopen(path, "rb");
    static char want[40000];
    size_t wlen = f ? fread(want, 1, sizeof want - 1, f) : 0;
    CHECK(f && wlen > 0);
    if (f)
        fclose(f);
    sd_pose_entry people[3] = {0};
    sd_pose_frame frames[FRAMES];
    const double *r = in;
    size_t used = 0;
    for (int fr = 0; in && fr < FRAMES; fr++) {
        frames[fr] = (sd_pose_frame){people + used, (size_t)r[0], (int64_t)r[1], (int64_t)r[2]};
        r += 3;
        for (size_t i = 0; i < frames[fr].n; i++, used++) {
            sd_pose_entry *e = &people[used];
            for (int k = 0; k < SD_POSE_BODY_POINTS; k++, r += 3)
                e->body[k] = (sd_pose_point){r[0], r[1], r[2] != 0.0};
            e->has_hand[0] = r[0] != 0.0, e->has_hand[1] = r[1] != 0.0;
            r += 2;
            for (int s = 0; s < 2; s++)
                for (int k = 0; k < SD_POSE_HAND_POINTS; k++, r += 2)
                    e->hand[s][k][0] = (float)r[0], e->hand[s][k][1] = (float)r[1];
            e->n_face = (size_t)*r++;
            for (int k = 0; k < SD_POSE_FACE_POINTS; k++, r += 2)
                e->face[k][0] = (float)r[0], e->face[k][1] = (float)r[1];
        }
    }
    char *got = in ? sd_pose_json(frames, FRAMES) : NULL;
    CHECK(got && strcmp(got, want) == 0);
    if (got && strcmp(got, want) != 0) {
        size_t i = 0;
        while (got[i] && got[i] == want[i])
            i++;
        printf("  first difference at %zu: got \"%.40s\" want \"%.40s\"\n", i, got + i, want + i);
    }
    free(got);
    got = sd_pose_json(NULL, 0);
    CHECK(got && strcmp(got, "[]") == 0);
    free(got), free(in), free(path);
}

static void test_numbers(void)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {{0.0, "0.0"}, {-0.0, "-0.0"}, {1.0, "1.0"}, {0.1, "0.1"}, {1e-4, "0.0001"}, {1e-5, "1e-05"},
                 {1.5e-7, "1.5e-07"}, {1e16, "1e+16"}, {123456789.0, "123456789.0"}, {-0.005208333, "-0.005208333"},
                 {1.0 / 3.0, "0.3333333333333333"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        sd_pose_json_number(cases[i].v, out);
        CHECK_MSG(strcmp(out, cases[i].text) == 0, "%s, want %s", out, cases[i].text);
    }
}

int main(void)
{
    RUN(test_json);
    RUN(test_numbers);
    return test_summary("test_pose_json");
}
