/* bench_pipeline: VAE decode time on a checkpoint (through the model store the nodes use). Not a
 * test: it prints figures, never fails on time. The first decode (weight upload, kernel builds)
 * is reported apart; then the best and mean of --reps decodes, with the process's CPU time (which
 * other load on a shared machine does not inflate); peak RSS at the end. The whole
 * txt2img run's peak RSS is measured on the sdflow command (docs/benchmarks.md).
 *
 *   bench_pipeline CKPT [--size 512] [--reps N] [--dtype f16|f32]
 *
 * CKPT: e.g. sdflow_mkckpt --preset sd15 --dtype f16 /tmp/sd15.safetensors. */
#include "core/rng.h"
#include "ml/loading/model_store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* The *_ops build's per-op times (bench/support/op_times.c): restarted after the untimed first
 * run; absent (NULL) in the plain build. */
void bench_op_times_reset(int timed_forwards) __attribute__((weak));

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all of PoCL's threads): independent of other load. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* One decode of z; returns wall seconds (CPU seconds in *cpu) or a negative value on failure. */
static double decode_once(sd_context *ctx, sd_vae *vae, const sd_dtensor *z, double *cpu)
{
    sd_dtensor *out = NULL;
    double t0 = now(), c0 = cpu_now();
    sd_status st = sd_vae_decode(vae, z, &out);
    float px;
    if (!st)
        st = sd_cl_read(out->cl, out->buf, 0, sizeof px, &px); /* waits for the queue */
    double t = now() - t0;
    *cpu = cpu_now() - c0;
    sd_dtensor_free(out);
    if (st) {
        fprintf(stderr, "bench_pipeline: %s\n", sd_context_errmsg(ctx));
        return -1.0;
    }
    return t;
}

int main(int argc, char **argv)
{
    const char *ckpt = NULL;
    int size = 512, reps = 2;
    sd_dtype dtype = SD_DTYPE_F16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtype = strcmp(argv[++i], "f32") ? SD_DTYPE_F16 : SD_DTYPE_F32;
        else if (argv[i][0] != '-' && !ckpt)
            ckpt = argv[i];
        else {
            fprintf(stderr, "usage: bench_pipeline CKPT [--size 512] [--reps N] [--dtype f16|f32]\n");
            return 2;
        }
    }
    if (!ckpt || size < 8 || size % 8 || reps < 1) {
        fprintf(stderr, "usage: bench_pipeline CKPT [--size 512] [--reps N] [--dtype f16|f32]\n");
        return 2;
    }
    sd_context *ctx = NULL;
    sd_loaded *l = NULL;
    sd_vae *vae = NULL;
    sd_cl *cl = NULL;
    sd_dtensor *z = NULL;
    int rc = 1;
    if (sd_context_new(&ctx))
        return 1;
    int64_t shape[4] = {1, 4, size / 8, size / 8};
    size_t n = (size_t)(4 * (size / 8) * (size / 8));
    float *host = malloc(n * sizeof *host);
    if (!host)
        goto done;
    sd_rng rng;
    sd_rng_seed(&rng, 1);
    sd_rng_randn(&rng, host, n);
    for (size_t i = 0; i < n; i++)
        host[i] /= 0.18215f; /* a latent of the spread the KSampler produces */
    if (sd_model_store_open(ctx, ckpt, SD_MODEL_FILE_CHECKPOINT, dtype, &l) || sd_loaded_vae(l, &vae) ||
        sd_cl_get(ctx, &cl) || sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &z) || sd_dtensor_upload(z, host)) {
        fprintf(stderr, "bench_pipeline: %s\n", sd_context_errmsg(ctx));
        goto done;
    }
    printf("device: %s\nVAE decode %dx%d -> %dx%d, %s weights\n", cl->device_name, size / 8, size / 8, size,
           size, sd_dtype_name(dtype));
    double cpu, best_cpu = 1e30;
    double first = decode_once(ctx, vae, z, &cpu);
    if (first < 0)
        goto done;
    printf("first decode (weight upload, kernel builds): %.2f s wall, %.2f s CPU\n", first, cpu);
    if (bench_op_times_reset)
        bench_op_times_reset(reps);
    double best = 1e30, sum = 0;
    for (int r = 0; r < reps; r++) {
        double t = decode_once(ctx, vae, z, &cpu);
        if (t < 0)
            goto done;
        best = t < best ? t : best;
        best_cpu = cpu < best_cpu ? cpu : best_cpu;
        sum += t;
    }
    printf("decode: best %.2f s wall, mean %.2f s over %d; least CPU time %.2f s\n", best, sum / reps, reps,
           best_cpu);
    printf("peak RSS: %.0f MiB\n", peak_rss_mib());
    rc = 0;
done:
    sd_dtensor_free(z);
    sd_loaded_unref(l);
    free(host);
    sd_context_free(ctx);
    return rc;
}
