/* The CLIP image tower (transformers' CLIPVisionModelWithProjection; open_clip's VisionTransformer)
 * as ComfyUI's CLIPVisionLoader/CLIPVisionEncode use it: patch embedding (a stride-P convolution
 * without bias), class token, position embeddings, pre-LayerNorm, the CLIP transformer layers
 * (shared with the text tower, ml/text/clip_layer.h), post-LayerNorm of the class token and the
 * projection. ViT-L/14 (OpenAI), ViT-H/14 and ViT-bigG/14 (LAION) in transformers' layout
 * (vision_model.*, visual_projection.weight) and open_clip's (visual.conv1, class_embedding,
 * positional_embedding, ln_pre, transformer.resblocks.N, ln_post, proj).
 *
 * SigLIP's tower (transformers' SiglipVisionModel, sigclip_vision_patch14_384.safetensors: the
 * encoder of FLUX Redux) in transformers' layout runs the same layers with GELU (tanh) and
 * LayerNorm eps 1e-6: a patch convolution with bias, no class token, no pre-LayerNorm, and the
 * post-LayerNorm over every token; as ComfyUI (comfy/clip_model.py, siglip_vision_model), that
 * normalised sequence is both last_hidden_state and image_embeds (its attention-pooling head,
 * vision_model.head.*, is not used). */
#ifndef SD_ML_CLIP_VISION_H
#define SD_ML_CLIP_VISION_H

#include "ml/loading/weights.h"

typedef struct sd_clip_vision_config {
    char prefix[48];  /* "vision_model." / "visual." (or "<p>visual." inside a checkpoint) */
    bool open_clip;   /* open_clip's names */
    int width;        /* shape: 1024 ViT-L, 1280 ViT-H, 1664 ViT-bigG */
    int layers;       /* shape: 24, 32, 48 */
    int intermediate; /* shape: MLP width */
    int patch;        /* shape: 14 */
    int image_size;   /* shape: 224 (from the position table: (image/patch)^2 + 1 rows) */
    int projection;   /* shape: image_embeds width (768, 1024, 1280) */
    int heads;        /* 16 for ViT-L/H/bigG (width/64 for other widths) */
    bool gelu;        /* exact GELU (LAION) or quick GELU (OpenAI: width <= 1024) */
    bool siglip;      /* SigLIP (see above); projection is 0 */
} sd_clip_vision_config;

/* Tokens of an encoding: (image_size / patch)^2 patches and the class token (SigLIP: none). */
static inline int sd_clip_vision_tokens(const sd_clip_vision_config *c)
{
    int g = c->image_size / c->patch;
    return g * g + !c->siglip;
}

/* Floats of one image's image_embeds: projection, or SigLIP's tokens x width. */
static inline size_t sd_clip_vision_embeds_size(const sd_clip_vision_config *c)
{
    return c->siglip ? (size_t)sd_clip_vision_tokens(c) * (size_t)c->width : (size_t)c->projection;
}

/* Reads the architecture from the tensors under prefix (NULL: "vision_model." or "visual.",
 * whichever the file has). SD_ERR_INVALID naming the file when it is no CLIP vision model or a
 * tensor has an unexpected shape. */
sd_status sd_clip_vision_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix,
                                 sd_clip_vision_config *cfg);

typedef struct sd_clip_vision sd_clip_vision;

/* An encoder over st (which must outlive it) with cfg; weights upload on the first encode. */
sd_status sd_clip_vision_new(sd_cl *cl, const sd_safetensors *st, const sd_clip_vision_config *cfg,
                             sd_dtype weight_dtype, sd_clip_vision **out);
void sd_clip_vision_free(sd_clip_vision *m); /* NULL-safe */
const sd_clip_vision_config *sd_clip_vision_config_of(const sd_clip_vision *m);

/* Encodes `batch` preprocessed images (pixels: [batch, 3, image_size, image_size]). Each output
 * may be NULL: embeds [batch, projection] (post-LayerNorm class token, projected: image_embeds;
 * SigLIP: [batch, tokens, width], equal to last), last [batch, tokens, width] (the last layer's
 * output: last_hidden_state; SigLIP: post-LayerNorm), penult
 * [batch, tokens, width] (the output of the layer before it: penultimate_hidden_states). */
sd_status sd_clip_vision_encode(sd_clip_vision *m, const float *pixels, int batch, float *embeds, float *last,
                                float *penult);

/* ComfyUI's clip_preprocess of one RGB image (image: [h, w, 3] in [0, 1]) into out
 * ([3, size, size]): unless it is already size x size, torch's antialiased bicubic resize (the
 * short side to size and a centre crop when crop, else straight to size x size), then rounding
 * to 8 bits and the CLIP mean/std. SD_ERR_NOMEM / SD_ERR_INVALID (message on ctx). */
sd_status sd_clip_vision_preprocess(sd_context *ctx, const float *image, int64_t h, int64_t w, int size, bool crop,
                                    float *out);
/* The same with the encoder's own size, mean and std (SigLIP: 0.5 and 0.5, as ComfyUI's
 * clip_vision_siglip_384.json). */
sd_status sd_clip_vision_preprocess_for(sd_context *ctx, const sd_clip_vision_config *cfg, const float *image,
                                        int64_t h, int64_t w, bool crop, float *out);

#endif
