/* OpenCL runtime: device selection, context and queue, programs with an on-disk binary cache,
 * kernel lookup and launching. The only layer that includes CL/cl.h (docs/design.md §1).
 *
 *   sd_cl *cl;
 *   if ((st = sd_cl_get(ctx, &cl))) return st;          // created lazily, owned by ctx
 *   cl_kernel k;
 *   if ((st = sd_cl_kernel(cl, "gemm.cl", "gemm_tile", "-DMR=8", &k))) return st;
 *   sd_cl_arg args[] = {SD_ARG_MEM(a->buf), SD_ARG_INT(m), SD_ARG_FLOAT(alpha)};
 *   size_t global[2] = {tiles_m, tiles_n};
 *   st = sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args);
 *
 * Every failure sets the context's message naming the CL call, the CL error by name and the
 * call site, and returns SD_ERR_CL (SD_ERR_NOMEM for out-of-memory codes). */
#ifndef SD_RUNTIME_OPENCL_RUNTIME_H
#define SD_RUNTIME_OPENCL_RUNTIME_H

#include "core/context.h"
#include <CL/cl.h>

/* Name of the context extension slot holding the runtime. */
#define SD_EXT_OPENCL "opencl.runtime"

typedef struct sd_cl_program_entry sd_cl_program_entry;
typedef struct sd_cl_pool_entry sd_cl_pool_entry;

/* Counters the tests and benchmarks read. */
typedef struct sd_cl_stats {
    int programs_compiled;   /* built from source */
    int programs_from_cache; /* loaded from the on-disk binary cache */
    int cache_writes;        /* binaries written to the cache */
    size_t pool_bytes;       /* bytes held in free pooled buffers */
    size_t live_bytes;       /* bytes in buffers currently used by tensors */
    size_t peak_bytes;       /* highest live_bytes + pool_bytes seen */
    int derived_builds;      /* packed/transformed forms of constant tensors computed and kept */
    size_t derived_bytes;    /* bytes those forms hold now (included in live_bytes) */
    int dnnl_reference_convs; /* oneDNN convolution primitives made on a reference (plain-loop) implementation */
} sd_cl_stats;

typedef struct sd_cl {
    sd_context *ctx;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    char platform_name[256];
    char device_name[256];
    char driver_version[128];
    cl_device_type type;
    bool is_gpu;              /* pick GPU-style kernel variants */
    cl_ulong global_mem;
    cl_ulong max_alloc;       /* CL_DEVICE_MAX_MEM_ALLOC_SIZE: no buffer is ever larger */
    size_t max_work_group;
    cl_uint compute_units;

    char *cache_dir;          /* binary cache directory; NULL when disabled */
    sd_cl_program_entry *programs;
    sd_cl_pool_entry *pool;   /* free buffers kept for reuse */
    size_t pool_limit;        /* bytes of free buffers kept before releasing the oldest */
    size_t keep_limit;        /* most bytes of kept forms of constant tensors (sd_cl_set_keep_limit) */
    size_t mem_budget;        /* SDFLOW_DEVICE_MEMORY: most bytes held in buffers; 0 = no limit */
    sd_cl_stats stats;
    struct sd_dnnl *dnnl;     /* oneDNN engine of the host routes (runtime-opencl/dnnl.h); NULL until used */
    bool host_fp32;           /* fp32 products and attention take the host routes (sd_cl_host_fp32) */
} sd_cl;

/* The runtime of ctx, created on first use from sd_context_device(ctx) (an index or a name
 * substring; NULL: the first GPU, else the first CPU device). The context owns it.
 * Fails with SD_ERR_CL (exit 4, a device error) when no platform/device exists (the message says
 * how to install PoCL), the selector matches nothing, or the device cannot be opened. */
sd_status sd_cl_get(sd_context *ctx, sd_cl **out);

/* "CL_OUT_OF_RESOURCES" etc.; "unknown OpenCL error" for codes not in the OpenCL 1.2 list. */
const char *sd_cl_error_name(cl_int err);

/* Records a CL failure on the context: "<what>: <CL_NAME> (<file>:<line>)". Returns
 * SD_ERR_NOMEM for CL_OUT_OF_HOST_MEMORY / CL_MEM_OBJECT_ALLOCATION_FAILURE, else SD_ERR_CL.
 * Use through SD_CL_FAIL so the call site is filled in. */
sd_status sd_cl_fail_at(sd_cl *cl, cl_int err, const char *what, const char *file, int line);
#define SD_CL_FAIL(cl, err, what) sd_cl_fail_at((cl), (err), (what), __FILE__, __LINE__)

/* The program built from the kernel file `file` (a base name like "gemm.cl", embedded at build
 * time or, with SDFLOW_KERNELS_FROM_DISK, read from the source tree) with build options
 * `options` (may be NULL). Built once per runtime; binaries are cached on disk keyed by
 * BLAKE2b(source, options, device name, driver version, platform). A build failure returns
 * SD_ERR_CL with the build log in the message. The program stays owned by the runtime. */
sd_status sd_cl_program(sd_cl *cl, const char *file, const char *options, cl_program *out);

/* Like sd_cl_program for source text given by the caller (tests, generated code). `label`
 * names the source in messages and in the runtime's table: one label, one source. */
sd_status sd_cl_program_source(sd_cl *cl, const char *label, const char *source, const char *options,
                               cl_program *out);

/* The kernel `name` of program (file, options); created once and owned by the runtime.
 * Kernels are not thread-safe: set arguments and enqueue from one thread. */
