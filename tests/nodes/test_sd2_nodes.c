/* SD2.x through the nodes on the tiny checkpoints (sdflow_mkckpt --preset sd2-tiny --seed 21,
 * --preset sd2-v-tiny --seed 22, f32):
 * - whole KSampler runs (euler, normal, 5 steps, cfg 6, seed 99, 64x64, CLIPTextEncode prompts)
 *   against tests/reference/make_sd2_goldens.py (diffusers UNet, transformers OpenCLIP-H): the eps
 *   file, the v file (v-prediction detected from its weights, as ComfyUI) and the v file through
 *   ModelSamplingDiscrete v_prediction + zsnr, the eps file through ModelSamplingDiscrete lcm, by PSNR on the model's contribution (final latent
 *   minus the scaled initial noise; the zsnr run on the final latent, its noise being scaled 4500x);
 * - RescaleCFG against ComfyUI's sampler_cfg_function (the goldens' torch code);
 * - ModelSamplingContinuousEDM (edm on the eps file, karras; continuous v_prediction on the v file)
 *   against tests/reference/make_edm_goldens.py;
 * - ModelSamplingDiscrete: choosing what the file shows changes nothing bit for bit, another
 *   choice changes the result, and its inputs reach the KSampler's cache key;
 * - family checks before running: an SD2 CLIP in CLIPTextEncodeSDXL, an SD2 conditioning on an
 *   SD1 model;
 * - a textual-inversion embedding whose vectors are OpenCLIP-H's own token rows for "photo of a
 *   cat" gives the very latent the words give; an SD1-wide embedding is refused naming it. */
#include "test.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "ml/formats/safetensors.h"
#include "ml/text/clip_tokenizer.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT };
#define SCALE 0.18215f

static char *g_dir; /* models/checkpoints with sd2.safetensors, sd2v.safetensors, sd1.safetensors, sdxl.safetensors */

#define CKPT(id, file) \
    "<node id='" id "' type='CheckpointLoaderSimple'><input name='ckpt_name'>" file "</input></node>"
#define MSD(id, ckpt, sampling, zsnr) \
    "<node id='" id "' type='ModelSamplingDiscrete'><input name='model' from='" ckpt "' output='MODEL'/>" \
    "<input name='sampling'>" sampling "</input><input name='zsnr'>" zsnr "</input></node>"
#define EDM(id, ckpt, sampling, sigma_max, sigma_min) \
    "<node id='" id "' type='ModelSamplingContinuousEDM'><input name='model' from='" ckpt "' output='MODEL'/>" \
    "<input name='sampling'>" sampling "</input><input name='sigma_max'>" sigma_max "</input>" \
    "<input name='sigma_min'>" sigma_min "</input></node>"
#define ENCODE(id, ckpt, text) \
    "<node id='" id "' type='CLIPTextEncode'><input name='clip' from='" ckpt "' output='CLIP'/>" \
    "<input name='text'>" text "</input></node>"
#define PROMPTS(ckpt) ENCODE("p", ckpt, "a photo of a cat") ENCODE("n", ckpt, "")
#define EMPTY "<node id='e' type='EmptyLatentImage'><input name='width'>64</input><input name='height'>64</input></node>"
#define SAMPLER(model) SAMPLER_CFG(model, "6")
#define SAMPLER_CFG(model, cfg) SAMPLER_SCHED(model, cfg, "normal")
#define SAMPLER_SCHED(model, cfg, scheduler) \
    "<node id='ks' type='KSampler'><input name='model' from='" model "' output='MODEL'/>" \
    "<input name='seed'>99</input><input name='steps'>5</input><input name='cfg'>" cfg "</input>" \
    "<input name='sampler_name'>euler</input><input name='scheduler'>" scheduler "</input>" \
    "<input name='positive' from='p' output='CONDITIONING'/><input name='negative' from='n' " \
    "output='CONDITIONING'/><input name='latent_image' from='e' output='LATENT'/></node>"

/* Runs a <workflow> body up to the sampler's latent (LAT_N floats, malloc'd; NULL on failure),
 * through the cache file `cache` (NULL: none). */
static float *run_latent_cached(const char *body, const char *cache)
{
    return test_run_body_latent(g_dir, cache, body, "ks", LAT_N);
}

