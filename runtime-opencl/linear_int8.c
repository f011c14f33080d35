/* int8 linear on the host for block-quantised weights (runtime-opencl/linear_int8.h).
 *
 * The activations X [M, K] are quantised once per call, row by row and 32-element block by block
 * (rows padded to a multiple of 16 with zeros): Aq [Mpad][K] int8 (plus 128, i.e. unsigned, for
 * VNNI's unsigned-by-signed product), Ad [Mpad][nb] scales, Am [Mpad][nb] = Ad * sum(q) for the
 * weights with a minimum. The weight is read in units of ub elements that share one scale: 32
 * (a block; the K-quants' sub-blocks), 16 for Q6_K (whose two units in a 32-element block share
 * the activations' scale). A task owns NP = 64 output columns: it unpacks their weight rows into
 * a panel of signed int8 quads in the operand layout of both products
 *   Wq[u][v][p][e][t] = q_w of column 16 v + e, element 4 p + t of unit u (v < 4, p < ub / 4)
 * with per-unit fp32 scales Wd, minima Wm and, for VNNI, Wc = -128 * sum(q_w) (which the
 * accumulator starts from, taking back the 128 added to the activations), then sweeps all rows:
 *   VNNI: 4 rows x 32 columns, per unit ub / 4 vpdpbusd steps into int32 lanes, then
 *         acc += float(sum) * (Wd * Ad) (+ Wm * Am) in fp32;
 *   AMX:  16 rows x 16 columns, per unit one tdpbssd (A 16 x ub bytes, B ub / 4 quad rows x 16
 *         columns), the int32 tile stored and folded into 16 fp32 registers the same way (Q6_K:
 *         a block's two tiles stored together, acc += (float(s1) Wd1 + float(s2) Wd2) * Ad); two
 *         tile sets alternate so the next block's products run while this block is folded.
 * Bias and the activation are applied to the fp32 sums. Functions that use the instructions
 * carry their own target attribute; the CPU is checked at run time. */
#include "runtime-opencl/linear_int8.h"

#if defined(SDFLOW_HAVE_DNNL) && defined(__x86_64__) && defined(_OPENMP)

#include "runtime-opencl/dnnl.h"
#include "core/checked.h"
#include "runtime-opencl/cpu_isa.h"
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")))
#define QK 32                /* elements per block (K-quants: per 32-element sub-block) */
#define NP 64                /* output columns per task */
#define MT 16                /* rows per AMX tile; rows are padded to a multiple */
#define MR 4                 /* rows per VNNI register block */
#define DIRECT_ROWS 8        /* at most this many rows: the weight blocks are read in place */
#define DIRECT_COLS 64       /* columns per task then */

static sd_int8_isa cap = SD_INT8_AMX;

sd_int8_isa sd_linear_int8_route(void)
{
    const sd_cpu_isa *c = sd_cpu_isa_get();
    sd_int8_isa detected = c->amx_int8 && c->avx512_vnni ? SD_INT8_AMX : c->avx512_vnni ? SD_INT8_VNNI : SD_INT8_NONE;
    return detected < cap ? detected : cap;
}

sd_int8_isa sd_linear_int8_cap(sd_int8_isa max)
{
    sd_int8_isa prior = cap;
    cap = max;
    return prior;
}

/* Whether the route reads type t, whether its blocks have minima, and the elements per weight
 * scale (a unit: 16 for Q6_K, else 32). */
static bool block_type(sd_dtype t, bool *mins, int *unit)
{
    *mins = t == SD_DTYPE_Q4_1 || t == SD_DTYPE_Q5_1 || t == SD_DTYPE_Q4_K || t == SD_DTYPE_Q5_K;
    *unit = t == SD_DTYPE_Q6_K ? 16 : QK;
    return t == SD_DTYPE_Q8_0 || t == SD_DTYPE_Q4_0 || t == SD_DTYPE_Q5_0 || t == SD_DTYPE_Q6_K || *mins;
}

