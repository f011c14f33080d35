/* bench_precision: a whole txt2img run of one family's stock graph (SD1.5 graphs/txt2img.xml,
 * SDXL graphs/sdxl.xml, FLUX schnell graphs/flux-schnell.xml) in fp32 and in bf16 with the same
 * seed, in one context, and what bf16 costs in accuracy against fp32:
 *   - the final latent, peak = the fp32 latent's largest magnitude;
 *   - the model's contribution: the final latent minus the initial noisy latent (the seed's
 *     noise as the sampler scales it; a SamplerCustom over the schedule's first sigma alone adds
 *     it to the empty latent and samples nothing), peak = its largest magnitude in fp32;
 *   - the decoded image, peak 1.
 * Each precision runs once (loading the weights, for bf16 converting them), then, unless --once,
 * a second time, timed warm; prints each run's wall and CPU seconds and the process's peak RSS.
 * Not a test: it prints figures, never fails on accuracy or time.
 *
 *   bench_precision MODELS_DIR MODEL [--family sd15|sdxl|flux] [--size 512] [--steps 20]
 *                   [--sampler euler] [--seed 0] [--once]
 *                   [--t5xxl NAME] [--clip-l NAME] [--vae NAME]        (flux)
 *
 * MODEL is a checkpoint name in MODELS_DIR/checkpoints (sd15, sdxl: e.g. sdflow_mkckpt --preset
 * sd15 --dtype f16) or a transformer in MODELS_DIR/diffusion_models (flux, e.g. a GGUF; the text
 * encoders and VAE default to bench/make_bench_files.sh's names). docs/benchmarks.md records
 * results with the commands. */
