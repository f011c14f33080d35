/* OpenCL runtime: devices, context and queue, named errors, launching, buffer pool. */
#include "runtime-opencl/runtime.h"
#include "runtime-opencl/runtime_internal.h"
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/cpu_isa.h"
#include "sdflow/devices.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

struct sd_cl_pool_entry {
    cl_mem buf;
    size_t bytes;
    sd_cl_pool_entry *next;
};

const char *sd_cl_error_name(cl_int err)
{
    switch (err) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_IMAGE_FORMAT_MISMATCH)
    E(CL_IMAGE_FORMAT_NOT_SUPPORTED) E(CL_BUILD_PROGRAM_FAILURE) E(CL_MAP_FAILURE)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    E(CL_COMPILE_PROGRAM_FAILURE) E(CL_LINKER_NOT_AVAILABLE) E(CL_LINK_PROGRAM_FAILURE)
    E(CL_DEVICE_PARTITION_FAILED) E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE)
    E(CL_INVALID_CONTEXT) E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE)
    E(CL_INVALID_HOST_PTR) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    E(CL_INVALID_IMAGE_SIZE) E(CL_INVALID_SAMPLER) E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS)
    E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME)
    E(CL_INVALID_KERNEL_DEFINITION) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX)
    E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS)
    E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE)
    E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT)
    E(CL_INVALID_OPERATION) E(CL_INVALID_GL_OBJECT) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_MIP_LEVEL) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_PROPERTY)
    E(CL_INVALID_IMAGE_DESCRIPTOR) E(CL_INVALID_COMPILER_OPTIONS) E(CL_INVALID_LINKER_OPTIONS)
    E(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    }
    return "unknown OpenCL error";
}

sd_status sd_cl_fail_at(sd_cl *cl, cl_int err, const char *what, const char *file, int line)
{
    const char *base = strrchr(file, '/');
    sd_status st = (err == CL_OUT_OF_HOST_MEMORY || err == CL_MEM_OBJECT_ALLOCATION_FAILURE)
                       ? SD_ERR_NOMEM : SD_ERR_CL;
    return sd_set_error(cl->ctx, st, "OpenCL: %s failed: %s (%d) at %s:%d", what,
                        sd_cl_error_name(err), (int)err, base ? base + 1 : file, line);
}

static void runtime_free(void *ptr)
{
    sd_cl *cl = ptr;
    if (!cl)
        return;
    if (cl->queue)
        clFinish(cl->queue);
    sd_cl_programs_free(cl);
    sd_dnnl_free(cl);
    sd_cl_pool_trim(cl);
    if (cl->queue)
        clReleaseCommandQueue(cl->queue);
    if (cl->context)
        clReleaseContext(cl->context);
    free(cl->cache_dir);
    free(cl);
}

/* A byte size from environment variable `name` ("512M", "6G", plain bytes) into *out; 0 when
 * unset. Anything else, or a size below 1, is an error naming the variable. */
static sd_status size_env(sd_context *ctx, const char *name, size_t *out)
{
    const char *env = getenv(name);
    int64_t v;
    *out = 0;
    if (!env || !*env)
        return SD_OK;
    if (sd_parse_size(env, &v) != SD_OK || v < 1 || (uint64_t)v > SIZE_MAX)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: '%s' is not a positive size like 512M or 6G", name, env);
    *out = (size_t)v;
    return SD_OK;
}

/* On a CPU device, buffers are host heap memory (PoCL allocates them with posix_memalign). glibc
 * raises its mmap threshold to the size of each mapped block freed (up to 32 MiB), after which
 * multi-MiB buffers come from the heap, where freed ones fragment it instead of going back to the
 * system: with SD1.5 at 512x512 that held about 300 MB more at the peak. A fixed threshold keeps
 * every buffer of 1 MiB or more a mapping of its own. This sets a process-wide allocator option;
 * it does not change results. */
static void map_large_host_buffers(void)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}

/* cl->host_fp32 from the device and SDFLOW_CPU_ROUTES (sd_cl_host_fp32). */
static sd_status host_routes_choose(sd_context *ctx, sd_cl *cl)
{
    const char *env = getenv("SDFLOW_CPU_ROUTES");
    bool able = (cl->type & CL_DEVICE_TYPE_CPU) && sd_dnnl_available();
    const sd_cpu_isa *isa = sd_cpu_isa_get();
    cl->host_fp32 = able && (isa->amx_bf16 || isa->avx512_bf16);
    if (!env || !*env)
        return SD_OK;
    if (strcmp(env, "opencl") == 0)
        cl->host_fp32 = false;
    else if (strcmp(env, "host") == 0)
        cl->host_fp32 = able;
    else
        return sd_set_error(ctx, SD_ERR_INVALID, "SDFLOW_CPU_ROUTES: '%s' is not opencl or host", env);
    return SD_OK;
}

bool sd_cl_host_fp32(const sd_cl *cl)
{
    return cl->host_fp32;
}

