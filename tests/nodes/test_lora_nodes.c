/* LoraLoader, LoraLoaderModelOnly and embeddings in CLIPTextEncode through the scheduler, on
 * the tiny checkpoint with graphs/txt2img-lora.xml: the cache key covers the LoRA file's
 * content and the strengths (a change re-runs the sampler, nothing else changes nothing), a
 * strength of 0 is the plain model, model-only patching, stacked loaders, CLIPSetLastLayer
 * keeping the LoRA, embeddings by name, and LoRA files that are refused. */
#include "test.h"
#include "core/run.h"
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *g_models, *g_ckpt, *g_lora_dir;
static sd_checkpoint_config g_cfg;
static char g_log[4096];

static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

static sd_context *new_context(const char *cache)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    sd_context_set_cache_path(ctx, cache);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    sd_context_clear_models_dirs(ctx);
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, g_models), SD_OK);
    sd_context_set_log(ctx, collect, NULL);
    return ctx;
}

static void write_lora(const char *name, uint64_t seed)
{
    sd_context *ctx = new_context(NULL);
    char *path = test_path(g_lora_dir, name);
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &g_cfg, 4, seed, SD_LORA_KOHYA), SD_OK);
    free(path);
    sd_context_free(ctx);
}

static void setup(void)
{
    g_models = test_path(test_scratch_dir(), "models");
    g_lora_dir = test_path(g_models, "loras");
    char *emb = test_path(g_models, "embeddings");
    CHECK(mkdir(g_models, 0755) == 0 && mkdir(g_lora_dir, 0755) == 0 && mkdir(emb, 0755) == 0);
    sd_context *ctx = new_context(NULL);
    CHECK(sd_checkpoint_preset("tiny", &g_cfg));
    g_ckpt = test_path(test_scratch_dir(), "tiny.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, g_ckpt, &g_cfg, SD_ST_F32, 42), SD_OK);
    sd_context_free(ctx);
    write_lora("style.safetensors", 3);
    free(emb);
}

static sd_graph *lora_graph(sd_context *ctx, const char *sm, const char *sc)
{
    char *path = test_path(test_source_dir(), "graphs/txt2img-lora.xml");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_OK);
    free(path);
    if (!g)
        return NULL;
    CHECK_EQ_INT(sd_graph_set_param(g, "checkpoint", g_ckpt), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "lora", "style.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_model", sm), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_clip", sc), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "width", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "height", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "steps", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "prompt", "a cat"), SD_OK);
    return g;
}

static sd_node_outcome outcome(const sd_result *res, const char *id)
{
    for (size_t i = 0; res && i < sd_result_node_count(res); i++) {
        sd_node_stat st;
        if (sd_result_node(res, i, &st) == SD_OK && strcmp(st.node_id, id) == 0)
            return st.outcome;
    }
    return SD_NODE_SKIPPED;
}

/* Runs g for output node `id` and copies its first tensor (n floats) into a malloc'd array. */
static float *run_tensor(sd_graph *g, const char *id, const char *output, size_t n, sd_result **res, bool cache)
{
    const char *outputs[] = {id};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = !cache};
    *res = NULL;
    sd_status st = sd_graph_run(g, &o, res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(sd_graph_context(g)));
    const sd_value *v = st ? NULL : sd_result_value(*res, id, output);
    size_t numel = 0;
    if (!v || v->n_tensors < 1 || !sd_tensor_numel(&v->tensors[0]->tensor, &numel) || numel != n)
        return NULL;
    float *out = malloc(n * sizeof *out);
    memcpy(out, v->tensors[0]->tensor.data, n * sizeof *out);
    return out;
}

#define LAT_N (4 * 8 * 8)

/* Same workflow twice: cached; strength_model changed: the sampler re-runs and the latent
 * changes (the encodings re-run too: one key covers both of the loader's outputs, as in
 * ComfyUI); the LoRA file rewritten under the same name: everything downstream re-runs. */