bool sd_linear_int8_takes(sd_dtype dtype)
{
    bool mins;
    int unit;
    return sd_linear_int8_route() != SD_INT8_NONE && block_type(dtype, &mins, &unit);
}

typedef struct int8_job {
    const unsigned char *w; /* [N] rows of row_bytes */
    size_t row_bytes;
    sd_dtype type;
    bool mins, amx, x_half;
    const void *x;
    const float *bias;
    float *out;
    sd_act act;
    int M, Mpad, N, K, nb; /* nb: 32-element blocks per row */
    int ub, nu;            /* elements per weight unit (16 or 32), units per row */
    int8_t *aq;            /* [Mpad][K] */
    float *ad, *am;        /* [Mpad][nb] */
} int8_job;

/* One NP-column panel of the weight (layout above): q [nu][NP / 16][ub / 4][16][4], d, m, c
 * [nu][NP]. */
typedef struct panel {
    int8_t *q;
    float *d, *m;
    int32_t *c;
} panel;

TARGET static inline float f16at(const unsigned char *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Block kb of a weight row as q[32] * d + m (kernels/dequant.cl's layouts; the K-quants' scales
 * d * sc and minima dmin * m rounded to fp32 as there). */
TARGET static void unpack_block(sd_dtype t, const unsigned char *row, int kb, int8_t *q, float *d, float *m)
{
    *m = 0.0f;
    if (t == SD_DTYPE_Q8_0) {
        const unsigned char *b = row + (size_t)kb * 34;
        *d = f16at(b);
        memcpy(q, b + 2, QK);
        return;
    }
    if (t == SD_DTYPE_Q4_K || t == SD_DTYPE_Q5_K) {
        bool five = t == SD_DTYPE_Q5_K;
        const unsigned char *b = row + (size_t)(kb / 8) * (five ? 176 : 144), *sc = b + 4, *qh = b + 16;
        const unsigned char *qs = b + (five ? 48 : 16) + 32 * (kb % 8 / 2);
        int j = kb % 8, s, mn;
        if (j < 4) {
            s = sc[j] & 63;
            mn = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
            mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        *d = f16at(b) * (float)s;
        *m = -(f16at(b + 2) * (float)mn);
        for (int l = 0; l < QK; l++)
            q[l] = (int8_t)(((j & 1) ? qs[l] >> 4 : qs[l] & 0x0F) | (five ? ((qh[l] >> j) & 1) << 4 : 0));
        return;
    }
    bool has_min = t == SD_DTYPE_Q4_1 || t == SD_DTYPE_Q5_1, five = t == SD_DTYPE_Q5_0 || t == SD_DTYPE_Q5_1;
    size_t bytes = 18 + (has_min ? 2 : 0) + (five ? 4 : 0);
    const unsigned char *b = row + (size_t)kb * bytes, *p = b + (has_min ? 4 : 2);
    *d = f16at(b);
    if (has_min)
        *m = f16at(b + 2);
    uint32_t qh = five ? le32(p) : 0;
    const unsigned char *qs = p + (five ? 4 : 0);
    int offset = has_min ? 0 : five ? 16 : 8;
    for (int l = 0; l < QK; l++)
        q[l] = (int8_t)(((l < 16 ? qs[l] & 0x0F : qs[l - 16] >> 4) | (int)((qh >> l) & 1u) << 4) - offset);
}

/* 32-element block kb of a Q6_K row (kernels/dequant.cl's q6k): q - 32, and d * scale for its
 * two 16-element halves. */
TARGET static inline __m256i block_q6k(const unsigned char *row, int kb, float d[2])
{
    const unsigned char *b = row + (size_t)(kb / 8) * 210;
    int i = kb % 8, h = i / 4, k = i % 4;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32 * (k & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
    __m256i lo = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (k / 2))), _mm256_set1_epi8(0x0F));
    __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
    float scale = f16at(b + 208);
    d[0] = scale * (float)(int8_t)b[192 + 2 * i];
    d[1] = scale * (float)(int8_t)b[192 + 2 * i + 1];
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
}

