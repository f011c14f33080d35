/* Basic tensor ops: host side of kernels/ops_basic.cl. See ops_basic.h. */
#include "runtime-opencl/ops_basic.h"
#include <math.h>

#define KFILE "ops_basic.cl"
#define RUN 64   /* elements per work-item, as in the kernel file */
#define GN_WG 256  /* work-group size of group_norm_stats_wg, as in the kernel file */
#define ROW_WG 256 /* work-group size of the *_wg row kernels, as in the kernel file */

static size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

/* Work-group size for a 1-D launch of n heavy work-items (rows, groups): the largest divisor of
 * n up to 256 that still leaves 4 groups per compute unit (PoCL runs a work-group on one
 * thread; too many tiny groups cost scheduling, one huge group leaves cores idle). */
static size_t rows_local(const sd_cl *cl, size_t n)
{
    size_t cap = n / (4 * (size_t)(cl->compute_units ? cl->compute_units : 1));
    if (cap > 256)
        cap = 256;
    for (size_t l = cap; l > 1; l--)
        if (n % l == 0)
            return l;
    return 1;
}

/* Launches a row kernel over `rows` rows: CPU one work-item per row, GPU a work-group of ROW_WG
 * per row. */
static sd_status launch_rows(sd_cl *cl, cl_kernel k, bool gpu, size_t rows, size_t nargs, const sd_cl_arg *args)
{
    size_t global = rows, local = rows_local(cl, rows);
    if (gpu) {
        global = rows * ROW_WG;
        local = ROW_WG;
    }
    return sd_cl_launch(cl, k, 1, &global, &local, nargs, args);
}

static bool use_gpu(const sd_cl *cl, sd_op_variant variant)
{
    return variant == SD_VARIANT_GPU || (variant == SD_VARIANT_AUTO && cl->is_gpu);
}

static sd_status require_f32(sd_cl *cl, const char *op, const char *name, const sd_dtensor *t)
{
    char d[96];
    if (t->dtype != SD_DTYPE_F32)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: %s %s must be f32", op, name,
                            sd_dtensor_describe(t, d, sizeof d));
    return SD_OK;
}

static sd_status kernel(sd_cl *cl, const char *name, cl_kernel *k)
{
    return sd_cl_kernel(cl, KFILE, name, NULL, k);
}

/* A new f32 tensor with x's shape. */
static sd_status like(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    return sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, x->shape, out);
}

