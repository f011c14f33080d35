/* PiDiNet soft edges as comfyui_controlnet_aux's PidiNetDetector runs it (table5_pidinet.pth:
 * pidinet() = PiDiNet "carv4", 60 channels, CDCM width 24, CSAM attention), from a .safetensors
 * file holding the same tensors under the same names, with or without the "module." prefix of
 * the .pth:
 *
 *   init_block            3x3 pixel-difference convolution (cd) 3 -> C, no bias
 *   block{s}_{k}          s = 1..4 with 3, 4, 4, 4 blocks of widths C, 2C, 4C, 4C: the first
 *                         block of stages 2..4 max-pools and adds shortcut (1x1, bias) of its
 *                         input; conv1 is a depthwise pixel-difference convolution (types cd,
 *                         ad, rd, cv repeating from block1_1's ad), ReLU, conv2 1x1; plus the input
 *   dilations.{i}         CDCM on stage i's output: ReLU, conv1 1x1 C_i -> D (bias), the sum of
 *                         four 3x3 convolutions dilated 5, 7, 9, 11
 *   attentions.{i}        CSAM: x * sigmoid(conv2 3x3 (conv1 1x1 (ReLU x)))
 *   conv_reduces.{i}.conv 1x1 D -> 1, resized to the input (bilinear)
 *   classifier            1x1 over the four maps -> the edge logits
 *
 * Pixel-difference kernels are turned into plain ones when the file is loaded (cd: the centre
 * minus the kernel's sum; ad: the kernel minus its clockwise rotation; rd: the 5x5 ring). C and D
 * are read from the shapes. */
#ifndef SD_ML_PIDINET_H
#define SD_ML_PIDINET_H

#include "ml/loading/weights.h"

#define SD_PIDINET_MAX_WIDTH 1024

typedef struct sd_pidinet_config {
    int channels; /* C */
    int dil;      /* D: CDCM width */
    bool module_prefix; /* names start with "module." */
} sd_pidinet_config;

/* Reads the architecture from st's shapes, checking every tensor. SD_ERR_INVALID naming the
 * file and the tensor missing or misshapen. */
sd_status sd_pidinet_inspect(sd_context *ctx, const sd_safetensors *st, sd_pidinet_config *out);

typedef struct sd_pidinet sd_pidinet;

sd_status sd_pidinet_new(sd_cl *cl, const sd_safetensors *st, sd_pidinet **out);
void sd_pidinet_free(sd_pidinet *m); /* NULL-safe */

/* x: [1, 3, H, W] f32 BGR in [0, 1], H and W multiples of 8 -> *out: new [1, 1, H, W], the
 * classifier's output before its sigmoid. */
sd_status sd_pidinet_forward(sd_pidinet *m, const sd_dtensor *x, sd_dtensor **out);

/* PidiNetDetector's plane from n logits: uint8(clip(255 e)) with e = sigmoid (float32), or its
 * safe_step (levels 0, 0.5, 1) when safe. */
void sd_pidinet_map(const float *logits, size_t n, bool safe, unsigned char *map);

#endif
