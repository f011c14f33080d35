/* sd_op_linear with a weight kept in block form on the device (tensor.h block types: ggml blocks
 * and fp8 bytes, dequantised inside the B pack step) against sd_op_linear with the same weight
 * dequantised to f32 on the host (ml/formats/gguf.c's exact dequantiser; fp8 by its definition):
 * every block type, odd M and N, several K, bias and activation; in bf16 mode too. And the other
 * ops refusing a block tensor with a one-line error naming the op. */
#include "test.h"
#include "core/context.h"
#include "ml/formats/gguf.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_quant.h"
#include "runtime-opencl/linear_int8.h"
#include "support/ops_check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* f16 scale offsets within a block of each ggml type (set to small finite values). */
static void fix_scales(sd_qtype q, unsigned char *b, unsigned seed)
{
    int offs[2] = {0, -1};
    if (q == SD_QTYPE_Q4_1 || q == SD_QTYPE_Q5_1 || q == SD_QTYPE_Q4_K || q == SD_QTYPE_Q5_K)
        offs[1] = 2;
    if (q == SD_QTYPE_Q6_K)
        offs[0] = 208;
    float *v = ops_random(2, 0.002f, 0.05f, seed);
    for (int i = 0; i < 2; i++)
        if (offs[i] >= 0) {
            uint16_t h = sd_float_to_half(i ? -v[i] : v[i]);
            b[offs[i]] = (unsigned char)(h & 0xff);
            b[offs[i] + 1] = (unsigned char)(h >> 8);
        }
    free(v);
}

/* n random bytes. */
static unsigned char *random_bytes(size_t n, unsigned seed)
{
    float *f = ops_random(n ? n : 1, 0.0f, 256.0f, seed);
    unsigned char *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)f[i];
    free(f);
    return b;
}

/* fp8 by its definition: e4m3fn bias 7 (S.1111.111 NaN), e5m2 bias 15 (f16's top byte). */
static float f8_ref(unsigned char v, bool e5m2)
{
    int mbits = e5m2 ? 2 : 3, e = e5m2 ? (v >> 2) & 31 : (v >> 3) & 15, m = v & ((1 << mbits) - 1);
    float s = (v & 0x80) ? -1.0f : 1.0f;
    if (e5m2 ? e == 31 : (e == 15 && m == 7))
        return e5m2 && m == 0 ? s * INFINITY : NAN;
    int bias = e5m2 ? 15 : 7;
    if (e == 0)
        return s * ldexpf((float)m, 1 - bias - mbits);
    return s * ldexpf(1.0f + (float)m / (float)(1 << mbits), e - bias);
}

/* linear(x, w of dtype from `bytes`) against linear(x, ref f32 weight): bit-identical (the same
 * panels reach the same GEMM). */
static void check_linear(const char *what, sd_dtype dtype, const unsigned char *bytes, size_t nbytes,
                         const float *ref, int M, int N, int K)
{
    int64_t ws[2] = {N, K}, xs[2] = {M, K}, bs[1] = {N}, os[2] = {M, N};
    sd_dtensor *wq = NULL, *wf = ops_upload(ref, 2, ws), *x = ops_upload_random(-1, 1, 7, 2, xs);
    sd_dtensor *b = ops_upload_random(-0.5f, 0.5f, 9, 1, bs), *yq = NULL, *yf = NULL, *deq = NULL;
    CHECK_EQ_INT(sd_dtensor_new_blocks(ops_cl(), dtype, 2, ws, bytes, nbytes, &wq), SD_OK);
    for (int act = 0; wq && act < 2; act++) {
        sd_act a = act ? SD_ACT_GELU : SD_ACT_NONE;
        CHECK_EQ_INT(sd_op_linear(ops_cl(), x, wq, act ? b : NULL, a, &yq), SD_OK);
        CHECK_EQ_INT(sd_op_linear(ops_cl(), x, wf, act ? b : NULL, a, &yf), SD_OK);
        float *want = yf ? ops_download(yf) : NULL;
        CHECK_MSG(yq && want && ops_expect(what, yq, 2, os, want, 0.0, 0.0), "%s %dx%dx%d act %d", what, M, N, K,
                  act);
        free(want);
        sd_dtensor_free(yq);
        sd_dtensor_free(yf);
    }
    /* the device expansion (the non-linear consumers' path) equals the host's too */
    CHECK_EQ_INT(wq ? sd_op_dequantize_tensor(ops_cl(), wq, SD_DTYPE_F32, &deq) : SD_ERR_INVALID, SD_OK);
    float *got = deq ? ops_download(deq) : NULL;
    CHECK_MSG(got && ops_max_diff(got, ref, (size_t)N * K) == 0.0, "%s: device dequantisation differs", what);
    free(got);
    sd_dtensor_free(deq);
    sd_dtensor_free(wq);
    sd_dtensor_free(wf);
    sd_dtensor_free(x);
    sd_dtensor_free(b);
}

