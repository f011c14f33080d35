/* Plain-C references for the basic ops (runtime-opencl/ops_basic.h): straightforward loops,
 * double accumulation, written from the definitions (torch / diffusers / LDM), not from the
 * kernels. Shapes are passed explicitly; all arrays are contiguous row-major floats. */
#ifndef SD_TESTS_REF_BASIC_H
#define SD_TESTS_REF_BASIC_H
#include "runtime-opencl/ops_basic.h"

void ref_group_norm(const float *x, int64_t n, int64_t c, int64_t hw, int groups, float eps,
                    const float *gamma, const float *beta, bool silu, float *y);
void ref_layer_norm(const float *x, int64_t rows, int64_t d, float eps, const float *gamma,
                    const float *beta, float *y);
void ref_softmax(const float *x, int64_t rows, int64_t d, float *y);
double ref_unary1(sd_unary op, double x);
void ref_unary(sd_unary op, const float *x, size_t n, float *y);
void ref_geglu(const float *x, int64_t rows, int64_t d, float *y);
/* Broadcast a (shape sa, na dims) op b (sb, nb) into y with the broadcast shape. */
void ref_binary(sd_binary op, const float *a, const int64_t *sa, int na, const float *b,
                const int64_t *sb, int nb, float *y);
/* Concat along dim of [outer, la, inner] and [outer, lb, inner]. */
void ref_concat(const float *a, const float *b, int64_t outer, int64_t la, int64_t lb, int64_t inner,
                float *y);
void ref_slice(const float *x, int64_t outer, int64_t l, int64_t inner, int64_t start, int64_t len,
               float *y);
void ref_upsample2x(const float *x, int64_t planes, int64_t h, int64_t w, float *y);
/* torch F.interpolate(mode="nearest", size=(oh, ow)) on [planes, h, w]. */
void ref_upsample_nearest(const float *x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, float *y);
void ref_timestep_embedding(const float *t, int64_t n, int dim, double max_period, float *y);
#endif
