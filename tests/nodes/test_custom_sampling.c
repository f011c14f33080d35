/* ComfyUI's custom-sampling nodes on the tiny random checkpoint: KSampler, KSamplerAdvanced,
 * SamplerCustom and SamplerCustomAdvanced give the same bits for the same settings (one sampling
 * core); the guiders' combinations against their parts; denoised_output; the sigma nodes; the
 * cache; graphs/txt2img-custom-sampling.xml against graphs/txt2img.xml; an imported ComfyUI
 * API workflow. */
#include "test.h"
#include "core/run.h"
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include "ml/families/sd1_layout.h"
#include "nodes/sample_core.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LAT = 8, BATCH = 2, LAT_N = BATCH * 4 * LAT * LAT };
static char *ckpt_path;

static sd_context *new_context(const char *cache)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, cache);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    return ctx;
}

static void write_checkpoint(void)
{
    sd_context *ctx = new_context(NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    ckpt_path = test_path(test_scratch_dir(), "custom_sampling.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ckpt_path, &cfg, SD_ST_F32, 7), SD_OK);
    sd_context_free(ctx);
}

static void add(sd_graph *g, const char *type, const char *id)
{
    CHECK_EQ_INT(sd_graph_add_node(g, type, id, NULL), SD_OK);
}

static void set(sd_graph *g, const char *id, const char *input, const char *value)
{
    CHECK_MSG(sd_graph_set_input(g, id, input, value) == SD_OK, "%s.%s: %s", id, input,
              sd_context_errmsg(sd_graph_context(g)));
}

static void link(sd_graph *g, const char *from, const char *output, const char *to, const char *input)
{
    CHECK_MSG(sd_graph_connect(g, from, output, to, input) == SD_OK, "%s.%s -> %s.%s: %s", from, output, to, input,
              sd_context_errmsg(sd_graph_context(g)));
}

/* Checkpoint, prompts "pos", "neg" and "mid", and a 2-item 64x64 latent. */
static sd_graph *base_graph(sd_context *ctx)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    add(g, "CheckpointLoaderSimple", "ckpt");
    set(g, "ckpt", "ckpt_name", ckpt_path);
    const char *prompts[][2] = {{"pos", "a red fox in the snow"}, {"neg", "blurry"}, {"mid", "a painting"}};
    for (int i = 0; i < 3; i++) {
        add(g, "CLIPTextEncode", prompts[i][0]);
        link(g, "ckpt", "CLIP", prompts[i][0], "clip");
        set(g, prompts[i][0], "text", prompts[i][1]);
    }
    add(g, "EmptyLatentImage", "latent");
    set(g, "latent", "width", "64");
    set(g, "latent", "height", "64");
    set(g, "latent", "batch_size", "2");
    return g;
}

/* A scheduler "<id>.sched" and sampler choice "<id>.sel" for the custom samplers. */
static void add_schedule(sd_graph *g, const char *id, const char *sampler, const char *scheduler, const char *steps,
                         const char *denoise)
{
    char sched[64], sel[64];
    snprintf(sched, sizeof sched, "%s.sched", id);
    snprintf(sel, sizeof sel, "%s.sel", id);
    add(g, "BasicScheduler", sched);
    link(g, "ckpt", "MODEL", sched, "model");
    set(g, sched, "scheduler", scheduler);
    set(g, sched, "steps", steps);
    set(g, sched, "denoise", denoise);
    add(g, "KSamplerSelect", sel);
    set(g, sel, "sampler_name", sampler);
    link(g, sel, "SAMPLER", id, "sampler");
    link(g, sched, "SIGMAS", id, "sigmas");
    link(g, "latent", "LATENT", id, "latent_image");
}

/* A guider "<id>.guider" of type over the prompts named in conds; then RandomNoise or
 * DisableNoise "<id>.noise". */
static void add_guider(sd_graph *g, const char *id, const char *type, const char *const *inputs,
                       const char *const *prompts, size_t n)
{
    char name[64];
    snprintf(name, sizeof name, "%s.guider", id);
    add(g, type, name);
    link(g, "ckpt", "MODEL", name, "model");
    for (size_t i = 0; i < n; i++)
        link(g, prompts[i], "CONDITIONING", name, inputs[i]);
    link(g, name, "GUIDER", id, "guider");
}

static void add_noise(sd_graph *g, const char *id, const char *seed)
{
    char name[64];
    snprintf(name, sizeof name, "%s.noise", id);
    add(g, seed ? "RandomNoise" : "DisableNoise", name);
    if (seed)
        set(g, name, "noise_seed", seed);
    link(g, name, "NOISE", id, "noise");
}

static void add_ksampler(sd_graph *g, const char *id, const char *sampler, const char *scheduler, const char *steps,
                         const char *cfg, const char *seed, const char *denoise)
{
    add(g, "KSampler", id);
    link(g, "ckpt", "MODEL", id, "model");
    link(g, "pos", "CONDITIONING", id, "positive");
    link(g, "neg", "CONDITIONING", id, "negative");
    link(g, "latent", "LATENT", id, "latent_image");
    const char *kv[][2] = {{"sampler_name", sampler}, {"scheduler", scheduler}, {"steps", steps},
                           {"cfg", cfg}, {"seed", seed}, {"denoise", denoise}};
    for (int i = 0; i < 6; i++)
        set(g, id, kv[i][0], kv[i][1]);
}

static void add_sampler_custom(sd_graph *g, const char *id, const char *sampler, const char *scheduler,
                               const char *steps, const char *cfg, const char *seed, const char *denoise)
{
    add(g, "SamplerCustom", id);
    link(g, "ckpt", "MODEL", id, "model");
    link(g, "pos", "CONDITIONING", id, "positive");
    link(g, "neg", "CONDITIONING", id, "negative");
    set(g, id, "cfg", cfg);
    set(g, id, "noise_seed", seed);
    add_schedule(g, id, sampler, scheduler, steps, denoise);
}

/* SamplerCustomAdvanced "id" with a CFGGuider over pos and neg. */
static void add_advanced_cfg(sd_graph *g, const char *id, const char *sampler, const char *scheduler,
                             const char *steps, const char *cfg, const char *seed, const char *denoise)
{
    static const char *const inputs[] = {"positive", "negative"}, *const prompts[] = {"pos", "neg"};
    char name[64];
    add(g, "SamplerCustomAdvanced", id);
    add_guider(g, id, "CFGGuider", inputs, prompts, 2);
    snprintf(name, sizeof name, "%s.guider", id);
    set(g, name, "cfg", cfg);
    add_noise(g, id, seed);
    add_schedule(g, id, sampler, scheduler, steps, denoise);
}

static sd_result *run(sd_graph *g, const char *const *outputs, size_t n, bool cache)
{
    sd_run_options o = {.outputs = outputs, .n_outputs = n, .no_cache = !cache};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &o, &res);
    sd_context *ctx = sd_graph_context(g);
    CHECK_MSG(st == SD_OK, "%s: %s", sd_context_errmsg(ctx), sd_context_diag_count(ctx) ? sd_context_diag(ctx, 0) : "");
    return st ? NULL : res;
}

