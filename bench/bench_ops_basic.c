/* bench_ops_basic: memory bandwidth (GB/s) of the basic and image ops on SD1.5-shaped tensors,
 * with a peer measured in the same run: host memcpy of the same number of bytes read + written
 * (single thread) and the device's own clEnqueueCopyBuffer. Not a test: prints figures, never
 * fails on time; each figure is the best of N runs (the machine may be shared).
 *
 *   bench_ops_basic [--reps N]
 *
 * Bytes counted: every input element read once and every output element written once (group
 * norm reads its input twice: statistics, then normalisation; that second read is counted).
 * docs/benchmarks.md records results and the exact command. */
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_image.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int reps = 5;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(sd_cl *cl, const char *what)
{
    fprintf(stderr, "bench_ops_basic: %s: %s\n", what, sd_context_errmsg(cl->ctx));
    exit(1);
}

static sd_dtensor *tensor(sd_cl *cl, int ndim, const int64_t *shape)
{
    sd_dtensor *t = NULL;
    if (sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t))
        die(cl, "allocation");
    float *h = malloc(t->numel * sizeof *h);
    for (size_t i = 0; i < t->numel; i++)
        h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    if (sd_dtensor_upload(t, h))
        die(cl, "upload");
    free(h);
    return t;
}

typedef struct op_case {
    const char *name;
    const sd_dtensor *a, *b, *g;
    int kind;
} op_case;

/* Runs one op; *out is the result (freed by the caller). */
static sd_status run_op(sd_cl *cl, const op_case *c, sd_dtensor **out)
{
    switch (c->kind) {
    case 0: return sd_op_group_norm(cl, c->a, 32, 1e-5f, c->g, c->b, false, out);
    case 1: return sd_op_group_norm(cl, c->a, 32, 1e-5f, c->g, c->b, true, out);
    case 2: return sd_op_unary(cl, SD_UNARY_SILU, c->a, out);
    case 3: return sd_op_unary(cl, SD_UNARY_GELU, c->a, out);
    case 4: return sd_op_binary(cl, SD_BINARY_ADD, c->a, c->b, out);
    case 5: return sd_op_binary(cl, SD_BINARY_ADD, c->a, c->g, out);
    case 6: return sd_op_layer_norm(cl, c->a, 1e-5f, c->g, c->b, out);
    case 7: return sd_op_softmax(cl, c->a, out);
    case 8: return sd_op_geglu(cl, c->a, out);
    case 9: return sd_op_concat(cl, c->a, c->b, 1, out);
    case 10: return sd_op_upsample_nearest2x(cl, c->a, out);
    case 11: return sd_op_resize(cl, c->a, 1024, 1024, SD_RESIZE_BICUBIC, out);
    case 12: return sd_op_resize(cl, c->a, 1024, 1024, SD_RESIZE_LANCZOS_U8, out);
    case 13: return sd_op_blur(cl, c->a, 3, (const float[]){0.05f, 0.1f, 0.2f, 0.3f, 0.2f, 0.1f, 0.05f}, out);
    default: return sd_op_canny(cl, c->a, 0.1f, 0.2f, out);
    }
}

/* Best seconds of reps runs (after one warm-up that also compiles). */
static double time_op(sd_cl *cl, const op_case *c, size_t *out_bytes)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        sd_dtensor *out = NULL;
        double t0 = now();
        if (run_op(cl, c, &out) || sd_cl_finish(cl))
            die(cl, c->name);
        double dt = now() - t0;
        if (r > 0 && dt < best)
            best = dt;
        *out_bytes = out->numel * sizeof(float);
        sd_dtensor_free(out);
    }
    return best;
}

static double memcpy_gbs(size_t bytes)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        memcpy(b, a, bytes);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    volatile char sink = b[bytes / 2];
    (void)sink;
    free(a);
    free(b);
    return 2.0 * (double)bytes / best / 1e9;
}

