/* HED soft edges: lllyasviel's ControlNetHED_Apache2 (ControlNetHED.pth, as comfyui_controlnet_aux's
 * HEDdetector runs it), from a .safetensors file holding the same tensors under the same names:
 *
 *   norm [1, 3, 1, 1]                          subtracted from the 0..255 RGB input
 *   block{1..5}.convs.{i}.weight/bias          3x3 convolutions (padding 1), each followed by ReLU
 *   block{1..5}.projection.weight/bias         1x1 convolution to one channel
 *
 * Blocks 2..5 start with a 2x2 max-pool; each block's projection is one output. The real file
 * has widths 64, 128, 256, 512, 512 and 2, 2, 3, 3, 3 convolutions; widths and counts are read
 * from the shapes, so tiny test networks in the same layout run through the same code. */
#ifndef SD_ML_HED_H
#define SD_ML_HED_H

#include "ml/loading/weights.h"

#define SD_HED_BLOCKS 5
#define SD_HED_MAX_CONVS 8
#define SD_HED_MAX_WIDTH 4096

typedef struct sd_hed_config {
    int width[SD_HED_BLOCKS];  /* output channels of each block's convolutions */
    int convs[SD_HED_BLOCKS];  /* convolutions per block */
} sd_hed_config;

/* Reads the architecture from st's shapes, checking every tensor. SD_ERR_INVALID naming the
 * file and tensor (missing, misshapen, or beyond the limits above). */
sd_status sd_hed_inspect(sd_context *ctx, const sd_safetensors *st, sd_hed_config *out);

typedef struct sd_hed sd_hed;

/* A network over st (which must outlive it), inspected as above; f32 weights uploaded on first
 * use. */
sd_status sd_hed_new(sd_cl *cl, const sd_safetensors *st, sd_hed **out);
void sd_hed_free(sd_hed *m); /* NULL-safe */

/* x: [1, 3, H, W] f32 RGB in 0..255 with H and W multiples of 16 -> proj[k] (new, the caller
 * frees each): [1, 1, H / 2^k, W / 2^k] for k = 0..4. On failure every proj[k] is NULL. */
sd_status sd_hed_forward(sd_hed *m, const sd_dtensor *x, sd_dtensor *proj[SD_HED_BLOCKS]);

/* HEDdetector's edge map from the five projections (host arrays proj[k] of ph[k] x pw[k]):
 * each resized to h x w (cv2 INTER_LINEAR on float32), their mean (float32, numpy's order), the
 * sigmoid (float64), with `safe` numpy's safe_step (levels 0, 0.5, 1), times 255 truncated to
 * 8 bits into map (h * w bytes). */
sd_status sd_hed_edge_map(sd_context *ctx, const float *const proj[SD_HED_BLOCKS], const int64_t ph[SD_HED_BLOCKS],
                          const int64_t pw[SD_HED_BLOCKS], int64_t h, int64_t w, bool safe, unsigned char *map);

#endif
