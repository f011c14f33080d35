/* Per-op wall time for the *_ops builds of the benchmarks (bench_unet_ops, bench_pipeline_ops;
 * CMakeLists.txt): the linker's --wrap sends the model code's calls of the ops below through
 * here, each bracketed by sd_cl_finish so that its time is its own (which serialises the queue:
 * the forwards run a little slower than the plain program's). At exit: a table by op and shape,
 * seconds per timed forward (bench_op_times_reset, called after the untimed first forward,
 * restarts the count). A developer tool for comparing with PyTorch's profiler by op. */
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_KEYS 1024

typedef struct op_time {
    char key[112];
    double seconds;
    int calls;
} op_time;

static op_time table[MAX_KEYS];
static int used, forwards = 1;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void bench_op_times_reset(int timed_forwards)
{
    used = 0;
    forwards = timed_forwards > 0 ? timed_forwards : 1;
}

static void add(const char *key, double seconds)
{
    for (int i = 0; i < used; i++)
        if (!strcmp(table[i].key, key)) {
            table[i].seconds += seconds;
            table[i].calls++;
            return;
        }
    if (used < MAX_KEYS) {
        snprintf(table[used].key, sizeof table[used].key, "%s", key);
        table[used].seconds = seconds;
        table[used++].calls = 1;
    }
}

static int slower_first(const void *a, const void *b)
{
    double x = ((const op_time *)a)->seconds, y = ((const op_time *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

__attribute__((destructor)) static void report(void)
{
    if (!used)
        return;
    double total = 0;
    qsort(table, (size_t)used, sizeof table[0], slower_first);
    for (int i = 0; i < used; i++)
        total += table[i].seconds;
    printf("\nop times per timed forward (%d): %.3f s in the ops below\n   seconds  calls  op\n", forwards,
           total / forwards);
    for (int i = 0; i < used; i++)
        printf("  %8.3f  %5.1f  %s\n", table[i].seconds / forwards, (double)table[i].calls / forwards, table[i].key);
}

/* __wrap_name: calls __real_name between two sd_cl_finish and adds its time under the key the
 * printf-style arguments after args make. */
#define TIMED(name, params, args, ...)                                                                          \
    sd_status __real_##name params;                                                                             \
    sd_status __wrap_##name params                                                                              \
    {                                                                                                           \
        sd_cl_finish(cl);                                                                                       \
        double t0 = now();                                                                                      \
        sd_status st = __real_##name args;                                                                      \
        sd_cl_finish(cl);                                                                                       \
        char key[112];                                                                                          \
        snprintf(key, sizeof key, __VA_ARGS__);                                                                 \
        add(key, now() - t0);                                                                                   \
        return st;                                                                                              \
    }

static long rows_of(const sd_dtensor *x)
{
    return x->ndim ? (long)(x->numel / (size_t)x->shape[x->ndim - 1]) : 0;
}

TIMED(sd_op_conv2d,
      (sd_cl * cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias, const sd_conv2d_params *p,
       sd_dtensor **out),
      (cl, x, w, bias, p, out), "conv %ldx%ld s%d [%ld, %ld, %ld, %ld] -> %ld", (long)w->shape[2],
      (long)w->shape[3], p->stride_h, (long)x->shape[0], (long)x->shape[1], (long)x->shape[2], (long)x->shape[3],
      (long)w->shape[0])
TIMED(sd_op_linear,
      (sd_cl * cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias, sd_act act, sd_dtensor **out),
      (cl, x, w, bias, act, out), "linear %ld x %ld x %ld", rows_of(x), (long)w->shape[1], (long)w->shape[0])
TIMED(sd_op_matmul,
      (sd_cl * cl, const sd_dtensor *a, bool trans_a, const sd_dtensor *b, bool trans_b, const sd_dtensor *bias,
       sd_act act, float alpha, sd_dtensor **out),
      (cl, a, trans_a, b, trans_b, bias, act, alpha, out), "matmul %ld x %ld, %ld x %ld", rows_of(a),
      (long)a->shape[a->ndim - 1], rows_of(b), (long)b->shape[b->ndim - 1])
TIMED(sd_op_attention,
      (sd_cl * cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads, const sd_dtensor *mask,
       sd_dtensor **out),
      (cl, q, k, v, heads, mask, out), "attention %ld x %ld tokens, %d heads of %ld", (long)q->shape[1],
      (long)k->shape[1], heads, (long)q->shape[2] / heads)
TIMED(sd_op_group_norm,
      (sd_cl * cl, const sd_dtensor *x, int groups, float eps, const sd_dtensor *gamma, const sd_dtensor *beta,
       bool silu, sd_dtensor **out),
      (cl, x, groups, eps, gamma, beta, silu, out), "group norm%s", silu ? " + SiLU" : "")
TIMED(sd_op_layer_norm,
      (sd_cl * cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma, const sd_dtensor *beta, sd_dtensor **out),
      (cl, x, eps, gamma, beta, out), "layer norm")
TIMED(sd_op_geglu, (sd_cl * cl, const sd_dtensor *x, sd_dtensor **out), (cl, x, out), "GEGLU")
TIMED(sd_op_binary, (sd_cl * cl, sd_binary op, const sd_dtensor *a, const sd_dtensor *b, sd_dtensor **out),
      (cl, op, a, b, out), "binary %s", op == SD_BINARY_ADD ? "add" : "multiply")
