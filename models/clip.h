/* The CLIP text transformer (transformers' CLIPTextModel as SD1 uses it: token + position
 * embeddings, pre-LayerNorm blocks with causal self-attention and quick-GELU MLP, final
 * LayerNorm), on the op library with lazily uploaded weights (models/weights.h). */
#ifndef SD_MODELS_CLIP_H
#define SD_MODELS_CLIP_H

#include "models/checkpoint.h"
#include "models/weights.h"

typedef struct sd_clip_model sd_clip_model;

/* A text encoder over the tensors <prefix>embeddings.*, <prefix>encoder.layers.N.*,
 * <prefix>final_layer_norm.* of st (prefix "cond_stage_model.transformer.text_model." in an SD1
 * checkpoint). Nothing is uploaded until the first encode. st must outlive the model. */
sd_status sd_clip_model_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                            const sd_clip_config *config, sd_dtype weight_dtype, sd_clip_model **out);
void sd_clip_model_free(sd_clip_model *m); /* NULL-safe */
/* A text encoder with base's configuration over a patched view of base's weights
 * (models/weights.h): it shares every unpatched device tensor with base, which must outlive it. */
sd_status sd_clip_model_new_patched(sd_clip_model *base, const sd_weight_patcher *patcher, sd_clip_model **out);
const sd_clip_config *sd_clip_model_config(const sd_clip_model *m);

/* Encodes `batch` windows of config->positions token ids each.
 * layer_index: which layer's output to return, counted from the end as ComfyUI's
 * CLIPSetLastLayer does: -1 = the last layer (followed by the final LayerNorm), -2 = the one
 * before (ComfyUI applies the final LayerNorm to it too — match ComfyUI exactly).
 * hidden: batch * positions * width floats. pooled (may be NULL): batch * width floats, the
 * final-LayerNorm output at each window's first end token (id 49407, transformers' argmax rule). */
sd_status sd_clip_encode(sd_clip_model *m, const int32_t *tokens, int batch, int layer_index,
                         float *hidden, float *pooled);

#endif
