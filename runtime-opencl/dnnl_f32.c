/* The fp32 host routes of matrix products and convolutions (runtime-opencl/dnnl.h): oneDNN's
 * fp32 primitives on PoCL's host-memory buffers, mapped without copying. Nothing is kept between
 * calls but what oneDNN's own primitive cache keeps (primitives per shape): f16 weights are
 * widened to f32 per call into pooled scratch buffers (a product's B in its own plain layout,
 * which oneDNN's brgemm copies block by block; a convolution's weights straight into the blocked
 * layout the primitive asks for), so a model keeps its weights in f16 as on the OpenCL route. */
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/gemm.h"
#include "core/checked.h"
#include "core/half.h"
#include <stdlib.h>
#include <string.h>

#ifndef SDFLOW_HAVE_DNNL

void sd_dnnl_f32_set_min_flops(double flops)
{
    (void)flops;
}

bool sd_dnnl_f32_worth(double flops)
{
    (void)flops;
    return false;
}

bool sd_dnnl_f32_matmul_takes(sd_cl *cl, const sd_dnnl_matmul *job)
{
    (void)cl, (void)job;
    return false;
}

sd_status sd_dnnl_matmul_f32(sd_cl *cl, const sd_dnnl_matmul *job)
{
    (void)job;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "fp32 host route: this build of sdflow has no oneDNN");
}

sd_status sd_dnnl_conv2d_f32(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out)
{
    (void)x, (void)w, (void)bias, (void)p, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "fp32 host route: this build of sdflow has no oneDNN");
}

#else

#include "runtime-opencl/dnnl_internal.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define X86_AVX512 1
#define AVX512 __attribute__((target("avx512f")))

AVX512 static void half_to_float_avx512(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++)
        dst[i] = sd_half_to_float(src[i]);
}
#endif

/* Conversions of at least this many values run on OpenMP's threads (oneDNN's, idle meanwhile). */
#define PARALLEL_MIN_VALUES ((size_t)1 << 16)
#define WIDEN_CHUNK ((size_t)1 << 14)

static void half_to_float_run(float *dst, const uint16_t *src, size_t n)
{
#ifdef X86_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        half_to_float_avx512(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = sd_half_to_float(src[i]);
}

void sd_dnnl_half_to_float(float *dst, const uint16_t *src, size_t n)
{
    long chunks = (long)((n + WIDEN_CHUNK - 1) / WIDEN_CHUNK);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN_VALUES)
    for (long i = 0; i < chunks; i++) {
        size_t at = (size_t)i * WIDEN_CHUNK;
        half_to_float_run(dst + at, src + at, n - at < WIDEN_CHUNK ? n - at : WIDEN_CHUNK);
    }
}

/* An operand's elements as f32 on the host: t's own mapped buffer when t is f32; else a pooled
 * scratch buffer (*tmp) holding t widened from f16, mapped in *m. Give back with
 * sd_dnnl_scratch_done. */
static sd_status f32_view(sd_cl *cl, const sd_dtensor *t, sd_scratch *tmp, sd_dnnl_mapping *m, float **out)
{
    *out = NULL;
    if (t->dtype == SD_DTYPE_F32) {
        sd_status st = sd_dnnl_map(cl, t->buf, t->numel * sizeof(float), false, m);
        *out = m->ptr;
        return st;
    }
    sd_dnnl_mapping src = {0};
    sd_status st = sd_scratch_get(cl, t->numel, sizeof(float), "fp32 host route operand", tmp);
    if (!st && !(st = sd_dnnl_map(cl, t->buf, t->numel * sizeof(uint16_t), false, &src)) &&
        !(st = sd_dnnl_map(cl, tmp->buf, t->numel * sizeof(float), true, m))) {
        sd_dnnl_half_to_float(m->ptr, src.ptr, t->numel);
        *out = m->ptr;
    }
    sd_dnnl_unmap(cl, &src);
    return st;
}

/* Attributes for act after the product, with the product scaled by alpha (no bias then). */
static sd_status attributes(sd_cl *cl, sd_act act, float alpha, dnnl_primitive_attr_t *attr)
{
    sd_status st = sd_dnnl_attr(cl, act, attr);
    if (!st && alpha != 1.0f)
        TRY(dnnl_primitive_attr_set_output_scales(*attr, 1, 0, &alpha), "product scale");
done:
    return st;
}

/* ---- Matrix products ---- */

static double min_flops = SD_DNNL_F32_MIN_FLOPS;

void sd_dnnl_f32_set_min_flops(double flops)
{
    min_flops = flops;
}

bool sd_dnnl_f32_worth(double flops)
{
    return flops >= min_flops;
}

bool sd_dnnl_f32_matmul_takes(sd_cl *cl, const sd_dnnl_matmul *j)
{
    /* act(alpha * A B + bias): oneDNN's output scale is not documented to leave the bias out,
     * so alpha together with a bias stays on the OpenCL kernel (no model layer asks for both). */
    return sd_cl_host_fp32(cl) && !sd_dtype_is_blocks(j->b->dtype) && j->M > 0 && j->N > 0 && j->K > 0 &&
           j->batch_a > 0 && (j->alpha == 1.0f || !j->bias) && sd_dnnl_f32_worth(2.0 * j->N * (double)j->K * SD_DNNL_F32_ROWS);
}

