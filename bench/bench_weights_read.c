/* bench_weights_read: the cost of reading a checkpoint's weights from the file (docs/models.md):
 * seconds to read every float tensor into host memory as weights.c does (f16 for matrices and
 * kernels, f32 for vectors), with the file's pages in the page cache (warm) and dropped from it
 * first (cold: the file closed, posix_fadvise DONTNEED, opened again), then seconds to upload every tensor to the device through
 * sd_weights (warm). Each figure is the best of N runs, as wall-clock and as CPU seconds of the
 * process (user + system; the steadier figure on a loaded machine). Not a test: it prints
 * figures.
 *
 *   bench_weights_read FILE.safetensors [--repeat N]   (e.g. a file from sdflow_mkckpt --preset sd15) */
#include "ml/loading/weights.h"
#include "runtime-opencl/runtime.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct stamp {
    double wall, cpu;
} stamp;

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static stamp now(void)
{
    return (stamp){clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_PROCESS_CPUTIME_ID)};
}

/* Seconds since t0 into *best when shorter than it (per field). */
static void keep_best(stamp t0, stamp *best)
{
    stamp t = now();
    if (t.wall - t0.wall < best->wall)
        best->wall = t.wall - t0.wall;
    if (t.cpu - t0.cpu < best->cpu)
        best->cpu = t.cpu - t0.cpu;
}

/* Drops the file's clean pages from the page cache (needs no privileges). */
static void drop_pages(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Reads every float tensor as weights.c would store it; false on error. */
static bool read_all(sd_context *ctx, const sd_safetensors *st, size_t *bytes)
{
    *bytes = 0;
    for (size_t i = 0; i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (!sd_st_dtype_is_weight(t->dtype) || t->numel == 0)
            continue;
        bool half = t->ndim >= 2;
        void *buf = malloc(t->numel * (half ? 2 : 4));
        sd_status s = !buf ? SD_ERR_NOMEM
                      : half ? sd_safetensors_read_f16(ctx, st, t, buf, t->numel)
                             : sd_safetensors_read_f32(ctx, st, t, buf, t->numel);
        free(buf);
        if (s)
            return false;
        *bytes += t->nbytes;
    }
    return true;
}

/* Uploads every float tensor through a weight set (f16 matrices); false on error. */
static bool upload_all(sd_cl *cl, const sd_safetensors *st, stamp *best)
{
    sd_weights *w;
    if (sd_weights_new(cl, st, "", SD_DTYPE_F16, &w))
        return false;
    stamp t0 = now();
    sd_status s = SD_OK;
    for (size_t i = 0; !s && i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        const sd_dtensor *d;
        if (sd_st_dtype_is_weight(t->dtype) && t->numel)
            s = sd_weights_get(w, t->name, &d);
    }
    keep_best(t0, best);
    sd_weights_free(w);
    return s == SD_OK;
}

static void report(const char *what, stamp t, size_t bytes)
{
    printf("%-28s %.3f s wall (%.2f GB/s), %.3f s CPU\n", what, t.wall, (double)bytes / t.wall / 1e9, t.cpu);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    if (!path || repeat < 1) {
        fprintf(stderr, "usage: bench_weights_read FILE.safetensors [--repeat N]\n");
        return 2;
    }
    sd_context *ctx;
    if (sd_context_new(&ctx))
        return 4;
    sd_context_set_cache_path(ctx, NULL);
    sd_safetensors *st = NULL;
    sd_cl *cl = NULL;
    if (sd_safetensors_open(ctx, path, &st) || sd_cl_get(ctx, &cl)) {
        fprintf(stderr, "bench_weights_read: %s\n", sd_context_errmsg(ctx));
        sd_safetensors_close(st);
        sd_context_free(ctx);
        return 4;
    }
    size_t bytes = 0;
    stamp warm = {1e30, 1e30}, cold = warm, up = warm;
    bool ok = read_all(ctx, st, &bytes); /* warm-up: pages into the page cache */
    for (int r = 0; ok && r < repeat; r++) {
        stamp t0 = now();
        ok = read_all(ctx, st, &bytes);
        keep_best(t0, &warm);
    }
    for (int r = 0; ok && r < repeat; r++) {
        sd_safetensors_close(st); /* nothing of the file stays mapped or cached */
        st = NULL;
        drop_pages(path);
        ok = sd_safetensors_open(ctx, path, &st) == SD_OK;
        stamp t0 = now();
        ok = ok && read_all(ctx, st, &bytes);
        keep_best(t0, &cold);
    }
    ok = ok && read_all(ctx, st, &bytes);
    for (int r = 0; ok && r < repeat; r++)
        ok = upload_all(cl, st, &up);
    if (!ok)
        fprintf(stderr, "bench_weights_read: %s\n", sd_context_errmsg(ctx));
    printf("%s: %.0f MiB of float tensors; best of %d\n", path, (double)bytes / 1048576.0, repeat);
    report("host read, warm page cache:", warm, bytes);
    report("host read, cold page cache:", cold, bytes);
    report("upload to the device, warm:", up, bytes);
    printf("device: %s\n", cl->device_name);
    sd_safetensors_close(st);
    sd_context_free(ctx);
    return ok ? 0 : 4;
}
