/* bench_precision: txt2img (graphs/txt2img.xml plus a SaveLatent of the sampled latent) in fp32
 * and in bf16 with the same seed, in one context: a first run of each (loading the weights, and
 * for bf16 converting them once), then a second run of each, timed warm; prints each run's wall
 * and CPU seconds, the warm ratio, and the accuracy bf16 costs: PSNR of the final latent (the model's contribution: a full
 * denoise removes all the initial noise) and of the decoded image against the fp32 run, with the
 * fp32 result's peak absolute value (latent) or 1 (image) as the peak. Not a test: it prints
 * figures, never fails on accuracy or time.
 *
 *   bench_precision MODELS_DIR CHECKPOINT [--size 512] [--steps 20] [--sampler euler]
 *
 * CHECKPOINT is a name in MODELS_DIR/checkpoints, e.g. a full-shape random checkpoint written by
 * sdflow_mkckpt --preset sd15 --dtype f16. docs/benchmarks.md records results with the command. */
#include "sdflow/sdflow.h"
#include "core/png.h"
#include "ml/formats/safetensors.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static _Noreturn void die(sd_context *ctx, const char *what)
{
    fprintf(stderr, "bench_precision: %s: %s\n", what, ctx ? sd_context_errmsg(ctx) : "out of memory");
    exit(1);
}

typedef struct run_out {
    double wall, cpu;
    float *latent, *image;
    size_t latent_n, image_n;
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

static run_out run_once(sd_context *ctx, const char *ckpt, const char *precision, const char *size,
                        const char *steps, const char *sampler)
{
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const char *save_latent = NULL;
    if (sd_context_set_precision(ctx, precision) || sd_graph_load_xml(ctx, SDFLOW_SOURCE_DIR "/graphs/txt2img.xml", &g) ||
        sd_graph_set_param(g, "checkpoint", ckpt) || sd_graph_set_param(g, "width", size) ||
        sd_graph_set_param(g, "height", size) || sd_graph_set_param(g, "steps", steps) ||
        sd_graph_set_param(g, "sampler", sampler) || sd_graph_add_node(g, "SaveLatent", "save_latent", &save_latent) ||
        sd_graph_connect(g, "sampler", "LATENT", save_latent, "samples") ||
        sd_graph_set_input(g, save_latent, "filename_prefix", "bench"))
        die(ctx, "building the graph");
    double t0 = now(), c0 = cpu_seconds();
    if (sd_graph_run(g, NULL, &res))
        die(ctx, "run");
    run_out r = {.wall = now() - t0, .cpu = cpu_seconds() - c0};
    for (size_t i = 0; i < sd_result_file_count(res); i++) {
        const char *f = sd_result_file(res, i);
        size_t len = strlen(f);
        if (len > 7 && !strcmp(f + len - 7, ".latent"))
            r.latent = read_latent(ctx, f, &r.latent_n);
        else if (len > 4 && !strcmp(f + len - 4, ".png")) {
            sd_image img;
            sd_png_limits lim = sd_png_default_limits();
            if (sd_png_read(ctx, f, &lim, &img))
                die(ctx, f);
            r.image = img.data;
            r.image_n = (size_t)img.width * img.height * (size_t)img.channels;
        }
    }
    if (!r.latent || !r.image)
        die(ctx, "the run wrote no latent or no image");
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

int main(int argc, char **argv)
{
    const char *models = NULL, *ckpt = NULL, *size = "512", *steps = "20", *sampler = "euler";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = argv[++i];
        else if (!strcmp(argv[i], "--sampler") && i + 1 < argc)
            sampler = argv[++i];
        else if (argv[i][0] != '-' && !models)
            models = argv[i];
        else if (argv[i][0] != '-' && !ckpt)
            ckpt = argv[i];
        else {
            fprintf(stderr, "usage: bench_precision MODELS_DIR CHECKPOINT [--size N] [--steps N] [--sampler NAME]\n");
            return 2;
        }
    }
    if (!ckpt) {
        fprintf(stderr, "usage: bench_precision MODELS_DIR CHECKPOINT [--size N] [--steps N] [--sampler NAME]\n");
        return 2;
    }
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
    printf("txt2img %sx%s, %s steps of %s with CFG, checkpoint %s\n", size, size, steps, sampler, ckpt);
    run_out runs[4];
    static const char *const order[4] = {"fp32", "bf16", "fp32", "bf16"};
    for (int i = 0; i < 4; i++) {
        runs[i] = run_once(ctx, ckpt, order[i], size, steps, sampler);
        printf("%s %s: %.1f s wall, %.1f s CPU\n", order[i], i < 2 ? "first" : "warm ", runs[i].wall, runs[i].cpu);
        fflush(stdout);
    }
    run_out f = runs[2], b = runs[3];
    printf("speed-up bf16/fp32 (warm): %.2fx wall, %.2fx CPU\n", f.wall / b.wall, f.cpu / b.cpu);
    if (f.latent_n != b.latent_n || f.image_n != b.image_n) {
        fprintf(stderr, "bench_precision: the runs' outputs differ in size\n");
        return 1;
    }
    printf("bf16 vs fp32: latent PSNR %.1f dB (peak %s), image PSNR %.1f dB (peak 1)\n",
           psnr(f.latent, b.latent, f.latent_n, 0), "max |fp32 latent|", psnr(f.image, b.image, f.image_n, 1.0));
    printf("(outputs in %s)\n", dir);
    for (int i = 0; i < 4; i++)
        free(runs[i].latent), free(runs[i].image);
    sd_context_free(ctx);
    return 0;
}
