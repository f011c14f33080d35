/* Transposed convolutions of the annotator networks run as plain ones (sd_op_zero_insert, then
 * sd_op_conv2d with the weights this uploads). */
#ifndef SD_ML_CONV_TRANSPOSE_H
#define SD_ML_CONV_TRANSPOSE_H

#include "ml/formats/safetensors.h"
#include "runtime-opencl/tensor.h"

/* Tensor `name` of st, ConvTranspose2d weights [in, out, k, k], uploaded as the equivalent
 * plain convolution over the zero-spread input: [out, in, k, k], spatially flipped. *out is
 * new (f32). The tensor must exist with 4 dimensions. */
sd_status sd_conv_transpose_upload(sd_cl *cl, const sd_safetensors *st, const char *name, sd_dtensor **out);

#endif
