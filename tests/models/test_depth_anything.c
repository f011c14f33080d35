/* Depth Anything V2 (ml/annotators/depth_anything.h) against the PyTorch re-implementation of
 * comfyui_controlnet_aux's DepthAnythingV2Detector (goldens from
 * tests/reference/make_depth_goldens.py on a tiny random network saved with torch.save in the
 * real key layout): the architecture read from the .pth; infer_image's depth on the 48x40 test
 * image within 1e-4 relative; the detector's 8-bit plane at resolution 64 byte for byte; files
 * that are not the network named with the missing tensor. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/depth_anything.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = 48, W = 40, MH = 77, MW = 64 };

static void test_inspect(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "depth_tiny.pth");
    sd_depth_anything_config c;
    CHECK_EQ_INT(sd_depth_anything_inspect(ctx, st, &c), SD_OK);
    CHECK_EQ_INT(c.dim, 64);
    CHECK_EQ_INT(c.heads, 1);
    CHECK_EQ_INT(c.blocks, 4);
    CHECK_EQ_INT(c.hidden, 32);
    CHECK_EQ_INT(c.grid, 8);
    CHECK_EQ_INT(c.features, 8);
    const int out_ch[4] = {8, 8, 16, 16};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(c.layers[i], i);
        CHECK_EQ_INT(c.out_ch[i], out_ch[i]);
    }
    sd_safetensors_close(st);
}

static void test_infer_and_map(void)
{
    unsigned char *rgb = test_read_golden("aux_in_up.u8", H * W * 3), *want = test_read_golden("depth_map.u8", MH * MW);
    float *ref = test_read_golden("depth_raw.f32", sizeof(float) * H * W), *ours = calloc(H * W, sizeof(float));
    sd_safetensors *st = aux_open_golden_net(ctx, "depth_tiny.pth");
    sd_depth_anything *m = NULL;
    CHECK_EQ_INT(sd_depth_anything_new(cl, st, &m), SD_OK);
    sd_img8 img = {H, W, 3, rgb};
    if (m && rgb)
        CHECK_EQ_INT(sd_depth_anything_infer(m, &img, 518, ours), SD_OK);
    double worst = 0, peak = 0;
    for (int i = 0; ref && i < H * W; i++) {
        worst = fmax(worst, fabs(ours[i] - ref[i]));
        peak = fmax(peak, fabs(ref[i]));
    }
    printf("Depth Anything depth: max abs diff %.3g (peak %.3g)\n", worst, peak);
    CHECK(ref && worst <= 1e-4 * peak);
    for (int pass = 0; pass < 2 && want; pass++) { /* from the reference depth, then from ours */
        sd_img8 plane = {0}, padded = {0};
        int64_t th = 0, tw = 0;
        unsigned char map[H * W];
        CHECK_EQ_INT(sd_img8_new(ctx, H, W, 3, &plane), SD_OK);
        sd_depth_anything_map(pass ? ours : ref, H * W, map);
        for (int i = 0; i < H * W * 3; i++) /* repeated over 3 channels, as the detector does */
            plane.px[i] = map[i / 3];
        CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &plane, 64, SD_AUX_CUBIC, &padded, &th, &tw), SD_OK);
        CHECK(th == MH && tw == MW);
        int bad = 0;
        for (int y = 0; th == MH && tw == MW && y < MH; y++)
            for (int x = 0; x < MW; x++)
                bad += padded.px[(y * padded.w + x) * 3] != want[y * MW + x];
        CHECK_MSG(bad == 0, "8-bit depth (pass %d): %d samples differ", pass, bad);
        sd_img8_free(&plane);
        sd_img8_free(&padded);
    }
    sd_depth_anything_free(m);
    sd_safetensors_close(st);
    free(rgb), free(want), free(ref), free(ours);
}

static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user, (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

/* A file holding only the given tensors (zeros) is refused with `message`. */
static void check_refused(const sd_st_entry *e, size_t n, const char *message)
{
    char *path = test_path(test_scratch_dir(), "not_depth.safetensors");
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n, NULL, fill_zero, NULL), SD_OK);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    sd_depth_anything_config c;
    CHECK_EQ_INT(sd_depth_anything_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), message);
    sd_safetensors_close(st);
    free(path);
}

static void test_not_depth(void)
{
    sd_st_entry e[4] = {{.name = "norm", .dtype = SD_ST_F32, .ndim = 1, .shape = {3}},
                        {.name = "pretrained.patch_embed.proj.weight", .dtype = SD_ST_F32, .ndim = 4, .shape = {64, 3, 14, 14}},
                        {.name = "pretrained.pos_embed", .dtype = SD_ST_F32, .ndim = 3, .shape = {1, 5, 64}},
                        {.name = "pretrained.blocks.0.mlp.w12.weight", .dtype = SD_ST_F32, .ndim = 2, .shape = {64, 64}}};
    check_refused(e, 1, "not_depth.safetensors: not a Depth Anything V2 network: tensor "
                        "'pretrained.patch_embed.proj.weight' is missing");
    check_refused(e + 1, 2, "not_depth.safetensors: not a Depth Anything V2 network: tensor "
                            "'pretrained.patch_embed.proj.bias' is missing");
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_infer_and_map);
    RUN(test_not_depth);
    sd_context_free(ctx);
    return test_summary("test_depth_anything");
}
