/* The OpenPose body, hand and face networks (ml/annotators/openpose.h) against the PyTorch
 * re-write of comfyui_controlnet_aux's bodypose_model / handpose_model / FaceNet (tests/reference/
 * make_openpose_goldens.py, make_pose_face_goldens.py) on tiny random networks in the real key
 * layout (the face one a torch.save'd .pth, as facenet.pth): the PAFs and heatmaps (the last
 * heatmap layer's ReLU kept, as the reference) within 1e-4; a body file given as the hand
 * network, a hand file as the face network, and a missing tensor, named. */
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

static void test_face(void)
{
    run_net("pose_face.pth", SD_POSE_FACE_NET, "pose_face.bin", NULL);
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
    CHECK_EQ_INT(sd_pose_inspect(ctx, hand, SD_POSE_FACE_NET), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "pose_hand.safetensors: OpenPose face network: tensor "
                                               "'conv6_2_CPM.weight' or its bias has the wrong shape");
    sd_safetensors_close(body);
    sd_safetensors_close(hand);
}

/* The largest difference between maps [h][w][c] at every step-th row and column and the
 * golden sub-sampled the same way. */
static double map_error(const double *maps, int64_t h, int64_t w, int c, int step, const float *want)
{
    double worst = 0;
    int64_t gh = (h + step - 1) / step, gw = (w + step - 1) / step;
    for (int64_t y = 0; y < gh; y++)
        for (int64_t x = 0; x < gw; x++)
            for (int k = 0; k < c; k++)
                worst = fmax(worst, fabs(maps[((y * step) * w + x * step) * c + k] - want[(y * gw + x) * c + k]));
    return worst;
}

/* Body.__call__'s maps of aux_in_up.u8 padded at resolution r against the goldens (heatmaps and
 * PAFs every hstep-th and pstep-th row and column). */
static void body_maps_case(int resolution, int64_t h, int64_t w, const char *heat_file, int hstep,
                           const char *paf_file, int pstep)
{
    sd_context *ctx = ops_cl()->ctx;
    size_t hn = (size_t)(((h + hstep - 1) / hstep) * ((w + hstep - 1) / hstep) * 19);
    size_t pn = (size_t)(((h + pstep - 1) / pstep) * ((w + pstep - 1) / pstep) * 38);
    unsigned char *px = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    float *want_heat = test_read_golden(heat_file, hn * sizeof(float));
    float *want_paf = test_read_golden(paf_file, pn * sizeof(float));
    sd_safetensors *st = open_golden("pose_body.safetensors");
    sd_pose_net *n = NULL;
    sd_img8 src = {.h = 48, .w = 40, .c = 3, .px = px}, padded = {0};
    int64_t th, tw;
    double *heat = NULL, *paf = NULL;
    if (!px || !want_heat || !want_paf || !st)
        goto done;
    CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &src, resolution, SD_AUX_CUBIC, &padded, &th, &tw), SD_OK);
    CHECK(padded.h == h && padded.w == w);
    CHECK_EQ_INT(sd_pose_net_new(ops_cl(), st, SD_POSE_BODY, &n), SD_OK);
    CHECK_MSG(n && sd_pose_body_maps(ops_cl(), n, &padded, &heat, &paf) == SD_OK, "%s", sd_context_errmsg(ctx));
    if (heat && paf) {
        double worst_h = map_error(heat, h, w, 19, hstep, want_heat), worst_p = map_error(paf, h, w, 38, pstep, want_paf);
        printf("  body maps %lldx%lld: heatmap max abs error %.3g, PAF %.3g\n", (long long)h, (long long)w, worst_h,
               worst_p);
        /* the network's float error (about 1e-5 of maps reaching 10 and more), through the resizes */
        CHECK(worst_h < 1e-3 && worst_p < 1e-3);
    }
done:
    free(heat), free(paf), free(px), free(want_heat), free(want_paf);
    sd_img8_free(&padded);
    sd_pose_net_free(n);
    sd_safetensors_close(st);
}

/* Body.__call__'s maps (scale, pad, network, INTER_LANCZOS4 x8, crop, INTER_LANCZOS4 back) for
 * aux_in_up.u8 padded at resolution 192 (256 x 192, shrunk by INTER_AREA) and 64 (128 x 64,
 * enlarged by the 8-bit INTER_LANCZOS4) against make_openpose_node_goldens.py, within 1e-3 (the
 * resizes themselves equal cv2's: test_aux_image, test_pose_hand). */
static void test_body_maps(void)
{
    body_maps_case(192, 256, 192, "pose_node_heat.f32", 5, "pose_node_paf.f32", 10);
    body_maps_case(64, 128, 64, "pose_node_small_heat.f32", 4, "pose_node_small_paf.f32", 4);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_body);
    RUN(test_hand);
    RUN(test_face);
    RUN(test_wrong_files);
    RUN(test_body_maps);
    ops_cl_release();
    return test_summary("test_openpose");
}
