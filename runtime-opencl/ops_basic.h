/* Basic tensor ops on device tensors: normalisation, activations, softmax, elementwise
 * arithmetic with broadcasting, concat, slice, nearest 2x upsample, timestep embedding, clamp.
 *
 * Conventions as runtime-opencl/ops.h: inputs are f32 device tensors, except that norm weights
 * may be stored as f16 (SD_ERR_INVALID names the op and the shapes otherwise), *out is a new tensor from the runtime's pool that the caller
 * frees (NULL on failure), work is enqueued without waiting. Plain-C references live in
 * tests/support/ref_basic.c; tolerances are in docs/opencl-runtime.md. */
#ifndef SD_RUNTIME_OPENCL_OPS_BASIC_H
#define SD_RUNTIME_OPENCL_OPS_BASIC_H

#include "runtime-opencl/tensor.h"

/* Group normalisation of x [N, C, ...] (any trailing spatial dims, at least 2-D) over `groups`
 * groups of C/groups channels: y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], then SiLU
 * when silu is set. gamma and beta are both NULL (no affine) or both [C], f32 or both stored
 * as f16. C % groups == 0. */
sd_status sd_op_group_norm(sd_cl *cl, const sd_dtensor *x, int groups, float eps,
                           const sd_dtensor *gamma, const sd_dtensor *beta, bool silu,
                           sd_dtensor **out);

/* Kernel variant of an op with reductions: AUTO picks by device class (GPU: work-group
 * reductions in local memory and one 8-value vector per work-item; CPU: one work-item per
 * reduction, long contiguous runs, no barriers). */
typedef enum sd_op_variant { SD_VARIANT_AUTO, SD_VARIANT_CPU, SD_VARIANT_GPU } sd_op_variant;

/* sd_op_group_norm with an explicit variant (the tests run both on any device). */
sd_status sd_op_group_norm_variant(sd_cl *cl, const sd_dtensor *x, int groups, float eps,
                                   const sd_dtensor *gamma, const sd_dtensor *beta, bool silu,
                                   sd_op_variant variant, sd_dtensor **out);

/* Layer normalisation over the last dimension D of x: gamma, beta both NULL or both [D] (f32,
 * or both f16-stored). */
sd_status sd_op_layer_norm(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma,
                           const sd_dtensor *beta, sd_dtensor **out);

/* sd_op_layer_norm with an explicit kernel variant (GPU: a work-group per row). */
sd_status sd_op_layer_norm_variant(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma,
                                   const sd_dtensor *beta, sd_op_variant variant, sd_dtensor **out);

/* RMS normalisation over the last dimension D of x (T5's LayerNorm): y = x / sqrt(mean(x^2) + eps)
 * * gamma, gamma an f32 [D] tensor. One work-item per row on every device. */
sd_status sd_op_rms_norm(sd_cl *cl, const sd_dtensor *x, float eps, const sd_dtensor *gamma, sd_dtensor **out);

/* Softmax over the last dimension. */
sd_status sd_op_softmax(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out);
/* sd_op_softmax with an explicit kernel variant (GPU: a work-group per row). */
sd_status sd_op_softmax_variant(sd_cl *cl, const sd_dtensor *x, sd_op_variant variant, sd_dtensor **out);

typedef enum sd_unary {
    SD_UNARY_SILU,       /* x * sigmoid(x) */
    SD_UNARY_GELU,       /* 0.5 x (1 + erf(x / sqrt 2)) */
    SD_UNARY_GELU_TANH,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    SD_UNARY_QUICK_GELU, /* x * sigmoid(1.702 x) */
    SD_UNARY_SIGMOID     /* 1 / (1 + exp(-x)) */
} sd_unary;

/* Elementwise activation, out has x's shape. */
sd_status sd_op_unary(sd_cl *cl, sd_unary op, const sd_dtensor *x, sd_dtensor **out);

/* GEGLU: x [..., 2D] -> out [..., D] = x[..., :D] * gelu_erf(x[..., D:]) (diffusers' GEGLU
 * after its projection). */
sd_status sd_op_geglu(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out);

typedef enum sd_binary { SD_BINARY_ADD, SD_BINARY_MUL } sd_binary;

/* out = a (+ or *) b with numpy broadcasting (shapes right-aligned; each dimension equal or 1
 * in one of them). SD_ERR_INVALID when the shapes do not broadcast. */
sd_status sd_op_binary(sd_cl *cl, sd_binary op, const sd_dtensor *a, const sd_dtensor *b,
                       sd_dtensor **out);

/* out = x * mul + add (scale: add 0; invert: mul -1, add 1). */
sd_status sd_op_scale(sd_cl *cl, const sd_dtensor *x, float mul, float add, sd_dtensor **out);