static float *run_latent(const char *body)
{
    return run_latent_cached(body, NULL);
}

/* Compares a final latent with the golden `ref_name` by PSNR over the reference's range (>= 40
 * dB): on the model's contribution (latent * scale minus the noise scaled by
 * sqrt(1 + sigma_max^2)) when sigma_max > 0, else on the latent itself. */
static double psnr_vs(const float *got, const char *ref_name, double sigma_max)
{
    float *ref = test_read_sdg1(ref_name, 4, LAT_N), *noise = test_read_sdg1("sd2_sample_noise.bin", 4, LAT_N);
    double psnr = -1;
    CHECK(got && ref && noise);
    if (got && ref && noise) {
        float cg[LAT_N], cr[LAT_N], lo = INFINITY, hi = -INFINITY;
        float k = sigma_max > 0 ? (float)sqrt(1.0 + sigma_max * sigma_max) : 0.0f;
        for (int i = 0; i < LAT_N; i++) {
            cg[i] = got[i] * SCALE - noise[i] * k;
            cr[i] = ref[i] * SCALE - noise[i] * k;
            lo = fminf(lo, cr[i]), hi = fmaxf(hi, cr[i]);
        }
        psnr = test_psnr(cg, cr, LAT_N, hi - lo);
    }
    free(ref);
    free(noise);
    return psnr;
}

static void expect_psnr(const float *got, const char *ref_name, double sigma_max, const char *what)
{
    double psnr = psnr_vs(got, ref_name, sigma_max);
    printf("  %s: PSNR %.1f dB vs diffusers\n", what, psnr);
    CHECK(psnr >= 40.0);
}

#define SIGMA_MAX 14.614641189575195 /* the SD schedule's sigma at t = 999 */

/* The plain runs of each file, made once and shared by the tests (NULL on failure). */
static float *g_eps_run, *g_v_run;

static void test_eps_against_diffusers(void)
{
    g_eps_run = run_latent(CKPT("ck", "sd2.safetensors") PROMPTS("ck") EMPTY SAMPLER("ck"));
    expect_psnr(g_eps_run, "sd2_sample_eps_final.bin", SIGMA_MAX, "SD2 eps, euler 5 steps, contribution");
}

static void test_v_against_diffusers(void)
{
    g_v_run = run_latent(CKPT("ck", "sd2v.safetensors") PROMPTS("ck") EMPTY SAMPLER("ck"));
    expect_psnr(g_v_run, "sd2_sample_v_final.bin", SIGMA_MAX, "SD2 768-v (detected), euler 5 steps, contribution");
}

static void test_zsnr_against_diffusers(void)
{
    float *got = run_latent(CKPT("ck", "sd2v.safetensors") MSD("ms", "ck", "v_prediction", "true") PROMPTS("ck")
                            EMPTY SAMPLER("ms"));
    expect_psnr(got, "sd2_sample_vz_final.bin", 0, "SD2 v + zsnr (ModelSamplingDiscrete), final latent");
    free(got);
}

static bool same(const float *a, const float *b)
{
    return a && b && memcmp(a, b, sizeof(float) * LAT_N) == 0;
}

/* ModelSamplingDiscrete lcm (50-sigma distilled schedule, LCM boundary conditions) on the eps file
 * against ComfyUI's formulas: 70 dB at least, where the plain eps run gets under 65 (on the tiny
 * model the boundary conditions are nearly the identity; the schedule makes the difference). */
static void test_lcm_against_reference(void)
{
    float *got = run_latent(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "lcm", "false") PROMPTS("ck") EMPTY
                            SAMPLER("ms"));
    double on = psnr_vs(got, "sd2_sample_lcm_final.bin", SIGMA_MAX);
    double off = psnr_vs(g_eps_run, "sd2_sample_lcm_final.bin", SIGMA_MAX);
    printf("  SD2 eps as lcm (ModelSamplingDiscrete), contribution: PSNR %.1f dB vs the reference (plain eps: "
           "%.1f dB)\n", on, off);
    CHECK(on >= 70.0 && off < 65.0);
    free(got);
}