static sd_status runtime_open(sd_context *ctx, sd_cl *cl)
{
    sd_status st = size_env(ctx, "SDFLOW_DEVICE_MEMORY", &cl->mem_budget);
    if (!st)
        st = size_env(ctx, "SDFLOW_PACKED_WEIGHTS", &cl->keep_limit);
    if (!st)
        st = sd_cl_select_device(ctx, sd_context_device(ctx), &cl->platform, &cl->device);
    if (st)
        return st;
    cl_device_id dev = cl->device;
    clGetPlatformInfo(cl->platform, CL_PLATFORM_NAME, sizeof cl->platform_name, cl->platform_name, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof cl->device_name, cl->device_name, NULL);
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof cl->driver_version, cl->driver_version, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof cl->type, &cl->type, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof cl->global_mem, &cl->global_mem, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof cl->max_alloc, &cl->max_alloc, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof cl->max_work_group, &cl->max_work_group, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cl->compute_units, &cl->compute_units, NULL);
    cl->is_gpu = (cl->type & CL_DEVICE_TYPE_GPU) != 0;
    if (cl->type & CL_DEVICE_TYPE_CPU)
        map_large_host_buffers();
    if ((st = host_routes_choose(ctx, cl)))
        return st;
    cl->pool_limit = SD_CL_POOL_DEFAULT;

    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform, 0};
    cl->context = clCreateContext(props, 1, &dev, NULL, NULL, &err);
    if (!cl->context)
        return SD_CL_FAIL(cl, err, "clCreateContext");
    cl->queue = clCreateCommandQueue(cl->context, dev, 0, &err);
    if (!cl->queue)
        return SD_CL_FAIL(cl, err, "clCreateCommandQueue");
    sd_cl_cache_init(cl);
    return SD_OK;
}

sd_status sd_cl_get(sd_context *ctx, sd_cl **out)
{
    *out = sd_context_ext(ctx, SD_EXT_OPENCL);
    if (*out)
        return SD_OK;
    sd_cl *cl = calloc(1, sizeof *cl);
    if (!cl)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory creating the OpenCL runtime");
    cl->ctx = ctx;
    sd_status st = runtime_open(ctx, cl);
    if (!st)
        st = sd_context_set_ext(ctx, SD_EXT_OPENCL, cl, runtime_free);
    if (st) {
        runtime_free(cl);
        return st;
    }
    *out = cl;
    return SD_OK;
}

