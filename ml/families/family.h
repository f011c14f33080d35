/* Model families: one descriptor per family says everything family-specific, as ComfyUI's
 * supported_models.py, latent_formats.py and model_sampling.py together do: how a single-file
 * checkpoint of the family is recognised from its tensor names and shapes, where its parts sit in
 * the file, its text encoders and how their outputs form the conditioning, its latent format
 * (channels, scale, shift, RGB preview factors), its model-sampling type and noise schedule, and
 * its default image size. Nodes never test for a family: they ask its descriptor.
 *
 * Adding a family = one descriptor in family.c (in detection order) plus its networks. File
 * formats (ml/formats/) sit below this layer and know nothing of families. */
#ifndef SD_ML_FAMILY_H
#define SD_ML_FAMILY_H

#include "ml/formats/safetensors.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sd_family {
    SD_FAMILY_UNKNOWN,
    SD_FAMILY_SD1,          /* LDM UNet, CLIP ViT-L/14 text encoder (context 768 at full size) */
    SD_FAMILY_SD2,          /* LDM UNet with OpenCLIP ViT-H (cond_stage_model.model.*, context 1024) */
    SD_FAMILY_SDXL,         /* conditioner.embedders.*, model.diffusion_model.label_emb.* */
    SD_FAMILY_SDXL_REFINER, /* SDXL layout with a single OpenCLIP-G embedder */
    SD_FAMILY_SD3,          /* MMDiT: joint_blocks.* */
    SD_FAMILY_FLUX,         /* double_blocks.* / single_blocks.* */
    SD_FAMILY_VAE,          /* a standalone VAE file (not a full checkpoint) */
    SD_FAMILY_DIFFUSERS,    /* diffusers-format weights (down_blocks.*), not a single-file checkpoint */
    SD_FAMILY_SD2_UNCLIP    /* SD2 unCLIP: SD2 with label_emb, embedder.* (CLIP vision), noise_augmentor.* */
} sd_family;

/* What the diffusion network predicts (ComfyUI's model_sampling types). */
typedef enum sd_prediction {
    SD_PREDICT_EPS,  /* the noise (SD1, SD2 512-base, SDXL) */
    SD_PREDICT_V,    /* v = alpha * eps - sigma * x0 (SD2 768-v) */
    SD_PREDICT_FLOW  /* the rectified-flow velocity (FLUX, SD3) */
} sd_prediction;

/* Discrete noise schedule (ComfyUI's ModelSamplingDiscrete: scaled-linear betas). */
typedef struct sd_schedule_config {
    int timesteps;            /* 1000 */
    double beta_start;        /* 0.00085 */
    double beta_end;          /* 0.012 */
    sd_prediction prediction; /* eps */
} sd_schedule_config;

#define SD_LATENT_MAX_CHANNELS 16

/* How a family's latents look (comfy/latent_formats.py). LATENT values hold the VAE's own
 * latents; the sampler works on process_in(latent) = (latent - shift) * scale. */
typedef struct sd_latent_format {
    const char *name;  /* ComfyUI's class name: "SD15", "SDXL", "SD3", "Flux" */
    int channels;      /* 4 or 16 */
    float scale;       /* 0.18215 (SD15), 0.13025 (SDXL), ... */
    float shift;       /* 0 for the SD VAEs */
    /* Cheap preview as ComfyUI's latent previews: rgb[c] = bias[c] + sum_k x0[k] * rgb_factors[k][c]
     * on the sampler's (scaled) x0; rows past `channels` are zero. */
    float rgb_factors[SD_LATENT_MAX_CHANNELS][3];
    float rgb_bias[3];
} sd_latent_format;

/* The text encoders a family uses (in conditioning order). */
typedef enum sd_text_encoder_kind {
    SD_TEXT_CLIP_L,     /* OpenAI CLIP ViT-L/14 text model */
    SD_TEXT_OPENCLIP_H, /* OpenCLIP ViT-H/14 text model (SD2) */
    SD_TEXT_OPENCLIP_G, /* OpenCLIP ViT-bigG/14 text model (SDXL) */
    SD_TEXT_T5XXL       /* T5 v1.1 XXL encoder (FLUX, SD3) */
} sd_text_encoder_kind;

typedef struct sd_text_encoder_slot {
    sd_text_encoder_kind kind;
    const char *prefix;  /* its tensors in the family's single-file checkpoint ("" when never there) */
    int layer;           /* hidden state used as context: -1 last (after final LN), -2 penultimate */
    bool pooled;         /* its pooled output feeds the conditioning (pooled vector / ADM) */
    bool norm_hidden;    /* the final LayerNorm applies to the selected layer's output too (SD1:
                          * ComfyUI's layer_norm_hidden_state; SDXL: not) */
} sd_text_encoder_slot;

