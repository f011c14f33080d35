/* ControlNetLoader, ControlNetApply and ControlNetApplyAdvanced through the scheduler and the
 * KSampler on tiny random files (graphs/controlnet-canny.xml): whole 6-step runs against
 * diffusers' ControlNetModel + UNet with k-diffusion (tests/reference/
 * make_controlnet_pipeline_goldens.py: hint crop and resize, strength, a percent range); the
 * ControlNet changes the result;
 * strength 0 and a percent range that excludes every step leave it bit-identical to txt2img;
 * two chained ControlNets add up (0.4 + 0.6 = 1.0); ControlNetApply acts on the negative side
 * as ControlNetApplyAdvanced does on both; the hint's centre crop; another family's ControlNet
 * is refused with the node's exact error; a difference ControlNet (the f32 ControlNet minus the
 * checkpoint's UNet) through DiffControlNetLoader samples as the full ControlNet, and
 * ControlNetLoader refuses it at validation. The ControlNet's numerics against diffusers are
 * tests/models/test_controlnet.c. */
#include "test.h"
#include "core/run.h"
#include "ml/adapters/control_eval.h"
#include "ml/families/sd1_layout.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "support/png_fixture.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LAT_N = 4 * 8 * 8 };
static char *ckpt_path, *cn_path, *cn32_path, *image_path, *xl_path, *hint_path;

static sd_context *g_ctx; /* one context: weights and compiled kernels are reused */

static sd_context *new_context(void)
{
    return g_ctx;
}

static bool setup(void)
{
    if (sd_context_new(&g_ctx))
        return false;
    sd_context_set_allow_absolute_paths(g_ctx, true); /* test files are named by absolute path */
    sd_context_set_dir(g_ctx, SD_DIR_OUTPUT, test_scratch_dir());
    sd_context *ctx = g_ctx;
    sd_checkpoint_config cfg;
    const char *dir = test_scratch_dir();
    ckpt_path = test_path(dir, "tiny.safetensors");
    cn_path = test_path(dir, "tiny_controlnet.safetensors");
    xl_path = test_path(dir, "xl_controlnet.safetensors");
    cn32_path = test_path(dir, "tiny_controlnet_f32.safetensors");
    image_path = test_path(test_source_dir(), "examples/input/shapes.png");
    bool ok = sd_checkpoint_preset("tiny", &cfg) && !sd_sd1_write_random(ctx, ckpt_path, &cfg, SD_ST_F32, 42) &&
              !sd_controlnet_write_random(ctx, cn_path, &cfg.unet, false, SD_ST_F16, 11) &&
              !sd_controlnet_write_random(ctx, cn32_path, &cfg.unet, false, SD_ST_F32, 11);
    sd_checkpoint_config xl;
    ok = ok && sd_checkpoint_preset("sdxl-tiny", &xl) &&
         !sd_controlnet_write_random(ctx, xl_path, &xl.unet, false, SD_ST_F16, 3);
    if (!ok)
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
    return ok;
}

static sd_graph *load_graph(sd_context *ctx, const char *file, const char *cn)
{
    char *path = test_path(test_source_dir(), file);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_OK);
    free(path);
    if (!g)
        return NULL;
    const char *set[][2] = {{"checkpoint", ckpt_path}, {"prompt", "a red fox"}, {"negative", "blurry"},
                            {"seed", "5"}, {"steps", "2"}, {"cfg", "7.5"}, {"width", "64"}, {"height", "64"}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    if (cn) {
        CHECK_EQ_INT(sd_graph_set_param(g, "controlnet", cn), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "image", image_path), SD_OK);
    }
    return g;
}

/* Runs g up to the sampler: its latent (malloc'd, LAT_N floats) or NULL. */
static float *sample(sd_graph *g)
{
    return test_run_latent(g, "sampler", LAT_N);
}

