/* What the host attention loops (runtime-opencl/attn_f32.c, attn_bf16.c) share: the operands
 * mapped for the host, their row addressing, the online-softmax update of a 32-key block and
 * the schedule over OpenMP's threads. Internal to those two files; only with oneDNN on x86-64
 * with OpenMP. Layouts: q/out [B, Nq, H*D], k/v [B, Nk, H*D] (f32, or f16 K and V), mask NULL or
 * [mb][mq][Nk] with mb 1 or B, mq 1 or Nq. */
#ifndef SD_RUNTIME_OPENCL_ATTN_HOST_H
#define SD_RUNTIME_OPENCL_ATTN_HOST_H

#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/ops.h"
#include <immintrin.h>
#include <math.h>

#define SD_ATTN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SD_ATTN_INLINE static inline __attribute__((always_inline))
#define SD_ATTN_UNROLL _Pragma("GCC unroll 8") /* register blocks: accumulators stay in registers */
#define SD_ATTN_MAX_D 512 /* sd_op_attention's limit */

typedef struct sd_attn_host_job {
    const float *q, *mask;
    const void *k, *v;
    float *out;
    void *kp, *vp;     /* the packed K and V (the loop's layouts) */
    char *states;      /* per thread, state_size bytes each */
    size_t state_size;
    bool kv_half;
    int B, H, D, Nq, Nk, mb, mq;
} sd_attn_host_job;

/* The shapes of sd_op_attention's checked operands (the rest is set by sd_attn_host_run). */
void sd_attn_host_init(sd_attn_host_job *g, const sd_dtensor *q, const sd_dtensor *k, int heads, int mb, int mq);

/* Runs a host loop: waits for the queue, maps the operands into g, takes pooled scratch buffers
 * of kp_bytes and vp_bytes for the packed K and V (g->kp, g->vp; pooled, so reused across calls
 * without fresh pages) and one row state of state_size bytes per thread (g->states, 64-byte
 * aligned; state_size a multiple of 64), runs pack(job, b, h) for every head, then
 * task(job, b, h, i0, i1) over query rows in chunks on OpenMP's threads (row state:
 * sd_attn_host_state). Where the packed K and V of all heads of a batch fit in half a core's L2
 * (1 MiB: few keys, as in cross-attention) a scheduled unit runs every head of its rows, whose q
 * and out cache lines the heads share; else one head, whose packed K and V stay in cache. `what`
 * names the loop in errors. */
sd_status sd_attn_host_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                           const sd_dtensor *mask, sd_dtensor *out, sd_attn_host_job *g, size_t kp_bytes,
                           size_t vp_bytes, size_t state_size, const void *job,
                           void (*pack)(const void *job, int b, int h),
                           void (*task)(const void *job, int b, int h, int i0, int i1), const char *what);

/* The calling thread's row state (inside a task). */
void *sd_attn_host_state(const sd_attn_host_job *g);

/* Row `key` of K or V (base g->k or g->v) of (b, h); row i of q or out; the mask row of (b, i). */
static inline const void *sd_attn_host_kv(const sd_attn_host_job *g, const void *base, int b, int h, int key)
{
    size_t at = ((size_t)b * g->Nk + key) * g->H * g->D + (size_t)h * g->D;
    return (const char *)base + at * (g->kv_half ? 2 : 4);
}

static inline const float *sd_attn_host_q(const sd_attn_host_job *g, int b, int h, int i)
{
    return g->q + ((size_t)b * g->Nq + i) * g->H * g->D + (size_t)h * g->D;
}

static inline float *sd_attn_host_out(const sd_attn_host_job *g, int b, int h, int i)
{
    return g->out + ((size_t)b * g->Nq + i) * g->H * g->D + (size_t)h * g->D;
}

static inline const float *sd_attn_host_mask_row(const sd_attn_host_job *g, int b, int i)
{
    return g->mask ? g->mask + ((size_t)(g->mb == 1 ? 0 : b) * g->mq + (g->mq == 1 ? 0 : i)) * g->Nk : NULL;
}

/* The valid key count of the 32-key block at k0 and its lane masks (keys 0-15, 16-31). */
static inline int sd_attn_host_block_valid(int Nk, int k0, __mmask16 *v0, __mmask16 *v1)
{
    int valid = Nk - k0 < 32 ? Nk - k0 : 32;
    *v0 = valid >= 16 ? 0xffff : (__mmask16)((1u << valid) - 1);
    *v1 = valid >= 32 ? 0xffff : valid > 16 ? (__mmask16)((1u << (valid - 16)) - 1) : 0;
    return valid;
}

