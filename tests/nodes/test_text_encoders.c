/* CLIPs made of text-encoder files (CLIPLoader, DualCLIPLoader, the GGUF loaders) and FLUX's
 * conditioning, on files sdflow_mktextenc's writers make (ml/text/text_encoder_write.h):
 * - DualCLIPLoader sdxl on the clip_l / clip_g files split out of a tiny SDXL checkpoint (its
 *   bigG 32 layers deep, so that ComfyUI's detection names it) gives the checkpoint CLIP's
 *   conditioning bit for bit, through CLIPTextEncode and CLIPTextEncodeSDXL, and with a LoRA;
 * - FLUX (DualCLIPLoader flux, clip_l + t5xxl in either order): CLIPTextEncodeFlux's cond.0
 *   [1, 256, 32] (T5) and pooled.0 [1, 64] (CLIP-L, unprojected) against transformers goldens
 *   (tests/reference/make_flux_text_goldens.py), with the guidance attribute; prompt weighting; a
 *   prompt past 256 tokens; CLIPTextEncode and CLIPTextEncodeSDXL on the same CLIP; a Q8_0 T5
 *   GGUF through DualCLIPLoaderGGUF; both encoders from one file under the names of ComfyUI's
 *   all-in-one FLUX checkpoints;
 * - the T5 encoding is cached (a second run reads it from the cache) and released with the
 *   text encoders (sd_model_store_release);
 * - CLIPLoader stable_diffusion on CLIP-L (SD1.x), and on an SD2 checkpoint's OpenCLIP-H split out
 *   with all 24 layers or with diffusers' 23: the checkpoint CLIP's conditioning bit for bit; bad
 *   input named before running: a T5 file as
 *   CLIP-L, an SD2 (OpenCLIP-H) file as clip_g, a clip_g where clip_l belongs, a DualCLIPLoader
 *   type the files do not fit, an unsupported type, an SDXL CLIP in CLIPTextEncodeFlux. */
#include "test.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "core/context.h"
#include "core/run.h"
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include "ml/loading/model_store.h"
#include "ml/text/text_encoder_write.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_dir; /* models/ with checkpoints/sdxl.safetensors, text_encoders/..., loras/sdxl.safetensors */

#define CKPT(id, file) \
    "<node id='" id "' type='CheckpointLoaderSimple'><input name='ckpt_name'>" file "</input></node>"
#define DUAL(id, type_, a, b, t) \
    "<node id='" id "' type='" type_ "'><input name='clip_name1'>" a "</input><input name='clip_name2'>" b \
    "</input><input name='type'>" t "</input></node>"
#define SINGLE(id, a, t) \
    "<node id='" id "' type='CLIPLoader'><input name='clip_name'>" a "</input><input name='type'>" t "</input></node>"
#define ENCODE(id, clip, text) \
    "<node id='" id "' type='CLIPTextEncode'><input name='clip' from='" clip "' output='CLIP'/>" \
    "<input name='text'>" text "</input></node>"
#define ENCODE_SDXL(id, clip, tg, tl) \
    "<node id='" id "' type='CLIPTextEncodeSDXL'><input name='clip' from='" clip "' output='CLIP'/>" \
    "<input name='text_g'>" tg "</input><input name='text_l'>" tl "</input></node>"
#define ENCODE_FLUX(id, clip, tl, t5) \
    "<node id='" id "' type='CLIPTextEncodeFlux'><input name='clip' from='" clip "' output='CLIP'/>" \
    "<input name='clip_l'>" tl "</input><input name='t5xxl'>" t5 "</input><input name='guidance'>3.5</input></node>"
#define LORA(id, model, clip) \
    "<node id='" id "' type='LoraLoader'><input name='model' from='" model "' output='MODEL'/>" \
    "<input name='clip' from='" clip "' output='CLIP'/><input name='lora_name'>sdxl.safetensors</input>" \
    "<input name='strength_model'>1</input><input name='strength_clip'>0.8</input></node>"

/* A CONDITIONING's first entry, copied. */
typedef struct cond {
    float *c, *p;
    int64_t shape[3], pshape[2];
    double guidance; /* -1 when absent */
} cond;

static void cond_free(cond *c)
{
    free(c->c);
    free(c->p);
    memset(c, 0, sizeof *c);
}

static float *copy_tensor(const sd_value *v, const char *name, int64_t *shape, int ndim)
{
    const sd_tensor *t = v ? sd_value_tensor(v, name) : NULL;
    size_t n = 0;
    float *out = NULL;
    if (t && t->ndim == ndim && sd_tensor_numel(t, &n) && (out = malloc(n * sizeof *out))) {
        memcpy(out, t->data, n * sizeof *out);
        memcpy(shape, t->shape, (size_t)ndim * sizeof *shape);
    }
    return out;
}

