/* Dequantisation of ggml block-quantised weights (GGUF files) on the device. The reference is the
 * host dequantiser of ml/formats/gguf.c, which these kernels match bit for bit. This is the
 * upload path (blocks in, f32 or f16 weights out); dequantising inside the matmul kernels, so that
 * weights stay quantised in device memory, is later work (issue 16). */
#ifndef SD_RUNTIME_OPENCL_OPS_QUANT_H
#define SD_RUNTIME_OPENCL_OPS_QUANT_H

#include "runtime-opencl/tensor.h"

/* Block types, numbered as ggml numbers them in files. */
typedef enum sd_qtype {
    SD_QTYPE_Q4_0 = 2,
    SD_QTYPE_Q4_1 = 3,
    SD_QTYPE_Q5_0 = 6,
    SD_QTYPE_Q5_1 = 7,
    SD_QTYPE_Q8_0 = 8,
    SD_QTYPE_Q4_K = 12,
    SD_QTYPE_Q5_K = 13,
    SD_QTYPE_Q6_K = 14
} sd_qtype;

/* Uploads nbytes of blocks of type and dequantises them into a new tensor of dtype (f32, or f16
 * rounded to nearest even) and shape. The shape's element count must be whole blocks and nbytes
 * exactly their size. SD_ERR_INVALID (naming the op, type and sizes) otherwise, or for another
 * type. */
sd_status sd_op_dequantize(sd_cl *cl, sd_qtype type, const void *blocks, size_t nbytes, sd_dtype dtype, int ndim,
                           const int64_t *shape, sd_dtensor **out);

#endif
