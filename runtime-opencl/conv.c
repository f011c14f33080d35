/* sd_op_conv2d. Where the fp32 host routes are on (sd_cl_host_fp32), most convolutions run
 * through oneDNN (sd_dnnl_conv2d_f32; onednn_faster says where). Large 3x3 stride-1
 * convolutions use Winograd F(4x4, 3x3) (conv_winograd).
 * Everything else is a GEMM per image: M = output channels, K = C*KH*KW, N = output pixels. The
 * weights [O, C*KH*KW] are the A rows, read in place (f32 or f16); B is the im2col matrix
 * gathered into panels by conv_pack_b in chunks of pixels, so scratch memory stays bounded
 * (CHUNK_BYTES) whatever the image size. 1x1 stride-1 convolutions skip the gather: the input
 * planes are B as they are. */
#include "runtime-opencl/gemm.h"
#include "runtime-opencl/dnnl.h"
#include <limits.h>
#include <stdio.h>

#define CHUNK_BYTES ((size_t)64 << 20)
/* Where AUTO picks Winograd (measured on PoCL, docs/benchmarks.md): the tile transforms (and
 * the weight transform, where it is not kept) only pay off on large images with many channels. */
#define WINO_MIN_SIDE 64
#define WINO_MIN_CHANNELS 256

static const size_t *one_local(const sd_cl *cl)
{
    static const size_t one[1] = {1};
    return cl->is_gpu ? NULL : one;
}

/* Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (kernels/winograd.cl): weights transformed
 * to U [36, O, C] (once for a constant weight tensor, kept with it; else per call), then per
 * image and chunk of 4x4 output tiles: input tiles transformed straight into B panels, 36 GEMMs
 * into M [36, O, tiles], and the output transform with bias and activation. */