static double device_copy_gbs(sd_cl *cl, const sd_dtensor *src)
{
    sd_dtensor *dst = NULL;
    if (sd_dtensor_new(cl, SD_DTYPE_F32, src->ndim, src->shape, &dst))
        die(cl, "allocation");
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        if (sd_dtensor_copy(dst, src) || sd_cl_finish(cl))
            die(cl, "copy");
        double dt = now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    sd_dtensor_free(dst);
    return 2.0 * (double)(src->numel * sizeof(float)) / best / 1e9;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            continue;
        }
        bool help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
        fprintf(help ? stdout : stderr, "usage: bench_ops_basic [--reps N]\n"
                                        "GB/s of the basic and image ops against a device buffer copy.\n");
        return help ? 0 : 2;
    }
    sd_context *ctx;
    sd_cl *cl;
    if (sd_context_new(&ctx) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "bench_ops_basic: no OpenCL device\n");
        return 1;
    }
    printf("device: %s (%s), %u compute units\n", cl->device_name, cl->driver_version, cl->compute_units);
    int64_t s320[4] = {2, 320, 64, 64}, s640[4] = {2, 640, 32, 32}, s1280[4] = {2, 1280, 16, 16};
    int64_t c320 = 320, c640 = 640, c1280 = 1280, bias[4] = {1, 320, 1, 1}, ln[2] = {8192, 320};
    int64_t sm[2] = {8 * 4096, 77}, smv[2] = {4096, 4096}, gg[2] = {8192, 2560}, img[4] = {1, 512, 512, 3};
    sd_dtensor *x320 = tensor(cl, 4, s320), *y320 = tensor(cl, 4, s320), *x640 = tensor(cl, 4, s640);
    sd_dtensor *x1280 = tensor(cl, 4, s1280), *g320 = tensor(cl, 1, &c320), *g640 = tensor(cl, 1, &c640);
    sd_dtensor *g1280 = tensor(cl, 1, &c1280), *b320 = tensor(cl, 4, bias), *xln = tensor(cl, 2, ln);
    sd_dtensor *xsm = tensor(cl, 2, sm), *xsmv = tensor(cl, 2, smv), *xgg = tensor(cl, 2, gg), *ximg = tensor(cl, 4, img);
    int64_t c320v = 320;
    sd_dtensor *lg = tensor(cl, 1, &c320v);
    const op_case cases[] = {
        {"group_norm [2,320,64,64]", x320, g320, g320, 0},
        {"group_norm [2,640,32,32]", x640, g640, g640, 0},
        {"group_norm [2,1280,16,16]", x1280, g1280, g1280, 0},
        {"group_norm+silu [2,320,64,64]", x320, g320, g320, 1},
        {"silu [2,320,64,64]", x320, NULL, NULL, 2},
        {"gelu (erf) [2,320,64,64]", x320, NULL, NULL, 3},
        {"add same-shape [2,320,64,64]", x320, y320, NULL, 4},
        {"add bias [1,320,1,1]", x320, NULL, b320, 5},
        {"layer_norm [8192,320]", xln, lg, lg, 6},
        {"softmax [32768,77]", xsm, NULL, NULL, 7},
        {"softmax [4096,4096] (VAE attention)", xsmv, NULL, NULL, 7},
        {"geglu [8192,2560]", xgg, NULL, NULL, 8},
        {"concat ch [2,320+320,64,64]", x320, y320, NULL, 9},
        {"upsample2x [2,1280,16,16]", x1280, NULL, NULL, 10},
        {"resize bicubic 512->1024", ximg, NULL, NULL, 11},
        {"resize lanczos(u8) 512->1024", ximg, NULL, NULL, 12},
        {"blur r3 [1,512,512,3]", ximg, NULL, NULL, 13},
        {"canny [1,512,512,3]", ximg, NULL, NULL, 14},
    };
    /* group_norm reads its input twice: count it. */
    double copy_dev = device_copy_gbs(cl, x320);
    double copy_host = memcpy_gbs(x320->numel * sizeof(float));
    printf("peer: clEnqueueCopyBuffer %.1f GB/s, host memcpy %.1f GB/s (%zu MB read + written)\n", copy_dev,
           copy_host, 2 * x320->numel * sizeof(float) >> 20);
    printf("%-34s %10s %9s %9s %9s\n", "op", "ms", "GB/s", "/devcopy", "/memcpy");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const op_case *c = &cases[i];
        size_t out_bytes = 0;
        double s = time_op(cl, c, &out_bytes);
        size_t in_bytes = c->a->numel * sizeof(float) * (c->kind <= 1 ? 2 : 1);
        if (c->kind == 4 || c->kind == 9)
            in_bytes += c->b->numel * sizeof(float);
        double gbs = (double)(in_bytes + out_bytes) / s / 1e9;
        printf("%-34s %10.3f %9.1f %9.2f %9.2f\n", c->name, s * 1e3, gbs, gbs / copy_dev, gbs / copy_host);
    }
    sd_dtensor *all[] = {x320, y320, x640, x1280, g320, g640, g1280, b320, xln, xsm, xsmv, xgg, ximg, lg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sd_dtensor_free(all[i]);
    sd_context_free(ctx);
    return 0;
}
