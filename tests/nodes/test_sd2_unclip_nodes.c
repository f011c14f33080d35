/* SD2 unCLIP through the nodes on the tiny checkpoint (sdflow_mkckpt --preset sd2-unclip-tiny
 * --seed 31, f32), as ComfyUI's unclip example wires them:
 * - a whole KSampler run (euler, normal, 5 steps, cfg 6, seed 99, 64x64, v-prediction):
 *   unCLIPCheckpointLoader, CLIPVisionEncode of examples/input/shapes.png on the checkpoint's own
 *   image tower, unCLIPConditioning (strength 1, noise_augmentation 0.3) on the positive prompt and
 *   the zero ADM vector on the negative, against tests/reference/make_sd2_unclip_goldens.py
 *   (diffusers' StableUnCLIP UNet, transformers' CLIP towers, ComfyUI's unclip_adm in torch), by
 *   PSNR on the model's contribution (final latent minus the scaled initial noise);
 * - the image embeddings of CLIPVisionEncode on the checkpoint's tower against transformers';
 * - CheckpointLoaderSimple on the same file samples with zero ADM vectors (ComfyUI's
 *   SD21UNCLIP.encode_adm without unCLIP), which the image embedding changes;
 * - an SD2 LoRA patches the unCLIP model and its text encoder;
 * - family checks before running, one line each: unCLIPConditioning on an SD1 conditioning, an
 *   unCLIP conditioning on a plain SD2 model, an SD2 unCLIP conditioning on SDXL, an SDXL
 *   conditioning on the SD2 unCLIP model, unCLIPCheckpointLoader on a file without an image tower;
 * - image embeddings of another width than the model's ADM input: a one-line error. */
#include "test.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "core/context.h"
#include "core/run.h"
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT };
#define SCALE 0.18215f
#define SIGMA_MAX 14.614641189575195 /* the SD schedule's sigma at t = 999 */

static char *g_dir; /* models/checkpoints: unclip, unclip80 (80-wide embeddings), sd1, sd2, sdxl */

#define LOADER(type, id, file) "<node id='" id "' type='" type "'><input name='ckpt_name'>" file "</input></node>"
#define UNCLIP_CKPT(id, file) LOADER("unCLIPCheckpointLoader", id, file)
#define CKPT(id, file) LOADER("CheckpointLoaderSimple", id, file)
#define ENCODE(id, ckpt, text) \
    "<node id='" id "' type='CLIPTextEncode'><input name='clip' from='" ckpt "' output='CLIP'/>" \
    "<input name='text'>" text "</input></node>"
#define IMAGE(vision) \
    "<node id='img' type='LoadImage'><input name='image'>shapes.png</input></node>" \
    "<node id='cv' type='CLIPVisionEncode'><input name='clip_vision' from='" vision "' output='CLIP_VISION'/>" \
    "<input name='image' from='img' output='IMAGE'/><input name='crop'>center</input></node>"
#define UNCLIP(id, cond) \
    "<node id='" id "' type='unCLIPConditioning'><input name='conditioning' from='" cond "' output='CONDITIONING'/>" \
    "<input name='clip_vision_output' from='cv' output='CLIP_VISION_OUTPUT'/><input name='strength'>1.0</input>" \
    "<input name='noise_augmentation'>0.3</input></node>"
#define EMPTY "<node id='e' type='EmptyLatentImage'><input name='width'>64</input><input name='height'>64</input></node>"
#define SAMPLER(model, pos) \
    "<node id='ks' type='KSampler'><input name='model' from='" model "' output='MODEL'/>" \
    "<input name='seed'>99</input><input name='steps'>5</input><input name='cfg'>6</input>" \
    "<input name='sampler_name'>euler</input><input name='scheduler'>normal</input>" \
    "<input name='positive' from='" pos "' output='CONDITIONING'/><input name='negative' from='n' " \
    "output='CONDITIONING'/><input name='latent_image' from='e' output='LATENT'/></node>"
/* ComfyUI's unclip example on the checkpoint `file` */
#define EXAMPLE(file) \
    UNCLIP_CKPT("ck", file) IMAGE("ck") ENCODE("t", "ck", "a photo of a cat") ENCODE("n", "ck", "") UNCLIP("p", "t") \
    EMPTY SAMPLER("ck", "p")

static float *run_latent(const char *body)
{
    return test_run_body_latent(g_dir, NULL, body, "ks", LAT_N);
}

