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
 * 2^x is sd_attn_exp2_neg_fast (degree 5: its error is far below the bf16 rounding that follows).
 * Operand mapping, packed buffers and the schedule: runtime-opencl/attn_host.c. Functions that use the instructions carry their own target attribute; the CPU is checked at
 * run time, so the rest of sdflow is built for the baseline x86-64. */
#include "runtime-opencl/attn_bf16.h"

#if defined(SDFLOW_HAVE_DNNL) && defined(__x86_64__) && defined(_OPENMP)

#include "runtime-opencl/attn_host.h"
#include "runtime-opencl/cpu_isa.h"
#include <stdlib.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define INLINE SD_ATTN_INLINE
#define UNROLL SD_ATTN_UNROLL
#define KB 32          /* keys per block */
#define RB 8           /* query rows per AVX512-BF16 register block */
#define QR 16          /* query rows per AMX tile (and the most a row state holds) */
#define SB 8           /* 32-key sub-blocks per AMX key block */
#define GROUPS 4       /* AMX row states (16 rows each) that share a key block */
#define MAX_D SD_ATTN_MAX_D
#define NC 3           /* 16-column vectors of o per P V pass */

static sd_attn_bf16_isa cap = SD_ATTN_BF16_AMX;

sd_attn_bf16_isa sd_attn_bf16_route(void)
{
    const sd_cpu_isa *c = sd_cpu_isa_get();
    sd_attn_bf16_isa detected = c->amx_bf16 && c->avx512_bf16 ? SD_ATTN_BF16_AMX : c->avx512_bf16 ? SD_ATTN_BF16_AVX512 : SD_ATTN_BF16_NONE;
    return detected < cap ? detected : cap;
}

sd_attn_bf16_isa sd_attn_bf16_cap(sd_attn_bf16_isa max)
{
    sd_attn_bf16_isa prior = cap;
    cap = max;
    return prior;
}

