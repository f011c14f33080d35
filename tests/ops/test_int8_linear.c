/* The int8 route of sd_op_linear (runtime-opencl/linear_int8.c: block weights in the bf16
 * precision) on every instruction set this CPU has (AMX-INT8, AVX512-VNNI), against a double
 * reference fed the same int8-quantised activations (per 32-element block: d = max|x| / 127,
 * q = nearest-even(x * (127 / max|x|))) and the host's exact dequantisation of the weight: what
 * remains is fp32 rounding of the scales and of the sum over blocks, bounded by 1e-5 times the
 * sum of the terms' magnitudes. The unquantised reference lies outside that bound (the route
 * did quantise). Odd M and N (few rows: the weight read in place; more: unpacked panels), one and
 * several blocks, a batch, f16 input, bias and activations; Q6_K's 16-element units with random
 * int8 scales, about half of them negative.
 * Capped to none, bf16 mode runs the path before the route bit for bit; fp8 always takes that
 * path. */
#include "test.h"
#include "core/half.h"
#include "ml/formats/gguf.h"
#include "runtime-opencl/linear_int8.h"
#include "runtime-opencl/ops_quant.h"
#include "support/ops_check.h"
#include "support/ref_ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REL_BOUND 1e-5

/* Random blocks of type t for n elements: random quants, small finite f16 scales and minima. */
static unsigned char *random_blocks(sd_qtype t, size_t n, unsigned seed, size_t *nbytes)
{
    size_t be, bb;
    sd_ggml_type_block((sd_ggml_type)t, &be, &bb);
    *nbytes = n / be * bb;
    float *r = ops_random(*nbytes, 0.0f, 256.0f, seed), *s = ops_random(2 * (n / be), 0.002f, 0.05f, seed + 1);
    unsigned char *b = malloc(*nbytes);
    for (size_t i = 0; i < *nbytes; i++)
        b[i] = (unsigned char)r[i];
    bool two = t == SD_QTYPE_Q4_1 || t == SD_QTYPE_Q5_1 || t == SD_QTYPE_Q4_K || t == SD_QTYPE_Q5_K;
    size_t at = t == SD_QTYPE_Q6_K ? 208 : 0;
    for (size_t i = 0; i < n / be; i++)
        for (size_t f = 0; f < (two ? 2u : 1u); f++) {
            uint16_t h = sd_float_to_half(s[2 * i + f]);
            b[i * bb + at + 2 * f] = (unsigned char)(h & 0xff);
            b[i * bb + at + 2 * f + 1] = (unsigned char)(h >> 8);
        }
    free(r);
    free(s);
    return b;
}

/* x as the route sees it: each 32-element block of a row quantised to int8 and scaled back. */
static void quantise_activations(const float *x, float *xq, size_t rows, int K)
{
    for (size_t m = 0; m < rows; m++)
        for (int kb = 0; kb < K / 32; kb++) {
            const float *src = x + m * K + kb * 32;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++)
                amax = fmaxf(amax, fabsf(src[i]));
            float id = amax > 0.0f ? 127.0f / amax : 0.0f, d = amax / 127.0f;
            for (int i = 0; i < 32; i++)
                xq[m * K + kb * 32 + i] = d * nearbyintf(src[i] * id);
        }
}

/* want = act(x w^T + bias) in double; bound = REL_BOUND * sum |x w| + 1e-6 per element. */
static void reference(const float *x, const float *w, const float *bias, sd_act act, size_t M, int N, int K,
                      double *want, double *bound)
{
    for (size_t m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0.0, mag = 0.0;
            for (int k = 0; k < K; k++) {
                double t = (double)x[m * K + k] * w[(size_t)n * K + k];
                s += t;
                mag += fabs(t);
            }
            /* the activation's slope is at most 1.13 (GELU), so the bound carries over */
            want[m * N + n] = ref_act(s, act);
            bound[m * N + n] = REL_BOUND * 1.2 * mag + 1e-6;
        }
}

/* One case: sd_op_linear in bf16 mode on the current route against the reference. */
static void check_case(sd_qtype t, int batch, int M, int N, int K, bool half, bool with_bias, sd_act act)
{
    sd_cl *cl = ops_cl();
    size_t rows = (size_t)batch * M, nbytes;
    unsigned seed = (unsigned)(t * 131 + M * 7 + N * 3 + K);
    unsigned char *blocks = random_blocks(t, (size_t)N * K, seed, &nbytes);
    float *w = malloc((size_t)N * K * 4), *x = ops_random(rows * K, -1.0f, 1.0f, seed + 2);
    float *bias = ops_random((size_t)N, -0.5f, 0.5f, seed + 3), *xq = malloc(rows * K * 4);
    double *want = malloc(rows * N * 8), *far = malloc(rows * N * 8), *bound = malloc(rows * N * 8);
    CHECK(sd_ggml_dequantize((sd_ggml_type)t, blocks, w, (size_t)N * K));
    int64_t xs[3] = {batch, M, K}, ws[2] = {N, K}, bs[1] = {N};
    sd_dtype dt;
    CHECK(sd_qtype_dtype(t, &dt));
    sd_dtensor *tx = half ? ops_upload_f16(x, 3, xs, x) : ops_upload(x, 3, xs), *tw = NULL, *out = NULL;
    sd_dtensor *tb = with_bias ? ops_upload(bias, 1, bs) : NULL;
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, dt, 2, ws, blocks, nbytes, &tw), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "bf16"), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, tx, tw, tb, act, &out), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "fp32"), SD_OK);
    float *got = out ? ops_download(out) : NULL;
    quantise_activations(x, xq, rows, K);
    reference(x, w, with_bias ? bias : NULL, act, rows, N, K, far, bound);
    reference(xq, w, with_bias ? bias : NULL, act, rows, N, K, want, bound);
    double worst = 0.0, far_worst = 0.0;
    for (size_t i = 0; got && i < rows * N; i++) {
        worst = fmax(worst, fabs(got[i] - want[i]) / bound[i]);
        far_worst = fmax(far_worst, fabs(got[i] - far[i]) / bound[i]);
    }
    CHECK_MSG(got && worst <= 1.0, "%s %dx%dx%dx%d half %d act %d: error %.3g of the bound",
              sd_ggml_type_name((sd_ggml_type)t), batch, M, N, K, half, (int)act, worst);
    CHECK_MSG(far_worst > 1.0, "%s %dx%dx%d: the unquantised reference is within the bound (%.3g)",
              sd_ggml_type_name((sd_ggml_type)t), M, N, K, far_worst);
    free(got);
    free(blocks);
    free(w);
    free(x);
    free(bias);
    free(xq);
    free(want);
    free(far);
    free(bound);
    sd_dtensor_free(tx);
    sd_dtensor_free(tw);
    sd_dtensor_free(tb);
    sd_dtensor_free(out);
}

