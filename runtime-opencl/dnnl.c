/* bf16 matrix products and convolutions through oneDNN on CPU devices (runtime-opencl/dnnl.h).
 * oneDNN picks its fastest implementation for this CPU (AMX tiles where the CPU has them) and
 * the blocked weight layout that implementation wants; weights are converted to that layout
 * once and kept with their tensor. Activations are reordered to bf16 on every call. */
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/gemm.h"
#include "core/half.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef SDFLOW_HAVE_DNNL

sd_status sd_dnnl_wanted(sd_cl *cl, bool *out)
{
    *out = false;
    if (!sd_context_bf16(cl->ctx))
        return SD_OK;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "precision bf16: this build of sdflow has no oneDNN (libdnnl-dev)");
}

sd_status sd_dnnl_matmul_run(sd_cl *cl, const sd_dnnl_matmul *job)
{
    (void)job;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "precision bf16: this build of sdflow has no oneDNN");
}

sd_status sd_dnnl_conv2d_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out)
{
    (void)x, (void)w, (void)bias, (void)p, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "precision bf16: this build of sdflow has no oneDNN");
}

sd_status sd_dnnl_attention_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                                sd_dtensor *out)
{
    (void)q, (void)k, (void)v, (void)heads, (void)out;
    return sd_set_error(cl->ctx, SD_ERR_USAGE, "precision bf16: this build of sdflow has no oneDNN");
}

void sd_dnnl_free(sd_cl *cl)
{
    (void)cl;
}

#else

#include <dnnl.h>

struct sd_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
};

sd_status sd_dnnl_wanted(sd_cl *cl, bool *out)
{
    *out = false;
    if (!sd_context_bf16(cl->ctx))
        return SD_OK;
    if (cl->type != CL_DEVICE_TYPE_CPU)
        return sd_set_error(cl->ctx, SD_ERR_USAGE, "precision bf16 needs a CPU device; %s is not one",
                            cl->device_name);
    *out = true;
    return SD_OK;
}

static sd_status fail(sd_cl *cl, dnnl_status_t s, const char *what)
{
    return sd_set_error(cl->ctx, s == dnnl_out_of_memory ? SD_ERR_NOMEM : SD_ERR_CL,
                        "oneDNN: %s failed (dnnl status %d)", what, (int)s);
}

#define TRY(call, what)                                                                                        \
    do {                                                                                                       \
        dnnl_status_t s_ = (call);                                                                             \
        if (s_ != dnnl_success) {                                                                              \
            st = fail(cl, s_, what);                                                                           \
            goto done;                                                                                         \
        }                                                                                                      \
    } while (0)

static sd_status engine(sd_cl *cl, struct sd_dnnl **out)
{
    if (!cl->dnnl) {
        struct sd_dnnl *d = calloc(1, sizeof *d);
        if (!d)
            return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        dnnl_status_t s = dnnl_engine_create(&d->engine, dnnl_cpu, 0);
        if (s == dnnl_success)
            s = dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags);
        if (s != dnnl_success) {
            if (d->engine)
                dnnl_engine_destroy(d->engine);
            free(d);
            return fail(cl, s, "creating the CPU engine");
        }
        cl->dnnl = d;
    }
    *out = cl->dnnl;
    return SD_OK;
}

void sd_dnnl_free(sd_cl *cl)
{
    struct sd_dnnl *d = cl->dnnl;
    if (!d)
        return;
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->engine);
    free(d);
    cl->dnnl = NULL;
}

/* ---- Host views of device buffers ---- */

/* A buffer mapped for the host (PoCL's CPU device maps without copying). */
typedef struct mapping {
    cl_mem buf;
    void *ptr;
} mapping;

static sd_status map(sd_cl *cl, cl_mem buf, size_t bytes, bool write, mapping *m)
{
    m->buf = buf;
    m->ptr = NULL;
    if (!buf || !bytes)
        return SD_OK;
    cl_int err;
    m->ptr = clEnqueueMapBuffer(cl->queue, buf, CL_TRUE, write ? CL_MAP_READ | CL_MAP_WRITE : CL_MAP_READ, 0, bytes,
                                0, NULL, NULL, &err);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(cl, err, "clEnqueueMapBuffer (bf16 operands)");
}

