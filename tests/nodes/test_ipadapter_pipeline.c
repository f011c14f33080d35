/* graphs/ipadapter.xml end to end against a whole 6-step run of diffusers + transformers +
 * k-diffusion with an IP-Adapter (tests/reference/make_ipadapter_pipeline_goldens.py): the tiny
 * checkpoint of test_pipeline.c, the tiny CLIP vision model on the pipeline's input image, a plain
 * IP-Adapter at weight 0.8. The adapter's contribution to the final latent (the run with it minus
 * the run without, pipeline_euler.bin) must reach 40 dB against the reference's. */
#include "test.h"
#include "core/run.h"
#include "ml/families/sd1_layout.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT };

static char *write_input_png(void)
{
    static unsigned char px[SIZE * SIZE * 3];
    for (int y = 0; y < SIZE; y++)
        for (int x = 0; x < SIZE; x++)
            for (int c = 0; c < 3; c++)
                px[(y * SIZE + x) * 3 + c] = (unsigned char)((5 * x + 3 * y + 70 * c + (x * y) % 7) % 256);
    fixture fx = {.w = SIZE, .h = SIZE, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    return write_fixture("ipa_input.png", &fx);
}

static void test_ipadapter_run(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true);
    sd_context_set_cache_path(ctx, NULL);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    char *ckpt = test_path(test_scratch_dir(), "tiny.safetensors"), *input = write_input_png();
    char *cv = test_golden_path("clip_vision_hf.safetensors"), *ipa = test_golden_path("ipa_pipeline.safetensors");
    char *graph_path = test_path(test_source_dir(), "graphs/ipadapter.xml");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ckpt, &cfg, SD_ST_F32, 42), SD_OK);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, graph_path, &g), SD_OK);
    const char *set[][2] = {
        {"checkpoint", ckpt}, {"clip_vision", cv}, {"ipadapter", ipa}, {"image", input}, {"weight", "0.8"},
        {"prompt", "a red fox (in the snow:1.3), photograph"}, {"negative", "blurry"}, {"seed", "7"},
        {"steps", "6"}, {"cfg", "7.5"}, {"sampler", "euler"}, {"scheduler", "normal"}, {"width", "64"},
        {"height", "64"},
    };
    for (size_t i = 0; g && i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    if (g)
        CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK);
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID;
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *lat = st ? NULL : sd_result_value(res, "sampler", "LATENT");
    const sd_tensor *t = lat ? sd_value_tensor(lat, "samples") : NULL;
    float *ref = test_read_sdg1("pipeline_ipadapter.bin", 4, LAT_N), *base = test_read_sdg1("pipeline_euler.bin", 4, LAT_N);
    if (t && ref && base && t->shape[2] == LAT && t->shape[3] == LAT) {
        float got[LAT_N], want[LAT_N], lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < LAT_N; i++) {
            got[i] = t->data[i] - base[i];
            want[i] = ref[i] - base[i];
            lo = fminf(lo, want[i]), hi = fmaxf(hi, want[i]);
        }
        double db = test_psnr(got, want, LAT_N, hi - lo);
        fprintf(stderr, "  the IP-Adapter's contribution to the latent: %.1f dB (max abs diff of the latents %.3g)\n",
                db, test_max_abs_diff(t->data, ref, LAT_N));
        CHECK_MSG(db >= 40, "contribution PSNR %.1f < 40 dB", db);
    } else {
        CHECK_MSG(false, "no 1x4x8x8 latent or goldens");
    }
    free(ref), free(base);
    sd_result_free(res);
    sd_graph_free(g);
    free(ckpt), free(input), free(cv), free(ipa), free(graph_path);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_ipadapter_run);
    return test_summary("test_ipadapter_pipeline");
}
