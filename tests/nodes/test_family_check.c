/* The family layer: descriptors (detection, latent formats, lookups) and the checks before
 * running that they drive (nodes/family_check.h): a latent of the wrong channel count for a model
 * or a VAE, a checkpoint without a VAE feeding VAEDecode, another family's checkpoint, each
 * reported by validation, before any node runs, naming both sides; a FLUX all-in-one checkpoint's
 * text encoders feed CLIPTextEncode. */
#include "test.h"
#include "core/run.h"
#include "ml/families/family.h"
#include "ml/families/sd1_layout.h"
#include "ml/text/text_encoder_write.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *g_models;

static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

/* out: the headers of files a and b in one file (zeros: validation reads headers only). */
static void write_merged_header(sd_context *ctx, const char *a, const char *b, const char *out)
{
    sd_safetensors *st[2] = {NULL, NULL};
    CHECK_EQ_INT(sd_safetensors_open(ctx, a, &st[0]), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, b, &st[1]), SD_OK);
    size_t n = st[0] && st[1] ? sd_safetensors_count(st[0]) + sd_safetensors_count(st[1]) : 0, k = 0;
    sd_st_entry *e = calloc(n ? n : 1, sizeof *e);
    for (int f = 0; f < 2 && n; f++)
        for (size_t i = 0; i < sd_safetensors_count(st[f]); i++, k++) {
            const sd_st_tensor *t = sd_safetensors_at(st[f], i);
            e[k] = (sd_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim};
            memcpy(e[k].shape, t->shape, sizeof t->shape);
        }
    CHECK_EQ_INT(sd_safetensors_write(ctx, out, e, n, NULL, fill_zero, NULL), SD_OK);
    free(e);
    sd_safetensors_close(st[0]);
    sd_safetensors_close(st[1]);
}

static sd_context *new_context(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    sd_context_clear_models_dirs(ctx);
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, g_models), SD_OK);
    return ctx;
}

