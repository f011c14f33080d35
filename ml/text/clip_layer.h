/* One pre-LayerNorm CLIP transformer layer, x += SelfAttention(LN1(x)); x += MLP(LN2(x)), shared
 * by the text tower (ml/text/clip.c) and the image tower (ml/vision/clip_vision.c): their blocks
 * are the same in transformers' layout (encoder.layers.N.*: q/k/v/out_proj, mlp.fc1/fc2) and in
 * open_clip's (transformer.resblocks.N.*: fused attn.in_proj, mlp.c_fc/c_proj), under each
 * tower's own weight prefix. */
#ifndef SD_ML_CLIP_LAYER_H
#define SD_ML_CLIP_LAYER_H

#include "ml/loading/weights.h"

#define SD_CLIP_LN_EPS 1e-5f

typedef struct sd_clip_layers {
    sd_cl *cl;
    sd_weights *w;          /* the tower's weights (names relative to its prefix) */
    bool open_clip;         /* open_clip's names, else transformers' */
    int width, heads;
    bool gelu;              /* exact GELU in the MLP, else quick GELU */
    bool gelu_tanh;         /* GELU's tanh approximation instead (SigLIP) */
    float eps;              /* LayerNorm eps; 0: SD_CLIP_LN_EPS */
    const sd_dtensor *mask; /* additive attention mask ([n, n]) or NULL */
} sd_clip_layers;

/* Runs layer `layer` on x ([batch, n, width]); replaces *x. */
sd_status sd_clip_layer(const sd_clip_layers *t, int layer, sd_dtensor **x);

/* LayerNorm (eps: t->eps or 1e-5) with the weights <fmt>.weight / <fmt>.bias, fmt naming layer `layer`. */
sd_status sd_clip_layer_norm(const sd_clip_layers *t, const char *fmt, int layer, const sd_dtensor *x,
                             sd_dtensor **out);

#endif
