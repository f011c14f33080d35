/* Layout ops (runtime-opencl/ops_layout.h) against a plain-C transpose on shapes that are not
 * multiples of the kernel's 16x16 tiles. Transposition is exact; the fused residual add is one
 * fp32 rounding, so results must match the reference bit for bit. */
#include "test.h"
#include "support/ops_check.h"
#include "runtime-opencl/ops_layout.h"
#include <stdlib.h>
#include <string.h>

static void ref_transpose(const float *x, const float *add, size_t batch, int64_t m, int64_t n, float *out)
{
    for (size_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                size_t o = b * (size_t)(m * n) + (size_t)(j * m + i);
                out[o] = x[b * (size_t)(m * n) + (size_t)(i * n + j)] + (add ? add[o] : 0.0f);
            }
}

static void transpose_case(int ndim, const int64_t *shape, bool with_add)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    int64_t rows = shape[ndim - 2], cols = shape[ndim - 1];
    float *x = ops_random(n, -1, 1, 11), *a = ops_random(n, -1, 1, 12), *ref = malloc(n * sizeof *ref);
    ref_transpose(x, with_add ? a : NULL, n / (size_t)(rows * cols), rows, cols, ref);
    int64_t oshape[SD_TENSOR_MAX_DIMS];
    memcpy(oshape, shape, (size_t)ndim * sizeof *shape);
    oshape[ndim - 2] = cols;
    oshape[ndim - 1] = rows;
    sd_dtensor *dx = ops_upload(x, ndim, shape), *da = ops_upload(a, ndim, oshape), *out = NULL;
    CHECK_EQ_INT(sd_op_transpose(ops_cl(), dx, with_add ? da : NULL, &out), SD_OK);
    CHECK(ops_expect("transpose", out, ndim, oshape, ref, 0.0, 0.0));
    sd_dtensor_free(out);
    sd_dtensor_free(dx);
    sd_dtensor_free(da);
    free(x);
    free(a);
    free(ref);
}

static void test_transpose(void)
{
    transpose_case(3, (const int64_t[]){2, 37, 19}, false);
    transpose_case(3, (const int64_t[]){2, 320, 64}, true);
    transpose_case(2, (const int64_t[]){1, 45}, true);
    transpose_case(4, (const int64_t[]){2, 3, 17, 33}, false);
}

static void test_transpose_errors(void)
{
    sd_cl *cl = ops_cl();
    float v[12] = {0};
    sd_dtensor *x = ops_upload(v, 1, (const int64_t[]){12}), *y = ops_upload(v, 2, (const int64_t[]){3, 4});
    sd_dtensor *a = ops_upload(v, 2, (const int64_t[]){2, 5}), *out = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_op_transpose(cl, x, NULL, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK(strcmp(sd_context_errmsg(cl->ctx),
                 "transpose: needs an f32 input of at least 2 dimensions and an optional f32 addend of as many "
                 "elements (got [12] f32, addend none)") == 0);
    CHECK_EQ_INT(sd_op_transpose(cl, y, a, &out), SD_ERR_INVALID);
    CHECK(strcmp(sd_context_errmsg(cl->ctx),
                 "transpose: needs an f32 input of at least 2 dimensions and an optional f32 addend of as many "
                 "elements (got [3, 4] f32, addend [2, 5] f32)") == 0);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    sd_dtensor_free(a);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_transpose);
    RUN(test_transpose_errors);
    ops_cl_release();
    return test_summary("test_ops_layout");
}
