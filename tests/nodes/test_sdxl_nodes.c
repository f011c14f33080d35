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
 *   on the refiner model, an SD1 CLIP in CLIPTextEncodeSDXLRefiner;
 * - textual inversion: an SDXL embedding (clip_l, clip_g) holding each encoder's own token row of
 *   "cat" gives the latent of the prompt with "cat"; an SD1 embedding on SDXL fails the node,
 *   naming the file;
 * - UNETLoader: the base's UNet alone (with and without model.diffusion_model., in
 *   models/diffusion_models and ComfyUI's older models/unet) samples the checkpoint's latent bit
 *   for bit; a refiner UNet with the base's text encoders and a file that is no UNet are named
 *   before anything runs. */
#include "test.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "core/context.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/safetensors.h"
#include <sys/stat.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT };
#define SCALE 0.13025f

static char *g_dir; /* models/checkpoints with base.safetensors, refiner.safetensors, sd1.safetensors */

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

static sd_context *new_context(void)
{
    return test_models_context(g_dir, NULL);
}

/* Runs a <workflow> body up to the sampler's latent (LAT_N floats, malloc'd; NULL on failure). */
static float *run_latent(const char *body)
{
    return test_run_body_latent(g_dir, NULL, body, "ks", LAT_N);
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

/* Row `id` of the token table `name` of the base checkpoint (the table stays f32 on the device, so
 * the vector equals its row); width floats, malloc'd. */
static float *token_row(const char *name, int id, int64_t *width)
{
    sd_context *ctx = new_context();
    char *path = test_path(g_dir, "checkpoints/base.safetensors");
    sd_safetensors *st = NULL;
    float *all = NULL, *row = NULL;
    const sd_st_tensor *t = NULL;
    if (!sd_safetensors_open(ctx, path, &st) && (t = sd_safetensors_find(st, name)) &&
        (all = malloc(t->numel * sizeof *all)) && !sd_safetensors_read_f32(ctx, st, t, all, t->numel) &&
        (row = malloc((size_t)t->shape[1] * sizeof *row))) {
        *width = t->shape[1];
        for (int64_t i = 0; i < *width; i++)
            row[i] = all[id * *width + i];
    }
    CHECK(row != NULL);
    free(all);
    sd_safetensors_close(st);
    free(path);
    sd_context_free(ctx);
    return row;
}

static sd_status fill_rows(void *user, size_t index, void *dst, size_t nbytes)
{
    float *const *rows = user;
    memcpy(dst, rows[index], nbytes);
    return SD_OK;
}

static void test_embeddings(void)
{
    int64_t wg = 0, wl = 0;
    float *g = token_row("conditioner.embedders.1.model.token_embedding.weight", 2368, &wg);
    float *l = token_row("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", 2368, &wl);
    char *dir = test_path(g_dir, "embeddings");
    mkdir(dir, 0755);
    char *xl = test_path(dir, "catxl.safetensors"), *sd1 = test_path(dir, "sd1.safetensors");
    sd_st_entry e[2] = {{.name = "clip_g", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, wg}},
                        {.name = "clip_l", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, wl}}};
    float *rows[2] = {g, l};
    sd_context *ctx = new_context();
    CHECK(g && l);
    if (g && l) {
        CHECK_EQ_INT(sd_safetensors_write(ctx, xl, e, 2, NULL, fill_rows, rows), SD_OK);
        e[1].name = "emb_params";
        CHECK_EQ_INT(sd_safetensors_write(ctx, sd1, &e[1], 1, NULL, fill_rows, &rows[1]), SD_OK);
    }
    float *cat = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "")
                            EMPTY SAMPLER("ck", "p", "n"));
    float *emb = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a embedding:catxl")
                            ENCODE("n", "ck", "") EMPTY SAMPLER("ck", "p", "n"));
    float *dog = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a dog") ENCODE("n", "ck", "")
                            EMPTY SAMPLER("ck", "p", "n"));
    CHECK(cat && emb && dog);
    if (cat && emb && dog) {
        double d = 0;
        for (int i = 0; i < LAT_N; i++)
            d = fmax(d, fabs((double)cat[i] - emb[i]));
        printf("  embedding:catxl vs cat: max abs diff %.3g\n", d);
        CHECK(d <= 1e-5);
        CHECK(memcmp(cat, dog, sizeof(float) * LAT_N) != 0);
    }
    /* An SD1 file on SDXL: the node fails with one line naming the file. */
    const char *body = CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a embedding:sd1") ENCODE("n", "ck", "")
        EMPTY SAMPLER("ck", "p", "n");
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *gr = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "sdxl.xml", &gr), SD_OK);
    const char *outputs[] = {"ks"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(gr ? sd_graph_run(gr, &o, &res) : SD_OK, SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'p' (CLIPTextEncode): ");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "embeddings/sd1.safetensors: no clip_l tensor (an SD1.x embedding?); "
                                               "SDXL text encoders take files with clip_l and clip_g tensors");
    sd_result_free(res);
    sd_graph_free(gr);
    free(xml);
    sd_context_free(ctx);
    free(cat);
    free(emb);
    free(dog);
    free(g);
    free(l);
    free(xl);
    free(sd1);
    free(dir);
}

