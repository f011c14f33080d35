/* PiDiNet (ml/annotators/pidinet.h) against the PyTorch re-implementation of
 * comfyui_controlnet_aux's pidinet() and PidiNetDetector (goldens from
 * tests/reference/make_pidinet_goldens.py: a tiny random network in the real key layout, 4
 * channels, CDCM width 4): the architecture read from the shapes; the classifier's output on
 * the padded 128x64 test image in BGR; the detector's planes (safe off and on) from the
 * reference values byte for byte and from sdflow's within one level; the "module." prefix of the
 * .pth accepted; another network named with the missing tensor. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/pidinet.h"
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = AUX_NET_H, W = AUX_NET_W };

static void test_inspect(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "pidinet_tiny.safetensors");
    sd_pidinet_config c;
    CHECK_EQ_INT(sd_pidinet_inspect(ctx, st, &c), SD_OK);
    CHECK_EQ_INT(c.channels, 4);
    CHECK_EQ_INT(c.dil, 4);
    CHECK(!c.module_prefix);
    sd_safetensors_close(st);
    st = aux_open_golden_net(ctx, "hed_tiny.safetensors");
    CHECK_EQ_INT(sd_pidinet_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "hed_tiny.safetensors: not a PiDiNet network: tensor "
                                               "'init_block.weight' is missing");
    sd_safetensors_close(st);
}

/* The reference network's output from a file under `prefix` names. */
static void expect_forward(const sd_safetensors *st)
{
    unsigned char *want[2] = {test_read_golden("pidinet_map.u8", H * W), test_read_golden("pidinet_safe.u8", H * W)};
    float *ref = test_read_golden("pidinet_logits.f32", sizeof(float) * H * W), *y = calloc(H * W, sizeof *y);
    sd_pidinet *m = NULL;
    sd_dtensor *rgb = aux_padded_input(ctx, cl, 255.0f), *bgr = NULL, *out = NULL;
    float *x = malloc(sizeof *x * 3 * H * W), *swapped = malloc(sizeof *x * 3 * H * W);
    CHECK_EQ_INT(sd_dtensor_download(rgb, x), SD_OK);
    for (int c = 0; c < 3; c++)
        memcpy(swapped + c * H * W, x + (2 - c) * H * W, sizeof *x * H * W);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, H, W}, &bgr), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(bgr, swapped), SD_OK);
    CHECK_EQ_INT(sd_pidinet_new(cl, st, &m), SD_OK);
    sd_status s = m ? sd_pidinet_forward(m, bgr, &out) : SD_ERR_INVALID;
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
    if (out)
        CHECK_EQ_INT(sd_dtensor_download(out, y), SD_OK);
    double d = ref ? test_max_abs_diff(y, ref, H * W) : 1e9;
    printf("PiDiNet: max abs diff %.3g before the sigmoid (values within +-7.6)\n", d);
    CHECK(d < 1e-4);
    unsigned char map[H * W];
    for (int safe = 0; safe < 2; safe++) {
        int bad = 0, off = 0, maxd = 0;
        sd_pidinet_map(ref, H * W, safe, map);
        for (int i = 0; want[safe] && i < H * W; i++)
            bad += map[i] != want[safe][i];
        CHECK_MSG(bad == 0, "plane (safe %d) from the reference values: %d samples differ", safe, bad);
        sd_pidinet_map(y, H * W, safe, map);
        for (int i = 0; want[safe] && i < H * W; i++) {
            int e = abs(map[i] - want[safe][i]);
            off += e != 0;
            maxd = e > maxd ? e : maxd;
        }
        printf("PiDiNet plane (safe %d) from sdflow's values: %d of %d samples off, by at most %d\n", safe, off,
               H * W, maxd);
        CHECK(maxd <= (safe ? 128 : 1) && off <= H * W / 200);
    }
    free(want[0]), free(want[1]), free(ref), free(y), free(x), free(swapped);
    sd_dtensor_free(rgb), sd_dtensor_free(bgr), sd_dtensor_free(out);
    sd_pidinet_free(m);
}

static void test_forward(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "pidinet_tiny.safetensors");
    expect_forward(st);
    /* The same tensors under the .pth's "module." names. */
    size_t n = sd_safetensors_count(st);
    const sd_st_tensor **from = malloc(sizeof *from * n);
    char **names = malloc(sizeof *names * n);
    for (size_t i = 0; i < n; i++) {
        from[i] = sd_safetensors_at(st, i);
        names[i] = malloc(strlen(from[i]->name) + 8);
        sprintf(names[i], "module.%s", from[i]->name);
    }
    sd_safetensors *alias = NULL;
    CHECK_EQ_INT(sd_safetensors_alias(ctx, st, from, (const char *const *)names, n, &alias), SD_OK);
    sd_pidinet_config c;
    CHECK_EQ_INT(sd_pidinet_inspect(ctx, alias, &c), SD_OK);
    CHECK(c.module_prefix);
    expect_forward(alias);
    sd_safetensors_close(alias);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(from);
    sd_safetensors_close(st);
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_forward);
    sd_context_free(ctx);
    return test_summary("test_pidinet");
}