/* RescaleCFG at cfg 30 (where it matters on the tiny model) against ComfyUI's formula: 60 dB at
 * least, where plain CFG gets under 50. */
static void test_rescale_cfg_against_reference(void)
{
    float *got = run_latent(CKPT("ck", "sd2v.safetensors")
                            "<node id='rs' type='RescaleCFG'><input name='model' from='ck' output='MODEL'/>"
                            "<input name='multiplier'>0.7</input></node>" PROMPTS("ck") EMPTY SAMPLER_CFG("rs", "30"));
    float *plain = run_latent(CKPT("ck", "sd2v.safetensors") PROMPTS("ck") EMPTY SAMPLER_CFG("ck", "30"));
    double on = psnr_vs(got, "sd2_sample_vr_final.bin", SIGMA_MAX);
    double off = psnr_vs(plain, "sd2_sample_vr_final.bin", SIGMA_MAX);
    printf("  SD2 v + RescaleCFG 0.7 at cfg 30, contribution: PSNR %.1f dB vs the reference (plain CFG: %.1f dB)\n",
           on, off);
    CHECK(on >= 60.0 && off < 50.0); /* the difference RescaleCFG makes is well above the error */
    free(got);
    free(plain);
}

/* ModelSamplingContinuousEDM against ComfyUI's formulas (make_edm_goldens.py): the eps file as edm
 * (sigma 0.002..120, karras) and the v file as continuous v_prediction (0.03..14.6, normal), on the
 * final latent (both runs end at sigma 0, the latent is the model's); the same runs without the
 * node stay at least 30 dB further from the references, and a ModelSamplingDiscrete after it takes its place. */
static void test_continuous_edm(void)
{
    float *edm = run_latent(CKPT("ck", "sd2.safetensors") EDM("ms", "ck", "edm", "120", "0.002") PROMPTS("ck")
                            EMPTY SAMPLER_SCHED("ms", "6", "karras"));
    float *plain = run_latent(CKPT("ck", "sd2.safetensors") PROMPTS("ck") EMPTY SAMPLER_SCHED("ck", "6", "karras"));
    double on = psnr_vs(edm, "sd2_sample_edm_final.bin", 0), off = psnr_vs(plain, "sd2_sample_edm_final.bin", 0);
    printf("  SD2 eps file as edm (ModelSamplingContinuousEDM), karras: PSNR %.1f dB vs diffusers (without the "
           "node: %.1f dB)\n", on, off);
    CHECK(on >= 40.0 && on - off >= 30.0);
    float *cv = run_latent(CKPT("ck", "sd2v.safetensors") EDM("ms", "ck", "v_prediction", "14.6", "0.03")
                           PROMPTS("ck") EMPTY SAMPLER("ms"));
    on = psnr_vs(cv, "sd2_sample_cv_final.bin", 0), off = psnr_vs(g_v_run, "sd2_sample_cv_final.bin", 0);
    printf("  SD2 v file as continuous v_prediction, normal: PSNR %.1f dB vs diffusers (discrete: %.1f dB)\n", on,
           off);
    CHECK(on >= 40.0 && on - off >= 30.0); /* the continuous schedule is what brings it to the reference */
    float *back = run_latent(CKPT("ck", "sd2.safetensors") EDM("ed", "ck", "edm", "120", "0.002")
                             MSD("ms", "ed", "eps", "false") PROMPTS("ck") EMPTY SAMPLER("ms"));
    CHECK(same(back, g_eps_run));
    free(edm);
    free(plain);
    free(cv);
    free(back);
}

/* What the file shows, chosen again, changes nothing; another choice changes the result (lcm:
 * test_lcm_against_reference). */
