/* bench_controlnet: seconds per SD1 ControlNet forward with batch 2 (what one classifier-free-
 * guidance step adds to the UNet's forward, bench_unet) at given latent sizes; peak RSS. Not a
 * test: it prints figures, never fails on time. The first forward of each size (weight upload,
 * kernel builds) is reported apart; then the best and mean of --reps forwards.
 *
 *   bench_controlnet CONTROLNET [--dtype f16|f32] [--sizes 32,64] [--reps N]
 *
 * CONTROLNET: e.g. sdflow_mkckpt --preset sd15 --kind controlnet --dtype f16 /tmp/cn15.safetensors. */
#include "ml/adapters/controlnet.h"
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

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* A device tensor of values in [lo, lo + 1) from a fixed LCG. */
static sd_dtensor *pattern_tensor(sd_cl *cl, int ndim, const int64_t *shape, unsigned seed, float lo)
{
    sd_dtensor *t = NULL;
    if (sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t))
        return NULL;
    float *h = malloc(t->numel * sizeof *h);
    for (size_t i = 0; h && i < t->numel; i++) {
        seed = seed * 1664525u + 1013904223u;
        h[i] = lo + (float)((seed >> 8) & 0xffff) / 65536.0f;
    }
    if (!h || sd_dtensor_upload(t, h)) {
        sd_dtensor_free(t);
        t = NULL;
    }
    free(h);
    return t;
}

static int fail(sd_context *ctx, const char *what)
{
    fprintf(stderr, "bench_controlnet: %s: %s\n", what, sd_context_errmsg(ctx));
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_controlnet CONTROLNET [--dtype f16|f32] [--sizes 32,64] [--reps N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *sizes = "32,64";
    sd_dtype dtype = SD_DTYPE_F16;
    int reps = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
            dtype = strcmp(argv[++i], "f32") == 0 ? SD_DTYPE_F32 : SD_DTYPE_F16;
        else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
            sizes = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            return usage();
    }
    if (!path || reps < 1)
        return usage();
    sd_context *ctx = NULL;
    sd_cl *cl = NULL;
    sd_controlnet *cn = NULL;
    if (sd_context_new(&ctx))
        return 1;
    if (sd_cl_get(ctx, &cl))
        return fail(ctx, "device");
    if (sd_controlnet_open(ctx, path, dtype, &cn))
        return fail(ctx, path);
    const sd_controlnet_config *c = sd_controlnet_config_of(cn);
    int n = sd_controlnet_residual_count(cn);
    sd_dtensor **outs = calloc((size_t)n, sizeof *outs);
    printf("device: %s (%s), weights %s, batch 2, 77 context tokens, %d residuals\n", cl->device_name,
           cl->platform_name, sd_dtype_name(dtype), n);
    int64_t cshape[3] = {2, 77, c->unet.context_dim};
    sd_dtensor *context = pattern_tensor(cl, 3, cshape, 2, -0.5f);
    float t[2] = {500.0f, 500.0f};
    char list[64];
    snprintf(list, sizeof list, "%s", sizes);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int size = atoi(tok);
        int64_t xshape[4] = {2, c->unet.in_channels, size, size}, hshape[4] = {2, c->hint_channels, 8 * size, 8 * size};
        sd_dtensor *x = pattern_tensor(cl, 4, xshape, 1, -0.5f), *hint = pattern_tensor(cl, 4, hshape, 3, 0.0f);
        if (!x || !hint || !context || !outs)
            return fail(ctx, "inputs");
        double best = 1e30, sum = 0, first = 0;
        for (int r = -1; r < reps; r++) {
            double t0 = now();
            if (sd_controlnet_forward(cn, x, hint, t, context, NULL, 1.0f, outs) || sd_cl_finish(cl))
                return fail(ctx, "forward");
            double dt = now() - t0;
            for (int i = 0; i < n; i++)
                sd_dtensor_free(outs[i]);
            if (r < 0) {
                first = dt;
                continue;
            }
            best = dt < best ? dt : best;
            sum += dt;
        }
        printf("%dx%d image (latent %dx%d): first %.2f s, best %.2f s, mean %.2f s over %d; peak RSS %.0f MiB, "
               "device peak %.0f MiB\n",
               size * 8, size * 8, size, size, first, best, sum / reps, reps, peak_rss_mib(),
               (double)cl->stats.peak_bytes / 1048576.0);
        fflush(stdout);
        sd_dtensor_free(x);
        sd_dtensor_free(hint);
    }
    free(outs);
    sd_dtensor_free(context);
    sd_controlnet_unref(cn);
    sd_context_free(ctx);
    return 0;
}