/* The controlnet-canny graph with parameters set (NULL-terminated name/value pairs). */
static float *sample_controlnet(sd_context *ctx, const char *const *params)
{
    sd_graph *g = load_graph(ctx, "graphs/controlnet-canny.xml", cn_path);
    for (size_t i = 0; g && params && params[i]; i += 2)
        CHECK_EQ_INT(sd_graph_set_param(g, params[i], params[i + 1]), SD_OK);
    float *out = g ? sample(g) : NULL;
    sd_graph_free(g);
    return out;
}

static double max_diff(const float *a, const float *b)
{
    double m = 0;
    for (size_t i = 0; a && b && i < LAT_N; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static float *g_base, *g_full; /* txt2img without ControlNet; with it at strength 1 */

static void test_effect_and_off_switches(void)
{
    sd_context *ctx = new_context();
    sd_graph *g = load_graph(ctx, "graphs/txt2img.xml", NULL);
    g_base = g ? sample(g) : NULL;
    sd_graph_free(g);
    g_full = sample_controlnet(ctx, NULL);
    double d = max_diff(g_base, g_full);
    printf("  ControlNet at strength 1 moves the latent by up to %.3g\n", d);
    CHECK(g_base && g_full && d > 1e-3);

    static const char *const zero[] = {"strength", "0", NULL};
    static const char *const never[] = {"start_percent", "0", "end_percent", "0", NULL};
    static const char *const at_end[] = {"start_percent", "1", "end_percent", "1", NULL};
    static const char *const half[] = {"start_percent", "0", "end_percent", "0.5", NULL};
    float *z = sample_controlnet(ctx, zero), *n = sample_controlnet(ctx, never), *e = sample_controlnet(ctx, at_end);
    float *h = sample_controlnet(ctx, half);
    CHECK(z && n && e && h);
    if (z && n && e && h && g_base) {
        CHECK_MSG(memcmp(z, g_base, LAT_N * sizeof *z) == 0, "strength 0 differs from txt2img");
        CHECK_MSG(memcmp(n, g_base, LAT_N * sizeof *n) == 0, "end_percent 0 differs from txt2img");
        CHECK_MSG(memcmp(e, g_base, LAT_N * sizeof *e) == 0, "start_percent 1 differs from txt2img");
        /* Steps at sigma >= the 50% sigma get the ControlNet, the last one does not. */
        CHECK(max_diff(h, g_base) > 1e-4 && max_diff(h, g_full) > 1e-4);
    }
    free(z), free(n), free(e), free(h);
}

/* A second ControlNetApplyAdvanced fed by the first (chained on every entry). */
static void test_chain_adds_up(void)
{
    sd_context *ctx = new_context();
    sd_graph *g = load_graph(ctx, "graphs/controlnet-canny.xml", cn_path);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_set_param(g, "strength", "0.4"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "ControlNetApplyAdvanced", "apply2", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "apply", "positive", "apply2", "positive"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "apply", "negative", "apply2", "negative"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "cnet", "CONTROL_NET", "apply2", "control_net"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "edges", "IMAGE", "apply2", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "apply2", "strength", "0.6"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "apply2", "positive", "sampler", "positive"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "apply2", "negative", "sampler", "negative"), SD_OK);
    float *chained = sample(g);
    double d = max_diff(chained, g_full), peak = 0;
    for (size_t i = 0; g_full && i < LAT_N; i++)
        peak = fmax(peak, fabs(g_full[i]));
    printf("  0.4 + 0.6 chained vs 1.0: max difference %.3g (latent peak %.3g)\n", d, peak);
    CHECK(chained && g_full && d < 1e-5 * peak); /* only the residuals' rounding differs */
    free(chained);
    sd_graph_free(g);
}

/* ControlNetApply on the positive side only also controls the negative side. */
static void test_apply_to_uncond(void)
{
    sd_context *ctx = new_context();
    sd_graph *g = load_graph(ctx, "graphs/controlnet-canny.xml", cn_path);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_add_node(g, "ControlNetApply", "simple", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "positive", "CONDITIONING", "simple", "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "cnet", "CONTROL_NET", "simple", "control_net"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "edges", "IMAGE", "simple", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "simple", "CONDITIONING", "sampler", "positive"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "negative", "CONDITIONING", "sampler", "negative"), SD_OK);
    float *out = sample(g);
    CHECK(out && g_full && memcmp(out, g_full, LAT_N * sizeof *out) == 0);
    free(out);
    sd_graph_free(g);
}

static void test_fill_uncond(void)
{
    /* Stand-in chains: only their identity matters here. */
    const sd_control_link *a = (const sd_control_link *)&ckpt_path, *b = (const sd_control_link *)&cn_path;
    const sd_control_link *pos[3] = {a, NULL, b}, *neg[2] = {NULL, NULL}, *chains[5];
    bool flags[3] = {true, false, true};
    size_t src[5], n;
    sd_control_fill_uncond(pos, flags, 3, neg, 2, src, chains, &n);
    CHECK_EQ_INT(n, 2);
    CHECK(src[0] == 0 && chains[0] == a && src[1] == 1 && chains[1] == b);
    sd_control_fill_uncond(pos, flags, 3, neg, 1, src, chains, &n); /* one negative: repeated */
    CHECK_EQ_INT(n, 2);
    CHECK(src[0] == 0 && chains[0] == a && src[1] == 0 && chains[1] == b);
    flags[0] = flags[2] = false; /* ControlNetApplyAdvanced: the negative side is left alone */
    sd_control_fill_uncond(pos, flags, 3, neg, 2, src, chains, &n);
    CHECK(n == 2 && chains[0] == NULL && chains[1] == NULL);
    neg[1] = a; /* a negative with its own ControlNet: nothing is filled */
    flags[0] = true;
    sd_control_fill_uncond(pos, flags, 3, neg, 2, src, chains, &n);
    CHECK(n == 2 && chains[0] == NULL && chains[1] == a);
}

/* common_upscale(..., "nearest-exact", "center"): a 6x2 image to 2x2 keeps columns 2..3, a
 * 2x6 one rows 2..3; 3x1 to 6x2 repeats each pixel. */
static void test_hint_resize(void)
{
    sd_context *ctx = new_context();
    float px[12];
    for (int i = 0; i < 12; i++)
        px[i] = (float)i;
    sd_tensor wide = {.ndim = 4, .shape = {1, 2, 6, 1}, .data = px};
    float *out = NULL;
    CHECK_EQ_INT(sd_control_hint_resize(ctx, &wide, 2, 2, &out), SD_OK);
    CHECK(out && out[0] == 2 && out[1] == 3 && out[2] == 8 && out[3] == 9);
    free(out);
    sd_tensor tall = {.ndim = 4, .shape = {1, 6, 2, 1}, .data = px};
    CHECK_EQ_INT(sd_control_hint_resize(ctx, &tall, 2, 2, &out), SD_OK);
    CHECK(out && out[0] == 4 && out[1] == 5 && out[2] == 6 && out[3] == 7);
    free(out);
    sd_tensor rgb = {.ndim = 4, .shape = {1, 1, 2, 3}, .data = px}; /* 2 pixels, RGB */
    CHECK_EQ_INT(sd_control_hint_resize(ctx, &rgb, 4, 2, &out), SD_OK);
    static const float want[24] = {0, 0, 3, 3, 0, 0, 3, 3, 1, 1, 4, 4, 1, 1, 4, 4, 2, 2, 5, 5, 2, 2, 5, 5};
    CHECK(out && memcmp(out, want, sizeof want) == 0);
    free(out);
}

/* The reference script's hint: a 120x80 RGB PNG of levels (7x + 2y + 50c + (x*y mod 11)) mod 256. */
static void write_hint_png(void)
{
    enum { W = 120, H = 80 };
    static unsigned char px[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                px[(y * W + x) * 3 + c] = (unsigned char)((7 * x + 2 * y + 50 * c + (x * y) % 11) % 256);
    fixture fx = {.w = W, .h = H, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    hint_path = write_fixture("hint.png", &fx);
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

/* The stock graph with the PNG as the hint (no Canny), fp32 weights, against the goldens. */
static void test_goldens(void)
{
    static const struct {
        const char *name, *sampler, *scheduler, *seed, *cfg, *strength, *start, *end;
    } runs[] = {
        {"full", "euler", "normal", "21", "7.5", "1.0", "0.0", "1.0"},
        {"range", "dpmpp_2m", "karras", "22", "6.0", "0.7", "0.2", "0.7"},
    };
    write_hint_png();
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        sd_graph *g = load_graph(new_context(), "graphs/controlnet-canny.xml", cn32_path);
        if (!g)
            return;
        const char *set[][2] = {
            {"prompt", "a red fox (in the snow:1.3), photograph"}, {"negative", "blurry"}, {"steps", "6"},
            {"seed", runs[k].seed}, {"cfg", runs[k].cfg}, {"sampler", runs[k].sampler},
            {"scheduler", runs[k].scheduler}, {"strength", runs[k].strength},
            {"start_percent", runs[k].start}, {"end_percent", runs[k].end}, {"image", hint_path},
        };
        for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
            CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "cnet", "weight_dtype", "fp32"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "apply", "image"), SD_OK);
        float *got = sample(g);
        char name[64];
        snprintf(name, sizeof name, "controlnet_pipeline_%s.bin", runs[k].name);
        unsigned char *raw = test_read_golden(name, 8 + 16 + LAT_N * sizeof(float));
        if (got && raw) {
            float ref[LAT_N];
            memcpy(ref, raw + 24, sizeof ref);
            double db = psnr_range(got, ref, LAT_N);
            printf("  %-5s latent PSNR %.1f dB (max abs %.3g)\n", runs[k].name, db, max_diff(got, ref));
            CHECK_MSG(db >= 70.0, "%s latent PSNR %.1f < 70 dB", runs[k].name, db);
        }
        free(raw);
        free(got);
        sd_graph_free(g);
    }
}

static void test_other_family(void)
{
    sd_context *ctx = new_context();
    sd_graph *g = load_graph(ctx, "graphs/controlnet-canny.xml", xl_path);
    if (!g)
        return;
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    /* Found before anything runs, from the file's header (validation's check pass). */
    CHECK_EQ_INT(sd_context_diag_count(ctx), 2);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "node 'apply' input 'control_net': the ControlNet is SDXL; the "
                                                "conditioning on 'positive' was made by SD1.x text encoders");
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 1), "on 'negative' was made by SD1.x text encoders");
    sd_result_free(res);
    sd_graph_free(g);
}