static void unmap(sd_cl *cl, mapping *m)
{
    if (m->ptr)
        clEnqueueUnmapMemObject(cl->queue, m->buf, m->ptr, 0, NULL, NULL);
    m->ptr = NULL;
}

static sd_status memory(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *md, void *ptr,
                        dnnl_memory_t *out)
{
    dnnl_status_t s = dnnl_memory_create(out, md, d->engine, ptr ? ptr : DNNL_MEMORY_NONE);
    return s == dnnl_success ? SD_OK : fail(cl, s, "creating a memory object");
}

/* dst = src converted between layouts/types, scaled by `scale` (1: none). */
static sd_status reorder(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *src_md, void *src,
                         const dnnl_memory_desc_t *dst_md, void *dst, float scale)
{
    sd_status st = SD_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    TRY(dnnl_primitive_attr_create(&attr), "reorder attributes");
    if (scale != 1.0f)
        TRY(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "reorder scale");
    TRY(dnnl_reorder_primitive_desc_create(&pd, src_md, d->engine, dst_md, d->engine, attr), "reorder");
    TRY(dnnl_primitive_create(&prim, pd), "reorder primitive");
    if ((st = memory(cl, d, src_md, src, &ms)) || (st = memory(cl, d, dst_md, dst, &md)))
        goto done;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    TRY(dnnl_primitive_execute(prim, d->stream, 2, args), "reorder");
    TRY(dnnl_stream_wait(d->stream), "reorder");
done:
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* A host buffer of `bytes` (at least 1). */
static sd_status host_alloc(sd_cl *cl, size_t bytes, void **out)
{
    *out = malloc(bytes ? bytes : 1);
    return *out ? SD_OK : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory for a bf16 operand (%zu bytes)", bytes);
}

/* An f32 copy of an f16 host array (src_f16 of n values), or src itself when it is f32. */
static sd_status as_f32(sd_cl *cl, const void *src, sd_dtype dtype, size_t n, float **out, float **owned)
{
    *owned = NULL;
    if (dtype == SD_DTYPE_F32) {
        *out = (float *)src;
        return SD_OK;
    }
    sd_status st = host_alloc(cl, n * sizeof(float), (void **)owned);
    if (st)
        return st;
    const uint16_t *h = src;
    for (size_t i = 0; i < n; i++)
        (*owned)[i] = sd_half_to_float(h[i]);
    *out = *owned;
    return SD_OK;
}

/* reorder() from src holding n values of dtype laid out as from_f32 describes for f32 (oneDNN
 * has no f16 -> bf16 reorder here: f16 is widened to an f32 copy first). */
static sd_status reorder_any(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *from_f32, const void *src,
                             sd_dtype dtype, size_t n, const dnnl_memory_desc_t *to, void *dst, float scale)
{
    float *f32 = NULL, *owned = NULL;
    sd_status st = as_f32(cl, src, dtype, n, &f32, &owned);
    if (!st)
        st = reorder(cl, d, from_f32, f32, to, dst, scale);
    free(owned);
    return st;
}

static bool same_md(const void *kept, const void *want)
{
    return dnnl_memory_desc_equal(kept, want) != 0;
}

/* The weights `t` (whose elements `plain_md` describes as f32) in the layout `want`, mapped in
 * *view: t's kept form under key when it has one; else converted, and kept with t when t is
 * constant, or left in *tmp for weights_done to give back. */
static sd_status weights_in(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *t, const sd_derived_key *key,
                            const dnnl_memory_desc_t *plain_md, const dnnl_memory_desc_t *want, mapping *view,
                            sd_scratch *tmp)
{
    size_t bytes = dnnl_memory_desc_get_size(want);
    cl_mem kept = t->derived ? sd_derived_find_meta(t, key, same_md, want) : NULL;
    if (kept)
        return map(cl, kept, bytes, false, view);
    mapping src = {0};
    sd_status st = sd_scratch_get(cl, bytes, 1, "bf16 weights", tmp);
    if (!st)
        st = map(cl, t->buf, t->numel * sd_dtype_size(t->dtype), false, &src);
    if (!st && !(st = map(cl, tmp->buf, bytes, true, view)))
        st = reorder_any(cl, d, plain_md, src.ptr, t->dtype, t->numel, want, view->ptr, 1.0f);
    unmap(cl, &src);
    if (!st && t->derived)
        st = sd_derived_keep_meta(t, key, tmp, want, sizeof *want);
    return st;
}

/* Unmaps what weights_in mapped and gives back a converted copy that was not kept. */
static void weights_done(sd_cl *cl, mapping *view, sd_scratch *tmp)
{
    unmap(cl, view);
    sd_scratch_release(cl, tmp);
}

/* oneDNN post-op for act (none: no post-ops). */
static sd_status attr_for(sd_cl *cl, sd_act act, dnnl_primitive_attr_t *attr)
{
    sd_status st = SD_OK;
    dnnl_post_ops_t po = NULL;
    TRY(dnnl_primitive_attr_create(attr), "attributes");
    if (act == SD_ACT_NONE)
        return SD_OK;
    TRY(dnnl_post_ops_create(&po), "post-ops");
    TRY(dnnl_post_ops_append_eltwise(po, 1.0f, act == SD_ACT_GELU ? dnnl_eltwise_gelu_erf : dnnl_eltwise_swish,
                                     1.0f, 0.0f),
        "activation post-op");
    TRY(dnnl_primitive_attr_set_post_ops(*attr, po), "post-ops");
done:
    dnnl_post_ops_destroy(po);
    return st;
}

/* ---- Matrix products ---- */

sd_status sd_dnnl_matmul_run(sd_cl *cl, const sd_dnnl_matmul *j)
{
    struct sd_dnnl *d;
    sd_status st = engine(cl, &d);
    if (st)
        return st;
    if ((st = sd_cl_finish(cl)))
        return st;
    long M = j->M, N = j->N, K = j->K;
    dnnl_memory_desc_t a_src, a_bf, b_src, b_want, bias_md, c_md, b_any;
    dnnl_dims_t ad = {j->batch_a, M, K}, bd = {j->batch_b, K, N}, cd = {j->batch_a, M, N}, biasd = {1, 1, N};
    dnnl_dims_t as = {M * K, j->trans_a ? 1 : K, j->trans_a ? M : 1};
    dnnl_dims_t bs = {K * N, j->trans_b ? 1 : N, j->trans_b ? K : 1};
    mapping am = {0}, biasm = {0}, cm = {0}, bw = {0};
    sd_scratch b_tmp = {0};
    sd_derived_key key = {SD_DERIVED_DNNL_MATMUL, {N, K, j->trans_b, j->batch_b}};
    void *a_bf16 = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t ma = NULL, mb = NULL, mbias = NULL, mc = NULL;
    TRY(dnnl_memory_desc_init_by_strides(&a_src, 3, ad, dnnl_f32, as), "matmul A");
    TRY(dnnl_memory_desc_init_by_tag(&a_bf, 3, ad, dnnl_bf16, dnnl_abc), "matmul A");
    TRY(dnnl_memory_desc_init_by_strides(&b_src, 3, bd, dnnl_f32, bs), "matmul B");
    TRY(dnnl_memory_desc_init_by_tag(&b_any, 3, bd, dnnl_bf16, dnnl_format_tag_any), "matmul B");
    TRY(dnnl_memory_desc_init_by_tag(&c_md, 3, cd, dnnl_f32, dnnl_abc), "matmul C");
    TRY(dnnl_memory_desc_init_by_tag(&bias_md, 3, biasd, dnnl_f32, dnnl_abc), "matmul bias");
    dnnl_matmul_desc_t desc;
    TRY(dnnl_matmul_desc_init(&desc, &a_bf, &b_any, j->bias ? &bias_md : NULL, &c_md), "matmul");
    if ((st = attr_for(cl, j->act, &attr)))
        goto done;
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL), "matmul");
    b_want = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    TRY(dnnl_primitive_create(&prim, pd), "matmul primitive");

    if ((st = map(cl, j->a->buf, j->a->numel * sd_dtype_size(j->a->dtype), false, &am)) ||
        (st = map(cl, j->bias ? j->bias->buf : NULL, (size_t)N * 4, false, &biasm)) ||
        (st = map(cl, j->out->buf, j->out->numel * 4, true, &cm)))
        goto done;
    /* A scaled by alpha while it is rounded to bf16 (alpha applies to the product alone). */
    if ((st = host_alloc(cl, dnnl_memory_desc_get_size(&a_bf), &a_bf16)) ||
        (st = reorder_any(cl, d, &a_src, am.ptr, j->a->dtype, j->a->numel, &a_bf, a_bf16, j->alpha)))
        goto done;
    if ((st = weights_in(cl, d, j->b, &key, &b_src, &b_want, &bw, &b_tmp)))
        goto done;
    if ((st = memory(cl, d, &a_bf, a_bf16, &ma)) || (st = memory(cl, d, &b_want, bw.ptr, &mb)) ||
        (st = memory(cl, d, &c_md, cm.ptr, &mc)) ||
        (j->bias && (st = memory(cl, d, &bias_md, biasm.ptr, &mbias))))
        goto done;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_BIAS, mbias}};
    TRY(dnnl_primitive_execute(prim, d->stream, j->bias ? 4 : 3, args), "matmul");
    TRY(dnnl_stream_wait(d->stream), "matmul");
