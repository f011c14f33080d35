/* Layout ops on device tensors: transposing the last two dimensions, e.g. between an NCHW
 * activation [B, C, H*W] and the token-major [B, H*W, C] that attention and linear layers use.
 * Conventions as runtime-opencl/ops.h (inputs f32, SD_ERR_INVALID naming the op and shapes, *out
 * a new tensor the caller frees, NULL on failure; work enqueued without waiting). Plain-C
 * reference: tests/ops/test_ops_layout.c. */
#ifndef SD_RUNTIME_OPENCL_OPS_LAYOUT_H
#define SD_RUNTIME_OPENCL_OPS_LAYOUT_H

#include "runtime-opencl/tensor.h"

/* out = x^T (+ add): x [..., M, N] -> out [..., N, M] with x's leading dimensions (x needs at
 * least 2 dimensions). add: NULL, or an f32 tensor with out's element count that is added
 * elementwise (a residual, fused into the same pass; its shape is not checked beyond the count,
 * so a [B, C, H, W] residual serves an out of [B, C, H*W]). Exact (one rounding for the add). */
sd_status sd_op_transpose(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *add, sd_dtensor **out);

#endif
