/* File helpers of the routes that store files (uploads, userdata): confinement after symlinks,
 * directory creation inside a root, and whole-file writes that a reader never sees half done. */
#include "server/internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool sd_path_inside(const char *dir, const char *path)
{
    char *d = realpath(dir, NULL), *p = realpath(path, NULL);
    bool ok = false;
    if (d && p) {
        size_t n = strlen(d);
        ok = !strncmp(p, d, n) && (p[n] == '/' || (n == 1 && d[0] == '/'));
    }
    free(d);
    free(p);
    return ok;
}

bool sd_make_subdir(const char *dir, const char *sub, char *out, size_t size)
{
    if ((size_t)snprintf(out, size, "%s", dir) >= size)
        return false;
    mkdir(out, 0777);
    for (const char *s = sub; *s;) {
        size_t n = strcspn(s, "/"), len = strlen(out);
        if (len + 1 + n >= size)
            return false;
        snprintf(out + len, size - len, "/%.*s", (int)n, s);
        if (mkdir(out, 0777) != 0 && errno != EEXIST)
            return false;
        s += n + (s[n] == '/');
    }
    return !sub[0] || sd_path_inside(dir, out);
}

bool sd_write_temp(const char *dir, const unsigned char *data, size_t len, char *tmp, size_t size)
{
    if ((size_t)snprintf(tmp, size, "%s/.upload-XXXXXX", dir) >= size)
        return false;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return false;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    bool ok = off == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok)
        unlink(tmp);
    return ok;
}

bool sd_write_atomic(const char *path, const unsigned char *data, size_t len)
{
    char dir[4096], tmp[4096];
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof dir)
        return false;
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (!sd_write_temp(dir, data, len, tmp, sizeof tmp))
        return false;
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    return true;
}
