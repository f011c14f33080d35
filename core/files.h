/* Resolving file inputs: model names in ComfyUI-style model directories, image names in the
 * input directory, or absolute paths. */
#ifndef SD_CORE_FILES_H
#define SD_CORE_FILES_H

#include "core/context.h"

/* Resolves `name` for a file input of kind `dir_kind` ("checkpoints", "vae", "loras",
 * "embeddings", "controlnet", "upscale_models" are searched as <models dir>/<kind>/<name> in
 * the context's model directories in order; "input" is looked up in the input directory).
 * An absolute name is used as is. A name with a ".." component is rejected (SD_ERR_INVALID).
 * Missing: SD_ERR_NOT_FOUND with a message naming the file and every directory searched.
 * *path_out is malloc'd. */
sd_status sd_resolve_file(sd_context *ctx, const char *dir_kind, const char *name, char **path_out);

#endif