static void test_model_sampling_discrete(void)
{
    const float *v = g_v_run, *eps = g_eps_run;
    float *v_again = run_latent(CKPT("ck", "sd2v.safetensors") MSD("ms", "ck", "v_prediction", "false")
                                PROMPTS("ck") EMPTY SAMPLER("ms"));
    float *v_as_eps = run_latent(CKPT("ck", "sd2v.safetensors") MSD("ms", "ck", "eps", "false") PROMPTS("ck") EMPTY
                                 SAMPLER("ms"));
    float *eps_again = run_latent(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "eps", "false") PROMPTS("ck") EMPTY
                                  SAMPLER("ms"));
    float *x0 = run_latent(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "x0", "false") PROMPTS("ck") EMPTY
                           SAMPLER("ms"));
    CHECK(v && v_again && v_as_eps && eps && eps_again && x0);
    CHECK(same(v, v_again));
    CHECK(same(eps, eps_again));
    CHECK(v && v_as_eps && !same(v, v_as_eps));
    CHECK(eps && x0 && !same(eps, x0));
    bool finite = true;
    for (int i = 0; x0 && i < LAT_N; i++)
        finite &= isfinite(x0[i]);
    CHECK(finite);
    free(v_again);
    free(v_as_eps);
    free(eps_again);
    free(x0);
}

/* A MODEL passes its node's key along the link: a second run with the cache and another sampling
 * choice samples again instead of reading the first run's latent. */
static void test_cache_key(void)
{
    char *cache = test_path(test_scratch_dir(), "sd2_cache.db");
    float *a = run_latent_cached(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "eps", "false") PROMPTS("ck") EMPTY
                                 SAMPLER("ms"), cache);
    float *b = run_latent_cached(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "v_prediction", "false") PROMPTS("ck")
                                 EMPTY SAMPLER("ms"), cache);
    float *b_fresh = run_latent(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "v_prediction", "false") PROMPTS("ck")
                                EMPTY SAMPLER("ms"));
    float *c = run_latent_cached(CKPT("ck", "sd2.safetensors") MSD("ms", "ck", "v_prediction", "true") PROMPTS("ck")
                                 EMPTY SAMPLER("ms"), cache);
    CHECK(a && b && b_fresh && c);
    CHECK(!same(a, b) && same(b, b_fresh) && !same(b, c));
    free(a);
    free(b);
    free(b_fresh);
    free(c);
    free(cache);
}

static void expect_problems(const char *body, size_t n, const char *const *msgs)
{
    test_expect_problems(g_dir, body, n, msgs);
}

static void test_family_checks(void)
{
    expect_problems(CKPT("ck", "sd2.safetensors")
                    "<node id='p' type='CLIPTextEncodeSDXL'><input name='clip' from='ck' output='CLIP'/>"
                    "<input name='text_g'>a</input><input name='text_l'>a</input></node>", 1,
                    (const char *[]){"node 'p' input 'clip': the text encoders are SD2.x; this node takes SDXL ones"});
    expect_problems(CKPT("ck", "sd2.safetensors") CKPT("s1", "sd1.safetensors") PROMPTS("ck") EMPTY SAMPLER("s1"), 2,
                    (const char *[]){"node 'ks' input 'positive': a conditioning made by SD2.x text encoders cannot "
                                     "condition the SD1.x model",
                                     "node 'ks' input 'negative'"});
    /* Through ModelSamplingDiscrete the model keeps its family. */
    expect_problems(CKPT("ck", "sd2.safetensors") CKPT("xl", "sdxl.safetensors") MSD("ms", "ck", "eps", "false")
                    PROMPTS("xl") EMPTY SAMPLER("ms"), 2,
                    (const char *[]){"node 'ks' input 'positive': a conditioning made by SDXL text encoders cannot "
                                     "condition the SD2.x model",
                                     "node 'ks' input 'negative'"});
}

static char g_log[4096];
static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

/* State for write_rows: the checkpoint and the token ids whose embedding rows are written. */
typedef struct token_rows {
    sd_context *ctx;
    sd_safetensors *st;
    const sd_st_tensor *table;
    const int32_t *ids;
} token_rows;

static sd_status write_rows(void *user, size_t index, void *dst, size_t nbytes)
{
    const token_rows *t = user;
    size_t width = (size_t)t->table->shape[1], n = nbytes / sizeof(float) / width;
    (void)index;
    sd_status st = SD_OK;
    for (size_t i = 0; !st && i < n; i++)
        st = sd_safetensors_read_f32_range(t->ctx, t->st, t->table, (size_t)t->ids[i] * width, width,
                                           (float *)dst + i * width);
    return st;
}