/* Launches an elementwise kernel (x, y, n, extra args...) over x into a new tensor. */
static sd_status elementwise(sd_cl *cl, const char *op, const char *kname, const sd_dtensor *x,
                             size_t nextra, const sd_cl_arg *extra, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    *out = NULL;
    if ((st = require_f32(cl, op, "input", x)) || (st = kernel(cl, kname, &k)) || (st = like(cl, x, &y)))
        goto done;
    sd_cl_arg args[5] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_LONG(x->numel)};
    for (size_t i = 0; i < nextra; i++)
        args[3 + i] = extra[i];
    size_t global = div_up(x->numel, RUN);
    if ((st = sd_cl_launch(cl, k, 1, &global, NULL, 3 + nextra, args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_unary(sd_cl *cl, sd_unary op, const sd_dtensor *x, sd_dtensor **out)
{
    static const char *const names[] = {"act_silu", "act_gelu_erf", "act_gelu_tanh", "act_quick_gelu",
                                        "act_sigmoid"};
    if ((unsigned)op > SD_UNARY_SIGMOID) {
        *out = NULL;
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "unary: unknown activation %d", (int)op);
    }
    return elementwise(cl, "unary", names[op], x, 0, NULL, out);
}

sd_status sd_op_scale(sd_cl *cl, const sd_dtensor *x, float mul, float add, sd_dtensor **out)
{
    sd_cl_arg extra[] = {SD_ARG_FLOAT(mul), SD_ARG_FLOAT(add)};
    return elementwise(cl, "scale", "affine", x, SD_NARGS(extra), extra, out);
}

sd_status sd_op_clamp(sd_cl *cl, const sd_dtensor *x, float lo, float hi, sd_dtensor **out)
{
    if (!(lo <= hi)) {
        *out = NULL;
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "clamp: min %g is above max %g", lo, hi);
    }
    sd_cl_arg extra[] = {SD_ARG_FLOAT(lo), SD_ARG_FLOAT(hi)};
    return elementwise(cl, "clamp", "clamp_f32", x, SD_NARGS(extra), extra, out);
}

sd_status sd_op_geglu(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "geglu", "input", x)))
        return st;
    int64_t last = x->shape[x->ndim - 1];
    if (last % 2 != 0 || last == 0 || last / 2 > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "geglu: last dimension of %s must be even and > 0",
                            sd_dtensor_describe(x, d, sizeof d));
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = last / 2;
    if ((st = kernel(cl, "geglu", &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(last / 2)};
    size_t global[2] = {div_up((size_t)(last / 2), RUN), x->numel / (size_t)last};
    if ((st = sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* ---- Broadcasting ---- */

/* Right-aligned broadcast of a and b into out_shape; element strides (0 on broadcast dims)
 * collapsed and padded to BDIMS dimensions, innermost last. Returns false when the shapes do not
 * broadcast. */
#define BDIMS 5
typedef struct bcast {
    int64_t dims[BDIMS];
    int64_t sa[BDIMS], sb[BDIMS];
    int64_t out_shape[SD_TENSOR_MAX_DIMS];
    int out_ndim;
} bcast;

_Static_assert(SD_TENSOR_MAX_DIMS == BDIMS, "broadcast kernel covers every tensor rank");

static bool bcast_plan(const sd_dtensor *a, const sd_dtensor *b, bcast *p)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t da[SD_TENSOR_MAX_DIMS], db[SD_TENSOR_MAX_DIMS], dout[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        da[i] = ia >= 0 ? a->shape[ia] : 1;
        db[i] = ib >= 0 ? b->shape[ib] : 1;
        if (da[i] != db[i] && da[i] != 1 && db[i] != 1)
            return false;
        dout[i] = da[i] == 1 ? db[i] : da[i];
    }
    p->out_ndim = n;
    for (int i = 0; i < n; i++)
        p->out_shape[i] = dout[i];
    /* Contiguous strides of a and b, zeroed where broadcast. */
    int64_t sa[SD_TENSOR_MAX_DIMS], sb[SD_TENSOR_MAX_DIMS], ra = 1, rb = 1;
    for (int i = n - 1; i >= 0; i--) {
        sa[i] = da[i] == 1 && dout[i] != 1 ? 0 : ra;
        sb[i] = db[i] == 1 && dout[i] != 1 ? 0 : rb;
        ra *= da[i];
        rb *= db[i];
    }
    /* Merge dimension i into the run below it when both strides continue contiguously. */
    int64_t md[SD_TENSOR_MAX_DIMS], ma[SD_TENSOR_MAX_DIMS], mb[SD_TENSOR_MAX_DIMS];
    int m = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (dout[i] == 1)
            continue;
        if (m > 0 && ma[m - 1] * md[m - 1] == sa[i] && mb[m - 1] * md[m - 1] == sb[i]) {
            md[m - 1] *= dout[i];
            continue;
        }
        md[m] = dout[i];
        ma[m] = sa[i];
        mb[m] = sb[i];
        m++;
    }
    /* Pad with leading size-1 dimensions (m <= SD_TENSOR_MAX_DIMS == BDIMS). */
    for (int i = 0; i < BDIMS; i++) {
        int src = BDIMS - 1 - i; /* merged list is innermost first */
        p->dims[i] = src < m ? md[src] : 1;
        p->sa[i] = src < m ? ma[src] : 0;
        p->sb[i] = src < m ? mb[src] : 0;
    }
    return true;
}

sd_status sd_op_binary(sd_cl *cl, sd_binary op, const sd_dtensor *a, const sd_dtensor *b,
                       sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    const char *opname = op == SD_BINARY_ADD ? "add" : "mul";
    char da[96], db[96];
    bcast p;
    *out = NULL;
    if ((st = require_f32(cl, opname, "a", a)) || (st = require_f32(cl, opname, "b", b)))
        return st;
    if (!bcast_plan(a, b, &p))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: shapes %s and %s do not broadcast", opname,
                            sd_dtensor_describe(a, da, sizeof da), sd_dtensor_describe(b, db, sizeof db));
    for (int i = 0; i < BDIMS; i++)
        if (p.dims[i] > INT32_MAX)
            return sd_set_error(cl->ctx, SD_ERR_LIMIT, "%s: dimension %lld too large", opname,
                                (long long)p.dims[i]);
    if ((st = kernel(cl, op == SD_BINARY_ADD ? "binary_add" : "binary_mul", &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, p.out_ndim, p.out_shape, &y)))
        goto done;
    cl_int8 dims = {{0}};
    cl_long8 sa = {{0}}, sb = {{0}};
    for (int i = 0; i < BDIMS; i++) {
        dims.s[i] = (cl_int)p.dims[i];
        sa.s[i] = p.sa[i];
        sb.s[i] = p.sb[i];
    }
    sd_cl_arg args[] = {SD_ARG_MEM(a->buf), SD_ARG_MEM(b->buf), SD_ARG_MEM(y->buf),
                        {sizeof dims, &dims}, {sizeof sa, &sa}, {sizeof sb, &sb}};
    size_t global[3] = {div_up((size_t)p.dims[4], RUN), (size_t)p.dims[3],
                        (size_t)p.dims[0] * (size_t)p.dims[1] * (size_t)p.dims[2]};
    if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* ---- Normalisation ---- */

/* Checks optional gamma/beta of n elements (both or neither; f32 or f16, the same dtype) and
 * sets *mode to the kernels' affine argument: 0 none, 1 f32, 2 f16. */
static sd_status check_affine(sd_cl *cl, const char *op, const sd_dtensor *gamma,
                              const sd_dtensor *beta, int64_t n, int *mode)
{
    char d[96];
    *mode = 0;
    if (!gamma && !beta)
        return SD_OK;
    if (!gamma || !beta)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: gamma and beta must be given together", op);
    sd_status st = sd_dtensor_require_float(gamma, op, "gamma");
    if (st)
        return st;
    if (gamma->dtype != beta->dtype)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: gamma and beta must have the same dtype", op);
    const sd_dtensor *t[2] = {gamma, beta};
    for (int i = 0; i < 2; i++)
        if ((int64_t)t[i]->numel != n)
            return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: %s %s must have %lld elements", op,
                                i ? "beta" : "gamma", sd_dtensor_describe(t[i], d, sizeof d), (long long)n);
    *mode = gamma->dtype == SD_DTYPE_F16 ? 2 : 1;
    return SD_OK;
}

sd_status sd_op_group_norm(sd_cl *cl, const sd_dtensor *x, int groups, float eps,
                           const sd_dtensor *gamma, const sd_dtensor *beta, bool silu,
                           sd_dtensor **out)
{
    return sd_op_group_norm_variant(cl, x, groups, eps, gamma, beta, silu, SD_VARIANT_AUTO, out);
}

sd_status sd_op_group_norm_variant(sd_cl *cl, const sd_dtensor *x, int groups, float eps,
                                   const sd_dtensor *gamma, const sd_dtensor *beta, bool silu,
                                   sd_op_variant variant, sd_dtensor **out)
{
    sd_status st;
    cl_kernel ks, ka;
    sd_dtensor *y = NULL;
    cl_mem stats = NULL;
    size_t stats_cap = 0;
    char d[96];
    int affine;
    *out = NULL;
    if ((st = require_f32(cl, "group_norm", "input", x)))
        return st;
    int64_t c = x->ndim >= 2 ? x->shape[1] : 0;
    if (x->ndim < 2 || groups < 1 || c % groups != 0 || c == 0 || c > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "group_norm: %s does not split into %d groups",
                            sd_dtensor_describe(x, d, sizeof d), groups);
    if ((st = check_affine(cl, "group_norm", gamma, beta, c, &affine)))
        return st;
    bool gpu = use_gpu(cl, variant);
    if ((st = kernel(cl, gpu ? "group_norm_stats_wg" : "group_norm_stats", &ks)) ||
        (st = kernel(cl, "group_norm_apply", &ka)) || (st = like(cl, x, &y)))
        goto done;
    if (x->numel) {
        size_t n = (size_t)x->shape[0], planes = n * (size_t)c, hw = x->numel / planes;
        if ((st = sd_cl_buffer_get(cl, n * (size_t)groups * 2 * sizeof(float), "group_norm statistics",
                                   &stats, &stats_cap)))
            goto done;
        sd_cl_arg sargs[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(stats), SD_ARG_LONG(hw * (size_t)(c / groups)),
                             SD_ARG_FLOAT(eps)};
        size_t sglobal = n * (size_t)groups, slocal = rows_local(cl, sglobal);
        if (gpu) {
            slocal = GN_WG;
            sglobal *= GN_WG;
        }
        if ((st = sd_cl_launch(cl, ks, 1, &sglobal, &slocal, SD_NARGS(sargs), sargs)))
            goto done;
        /* CPU: enough chunks per plane to keep every compute unit busy, each a multiple of 8
         * values. GPU: one float8 per work-item, neighbours contiguous. */
        size_t want = 4 * (size_t)cl->compute_units;
        size_t parts = planes >= want ? 1 : div_up(want, planes);
        size_t chunk = (div_up(hw, parts) + 7) / 8 * 8;
        if (gpu)
            chunk = 8;
        else if (chunk < 256)
            chunk = 256;
        sd_cl_arg aargs[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(stats),
                             SD_ARG_MEM(gamma ? gamma->buf : NULL), SD_ARG_MEM(beta ? beta->buf : NULL),
                             SD_ARG_MEM(y->buf), SD_ARG_UINT(c), SD_ARG_UINT(c / groups), SD_ARG_LONG(hw),
                             SD_ARG_UINT(chunk), SD_ARG_INT(affine), SD_ARG_INT(silu)};
        size_t aglobal[2] = {div_up(hw, chunk), planes};
        if ((st = sd_cl_launch(cl, ka, 2, aglobal, NULL, SD_NARGS(aargs), aargs)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    /* The statistics buffer goes back to the pool; the in-order queue runs the kernels already
     * enqueued on it before any later use. */
    if (stats)
        sd_cl_buffer_release(cl, stats, stats_cap);
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_layer_norm(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma,
                           const sd_dtensor *beta, sd_dtensor **out)
{
    return sd_op_layer_norm_variant(cl, x, eps, gamma, beta, SD_VARIANT_AUTO, out);
}

sd_status sd_op_layer_norm_variant(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma,
                                   const sd_dtensor *beta, sd_op_variant variant, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    *out = NULL;
    if ((st = require_f32(cl, "layer_norm", "input", x)))
        return st;
    int64_t dim = x->shape[x->ndim - 1];
    if (dim > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "layer_norm: last dimension %lld too large", (long long)dim);
    int affine;
    bool gpu = use_gpu(cl, variant);
    if ((st = check_affine(cl, "layer_norm", gamma, beta, dim, &affine)) ||
        (st = kernel(cl, gpu ? "layer_norm_wg" : "layer_norm", &k)) || (st = like(cl, x, &y)))
        goto done;
    if (dim > 0) {
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(gamma ? gamma->buf : NULL),
                            SD_ARG_MEM(beta ? beta->buf : NULL), SD_ARG_MEM(y->buf), SD_ARG_UINT(dim),
                            SD_ARG_FLOAT(eps), SD_ARG_INT(affine)};
        if ((st = launch_rows(cl, k, gpu, x->numel / (size_t)dim, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_rms_norm(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "rms_norm", "input", x)) || (st = require_f32(cl, "rms_norm", "gamma", gamma)))
        return st;
    int64_t dim = x->shape[x->ndim - 1];
    if (gamma->ndim != 1 || gamma->shape[0] != dim)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "rms_norm: gamma %s does not match the last dimension %lld",
                            sd_dtensor_describe(gamma, d, sizeof d), (long long)dim);
    if (dim > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "rms_norm: last dimension %lld too large", (long long)dim);
    if ((st = kernel(cl, "rms_norm", &k)) || (st = like(cl, x, &y)))
        goto done;
    if (dim > 0) {
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(gamma->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(dim),
                            SD_ARG_FLOAT(eps)};
        if ((st = launch_rows(cl, k, false, x->numel / (size_t)dim, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_softmax(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    return sd_op_softmax_variant(cl, x, SD_VARIANT_AUTO, out);
}

sd_status sd_op_softmax_variant(sd_cl *cl, const sd_dtensor *x, sd_op_variant variant, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    *out = NULL;
    if ((st = require_f32(cl, "softmax", "input", x)))
        return st;
    int64_t dim = x->shape[x->ndim - 1];
    if (dim > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "softmax: last dimension %lld too large", (long long)dim);
    bool gpu = use_gpu(cl, variant);
    if ((st = kernel(cl, gpu ? "softmax_rows_wg" : "softmax_rows", &k)) || (st = like(cl, x, &y)))
        goto done;
    if (dim > 0) {
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(dim)};
        if ((st = launch_rows(cl, k, gpu, x->numel / (size_t)dim, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* ---- Copies ---- */

/* Enqueues copy_rows: rows x len floats from src (row pitch src_row, offset src_off) to dst. */
static sd_status copy_rows(sd_cl *cl, cl_mem src, cl_mem dst, size_t rows, size_t len,
                           size_t src_row, size_t src_off, size_t dst_row, size_t dst_off)
{
    cl_kernel k;
    sd_status st = kernel(cl, "copy_rows", &k);
    if (st)
        return st;
    sd_cl_arg args[] = {SD_ARG_MEM(src), SD_ARG_MEM(dst), SD_ARG_LONG(len), SD_ARG_LONG(src_row),
                        SD_ARG_LONG(src_off), SD_ARG_LONG(dst_row), SD_ARG_LONG(dst_off)};
    size_t global[2] = {div_up(len, RUN), rows};
    return sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args);
}

/* Product of dims [from, to). */
static size_t dims_product(const sd_dtensor *t, int from, int to)
{
    size_t p = 1;
    for (int i = from; i < to; i++)
        p *= (size_t)t->shape[i];
    return p;
}

sd_status sd_op_concat(sd_cl *cl, const sd_dtensor *a, const sd_dtensor *b, int dim, sd_dtensor **out)
{
    sd_status st;
    sd_dtensor *y = NULL;
    char da[96], db[96];
    *out = NULL;
    if ((st = require_f32(cl, "concat", "a", a)) || (st = require_f32(cl, "concat", "b", b)))
        return st;
    bool ok = a->ndim == b->ndim && dim >= 0 && dim < a->ndim;
    for (int i = 0; ok && i < a->ndim; i++)
        ok = i == dim || a->shape[i] == b->shape[i];
    if (!ok)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "concat: %s and %s do not concatenate along dimension %d",
                            sd_dtensor_describe(a, da, sizeof da), sd_dtensor_describe(b, db, sizeof db), dim);
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++)
        shape[i] = a->shape[i];
    shape[dim] = a->shape[dim] + b->shape[dim];
    if ((st = sd_dtensor_new(cl, SD_DTYPE_F32, a->ndim, shape, &y)))
        goto done;
    size_t outer = dims_product(a, 0, dim), inner = dims_product(a, dim + 1, a->ndim);
    size_t la = (size_t)a->shape[dim] * inner, lb = (size_t)b->shape[dim] * inner;
    if (y->numel && ((st = copy_rows(cl, a->buf, y->buf, outer, la, la, 0, la + lb, 0)) ||
                     (st = copy_rows(cl, b->buf, y->buf, outer, lb, lb, 0, la + lb, la))))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_slice(sd_cl *cl, const sd_dtensor *x, int dim, int64_t start, int64_t len,
                      sd_dtensor **out)
{
    sd_status st;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "slice", "input", x)))
        return st;
    if (dim < 0 || dim >= x->ndim || start < 0 || len < 1 || start > x->shape[dim] - len)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "slice: [%lld, %lld) along dimension %d is outside %s",
                            (long long)start, (long long)(start + len), dim, sd_dtensor_describe(x, d, sizeof d));
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[dim] = len;
    if ((st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    size_t outer = dims_product(x, 0, dim), inner = dims_product(x, dim + 1, x->ndim);
    size_t row = (size_t)x->shape[dim] * inner, l = (size_t)len * inner;
    if (y->numel && (st = copy_rows(cl, x->buf, y->buf, outer, l, row, (size_t)start * inner, l, 0)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_upsample_nearest(sd_cl *cl, const sd_dtensor *x, int64_t oh, int64_t ow, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "upsample_nearest", "input", x)))
        return st;
    if (x->ndim < 2 || oh < 1 || ow < 1 || oh > UINT32_MAX || ow > UINT32_MAX ||
        x->shape[x->ndim - 2] > UINT32_MAX || x->shape[x->ndim - 1] > UINT32_MAX)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "upsample_nearest: %s to %lldx%lld",
                            sd_dtensor_describe(x, d, sizeof d), (long long)ow, (long long)oh);
    int64_t h = x->shape[x->ndim - 2], w = x->shape[x->ndim - 1];
    bool twice = oh == 2 * h && ow == 2 * w;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 2] = oh;
    shape[x->ndim - 1] = ow;
    if ((st = kernel(cl, twice ? "upsample_nearest2x" : "upsample_nearest", &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    if (x->numel) {
        /* 2x: one work-item per input row; else one per output row */
        sd_cl_arg args2x[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(w)};
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(h), SD_ARG_UINT(w),
                            SD_ARG_UINT(oh), SD_ARG_UINT(ow), SD_ARG_FLOAT((float)h / (float)oh),
                            SD_ARG_FLOAT((float)w / (float)ow)};
        size_t rows = twice ? x->numel / (size_t)w : y->numel / (size_t)ow;
        if ((st = twice ? sd_cl_launch(cl, k, 1, &rows, NULL, SD_NARGS(args2x), args2x)
                        : sd_cl_launch(cl, k, 1, &rows, NULL, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_conv2d_direct(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias, int groups,
                              int pad, int dilation, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char dx[96], dw[96];
    *out = NULL;
    if ((st = require_f32(cl, "conv2d_direct", "input", x)) || (st = require_f32(cl, "conv2d_direct", "weight", w)) ||
        (bias && (st = require_f32(cl, "conv2d_direct", "bias", bias))))
        return st;
    bool ok = x->ndim == 4 && w->ndim == 4 && groups >= 1 && pad >= 0 && pad <= 64 && dilation >= 1 &&
              dilation <= 64 && x->shape[1] % groups == 0 && w->shape[0] % groups == 0 &&
              w->shape[1] * groups == x->shape[1] && (!bias || bias->numel == (size_t)w->shape[0]);
    for (int i = 0; ok && i < 4; i++)
        ok = x->shape[i] <= INT32_MAX / 4 && w->shape[i] <= 64 * 1024;
    int64_t oh = ok ? x->shape[2] + 2 * pad - (int64_t)dilation * (w->shape[2] - 1) : 0;
    int64_t ow = ok ? x->shape[3] + 2 * pad - (int64_t)dilation * (w->shape[3] - 1) : 0;
    if (!ok || oh < 1 || ow < 1)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "conv2d_direct: %s with weight %s, groups %d, pad %d, dilation %d",
                            sd_dtensor_describe(x, dx, sizeof dx), sd_dtensor_describe(w, dw, sizeof dw), groups, pad,
                            dilation);
    int64_t shape[4] = {x->shape[0], w->shape[0], oh, ow};
    if ((st = kernel(cl, "conv2d_direct", &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &y)))
        goto done;
    if (y->numel) {
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(w->buf), SD_ARG_MEM(bias ? bias->buf : w->buf),
                            SD_ARG_MEM(y->buf), SD_ARG_INT(bias != NULL), SD_ARG_UINT(x->shape[1]),
                            SD_ARG_UINT(x->shape[2]), SD_ARG_UINT(x->shape[3]), SD_ARG_UINT(w->shape[0]),
                            SD_ARG_UINT(w->shape[1]), SD_ARG_UINT(w->shape[2]), SD_ARG_UINT(w->shape[3]),
                            SD_ARG_UINT(oh), SD_ARG_UINT(ow), SD_ARG_UINT(groups), SD_ARG_INT(pad),
                            SD_ARG_INT(dilation)};
        size_t global[3] = {(size_t)(ow + 7) / 8, (size_t)oh, (size_t)(x->shape[0] * w->shape[0])};
        if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_zero_insert(sd_cl *cl, const sd_dtensor *x, int stride, int before, int after, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "zero_insert", "input", x)))
        return st;
    if (x->ndim < 2 || stride < 1 || stride > 8 || before < 0 || before > 64 || after < 0 || after > 64 ||
        x->shape[x->ndim - 2] < 1 || x->shape[x->ndim - 1] < 1 || x->shape[x->ndim - 2] > INT32_MAX / 16 ||
        x->shape[x->ndim - 1] > INT32_MAX / 16)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "zero_insert: cannot spread %s by %d with %d/%d zeros",
                            sd_dtensor_describe(x, d, sizeof d), stride, before, after);
    int64_t h = x->shape[x->ndim - 2], w = x->shape[x->ndim - 1], shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    int64_t oh = (h - 1) * stride + 1 + before + after, ow = (w - 1) * stride + 1 + before + after;
    shape[x->ndim - 2] = oh;
    shape[x->ndim - 1] = ow;
    if ((st = kernel(cl, "zero_insert", &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    if (y->numel) { /* one work-item per output row */
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(h), SD_ARG_UINT(w),
                            SD_ARG_UINT(oh), SD_ARG_UINT(ow), SD_ARG_UINT(stride), SD_ARG_UINT(before)};
        size_t rows = y->numel / (size_t)ow;
        if ((st = sd_cl_launch(cl, k, 1, &rows, NULL, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

/* The 2x2 pools: kernel `name` (x, y, h, w, oh, ow; one work-item per output row) over the last two
 * dimensions of x, at least min x min, into [..., h / 2, w / 2] (rounded up when ceil). */
static sd_status pool2x2(sd_cl *cl, const char *name, const sd_dtensor *x, int64_t min, bool ceil, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, name, "input", x)))
        return st;
    if (x->ndim < 2 || x->shape[x->ndim - 2] < min || x->shape[x->ndim - 1] < min ||
        x->shape[x->ndim - 1] > UINT32_MAX / 2 || x->shape[x->ndim - 2] > UINT32_MAX / 2)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: %s needs at least %lldx%lld in its last dimensions", name,
                            sd_dtensor_describe(x, d, sizeof d), (long long)min, (long long)min);
    int64_t h = x->shape[x->ndim - 2], w = x->shape[x->ndim - 1], shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    int64_t oh = shape[x->ndim - 2] = h / 2 + (ceil ? h % 2 : 0), ow = shape[x->ndim - 1] = w / 2 + (ceil ? w % 2 : 0);
    if ((st = kernel(cl, name, &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    if (y->numel) {
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(h), SD_ARG_UINT(w),
                            SD_ARG_UINT(oh), SD_ARG_UINT(ow)};
        size_t rows = y->numel / (size_t)ow;
        if ((st = sd_cl_launch(cl, k, 1, &rows, NULL, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_max_pool2x2(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    return pool2x2(cl, "max_pool2x2", x, 2, false, out);
}

sd_status sd_op_avg_pool2x2(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    return pool2x2(cl, "avg_pool2x2", x, 1, true, out); /* (h + 2 (h % 2) - 2) / 2 + 1 */
}

sd_status sd_op_upsample_nearest2x(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out)
{
    if (x->ndim < 2 || x->shape[x->ndim - 1] > UINT32_MAX / 2 || x->shape[x->ndim - 2] > UINT32_MAX / 2) {
        char d[96];
        *out = NULL;
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "upsample_nearest2x: %s needs at least 2 dimensions",
                            sd_dtensor_describe(x, d, sizeof d));
    }
    return sd_op_upsample_nearest(cl, x, 2 * x->shape[x->ndim - 2], 2 * x->shape[x->ndim - 1], out);
}

sd_status sd_op_timestep_embedding(sd_cl *cl, const sd_dtensor *t, int dim, float max_period,
                                   sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96];
    *out = NULL;
    if ((st = require_f32(cl, "timestep_embedding", "timesteps", t)))
        return st;
    if (t->ndim != 1 || dim < 2 || !(max_period > 0.0f))
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "timestep_embedding: needs timesteps [N] (got %s), dim >= 2 (got %d), max_period > 0",
                            sd_dtensor_describe(t, d, sizeof d), dim);
    int64_t shape[2] = {t->shape[0], dim};
    if ((st = kernel(cl, "timestep_embedding", &k)) || (st = sd_dtensor_new(cl, SD_DTYPE_F32, 2, shape, &y)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(t->buf), SD_ARG_MEM(y->buf), SD_ARG_UINT(dim),
                        SD_ARG_FLOAT((float)log((double)max_period))};
    size_t global[2] = {(size_t)dim / 2 + 1, t->numel};
    if ((st = sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args)))
        goto done;
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}

sd_status sd_op_rope(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *pe, int heads, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    char dx[96], dp[96];
    *out = NULL;
    if ((st = require_f32(cl, "rope", "input", x)) || (st = require_f32(cl, "rope", "table", pe)))
        return st;
    int64_t n = x->ndim == 3 ? x->shape[1] : 0, c = x->ndim == 3 ? x->shape[2] : 0;
    int64_t d = heads > 0 ? c / heads : 0;
    if (x->ndim != 3 || heads < 1 || c % heads || d % 2 || d < 2 || n > UINT32_MAX || pe->ndim != 3 ||
        pe->shape[0] != n || pe->shape[1] != d / 2 || pe->shape[2] != 2)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "rope: input %s with %d heads and table %s do not fit",
                            sd_dtensor_describe(x, dx, sizeof dx), heads, sd_dtensor_describe(pe, dp, sizeof dp));
    if ((st = kernel(cl, "rope_pairs", &k)) || (st = like(cl, x, out)))
        return st;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM((*out)->buf), SD_ARG_MEM(pe->buf), SD_ARG_UINT(d / 2),
                        SD_ARG_UINT(heads), SD_ARG_UINT(n)};
    size_t global[2] = {(size_t)(d / 2), x->numel / (size_t)d};
    if ((st = sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

/* Elements per work-item of weight_add (must match RUN in kernels/weight_patch.cl). */
#define WEIGHT_ADD_RUN 64

sd_status sd_op_weight_add(sd_cl *cl, const sd_dtensor *base, const sd_dtensor *delta, sd_dtensor **out)
{
    *out = NULL;
    if (delta->dtype != SD_DTYPE_F32 || delta->numel != base->numel)
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "weight_add: delta of %zu %s elements for a weight of %zu elements", delta->numel,
                            sd_dtype_name(delta->dtype), base->numel);
    cl_kernel k;
    sd_status st = sd_cl_kernel(cl, "weight_patch.cl", "weight_add",
                                base->dtype == SD_DTYPE_F16 ? "-DWEIGHT_F16" : NULL, &k);
    if (!st)
        st = sd_dtensor_new(cl, base->dtype, base->ndim, base->shape, out);
    if (!st) {
        sd_cl_arg args[] = {SD_ARG_MEM(base->buf), SD_ARG_MEM(delta->buf), SD_ARG_MEM((*out)->buf),
                            SD_ARG_LONG(base->numel)};
        size_t global = (base->numel + WEIGHT_ADD_RUN - 1) / WEIGHT_ADD_RUN;
        st = sd_cl_launch(cl, k, 1, &global, NULL, SD_NARGS(args), args);
    }
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}
