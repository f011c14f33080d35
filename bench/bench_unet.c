/* bench_unet: seconds per UNet forward with batch 2 (one classifier-free-guidance step) on an
 * SD1, SD2 or SDXL checkpoint (SDXL: with a random ADM vector), at given latent sizes; peak RSS; fraction of a stated FP32 peak. Not a test: it
 * prints figures, never fails on time. The first forward of each size (weight upload, kernel
 * builds) is reported apart; then the best and mean of --reps forwards, and the least CPU time
 * (user + system, all threads) one of them used: on a shared machine wall time depends on the
 * load, CPU time much less; and the fewest minor page faults a forward took (fresh pages).
 *
 *   bench_unet CKPT [--dtype f16|f32] [--sizes 32,64] [--reps N] [--peak GFLOPS] [--keep-mib N]
 *                   [--pool-mib N]
 *
 * --keep-mib N: let the runtime keep up to N MiB of packed / transformed weight forms
 * (sd_cl_set_keep_limit; default 0, the runtime's default). --pool-mib N: the runtime's pool of
 * free buffers (sd_cl_set_pool_limit; default SD_CL_POOL_DEFAULT).
 * CKPT: e.g. sdflow_mkckpt --preset sd15 --dtype f16 /tmp/sd15.safetensors. docs/benchmarks.md
 * records results with the exact command. */
#include "ml/families/checkpoint.h"
#include "ml/diffusion/unet.h"
#include "bench/bench_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The *_ops build's per-op times (bench/support/op_times.c): restarted after the untimed first
 * run; absent (NULL) in the plain build. */
void bench_op_times_reset(int timed_forwards) __attribute__((weak));

/* Multiply-adds x 2 of one forward: convolutions, linear layers and attention products. */
static double conv_flops(double b, double cin, double cout, double hw, double k)
{
    return 2.0 * b * cout * hw * cin * k * k;
}

static double res_flops(double b, double cin, double cout, double hw, double temb)
{
    double f = conv_flops(b, cin, cout, hw, 3) + conv_flops(b, cout, cout, hw, 3) + 2.0 * b * temb * cout;
    return cin != cout ? f + conv_flops(b, cin, cout, hw, 1) : f;
}

static double transformer_flops(const sd_unet_config *c, int depth, double b, double ch, double hw, double tokens)
{
    double n = b * hw, per_block = 0;
    per_block += 2.0 * n * ch * ch * 4;                             /* self q, k, v, out */
    per_block += 2.0 * b * hw * hw * ch * 2;                        /* QK^T and PV */
    per_block += 2.0 * n * ch * ch * 2 + 2.0 * b * tokens * c->context_dim * ch * 2; /* cross q, out; k, v */
    per_block += 2.0 * b * hw * tokens * ch * 2;
    per_block += 2.0 * n * ch * ch * 8 + 2.0 * n * ch * 4 * ch;     /* GEGLU in (8C) and out (4C) */
    return 2.0 * 2.0 * n * ch * ch + per_block * depth; /* proj_in, proj_out */
}

static double unet_flops(const sd_unet_config *c, double b, double size, double tokens)
{
    double f = 0, hw = size * size, temb = c->time_embed_dim;
    double ch = c->model_channels, chans[64];
    int n = 0;
    f += conv_flops(b, c->in_channels, ch, hw, 3);
    chans[n++] = ch;
    for (int l = 0; l < c->n_levels; l++) {
        double out = (double)c->model_channels * c->channel_mult[l];
        for (int r = 0; r < c->num_res_blocks; r++) {
            f += res_flops(b, ch, out, hw, temb);
            ch = out;
            if (c->attention[l])
                f += transformer_flops(c, c->depth[l], b, ch, hw, tokens);
            chans[n++] = ch;
        }
        if (l + 1 < c->n_levels) {
            hw /= 4;
            f += conv_flops(b, ch, ch, hw, 3);
            chans[n++] = ch;
        }
    }
    f += 2 * res_flops(b, ch, ch, hw, temb) + transformer_flops(c, c->middle_depth, b, ch, hw, tokens);
    for (int l = c->n_levels - 1; l >= 0; l--) {
        double out = (double)c->model_channels * c->channel_mult[l];
        for (int r = 0; r <= c->num_res_blocks; r++) {
            f += res_flops(b, ch + chans[--n], out, hw, temb);
            ch = out;
            if (c->attention[l])
                f += transformer_flops(c, c->depth[l], b, ch, hw, tokens);
            if (l > 0 && r == c->num_res_blocks) {
                hw *= 4;
                f += conv_flops(b, ch, ch, hw, 3);
            }
        }
    }
    return f + conv_flops(b, ch, c->out_channels, hw, 3);
}

/* One forward; y: the ADM vector of an SDXL UNet, NULL for others. */
static sd_status forward(sd_unet *u, const sd_dtensor *x, const float *t, const sd_dtensor *context,
                         const sd_dtensor *y, sd_dtensor **out)
{
    return y ? sd_unet_forward_adm(u, x, t, context, y, NULL, out) : sd_unet_forward(u, x, t, context, NULL, out);
}

