/* Opened model files kept per context, so that a second run in one process (a Lua sweep, the
 * API) reuses weights already on the device.
 *
 * Opening is cheap: the file is opened, its header read and validated and its architecture
 * inspected (ml/families/checkpoint.h). The UNet, CLIP and VAE objects are created when first asked
 * for, and their weights upload tensor by tensor on first use (ml/loading/weights.h), so a run that
 * only decodes a cached latent never reads UNet weights.
 *
 * Entries are keyed by the resolved path, the file's identity (size, mtime, ctime, inode and
 * device; core/files.h), the kind of file and the device weight dtype; a file replaced or
 * rewritten on disk opens afresh, and a file changed under an open entry fails the reads of its
 * tensors (ml/formats/safetensors.h). The store lives
 * in the context's extension slot SD_EXT_MODEL_STORE and holds on to at most
 * SD_MODEL_STORE_KEEP entries that no value references any more (least recently used go first).
 * Entries must not outlive the context. */
#ifndef SD_ML_MODEL_STORE_H
#define SD_ML_MODEL_STORE_H

#include "ml/text/clip.h"
#include "ml/text/clip_tokenizer.h"
#include "ml/diffusion/flux.h"
#include "ml/text/text_encoder_file.h"
#include "ml/text/t5_tokenizer.h"
#include "ml/diffusion/unet.h"
#include "ml/vae/vae.h"

#define SD_EXT_MODEL_STORE "models.store"
#define SD_MODEL_STORE_KEEP 2

typedef enum sd_model_file_kind {
    SD_MODEL_FILE_CHECKPOINT, /* a full single-file checkpoint (UNet required) */
    SD_MODEL_FILE_VAE,        /* a standalone VAE file, or the VAE of a full checkpoint */
    SD_MODEL_FILE_UNET,       /* a bare diffusion model (sd_unet_file_inspect) */
    SD_MODEL_FILE_TEXT_ENCODERS /* a file's text encoders (ml/text/text_encoder_file.h): a
                                 * clip_l / clip_g / t5xxl file, GGUF included, or the text
                                 * encoders of an all-in-one file; its config is all zero
                                 * (family SD_FAMILY_UNKNOWN) */
} sd_model_file_kind;

typedef struct sd_loaded sd_loaded;

/* Returns a reference to the opened file at path (an absolute path from sd_resolve_file; a name
 * ending in .gguf is read as GGUF through its tensor view, ml/formats/gguf.h),
 * opening and inspecting it unless the store already has it. The file is opened with
 * sd_file_open either way, so a node can only get a file its key covers. Errors (message on ctx,
 * naming the file): SD_ERR_IO when it cannot be read, the safetensors errors, SD_ERR_INVALID for
 * another family or a missing/misshapen tensor (named), SD_ERR_NOMEM. */
sd_status sd_model_store_open(sd_context *ctx, const char *path, sd_model_file_kind kind, sd_dtype dtype,
                              sd_loaded **out);
sd_loaded *sd_loaded_ref(sd_loaded *l); /* returns l */
void sd_loaded_unref(sd_loaded *l);     /* NULL-safe */

/* The file's inspected architecture. */
const sd_checkpoint_config *sd_loaded_config(const sd_loaded *l);

/* The sub-models, created on first call and owned by the entry. SD_ERR_INVALID (naming the
 * file) when the file has no such part (a checkpoint saved without CLIP or VAE, a VAE file). */
sd_status sd_loaded_unet(sd_loaded *l, sd_unet **out);
/* A FLUX file's transformer (counted as a UNet in the stats); SD_ERR_INVALID for other files,
 * whose sd_loaded_unet refuses FLUX files in turn. */
sd_status sd_loaded_flux(sd_loaded *l, sd_flux **out);
sd_status sd_loaded_clip(sd_loaded *l, sd_clip_model **out);
sd_status sd_loaded_vae(sd_loaded *l, sd_vae **out);
/* SD2 unCLIP checkpoints: the noise augmentor's statistics (ml/families/adm.h
 * sd_unclip_stats_read, adm_channels / 2 floats each), read on first call and owned by the entry;
 * NULL when the file has none (or the file is no unCLIP checkpoint). */
sd_status sd_loaded_unclip_stats(sd_loaded *l, const float **mean, const float **std);
/* Text encoder `slot` of the family (0: cfg.clip, the one sd_loaded_clip gives; 1: cfg.clip2,
 * SDXL's OpenCLIP-bigG), created on first call as sd_loaded_clip. */
sd_status sd_loaded_text_encoder(sd_loaded *l, int slot, sd_clip_model **out);

/* SD_MODEL_FILE_TEXT_ENCODERS entries: the file's text encoders, and encoder `part` of it created
 * on first call (CLIP with the family's norm_hidden rule: one object per rule, as CLIP-L serves
 * SD1.x (normed) and SDXL (not)); SD_ERR_INVALID (naming the file) for a part of another kind. */
const sd_text_file *sd_loaded_text_file(const sd_loaded *l);
sd_status sd_loaded_text_clip(sd_loaded *l, int part, bool norm_hidden, sd_clip_model **out);
sd_status sd_loaded_text_t5(sd_loaded *l, int part, sd_t5_model **out);

/* Frees the UNet and/or text-encoder objects (and so their device weights) of every entry; they
 * are created and uploaded again when next asked for. On CPU devices, where device memory is host
 * memory, the VAE nodes release the UNets (a 512x512 decode need not hold the UNet's 1.7 GB
 * besides its own activations) and the samplers release the text encoders. */
void sd_model_store_release(sd_context *ctx, bool unets, bool clips);

/* The context's CLIP and T5 tokenizers (built on first use, owned by the store). */
sd_status sd_model_store_tokenizer(sd_context *ctx, const sd_clip_tokenizer **out);
sd_status sd_model_store_t5_tokenizer(sd_context *ctx, const sd_t5_tokenizer **out);

/* Counters for tests: files opened, and sub-model objects created (a sub-model's weights are
 * only ever uploaded after its object was created). */
typedef struct sd_model_store_stats {
    int files_opened;
    int unets_created, clips_created, vaes_created;
    size_t entries; /* entries held now */
} sd_model_store_stats;
void sd_model_store_stats_get(sd_context *ctx, sd_model_store_stats *out);

#endif
