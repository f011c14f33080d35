/* comfy.utils.common_upscale on latents [B, C, H, W] (LatentUpscale, LatentUpscaleBy, and the
 * hires-fix graph): torch F.interpolate modes on the device image ops, ComfyUI's bislerp on the
 * host. */
#ifndef SD_NODES_LATENT_RESIZE_H
#define SD_NODES_LATENT_RESIZE_H

#include "core/value.h"

/* ComfyUI's latent upscale method names, NULL-terminated: nearest-exact, bilinear, area,
 * bicubic, bislerp. */
extern const char *const sd_latent_upscale_methods[];

/* Resizes in [B, C, H, W] to out [B, C, height, width] (out's data preallocated) with `method`
 * (one of sd_latent_upscale_methods), after cutting the centre to the target aspect ratio when
 * crop_center is set (ComfyUI's rule, Python rounding). The torch modes run as
 * F.interpolate(..., mode) (align_corners False, no antialias) on ctx's device; bislerp is
 * ComfyUI's: per axis, the bilinear source coordinates of torch, and slerp between the two
 * neighbouring channel vectors (norm interpolated linearly; nearly parallel vectors give the
 * first, opposite ones a linear mix). Errors (message on ctx): SD_ERR_INVALID for an unknown
 * method, device errors. */
sd_status sd_latent_common_upscale(sd_context *ctx, const sd_tensor *in, int64_t width, int64_t height,
                                   const char *method, bool crop_center, sd_tensor *out);

#endif
