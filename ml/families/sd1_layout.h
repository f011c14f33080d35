/* The single-file checkpoint layouts of the LDM families (the name is historical): every tensor
 * name and shape of the LDM UNet (model.diffusion_model.*, with SDXL's per-level depths and
 * label_emb), the AutoencoderKL (first_stage_model.*) and the text encoders in transformers'
 * layout (SD1's cond_stage_model.transformer.text_model.*, SDXL's CLIP-L) or open_clip's (SDXL's
 * OpenCLIP-bigG, conditioner.embedders.N.model.*) for a given architecture, as in
 * v1-5-pruned-emaonly.safetensors and sd_xl_base_1.0 / sd_xl_refiner_1.0. One description serves
 * the checkpoint checker (ml/families/checkpoint.c), the test-checkpoint writer
 * (tools/sdflow_mkckpt) and the tests. SD2.x's OpenCLIP-H sits at cond_stage_model.model.* in
 * open_clip's layout.
 *
 * Also: deterministic random-weight checkpoints in those layouts, and small sample files holding
 * just the tensors that identify other families (for family-detection tests). */
#ifndef SD_ML_SD1_LAYOUT_H
#define SD_ML_SD1_LAYOUT_H

#include "ml/families/checkpoint.h"

typedef enum sd_param_kind {
    SD_PARAM_WEIGHT,      /* Linear or conv weight; fan_in = inputs per output */
    SD_PARAM_BIAS,        /* Linear or conv bias; fan_in as its weight */
    SD_PARAM_NORM_WEIGHT, /* GroupNorm / LayerNorm scale */
    SD_PARAM_NORM_BIAS,
    SD_PARAM_EMBEDDING,   /* token / position embedding table */
    SD_PARAM_POSITION_IDS, /* CLIP embeddings.position_ids: I64 [1, positions], values 0..n-1 */
    SD_PARAM_SCALE        /* a positive statistic (a standard deviation): uniform in [0.5, 1.5) */
} sd_param_kind;

typedef struct sd_layout_entry {
    char name[128];
    int ndim;
    int64_t shape[4];
    sd_param_kind kind;
    int64_t fan_in;
} sd_layout_entry;

typedef struct sd_layout {
    sd_layout_entry *entries;
    size_t n, cap;
} sd_layout;

/* Appends the tensors of one sub-model, names prefixed with prefix, to *out (which starts
 * zeroed). SD_ERR_NOMEM or SD_ERR_INVALID (a config out of range, message on ctx). */
sd_status sd_layout_unet(sd_context *ctx, const sd_unet_config *cfg, const char *prefix, sd_layout *out);
sd_status sd_layout_clip(sd_context *ctx, const sd_clip_config *cfg, const char *prefix, sd_layout *out);
sd_status sd_layout_vae(sd_context *ctx, const sd_vae_config *cfg, const char *prefix, sd_layout *out);
/* The CLIP image tower in open_clip's layout (conv1, class_embedding, positional_embedding, ln_pre,
 * transformer.resblocks.N, ln_post, proj) under cfg->prefix. */
sd_status sd_layout_clip_vision(sd_context *ctx, const sd_clip_vision_config *cfg, sd_layout *out);
/* Every tensor of a checkpoint config's parts (has_unet, has_clip, has_vae, has_vision; SD2
 * unCLIP with its image tower also noise_augmentor.data_mean / data_std [1, dim]), names as in
 * the family's single-file layout. */
sd_status sd_layout_checkpoint(sd_context *ctx, const sd_checkpoint_config *cfg, sd_layout *out);
/* The FLUX transformer's tensors in BFL's names (ml/diffusion/flux.h) under prefix. */
sd_status sd_layout_flux(sd_context *ctx, const sd_flux_config *cfg, const char *prefix, sd_layout *out);
/* The ControlNet's tensors (time_embed, input_blocks, middle_block as the UNet's, then
 * input_hint_block.{0,2,..,14}, zero_convs.N.0, middle_block_out.0), names prefixed. */
sd_status sd_layout_controlnet(sd_context *ctx, const sd_controlnet_config *cfg, const char *prefix,
                               sd_layout *out);