static double contribution_psnr(const float *got, const float *ref, const float *noise)
{
    float cg[LAT_N], cr[LAT_N], lo = INFINITY, hi = -INFINITY, k = (float)sqrt(1.0 + SIGMA_MAX * SIGMA_MAX);
    for (int i = 0; i < LAT_N; i++) {
        cg[i] = got[i] * SCALE - noise[i] * k;
        cr[i] = ref[i] * SCALE - noise[i] * k;
        lo = fminf(lo, cr[i]), hi = fmaxf(hi, cr[i]);
    }
    return test_psnr(cg, cr, LAT_N, hi - lo);
}

static float *g_unclip_run;

static void test_example_against_reference(void)
{
    g_unclip_run = run_latent(EXAMPLE("unclip.safetensors"));
    float *ref = test_read_sdg1("sd2_unclip_sample_final.bin", 4, LAT_N), *noise = test_read_sdg1("sd2_sample_noise.bin", 4, LAT_N);
    CHECK(g_unclip_run && ref && noise);
    if (g_unclip_run && ref && noise) {
        double psnr = contribution_psnr(g_unclip_run, ref, noise);
        printf("  SD2 unCLIP example (image strength 1, augmentation 0.3), euler 5 steps, contribution: PSNR %.1f dB "
               "vs the reference\n", psnr);
        CHECK(psnr >= 40.0);
    }
    free(ref), free(noise);
}

/* CheckpointLoaderSimple gives MODEL, CLIP and VAE of the unCLIP file; without unCLIPConditioning
 * every entry's ADM vector is zero, so the image made the difference above. */
static void test_plain_loader(void)
{
    float *got = run_latent(CKPT("ck", "unclip.safetensors") ENCODE("p", "ck", "a photo of a cat") ENCODE("n", "ck", "")
                            EMPTY SAMPLER("ck", "p"));
    float *noise = test_read_sdg1("sd2_sample_noise.bin", 4, LAT_N);
    CHECK(got && g_unclip_run && noise);
    if (got && g_unclip_run && noise) {
        double psnr = contribution_psnr(got, g_unclip_run, noise);
        printf("  the same run without the image embedding: %.1f dB against it\n", psnr);
        CHECK(psnr < 70.0); /* (the two agree to 100 dB and more where the image is in both) */
    }
    free(got), free(noise);
}

/* CLIPVisionEncode on the checkpoint's own image tower (f16 weights) against transformers'
 * CLIPVisionModelWithProjection on the same weights and ComfyUI's clip_preprocess. */
static void test_image_embeds(void)
{
    sd_context *ctx = test_models_context(g_dir, NULL);
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", UNCLIP_CKPT("ck", "unclip.safetensors") IMAGE("ck"));
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const char *outputs[] = {"cv"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "test.xml", &g), SD_OK);
    CHECK_EQ_INT(g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID, SD_OK);
    const sd_value *v = res ? sd_result_value(res, "cv", "CLIP_VISION_OUTPUT") : NULL;
    const sd_tensor *t = v ? sd_value_tensor(v, "image_embeds") : NULL;
    float *ref = test_read_sdg1("sd2_unclip_image_embeds.bin", 2, 96);
    CHECK(t && ref && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 96);
    if (t && ref && t->ndim == 2 && t->shape[1] == 96) {
        double d = test_max_abs_diff(t->data, ref, 96);
        printf("  the checkpoint's image tower on shapes.png: image_embeds max abs error %.3g (f16 weights)\n", d);
        CHECK(d < 5e-3);
    }
    free(ref);
    sd_result_free(res);
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
}

/* An SD2 LoRA (kohya's names, written for this file's architecture) patches the unCLIP model and
 * its text encoder as on SD2 (ComfyUI loads them alike): the run changes. */
static void test_lora(void)
{
    float *got = run_latent(UNCLIP_CKPT("ck", "unclip.safetensors")
                            "<node id='lo' type='LoraLoader'><input name='model' from='ck' output='MODEL'/>"
                            "<input name='clip' from='ck' output='CLIP'/><input name='lora_name'>unclip-lora.safetensors"
                            "</input><input name='strength_model'>1.0</input><input name='strength_clip'>1.0</input>"
                            "</node>" IMAGE("ck") ENCODE("t", "lo", "a photo of a cat") ENCODE("n", "lo", "")
                            UNCLIP("p", "t") EMPTY SAMPLER("lo", "p"));
    CHECK(got && g_unclip_run);
    if (got && g_unclip_run)
        CHECK(memcmp(got, g_unclip_run, sizeof(float) * LAT_N) != 0);
    free(got);
}

static void expect_problem(const char *body, const char *msg)
{
    test_expect_problems(g_dir, body, 1, (const char *[]){msg});
}

