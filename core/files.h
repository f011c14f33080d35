/* Resolving file inputs: model names in ComfyUI-style model directories, image names in the
 * input directory, absolute paths where the context allows them; the rules for the file name
 * prefixes of output nodes; and opening files for reading through the gate that keeps every file
 * a node reads inside its cache key. */
#ifndef SD_CORE_FILES_H
#define SD_CORE_FILES_H

#include "core/context.h"
#include <sys/stat.h>

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

/* ---- Reading files: identity and the gate every read open goes through ---- */

/* What the file system says about a file's content: a write, truncation, replacement or rename
 * over it changes at least one of these on a POSIX file system (ctime is set by the kernel on
 * every change and cannot be set back by a user). docs/caching.md says what this trusts. */
typedef struct sd_file_id {
    int64_t size, mtime_ns, ctime_ns, ino, dev;
} sd_file_id;

void sd_file_id_from_stat(const struct stat *sb, sd_file_id *id);
bool sd_file_id_equal(const sd_file_id *a, const sd_file_id *b);

/* Opens path for reading (close-on-exec): a regular file only, refused without blocking when it
 * is a FIFO or a device (SD_ERR_IO "PATH: not a regular file"). *id gets its identity. While a
 * node runs, the context's read guard (core/schedule.c) also requires that the node declared the
 * file, so that its content is part of the node's cache key (SD_ERR_INVALID otherwise: a bug in
 * the node), and that it is still the file whose content was hashed (SD_ERR_IO "PATH: changed
 * since this run hashed it"). Every reader of model, image and latent files opens through this.
 * Errors: SD_ERR_IO "PATH: <strerror>", SD_ERR_NOMEM. *fd_out is -1 on failure. */
sd_status sd_file_open(sd_context *ctx, const char *path, int *fd_out, sd_file_id *id);

/* SD_OK when the open file fd still has identity id; otherwise SD_ERR_IO naming path:
 * "PATH: changed since it was opened (now N bytes, was M)" or "... (modified)". */
sd_status sd_file_check(sd_context *ctx, int fd, const char *path, const sd_file_id *id);

/* Reads nbytes at offset `at` of the open file fd (pread) into dst, then checks that the file is
 * still the one opened (sd_file_check): a file truncated, rewritten or replaced in place while in
 * use is an I/O error naming path, never a crash (the file is read, not mapped) and never
 * silently mixed data. A short file is SD_ERR_IO "PATH: read failed at offset N: ...". */
sd_status sd_file_read_at(sd_context *ctx, int fd, const char *path, const sd_file_id *id, uint64_t at, void *dst,
                          size_t nbytes);

/* The whole file at path (opened with sd_file_open, so a node reads it only when declared), at
 * most max_bytes long (SD_ERR_LIMIT naming it otherwise): *out is malloc'd and NUL-terminated,
 * *len (may be NULL) its size. */
sd_status sd_file_read_text(sd_context *ctx, const char *path, size_t max_bytes, char **out, size_t *len);

#endif
