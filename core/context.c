/* sd_context: settings from the environment, error message, diagnostics, warnings. */
#include "core/context.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sd_version(void)
{
    return SDFLOW_VERSION;
}

const char *sd_status_name(sd_status status)
{
    switch (status) {
    case SD_OK: return "ok";
    case SD_ERR_USAGE: return "usage error";
    case SD_ERR_PARSE: return "parse error";
    case SD_ERR_INVALID: return "invalid input";
    case SD_ERR_NOT_FOUND: return "not found";
    case SD_ERR_LIMIT: return "limit exceeded";
    case SD_ERR_NOMEM: return "out of memory";
    case SD_ERR_IO: return "I/O error";
    case SD_ERR_CL: return "OpenCL error";
    case SD_ERR_CACHE: return "cache error";
    case SD_ERR_INTERRUPTED: return "interrupted";
    case SD_ERR_MISMATCH: return "mismatch";
    }
    return "unknown status";
}

int sd_status_exit_code(sd_status status)
{
    switch (status) {
    case SD_OK: return 0;
    case SD_ERR_MISMATCH: return 1;
    case SD_ERR_USAGE: return 2;
    case SD_ERR_PARSE:
    case SD_ERR_INVALID:
    case SD_ERR_NOT_FOUND: return 3;
    case SD_ERR_LIMIT:
    case SD_ERR_NOMEM:
    case SD_ERR_CL: return 4;
    case SD_ERR_IO:
    case SD_ERR_CACHE: return 5;
    case SD_ERR_INTERRUPTED: return 130;
    }
    return 5;
}

char *sd_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static char *vstrfmt(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *sd_strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vstrfmt(fmt, ap);
    va_end(ap);
    return s;
}

static void default_log(const char *line, void *user)
{
    (void)user;
    fprintf(stderr, "sdflow: warning: %s\n", line);
}

static sd_status set_owned(char **slot, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = sd_strdup(value)))
        return SD_ERR_NOMEM;
    free(*slot);
    *slot = copy;
    return SD_OK;
}

static sd_status default_cache_path(sd_context *ctx)
{
    const char *env = getenv("SDFLOW_CACHE");
    if (env && *env)
        return set_owned(&ctx->cache_path, env);
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *p = NULL;
    if (xdg && *xdg)
        p = sd_strfmt("%s/sdflow/cache.db", xdg);
    else if (home && *home)
        p = sd_strfmt("%s/.cache/sdflow/cache.db", home);
    else
        return SD_OK; /* nowhere to put it: caching stays off */
    if (!p)
        return SD_ERR_NOMEM;
    free(ctx->cache_path);
    ctx->cache_path = p;
    return SD_OK;
}

sd_status sd_context_new(sd_context **out)
{
    *out = NULL;
    sd_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return SD_ERR_NOMEM;
    ctx->log_fn = default_log;
    sd_status st = SD_OK;
    const char *models = getenv("SDFLOW_MODELS");
    char *list = sd_strdup(models && *models ? models : "models"); /* ./models, as ./input, ./output */
    if (!list)
        st = SD_ERR_NOMEM;
    for (char *save = NULL, *tok = list ? strtok_r(list, ":", &save) : NULL; tok && !st;
         tok = strtok_r(NULL, ":", &save))
        st = sd_context_add_models_dir(ctx, tok);
    free(list);
    const char *tmp = getenv("TMPDIR");
    char *tempdir = sd_strfmt("%s/sdflow", tmp && *tmp ? tmp : "/tmp");
    if (!st && !tempdir)
        st = SD_ERR_NOMEM;
    if (!st) {
        const char *in = getenv("SDFLOW_INPUT"), *outd = getenv("SDFLOW_OUTPUT");
        st = set_owned(&ctx->dirs[SD_DIR_INPUT], in && *in ? in : "input");
        if (!st)
            st = set_owned(&ctx->dirs[SD_DIR_OUTPUT], outd && *outd ? outd : "output");
        if (!st)
            st = set_owned(&ctx->dirs[SD_DIR_TEMP], tempdir);
    }
    free(tempdir);
    if (!st)
        st = default_cache_path(ctx);
    const char *dev = getenv("SDFLOW_DEVICE"), *precision = getenv("SDFLOW_PRECISION");
    if (!st && dev && *dev)
        st = set_owned(&ctx->device, dev);
    if (!st && precision && *precision && sd_context_set_precision(ctx, precision)) {
        sd_warn(ctx, "SDFLOW_PRECISION: %s; computing in fp32", sd_context_errmsg(ctx));
        sd_clear_error(ctx);
    }
    if (st) {
        sd_context_free(ctx);
        return st;
    }
    *out = ctx;
    return SD_OK;
}

