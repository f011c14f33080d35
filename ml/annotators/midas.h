/* MiDaS v3 DPT-Hybrid (DPTDepthModel, backbone "vitb_rn50_384", non_negative) as
 * comfyui_controlnet_aux's MidasDetector runs it, from dpt_hybrid-midas-501f0c75.pt (or a
 * .safetensors with the same names):
 *
 *   pretrained.model.patch_embed.backbone   timm ResNetV2 (non-preact): stem (weight-standardised
 *                         conv 7x7 stride 2 with TF "same" padding, GroupNorm 32 + ReLU, max pool
 *                         3x3 stride 2 "same"), three stages of bottlenecks (1x1, 3x3 carrying the
 *                         stride, 1x1; GroupNorm 32 after each, ReLU after the first two and after
 *                         the sum with the shortcut; a 1x1 downsample on each first block)
 *   pretrained.model.*    ViT: 1x1 patch projection of the last stage (1/16), cls token, the
 *                         position grid resized bilinearly, pre-norm blocks (heads of 64)
 *   pretrained.act_postprocess3/4   readout "project" (Linear of [token, cls] + GELU), 1x1 conv,
 *                         and for 4 a 3x3 conv stride 2
 *   scratch.*             DPT decoder: *_rn convs of stage 0, stage 1 and the two ViT hooks
 *                         (blocks 2/3 and last: 8 and 11 of 12), fusion blocks, output_conv
 *
 * Weight standardisation (per output channel, biased variance, eps 1e-8) is applied when the
 * file is read; GroupNorm eps 1e-5, LayerNorm 1e-6. */
#ifndef SD_ML_MIDAS_H
#define SD_ML_MIDAS_H

#include "ml/loading/weights.h"

#define SD_MIDAS_STAGES 3
#define SD_MIDAS_MAX_BLOCKS 64

typedef struct sd_midas_config {
    int stem;                        /* stem width */
    int blocks[SD_MIDAS_STAGES];     /* bottlenecks per stage */
    int width[SD_MIDAS_STAGES];      /* stage output widths */
    int dim, heads, depth, grid;     /* ViT */
    int hooks[2];                    /* the ViT blocks the decoder takes */
    int features;                    /* DPT width */
} sd_midas_config;

/* Reads the architecture from st's shapes. SD_ERR_INVALID naming the file and the tensor
 * missing or misshapen. */
sd_status sd_midas_inspect(sd_context *ctx, const sd_safetensors *st, sd_midas_config *out);

typedef struct sd_midas sd_midas;

sd_status sd_midas_new(sd_cl *cl, const sd_safetensors *st, sd_midas **out);
void sd_midas_free(sd_midas *m); /* NULL-safe */

/* x: [1, 3, H, W] (the detector's v / 127.5 - 1), H and W multiples of 32 -> *out: new
 * [1, 1, H, W], the depth. */
sd_status sd_midas_forward(sd_midas *m, const sd_dtensor *x, sd_dtensor **out);

#endif
