/* Atomic file writes and directory creation (see core/fileio.h). */
#include "core/fileio.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool write_all(int fd, const unsigned char *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

sd_status sd_file_write_atomic(sd_context *ctx, const char *path, const void *data, size_t len,
                               bool exclusive, bool *existed)
{
    static unsigned counter;
    if (existed)
        *existed = false;
    sd_status st = SD_OK;
    char *dir = sd_strdup(path), *tmp = NULL;
    int fd = -1;
    bool tmp_made = false;
    if (!dir) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* dir: the directory part of path ("." when none); base: the file name. */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        free(tmp);
        /* The name is cut so that the temp name stays within NAME_MAX. */
        tmp = sd_strfmt("%s/.%.200s.%ld.%u.tmp", slash ? dir : ".", base, (long)getpid(),
                        __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        if (!tmp) {
            st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) {
            st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot create a temporary file: %s", path,
                              strerror(errno));
            goto done;
        }
    }
    if (fd < 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot create a temporary file", path);
        goto done;
    }
    tmp_made = true;
    if (!write_all(fd, data, len) || fsync(fd) != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    if (exclusive) {
        if (link(tmp, path) != 0) {
            if (errno == EEXIST && existed)
                *existed = true;
            st = sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
            goto done;
        }
    } else if (rename(tmp, path) != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    } else {
        tmp_made = false;
    }
    /* Make the new directory entry durable too (best effort: some file systems refuse). */
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
done:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp);
    free(tmp);
    free(dir);
    return st;
}

sd_status sd_make_dirs(sd_context *ctx, const char *path)
{
    if (!*path)
        return sd_set_error(ctx, SD_ERR_INVALID, "cannot create a directory with an empty name");
    char *p = sd_strdup(path);
    if (!p)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    sd_status st = SD_OK;
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';
        if (*s == '/' || end) {
            *s = '\0';
            struct stat sb;
            if (mkdir(p, 0777) != 0 && (errno != EEXIST || stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
                st = sd_set_error(ctx, SD_ERR_IO, "cannot create directory %s: %s", p,
                                  errno == EEXIST ? "not a directory" : strerror(errno));
                break;
            }
            if (end)
                break;
            *s = '/';
        }
    }
    free(p);
    return st;
}
