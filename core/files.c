/* Resolving file inputs (core/files.h): model names in ComfyUI-style model directories, image
 * names in the input directory (never leading out of it), absolute paths only when the context
 * allows them; the rules for output file name prefixes; file identity and the read gate. */
#include "core/files.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* True when a '/'-separated path has a ".." component. */
static bool has_dotdot(const char *name)
{
    for (const char *p = name; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += len;
        if (*p == '/')
            p++;
    }
    return false;
}

static bool is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* *out = realpath(path) (absolute, malloc'd). */
static sd_status absolute(sd_context *ctx, const char *path, char **out)
{
    char *abs = realpath(path, NULL);
    if (!abs)
        return errno == ENOMEM ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory")
                               : sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
    *out = abs;
    return SD_OK;
}

sd_status sd_path_check_inside(sd_context *ctx, const char *dir, const char *path)
{
    char *real_dir = NULL, *real = NULL;
    sd_status st = absolute(ctx, dir, &real_dir);
    if (!st)
        st = absolute(ctx, path, &real);
    if (!st) {
        size_t n = strlen(real_dir);
        bool inside = strncmp(real, real_dir, n) == 0 && (real[n] == '\0' || real[n] == '/' || n == 1);
        if (!inside)
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s leads outside %s (to %s)", path, dir, real);
    }
    free(real_dir);
    free(real);
    return st;
}

bool sd_output_prefix_check(const char *prefix, char *msg, size_t size)
{
    for (const unsigned char *c = (const unsigned char *)prefix; *c; c++) {
        if (*c < 0x20 || *c == 0x7f) {
            snprintf(msg, size, "must not contain control characters (byte 0x%02x at offset %zu)", *c,
                     (size_t)((const char *)c - prefix));
            return false;
        }
    }
    const char *slash = strrchr(prefix, '/');
    const char *base = slash ? slash + 1 : prefix;
    if (prefix[0] == '/' || !*base || strcmp(base, ".") == 0 || has_dotdot(prefix)) {
        snprintf(msg, size, "'%s' must be a relative name without '..' components", prefix);
        return false;
    }
    return true;
}

/* Appends s to the malloc'd list *list ("a, b"); false on out of memory. */
static bool list_append(char **list, const char *s)
{
    char *n = *list ? sd_strfmt("%s, %s", *list, s) : sd_strdup(s);
    if (!n)
        return false;
    free(*list);
    *list = n;
    return true;
}

/* An absolute name, when the context allows them: a regular file, used as is. */
static sd_status resolve_absolute(sd_context *ctx, const char *name, char **path_out)
{
    if (!ctx->allow_absolute_paths)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "absolute path '%s' is not allowed (use --allow-absolute-paths)", name);
    if (!is_regular_file(name))
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "file '%s' not found", name);
    return absolute(ctx, name, path_out);
}

/* ComfyUI's older folder names, searched after the current ones in each model directory. */
static const char *legacy_folder(const char *dir_kind)
{
    static const char *const legacy[][2] = {{"diffusion_models", "unet"}, {"text_encoders", "clip"}};
    for (size_t i = 0; i < sizeof legacy / sizeof legacy[0]; i++)
        if (strcmp(dir_kind, legacy[i][0]) == 0)
            return legacy[i][1];
    return NULL;
}

sd_status sd_resolve_file(sd_context *ctx, const char *dir_kind, const char *name, char **path_out)
{
    *path_out = NULL;
    if (!name || !*name)
        return sd_set_error(ctx, SD_ERR_INVALID, "empty file name");
    if (has_dotdot(name))
        return sd_set_error(ctx, SD_ERR_INVALID, "file name '%s' must not contain '..'", name);
    if (!dir_kind || !*dir_kind || strchr(dir_kind, '/') || has_dotdot(dir_kind))
        return sd_set_error(ctx, SD_ERR_INVALID, "bad file kind '%s' for '%s'",
                            dir_kind ? dir_kind : "", name);
    if (name[0] == '/')
        return resolve_absolute(ctx, name, path_out);

    bool input = strcmp(dir_kind, "input") == 0;
    size_t n_dirs = input ? 1 : ctx->n_models_dirs;
    if (n_dirs == 0)
        return sd_set_error(ctx, SD_ERR_NOT_FOUND,
                            "%s file '%s' not found: no model directory given "
                            "(use --models-dir or SDFLOW_MODELS)",
                            dir_kind, name);
    char *searched = NULL;
    sd_status st = SD_OK;
    const char *legacy = input ? NULL : legacy_folder(dir_kind);
    for (size_t k = 0; k < (legacy ? 2 * n_dirs : n_dirs); k++) {
        size_t i = legacy ? k / 2 : k;
        char *dir = input ? sd_strdup(ctx->dirs[SD_DIR_INPUT])
                          : sd_strfmt("%s/%s", ctx->models_dirs[i], k % 2 && legacy ? legacy : dir_kind);
        char *path = dir ? sd_strfmt("%s/%s", dir, name) : NULL;
        bool found = path && is_regular_file(path);
        /* A symlink in the input directory must not lead out of it (model directories are the
         * user's own and may link anywhere). */
        if (found && input)
            st = sd_path_check_inside(ctx, dir, path);
        if (found && !st)
            st = absolute(ctx, path, path_out);
        else if (!found && (!path || !list_append(&searched, dir)))
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        free(path);
        free(dir);
        if (found || st)
            goto done;
    }
    st = sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s file '%s' not found (searched: %s)",
                      input ? "input" : dir_kind, name, searched);