/* models/checkpoints/{tiny,novae,xl}.safetensors and models/vae/{vae4,vae16}.safetensors. */
static void setup(void)
{
    g_models = test_path(test_scratch_dir(), "models");
    char *ckpts = test_path(g_models, "checkpoints"), *vaes = test_path(g_models, "vae");
    CHECK(mkdir(g_models, 0755) == 0 && mkdir(ckpts, 0755) == 0 && mkdir(vaes, 0755) == 0);
    sd_context *ctx = new_context();
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    char *p = test_path(ckpts, "tiny.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, p, &cfg, SD_ST_F32, 1), SD_OK);
    free(p);
    sd_checkpoint_config novae = cfg;
    novae.has_vae = false;
    p = test_path(ckpts, "novae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, p, &novae, SD_ST_F32, 1), SD_OK);
    free(p);
    /* FLUX: the transformer and VAE alone, and ComfyUI's all-in-one file with the text encoders */
    sd_checkpoint_config flux;
    CHECK(sd_checkpoint_preset("flux-dev-tiny", &flux));
    char *fm = test_path(ckpts, "flux.safetensors"), *te = test_path(test_scratch_dir(), "flux_te.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, fm, &flux, SD_ST_F32, 1), SD_OK);
    CHECK_EQ_INT(sd_text_write_flux_encoders(ctx, te, SD_ST_F16, 9), SD_OK);
    p = test_path(ckpts, "flux_aio.safetensors");
    write_merged_header(ctx, fm, te, p);
    free(p), free(fm), free(te);
    p = test_path(ckpts, "sd3.safetensors");
    CHECK_EQ_INT(sd_write_family_stub(ctx, p, SD_FAMILY_SD3), SD_OK);
    free(p);
    for (int z = 4; z <= 16; z += 12) {
        sd_checkpoint_config v = cfg;
        v.has_unet = v.has_clip = false;
        v.vae_prefix = "";
        v.vae.z_channels = v.vae.embed_dim = z;
        char name[32];
        snprintf(name, sizeof name, "vae%d.safetensors", z);
        p = test_path(vaes, name);
        CHECK_EQ_INT(sd_sd1_write_random(ctx, p, &v, SD_ST_F32, 2), SD_OK);
        free(p);
    }
    sd_context_free(ctx);
    free(ckpts);
    free(vaes);
}

static void test_descriptors(void)
{
    const sd_family_desc *sd1 = sd_family_get(SD_FAMILY_SD1), *xl = sd_family_get(SD_FAMILY_SDXL);
    const sd_family_desc *flux = sd_family_get(SD_FAMILY_FLUX);
    CHECK(sd1->runnable && xl->runnable && flux->runnable && sd1->lora && xl->lora && flux->lora);
    CHECK(!sd_family_get(SD_FAMILY_SDXL_REFINER)->lora && sd_family_get(SD_FAMILY_SD2)->lora);
    CHECK(sd1->latent->channels == 4 && sd1->latent->scale == 0.18215f && sd1->latent->shift == 0.0f);
    CHECK(xl->latent->channels == 4 && xl->latent->scale == 0.13025f && xl->adm_dim == 2816);
    CHECK(sd_family_get(SD_FAMILY_SDXL_REFINER)->adm_dim == 2560);
    CHECK(flux->latent->channels == 16 && flux->latent->scale == 0.3611f && flux->latent->shift == 0.1159f);
    CHECK_EQ_INT(flux->schedule.prediction, SD_PREDICT_FLOW);
    CHECK_EQ_INT(sd1->schedule.timesteps, 1000);
    CHECK(sd1->schedule.beta_start == 0.00085 && sd1->schedule.beta_end == 0.012);
    CHECK_EQ_INT(sd1->n_text_encoders, 1);
    CHECK_EQ_INT(xl->n_text_encoders, 2);
    CHECK_EQ_INT(xl->text_encoders[1].kind, SD_TEXT_OPENCLIP_G);
    CHECK(xl->text_encoders[1].pooled && !xl->text_encoders[0].pooled && xl->text_encoders[0].layer == -2);
    CHECK_EQ_INT(sd_family_find("SDXL"), SD_FAMILY_SDXL);
    CHECK_EQ_INT(sd_family_find("nope"), SD_FAMILY_UNKNOWN);
    CHECK_EQ_INT(sd_family_find(NULL), SD_FAMILY_UNKNOWN);
    CHECK_EQ_INT(sd_family_by_context_dim(2048), SD_FAMILY_SDXL);
    CHECK_EQ_INT(sd_family_by_context_dim(1024), SD_FAMILY_SD2);
    CHECK_EQ_INT(sd_family_by_context_dim(768), SD_FAMILY_SD1);
    CHECK_EQ_INT(sd_family_by_context_dim(4096), SD_FAMILY_UNKNOWN);
    CHECK(sd_latent_format_find("Flux") == flux->latent);
    CHECK(sd_latent_format_find("SD15") == sd1->latent);
    char buf[128];
    CHECK_STR_EQ(sd_family_runnable_list(buf, sizeof buf), "SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX");
    CHECK_STR_EQ(sd_family_lora_list(buf, sizeof buf), "SD1.x, SD2.x, SD2.x unCLIP, SDXL, FLUX");
    CHECK_STR_EQ(sd_latent_channels_families(buf, sizeof buf, 16), "SD3, FLUX");
    CHECK_STR_EQ(sd_latent_channels_families(buf, sizeof buf, 4), "SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner");
    CHECK_STR_EQ(sd_latent_channels_families(buf, sizeof buf, 8), "");
    /* Every diffusion-model family is complete. */
    for (sd_family f = SD_FAMILY_SD1; f <= SD_FAMILY_FLUX; f++) {
        const sd_family_desc *d = sd_family_get(f);
        CHECK_MSG(d->checkpoint && d->latent && d->n_text_encoders >= 1 && d->context_dim > 0 &&
                      d->default_width >= 512 && d->unet_prefix && d->vae_prefix,
                  "family %s is incomplete", d->name);
    }
}

static void test_detection(void)
{
    sd_context *ctx = new_context();
    const sd_family fams[] = {SD_FAMILY_SD2, SD_FAMILY_SDXL, SD_FAMILY_SDXL_REFINER, SD_FAMILY_SD3, SD_FAMILY_FLUX};
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        char *p = test_path(test_scratch_dir(), "stub.safetensors");
        CHECK_EQ_INT(sd_write_family_stub(ctx, p, fams[i]), SD_OK);
        sd_safetensors *st = NULL;
        CHECK_EQ_INT(sd_safetensors_open(ctx, p, &st), SD_OK);
        CHECK_EQ_INT(st ? sd_family_detect(st) : SD_FAMILY_UNKNOWN, fams[i]);
        sd_safetensors_close(st);
        free(p);
    }
    sd_context_free(ctx);
}

/* Validates `xml` (a <workflow> body) and expects `want` problems, the first containing `msg`. */
static void expect_problems(const char *body, size_t want, const char *msg)
{
    sd_context *ctx = new_context();
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "family.xml", &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), want ? SD_ERR_INVALID : SD_OK);
        CHECK_EQ_INT(sd_context_diag_count(ctx), want);
        if (msg && sd_context_diag_count(ctx))
            CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), msg);
    }
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
}

