/* Layout ops: host side of kernels/ops_layout.cl. See ops_layout.h. */
#include "runtime-opencl/ops_layout.h"

#define TILE 16 /* as in the kernel file */

sd_status sd_op_transpose(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *add, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    sd_dtensor *y = NULL;
    char d[96], e[96];
    *out = NULL;
    if (x->dtype != SD_DTYPE_F32 || x->ndim < 2 || (add && (add->dtype != SD_DTYPE_F32 || add->numel != x->numel)))
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "transpose: needs an f32 input of at least 2 dimensions and an optional f32 addend "
                            "of as many elements (got %s, addend %s)",
                            sd_dtensor_describe(x, d, sizeof d), add ? sd_dtensor_describe(add, e, sizeof e) : "none");
    int64_t m = x->shape[x->ndim - 2], n = x->shape[x->ndim - 1];
    if (m > UINT32_MAX || n > UINT32_MAX || (m && n > UINT32_MAX / m))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "transpose: %s is too large",
                            sd_dtensor_describe(x, d, sizeof d));
    int64_t shape[SD_TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 2] = n;
    shape[x->ndim - 1] = m;
    if ((st = sd_cl_kernel(cl, "ops_layout.cl", "transpose_tile", NULL, &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, x->ndim, shape, &y)))
        goto done;
    if (x->numel) {
        size_t batch = x->numel / (size_t)(m * n);
        sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(add ? add->buf : x->buf), SD_ARG_MEM(y->buf),
                            SD_ARG_UINT(m), SD_ARG_UINT(n), SD_ARG_INT(add != NULL)};
        size_t global[3] = {(size_t)(n + TILE - 1) / TILE, (size_t)(m + TILE - 1) / TILE, batch};
        if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args)))
            goto done;
    }
    *out = y;
    y = NULL;
done:
    sd_dtensor_free(y);
    return st;
}