/* Block kb of a weight row as 32 signed int8 values (unpack_block's), Q8_0, Q4_0 and Q6_K in
 * vector registers; d[0], d[1] the scales of its 16-element halves (equal but for Q6_K). */
TARGET static inline __m256i block_s8(sd_dtype t, const unsigned char *row, int kb, float d[2], float *m)
{
    *m = 0.0f;
    if (t == SD_DTYPE_Q6_K)
        return block_q6k(row, kb, d);
    __m256i v;
    if (t == SD_DTYPE_Q8_0) {
        const unsigned char *b = row + (size_t)kb * 34;
        d[0] = f16at(b);
        v = _mm256_loadu_si256((const __m256i *)(b + 2));
    } else if (t == SD_DTYPE_Q4_0) {
        const unsigned char *b = row + (size_t)kb * 18;
        __m128i qs = _mm_loadu_si128((const __m128i *)(b + 2)), low = _mm_set1_epi8(0x0F);
        v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        v = _mm256_sub_epi8(v, _mm256_set1_epi8(8));
        d[0] = f16at(b);
    } else {
        int8_t q[QK];
        unpack_block(t, row, kb, q, d, m);
        v = _mm256_loadu_si256((const __m256i *)q);
    }
    d[1] = d[0];
    return v;
}

/* The sums of the two 16-byte halves of 32 signed bytes. */
TARGET static inline void sums_s8(__m256i v, int sum[2])
{
    __m256i s = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256());
    __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
    sum[0] = (int)(_mm_cvtsi128_si64(lo) + _mm_extract_epi64(lo, 1)) - 128 * 16;
    sum[1] = (int)(_mm_cvtsi128_si64(hi) + _mm_extract_epi64(hi, 1)) - 128 * 16;
}

/* Unpacks the weight rows [n0, n0 + NP) (zeros past N) into p. */
TARGET static void unpack_panel(const int8_job *j, int n0, panel *p)
{
    int per = QK / j->ub, quads_per = j->ub / 4; /* units per block, quads per unit */
    for (int c = 0; c < NP; c++) {
        int n = n0 + c, v = c / 16, e = c % 16;
        for (int kb = 0; kb < j->nb; kb++) {
            float d[2] = {0.0f, 0.0f}, m = 0.0f;
            __m256i q = n < j->N ? block_s8(j->type, j->w + (size_t)n * j->row_bytes, kb, d, &m)
                                 : _mm256_setzero_si256();
            uint32_t quads[QK / 4];
            int sum[2];
            _mm256_storeu_si256((__m256i *)quads, q);
            sums_s8(q, sum);
            for (int g = 0; g < per; g++) {
                size_t u = (size_t)kb * per + g;
                uint32_t *dst = (uint32_t *)(p->q + u * j->ub * NP + (size_t)v * j->ub * 16) + e;
                for (int s = 0; s < quads_per; s++)
                    dst[16 * s] = quads[g * quads_per + s];
                p->d[u * NP + c] = d[g];
                p->m[u * NP + c] = m;
                p->c[u * NP + c] = -128 * (per == 1 ? sum[0] + sum[1] : sum[g]);
            }
        }
    }
}

