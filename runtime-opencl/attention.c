/* sd_op_attention: in the bf16 precision on a CPU with AMX or AVX512-BF16, the host loop of
 * runtime-opencl/attn_bf16.c; in fp32 where sd_cl_host_fp32 allows host routes, the host loop of
 * runtime-opencl/attn_f32.c; otherwise K is transposed into 32-key panels (attn_pack_k), then
 * attn_fwd runs the flash-style loop (kernels/attention.cl). Programs are built per head dimension. */
#include "runtime-opencl/ops.h"
#include "runtime-opencl/attn_bf16.h"
#include "runtime-opencl/attn_f32.h"
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/gemm.h"
#include <math.h>
#include <stdio.h>

#define ATTN_BK 32

/* Query rows per work-item: more rows reuse each key/value block more (it stays in L1 across
 * the 8-row register blocks); the private query and output rows stay at 32 KiB. */
static int attn_rows(int D)
{
    return D <= 128 ? 32 : D <= 256 ? 16 : 8;
}

static bool mask_fits(const sd_dtensor *mask, int64_t B, int64_t Nq, int64_t Nk, int *mb, int *mq)
{
    if (mask->dtype != SD_DTYPE_F32 || mask->ndim < 2 || mask->shape[mask->ndim - 1] != Nk)
        return false;
    int64_t rows = mask->shape[mask->ndim - 2], lead = 1;
    for (int i = 0; i < mask->ndim - 2; i++)
        lead *= mask->shape[i];
    if ((rows != Nq && rows != 1) || (lead != B && lead != 1))
        return false;
    *mq = (int)rows;
    *mb = (int)lead;
    return true;
}

sd_status sd_op_attention(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v,
                          int heads, const sd_dtensor *mask, sd_dtensor **out)
{
    *out = NULL;
    char dq[96], dk[96], dv[96];
    int mb = 1, mq = 1;
    sd_status bst = sd_dtensor_require_float(k, "attention", "k");
    if (bst || (bst = sd_dtensor_require_float(v, "attention", "v")))
        return bst;
    if (q->ndim != 3 || k->ndim != 3 || !sd_dtensor_same_shape(k, v) || k->dtype != v->dtype ||
        q->dtype != SD_DTYPE_F32 || q->shape[0] != k->shape[0] || q->shape[2] != k->shape[2] || heads < 1 ||
        heads > 64 || q->shape[2] % heads != 0 || q->shape[2] / heads > 512 || q->shape[2] / heads < 1 ||
        q->shape[1] > INT32_MAX || k->shape[1] > INT32_MAX || k->shape[1] < 1 ||
        (mask && !mask_fits(mask, q->shape[0], q->shape[1], k->shape[1], &mb, &mq)))
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "attention: q %s, k %s, v %s, %d heads%s do not fit",
                            sd_dtensor_describe(q, dq, sizeof dq), sd_dtensor_describe(k, dk, sizeof dk),
                            sd_dtensor_describe(v, dv, sizeof dv), heads, mask ? " and the mask" : "");
    int B = (int)q->shape[0], Nq = (int)q->shape[1], Nk = (int)k->shape[1], H = heads;
    int D = (int)(q->shape[2] / heads);
    sd_status st = sd_dtensor_new(cl, SD_DTYPE_F32, 3, q->shape, out);
    bool bf16 = false;
    if (st || (st = sd_dnnl_wanted(cl, &bf16)))
        return sd_dtensor_drop_on_error(out, st);
    if (bf16 && sd_attn_bf16_route() != SD_ATTN_BF16_NONE)
        return sd_dtensor_drop_on_error(out, sd_attn_bf16_run(cl, q, k, v, heads, mask, mb, mq, *out));
    if (sd_cl_host_fp32(cl) && sd_attn_f32_available())
        return sd_dtensor_drop_on_error(out, sd_attn_f32_run(cl, q, k, v, heads, mask, mb, mq, *out));
    char opts[96];
    int bq = attn_rows(D);
    snprintf(opts, sizeof opts, "-DHD=%d -DBQ=%d%s", D, bq, k->dtype == SD_DTYPE_F16 ? " -DKV_HALF" : "");
    cl_kernel pack, fwd;
    sd_scratch kp = {0};
    int nkb = (Nk + ATTN_BK - 1) / ATTN_BK;
    if ((st = sd_cl_kernel(cl, "attention.cl", "attn_pack_k", opts, &pack)) ||
        (st = sd_cl_kernel(cl, "attention.cl", "attn_fwd", opts, &fwd)) ||
        (st = sd_scratch_get(cl, (size_t)B * H * nkb * ATTN_BK * D, sizeof(float), "attention packed K", &kp)))
        goto done;
    static const size_t one[3] = {1, 1, 1};
    const size_t *local = cl->is_gpu ? NULL : one;
    sd_cl_arg pargs[] = {SD_ARG_MEM(k->buf), SD_ARG_MEM(kp.buf), SD_ARG_INT(Nk), SD_ARG_INT(H)};
    size_t pglobal[3] = {(size_t)nkb, (size_t)H, (size_t)B};
    if ((st = sd_cl_launch(cl, pack, 3, pglobal, local, SD_NARGS(pargs), pargs)))
        goto done;
    sd_cl_arg args[] = {SD_ARG_MEM(q->buf), SD_ARG_MEM(kp.buf), SD_ARG_MEM(v->buf),
                        SD_ARG_MEM(mask ? mask->buf : NULL), SD_ARG_MEM((*out)->buf), SD_ARG_INT(Nq),
                        SD_ARG_INT(Nk), SD_ARG_INT(H), SD_ARG_FLOAT(1.4426950408889634 / sqrt((double)D)), SD_ARG_INT(mb),
                        SD_ARG_INT(mq), SD_ARG_LONG((long)mq * Nk)};
    size_t global[3] = {((size_t)Nq + (size_t)bq - 1) / (size_t)bq, (size_t)H, (size_t)B};
    st = sd_cl_launch(cl, fwd, 3, global, local, SD_NARGS(args), args);
done:
    sd_scratch_release(cl, &kp);
    return sd_dtensor_drop_on_error(out, st);
}
