/* HED (ml/annotators/hed.h) against the PyTorch re-implementation of comfyui_controlnet_aux's
 * ControlNetHED_Apache2 and HEDdetector (goldens from tests/reference/make_hed_goldens.py on a
 * tiny random network in the real key layout): the architecture read from the shapes; the five
 * projections on the padded 128x64 test image; the edge map (safe off and on) made from the
 * reference projections, byte for byte, and from sdflow's own within one level; a file that is
 * not a HED network named with the missing tensor. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/hed.h"
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = AUX_NET_H, W = AUX_NET_W };

static sd_safetensors *open_tiny(void)
{
    return aux_open_golden_net(ctx, "hed_tiny.safetensors");
}

static void test_inspect(void)
{
    sd_safetensors *st = open_tiny();
    sd_hed_config c;
    CHECK_EQ_INT(sd_hed_inspect(ctx, st, &c), SD_OK);
    const int widths[5] = {4, 8, 8, 16, 16}, convs[5] = {2, 2, 3, 3, 3};
    for (int b = 0; b < 5; b++) {
        CHECK_EQ_INT(c.width[b], widths[b]);
        CHECK_EQ_INT(c.convs[b], convs[b]);
    }
    sd_safetensors_close(st);
}

/* The reference projections, [H >> k, W >> k] each. */
static float *golden_proj(int k)
{
    char name[32];
    snprintf(name, sizeof name, "hed_proj%d.f32", k + 1);
    return test_read_golden(name, sizeof(float) * (size_t)((H >> k) * (W >> k)));
}

static void test_forward_and_edges(void)
{
    unsigned char *want_edge = test_read_golden("hed_edge.u8", H * W), *want_safe = test_read_golden("hed_safe.u8", H * W);
    sd_safetensors *st = open_tiny();
    sd_hed *m = NULL;
    sd_dtensor *dx = aux_padded_input(ctx, cl, 1.0f), *proj[5] = {0};
    CHECK_EQ_INT(sd_hed_new(cl, st, &m), SD_OK);
    CHECK_EQ_INT(sd_hed_forward(m, dx, proj), SD_OK);
    float *ours[5], *ref[5];
    int64_t ph[5], pw[5];
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        ph[k] = H >> k, pw[k] = W >> k;
        ref[k] = golden_proj(k);
        ours[k] = calloc((size_t)(ph[k] * pw[k]), sizeof(float));
        CHECK(proj[k] && proj[k]->shape[2] == ph[k] && proj[k]->shape[3] == pw[k]);
        if (proj[k] && ref[k])
            CHECK_EQ_INT(sd_dtensor_download(proj[k], ours[k]), SD_OK);
        double d = ref[k] ? test_max_abs_diff(ours[k], ref[k], (size_t)(ph[k] * pw[k])) : 1e9;
        worst = d > worst ? d : worst;
    }
    printf("HED projections: max abs diff %.3g (values up to about 14)\n", worst);
    CHECK(worst < 1e-4);
    unsigned char *map = malloc(H * W);
    for (int safe = 0; safe < 2; safe++) {
        const unsigned char *want = safe ? want_safe : want_edge;
        CHECK_EQ_INT(sd_hed_edge_map(ctx, (const float *const *)ref, ph, pw, H, W, safe, map), SD_OK);
        int bad = 0, off = 0, maxd = 0;
        for (int i = 0; want && i < H * W; i++)
            bad += map[i] != want[i];
        CHECK_MSG(bad == 0, "edge map (safe %d) from the reference projections: %d samples differ", safe, bad);
        CHECK_EQ_INT(sd_hed_edge_map(ctx, (const float *const *)ours, ph, pw, H, W, safe, map), SD_OK);
        for (int i = 0; want && i < H * W; i++) {
            int d = abs(map[i] - want[i]);
            off += d != 0;
            maxd = d > maxd ? d : maxd;
        }
        printf("HED edge map (safe %d) from sdflow's projections: %d of %d samples off, by at most %d\n", safe, off,
               H * W, maxd);
        CHECK(maxd <= (safe ? 127 : 1) && off <= H * W / 200);
    }
    for (int k = 0; k < 5; k++) {
        sd_dtensor_free(proj[k]);
        free(ours[k]);
        free(ref[k]);
    }
    free(map);
    free(want_edge);
    free(want_safe);
    sd_dtensor_free(dx);
    sd_hed_free(m);
    sd_safetensors_close(st);
}

static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user, (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

static void test_not_hed(void)
{
    char *path = test_path(test_scratch_dir(), "norm_only.safetensors");
    sd_st_entry e = {.name = "norm", .dtype = SD_ST_F32, .ndim = 4, .shape = {1, 3, 1, 1}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, &e, 1, NULL, fill_zero, NULL), SD_OK);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    sd_hed_config c;
    CHECK_EQ_INT(sd_hed_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "norm_only.safetensors: not a HED network: tensor "
                                               "'block1.convs.0.weight' is missing");
    sd_safetensors_close(st);
    free(path);
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_forward_and_edges);
    RUN(test_not_hed);
    sd_context_free(ctx);
    return test_summary("test_hed");
}