static void test_block_types(void)
{
    static const sd_qtype types[] = {SD_QTYPE_Q8_0, SD_QTYPE_Q4_0, SD_QTYPE_Q4_1, SD_QTYPE_Q5_0,
                                     SD_QTYPE_Q5_1, SD_QTYPE_Q4_K, SD_QTYPE_Q5_K, SD_QTYPE_Q6_K};
    static const int shapes[][2] = {{1, 5}, {7, 33}, {37, 70}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        size_t be, bb;
        sd_ggml_type_block((sd_ggml_type)types[t], &be, &bb);
        sd_dtype dtype;
        CHECK(sd_qtype_dtype(types[t], &dtype));
        for (size_t s = 0; s < 3; s++) {
            int M = shapes[s][0], N = shapes[s][1], K = (int)be * (int)(1 + s % 2 * 2); /* 1 or 3 blocks */
            size_t nblocks = (size_t)N * K / be, nbytes = nblocks * bb;
            unsigned char *bytes = random_bytes(nbytes, 100 + (unsigned)t * 10 + (unsigned)s);
            for (size_t i = 0; i < nblocks; i++)
                fix_scales(types[t], bytes + i * bb, (unsigned)(i + 1000 * t));
            float *ref = malloc((size_t)N * K * sizeof *ref);
            CHECK(sd_ggml_dequantize((sd_ggml_type)types[t], bytes, ref, (size_t)N * K));
            check_linear(sd_ggml_type_name((sd_ggml_type)types[t]), dtype, bytes, nbytes, ref, M, N, K);
            free(ref);
            free(bytes);
        }
    }
}

static void test_fp8(void)
{
    for (int e5m2 = 0; e5m2 < 2; e5m2++) {
        int M = 9, N = 35, K = 67;
        size_t n = (size_t)N * K;
        unsigned char *bytes = random_bytes(n, 50 + (unsigned)e5m2);
        float *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++) {
            if (isnan(f8_ref(bytes[i], e5m2)) || isinf(f8_ref(bytes[i], e5m2)))
                bytes[i] ^= 0x40; /* finite weights only: a NaN payload is not part of the contract */
            ref[i] = f8_ref(bytes[i], e5m2);
        }
        check_linear(e5m2 ? "f8_e5m2" : "f8_e4m3fn", e5m2 ? SD_DTYPE_F8_E5M2 : SD_DTYPE_F8_E4M3, bytes, n, ref, M,
                     N, K);
        free(ref);
        free(bytes);
    }
}