void sd_context_free(sd_context *ctx)
{
    if (!ctx)
        return;
    /* Extension slots go first and in reverse order: models before the device they use. */
    for (size_t i = ctx->n_ext; i-- > 0;) {
        if (ctx->ext[i].free_fn)
            ctx->ext[i].free_fn(ctx->ext[i].ptr);
        free(ctx->ext[i].name);
    }
    free(ctx->ext);
    sd_diag_clear(ctx);
    free(ctx->diags);
    sd_context_clear_models_dirs(ctx);
    for (int i = 0; i < 3; i++)
        free(ctx->dirs[i]);
    free(ctx->cache_path);
    free(ctx->device);
    free(ctx);
}

const char *sd_context_errmsg(const sd_context *ctx)
{
    return ctx->errmsg;
}

/* Messages are one line (docs/design.md §8) even when they quote input (a tensor name, a
 * libxml2 message): line breaks, tabs and other ASCII control bytes become spaces. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

sd_status sd_set_error(sd_context *ctx, sd_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    one_line(ctx->errmsg);
    return status;
}

void sd_error_prefix(sd_context *ctx, const char *fmt, ...)
{
    char old[sizeof ctx->errmsg];
    memcpy(old, ctx->errmsg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof ctx->errmsg - 2) {
        size_t used = (size_t)n;
        memcpy(ctx->errmsg + used, ": ", 2);
        used += 2;
        size_t room = sizeof ctx->errmsg - used - 1, len = strlen(old);
        memcpy(ctx->errmsg + used, old, len < room ? len : room);
        ctx->errmsg[used + (len < room ? len : room)] = '\0';
    }
    one_line(ctx->errmsg);
}

void sd_clear_error(sd_context *ctx)
{
    ctx->errmsg[0] = '\0';
}

size_t sd_context_diag_count(const sd_context *ctx)
{
    return ctx->n_diags;
}

const char *sd_context_diag(const sd_context *ctx, size_t index)
{
    return index < ctx->n_diags ? ctx->diags[index] : NULL;
}

void sd_diag_clear(sd_context *ctx)
{
    for (size_t i = 0; i < ctx->n_diags; i++)
        free(ctx->diags[i]);
    ctx->n_diags = 0;
}

void sd_diag_add(sd_context *ctx, const char *fmt, ...)
{
    if (ctx->n_diags == ctx->cap_diags) {
        size_t cap = ctx->cap_diags ? ctx->cap_diags * 2 : 16;
        char **d = realloc(ctx->diags, cap * sizeof *d);
        if (!d)
            return; /* diagnostics are best effort under memory pressure */
        ctx->diags = d;
        ctx->cap_diags = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = vstrfmt(fmt, ap);
    va_end(ap);
    if (s) {
        one_line(s);
        ctx->diags[ctx->n_diags++] = s;
    }
}

void sd_warn(sd_context *ctx, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    one_line(line);
    if (ctx->log_fn)
        ctx->log_fn(line, ctx->log_user);
}

void sd_context_set_log(sd_context *ctx, sd_log_fn fn, void *user)
{
    ctx->log_fn = fn;
    ctx->log_user = user;
}

void sd_context_set_progress(sd_context *ctx, sd_progress_fn fn, void *user)
{
    ctx->progress_fn = fn;
    ctx->progress_user = user;
}

void sd_emit_progress(sd_context *ctx, const sd_progress *event)
{
    if (ctx->progress_fn)
        ctx->progress_fn(event, ctx->progress_user);
}

void sd_context_set_previews(sd_context *ctx, bool on)
{
    ctx->previews = on;
}

void sd_context_interrupt(sd_context *ctx)
{
    ctx->interrupted = 1;
}

void sd_context_clear_interrupt(sd_context *ctx)
{
    ctx->interrupted = 0;
}

