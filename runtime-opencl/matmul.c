/* Matrix products: packing, the register-tile GEMM, and the matmul / linear ops. */
#include "runtime-opencl/gemm.h"
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/linear_int8.h"
#include "runtime-opencl/ops_quant.h"
#include "core/checked.h"
#include <limits.h>
#include <stdio.h>

#define GEMM_FILE "gemm.cl"
#define GEMM_B_CACHED_BYTES (2u << 20) /* about one core's L2 */

static sd_status scratch_get(sd_cl *cl, size_t elems, size_t elem_size, const char *what, bool exact,
                             sd_scratch *s)
{
    size_t bytes;
    s->buf = NULL;
    s->cap = 0;
    if (!sd_mul_size(elems, elem_size, &bytes))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "%s: size overflows", what);
    return (exact ? sd_cl_buffer_get_exact : sd_cl_buffer_get)(cl, bytes, what, &s->buf, &s->cap);
}

sd_status sd_scratch_get(sd_cl *cl, size_t elems, size_t elem_size, const char *what, sd_scratch *s)
{
    return scratch_get(cl, elems, elem_size, what, false, s);
}

sd_status sd_scratch_get_exact(sd_cl *cl, size_t elems, size_t elem_size, const char *what, sd_scratch *s)
{
    return scratch_get(cl, elems, elem_size, what, true, s);
}

void sd_scratch_release(sd_cl *cl, sd_scratch *s)
{
    sd_cl_buffer_release(cl, s->buf, s->cap);
    s->buf = NULL;
    s->cap = 0;
}

int sd_gemm_mr(const sd_cl *cl)
{
    (void)cl;
    return 8;
}

static void gemm_options(const sd_cl *cl, const char *extra, char *buf, size_t size)
{
    snprintf(buf, size, "-DMR=%d%s", sd_gemm_mr(cl), extra);
}

/* Work-group size 1 on CPUs (one work-item per tile, docs/design.md §7); the driver's choice elsewhere. */
static const size_t *tile_local(const sd_cl *cl)
{
    static const size_t one[3] = {1, 1, 1};
    return cl->is_gpu ? NULL : one;
}

/* The pack kernels: `name` packs `lines` rows of A (or columns of B) of src into panels of
 * `width`; `half_define` is the build option for an f16 src; stride1 and stride2 are the element
 * strides in the kernel's argument order. Global: (ceil(lines / width), batch). */
static sd_status pack_panels(sd_cl *cl, const char *name, const char *half_define, int width, cl_mem src,
                             sd_dtype dtype, long off, int lines, int K, long stride1, long stride2, long s_b,
                             int batch, bool exact, sd_scratch *out)
{
    size_t tiles = ((size_t)lines + (size_t)width - 1) / (size_t)width, elems;
    if (!sd_mul_size(tiles * (size_t)width, (size_t)K, &elems) || !sd_mul_size(elems, (size_t)batch, &elems))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "%s: packed size overflows", name);
    bool own = out->buf == NULL;
    sd_status st = own ? scratch_get(cl, elems, sizeof(float), name, exact, out) : SD_OK;
    if (st)
        return st;
    char opts[64];
    gemm_options(cl, dtype == SD_DTYPE_F16 ? half_define : "", opts, sizeof opts);
    cl_kernel k;
    if ((st = sd_cl_kernel(cl, GEMM_FILE, name, opts, &k)))
        goto fail;
    sd_cl_arg args[] = {SD_ARG_MEM(src), SD_ARG_LONG(off), SD_ARG_MEM(out->buf), SD_ARG_INT(lines), SD_ARG_INT(K),
                        SD_ARG_LONG(stride1), SD_ARG_LONG(stride2), SD_ARG_LONG(s_b),
                        SD_ARG_LONG(tiles * (size_t)width * (size_t)K)};
    size_t global[2] = {tiles, (size_t)batch};
    if ((st = sd_cl_launch(cl, k, 2, global, tile_local(cl), SD_NARGS(args), args)))
        goto fail;
    return SD_OK;
fail:
    if (own)
        sd_scratch_release(cl, out);
    return st;
}

sd_status sd_gemm_pack_a(sd_cl *cl, cl_mem src, sd_dtype dtype, long off, int M, int K, long s_m, long s_k,
                         long s_b, int batch, sd_scratch *out)
{
    return pack_panels(cl, "gemm_pack_a", " -DA_HALF", sd_gemm_mr(cl), src, dtype, off, M, K, s_m, s_k, s_b,
                       batch, false, out);
}