done:
    free(searched);
    return st;
}

void sd_file_id_from_stat(const struct stat *sb, sd_file_id *id)
{
    *id = (sd_file_id){
        .size = (int64_t)sb->st_size,
        .mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec,
        .ctime_ns = (int64_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec,
        .ino = (int64_t)sb->st_ino,
        .dev = (int64_t)sb->st_dev,
    };
}

bool sd_file_id_equal(const sd_file_id *a, const sd_file_id *b)
{
    return a->size == b->size && a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns && a->ino == b->ino &&
           a->dev == b->dev;
}

sd_status sd_file_open(sd_context *ctx, const char *path, int *fd_out, sd_file_id *id)
{
    *fd_out = -1;
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        sd_status st = sd_set_error(ctx, errno == ENOMEM ? SD_ERR_NOMEM : SD_ERR_IO, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sd_set_error(ctx, SD_ERR_IO, "%s: not a regular file", path);
    }
    sd_file_id_from_stat(&sb, id);
    sd_status st = ctx->read_guard ? ctx->read_guard(ctx->read_guard_user, path, id) : SD_OK;
    if (st) {
        close(fd);
        return st;
    }
    *fd_out = fd;
    return SD_OK;
}

sd_status sd_file_check(sd_context *ctx, int fd, const char *path, const sd_file_id *id)
{
    struct stat sb;
    sd_file_id now;
    if (fstat(fd, &sb) != 0)
        return sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
    sd_file_id_from_stat(&sb, &now);
    if (sd_file_id_equal(&now, id))
        return SD_OK;
    if (now.size != id->size)
        return sd_set_error(ctx, SD_ERR_IO, "%s: changed since it was opened (now %lld bytes, was %lld)", path,
                            (long long)now.size, (long long)id->size);
    return sd_set_error(ctx, SD_ERR_IO, "%s: changed since it was opened (modified)", path);
}

sd_status sd_file_read_at(sd_context *ctx, int fd, const char *path, const sd_file_id *id, uint64_t at, void *dst,
                          size_t nbytes)
{
    for (size_t done = 0; done < nbytes;) {
        size_t want = nbytes - done < ((size_t)1 << 30) ? nbytes - done : (size_t)1 << 30;
        ssize_t got = pread(fd, (unsigned char *)dst + done, want, (off_t)(at + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            sd_status changed = sd_file_check(ctx, fd, path, id);
            if (changed)
                return changed;
            return sd_set_error(ctx, SD_ERR_IO, "%s: read failed at offset %llu: %s", path,
                                (unsigned long long)(at + done), got < 0 ? strerror(errno) : "unexpected end of file");
        }
        done += (size_t)got;
    }
    return sd_file_check(ctx, fd, path, id);
}

sd_status sd_file_read_text(sd_context *ctx, const char *path, size_t max_bytes, char **out, size_t *len)
{
    int fd = -1;
    sd_file_id id;
    *out = NULL;
    sd_status st = sd_file_open(ctx, path, &fd, &id);
    if (st)
        return st;
    size_t n = (size_t)id.size;
    char *buf = NULL;
    if (id.size < 0 || (uint64_t)id.size > max_bytes)
        st = sd_set_error(ctx, SD_ERR_LIMIT, "%s: larger than %zu bytes", path, max_bytes);
    else if (!(buf = malloc(n + 1)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory reading %s", path);
    else
        st = sd_file_read_at(ctx, fd, path, &id, 0, buf, n);
    close(fd);
    if (st) {
        free(buf);
        return st;
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return SD_OK;
}
