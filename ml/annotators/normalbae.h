/* The BAE surface-normal network as comfyui_controlnet_aux's NormalBaeDetector runs it (scannet.pt:
 * NNET with architecture "BN"), from the .pt file ({"model": state dict}, names with or without
 * the "module." of its training) or a .safetensors file with the same tensors:
 *
 *   encoder.original_model   timm's tf_efficientnet_b5 (num_classes 0): conv_stem 3x3 stride 2
 *                            + bn1 + SiLU; blocks.{s}.{j}, seven stages with strides 1, 2, 2, 2,
 *                            1, 2, 1 (stage 0 depthwise-separable: conv_dw, bn1, SiLU, se,
 *                            conv_pw, bn2; the others inverted residuals: conv_pw, bn1, SiLU,
 *                            conv_dw, bn2, SiLU, se, conv_pwl, bn3; the input added when stride 1
 *                            and the width is kept); se = x * sigmoid(conv_expand(SiLU(
 *                            conv_reduce(mean x)))); conv_head 1x1. BatchNorm eps 1e-3, TF "same"
 *                            padding (stride 2: the smaller half of the padding before).
 *   decoder                  conv2 1x1 on conv_head's output, up1..up4 (UpSampleBN: bilinear
 *                            align_corners resize to the skip's size, concat with blocks 4, 2,
 *                            1, 0, twice conv 3x3 + BatchNorm eps 1e-5 + LeakyReLU 0.01),
 *                            out_conv_res8 3x3 on up2's output, norm_normalize; then
 *                            out_conv_res4/2/1 (1x1 MLPs, ReLU between) on the features of up2,
 *                            up3, up4 and the previous prediction, both upsampled 2x (bilinear
 *                            align_corners), each normalised: the eval path of Decoder.forward.
 *
 * norm_normalize: (x, y, z) / (|(x, y, z)| + 1e-10) and kappa elu(k) + 1.01. Widths, kernel
 * sizes and block counts are read from the shapes (bn2 of the encoder is in the file but unused,
 * as there); BatchNorms are folded into their convolutions when the file is loaded. */
#ifndef SD_ML_NORMALBAE_H
#define SD_ML_NORMALBAE_H

#include "ml/formats/safetensors.h"
#include "runtime-opencl/tensor.h"

#define SD_NORMALBAE_STAGES 7
#define SD_NORMALBAE_MAX_BLOCKS 16 /* per stage; the real network has at most 9 */

typedef struct sd_normalbae_config {
    const char *prefix; /* "", "module.", "model." or "model.module." before every name */
    int blocks[SD_NORMALBAE_STAGES];
    int width[SD_NORMALBAE_STAGES]; /* output channels of each stage */
    int stem, head;
} sd_normalbae_config;

/* Reads the architecture from st's shapes, checking every tensor the network uses.
 * SD_ERR_INVALID naming the file and the tensor missing or misshapen. */
sd_status sd_normalbae_inspect(sd_context *ctx, const sd_safetensors *st, sd_normalbae_config *out);

typedef struct sd_normalbae sd_normalbae;

sd_status sd_normalbae_new(sd_cl *cl, const sd_safetensors *st, sd_normalbae **out);
void sd_normalbae_free(sd_normalbae *m); /* NULL-safe */

/* x: [1, 3, H, W] f32 RGB normalised with the ImageNet mean and std, H and W multiples of 32 ->
 * out (4 H W floats): out_res1, the unit normals' x, y, z planes and kappa. */
sd_status sd_normalbae_forward(sd_normalbae *m, const sd_dtensor *x, float *out);

/* The detector's input: px (h w RGB bytes) / 255 as float32, then (v - mean) / std per channel
 * (torchvision's Normalize with the ImageNet mean and std) into x, [3, h, w]. */
void sd_normalbae_input(const unsigned char *px, int64_t h, int64_t w, float *x);

/* The detector's image from out_res1 (hw samples per plane): RGB bytes
 * uint8(clip((n + 1) * 0.5, 0, 1) * 255) of the x, y, z planes, interleaved. */
void sd_normalbae_map(const float *normals, size_t hw, unsigned char *rgb);

#endif
