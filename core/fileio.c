/* Atomic file writes and directory creation (see core/fileio.h). */
#define _XOPEN_SOURCE 700 /* nftw */
#include "core/fileio.h"
#include "core/files.h"
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

sd_status sd_make_dirs_within(sd_context *ctx, const char *root, const char *sub, char **path_out)
{
    *path_out = NULL;
    sd_status st = sd_make_dirs(ctx, root);
    char *path = st ? NULL : sd_strdup(root);
    if (!st && !path)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (const char *s = sub; !st && *s; s += *s == '/') {
        size_t n = strcspn(s, "/");
        char *part = n ? strndup(s, n) : NULL;
        s += n;
        if (!n)
            continue; /* "a//b" */
        char *next = part ? sd_strfmt("%s/%s", path, part) : NULL;
        free(part);
        free(path);
        if (!(path = next)) {
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            break;
        }
        /* mkdir never follows a symlink in place of the new directory, so nothing is created
         * outside root before the check; an existing component is checked where it leads. */
        struct stat sb;
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            st = sd_set_error(ctx, SD_ERR_IO, "cannot create directory %s: %s", path, strerror(errno));
        else if (!(st = sd_path_check_inside(ctx, root, path)) && (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)))
            st = sd_set_error(ctx, SD_ERR_IO, "cannot create directory %s: not a directory", path);
    }
    if (st)
        free(path);
    else
        *path_out = path;
    return st;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

bool sd_remove_tree(const char *path)
{
    /* Depth first, symlinks removed and never followed. */
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}
