/* bf16 flash attention on the host (runtime-opencl/attn_bf16.h).
 *
 * Per (batch, head), K is packed into 32-key blocks of d-pairs and V into key-pair rows, both in
 * the pair layout of the AVX512-BF16 dot product (vdpbf16ps: lane i += a[2i] b[2i] + a[2i+1]
 * b[2i+1], bf16 products exact in fp32):
 *   Kp[kb][p][j]  = (k[32 kb + j][2p], k[32 kb + j][2p+1])   j < 32 keys, p < ceil(D/2)
 *   Vp[jp][c][e]  = (v[2 jp][16 c + e], v[2 jp + 1][16 c + e])  e < 16 head-dim columns
 * (zero past Nk and D). A task owns RB query rows: for each key block, the scores of RB rows x 32
 * keys sit in 16 registers (one broadcast query pair times one K vector per step), the online
 * softmax runs in fp32 in log2 units (as kernels/attention.cl), the probabilities are rounded to
 * bf16 pairs and o = o * alpha + P V accumulates in fp32 over up to 3 x 16 columns at a time.
 * Functions that use the instructions carry their own target attribute; the CPU is checked at
 * run time, so the rest of sdflow is built for the baseline x86-64. */
#include "runtime-opencl/attn_bf16.h"

#if defined(SDFLOW_HAVE_DNNL) && defined(__x86_64__) && defined(_OPENMP)

#include "runtime-opencl/dnnl.h"
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define INLINE static inline __attribute__((always_inline))
#define KB 32          /* keys per block */
#define RB 8           /* query rows per task */
#define MAX_D 512      /* sd_op_attention's limit */
#define NC 3           /* 16-column vectors of o per P V pass */
#define TASK_ROWS 64   /* query rows per scheduled task */

bool sd_attn_bf16_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
}

typedef struct attn_job {
    const float *q, *mask;
    const void *k, *v;
    bool kv_half;
    float *out;
    uint32_t *kp, *vp; /* packed per (b, h): kp_stride / vp_stride uint32 each */
    size_t kp_stride, vp_stride;
    int B, H, D, Nq, Nk, dp, dc, nkb, mb, mq;
    float scale; /* log2(e) / sqrt(D) */
} attn_job;

/* n values of a row (f32 or f16) as bf16, nearest even, into dst[0..n_pad) (zeros past n). */
TARGET static void row_bf16(const void *src, bool half, int n, int n_pad, uint16_t *dst)
{
    for (int i = 0; i < n_pad; i += 16) {
        int left = n - i;
        __mmask16 m = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __m512 x = half ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i))
                        : _mm512_maskz_loadu_ps(m, (const float *)src + i);
        __m256bh b = _mm512_cvtneps_pbh(x);
        int w = n_pad - i < 16 ? n_pad - i : 16;
        _mm256_mask_storeu_epi16(dst + i, (__mmask16)((1u << w) - 1), (__m256i)b);
    }
}

/* Packs K and V of (b, h) (layouts above). */
TARGET static void pack_head(const attn_job *j, int b, int h)
{
    size_t C = (size_t)j->H * j->D, esz = j->kv_half ? 2 : 4;
    uint32_t *kp = j->kp + ((size_t)b * j->H + h) * j->kp_stride;
    uint32_t *vp = j->vp + ((size_t)b * j->H + h) * j->vp_stride;
    uint16_t ra[MAX_D + 16], rb[MAX_D + 16];
    int dv = 16 * j->dc, nk_pad = KB * j->nkb;
    for (int key = 0; key < nk_pad; key += 2) {
        for (int t = 0; t < 2; t++) {
            int kk = key + t;
            uint16_t *row = t ? rb : ra;
            if (kk < j->Nk) {
                const char *base = (const char *)j->k + (((size_t)b * j->Nk + kk) * C + (size_t)h * j->D) * esz;
                row_bf16(base, j->kv_half, j->D, 2 * j->dp, row);
                uint32_t pairs[MAX_D / 2];
                memcpy(pairs, row, (size_t)j->dp * 4);
                uint32_t *dst = kp + (size_t)(kk / KB) * j->dp * KB + kk % KB;
                for (int p = 0; p < j->dp; p++)
                    dst[(size_t)p * KB] = pairs[p];
                base = (const char *)j->v + (((size_t)b * j->Nk + kk) * C + (size_t)h * j->D) * esz;
                row_bf16(base, j->kv_half, j->D, dv, row);
            } else {
                uint32_t *dst = kp + (size_t)(kk / KB) * j->dp * KB + kk % KB;
                for (int p = 0; p < j->dp; p++)
                    dst[(size_t)p * KB] = 0;
                memset(row, 0, (size_t)dv * 2);
            }
        }
        uint32_t *dst = vp + (size_t)(key / 2) * dv;
        for (int d = 0; d < dv; d++)
            dst[d] = ra[d] | (uint32_t)rb[d] << 16;
    }
}