/* Block tensors are refused by every op but linear's w, and by the tensor functions. */
static void test_other_ops_refuse(void)
{
    sd_cl *cl = ops_cl();
    unsigned char blocks[2 * 34] = {0};
    int64_t ws[2] = {2, 32}, cs[4] = {2, 2, 4, 4}, bad[2] = {2, 16};
    sd_dtensor *wq = NULL, *x = ops_upload_random(-1, 1, 3, 2, ws), *out = NULL, *img = ops_upload_random(-1, 1, 3, 4, cs);
    float host[64];
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, SD_DTYPE_Q8_0, 2, ws, blocks, sizeof blocks, &wq), SD_OK);
    CHECK_EQ_INT(sd_op_matmul(cl, x, false, wq, true, NULL, SD_ACT_NONE, 1.0f, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_EQ(sd_context_errmsg(cl->ctx), "matmul: b [2, 32] q8_0 holds quantised weights, which only linear reads");
    CHECK_EQ_INT(sd_op_linear(cl, wq, wq, NULL, SD_ACT_NONE, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(cl->ctx), "linear: input [2, 32] q8_0 holds quantised weights");
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1};
    int64_t ks[4] = {2, 2, 1, 16};
    CHECK_EQ_INT(sd_dtensor_reshape(wq, 4, ks), SD_ERR_INVALID); /* rows of half a block */
    CHECK_EQ_INT(sd_op_conv2d(cl, img, wq, NULL, &p, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(cl->ctx), "conv2d: weight [2, 32] q8_0 holds quantised weights");
    CHECK_EQ_INT(sd_dtensor_download(wq, host), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(cl->ctx), "download: tensor [2, 32] q8_0");
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_Q8_0, 2, ws, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, SD_DTYPE_Q8_0, 2, bad, blocks, 34, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(cl->ctx), "tensor of q8_0: 34 bytes are not whole blocks");
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, SD_DTYPE_Q8_0, 2, ws, blocks, 67, &out), SD_ERR_INVALID);
    sd_dtensor_free(wq);
    sd_dtensor_free(x);
    sd_dtensor_free(img);
}

#ifdef SDFLOW_HAVE_DNNL
/* bf16 mode without the int8 route (test_int8_linear tests it): the block weight is expanded to
 * f32 for the call, then oneDNN runs as for an f32 w. */
static void test_bf16_mode(void)
{
    sd_cl *cl = ops_cl();
    int M = 5, N = 33, K = 64;
    size_t nbytes = (size_t)N * K / 32 * 34;
    unsigned char *bytes = random_bytes(nbytes, 77);
    for (size_t i = 0; i < nbytes / 34; i++)
        fix_scales(SD_QTYPE_Q8_0, bytes + i * 34, (unsigned)i);
    float *ref = malloc((size_t)N * K * sizeof *ref);
    CHECK(sd_ggml_dequantize(SD_GGML_Q8_0, bytes, ref, (size_t)N * K));
    int64_t ws[2] = {N, K}, xs[2] = {M, K}, os[2] = {M, N};
    sd_dtensor *wq = NULL, *wf = ops_upload(ref, 2, ws), *x = ops_upload_random(-1, 1, 8, 2, xs), *yq = NULL,
               *yf = NULL;
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, SD_DTYPE_Q8_0, 2, ws, bytes, nbytes, &wq), SD_OK);
    sd_int8_isa prior = sd_linear_int8_cap(SD_INT8_NONE);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "bf16"), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x, wq, NULL, SD_ACT_NONE, &yq), SD_OK);
    sd_linear_int8_cap(prior);
    CHECK_EQ_INT(sd_op_linear(cl, x, wf, NULL, SD_ACT_NONE, &yf), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "fp32"), SD_OK);
    float *want = yf ? ops_download(yf) : NULL;
    CHECK(yq && want && ops_expect("bf16 q8_0", yq, 2, os, want, 0.0, 0.0));
    free(want);
    free(ref);
    free(bytes);
    sd_dtensor_free(yq);
    sd_dtensor_free(yf);
    sd_dtensor_free(wq);
    sd_dtensor_free(wf);
    sd_dtensor_free(x);
}
#endif

int main(void)
{
    if (!ops_cl())
        return 1;
    /* These compare block weights with the f32 weights they expand to, bit for bit: both on the
     * OpenCL kernels (the fp32 host route takes f32 weights, not blocks). */
    bool host = ops_cl()->host_fp32;
    ops_cl()->host_fp32 = false;
    RUN(test_block_types);
    RUN(test_fp8);
    ops_cl()->host_fp32 = host;
    RUN(test_other_ops_refuse);
#ifdef SDFLOW_HAVE_DNNL
    RUN(test_bf16_mode);
#endif
    ops_cl_release();
    return test_summary("test_quant_matmul");
}
