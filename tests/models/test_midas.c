/* MiDaS DPT-Hybrid (ml/annotators/midas.h) against the PyTorch re-implementation of DPTDepthModel
 * with the vitb_rn50_384 backbone (goldens from tests/reference/make_midas_goldens.py on a tiny
 * random network saved with torch.save in the real key layout): the architecture read from the
 * .pt; the depth on the padded 128x64 test image (v / 127.5 - 1) within 1e-4 of its peak; a file
 * that is not the network named with the missing tensor. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/midas.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = AUX_NET_H, W = AUX_NET_W };

static void test_inspect(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "midas_tiny.pt");
    sd_midas_config c;
    CHECK_EQ_INT(sd_midas_inspect(ctx, st, &c), SD_OK);
    CHECK_EQ_INT(c.stem, 32);
    for (int g = 0; g < SD_MIDAS_STAGES; g++) {
        CHECK_EQ_INT(c.blocks[g], g == 0 ? 2 : 1);
        CHECK_EQ_INT(c.width[g], 128);
    }
    CHECK_EQ_INT(c.dim, 64);
    CHECK_EQ_INT(c.heads, 1);
    CHECK_EQ_INT(c.depth, 6);
    CHECK_EQ_INT(c.grid, 4);
    CHECK_EQ_INT(c.hooks[0], 4);
    CHECK_EQ_INT(c.hooks[1], 5);
    CHECK_EQ_INT(c.features, 16);
    sd_safetensors_close(st);
}

static void test_forward(void)
{
    float *ref = test_read_golden("midas_depth.f32", sizeof(float) * H * W), *ours = calloc(H * W, sizeof(float));
    sd_safetensors *st = aux_open_golden_net(ctx, "midas_tiny.pt");
    sd_midas *m = NULL;
    sd_dtensor *x = aux_padded_input(ctx, cl, 127.5f), *x1 = NULL, *y = NULL;
    CHECK_EQ_INT(sd_midas_new(cl, st, &m), SD_OK);
    CHECK_EQ_INT(sd_op_scale(cl, x, 1.0f, -1.0f, &x1), SD_OK);
    if (m && x1)
        CHECK_EQ_INT(sd_midas_forward(m, x1, &y), SD_OK);
    CHECK(y && y->shape[2] == H && y->shape[3] == W);
    if (y && y->shape[2] == H && y->shape[3] == W)
        CHECK_EQ_INT(sd_dtensor_download(y, ours), SD_OK);
    double worst = 0, peak = 0;
    for (int i = 0; ref && i < H * W; i++) {
        worst = fmax(worst, fabs(ours[i] - ref[i]));
        peak = fmax(peak, fabs(ref[i]));
    }
    printf("MiDaS depth: max abs diff %.3g (peak %.3g)\n", worst, peak);
    CHECK(ref && worst <= 1e-4 * peak);
    sd_dtensor_free(x), sd_dtensor_free(x1), sd_dtensor_free(y);
    sd_midas_free(m);
    sd_safetensors_close(st);
    free(ref), free(ours);
}

static void test_not_midas(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "depth_tiny.pth");
    sd_midas_config c;
    CHECK_EQ_INT(sd_midas_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "depth_tiny.pth: not a MiDaS DPT-Hybrid network: tensor "
                                               "'pretrained.model.patch_embed.backbone.stem.conv.weight' is missing");
    sd_safetensors_close(st);
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_forward);
    RUN(test_not_midas);
    sd_context_free(ctx);
    return test_summary("test_midas");
}
