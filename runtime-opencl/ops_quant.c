/* Device dequantisation of ggml blocks. See ops_quant.h. */
#include "runtime-opencl/ops_quant.h"
#include "core/checked.h"

static const struct {
    sd_qtype type;
    const char *kernel;
    size_t elems, bytes;
} blocks_info[] = {
    {SD_QTYPE_Q4_0, "dequant_q4_0", 32, 18},  {SD_QTYPE_Q4_1, "dequant_q4_1", 32, 20},
    {SD_QTYPE_Q5_0, "dequant_q5_0", 32, 22},  {SD_QTYPE_Q5_1, "dequant_q5_1", 32, 24},
    {SD_QTYPE_Q8_0, "dequant_q8_0", 32, 34},  {SD_QTYPE_Q4_K, "dequant_q4_k", 256, 144},
    {SD_QTYPE_Q5_K, "dequant_q5_k", 256, 176}, {SD_QTYPE_Q6_K, "dequant_q6_k", 256, 210},
};

sd_status sd_op_dequantize(sd_cl *cl, sd_qtype type, const void *blocks, size_t nbytes, sd_dtype dtype, int ndim,
                           const int64_t *shape, sd_dtensor **out)
{
    *out = NULL;
    size_t k = 0, numel, want;
    while (k < sizeof blocks_info / sizeof blocks_info[0] && blocks_info[k].type != type)
        k++;
    if (k == sizeof blocks_info / sizeof blocks_info[0])
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "dequantize: unknown block type %d", (int)type);
    if (!sd_shape_bytes(shape, ndim, 1, &numel) || numel % blocks_info[k].elems ||
        !sd_mul_size(numel / blocks_info[k].elems, blocks_info[k].bytes, &want) || want != nbytes)
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "dequantize: %zu bytes of type %d blocks (%zu elements, %zu bytes each) do not hold a "
                            "tensor of %zu elements",
                            nbytes, (int)type, blocks_info[k].elems, blocks_info[k].bytes, numel);
    cl_kernel kern;
    cl_mem src = NULL;
    size_t cap = 0;
    sd_status st = sd_cl_kernel(cl, "dequant.cl", blocks_info[k].kernel, dtype == SD_DTYPE_F16 ? "-DOUT_F16" : NULL,
                                &kern);
    if (!st && nbytes)
        st = sd_cl_buffer_get(cl, nbytes, "dequantize blocks", &src, &cap);
    if (!st && nbytes)
        st = sd_cl_write(cl, src, 0, nbytes, blocks);
    if (!st)
        st = sd_dtensor_new(cl, dtype, ndim, shape, out);
    if (!st && numel) {
        sd_cl_arg args[] = {SD_ARG_MEM(src), SD_ARG_MEM((*out)->buf)};
        size_t global = numel / blocks_info[k].elems;
        st = sd_cl_launch(cl, kern, 1, &global, NULL, SD_NARGS(args), args);
    }
    /* the in-order queue runs the kernel before any later use of the released buffer */
    if (src)
        sd_cl_buffer_release(cl, src, cap);
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}