/* How the extra "y" vector of an ADM UNet is made (comfy/model_base.py encode_adm). */
typedef enum sd_adm_kind {
    SD_ADM_NONE,
    SD_ADM_SDXL,        /* pooled + embeddings of height, width, crop_h, crop_w, target h, target w */
    SD_ADM_SDXL_REFINER, /* pooled + embeddings of height, width, crop_h, crop_w, aesthetic score */
    SD_ADM_UNCLIP       /* SD2 unCLIP: noise-augmented CLIP image embeddings + the noise level's
                         * embedding, half the width each (zero without unCLIPConditioning) */
} sd_adm_kind;

/* "CLIP", "OpenCLIP-H", "OpenCLIP-bigG", "T5-XXL" (for messages). */
const char *sd_text_encoder_name(sd_text_encoder_kind kind);

#define SD_FAMILY_MAX_TEXT_ENCODERS 3

typedef struct sd_family_desc {
    sd_family id;
    const char *name;       /* "SD1.x", for messages */
    bool runnable;          /* this build has the family's networks (false: detected and refused) */
    bool lora;              /* this build applies LoRAs to the family's models */
    bool checkpoint;        /* a diffusion-model family (false: VAE files, diffusers folders, unknown) */
    /* Detection from tensor names/shapes, tried in table order (the most specific family first). */
    bool (*detect)(const sd_safetensors *st);
    /* What a checked file's diffusion network predicts when the family has variants (SD2.x: 768-v
     * files are v-prediction), from its tensors as ComfyUI's model_type, into *out; NULL: always
     * schedule.prediction. Fails only when a tensor cannot be read (message on ctx). */
    sd_status (*prediction)(sd_context *ctx, const sd_safetensors *st, int unet_in_channels, sd_prediction *out);
    const char *unet_prefix; /* "model.diffusion_model." in single-file checkpoints */
    const char *vae_prefix;  /* "first_stage_model." ("vae." for ComfyUI's FLUX files) */
    const sd_latent_format *latent;
    sd_schedule_config schedule;
    int n_text_encoders;
    sd_text_encoder_slot text_encoders[SD_FAMILY_MAX_TEXT_ENCODERS];
    int context_dim;        /* cross-attention context width at full size (768 SD1, 2048 SDXL) */
    int adm_dim;            /* extra "y" vector width (0 none; 2816 SDXL base, 2560 refiner, 2048
                             * SD2 unCLIP-H: 1536 for its -L twin) */
    sd_adm_kind adm;        /* how y is made */
    /* UNet attention heads: a fixed count (SD1: 8) or a fixed head width (SDXL: 64 channels). */
    int unet_num_heads, unet_head_channels;
    int default_width, default_height;
    /* The family whose text encoders and conditionings this one shares (SD2 unCLIP: SD2.x);
     * SD_FAMILY_UNKNOWN: its own. */
    sd_family text_family;
    /* The CLIP image tower inside the family's checkpoints ("embedder.model.visual." for SD2
     * unCLIP, ComfyUI's clip_vision_prefix), NULL when none. */
    const char *vision_prefix;
} sd_family_desc;

/* The descriptor of a family (never NULL: SD_FAMILY_UNKNOWN has one too). */
const sd_family_desc *sd_family_get(sd_family family);
/* "SD1.x", "SDXL", ... */
const char *sd_family_name(sd_family family);
/* The family whose conditionings a family's models take (text_family, else itself). */
sd_family sd_family_text(sd_family family);
/* The family a safetensors file's tensor names show (never fails; SD_FAMILY_UNKNOWN when none). */
sd_family sd_family_detect(const sd_safetensors *st);
/* The families this build runs, oldest first ("SD1.x" or "SD1.x, SDXL"), written to buf; returns buf. */
const char *sd_family_runnable_list(char *buf, size_t size);

/* The families whose LoRAs this build applies ("SD1.x"), written to buf; returns buf. */
const char *sd_family_lora_list(char *buf, size_t size);

/* The family with that name (as sd_family_name gives it), or SD_FAMILY_UNKNOWN. */
sd_family sd_family_find(const char *name);
/* The diffusion-model family whose full-size cross-attention context is `width` wide (768 SD1.x,
 * 1024 SD2.x, 2048 SDXL, 1280 SDXL refiner), or SD_FAMILY_UNKNOWN. */
sd_family sd_family_by_context_dim(int64_t width);

/* The latent format with that ComfyUI name, or NULL. */
const sd_latent_format *sd_latent_format_find(const char *name);
/* The families whose latents have `channels` channels, for messages ("SD1.x, SD2.x, SDXL refiner, SDXL"
 * ...), written to buf ("" for a count no family uses); returns buf. */
const char *sd_latent_channels_families(char *buf, size_t size, int channels);

#endif