static sd_status conv_winograd(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                               const sd_conv2d_params *p, sd_dtensor *out)
{
    int B = (int)x->shape[0], C = (int)x->shape[1], H = (int)x->shape[2], W = (int)x->shape[3];
    int O = (int)w->shape[0], OH = (int)out->shape[2], OW = (int)out->shape[3];
    int TH = (OH + 3) / 4, TW = (OW + 3) / 4, T = TH * TW;
    size_t widest = (size_t)(C > O ? C : O);
    size_t chunk = CHUNK_BYTES / (36 * sizeof(float) * widest) / SD_GEMM_NR * SD_GEMM_NR;
    if (chunk < SD_GEMM_NR)
        chunk = SD_GEMM_NR;
    if (chunk > (size_t)T)
        chunk = ((size_t)T + SD_GEMM_NR - 1) / SD_GEMM_NR * SD_GEMM_NR;
    sd_scratch u = {0}, vp = {0}, m = {0};
    cl_kernel kw, kin, kout;
    sd_status st;
    if ((st = sd_cl_kernel(cl, "winograd.cl", "wino_weights", w->dtype == SD_DTYPE_F16 ? "-DW_HALF" : "", &kw)) ||
        (st = sd_cl_kernel(cl, "winograd.cl", "wino_input", "", &kin)) ||
        (st = sd_cl_kernel(cl, "winograd.cl", "wino_output", "", &kout)) ||
        (st = sd_scratch_get(cl, 36 * chunk * (size_t)C, sizeof(float), "conv2d winograd input tiles", &vp)) ||
        (st = sd_scratch_get(cl, 36 * chunk * (size_t)O, sizeof(float), "conv2d winograd products", &m)))
        goto done;
    const size_t *local = cl->is_gpu ? NULL : (const size_t[2]){1, 1};
    sd_derived_key key = {SD_DERIVED_WINOGRAD, {O, C}};
    cl_mem ubuf = w->derived ? sd_derived_find(w, &key) : NULL;
    if (!ubuf) {
        if ((st = (w->derived ? sd_scratch_get_exact : sd_scratch_get)(cl, (size_t)36 * O * C, sizeof(float),
                                                                    "conv2d winograd weights", &u)))
            goto done;
        sd_cl_arg wargs[] = {SD_ARG_MEM(w->buf), SD_ARG_MEM(u.buf), SD_ARG_INT(O), SD_ARG_INT(C)};
        size_t wglobal[1] = {(size_t)O};
        ubuf = u.buf;
        if ((st = sd_cl_launch(cl, kw, 1, wglobal, local, SD_NARGS(wargs), wargs)) ||
            (w->derived && (st = sd_derived_add(w, &key, &u))))
            goto done;
    }
    for (int b = 0; !st && b < B; b++) {
        for (int t0 = 0; !st && t0 < T; t0 += (int)chunk) {
            int nt = T - t0 < (int)chunk ? T - t0 : (int)chunk;
            int npanels = (nt + SD_GEMM_NR - 1) / SD_GEMM_NR;
            sd_cl_arg iargs[] = {SD_ARG_MEM(x->buf), SD_ARG_LONG((long)b * C * H * W), SD_ARG_MEM(vp.buf),
                                 SD_ARG_INT(C), SD_ARG_INT(H), SD_ARG_INT(W), SD_ARG_INT(p->pad_h),
                                 SD_ARG_INT(p->pad_w), SD_ARG_INT(TW), SD_ARG_INT(t0), SD_ARG_INT(nt)};
            size_t iglobal[2] = {(size_t)npanels, (size_t)C};
            if ((st = sd_cl_launch(cl, kin, 2, iglobal, local, SD_NARGS(iargs), iargs)))
                break;
            sd_gemm_job job = {.M = O, .N = nt, .K = C, .batch = 36, .ap = ubuf, .lda = C,
                               .a_dtype = SD_DTYPE_F32, .ap_bs = (long)O * C, .bp = vp.buf,
                               .bp_bs = (long)npanels * SD_GEMM_NR * C, .c = m.buf, .c_bs = (long)O * nt,
                               .ldc = nt, .alpha = 1.0f, .act = SD_ACT_NONE};
            if ((st = sd_gemm_run(cl, &job)))
                break;
            sd_cl_arg oargs[] = {SD_ARG_MEM(m.buf), SD_ARG_INT(nt), SD_ARG_LONG((long)O * nt), SD_ARG_MEM(out->buf),
                                 SD_ARG_LONG((long)b * O * OH * OW), SD_ARG_MEM(bias ? bias->buf : NULL),
                                 SD_ARG_INT(OH), SD_ARG_INT(OW), SD_ARG_INT(TW), SD_ARG_INT(t0), SD_ARG_INT(nt),
                                 SD_ARG_INT(p->act)};
            size_t oglobal[2] = {(size_t)npanels, (size_t)O};
            st = sd_cl_launch(cl, kout, 2, oglobal, local, SD_NARGS(oargs), oargs);
        }
    }
done:
    sd_scratch_release(cl, &u);
    sd_scratch_release(cl, &vp);
    sd_scratch_release(cl, &m);
    return st;
}

/* Where AUTO picks oneDNN's fp32 convolution when the fp32 host routes are on, judged per image
 * (oneDNN runs one image at a time, so an image's route and bits never depend on its batch).
 * Measured interleaved by least CPU time (bench_ops --only conv --cpu; docs/opencl-runtime.md
 * has the table): oneDNN is faster wherever a host call is worth it (sd_dnnl_f32_worth), except
 * where Winograd applies (`wino`) to at least WINO_OVER_ONEDNN channels in and out, whose 4x
 * fewer multiplications win (512@64x64, 512@128x128), or to WINO_OVER_ONEDNN_PIXELS output
 * pixels and more (the VAE decoder's 256-512 channels at 256x256 and 512x512: Winograd level to
 * 15% faster), and below ONEDNN_MIN_PIXELS output pixels: each call widens the f16 weights to
 * f32 into oneDNN's layout, which is then a large part of the work (1280@16x16: par; 1280@8x8:
 * 0.6x), while the GEMM reads f16 in place. Large images run in bands of rows
 * (sd_dnnl_conv2d_f32), so their NHWC copies stay small. */