#define CKPT(name) "<node id='ck' type='CheckpointLoaderSimple'><input name='ckpt_name'>" name "</input></node>"
#define VAE(name) "<node id='v' type='VAELoader'><input name='vae_name'>" name "</input></node>"
#define CONDS \
    "<node id='p' type='CLIPTextEncode'><input name='clip' from='ck' output='CLIP'/><input name='text'>a</input></node>"
#define SAMPLER(latent) \
    "<node id='ks' type='KSampler'><input name='model' from='ck' output='MODEL'/><input name='positive' from='p' output='CONDITIONING'/>" \
    "<input name='negative' from='p' output='CONDITIONING'/><input name='latent_image' from='" latent "' output='LATENT'/></node>"
#define EMPTY "<node id='e' type='EmptyLatentImage'><input name='width'>64</input><input name='height'>64</input></node>"
#define DECODE(latent, vae) \
    "<node id='d' type='VAEDecode'><input name='samples' from='" latent "' output='LATENT'/>" \
    "<input name='vae' from='" vae "' output='VAE'/></node>"
#define IMAGE "<node id='i' type='EmptyImage'><input name='width'>64</input><input name='height'>64</input></node>"
#define ENCODE(vae) "<node id='en' type='VAEEncode'><input name='pixels' from='i' output='IMAGE'/><input name='vae' from='" vae "' output='VAE'/></node>"