/* Quantises row m of X (zeros past M) into Aq, Ad, Am. */
TARGET static void quant_row(const int8_job *j, int m)
{
    int8_t *q = j->aq + (size_t)m * j->K;
    float *d = j->ad + (size_t)m * j->nb, *am = j->am + (size_t)m * j->nb;
    if (m >= j->M) {
        memset(q, 0, (size_t)j->K);
        memset(d, 0, (size_t)j->nb * sizeof *d);
        memset(am, 0, (size_t)j->nb * sizeof *am);
        return;
    }
    size_t base = (size_t)m * j->K;
    __m128i flip = _mm_set1_epi8(j->amx ? 0 : (char)0x80);
    for (int kb = 0; kb < j->nb; kb++) {
        __m512 x[2];
        for (int h = 0; h < 2; h++) {
            size_t i = base + (size_t)kb * QK + 16 * h;
            x[h] = j->x_half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)j->x + i)))
                             : _mm512_loadu_ps((const float *)j->x + i);
        }
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x[0]), _mm512_abs_ps(x[1])));
        __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x[0], id)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x[1], id));
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm_storeu_si128((__m128i *)(q + (size_t)kb * QK), _mm_xor_si128(_mm512_cvtepi32_epi8(q0), flip));
        _mm_storeu_si128((__m128i *)(q + (size_t)kb * QK + 16), _mm_xor_si128(_mm512_cvtepi32_epi8(q1), flip));
        d[kb] = amax / 127.0f;
        am[kb] = d[kb] * (float)sum;
    }
}

/* out[m][n0 + c] = act(acc[c] + bias) for the columns c < cols that lie below N. */
TARGET static void store_row(const int8_job *j, int m, int n0, const float *acc, int cols)
{
    float *dst = j->out + (size_t)m * j->N;
    if (cols > j->N - n0)
        cols = j->N - n0;
    if (j->act == SD_ACT_NONE) {
        for (int c = 0; c < cols; c += 16) {
            __mmask16 k = cols - c >= 16 ? 0xffff : (__mmask16)((1u << (cols - c)) - 1);
            __m512 y = _mm512_maskz_loadu_ps(k, acc + c);
            if (j->bias)
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, j->bias + n0 + c));
            _mm512_mask_storeu_ps(dst + n0 + c, k, y);
        }
        return;
    }
    for (int c = 0; c < cols; c++) {
        float y = acc[c] + (j->bias ? j->bias[n0 + c] : 0.0f);
        if (j->act == SD_ACT_SILU)
            y = y / (1.0f + expf(-y));
        else if (j->act == SD_ACT_GELU)
            y = 0.5f * y * (1.0f + erff(y * 0.70710678118654752f));
        dst[n0 + c] = y;
    }
}

/* VNNI: rows [m0, m0 + MR) x the panel's 32 columns of half h, for units of ub elements (a
 * constant once inlined). The loops are unrolled so that the accumulators stay in registers
 * (rolled, GCC kept them in memory: a load and a store around every vpdpbusd). */
