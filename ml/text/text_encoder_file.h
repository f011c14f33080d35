/* Text-encoder files: what ComfyUI's CLIPLoader, DualCLIPLoader and ComfyUI-GGUF's CLIP loaders
 * read from models/text_encoders (or models/clip). A file holds one or more text encoders
 * ("parts"), each recognised from its tensor names and shapes as ComfyUI's detect_te_model does:
 *
 *   - a CLIP text model in transformers' layout, under "text_model." (clip_l.safetensors,
 *     clip_g.safetensors: CLIPTextModel / CLIPTextModelWithProjection with text_projection.weight
 *     beside text_model.*) or under text_encoders.clip_l/clip_g.transformer.text_model. (ComfyUI's
 *     all-in-one FLUX and SD3 files). Its kind comes from its depth, as ComfyUI's: a layer 30
 *     makes it OpenCLIP-bigG (32 layers; text_projection.weight required), a layer 22
 *     OpenCLIP-H (24 layers), else CLIP-L. CLIP-L's text_projection is ignored (its pooled output
 *     is unprojected: FLUX's pooled vector, as ComfyUI's return_projected_pooled=False).
 *   - a T5 v1.1 encoder (ml/text/t5.h) in transformers' T5EncoderModel layout (t5xxl_fp16,
 *     encoder.block.N.*, shared.weight) or under text_encoders.t5xxl.transformer.; in a GGUF file
 *     with llama.cpp's names (token_embd, enc.blk.N.attn_q, ...: t5-v1_1-xxl-encoder-Q8_0.gguf),
 *     renamed as ComfyUI-GGUF does (sd_t5_rename_llama).
 *
 * Only headers are read when a file is opened. A GGUF file is one whose name ends in ".gguf". */
#ifndef SD_ML_TEXT_ENCODER_FILE_H
#define SD_ML_TEXT_ENCODER_FILE_H

#include "ml/families/checkpoint.h"
#include "ml/text/t5.h"

#define SD_TEXT_FILE_MAX_PARTS 3

typedef struct sd_text_file_part {
    sd_text_encoder_kind kind;
    /* The part's tensors: for CLIP under transformers' names without prefix (text_projection.weight
     * beside them); for T5 under `prefix`. Owned by the file. */
    const sd_safetensors *st;
    const char *prefix;  /* "" for CLIP; T5: "" or "text_encoders.t5xxl.transformer." */
    sd_clip_config clip; /* CLIP kinds: shapes read; heads, GELU and pad token of the kind;
                          * norm_hidden false (the family sets it) */
    sd_t5_config t5;     /* SD_TEXT_T5XXL */
} sd_text_file_part;

typedef struct sd_text_file sd_text_file;

/* Opens path (an absolute path from sd_resolve_file; through sd_file_open) and finds its text
 * encoders. Errors (message naming the file): SD_ERR_IO, the safetensors/GGUF errors,
 * SD_ERR_INVALID for a file with no text encoder ("SDXL checkpoint detected; ..." for a
 * diffusion checkpoint) or a misshapen one (the tensor named), SD_ERR_NOMEM. */
sd_status sd_text_file_open(sd_context *ctx, const char *path, sd_text_file **out);
void sd_text_file_close(sd_text_file *f); /* NULL-safe */

const char *sd_text_file_path(const sd_text_file *f);
const struct sd_file_id *sd_text_file_id(const sd_text_file *f);
int sd_text_file_count(const sd_text_file *f);
const sd_text_file_part *sd_text_file_part_at(const sd_text_file *f, int index);
/* The index of the first part of that kind, or -1. */
int sd_text_file_find(const sd_text_file *f, sd_text_encoder_kind kind);

/* "CLIP-L", "OpenCLIP-H", "OpenCLIP-bigG", "T5-XXL" and " + " between parts ("CLIP-L + T5-XXL")
 * into buf; returns buf. */
const char *sd_text_file_describe(const sd_text_file *f, char *buf, size_t size);

#endif