/* Writes <models>/embeddings/<file>: emb_params with OpenCLIP-H's token-embedding rows of text. */
static void write_token_embedding(const char *file, const char *text)
{
    sd_context *ctx = NULL;
    sd_clip_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    token_rows t = {0};
    char *ckpt = sd_strfmt("%s/checkpoints/sd2.safetensors", g_dir), *dir = sd_strfmt("%s/embeddings", g_dir);
    char *path = sd_strfmt("%s/%s", dir, file);
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    mkdir(dir, 0777);
    CHECK_EQ_INT(sd_clip_tokenizer_new(ctx, &tok), SD_OK);
    CHECK_EQ_INT(sd_clip_tokenize(ctx, tok, text, strlen(text), &ids, &n, &cap), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, ckpt, &t.st), SD_OK);
    t.ctx = ctx;
    t.ids = ids;
    t.table = t.st ? sd_safetensors_find(t.st, "cond_stage_model.model.token_embedding.weight") : NULL;
    CHECK(t.table && t.table->ndim == 2 && n > 1);
    if (t.table) {
        sd_st_entry e = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {(int64_t)n, t.table->shape[1]}};
        CHECK_EQ_INT(sd_safetensors_write(ctx, path, &e, 1, NULL, write_rows, &t), SD_OK);
    }
    sd_safetensors_close(t.st);
    sd_clip_tokenizer_free(tok);
    free(ids);
    free(ckpt);
    free(dir);
    free(path);
    sd_context_free(ctx);
}

/* Writes <models>/embeddings/<file>: emb_params [1, width] of zeros. */
static sd_status zeros(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

static void test_embeddings(void)
{
    write_token_embedding("photo_cat.safetensors", "photo of a cat");
    float *words = run_latent(CKPT("ck", "sd2.safetensors") PROMPTS("ck") EMPTY SAMPLER("ck"));
    float *emb = run_latent(CKPT("ck", "sd2.safetensors") ENCODE("p", "ck", "a embedding:photo_cat")
                            ENCODE("n", "ck", "") EMPTY SAMPLER("ck"));
    CHECK(words && emb && same(words, emb));
    free(words);
    free(emb);
    /* An SD1.x embedding (768 wide) cannot be used, as in ComfyUI: a warning naming the file, its
     * family and the widths; the prompt is encoded without it. */
    sd_context *ctx = test_models_context(g_dir, NULL);
    char *path = sd_strfmt("%s/embeddings/sd1.safetensors", g_dir);
    sd_st_entry e = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 768}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, &e, 1, NULL, zeros, NULL), SD_OK);
    const char *xml = "<workflow version='1'>" CKPT("ck", "sd2.safetensors") ENCODE("p", "ck", "a embedding:sd1")
                      "</workflow>";
    sd_graph *g = NULL;
    sd_result *res = NULL;
    g_log[0] = '\0';
    sd_context_set_log(ctx, collect, NULL);
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "emb.xml", &g), SD_OK);
    const char *outputs[] = {"p"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_OK);
    CHECK_STR_CONTAINS(g_log, "sd1.safetensors: embedding vectors are 768 wide (an SD1.x embedding); the text "
                              "encoder's are 256");
    sd_result_free(res);
    sd_graph_free(g);
    free(path);
    sd_context_free(ctx);
}

int main(void)
{
    static const test_checkpoint_file files[] = {{"sd2-tiny", "sd2.safetensors", 21},
                                                 {"sd2-v-tiny", "sd2v.safetensors", 22},
                                                 {"tiny", "sd1.safetensors", 42},
                                                 {"sdxl-tiny", "sdxl.safetensors", 11}};
    if (!(g_dir = test_write_checkpoints(files, sizeof files / sizeof files[0])))
        return 1;
    RUN(test_eps_against_diffusers);
    RUN(test_v_against_diffusers);
    RUN(test_zsnr_against_diffusers);
    RUN(test_lcm_against_reference);
    RUN(test_rescale_cfg_against_reference);
    RUN(test_continuous_edm);
    RUN(test_model_sampling_discrete);
    RUN(test_cache_key);
    RUN(test_family_checks);
    RUN(test_embeddings);
    free(g_eps_run);
    free(g_v_run);
    free(g_dir);
    return test_summary("test_sd2_nodes");
}
