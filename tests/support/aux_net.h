/* Shared by the annotator network tests: the tiny networks and the padded test image of the
 * goldens (tests/reference/make_{hed,lineart}_goldens.py). */
#ifndef SD_TEST_AUX_NET_H
#define SD_TEST_AUX_NET_H
#include "ml/formats/safetensors.h"
#include "runtime-opencl/tensor.h"

enum { AUX_NET_H = 128, AUX_NET_W = 64 }; /* the padded "up" image */

/* tests/data/goldens/<name> opened (a failed check and NULL otherwise). */
sd_safetensors *aux_open_golden_net(sd_context *ctx, const char *name);

/* The "up" case through resize_image_with_pad (resolution 64, INTER_CUBIC) as a device tensor
 * [1, 3, 128, 64] of its bytes divided by divisor; NULL after a failed check. */
sd_dtensor *aux_padded_input(sd_context *ctx, sd_cl *cl, float divisor);

/* A context with the OpenCL device (NULL, message printed, when there is none). */
sd_context *aux_net_context(sd_cl **cl);
#endif
