/* Resolving file inputs: model names in ComfyUI-style model directories, image names in the
 * input directory, absolute paths where the context allows them; and the rules for the file
 * name prefixes of output nodes. */
#ifndef SD_CORE_FILES_H
#define SD_CORE_FILES_H

#include "core/context.h"

/* Resolves `name` for a file input of kind `dir_kind` ("checkpoints", "vae", "loras",
 * "embeddings", "controlnet", "upscale_models" are searched as <models dir>/<kind>/<name> in
 * the context's model directories in order; "input" is looked up in the input directory, and
 * must not lead out of it through a symlink: SD_ERR_INVALID). An absolute name is used as is
 * when the context allows absolute paths, else SD_ERR_INVALID. A name with a ".." component is
 * rejected (SD_ERR_INVALID). Only regular files are found. Missing: SD_ERR_NOT_FOUND with a
 * message naming the file and every directory searched. *path_out is malloc'd. */
sd_status sd_resolve_file(sd_context *ctx, const char *dir_kind, const char *name, char **path_out);

/* SD_OK when the existing `path`, symlinks resolved, is `dir` (resolved) or lies below it;
 * SD_ERR_INVALID "PATH leads outside DIR (to REAL)" otherwise, SD_ERR_IO when either cannot be
 * resolved. */
sd_status sd_path_check_inside(sd_context *ctx, const char *dir, const char *path);

/* The rules for an output file name prefix (SaveImage, SaveLatent): relative, not empty, not
 * ending in '/' or ".", no ".." component, no control character (written file names are listed
 * one per line). False with the reason in msg (without the input's name) when broken. */
bool sd_output_prefix_check(const char *prefix, char *msg, size_t size);

#endif
