/* SDXL through the nodes on the tiny checkpoints (sdflow_mkckpt --preset sdxl-tiny --seed 11,
 * --preset sdxl-refiner-tiny --seed 12, f32):
 * - a whole KSampler run (euler, normal, 5 steps, cfg 6, seed 99, 64x64) with CLIPTextEncode
 *   prompts against tests/reference/make_sdxl_goldens.py (diffusers UNet, transformers CLIP-L and
 *   bigG, the ADM vector of ComfyUI's defaults for a plain prompt: the image size), and the same
 *   run with the refiner taking over at step 3 through two KSamplerAdvanced (the refiner's
 *   aesthetic-score defaults), compared on the model's contribution (final latent minus the scaled
 *   initial noise) by PSNR;
 * - CLIPTextEncodeSDXL with the same size numbers gives the same latent bit for bit, other
 *   numbers another one; CLIPTextEncodeSDXLRefiner on the refiner;
 * - family checks before running: a refiner's CLIP in CLIPTextEncodeSDXL, an SDXL conditioning
 *   on the refiner model, an SD1 CLIP in CLIPTextEncodeSDXLRefiner. */
#include "test.h"
#include "core/context.h"
#include "ml/families/sd1_layout.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT };
#define SCALE 0.13025f

static char *g_dir; /* models/checkpoints with base.safetensors, refiner.safetensors, sd1.safetensors */

static sd_context *new_context(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, g_dir), SD_OK);
    return ctx;
}

static bool write_checkpoints(void)
{
    sd_context *ctx;
    if (sd_context_new(&ctx))
        return false;
    g_dir = test_path(test_scratch_dir(), "models");
    char *ckpts = test_path(g_dir, "checkpoints");
    bool ok = mkdir(g_dir, 0755) == 0 && mkdir(ckpts, 0755) == 0;
    static const struct {
        const char *preset, *file;
        uint64_t seed;
    } files[] = {{"sdxl-tiny", "base.safetensors", 11}, {"sdxl-refiner-tiny", "refiner.safetensors", 12},
                 {"tiny", "sd1.safetensors", 42}};
    for (size_t i = 0; ok && i < sizeof files / sizeof files[0]; i++) {
        sd_checkpoint_config cfg;
        char *path = test_path(ckpts, files[i].file);
        ok = sd_checkpoint_preset(files[i].preset, &cfg) && !sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, files[i].seed);
        free(path);
    }
    if (!ok)
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
    free(ckpts);
    sd_context_free(ctx);
    return ok;
}

#define CKPT(id, file) \
    "<node id='" id "' type='CheckpointLoaderSimple'><input name='ckpt_name'>" file "</input></node>"
#define ENCODE(id, ckpt, text) \
    "<node id='" id "' type='CLIPTextEncode'><input name='clip' from='" ckpt "' output='CLIP'/>" \
    "<input name='text'>" text "</input></node>"
#define ENCODE_SDXL(id, ckpt, size, text) \
    "<node id='" id "' type='CLIPTextEncodeSDXL'><input name='clip' from='" ckpt "' output='CLIP'/>" \
    "<input name='width'>" size "</input><input name='height'>" size "</input>" \
    "<input name='target_width'>" size "</input><input name='target_height'>" size "</input>" \
    "<input name='text_g'>" text "</input><input name='text_l'>" text "</input></node>"
#define ENCODE_REFINER(id, ckpt, ascore, text) \
    "<node id='" id "' type='CLIPTextEncodeSDXLRefiner'><input name='clip' from='" ckpt "' output='CLIP'/>" \
    "<input name='ascore'>" ascore "</input><input name='text'>" text "</input></node>"
#define EMPTY "<node id='e' type='EmptyLatentImage'><input name='width'>64</input><input name='height'>64</input></node>"
#define SAMPLER(ckpt, pos, neg) \
    "<node id='ks' type='KSampler'><input name='model' from='" ckpt "' output='MODEL'/>" \
    "<input name='seed'>99</input><input name='steps'>5</input><input name='cfg'>6</input>" \
    "<input name='sampler_name'>euler</input><input name='scheduler'>normal</input>" \
    "<input name='positive' from='" pos "' output='CONDITIONING'/><input name='negative' from='" neg "' " \
    "output='CONDITIONING'/><input name='latent_image' from='e' output='LATENT'/></node>"