/* 2^x for x <= 0 in fp32 (kernels/attention.cl's exp2_neg16): x <= -127 and -inf give 0. */
SD_ATTN_TARGET SD_ATTN_INLINE __m512 sd_attn_exp2_neg(__m512 x)
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

/* 2^x for x <= 0 where bf16 rounding follows (the bf16 loop's probabilities): a degree-5
 * Taylor polynomial of 2^f on [-0.5, 0.5] (relative error < 3e-6, far below bf16's 2^-9) times
 * 2^round(x) from the exponent bits; x <= -127, including -inf, gives exactly 0 (no denormal
 * results, which cost a microcode assist each). */
SD_ATTN_TARGET SD_ATTN_INLINE __m512 sd_attn_exp2_neg_fast(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.3333558146428443e-3f); /* ln(2)^k / k!, k = 5 .. 0 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* n values of a row (f32 or f16) as f32 into dst[0..n_pad) (zeros past n), times scale. */
SD_ATTN_TARGET SD_ATTN_INLINE void sd_attn_host_row_f32(const void *src, bool half, int n, int n_pad, float scale,
                                                        float *dst)
{
    __m512 s = _mm512_set1_ps(scale);
    for (int i = 0; i < n_pad; i += 16) {
        int left = n - i;
        __mmask16 m = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __m512 x = half ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)src + i))
                        : _mm512_maskz_loadu_ps(m, (const float *)src + i);
        int w = n_pad - i < 16 ? n_pad - i : 16;
        _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << w) - 1), _mm512_mul_ps(x, s));
    }
}

/* Online softmax of the 8 rows of a register block over the 32-key block at k0, from their
 * scores s0[r] (keys 0-15) and s1[r] (16-31) in log2 units (valid lanes: v0, v1; mrow[r] NULL or
 * the row's additive mask): updates the running max m[r] and the lane-wise running sum lv[r],
 * turns s0 and s1 into the probabilities and sets alpha[r] = 2^(m_old - m_new), the factor for
 * the output rows (all eight in one vector). 2^x: sd_attn_exp2_neg_fast with `fast` (a constant
 * after inlining), else sd_attn_exp2_neg. */
SD_ATTN_TARGET SD_ATTN_INLINE void sd_attn_host_softmax8(const float *const *mrow, int k0, __m512 *s0, __m512 *s1,
                                                         __mmask16 v0, __mmask16 v1, float *m, __m512 *lv,
                                                         float *alpha, bool fast)
{
    __m512 log2e = _mm512_set1_ps(1.4426950408889634f), ninf = _mm512_set1_ps(-INFINITY);
    float dm[16] = {0}, ms[8];
    SD_ATTN_UNROLL for (int r = 0; r < 8; r++) {
        if (mrow[r]) {
            s0[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(v0, mrow[r] + k0), log2e, s0[r]);
            s1[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(v1, mrow[r] + k0 + 16), log2e, s1[r]);
        }
        if ((v1 & 0x8000) == 0) { /* a partial block */
            s0[r] = _mm512_mask_mov_ps(ninf, v0, s0[r]);
            s1[r] = _mm512_mask_mov_ps(ninf, v1, s1[r]);
        }
        float mnew = fmaxf(m[r], _mm512_reduce_max_ps(_mm512_max_ps(s0[r], s1[r])));
        ms[r] = mnew == -INFINITY ? 0.0f : mnew;
        dm[r] = m[r] - ms[r];
        m[r] = mnew;
    }
    __m512 a = fast ? sd_attn_exp2_neg_fast(_mm512_loadu_ps(dm)) : sd_attn_exp2_neg(_mm512_loadu_ps(dm));
    _mm512_mask_storeu_ps(alpha, 0xff, a);
    SD_ATTN_UNROLL for (int r = 0; r < 8; r++) {
        __m512 msv = _mm512_set1_ps(ms[r]);
        s0[r] = fast ? sd_attn_exp2_neg_fast(_mm512_sub_ps(s0[r], msv)) : sd_attn_exp2_neg(_mm512_sub_ps(s0[r], msv));
        s1[r] = fast ? sd_attn_exp2_neg_fast(_mm512_sub_ps(s1[r], msv)) : sd_attn_exp2_neg(_mm512_sub_ps(s1[r], msv));
        lv[r] = _mm512_fmadd_ps(lv[r], _mm512_set1_ps(alpha[r]), _mm512_add_ps(s0[r], s1[r]));
    }
}

#endif