#include "sdflow/sdflow.h"
#include "core/png.h"
#include "ml/formats/safetensors.h"
#include "bench/bench_common.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A family's stock graph: its model parameter, the node giving MODEL, the KSampler's scheduler
 * and how its sampler is set (a parameter, or the KSampler's input where the graph fixes it). */
typedef struct family_graph {
    const char *name, *graph, *model_param, *model_node, *scheduler, *sampler_param;
} family_graph;

static const family_graph families[] = {
    {"sd15", SDFLOW_SOURCE_DIR "/graphs/txt2img.xml", "checkpoint", "ckpt", "normal", "sampler"},
    {"sdxl", SDFLOW_SOURCE_DIR "/graphs/sdxl.xml", "checkpoint", "ckpt", "normal", "sampler"},
    {"flux", SDFLOW_SOURCE_DIR "/graphs/flux-schnell.xml", "unet", "unet", "simple", "sampler.sampler_name"},
};

typedef struct bench_opts {
    const family_graph *fam;
    const char *model, *size, *steps, *sampler, *seed, *t5xxl, *clip_l, *vae;
} bench_opts;

static _Noreturn void die(sd_context *ctx, const char *what)
{
    fprintf(stderr, "bench_precision: %s: %s\n", what, ctx ? sd_context_errmsg(ctx) : "out of memory");
    exit(1);
}

typedef struct run_out {
    double wall, cpu;
    float *latent, *init, *image;
    size_t latent_n, init_n, image_n;
} run_out;

/* Reads the whole latent_tensor of a .latent file. */
static float *read_latent(sd_context *ctx, const char *path, size_t *n)
{
    sd_safetensors *st = NULL;
    if (sd_safetensors_open(ctx, path, &st))
        die(ctx, path);
    const sd_st_tensor *t = sd_safetensors_find(st, "latent_tensor");
    float *data = t ? malloc(t->numel * sizeof *data) : NULL;
    if (!data || sd_safetensors_read_f32(ctx, st, t, data, t->numel))
        die(ctx, "latent_tensor");
    *n = t->numel;
    sd_safetensors_close(st);
    return data;
}

/* Adds the initial noisy latent's branch: BasicScheduler -> SplitSigmas at 0 (the first sigma
 * alone) -> SamplerCustom (adds the seed's noise, samples nothing) -> SaveLatent "bp_init". */
static sd_status add_init_branch(sd_graph *g, const bench_opts *o)
{
    const char *sched = NULL, *split = NULL, *sel = NULL, *init = NULL, *save = NULL;
    const char *m = o->fam->model_node;
    return sd_graph_add_node(g, "BasicScheduler", "bp_sched", &sched) ||
           sd_graph_connect(g, m, "MODEL", sched, "model") ||
           sd_graph_set_input(g, sched, "scheduler", o->fam->scheduler) ||
           sd_graph_set_input(g, sched, "steps", o->steps) ||
           sd_graph_add_node(g, "SplitSigmas", "bp_split", &split) ||
           sd_graph_connect(g, sched, "SIGMAS", split, "sigmas") || sd_graph_set_input(g, split, "step", "0") ||
           sd_graph_add_node(g, "KSamplerSelect", "bp_select", &sel) ||
           sd_graph_set_input(g, sel, "sampler_name", o->sampler) ||
           sd_graph_add_node(g, "SamplerCustom", "bp_init", &init) ||
           sd_graph_connect(g, m, "MODEL", init, "model") || sd_graph_set_input(g, init, "noise_seed", o->seed) ||
           sd_graph_set_input(g, init, "cfg", "1.0") ||
           sd_graph_connect(g, "positive", "CONDITIONING", init, "positive") ||
           sd_graph_connect(g, "negative", "CONDITIONING", init, "negative") ||
           sd_graph_connect(g, sel, "SAMPLER", init, "sampler") ||
           sd_graph_connect(g, split, "high_sigmas", init, "sigmas") ||
           sd_graph_connect(g, "latent", "LATENT", init, "latent_image") ||
           sd_graph_add_node(g, "SaveLatent", "bp_init_save", &save) ||
           sd_graph_connect(g, init, "output", save, "samples") ||
           sd_graph_set_input(g, save, "filename_prefix", "bp_init");
}

/* The family's graph with the options set, a SaveLatent "bp_final" of the sampled latent and the
 * initial latent's branch. */
static sd_graph *build_graph(sd_context *ctx, const bench_opts *o)
{
    sd_graph *g = NULL;
    const char *save = NULL;
    bool flux = !strcmp(o->fam->name, "flux");
    if (sd_graph_load_xml(ctx, o->fam->graph, &g) || sd_graph_set_param(g, o->fam->model_param, o->model) ||
        sd_graph_set_param(g, "width", o->size) || sd_graph_set_param(g, "height", o->size) ||
        sd_graph_set_param(g, "steps", o->steps) || sd_graph_set_param(g, "seed", o->seed) ||
        sd_graph_set_param(g, o->fam->sampler_param, o->sampler) ||
        (flux && (sd_graph_set_param(g, "t5xxl", o->t5xxl) || sd_graph_set_param(g, "clip_l", o->clip_l) ||
                  sd_graph_set_param(g, "vae", o->vae))) ||
        sd_graph_add_node(g, "SaveLatent", "bp_final", &save) ||
        sd_graph_connect(g, "sampler", "LATENT", save, "samples") ||
        sd_graph_set_input(g, save, "filename_prefix", "bp_final") || add_init_branch(g, o))
        die(ctx, "building the graph");
    return g;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && !strcmp(s + a - b, tail);
}

static run_out run_once(sd_context *ctx, const bench_opts *o, const char *precision)
{
    sd_result *res = NULL;
    if (sd_context_set_precision(ctx, precision))
        die(ctx, precision);
    sd_graph *g = build_graph(ctx, o);
    double t0 = now(), c0 = cpu_seconds();
    if (sd_graph_run(g, NULL, &res))
        die(ctx, "run");
    run_out r = {.wall = now() - t0, .cpu = cpu_seconds() - c0};
    for (size_t i = 0; i < sd_result_file_count(res); i++) {
        const char *f = sd_result_file(res, i), *base = strrchr(f, '/');
        base = base ? base + 1 : f;
        if (ends_with(f, ".latent") && !strncmp(base, "bp_init", 7))
            r.init = read_latent(ctx, f, &r.init_n);
        else if (ends_with(f, ".latent"))
            r.latent = read_latent(ctx, f, &r.latent_n);
        else if (ends_with(f, ".png")) {
            sd_image img;
            sd_png_limits lim = sd_png_default_limits();
            if (sd_png_read(ctx, f, &lim, &img))
                die(ctx, f);
            r.image = img.data;
            r.image_n = (size_t)img.width * img.height * (size_t)img.channels;
        }
    }
    if (!r.latent || !r.init || !r.image || r.init_n != r.latent_n)
        die(ctx, "the run wrote no latent, initial latent or image");
    sd_result_free(res);
    sd_graph_free(g);
    return r;
}

/* PSNR of got against ref with the given peak (ref's peak absolute value when peak <= 0). */
static double psnr(const float *ref, const float *got, size_t n, double peak)
{
    double mse = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        mse += d * d;
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    }
    mse /= (double)n;
    if (peak <= 0)
        peak = mx;
    return mse == 0 ? INFINITY : 10.0 * log10(peak * peak / mse);
}