/* 2^x for x <= 0 in fp32 (kernels/attention.cl's exp2_neg16): x <= -127 and -inf give 0. */
TARGET INLINE __m512 exp2_neg(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(x, n), _mm512_set1_ps(0.69314718055994531f));
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* o[r][16 c0 .. 16 (c0 + nc)) = o * alpha[r] + sum over the block's key pairs of P V. */
TARGET INLINE void pv_pass(float (*o)[MAX_D], const uint32_t (*pp)[KB / 2], const float *alpha,
                           const uint32_t *vblk, int dc, int c0, int nc, int npairs)
{
    __m512 acc[RB][NC];
    for (int r = 0; r < RB; r++)
        for (int u = 0; u < nc; u++)
            acc[r][u] = _mm512_mul_ps(_mm512_loadu_ps(&o[r][16 * (c0 + u)]), _mm512_set1_ps(alpha[r]));
    for (int jp = 0; jp < npairs; jp++) {
        const uint32_t *vrow = vblk + ((size_t)jp * dc + c0) * 16;
        __m512i vv[NC];
        for (int u = 0; u < nc; u++)
            vv[u] = _mm512_loadu_si512(vrow + 16 * u);
        for (int r = 0; r < RB; r++) {
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pp[r][jp]);
            for (int u = 0; u < nc; u++)
                acc[r][u] = _mm512_dpbf16_ps(acc[r][u], pb, (__m512bh)vv[u]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int u = 0; u < nc; u++)
            _mm512_storeu_ps(&o[r][16 * (c0 + u)], acc[r][u]);
}

/* Query rows [i0, i0 + RB) of (b, h) (rows past Nq repeat row Nq-1 and are not stored). */
TARGET static void rows_task(const attn_job *j, int b, int h, int i0)
{
    size_t C = (size_t)j->H * j->D;
    const uint32_t *kp = j->kp + ((size_t)b * j->H + h) * j->kp_stride;
    const uint32_t *vp = j->vp + ((size_t)b * j->H + h) * j->vp_stride;
    uint16_t qrow[RB][MAX_D + 16];
    uint32_t qp[RB][MAX_D / 2];
    float o[RB][MAX_D], m[RB], l[RB], alpha[RB];
    uint32_t pp[RB][KB / 2];
    const float *mrow[RB];
    for (int r = 0; r < RB; r++) {
        int i = i0 + r < j->Nq ? i0 + r : j->Nq - 1;
        row_bf16(j->q + ((size_t)b * j->Nq + i) * C + (size_t)h * j->D, false, j->D, 2 * j->dp, qrow[r]);
        memcpy(qp[r], qrow[r], (size_t)j->dp * 4);
        memset(o[r], 0, (size_t)j->dc * 64);
        m[r] = -INFINITY;
        l[r] = 0.0f;
        mrow[r] = j->mask ? j->mask + ((size_t)(j->mb == 1 ? 0 : b) * j->mq + (j->mq == 1 ? 0 : i)) * j->Nk : NULL;
    }
    const __m512 scale = _mm512_set1_ps(j->scale), log2e = _mm512_set1_ps(1.4426950408889634f);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int kb = 0; kb < j->nkb; kb++) {
        const uint32_t *kblk = kp + (size_t)kb * j->dp * KB;
        int k0 = kb * KB, valid = j->Nk - k0 < KB ? j->Nk - k0 : KB;
        __m512 s0[RB], s1[RB];
        for (int r = 0; r < RB; r++)
            s0[r] = s1[r] = _mm512_setzero_ps();
        for (int p = 0; p < j->dp; p++) {
            __m512bh ka = (__m512bh)_mm512_loadu_si512(kblk + (size_t)p * KB);
            __m512bh kb2 = (__m512bh)_mm512_loadu_si512(kblk + (size_t)p * KB + 16);
            for (int r = 0; r < RB; r++) {
                __m512bh qb = (__m512bh)_mm512_set1_epi32((int)qp[r][p]);
                s0[r] = _mm512_dpbf16_ps(s0[r], qb, ka);
                s1[r] = _mm512_dpbf16_ps(s1[r], qb, kb2);
            }
        }
        __mmask16 v0 = valid >= 16 ? 0xffff : (__mmask16)((1u << valid) - 1);
        __mmask16 v1 = valid >= 32 ? 0xffff : valid > 16 ? (__mmask16)((1u << (valid - 16)) - 1) : 0;
        for (int r = 0; r < RB; r++) {
            __m512 x0 = _mm512_mul_ps(s0[r], scale), x1 = _mm512_mul_ps(s1[r], scale);
            if (mrow[r]) {
                x0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(v0, mrow[r] + k0), log2e, x0);
                x1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(v1, mrow[r] + k0 + 16), log2e, x1);
            }
            x0 = _mm512_mask_mov_ps(ninf, v0, x0);
            x1 = _mm512_mask_mov_ps(ninf, v1, x1);
            float mnew = fmaxf(m[r], _mm512_reduce_max_ps(_mm512_max_ps(x0, x1)));
            float msafe = mnew == -INFINITY ? 0.0f : mnew;
            alpha[r] = exp2f(m[r] - msafe);
            __m512 ms = _mm512_set1_ps(msafe);
            __m512 p0 = exp2_neg(_mm512_sub_ps(x0, ms)), p1 = exp2_neg(_mm512_sub_ps(x1, ms));
            l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(_mm512_add_ps(p0, p1));
            m[r] = mnew;
            _mm512_storeu_si512(pp[r], (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
        }
        const uint32_t *vblk = vp + (size_t)kb * (KB / 2) * j->dc * 16;
        int npairs = (valid + 1) / 2, c = 0;
        for (; c + NC <= j->dc; c += NC)
            pv_pass(o, (const uint32_t (*)[KB / 2])pp, alpha, vblk, j->dc, c, NC, npairs);
        if (j->dc - c == 2)
            pv_pass(o, (const uint32_t (*)[KB / 2])pp, alpha, vblk, j->dc, c, 2, npairs);
        else if (j->dc - c == 1)
            pv_pass(o, (const uint32_t (*)[KB / 2])pp, alpha, vblk, j->dc, c, 1, npairs);
    }
    for (int r = 0; r < RB && i0 + r < j->Nq; r++) {
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        float *dst = j->out + ((size_t)b * j->Nq + i0 + r) * C + (size_t)h * j->D;
        for (int d = 0; d < j->D; d++)
            dst[d] = o[r][d] * inv;
    }
}