static void expect_problems(const char *body, size_t n, const char *const *msgs);

/* Strips the UNet prefix (bare diffusion-model files). */
static sd_status strip_prefix(void *user, const char *name, char *out, size_t size)
{
    (void)user;
    snprintf(out, size, "%s", name + strlen("model.diffusion_model."));
    return SD_OK;
}

/* The UNet of preset/seed alone at dir/file, prefixed or bare (the checkpoint's values either way). */
static void write_unet(const char *dir, const char *file, const char *preset, uint64_t seed, bool bare)
{
    sd_context *ctx = new_context();
    char *d = test_path(g_dir, dir), *path = test_path(d, file);
    mkdir(d, 0755);
    sd_checkpoint_config cfg;
    sd_layout lay = {0};
    CHECK(sd_checkpoint_preset(preset, &cfg));
    CHECK_EQ_INT(sd_layout_unet(ctx, &cfg.unet, "model.diffusion_model.", &lay), SD_OK);
    CHECK_EQ_INT(sd_layout_write_random(ctx, path, &lay, SD_ST_F32, seed, bare ? strip_prefix : NULL, NULL), SD_OK);
    sd_layout_free(&lay);
    free(path);
    free(d);
    sd_context_free(ctx);
}

#define UNET(id, file) "<node id='" id "' type='UNETLoader'><input name='unet_name'>" file "</input></node>"

static void test_unet_loader(void)
{
    write_unet("diffusion_models", "base_unet.safetensors", "sdxl-tiny", 11, false);
    write_unet("unet", "base_bare.safetensors", "sdxl-tiny", 11, true);
    write_unet("diffusion_models", "refiner_unet.safetensors", "sdxl-refiner-tiny", 12, true);
    float *ckpt = run_latent(CKPT("ck", "base.safetensors") ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "")
                             EMPTY SAMPLER("ck", "p", "n"));
    float *unet = run_latent(CKPT("ck", "base.safetensors") UNET("u", "base_unet.safetensors")
                             ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "") EMPTY SAMPLER("u", "p", "n"));
    float *bare = run_latent(CKPT("ck", "base.safetensors") UNET("u", "base_bare.safetensors")
                             ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "") EMPTY SAMPLER("u", "p", "n"));
    CHECK(ckpt && unet && bare);
    if (ckpt && unet && bare)
        CHECK(memcmp(ckpt, unet, sizeof(float) * LAT_N) == 0 && memcmp(ckpt, bare, sizeof(float) * LAT_N) == 0);
    free(ckpt);
    free(unet);
    free(bare);
    expect_problems(CKPT("ck", "base.safetensors") UNET("u", "refiner_unet.safetensors") ENCODE("p", "ck", "a") EMPTY
                    SAMPLER("u", "p", "p"), 2,
                    (const char *[]){"node 'ks' input 'positive': a conditioning made by SDXL text encoders cannot "
                                     "condition the SDXL refiner model",
                                     "node 'ks' input 'negative'"});
    char *to = test_path(g_dir, "unet/vae.safetensors");
    sd_context *ctx = new_context();
    sd_checkpoint_config vae;
    CHECK(sd_checkpoint_preset("tiny", &vae));
    vae.has_unet = vae.has_clip = false;
    vae.vae_prefix = "";
    CHECK_EQ_INT(sd_sd1_write_random(ctx, to, &vae, SD_ST_F32, 1), SD_OK);
    sd_context_free(ctx);
    expect_problems(UNET("u", "vae.safetensors"), 1,
                    (const char *[]){"vae.safetensors: standalone VAE file detected, not an LDM diffusion model "
                                     "(input_blocks.*, with or without model.diffusion_model.)"});
    free(to);
}

/* Validates `body` and expects n problems, problem k containing msgs[k]. */
static void expect_problems(const char *body, size_t n, const char *const *msgs)
{
    test_expect_problems(g_dir, body, n, msgs);
}

static void test_family_checks(void)
{
    expect_problems(CKPT("ck", "refiner.safetensors") ENCODE_SDXL("p", "ck", "64", "a") EMPTY SAMPLER("ck", "p", "p"), 1,
                    (const char *[]){"test.xml:1: node 'p' input 'clip': the text encoders are SDXL refiner; this node "
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
    static const test_checkpoint_file files[] = {{"sdxl-tiny", "base.safetensors", 11},
                                                 {"sdxl-refiner-tiny", "refiner.safetensors", 12},
                                                 {"tiny", "sd1.safetensors", 42}};
    if (!(g_dir = test_write_checkpoints(files, sizeof files / sizeof files[0])))
        return 1;
    RUN(test_sample_against_diffusers);
    RUN(test_refine_against_diffusers);
    RUN(test_sdxl_encode_node);
    RUN(test_refiner);
    RUN(test_family_checks);
    RUN(test_embeddings);
    RUN(test_unet_loader);
    free(g_dir);
    return test_summary("test_sdxl_nodes");
}