/* ---- difference ControlNets ---- */

typedef struct diff_job {
    sd_context *ctx;
    sd_safetensors *cn, *ckpt;
} diff_job;

/* Entry index: the f32 ControlNet's tensor minus the checkpoint's UNet tensor of the same name
 * (when it has one); the last entry is the 'difference' marker. */
static sd_status fill_diff(void *user, size_t index, void *dst, size_t nbytes)
{
    diff_job *j = user;
    float *out = dst;
    size_t n = nbytes / sizeof *out;
    if (index == sd_safetensors_count(j->cn)) {
        out[0] = 1.0f;
        return SD_OK;
    }
    const sd_st_tensor *t = sd_safetensors_at(j->cn, index);
    sd_status st = sd_safetensors_read_f32(j->ctx, j->cn, t, out, n);
    const sd_st_tensor *m = sd_safetensors_findf(j->ckpt, "model.diffusion_model.%s", t->name + strlen("control_model."));
    float *base = m ? malloc(nbytes) : NULL;
    if (!st && base && !(st = sd_safetensors_read_f32(j->ctx, j->ckpt, m, base, n)))
        for (size_t i = 0; i < n; i++)
            out[i] -= base[i];
    free(base);
    return st;
}

/* A difference file of the f32 ControlNet against the checkpoint (what DiffControlNetLoader adds
 * back), written once. */
