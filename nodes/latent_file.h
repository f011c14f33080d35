/* ComfyUI's .latent files, written by SaveLatent and read by LoadLatent: safetensors files with
 * "latent_tensor" (the samples) and "latent_format_version_0" (an empty tensor marking the
 * current format). Kept apart from the node run functions so they can be tested without a
 * scheduler. */
#ifndef SD_NODES_LATENT_FILE_H
#define SD_NODES_LATENT_FILE_H

#include "core/value.h"
#include "nodes/output_files.h"

#define SD_LATENT_TENSOR "latent_tensor"
#define SD_LATENT_VERSION_0 "latent_format_version_0"
/* Files without the version tensor hold samples multiplied by SD1's scale factor 0.18215. */
#define SD_LATENT_OLD_SCALE 0.18215

/* Writes the "samples" of a LATENT value as <dir>/<prefix>_<counter>_.latent (numbering,
 * refused prefixes and the atomic write as in nodes/output_files.h): "latent_tensor" F32 with
 * the samples' shape, then "latent_format_version_0" F32 of shape [0]; __metadata__ holds
 * req's texts under the PNG keys sdflow:workflow, sdflow:engine, sdflow:provenance and
 * sdflow:node (those that are set). *path (malloc'd) is the file written. SD_ERR_INVALID for a
 * value without samples. */
sd_status sd_save_latent(sd_context *ctx, const sd_save_request *req, const sd_value *latent, char **path);

/* Reads the .latent file at path (strict safetensors validation) as a LATENT value whose
 * "samples" is latent_tensor as f32, divided by SD_LATENT_OLD_SCALE (multiplied by the f32 of
 * 1 / 0.18215, as ComfyUI) when the file has no "latent_format_version_0". One-line errors
 * naming the file: the reader's (SD_ERR_IO, SD_ERR_PARSE, ...), SD_ERR_NOT_FOUND without a
 * latent_tensor, SD_ERR_INVALID for a latent_tensor that is not 4-dimensional with every
 * dimension at least 1, or not F32, F16 or BF16. */
sd_status sd_load_latent(sd_context *ctx, const char *path, sd_value **latent);

#endif
