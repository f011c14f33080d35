/* bench_esrgan: seconds and peak memory of an ESRGAN upscale of one random image, through the same
 * tiled path as ImageUpscaleWithModel (512-pixel tiles overlapping by 32; a 512x512 image is one
 * tile). Not a test: it prints figures, never fails on time. The network is a random
 * RealESRGAN_x4plus-shaped RRDBNet (nf 64, gc 32, 23 blocks, x4) unless options say otherwise;
 * the first run includes weight upload and kernel builds and is reported apart from --reps more.
 *
 *   bench_esrgan [--size N] [--reps N] [--dtype f32|f16] [--blocks N] [--nf N] [--gc N] [--model FILE]
 *
 * docs/benchmarks.md records results with the exact command. */
#include "ml/upscale/esrgan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

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
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* Multiply-adds x 2 of one forward on an h x w input (3x3 convs only; the elementwise work is
 * not counted). */
static double flops(const sd_esrgan_config *c, double h, double w)
{
    double px = h / c->shuffle * (w / c->shuffle), k = 2.0 * 9.0, f = k * c->in_nc * c->nf * px;
    double dense = 0;
    for (int j = 1; j <= 5; j++)
        dense += (double)(c->nf + (j - 1) * c->gc) * (j == 5 ? c->nf : c->gc);
    f += k * px * (3.0 * c->blocks * dense + (double)c->nf * c->nf);
    double up = px;
    for (int u = 0; u < c->n_up; u++) {
        up *= 4;
        f += k * up * c->nf * c->nf;
    }
    return f + k * up * c->nf * (c->nf + c->out_nc);
}

int main(int argc, char **argv)
{
    int size = 512, reps = 0;
    sd_dtype dtype = SD_DTYPE_F32;
    sd_esrgan_config cfg = {.layout = SD_ESRGAN_NEW, .in_nc = 3, .out_nc = 3, .nf = 64, .gc = 32, .blocks = 23, .n_up = 2};
    const char *model = NULL;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--dtype")) dtype = strcmp(v, "f16") ? SD_DTYPE_F32 : SD_DTYPE_F16;
        else if (!strcmp(a, "--blocks")) cfg.blocks = atoi(v);
        else if (!strcmp(a, "--nf")) cfg.nf = atoi(v);
        else if (!strcmp(a, "--gc")) cfg.gc = atoi(v);
        else if (!strcmp(a, "--model")) model = v;
        else {
            bool help = !strcmp(a, "--help") || !strcmp(a, "-h");
            fprintf(help ? stdout : stderr, "usage: bench_esrgan [--size N] [--reps N] [--dtype f32|f16] [--blocks N] "
                                            "[--nf N] [--gc N] [--model FILE]\n");
            return help ? 0 : 2;
        }
    }
    if (size < 1 || reps < 0)
        return 2;
    sd_context *ctx = NULL;
    sd_safetensors *st = NULL;
    sd_esrgan *m = NULL;
    sd_cl *cl = NULL;
    char tmp[] = "/tmp/bench_esrgan_XXXXXX";
    int rc = 1;
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    if (!model) {
        int fd = mkstemp(tmp);
        if (fd < 0)
            goto done;
        close(fd);
        if (sd_esrgan_write_random(ctx, tmp, &cfg, SD_ST_F32, 1) != SD_OK)
            goto fail;
        model = tmp;
    }
    if (sd_safetensors_open(ctx, model, &st) || sd_cl_get(ctx, &cl) || sd_esrgan_new(cl, st, dtype, &m))
        goto fail;
    const sd_esrgan_config *c = sd_esrgan_config_of(m);
    size_t n_in = (size_t)size * (size_t)size * 3, n_out = n_in * (size_t)(c->scale * c->scale);
    float *img = malloc(n_in * sizeof *img), *out = malloc(n_out * sizeof *out);
    if (!img || !out) {
        free(img);
        free(out);
        goto done;
    }
    for (size_t i = 0; i < n_in; i++)
        img[i] = (float)((i * 2654435761u) % 1000u) / 1000.0f;
    double f = flops(c, size, size);
    printf("ESRGAN %s layout, %d blocks, nf %d, gc %d, x%d, %s weights; %dx%d -> %dx%d; %.0f GFLOP per image\n",
           sd_esrgan_layout_name(c->layout), c->blocks, c->nf, c->gc, c->scale, sd_dtype_name(dtype), size, size,
           size * c->scale, size * c->scale, f * 1e-9);
    printf("device: %s\n", cl->device_name);
    double t0 = now();
    if (sd_esrgan_upscale(m, img, size, size, 512, 32, NULL, NULL, out) != SD_OK) {
        free(img);
        free(out);
        goto fail;
    }
    double first = now() - t0, best = 0;
    printf("first run (weights upload, kernel builds): %.2f s, %.1f GFLOP/s\n", first, f * 1e-9 / first);
    for (int r = 0; r < reps; r++) {
        t0 = now();
        if (sd_esrgan_upscale(m, img, size, size, 512, 32, NULL, NULL, out) != SD_OK) {
            free(img);
            free(out);
            goto fail;
        }
        double t = now() - t0;
        best = r == 0 || t < best ? t : best;
    }
    if (reps)
        printf("best of %d: %.2f s, %.1f GFLOP/s\n", reps, best, f * 1e-9 / best);
    printf("peak RSS %.0f MiB; device buffers peak %.0f MiB (pool + live)\n", peak_rss_mib(),
           (double)cl->stats.peak_bytes / (1 << 20));
    free(img);
    free(out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_esrgan: %s\n", sd_context_errmsg(ctx));
done:
    sd_esrgan_free(m);
    sd_safetensors_close(st);
    sd_context_free(ctx);
    if (model == tmp)
        unlink(tmp);
    return rc;
}