static void test_checks(void)
{
    /* The stock pipeline passes; so does a 4-channel standalone VAE. */
    expect_problems(CKPT("tiny.safetensors") CONDS EMPTY SAMPLER("e") DECODE("ks", "ck"), 0, NULL);
    expect_problems(CKPT("tiny.safetensors") VAE("vae4.safetensors") CONDS EMPTY SAMPLER("e")
                    DECODE("ks", "v"), 0, NULL);
    /* A 16-channel VAE's latent into an SD1 model; an SD1 latent into a 16-channel VAE. */
    expect_problems(CKPT("tiny.safetensors") VAE("vae16.safetensors") CONDS IMAGE ENCODE("v")
                    SAMPLER("en"), 1,
                    "family.xml:1: node 'ks' input 'latent_image': a 16-channel latent cannot be sampled by the SD1.x "
                    "model, which takes 4-channel latents");
    expect_problems(CKPT("tiny.safetensors") VAE("vae16.safetensors") CONDS EMPTY SAMPLER("e")
                    DECODE("ks", "v"), 1,
                    "node 'd' input 'samples': a 4-channel SD1.x latent cannot be decoded by a 16-channel VAE");
    /* Through a guider: SamplerCustomAdvanced and SamplerCustom check the latent against the model. */
    expect_problems(CKPT("tiny.safetensors") VAE("vae16.safetensors") CONDS IMAGE ENCODE("v")
                    "<node id='g' type='CFGGuider'><input name='model' from='ck' output='MODEL'/>"
                    "<input name='positive' from='p' output='CONDITIONING'/><input name='negative' from='p' output='CONDITIONING'/></node>"
                    "<node id='n' type='RandomNoise'/><node id='s' type='KSamplerSelect'/>"
                    "<node id='sg' type='KarrasScheduler'/>"
                    "<node id='sca' type='SamplerCustomAdvanced'><input name='noise' from='n' output='NOISE'/>"
                    "<input name='guider' from='g' output='GUIDER'/><input name='sampler' from='s' output='SAMPLER'/>"
                    "<input name='sigmas' from='sg' output='SIGMAS'/><input name='latent_image' from='en' output='LATENT'/></node>"
                    "<node id='sc' type='SamplerCustom'><input name='model' from='ck' output='MODEL'/>"
                    "<input name='positive' from='p' output='CONDITIONING'/><input name='negative' from='p' output='CONDITIONING'/>"
                    "<input name='sampler' from='s' output='SAMPLER'/><input name='sigmas' from='sg' output='SIGMAS'/>"
                    "<input name='latent_image' from='en' output='LATENT'/></node>", 2,
                    "input 'latent_image': a 16-channel latent cannot be sampled by the SD1.x model");
    /* Tags pass through nodes without a hook (LatentUpscaleBy). */
    expect_problems(CKPT("tiny.safetensors") VAE("vae16.safetensors") CONDS EMPTY SAMPLER("e")
                    "<node id='u' type='LatentUpscaleBy'><input name='samples' from='ks' output='LATENT'/></node>"
                    DECODE("u", "v"), 1, "node 'd' input 'samples': a 4-channel SD1.x latent");
    /* A checkpoint without VAE tensors feeding VAEDecode. */
    expect_problems(CKPT("novae.safetensors") CONDS EMPTY SAMPLER("e") DECODE("ks", "ck"), 1,
                    "node 'd' input 'vae': the checkpoint has no VAE (no first_stage_model.* tensors); load one with "
                    "VAELoader");
    expect_problems(CKPT("novae.safetensors") VAE("vae4.safetensors") CONDS EMPTY SAMPLER("e")
                    DECODE("ks", "v"), 0, NULL);
    /* A FLUX all-in-one checkpoint's text encoders feed CLIPTextEncode; without them, named. */
    expect_problems(CKPT("flux_aio.safetensors") CONDS, 0, NULL);
    expect_problems(CKPT("flux.safetensors") CONDS, 1,
                    "node 'p' input 'clip': the FLUX checkpoint has no text encoders; load them with CLIPLoader or "
                    "DualCLIPLoader");
    /* Another family's checkpoint: named before anything runs. */
    expect_problems(CKPT("sd3.safetensors") CONDS EMPTY SAMPLER("e"), 1,
                    "node 'ck' input 'ckpt_name': ");
    expect_problems(CKPT("sd3.safetensors") CONDS EMPTY SAMPLER("e"), 1,
                    "sd3.safetensors: SD3 checkpoint detected; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX");
}

/* What no tag tells (a .latent file's channels) is still refused when the node runs, naming both. */
static void test_run_time(void)
{
    sd_context *ctx = new_context();
    char *in = test_path(test_scratch_dir(), "in");
    CHECK(mkdir(in, 0755) == 0);
    sd_context_set_dir(ctx, SD_DIR_INPUT, in);
    char *latent = test_path(in, "flux.latent");
    const sd_st_entry e[2] = {{.name = "latent_tensor", .dtype = SD_ST_F32, .ndim = 4, .shape = {1, 16, 8, 8}},
                              {.name = "latent_format_version_0", .dtype = SD_ST_F32, .ndim = 1, .shape = {0}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, latent, e, 2, NULL, fill_zero, NULL), SD_OK);
    const char *xml = "<workflow version=\"1\">" CKPT("tiny.safetensors")
                      "<node id='l' type='LoadLatent'><input name='latent'>flux.latent</input></node>"
                      DECODE("l", "ck") "</workflow>";
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "run.xml", &g), SD_OK);
    const char *outputs[] = {"d"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID, SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'd' (VAEDecode): input 'samples': a 16-channel latent cannot be "
                                         "decoded by a 4-channel VAE");
    sd_result_free(res);
    sd_graph_free(g);
    free(latent);
    free(in);
    sd_context_free(ctx);
}

int main(void)
{
    setup();
    RUN(test_descriptors);
    RUN(test_detection);
    RUN(test_checks);
    RUN(test_run_time);
    free(g_models);
    return test_summary("test_family_check");
}