sd_status sd_gemm_pack_b(sd_cl *cl, cl_mem src, sd_dtype dtype, long off, int N, int K, long s_k, long s_n,
                         long s_b, int batch, sd_scratch *out)
{
    return pack_panels(cl, "gemm_pack_b", " -DB_HALF", SD_GEMM_NR, src, dtype, off, N, K, s_k, s_n, s_b, batch,
                       false, out);
}

/* W [N, K] of a block type as B = W^T, packed into *out (allocated here) by dequantising each
 * block into its panel: the f32 panels are the only expanded form, per call. */
static sd_status pack_b_blocks(sd_cl *cl, const sd_dtensor *w, int N, int K, sd_scratch *out)
{
    size_t tiles = ((size_t)N + SD_GEMM_NR - 1) / SD_GEMM_NR, elems;
    if (!sd_mul_size(tiles * SD_GEMM_NR, (size_t)K, &elems))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "linear: packed size overflows");
    cl_kernel k;
    sd_status st = sd_cl_kernel(cl, "dequant.cl", "gemm_pack_b_blocks", NULL, &k);
    if (!st)
        st = sd_scratch_get(cl, elems, sizeof(float), "gemm_pack_b_blocks", out);
    if (st)
        return st;
    sd_cl_arg args[] = {SD_ARG_MEM(w->buf), SD_ARG_MEM(out->buf), SD_ARG_INT(N), SD_ARG_INT(K),
                        SD_ARG_INT((int)w->dtype)};
    if ((st = sd_cl_launch(cl, k, 1, &tiles, tile_local(cl), SD_NARGS(args), args)))
        sd_scratch_release(cl, out);
    return st;
}

sd_status sd_gemm_packed_b(sd_cl *cl, const sd_dtensor *src, long M, int N, int K, long s_k, long s_n, long s_b,
                           int batch, sd_scratch *tmp, cl_mem *out)
{
    sd_derived_key key = {SD_DERIVED_GEMM_B, {N, K, s_k, s_n, s_b, batch}};
    if (src->derived && (*out = sd_derived_find(src, &key)))
        return SD_OK;
    bool keep = src->derived && M <= SD_GEMM_KEEP_MAX_ROWS;
    sd_status st = pack_panels(cl, "gemm_pack_b", " -DB_HALF", SD_GEMM_NR, src->buf, src->dtype, 0, N, K, s_k, s_n,
                               s_b, batch, keep, tmp);
    *out = tmp->buf;
    return st || !keep ? st : sd_derived_add(src, &key, tmp);
}

sd_status sd_gemm_run(sd_cl *cl, const sd_gemm_job *j)
{
    char opts[64];
    gemm_options(cl, j->lda <= 0 ? "" : j->a_dtype == SD_DTYPE_F16 ? " -DA_ROWS -DA_HALF" : " -DA_ROWS", opts,
                 sizeof opts);
    cl_kernel k;
    sd_status st = sd_cl_kernel(cl, GEMM_FILE, "gemm_tile", opts, &k);
    if (st)
        return st;
    int mr = sd_gemm_mr(cl);
    /* Work-item order: a packed B small enough to stay in cache is swept per A tile (N fastest);
     * a large one is better reused panel by panel across all A tiles (M fastest). */
    int m_fastest = (double)j->N * j->K * sizeof(float) > GEMM_B_CACHED_BYTES;
    sd_cl_arg args[] = {SD_ARG_MEM(j->ap), SD_ARG_MEM(j->bp), SD_ARG_MEM(j->c), SD_ARG_MEM(j->bias),
                        SD_ARG_INT(j->M), SD_ARG_INT(j->N), SD_ARG_INT(j->K), SD_ARG_INT(j->lda), SD_ARG_INT(j->ldc),
                        SD_ARG_LONG(j->ap_bs), SD_ARG_LONG(j->bp_bs), SD_ARG_LONG(j->c_off),
                        SD_ARG_LONG(j->c_bs), SD_ARG_FLOAT(j->alpha), SD_ARG_INT(j->bias_mode),
                        SD_ARG_INT(j->act), SD_ARG_INT(m_fastest)};
    size_t nt = ((size_t)j->N + SD_GEMM_NR - 1) / SD_GEMM_NR, mt = ((size_t)j->M + (size_t)mr - 1) / (size_t)mr;
    size_t global[3] = {m_fastest ? mt : nt, m_fastest ? nt : mt, (size_t)j->batch};
    return sd_cl_launch(cl, k, 3, global, tile_local(cl), SD_NARGS(args), args);
}