#define WINO_OVER_ONEDNN 512
#define WINO_OVER_ONEDNN_PIXELS 65536
#define ONEDNN_MIN_PIXELS 256
static bool onednn_faster(int C, int O, int OH, int OW, int KH, int KW, bool wino)
{
    double pixels = (double)OH * OW;
    if ((wino && ((C >= WINO_OVER_ONEDNN && O >= WINO_OVER_ONEDNN) || pixels >= WINO_OVER_ONEDNN_PIXELS)) ||
        pixels < ONEDNN_MIN_PIXELS)
        return false;
    return sd_dnnl_f32_worth(2.0 * O * pixels * (double)C * KH * KW);
}

sd_status sd_op_conv2d(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                       const sd_conv2d_params *p, sd_dtensor **out)
{
    *out = NULL;
    char dx[96], dw[96];
    sd_status bst = sd_dtensor_require_float(w, "conv2d", "weight");
    if (bst || (bst = sd_dtensor_require_float(x, "conv2d", "input")))
        return bst;
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
    bool bf16 = false;
    if ((st = sd_dnnl_wanted(cl, &bf16)) || bf16)
        return sd_dtensor_drop_on_error(out, st || B == 0 || O == 0 ? st : sd_dnnl_conv2d_run(cl, x, w, bias, p, *out));
    if ((st = sd_dtensor_require_data(w, "conv2d", "weight")))
        return sd_dtensor_drop_on_error(out, st);
    bool wino_ok = KH == 3 && KW == 3 && p->stride_h == 1 && p->stride_w == 1 && x->dtype == SD_DTYPE_F32;
    bool host_ok = sd_cl_host_fp32(cl) && x->dtype == SD_DTYPE_F32;
    if ((p->algo == SD_CONV_WINOGRAD && !wino_ok) || (p->algo == SD_CONV_ONEDNN && !host_ok)) {
        sd_dtensor_free(*out);
        *out = NULL;
        return sd_set_error(cl->ctx, SD_ERR_INVALID, p->algo == SD_CONV_WINOGRAD
                            ? "conv2d: Winograd needs a 3x3 kernel, stride 1 and an f32 input (weight %s)"
                            : "conv2d: oneDNN needs the fp32 host routes (SDFLOW_CPU_ROUTES) and an f32 input "
                              "(weight %s)", sd_dtensor_describe(w, dw, sizeof dw));
    }
    bool wino_auto = wino_ok && OH >= WINO_MIN_SIDE && OW >= WINO_MIN_SIDE && C >= WINO_MIN_CHANNELS &&
                     O >= WINO_MIN_CHANNELS;
    if (p->algo == SD_CONV_ONEDNN ||
        (p->algo == SD_CONV_AUTO && host_ok && onednn_faster(C, O, OH, OW, KH, KW, wino_auto)))
        return sd_dtensor_drop_on_error(out, B == 0 || O == 0 ? SD_OK : sd_dnnl_conv2d_f32(cl, x, w, bias, p, *out));
    if (p->algo == SD_CONV_WINOGRAD || (p->algo == SD_CONV_AUTO && wino_auto)) {
        return sd_dtensor_drop_on_error(out, conv_winograd(cl, x, w, bias, p, *out));
    }
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
    return sd_dtensor_drop_on_error(out, st);
bad:
    return sd_set_error(cl->ctx, SD_ERR_INVALID,
                        "conv2d: input %s, weight %s%s, stride %dx%d, padding %dx%d do not fit",
                        sd_dtensor_describe(x, dx, sizeof dx), sd_dtensor_describe(w, dw, sizeof dw),
                        bias ? " with a bias" : "", p->stride_h, p->stride_w, p->pad_h, p->pad_w);
}
