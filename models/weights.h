/* Device copies of a checkpoint's weights, uploaded lazily tensor by tensor.
 *
 * A weight set reads tensors named <prefix><name> from an open safetensors file and keeps each
 * one on the device after its first use, so a run that never needs a sub-model never reads its
 * weights. Matrices and convolution kernels (2 or more dimensions) are stored in the set's
 * dtype (f16 by default: half the memory, exact for f16 files); vectors (biases, norm scales)
 * and embedding tables are stored as f32. */
#ifndef SD_MODELS_WEIGHTS_H
#define SD_MODELS_WEIGHTS_H

#include "models/safetensors.h"
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
/* True when <prefix><name> exists in the file. */
bool sd_weights_has(const sd_weights *w, const char *name);
/* The file's tensor for <prefix><name> (shape, dtype) without uploading; NULL when absent. */
const sd_st_tensor *sd_weights_info(const sd_weights *w, const char *name);
/* Bytes currently held on the device by this set. */
size_t sd_weights_device_bytes(const sd_weights *w);
/* Frees every uploaded tensor (they are uploaded again on next use). */
void sd_weights_release(sd_weights *w);

#endif
