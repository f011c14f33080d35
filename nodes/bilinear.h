/* Host bilinear resizing as torch.nn.functional.interpolate(mode="bilinear",
 * align_corners=False, no antialias), in float arithmetic in torch's order, which ComfyUI uses to
 * fit masks to images (VAEEncodeForInpaint, InpaintModelConditioning, composite). Equal sizes
 * copy exactly. */
#ifndef SD_NODES_BILINEAR_H
#define SD_NODES_BILINEAR_H
#include <stdint.h>

/* src [sh, sw, c] interleaved -> dst [dh, dw, c]; a plane is c = 1. */
void sd_bilinear_resize(const float *src, int64_t sh, int64_t sw, int64_t c, float *dst, int64_t dh, int64_t dw);

#endif
