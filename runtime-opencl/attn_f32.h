/* Attention in fp32 on CPU devices: a flash-attention loop on the host (PoCL's buffers live in
 * host memory) on AVX-512 FMA, taken where sd_cl_host_fp32(cl) allows host routes. Still fp32
 * throughout (scores, online softmax, P V), and the fp32 operations of kernels/attention.cl in
 * its order (FMA chains over d and over keys, 2^x polynomial, lane-wise sums, reduction tree), so
 * it gives the kernel's bits on every run and thread count (tests/ops/test_attention.c checks;
 * that assumes PoCL contracts the kernel's mask multiply-add into an FMA, as LLVM does for
 * OpenCL C).
 * Threads: OpenMP's, as oneDNN's. docs/precision.md, docs/opencl-runtime.md. */
#ifndef SD_RUNTIME_OPENCL_ATTN_F32_H
#define SD_RUNTIME_OPENCL_ATTN_F32_H

#include "runtime-opencl/ops.h"

/* Whether this build and CPU can run sd_attn_f32_run (oneDNN's OpenMP, x86-64, AVX-512). */
bool sd_attn_f32_available(void);

/* sd_op_attention's contract (operands already checked, out allocated [B, Nq, H*D] f32; mask
 * NULL or [mb][mq][Nk] with mb 1 or B, mq 1 or Nq). */
sd_status sd_attn_f32_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                          const sd_dtensor *mask, int mb, int mq, sd_dtensor *out);

#endif
