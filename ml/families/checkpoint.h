/* Checkpoint inspection: which model family a safetensors file holds, and the architecture of
 * its UNet, text encoders and VAE, read from tensor shapes.
 *
 * Supported: single-file LDM checkpoints of the SD1.x family (the layout of
 * v1-5-pruned-emaonly.safetensors and its fine-tunes, at any size; 9-channel inpainting UNets
 * too), SD2.x checkpoints (v2-1_512 / v2-1_768 and fine-tunes: OpenCLIP-H, eps or v-prediction),
 * SD 2.1 unCLIP checkpoints (SD2 with an ADM UNet and the CLIP image tower),
 * SDXL base and refiner checkpoints (sd_xl_base_1.0, sd_xl_refiner_1.0 and fine-tunes) and
 * standalone VAE files (encoder.* / decoder.* keys, e.g. vae-ft-mse-840000). Any other family is
 * detected and refused with an error naming it.
 *
 * The UNet, CLIP and VAE code is written against these config structs; every field is either
 * read from a tensor shape (noted "shape:") or a rule of the family (noted "family:"). */
#ifndef SD_ML_CHECKPOINT_H
#define SD_ML_CHECKPOINT_H

#include "ml/families/family.h"
#include "ml/formats/safetensors.h"
#include "ml/vision/clip_vision.h"

#define SD_MAX_LEVELS 6

/* The LDM UNet (openaimodel.UNetModel) of SD1 and SDXL. Level l has num_res_blocks ResBlocks of
 * model_channels * channel_mult[l] channels, each followed by a SpatialTransformer of depth[l]
 * blocks when attention[l]; every level but the last ends with a stride-2 conv downsample. */
typedef struct sd_unet_config {
    int in_channels;      /* shape: 4, or 9 for inpainting (latent + mask + masked latent) */
    int out_channels;     /* shape: 4 */
    int model_channels;   /* shape: 320 */
    int n_levels;         /* shape: 4 */
    int channel_mult[SD_MAX_LEVELS]; /* shape: 1, 2, 4, 4 */
    int num_res_blocks;   /* shape: 2 (the same at every level) */
    bool attention[SD_MAX_LEVELS];   /* shape: 1, 1, 1, 0 (the middle block always has one) */
    int depth[SD_MAX_LEVELS]; /* shape: BasicTransformerBlocks per SpatialTransformer of each level
                               * (0 where !attention[l]): SD1 1, 1, 1, 0; SDXL 0, 2, 10 */
    int middle_depth;     /* shape: the middle block's (SD1 1, SDXL 10, SDXL refiner 4) */
    int context_dim;      /* shape: 768 (cross-attention key/value input width) */
    int time_embed_dim;   /* shape: 1280 (4 * model_channels) */
    bool linear_proj;     /* shape: proj_in/proj_out are Linear [C, C]; SD1: false (1x1 conv) */
    int adm_channels;     /* shape: label_emb.0.0 input width (SDXL 2816, refiner 2560, SD2 unCLIP
                           * 2048 / 1536; 0: none) */
    int num_heads;        /* family: SD1 8 heads per attention (0: head_channels decides) */
    int head_channels;    /* family: SDXL 64 channels per head (0: num_heads decides) */
    sd_adm_kind adm;      /* family: how the ADM vector is made (ml/families/adm.h) */
    int norm_groups;      /* family: 32 (GroupNorm groups, eps 1e-5; LayerNorm eps 1e-5) */
} sd_unet_config;

/* A CLIP text transformer: transformers' CLIPTextModel (OpenAI CLIP-L, quick GELU) or an
 * OpenCLIP text tower (ViT-H, ViT-bigG: GELU, text_projection); causal mask either way. */
