/* Helpers for op tests: a device per test program, deterministic random data, device tensors
 * from host arrays, and comparing a device result with a reference. */
#ifndef SD_TESTS_OPS_CHECK_H
#define SD_TESTS_OPS_CHECK_H
#include "runtime-opencl/tensor.h"

/* The runtime of a context shared by the whole test program (created on first use); NULL when
 * no device opens (the message is printed). */
sd_cl *ops_cl(void);
void ops_cl_release(void);

/* n floats uniform in [lo, hi) from a fixed-seed generator (seed varies the stream). */
float *ops_random(size_t n, float lo, float hi, unsigned seed);
/* A new f32 device tensor with the given shape holding host (numel floats); NULL on failure. */
sd_dtensor *ops_upload(const float *host, int ndim, const int64_t *shape);
/* The same stored as f16 (host values rounded to nearest even); *rounded (optional, numel
 * floats) receives the values the device holds. */
sd_dtensor *ops_upload_f16(const float *host, int ndim, const int64_t *shape, float *rounded);
/* A new f32 device tensor of random values in [lo, hi) (ops_random's stream for seed). */
sd_dtensor *ops_upload_random(float lo, float hi, unsigned seed, int ndim, const int64_t *shape);
/* Downloads t into a malloc'd array. */
float *ops_download(const sd_dtensor *t);
/* Max |a - b| over n values (NaN if any value is NaN in one and not the other). */
double ops_max_diff(const float *a, const float *b, size_t n);
/* Downloads t, checks its shape against (ndim, shape) and its values against ref within tol
 * (absolute, plus rel * |ref|); prints the worst element on failure. Returns true on pass. */
bool ops_expect(const char *what, const sd_dtensor *t, int ndim, const int64_t *shape, const float *ref,
                double tol, double rel);
/* Reads tests/data/goldens/<name> (b"SDG1", int32 ndim, int32 dims, float32 data, little
 * endian): malloc'd data, *ndim and shape filled; NULL when missing or malformed. */
float *ops_read_golden(const char *name, int *ndim, int64_t shape[SD_TENSOR_MAX_DIMS]);
/* The same golden uploaded as an f32 device tensor; NULL when missing or malformed. */
sd_dtensor *ops_golden(const char *name);
/* The largest abs difference of a ControlNet's n residuals against <prefix>_controlnet_res<i>.bin
 * (the skips) and <prefix>_controlnet_mid.bin (the last); a missing or misshapen golden fails a check. */
double ops_controlnet_residual_error(sd_dtensor *const *outs, int n, const char *prefix);
#endif