static void test_cache_key(void)
{
    char *cache = test_path(test_scratch_dir(), "lora.db");
    sd_context *ctx = new_context(cache);
    sd_graph *g = lora_graph(ctx, "0.8", "1.3");
    sd_result *r1, *r2, *r3, *r4;
    float *a = run_tensor(g, "sampler", "LATENT", LAT_N, &r1, true);
    CHECK_EQ_INT(outcome(r1, "sampler"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(r1, "lora"), SD_NODE_RAN);
    float *b = run_tensor(g, "sampler", "LATENT", LAT_N, &r2, true);
    CHECK_EQ_INT(outcome(r2, "sampler"), SD_NODE_CACHED);
    CHECK(a && b && memcmp(a, b, LAT_N * sizeof *a) == 0);
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_model", "0.5"), SD_OK);
    float *c = run_tensor(g, "sampler", "LATENT", LAT_N, &r3, true);
    CHECK_EQ_INT(outcome(r3, "sampler"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(r3, "latent"), SD_NODE_CACHED);
    CHECK(a && c && memcmp(a, c, LAT_N * sizeof *a) != 0);
    write_lora("style.safetensors", 4); /* same name, other content */
    float *d = run_tensor(g, "sampler", "LATENT", LAT_N, &r4, true);
    CHECK_EQ_INT(outcome(r4, "sampler"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(r4, "positive"), SD_NODE_RAN);
    CHECK(c && d && memcmp(c, d, LAT_N * sizeof *c) != 0);
    write_lora("style.safetensors", 3);
    free(a);
    free(b);
    free(c);
    free(d);
    sd_result_free(r1);
    sd_result_free(r2);
    sd_result_free(r3);
    sd_result_free(r4);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(cache);
}

/* Strength 0 equals the plain checkpoint; model-only equals LoraLoader with strength_clip 0;
 * two stacked loaders at 0.5 and 0.3 equal one at 0.8; CLIPSetLastLayer keeps the LoRA. */
static void test_equivalences(void)
{
    sd_context *ctx = new_context(NULL);
    sd_result *res[8];
    sd_graph *g = lora_graph(ctx, "0", "0");
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK); /* exact sums */
    float *zero = run_tensor(g, "sampler", "LATENT", LAT_N, &res[0], false);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "MODEL", "sampler", "model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "positive", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "negative", "clip"), SD_OK);
    float *plain = run_tensor(g, "sampler", "LATENT", LAT_N, &res[1], false);
    CHECK(zero && plain && memcmp(zero, plain, LAT_N * sizeof *zero) == 0);

    /* Model only at 0.8 vs LoraLoader 0.8 / 0 (the text encoder unpatched). */
    CHECK_EQ_INT(sd_graph_add_node(g, "LoraLoaderModelOnly", "only", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "MODEL", "only", "model"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "only", "lora_name", "style.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "only", "strength_model", "0.8"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "only", "MODEL", "sampler", "model"), SD_OK);
    float *only = run_tensor(g, "sampler", "LATENT", LAT_N, &res[2], false);
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_model", "0.8"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora", "MODEL", "sampler", "model"), SD_OK);
    float *both = run_tensor(g, "sampler", "LATENT", LAT_N, &res[3], false);
    CHECK(only && both && memcmp(only, both, LAT_N * sizeof *only) == 0);
    CHECK(only && plain && memcmp(only, plain, LAT_N * sizeof *only) != 0);

    /* Stacked: lora at 0.5 then a second loader at 0.3 on its outputs. */
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_model", "0.5"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoraLoader", "lora2", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora", "MODEL", "lora2", "model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora", "CLIP", "lora2", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lora2", "lora_name", "style.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lora2", "strength_model", "0.3"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lora2", "strength_clip", "0"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora2", "MODEL", "sampler", "model"), SD_OK);
    float *stacked = run_tensor(g, "sampler", "LATENT", LAT_N, &res[4], false);
    double d = 0, peak = 0;
    for (size_t i = 0; stacked && both && i < LAT_N; i++) {
        d = fmax(d, fabs(stacked[i] - both[i]));
        peak = fmax(peak, fabs(both[i]));
    }
    /* The deltas are summed in another order (f32 rounding), amplified by cfg 8 over 2 steps. */
    CHECK_MSG(stacked && d <= 1e-5 * peak, "stacked 0.5 + 0.3 vs 0.8: %g (latent peak %g)", d, peak);

    /* CLIPSetLastLayer on a patched CLIP keeps the LoRA: differs from the unpatched skip. */
    CHECK_EQ_INT(sd_graph_set_param(g, "strength_clip", "1.3"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPSetLastLayer", "skip", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora", "CLIP", "skip", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "skip", "stop_at_clip_layer", "-2"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "skip", "CLIP", "positive", "clip"), SD_OK);
    size_t cn = 77 * 64;
    float *patched_skip = run_tensor(g, "positive", "CONDITIONING", cn, &res[5], false);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "skip", "clip"), SD_OK);
    float *plain_skip = run_tensor(g, "positive", "CONDITIONING", cn, &res[6], false);
    CHECK(patched_skip && plain_skip && memcmp(patched_skip, plain_skip, cn * sizeof(float)) != 0);
    for (int i = 0; i < 7; i++)
        sd_result_free(res[i]);
    free(zero);
    free(plain);
    free(only);
    free(both);
    free(stacked);
    free(patched_skip);
    free(plain_skip);
    sd_graph_free(g);
    sd_context_free(ctx);
}

