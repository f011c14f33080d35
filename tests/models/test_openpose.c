/* The OpenPose body and hand networks (ml/annotators/openpose.h) against the PyTorch re-write of
 * comfyui_controlnet_aux's bodypose_model / handpose_model (tests/reference/
 * make_openpose_goldens.py) on tiny random networks in the real key layout: the PAFs and
 * heatmaps (the last heatmap layer's ReLU kept, as the reference) within 1e-4; a body file given
 * as the hand network, and a missing tensor, named. */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "ml/annotators/aux_image.h"
#include "ml/annotators/openpose.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4

static sd_safetensors *open_golden(const char *name)
{
    char *path = test_golden_path(name);
    sd_safetensors *st = NULL;
    CHECK_MSG(sd_safetensors_open(ops_cl()->ctx, path, &st) == SD_OK, "%s", sd_context_errmsg(ops_cl()->ctx));
    free(path);
    return st;
}

static sd_dtensor *input(void)
{
    enum { N = 3 * 48 * 40 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; x && i < N; i++)
        x[i] = (float)(sin(0.11 * i + 0.3) / 2);
    sd_dtensor *t = x ? ops_upload(x, 4, (const int64_t[]){1, 3, 48, 40}) : NULL;
    free(x);
    return t;
}

static void expect_golden(const char *name, const sd_dtensor *t)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden(name, &nd, shape), *got = t ? ops_download(t) : NULL;
    if (ref && got && t->numel == (size_t)(shape[0] * shape[1] * shape[2] * shape[3]))
        printf("  %s: max abs error %.3g\n", name, ops_max_diff(got, ref, t->numel));
    CHECK(ops_expect(name, t, nd, shape, ref, TOL, TOL));
    free(ref);
    free(got);
}

static void run_net(const char *file, sd_pose_kind kind, const char *g0, const char *g1)
{
    sd_safetensors *st = open_golden(file);
    sd_pose_net *n = NULL;
    sd_dtensor *x = input(), *out[2] = {0};
    if (st)
        CHECK_MSG(sd_pose_net_new(ops_cl(), st, kind, &n) == SD_OK, "%s", sd_context_errmsg(ops_cl()->ctx));
    if (n && x)
        CHECK_MSG(sd_pose_net_forward(n, x, out) == SD_OK, "%s", sd_context_errmsg(ops_cl()->ctx));
    expect_golden(g0, out[0]);
    if (g1)
        expect_golden(g1, out[1]);
    else
        CHECK(out[1] == NULL);
    sd_dtensor_free(out[0]);
    sd_dtensor_free(out[1]);
    sd_dtensor_free(x);
    sd_pose_net_free(n);
    sd_safetensors_close(st);
}

static void test_body(void)
{
    run_net("pose_body.safetensors", SD_POSE_BODY, "pose_body_paf.bin", "pose_body_heat.bin");
}

static void test_hand(void)
{
    run_net("pose_hand.safetensors", SD_POSE_HAND_NET, "pose_hand.bin", NULL);
}

static void test_wrong_files(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_safetensors *body = open_golden("pose_body.safetensors"), *hand = open_golden("pose_hand.safetensors");
    if (!body || !hand)
        return;
    CHECK_EQ_INT(sd_pose_inspect(ctx, body, SD_POSE_HAND_NET), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "pose_body.safetensors: not an OpenPose hand network: tensor "
                                               "'conv4_3.weight' is missing");
    CHECK_EQ_INT(sd_pose_inspect(ctx, hand, SD_POSE_BODY), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "pose_hand.safetensors: not an OpenPose body network: tensor "
                                               "'conv4_3_CPM.weight' is missing");
    sd_safetensors_close(body);
    sd_safetensors_close(hand);
}

/* Body.__call__'s maps (scale, pad, network, INTER_LANCZOS4 x8, crop, INTER_LANCZOS4 back) for
 * aux_in_up.u8 padded at resolution 192 (256 x 192) against make_openpose_node_goldens.py:
 * every 5th row and column of the heatmaps, every 10th of the PAFs, within 1e-3 (the
 * resizes themselves equal cv2's: test_aux_image). */
static void test_body_maps(void)
{
    sd_context *ctx = ops_cl()->ctx;
    unsigned char *px = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    float *want_heat = test_read_golden("pose_node_heat.f32", 52 * 39 * 19 * sizeof(float));
    float *want_paf = test_read_golden("pose_node_paf.f32", 26 * 20 * 38 * sizeof(float));
    sd_safetensors *st = open_golden("pose_body.safetensors");
    sd_pose_net *n = NULL;
    sd_img8 src = {.h = 48, .w = 40, .c = 3, .px = px}, padded = {0};
    int64_t th, tw;
    double *heat = NULL, *paf = NULL;
    if (!px || !want_heat || !want_paf || !st)
        goto done;
    CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &src, 192, SD_AUX_CUBIC, &padded, &th, &tw), SD_OK);
    CHECK(padded.h == 256 && padded.w == 192);
    CHECK_EQ_INT(sd_pose_net_new(ops_cl(), st, SD_POSE_BODY, &n), SD_OK);
    CHECK_MSG(n && sd_pose_body_maps(ops_cl(), n, &padded, &heat, &paf) == SD_OK, "%s", sd_context_errmsg(ctx));
    double worst_h = 0, worst_p = 0;
    for (int y = 0; heat && y < 52; y++)
        for (int x = 0; x < 39; x++)
            for (int c = 0; c < 19; c++)
                worst_h = fmax(worst_h, fabs(heat[((size_t)(5 * y) * 192 + (size_t)(5 * x)) * 19 + (size_t)c] -
                                             want_heat[(y * 39 + x) * 19 + c]));
    for (int y = 0; paf && y < 26; y++)
        for (int x = 0; x < 20; x++)
            for (int c = 0; c < 38; c++)
                worst_p = fmax(worst_p, fabs(paf[((size_t)(10 * y) * 192 + (size_t)(10 * x)) * 38 + (size_t)c] -
                                            want_paf[(y * 20 + x) * 38 + c]));
    printf("  body maps: heatmap max abs error %.3g, PAF %.3g\n", worst_h, worst_p);
    /* the network's float error (about 1e-5 of maps reaching 10 and more), through the resizes */
    CHECK(heat && paf && worst_h < 1e-3 && worst_p < 1e-3);
    /* a detect image of 184 rows is refused */
    sd_img8 low = {.h = 184, .w = 40, .c = 3, .px = padded.px};
    double *h2 = NULL, *p2 = NULL;
    CHECK_EQ_INT(sd_pose_body_maps(ops_cl(), n, &low, &h2, &p2), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "must be taller than 184 pixels");
done:
    free(heat), free(paf), free(px), free(want_heat), free(want_paf);
    sd_img8_free(&padded);
    sd_pose_net_free(n);
    sd_safetensors_close(st);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_body);
    RUN(test_hand);
    RUN(test_wrong_files);
    RUN(test_body_maps);
    ops_cl_release();
    return test_summary("test_openpose");
}
