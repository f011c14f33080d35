/* Enumerating OpenCL platforms and devices; choosing one by index or name. */
#include "runtime-opencl/runtime_internal.h"
#include "sdflow/devices.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CL_DEVICE_MAX_NUM_SUB_GROUPS
#define CL_DEVICE_MAX_NUM_SUB_GROUPS 0x105C
#endif

#define NO_DEVICE_HINT "install an OpenCL driver; for the CPU: apt-get install pocl-opencl-icd"

typedef struct dev_entry {
    cl_platform_id platform;
    cl_device_id device;
} dev_entry;

/* Every device of every platform, in platform order. */
static sd_status enumerate(sd_context *ctx, dev_entry **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &np);
    if (err != CL_SUCCESS || np == 0)
        return sd_set_error(ctx, SD_ERR_CL, "no OpenCL platform found (%s): " NO_DEVICE_HINT,
                            err != CL_SUCCESS ? sd_cl_error_name(err) : "none installed");
    cl_platform_id *plats = calloc(np, sizeof *plats);
    dev_entry *list = NULL;
    size_t n = 0;
    sd_status st = SD_OK;
    if (!plats) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory listing OpenCL platforms");
        goto done;
    }
    clGetPlatformIDs(np, plats, NULL);
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0)
            continue;
        dev_entry *grown = realloc(list, (n + nd) * sizeof *grown);
        cl_device_id *ids = calloc(nd, sizeof *ids);
        if (grown)
            list = grown;
        if (!grown || !ids) {
            free(ids);
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory listing OpenCL devices");
            goto done;
        }
        clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL);
        for (cl_uint d = 0; d < nd; d++)
            list[n++] = (dev_entry){plats[p], ids[d]};
        free(ids);
    }
    if (n == 0)
        st = sd_set_error(ctx, SD_ERR_CL, "no OpenCL device found on %u platform%s: " NO_DEVICE_HINT,
                          (unsigned)np, np == 1 ? "" : "s");
done:
    free(plats);
    if (st) {
        free(list);
        return st;
    }
    *out = list;
    *count = n;
    return SD_OK;
}

static cl_device_type dev_type(cl_device_id d)
{
    cl_device_type t = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    return t;
}

static size_t default_index(const dev_entry *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (dev_type(list[i].device) & CL_DEVICE_TYPE_GPU)
            return i;
    for (size_t i = 0; i < n; i++)
        if (dev_type(list[i].device) & CL_DEVICE_TYPE_CPU)
            return i;
    return 0;
}

static bool contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < nl && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == nl)
            return true;
    }
    return nl == 0;
}

sd_status sd_cl_select_device(sd_context *ctx, const char *selector, cl_platform_id *platform,
                              cl_device_id *device)
{
    dev_entry *list;
    size_t n;
    sd_status st = enumerate(ctx, &list, &n);
    if (st)
        return st;
    size_t pick = n;
    if (!selector || !*selector) {
        pick = default_index(list, n);
    } else {
        char *end;
        long idx = strtol(selector, &end, 10);
        if (*end == '\0' && end != selector) {
            if (idx >= 0 && (size_t)idx < n)
                pick = (size_t)idx;
        } else {
            for (size_t i = 0; i < n && pick == n; i++) {
                char dname[256] = "", pname[256] = "";
                clGetDeviceInfo(list[i].device, CL_DEVICE_NAME, sizeof dname, dname, NULL);
                clGetPlatformInfo(list[i].platform, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
                if (contains_nocase(dname, selector) || contains_nocase(pname, selector))
                    pick = i;
            }
        }
    }
    if (pick == n) {
        st = sd_set_error(ctx, SD_ERR_CL, "no OpenCL device matches '%s' (%zu device%s; "
                          "see 'sdflow devices')", selector, n, n == 1 ? "" : "s");
    } else {
        *platform = list[pick].platform;
        *device = list[pick].device;
    }
    free(list);
    return st;
}

static bool has_ext(const char *exts, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = exts; (p = strstr(p, name)); p += len)
        if ((p == exts || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
            return true;
    return false;
}

/* A platform or device string, truncated to fit out (CL refuses buffers that are too small). */
static void info_string(const dev_entry *e, bool platform, cl_uint param, char *out, size_t size)
{
    char buf[1024] = "";
    if (platform)
        clGetPlatformInfo(e->platform, param, sizeof buf - 1, buf, NULL);
    else
        clGetDeviceInfo(e->device, param, sizeof buf - 1, buf, NULL);
    snprintf(out, size, "%s", buf);
}

static void describe(const dev_entry *e, int index, sd_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->index = index;
    info_string(e, true, CL_PLATFORM_NAME, info->platform, sizeof info->platform);
    info_string(e, false, CL_DEVICE_NAME, info->name, sizeof info->name);
    info_string(e, false, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
    info_string(e, false, CL_DEVICE_VERSION, info->version, sizeof info->version);
    cl_device_type t = dev_type(e->device);
    snprintf(info->type, sizeof info->type, "%s", (t & CL_DEVICE_TYPE_GPU) ? "GPU"
             : (t & CL_DEVICE_TYPE_CPU) ? "CPU" : (t & CL_DEVICE_TYPE_ACCELERATOR) ? "ACCELERATOR" : "OTHER");
    cl_ulong v = 0;
    clGetDeviceInfo(e->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof v, &v, NULL);
    info->global_mem = v;
    v = 0;
    clGetDeviceInfo(e->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof v, &v, NULL);
    info->max_alloc = v;
    cl_uint cu = 0;
    clGetDeviceInfo(e->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    info->compute_units = cu;
    size_t len = 0;
    clGetDeviceInfo(e->device, CL_DEVICE_EXTENSIONS, 0, NULL, &len);
    char *exts = calloc(len + 1, 1);
    if (exts && clGetDeviceInfo(e->device, CL_DEVICE_EXTENSIONS, len, exts, NULL) == CL_SUCCESS) {
        info->fp16 = has_ext(exts, "cl_khr_fp16");
        info->fp64 = has_ext(exts, "cl_khr_fp64");
        info->subgroups = has_ext(exts, "cl_khr_subgroups") || has_ext(exts, "cl_intel_subgroups");
    }
    free(exts);
    cl_uint subgroups = 0;
    if (!info->subgroups &&
        clGetDeviceInfo(e->device, CL_DEVICE_MAX_NUM_SUB_GROUPS, sizeof subgroups, &subgroups, NULL) == CL_SUCCESS)
        info->subgroups = subgroups > 0;
    cl_device_fp_config fp64 = 0;
    if (!info->fp64 &&
        clGetDeviceInfo(e->device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL) == CL_SUCCESS)
        info->fp64 = fp64 != 0;
}

sd_status sd_devices_list(sd_context *ctx, sd_device_info **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    dev_entry *list;
    size_t n;
    sd_status st = enumerate(ctx, &list, &n);
    if (st)
        return st;
    sd_device_info *infos = calloc(n, sizeof *infos);
    if (!infos) {
        free(list);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory listing OpenCL devices");
    }
    size_t def = default_index(list, n);
    for (size_t i = 0; i < n; i++) {
        describe(&list[i], (int)i, &infos[i]);
        infos[i].is_default = i == def;
    }
    free(list);
    *out = infos;
    *count = n;
    return SD_OK;
}

void sd_devices_free(sd_device_info *list)
{
    free(list);
}
