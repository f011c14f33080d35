/* Device dequantisation of ggml blocks and fp8 bytes. See ops_quant.h. */
#include "runtime-opencl/ops_quant.h"
#include "core/checked.h"

bool sd_qtype_dtype(sd_qtype type, sd_dtype *out)
{
    static const struct {
        sd_qtype type;
        sd_dtype dtype;
    } map[] = {
        {SD_QTYPE_Q4_0, SD_DTYPE_Q4_0}, {SD_QTYPE_Q4_1, SD_DTYPE_Q4_1}, {SD_QTYPE_Q5_0, SD_DTYPE_Q5_0},
        {SD_QTYPE_Q5_1, SD_DTYPE_Q5_1}, {SD_QTYPE_Q8_0, SD_DTYPE_Q8_0}, {SD_QTYPE_Q4_K, SD_DTYPE_Q4_K},
        {SD_QTYPE_Q5_K, SD_DTYPE_Q5_K}, {SD_QTYPE_Q6_K, SD_DTYPE_Q6_K},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].type == type) {
            *out = map[i].dtype;
            return true;
        }
    return false;
}

sd_status sd_op_dequantize_tensor(sd_cl *cl, const sd_dtensor *src, sd_dtype dtype, sd_dtensor **out)
{
    *out = NULL;
    char d[96];
    if (!sd_dtype_is_blocks(src->dtype) || sd_dtype_is_blocks(dtype))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "dequantize: %s to %s", sd_dtensor_describe(src, d, sizeof d),
                            sd_dtype_name(dtype));
    cl_kernel kern;
    size_t be, bb;
    sd_dtype_block(src->dtype, &be, &bb);
    sd_status st = sd_cl_kernel(cl, "dequant.cl", "dequant", dtype == SD_DTYPE_F16 ? "-DOUT_F16" : NULL, &kern);
    if (!st)
        st = sd_dtensor_new(cl, dtype, src->ndim, src->shape, out);
    if (!st && src->numel) {
        sd_cl_arg args[] = {SD_ARG_MEM(src->buf), SD_ARG_MEM((*out)->buf), SD_ARG_INT((int)src->dtype)};
        size_t global = src->numel / be;
        st = sd_cl_launch(cl, kern, 1, &global, NULL, SD_NARGS(args), args);
    }
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

sd_status sd_op_dequantize(sd_cl *cl, sd_qtype type, const void *blocks, size_t nbytes, sd_dtype dtype, int ndim,
                           const int64_t *shape, sd_dtensor **out)
{
    *out = NULL;
    sd_dtype bt;
    size_t numel, be, bb, want;
    if (!sd_qtype_dtype(type, &bt))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "dequantize: unknown block type %d", (int)type);
    sd_dtype_block(bt, &be, &bb);
    if (!sd_shape_bytes(shape, ndim, 1, &numel) || numel % be || !sd_mul_size(numel / be, bb, &want) ||
        want != nbytes)
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "dequantize: %zu bytes of type %d blocks (%zu elements, %zu bytes each) do not hold a "
                            "tensor of %zu elements",
                            nbytes, (int)type, be, bb, numel);
    /* blocks as one flat row: the element count is whole blocks, whatever the shape's rows */
    int64_t flat = (int64_t)numel;
    sd_dtensor *src = NULL;
    sd_status st = sd_dtensor_new_blocks(cl, bt, 1, &flat, blocks, nbytes, &src);
    if (!st)
        st = sd_op_dequantize_tensor(cl, src, dtype, out);
    if (!st && (st = sd_dtensor_reshape(*out, ndim, shape))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    /* the in-order queue runs the kernel before any later use of the released buffer */
    sd_dtensor_free(src);
    return st;
}