/* Runs body up to node's CONDITIONING (through cache when not NULL; *cached: the node came from
 * the cache). */
static cond run_cond_in(sd_context *ctx, const char *body, const char *node, bool *cached)
{
    cond out = {.guidance = -1};
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "test.xml", &g), SD_OK);
    const char *outputs[] = {node};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = cached == NULL};
    sd_result *res = NULL;
    sd_status st = g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID;
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, node, "CONDITIONING");
    out.c = copy_tensor(v, "cond.0", out.shape, 3);
    out.p = copy_tensor(v, "pooled.0", out.pshape, 2);
    json_t *e = v && v->attrs ? json_array_get(json_object_get(v->attrs, "entries"), 0) : NULL;
    if (json_is_number(json_object_get(e, "guidance")))
        out.guidance = json_number_value(json_object_get(e, "guidance"));
    CHECK_MSG(out.c && out.p, "node '%s': no conditioning", node);
    for (size_t i = 0; cached && res && i < sd_result_node_count(res); i++) {
        sd_node_stat s;
        if (!sd_result_node(res, i, &s) && strcmp(s.node_id, node) == 0)
            *cached = s.outcome == SD_NODE_CACHED;
    }
    sd_result_free(res);
    sd_graph_free(g);
    free(xml);
    return out;
}

static cond run_cond(const char *body, const char *node)
{
    sd_context *ctx = test_models_context(g_dir, NULL);
    cond c = run_cond_in(ctx, body, node, NULL);
    sd_context_free(ctx);
    return c;
}

static size_t numel3(const int64_t *s)
{
    return (size_t)(s[0] * s[1] * s[2]);
}

static void expect_same(const cond *a, const cond *b, const char *what)
{
    bool same = a->c && b->c && a->p && b->p && memcmp(a->shape, b->shape, sizeof a->shape) == 0 &&
                memcmp(a->pshape, b->pshape, sizeof a->pshape) == 0 &&
                memcmp(a->c, b->c, numel3(a->shape) * sizeof(float)) == 0 &&
                memcmp(a->p, b->p, (size_t)(a->pshape[0] * a->pshape[1]) * sizeof(float)) == 0;
    CHECK_MSG(same, "%s: conditionings differ", what);
}

static void test_sdxl_split_identical(void)
{
    cond ck = run_cond(CKPT("ck", "sdxl.safetensors") ENCODE("p", "ck", "a (photo:1.2) of a cat"), "p");
    cond d = run_cond(DUAL("d", "DualCLIPLoader", "sdxl_g.safetensors", "sdxl_l.safetensors", "sdxl")
                          ENCODE("p", "d", "a (photo:1.2) of a cat"),
                      "p");
    CHECK(ck.shape[1] == 77 && ck.shape[2] == 128 + 192 && ck.pshape[1] == 160);
    expect_same(&ck, &d, "CLIPTextEncode");
    cond_free(&ck);
    cond_free(&d);
    ck = run_cond(CKPT("ck", "sdxl.safetensors") ENCODE_SDXL("p", "ck", "a cat", "a dog"), "p");
    d = run_cond(DUAL("d", "DualCLIPLoader", "sdxl_l.safetensors", "sdxl_g.safetensors", "sdxl")
                     ENCODE_SDXL("p", "d", "a cat", "a dog"),
                 "p");
    expect_same(&ck, &d, "CLIPTextEncodeSDXL");
    cond_free(&ck);
    cond_free(&d);
    /* a LoRA patches both encoders of the split files as it patches the checkpoint's */
    ck = run_cond(CKPT("ck", "sdxl.safetensors") LORA("l", "ck", "ck") ENCODE("p", "l", "a photo of a cat"), "p");
    d = run_cond(CKPT("ck", "sdxl.safetensors") DUAL("d", "DualCLIPLoader", "sdxl_l.safetensors", "sdxl_g.safetensors",
                                                     "sdxl") LORA("l", "ck", "d") ENCODE("p", "l", "a photo of a cat"),
                 "p");
    cond plain = run_cond(CKPT("ck", "sdxl.safetensors") ENCODE("p", "ck", "a photo of a cat"), "p");
    expect_same(&ck, &d, "with a LoRA");
    CHECK(plain.c && ck.c && memcmp(plain.c, ck.c, numel3(ck.shape) * sizeof(float)) != 0);
    cond_free(&ck);
    cond_free(&d);
    cond_free(&plain);
}

