/* The bf16 precision mode on CPU devices: matrix products and convolutions through oneDNN
 * (Debian's libdnnl), which uses the CPU's AMX-BF16 tiles or AVX512-BF16 instructions.
 * Operands are rounded to bfloat16, products accumulate in fp32, outputs are fp32; everything
 * else stays in the OpenCL kernels. PoCL's buffers live in host memory: they are mapped (no copy)
 * around each oneDNN call, after the queue's earlier work has finished. docs/precision.md. */
#ifndef SD_RUNTIME_OPENCL_DNNL_H
#define SD_RUNTIME_OPENCL_DNNL_H

#include "runtime-opencl/ops.h"

/* Whether ops on cl compute in bf16: the context asks for it (sd_context_set_precision). On a
 * device or build that cannot (a GPU, no oneDNN), SD_ERR_USAGE with a message saying why. */
sd_status sd_dnnl_wanted(sd_cl *cl, bool *out);

/* out = act(alpha * op(A) op(B) + bias) in bf16 with fp32 accumulation; the operands as for
 * sd_op_matmul (shapes already checked: A [batch_a, M, K] or transposed, B [batch_b, K, N] or
 * transposed with batch_b 1 or batch_a; out [batch_a, M, N] f32). A constant B (weights) is
 * converted to oneDNN's blocked bf16 layout once and kept with it. */
typedef struct sd_dnnl_matmul {
    const sd_dtensor *a, *b, *bias;
    bool trans_a, trans_b;
    int M, N, K, batch_a, batch_b;
    sd_act act;
    float alpha;
    sd_dtensor *out;
} sd_dnnl_matmul;
sd_status sd_dnnl_matmul_run(sd_cl *cl, const sd_dnnl_matmul *job);

/* A torch Conv2d (as sd_op_conv2d; shapes checked, out allocated) in bf16: the whole batch in one
 * call where all its NHWC copies (counted in f32) fit a band (below), else one image at a time,
 * whole where its copies fit a limit (64 MiB), else in bands of output rows whose copies take an
 * eighth of it. sd_dnnl_set_band_bytes sets the limit for the whole process
 * and both precisions (tests: 1 byte, a band per row) and returns the prior one. */
size_t sd_dnnl_set_band_bytes(size_t bytes);
sd_status sd_dnnl_conv2d_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out);

/* The fp32 host routes (runtime-opencl/dnnl_f32.c, docs/opencl-runtime.md): the same products
 * through oneDNN's fp32 primitives, on CPU devices where sd_cl_host_fp32 says so. Nothing is
 * kept with the weights: f16 weights are widened to f32 per call. */
/* Least work (flops) of a call that takes an fp32 host route: below it the fixed cost of a host
 * call (waiting for the queue, mapping, oneDNN's primitive lookup, waking OpenMP's threads:
 * tens of microseconds, far more on a loaded machine) outweighs what oneDNN saves, and the
 * OpenCL kernels run it (a face detector's thousands of small convolutions ran 2x slower
 * through oneDNN). sd_dnnl_f32_worth: flops >= that, in a build with oneDNN. */
#define SD_DNNL_F32_MIN_FLOPS 32e6
/* Products are judged as if they had this many rows, by their weights' size alone, so that the
 * route (and the bits) of a row never depend on how many rows or images share its call. */
#define SD_DNNL_F32_ROWS 256
bool sd_dnnl_f32_worth(double flops);
/* Sets that least work for the whole process (tests set 0 to run small odd shapes on the routes). */
void sd_dnnl_f32_set_min_flops(double flops);
/* Whether sd_dnnl_matmul_f32 runs job: the fp32 host routes are on, SD_DNNL_F32_ROWS rows of it
 * would be worth it (sd_dnnl_f32_worth), B is f32 or f16 (not blocks), and alpha is 1 or there
 * is no bias. */
bool sd_dnnl_f32_matmul_takes(sd_cl *cl, const sd_dnnl_matmul *job);
sd_status sd_dnnl_matmul_f32(sd_cl *cl, const sd_dnnl_matmul *job);
/* A torch Conv2d (as sd_op_conv2d; shapes checked, out allocated, x f32, B and O >= 1) in fp32,
 * one image at a time in bands as sd_dnnl_conv2d_run. */
sd_status sd_dnnl_conv2d_f32(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out);

/* A device buffer mapped for the host (PoCL's CPU device maps without copying): sd_dnnl_map maps
 * `bytes` of buf (nothing when buf is NULL or bytes 0: ptr NULL), for writing too when `write`;
 * sd_dnnl_unmap gives it back (a no-op when nothing is mapped). Only with oneDNN. */
typedef struct sd_dnnl_mapping {
    cl_mem buf;
    void *ptr;
} sd_dnnl_mapping;
sd_status sd_dnnl_map(sd_cl *cl, cl_mem buf, size_t bytes, bool write, sd_dnnl_mapping *m);
void sd_dnnl_unmap(sd_cl *cl, sd_dnnl_mapping *m);

/* Whether this build has oneDNN. */
bool sd_dnnl_available(void);

/* Frees the runtime's oneDNN engine and scratch memory (at runtime teardown). */
void sd_dnnl_free(sd_cl *cl);

#endif