typedef struct attn_job {
    sd_attn_host_job host;     /* shapes, operands */
    bool amx;                  /* AMX tiles, else AVX512-BF16 */
    size_t kp_stride, vp_stride; /* uint32 per (b, h) in host.kp, host.vp */
    int B, H, D, Nq, Nk, dp, dc, nkb; /* as host's; dp: d-pairs, a multiple of 16 with AMX */
    float scale;                      /* log2(e) / sqrt(D) */
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
TARGET static void pack_head(const void *job, int b, int h)
{
    const attn_job *j = job;
    const sd_attn_host_job *g = &j->host;
    uint32_t *kp = (uint32_t *)j->host.kp + ((size_t)b * j->H + h) * j->kp_stride;
    uint32_t *vp = (uint32_t *)j->host.vp + ((size_t)b * j->H + h) * j->vp_stride;
    uint16_t ra[MAX_D + 16], rb[MAX_D + 16];
    int dv = 16 * j->dc, nk_pad = KB * j->nkb;
    for (int key = 0; key < nk_pad; key += 2) {
        for (int t = 0; t < 2; t++) {
            int kk = key + t;
            uint16_t *row = t ? rb : ra;
            if (kk < j->Nk) {
                row_bf16(sd_attn_host_kv(g, g->k, b, h, kk), g->kv_half, j->D, 2 * j->dp, row);
                uint32_t pairs[MAX_D / 2];
                memcpy(pairs, row, (size_t)j->dp * 4);
                uint32_t *dst = kp + (size_t)(kk / KB) * j->dp * KB + kk % KB;
                for (int p = 0; p < j->dp; p++)
                    dst[(size_t)p * KB] = pairs[p];
                row_bf16(sd_attn_host_kv(g, g->v, b, h, kk), g->kv_half, j->D, dv, row);
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

/* o[r][16 c0 .. 16 (c0 + nc)) = o * alpha[r] + sum over the block's key pairs of P V. */
TARGET INLINE void pv_pass(float (*o)[MAX_D], const uint32_t (*pp)[KB / 2], const float *alpha,
                           const uint32_t *vblk, int dc, int c0, int nc, int npairs)
{
    __m512 acc[RB][NC];
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int u = 0; u < nc; u++)
            acc[r][u] = _mm512_mul_ps(_mm512_loadu_ps(&o[r][16 * (c0 + u)]), _mm512_set1_ps(alpha[r]));
    for (int jp = 0; jp < npairs; jp++) {
        const uint32_t *vrow = vblk + ((size_t)jp * dc + c0) * 16;
        __m512i vv[NC];
        UNROLL for (int u = 0; u < nc; u++)
            vv[u] = _mm512_loadu_si512(vrow + 16 * u);
        UNROLL for (int r = 0; r < RB; r++) {
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pp[r][jp]);
            UNROLL for (int u = 0; u < nc; u++)
                acc[r][u] = _mm512_dpbf16_ps(acc[r][u], pb, (__m512bh)vv[u]);
        }
    }
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int u = 0; u < nc; u++)
            _mm512_storeu_ps(&o[r][16 * (c0 + u)], acc[r][u]);
}

/* The running state of up to QR query rows: queries as bf16 pairs (row r at q + r * dp), the
 * unnormalised output, the running max and sum (log2 units), the mask rows. */
typedef struct rows_state {
    __m512 lv[QR]; /* running sums, lane-wise */
    uint32_t q[QR * MAX_D / 2];
    float o[QR][MAX_D], m[QR], alpha[QR];
    uint32_t pp[QR][KB / 2]; /* the current block's probabilities, bf16 pairs */
    const float *mrow[QR];
} rows_state;

/* Starts n rows at i0 of (b, h) (rows past Nq repeat row Nq-1). */
TARGET static void rows_start(const attn_job *j, int b, int h, int i0, int n, rows_state *st)
{
    for (int r = 0; r < n; r++) {
        int i = i0 + r < j->Nq ? i0 + r : j->Nq - 1;
        row_bf16(sd_attn_host_q(&j->host, b, h, i), false, j->D, 2 * j->dp, (uint16_t *)(st->q + (size_t)r * j->dp));
        memset(st->o[r], 0, (size_t)j->dc * 64);
        st->m[r] = -INFINITY;
        st->lv[r] = _mm512_setzero_ps();
        st->mrow[r] = sd_attn_host_mask_row(&j->host, b, i);
    }
}

/* Writes the n rows at i0 that lie below Nq, normalised. */
TARGET static void rows_finish(const attn_job *j, int b, int h, int i0, int n, const rows_state *st)
{
    for (int r = 0; r < n && i0 + r < j->Nq; r++) {
        float l = _mm512_reduce_add_ps(st->lv[r]), inv = l > 0.0f ? 1.0f / l : 0.0f;
        sd_attn_host_row_f32(st->o[r], false, j->D, j->D, inv, sd_attn_host_out(&j->host, b, h, i0 + r));
    }
}

/* AVX512-BF16: query rows [i0, i0 + RB) of (b, h). */
TARGET static void rows_task(const attn_job *j, int b, int h, int i0, rows_state *st)
{
    const uint32_t *kp = (uint32_t *)j->host.kp + ((size_t)b * j->H + h) * j->kp_stride;
    const uint32_t *vp = (uint32_t *)j->host.vp + ((size_t)b * j->H + h) * j->vp_stride;
    rows_start(j, b, h, i0, RB, st);
    for (int kb = 0; kb < j->nkb; kb++) {
        const uint32_t *kblk = kp + (size_t)kb * j->dp * KB;
        __m512 s0[RB], s1[RB];
        UNROLL for (int r = 0; r < RB; r++)
            s0[r] = s1[r] = _mm512_setzero_ps();
        for (int p = 0; p < j->dp; p++) {
            __m512bh ka = (__m512bh)_mm512_loadu_si512(kblk + (size_t)p * KB);
            __m512bh kb2 = (__m512bh)_mm512_loadu_si512(kblk + (size_t)p * KB + 16);
            UNROLL for (int r = 0; r < RB; r++) {
                __m512bh qb = (__m512bh)_mm512_set1_epi32((int)st->q[(size_t)r * j->dp + p]);
                s0[r] = _mm512_dpbf16_ps(s0[r], qb, ka);
                s1[r] = _mm512_dpbf16_ps(s1[r], qb, kb2);
            }
        }
        __mmask16 v0, v1;
        int valid = sd_attn_host_block_valid(j->Nk, kb * KB, &v0, &v1);
        UNROLL for (int r = 0; r < RB; r++) {
            s0[r] = _mm512_mul_ps(s0[r], _mm512_set1_ps(j->scale));
            s1[r] = _mm512_mul_ps(s1[r], _mm512_set1_ps(j->scale));
        }
        sd_attn_host_softmax8(st->mrow, kb * KB, s0, s1, v0, v1, st->m, st->lv, st->alpha, true);
        UNROLL for (int r = 0; r < RB; r++)
            _mm512_storeu_si512(st->pp[r], (__m512i)_mm512_cvtne2ps_pbh(s1[r], s0[r]));
        const uint32_t *vblk = vp + (size_t)kb * (KB / 2) * j->dc * 16;
        const uint32_t (*pp)[KB / 2] = (const uint32_t (*)[KB / 2])st->pp;
        int npairs = (valid + 1) / 2, c = 0;
        for (; c + NC <= j->dc; c += NC)
            pv_pass(st->o, pp, st->alpha, vblk, j->dc, c, NC, npairs);
        if (j->dc - c == 2)
            pv_pass(st->o, pp, st->alpha, vblk, j->dc, c, 2, npairs);
        else if (j->dc - c == 1)
            pv_pass(st->o, pp, st->alpha, vblk, j->dc, c, 1, npairs);
    }
    rows_finish(j, b, h, i0, RB, st);
}

/* ---- AMX ---- */

/* Tile configuration (palette 1): every tile 16 rows of 64 bytes. Tiles: 0, 1 scores of keys
 * 0-15 and 16-31; 2 queries (32 d); 3, 4 K (16 d-pairs x 16 keys); 5 P (32 keys); 6 V (16 key
 * pairs x 16 columns); 7 a 16-column slice of P V (P V also uses 0 and 1; V also 3, 4). */
typedef struct __attribute__((packed)) amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* A constant in memory: GCC's _tile_loadconfig tells the compiler it reads 8 bytes only, so a
 * configuration built on the stack could lose its other stores. */
static const amx_config amx_cfg = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {QR, QR, QR, QR, QR, QR, QR, QR},
};

AMX_TARGET static void amx_begin(void)
{
    _tile_loadconfig(&amx_cfg);
}

AMX_TARGET static void amx_end(void)
{
    _tile_release();
}

/* Online softmax of row r over the keys [k0, k0 + 32 nsb) from its raw scores s: updates m,
 * sets dm (m_old - m_new, for alpha) and sum (the new probabilities' lane-wise sum); p gets the
 * probabilities in bf16. Without a mask over whole blocks the max is taken on the raw scores
 * (scale > 0) and scaling joins the subtraction; else s is rewritten scaled and masked first. */
AMX_TARGET static void softmax_wide(const attn_job *j, rows_state *st, int r, float *s, uint16_t *p, int k0, int nsb,
                                    float *dm, __m512 *sum)
{
    __m512 scale = _mm512_set1_ps(j->scale), log2e = _mm512_set1_ps(1.4426950408889634f);
    __m512 ninf = _mm512_set1_ps(-INFINITY), mx = ninf;
    const float *mrow = st->mrow[r];
    bool plain = !mrow && k0 + KB * nsb <= j->Nk;
    float bmax;
    if (plain) {
        for (int v = 0; v < 2 * nsb; v++)
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + 16 * v));
        bmax = _mm512_reduce_max_ps(mx) * j->scale;
    } else {
        for (int v = 0; v < 2 * nsb; v++) {
            int left = j->Nk - (k0 + 16 * v);
            __mmask16 valid = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            __m512 x = _mm512_mul_ps(_mm512_loadu_ps(s + 16 * v), scale);
            if (mrow)
                x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(valid, mrow + k0 + 16 * v), log2e, x);
            x = _mm512_mask_mov_ps(ninf, valid, x);
            _mm512_storeu_ps(s + 16 * v, x);
            mx = _mm512_max_ps(mx, x);
        }
        bmax = _mm512_reduce_max_ps(mx);
    }
    float mnew = fmaxf(st->m[r], bmax);
    float msafe = mnew == -INFINITY ? 0.0f : mnew;
    *dm = st->m[r] - msafe;
    st->m[r] = mnew;
    __m512 ms = _mm512_set1_ps(msafe), acc = _mm512_setzero_ps();
    for (int v = 0; v < 2 * nsb; v += 2) {
        __m512 x0 = _mm512_loadu_ps(s + 16 * v), x1 = _mm512_loadu_ps(s + 16 * v + 16);
        x0 = plain ? _mm512_fmsub_ps(x0, scale, ms) : _mm512_sub_ps(x0, ms);
        x1 = plain ? _mm512_fmsub_ps(x1, scale, ms) : _mm512_sub_ps(x1, ms);
        __m512 p0 = sd_attn_exp2_neg_fast(x0), p1 = sd_attn_exp2_neg_fast(x1);
        acc = _mm512_add_ps(acc, _mm512_add_ps(p0, p1));
        _mm512_storeu_si512(p + 16 * v, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
    }
    *sum = acc;
}

