/* sd_op_conv2d: convolution as a GEMM per image, M = output channels, K = C*KH*KW, N = output
 * pixels. The weights [O, C*KH*KW] are the A rows, read in place (f32 or f16);
 * B is the im2col matrix gathered into panels by conv_pack_b in chunks of pixels, so scratch
 * memory stays bounded (CHUNK_BYTES) whatever the image size. 1x1 stride-1 convolutions skip the
 * gather: the input planes are B as they are. */
#include "runtime-opencl/gemm.h"
#include <limits.h>
#include <stdio.h>

#define CHUNK_BYTES ((size_t)64 << 20)

static const size_t *one_local(const sd_cl *cl)
{
    static const size_t one[1] = {1};
    return cl->is_gpu ? NULL : one;
}

sd_status sd_op_conv2d(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                       const sd_conv2d_params *p, sd_dtensor **out)
{
    *out = NULL;
    char dx[96], dw[96];
    if (x->ndim != 4 || w->ndim != 4 || x->shape[1] != w->shape[1] || p->stride_h < 1 || p->stride_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0 || (bias && (bias->dtype != SD_DTYPE_F32 || bias->numel != (size_t)w->shape[0])))
        goto bad;
    for (int i = 0; i < 4; i++)
        if (x->shape[i] > INT_MAX / 4 || w->shape[i] > INT_MAX / 4)
            goto bad;
    int B = (int)x->shape[0], C = (int)x->shape[1], H = (int)x->shape[2], W = (int)x->shape[3];
    int O = (int)w->shape[0], KH = (int)w->shape[2], KW = (int)w->shape[3];
    int64_t oh64 = ((int64_t)H + 2 * p->pad_h - KH) / p->stride_h + 1;
    int64_t ow64 = ((int64_t)W + 2 * p->pad_w - KW) / p->stride_w + 1;
    int64_t k64 = (int64_t)C * KH * KW;
    if ((int64_t)H + 2 * p->pad_h < KH || (int64_t)W + 2 * p->pad_w < KW || oh64 * ow64 > INT_MAX ||
        k64 > INT_MAX || k64 == 0)
        goto bad;
    int OH = (int)oh64, OW = (int)ow64, K = (int)k64, P = OH * OW;
    int64_t oshape[4] = {B, O, OH, OW};
    sd_status st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, oshape, out);
    if (st)
        return st;
    sd_scratch bp = {0};
    bool direct = KH == 1 && KW == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0;
    /* Pixels per chunk: a multiple of NR whose packed panels fit CHUNK_BYTES (at least one panel). */
    size_t per_panel = (size_t)K * SD_GEMM_NR * sizeof(float);
    size_t panels = CHUNK_BYTES / per_panel ? CHUNK_BYTES / per_panel : 1;
    size_t chunk = panels * SD_GEMM_NR;
    if (chunk > (size_t)P)
        chunk = ((size_t)P + SD_GEMM_NR - 1) / SD_GEMM_NR * SD_GEMM_NR;
    cl_kernel pack = NULL;
    if (!st && !direct)
        st = sd_cl_kernel(cl, "conv.cl", "conv_pack_b", x->dtype == SD_DTYPE_F16 ? "-DX_HALF" : "", &pack);
    if (!st)
        st = sd_scratch_get(cl, chunk * (size_t)K, sizeof(float), "conv2d packed input", &bp);
    for (int b = 0; !st && b < B; b++) {
        for (int n0 = 0; !st && n0 < P; n0 += (int)chunk) {
            int ncols = P - n0 < (int)chunk ? P - n0 : (int)chunk;
            long x_off = (long)b * C * H * W;
            if (direct) {
                st = sd_gemm_pack_b(cl, x->buf, x->dtype, x_off + n0, ncols, K, P, 1, 0, 1, &bp);
            } else {
                sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_LONG(x_off), SD_ARG_MEM(bp.buf), SD_ARG_INT(C),
                                    SD_ARG_INT(H), SD_ARG_INT(W), SD_ARG_INT(KH), SD_ARG_INT(KW),
                                    SD_ARG_INT(p->stride_h), SD_ARG_INT(p->stride_w), SD_ARG_INT(p->pad_h),
                                    SD_ARG_INT(p->pad_w), SD_ARG_INT(OW), SD_ARG_INT(n0), SD_ARG_INT(ncols)};
                size_t global[1] = {((size_t)ncols + SD_GEMM_NR - 1) / SD_GEMM_NR};
                st = sd_cl_launch(cl, pack, 1, global, one_local(cl), SD_NARGS(args), args);
            }
            if (!st) {
                sd_gemm_job job = {.M = O, .N = ncols, .K = K, .batch = 1, .ap = w->buf, .lda = K,
                                   .a_dtype = w->dtype, .bp = bp.buf, .c = (*out)->buf,
                                   .c_off = (long)b * O * P + n0, .ldc = P, .bias = bias ? bias->buf : NULL,
                                   .bias_mode = bias ? 2 : 0, .alpha = 1.0f, .act = p->act};
                st = sd_gemm_run(cl, &job);
            }
        }
    }
    sd_scratch_release(cl, &bp);
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
bad:
    return sd_set_error(cl->ctx, SD_ERR_INVALID,
                        "conv2d: input %s, weight %s%s, stride %dx%d, padding %dx%d do not fit",
                        sd_dtensor_describe(x, dx, sizeof dx), sd_dtensor_describe(w, dw, sizeof dw),
                        bias ? " with a bias" : "", p->stride_h, p->stride_w, p->pad_h, p->pad_w);
}
