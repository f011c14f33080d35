/* BLIP image captioning: transformers' BlipForConditionalGeneration (Salesforce
 * blip-image-captioning-base and -large) in its safetensors layout.
 *
 *   vision_model.*   a ViT: embeddings.patch_embedding (Conv2d, stride = kernel = patch),
 *                    embeddings.class_embedding [1, 1, W], embeddings.position_embedding
 *                    [1, 1 + (S/P)^2, W]; encoder.layers.N.{layer_norm1, self_attn.qkv (fused),
 *                    self_attn.projection, layer_norm2, mlp.fc1, mlp.fc2} (pre-LayerNorm, GELU,
 *                    eps 1e-5); post_layernorm.
 *   text_decoder.*   a BERT decoder: bert.embeddings.{word_embeddings, position_embeddings,
 *                    LayerNorm}; bert.encoder.layer.N.{attention, crossattention}.{self.{query,
 *                    key, value}, output.{dense, LayerNorm}}, intermediate.dense, output.{dense,
 *                    LayerNorm} (post-LayerNorm, eps 1e-12, causal self-attention, cross-attention
 *                    to every image token); cls.predictions.{transform.{dense, LayerNorm},
 *                    decoder (or the tied word embeddings), bias}.
 *
 * Everything is read from the shapes except the number of attention heads, which is width / 64
 * in both published models (ViT-B/16 12, ViT-L/16 16, BERT-base 12). Weights upload lazily. */
#ifndef SD_ML_BLIP_H
#define SD_ML_BLIP_H

#include "ml/loading/weights.h"

#define SD_BLIP_HEAD_DIM 64

typedef struct sd_blip_config {
    int image_size, patch;                      /* 384, 16 */
    int vis_width, vis_layers, vis_ff;          /* large: 1024, 24, 4096; base: 768, 12, 3072 */
    int txt_width, txt_layers, txt_ff;          /* 768, 12, 3072 */
    int vocab, positions;                       /* 30524, 512 */
} sd_blip_config;

/* Reads the configuration from st's shapes, checking every tensor the model uses (SD_ERR_INVALID
 * or SD_ERR_NOT_FOUND naming the file and the tensor). */
sd_status sd_blip_inspect(sd_context *ctx, const sd_safetensors *st, sd_blip_config *cfg);

typedef struct sd_blip sd_blip;

/* A model over st (which must outlive it), weights stored on the device as weight_dtype. */
sd_status sd_blip_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_blip **out);
void sd_blip_free(sd_blip *m); /* NULL-safe */
const sd_blip_config *sd_blip_config_of(const sd_blip *m);

/* BlipImageProcessor's steps: an RGB image (h x w x 3 floats in [0, 1], row-major) resized to
 * size x size and normalised with CLIP's mean and std into pixels ([3, size, size], planar).
 * The resize is torch's bicubic on floats, not PIL's antialiased bicubic on 8-bit values that
 * transformers uses, so pixels differ slightly from its processor's (docs/interrogate.md). */
sd_status sd_blip_preprocess(sd_cl *cl, const float *rgb, int64_t h, int64_t w, int size, float *pixels);

/* The vision tower's last_hidden_state (after post_layernorm) of pixels [3, S, S]:
 * *out a new [1, 1 + (S/P)^2, vis_width] device tensor. */
sd_status sd_blip_encode_image(sd_blip *m, const float *pixels, sd_dtensor **out);

/* Decoding as transformers' generate() with its defaults (length_penalty 1, early_stopping
 * false, no sampling). Lengths count the start token, as transformers' min_length/max_length. */
typedef struct sd_blip_generate_params {
    int num_beams;            /* 1: greedy search */
    int min_length;           /* the end token is forbidden while the sequence is shorter */
    int max_length;           /* at most this many ids including the start token */
    float repetition_penalty; /* 1: none (CTRL's penalty on every id already in the sequence) */
    int bos, eos;             /* start id ([DEC], 30522) and end id ([SEP], 102) */
} sd_blip_generate_params;

/* Generates a caption for image (from sd_blip_encode_image): ids[0..*n) (capacity max_length),
 * starting with bos and ending with eos unless max_length was reached. progress (may be NULL) is
 * called after each step; a non-zero status from it stops generation and is returned. */
sd_status sd_blip_generate(sd_blip *m, const sd_dtensor *image, const sd_blip_generate_params *p, int32_t *ids,
                           int *n, sd_status (*progress)(void *user, int step, int steps), void *user);

#endif