/* Product of dims [0, n); false when it exceeds INT_MAX. */
static bool dims_int(const int64_t *d, int n, int *out)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++) {
        if (d[i] < 0 || (d[i] && p > INT_MAX / d[i]))
            return false;
        p *= d[i];
    }
    *out = (int)p;
    return true;
}

/* Runs job through oneDNN when the context computes in bf16 (or fails because it cannot) or
 * the fp32 host route takes it (sd_dnnl_f32_matmul_takes): true with the outcome in *st; false
 * when the op's own kernels run it, unless B's data was released by an earlier bf16 conversion
 * (true with that error). */
static bool on_host(sd_cl *cl, const sd_dnnl_matmul *job, sd_status *st)
{
    bool bf16 = false;
    if ((*st = sd_dnnl_wanted(cl, &bf16)))
        return true;
    if (bf16 && job->M && job->N && job->K && job->batch_a) {
        *st = sd_dnnl_matmul_run(cl, job);
        return true;
    }
    if (!bf16 && sd_dnnl_f32_matmul_takes(cl, job)) {
        *st = sd_dnnl_matmul_f32(cl, job);
        return true;
    }
    return (*st = sd_dtensor_require_data(job->b, "matmul", "b")) != SD_OK;
}

static bool valid_bias(const sd_dtensor *bias, int n)
{
    return !bias || (bias->dtype == SD_DTYPE_F32 && bias->numel == (size_t)n);
}

sd_status sd_op_matmul(sd_cl *cl, const sd_dtensor *a, bool trans_a, const sd_dtensor *b,
                       bool trans_b, const sd_dtensor *bias, sd_act act, float alpha,
                       sd_dtensor **out)
{
    *out = NULL;
    char da[96], db[96];
    int M, K, Kb, N, batch_a, batch_b;
    sd_status st = sd_dtensor_require_float(a, "matmul", "a");
    if (st || (st = sd_dtensor_require_float(b, "matmul", "b")))
        return st;
    if (a->ndim < 2 || b->ndim < 2)
        goto bad;
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    if (!dims_int(trans_a ? &ac : &ar, 1, &M) || !dims_int(trans_a ? &ar : &ac, 1, &K) ||
        !dims_int(trans_b ? &bc : &br, 1, &Kb) || !dims_int(trans_b ? &br : &bc, 1, &N) ||
        !dims_int(a->shape, a->ndim - 2, &batch_a) || !dims_int(b->shape, b->ndim - 2, &batch_b) ||
        K != Kb || (batch_b != 1 && batch_b != batch_a) || !valid_bias(bias, N))
        goto bad;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++)
        shape[i] = a->shape[i];
    shape[a->ndim - 2] = M;
    shape[a->ndim - 1] = N;
    st = sd_dtensor_new(cl, SD_DTYPE_F32, a->ndim, shape, out);
    if (st)
        return st;
    sd_dnnl_matmul dj = {.a = a, .b = b, .bias = bias, .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N,
                         .K = K, .batch_a = batch_a, .batch_b = batch_b, .act = act, .alpha = alpha, .out = *out};
    if (on_host(cl, &dj, &st))
        return sd_dtensor_drop_on_error(out, st);
    sd_scratch ap = {0}, bp = {0};
    long mk = (long)M * K, kn = (long)K * N;
    int mr = sd_gemm_mr(cl);
    /* f32 rows are read in place; transposed or f16 A is packed first. */
    bool a_rows = !trans_a && a->dtype == SD_DTYPE_F32 && K > 0;
    if (!a_rows)
        st = sd_gemm_pack_a(cl, a->buf, a->dtype, 0, M, K, trans_a ? 1 : K, trans_a ? M : 1, mk, batch_a, &ap);
    cl_mem bpanels = NULL;
    if (!st)
        st = sd_gemm_packed_b(cl, b, (long)M * batch_a, N, K, trans_b ? 1 : N, trans_b ? K : 1, kn, batch_b, &bp, &bpanels);
    if (!st) {
        sd_gemm_job job = {
            .M = M, .N = N, .K = K, .batch = batch_a, .ap = a_rows ? a->buf : ap.buf, .bp = bpanels,
            .lda = a_rows ? K : 0, .ap_bs = a_rows ? mk : (long)((M + mr - 1) / mr) * mr * K,
            .bp_bs = batch_b == 1 ? 0 : (long)((N + SD_GEMM_NR - 1) / SD_GEMM_NR) * SD_GEMM_NR * K,
            .c = (*out)->buf, .c_off = 0, .c_bs = (long)M * N, .ldc = N,
            .bias = bias ? bias->buf : NULL, .bias_mode = bias ? 1 : 0, .alpha = alpha, .act = act};
        st = sd_gemm_run(cl, &job);
    }
    sd_scratch_release(cl, &ap);
    sd_scratch_release(cl, &bp);
    return sd_dtensor_drop_on_error(out, st);