done:
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(mc);
    dnnl_memory_destroy(mbias);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    weights_done(cl, &bw, &b_tmp);
    free(a_bf16);
    unmap(cl, &am);
    unmap(cl, &biasm);
    unmap(cl, &cm);
    return st;
}

/* ---- Convolution ---- */

sd_status sd_dnnl_conv2d_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out)
{
    struct sd_dnnl *d;
    sd_status st = engine(cl, &d);
    if (st)
        return st;
    if ((st = sd_cl_finish(cl)))
        return st;
    dnnl_dims_t xd = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    dnnl_dims_t wd = {w->shape[0], w->shape[1], w->shape[2], w->shape[3]};
    dnnl_dims_t od = {out->shape[0], out->shape[1], out->shape[2], out->shape[3]};
    dnnl_dims_t bd = {w->shape[0]}, strides = {p->stride_h, p->stride_w}, pads = {p->pad_h, p->pad_w};
    dnnl_memory_desc_t x_src, x_any, w_src, w_any, b_md, o_plain, o_any, x_want, w_want, o_want;
    mapping xm = {0}, bm = {0}, om = {0}, ww = {0};
    sd_scratch w_tmp = {0};
    sd_derived_key key = {SD_DERIVED_DNNL_CONV, {wd[0], wd[1], wd[2], wd[3]}};
    void *x_bf = NULL, *o_tmp = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t mx = NULL, mw = NULL, mb = NULL, mo = NULL;
    TRY(dnnl_memory_desc_init_by_tag(&x_src, 4, xd, dnnl_f32, dnnl_abcd), "conv input");
    TRY(dnnl_memory_desc_init_by_tag(&x_any, 4, xd, dnnl_bf16, dnnl_format_tag_any), "conv input");
    TRY(dnnl_memory_desc_init_by_tag(&w_src, 4, wd, dnnl_f32, dnnl_abcd), "conv weights");
    TRY(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_bf16, dnnl_format_tag_any), "conv weights");
    TRY(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a), "conv bias");
    TRY(dnnl_memory_desc_init_by_tag(&o_plain, 4, od, dnnl_f32, dnnl_abcd), "conv output");
    TRY(dnnl_memory_desc_init_by_tag(&o_any, 4, od, dnnl_f32, dnnl_format_tag_any), "conv output");
    dnnl_convolution_desc_t desc;
    TRY(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &x_any, &w_any,
                                           bias ? &b_md : NULL, &o_any, strides, pads, pads),
        "convolution");
    if ((st = attr_for(cl, p->act, &attr)))
        goto done;
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL), "convolution");
    x_want = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    w_want = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    o_want = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    TRY(dnnl_primitive_create(&prim, pd), "convolution primitive");

    bool o_direct = dnnl_memory_desc_equal(&o_want, &o_plain);
    if ((st = map(cl, x->buf, x->numel * sd_dtype_size(x->dtype), false, &xm)) ||
        (st = map(cl, bias ? bias->buf : NULL, (size_t)w->shape[0] * 4, false, &bm)) ||
        (st = map(cl, out->buf, out->numel * 4, true, &om)))
        goto done;
    if ((st = host_alloc(cl, dnnl_memory_desc_get_size(&x_want), &x_bf)) ||
        (st = reorder_any(cl, d, &x_src, xm.ptr, x->dtype, x->numel, &x_want, x_bf, 1.0f)))
        goto done;
    if ((st = weights_in(cl, d, w, &key, &w_src, &w_want, &ww, &w_tmp)))
        goto done;
    if (!o_direct && (st = host_alloc(cl, dnnl_memory_desc_get_size(&o_want), &o_tmp)))
        goto done;
    if ((st = memory(cl, d, &x_want, x_bf, &mx)) || (st = memory(cl, d, &w_want, ww.ptr, &mw)) ||
        (st = memory(cl, d, &o_want, o_direct ? om.ptr : o_tmp, &mo)) ||
        (bias && (st = memory(cl, d, &b_md, bm.ptr, &mb))))
        goto done;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mo}, {DNNL_ARG_BIAS, mb}};
    TRY(dnnl_primitive_execute(prim, d->stream, bias ? 4 : 3, args), "convolution");
    TRY(dnnl_stream_wait(d->stream), "convolution");
    if (!o_direct)
        st = reorder(cl, d, &o_want, o_tmp, &o_plain, om.ptr, 1.0f);