static int fail(sd_context *ctx, const char *what)
{
    fprintf(stderr, "bench_unet: %s: %s\n", what, sd_context_errmsg(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *sizes = "32,64";
    sd_dtype dtype = SD_DTYPE_F16;
    int reps = 2;
    double peak = 294.0;
    long keep_mib = 0, pool_mib = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
            dtype = strcmp(argv[++i], "f32") == 0 ? SD_DTYPE_F32 : SD_DTYPE_F16;
        else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
            sizes = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--peak") == 0 && i + 1 < argc)
            peak = atof(argv[++i]);
        else if (strcmp(argv[i], "--keep-mib") == 0 && i + 1 < argc)
            keep_mib = atol(argv[++i]);
        else if (strcmp(argv[i], "--pool-mib") == 0 && i + 1 < argc)
            pool_mib = atol(argv[++i]);
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            fprintf(stderr, "usage: bench_unet CKPT [--dtype f16|f32] [--sizes 32,64] [--reps N] [--peak GFLOPS] [--keep-mib N] [--pool-mib N]\n");
            return 2;
        }
    }
    if (!path || reps < 1) {
        fprintf(stderr, "usage: bench_unet CKPT [--dtype f16|f32] [--sizes 32,64] [--reps N] [--peak GFLOPS] [--keep-mib N] [--pool-mib N]\n");
        return 2;
    }
    sd_context *ctx = NULL;
    sd_cl *cl = NULL;
    sd_safetensors *st = NULL;
    sd_checkpoint_config cfg;
    sd_unet *u = NULL;
    if (sd_context_new(&ctx))
        return 1;
    if (sd_cl_get(ctx, &cl))
        return fail(ctx, "device");
    sd_cl_set_keep_limit(cl, keep_mib > 0 ? (size_t)keep_mib << 20 : 0);
    if (pool_mib >= 0)
        sd_cl_set_pool_limit(cl, (size_t)pool_mib << 20);
    if (sd_safetensors_open(ctx, path, &st) || sd_checkpoint_inspect(ctx, st, &cfg))
        return fail(ctx, path);
    if (sd_unet_new(cl, st, cfg.unet_prefix, &cfg.unet, dtype, &u))
        return fail(ctx, "unet");
    printf("device: %s (%s), weights %s, batch 2, 77 context tokens\n", cl->device_name, cl->platform_name,
           sd_dtype_name(dtype));
    int64_t cshape[3] = {2, 77, cfg.unet.context_dim};
    sd_dtensor *context = random_tensor(cl, 3, cshape, 2), *y = NULL;
    if (cfg.unet.adm_channels > 0 && !(y = random_tensor(cl, 2, (int64_t[]){2, cfg.unet.adm_channels}, 3)))
        return fail(ctx, "inputs");
    float t[2] = {500.0f, 500.0f};
    char list[64];
    snprintf(list, sizeof list, "%s", sizes);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int size = atoi(tok);
        int64_t xshape[4] = {2, cfg.unet.in_channels, size, size};
        sd_dtensor *x = random_tensor(cl, 4, xshape, 1), *out = NULL;
        if (!x || !context)
            return fail(ctx, "inputs");
        double best = 1e30, sum = 0, cpu_best = 1e30, t0 = now();
        long faults_least = -1;
        if (forward(u, x, t, context, y, &out) || sd_cl_finish(cl))
            return fail(ctx, "forward");
        double first = now() - t0;
        sd_dtensor_free(out);
        if (bench_op_times_reset)
            bench_op_times_reset(reps);
        for (int r = 0; r < reps; r++) {
            t0 = now();
            double c0 = cpu_seconds();
            long f0 = minor_faults();
            if (forward(u, x, t, context, y, &out) || sd_cl_finish(cl))
                return fail(ctx, "forward");
            double dt = now() - t0, cpu = cpu_seconds() - c0;
            long faults = minor_faults() - f0;
            faults_least = faults_least < 0 || faults < faults_least ? faults : faults_least;
            cpu_best = cpu < cpu_best ? cpu : cpu_best;
            sd_dtensor_free(out);
            best = dt < best ? dt : best;
            sum += dt;
        }
        double gflop = unet_flops(&cfg.unet, 2, size, 77) * 1e-9;
        printf("%dx%d image (latent %dx%d): first %.2f s, best %.2f s, mean %.2f s over %d, least CPU time "
               "%.2f s, %ld page faults; %.1f GFLOP, %.1f GFLOP/s = %.1f%% of %.0f GFLOP/s; peak RSS %.0f MiB, "
               "device peak %.0f MiB; kept weight forms %.0f MiB (%d built)\n",
               size * 8, size * 8, size, size, first, best, sum / reps, reps, cpu_best, faults_least, gflop,
               gflop / best,
               100.0 * gflop / best / peak, peak, peak_rss_mib(), (double)cl->stats.peak_bytes / 1048576.0,
               (double)cl->stats.derived_bytes / 1048576.0, cl->stats.derived_builds);
        fflush(stdout);
        sd_dtensor_free(x);
    }
    sd_dtensor_free(context);
    sd_dtensor_free(y);
    sd_unet_free(u);
    sd_safetensors_close(st);
    sd_context_free(ctx);
    return 0;
}
