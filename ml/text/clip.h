/* The CLIP text transformer: transformers' CLIPTextModel as SD1 and SDXL use it (token + position
 * embeddings, pre-LayerNorm blocks with causal self-attention and quick-GELU MLP, final
 * LayerNorm) and the OpenCLIP text tower of SDXL in open_clip's layout (fused in_proj, GELU MLP,
 * text_projection), on the op library with lazily uploaded weights (ml/loading/weights.h). */
#ifndef SD_ML_CLIP_H
#define SD_ML_CLIP_H

#include "ml/families/checkpoint.h"
#include "ml/loading/weights.h"

typedef struct sd_clip_model sd_clip_model;

/* A text encoder over the tensors <prefix>embeddings.*, <prefix>encoder.layers.N.*,
 * <prefix>final_layer_norm.* of st (prefix "cond_stage_model.transformer.text_model." in an SD1
 * checkpoint). Nothing is uploaded until the first encode. st must outlive the model. */
sd_status sd_clip_model_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                            const sd_clip_config *config, sd_dtype weight_dtype, sd_clip_model **out);
void sd_clip_model_free(sd_clip_model *m); /* NULL-safe */
/* A text encoder sharing every device tensor of base (which must outlive it) that encodes
 * windows of `positions` tokens (1 .. base's). Under the causal mask a token's output depends
 * only on the tokens up to it, so a text of n tokens with its end token encoded in a window of n
 * gives the pooled output of a full window (the CLIP interrogator encodes labels so). */
sd_status sd_clip_model_new_window(sd_clip_model *base, int positions, sd_clip_model **out);
/* A text encoder with base's configuration over a patched view of base's weights
 * (ml/loading/weights.h): it shares every unpatched device tensor with base, which must outlive it. */
sd_status sd_clip_model_new_patched(sd_clip_model *base, const sd_weight_patcher *patcher, sd_clip_model **out);
const sd_clip_config *sd_clip_model_config(const sd_clip_model *m);
/* Unique per text-encoder object created in this process (never reused, unlike its address). */
uint64_t sd_clip_model_serial(const sd_clip_model *m);

/* Encodes `batch` windows of config->positions token ids each.
 * layer_index: which layer's output to return, counted from the end as ComfyUI's
 * CLIPSetLastLayer does: -1 = the last layer, -2 = the one before. The final LayerNorm is applied
 * to it when config->norm_hidden (SD1, as ComfyUI: to an intermediate layer too), never otherwise
 * (SDXL); 0 is ComfyUI's "last" output, the last layer followed by the final LayerNorm in any
 * family (what a CLIPSetLastLayer deeper than the encoder gives). hidden: batch * positions * width floats. pooled (may be NULL): batch *
 * sd_clip_pooled_width floats, the final-LayerNorm output of the last layer at each window's first
 * end token (id 49407: what transformers' argmax rule picks for vocabulary ids, and ComfyUI's
 * rule; the highest id's position when a window has no end token), times text_projection
 * ([width, projection]; transformers' text_projection.weight transposed) when the model has one. */
/* The width of the pooled output: config->projection, or the width without a projection. */
static inline int sd_clip_pooled_width(const sd_clip_config *c)
{
    return c->projection ? c->projection : c->width;
}

sd_status sd_clip_encode(sd_clip_model *m, const int32_t *tokens, int batch, int layer_index,
                         float *hidden, float *pooled);

/* Pooled outputs (as sd_clip_encode's, batch * sd_clip_pooled_width floats) of `batch` windows
 * that begin with the same n_prefix tokens (no end token among them): window i is the prefix
 * followed by suffix[i] (n_suffix[i] >= 1 tokens, n_prefix + n_suffix[i] <= positions). Under
 * the causal mask the prefix's states are the same in every window, so they are computed once:
 * prefix and suffixes run as one packed sequence whose mask lets a suffix token see the prefix
 * and the earlier tokens of its own window, each token at its position in its window. */
sd_status sd_clip_encode_packed(sd_clip_model *m, const int32_t *prefix, int n_prefix, const int32_t *const *suffix,
                                const int *n_suffix, int batch, float *pooled);

/* Like sd_clip_encode with textual-inversion vectors: a token id vocab + i with 0 <= i < n_extra
 * takes row i of extra (n_extra * width floats) as its token embedding instead of a row of the
 * token table (position embeddings are added as for any token). Other ids outside the vocabulary
 * are SD_ERR_INVALID. */
sd_status sd_clip_encode_ex(sd_clip_model *m, const int32_t *tokens, int batch, int layer_index,
                            const float *extra, int n_extra, float *hidden, float *pooled);

#endif