/* Runs a <workflow> body up to the sampler's latent (LAT_N floats, malloc'd; NULL on failure). */
static float *run_latent(const char *body)
{
    sd_context *ctx = new_context();
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "sdxl.xml", &g), SD_OK);
    float *out = g ? test_run_latent(g, "ks", LAT_N) : NULL;
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
    return out;
}

/* The model's contribution to a final LATENT (the VAE's latents): latent * scale minus the initial
 * noise as the sampler scaled it (sqrt(1 + sigma_max^2) for a full denoise). */
static void contribution(const float *latent, const float *noise, float *out)
{
    const double sigma_max = 14.614641189575195; /* the SD schedule's sigma at t = 999 */
    for (int i = 0; i < LAT_N; i++)
        out[i] = latent[i] * SCALE - noise[i] * (float)sqrt(1.0 + sigma_max * sigma_max);
}

/* Compares a final latent with the golden `ref_name` on the model's contribution by PSNR over the
 * reference's range (>= 40 dB). */
static void expect_contribution(const float *got, const char *ref_name, const char *what)
{
    float *ref = test_read_sdg1(ref_name, 4, LAT_N), *noise = test_read_sdg1("sdxl_sample_noise.bin", 4, LAT_N);
    CHECK(got && ref && noise);
    if (got && ref && noise) {
        float cg[LAT_N], cr[LAT_N], lo = INFINITY, hi = -INFINITY;
        contribution(got, noise, cg);
        contribution(ref, noise, cr);
        for (int i = 0; i < LAT_N; i++)
            lo = fminf(lo, cr[i]), hi = fmaxf(hi, cr[i]);
        double psnr = test_psnr(cg, cr, LAT_N, hi - lo);
        printf("  %s: model contribution PSNR %.1f dB vs diffusers\n", what, psnr);
        CHECK(psnr >= 40.0);
    }
    free(ref);
    free(noise);
}

static void test_sample_against_diffusers(void)
{
    float *got = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "")
                            EMPTY SAMPLER("ck", "p", "n"));
    expect_contribution(got, "sdxl_sample_final.bin", "SDXL euler 5 steps");
    free(got);
}

/* One KSamplerAdvanced of graphs/sdxl-refiner.xml's pair (euler, normal, 5 steps, cfg 6, seed 99). */
#define ADVANCED(id, ckpt, pos, neg, latent, noise, start, end, leftover) \
    "<node id='" id "' type='KSamplerAdvanced'><input name='model' from='" ckpt "' output='MODEL'/>" \
    "<input name='add_noise'>" noise "</input><input name='noise_seed'>99</input><input name='steps'>5</input>" \
    "<input name='cfg'>6</input><input name='sampler_name'>euler</input><input name='scheduler'>normal</input>" \
    "<input name='positive' from='" pos "' output='CONDITIONING'/><input name='negative' from='" neg "' " \
    "output='CONDITIONING'/><input name='latent_image' from='" latent "' output='LATENT'/>" \
    "<input name='start_at_step'>" start "</input><input name='end_at_step'>" end "</input>" \
    "<input name='return_with_leftover_noise'>" leftover "</input></node>"

/* The base samples steps 0-2 and hands its latent with the leftover noise to the refiner, which
 * finishes the schedule (plain prompts: the refiner's ADM vectors take the aesthetic-score
 * defaults 6 and 2.5), against the reference run with the model switched at step 3. */
static void test_refine_against_diffusers(void)
{
    float *got = run_latent(CKPT("ck", "base.safetensors") CKPT("rf", "refiner.safetensors")
                            ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "")
                            ENCODE("rp", "rf", "a photo of a cat") ENCODE("rn", "rf", "") EMPTY
                            ADVANCED("base", "ck", "p", "n", "e", "enable", "0", "3", "enable")
                            ADVANCED("ks", "rf", "rp", "rn", "base", "disable", "3", "10000", "disable"));
    expect_contribution(got, "sdxl_refine_final.bin", "SDXL base 3 steps + refiner 2 steps");
    free(got);
}