TARGET static inline __attribute__((always_inline)) void rows_vnni_unit(const int8_job *j, const panel *p, int m0,
                                                                        int n0, int h, const int ub)
{
    __m512 f[MR][2];
    _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++)
        f[r][0] = f[r][1] = _mm512_setzero_ps();
    const int8_t *a = j->aq + (size_t)m0 * j->K;
    const int32_t *pc = p->c + 32 * h;
    const float *pd = p->d + 32 * h, *pm = p->m + 32 * h;
    for (int u = 0; u < j->nu; u++) {
        int kb = u / (QK / ub);
        __m512i acc[MR][2], c0 = _mm512_loadu_si512(pc + (size_t)u * NP),
                            c1 = _mm512_loadu_si512(pc + (size_t)u * NP + 16);
        _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) {
            acc[r][0] = c0;
            acc[r][1] = c1;
        }
        const int8_t *wq = p->q + (size_t)u * ub * NP + (size_t)h * 2 * ub * 16;
        _Pragma("GCC unroll 8") for (int s = 0; s < ub / 4; s++) {
            __m512i w0 = _mm512_loadu_si512(wq + 64 * s), w1 = _mm512_loadu_si512(wq + ub * 16 + 64 * s);
            _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) {
                int32_t quad;
                memcpy(&quad, a + (size_t)r * j->K + (size_t)u * ub + 4 * s, 4);
                __m512i av = _mm512_set1_epi32(quad);
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
            }
        }
        __m512 d0 = _mm512_loadu_ps(pd + (size_t)u * NP), d1 = _mm512_loadu_ps(pd + (size_t)u * NP + 16);
        _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) {
            __m512 s = _mm512_set1_ps(j->ad[(size_t)(m0 + r) * j->nb + kb]);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][0]), _mm512_mul_ps(d0, s), f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][1]), _mm512_mul_ps(d1, s), f[r][1]);
        }
        if (j->mins) {
            __m512 m0v = _mm512_loadu_ps(pm + (size_t)u * NP), m1v = _mm512_loadu_ps(pm + (size_t)u * NP + 16);
            _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) {
                __m512 s = _mm512_set1_ps(j->am[(size_t)(m0 + r) * j->nb + kb]);
                f[r][0] = _mm512_fmadd_ps(m0v, s, f[r][0]);
                f[r][1] = _mm512_fmadd_ps(m1v, s, f[r][1]);
            }
        }
    }
    for (int r = 0; r < MR && m0 + r < j->M; r++) {
        float row[32];
        _mm512_storeu_ps(row, f[r][0]);
        _mm512_storeu_ps(row + 16, f[r][1]);
        store_row(j, m0 + r, n0 + 32 * h, row, 32);
    }
}

TARGET static void rows_vnni(const int8_job *j, const panel *p, int m0, int n0, int h)
{
    if (j->ub == 16)
        rows_vnni_unit(j, p, m0, n0, h, 16);
    else
        rows_vnni_unit(j, p, m0, n0, h, QK);
}

/* Few rows (M <= DIRECT_ROWS): columns [n0, n1) straight from the weight blocks, one block at a
 * time against up to MR rows (u8 activations, VNNI in 256-bit registers), fp32 per lane (each
 * lane scaled by its 16-element half's d_w), summed across lanes at the end of a column. */
TARGET static void cols_direct(const int8_job *j, int n0, int n1)
{
    __m256i ones = _mm256_set1_epi8(1);
    for (int m0 = 0; m0 < j->M; m0 += MR) {
        int rows = j->M - m0 < MR ? j->M - m0 : MR;
        for (int n = n0; n < n1; n++) {
            const unsigned char *wrow = j->w + (size_t)n * j->row_bytes;
            __m256 f[MR];
            float fm[MR] = {0};
            for (int r = 0; r < MR; r++)
                f[r] = _mm256_setzero_ps();
            for (int kb = 0; kb < j->nb; kb++) {
                float d[2], m;
                __m256i w = block_s8(j->type, wrow, kb, d, &m);
                /* lanes 0-3 hold the first 16 elements' sums, 4-7 the second's */
                __m256 wd = _mm256_set_m128(_mm_set1_ps(d[1]), _mm_set1_ps(d[0]));
                /* 128 * (the sum of each lane's 4 weights): what the unsigned activations add */
                __m256i corr = _mm256_slli_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, w), 7);
                for (int r = 0; r < rows; r++) {
                    size_t at = (size_t)(m0 + r) * j->nb + kb;
                    __m256i a = _mm256_loadu_si256((const __m256i *)(j->aq + (size_t)(m0 + r) * j->K + (size_t)kb * QK));
                    __m256i i = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, w), corr);
                    f[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(wd, _mm256_set1_ps(j->ad[at])), f[r]);
                    fm[r] += m * j->am[at];
                }
            }
            for (int r = 0; r < rows; r++) {
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(f[r]), _mm256_extractf128_ps(f[r], 1));
                h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                float y = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h))) + fm[r];
                store_row(j, m0 + r, n, &y, 1);
            }
        }
    }
}

/* ---- AMX ---- */

