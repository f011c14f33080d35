/* The 8-bit image steps of comfyui_controlnet_aux's annotators (the ControlNet preprocessors),
 * computed as they are there: numpy and OpenCV 4 without IPP (OpenCV's own code, as on ARM
 * builds), bit for bit. IPP builds of OpenCV differ from these by one level in about 3% of the
 * samples of an INTER_CUBIC resize.
 *
 * Images are interleaved H x W x C bytes. The float steps (GaussianBlur) use the operation
 * order of OpenCV's SSE code paths; this file must be compiled without FMA contraction (the
 * x86-64 baseline has no FMA instructions). */
#ifndef SD_ML_AUX_IMAGE_H
#define SD_ML_AUX_IMAGE_H

#include "core/context.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct sd_img8 {
    int64_t h, w, c;
    unsigned char *px; /* h * w * c bytes, owned */
} sd_img8;

/* cv2 interpolation flags the annotators use. */
typedef enum sd_aux_interp { SD_AUX_AREA, SD_AUX_CUBIC, SD_AUX_LANCZOS4 } sd_aux_interp;

/* A new zeroed h x w x c image (all >= 1); SD_ERR_NOMEM or SD_ERR_LIMIT (size overflow). */
sd_status sd_img8_new(sd_context *ctx, int64_t h, int64_t w, int64_t c, sd_img8 *out);
void sd_img8_free(sd_img8 *img); /* NULL-safe; leaves *img empty */

/* common_annotator_call's conversion of one IMAGE item [h, w, c] (c = 1, 3 or 4) to 8 bits:
 * trunc(float(v) * 255) clipped to 0..255, then HWC3 (1 channel repeated; 4 channels blended
 * over white by their alpha). */
sd_status sd_aux_from_float(sd_context *ctx, const float *src, int64_t h, int64_t w, int64_t c, sd_img8 *out);

/* cv2.resize(src, (dw, dh), interpolation) on 8 bits: INTER_AREA (the 2x fast path, the integer
 * fast path, the general area tables when shrinking, its linear form when enlarging),
 * INTER_CUBIC (fixed point, A = -0.75, replicated border) or INTER_LANCZOS4 (the float weights
 * as Q11 shorts, exact integer sums, replicated border). *out is new. */
sd_status sd_aux_resize(sd_context *ctx, const sd_img8 *src, int64_t dh, int64_t dw, sd_aux_interp interp,
                        sd_img8 *out);

/* cv2.resize(src, (dw, dh), interpolation=INTER_CUBIC) of an sh x sw x cn float64 image into
 * dst (dh x dw x cn doubles): float weights (A = -0.75), double sums, replicated border. */
sd_status sd_aux_resize_cubic_f64(sd_context *ctx, const double *src, int64_t sh, int64_t sw, int64_t cn, double *dst,
                                  int64_t dh, int64_t dw);

/* cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR) of one float32 plane sh x sw into
 * dst (dh x dw floats): float weights, replicated border, products summed without FMA. */
sd_status sd_aux_resize_linear_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst, int64_t dh,
                                   int64_t dw);

/* cv2.resize(src, (dw, dh), interpolation=INTER_LANCZOS4) of one float32 plane sh x sw into
 * dst (dh x dw floats): OpenCV's float weights (interpolateLanczos4), replicated border, the
 * products summed in the order of its x86 build (SSE vertical pass), without FMA. */
sd_status sd_aux_resize_lanczos4_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst,
                                     int64_t dh, int64_t dw);

/* cv2.resize(src, (dw, dh), interpolation=INTER_AREA) of one float32 plane sh x sw shrunk by a
 * fractional factor (OpenCV's general area tables; whole factors, which take its fast path, and
 * enlarging are refused with SD_ERR_INVALID) into dst (dh x dw floats). */
sd_status sd_aux_resize_area_f32(sd_context *ctx, const float *src, int64_t sh, int64_t sw, float *dst, int64_t dh,
                                 int64_t dw);

/* resize_image_with_pad's target size for an h x w image (below); false when a side would be
 * under 1 or over the size limit. */
bool sd_aux_target_size(int64_t h, int64_t w, int64_t resolution, int64_t *th, int64_t *tw);

/* resize_image_with_pad: k = resolution / min(h, w), the target size round(h k) x round(w k)
 * (half to even) in *th, *tw, cv2.resize with `up` when k > 1 and INTER_AREA otherwise, then
 * edge padding up to multiples of 64 into *out (new). Results are cropped back to th x tw. */
sd_status sd_aux_resize_with_pad(sd_context *ctx, const sd_img8 *src, int64_t resolution, sd_aux_interp up,
                                 sd_img8 *out, int64_t *th, int64_t *tw);

/* cv2.GaussianBlur(src, (0, 0), sigma) on a float32 h x w x c image (ksize from sigma as for
 * float images, BORDER_REFLECT_101): dst (h * w * c floats, not src) receives the result. */
sd_status sd_aux_gaussian_blur(sd_context *ctx, const float *src, int64_t h, int64_t w, int64_t c, double sigma,
                               float *dst);

/* cv2.GaussianBlur(src, (0, 0), sigma) of one 8-bit plane: OpenCV's bit-exact fixed-point
 * path (ksize from sigma as for 8-bit images, Q8 kernel by error diffusion, exact sums, the
 * result rounded), BORDER_REFLECT_101, into dst (not src). */
sd_status sd_aux_gaussian_blur_u8(sd_context *ctx, const unsigned char *src, int64_t h, int64_t w, double sigma,
                                  unsigned char *dst);

/* The annotators' nms(x, threshold, sigma) on one 8-bit plane: the float32 GaussianBlur of x,
 * kept where it is the maximum of a 3-pixel line in one of four directions, 255 where that is
 * above threshold, 0 elsewhere, into dst (not src). */
sd_status sd_aux_nms(sd_context *ctx, const unsigned char *src, int64_t h, int64_t w, int threshold, double sigma,
                     unsigned char *dst);

/* The "scribble" ending of the HED and PiDiNet detectors, in place on one plane:
 * nms(map, 127, 3), the 8-bit GaussianBlur with sigma 3, then 255 where above 4, else 0. */
sd_status sd_aux_scribble_lines(sd_context *ctx, unsigned char *map, int64_t h, int64_t w);

/* cv2.cvtColor(img, COLOR_RGB2GRAY) of a 3-channel image into gray (h * w bytes): OpenCV 4's
 * 15-bit weights 9798, 19235, 3735, rounded (equal to cv2 on all 2^24 colours). */
void sd_aux_rgb_to_gray(const sd_img8 *img, unsigned char *gray);

/* cv2's Otsu threshold (THRESH_OTSU) of n 8-bit values. */
int sd_aux_otsu_threshold(const unsigned char *v, size_t n);

#endif