done:
    dnnl_memory_destroy(mx);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mo);
    dnnl_memory_destroy(mb);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    weights_done(cl, &ww, &w_tmp);
    free(x_bf);
    free(o_tmp);
    unmap(cl, &xm);
    unmap(cl, &om);
    return st;
}

/* ---- Attention ---- */

/* Bytes of scores (f32 and their bf16 probabilities) one chunk of query rows may hold. */
#define ATTN_CHUNK_BYTES ((size_t)48 << 20)

/* The primitives of one chunk of n query rows: S = Q K^T, S = softmax(S) in place, P = S as
 * bf16 (a reorder: oneDNN 2.6's softmax writing bf16 itself gets rows wrong, test_bf16.c), O = P V. */
typedef struct attn_prims {
    int n;
    dnnl_primitive_t qk, sm, pv;
    dnnl_memory_desc_t q_md, k_md, s_md, p_md, v_md, o_md;
} attn_prims;

static void attn_prims_free(attn_prims *a)
{
    dnnl_primitive_destroy(a->qk);
    dnnl_primitive_destroy(a->sm);
    dnnl_primitive_destroy(a->pv);
    memset(a, 0, sizeof *a);
}

static sd_status primitive(sd_cl *cl, const_dnnl_op_desc_t desc, struct sd_dnnl *d, dnnl_primitive_t *out,
                           const char *what)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_primitive_desc_create(&pd, desc, NULL, d->engine, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? SD_OK : fail(cl, s, what);
}