static char *write_diff(sd_context *ctx)
{
    char *path = test_path(test_scratch_dir(), "tiny_diff_controlnet.safetensors");
    diff_job j = {.ctx = ctx};
    CHECK_EQ_INT(sd_safetensors_open(ctx, cn32_path, &j.cn), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, ckpt_path, &j.ckpt), SD_OK);
    size_t n = j.cn ? sd_safetensors_count(j.cn) : 0;
    sd_st_entry *e = calloc(n + 1, sizeof *e);
    for (size_t i = 0; e && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(j.cn, i);
        e[i] = (sd_st_entry){.name = t->name, .dtype = SD_ST_F32, .ndim = t->ndim};
        memcpy(e[i].shape, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
    }
    if (e && j.cn && j.ckpt) {
        e[n] = (sd_st_entry){.name = "difference", .dtype = SD_ST_F32, .ndim = 1, .shape = {1}};
        CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n + 1, NULL, fill_diff, &j), SD_OK);
    }
    free(e);
    sd_safetensors_close(j.cn);
    sd_safetensors_close(j.ckpt);
    return path;
}

/* The canny graph with f32 weights, its ControlNet loaded by a DiffControlNetLoader on the
 * checkpoint's model when diff is set. */
static sd_graph *diff_graph(sd_context *ctx, const char *diff)
{
    sd_graph *g = load_graph(ctx, "graphs/controlnet-canny.xml", cn32_path);
    if (!g)
        return NULL;
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "weight_dtype", "fp32"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "cnet", "weight_dtype", "fp32"), SD_OK);
    if (diff) {
        CHECK_EQ_INT(sd_graph_add_node(g, "DiffControlNetLoader", "diff", NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "MODEL", "diff", "model"), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "diff", "control_net_name", diff), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "diff", "weight_dtype", "fp32"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "diff", "CONTROL_NET", "apply", "control_net"), SD_OK);
    }
    return g;
}

