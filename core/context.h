/* Internal view of sd_context: errors, diagnostics, settings and extension slots. */
#ifndef SD_CORE_CONTEXT_H
#define SD_CORE_CONTEXT_H

#include "sdflow/sdflow.h"
#include <signal.h>

typedef struct sd_cache sd_cache;
struct sd_file_id;

/* Extension slots let lower layers keep per-context state without core knowing its type:
 * the OpenCL runtime keeps its device there, models/ its loaded weights. */
typedef struct sd_ext_slot {
    char *name;
    void *ptr;
    void (*free_fn)(void *);
} sd_ext_slot;

struct sd_context {
    char errmsg[1024];
    char **diags;
    size_t n_diags, cap_diags;

    char **models_dirs;
    size_t n_models_dirs;
    char *dirs[3];          /* sd_dir_kind */
    char *cache_path;       /* NULL: disabled */
    char *device;
    bool allow_absolute_paths; /* file inputs may name absolute paths (core/files.c) */

    sd_log_fn log_fn;
    void *log_user;
    sd_progress_fn progress_fn;
    void *progress_user;
    volatile sig_atomic_t interrupted;
    bool previews;          /* samplers attach preview images to step events */
    bool bf16;              /* sd_context_set_precision "bf16" */

    bool cache_failed;      /* opening the cache failed once: run without it */

    /* While a node runs (core/schedule.c): decides whether sd_file_open (core/files.h) may open
     * a file for it; NULL otherwise. */
    sd_status (*read_guard)(void *user, const char *path, const struct sd_file_id *id);
    void *read_guard_user;

    sd_ext_slot *ext;
    size_t n_ext;
};

/* Whether the context computes matrix products in bf16 (sd_context_set_precision). */
bool sd_context_bf16(const sd_context *ctx);
/* Sets whether it does and returns the setting it replaces: the scoped switch of a model with a
 * precision of its own (ModelComputeDtype), made around that model's forward calls and undone
 * after them, error or not. Cache keys and provenance keep reading the run's precision, which
 * is the setting between those calls. */
bool sd_context_swap_bf16(sd_context *ctx, bool bf16);

/* Sets the error message (printf-style) and returns status. */
sd_status sd_set_error(sd_context *ctx, sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the current message: "prefix: old message". */
void sd_error_prefix(sd_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sd_clear_error(sd_context *ctx);

/* Diagnostics (validation): appended, cleared at the start of a validation. */
void sd_diag_clear(sd_context *ctx);
void sd_diag_add(sd_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A warning line through the log callback. */
void sd_warn(sd_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Emits a progress event if a callback is set. */
void sd_emit_progress(sd_context *ctx, const sd_progress *event);

/* The opened cache (ext slot SD_EXT_CACHE, opened lazily), or NULL when disabled or
 * unusable (a warning was logged once). Implemented in core/cache.c. */
#define SD_EXT_CACHE "core.cache"
sd_cache *sd_context_cache(sd_context *ctx);

/* Extension slots: get returns NULL when unset; set replaces (freeing the old pointer). */
void *sd_context_ext(sd_context *ctx, const char *name);
sd_status sd_context_set_ext(sd_context *ctx, const char *name, void *ptr, void (*free_fn)(void *));

/* malloc'd copy of s, NULL-safe; NULL on out of memory. */
char *sd_strdup(const char *s);
/* malloc'd printf; NULL on out of memory. */
char *sd_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
