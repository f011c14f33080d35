/* fp32 flash attention on the host (runtime-opencl/attn_f32.h).
 *
 * Per (batch, head), K is packed into 32-key panels and V into rows padded to 16 columns:
 *   Kp[kb][d][j] = k[32 kb + j][d]        j < 32 keys (zero past Nk)
 *   Vp[key][c]   = v[key][c]              c < 16 ceil(D / 16) (zero past D and Nk)
 * A task step owns QR query rows for every head dim (pre-scaled by log2(e) / sqrt(D), so scores
 * are in log2 units as in kernels/attention.cl) and walks the key blocks; each block serves the
 * rows in register blocks of RB while it stays in cache (L1 for small head dims, L2 for the
 * VAE's 512): the scores of RB rows x 32 keys in 16 registers (a query
 * element broadcast times two K vectors per d), the online softmax in fp32, then
 * o = o * alpha + P V over up to 3 x 16 columns at a time. Functions that use the instructions
 * carry their own target attribute; the CPU is checked at run time. */
#include "runtime-opencl/attn_f32.h"

#if defined(SDFLOW_HAVE_DNNL) && defined(__x86_64__) && defined(_OPENMP)

#include "runtime-opencl/attn_host.h"
#include "runtime-opencl/cpu_isa.h"
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KB 32        /* keys per block */
#define RB 8         /* query rows per register block */
#define QR 32        /* query rows per task step (a multiple of RB) */
#define ROW_FLOATS (QR * SD_ATTN_MAX_D) /* a task step's q or o floats */
#define NC 3         /* 16-column vectors of o per P V pass */

typedef struct f32_state {
    float q[ROW_FLOATS], o[ROW_FLOATS]; /* row r at r * ds */
    __m512 lv[QR]; /* running sums of p, lane-wise (reduced once at the end) */
    float m[QR], alpha[QR];
    float p[QR][KB]; /* the current block's probabilities */
    const float *mrow[QR];
} f32_state;

typedef struct f32_job {
    sd_attn_host_job host; /* shapes, operands, schedule */
    size_t kp_stride, vp_stride; /* floats per (b, h) in host.kp, host.vp */
    int ds, dc, nkb;       /* ds = 16 dc: padded head dim */
    float scale;           /* log2(e) / sqrt(D) */
} f32_job;

bool sd_attn_f32_available(void)
{
    return sd_cpu_isa_get()->avx512;
}

/* Packs K and V of (b, h) (layouts above). */
SD_ATTN_TARGET static void pack_head(const void *job, int b, int h)
{
    const f32_job *j = job;
    const sd_attn_host_job *g = &j->host;
    size_t bh = (size_t)b * g->H + h;
    float *kp = (float *)g->kp + bh * j->kp_stride, *vp = (float *)g->vp + bh * j->vp_stride;
    float row[SD_ATTN_MAX_D];
    for (int key = 0; key < KB * j->nkb; key++) {
        float *kdst = kp + (size_t)(key / KB) * g->D * KB + key % KB, *vdst = vp + (size_t)key * j->ds;
        if (key < g->Nk) {
            sd_attn_host_row_f32(sd_attn_host_kv(g, g->k, b, h, key), g->kv_half, g->D, g->D, 1.0f, row);
            for (int d = 0; d < g->D; d++)
                kdst[(size_t)d * KB] = row[d];
            sd_attn_host_row_f32(sd_attn_host_kv(g, g->v, b, h, key), g->kv_half, g->D, j->ds, 1.0f, vdst);
        } else {
            for (int d = 0; d < g->D; d++)
                kdst[(size_t)d * KB] = 0.0f;
            memset(vdst, 0, (size_t)j->ds * 4);
        }
    }
}

/* Starts n rows at i0 of (b, h) (rows past Nq repeat row Nq-1). */
SD_ATTN_TARGET static void rows_start(const f32_job *j, int b, int h, int i0, int n, f32_state *st)
{
    const sd_attn_host_job *g = &j->host;
    for (int r = 0; r < n; r++) {
        int i = i0 + r < g->Nq ? i0 + r : g->Nq - 1;
        sd_attn_host_row_f32(sd_attn_host_q(g, b, h, i), false, g->D, g->D, j->scale, st->q + (size_t)r * j->ds);
        memset(st->o + (size_t)r * j->ds, 0, (size_t)j->ds * 4);
        st->m[r] = -INFINITY;
        st->lv[r] = _mm512_setzero_ps();
        st->mrow[r] = sd_attn_host_mask_row(g, b, i);
    }
}

/* Writes the n rows at i0 that lie below Nq, normalised. */
SD_ATTN_TARGET static void rows_finish(const f32_job *j, int b, int h, int i0, int n, const f32_state *st)
{
    const sd_attn_host_job *g = &j->host;
    for (int r = 0; r < n && i0 + r < g->Nq; r++) {
        float l = _mm512_reduce_add_ps(st->lv[r]), inv = l > 0.0f ? 1.0f / l : 0.0f;
        sd_attn_host_row_f32(st->o + (size_t)r * j->ds, false, g->D, g->D, inv, sd_attn_host_out(g, b, h, i0 + r));
    }
}