/* Tile configurations (palette 1) for units of 32 and of 16 elements: 0, 1 int32 sums (16 rows
 * x 16 columns); 2, 5 activations (16 rows x ub bytes); 3, 4 weights (ub / 4 quad rows x 16
 * columns x 4 bytes). Units alternate between (0, 2, 3) and (1, 5, 4) (Q6_K: a block's two).
 * Constants in memory (GCC's _tile_loadconfig reads one whole). */
typedef struct __attribute__((packed)) amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

static const amx_config amx_cfg[2] = {
    {.palette = 1, .colsb = {64, 64, QK, 64, 64, QK}, .rows = {MT, MT, MT, QK / 4, QK / 4, MT}},
    {.palette = 1, .colsb = {64, 64, 16, 64, 64, 16}, .rows = {MT, MT, MT, 4, 4, MT}},
};

AMX_TARGET static void amx_begin(int ub)
{
    _tile_loadconfig(&amx_cfg[ub == 16]);
}

AMX_TARGET static void amx_end(void)
{
    _tile_release();
}

/* acc[r] += float(sums[r]) * (d * Ad[row r]) (+ m * Am) for the 16 rows, block kb (one unit). */
#define AMX_FOLD(sums, kb)                                                                                  \
    do {                                                                                                    \
        __m512 d_ = _mm512_loadu_ps(pd + (size_t)(kb) * NP), m_ = _mm512_loadu_ps(pm + (size_t)(kb) * NP);  \
        const float *ad_ = j->ad + (size_t)m0 * j->nb + (kb), *am_ = j->am + (size_t)m0 * j->nb + (kb);     \
        _Pragma("GCC unroll 16") for (int r = 0; r < MT; r++)                                               \
        {                                                                                                   \
            __m512 s_ = _mm512_mul_ps(d_, _mm512_set1_ps(ad_[(size_t)r * j->nb]));                         \
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((sums)[r])), s_, acc[r]);        \
            if (j->mins)                                                                                    \
                acc[r] = _mm512_fmadd_ps(m_, _mm512_set1_ps(am_[(size_t)r * j->nb]), acc[r]);               \
        }                                                                                                   \
    } while (0)

/* acc[r] += (float(sums[r]) * d + float(sums2[r]) * d2) * Ad[row r] for the 16 rows, Q6_K block
 * kb (units 2 kb, 2 kb + 1: one multiply by Ad for the two). */
#define AMX_FOLD_PAIR(kb)                                                                                   \
    do {                                                                                                    \
        const float *pd_ = pd + (size_t)(kb) * 2 * NP;                                                      \
        __m512 d_ = _mm512_loadu_ps(pd_), d2_ = _mm512_loadu_ps(pd_ + NP);                                  \
        const float *ad_ = j->ad + (size_t)m0 * j->nb + (kb);                                               \
        _Pragma("GCC unroll 16") for (int r = 0; r < MT; r++)                                               \
        {                                                                                                   \
            __m512 s_ = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums[r])), d_);                  \
            s_ = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums2[r])), d2_, s_);                 \
            acc[r] = _mm512_fmadd_ps(s_, _mm512_set1_ps(ad_[(size_t)r * j->nb]), acc[r]);                  \
        }                                                                                                   \
    } while (0)

/* Unit u's product into tile c from A tile ta and B tile tb (literal tile numbers). */
#define AMX_PRODUCT(c, ta, tb, u)                                                                           \
    do {                                                                                                    \
        _tile_zero(c);                                                                                      \
        _tile_loadd(ta, a + (size_t)(u) * ub, j->K);                                                        \
        _tile_loadd(tb, wq + (size_t)(u) * ub * NP, 64);                                                    \
        _tile_dpbssd(c, ta, tb);                                                                            \
    } while (0)

/* AMX: rows [m0, m0 + MT) x the 16 panel columns of group v, for units of ub elements (a
 * constant once inlined). Software pipelined: the next block's products are issued before this
 * block's sums are folded, so the two overlap. */
