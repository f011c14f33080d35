/* The tensor-op API on device tensors (runtime-opencl/tensor.h). Ops check shapes and dtypes
 * (SD_ERR_INVALID, message naming the op and the shapes), allocate their output from the
 * runtime's pool (*out is a new tensor the caller frees; it stays NULL on failure) and enqueue
 * work without waiting. Arithmetic is fp32; weights may be stored as f16. Tolerances against
 * the plain-C references are in docs/opencl-runtime.md and beside each test. */
#ifndef SD_RUNTIME_OPENCL_OPS_H
#define SD_RUNTIME_OPENCL_OPS_H

#include "runtime-opencl/tensor.h"

/* Activation fused into an op's epilogue. GELU is the erf form (torch's default). */
typedef enum sd_act { SD_ACT_NONE, SD_ACT_SILU, SD_ACT_GELU } sd_act;

/* ---- Matrix products ---- */

/* out = act(alpha * op(A) op(B) + bias), batched.
 * a: [..., M, K] f32 ([..., K, M] when trans_a). b: [..., K, N] ([..., N, K] when trans_b),
 * f32 or f16; b's leading (batch) dimensions either equal a's or multiply to 1 (shared).
 * bias: NULL or [N] f32. out: new [..., M, N] f32 with a's leading dimensions. */
sd_status sd_op_matmul(sd_cl *cl, const sd_dtensor *a, bool trans_a, const sd_dtensor *b,
                       bool trans_b, const sd_dtensor *bias, sd_act act, float alpha,
                       sd_dtensor **out);

/* A torch Linear layer: x [..., K] f32, w [N, K] f32 or f16, bias NULL or [N] f32;
 * out: new [..., N] f32 = act(x w^T + bias). */
sd_status sd_op_linear(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                       sd_act act, sd_dtensor **out);

/* ---- Convolution ---- */

/* Convolution algorithm. AUTO picks, per shape, what measured fastest on the CPU (conv.c,
 * docs/opencl-runtime.md): oneDNN's fp32 convolution where the fp32 host routes are on
 * (sd_cl_host_fp32), else Winograd F(4x4, 3x3) (3x3, stride 1, f32 input, output at least 64x64,
 * at least 256 input and output channels) or the implicit GEMM. GEMM and WINOGRAD force those
 * OpenCL kernels, ONEDNN oneDNN's; WINOGRAD or ONEDNN on a shape or device they do not cover
 * (ONEDNN: the host routes off, or an f16 input) is SD_ERR_INVALID. */
typedef enum sd_conv_algo { SD_CONV_AUTO, SD_CONV_GEMM, SD_CONV_WINOGRAD, SD_CONV_ONEDNN } sd_conv_algo;

typedef struct sd_conv2d_params {
    int stride_h, stride_w; /* >= 1 */
    int pad_h, pad_w;       /* zero padding on each side, >= 0 */
    sd_act act;
    sd_conv_algo algo;      /* 0: SD_CONV_AUTO */
} sd_conv2d_params;

/* A torch Conv2d (groups 1, dilation 1): x [B, C, H, W] f32 or f16, w [O, C, KH, KW] f32 or f16,
 * bias NULL or [O] f32; out: new [B, O, OH, OW] f32 with OH = (H + 2 pad_h - KH) / stride_h + 1
 * (likewise OW), which must be >= 1. */
sd_status sd_op_conv2d(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                       const sd_conv2d_params *params, sd_dtensor **out);

/* ---- Attention ---- */

/* Fused multi-head attention, out = softmax(Q K^T / sqrt(D) + mask) V per batch and head,
 * computed flash-style (tiled, online softmax; the [Nq, Nk] score matrix is never stored).
 * q: [B, Nq, H*D] f32, k and v: [B, Nk, H*D] (both f32 or both f16), Nk >= 1, heads H in 1..64,
 * head dim D = channels / heads in 1..512 (512: the VAE's single-head attention).
 * mask: NULL or an additive f32 mask whose last two dimensions are [Nq or 1, Nk] and whose
 * leading dimensions multiply to 1 or B (-INFINITY masks a key; a query row whose keys are all
 * masked yields zeros). out: new [B, Nq, H*D]. */
sd_status sd_op_attention(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                          int heads, const sd_dtensor *mask, sd_dtensor **out);

#endif
