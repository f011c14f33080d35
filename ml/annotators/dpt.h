/* Pieces shared by the DPT depth networks (Depth Anything V2, MiDaS DPT-Hybrid): ViT blocks,
 * the fusion blocks of the DPT decoder and bilinear resizes, on the op API over a weight set.
 * Weight names are given in full ("depth_head.scratch.refinenet1", "pretrained.blocks.3"). */
#ifndef SD_ML_DPT_H
#define SD_ML_DPT_H

#include "ml/loading/weights.h"

typedef struct sd_dpt {
    sd_cl *cl;
    sd_weights *w;
} sd_dpt;

/* A new f32 device tensor of the given shape holding host. */
sd_status sd_dpt_upload(sd_cl *cl, int ndim, const int64_t *shape, const float *host, sd_dtensor **out);

/* Conv `name` (.weight, or w_plain when given; .bias when bias is set) on x with the stride and
 * symmetric zero padding: *out new, ReLU applied in place when relu is set. */
sd_status sd_dpt_conv(const sd_dpt *d, const sd_dtensor *x, const char *name, const sd_dtensor *w_plain, int stride,
                      int pad, bool bias, bool relu, sd_dtensor **out);

/* F.interpolate(x, (oh, ow), mode="bilinear", align_corners) of x [1, C, H, W] (consumed,
 * replaced), as two products with interpolation matrices (align_corners unset: source index
 * (o + 0.5) in / out - 0.5 clamped at 0, which is also scale_factor=2's). */
sd_status sd_dpt_resize_bilinear(sd_cl *cl, sd_dtensor **x, int64_t oh, int64_t ow, bool align_corners);

/* FeatureFusionBlock `name` (its resConfUnit1/2.conv1/2 and out_conv): *path (replaced) plus
 * resConfUnit1(skip) when skip is given (skip is changed), resConfUnit2, the align_corners
 * resize to oh x ow, out_conv. */
sd_status sd_dpt_fusion(const sd_dpt *d, const char *name, sd_dtensor **path, sd_dtensor *skip, int64_t oh,
                        int64_t ow);

/* A pre-norm ViT block `name` (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2; eps 1e-6;
 * ls1.gamma and ls2.gamma scaling the branches when layer_scale is set) on the tokens *t
 * [1, N, D] (replaced). */
sd_status sd_dpt_vit_block(const sd_dpt *d, const char *name, int heads, bool layer_scale, sd_dtensor **t);

#endif
