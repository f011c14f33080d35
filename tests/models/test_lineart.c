/* The line art Generator (ml/annotators/lineart.h) against the PyTorch re-implementation of
 * comfyui_controlnet_aux's LineartDetector (goldens from tests/reference/make_lineart_goldens.py:
 * a tiny random network in the real key layout, base 4 and 3 residual blocks): the
 * architecture read from the shapes; the output before the sigmoid on the padded 128x64 test
 * image; the detector's plane from the reference values byte for byte and from sdflow's within
 * one level; a misshapen tensor named. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/lineart.h"
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = AUX_NET_H, W = AUX_NET_W };

static sd_safetensors *open_tiny(void)
{
    return aux_open_golden_net(ctx, "lineart_tiny.safetensors");
}

static void test_inspect(void)
{
    sd_safetensors *st = open_tiny();
    sd_lineart_config c;
    CHECK_EQ_INT(sd_lineart_inspect(ctx, st, &c), SD_OK);
    CHECK_EQ_INT(c.base, 4);
    CHECK_EQ_INT(c.blocks, 3);
    sd_safetensors_close(st);
}

static void test_forward(void)
{
    unsigned char *want = test_read_golden("lineart_map.u8", H * W);
    float *ref = test_read_golden("lineart_logits.f32", sizeof(float) * H * W), *y = calloc(H * W, sizeof *y);
    sd_safetensors *st = open_tiny();
    sd_lineart *m = NULL;
    sd_dtensor *dx = aux_padded_input(ctx, cl, 255.0f), *out = NULL;
    CHECK_EQ_INT(sd_lineart_new(cl, st, &m), SD_OK);
    sd_status s = sd_lineart_forward(m, dx, &out);
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
    CHECK(out && out->shape[1] == 1 && out->shape[2] == H && out->shape[3] == W);
    if (out)
        CHECK_EQ_INT(sd_dtensor_download(out, y), SD_OK);
    double d = ref ? test_max_abs_diff(y, ref, H * W) : 1e9;
    printf("line art: max abs diff %.3g before the sigmoid (values within +-2.4)\n", d);
    CHECK(d < 1e-4);
    unsigned char map[H * W];
    sd_lineart_map(ref, H * W, map);
    int bad = 0, off = 0, maxd = 0;
    for (int i = 0; want && i < H * W; i++)
        bad += map[i] != want[i];
    CHECK_MSG(bad == 0, "plane from the reference values: %d samples differ", bad);
    sd_lineart_map(y, H * W, map);
    for (int i = 0; want && i < H * W; i++) {
        int e = abs(map[i] - want[i]);
        off += e != 0;
        maxd = e > maxd ? e : maxd;
    }
    printf("line art plane from sdflow's values: %d of %d samples off, by at most %d\n", off, H * W, maxd);
    CHECK(maxd <= 1 && off <= H * W / 200);
    free(want), free(ref), free(y);
    sd_dtensor_free(dx);
    sd_dtensor_free(out);
    sd_lineart_free(m);
    sd_safetensors_close(st);
}

static void test_not_lineart(void)
{
    /* The HED test network is not a line art network. */
    char *dir = test_path(test_source_dir(), "tests/data/goldens"), *path = test_path(dir, "hed_tiny.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    sd_lineart_config c;
    CHECK_EQ_INT(sd_lineart_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "hed_tiny.safetensors: not a line art network: tensor "
                                               "'model0.1.weight' is missing");
    sd_safetensors_close(st);
    free(dir);
    free(path);
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_forward);
    RUN(test_not_lineart);
    sd_context_free(ctx);
    return test_summary("test_lineart");
}