sd_status sd_dnnl_matmul_f32(sd_cl *cl, const sd_dnnl_matmul *j)
{
    struct sd_dnnl *d;
    sd_status st = sd_dtensor_require_data(j->b, "matmul", "b");
    if (st || (st = sd_dnnl_engine(cl, &d)) || (st = sd_cl_finish(cl)))
        return st;
    long M = j->M, N = j->N, K = j->K;
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
    dnnl_dims_t ad = {j->batch_a, M, K}, bd = {j->batch_b, K, N}, cd = {j->batch_a, M, N}, biasd = {1, 1, N};
    dnnl_dims_t as = {M * K, j->trans_a ? 1 : K, j->trans_a ? M : 1};
    dnnl_dims_t bs = {K * N, j->trans_b ? 1 : N, j->trans_b ? K : 1};
    sd_dnnl_mapping am = {0}, bm = {0}, biasm = {0}, cm = {0};
    sd_scratch a_tmp = {0}, b_tmp = {0};
    float *a = NULL, *b = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    TRY(dnnl_memory_desc_init_by_strides(&a_md, 3, ad, dnnl_f32, as), "matmul A");
    TRY(dnnl_memory_desc_init_by_strides(&b_md, 3, bd, dnnl_f32, bs), "matmul B");
    TRY(dnnl_memory_desc_init_by_tag(&c_md, 3, cd, dnnl_f32, dnnl_abc), "matmul C");
    TRY(dnnl_memory_desc_init_by_tag(&bias_md, 3, biasd, dnnl_f32, dnnl_abc), "matmul bias");
    dnnl_matmul_desc_t desc;
    TRY(dnnl_matmul_desc_init(&desc, &a_md, &b_md, j->bias ? &bias_md : NULL, &c_md), "matmul");
    if ((st = attributes(cl, j->act, j->alpha, &attr)))
        goto done;
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL), "matmul");
    TRY(dnnl_primitive_create(&prim, pd), "matmul primitive");
    if ((st = f32_view(cl, j->a, &a_tmp, &am, &a)) || (st = f32_view(cl, j->b, &b_tmp, &bm, &b)) ||
        (st = sd_dnnl_map(cl, j->bias ? j->bias->buf : NULL, (size_t)N * 4, false, &biasm)) ||
        (st = sd_dnnl_map(cl, j->out->buf, j->out->numel * 4, true, &cm)))
        goto done;
    sd_dnnl_arg args[] = {{DNNL_ARG_SRC, &a_md, a}, {DNNL_ARG_WEIGHTS, &b_md, b}, {DNNL_ARG_DST, &c_md, cm.ptr},
                          {DNNL_ARG_BIAS, &bias_md, biasm.ptr}};
    st = sd_dnnl_execute(cl, d, prim, args, 4, "matmul");
done:
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    sd_dnnl_scratch_done(cl, &am, &a_tmp);
    sd_dnnl_scratch_done(cl, &bm, &b_tmp);
    sd_dnnl_unmap(cl, &biasm);
    sd_dnnl_unmap(cl, &cm);
    return st;
}

/* ---- Convolution ---- */

/* tab[x] = the offset of index x of dimension `dim` in the blocked layout md, so that element
 * (i0, i1, i2, i3) lies at offset0 + tab0[i0] + tab1[i1] + tab2[i2] + tab3[i3]: each outer and
 * inner block index depends on one dimension's index alone. */
static void dim_offsets(const dnnl_memory_desc_t *md, int dim, size_t *tab)
{
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    for (dnnl_dim_t x = 0; x < md->dims[dim]; x++) {
        dnnl_dim_t rem = x, off = 0, inner_stride = 1;
        for (int k = b->inner_nblks - 1; k >= 0; k--) {
            if (b->inner_idxs[k] == dim) {
                off += rem % b->inner_blks[k] * inner_stride;
                rem /= b->inner_blks[k];
            }
            inner_stride *= b->inner_blks[k];
        }
        tab[x] = (size_t)(off + rem * b->strides[dim]);
    }
}

/* Weight i of w's data (f32 or f16) as f32. */
static inline float weight_at(const void *src, bool half, size_t i)
{
    return half ? sd_half_to_float(((const uint16_t *)src)[i]) : ((const float *)src)[i];
}

/* Output channels [o0, o0 + n) of weights whose channel o holds `row` values at src + o * row
 * (f32 or f16) into the layout: value `at` of channel o goes to base[at_off[at] + t0[o]]. */
static void channels_scalar(float *base, const void *src, bool half, size_t row, size_t o0, size_t n,
                            const size_t *t0, const size_t *at_off)
{
    for (size_t at = 0; at < row; at++)
        for (size_t j = 0; j < n; j++)
            base[at_off[at] + t0[o0 + j]] = weight_at(src, half, (o0 + j) * row + at);
}

