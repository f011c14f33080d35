/* DualCLIPLoader (flux) -> CLIPTextEncode and CLIPVisionLoader (SigLIP) -> CLIPVisionEncode ->
 * StyleModelLoader -> StyleModelApply through the scheduler, on the tiny T5 / CLIP-L and the tiny
 * SigLIP and Redux files (tests/reference/make_redux_goldens.py): the conditioning is the text
 * tokens followed by the Redux projection of the SigLIP last_hidden_state (all images' tokens),
 * times strength for multiply; attn_bias keeps the tokens and records the key_bias span, and
 * none at strength 1. And KSampler on the goldens' tiny FLUX schnell with such an entry (text
 * then Redux tokens, key_bias strength 0.4) against diffusers with ComfyUI's attention mask. */
#include "test.h"
#include "support/golden.h"
#include "core/run.h"
#include "support/node_direct.h"
#include "ml/adapters/redux.h"
#include "nodes/model_handle.h"
#include <math.h>
#include "ml/text/text_encoder_write.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;
static char *models;

enum { TOKENS = 16, WIDTH = 144, CTX = 32 };

static void set(sd_graph *g, const char *node, const char *input, const char *value)
{
    CHECK_EQ_INT(sd_graph_set_input(g, node, input, value), SD_OK);
}

static sd_graph *graph(const char *strength, const char *type, const char *images)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "DualCLIPLoader", "clip", NULL), SD_OK);
    set(g, "clip", "clip_name1", "t5.safetensors");
    set(g, "clip", "clip_name2", "clip_l.safetensors");
    set(g, "clip", "type", "flux");
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "text", NULL), SD_OK);
    set(g, "text", "text", "a cat");
    CHECK_EQ_INT(sd_graph_connect(g, "clip", "CLIP", "text", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyImage", "img", NULL), SD_OK);
    set(g, "img", "width", "40");
    set(g, "img", "height", "24");
    set(g, "img", "color", "3368652");
    set(g, "img", "batch_size", images);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionLoader", "cv", NULL), SD_OK);
    set(g, "cv", "clip_name", "siglip.safetensors");
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "cv", "CLIP_VISION", "enc", "clip_vision"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "enc", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "StyleModelLoader", "style", NULL), SD_OK);
    set(g, "style", "style_model_name", "redux.safetensors");
    CHECK_EQ_INT(sd_graph_add_node(g, "StyleModelApply", "apply", NULL), SD_OK);
    set(g, "apply", "strength", strength);
    set(g, "apply", "strength_type", type);
    CHECK_EQ_INT(sd_graph_connect(g, "text", "CONDITIONING", "apply", "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "style", "STYLE_MODEL", "apply", "style_model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "enc", "CLIP_VISION_OUTPUT", "apply", "clip_vision_output"), SD_OK);
    return g;
}

/* The Redux tokens of last [rows, WIDTH] by the model API, as the node computes them. */
static float *redux_reference(const float *last, int64_t rows)
{
    char *dir = test_path(models, "style_models"), *path = test_path(dir, "redux.safetensors");
    sd_safetensors *st = NULL;
    sd_redux *r = NULL;
    sd_cl *cl = NULL;
    float *out = malloc((size_t)rows * CTX * sizeof *out);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    CHECK_EQ_INT(sd_redux_new(cl, st, SD_DTYPE_F16, &r), SD_OK);
    if (r && out)
        CHECK_EQ_INT(sd_redux_project(r, last, rows, out), SD_OK);
    sd_redux_free(r);
    sd_safetensors_close(st);
    free(dir), free(path);
    return out;
}

/* Runs the graph; checks cond.0 = text tokens then the Redux tokens (x strength when scaled) and
 * the key_bias attribute (bias: [text tokens, Redux tokens, strength]; else none). */