/* r->latent - r->init, in place of r->latent (the model's contribution). */
static void contribution(run_out *r)
{
    for (size_t i = 0; i < r->latent_n; i++)
        r->latent[i] -= r->init[i];
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_precision MODELS_DIR MODEL [--family sd15|sdxl|flux] [--size N] [--steps N] "
                    "[--sampler NAME] [--seed N] [--once] [--t5xxl NAME] [--clip-l NAME] [--vae NAME]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *models = NULL, *family = "sd15";
    bench_opts o = {.size = "512", .steps = "20", .sampler = "euler", .seed = "0",
                    .t5xxl = "t5-v1_1-xxl-encoder-Q8_0.gguf", .clip_l = "clip_l.safetensors",
                    .vae = "ae.safetensors"};
    bool once = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **opt = !v                              ? NULL
                           : !strcmp(a, "--size")          ? &o.size
                           : !strcmp(a, "--steps")         ? &o.steps
                           : !strcmp(a, "--sampler")       ? &o.sampler
                           : !strcmp(a, "--seed")          ? &o.seed
                           : !strcmp(a, "--family")        ? &family
                           : !strcmp(a, "--t5xxl")         ? &o.t5xxl
                           : !strcmp(a, "--clip-l")        ? &o.clip_l
                           : !strcmp(a, "--vae")           ? &o.vae
                                                           : NULL;
        if (opt)
            *opt = argv[++i];
        else if (!strcmp(a, "--once"))
            once = true;
        else if (a[0] != '-' && !models)
            models = a;
        else if (a[0] != '-' && !o.model)
            o.model = a;
        else
            return usage();
    }
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (!strcmp(family, families[i].name))
            o.fam = &families[i];
    if (!o.model || !o.fam)
        return usage();
    char dir[] = "/tmp/bench_precision_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx))
        die(NULL, "context");
    sd_context_clear_models_dirs(ctx);
    if (sd_context_add_models_dir(ctx, models) || sd_context_set_dir(ctx, SD_DIR_OUTPUT, dir) ||
        sd_context_set_cache_path(ctx, NULL))
        die(ctx, "context");
    printf("%s txt2img %sx%s, %s steps of %s, seed %s, model %s\n", o.fam->name, o.size, o.size, o.steps,
           o.sampler, o.seed, o.model);
    run_out runs[4];
    static const char *const order[4] = {"fp32", "bf16", "fp32", "bf16"};
    int n = once ? 2 : 4;
    for (int i = 0; i < n; i++) {
        runs[i] = run_once(ctx, &o, order[i]);
        printf("%s %s: %.1f s wall, %.1f s CPU\n", order[i], i < 2 ? "first" : "warm ", runs[i].wall, runs[i].cpu);
        fflush(stdout);
    }
    run_out f = runs[n - 2], b = runs[n - 1];
    if (!once)
        printf("speed-up bf16/fp32 (warm): %.2fx wall, %.2fx CPU\n", f.wall / b.wall, f.cpu / b.cpu);
    if (f.latent_n != b.latent_n || f.image_n != b.image_n) {
        fprintf(stderr, "bench_precision: the runs' outputs differ in size\n");
        return 1;
    }
    double init_psnr = psnr(f.init, b.init, f.init_n, 0), lat = psnr(f.latent, b.latent, f.latent_n, 0);
    contribution(&f);
    contribution(&b);
    printf("bf16 vs fp32: final latent PSNR %.1f dB (peak max |fp32 latent|), model's contribution PSNR %.1f dB "
           "(final - initial latent, peak its max |fp32|), image PSNR %.1f dB (peak 1)\n",
           lat, psnr(f.latent, b.latent, f.latent_n, 0), psnr(f.image, b.image, f.image_n, 1.0));
    if (isfinite(init_psnr))
        printf("warning: the initial latents differ (PSNR %.1f dB)\n", init_psnr);
    printf("peak RSS %.0f MiB (outputs in %s)\n", peak_rss_mib(), dir);
    for (int i = 0; i < n; i++)
        free(runs[i].latent), free(runs[i].init), free(runs[i].image);
    sd_context_free(ctx);
    return 0;
}
