/* LatentUpscale / LatentUpscaleBy: comfy.utils.common_upscale on latents against torch
 * (F.interpolate modes) and ComfyUI's bislerp (goldens from
 * tests/reference/make_latent_upscale_goldens.py, whose bislerp matches ComfyUI's bit for bit),
 * including zero, parallel and opposite channel vectors and the centre crop; the nodes' size
 * rules (64-pixel minimum, one side 0 keeps the aspect ratio, Python rounding) through the
 * scheduler. */
#include "test.h"
#include "core/run.h"
#include "nodes/latent_resize.h"
#include "support/golden.h"
#include <stdlib.h>

static sd_context *ctx;
enum { N = 2, C = 4, H = 9, W = 11 };

static void test_goldens(void)
{
    static const char *const cases[] = {"up", "down", "crop"};
    static const int64_t sizes[3][2] = {{14, 16}, {5, 7}, {12, 8}};
    float *x = test_read_golden("latent_up_input.f32", N * C * H * W * 4);
    if (!x)
        return;
    sd_tensor in = {.ndim = 4, .shape = {N, C, H, W}, .data = x};
    double worst[8] = {0};
    for (int m = 0; sd_latent_upscale_methods[m]; m++)
        for (int k = 0; k < 3; k++) {
            int64_t oh = sizes[k][0], ow = sizes[k][1];
            size_t n = (size_t)(N * C * oh * ow);
            char name[64];
            snprintf(name, sizeof name, "latent_up_%s_%s.f32", sd_latent_upscale_methods[m], cases[k]);
            float *ref = test_read_golden(name, n * 4), *got = malloc(n * sizeof *got);
            sd_tensor out = {.ndim = 4, .shape = {N, C, oh, ow}, .data = got};
            sd_status st = sd_latent_common_upscale(ctx, &in, ow, oh, sd_latent_upscale_methods[m], k == 2, &out);
            CHECK_MSG(st == SD_OK, "%s: %s", name, sd_context_errmsg(ctx));
            if (ref && st == SD_OK) {
                /* Values of about +-3: fp32 interpolation and slerp (acos/sin in float) stay within
                 * 2e-5 of torch (measured: nearest-exact exact, area 2.4e-7,
                 * bilinear 1.4e-6, bislerp 1.8e-6, bicubic 2.9e-6). */
                double d = test_max_abs_diff(got, ref, n);
                CHECK_MSG(d <= 2e-5, "%s: max abs diff %g", name, d);
                worst[m] = d > worst[m] ? d : worst[m];
            }
            free(ref);
            free(got);
        }
    for (int m = 0; sd_latent_upscale_methods[m]; m++)
        fprintf(stderr, "  %s: max abs diff %.3g\n", sd_latent_upscale_methods[m], worst[m]);
    sd_tensor out = {.ndim = 4, .shape = {N, C, 3, 3}, .data = x};
    CHECK_EQ_INT(sd_latent_common_upscale(ctx, &in, 3, 3, "lanczos", false, &out), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "unknown latent upscale method 'lanczos'");
    free(x);
}

/* Runs EmptyLatentImage (w x h pixels) -> `type` with the given inputs; returns the output's
 * samples shape in *shape (zeros when the run fails). */
static void run_node(const char *type, int w, int h, const char *const *kv, int64_t shape[4], bool *same_value)
{
    sd_graph *g = NULL;
    char wt[16], ht[16];
    snprintf(wt, sizeof wt, "%d", w);
    snprintf(ht, sizeof ht, "%d", h);
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyLatentImage", "e", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "e", "width", wt), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "e", "height", ht), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, type, "u", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "e", "LATENT", "u", "samples"), SD_OK);
    for (int i = 0; kv[i]; i += 2)
        CHECK_EQ_INT(sd_graph_set_input(g, "u", kv[i], kv[i + 1]), SD_OK);
    const char *outs[] = {"u", "e"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 2, .no_cache = true};
    sd_result *res = NULL;
    memset(shape, 0, 4 * sizeof *shape);
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s: %s", type, sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, "u", "LATENT");
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    if (t)
        memcpy(shape, t->shape, 4 * sizeof *shape);
    if (same_value)
        *same_value = v && v == sd_result_value(res, "e", "LATENT");
    sd_result_free(res);
    sd_graph_free(g);
}

static void expect_shape(const int64_t *got, int64_t h, int64_t w)
{
    CHECK_MSG(got[0] == 1 && got[1] == 4 && got[2] == h && got[3] == w, "shape [%lld, %lld, %lld, %lld], want [1, 4, %lld, %lld]",
              (long long)got[0], (long long)got[1], (long long)got[2], (long long)got[3], (long long)h, (long long)w);
}

static void test_node_sizes(void)
{
    int64_t s[4];
    bool same = false;
    /* 8x12 latent by 1.5 -> 12x18; by 1.25 -> round(10) x round(15). */
    run_node("LatentUpscaleBy", 64, 96, (const char *const[]){"scale_by", "1.5", "upscale_method", "bislerp", NULL}, s, NULL);
    expect_shape(s, 18, 12);
    run_node("LatentUpscaleBy", 80, 96, (const char *const[]){"scale_by", "1.25", NULL}, s, NULL);
    expect_shape(s, 15, 12); /* 12 * 1.25 = 15, 10 * 1.25 = 12.5 -> 12 (half to even) */
    /* Width 0: height 200 keeps the aspect: round(8 * 200 / 12) = 133 -> 16; 200 -> 25. */
    run_node("LatentUpscale", 64, 96, (const char *const[]){"width", "0", "height", "200", NULL}, s, NULL);
    expect_shape(s, 25, 16);
    /* Sizes below 64 become 64 (8 latent pixels). */
    run_node("LatentUpscale", 64, 96, (const char *const[]){"width", "30", "height", "100", "upscale_method", "area", NULL},
             s, NULL);
    expect_shape(s, 12, 8);
    /* Both 0: the input passes through as it is. */
    run_node("LatentUpscale", 64, 96, (const char *const[]){"width", "0", "height", "0", NULL}, s, &same);
    expect_shape(s, 12, 8);
    CHECK(same);
    run_node("LatentUpscale", 64, 96,
             (const char *const[]){"width", "128", "height", "128", "crop", "center", "upscale_method", "bicubic", NULL}, s,
             NULL);
    expect_shape(s, 16, 16);
}

int main(void)
{
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_goldens);
    RUN(test_node_sizes);
    sd_context_free(ctx);
    return test_summary("test_latent_upscale");
}
