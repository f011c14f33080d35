/* bench_flux: seconds per FLUX transformer forward (one sampling step of schnell, or of dev at
 * cfg 1: batch 1) on a transformer file (GGUF, e.g. sdflow_mkckpt --preset flux-schnell --dtype
 * q4_0, or safetensors in BFL's or ComfyUI's layout) at a given image size, with random inputs;
 * peak RSS. Not a test: it prints figures, never fails on time.
 *
 *   bench_flux FILE [--size 512] [--tokens 256] [--reps N] [--dtype f16|f32]
 *
 * A forward of a 16x16 image first uploads the weights (block-quantised matrices stay blocks on
 * the device) and builds the kernels, timed apart; then one forward and --reps more (default
 * 0), with the least CPU time (user + system, all threads). --tokens: the T5 context length
 * (stable-diffusion.cpp and ComfyUI pad schnell's prompt to 256). docs/benchmarks.md has the
 * commands. */
#include "ml/diffusion/flux.h"
#include "ml/formats/gguf.h"
#include "bench/bench_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Multiply-adds x 2 of one forward over n image and m text tokens (linear layers and attention
 * products; the embedders are negligible). */
static double flux_flops(const sd_flux_config *c, double n, double m)
{
    double h = c->hidden, f = c->mlp_hidden, all = n + m, tok[2] = {n, m};
    double dbl = 0;
    for (int s = 0; s < 2; s++) /* per stream: qkv, proj, MLP (the modulation runs on one vector) */
        dbl += 2.0 * tok[s] * h * (3 * h + h + 2 * f);
    dbl += 2.0 * 2.0 * all * all * h; /* joint attention: QK^T and PV */
    double sgl = 2.0 * all * h * (3 * h + f) + 2.0 * all * (h + f) * h + 4.0 * all * all * h;
    return c->depth * dbl + c->depth_single * sgl;
}

static int fail(sd_context *ctx, const char *what)
{
    fprintf(stderr, "bench_flux: %s: %s\n", what, sd_context_errmsg(ctx));
    return 1;
}

/* Opens path as safetensors or (by its extension) GGUF; *g stays NULL for safetensors. */
static sd_status open_file(sd_context *ctx, const char *path, sd_gguf **g, sd_safetensors **st)
{
    size_t len = strlen(path);
    if (len > 5 && strcmp(path + len - 5, ".gguf") == 0) {
        sd_status s = sd_gguf_open(ctx, path, g);
        return s ? s : sd_gguf_tensor_view(ctx, *g, st);
    }
    return sd_safetensors_open(ctx, path, st);
}

/* One forward of a 16x16 image (one patch) with one text token: uploads every weight the way
 * the forward keeps it (block-quantised matrices as blocks) and builds the kernels. */
static sd_status warm_up(sd_cl *cl, sd_flux *f)
{
    const sd_flux_config *c = sd_flux_config_of(f);
    sd_dtensor *x = random_tensor(cl, 4, (int64_t[]){1, c->in_channels, 2, 2}, 4);
    sd_dtensor *context = random_tensor(cl, 3, (int64_t[]){1, 1, c->context_dim}, 5);
    sd_dtensor *y = random_tensor(cl, 2, (int64_t[]){1, c->vec_dim}, 6), *out = NULL;
    float t[1] = {1.0f}, guidance[1] = {3.5f};
    sd_status s = x && context && y ? sd_flux_forward(f, x, t, context, y, guidance, &out) : SD_ERR_NOMEM;
    if (!s)
        s = sd_cl_finish(cl);
    sd_dtensor_free(out);
    sd_dtensor_free(x);
    sd_dtensor_free(context);
    sd_dtensor_free(y);
    return s;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int size = 512, tokens = 256, reps = 0;
    sd_dtype dtype = SD_DTYPE_F16;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
            dtype = strcmp(argv[++i], "f32") == 0 ? SD_DTYPE_F32 : SD_DTYPE_F16;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    if (!path || size < 16 || size % 16 || tokens < 1 || reps < 0) {
        fprintf(stderr, "usage: bench_flux FILE [--size 512 (a multiple of 16)] [--tokens 256] [--reps N] "
                        "[--dtype f16|f32]\n");
        return 2;
    }
    sd_context *ctx = NULL;
    sd_cl *cl = NULL;
    sd_gguf *g = NULL;
    sd_safetensors *st = NULL;
    sd_flux *f = NULL;
    if (sd_context_new(&ctx))
        return 1;
    if (sd_cl_get(ctx, &cl))
        return fail(ctx, "device");
    if (open_file(ctx, path, &g, &st))
        return fail(ctx, path);
    const char *prefix = sd_flux_present(st, "") ? "" : "model.diffusion_model.";
    if (sd_flux_new(cl, st, prefix, dtype, &f))
        return fail(ctx, "transformer");
    const sd_flux_config *c = sd_flux_config_of(f);
    double t0 = now(), c0 = cpu_seconds();
    if (warm_up(cl, f))
        return fail(ctx, "warm-up forward");
    printf("device: %s (%s); %s; weights uploaded and kernels built (a 16x16 forward) in %.2f s (%.2f CPU s), "
           "device memory %.0f MiB, peak RSS %.0f MiB\n",
           cl->device_name,
           cl->platform_name, path, now() - t0, cpu_seconds() - c0, (double)cl->stats.peak_bytes / 1048576.0,
           peak_rss_mib());
    int lat = size / 8;
    sd_dtensor *x = random_tensor(cl, 4, (int64_t[]){1, c->in_channels, lat, lat}, 1);
    sd_dtensor *context = random_tensor(cl, 3, (int64_t[]){1, tokens, c->context_dim}, 2);
    sd_dtensor *y = random_tensor(cl, 2, (int64_t[]){1, c->vec_dim}, 3), *out = NULL;
    if (!x || !context || !y)
        return fail(ctx, "inputs");
    float t[1] = {1.0f}, guidance[1] = {3.5f};
    double best = 1e30, cpu_best = 1e30;
    for (int r = 0; r <= reps; r++) {
        t0 = now();
        c0 = cpu_seconds();
        if (sd_flux_forward(f, x, t, context, y, guidance, &out) || sd_cl_finish(cl))
            return fail(ctx, "forward");
        double dt = now() - t0, cpu = cpu_seconds() - c0;
        sd_dtensor_free(out);
        printf("forward %d: %.2f s (%.2f CPU s)\n", r + 1, dt, cpu);
        fflush(stdout);
        best = dt < best ? dt : best;
        cpu_best = cpu < cpu_best ? cpu : cpu_best;
    }
    int n = (lat / 2) * (lat / 2);
    double gflop = flux_flops(c, n, tokens) * 1e-9;
    printf("%dx%d image, %d + %d tokens, batch 1: best %.2f s over %d forwards, least CPU %.2f s; %.0f GFLOP, "
           "%.1f GFLOP/s; peak RSS %.0f MiB, device peak %.0f MiB\n",
           size, size, n, tokens, best, reps + 1, cpu_best, gflop, gflop / best, peak_rss_mib(),
           (double)cl->stats.peak_bytes / 1048576.0);
    sd_dtensor_free(x);
    sd_dtensor_free(context);
    sd_dtensor_free(y);
    sd_flux_free(f);
    sd_safetensors_close(st);
    sd_gguf_close(g);
    sd_context_free(ctx);
    return 0;
}