sd_status sd_cl_kernel(sd_cl *cl, const char *file, const char *name, const char *options,
                       cl_kernel *out);

/* One kernel argument: size and pointer to its value (NULL with size > 0 for local memory). */
typedef struct sd_cl_arg {
    size_t size;
    const void *value;
} sd_cl_arg;

/* Argument helpers; the compound literals live until the end of the enclosing block. */
#define SD_ARG_MEM(m) ((sd_cl_arg){sizeof(cl_mem), &(cl_mem){(m)}})
#define SD_ARG_INT(v) ((sd_cl_arg){sizeof(cl_int), &(cl_int){(cl_int)(v)}})
#define SD_ARG_UINT(v) ((sd_cl_arg){sizeof(cl_uint), &(cl_uint){(cl_uint)(v)}})
#define SD_ARG_LONG(v) ((sd_cl_arg){sizeof(cl_long), &(cl_long){(cl_long)(v)}})
#define SD_ARG_FLOAT(v) ((sd_cl_arg){sizeof(cl_float), &(cl_float){(cl_float)(v)}})
#define SD_ARG_LOCAL(bytes) ((sd_cl_arg){(bytes), NULL})
#define SD_NARGS(array) (sizeof(array) / sizeof((array)[0]))

/* Sets the arguments and enqueues kernel over `dims` dimensions (global sizes; local NULL lets
 * the driver choose, otherwise the global sizes must be multiples of local). Zero-sized
 * launches do nothing. Errors name the kernel. */
sd_status sd_cl_launch(sd_cl *cl, cl_kernel kernel, int dims, const size_t *global,
                       const size_t *local, size_t nargs, const sd_cl_arg *args);

/* Waits for all enqueued work (clFinish). */
sd_status sd_cl_finish(sd_cl *cl);

/* Raw buffers with the device limits enforced: SD_ERR_LIMIT above CL_DEVICE_MAX_MEM_ALLOC_SIZE
 * (message names `what`), SD_ERR_NOMEM when the device is out of memory or when the buffers
 * held (used and pooled) would exceed the SDFLOW_DEVICE_MEMORY budget (a size like 512M or 6G,
 * read when the runtime is created; for sharing a device, and to exercise out-of-memory paths). Buffers come from the
 * runtime's pool when a free one of a fitting size exists (at most twice the size). sd_cl_buffer_release gives a buffer
 * back to the pool; *cap_bytes (optional) receives its real size (>= bytes). */
sd_status sd_cl_buffer_get(sd_cl *cl, size_t bytes, const char *what, cl_mem *out, size_t *cap_bytes);
/* Like sd_cl_buffer_get, but a pooled buffer is reused only when its size is the one asked
 * (rounded): for long-lived buffers such as weights, which would otherwise keep a larger pooled
 * buffer's slack for their whole life (it was 376 MiB of the SD1.5 UNet's 2 GiB). */
sd_status sd_cl_buffer_get_exact(sd_cl *cl, size_t bytes, const char *what, cl_mem *out,
                                 size_t *cap_bytes);
void sd_cl_buffer_release(sd_cl *cl, cl_mem buf, size_t cap_bytes);
/* Releases every pooled free buffer. */
void sd_cl_pool_trim(sd_cl *cl);
/* Bytes of free buffers the pool keeps for reuse (default SD_CL_POOL_DEFAULT, 256 MiB; it
 * bounds the memory held beyond what is live); releases the oldest free buffers down to it now.
 * 0 disables pooling. 512 MiB cut the page faults of an SD1.5 512x512 fp32 step from 178k to 36k
 * and of an SDXL 1024 bf16 step from 920k to 206k, but measured no faster on the quiet machine
 * and held 120-170 MiB more (docs/opencl-runtime.md). */
#define SD_CL_POOL_DEFAULT ((size_t)256 << 20)
void sd_cl_set_pool_limit(sd_cl *cl, size_t bytes);
/* Most bytes of forms kept with constant tensors (packed GEMM panels, Winograd weights; see
 * sd_dtensor_set_constant); beyond it further forms are computed per call (forms already kept
 * stay until their tensor is freed). Default: $SDFLOW_PACKED_WEIGHTS (a size), else 0, nothing
 * kept: on the CPU device the SD1.5 UNet measured no faster with 256 MiB kept at 256x256 and
 * 512x512 (and over 2.5 GB peak RSS at 512x512); 946 MiB gave about 10% at 256x256
 * (docs/benchmarks.md). */
void sd_cl_set_keep_limit(sd_cl *cl, size_t bytes);

/* Whether fp32 matrix products, convolutions and attention on cl run on the host routes (oneDNN's
 * fp32 primitives, host loops on PoCL's host-memory buffers) rather than the OpenCL kernels.
 * Default: on a CPU device whose CPU has AMX-BF16 or AVX512-BF16 (sd_cpu_isa_get), in a
 * build with oneDNN; other CPUs keep the OpenCL kernels bit for bit. SDFLOW_CPU_ROUTES=opencl
 * turns the host routes off, =host on (CPU devices with oneDNN only); read when the runtime
 * opens, where another value is an error naming the variable. */
bool sd_cl_host_fp32(const sd_cl *cl);

/* Blocking copies between host memory and a buffer (byte offsets). */
sd_status sd_cl_write(sd_cl *cl, cl_mem buf, size_t offset, size_t bytes, const void *src);
sd_status sd_cl_read(sd_cl *cl, cl_mem buf, size_t offset, size_t bytes, void *dst);

#endif