static void expect_golden(const float *got, const char *golden, size_t n, double tol)
{
    float *ref = test_read_golden(golden, n * sizeof(float));
    if (got && ref) {
        double d = test_max_abs_diff(got, ref, n);
        printf("  %s: max abs diff %.3g\n", golden, d);
        CHECK_MSG(d <= tol, "%s: max abs diff %g > %g", golden, d, tol);
    }
    free(ref);
}

#define FLUX_DUAL DUAL("d", "DualCLIPLoader", "t5xxl.safetensors", "clip_l.safetensors", "flux")

static void test_flux_conditioning(void)
{
    cond c = run_cond(FLUX_DUAL ENCODE_FLUX("p", "d", "a photo of a cat", "a photo of a cat"), "p");
    CHECK(c.shape[0] == 1 && c.shape[1] == 256 && c.shape[2] == 32 && c.pshape[0] == 1 && c.pshape[1] == 64);
    CHECK(c.guidance == 3.5);
    expect_golden(c.c, "flux_cond_plain.f32", 256 * 32, 1e-4);
    expect_golden(c.p, "flux_pooled.f32", 64, 1e-4);
    /* CLIPTextEncode on a FLUX CLIP: the same, without guidance; CLIPTextEncodeSDXL: text_g to T5 */
    cond e = run_cond(DUAL("d", "DualCLIPLoader", "clip_l.safetensors", "t5xxl.safetensors", "flux")
                          ENCODE("p", "d", "a photo of a cat"),
                      "p");
    expect_same(&c, &e, "CLIPTextEncode on FLUX");
    CHECK(e.guidance == -1);
    cond_free(&e);
    e = run_cond(FLUX_DUAL ENCODE_SDXL("p", "d", "a photo of a cat", "a photo of a cat"), "p");
    expect_same(&c, &e, "CLIPTextEncodeSDXL on FLUX");
    cond_free(&e);
    cond_free(&c);
    c = run_cond(FLUX_DUAL ENCODE_FLUX("p", "d", "a photo of a cat", "a (photo:1.3) of a ((cat))"), "p");
    expect_golden(c.c, "flux_cond_weighted.f32", 256 * 32, 1e-4);
    cond_free(&c);
    c = run_cond(FLUX_DUAL ENCODE_FLUX("p", "d", "x", "a photo,&#10;of  a cat! 3.5 km/h"), "p");
    expect_golden(c.c, "flux_cond_spaces.f32", 256 * 32, 1e-4);
    cond_free(&c);
    char body[4096];
    char long_prompt[1024] = "";
    for (int i = 0; i < 100; i++)
        strcat(long_prompt, i ? " a red cat" : "a red cat");
    snprintf(body, sizeof body, FLUX_DUAL ENCODE_FLUX("p", "d", "x", "%s"), long_prompt);
    c = run_cond(body, "p");
    CHECK(c.shape[1] == 401);
    expect_golden(c.c, "flux_cond_long.f32", 401 * 32, 1e-4);
    cond_free(&c);
    /* the Q8_0 GGUF of the same T5 (matrices expanded to f16 on the device) */
    c = run_cond(DUAL("d", "DualCLIPLoaderGGUF", "clip_l.safetensors", "t5xxl-Q8_0.gguf", "flux")
                     ENCODE_FLUX("p", "d", "a photo of a cat", "a photo of a cat"),
                 "p");
    expect_golden(c.c, "flux_cond_gguf.f32", 256 * 32, 1e-3);
    cond_free(&c);
}

/* ComfyUI's all-in-one FLUX names (text_encoders.clip_l/t5xxl.transformer.*): both encoders found
 * in one file (what CheckpointLoaderSimple reads from such a checkpoint), the same values as the
 * separate files. */
static void test_flux_all_in_one(void)
{
    cond a = run_cond(DUAL("d", "DualCLIPLoader", "flux_te.safetensors", "flux_te.safetensors", "flux")
                          ENCODE("p", "d", "a photo of a cat"),
                      "p");
    cond b = run_cond(DUAL("d", "DualCLIPLoader", "clip_l9.safetensors", "t5xxl9.safetensors", "flux")
                          ENCODE("p", "d", "a photo of a cat"),
                      "p");
    expect_same(&a, &b, "all-in-one names");
    cond_free(&a);
    cond_free(&b);
}

