/* Device copies of a checkpoint's weights, uploaded lazily tensor by tensor.
 *
 * A weight set reads tensors named <prefix><name> from an open safetensors file and keeps each
 * one on the device after its first use, so a run that never needs a sub-model never reads its
 * weights. Matrices and convolution kernels (2 or more dimensions) are stored in the set's
 * dtype (f16 by default: half the memory, exact for f16 files); vectors (biases, norm scales)
 * and embedding tables are stored as f32. Block-quantised tensors of a GGUF view (dtype
 * SD_ST_GGML) are uploaded as blocks and expanded on the device (runtime-opencl/ops_quant.h). */
#ifndef SD_ML_WEIGHTS_H
#define SD_ML_WEIGHTS_H

#include "ml/formats/safetensors.h"
#include "runtime-opencl/tensor.h"

typedef struct sd_weights sd_weights;

/* A weight set over st (which must outlive it) for names starting with prefix (copied). */
sd_status sd_weights_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype dtype,
                         sd_weights **out);
void sd_weights_free(sd_weights *w); /* NULL-safe; frees every uploaded tensor */

/* The device tensor for <prefix><name>, uploaded on first use and owned by the set.
 * SD_ERR_NOT_FOUND ("<file>: tensor '<prefix><name>' is missing") when absent. */
sd_status sd_weights_get(sd_weights *w, const char *name, const sd_dtensor **out);
/* The same with a printf-style name: sd_weights_getf(w, &t, "input_blocks.%d.0.weight", i). */
sd_status sd_weights_getf(sd_weights *w, const sd_dtensor **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like sd_weights_get but always f32 (embedding tables, anything read element-wise). */
sd_status sd_weights_get_f32(sd_weights *w, const char *name, const sd_dtensor **out);
/* Like sd_weights_get for the weight of a Linear layer, read only by sd_op_linear: a 2-D GGUF
 * block-quantised or fp8 tensor stays in its stored form on the device (tensor.h block types,
 * dequantised inside linear's pack step); anything else as sd_weights_get gives it. A later
 * sd_weights_get of the same name replaces it with the float form. */
sd_status sd_weights_get_linear(sd_weights *w, const char *name, const sd_dtensor **out);
/* The same with a printf-style name. */
sd_status sd_weights_getf_linear(sd_weights *w, const sd_dtensor **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when <prefix><name> exists in the file. */
bool sd_weights_has(const sd_weights *w, const char *name);
/* The file's tensor for <prefix><name> (shape, dtype) without uploading; NULL when absent. */
const sd_st_tensor *sd_weights_info(const sd_weights *w, const char *name);
/* A number unique to this set among all sets created by the process: unlike its address, it is
 * never reused after the set is freed (callers caching views over a set compare it). */
uint64_t sd_weights_serial(const sd_weights *w);
/* Bytes currently held on the device by this set (a patched view: its patched copies only; a
 * tensor whose data the bf16 precision released still counts until it is uploaded again).
 *
 * In the bf16 precision a weight that a product (linear, matmul, conv2d) converted to oneDNN's
 * bf16 form and keeps has its own data freed (runtime-opencl/tensor.h, releasable tensors): the
 * getters keep handing out that tensor in bf16; asked for in fp32, as f32, or by a patched
 * view, it is uploaded again from the file. */
size_t sd_weights_device_bytes(const sd_weights *w);
/* Frees every uploaded tensor (they are uploaded again on next use). */
void sd_weights_release(sd_weights *w);

/* ---- Patched weight sets (LoRA, ml/adapters/lora.h) ----
 *
 * A patched set is a view of a base set in which some tensors are replaced by patched copies.
 * A tensor the patcher does not claim is the base set's own device tensor (uploaded once,
 * shared by every view). A claimed tensor is computed on first use from the base set's device
 * tensor (which stays uploaded in the base set) and kept in the patched set: each patched
 * tensor costs its size once more on the device, unpatched ones cost nothing extra. */
typedef struct sd_weight_patcher {
    /* True when the tensor called name (without prefix) is patched. */
    bool (*claims)(void *user, const char *name);
    /* A new device tensor holding the patched version of base (the base set's tensor for
     * name, in its dtype); the result must have base's dtype and shape. */
    sd_status (*apply)(void *user, const char *name, const sd_dtensor *base, sd_dtensor **out);
    void *user;
} sd_weight_patcher;

/* A patched view of base (which must outlive it) with the given patcher (copied; its user
 * data must outlive the view). Reading functions (has, info) answer for the base file. */
sd_status sd_weights_new_patched(sd_weights *base, const sd_weight_patcher *patcher, sd_weights **out);

#endif