static void expect_apply(const char *strength, const char *type, int images, bool scaled, bool bias)
{
    char n[8];
    snprintf(n, sizeof n, "%d", images);
    sd_graph *g = graph(strength, type, n);
    const char *outs[] = {"apply", "text", "enc"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 3, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *av = st ? NULL : sd_result_value(res, "apply", "CONDITIONING");
    const sd_value *tv = st ? NULL : sd_result_value(res, "text", "CONDITIONING");
    const sd_value *ev = st ? NULL : sd_result_value(res, "enc", "CLIP_VISION_OUTPUT");
    const sd_tensor *a = av ? sd_value_tensor(av, "cond.0") : NULL, *t = tv ? sd_value_tensor(tv, "cond.0") : NULL;
    const sd_tensor *last = ev ? sd_value_tensor(ev, "last_hidden_state") : NULL;
    const sd_tensor *emb = ev ? sd_value_tensor(ev, "image_embeds") : NULL;
    int64_t rows = (int64_t)images * TOKENS;
    CHECK(last && last->ndim == 3 && last->shape[0] == images && last->shape[1] == TOKENS && last->shape[2] == WIDTH);
    CHECK(emb && emb->ndim == 3 && last && memcmp(emb->data, last->data, (size_t)rows * WIDTH * sizeof(float)) == 0);
    CHECK(t && t->ndim == 3 && t->shape[0] == 1 && t->shape[2] == CTX);
    CHECK(a && t && a->ndim == 3 && a->shape[0] == 1 && a->shape[1] == t->shape[1] + rows && a->shape[2] == CTX);
    if (a && t && last && a->shape[1] == t->shape[1] + rows) {
        size_t nt = (size_t)(t->shape[1] * CTX);
        float *ref = redux_reference(last->data, rows), s = (float)atof(strength);
        for (int64_t i = 0; ref && scaled && i < rows * CTX; i++)
            ref[i] *= s;
        CHECK_MSG(memcmp(a->data, t->data, nt * sizeof(float)) == 0, "the text tokens come first, unchanged");
        CHECK_MSG(ref && memcmp(a->data + nt, ref, (size_t)rows * CTX * sizeof(float)) == 0,
                  "%s %s: the Redux tokens follow", strength, type);
        free(ref);
        json_t *spans = json_object_get(json_array_get(json_object_get(av->attrs, "entries"), 0), "key_bias");
        json_t *want = bias ? json_pack("[[I, I, f]]", (json_int_t)t->shape[1], (json_int_t)rows, (double)atof(strength))
                            : NULL;
        CHECK_MSG(bias ? json_equal(spans, want) : spans == NULL, "%s %s: key_bias", strength, type);
        json_decref(want);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_multiply(void)
{
    expect_apply("1.0", "multiply", 1, true, false);
    expect_apply("0.37", "multiply", 2, true, false);
}

static void test_attn_bias(void)
{
    expect_apply("0.3", "attn_bias", 1, false, true);
    expect_apply("1.0", "attn_bias", 1, false, false);
}

enum { C = 16, LAT_N = C * 8 * 8, GOLD_TXT = 7, GOLD_CTX = 48, VEC = 24 };

static sd_value *run_ok(const char *type, sd_value **in)
{
    sd_status st;
    sd_value *v = test_run_node(ctx, type, in, &st);
    CHECK_MSG(st == SD_OK && v, "%s: %s", type, sd_context_errmsg(ctx));
    return v;
}

/* KSampler (seed 42, euler, simple, 4 steps, cfg 1) of the tiny schnell on an empty 64x64 latent
 * with the goldens' text + Redux context and y; key_bias: the entry's attribute (NULL: none). The
 * samples (malloc'd) or NULL. */
static float *sample_schnell(json_t *key_bias)
{
    int n = GOLD_TXT + TOKENS;
    float *in = test_read_golden("redux_flux_in.f32", (size_t)(n * GOLD_CTX + VEC + C * 4 * 4 + 1) * sizeof(float));
    char *path = test_golden_path("flux_schnell_tiny.safetensors");
    sd_loaded *l = NULL;
    CHECK_EQ_INT(sd_model_store_open(ctx, path, SD_MODEL_FILE_UNET, SD_DTYPE_F16, &l), SD_OK);
    sd_value *m = l ? sd_node_model_value(SD_TYPE_MODEL, l, -1) : NULL, *cond = sd_value_new(SD_TYPE_CONDITIONING);
    sd_loaded_unref(l);
    if (in && cond) {
        test_put_tensor(cond, "cond.0", 3, (const int64_t[]){1, n, GOLD_CTX}, in);
        test_put_tensor(cond, "pooled.0", 2, (const int64_t[]){1, VEC}, in + n * GOLD_CTX);
        cond->attrs = key_bias ? json_pack("{s:[{s:O}]}", "entries", "key_bias", key_bias)
                               : json_pack("{s:[{}]}", "entries");
    }
    sd_value *w = sd_value_int(64), *h = sd_value_int(64), *b = sd_value_int(1);
    sd_value *latent = run_ok("EmptySD3LatentImage", (sd_value *[]){w, h, b});
    sd_value *args[] = {m, sd_value_int(42), sd_value_string(SD_TYPE_ENUM, "fixed"), sd_value_int(4),
                        sd_value_float(1.0), sd_value_string(SD_TYPE_ENUM, "euler"),
                        sd_value_string(SD_TYPE_ENUM, "simple"), cond, cond, latent, sd_value_float(1.0)};
    sd_value *out = m && in && latent ? run_ok("KSampler", args) : NULL;
    const sd_tensor *t = out ? sd_value_tensor(out, "samples") : NULL;
    float *got = t && t->ndim == 4 && t->shape[1] == C ? malloc(LAT_N * sizeof *got) : NULL;
    if (got)
        memcpy(got, t->data, LAT_N * sizeof *got);
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
        if (i != 8) /* cond is both sides */
            sd_value_unref(args[i]);
    sd_value_unref(out), sd_value_unref(w), sd_value_unref(h), sd_value_unref(b);
    free(in), free(path);
    return got;
}

/* PSNR of a run's model contribution (latent minus the initial noise) against the golden run. */
static double run_psnr(const float *got)
{
    float *ref = test_read_golden("redux_flux_run.f32", LAT_N * sizeof(float));
    float *noise = test_read_golden("flux_run_in.f32", (LAT_N + GOLD_TXT * GOLD_CTX + VEC) * sizeof(float));
    double p = -1;
    if (got && ref && noise) {
        static float cg[LAT_N], cr[LAT_N];
        float lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < LAT_N; i++) {
            cg[i] = (got[i] - 0.1159f) * 0.3611f - noise[i]; /* process_in: (x - shift) * scale */
            cr[i] = (ref[i] - 0.1159f) * 0.3611f - noise[i];
            lo = fminf(lo, cr[i]), hi = fmaxf(hi, cr[i]);
        }
        p = test_psnr(cg, cr, LAT_N, hi - lo);
    }
    free(ref), free(noise);
    return p;
}

static void test_sampling_with_key_bias(void)
{
    json_t *spans = json_pack("[[i, i, f]]", GOLD_TXT, TOKENS, 0.4);
    float *got = sample_schnell(spans), *plain = sample_schnell(NULL);
    double p = run_psnr(got), p0 = run_psnr(plain);
    printf("  schnell with the Redux key bias: PSNR %.1f dB on the model's contribution (without it %.1f)\n", p, p0);
    CHECK_MSG(p >= 90.0 && p0 < p - 20, "key bias run: %.1f dB, without %.1f dB", p, p0);
    json_decref(spans);
    free(got), free(plain);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    models = test_path(test_scratch_dir(), "models");
    char *te = test_path(models, "text_encoders"), *cv = test_path(models, "clip_vision");
    char *sm = test_path(models, "style_models");
    char *t5 = test_path(te, "t5.safetensors"), *cl = test_path(te, "clip_l.safetensors");
    char *sig = test_path(cv, "siglip.safetensors"), *rx = test_path(sm, "redux.safetensors");
    char *sig_src = test_golden_path("siglip_tiny.safetensors"), *rx_src = test_golden_path("redux_tiny32.safetensors");
    mkdir(models, 0777);
    mkdir(te, 0777);
    mkdir(cv, 0777);
    mkdir(sm, 0777);
    test_copy_file(sig_src, sig);
    test_copy_file(rx_src, rx);
    if (sd_text_write_random(ctx, t5, SD_TEXT_T5XXL, SD_ST_F16, 1) || sd_text_write_random(ctx, cl, SD_TEXT_CLIP_L, SD_ST_F16, 2))
        return 2;
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_multiply);
    RUN(test_attn_bias);
    RUN(test_sampling_with_key_bias);
    sd_context_free(ctx);
    free(models), free(te), free(cv), free(sm), free(t5), free(cl), free(sig), free(rx), free(sig_src), free(rx_src);
    return test_summary("test_redux_nodes");
}