static void test_sdxl_encode_node(void)
{
    float *plain = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a cat")
                              ENCODE("n", "ck", "") EMPTY SAMPLER("ck", "p", "n"));
    /* The size conditioning a plain prompt gets (the image size) given explicitly: the same run. */
    float *same = run_latent(CKPT("ck", "base.safetensors") ENCODE_SDXL("p", "ck", "64", "a photo of a cat")
                             ENCODE_SDXL("n", "ck", "64", "") EMPTY SAMPLER("ck", "p", "n"));
    float *other = run_latent(CKPT("ck", "base.safetensors") ENCODE_SDXL("p", "ck", "1024", "a photo of a cat")
                              ENCODE_SDXL("n", "ck", "1024", "") EMPTY SAMPLER("ck", "p", "n"));
    CHECK(plain && same && other);
    if (plain && same && other) {
        CHECK(memcmp(plain, same, sizeof(float) * LAT_N) == 0);
        CHECK(memcmp(plain, other, sizeof(float) * LAT_N) != 0);
    }
    free(plain);
    free(same);
    free(other);
}

static void test_refiner(void)
{
    float *a = run_latent(CKPT("ck", "refiner.safetensors") ENCODE_REFINER("p", "ck", "6", "a photo of a cat")
                          ENCODE_REFINER("n", "ck", "2.5", "") EMPTY SAMPLER("ck", "p", "n"));
    /* A plain prompt gets ComfyUI's default aesthetic scores (6, and 2.5 on the negative side). */
    float *b = run_latent(CKPT("ck", "refiner.safetensors") ENCODE("p", "ck", "a photo of a cat")
                          ENCODE("n", "ck", "") EMPTY SAMPLER("ck", "p", "n"));
    float *c = run_latent(CKPT("ck", "refiner.safetensors") ENCODE_REFINER("p", "ck", "9", "a photo of a cat")
                          ENCODE_REFINER("n", "ck", "2.5", "") EMPTY SAMPLER("ck", "p", "n"));
    CHECK(a && b && c);
    bool finite = true;
    for (int i = 0; a && i < LAT_N; i++)
        finite &= isfinite(a[i]);
    CHECK(finite);
    /* CLIPTextEncodeSDXLRefiner's size defaults to 1024, the plain prompt's to the image size. */
    if (a && b && c)
        CHECK(memcmp(a, b, sizeof(float) * LAT_N) != 0 && memcmp(a, c, sizeof(float) * LAT_N) != 0);
    free(a);
    free(b);
    free(c);
}

/* Validates `body` and expects n problems, problem k containing msgs[k]. */
static void expect_problems(const char *body, size_t n, const char *const *msgs)
{
    sd_context *ctx = new_context();
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "sdxl.xml", &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), n);
        for (size_t k = 0; k < n && k < sd_context_diag_count(ctx); k++)
            CHECK_STR_CONTAINS(sd_context_diag(ctx, k), msgs[k]);
    }
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
}

static void test_family_checks(void)
{
    expect_problems(CKPT("ck", "refiner.safetensors") ENCODE_SDXL("p", "ck", "64", "a") EMPTY SAMPLER("ck", "p", "p"), 1,
                    (const char *[]){"sdxl.xml:1: node 'p' input 'clip': the text encoders are SDXL refiner; this node "
                                     "takes SDXL ones"});
    expect_problems(CKPT("ck", "sd1.safetensors") ENCODE_REFINER("p", "ck", "6", "a"), 1,
                    (const char *[]){"node 'p' input 'clip': the text encoders are SD1.x; this node takes SDXL "
                                     "refiner ones"});
    /* Base then refiner with the base's conditioning on the refiner model: both sides named. */
    expect_problems(CKPT("ck", "base.safetensors") CKPT("rf", "refiner.safetensors") ENCODE("p", "ck", "a") EMPTY
                    SAMPLER("rf", "p", "p"), 2,
                    (const char *[]){"node 'ks' input 'positive': a conditioning made by SDXL text encoders cannot "
                                     "condition the SDXL refiner model",
                                     "node 'ks' input 'negative'"});
}

int main(void)
{
    if (!write_checkpoints())
        return 1;
    RUN(test_sample_against_diffusers);
    RUN(test_refine_against_diffusers);
    RUN(test_sdxl_encode_node);
    RUN(test_refiner);
    RUN(test_family_checks);
    free(g_dir);
    return test_summary("test_sdxl_nodes");
}
