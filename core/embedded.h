/* Files embedded at build time (cmake/embed.cmake): OpenCL kernels and data files. */
#ifndef SD_CORE_EMBEDDED_H
#define SD_CORE_EMBEDDED_H
#include "core/context.h"
#include <stddef.h>

typedef struct sd_embedded_file {
    const char *name;          /* base name, e.g. "gemm.cl" or "workflow.rng" */
    const unsigned char *data; /* contents, followed by one NUL byte */
    size_t size;               /* size without the trailing NUL */
} sd_embedded_file;

extern const sd_embedded_file sd_embedded_kernels[];
extern const sd_embedded_file sd_embedded_data[];

/* Finds an embedded file by base name in a table; NULL when absent. */
const sd_embedded_file *sd_embedded_find(const sd_embedded_file *table, const char *name);

/* Inflates the embedded gzip data file `name` into a malloc'd NUL-terminated buffer (*out,
 * *out_len bytes without the NUL). what names it in errors ("CLIP vocabulary"): SD_ERR_PARSE
 * when it is not embedded or damaged, SD_ERR_NOMEM. */
sd_status sd_embedded_gunzip(sd_context *ctx, const char *name, const char *what, char **out, size_t *out_len);

#endif