static const sd_qtype int8_types[] = {SD_QTYPE_Q8_0, SD_QTYPE_Q4_0, SD_QTYPE_Q4_1, SD_QTYPE_Q5_0,
                                      SD_QTYPE_Q5_1, SD_QTYPE_Q4_K, SD_QTYPE_Q5_K, SD_QTYPE_Q6_K};

/* Every type and shape on every route the CPU has. */
static void test_routes(void)
{
    sd_int8_isa best = sd_linear_int8_route();
    if (best == SD_INT8_NONE) {
        printf("  (no AVX512-VNNI here or no oneDNN: the int8 route is not built in)\n");
        return;
    }
    static const int shapes[][5] = {/* batch, M, N, blocks, half */
                                    {1, 1, 5, 1, 0},   {1, 6, 19, 3, 1}, {1, 17, 33, 3, 0},
                                    {2, 21, 47, 2, 1}, {1, 37, 16, 1, 0}};
    for (sd_int8_isa isa = SD_INT8_VNNI; isa <= best; isa++) {
        sd_int8_isa prior = sd_linear_int8_cap(isa);
        for (size_t t = 0; t < sizeof int8_types / sizeof int8_types[0]; t++) {
            size_t be, bb;
            sd_ggml_type_block((sd_ggml_type)int8_types[t], &be, &bb);
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                const int *c = shapes[s];
                sd_act act = (sd_act)(s % 3);
                check_case(int8_types[t], c[0], c[1], c[2], (int)be * c[3], c[4], s != 0, act);
            }
        }
        sd_linear_int8_cap(prior);
    }
}

/* bf16 mode with the route capped off (and for the types it does not read) equals oneDNN's bf16
 * product on the f32 dequantised weight, bit for bit: the path before the route. */
static void check_unrouted(sd_qtype t, bool cap_off)
{
    sd_cl *cl = ops_cl();
    int M = 19, N = 35, K = 256;
    size_t nbytes;
    unsigned char *blocks = random_blocks(t, (size_t)N * K, 9, &nbytes);
    int64_t xs[2] = {M, K}, ws[2] = {N, K}, os[2] = {M, N};
    sd_dtype dt;
    CHECK(sd_qtype_dtype(t, &dt));
    sd_dtensor *tx = ops_upload_random(-1, 1, 4, 2, xs), *tw = NULL, *wf = NULL, *yq = NULL, *yf = NULL;
    CHECK_EQ_INT(sd_dtensor_new_blocks(cl, dt, 2, ws, blocks, nbytes, &tw), SD_OK);
    CHECK_EQ_INT(tw ? sd_op_dequantize_tensor(cl, tw, SD_DTYPE_F32, &wf) : SD_ERR_INVALID, SD_OK);
    sd_int8_isa prior = sd_linear_int8_cap(cap_off ? SD_INT8_NONE : SD_INT8_AMX);
    CHECK(cap_off ? !sd_linear_int8_takes(dt) : true);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "bf16"), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, tx, tw, NULL, SD_ACT_SILU, &yq), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, tx, wf, NULL, SD_ACT_SILU, &yf), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(cl->ctx, "fp32"), SD_OK);
    sd_linear_int8_cap(prior);
    float *want = yf ? ops_download(yf) : NULL;
    CHECK_MSG(yq && want && ops_expect("unrouted", yq, 2, os, want, 0.0, 0.0), "%s cap_off %d",
              sd_ggml_type_name((sd_ggml_type)t), cap_off);
    free(want);
    free(blocks);
    sd_dtensor_free(tx);
    sd_dtensor_free(tw);
    sd_dtensor_free(wf);
    sd_dtensor_free(yq);
    sd_dtensor_free(yf);
}

static void test_unrouted(void)
{
    check_unrouted(SD_QTYPE_Q8_0, true);
    check_unrouted(SD_QTYPE_Q4_K, true);
    check_unrouted(SD_QTYPE_Q6_K, true);
    CHECK(sd_linear_int8_takes(SD_DTYPE_Q6_K) == (sd_linear_int8_route() != SD_INT8_NONE));
    CHECK(!sd_linear_int8_takes(SD_DTYPE_F8_E4M3) && !sd_linear_int8_takes(SD_DTYPE_F16));
}

int main(void)
{
    if (!ops_cl())
        return 1;
#ifdef SDFLOW_HAVE_DNNL
    RUN(test_routes);
    RUN(test_unrouted);
#endif
    ops_cl_release();
    return test_summary("test_int8_linear");
}