static void test_family_checks(void)
{
    expect_problem(UNCLIP_CKPT("ck", "unclip.safetensors") CKPT("c1", "sd1.safetensors") IMAGE("ck")
                   ENCODE("t", "c1", "a") UNCLIP("p", "t"),
                   "node 'p' input 'conditioning': the conditioning was made by SD1.x text encoders; no SD1.x model "
                   "takes unCLIP image embeddings (SD2.x unCLIP and SDXL do)");
    expect_problem(UNCLIP_CKPT("ck", "unclip.safetensors") CKPT("c2", "sd2.safetensors") IMAGE("ck")
                   ENCODE("t", "ck", "a") ENCODE("n", "ck", "") UNCLIP("p", "t") EMPTY SAMPLER("c2", "p"),
                   "node 'ks' input 'positive': an unCLIP conditioning (CLIP vision image embeddings) cannot condition "
                   "the SD2.x model, which has no unCLIP ADM input");
    expect_problem(UNCLIP_CKPT("ck", "unclip.safetensors") CKPT("xl", "sdxl.safetensors") IMAGE("ck")
                   ENCODE("t", "ck", "a") ENCODE("n", "xl", "") UNCLIP("p", "t") EMPTY SAMPLER("xl", "p"),
                   "node 'ks' input 'positive': a conditioning made by SD2.x text encoders cannot condition the SDXL "
                   "model");
    expect_problem(UNCLIP_CKPT("ck", "unclip.safetensors") CKPT("xl", "sdxl.safetensors") ENCODE("p", "xl", "a")
                   ENCODE("n", "ck", "") EMPTY SAMPLER("ck", "p"),
                   "node 'ks' input 'positive': a conditioning made by SDXL text encoders cannot condition the SD2.x "
                   "unCLIP model");
    expect_problem(UNCLIP_CKPT("ck", "sd2.safetensors"),
                   "sd2.safetensors: no CLIP image tower (embedder.model.visual.*) in this SD2.x checkpoint; load it "
                   "with CheckpointLoaderSimple");
}

/* The other file's 80-wide image embeddings on this model (96): one line naming both widths, before
 * any step. */
static void test_other_width(void)
{
    sd_context *ctx = test_models_context(g_dir, NULL);
    char *xml = sd_strfmt("<workflow version=\"1\">%s%s</workflow>",
                          UNCLIP_CKPT("ck", "unclip.safetensors") ENCODE("t", "ck", "a") ENCODE("n", "ck", "")
                          EMPTY SAMPLER("ck", "p"),
                          UNCLIP_CKPT("c80", "unclip80.safetensors") IMAGE("c80") UNCLIP("p", "t"));
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "test.xml", &g), SD_OK);
    if (g) {
        const char *want[] = {"ks"};
        sd_run_options o = {.outputs = want, .n_outputs = 1, .no_cache = true};
        CHECK_EQ_INT(sd_graph_run(g, &o, NULL), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "input 'positive': entry 0's unCLIP image embeddings are 80 wide; "
                                                   "the model's ADM input takes 96");
    }
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
}

int main(void)
{
    static const test_checkpoint_file files[] = {
        {"sd2-unclip-tiny", "unclip.safetensors", 31}, {"tiny", "sd1.safetensors", 1},
        {"sd2-tiny", "sd2.safetensors", 21}, {"sdxl-tiny", "sdxl.safetensors", 11}};
    if (!(g_dir = test_write_checkpoints(files, sizeof files / sizeof files[0])))
        return 1;
    /* a second unCLIP file whose image tower makes 80-wide embeddings (ADM 160) */
    sd_context *ctx = NULL;
    sd_checkpoint_config cfg;
    char *path = sd_strfmt("%s/checkpoints/unclip80.safetensors", g_dir), *input = sd_strfmt("%s/examples/input",
                                                                                             test_source_dir());
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK(sd_checkpoint_preset("sd2-unclip-tiny", &cfg));
    cfg.vision.projection = 80;
    cfg.unet.adm_channels = 160;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F16, 7), SD_OK);
    char *loras = sd_strfmt("%s/loras", g_dir), *lora = sd_strfmt("%s/unclip-lora.safetensors", loras);
    CHECK(sd_checkpoint_preset("sd2-unclip-tiny", &cfg));
    CHECK(mkdir(loras, 0755) == 0);
    CHECK_EQ_INT(sd_lora_write_random(ctx, lora, &cfg, 4, 5, SD_LORA_KOHYA), SD_OK);
    free(loras), free(lora);
    sd_context_free(ctx);
    test_models_input_dir(input);
    RUN(test_image_embeds);
    RUN(test_example_against_reference);
    RUN(test_plain_loader);
    RUN(test_lora);
    RUN(test_family_checks);
    RUN(test_other_width);
    free(g_unclip_run);
    free(path), free(input), free(g_dir);
    test_models_input_dir(NULL);
    return test_summary("test_sd2_unclip_nodes");
}
