/* Device tensors: an OpenCL buffer with a dtype and a shape of up to 5 dimensions (4-D plus
 * batch), row-major and contiguous. F16 is a storage format only: kernels read it with
 * vload_half and write it with vstore_half, arithmetic is fp32. Buffers come from the runtime's
 * pool and go back to it when the tensor is freed.
 *
 *   sd_dtensor *x;
 *   int64_t shape[] = {2, 4, 64, 64};
 *   if ((st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &x))) return st;
 *   st = sd_dtensor_upload(x, host_floats);
 *   ...
 *   sd_dtensor_free(x); */
#ifndef SD_RUNTIME_OPENCL_TENSOR_H
#define SD_RUNTIME_OPENCL_TENSOR_H

#include "runtime-opencl/runtime.h"
#include "core/half.h"
#include "core/value.h"

/* F32 and F16 are element types. The others are weights kept as the file stores them, read only by
 * sd_op_linear's w (dequantised inside its B pack step): ggml blocks (Q8_0 ... Q6_K, laid out as
 * ml/formats/gguf.c; blocks run along the last dimension) and fp8 bytes (torch's float8_e4m3fn
 * and float8_e5m2). They are made by sd_dtensor_new_blocks; every other op refuses them. */
typedef enum sd_dtype {
    SD_DTYPE_F32, SD_DTYPE_F16,
    SD_DTYPE_Q4_0, SD_DTYPE_Q4_1, SD_DTYPE_Q5_0, SD_DTYPE_Q5_1, SD_DTYPE_Q8_0,
    SD_DTYPE_Q4_K, SD_DTYPE_Q5_K, SD_DTYPE_Q6_K, SD_DTYPE_F8_E4M3, SD_DTYPE_F8_E5M2
} sd_dtype;

typedef struct sd_dtensor {
    sd_cl *cl;
    cl_mem buf;        /* owned; at least numel * dtype size bytes */
    size_t cap_bytes;  /* real size of buf (pooled buffers may be larger) */
    sd_dtype dtype;
    int ndim;          /* 1..SD_TENSOR_MAX_DIMS */
    int64_t shape[SD_TENSOR_MAX_DIMS];
    size_t numel;
    /* Non-NULL once sd_dtensor_set_constant was called: the runtime's forms derived from this
     * tensor (packed GEMM panels, Winograd-transformed kernels), freed with it. A struct copy
     * of the tensor (a reshaped view of the same buffer) shares them. */
    struct sd_dtensor_derived *derived;
} sd_dtensor;

/* Marks t as a constant operand (weights: written once, then only read until freed). Ops that
 * repack or transform an operand (sd_op_linear's w, sd_op_matmul's b, sd_op_conv2d's Winograd
 * kernel) then compute that form once and keep it on the device until t is freed, instead of on
 * every call. Writing to t (upload, zero, copy into it) drops the kept forms. SD_ERR_NOMEM. */
sd_status sd_dtensor_set_constant(sd_dtensor *t);

/* Lets an op free constant t's data once it keeps a form of t that replaces the data (the bf16
 * precision's oneDNN weights, runtime-opencl/dnnl.c): for tensors whose owner hands them out
 * afresh for each use and uploads them again when the data is asked for (ml/loading/weights.c).
 * Call after sd_dtensor_set_constant. */
void sd_dtensor_set_releasable(sd_dtensor *t);
/* For ops: frees the buffer of t's owner (t may be a struct-copy view of it) when t is
 * releasable: the owner's buf becomes NULL, its device memory is freed (not pooled) and
 * sd_dtensor_released is true; a no-op for other tensors. */
void sd_dtensor_release_data(const sd_dtensor *t);
bool sd_dtensor_released(const sd_dtensor *t);
/* SD_ERR_INVALID "<op>: <what> <shape dtype> was released after its bf16 conversion" when t's
 * data was released (an op that would read it); SD_OK otherwise (NULL t too). */
sd_status sd_dtensor_require_data(const sd_dtensor *t, const char *op, const char *what);

