/* Dequantisation of ggml block-quantised weights (GGUF files) and fp8 bytes on the device. The
 * reference is the host dequantiser of ml/formats/gguf.c, which these kernels match bit for bit.
 * Weights consumed by sd_op_linear stay in their block form on the device (tensor.h block types;
 * linear dequantises them inside its B pack step); these ops expand them for the other
 * consumers. */
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

/* The tensor dtype that holds blocks of type; false for another type. */
bool sd_qtype_dtype(sd_qtype type, sd_dtype *out);

/* A new tensor of dtype (f32, or f16 rounded to nearest even) with src's shape holding src's
 * (a block type's) values. SD_ERR_INVALID for an src of F32 / F16. */
sd_status sd_op_dequantize_tensor(sd_cl *cl, const sd_dtensor *src, sd_dtype dtype, sd_dtensor **out);

#endif
