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

#endif