static void run_job(const attn_job *j)
{
    int heads = j->B * j->H;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < heads; t++)
        pack_head(j, t / j->H, t % j->H);
    int chunks = (j->Nq + TASK_ROWS - 1) / TASK_ROWS;
    long tasks = (long)heads * chunks;
#pragma omp parallel for schedule(dynamic, 1)
    for (long t = 0; t < tasks; t++) {
        int bh = (int)(t / chunks), c = (int)(t % chunks);
        int end = (c + 1) * TASK_ROWS < j->Nq ? (c + 1) * TASK_ROWS : j->Nq;
        for (int i0 = c * TASK_ROWS; i0 < end; i0 += RB)
            rows_task(j, bh / j->H, bh % j->H, i0);
    }
}

sd_status sd_attn_bf16_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                           const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    attn_job j = {.B = (int)q->shape[0], .Nq = (int)q->shape[1], .Nk = (int)k->shape[1], .H = heads,
                  .D = (int)(q->shape[2] / heads), .kv_half = k->dtype == SD_DTYPE_F16, .mb = mb, .mq = mq};
    j.dp = (j.D + 1) / 2;
    j.dc = (j.D + 15) / 16;
    j.nkb = (j.Nk + KB - 1) / KB;
    j.scale = (float)(1.4426950408889634 / sqrt((double)j.D));
    j.kp_stride = (size_t)j.nkb * KB * j.dp;
    j.vp_stride = (size_t)j.nkb * (KB / 2) * j.dc * 16;
    size_t bh = (size_t)j.B * j.H;
    sd_status st = sd_cl_finish(cl);
    if (st)
        return st;
    j.kp = malloc(bh * j.kp_stride * 4);
    j.vp = malloc(bh * j.vp_stride * 4);
    sd_dnnl_mapping mq_ = {0}, mk = {0}, mv = {0}, mm = {0}, mo = {0};
    if (!j.kp || !j.vp) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "attention (bf16): out of memory for the packed K and V");
        goto done;
    }
    size_t esz = sd_dtype_size(k->dtype);
    if ((st = sd_dnnl_map(cl, q->buf, q->numel * 4, false, &mq_)) ||
        (st = sd_dnnl_map(cl, k->buf, k->numel * esz, false, &mk)) ||
        (st = sd_dnnl_map(cl, v->buf, v->numel * esz, false, &mv)) ||
        (st = sd_dnnl_map(cl, mask ? mask->buf : NULL, mask ? mask->numel * 4 : 0, false, &mm)) ||
        (st = sd_dnnl_map(cl, out->buf, out->numel * 4, true, &mo)))
        goto done;
    j.q = mq_.ptr;
    j.k = mk.ptr;
    j.v = mv.ptr;
    j.mask = mm.ptr;
    j.out = mo.ptr;
    run_job(&j);
done:
    sd_dnnl_unmap(cl, &mq_);
    sd_dnnl_unmap(cl, &mk);
    sd_dnnl_unmap(cl, &mv);
    sd_dnnl_unmap(cl, &mm);
    sd_dnnl_unmap(cl, &mo);
    free(j.kp);
    free(j.vp);
    return st;
}

#else

bool sd_attn_bf16_supported(void)
{
    return false;
}

sd_status sd_attn_bf16_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                           const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    (void)q, (void)k, (void)v, (void)heads, (void)mask, (void)mb, (void)mq, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "attention (bf16): not available in this build");
}

#endif
