/* Realistic line art: the Generator of informative-drawings as comfyui_controlnet_aux's
 * LineartDetector runs it (sk_model.pth fine, sk_model2.pth coarse), from a .safetensors file
 * holding the same tensors under the same names:
 *
 *   model0.1                  reflect pad 3, conv 7x7 3 -> B, instance norm, ReLU
 *   model1.0, model1.3        conv 3x3 stride 2 (B -> 2B -> 4B), instance norm, ReLU
 *   model2.{i}.conv_block.1/5 residual blocks: reflect pad 1, conv 3x3, instance norm (ReLU
 *                             after the first), added to the block's input
 *   model3.0, model3.3        transposed conv 3x3 stride 2 (4B -> 2B -> B), instance norm, ReLU
 *   model4.1                  reflect pad 3, conv 7x7 B -> 1, sigmoid
 *
 * Instance norms have no weights (eps 1e-5). The real files have B = 64 and 3 residual blocks;
 * both are read from the shapes. */
#ifndef SD_ML_LINEART_H
#define SD_ML_LINEART_H

#include "ml/loading/weights.h"

#define SD_LINEART_MAX_BASE 1024
#define SD_LINEART_MAX_BLOCKS 32

typedef struct sd_lineart_config {
    int base;   /* B: channels after the first convolution */
    int blocks; /* residual blocks */
} sd_lineart_config;

/* Reads the architecture from st's shapes, checking every tensor. SD_ERR_INVALID naming the
 * file and the tensor missing or misshapen. */
sd_status sd_lineart_inspect(sd_context *ctx, const sd_safetensors *st, sd_lineart_config *out);

typedef struct sd_lineart sd_lineart;

/* A network over st (which must outlive it), f32 weights uploaded on first use. */
sd_status sd_lineart_new(sd_cl *cl, const sd_safetensors *st, sd_lineart **out);
void sd_lineart_free(sd_lineart *m); /* NULL-safe */

/* x: [1, 3, H, W] f32 RGB in [0, 1], H and W multiples of 4 and at least 8 -> *out: new
 * [1, 1, H, W], the network's output before its sigmoid. */
sd_status sd_lineart_forward(sd_lineart *m, const sd_dtensor *x, sd_dtensor **out);

/* LineartDetector's plane from n pre-sigmoid values: 255 - uint8(clip(255 sigmoid(v))). */
void sd_lineart_map(const float *logits, size_t n, unsigned char *map);

#endif
