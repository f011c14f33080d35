/* MidasDetector's images after its network (ml/annotators/midas_maps.h) against its source run
 * with torch, numpy and OpenCV (goldens from tests/reference/make_midas_map_goldens.py) on a
 * fixed 40x48 float32 depth: the 8-bit depth and the normal maps for (a, bg_th) = (2 pi, 0.1)
 * and (3, 0.4), byte for byte. */
#include "test.h"
#include "support/golden.h"
#include "ml/annotators/midas_maps.h"
#include <math.h>
#include <stdlib.h>

enum { H = 40, W = 48 };

static void test_maps(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float *depth = test_read_golden("midas_depth_in.f32", sizeof(float) * H * W), norm[H * W];
    unsigned char *want = test_read_golden("midas_depth.u8", H * W), map[H * W], rgb[H * W * 3];
    if (!depth || !want) {
        free(depth), free(want);
        sd_context_free(ctx);
        return;
    }
    sd_midas_depth_map(depth, H, W, norm, map);
    int bad = 0;
    for (int i = 0; i < H * W; i++)
        bad += map[i] != want[i];
    CHECK_MSG(bad == 0, "depth image: %d samples differ", bad);
    const float params[2][2] = {{(float)(M_PI * 2.0), 0.1f}, {3.0f, 0.4f}};
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "midas_normal_%d.u8", k);
        unsigned char *ref = test_read_golden(name, H * W * 3);
        CHECK_EQ_INT(sd_midas_normal_map(ctx, depth, norm, H, W, params[k][0], params[k][1], rgb), SD_OK);
        bad = 0;
        for (int i = 0; ref && i < H * W * 3; i++)
            bad += rgb[i] != ref[i];
        CHECK_MSG(ref && bad == 0, "normal image %d: %d samples differ", k, bad);
        free(ref);
    }
    free(depth), free(want);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_maps);
    return test_summary("test_midas_maps");
}
