/* Attention in the bf16 precision on CPU devices: a flash-attention loop on the host (PoCL's
 * buffers live in host memory) on the CPU's AVX512-BF16 dot products. Q, K and V are rounded to
 * bfloat16 (nearest even), scores and the online softmax are fp32, the probabilities are rounded
 * to bf16 for the P V product, which accumulates in fp32; the products run on AMX tiles where
 * the CPU has them, else on AVX512-BF16 dot products. Threads: OpenMP's, as oneDNN's.
 * docs/precision.md, docs/opencl-runtime.md. */
#ifndef SD_RUNTIME_OPENCL_ATTN_BF16_H
#define SD_RUNTIME_OPENCL_ATTN_BF16_H

#include "runtime-opencl/ops.h"

/* The instructions sd_attn_bf16_run uses in this build on this CPU: AMX tiles (AMX-BF16, when
 * the kernel grants the tile state), else AVX512-BF16; NONE (no oneDNN, not x86-64, neither
 * extension) means bf16 runs use the fp32 OpenCL kernel unchanged. */
typedef enum sd_attn_bf16_isa { SD_ATTN_BF16_NONE, SD_ATTN_BF16_AVX512, SD_ATTN_BF16_AMX } sd_attn_bf16_isa;
sd_attn_bf16_isa sd_attn_bf16_route(void);

/* Caps the route at `max` for the whole process (tests and benchmarks compare the routes; not
 * thread-safe against running attention); returns the prior cap. */
sd_attn_bf16_isa sd_attn_bf16_cap(sd_attn_bf16_isa max);

/* sd_op_attention's contract (operands already checked, out allocated [B, Nq, H*D] f32; mask
 * NULL or [mb][mq][Nk] with mb 1 or B, mq 1 or Nq). */
sd_status sd_attn_bf16_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                           const sd_dtensor *mask, int mb, int mq, sd_dtensor *out);

#endif
