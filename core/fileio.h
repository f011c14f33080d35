/* Writing files safely: atomic replacement (temp file + fsync + rename) and directory creation.
 * Output files are never left partially written (docs/design.md §9). */
#ifndef SD_CORE_FILEIO_H
#define SD_CORE_FILEIO_H

#include "core/context.h"

/* Writes len bytes to path atomically: a temp file in the same directory, fsync, then rename
 * (or, when exclusive, link, which never replaces an existing file). On any failure the temp
 * file is removed and path is untouched. When exclusive and path exists, returns SD_ERR_IO with
 * *existed = true (existed may be NULL); other failures are SD_ERR_IO naming the path. */
sd_status sd_file_write_atomic(sd_context *ctx, const char *path, const void *data, size_t len,
                               bool exclusive, bool *existed);

/* Creates path and its missing parents (mode 0777 less the umask), like mkdir -p. SD_ERR_IO
 * naming the component that could not be created (or exists and is not a directory);
 * SD_ERR_INVALID for an empty path. */
sd_status sd_make_dirs(sd_context *ctx, const char *path);

/* Creates root (as sd_make_dirs) and then each '/'-separated component of the relative path
 * sub below it, refusing (SD_ERR_INVALID, core/files.h sd_path_check_inside) a component that
 * is a symlink leading outside root; nothing is created outside root. *path_out (malloc'd) is
 * root/sub with empty components dropped. The caller checks sub for ".." and absoluteness. */
sd_status sd_make_dirs_within(sd_context *ctx, const char *root, const char *sub, char **path_out);

/* Removes path and, when it is a directory, everything below it (symlinks are removed, never
 * followed). False, with errno set, when something could not be removed. */
bool sd_remove_tree(const char *path);

#endif