/* Q is bf16 [B, H, Nq, D], K^T bf16 [B, H, D, Nk], V bf16 [B, H, Nk, D] (all dense); the output
 * rows go to out [B, Nq, H*D] f32. */
static sd_status attn_prims_make(sd_cl *cl, struct sd_dnnl *d, int n, long B, long H, long Nq, long Nk, long D,
                                 attn_prims *a)
{
    sd_status st = SD_OK;
    long C = H * D;
    dnnl_dims_t qd = {B, H, n, D}, qs = {H * Nq * D, Nq * D, D, 1}, kd = {B, H, D, Nk};
    dnnl_dims_t sd_ = {B, H, n, Nk}, vd = {B, H, Nk, D}, od = {B, H, n, D}, os = {Nq * C, D, C, 1};
    a->n = n;
    TRY(dnnl_memory_desc_init_by_strides(&a->q_md, 4, qd, dnnl_bf16, qs), "attention Q");
    TRY(dnnl_memory_desc_init_by_tag(&a->k_md, 4, kd, dnnl_bf16, dnnl_abcd), "attention K");
    TRY(dnnl_memory_desc_init_by_tag(&a->s_md, 4, sd_, dnnl_f32, dnnl_abcd), "attention scores");
    TRY(dnnl_memory_desc_init_by_tag(&a->p_md, 4, sd_, dnnl_bf16, dnnl_abcd), "attention probabilities");
    TRY(dnnl_memory_desc_init_by_tag(&a->v_md, 4, vd, dnnl_bf16, dnnl_abcd), "attention V");
    TRY(dnnl_memory_desc_init_by_strides(&a->o_md, 4, od, dnnl_f32, os), "attention output");
    dnnl_matmul_desc_t qk, pv;
    dnnl_softmax_v2_desc_t sm;
    TRY(dnnl_matmul_desc_init(&qk, &a->q_md, &a->k_md, NULL, &a->s_md), "attention Q K^T");
    TRY(dnnl_softmax_v2_forward_desc_init(&sm, dnnl_forward_inference, dnnl_softmax_accurate, &a->s_md, &a->s_md, 3),
        "attention softmax");
    TRY(dnnl_matmul_desc_init(&pv, &a->p_md, &a->v_md, NULL, &a->o_md), "attention P V");
    if ((st = primitive(cl, &qk, d, &a->qk, "attention Q K^T")) ||
        (st = primitive(cl, &sm, d, &a->sm, "attention softmax")) || (st = primitive(cl, &pv, d, &a->pv, "attention P V")))
        goto done;
done:
    return st;
}