static sd_status fill_star(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    (void)index;
    float *f = dst;
    for (size_t i = 0; i < nbytes / sizeof *f; i++)
        f[i] = (float)(0.05 * sin(0.3 * (double)i));
    return SD_OK;
}

/* The conditioning of text through ckpt's CLIP (malloc'd 77 * 64 floats). */
static float *encode(sd_graph *g, const char *text)
{
    sd_result *res;
    CHECK_EQ_INT(sd_graph_set_input(g, "enc", "text", text), SD_OK);
    float *out = run_tensor(g, "enc", "CONDITIONING", 77 * 64, &res, false);
    sd_result_free(res);
    return out;
}

/* embedding:NAME in CLIPTextEncode: found in models/embeddings with or without extension; an
 * unknown name is a warning and the prompt is encoded without it. */
static void test_embedding_prompt(void)
{
    sd_context *ctx = new_context(NULL);
    char *path = test_path(g_models, "embeddings/star.safetensors");
    sd_st_entry e = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {2, 64}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, &e, 1, NULL, fill_star, NULL), SD_OK);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "ckpt", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "ckpt_name", g_ckpt), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", "enc", "clip"), SD_OK);
    size_t n = 77 * 64 * sizeof(float);
    float *plain = encode(g, "a cat"), *star = encode(g, "a embedding:star cat");
    float *star_ext = encode(g, "a embedding:star.safetensors cat");
    g_log[0] = '\0';
    float *nope = encode(g, "a cat embedding:nope");
    CHECK(plain && star && memcmp(plain, star, n) != 0);
    CHECK(star && star_ext && memcmp(star, star_ext, n) == 0);
    CHECK(plain && nope && memcmp(plain, nope, n) == 0);
    CHECK_STR_CONTAINS(g_log, "embedding:nope does not exist, ignoring");
    free(plain);
    free(star);
    free(star_ext);
    free(nope);
    free(path);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* A CLIP from another checkpoint file than the MODEL: its keys are mapped for its own file, and
 * the encoding equals the one with both inputs from that file. */
static void test_clip_from_other_file(void)
{
    sd_context *ctx = new_context(NULL);
    char *other = test_path(test_scratch_dir(), "other.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, other, &g_cfg, SD_ST_F32, 43), SD_OK);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "a", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "a", "ckpt_name", g_ckpt), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "b", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "b", "ckpt_name", other), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoraLoader", "lora", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "a", "MODEL", "lora", "model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "b", "CLIP", "lora", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lora", "lora_name", "style.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lora", "strength_clip", "1.3"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "lora", "CLIP", "enc", "clip"), SD_OK);
    float *mixed = encode(g, "a cat");
    CHECK_EQ_INT(sd_graph_connect(g, "b", "MODEL", "lora", "model"), SD_OK);
    float *same = encode(g, "a cat");
    CHECK(mixed && same && memcmp(mixed, same, 77 * 64 * sizeof(float)) == 0);
    free(mixed);
    free(same);
    free(other);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Refused LoRA files fail the loader node with the models/ message; nothing downstream runs. */
static void test_bad_lora(void)
{
    sd_context *ctx = new_context(NULL);
    char *path = test_path(g_lora_dir, "xl.safetensors");
    sd_st_entry e[2] = {
        {.name = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {4, 1280}},
        {.name = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {5120, 4}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, 2, NULL, fill_star, NULL), SD_OK);
    sd_graph *g = lora_graph(ctx, "1", "1");
    CHECK_EQ_INT(sd_graph_set_param(g, "lora", "xl.safetensors"), SD_OK);
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    /* Found before anything runs, from the file's header (validation's check pass). */
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "input 'lora_name'");
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "xl.safetensors: SDXL LoRA detected (key "
                                                "'lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight'); "
                                                "the model is SD1.x");
    CHECK_EQ_INT(outcome(res, "sampler"), SD_NODE_SKIPPED);
    sd_result_free(res);
    /* A file that does not exist: the loader input names it (validation). */
    CHECK_EQ_INT(sd_graph_set_param(g, "lora", "missing.safetensors"), SD_OK);
    res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "missing.safetensors");
    sd_result_free(res);
    sd_graph_free(g);
    free(path);
    sd_context_free(ctx);
}

int main(void)
{
    setup();
    RUN(test_cache_key);
    RUN(test_equivalences);
    RUN(test_embedding_prompt);
    RUN(test_clip_from_other_file);
    RUN(test_bad_lora);
    free(g_models);
    free(g_lora_dir);
    free(g_ckpt);
    return test_summary("test_lora_nodes");
}
