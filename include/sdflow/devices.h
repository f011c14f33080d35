/* OpenCL devices visible to sdflow (what `sdflow devices` prints and --device selects). */
#ifndef SDFLOW_DEVICES_H
#define SDFLOW_DEVICES_H

#include "sdflow/sdflow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_device_info {
    int index;              /* position across all platforms: what --device <index> selects */
    char platform[128];     /* platform name */
    char name[128];         /* device name */
    char type[16];          /* "GPU", "CPU", "ACCELERATOR" or "OTHER" */
    char driver[64];        /* driver version */
    char version[128];      /* OpenCL version string of the device */
    uint64_t global_mem;    /* bytes */
    uint64_t max_alloc;     /* bytes: the largest single buffer */
    unsigned compute_units;
    bool fp16, fp64, subgroups;
    bool is_default;        /* the device a context without a selector uses */
} sd_device_info;

/* Lists every device of every OpenCL platform into a malloc'd array (*out, free with
 * sd_devices_free) of *count entries. SD_ERR_CL (a device error, exit 4), with a message saying
 * how to install PoCL, when no platform or device exists; SD_ERR_NOMEM when memory runs out. */
sd_status sd_devices_list(sd_context *ctx, sd_device_info **out, size_t *count);
void sd_devices_free(sd_device_info *list);

#ifdef __cplusplus
}
#endif
#endif