bad:
    return sd_set_error(cl->ctx, SD_ERR_INVALID,
                        "matmul: incompatible shapes a %s%s, b %s%s%s", sd_dtensor_describe(a, da, sizeof da),
                        trans_a ? " (transposed)" : "", sd_dtensor_describe(b, db, sizeof db),
                        trans_b ? " (transposed)" : "", bias ? " with a bias" : "");
}

/* linear in bf16 mode (oneDNN) with a w of a block type: w expanded to f32 for this call. */
static sd_status linear_bf16_blocks(sd_cl *cl, sd_dnnl_matmul *dj)
{
    sd_dtensor *wf = NULL;
    sd_status st = sd_op_dequantize_tensor(cl, dj->b, SD_DTYPE_F32, &wf);
    if (!st) {
        dj->b = wf;
        st = sd_dnnl_matmul_run(cl, dj);
    }
    sd_dtensor_free(wf);
    return st;
}

sd_status sd_op_linear(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                       sd_act act, sd_dtensor **out)
{
    *out = NULL;
    char dx[96], dw[96];
    int M, K, N;
    bool blocks = sd_dtype_is_blocks(w->dtype);
    sd_status st = sd_dtensor_require_float(x, "linear", "input");
    if (st || (st = sd_dtensor_require_float(bias, "linear", "bias")))
        return st;
    if (w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1] || !dims_int(x->shape, x->ndim - 1, &M) ||
        !dims_int(&w->shape[1], 1, &K) || !dims_int(&w->shape[0], 1, &N) || !valid_bias(bias, N))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "linear: input %s does not fit weight %s%s",
                            sd_dtensor_describe(x, dx, sizeof dx), sd_dtensor_describe(w, dw, sizeof dw),
                            bias ? " and bias" : "");
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = N;
    st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, out);
    if (st)
        return st;
    sd_dnnl_matmul dj = {.a = x, .b = w, .bias = bias, .trans_b = true, .M = M, .N = N, .K = K, .batch_a = 1,
                         .batch_b = 1, .act = act, .alpha = 1.0f, .out = *out};
    bool bf16 = false;
    if (blocks && (st = sd_dnnl_wanted(cl, &bf16)))
        return sd_dtensor_drop_on_error(out, st);
    if (blocks && bf16 && M && N && K)
        return sd_dtensor_drop_on_error(out, sd_linear_int8_takes(w->dtype)
                                                 ? sd_linear_int8_run(cl, x, w, bias, act, M, N, K, *out)
                                                 : linear_bf16_blocks(cl, &dj));
    if (!blocks && on_host(cl, &dj, &st))
        return sd_dtensor_drop_on_error(out, st);
    sd_scratch ap = {0}, bp = {0};
    bool a_rows = x->dtype == SD_DTYPE_F32 && K > 0;
    if (!a_rows)
        st = sd_gemm_pack_a(cl, x->buf, x->dtype, 0, M, K, K, 1, 0, 1, &ap);
    cl_mem bpanels = NULL;
    if (!st && blocks) {
        st = pack_b_blocks(cl, w, N, K, &bp);
        bpanels = bp.buf;
    } else if (!st) {
        st = sd_gemm_packed_b(cl, w, M, N, K, 1, K, 0, 1, &bp, &bpanels);
    }
    if (!st) {
        sd_gemm_job job = {.M = M, .N = N, .K = K, .batch = 1, .ap = a_rows ? x->buf : ap.buf,
                           .lda = a_rows ? K : 0, .bp = bpanels, .c = (*out)->buf, .ldc = N,
                           .bias = bias ? bias->buf : NULL, .bias_mode = bias ? 1 : 0, .alpha = 1.0f,
                           .act = act};
        st = sd_gemm_run(cl, &job);
    }
    sd_scratch_release(cl, &ap);
    sd_scratch_release(cl, &bp);
    return sd_dtensor_drop_on_error(out, st);
}
