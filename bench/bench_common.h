/* Helpers shared by the benchmark programs (header-only, as each program is built
 * from its one source file): wall and CPU clocks, peak RSS, seeded random device tensors. */
#ifndef SD_BENCH_COMMON_H
#define SD_BENCH_COMMON_H

#include "runtime-opencl/tensor.h"
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds (user + system, all threads) used by the process so far. */
static inline double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

/* Minor page faults so far (fresh pages the kernel zeroed and mapped for this process). */
static inline long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static inline double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* A new f32 device tensor of uniform values in [-1, 1) from a linear congruential sequence. */
static inline sd_dtensor *random_tensor(sd_cl *cl, int ndim, const int64_t *shape, unsigned seed)
{
    sd_dtensor *t = NULL;
    if (sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t))
        return NULL;
    float *h = malloc(t->numel * sizeof *h);
    for (size_t i = 0; h && i < t->numel; i++) {
        seed = seed * 1664525u + 1013904223u;
        h[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    if (!h || sd_dtensor_upload(t, h)) {
        sd_dtensor_free(t);
        t = NULL;
    }
    free(h);
    return t;
}

#endif