/* The samples of a node's LATENT output (borrowed), or NULL with a failed check. */
static const float *samples(const sd_result *res, const char *id, const char *output)
{
    const sd_value *v = res ? sd_result_value(res, id, output) : NULL;
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    CHECK_MSG(t && t->ndim == 4 && t->shape[0] == BATCH && t->shape[2] == LAT && t->shape[3] == LAT,
              "%s.%s: no %dx4x%dx%d latent", id, output, BATCH, LAT, LAT);
    return t ? t->data : NULL;
}

static void expect_same(const sd_result *res, const char *a, const char *a_out, const char *b, const char *b_out)
{
    const float *x = samples(res, a, a_out), *y = samples(res, b, b_out);
    CHECK_MSG(x && y && memcmp(x, y, LAT_N * sizeof *x) == 0, "%s.%s and %s.%s differ", a, a_out, b, b_out);
}

static double max_abs_diff(const float *a, const float *b)
{
    double m = 0;
    for (size_t i = 0; i < LAT_N; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* KSampler = SamplerCustom = SamplerCustomAdvanced (RandomNoise, CFGGuider, KSamplerSelect,
 * BasicScheduler), bit for bit, for samplers with and without step noise, CFG++, cfg 1 and a
 * partial denoise. */
static void test_ksampler_equals_custom(void)
{
    static const char *const cases[][6] = {
        /* sampler, scheduler, steps, cfg, seed, denoise */
        {"euler", "normal", "3", "7.5", "11", "1.0"},
        {"euler_ancestral", "karras", "3", "5.0", "12", "1.0"},
        {"res_multistep", "simple", "3", "7.5", "13", "1.0"},
        {"euler_cfg_pp", "normal", "2", "1.0", "14", "1.0"},
        {"dpmpp_2m", "exponential", "3", "1.0", "15", "0.6"},
        {"sa_solver", "karras", "4", "5.0", "16", "1.0"},
    };
    sd_context *ctx = new_context(NULL);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *const *c = cases[k];
        sd_graph *g = base_graph(ctx);
        add_ksampler(g, "ks", c[0], c[1], c[2], c[3], c[4], c[5]);
        add_sampler_custom(g, "sc", c[0], c[1], c[2], c[3], c[4], c[5]);
        add_advanced_cfg(g, "sca", c[0], c[1], c[2], c[3], c[4], c[5]);
        const char *outputs[] = {"ks", "sc", "sca"};
        sd_result *res = run(g, outputs, 3, false);
        fprintf(stderr, "  %s/%s: KSampler = SamplerCustom = SamplerCustomAdvanced\n", c[0], c[1]);
        expect_same(res, "ks", "LATENT", "sc", "output");
        expect_same(res, "ks", "LATENT", "sca", "output");
        expect_same(res, "sc", "denoised_output", "sca", "denoised_output");
        sd_result_free(res);
        sd_graph_free(g);
    }
    sd_context_free(ctx);
}

/* KSamplerAdvanced's two-stage use (end_at_step with leftover noise, then start_at_step without
 * added noise) = SamplerCustomAdvanced over SplitSigmas' two halves. */
static void test_ksampler_advanced_equals_split(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = base_graph(ctx);
    const char *stages[][4] = {{"ka1", "enable", "0", "2"}, {"ka2", "disable", "2", "10000"}};
    for (int s = 0; s < 2; s++) {
        const char *id = stages[s][0];
        add(g, "KSamplerAdvanced", id);
        link(g, "ckpt", "MODEL", id, "model");
        link(g, "pos", "CONDITIONING", id, "positive");
        link(g, "neg", "CONDITIONING", id, "negative");
        link(g, s == 0 ? "latent" : "ka1", "LATENT", id, "latent_image");
        const char *kv[][2] = {{"add_noise", stages[s][1]}, {"noise_seed", "21"}, {"steps", "4"}, {"cfg", "6.0"},
                               {"sampler_name", "euler"}, {"scheduler", "karras"}, {"start_at_step", stages[s][2]},
                               {"end_at_step", stages[s][3]}, {"return_with_leftover_noise", "enable"}};
        for (int i = 0; i < 9; i++)
            set(g, id, kv[i][0], kv[i][1]);
    }
    add_advanced_cfg(g, "sc1", "euler", "karras", "4", "6.0", "21", "1.0");
    add(g, "SplitSigmas", "split");
    set(g, "split", "step", "2");
    link(g, "sc1.sched", "SIGMAS", "split", "sigmas");
    link(g, "split", "high_sigmas", "sc1", "sigmas");
    add_advanced_cfg(g, "sc2", "euler", "karras", "4", "6.0", NULL, "1.0");
    link(g, "split", "low_sigmas", "sc2", "sigmas");
    link(g, "sc1", "output", "sc2", "latent_image");
    const char *outputs[] = {"ka1", "ka2", "sc1", "sc2"};
    sd_result *res = run(g, outputs, 4, false);
    expect_same(res, "ka1", "LATENT", "sc1", "output");
    expect_same(res, "ka2", "LATENT", "sc2", "output");
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* The guiders' combinations, from one-step runs whose denoised_output is the model function D
 * at sigma_max: CFGGuider, DualCFGGuider regular and nested against the BasicGuider predictions
 * of each prompt; BasicGuider = CFGGuider at cfg 1 and DualCFGGuider with cfg_cond2_negative 1
 * = CFGGuider over cond1 and cond2, bit for bit. */
static void test_guiders(void)
{
    static const char *const one[] = {"conditioning"}, *const two[] = {"positive", "negative"};
    static const char *const three[] = {"cond1", "cond2", "negative"};
    sd_context *ctx = new_context(NULL);
    sd_graph *g = base_graph(ctx);
    const char *prompts[] = {"pos", "mid", "neg"}, *basic_ids[] = {"b.pos", "b.mid", "b.neg"};
    for (int i = 0; i < 3; i++) {
        add(g, "SamplerCustomAdvanced", basic_ids[i]);
        add_guider(g, basic_ids[i], "BasicGuider", one, &prompts[i], 1);
        add_noise(g, basic_ids[i], "5");
        add_schedule(g, basic_ids[i], "euler", "normal", "1", "1.0");
    }
    const char *pos_neg[] = {"pos", "neg"}, *pos_mid[] = {"pos", "mid"};
    struct { const char *id, *type, *cfg, *cfg2, *style; } guided[] = {
        {"cfg", "CFGGuider", "4.0", NULL, NULL}, {"cfg1", "CFGGuider", "1.0", NULL, NULL},
        {"cfgpm", "CFGGuider", "3.0", NULL, NULL}, {"dual", "DualCFGGuider", "3.0", "2.5", "regular"},
        {"nested", "DualCFGGuider", "3.0", "2.5", "nested"}, {"dual1", "DualCFGGuider", "3.0", "1.0", "regular"},
    };
    for (size_t k = 0; k < sizeof guided / sizeof guided[0]; k++) {
        const char *id = guided[k].id;
        char gname[64];
        snprintf(gname, sizeof gname, "%s.guider", id);
        add(g, "SamplerCustomAdvanced", id);
        bool dual = guided[k].cfg2 != NULL;
        add_guider(g, id, guided[k].type, dual ? three : two, dual ? prompts : strcmp(id, "cfgpm") ? pos_neg : pos_mid,
                   dual ? 3 : 2);
        set(g, gname, dual ? "cfg_conds" : "cfg", guided[k].cfg);
        if (dual) {
            set(g, gname, "cfg_cond2_negative", guided[k].cfg2);
            set(g, gname, "style", guided[k].style);
        }
        add_noise(g, id, "5");
        add_schedule(g, id, "euler", "normal", "1", "1.0");
    }
    const char *outputs[] = {"b.pos", "b.mid", "b.neg", "cfg", "cfg1", "cfgpm", "dual", "nested", "dual1"};
    sd_result *res = run(g, outputs, 9, false);
    expect_same(res, "b.pos", "denoised_output", "cfg1", "denoised_output");
    expect_same(res, "cfgpm", "denoised_output", "dual1", "denoised_output");
    const float *p = samples(res, "b.pos", "denoised_output"), *m = samples(res, "b.mid", "denoised_output");
    const float *n = samples(res, "b.neg", "denoised_output");
    const float *cfg = samples(res, "cfg", "denoised_output"), *dual = samples(res, "dual", "denoised_output");
    const float *nested = samples(res, "nested", "denoised_output");
    if (p && m && n && cfg && dual && nested) {
        static float want_cfg[LAT_N], want_dual[LAT_N], want_nested[LAT_N];
        double scale = 0;
        for (size_t i = 0; i < LAT_N; i++) {
            want_cfg[i] = n[i] + (p[i] - n[i]) * 4.0f;
            want_dual[i] = n[i] + (m[i] - n[i]) * 2.5f + (p[i] - m[i]) * 3.0f;
            want_nested[i] = n[i] + 2.5f * (m[i] + (p[i] - m[i]) * 3.0f - n[i]);
            scale = fmax(scale, fabs(want_dual[i]));
        }
        /* the parts come rounded through LATENT values (divided by the VAE scale) */
        double e1 = max_abs_diff(cfg, want_cfg), e2 = max_abs_diff(dual, want_dual);
        double e3 = max_abs_diff(nested, want_nested);
        fprintf(stderr, "  guiders: cfg %.3g, dual %.3g, nested %.3g max abs error (values up to %.3g)\n", e1, e2, e3,
                scale);
        CHECK(e1 <= 1e-5 * scale && e2 <= 1e-5 * scale && e3 <= 1e-5 * scale);
        CHECK(max_abs_diff(dual, nested) > 1e-3 * scale);
    }
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* denoised_output: a one-step euler run's output is its prediction (x - (x - D) = D up to
 * rounding); a schedule of one sigma returns the noised latent in both outputs, none the latent. */
static void test_denoised_output(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = base_graph(ctx);
    add_advanced_cfg(g, "one", "euler", "normal", "1", "5.0", "3", "1.0");
    add_advanced_cfg(g, "last", "euler", "normal", "3", "5.0", "3", "1.0");
    add(g, "SplitSigmas", "split");
    set(g, "split", "step", "3");
    link(g, "last.sched", "SIGMAS", "split", "sigmas");
    link(g, "split", "low_sigmas", "last", "sigmas"); /* [0]: nothing to sample */
    add_advanced_cfg(g, "none", "euler", "normal", "3", "5.0", "3", "0.0"); /* BasicScheduler: no sigmas */
    const char *outputs[] = {"one", "last", "none"};
    sd_result *res = run(g, outputs, 3, false);
    const float *o = samples(res, "one", "output"), *d = samples(res, "one", "denoised_output");
    if (o && d)
        CHECK_MSG(max_abs_diff(o, d) < 1e-4, "one step: output and denoised differ by %.3g", max_abs_diff(o, d));
    expect_same(res, "last", "output", "last", "denoised_output");
    expect_same(res, "none", "output", "none", "denoised_output");
    const float *z = samples(res, "last", "output"), *zn = samples(res, "none", "output");
    for (size_t i = 0; z && zn && i < LAT_N; i++)
        CHECK(z[i] == 0.0f && zn[i] == 0.0f);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* The sigma nodes through a graph: AlignYourSteps, Karras, Split, SplitDenoise, Flip. */
static const float *sigmas_of(const sd_result *res, const char *id, const char *output, size_t *n)
{
    const sd_value *v = res ? sd_result_value(res, id, output) : NULL;
    const sd_tensor *t = v ? sd_value_tensor(v, "sigmas") : NULL;
    CHECK_MSG(v && v->type == SD_TYPE_SIGMAS && t && t->ndim == 1, "%s.%s: no SIGMAS", id, output);
    *n = t ? (size_t)t->shape[0] : 0;
    return t ? t->data : NULL;
}

static void test_sigma_nodes(void)
{
    sd_context *ctx = new_context(NULL);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    add(g, "AlignYourStepsScheduler", "ays");
    set(g, "ays", "steps", "10");
    add(g, "SplitSigmas", "split");
    set(g, "split", "step", "3");
    link(g, "ays", "SIGMAS", "split", "sigmas");
    add(g, "SplitSigmasDenoise", "half");
    set(g, "half", "denoise", "0.4");
    link(g, "ays", "SIGMAS", "half", "sigmas");
    add(g, "SplitSigmasDenoise", "zero");
    set(g, "zero", "denoise", "0.0");
    link(g, "ays", "SIGMAS", "zero", "sigmas");
    add(g, "FlipSigmas", "flip");
    link(g, "ays", "SIGMAS", "flip", "sigmas");
    add(g, "KarrasScheduler", "karras");
    set(g, "karras", "steps", "4");
    const char *outputs[] = {"ays", "split", "half", "zero", "flip", "karras"};
    sd_result *res = run(g, outputs, 6, false);
    size_t n, nh, nl;
    const float *s = sigmas_of(res, "ays", "SIGMAS", &n);
    CHECK(s && n == 11 && s[0] == 14.6146412f && s[10] == 0.0f && s[9] == 0.1515232662f);
    const float *h = sigmas_of(res, "split", "high_sigmas", &nh), *l = sigmas_of(res, "split", "low_sigmas", &nl);
    CHECK(h && l && nh == 4 && nl == 8 && h[3] == l[0] && memcmp(h, s, 4 * sizeof *s) == 0);
    h = sigmas_of(res, "half", "high_sigmas", &nh); /* round(10 * 0.4) = 4 steps in low */
    l = sigmas_of(res, "half", "low_sigmas", &nl);
    CHECK(h && l && nh == 7 && nl == 5 && l[0] == s[6] && memcmp(l, s + 6, 5 * sizeof *s) == 0);
    h = sigmas_of(res, "zero", "high_sigmas", &nh); /* sigmas[:-0] is empty, as in Python */
    l = sigmas_of(res, "zero", "low_sigmas", &nl);
    CHECK(nh == 0 && l && nl == 1 && l[0] == 0.0f);
    const float *f = sigmas_of(res, "flip", "SIGMAS", &nh);
    CHECK(f && s && nh == 11 && f[0] == 0.0001f && f[1] == s[9] && f[10] == s[0]);
    const float *k = sigmas_of(res, "karras", "SIGMAS", &n);
    float *want = NULL;
    size_t nw = 0;
    CHECK_EQ_INT(sd_formula_sigmas(ctx, SD_SIGMAS_KARRAS, 4, 0.0291675, 14.614642, 7.0, &want, &nw), SD_OK);
    CHECK(k && n == 5 && nw == 5 && memcmp(k, want, 5 * sizeof *k) == 0);
    free(want);
    sd_result_free(res);
    /* a schedule that is not finite is one line naming the node */
    set(g, "karras", "sigma_min", "0");
    add(g, "ExponentialScheduler", "exp");
    set(g, "exp", "sigma_min", "0");
    const char *bad[] = {"exp"};
    sd_run_options o = {.outputs = bad, .n_outputs = 1, .no_cache = true};
    res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'exp' (ExponentialScheduler): exponential schedule: sigma_max "
                                         "14.6146, sigma_min 0 and rho 0 give a sigma that is not finite");
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
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

/* The cache: a second run loads the sampled latent and runs no guider; another sampler name
 * re-runs the sampler node (the SAMPLER value's key is its name), the guider is never stored. */
static void test_cache(void)
{
    char *cache = test_path(test_scratch_dir(), "custom_sampling.db");
    remove(cache);
    sd_context *ctx = new_context(cache);
    sd_graph *g = base_graph(ctx);
    add_advanced_cfg(g, "sca", "euler", "normal", "2", "5.0", "9", "1.0");
    const char *outputs[] = {"sca"};
    sd_result *res = run(g, outputs, 1, true);
    CHECK_EQ_INT(outcome(res, "sca"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(res, "sca.guider"), SD_NODE_RAN);
    float first[LAT_N];
    const float *x = samples(res, "sca", "output");
    if (x)
        memcpy(first, x, sizeof first);
    sd_result_free(res);
    res = run(g, outputs, 1, true);
    CHECK_EQ_INT(outcome(res, "sca"), SD_NODE_CACHED);
    CHECK_EQ_INT(outcome(res, "sca.guider"), SD_NODE_SKIPPED);
    x = samples(res, "sca", "output");
    CHECK(x && memcmp(x, first, sizeof first) == 0);
    sd_result_free(res);
    set(g, "sca.sel", "sampler_name", "heun");
    res = run(g, outputs, 1, true);
    CHECK_EQ_INT(outcome(res, "sca"), SD_NODE_RAN);
    CHECK_EQ_INT(outcome(res, "sca.sched"), SD_NODE_CACHED);
    CHECK_EQ_INT(outcome(res, "sca.guider"), SD_NODE_RAN);
    x = samples(res, "sca", "output");
    CHECK(x && memcmp(x, first, sizeof first) != 0);
    sd_result_free(res);
    set(g, "sca.guider", "cfg", "6.0");
    res = run(g, outputs, 1, true);
    CHECK_EQ_INT(outcome(res, "sca"), SD_NODE_RAN);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(cache);
}

/* graphs/txt2img-custom-sampling.xml makes graphs/txt2img.xml's latent, bit for bit. */
static void test_stock_graph(void)
{
    sd_context *ctx = new_context(NULL);
    const char *files[] = {"graphs/txt2img.xml", "graphs/txt2img-custom-sampling.xml"}, *ids[] = {"sampler", "sampler"};
    const char *outs[] = {"LATENT", "output"};
    float *lat[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        char *path = test_path(test_source_dir(), files[k]);
        sd_graph *g = NULL;
        CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_OK);
        free(path);
        const char *params[][2] = {{"checkpoint", ckpt_path}, {"width", "64"}, {"height", "64"}, {"steps", "3"},
                                   {"seed", "77"}, {"sampler", "dpmpp_2m"}, {"scheduler", "karras"}, {"batch", "2"}};
        for (int i = 0; g && i < 8; i++)
            CHECK_EQ_INT(sd_graph_set_param(g, params[i][0], params[i][1]), SD_OK);
        const char *outputs[] = {ids[k]};
        sd_result *res = g ? run(g, outputs, 1, false) : NULL;
        const float *x = samples(res, ids[k], outs[k]);
        if (x && (lat[k] = malloc(LAT_N * sizeof *x)))
            memcpy(lat[k], x, LAT_N * sizeof *x);
        sd_result_free(res);
        sd_graph_free(g);
    }
    CHECK(lat[0] && lat[1] && memcmp(lat[0], lat[1], LAT_N * sizeof *lat[0]) == 0);
    free(lat[0]);
    free(lat[1]);
    sd_context_free(ctx);
}

/* tests/data/comfy/custom_sampling_api.json (SamplerCustomAdvanced with RandomNoise, CFGGuider,
 * KSamplerSelect, BasicScheduler; SamplerCustom over SplitSigmas' low half, each saved through
 * its own SaveImage, so the import keeps both) imports and runs, and makes the latents of the same
 * graph built here. */
static void test_comfy_import(void)
{
    sd_context *ctx = new_context(NULL);
    char *path = test_path(test_source_dir(), "tests/data/comfy/custom_sampling_api.json");
    sd_graph *g = NULL;
    CHECK_MSG(sd_graph_import_comfy(ctx, path, &g) == SD_OK, "%s", sd_context_errmsg(ctx));
    free(path);
    if (!g) {
        sd_context_free(ctx);
        return;
    }
    set(g, "4", "ckpt_name", ckpt_path);
    set(g, "5", "batch_size", "2");
    const char *outputs[] = {"13", "30", "9", "33"};
    sd_result *res = run(g, outputs, 4, false);
    sd_graph *mine = base_graph(ctx);
    set(mine, "pos", "text", "a red fox in the snow");
    add_advanced_cfg(mine, "sca", "dpmpp_2m", "karras", "3", "7.5", "42", "1.0");
    add_sampler_custom(mine, "sc", "dpmpp_2m", "karras", "3", "7.5", "42", "1.0");
    add(mine, "SplitSigmas", "split");
    set(mine, "split", "step", "1");
    link(mine, "sc.sched", "SIGMAS", "split", "sigmas");
    link(mine, "split", "low_sigmas", "sc", "sigmas");
    const char *mine_out[] = {"sca", "sc"};
    sd_result *res2 = run(mine, mine_out, 2, false);
    const float *a = samples(res, "13", "output"), *b = samples(res2, "sca", "output");
    CHECK(a && b && memcmp(a, b, LAT_N * sizeof *a) == 0);
    a = samples(res, "30", "denoised_output"), b = samples(res2, "sc", "denoised_output");
    CHECK(a && b && memcmp(a, b, LAT_N * sizeof *a) == 0);
    CHECK(res && sd_result_file_count(res) == 4);
    sd_result_free(res);
    sd_result_free(res2);
    sd_graph_free(mine);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* The node descriptors' choices are the registries', in order. */
static void test_choices(void)
{
    size_t n = 0;
    while (sd_sampler_choices[n]) {
        CHECK_STR_EQ(sd_sampler_choices[n], sd_sampler_name(n) ? sd_sampler_name(n) : "");
        n++;
    }
    CHECK_EQ_INT(n, sd_sampler_count());
    const sd_input_desc *in = sd_node_desc_input(sd_node_type_find("AlignYourStepsScheduler"), "model_type");
    for (size_t i = 0; in && i < sd_ays_model_type_count(); i++)
        CHECK_STR_EQ(in->choices[i], sd_ays_model_type_name(i));
    CHECK(in && in->choices[sd_ays_model_type_count()] == NULL);
    CHECK_STR_EQ(sd_type_name(SD_TYPE_GUIDER), "GUIDER");
    CHECK_EQ_INT(sd_type_from_name("SIGMAS"), SD_TYPE_SIGMAS);
}

int main(void)
{
    write_checkpoint();
    RUN(test_choices);
    RUN(test_ksampler_equals_custom);
    RUN(test_ksampler_advanced_equals_split);
    RUN(test_guiders);
    RUN(test_denoised_output);
    RUN(test_sigma_nodes);
    RUN(test_cache);
    RUN(test_stock_graph);
    RUN(test_comfy_import);
    free(ckpt_path);
    return test_summary("test_custom_sampling");
}
