/* RRDBNet elementwise ops: host side of kernels/ops_esrgan.cl. See ops_esrgan.h. */
#include "runtime-opencl/ops_esrgan.h"

#define KFILE "ops_esrgan.cl"
#define RUN 64 /* elements per work-item, as in the kernel file */

/* Checks that x [B, C, H, W] fits channels [off, off+C) of dst [B, Cd, H, W], both f32. */
static sd_status check_into(sd_cl *cl, const char *op, const sd_dtensor *x, const sd_dtensor *dst, int64_t off)
{
    char dx[96], dd[96];
    bool ok = x->ndim == 4 && dst->ndim == 4 && x->dtype == SD_DTYPE_F32 && dst->dtype == SD_DTYPE_F32 &&
              x->shape[0] == dst->shape[0] && x->shape[2] == dst->shape[2] && x->shape[3] == dst->shape[3] &&
              off >= 0 && off <= dst->shape[1] && x->shape[1] <= dst->shape[1] - off;
    if (!ok)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: %s does not fit channels from %lld of %s", op,
                            sd_dtensor_describe(x, dx, sizeof dx), (long long)off,
                            sd_dtensor_describe(dst, dd, sizeof dd));
    return SD_OK;
}

sd_status sd_op_leaky_relu_into(sd_cl *cl, const sd_dtensor *x, float slope, sd_dtensor *dst, int64_t off)
{
    sd_status st;
    cl_kernel k;
    if ((st = check_into(cl, "leaky_relu", x, dst, off)) ||
        (st = sd_cl_kernel(cl, KFILE, "esrgan_leaky_into", NULL, &k)))
        return st;
    size_t batch = (size_t)x->shape[0], n = batch ? x->numel / batch : 0;
    size_t plane = (size_t)(dst->shape[2] * dst->shape[3]);
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM(dst->buf), SD_ARG_LONG(n),
                        SD_ARG_LONG((size_t)dst->shape[1] * plane), SD_ARG_LONG((size_t)off * plane),
                        SD_ARG_FLOAT(slope)};
    size_t global[2] = {(n + RUN - 1) / RUN, batch};
    return sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args);
}

sd_status sd_op_axpy_into(sd_cl *cl, float alpha, const sd_dtensor *a, const sd_dtensor *c, sd_dtensor *dst,
                          int64_t off)
{
    sd_status st;
    cl_kernel k;
    char da[96], dc[96];
    if ((st = check_into(cl, "axpy", a, dst, off)))
        return st;
    if (c && (c->dtype != SD_DTYPE_F32 || !sd_dtensor_same_shape(a, c)))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "axpy: %s and %s differ", sd_dtensor_describe(a, da, sizeof da),
                            sd_dtensor_describe(c, dc, sizeof dc));
    if ((st = sd_cl_kernel(cl, KFILE, "esrgan_axpy_into", NULL, &k)))
        return st;
    size_t batch = (size_t)a->shape[0], n = batch ? a->numel / batch : 0;
    size_t plane = (size_t)(dst->shape[2] * dst->shape[3]);
    size_t dst_stride = (size_t)dst->shape[1] * plane, dst_off = (size_t)off * plane;
    sd_cl_arg args[] = {SD_ARG_MEM(a->buf), SD_ARG_MEM(c ? c->buf : dst->buf), SD_ARG_MEM(dst->buf),
                        SD_ARG_LONG(n), SD_ARG_LONG(c ? n : dst_stride), SD_ARG_LONG(c ? 0 : dst_off),
                        SD_ARG_LONG(dst_stride), SD_ARG_LONG(dst_off), SD_ARG_FLOAT(alpha)};
    size_t global[2] = {(n + RUN - 1) / RUN, batch};
    return sd_cl_launch(cl, k, 2, global, NULL, SD_NARGS(args), args);
}

sd_status sd_op_pixel_unshuffle(sd_cl *cl, const sd_dtensor *x, int r, sd_dtensor **out)
{
    sd_status st;
    cl_kernel k;
    char dx[96];
    *out = NULL;
    if (x->ndim != 4 || x->dtype != SD_DTYPE_F32 || r < 1 || r > 16 || x->shape[2] < 1 || x->shape[3] < 1 ||
        x->shape[1] < 1 || x->shape[1] > INT32_MAX / 256 || x->shape[2] > INT32_MAX / 2 || x->shape[3] > INT32_MAX / 2)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "pixel_unshuffle: input %s with factor %d",
                            sd_dtensor_describe(x, dx, sizeof dx), r);
    int C = (int)x->shape[1], H = (int)x->shape[2], W = (int)x->shape[3];
    int OH = (H + r - 1) / r, OW = (W + r - 1) / r;
    int64_t shape[4] = {x->shape[0], (int64_t)C * r * r, OH, OW};
    if ((st = sd_cl_kernel(cl, KFILE, "esrgan_unshuffle", NULL, &k)) ||
        (st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, out)))
        return st;
    sd_cl_arg args[] = {SD_ARG_MEM(x->buf), SD_ARG_MEM((*out)->buf), SD_ARG_INT(C), SD_ARG_INT(H), SD_ARG_INT(W),
                        SD_ARG_INT(r), SD_ARG_INT(OH), SD_ARG_INT(OW)};
    size_t global[3] = {(size_t)OH, (size_t)C * (size_t)(r * r), (size_t)x->shape[0]};
    if ((st = sd_cl_launch(cl, k, 3, global, NULL, SD_NARGS(args), args))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}