/* o[r][16 c + e] = o * alpha[r] + pv[r][e] for the QR rows of one 16-column slice. */
AMX_TARGET static void rescale_add(rows_state *st, int c, const float (*pv)[16])
{
    for (int r = 0; r < QR; r++) {
        float *o = &st->o[r][16 * c];
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_loadu_ps(o), _mm512_set1_ps(st->alpha[r]), _mm512_loadu_ps(pv[r])));
    }
}

/* AMX: the 16 rows of st against the keys [32 kb0, 32 (kb0 + nsb)) of (b, h) (kp, vp: its packed
 * K and V); j->dp is a multiple of 16 (zero padded). The scores of all of them (tiles 0, 1 per 32
 * keys), one softmax update, then P V accumulated over the whole block in up to three tiles
 * (0, 1, 7) before o is rescaled once. */
AMX_TARGET static void amx_block(const attn_job *j, rows_state *st, const uint32_t *kp, const uint32_t *vp, int kb0,
                                 int nsb)
{
    float s[QR][SB * KB], pv[3][QR][16];
    uint16_t p[QR][SB * KB];
    size_t vstride = (size_t)j->dc * 64, vblock = (size_t)(KB / 2) * j->dc * 16;
    for (int sb = 0; sb < nsb; sb++) {
        const uint32_t *kblk = kp + (size_t)(kb0 + sb) * j->dp * KB;
        _tile_zero(0);
        _tile_zero(1);
        for (int c = 0; c < j->dp; c += 16) {
            _tile_loadd(2, st->q + c, j->dp * 4);
            _tile_loadd(3, kblk + (size_t)c * KB, KB * 4);
            _tile_loadd(4, kblk + (size_t)c * KB + 16, KB * 4);
            _tile_dpbf16ps(0, 2, 3);
            _tile_dpbf16ps(1, 2, 4);
        }
        _tile_stored(0, &s[0][sb * KB], SB * KB * 4);
        _tile_stored(1, &s[0][sb * KB + 16], SB * KB * 4);
    }
    float dm[QR];
    __m512 sums[QR];
    for (int r = 0; r < QR; r++)
        softmax_wide(j, st, r, s[r], p[r], kb0 * KB, nsb, &dm[r], &sums[r]);
    _mm512_storeu_ps(st->alpha, sd_attn_exp2_neg_fast(_mm512_loadu_ps(dm))); /* QR = 16 rows */
    for (int r = 0; r < QR; r++)
        st->lv[r] = _mm512_fmadd_ps(st->lv[r], _mm512_set1_ps(st->alpha[r]), sums[r]);
    const uint32_t *vblk = vp + (size_t)kb0 * vblock;
    for (int c = 0; c < j->dc; c += 3) {
        int n = j->dc - c < 3 ? j->dc - c : 3;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(7);
        for (int sb = 0; sb < nsb; sb++) {
            const uint32_t *vb = vblk + (size_t)sb * vblock + (size_t)c * 16;
            _tile_loadd(5, &p[0][sb * KB], SB * KB * 2);
            _tile_loadd(3, vb, vstride);
            _tile_dpbf16ps(0, 5, 3);
            if (n > 1) {
                _tile_loadd(4, vb + 16, vstride);
                _tile_dpbf16ps(1, 5, 4);
            }
            if (n > 2) {
                _tile_loadd(6, vb + 32, vstride);
                _tile_dpbf16ps(7, 5, 6);
            }
        }
        _tile_stored(0, pv[0], 64);
        _tile_stored(1, pv[1], 64);
        _tile_stored(7, pv[2], 64);
        for (int u = 0; u < n; u++)
            rescale_add(st, c + u, (const float (*)[16])pv[u]);
    }
}