/* Bytes per element: 4 or 2 (1 for fp8; 0 for block types, see sd_dtype_block). */
size_t sd_dtype_size(sd_dtype dtype);
const char *sd_dtype_name(sd_dtype dtype); /* "f32", "f16", "q8_0", "f8_e4m3fn", ... */
/* Elements and bytes per block (1 and the element size for F32, F16 and fp8). */
void sd_dtype_block(sd_dtype dtype, size_t *elems, size_t *bytes);
/* True for the kept-as-stored types (neither F32 nor F16). */
bool sd_dtype_is_blocks(sd_dtype dtype);
/* SD_ERR_INVALID "<op>: <what> <shape dtype> holds quantised weights, which only linear reads"
 * when t is of a block type; SD_OK otherwise (NULL t too). For ops' argument checks. */
sd_status sd_dtensor_require_float(const sd_dtensor *t, const char *op, const char *what);
/* Bytes of t's data. */
size_t sd_dtensor_bytes(const sd_dtensor *t);

/* A new tensor (contents undefined). SD_ERR_INVALID for ndim outside 1..5 or a negative
 * dimension, SD_ERR_LIMIT when the byte size overflows or exceeds the device's max allocation,
 * SD_ERR_NOMEM when the device is out of memory. A tensor with zero elements is valid. */
sd_status sd_dtensor_new(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, sd_dtensor **out);
/* Like sd_dtensor_new, on a buffer of exactly its size (see sd_cl_buffer_get_exact): for
 * tensors that live long, such as weights. */
sd_status sd_dtensor_new_exact(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape,
                               sd_dtensor **out);
/* A tensor of a block type (not F32 / F16) holding nbytes of data as stored, on an exact buffer.
 * SD_ERR_INVALID (naming the dtype and sizes) when the last dimension is not whole blocks or
 * nbytes is not exactly their size. */
sd_status sd_dtensor_new_blocks(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, const void *data,
                                size_t nbytes, sd_dtensor **out);
/* Like sd_dtensor_new, filled with zeros. */
sd_status sd_dtensor_zeros(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, sd_dtensor **out);
/* An op's ending: when st is an error, frees *out (the op's unfinished output) and sets it to
 * NULL; returns st. */
sd_status sd_dtensor_drop_on_error(sd_dtensor **out, sd_status st);
/* Returns the buffer to the pool and frees the tensor. NULL-safe. */
void sd_dtensor_free(sd_dtensor *t);

/* Copies numel floats from host (converted to f16 with round-to-nearest-even for F16).
 * Upload, download, zero and copy refuse block types (SD_ERR_INVALID). */
sd_status sd_dtensor_upload(sd_dtensor *t, const float *host);
/* Copies numel IEEE binary16 values into an F16 tensor as they are (SD_ERR_INVALID naming the
 * tensor for an F32 one): f16 weights go to the device without a round trip through f32. */
sd_status sd_dtensor_upload_f16(sd_dtensor *t, const uint16_t *host);
/* Copies numel floats to host (F16 is widened exactly). Waits for pending work. */
sd_status sd_dtensor_download(const sd_dtensor *t, float *host);
/* A new device tensor holding a host tensor's data in dtype. */
sd_status sd_dtensor_from_host(sd_cl *cl, const sd_tensor *host, sd_dtype dtype, sd_dtensor **out);
/* Sets every element to zero. */
sd_status sd_dtensor_zero(sd_dtensor *t);
/* Copies src into dst (same dtype and numel; shapes may differ). */
sd_status sd_dtensor_copy(sd_dtensor *dst, const sd_dtensor *src);

/* Changes the shape in place; the element count must stay the same (SD_ERR_INVALID). */
sd_status sd_dtensor_reshape(sd_dtensor *t, int ndim, const int64_t *shape);
/* True when a and b have the same ndim and dims. */
bool sd_dtensor_same_shape(const sd_dtensor *a, const sd_dtensor *b);
/* "[2, 4, 64, 64] f32" into buf (for messages); returns buf. */
const char *sd_dtensor_describe(const sd_dtensor *t, char *buf, size_t size);


#endif
