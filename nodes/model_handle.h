/* MODEL, CLIP and VAE values: handles on an entry of the context's model store
 * (ml/loading/model_store.h). A CLIP handle also carries the layer CLIPSetLastLayer chose; every
 * handle on one file shares its device weights. */
#ifndef SD_NODES_MODEL_HANDLE_H
#define SD_NODES_MODEL_HANDLE_H

#include "core/node.h"
#include "ml/adapters/ipadapter.h"
#include "ml/adapters/lora.h"
#include "ml/loading/model_store.h"
#include "ml/sampling/schedulers.h"

/* The precision a MODEL's forward calls compute in (ModelComputeDtype; docs/precision.md). Zero,
 * the default, is the run's. */
typedef enum sd_model_precision {
    SD_MODEL_PRECISION_RUN,
    SD_MODEL_PRECISION_FP32,
    SD_MODEL_PRECISION_BF16
} sd_model_precision;

typedef struct sd_model_handle {
    sd_loaded *loaded; /* one reference */
    int clip_layer;    /* CLIP: -1 = last layer, -2 = the one before, ... */
    sd_lora_stack *lora; /* MODEL / CLIP: the LoRAs patching it (one reference), NULL for none */
    /* MODEL: ModelSamplingDiscrete's choice (an sd_sampling_type), -1 for the checkpoint's own
     * prediction (its family's, or what the file shows: SD2 768-v), and its zsnr flag. */
    int sampling;
    bool zsnr;
    /* MODEL: ModelSamplingContinuousEDM's continuous schedule (then `sampling` is EPS,
     * V_PREDICTION or EDM) between these sigmas */
    bool continuous;
    double sigma_min, sigma_max;
    double rescale_cfg; /* MODEL: RescaleCFG's multiplier, < 0 when not patched */
    double flux_shift;  /* MODEL (FLUX): ModelSamplingFlux's shift, NAN for the model's own */
    /* CLIP made of text-encoder files (CLIPLoader, DualCLIPLoader, a FLUX all-in-one file): the
     * family the encoders serve and, per text-encoder slot of that family, the file entry
     * (SD_MODEL_FILE_TEXT_ENCODERS, one reference each) and its part. SD_FAMILY_UNKNOWN: the
     * text encoders of `loaded`'s checkpoint. `loaded` is then text_file[0] (a reference). */
    sd_family text_family;
    sd_loaded *text_file[SD_FAMILY_MAX_TEXT_ENCODERS];
    int text_part[SD_FAMILY_MAX_TEXT_ENCODERS];
    sd_ipa_stack *ipa;  /* MODEL: the IP-Adapters applied to it (one reference), NULL for none */
    sd_model_precision precision; /* MODEL: its forward calls' precision */
} sd_model_handle;

/* A new MODEL/CLIP/VAE value holding a new reference to l; NULL when memory runs out. */
sd_value *sd_node_model_value(sd_type type, sd_loaded *l, int clip_layer);

/* The same with a LoRA stack (NULL: none; a new reference is taken). */
sd_value *sd_node_model_value_lora(sd_type type, sd_loaded *l, int clip_layer, sd_lora_stack *lora);

/* A new CLIP value for `family` whose text-encoder slot k is part parts[k] of files[k] (entries
 * of kind SD_MODEL_FILE_TEXT_ENCODERS; new references are taken), starting at clip_layer; NULL
 * when memory runs out. */
sd_value *sd_node_clip_files_value(sd_family family, sd_loaded *const *files, const int *parts, int clip_layer);

/* A CLIP value for `family` from the text encoders of the file at path (an all-in-one FLUX
 * checkpoint's text_encoders.*), opened as SD_MODEL_FILE_TEXT_ENCODERS: slot k takes the first
 * unused encoder of its kind. SD_ERR_INVALID naming the file when one is missing, the store's
 * errors (message on ctx). In nodes/clip_loader.c. */
sd_status sd_node_clip_of_file(sd_context *ctx, const char *path, sd_family family, sd_dtype dtype, sd_value **out);