/* Runs prims on query rows [q0, q0 + a->n). */
static sd_status attn_chunk(sd_cl *cl, struct sd_dnnl *d, const attn_prims *a, char *qb, void *kb, void *vb,
                            void *scores, void *probs, float *o)
{
    sd_status st = SD_OK;
    dnnl_memory_t mq = NULL, mk = NULL, ms = NULL, mp = NULL, mv = NULL, mo = NULL;
    if ((st = memory(cl, d, &a->q_md, qb, &mq)) || (st = memory(cl, d, &a->k_md, kb, &mk)) ||
        (st = memory(cl, d, &a->s_md, scores, &ms)) || (st = memory(cl, d, &a->p_md, probs, &mp)) ||
        (st = memory(cl, d, &a->v_md, vb, &mv)) || (st = memory(cl, d, &a->o_md, o, &mo)))
        goto done;
    dnnl_exec_arg_t qk[] = {{DNNL_ARG_SRC, mq}, {DNNL_ARG_WEIGHTS, mk}, {DNNL_ARG_DST, ms}};
    dnnl_exec_arg_t sm[] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, ms}};
    dnnl_exec_arg_t pv[] = {{DNNL_ARG_SRC, mp}, {DNNL_ARG_WEIGHTS, mv}, {DNNL_ARG_DST, mo}};
    TRY(dnnl_primitive_execute(a->qk, d->stream, 3, qk), "attention Q K^T");
    TRY(dnnl_primitive_execute(a->sm, d->stream, 2, sm), "attention softmax");
    TRY(dnnl_stream_wait(d->stream), "attention");
    if ((st = reorder(cl, d, &a->s_md, scores, &a->p_md, probs, 1.0f)))
        goto done;
    TRY(dnnl_primitive_execute(a->pv, d->stream, 3, pv), "attention P V");
    TRY(dnnl_stream_wait(d->stream), "attention");
done:
    dnnl_memory_destroy(mq);
    dnnl_memory_destroy(mk);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mp);
    dnnl_memory_destroy(mv);
    dnnl_memory_destroy(mo);
    return st;
}