typedef struct sd_clip_config {
    bool open_clip;       /* names: open_clip's (transformer.resblocks.N.attn.in_proj_weight, ...)
                           * instead of transformers' (encoder.layers.N.self_attn.q_proj, ...) */
    int width;            /* shape: 768 (hidden size; the UNet's context_dim in SD1) */
    int layers;           /* shape: 12 */
    int intermediate;     /* shape: 3072 (MLP width) */
    int vocab;            /* shape: 49408 */
    int positions;        /* shape: 77 */
    int projection;       /* shape: text_projection output width (bigG 1280; 0: none); open_clip's
                           * text_projection [width, projection], in transformers' layout (a
                           * clip_g.safetensors) the Linear text_projection.weight [projection, width] */
    int heads;            /* family: width / 64 (12 for ViT-L/14, 20 for bigG) */
    bool gelu;            /* family: exact GELU in the MLP (OpenCLIP) instead of quick GELU */
    bool norm_hidden;     /* family: the final LayerNorm applies to an intermediate layer's output
                           * too (SD1 as ComfyUI; not SDXL) */
    int pad_token;        /* family: windows are padded with this id after the end token (49407
                           * CLIP-L, 0 OpenCLIP-H and -bigG) */
    bool has_position_ids;/* the file carries embeddings.position_ids (ignored: always 0..n-1) */
} sd_clip_config;

/* The LDM AutoencoderKL (first_stage_model). */
typedef struct sd_vae_config {
    int in_channels;      /* shape: 3 (image channels into the encoder) */
    int out_channels;     /* shape: 3 */
    int ch;               /* shape: 128 */
    int n_levels;         /* shape: 4 (downsampling factor 2^(n_levels-1) = 8) */
    int ch_mult[SD_MAX_LEVELS]; /* shape: 1, 2, 4, 4 */
    int num_res_blocks;   /* shape: 2 (encoder; the decoder has num_res_blocks + 1 per level) */
    int z_channels;       /* shape: 4 (latent channels) */
    int embed_dim;        /* shape: 4 (quant_conv / post_quant_conv width) */
    bool attn_linear;     /* shape: mid attention q/k/v/proj_out stored as [C, C] not [C, C, 1, 1] */
    bool no_quant_conv;   /* shape: no quant_conv / post_quant_conv (FLUX's VAE; embed_dim = z_channels) */
    int norm_groups;      /* family: 32, eps 1e-6 */
    float scale_factor;   /* family: 0.18215 (latent = scale * sample of the posterior) */
} sd_vae_config;

/* The SD1 ControlNet (cldm.ControlNet): a copy of the UNet's encoder half plus the hint
 * encoder input_hint_block (eight 3x3 convs, SiLU between them, stride 2 at the third, fifth and
 * seventh: image resolution to latent resolution), one 1x1 zero conv per skip connection
 * (zero_convs.N.0) and one after the middle block (middle_block_out.0). */
#define SD_CONTROLNET_HINT_CONVS 8
typedef struct sd_controlnet_config {
    sd_unet_config unet;  /* the encoder (shape:, as the UNet's; out_channels unused) */
    int hint_channels;    /* shape: 3 (RGB hint image) */
    int hint_widths[SD_CONTROLNET_HINT_CONVS]; /* shape: 16, 16, 32, 32, 96, 96, 256, model_channels */
} sd_controlnet_config;

/* The FLUX transformer (ml/diffusion/flux.h). */
typedef struct sd_flux_config {
    int in_channels;   /* shape: latent channels (img_in input width / 4): 16 */
    int out_channels;  /* shape: final_layer.linear rows / 4: 16 */
    int hidden;        /* shape: img_in rows: 3072 */
    int head_dim;      /* shape: double_blocks.0.img_attn.norm.query_norm.scale: 128 */
    int heads;         /* hidden / head_dim: 24 */
    int axes_dim[3];   /* rule: head_dim / 8, 7 head_dim / 16, 7 head_dim / 16 (16, 56, 56 for 128) */
    int mlp_hidden;    /* shape: double_blocks.0.img_mlp.0 rows: 12288 */
    int context_dim;   /* shape: txt_in input width: 4096 (T5-XXL) */
    int vec_dim;       /* shape: vector_in input width: 768 (CLIP-L pooled) */
    int depth;         /* shape: double_blocks.N count: 19 */
    int depth_single;  /* shape: single_blocks.N count: 38 */
    bool guidance;     /* shape: guidance_in present (dev; schnell has none) */
} sd_flux_config;

