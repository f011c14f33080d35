/* What runtime-opencl/dnnl.c (bf16) and dnnl_f32.c (fp32 host routes) share: the runtime's
 * oneDNN engine and small wrappers. Only in builds with oneDNN. */
#ifndef SD_RUNTIME_OPENCL_DNNL_INTERNAL_H
#define SD_RUNTIME_OPENCL_DNNL_INTERNAL_H

#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/gemm.h"
#include <dnnl.h>

struct sd_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
};

/* cl's engine and stream, created on first use. */
sd_status sd_dnnl_engine(sd_cl *cl, struct sd_dnnl **out);
/* The context error for a failed oneDNN call doing `what`. */
sd_status sd_dnnl_fail(sd_cl *cl, dnnl_status_t s, const char *what);
/* A memory object over ptr (NULL: oneDNN allocates none). */
sd_status sd_dnnl_memory(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *md, void *ptr,
                         dnnl_memory_t *out);
/* A pooled scratch buffer of `bytes` (at least 1), mapped for writing in *m: per-call operands
 * come from the runtime's pool, so a call reuses pages an earlier one touched rather than
 * faulting in fresh ones. Give back with sd_dnnl_scratch_done. */
sd_status sd_dnnl_scratch_view(sd_cl *cl, size_t bytes, const char *what, sd_scratch *tmp, sd_dnnl_mapping *m);
/* Unmaps m and gives tmp back to the pool (either may be empty: a mapping of a tensor's own
 * buffer, or a scratch handed over to a kept form). */
void sd_dnnl_scratch_done(sd_cl *cl, sd_dnnl_mapping *m, sd_scratch *tmp);
/* dst = src converted between layouts/types, scaled by `scale` (1: none). */
sd_status sd_dnnl_reorder(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *src_md, void *src,
                          const dnnl_memory_desc_t *dst_md, void *dst, float scale);
/* New attributes with act as an eltwise post-op (none: no post-ops). */
sd_status sd_dnnl_attr(sd_cl *cl, sd_act act, dnnl_primitive_attr_t *attr);
/* One operand of a primitive: its oneDNN argument, layout and host data (NULL: none). */
typedef struct sd_dnnl_arg {
    int arg;
    const dnnl_memory_desc_t *md;
    void *ptr;
} sd_dnnl_arg;
#define SD_DNNL_MAX_ARGS 4
/* Runs prim on the n operands (at most SD_DNNL_MAX_ARGS; those without data left out) and waits. */
sd_status sd_dnnl_execute(sd_cl *cl, struct sd_dnnl *d, dnnl_primitive_t prim, const sd_dnnl_arg *args, int n,
                          const char *what);
/* The convolution primitive of p for x, w (bias) -> out with source and weights in `type` and an
 * f32 output, in the layouts oneDNN's fastest implementation wants (*_want; w_plain: PyTorch's
 * weights as f32).
 * band NULL: p's padding; else x and out are a band of an image's rows, padded band->pad_top
 * rows above and band->pad_bottom below, and the weights take band->w_layout when it is not
 * NULL (the layout of the first band's primitive, whose weights every band shares).
 * c is filled in; free it with sd_dnnl_conv_free (also after a failure). */
typedef struct sd_dnnl_conv {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t w_plain, bias, x_want, w_want, o_want;
} sd_dnnl_conv;
typedef struct sd_dnnl_band {
    int pad_top, pad_bottom;
    const dnnl_memory_desc_t *w_layout;
} sd_dnnl_band;
sd_status sd_dnnl_conv_make(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *x, const sd_dtensor *w,
                            const sd_dtensor *bias, const sd_conv2d_params *p, const sd_dtensor *out,
                            dnnl_data_type_t type, const sd_dnnl_band *band, sd_dnnl_conv *c);
void sd_dnnl_conv_free(sd_dnnl_conv *c);
/* Makes the weights w ready in c->w_want's layout (the first band's primitive c), mapped in
 * *view: a kept form, or converted into *tmp; sd_dnnl_conv_bands gives both back. */
typedef sd_status (*sd_dnnl_conv_weights_fn)(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *w,
                                             const sd_dnnl_conv *c, sd_dnnl_mapping *view, sd_scratch *tmp);
/* The convolution in `type` (sd_dnnl_conv2d_run's bands): maps x, bias and out, and per image and
 * band makes the primitive (the first band's weights layout for all), reorders the band's input
 * rows, runs it and reorders its output rows back; weights once. */
sd_status sd_dnnl_conv_bands(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *x, const sd_dtensor *w,
                             const sd_dtensor *bias, const sd_conv2d_params *p, sd_dtensor *out,
                             dnnl_data_type_t type, sd_dnnl_conv_weights_fn weights);
/* dst[i] = src[i] as float for n f16 values (F16C/AVX-512 where the CPU has it). */
void sd_dnnl_half_to_float(float *dst, const uint16_t *src, size_t n);

/* Runs `call` (a oneDNN function); on failure sets st and jumps to `done`. */
#define TRY(call, what)                                                                                        \
    do {                                                                                                       \
        dnnl_status_t s_ = (call);                                                                             \
        if (s_ != dnnl_success) {                                                                              \
            st = sd_dnnl_fail(cl, s_, what);                                                                   \
            goto done;                                                                                         \
        }                                                                                                      \
    } while (0)

#endif