/* AMX: query rows [i0, i0 + 16 ng) of (b, h), 16 per row state of st[0 .. ng): each block of
 * SB x 32 keys serves the ng states in turn while it stays in L2 (the VAE's 512-dim head read K
 * and V from memory once per 16 rows). */
AMX_TARGET static void rows_task_amx(const attn_job *j, int b, int h, int i0, int ng, rows_state *st)
{
    const uint32_t *kp = (uint32_t *)j->host.kp + ((size_t)b * j->H + h) * j->kp_stride;
    const uint32_t *vp = (uint32_t *)j->host.vp + ((size_t)b * j->H + h) * j->vp_stride;
    for (int g = 0; g < ng; g++)
        rows_start(j, b, h, i0 + g * QR, QR, &st[g]);
    for (int kb0 = 0; kb0 < j->nkb; kb0 += SB)
        for (int g = 0; g < ng; g++)
            amx_block(j, &st[g], kp, vp, kb0, j->nkb - kb0 < SB ? j->nkb - kb0 : SB);
    for (int g = 0; g < ng; g++)
        rows_finish(j, b, h, i0 + g * QR, QR, &st[g]);
}

/* Query rows [i0, i1) of (b, h) (a scheduled task), with the calling thread's row state. */
static void task(const void *job, int b, int h, int i0, int i1)
{
    const attn_job *j = job;
    rows_state *st = sd_attn_host_state(&j->host); /* GROUPS of them */
    if (j->amx) {
        amx_begin();
        for (int i = i0; i < i1; i += GROUPS * QR) {
            int ng = (i1 - i + QR - 1) / QR;
            rows_task_amx(j, b, h, i, ng < GROUPS ? ng : GROUPS, st);
        }
        amx_end();
    } else {
        for (int i = i0; i < i1; i += RB)
            rows_task(j, b, h, i, st);
    }
}