typedef struct sd_checkpoint_config {
    sd_family family;
    bool has_unet, has_clip, has_vae; /* parts present in the file (has_clip: every text encoder) */
    const char *unet_prefix;  /* "model.diffusion_model." */
    const char *clip_prefix;  /* "cond_stage_model.transformer.text_model." (or SD1_CLIP_PREFIX_OLD) */
    const char *clip2_prefix; /* the second text encoder's (SDXL: OpenCLIP-bigG), NULL when none */
    const char *vae_prefix;   /* "first_stage_model." (standalone VAE files: "") */
    sd_unet_config unet;
    sd_flux_config flux;      /* FLUX files: the transformer (has_unet; unet is unused) */
    sd_clip_config clip;      /* the family's first text encoder (SDXL: CLIP-L; refiner: bigG) */
    sd_clip_config clip2;     /* its second (SDXL: bigG), when clip2_prefix */
    sd_vae_config vae;
    /* SD2 unCLIP: the CLIP image tower at the family's vision_prefix (has_vision: it is in the
     * file; its image_embeds are half the UNet's ADM width) */
    bool has_vision;
    sd_clip_vision_config vision;
    sd_schedule_config schedule;
} sd_checkpoint_config;

#define SD1_UNET_PREFIX "model.diffusion_model."
#define SD1_CLIP_PREFIX "cond_stage_model.transformer.text_model."
#define SD1_VAE_PREFIX "first_stage_model."
/* Some older SD1 files store the text model without "text_model." (as ComfyUI, accepted). */
#define SD1_CLIP_PREFIX_OLD "cond_stage_model.transformer."

/* The family a file's tensor names show (never fails): sd_family_detect. */
sd_family sd_checkpoint_detect(const sd_safetensors *st);

/* Reads a full checkpoint's architecture (a family this build runs: SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL
 * refiner; its image tower, if any, into cfg->vision)
 * into *cfg and checks that every tensor the architecture needs is present with the right shape
 * and a float dtype; the prediction type (cfg->schedule.prediction) is the family's, or what the
 * file's weights show where the family has variants (SD2.x 768-v: one small tensor is read). The
 * UNet is required; the text encoders and the VAE may be absent as a
 * whole (has_clip / has_vae false) but not in part.
 * Errors (SD_ERR_INVALID, message naming the file): another family ("SD3 checkpoint detected;
 * sdflow supports SD1.x, SD2.x, SDXL, SDXL refiner"), a missing tensor (named), a wrong shape or dtype (named), an
 * architecture SD1 code cannot run (e.g. CLIP width not a multiple of 64). */
sd_status sd_checkpoint_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg);

/* Reads a bare diffusion-model file (ComfyUI's models/diffusion_models: the UNet alone, its
 * tensors with or without model.diffusion_model.) into *cfg (has_unet only; unet_prefix as found)
 * and checks every tensor. The family comes from the UNet's shapes: an ADM UNet is SD2 unCLIP
 * (with 1024-wide cross-attention), else SDXL or the SDXL refiner (label_emb width 2816 / 2560),
 * 1024-wide cross-attention SD2.x, else SD1.x.
 * Errors as sd_checkpoint_inspect, and SD_ERR_INVALID for a file without input_blocks.0.0.weight
 * (naming the family the file shows, if any). */
sd_status sd_unet_file_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg);

/* Reads a VAE's architecture from a standalone VAE file (encoder.* / decoder.*) or a full
 * checkpoint (first_stage_model.*) and checks its tensors as above. cfg->has_vae is set,
 * family is SD_FAMILY_VAE for a standalone file. */
sd_status sd_vae_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg);

/* Reads the architecture of an LDM UNet's encoder half (time_embed, label_emb, input_blocks,
 * middle_block under prefix; what a ControlNet copies) into *u from tensor shapes; out_channels
 * and the family rules (num_heads or head_channels, which the caller sets first: the channel
 * counts are checked against them) are left untouched. Errors as sd_checkpoint_inspect, with
 * `what` ("SD1.x UNet") in the messages. */
sd_status sd_unet_inspect_encoder(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *what,
                                  sd_unet_config *u);

/* The family rules applied to a config (heads, groups, text-encoder details; schedule and VAE
 * scale from the family descriptor of cfg->family, SD1.x for a standalone VAE). */
void sd_checkpoint_apply_family_rules(sd_checkpoint_config *cfg);

/* Sets every attention level's depth and the middle block's to depth (SD1-style uniform depth);
 * levels without attention get 0. */
void sd_unet_config_set_depth(sd_unet_config *u, int depth);
/* Attention heads of a SpatialTransformer with `channels` channels under the config's rule. */
int sd_unet_config_heads(const sd_unet_config *u, int channels);

#endif