/* The encoding is cached as CLIP's is; the text encoders (T5 too) are released with the others. */
static void test_flux_cache_and_release(void)
{
    char *cache = test_path(test_scratch_dir(), "cache.db");
    const char *body = FLUX_DUAL ENCODE_FLUX("p", "d", "a photo of a cat", "a photo of a cat");
    sd_context *ctx = test_models_context(g_dir, cache);
    bool cached = true;
    cond a = run_cond_in(ctx, body, "p", &cached);
    CHECK(!cached);
    cond b = run_cond_in(ctx, body, "p", &cached);
    CHECK(cached);
    expect_same(&a, &b, "from the cache");
    cond_free(&a);
    cond_free(&b);
    sd_model_store_stats s0, s1, s2;
    sd_model_store_stats_get(ctx, &s0);
    a = run_cond_in(ctx, body, "p", NULL);
    sd_model_store_stats_get(ctx, &s1);
    CHECK_EQ_INT(s1.clips_created - s0.clips_created, 0); /* CLIP-L and T5 of the first run reused */
    sd_model_store_release(ctx, false, true);
    b = run_cond_in(ctx, body, "p", NULL);
    sd_model_store_stats_get(ctx, &s2);
    CHECK_EQ_INT(s2.clips_created - s1.clips_created, 2); /* both created again after the release */
    expect_same(&a, &b, "after the release");
    cond_free(&a);
    cond_free(&b);
    sd_context_free(ctx);
    free(cache);
}

static void test_clip_loader(void)
{
    cond c = run_cond(SINGLE("c", "clip_l.safetensors", "stable_diffusion") ENCODE("p", "c", "a cat"), "p");
    CHECK(c.shape[1] == 77 && c.shape[2] == 64 && c.pshape[1] == 64);
    cond_free(&c);
    /* an SD2 checkpoint's OpenCLIP-H as a file of all 24 layers: the checkpoint CLIP's conditioning;
     * as diffusers keeps it (23 layers): the same tokens (the penultimate layer, normed; its pooled
     * vector, which SD2 does not use, comes from the 23rd) */
    cond ck = run_cond(CKPT("ck", "sd2.safetensors") ENCODE("p", "ck", "a (cat:1.1)"), "p");
    cond h24 = run_cond(SINGLE("c", "sd2_h24.safetensors", "stable_diffusion") ENCODE("p", "c", "a (cat:1.1)"), "p");
    cond h23 = run_cond(SINGLE("c", "sd2_h23.safetensors", "stable_diffusion") ENCODE("p", "c", "a (cat:1.1)"), "p");
    expect_same(&ck, &h24, "OpenCLIP-H file of 24 layers");
    CHECK(ck.c && h23.c && memcmp(ck.shape, h23.shape, sizeof ck.shape) == 0 &&
          memcmp(ck.c, h23.c, numel3(ck.shape) * sizeof(float)) == 0);
    cond_free(&ck);
    cond_free(&h24);
    cond_free(&h23);
}

static void expect_problem(const char *body, const char *msg)
{
    const char *msgs[1] = {msg};
    test_expect_problems(g_dir, body, 1, msgs);
}

static void test_bad_inputs(void)
{
    expect_problem(SINGLE("c", "t5xxl.safetensors", "stable_diffusion"),
                   "type stable_diffusion takes one CLIP-L, OpenCLIP-H or OpenCLIP-bigG text model; clip_name is T5-XXL");
    expect_problem(DUAL("d", "DualCLIPLoader", "clip_l.safetensors", "clip_h.safetensors", "sdxl"),
                   "type sdxl takes CLIP-L + OpenCLIP-bigG; clip_name1 is CLIP-L, clip_name2 is OpenCLIP-H");
    expect_problem(DUAL("d", "DualCLIPLoader", "clip_g.safetensors", "t5xxl.safetensors", "flux"),
                   "type flux takes CLIP-L + T5-XXL; clip_name1 is OpenCLIP-bigG, clip_name2 is T5-XXL");
    expect_problem(DUAL("d", "DualCLIPLoader", "t5xxl.safetensors", "t5xxl-Q8_0.gguf", "flux"),
                   "clip_name1 is T5-XXL, clip_name2 is T5-XXL");
    expect_problem(DUAL("d", "DualCLIPLoader", "clip_l.safetensors", "t5xxl.safetensors", "sdxl"),
                   "type sdxl takes CLIP-L + OpenCLIP-bigG; clip_name1 is CLIP-L, clip_name2 is T5-XXL (type flux fits them)");
    expect_problem(DUAL("d", "DualCLIPLoader", "clip_l.safetensors", "clip_g.safetensors", "sd3"),
                   "type sd3 is not supported by sdflow (supported: sdxl, flux)");
    expect_problem(DUAL("d", "DualCLIPLoader", "clip_l.safetensors", "clip_g.safetensors", "sdxl")
                       ENCODE_FLUX("p", "d", "a", "b"),
                   "the text encoders are SDXL; this node takes FLUX ones");
    expect_problem(SINGLE("c", "not_te.safetensors", "stable_diffusion"),
                   "SDXL checkpoint detected, not a text-encoder file; load it with CheckpointLoaderSimple");
}

