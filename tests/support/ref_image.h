/* Plain-C references for the image ops (runtime-opencl/ops_image.h) on [B, H, W, C] floats,
 * written from torch's interpolate, PIL's Resample.c, ComfyUI's ImageBlur and kornia's canny
 * definitions: direct 2-D loops, not the separable tap tables the ops use. */
#ifndef SD_TESTS_REF_IMAGE_H
#define SD_TESTS_REF_IMAGE_H
#include "runtime-opencl/ops_image.h"

void ref_resize(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                sd_resize_method method, float *y);
void ref_crop(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t top, int64_t left,
              int64_t ch, int64_t cw, float *y);
void ref_pad(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t top, int64_t bottom,
             int64_t left, int64_t right, sd_pad_mode mode, float value, float *y);
/* ComfyUI ImageBlur: 2-D kernel exp(-d^2 / 2 sigma^2) on linspace(-1, 1) coordinates,
 * reflect-padded convolution. */
void ref_blur_comfy(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, int radius, float sigma,
                    float *y);
void ref_sobel(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, float *gx, float *gy);
/* kornia.filters.canny(x, low, high) edges (after hysteresis) as [B, H, W, 3]. */
void ref_canny(const float *x, int64_t b, int64_t h, int64_t w, int64_t c, float low, float high, float *y);
#endif