/* out = min(max(x, lo), hi). */
sd_status sd_op_clamp(sd_cl *cl, const sd_dtensor *x, float lo, float hi, sd_dtensor **out);

/* Concatenation of a and b along dimension dim (0-based); all other dimensions equal.
 * Channels of NCHW tensors: dim 1. */
sd_status sd_op_concat(sd_cl *cl, const sd_dtensor *a, const sd_dtensor *b, int dim, sd_dtensor **out);

/* out = x[..., start:start+len, ...] along dimension dim; needs 0 <= start, 1 <= len,
 * start + len <= size (SD_ERR_INVALID otherwise). */
sd_status sd_op_slice(sd_cl *cl, const sd_dtensor *x, int dim, int64_t start, int64_t len,
                      sd_dtensor **out);

/* Nearest-neighbour 2x upsample of the last two dimensions: [..., H, W] -> [..., 2H, 2W]. */
sd_status sd_op_upsample_nearest2x(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out);
/* Nearest-neighbour resize of the last two dimensions to [..., oh, ow] exactly as torch's
 * F.interpolate(x, size=(oh, ow), mode="nearest") (the LDM UNet's Upsample when a skip's size is
 * odd); the 2x kernel when the size doubles. oh, ow >= 1 (SD_ERR_INVALID otherwise). */
sd_status sd_op_upsample_nearest(sd_cl *cl, const sd_dtensor *x, int64_t oh, int64_t ow, sd_dtensor **out);

/* A direct convolution for what sd_op_conv2d does not cover: torch Conv2d(groups, dilation,
 * padding, stride 1) with x [B, C, H, W] f32, w [O, C / groups, KH, KW] f32 (groups 1 or C, O a
 * multiple of groups), bias NULL or [O] f32; out: new [B, O, H + 2 pad - dil (KH - 1),
 * likewise W] (at least 1x1). One work-item per 8 outputs of a row, no tiling over channels:
 * meant for depthwise and dilated layers (PiDiNet), not for large dense ones. */
sd_status sd_op_conv2d_direct(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias, int groups,
                              int pad, int dilation, sd_dtensor **out);

/* The input of a transposed convolution as a plain one: x [..., H, W] spread `stride` apart
 * with zeros between, plus `before` zero rows / columns at the top / left and `after` at the
 * bottom / right: out [..., (H - 1) stride + 1 + before + after, likewise W]. stride 1..8,
 * before and after 0..64. */
sd_status sd_op_zero_insert(sd_cl *cl, const sd_dtensor *x, int stride, int before, int after, sd_dtensor **out);

/* torch max_pool2d(x, kernel 2, stride 2) over the last two dimensions: out [..., H/2, W/2]
 * (floor; H, W >= 2), each the largest of its 2x2 cell (NaN if any is NaN, as torch). */
sd_status sd_op_max_pool2x2(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out);

/* torch AvgPool2d(kernel 2, stride 2, padding (H % 2, W % 2)) over the last two dimensions, zero
 * padding counted in the mean (count_include_pad), as the T2I-Adapter's Downsample: out
 * [..., ceil(H/2), ceil(W/2)]; for even sizes the mean of each 2x2 cell. */
sd_status sd_op_avg_pool2x2(sd_cl *cl, const sd_dtensor *x, sd_dtensor **out);

/* Sinusoidal timestep embedding as the LDM UNet's timestep_embedding (diffusers
 * flip_sin_to_cos=True, downscale_freq_shift=0): t [N] -> out [N, dim] =
 * [cos(t f_i), sin(t f_i)] with f_i = exp(-ln(max_period) i / (dim/2)), zero-padded when dim is
 * odd. dim >= 2; SD1 uses max_period 10000. */
sd_status sd_op_timestep_embedding(sd_cl *cl, const sd_dtensor *t, int dim, float max_period,
                                   sd_dtensor **out);

/* Rotary position embedding on adjacent channel pairs (FLUX's apply_rope): x [B, N, heads * D]
 * f32 with D even, pe [N, D / 2, 2] f32 holding (cos, sin) per position and pair; out has x's
 * shape: out[2i] = cos x[2i] - sin x[2i+1], out[2i+1] = sin x[2i] + cos x[2i+1] in every head. */
sd_status sd_op_rope(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *pe, int heads, sd_dtensor **out);

/* A patched weight: out = base + delta, stored in base's dtype (f32, or f16 storage rounded to
 * nearest even; the sum is computed in f32). delta: f32 with base's element count (any shape).
 * Used for LoRA weight patches. */
sd_status sd_op_weight_add(sd_cl *cl, const sd_dtensor *base, const sd_dtensor *delta, sd_dtensor **out);

#endif