/* models/: the SDXL checkpoint (bigG 32 layers deep), its text encoders split out, a LoRA for it,
 * and the tiny random text-encoder files. */
static char *write_models(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    char *dir = test_path(test_scratch_dir(), "models");
    char *ck = test_path(dir, "checkpoints"), *te = test_path(dir, "text_encoders"), *lo = test_path(dir, "loras");
    char *sdxl = test_path(ck, "sdxl.safetensors"), *lora = test_path(lo, "sdxl.safetensors");
    bool ok = ctx && mkdir(dir, 0755) == 0 && mkdir(ck, 0755) == 0 && mkdir(te, 0755) == 0 && mkdir(lo, 0755) == 0;
    sd_checkpoint_config cfg;
    ok = ok && sd_checkpoint_preset("sdxl-tiny", &cfg);
    cfg.clip2.layers = 32;
    cfg.has_vae = false;
    ok = ok && !sd_sd1_write_random(ctx, sdxl, &cfg, SD_ST_F32, 11) &&
         !sd_lora_write_random(ctx, lora, &cfg, 4, 3, SD_LORA_KOHYA);
    static const struct { const char *name; sd_text_encoder_kind kind; uint64_t seed; } files[] = {
        {"clip_l.safetensors", SD_TEXT_CLIP_L, 5}, {"t5xxl.safetensors", SD_TEXT_T5XXL, 6},
        {"clip_g.safetensors", SD_TEXT_OPENCLIP_G, 7}, {"clip_h.safetensors", SD_TEXT_OPENCLIP_H, 8},
        {"clip_l9.safetensors", SD_TEXT_CLIP_L, 9}, {"t5xxl9.safetensors", SD_TEXT_T5XXL, 9}};
    for (size_t i = 0; ok && i < sizeof files / sizeof *files; i++) {
        char *p = test_path(te, files[i].name);
        ok = !sd_text_write_random(ctx, p, files[i].kind, SD_ST_F16, files[i].seed);
        free(p);
    }
    char *t5 = test_path(te, "t5xxl.safetensors"), *gguf = test_path(te, "t5xxl-Q8_0.gguf");
    char *l = test_path(te, "sdxl_l.safetensors"), *g = test_path(te, "sdxl_g.safetensors");
    char *wrong = test_path(te, "not_te.safetensors"), *aio = test_path(te, "flux_te.safetensors");
    char *sd2 = test_path(ck, "sd2.safetensors"), *h24 = test_path(te, "sd2_h24.safetensors"),
         *h23 = test_path(te, "sd2_h23.safetensors");
    sd_checkpoint_config c2;
    ok = ok && sd_checkpoint_preset("sd2-tiny", &c2);
    c2.clip = (sd_clip_config){.open_clip = true, .width = 64, .layers = 24, .intermediate = 128, .vocab = 49408,
                               .positions = 77, .projection = 64};
    c2.unet.context_dim = 64;
    c2.has_vae = false;
    sd_checkpoint_apply_family_rules(&c2);
    ok = ok && !sd_sd1_write_random(ctx, sd2, &c2, SD_ST_F32, 13) && !sd_text_write_sd2_split(ctx, sd2, 24, h24) &&
         !sd_text_write_sd2_split(ctx, sd2, 23, h23);
    ok = ok && !sd_text_write_t5_gguf(ctx, t5, gguf) && !sd_text_write_sdxl_split(ctx, sdxl, l, g) &&
         link(sdxl, wrong) == 0 && !sd_text_write_flux_encoders(ctx, aio, SD_ST_F16, 9);
    if (!ok) {
        fprintf(stderr, "setup: %s\n", ctx ? sd_context_errmsg(ctx) : "no context");
        free(dir);
        dir = NULL;
    }
    free(t5), free(gguf), free(l), free(g), free(wrong), free(aio), free(sd2), free(h24), free(h23), free(sdxl), free(lora), free(ck), free(te), free(lo);
    sd_context_free(ctx);
    return dir;
}

int main(void)
{
    if (!(g_dir = write_models()))
        return 1;
    RUN(test_sdxl_split_identical);
    RUN(test_flux_conditioning);
    RUN(test_flux_all_in_one);
    RUN(test_flux_cache_and_release);
    RUN(test_clip_loader);
    RUN(test_bad_inputs);
    free(g_dir);
    return test_summary("test_text_encoders");
}
