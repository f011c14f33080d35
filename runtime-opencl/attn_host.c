/* The host attention loops' shared parts (runtime-opencl/attn_host.h). */
#if defined(SDFLOW_HAVE_DNNL) && defined(__x86_64__) && defined(_OPENMP)

#include "runtime-opencl/attn_host.h"
#include "runtime-opencl/gemm.h"
#include <omp.h>
#include <stdlib.h>

void sd_attn_host_init(sd_attn_host_job *g, const sd_dtensor *q, const sd_dtensor *k, int heads, int mb, int mq)
{
    *g = (sd_attn_host_job){.B = (int)q->shape[0], .Nq = (int)q->shape[1], .Nk = (int)k->shape[1], .H = heads,
                            .D = (int)(q->shape[2] / heads), .kv_half = k->dtype == SD_DTYPE_F16, .mb = mb, .mq = mq};
}

/* The operands and the packed K and V mapped for the host. */
typedef struct host_io {
    sd_dnnl_mapping q, k, v, mask, out, kp, vp;
    sd_scratch kps, vps;
} host_io;

static sd_status io_map(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                        const sd_dtensor *mask, sd_dtensor *out, size_t kp_bytes, size_t vp_bytes, host_io *io)
{
    size_t esz = sd_dtype_size(k->dtype);
    sd_status st;
    if ((st = sd_scratch_get(cl, kp_bytes, 1, "attention packed K", &io->kps)) ||
        (st = sd_scratch_get(cl, vp_bytes, 1, "attention packed V", &io->vps)) ||
        (st = sd_dnnl_map(cl, io->kps.buf, kp_bytes, true, &io->kp)) ||
        (st = sd_dnnl_map(cl, io->vps.buf, vp_bytes, true, &io->vp)) ||
        (st = sd_dnnl_map(cl, q->buf, q->numel * 4, false, &io->q)) ||
        (st = sd_dnnl_map(cl, k->buf, k->numel * esz, false, &io->k)) ||
        (st = sd_dnnl_map(cl, v->buf, v->numel * esz, false, &io->v)) ||
        (st = sd_dnnl_map(cl, mask ? mask->buf : NULL, mask ? mask->numel * 4 : 0, false, &io->mask)))
        return st;
    return sd_dnnl_map(cl, out->buf, out->numel * 4, true, &io->out);
}

static void io_unmap(sd_cl *cl, host_io *io)
{
    sd_dnnl_unmap(cl, &io->q);
    sd_dnnl_unmap(cl, &io->k);
    sd_dnnl_unmap(cl, &io->v);
    sd_dnnl_unmap(cl, &io->mask);
    sd_dnnl_unmap(cl, &io->out);
    sd_dnnl_unmap(cl, &io->kp);
    sd_dnnl_unmap(cl, &io->vp);
    sd_scratch_release(cl, &io->kps);
    sd_scratch_release(cl, &io->vps);
}

#define TASK_ROWS 64                     /* query rows per scheduled unit */
#define ALL_HEADS_BYTES ((size_t)1 << 20) /* a batch's packed K and V up to this: all heads per unit */

static void schedule(const sd_attn_host_job *g, const void *job, void (*pack)(const void *job, int b, int h),
                     void (*task)(const void *job, int b, int h, int i0, int i1), size_t packed_bytes)
{
    bool all_heads = packed_bytes / (size_t)g->B <= ALL_HEADS_BYTES;
    int heads = g->B * g->H;
    int chunks = (g->Nq + TASK_ROWS - 1) / TASK_ROWS, per_task = all_heads ? g->H : 1;
    long tasks = (long)heads / per_task * chunks;
    /* one parallel region: a busy machine delays each wake-up of the threads */
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < heads; t++)
            pack(job, t / g->H, t % g->H);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            int bh = (int)(t / chunks) * per_task, c = (int)(t % chunks);
            int end = (c + 1) * TASK_ROWS < g->Nq ? (c + 1) * TASK_ROWS : g->Nq;
            for (int u = 0; u < per_task; u++)
                task(job, (bh + u) / g->H, (bh + u) % g->H, c * TASK_ROWS, end);
        }
    }
}

sd_status sd_attn_host_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                           const sd_dtensor *mask, sd_dtensor *out, sd_attn_host_job *g, size_t kp_bytes,
                           size_t vp_bytes, size_t state_size, const void *job,
                           void (*pack)(const void *job, int b, int h),
                           void (*task)(const void *job, int b, int h, int i0, int i1), const char *what)
{
    host_io io = {0};
    sd_status st = sd_cl_finish(cl);
    if (st)
        return st;
    g->state_size = state_size;
    g->states = aligned_alloc(64, (size_t)omp_get_max_threads() * state_size);
    if (!g->states)
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "%s: out of memory for the row states", what);
    else if (!(st = io_map(cl, q, k, v, mask, out, kp_bytes, vp_bytes, &io))) {
        g->q = io.q.ptr;
        g->k = io.k.ptr;
        g->v = io.v.ptr;
        g->mask = io.mask.ptr;
        g->out = io.out.ptr;
        g->kp = io.kp.ptr;
        g->vp = io.vp.ptr;
        schedule(g, job, pack, task, kp_bytes + vp_bytes);
    }
    io_unmap(cl, &io);
    free(g->states);
    g->states = NULL;
    return st;
}

void *sd_attn_host_state(const sd_attn_host_job *g)
{
    return g->states + (size_t)omp_get_thread_num() * g->state_size;
}

#else
typedef int sd_attn_host_unused; /* ISO C: a translation unit is not empty */
#endif