/* o rows [r0, r0 + RB), columns [16 c0, 16 (c0 + nc)) = o * alpha + sum over `valid` keys of P V. */
SD_ATTN_TARGET SD_ATTN_INLINE void pv_pass(const f32_job *j, f32_state *st, int r0, const float *vblk, int c0, int nc,
                                           int valid)
{
    __m512 acc[RB][NC];
    float *o = st->o + (size_t)r0 * j->ds + 16 * c0;
    SD_ATTN_UNROLL for (int r = 0; r < RB; r++)
        SD_ATTN_UNROLL for (int u = 0; u < nc; u++)
            acc[r][u] = _mm512_mul_ps(_mm512_loadu_ps(o + (size_t)r * j->ds + 16 * u),
                                      _mm512_set1_ps(st->alpha[r0 + r]));
    const float (*p)[KB] = st->p + r0;
    for (int key = 0; key < valid; key++) {
        const float *vrow = vblk + (size_t)key * j->ds + 16 * c0;
        __m512 vv[NC];
        SD_ATTN_UNROLL for (int u = 0; u < nc; u++)
            vv[u] = _mm512_loadu_ps(vrow + 16 * u);
        SD_ATTN_UNROLL for (int r = 0; r < RB; r++) {
            __m512 pr = _mm512_set1_ps(p[r][key]);
            SD_ATTN_UNROLL for (int u = 0; u < nc; u++)
                acc[r][u] = _mm512_fmadd_ps(pr, vv[u], acc[r][u]);
        }
    }
    SD_ATTN_UNROLL for (int r = 0; r < RB; r++)
        SD_ATTN_UNROLL for (int u = 0; u < nc; u++)
            _mm512_storeu_ps(o + (size_t)r * j->ds + 16 * u, acc[r][u]);
}

/* Rows [r0, r0 + RB) of the step against key block kb: scores, online softmax, P V. */
SD_ATTN_TARGET static void rows_block(const f32_job *j, f32_state *st, int r0, const float *kblk, const float *vblk,
                                      int kb)
{
    const sd_attn_host_job *g = &j->host;
    __m512 s0[RB], s1[RB];
    SD_ATTN_UNROLL for (int r = 0; r < RB; r++)
        s0[r] = s1[r] = _mm512_setzero_ps();
    const float *q = st->q + (size_t)r0 * j->ds;
    for (int d = 0; d < g->D; d++) {
        __m512 ka = _mm512_loadu_ps(kblk + (size_t)d * KB), kb2 = _mm512_loadu_ps(kblk + (size_t)d * KB + 16);
        SD_ATTN_UNROLL for (int r = 0; r < RB; r++) {
            __m512 qv = _mm512_set1_ps(q[(size_t)r * j->ds + d]);
            s0[r] = _mm512_fmadd_ps(qv, ka, s0[r]);
            s1[r] = _mm512_fmadd_ps(qv, kb2, s1[r]);
        }
    }
    __mmask16 v0, v1;
    int valid = sd_attn_host_block_valid(g->Nk, kb * KB, &v0, &v1);
    sd_attn_host_softmax8(st->mrow + r0, kb * KB, s0, s1, v0, v1, st->m + r0, st->lv + r0, st->alpha + r0, false);
    SD_ATTN_UNROLL for (int r = 0; r < RB; r++) {
        _mm512_storeu_ps(st->p[r0 + r], s0[r]);
        _mm512_storeu_ps(st->p[r0 + r] + 16, s1[r]);
    }
    int c = 0;
    for (; c + NC <= j->dc; c += NC)
        pv_pass(j, st, r0, vblk, c, NC, valid);
    if (j->dc - c == 2)
        pv_pass(j, st, r0, vblk, c, 2, valid);
    else if (j->dc - c == 1)
        pv_pass(j, st, r0, vblk, c, 1, valid);
}

/* Query rows [i0, i1) of (b, h) (a scheduled task), with the calling thread's row state. */
static void task(const void *job, int b, int h, int i0, int i1)
{
    const f32_job *j = job;
    const sd_attn_host_job *g = &j->host;
    f32_state *st = sd_attn_host_state(g);
    size_t bh = (size_t)b * g->H + h;
    const float *kp = (const float *)g->kp + bh * j->kp_stride, *vp = (const float *)g->vp + bh * j->vp_stride;
    for (int i = i0; i < i1; i += QR) {
        int n = i1 - i < QR ? (i1 - i + RB - 1) / RB * RB : QR;
        rows_start(j, b, h, i, n, st);
        for (int kb = 0; kb < j->nkb; kb++)
            for (int r0 = 0; r0 < n; r0 += RB)
                rows_block(j, st, r0, kp + (size_t)kb * g->D * KB, vp + (size_t)kb * KB * j->ds, kb);
        rows_finish(j, b, h, i, n, st);
    }
}

sd_status sd_attn_f32_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                          const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    f32_job j = {0};
    sd_attn_host_init(&j.host, q, k, heads, mb, mq);
    const sd_attn_host_job *g = &j.host;
    j.dc = (g->D + 15) / 16;
    j.ds = 16 * j.dc;
    j.nkb = (g->Nk + KB - 1) / KB;
    j.scale = (float)(1.4426950408889634 / sqrt((double)g->D));
    j.kp_stride = (size_t)j.nkb * KB * g->D;
    j.vp_stride = (size_t)j.nkb * KB * j.ds;
    size_t bh = (size_t)g->B * g->H;
    return sd_attn_host_run(cl, q, k, v, mask, out, &j.host, bh * j.kp_stride * 4, bh * j.vp_stride * 4,
                            sizeof(f32_state), &j, pack_head, task, "attention (fp32)");
}

#else

bool sd_attn_f32_available(void)
{
    return false;
}

sd_status sd_attn_f32_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                          const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    (void)q, (void)k, (void)v, (void)heads, (void)mask, (void)mb, (void)mq, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "attention (fp32 host): not available in this build");
}

#endif