sd_status sd_attn_bf16_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                           const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    attn_job j = {0};
    sd_attn_host_init(&j.host, q, k, heads, mb, mq);
    j.B = j.host.B, j.H = j.host.H, j.D = j.host.D, j.Nq = j.host.Nq, j.Nk = j.host.Nk;
    j.amx = sd_attn_bf16_route() == SD_ATTN_BF16_AMX;
    j.dp = j.amx ? (j.D + 31) / 32 * 16 : (j.D + 1) / 2;
    j.dc = (j.D + 15) / 16;
    j.nkb = (j.Nk + KB - 1) / KB;
    j.scale = (float)(1.4426950408889634 / sqrt((double)j.D));
    j.kp_stride = (size_t)j.nkb * KB * j.dp;
    j.vp_stride = (size_t)j.nkb * (KB / 2) * j.dc * 16;
    size_t bh = (size_t)j.B * j.H;
    return sd_attn_host_run(cl, q, k, v, mask, out, &j.host, bh * j.kp_stride * 4, bh * j.vp_stride * 4,
                            GROUPS * sizeof(rows_state), &j, pack_head, task, "attention (bf16)");
}

#else

sd_attn_bf16_isa sd_attn_bf16_route(void)
{
    return SD_ATTN_BF16_NONE;
}

sd_attn_bf16_isa sd_attn_bf16_cap(sd_attn_bf16_isa max)
{
    (void)max;
    return SD_ATTN_BF16_NONE;
}

sd_status sd_attn_bf16_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                           const sd_dtensor *mask, int mb, int mq, sd_dtensor *out)
{
    (void)q, (void)k, (void)v, (void)heads, (void)mask, (void)mb, (void)mq, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "attention (bf16): not available in this build");
}

#endif