AMX_TARGET static inline __attribute__((always_inline)) void rows_amx_unit(const int8_job *j, const panel *p, int m0,
                                                                           int n0, int v, const int ub)
{
    __m512 acc[MT];
    int32_t sums[MT][16] __attribute__((aligned(64))), sums2[MT][16] __attribute__((aligned(64)));
    for (int r = 0; r < MT; r++)
        acc[r] = _mm512_setzero_ps();
    const int8_t *a = j->aq + (size_t)m0 * j->K;
    const int8_t *wq = p->q + (size_t)v * ub * 16;
    const float *pd = p->d + 16 * v, *pm = p->m + 16 * v;
    if (ub == 16) {
        AMX_PRODUCT(0, 2, 3, 0);
        AMX_PRODUCT(1, 5, 4, 1);
        for (int kb = 0; kb < j->nb; kb++) {
            _tile_stored(0, sums, 64);
            _tile_stored(1, sums2, 64);
            if (kb + 1 < j->nb) {
                AMX_PRODUCT(0, 2, 3, 2 * kb + 2);
                AMX_PRODUCT(1, 5, 4, 2 * kb + 3);
            }
            AMX_FOLD_PAIR(kb);
        }
    } else {
        AMX_PRODUCT(0, 2, 3, 0);
        for (int kb = 0; kb < j->nb; kb += 2) {
            if (kb + 1 < j->nb)
                AMX_PRODUCT(1, 5, 4, kb + 1);
            _tile_stored(0, sums, 64);
            AMX_FOLD(sums, kb);
            if (kb + 1 >= j->nb)
                break;
            if (kb + 2 < j->nb)
                AMX_PRODUCT(0, 2, 3, kb + 2);
            _tile_stored(1, sums, 64);
            AMX_FOLD(sums, kb + 1);
        }
    }
    for (int r = 0; r < MT && m0 + r < j->M; r++) {
        float row[16];
        _mm512_storeu_ps(row, acc[r]);
        store_row(j, m0 + r, n0 + 16 * v, row, 16);
    }
}

AMX_TARGET static void rows_amx(const int8_job *j, const panel *p, int m0, int n0, int v)
{
    if (j->ub == 16)
        rows_amx_unit(j, p, m0, n0, v, 16);
    else
        rows_amx_unit(j, p, m0, n0, v, QK);
}

/* The panel of columns [n0, n0 + NP) over all rows. */
static void panel_task(const int8_job *j, panel *p, int n0)
{
    unpack_panel(j, n0, p);
    /* the rows of an A tile stay in cache across the panel's column groups */
    if (j->amx) {
        amx_begin(j->ub);
        for (int m0 = 0; m0 < j->Mpad; m0 += MT)
            for (int v = 0; v < NP / 16 && n0 + 16 * v < j->N; v++)
                rows_amx(j, p, m0, n0, v);
        amx_end();
    } else {
        for (int m0 = 0; m0 < j->Mpad; m0 += MR)
            for (int h = 0; h < NP / 32 && n0 + 32 * h < j->N; h++)
                rows_vnni(j, p, m0, n0, h);
    }
}

/* Quantises X, then runs the panels (or, for few rows, the columns in place); false when out of
 * memory. */