/* DiffControlNetLoader adds the model's UNet weights back: the same latent as the full
 * ControlNet (to f32 rounding); ControlNetLoader refuses the difference file at validation. */
static void test_diff_controlnet(void)
{
    sd_context *ctx = new_context();
    char *diff = write_diff(ctx);
    sd_graph *g = diff_graph(ctx, NULL), *gd = diff_graph(ctx, diff);
    float *want = g ? sample(g) : NULL, *got = gd ? sample(gd) : NULL;
    double d = max_diff(want, got);
    printf("  difference ControlNet + model vs the full ControlNet: max abs %.3g\n", d);
    CHECK(want && got && d < 1e-2); /* f32 rounding of (a - b) + b; the latent peaks near 258 */
    CHECK(max_diff(got, g_base) > 1e-3);
    free(want);
    free(got);
    sd_graph_free(gd);
    sd_graph_free(g);

    g = load_graph(ctx, "graphs/controlnet-canny.xml", diff);
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "tiny_diff_controlnet.safetensors: a difference ControlNet "
                                                "(weights to add to a model's UNet); load it with DiffControlNetLoader");
    sd_result_free(res);
    sd_graph_free(g);
    free(diff);
}

int main(void)
{
    if (!setup())
        return 1;
    RUN(test_goldens);
    RUN(test_effect_and_off_switches);
    RUN(test_chain_adds_up);
    RUN(test_apply_to_uncond);
    RUN(test_fill_uncond);
    RUN(test_hint_resize);
    RUN(test_other_family);
    RUN(test_diff_controlnet);
    free(g_base);
    free(g_full);
    free(ckpt_path);
    free(cn_path);
    free(cn32_path);
    free(hint_path);
    free(xl_path);
    free(image_path);
    sd_context_free(g_ctx);
    return test_summary("test_controlnet_nodes");
}
