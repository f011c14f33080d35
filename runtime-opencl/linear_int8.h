/* sd_op_linear with a block-quantised weight (ggml Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
 * Q6_K) in the bf16 precision on CPU devices: integer dot products on the host (PoCL's buffers
 * live in host memory). The activations are quantised per 32-element block of each row to int8
 * with an fp32 scale (d = max|x| / 127, q = round-to-nearest-even(x * 127 / max|x|)); each
 * 32-element block of the weight is q_w * d_w (+ m_w for the types with a minimum; the K-quants
 * by their 32-element sub-blocks; Q6_K by its 16-element halves, each with its own d_w), so a
 * block contributes d_x (d_w * sum(q_x q_w) + m_w * sum(q_x)) per unit of one d_w, the integer
 * sum exact, everything after it fp32. The products run on AMX-INT8 tiles where the CPU
 * has them and the kernel grants the tile state, else on AVX512-VNNI. Threads: OpenMP's, as
 * oneDNN's. docs/precision.md, docs/opencl-runtime.md. */
#ifndef SD_RUNTIME_OPENCL_LINEAR_INT8_H
#define SD_RUNTIME_OPENCL_LINEAR_INT8_H

#include "runtime-opencl/ops.h"

/* The instructions sd_linear_int8_run uses in this build on this CPU: AMX-INT8 tiles, else
 * AVX512-VNNI; NONE (no oneDNN, not x86-64, neither extension) means bf16 runs expand the
 * weight to f32 for oneDNN's bf16 product (the path before this route). */
typedef enum sd_int8_isa { SD_INT8_NONE, SD_INT8_VNNI, SD_INT8_AMX } sd_int8_isa;
sd_int8_isa sd_linear_int8_route(void);

/* Caps the route at `max` for the whole process (tests and benchmarks compare the routes; not
 * thread-safe against running linear); returns the prior cap. */
sd_int8_isa sd_linear_int8_cap(sd_int8_isa max);

/* Whether the route runs a weight of dtype here (a route and a block type it reads). */
bool sd_linear_int8_takes(sd_dtype dtype);

/* out [M, N] = act(x [M, K] (f32 or f16) w [N, K]^T + bias) for a w that sd_linear_int8_takes;
 * shapes already checked, out allocated, M, N, K > 0. */
sd_status sd_linear_int8_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             sd_act act, int M, int N, int K, sd_dtensor *out);

#endif
