/* Files embedded at build time (cmake/embed.cmake): OpenCL kernels and data files. */
#ifndef SD_CORE_EMBEDDED_H
#define SD_CORE_EMBEDDED_H
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

#endif