sd_status sd_cl_launch(sd_cl *cl, cl_kernel kernel, int dims, const size_t *global,
                       const size_t *local, size_t nargs, const sd_cl_arg *args)
{
    char name[128] = "?";
    for (int d = 0; d < dims; d++)
        if (global[d] == 0)
            return SD_OK;
    for (size_t i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(kernel, (cl_uint)i, args[i].size, args[i].value);
        if (err != CL_SUCCESS) {
            clGetKernelInfo(kernel, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
            char what[200];
            snprintf(what, sizeof what, "clSetKernelArg(%s, arg %zu)", name, i);
            return SD_CL_FAIL(cl, err, what);
        }
    }
    cl_int err = clEnqueueNDRangeKernel(cl->queue, kernel, (cl_uint)dims, NULL, global, local, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        clGetKernelInfo(kernel, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
        char what[200];
        snprintf(what, sizeof what, "clEnqueueNDRangeKernel(%s)", name);
        return SD_CL_FAIL(cl, err, what);
    }
    return SD_OK;
}

sd_status sd_cl_finish(sd_cl *cl)
{
    cl_int err = clFinish(cl->queue);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(cl, err, "clFinish");
}

/* ---- Buffers and the pool ---- */

static size_t pool_round(size_t bytes)
{
    size_t q = bytes < ((size_t)1 << 20) ? 256 : ((size_t)64 << 10);
    if (bytes == 0)
        return q;
    return bytes > SIZE_MAX - q ? bytes : (bytes + q - 1) / q * q;
}

/* sd_cl_buffer_get and sd_cl_buffer_get_exact: a pooled buffer is taken when it is at least the
 * rounded size and at most `slack` times it. */
static sd_status buffer_get(sd_cl *cl, size_t bytes, size_t slack, const char *what, cl_mem *out,
                            size_t *cap_bytes)
{
    *out = NULL;
    if (bytes > cl->max_alloc)
        return sd_set_error(cl->ctx, SD_ERR_LIMIT,
                            "%s needs %zu bytes in one buffer, above the device's maximum "
                            "allocation of %llu bytes (%s)", what, bytes,
                            (unsigned long long)cl->max_alloc, cl->device_name);
    size_t want = pool_round(bytes);
    if (want > cl->max_alloc)
        want = bytes;
    /* Best fit among free buffers, at most `slack` times the size. */
    sd_cl_pool_entry **best = NULL;
    for (sd_cl_pool_entry **p = &cl->pool; *p; p = &(*p)->next)
        if ((*p)->bytes >= want && (*p)->bytes / slack <= want && (!best || (*p)->bytes < (*best)->bytes))
            best = p;
    if (best) {
        sd_cl_pool_entry *e = *best;
        *best = e->next;
        *out = e->buf;
        if (cap_bytes)
            *cap_bytes = e->bytes;
        cl->stats.pool_bytes -= e->bytes;
        cl->stats.live_bytes += e->bytes;
        free(e);
        return SD_OK;
    }
    if (cl->mem_budget) {
        if (cl->stats.live_bytes + cl->stats.pool_bytes + want > cl->mem_budget)
            sd_cl_pool_trim(cl);
        if (cl->stats.live_bytes + want > cl->mem_budget)
            return sd_set_error(cl->ctx, SD_ERR_NOMEM,
                                "out of device memory allocating %zu bytes for %s: %zu bytes in use, "
                                "SDFLOW_DEVICE_MEMORY budget %zu bytes", want, what, cl->stats.live_bytes,
                                cl->mem_budget);
    }
    cl_int err = CL_SUCCESS;
    for (int attempt = 0; attempt < 2; attempt++) {
        *out = clCreateBuffer(cl->context, CL_MEM_READ_WRITE, want, NULL, &err);
        if (*out || (err != CL_MEM_OBJECT_ALLOCATION_FAILURE && err != CL_OUT_OF_RESOURCES &&
                     err != CL_OUT_OF_HOST_MEMORY))
            break;
        sd_cl_pool_trim(cl); /* give the pooled buffers back and retry once */
    }
    if (!*out) {
        if (err == CL_INVALID_BUFFER_SIZE || err == CL_MEM_OBJECT_ALLOCATION_FAILURE ||
            err == CL_OUT_OF_RESOURCES || err == CL_OUT_OF_HOST_MEMORY)
            return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of device memory allocating %zu bytes "
                                "for %s: %s", want, what, sd_cl_error_name(err));
        return SD_CL_FAIL(cl, err, "clCreateBuffer");
    }
    if (cap_bytes)
        *cap_bytes = want;
    cl->stats.live_bytes += want;
    if (cl->stats.live_bytes + cl->stats.pool_bytes > cl->stats.peak_bytes)
        cl->stats.peak_bytes = cl->stats.live_bytes + cl->stats.pool_bytes;
    return SD_OK;
}

sd_status sd_cl_buffer_get(sd_cl *cl, size_t bytes, const char *what, cl_mem *out, size_t *cap_bytes)
{
    return buffer_get(cl, bytes, 2, what, out, cap_bytes);
}

sd_status sd_cl_buffer_get_exact(sd_cl *cl, size_t bytes, const char *what, cl_mem *out, size_t *cap_bytes)
{
    return buffer_get(cl, bytes, 1, what, out, cap_bytes);
}

/* Releases the oldest free buffers (the tail of the list) until the pool is within its limit. */
static void pool_shrink(sd_cl *cl)
{
    while (cl->stats.pool_bytes > cl->pool_limit) {
        sd_cl_pool_entry **p = &cl->pool;
        while ((*p)->next)
            p = &(*p)->next;
        sd_cl_pool_entry *old = *p;
        *p = NULL;
        cl->stats.pool_bytes -= old->bytes;
        clReleaseMemObject(old->buf);
        free(old);
    }
}

void sd_cl_buffer_release(sd_cl *cl, cl_mem buf, size_t cap_bytes)
{
    if (!buf)
        return;
    cl->stats.live_bytes -= cap_bytes;
    sd_cl_pool_entry *e = cap_bytes <= cl->pool_limit ? malloc(sizeof *e) : NULL;
    if (!e) {
        clReleaseMemObject(buf);
        return;
    }
    e->buf = buf;
    e->bytes = cap_bytes;
    e->next = cl->pool;
    cl->pool = e;
    cl->stats.pool_bytes += cap_bytes;
    pool_shrink(cl);
}

void sd_cl_set_pool_limit(sd_cl *cl, size_t bytes)
{
    cl->pool_limit = bytes;
    pool_shrink(cl);
}

void sd_cl_set_keep_limit(sd_cl *cl, size_t bytes)
{
    cl->keep_limit = bytes;
}

void sd_cl_pool_trim(sd_cl *cl)
{
    while (cl->pool) {
        sd_cl_pool_entry *e = cl->pool;
        cl->pool = e->next;
        clReleaseMemObject(e->buf);
        free(e);
    }
    cl->stats.pool_bytes = 0;
}

sd_status sd_cl_write(sd_cl *cl, cl_mem buf, size_t offset, size_t bytes, const void *src)
{
    if (bytes == 0)
        return SD_OK;
    cl_int err = clEnqueueWriteBuffer(cl->queue, buf, CL_TRUE, offset, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(cl, err, "clEnqueueWriteBuffer");
}

sd_status sd_cl_read(sd_cl *cl, cl_mem buf, size_t offset, size_t bytes, void *dst)
{
    if (bytes == 0)
        return SD_OK;
    cl_int err = clEnqueueReadBuffer(cl->queue, buf, CL_TRUE, offset, bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(cl, err, "clEnqueueReadBuffer");
}