/* src [B, N, H*D] (f32 or f16) as bf16 [B, H, N, D], or [B, H, D, N] when transposed, times scale. */
static sd_status heads_bf16(sd_cl *cl, struct sd_dnnl *d, const void *src, sd_dtype dtype, long B, long H, long N,
                            long D, bool transposed, float scale, void *dst)
{
    sd_status st = SD_OK;
    long C = H * D;
    dnnl_memory_desc_t from, to;
    dnnl_dims_t dims = {B, H, transposed ? D : N, transposed ? N : D};
    dnnl_dims_t strides = {N * C, D, transposed ? 1 : C, transposed ? C : 1};
    TRY(dnnl_memory_desc_init_by_strides(&from, 4, dims, dnnl_f32, strides), "attention operand");
    TRY(dnnl_memory_desc_init_by_tag(&to, 4, dims, dnnl_bf16, dnnl_abcd), "attention operand");
    st = reorder_any(cl, d, &from, src, dtype, (size_t)(B * N * H * D), &to, dst, scale);
done:
    return st;
}

sd_status sd_dnnl_attention_run(sd_cl *cl, const sd_dtensor *q, const sd_dtensor *k, const sd_dtensor *v, int heads,
                                sd_dtensor *out)
{
    struct sd_dnnl *d;
    sd_status st = engine(cl, &d);
    if (st || (st = sd_cl_finish(cl)))
        return st;
    long B = q->shape[0], Nq = q->shape[1], Nk = k->shape[1], H = heads, D = q->shape[2] / heads;
    size_t per_row = (size_t)(B * H * Nk) * 6; /* f32 scores and bf16 probabilities */
    long chunk = (long)(ATTN_CHUNK_BYTES / per_row);
    chunk = chunk < 1 ? 1 : chunk > Nq ? Nq : chunk;
    mapping qm = {0}, km = {0}, vm = {0}, om = {0};
    void *qb = NULL, *kb = NULL, *vb = NULL, *scores = NULL, *probs = NULL;
    attn_prims a = {0};
    if ((st = map(cl, q->buf, q->numel * 4, false, &qm)) ||
        (st = map(cl, k->buf, k->numel * sd_dtype_size(k->dtype), false, &km)) ||
        (st = map(cl, v->buf, v->numel * sd_dtype_size(v->dtype), false, &vm)) ||
        (st = map(cl, out->buf, out->numel * 4, true, &om)) || (st = host_alloc(cl, q->numel * 2, &qb)) ||
        (st = host_alloc(cl, k->numel * 2, &kb)) || (st = host_alloc(cl, v->numel * 2, &vb)) ||
        (st = host_alloc(cl, per_row / 6 * 4 * (size_t)chunk, &scores)) ||
        (st = host_alloc(cl, per_row / 6 * 2 * (size_t)chunk, &probs)))
        goto done;
    if ((st = heads_bf16(cl, d, qm.ptr, SD_DTYPE_F32, B, H, Nq, D, false, 1.0f / sqrtf((float)D), qb)) ||
        (st = heads_bf16(cl, d, km.ptr, k->dtype, B, H, Nk, D, true, 1.0f, kb)) ||
        (st = heads_bf16(cl, d, vm.ptr, v->dtype, B, H, Nk, D, false, 1.0f, vb)))
        goto done;
    for (long q0 = 0; q0 < Nq && !st; q0 += chunk) {
        int n = (int)(Nq - q0 < chunk ? Nq - q0 : chunk);
        if (a.n != n) {
            attn_prims_free(&a);
            if ((st = attn_prims_make(cl, d, n, B, H, Nq, Nk, D, &a)))
                break;
        }
        st = attn_chunk(cl, d, &a, (char *)qb + (size_t)q0 * D * 2, kb, vb, scores, probs,
                        (float *)om.ptr + (size_t)q0 * H * D);
    }
done:
    attn_prims_free(&a);
    free(qb), free(kb), free(vb), free(scores), free(probs);
    unmap(cl, &qm);
    unmap(cl, &km);
    unmap(cl, &vm);
    unmap(cl, &om);
    return st;
}

#endif