/* SigLIP's vision tower in transformers' layout (sigclip_vision_patch14_384: 1152 wide, 27
 * layers, MLP 4304, patch 14, image 384) with its attention-pooling head, names prefixed. */
typedef struct sd_siglip_shape {
    int width, layers, intermediate, patch, image_size;
} sd_siglip_shape;
sd_status sd_layout_siglip(sd_context *ctx, const sd_siglip_shape *cfg, const char *prefix, sd_layout *out);
/* FLUX Redux (flux1-redux-dev: redux_up in_dim -> 3 x out_dim, redux_down -> out_dim). */
sd_status sd_layout_redux(sd_context *ctx, int in_dim, int out_dim, sd_layout *out);
void sd_layout_free(sd_layout *layout);
/* Checks that st holds every tensor of layout with its shape and a float dtype (implemented in
 * ml/families/checkpoint.c). SD_ERR_INVALID naming the file, the tensor and `what`. */
sd_status sd_layout_verify(sd_context *ctx, const sd_safetensors *st, const sd_layout *layout, const char *what);

/* Presets: "tiny" (a 64x64 image runs in well under a second) and "sd15" (the full SD1.5
 * shapes); "sdxl-tiny", "sdxl" (sd_xl_base_1.0's shapes), "sdxl-refiner-tiny", "sdxl-refiner";
 * "sd2-tiny", "sd2" (v2-1_512's shapes) and their v-prediction twins "sd2-v-tiny", "sd2-v"
 * (v2-1_768's; schedule.prediction V, which sd_sd1_write_random writes as ComfyUI detects it);
 * "sd2-unclip-tiny", "sd2-unclip-h", "sd2-unclip-l" (sd21-unclip-h / -l: v-prediction SD2 with
 * the ViT-H/14 or ViT-L/14 image tower and a 2048 / 1536-wide ADM input).
 * Family rules are applied. false for an unknown name. */
bool sd_checkpoint_preset(const char *name, sd_checkpoint_config *cfg);

/* Writes a checkpoint with deterministic random weights for cfg (its has_unet / has_clip /
 * has_vae parts; vae_prefix "" writes a standalone VAE file) in dtype F32, F16 or BF16.
 * Weights follow PyTorch's default init (uniform ±1/sqrt(fan_in) for Linear/conv weights and
 * biases, norms 1 and 0, embeddings normal with std 0.02); each tensor's values depend only on
 * seed and its name. Written atomically. */
sd_status sd_sd1_write_random(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg,
                              sd_st_dtype dtype, uint64_t seed);

/* Writes the tensors of layout with deterministic random weights as sd_sd1_write_random does
 * (values depend only on seed and the layout name). rename: NULL, or gives each tensor's name
 * in the file (a layout conversion; values still follow the layout name). Written atomically. */
typedef sd_status (*sd_layout_rename_fn)(void *user, const char *name, char *out, size_t size);
sd_status sd_layout_write_random(sd_context *ctx, const char *path, const sd_layout *layout, sd_st_dtype dtype,
                                 uint64_t seed, sd_layout_rename_fn rename, void *user);

/* The same values (as f32, quantised by the writer) as a GGUF file (ml/formats/gguf.h
 * sd_gguf_write: general.architecture arch, file_type as there), each tensor stored in the type
 * type_of gives it (an sd_ggml_type), named by rename as above. Streams: a 12B model is written
 * chunk by chunk, never held. Position ids are written as their values 0..n-1. */
typedef int (*sd_layout_gguf_type_fn)(const sd_layout_entry *e);
sd_status sd_layout_write_random_gguf(sd_context *ctx, const char *path, const sd_layout *layout, const char *arch,
                                      int file_type, sd_layout_gguf_type_fn type_of, uint64_t seed,
                                      sd_layout_rename_fn rename, void *user);

/* Writes a small file with just enough tensors in family's layout to be detected as it
 * (SD2, SDXL, SDXL refiner, SD3, FLUX). SD_ERR_INVALID for other families. */
sd_status sd_write_family_stub(sd_context *ctx, const char *path, sd_family family);

#endif