static bool run_job(int8_job *j)
{
    int threads = omp_get_max_threads(), panels = (j->N + NP - 1) / NP;
    if (j->M <= DIRECT_ROWS) {
#pragma omp parallel for schedule(static)
        for (int m = 0; m < j->M; m++)
            quant_row(j, m);
        int tasks = (j->N + DIRECT_COLS - 1) / DIRECT_COLS;
#pragma omp parallel for schedule(dynamic, 1)
        for (int t = 0; t < tasks; t++)
            cols_direct(j, t * DIRECT_COLS, (t + 1) * DIRECT_COLS < j->N ? (t + 1) * DIRECT_COLS : j->N);
        return true;
    }
    size_t pbytes = (size_t)j->K * NP + (size_t)j->nu * 3 * NP * 4;
    unsigned char *pbuf = aligned_alloc(64, (size_t)threads * pbytes);
    if (!pbuf)
        return false;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < j->Mpad; m++)
        quant_row(j, m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int t = 0; t < panels; t++) {
        unsigned char *mine = pbuf + (size_t)omp_get_thread_num() * pbytes;
        panel p = {.q = (int8_t *)mine};
        p.d = (float *)(mine + (size_t)j->K * NP);
        p.m = p.d + (size_t)j->nu * NP;
        p.c = (int32_t *)(p.m + (size_t)j->nu * NP);
        panel_task(j, &p, t * NP);
    }
    free(pbuf);
    return true;
}

sd_status sd_linear_int8_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             sd_act act, int M, int N, int K, sd_dtensor *out)
{
    size_t be, bb;
    sd_dtype_block(w->dtype, &be, &bb);
    int8_job j = {.type = w->dtype, .row_bytes = (size_t)K / be * bb, .x_half = x->dtype == SD_DTYPE_F16,
                  .act = act, .M = M, .Mpad = (M + MT - 1) / MT * MT, .N = N, .K = K, .nb = K / QK};
    block_type(w->dtype, &j.mins, &j.ub);
    j.nu = K / j.ub;
    j.amx = sd_linear_int8_route() == SD_INT8_AMX && M > DIRECT_ROWS;
    sd_status st = sd_cl_finish(cl);
    if (st)
        return st;
    size_t qbytes, sbytes;
    bool sized = sd_mul_size((size_t)j.Mpad, (size_t)K, &qbytes) && sd_mul_size(qbytes / QK, sizeof(float), &sbytes);
    j.aq = sized ? aligned_alloc(64, qbytes) : NULL; /* a multiple of 16 * 32 bytes */
    j.ad = sized ? malloc(sbytes) : NULL;
    j.am = sized ? malloc(sbytes) : NULL;
    sd_dnnl_mapping mx = {0}, mw = {0}, mb = {0}, mo = {0};
    if (!j.aq || !j.ad || !j.am) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "linear (int8): out of memory for the quantised input");
        goto done;
    }
    if ((st = sd_dnnl_map(cl, x->buf, x->numel * sd_dtype_size(x->dtype), false, &mx)) ||
        (st = sd_dnnl_map(cl, w->buf, (size_t)N * j.row_bytes, false, &mw)) ||
        (st = sd_dnnl_map(cl, bias ? bias->buf : NULL, bias ? bias->numel * 4 : 0, false, &mb)) ||
        (st = sd_dnnl_map(cl, out->buf, out->numel * 4, true, &mo)))
        goto done;
    j.x = mx.ptr;
    j.w = mw.ptr;
    j.bias = mb.ptr;
    j.out = mo.ptr;
    if (!run_job(&j))
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "linear (int8): out of memory for the weight panels");
done:
    sd_dnnl_unmap(cl, &mx);
    sd_dnnl_unmap(cl, &mw);
    sd_dnnl_unmap(cl, &mb);
    sd_dnnl_unmap(cl, &mo);
    free(j.aq);
    free(j.ad);
    free(j.am);
    return st;
}

#else

sd_int8_isa sd_linear_int8_route(void)
{
    return SD_INT8_NONE;
}

sd_int8_isa sd_linear_int8_cap(sd_int8_isa max)
{
    (void)max;
    return SD_INT8_NONE;
}

bool sd_linear_int8_takes(sd_dtype dtype)
{
    (void)dtype;
    return false;
}

sd_status sd_linear_int8_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             sd_act act, int M, int N, int K, sd_dtensor *out)
{
    (void)x, (void)w, (void)bias, (void)act, (void)M, (void)N, (void)K, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "linear (int8): not available in this build");
}

#endif
