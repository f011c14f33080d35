/* Elementwise ops for RRDBNet (ESRGAN / Real-ESRGAN, ml/upscale/esrgan.c) on NCHW f32 device
 * tensors. The "_into" ops write into channels [offset, offset + C) of a destination
 * [B, Cd, H, W], so a residual dense block builds its growing concatenation in place instead of
 * copying it for every convolution. Conventions as runtime-opencl/ops.h (SD_ERR_INVALID naming
 * the op and the shapes; new outputs come from the pool, NULL on failure; work is enqueued
 * without waiting). Plain-C references: tests/ops/test_ops_esrgan.c. */
#ifndef SD_RUNTIME_OPENCL_OPS_ESRGAN_H
#define SD_RUNTIME_OPENCL_OPS_ESRGAN_H

#include "runtime-opencl/tensor.h"

/* dst[:, off:off+C] = x >= 0 ? x : slope * x (torch LeakyReLU; slope 1 copies) for x [B, C, H, W]
 * and dst [B, Cd, H, W] with off + C <= Cd. dst may be x itself (in place, off 0). */
sd_status sd_op_leaky_relu_into(sd_cl *cl, const sd_dtensor *x, float slope, sd_dtensor *dst, int64_t off);

/* dst[:, off:off+C] = alpha * a + c for a [B, C, H, W] and dst [B, Cd, H, W] with off + C <= Cd;
 * c is a tensor of a's shape, or NULL for dst[:, off:off+C] itself (an in-place update). a and c
 * may share dst's buffer when each element is read from the position it is written to. */
sd_status sd_op_axpy_into(sd_cl *cl, float alpha, const sd_dtensor *a, const sd_dtensor *c, sd_dtensor *dst,
                          int64_t off);

/* torch.pixel_unshuffle(F.pad(x, (0, pw, 0, ph), "reflect"), r) as Real-ESRGAN's x2/x1 models
 * do (spandrel's pad_to_multiple): x [B, C, H, W] padded at the bottom and right to multiples of
 * r (mirrored without repeating the edge; repeatedly when the pad exceeds H - 1), then
 * *out: new [B, C*r*r, ceil(H/r), ceil(W/r)]. r in 1..16 (16: the SDXL T2I-Adapter). */
sd_status sd_op_pixel_unshuffle(sd_cl *cl, const sd_dtensor *x, int r, sd_dtensor **out);

#endif