/* The family a CLIP handle's text encoders serve, and how many it has. */
sd_family sd_node_clip_family(const sd_model_handle *h);
int sd_node_clip_count(const sd_model_handle *h);
/* The kind of a CLIP handle's text encoder `slot` (< sd_node_clip_count). */
sd_text_encoder_kind sd_node_clip_kind(const sd_model_handle *h, int slot);
/* The architecture a LoRA's text-encoder keys are matched against: the CLIP's checkpoint's
 * (replacing *cfg), or for a CLIP made of files *cfg (a MODEL's, for its UNet keys) with the
 * family and the files' text-model configurations (transformers' layout) as cfg->clip / clip2. */
void sd_node_clip_lora_config(const sd_model_handle *h, sd_checkpoint_config *cfg);

/* A new handle value of `type` like h (its file, CLIP layer, model sampling, RescaleCFG, IP-Adapters) with the LoRA stack
 * lora (NULL: none; a new reference is taken); NULL when memory runs out. */
sd_value *sd_node_model_derive(sd_type type, const sd_model_handle *h, sd_lora_stack *lora);

/* The model sampling a MODEL handle samples with (ComfyUI's model.model_sampling): the family's
 * schedule, the prediction its checkpoint shows unless ModelSamplingDiscrete chose one, zsnr;
 * ModelSamplingContinuousEDM's continuous schedule when chosen;
 * FLUX: ModelSamplingFlux with the node's shift, else 1.15 (dev, ComfyUI's Flux) or 1.0 (schnell,
 * FluxSchnell's sampling_settings).
 * SD_ERR_INVALID with the message on ctx for a schedule the family cannot have. */
sd_status sd_node_model_sampling_of(sd_context *ctx, const sd_model_handle *h, sd_model_sampling *ms);

/* The FLUX transformer of a MODEL handle on a FLUX file (sd_loaded_flux). */
sd_status sd_node_model_flux(const sd_model_handle *h, sd_flux **out);

/* The UNet / text encoder a MODEL / CLIP handle stands for: the file's own, or the patched view
 * of it its LoRA stack makes (weights patched on first use; ml/adapters/lora.h). Errors as
 * sd_loaded_unet / sd_loaded_clip, and LoRA patch failures (message on the context). */
sd_status sd_node_model_unet(const sd_model_handle *h, sd_unet **out);
sd_status sd_node_model_clip(const sd_model_handle *h, sd_clip_model **out);
/* Text encoder `slot` of a CLIP handle's family (sd_loaded_text_encoder), LoRA-patched as above. */
sd_status sd_node_model_text_encoder(const sd_model_handle *h, int slot, sd_clip_model **out);
/* The T5 encoder in text-encoder slot `slot` of a CLIP handle made of files (no LoRA applies). */
sd_status sd_node_model_t5(const sd_model_handle *h, int slot, sd_t5_model **out);

/* The handle on a MODEL/CLIP/VAE input (borrowed), or NULL with the node's error recorded when
 * the value carries none. */
const sd_model_handle *sd_node_model_input(sd_node_run *r, const char *input);

/* Called when a node has finished with a model: releases the runtime's pooled free buffers
 * (its activations), so that the next node starts from the weights alone. */
void sd_node_model_done(sd_node_run *r);

/* On a CPU device (device memory is host memory): frees the model store's UNets and/or text
 * encoders (sd_model_store_release), empties the buffer pool and trims the heap; nothing on a
 * GPU, where weights stay for the next run. */
void sd_node_release_on_cpu(sd_node_run *r, bool unets, bool clips);

/* Gives the host heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).
 * On a CPU device the driver's buffers and the upload staging copies come from malloc, and
 * pages freed below glibc's mmap threshold otherwise stay with the process. */
void sd_node_trim_host_memory(void);

/* Records the context's current message (set by models/) as the node's error; returns st. */
sd_status sd_node_model_fail(sd_node_run *r, sd_status st);

#endif
