/* The SD1 nodes end to end on the tiny random checkpoint: graphs/txt2img.xml and
 * graphs/img2img.xml against whole 6-step runs of diffusers + transformers + k-diffusion
 * (tests/reference/make_pipeline_goldens.py), lazy loading and weight reuse through the model
 * store, ComfyUI's prompt weighting and clip skip, the latent batch nodes, and bad checkpoints. */
#include "test.h"
#include "core/run.h"
#include "ml/loading/model_store.h"
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include "ml/families/sd1_layout.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include <math.h>
#include <stdlib.h>

enum { SIZE = 64, LAT = SIZE / 8, LAT_N = 4 * LAT * LAT, IMG_N = SIZE * SIZE * 3 };
static char *ckpt_path; /* the tiny checkpoint, f32, seed 42 (as the reference script) */

static sd_context *new_context(const char *cache)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    sd_context_set_cache_path(ctx, cache);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    return ctx;
}

static void write_checkpoint(void)
{
    sd_context *ctx = new_context(NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    ckpt_path = test_path(test_scratch_dir(), "tiny.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ckpt_path, &cfg, SD_ST_F32, 42), SD_OK);
    sd_context_free(ctx);
}

static sd_graph *load_graph(sd_context *ctx, const char *file)
{
    char *path = test_path(test_source_dir(), file);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_OK);
    free(path);
    return g;
}

/* PSNR of a against the reference b over the reference's peak-to-peak range. */
static double psnr_range(const float *a, const float *b, size_t n)
{
    float lo = b[0], hi = b[0];
    for (size_t i = 1; i < n; i++) {
        lo = b[i] < lo ? b[i] : lo;
        hi = b[i] > hi ? b[i] : hi;
    }
    return test_psnr(a, b, n, hi - lo);
}

/* The img2img input of the reference script: 8-bit levels (5x + 3y + 70c + xy mod 7) mod 256. */
static char *write_input_png(void)
{
    static unsigned char px[IMG_N];
    for (int y = 0; y < SIZE; y++)
        for (int x = 0; x < SIZE; x++)
            for (int c = 0; c < 3; c++)
                px[(y * SIZE + x) * 3 + c] = (unsigned char)((5 * x + 3 * y + 70 * c + (x * y) % 7) % 256);
    fixture fx = {.w = SIZE, .h = SIZE, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    return write_fixture("img2img_input.png", &fx);
}

typedef struct golden_run {
    const char *name, *sampler, *scheduler, *seed, *cfg, *denoise;
    bool img2img;
} golden_run;

static const golden_run runs[] = {
    {"euler", "euler", "normal", "7", "7.5", NULL, false},
    {"euler_ancestral", "euler_ancestral", "normal", "8", "7.5", NULL, false},
    {"heun", "heun", "normal", "9", "5.0", NULL, false},
    {"dpmpp_2m_karras", "dpmpp_2m", "karras", "10", "7.5", NULL, false},
    {"dpmpp_2m_sde", "dpmpp_2m_sde", "karras", "11", "7.5", NULL, false},
    {"ddim", "ddim", "ddim_uniform", "12", "7.5", NULL, false},
    {"img2img", "euler", "normal", "13", "7.5", "0.6", true},
};

/* Every golden run through the stock graphs with the given weight storage; the final latents
 * (and the first run's decoded image) must reach min_db PSNR. */
static void golden_runs(const char *weight_dtype, double min_db)
{
    sd_context *ctx = new_context(NULL);
    char *input = write_input_png();
    double worst = 1e9;
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        const golden_run *g = &runs[k];
        sd_graph *graph = load_graph(ctx, g->img2img ? "graphs/img2img.xml" : "graphs/txt2img.xml");
        if (!graph)
            break;
        const char *set[][2] = {
            {"checkpoint", ckpt_path}, {"prompt", "a red fox (in the snow:1.3), photograph"},
            {"negative", "blurry"}, {"seed", g->seed}, {"steps", "6"}, {"cfg", g->cfg},
            {"sampler", g->sampler}, {"scheduler", g->scheduler},
        };
        for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
            CHECK_EQ_INT(sd_graph_set_param(graph, set[i][0], set[i][1]), SD_OK);
        if (g->img2img) {
            CHECK_EQ_INT(sd_graph_set_param(graph, "image", input), SD_OK);
            CHECK_EQ_INT(sd_graph_set_param(graph, "denoise", g->denoise), SD_OK);
        } else {
            CHECK_EQ_INT(sd_graph_set_param(graph, "width", "64"), SD_OK);
            CHECK_EQ_INT(sd_graph_set_param(graph, "height", "64"), SD_OK);
        }
        CHECK_EQ_INT(sd_graph_set_input(graph, "ckpt", "weight_dtype", weight_dtype), SD_OK);
        const char *outputs[] = {"sampler", "decode"};
        sd_run_options o = {.outputs = outputs, .n_outputs = 2, .no_cache = true};
        sd_result *res = NULL;
        sd_status st = sd_graph_run(graph, &o, &res);
        CHECK_MSG(st == SD_OK, "%s: %s", g->name, sd_context_errmsg(ctx));
        const sd_value *lat = sd_result_value(res, "sampler", "LATENT");
        const sd_tensor *t = lat ? sd_value_tensor(lat, "samples") : NULL;
        char name[64];
        snprintf(name, sizeof name, "pipeline_%s.bin", g->name);
        float *ref = test_read_sdg1(name, 4, LAT_N);
        if (t && ref && t->shape[0] == 1 && t->shape[2] == LAT && t->shape[3] == LAT) {
            double db = psnr_range(t->data, ref, LAT_N);
            fprintf(stderr, "  %s %-16s latent PSNR %.1f dB (max abs %.3g)\n", weight_dtype, g->name, db,
                    test_max_abs_diff(t->data, ref, LAT_N));
            CHECK_MSG(db >= min_db, "%s latent PSNR %.1f < %.0f dB", g->name, db, min_db);
            worst = db < worst ? db : worst;
        } else {
            CHECK_MSG(false, "%s: no 1x4x8x8 latent", g->name);
        }
        free(ref);
        if (k == 0) {
            const sd_value *img = sd_result_value(res, "decode", "IMAGE");
            const sd_tensor *it = img ? sd_value_tensor(img, "image") : NULL;
            float *iref = test_read_sdg1("pipeline_image.bin", 4, IMG_N);
            if (it && iref && it->shape[1] == SIZE && it->shape[2] == SIZE && it->shape[3] == 3) {
                double db = test_psnr(it->data, iref, IMG_N, 1.0);
                fprintf(stderr, "  %s image PSNR %.1f dB\n", weight_dtype, db);
                CHECK_MSG(db >= min_db, "image PSNR %.1f < %.0f dB", db, min_db);
            } else {
                CHECK_MSG(false, "no 64x64 image");
            }
            free(iref);
        }
        sd_result_free(res);
        sd_graph_free(graph);
    }
    /* One context: the checkpoint was opened once and the VAE created once; on a CPU device each
     * KSampler gives the text encoder's weights back and each VAEDecode the UNet's, so every run
     * created both again (a GPU keeps them). */
    sd_model_store_stats s;
    sd_model_store_stats_get(ctx, &s);
    sd_cl *cl = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    CHECK_EQ_INT(s.files_opened, 1);
    CHECK_EQ_INT(s.unets_created, cl && cl->is_gpu ? 1 : (int)(sizeof runs / sizeof runs[0]));
    CHECK_EQ_INT(s.clips_created, cl && cl->is_gpu ? 1 : (int)(sizeof runs / sizeof runs[0]));
    CHECK_EQ_INT(s.vaes_created, 1);
    fprintf(stderr, "  %s worst latent PSNR %.1f dB\n", weight_dtype, worst);
    free(input);
    sd_context_free(ctx);
}

static void test_goldens_fp32(void) { golden_runs("fp32", 40.0); }
static void test_goldens_fp16(void) { golden_runs("fp16", 30.0); }

/* txt2img with a LatentFromBatch between KSampler and VAEDecode, on a shared cache. */
static sd_graph *lazy_graph(sd_context *ctx, const char *length)
{
    sd_graph *g = load_graph(ctx, "graphs/txt2img.xml");
    CHECK_EQ_INT(sd_graph_set_param(g, "checkpoint", ckpt_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "width", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "height", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "steps", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "batch", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LatentFromBatch", "pick", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "sampler", "LATENT", "pick", "samples"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "pick", "length", length), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "pick", "LATENT", "decode", "samples"), SD_OK);
    return g;
}

static sd_node_outcome outcome(const sd_result *res, const char *id)
{
    for (size_t i = 0; i < sd_result_node_count(res); i++) {
        sd_node_stat st;
        if (sd_result_node(res, i, &st) == SD_OK && strcmp(st.node_id, id) == 0)
            return st.outcome;
    }
    return SD_NODE_SKIPPED;
}

static void test_lazy_loading(void)
{
    char *cache = test_path(test_scratch_dir(), "lazy.db");
    const char *outputs[] = {"decode"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1};
    sd_model_store_stats s;
    /* First process: everything runs. */
    sd_context *ctx = new_context(cache);
    sd_graph *g = lazy_graph(ctx, "1");
    sd_result *res = NULL;
    CHECK_MSG(sd_graph_run(g, &o, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    CHECK_EQ_INT(outcome(res, "ckpt"), SD_NODE_RAN);
    sd_model_store_stats_get(ctx, &s);
    CHECK_EQ_INT(s.unets_created, 1);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
    /* Second process, same workflow: the image comes from the cache, the file is not opened. */
    ctx = new_context(cache);
    g = lazy_graph(ctx, "1");
    res = NULL;
    CHECK_MSG(sd_graph_run(g, &o, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    CHECK_EQ_INT(outcome(res, "decode"), SD_NODE_CACHED);
    CHECK_EQ_INT(outcome(res, "ckpt"), SD_NODE_SKIPPED);
    sd_model_store_stats_get(ctx, &s);
    CHECK_EQ_INT(s.files_opened, 0);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
    /* Third process, only the batch pick changed: the loader runs for the VAE, the KSampler's
     * latent and the encodings come from the cache, and no UNet or CLIP weights are read. */
    ctx = new_context(cache);
    g = lazy_graph(ctx, "2");
    res = NULL;
    CHECK_MSG(sd_graph_run(g, &o, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    CHECK_EQ_INT(outcome(res, "ckpt"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(res, "sampler"), SD_NODE_CACHED);
    CHECK_EQ_INT(outcome(res, "decode"), SD_NODE_RAN);
    sd_model_store_stats_get(ctx, &s);
    CHECK_EQ_INT(s.files_opened, 1);
    CHECK_EQ_INT(s.vaes_created, 1);
    CHECK_EQ_INT(s.unets_created, 0);
    CHECK_EQ_INT(s.clips_created, 0);
    sd_output_info info;
    CHECK_EQ_INT(sd_result_output(res, "decode", "IMAGE", &info), SD_OK);
    CHECK_EQ_INT(info.shape[0], 2);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(cache);
}

/* Runs a one-output graph built by the caller and returns its value (NULL on failure). */
static const sd_value *run_for(sd_graph *g, const char *id, const char *output, sd_result **res)
{
    const char *outputs[] = {id};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    *res = NULL;
    sd_status st = sd_graph_run(g, &o, res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(sd_graph_context(g)));
    return st ? NULL : sd_result_value(*res, id, output);
}

static void keep_log(const char *line, void *user)
{
    char *buf = user;
    strncat(buf, line, 1023 - strlen(buf));
}

/* An unknown textual-inversion embedding is dropped with ComfyUI's warning. */
static void test_embedding_warning(void)
{
    sd_context *ctx = new_context(NULL);
    char log[1024] = "";
    sd_context_set_log(ctx, keep_log, log);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "ckpt", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "ckpt_name", ckpt_path), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "enc", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "enc", "text", "a cat embedding:easynegative on a mat"), SD_OK);
    sd_result *res;
    const sd_value *v = run_for(g, "enc", "CONDITIONING", &res);
    CHECK(v != NULL);
    /* The warning quotes the name only (ComfyUI's quotes the rest of the prompt too); "on a mat"
     * is still encoded. */
    CHECK_STR_CONTAINS(log, "embedding:easynegative does not exist, ignoring");
    CHECK(strstr(log, "on a mat") == NULL);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* CLIPTextEncode against the text encoder called directly: weights as ComfyUI applies them,
 * clip skip, long prompts in several windows. */
static void test_text_encode(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "ckpt", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "ckpt_name", ckpt_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "plain", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "plain", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "plain", "text", "a cat on a mat"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "weighted", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "weighted", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "weighted", "text", "a (cat:1.5) on a mat"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "empty", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "empty", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "empty", "text", ""), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPSetLastLayer", "skip", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "skip", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "skip", "stop_at_clip_layer", "-2"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "skipped", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "skip", "CLIP", "skipped", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "skipped", "text", "a cat on a mat"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "long", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "long", "clip"), SD_OK);
    char text[1200] = "";
    for (int i = 0; i < 100; i++)
        strcat(text, "cat, ");
    CHECK_EQ_INT(sd_graph_set_input(g, "long", "text", text), SD_OK);
    sd_result *rp, *rw, *re, *rs, *rl;
    const sd_value *plain = run_for(g, "plain", "CONDITIONING", &rp);
    const sd_value *weighted = run_for(g, "weighted", "CONDITIONING", &rw);
    const sd_value *empty = run_for(g, "empty", "CONDITIONING", &re);
    const sd_value *skipped = run_for(g, "skipped", "CONDITIONING", &rs);
    const sd_value *lng = run_for(g, "long", "CONDITIONING", &rl);
    if (plain && weighted && empty && skipped && lng) {
        const sd_tensor *p = sd_value_tensor(plain, "cond.0"), *w = sd_value_tensor(weighted, "cond.0");
        const sd_tensor *e = sd_value_tensor(empty, "cond.0"), *s = sd_value_tensor(skipped, "cond.0");
        const sd_tensor *l = sd_value_tensor(lng, "cond.0");
        CHECK(p && p->ndim == 3 && p->shape[0] == 1 && p->shape[1] == 77 && p->shape[2] == 64);
        CHECK(sd_value_tensor(plain, "pooled.0") && sd_value_tensor(plain, "pooled.0")->shape[1] == 64);
        /* "cat" is token 2 (after BOS, "a"): z_empty + (z - z_empty) * 1.5; other tokens unchanged. */
        double d_w = 0, d_rest = 0;
        for (int k = 0; k < 64; k++) {
            double want = e->data[2 * 64 + k] + (p->data[2 * 64 + k] - e->data[2 * 64 + k]) * 1.5;
            d_w = fmax(d_w, fabs(w->data[2 * 64 + k] - want));
        }
        for (int i = 0; i < 77 * 64; i++)
            if (i / 64 != 2)
                d_rest = fmax(d_rest, fabs(w->data[i] - p->data[i]));
        CHECK_MSG(d_w < 1e-5, "weighted token off by %g", d_w);
        CHECK_MSG(d_rest == 0.0, "unweighted tokens changed by %g", d_rest);
        double d_skip = 0;
        for (int i = 0; i < 77 * 64; i++)
            d_skip = fmax(d_skip, fabs(s->data[i] - p->data[i]));
        CHECK_MSG(d_skip > 1e-3, "clip skip changed nothing");
        /* 200 tokens: three 77-token windows concatenated. */
        CHECK(l && l->shape[1] == 3 * 77);
    }
    sd_result_free(rp);
    sd_result_free(rw);
    sd_result_free(re);
    sd_result_free(rs);
    sd_result_free(rl);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* LatentFromBatch / RepeatLatentBatch keep each item's noise: sampling item 1 of a batch of 3
 * alone (euler: no noise after the initial one) gives the latent it gets in the batch. */
static void test_batch_noise(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = load_graph(ctx, "graphs/txt2img.xml");
    const char *set[][2] = {{"checkpoint", ckpt_path}, {"width", "32"}, {"height", "32"}, {"steps", "2"},
                            {"batch", "3"}, {"sampler", "euler"}};
    for (size_t i = 0; g && i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LatentFromBatch", "pick", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "latent", "LATENT", "pick", "samples"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "pick", "batch_index", "1"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "KSampler", "single", NULL), SD_OK);
    const char *links[][3] = {{"ckpt", "MODEL", "model"}, {"positive", "CONDITIONING", "positive"},
                              {"negative", "CONDITIONING", "negative"}, {"pick", "LATENT", "latent_image"}};
    for (size_t i = 0; i < 4; i++)
        CHECK_EQ_INT(sd_graph_connect(g, links[i][0], links[i][1], "single", links[i][2]), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "single", "steps", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "RepeatLatentBatch", "rep", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "pick", "LATENT", "rep", "samples"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "rep", "amount", "2"), SD_OK);
    sd_result *rb, *rs, *rr;
    const sd_value *batch = run_for(g, "sampler", "LATENT", &rb);
    const sd_value *single = run_for(g, "single", "LATENT", &rs);
    const sd_value *rep = run_for(g, "rep", "LATENT", &rr);
    if (batch && single && rep) {
        const sd_tensor *b = sd_value_tensor(batch, "samples"), *s = sd_value_tensor(single, "samples");
        size_t item = 4 * 4 * 4;
        CHECK(b->shape[0] == 3 && s->shape[0] == 1);
        double d_same = test_max_abs_diff(s->data, b->data + item, item);
        double d_other = test_max_abs_diff(s->data, b->data, item);
        CHECK_MSG(d_same < 1e-3 && d_other > 0.1, "item 1 alone vs batch item 1: %g, vs item 0: %g", d_same,
                  d_other);
        json_t *bi = json_object_get(single->attrs, "batch_index");
        CHECK(json_is_array(bi) && json_array_size(bi) == 1 && json_integer_value(json_array_get(bi, 0)) == 1);
        json_t *ri = json_object_get(rep->attrs, "batch_index");
        CHECK(json_is_array(ri) && json_array_size(ri) == 2 && json_integer_value(json_array_get(ri, 1)) == 2);
        CHECK_EQ_INT(sd_value_tensor(rep, "samples")->shape[0], 2);
    }
    sd_result_free(rb);
    sd_result_free(rs);
    sd_result_free(rr);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Stops the run at the KSampler's second step. */
static void interrupt_at_step_2(const sd_progress *ev, void *user)
{
    if (ev->kind == SD_PROGRESS_STEP && strcmp(ev->node_type, "KSampler") == 0 && ev->step == 2)
        sd_context_interrupt(user);
}

static void test_interrupt(void)
{
    sd_context *ctx = new_context(NULL);
    sd_context_set_progress(ctx, interrupt_at_step_2, ctx);
    sd_graph *g = load_graph(ctx, "graphs/txt2img.xml");
    const char *set[][2] = {{"checkpoint", ckpt_path}, {"width", "64"}, {"height", "64"}, {"steps", "6"}};
    for (size_t i = 0; g && i < 4; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    sd_run_options o = {.no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INTERRUPTED);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'sampler' (KSampler): interrupted");
    CHECK_EQ_INT(sd_result_file_count(res), 0);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* VAELoader: a full checkpoint's VAE decodes exactly as the checkpoint loader's; a standalone
 * VAE file (encoder.* / decoder.*) loads and decodes. */
static void test_vae_loader(void)
{
    sd_context *ctx = new_context(NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    char *vae_file = test_path(test_scratch_dir(), "vae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, vae_file, &cfg, SD_ST_F16, 3), SD_OK);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyLatentImage", "lat", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lat", "width", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lat", "height", "64"), SD_OK);
    const char *loaders[][3] = {{"CheckpointLoaderSimple", "ckpt_name", "ckpt"}, {"VAELoader", "vae_name", "vl"},
                                {"VAELoader", "vae_name", "standalone"}};
    const char *files[] = {ckpt_path, ckpt_path, vae_file};
    for (int i = 0; i < 3; i++) {
        char dec[16];
        snprintf(dec, sizeof dec, "dec%d", i);
        CHECK_EQ_INT(sd_graph_add_node(g, loaders[i][0], loaders[i][2], NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, loaders[i][2], loaders[i][1], files[i]), SD_OK);
        CHECK_EQ_INT(sd_graph_add_node(g, "VAEDecode", dec, NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "lat", "LATENT", dec, "samples"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, loaders[i][2], "VAE", dec, "vae"), SD_OK);
    }
    const char *outputs[] = {"dec0", "dec1", "dec2"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 3, .no_cache = true};
    sd_result *res = NULL;
    CHECK_MSG(sd_graph_run(g, &o, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *v[3];
    for (int i = 0; i < 3; i++)
        v[i] = sd_result_value(res, outputs[i], "IMAGE");
    if (v[0] && v[1] && v[2]) {
        const sd_tensor *a = sd_value_tensor(v[0], "image"), *b = sd_value_tensor(v[1], "image");
        const sd_tensor *c = sd_value_tensor(v[2], "image");
        CHECK(a->shape[1] == 64 && a->shape[2] == 64 && c->shape[1] == 64 && c->shape[2] == 64);
        CHECK(memcmp(a->data, b->data, IMG_N * sizeof(float)) == 0);
        CHECK(test_max_abs_diff(a->data, c->data, IMG_N) > 1e-3);
    }
    sd_model_store_stats s;
    sd_model_store_stats_get(ctx, &s);
    CHECK_EQ_INT(s.files_opened, 3); /* the checkpoint as a checkpoint and as a VAE file, the VAE file */
    CHECK_EQ_INT(s.unets_created, 0);
    sd_result_free(res);
    sd_graph_free(g);
    free(vae_file);
    sd_context_free(ctx);
}

/* KSamplerAdvanced: steps 0-3 with leftover noise, then 3-6 without adding noise, is the full
 * 6-step euler run of KSampler (ComfyUI's two-stage pattern). */
static void test_ksampler_advanced(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = load_graph(ctx, "graphs/txt2img.xml");
    const char *set[][2] = {{"checkpoint", ckpt_path}, {"width", "32"}, {"height", "32"}, {"steps", "6"},
                            {"seed", "5"}, {"cfg", "4.0"}};
    for (size_t i = 0; g && i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    const char *stage[2] = {"first", "second"};
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(sd_graph_add_node(g, "KSamplerAdvanced", stage[k], NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "MODEL", stage[k], "model"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "positive", "CONDITIONING", stage[k], "positive"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "negative", "CONDITIONING", stage[k], "negative"), SD_OK);
        const char *in[][2] = {{"noise_seed", "5"}, {"steps", "6"}, {"cfg", "4.0"},
                               {"add_noise", k ? "disable" : "enable"}, {"start_at_step", k ? "3" : "0"},
                               {"end_at_step", k ? "10000" : "3"},
                               {"return_with_leftover_noise", k ? "disable" : "enable"}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            CHECK_EQ_INT(sd_graph_set_input(g, stage[k], in[i][0], in[i][1]), SD_OK);
    }
    CHECK_EQ_INT(sd_graph_connect(g, "latent", "LATENT", "first", "latent_image"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "first", "LATENT", "second", "latent_image"), SD_OK);
    sd_result *rf, *rs, *r1;
    const sd_value *full = run_for(g, "sampler", "LATENT", &rf);
    const sd_value *split = run_for(g, "second", "LATENT", &rs);
    const sd_value *half = run_for(g, "first", "LATENT", &r1);
    if (full && split && half) {
        const sd_tensor *a = sd_value_tensor(full, "samples"), *b = sd_value_tensor(split, "samples");
        double d = test_max_abs_diff(a->data, b->data, 4 * 4 * 4);
        double d_half = test_max_abs_diff(a->data, sd_value_tensor(half, "samples")->data, 4 * 4 * 4);
        fprintf(stderr, "  split vs full: max abs %.3g (first stage alone: %.3g)\n", d, d_half);
        CHECK_MSG(d < 1e-3 && d_half > 0.1, "split run differs from the full run by %g (half: %g)", d, d_half);
    }
    sd_result_free(rf);
    sd_result_free(rs);
    sd_result_free(r1);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* The KSampler's name lists are the sampling module's. */
static void test_names(void)
{
    const sd_node_desc *d = sd_node_type_find("KSampler");
    const sd_input_desc *s = sd_node_desc_input(d, "sampler_name"), *c = sd_node_desc_input(d, "scheduler");
    size_t n = 0;
    for (; s->choices[n]; n++)
        CHECK_STR_EQ(s->choices[n], sd_sampler_name(n));
    CHECK_EQ_INT(n, sd_sampler_count());
    for (n = 0; c->choices[n]; n++)
        CHECK_STR_EQ(c->choices[n], sd_scheduler_name(n));
    CHECK_EQ_INT(n, sd_scheduler_count());
}

/* Zero-filled tensors of the tiny layout without `drop`. */
static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

static void test_bad_checkpoints(void)
{
    sd_context *ctx = new_context(NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    sd_layout l = {0};
    CHECK_EQ_INT(sd_layout_unet(ctx, &cfg.unet, cfg.unet_prefix, &l), SD_OK);
    CHECK_EQ_INT(sd_layout_clip(ctx, &cfg.clip, cfg.clip_prefix, &l), SD_OK);
    CHECK_EQ_INT(sd_layout_vae(ctx, &cfg.vae, cfg.vae_prefix, &l), SD_OK);
    const char *drop = "model.diffusion_model.middle_block.1.proj_out.weight";
    sd_st_entry *e = calloc(l.n, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.entries[i].name, drop) == 0)
            continue;
        e[n] = (sd_st_entry){.name = l.entries[i].name, .dtype = SD_ST_F32, .ndim = l.entries[i].ndim};
        if (l.entries[i].kind == SD_PARAM_POSITION_IDS)
            e[n].dtype = SD_ST_I64;
        memcpy(e[n].shape, l.entries[i].shape, sizeof l.entries[i].shape);
        n++;
    }
    char *missing = test_path(test_scratch_dir(), "missing_tensor.safetensors");
    CHECK_EQ_INT(sd_safetensors_write(ctx, missing, e, n, NULL, fill_zero, NULL), SD_OK);
    char *xl = test_path(test_scratch_dir(), "xl.safetensors");
    CHECK_EQ_INT(sd_write_family_stub(ctx, xl, SD_FAMILY_SD3), SD_OK);
    const char *files[] = {missing, xl};
    char want[2][512];
    /* Found before anything runs, from the file's header (validation's check pass). */
    snprintf(want[0], sizeof want[0], "node 'ckpt' input 'ckpt_name': parameter 'checkpoint': %s: missing tensor '%s' (SD1.x UNet)", missing, drop);
    snprintf(want[1], sizeof want[1], "node 'ckpt' input 'ckpt_name': parameter 'checkpoint': %s: SD3 checkpoint detected; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX", xl);
    for (int k = 0; k < 2; k++) {
        sd_graph *g = load_graph(ctx, "graphs/txt2img.xml");
        CHECK_EQ_INT(sd_graph_set_param(g, "checkpoint", files[k]), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "width", "64"), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "height", "64"), SD_OK);
        sd_run_options o = {.no_cache = true};
        sd_result *res = NULL;
        CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), want[k]);
        CHECK_EQ_INT(sd_result_file_count(res), 0);
        sd_result_free(res);
        sd_graph_free(g);
    }
    sd_layout_free(&l);
    free(e);
    free(missing);
    free(xl);
    sd_context_free(ctx);
}

int main(void)
{
    write_checkpoint();
    RUN(test_names);
    RUN(test_goldens_fp32);
    RUN(test_goldens_fp16);
    RUN(test_lazy_loading);
    RUN(test_text_encode);
    RUN(test_embedding_warning);
    RUN(test_batch_noise);
    RUN(test_bad_checkpoints);
    RUN(test_interrupt);
    RUN(test_ksampler_advanced);
    RUN(test_vae_loader);
    free(ckpt_path);
    return test_summary("test_pipeline");
}
