/* Pieces shared between the runtime's own files (devices.c, program.c, runtime.c). */
#ifndef SD_RUNTIME_OPENCL_INTERNAL_H
#define SD_RUNTIME_OPENCL_INTERNAL_H

#include "runtime-opencl/runtime.h"

/* Picks the device for selector (index, or a substring of the device or platform name,
 * case-insensitive; NULL or "": the first GPU, else the first CPU, else the first device). */
sd_status sd_cl_select_device(sd_context *ctx, const char *selector, cl_platform_id *platform,
                              cl_device_id *device);

/* Program binary cache: chooses the directory ($SDFLOW_KERNEL_CACHE, else
 * $XDG_CACHE_HOME/sdflow/kernels, else ~/.cache/sdflow/kernels); leaves it disabled (with a
 * warning) when it cannot be created. */
void sd_cl_cache_init(sd_cl *cl);
/* Releases every program and kernel. */
void sd_cl_programs_free(sd_cl *cl);

#endif