#ifdef X86_AVX512
/* channels_scalar for n <= 16 channels that lie at adjacent floats (t0[o0 + j] = t0[o0] + j):
 * each position's n values gathered from the n rows into one store. 16 * row fits an int. */
AVX512 static void channels_avx512(float *base, const void *src, bool half, size_t row, size_t o0, size_t n,
                                   const size_t *t0, const size_t *at_off)
{
    __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32((int)row));
    __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    float *dst = base + t0[o0];
    /* An f16 gather reads 4 bytes a value: the rows' last value is read alone, never past the end. */
    size_t gathered = half ? row - 1 : row;
    for (size_t at = 0; at < gathered; at++) {
        __m512 v;
        if (half) {
            __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx,
                                                    (const uint16_t *)src + o0 * row + at, 2);
            v = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        } else {
            v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, (const float *)src + o0 * row + at, 4);
        }
        _mm512_mask_storeu_ps(dst + at_off[at], m, v);
    }
    for (size_t at = gathered; at < row; at++)
        for (size_t j = 0; j < n; j++)
            dst[at_off[at] + j] = weight_at(src, half, (o0 + j) * row + at);
}
#endif

/* dst (md: a 4-D blocked f32 layout of w's shape, zero-padded where md pads) = the weights w
 * [O, C, KH, KW] (f32 or f16), up to 16 output channels at a time on OpenMP's threads; where
 * md's innermost block is of output channels (each (c, h, w) then takes a run of adjacent
 * floats), a run's values are gathered 16 at a time. */
static sd_status weights_to(sd_cl *cl, const sd_dtensor *w, const void *src, const dnnl_memory_desc_t *md, float *dst)
{
    if (md->format_kind != dnnl_blocked)
        return sd_set_error(cl->ctx, SD_ERR_CL, "oneDNN: fp32 convolution weights in a layout that is not blocked");
    size_t O = (size_t)w->shape[0], row = w->numel / (O ? O : 1);
    int C = (int)w->shape[1], KH = (int)w->shape[2], KW = (int)w->shape[3];
    size_t ntab = (size_t)w->shape[0] + (size_t)C + (size_t)KH + (size_t)KW;
    size_t *tab = malloc((ntab + row) * sizeof *tab);
    if (!tab)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory converting convolution weights");
    size_t *t0 = tab, *t1 = t0 + O, *t2 = t1 + C, *t3 = t2 + KH, *at_off = t3 + KW;
    for (int i = 0; i < 4; i++)
        dim_offsets(md, i, i == 0 ? t0 : i == 1 ? t1 : i == 2 ? t2 : t3);
    for (int c = 0, at = 0; c < C; c++)
        for (int h = 0; h < KH; h++)
            for (int x = 0; x < KW; x++)
                at_off[at++] = t1[c] + t2[h] + t3[x];
    if (memcmp(md->dims, md->padded_dims, 4 * sizeof md->dims[0]) != 0)
        memset(dst, 0, dnnl_memory_desc_get_size(md));
    float *base = dst + md->offset0;
    bool half = w->dtype == SD_DTYPE_F16;
#ifdef X86_AVX512
    bool gather = __builtin_cpu_supports("avx512f") && row <= (size_t)INT32_MAX / 16;
#endif
    long runs = (long)((O + 15) / 16);
#pragma omp parallel for schedule(dynamic, 1) if (w->numel >= PARALLEL_MIN_VALUES)
    for (long r = 0; r < runs; r++) {
        size_t o0 = (size_t)r * 16, n = O - o0 < 16 ? O - o0 : 16;
        bool adjacent = true;
        for (size_t j = 1; j < n; j++)
            adjacent = adjacent && t0[o0 + j] == t0[o0] + j;
#ifdef X86_AVX512
        if (gather && adjacent) {
            channels_avx512(base, src, half, row, o0, n, t0, at_off);
            continue;
        }
#endif
        channels_scalar(base, src, half, row, o0, n, t0, at_off);
    }
    free(tab);
    return SD_OK;
}

/* The fp32 route's weights for the bands: w widened per call into the first band's layout. */
static sd_status f32_weights_ready(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *w, const sd_dnnl_conv *c,
                                   sd_dnnl_mapping *view, sd_scratch *tmp)
{
    (void)d;
    sd_dnnl_mapping src = {0};
    sd_status st = sd_dnnl_map(cl, w->buf, w->numel * sd_dtype_size(w->dtype), false, &src);
    if (!st && !(st = sd_dnnl_scratch_view(cl, dnnl_memory_desc_get_size(&c->w_want), "conv2d weights", tmp, view)))
        st = weights_to(cl, w, src.ptr, &c->w_want, view->ptr);
    sd_dnnl_unmap(cl, &src);
    return st;
}

sd_status sd_dnnl_conv2d_f32(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out)
{
    struct sd_dnnl *d;
    sd_status st = sd_dtensor_require_data(w, "conv2d", "weight");
    if (st || (st = sd_dnnl_engine(cl, &d)) || (st = sd_cl_finish(cl)))
        return st;
    return sd_dnnl_conv_bands(cl, d, x, w, bias, p, out, dnnl_f32, f32_weights_ready);
}

#endif