sd_status sd_context_add_models_dir(sd_context *ctx, const char *path)
{
    char **d = realloc(ctx->models_dirs, (ctx->n_models_dirs + 1) * sizeof *d);
    if (!d)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    ctx->models_dirs = d;
    if (!(d[ctx->n_models_dirs] = sd_strdup(path)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    ctx->n_models_dirs++;
    return SD_OK;
}

size_t sd_context_models_dir_count(const sd_context *ctx)
{
    return ctx->n_models_dirs;
}

const char *sd_context_models_dir(const sd_context *ctx, size_t index)
{
    return index < ctx->n_models_dirs ? ctx->models_dirs[index] : NULL;
}

void sd_context_clear_models_dirs(sd_context *ctx)
{
    for (size_t i = 0; i < ctx->n_models_dirs; i++)
        free(ctx->models_dirs[i]);
    free(ctx->models_dirs);
    ctx->models_dirs = NULL;
    ctx->n_models_dirs = 0;
}

sd_status sd_context_set_dir(sd_context *ctx, sd_dir_kind kind, const char *path)
{
    if ((unsigned)kind > SD_DIR_TEMP || !path)
        return sd_set_error(ctx, SD_ERR_USAGE, "sd_context_set_dir: bad directory kind or path");
    if (set_owned(&ctx->dirs[kind], path))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

const char *sd_context_dir(const sd_context *ctx, sd_dir_kind kind)
{
    return (unsigned)kind <= SD_DIR_TEMP ? ctx->dirs[kind] : NULL;
}

void sd_context_set_allow_absolute_paths(sd_context *ctx, bool allow)
{
    ctx->allow_absolute_paths = allow;
}

sd_status sd_context_set_cache_path(sd_context *ctx, const char *path)
{
    sd_status st = sd_context_set_ext(ctx, SD_EXT_CACHE, NULL, NULL); /* closes an open one */
    if (st)
        return st;
    ctx->cache_failed = false;
    if (set_owned(&ctx->cache_path, path))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

const char *sd_context_cache_path(const sd_context *ctx)
{
    return ctx->cache_path;
}

sd_status sd_context_set_device(sd_context *ctx, const char *selector)
{
    if (set_owned(&ctx->device, selector))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

const char *sd_context_device(const sd_context *ctx)
{
    return ctx->device;
}

sd_status sd_context_set_precision(sd_context *ctx, const char *name)
{
    if (!name || (strcmp(name, "fp32") && strcmp(name, "bf16")))
        return sd_set_error(ctx, SD_ERR_USAGE, "unknown precision '%s' (fp32 or bf16)", name ? name : "");
    ctx->bf16 = strcmp(name, "bf16") == 0;
    return SD_OK;
}

const char *sd_context_precision(const sd_context *ctx)
{
    return ctx->bf16 ? "bf16" : "fp32";
}

bool sd_context_bf16(const sd_context *ctx)
{
    return ctx->bf16;
}

bool sd_context_swap_bf16(sd_context *ctx, bool bf16)
{
    bool was = ctx->bf16;
    ctx->bf16 = bf16;
    return was;
}

void *sd_context_ext(sd_context *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_ext; i++)
        if (strcmp(ctx->ext[i].name, name) == 0)
            return ctx->ext[i].ptr;
    return NULL;
}

sd_status sd_context_set_ext(sd_context *ctx, const char *name, void *ptr, void (*free_fn)(void *))
{
    for (size_t i = 0; i < ctx->n_ext; i++) {
        if (strcmp(ctx->ext[i].name, name) == 0) {
            if (ctx->ext[i].free_fn && ctx->ext[i].ptr != ptr)
                ctx->ext[i].free_fn(ctx->ext[i].ptr);
            ctx->ext[i].ptr = ptr;
            ctx->ext[i].free_fn = free_fn;
            return SD_OK;
        }
    }
    sd_ext_slot *e = realloc(ctx->ext, (ctx->n_ext + 1) * sizeof *e);
    if (!e)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    ctx->ext = e;
    if (!(e[ctx->n_ext].name = sd_strdup(name)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    e[ctx->n_ext].ptr = ptr;
    e[ctx->n_ext].free_fn = free_fn;
    ctx->n_ext++;
    return SD_OK;
}
