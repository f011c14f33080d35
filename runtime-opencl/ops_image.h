/* Image ops on device images [B, H, W, C] (f32): resize, crop, pad, Gaussian blur, Sobel and
 * Canny. Conventions as runtime-opencl/ops.h (*out is new, caller frees; NULL on failure).
 * Plain-C references: tests/support/ref_image.c; goldens from torch/PIL:
 * tests/reference/make_resize_goldens.py. */
#ifndef SD_RUNTIME_OPENCL_OPS_IMAGE_H
#define SD_RUNTIME_OPENCL_OPS_IMAGE_H

#include "runtime-opencl/tensor.h"

typedef enum sd_resize_method {
    SD_RESIZE_NEAREST_EXACT, /* torch interpolate "nearest-exact" */
    SD_RESIZE_BILINEAR,      /* torch "bilinear", align_corners=False, antialias=False */
    SD_RESIZE_BICUBIC,       /* torch "bicubic" (A = -0.75, clamped borders), may overshoot [0,1] */
    SD_RESIZE_AREA,          /* torch "area" (adaptive average pooling) */
    SD_RESIZE_LANCZOS,       /* PIL Image.resize LANCZOS on float data (mode "F") */
    SD_RESIZE_LANCZOS_U8     /* ComfyUI's lanczos: trunc(clip(255 x)) to uint8, PIL's 8-bit
                                LANCZOS (fixed point, Pillow's pass order), / 255 */
} sd_resize_method;

/* Resizes x [B, H, W, C] to [B, out_h, out_w, C] (out_h, out_w >= 1). Axes whose size does not
 * change are copied unchanged (as PIL skips such a pass; torch's formulas are the identity). */
sd_status sd_op_resize(sd_cl *cl, const sd_dtensor *x, int64_t out_h, int64_t out_w,
                       sd_resize_method method, sd_dtensor **out);

/* out = x[:, top:top+h, left:left+w, :]; the rectangle must lie inside the image. */
sd_status sd_op_crop(sd_cl *cl, const sd_dtensor *x, int64_t top, int64_t left, int64_t h, int64_t w,
                     sd_dtensor **out);

typedef enum sd_pad_mode { SD_PAD_CONSTANT, SD_PAD_EDGE, SD_PAD_REFLECT } sd_pad_mode;

/* Pads x [B, H, W, C] by top/bottom/left/right pixels (>= 0) with `value` (CONSTANT), the
 * nearest edge pixel (EDGE) or the mirror image without repeating the edge (REFLECT, torch's
 * ReflectionPad2d: each pad smaller than that side). An [N, C, H, W] tensor pads its H and W when reshaped (in place,
 * sd_dtensor_reshape) to [N*C, H, W, 1]. */
sd_status sd_op_pad(sd_cl *cl, const sd_dtensor *x, int64_t top, int64_t bottom, int64_t left,
                    int64_t right, sd_pad_mode mode, float value, sd_dtensor **out);

/* Separable blur of x [B, H, W, C] with the normalised 1-D kernel k[0..2r] along W and H, border
 * mirrored without repeating the edge (torch "reflect", repeated for images smaller than r). */
sd_status sd_op_blur(sd_cl *cl, const sd_dtensor *x, int radius, const float *k, sd_dtensor **out);

/* ComfyUI ImageBlur's kernel: exp(-t^2 / (2 sigma^2)) at t = linspace(-1, 1, 2r+1), normalised
 * (its 2-D kernel is the outer product of this one). k has 2r+1 entries. */
void sd_blur_kernel_comfy(int radius, float sigma, float *k);
/* kornia's get_gaussian_kernel1d: exp(-t^2 / (2 sigma^2)) at t = -r..r, normalised. */
void sd_blur_kernel_gaussian(int radius, float sigma, float *k);

/* Sobel gradients of x [B, H, W, C] per channel (kornia spatial_gradient, unnormalised,
 * replicate border): *gx, *gy new tensors of x's shape. */
sd_status sd_op_sobel(sd_cl *cl, const sd_dtensor *x, sd_dtensor **gx, sd_dtensor **gy);

/* Canny edges as ComfyUI's Canny node (kornia.filters.canny with its defaults): x [B, H, W, 3]
 * RGB or [B, H, W, 1]; grayscale, 5x5 Gaussian (sigma 1, reflect), Sobel, magnitude with eps
 * 1e-6, non-maximum suppression over 8 directions, double threshold, hysteresis.
 * 0 < low <= high. out: new [B, H, W, 3] of 0/1. */
sd_status sd_op_canny(sd_cl *cl, const sd_dtensor *x, float low, float high, sd_dtensor **out);

#endif
