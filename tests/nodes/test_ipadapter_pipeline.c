/* graphs/ipadapter.xml end to end against a whole 6-step run of diffusers + transformers +
 * k-diffusion with an IP-Adapter (tests/reference/make_ipadapter_pipeline_goldens.py): the tiny
 * checkpoint of test_pipeline.c, the tiny CLIP vision model on the pipeline's input image, a plain
 * IP-Adapter at weight 0.8; and graphs/ipadapter-faceid-embeds.xml the same way with a FaceID adapter and
 * its LoRA (make_ipadapter_faceid_pipeline_goldens.py). The adapter's contribution to the final
 * latent (the run with it minus the run without, pipeline_euler.bin) must reach 40 dB against the
 * reference's. */
#include "test.h"
#include "core/run.h"
#include "ml/families/sd1_layout.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The adapter's contribution to the final latent t (minus pipeline_euler.bin) against the
 * reference run's (golden minus pipeline_euler.bin): at least 40 dB. */
static void check_contribution(const sd_tensor *t, const char *golden, const char *what)
{
    float *ref = test_read_sdg1(golden, 4, LAT_N), *base = test_read_sdg1("pipeline_euler.bin", 4, LAT_N);
    if (t && ref && base && t->shape[2] == LAT && t->shape[3] == LAT) {
        float got[LAT_N], want[LAT_N], lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < LAT_N; i++) {
            got[i] = t->data[i] - base[i];
            want[i] = ref[i] - base[i];
            lo = fminf(lo, want[i]), hi = fmaxf(hi, want[i]);
        }
        double db = test_psnr(got, want, LAT_N, hi - lo);
        fprintf(stderr, "  %s's contribution to the latent: %.1f dB (max abs diff of the latents %.3g)\n", what, db,
                test_max_abs_diff(t->data, ref, LAT_N));
        CHECK_MSG(db >= 40, "%s: contribution PSNR %.1f < 40 dB", what, db);
    } else {
        CHECK_MSG(false, "%s: no 1x4x8x8 latent or goldens", what);
    }
    free(ref), free(base);
}

/* Runs graphs/<graph> with the pipeline's prompts, sampler and checkpoint (written to ckpt) plus
 * the given parameters; checks the sampler's latent against golden. models: a models directory
 * to search, or NULL. */
static void pipeline_case(const char *graph, const char *const (*set)[2], size_t n_set, const char *models,
                          const char *golden, const char *what)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true);
    sd_context_set_cache_path(ctx, NULL);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    if (models) {
        sd_context_clear_models_dirs(ctx);
        CHECK_EQ_INT(sd_context_add_models_dir(ctx, models), SD_OK);
    }
    char *graph_path = test_path(test_source_dir(), graph);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, graph_path, &g), SD_OK);
    const char *common[][2] = {
        {"prompt", "a red fox (in the snow:1.3), photograph"}, {"negative", "blurry"}, {"seed", "7"},
        {"steps", "6"}, {"cfg", "7.5"}, {"sampler", "euler"}, {"scheduler", "normal"}, {"width", "64"},
        {"height", "64"},
    };
    for (size_t i = 0; g && i < sizeof common / sizeof common[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, common[i][0], common[i][1]), SD_OK);
    for (size_t i = 0; g && i < n_set; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    if (g)
        CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK);
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID;
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *lat = st ? NULL : sd_result_value(res, "sampler", "LATENT");
    check_contribution(lat ? sd_value_tensor(lat, "samples") : NULL, golden, what);
    sd_result_free(res);
    sd_graph_free(g);
    free(graph_path);
    sd_context_free(ctx);
}

/* The tiny checkpoint of test_pipeline.c at path. */
static void write_checkpoint(const char *path)
{
    sd_context *ctx = NULL;
    sd_checkpoint_config cfg;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 42), SD_OK);
    sd_context_free(ctx);
}

static void test_ipadapter_run(void)
{
    char *ckpt = test_path(test_scratch_dir(), "tiny.safetensors"), *input = write_input_png();
    char *cv = test_golden_path("clip_vision_hf.safetensors"), *ipa = test_golden_path("ipa_pipeline.safetensors");
    write_checkpoint(ckpt);
    const char *const set[][2] = {
        {"checkpoint", ckpt}, {"clip_vision", cv}, {"ipadapter", ipa}, {"image", input}, {"weight", "0.8"},
    };
    pipeline_case("graphs/ipadapter.xml", set, sizeof set / sizeof set[0], NULL, "pipeline_ipadapter.bin",
                  "the IP-Adapter");
    free(ckpt), free(input), free(cv), free(ipa);
}

/* Links golden file `name` into the models directory as <folder>/<as>. */
static void link_model(const char *models, const char *folder, const char *name, const char *as)
{
    char *dir = test_path(models, folder), *target = test_golden_path(name), *link = test_path(dir, as);
    mkdir(dir, 0755);
    unlink(link);
    CHECK_MSG(symlink(target, link) == 0, "symlink %s", link);
    free(dir), free(target), free(link);
}

/* graphs/ipadapter-faceid-embeds.xml with the FACEID preset found by name (adapter, LoRA at 0.6, CLIP
 * vision) and precomputed embeddings, against the diffusers run with the FaceID adapter and the
 * LoRA patched in (make_ipadapter_faceid_pipeline_goldens.py). */
static void test_faceid_run(void)
{
    char *models = test_path(test_scratch_dir(), "faceid-models"), *input = write_input_png();
    char *dir = test_path(models, "checkpoints"), *ckpt = test_path(dir, "tiny.safetensors");
    char *embeds = test_golden_path("faceid_pipeline_embeds.safetensors");
    mkdir(models, 0755);
    mkdir(dir, 0755);
    write_checkpoint(ckpt);
    link_model(models, "clip_vision", "clip_vision_hf.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors");
    link_model(models, "ipadapter", "ipa_faceid_pipeline.safetensors", "ip-adapter-faceid_sd15.safetensors");
    link_model(models, "loras", "ipa_faceid_pipeline_lora.safetensors", "ip-adapter-faceid_sd15_lora.safetensors");
    const char *const set[][2] = {
        {"checkpoint", "tiny.safetensors"}, {"preset", "FACEID"}, {"lora_strength", "0.6"}, {"embeds", embeds},
        {"image", input}, {"weight", "0.8"},
    };
    pipeline_case("graphs/ipadapter-faceid-embeds.xml", set, sizeof set / sizeof set[0], models, "pipeline_faceid.bin",
                  "FaceID with its LoRA");
    free(models), free(input), free(dir), free(ckpt), free(embeds);
}

int main(void)
{
    RUN(test_ipadapter_run);
    RUN(test_faceid_run);
    return test_summary("test_ipadapter_pipeline");
}
