/* bf16 matrix products and convolutions through oneDNN on CPU devices (runtime-opencl/dnnl.h).
 * oneDNN picks its fastest implementation for this CPU (AMX tiles where the CPU has them) and
 * the blocked weight layout that implementation wants; weights are converted to that layout
 * once and kept with their tensor. Activations are reordered to bf16 on every call. */
#include "runtime-opencl/dnnl.h"
#include "runtime-opencl/gemm.h"
#include "core/half.h"
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

size_t sd_dnnl_set_band_bytes(size_t bytes)
{
    (void)bytes;
    return 0;
}

void sd_dnnl_free(sd_cl *cl)
{
    (void)cl;
}

bool sd_dnnl_available(void)
{
    return false;
}

#else

bool sd_dnnl_available(void)
{
    return true;
}

#include "runtime-opencl/dnnl_internal.h"

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

sd_status sd_dnnl_fail(sd_cl *cl, dnnl_status_t s, const char *what)
{
    return sd_set_error(cl->ctx, s == dnnl_out_of_memory ? SD_ERR_NOMEM : SD_ERR_CL,
                        "oneDNN: %s failed (dnnl status %d)", what, (int)s);
}

sd_status sd_dnnl_engine(sd_cl *cl, struct sd_dnnl **out)
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
            return sd_dnnl_fail(cl, s, "creating the CPU engine");
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

sd_status sd_dnnl_map(sd_cl *cl, cl_mem buf, size_t bytes, bool write, sd_dnnl_mapping *m)
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

void sd_dnnl_unmap(sd_cl *cl, sd_dnnl_mapping *m)
{
    if (m->ptr)
        clEnqueueUnmapMemObject(cl->queue, m->buf, m->ptr, 0, NULL, NULL);
    m->ptr = NULL;
}

sd_status sd_dnnl_scratch_view(sd_cl *cl, size_t bytes, const char *what, sd_scratch *tmp, sd_dnnl_mapping *m)
{
    sd_status st = sd_scratch_get(cl, bytes ? bytes : 1, 1, what, tmp);
    return st ? st : sd_dnnl_map(cl, tmp->buf, bytes ? bytes : 1, true, m);
}

void sd_dnnl_scratch_done(sd_cl *cl, sd_dnnl_mapping *m, sd_scratch *tmp)
{
    sd_dnnl_unmap(cl, m);
    sd_scratch_release(cl, tmp);
}

sd_status sd_dnnl_memory(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *md, void *ptr,
                        dnnl_memory_t *out)
{
    dnnl_status_t s = dnnl_memory_create(out, md, d->engine, ptr ? ptr : DNNL_MEMORY_NONE);
    return s == dnnl_success ? SD_OK : sd_dnnl_fail(cl, s, "creating a memory object");
}

sd_status sd_dnnl_reorder(sd_cl *cl, struct sd_dnnl *d, const dnnl_memory_desc_t *src_md, void *src,
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
    if ((st = sd_dnnl_memory(cl, d, src_md, src, &ms)) || (st = sd_dnnl_memory(cl, d, dst_md, dst, &md)))
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

/* An f32 copy of an f16 host array (src_f16 of n values), or src itself when it is f32. */
static sd_status as_f32(sd_cl *cl, const void *src, sd_dtype dtype, size_t n, float **out, float **owned)
{
    *owned = NULL;
    if (dtype == SD_DTYPE_F32) {
        *out = (float *)src;
        return SD_OK;
    }
    if (!(*owned = malloc(n ? n * sizeof(float) : 1)))
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory for a bf16 operand (%zu values)", n);
    sd_dnnl_half_to_float(*owned, src, n);
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
        st = sd_dnnl_reorder(cl, d, from_f32, f32, to, dst, scale);
    free(owned);
    return st;
}

static bool same_md(const void *kept, const void *want)
{
    return dnnl_memory_desc_equal(kept, want) != 0;
}

/* The weights `t` (whose elements `plain_md` describes as f32) in the layout `want`, mapped in
 * *view: t's kept form under key when it has one in that layout; when t's data was released,
 * its kept form in another layout (oneDNN's choice can depend on the rows of a product) relaid
 * into *tmp; else converted, and kept with t when t is
 * constant (t's own data is then released when t is releasable), or left in *tmp for
 * sd_dnnl_scratch_done to give back. */
static sd_status weights_in(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *t, const sd_derived_key *key,
                            const dnnl_memory_desc_t *plain_md, const dnnl_memory_desc_t *want, sd_dnnl_mapping *view,
                            sd_scratch *tmp)
{
    size_t bytes = dnnl_memory_desc_get_size(want);
    cl_mem kept = t->derived ? sd_derived_find_meta(t, key, same_md, want) : NULL;
    if (kept)
        return sd_dnnl_map(cl, kept, bytes, false, view);
    sd_dnnl_mapping src = {0};
    const void *kept_md = NULL;
    kept = sd_dtensor_released(t) ? sd_derived_find_any_meta(t, key, &kept_md) : NULL;
    if (kept) { /* t's data is gone: its kept form in another layout, relaid for this call */
        sd_status st = sd_dnnl_map(cl, kept, dnnl_memory_desc_get_size(kept_md), false, &src);
        if (!st && !(st = sd_dnnl_scratch_view(cl, bytes, "bf16 weights", tmp, view)))
            st = sd_dnnl_reorder(cl, d, kept_md, src.ptr, want, view->ptr, 1.0f);
        sd_dnnl_unmap(cl, &src);
        return st;
    }
    sd_status st = sd_dtensor_require_data(t, "bf16 product", "weight");
    if (st)
        return st;
    st = (t->derived ? sd_scratch_get_exact : sd_scratch_get)(cl, bytes, 1, "bf16 weights", tmp);
    if (!st)
        st = sd_dnnl_map(cl, t->buf, t->numel * sd_dtype_size(t->dtype), false, &src);
    if (!st && !(st = sd_dnnl_map(cl, tmp->buf, bytes, true, view)))
        st = reorder_any(cl, d, plain_md, src.ptr, t->dtype, t->numel, want, view->ptr, 1.0f);
    sd_dnnl_unmap(cl, &src);
    if (!st && t->derived && !(st = sd_derived_keep_meta(t, key, tmp, want, sizeof *want)))
        sd_dtensor_release_data(t); /* only the kept form is read from now on, when t's owner allows */
    return st;
}

/* oneDNN post-op for act (none: no post-ops). */
sd_status sd_dnnl_attr(sd_cl *cl, sd_act act, dnnl_primitive_attr_t *attr)
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

sd_status sd_dnnl_execute(sd_cl *cl, struct sd_dnnl *d, dnnl_primitive_t prim, const sd_dnnl_arg *args, int n,
                          const char *what)
{
    sd_status st = SD_OK;
    dnnl_memory_t mems[SD_DNNL_MAX_ARGS] = {0};
    dnnl_exec_arg_t ex[SD_DNNL_MAX_ARGS];
    int m = 0;
    for (int i = 0; i < n && i < SD_DNNL_MAX_ARGS && !st; i++) {
        if (args[i].ptr && !(st = sd_dnnl_memory(cl, d, args[i].md, args[i].ptr, &mems[m]))) {
            ex[m] = (dnnl_exec_arg_t){args[i].arg, mems[m]};
            m++;
        }
    }
    if (st)
        goto done;
    TRY(dnnl_primitive_execute(prim, d->stream, m, ex), what);
    TRY(dnnl_stream_wait(d->stream), what);
done:
    for (int i = 0; i < m; i++)
        dnnl_memory_destroy(mems[i]);
    return st;
}

sd_status sd_dnnl_conv_make(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *x, const sd_dtensor *w,
                            const sd_dtensor *bias, const sd_conv2d_params *p, const sd_dtensor *out,
                            dnnl_data_type_t type, const sd_dnnl_band *band, sd_dnnl_conv *c)
{
    sd_status st = SD_OK;
    memset(c, 0, sizeof *c);
    dnnl_dims_t xd = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    dnnl_dims_t wd = {w->shape[0], w->shape[1], w->shape[2], w->shape[3]};
    dnnl_dims_t od = {out->shape[0], out->shape[1], out->shape[2], out->shape[3]};
    dnnl_dims_t bd = {w->shape[0]}, strides = {p->stride_h, p->stride_w};
    dnnl_dims_t pad_l = {band ? band->pad_top : p->pad_h, p->pad_w}, pad_r = {band ? band->pad_bottom : p->pad_h, p->pad_w};
    dnnl_memory_desc_t x_any, w_any, o_any;
    dnnl_primitive_attr_t attr = NULL;
    TRY(dnnl_memory_desc_init_by_tag(&x_any, 4, xd, type, dnnl_format_tag_any), "conv input");
    TRY(dnnl_memory_desc_init_by_tag(&c->w_plain, 4, wd, dnnl_f32, dnnl_abcd), "conv weights");
    if (band && band->w_layout)
        w_any = *band->w_layout;
    else
        TRY(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, type, dnnl_format_tag_any), "conv weights");
    TRY(dnnl_memory_desc_init_by_tag(&c->bias, 1, bd, dnnl_f32, dnnl_a), "conv bias");
    TRY(dnnl_memory_desc_init_by_tag(&o_any, 4, od, dnnl_f32, dnnl_format_tag_any), "conv output");
    dnnl_convolution_desc_t desc;
    TRY(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &x_any, &w_any,
                                           bias ? &c->bias : NULL, &o_any, strides, pad_l, pad_r),
        "convolution");
    if ((st = sd_dnnl_attr(cl, p->act, &attr)))
        goto done;
    TRY(dnnl_primitive_desc_create(&c->pd, &desc, attr, d->engine, NULL), "convolution");
    c->x_want = *dnnl_primitive_desc_query_md(c->pd, dnnl_query_src_md, 0);
    c->w_want = *dnnl_primitive_desc_query_md(c->pd, dnnl_query_weights_md, 0);
    c->o_want = *dnnl_primitive_desc_query_md(c->pd, dnnl_query_dst_md, 0);
    TRY(dnnl_primitive_create(&c->prim, c->pd), "convolution primitive");
done:
    dnnl_primitive_attr_destroy(attr);
    return st;
}

void sd_dnnl_conv_free(sd_dnnl_conv *c)
{
    dnnl_primitive_destroy(c->prim);
    dnnl_primitive_desc_destroy(c->pd);
    c->prim = NULL;
    c->pd = NULL;
}

/* ---- Matrix products ---- */

sd_status sd_dnnl_matmul_run(sd_cl *cl, const sd_dnnl_matmul *j)
{
    struct sd_dnnl *d;
    sd_status st = sd_dnnl_engine(cl, &d);
    if (st)
        return st;
    if ((st = sd_cl_finish(cl)))
        return st;
    long M = j->M, N = j->N, K = j->K;
    dnnl_memory_desc_t a_src, a_bf, b_src, b_want, bias_md, c_md, b_any;
    /* One B for every batch and A's batches stacked as rows: a 2-D product, for which oneDNN 2.6
     * lays B out in its blocked (AMX / VNNI) form; for 3-D products it keeps B plain and repacks
     * it on every call (SDXL's 8192 x 640 x 5120 ran at a fifth of its speed). */
    bool flat = j->batch_b == 1 && (j->batch_a == 1 || !j->trans_a);
    int nd = flat ? 2 : 3;
    long rows = flat ? j->batch_a * M : M;
    dnnl_dims_t ad = {j->batch_a, rows, K}, bd = {j->batch_b, K, N}, cd = {j->batch_a, rows, N}, biasd = {1, 1, N};
    dnnl_dims_t as = {M * K, j->trans_a ? 1 : K, j->trans_a ? M : 1};
    dnnl_dims_t bs = {K * N, j->trans_b ? 1 : N, j->trans_b ? K : 1};
    sd_dnnl_mapping am = {0}, biasm = {0}, cm = {0}, bw = {0}, aw = {0};
    sd_scratch b_tmp = {0}, a_tmp = {0};
    sd_derived_key key = {SD_DERIVED_DNNL_MATMUL, {N, K, j->trans_b, j->batch_b}};
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_format_tag_t plain = flat ? dnnl_ab : dnnl_abc;
    int skip = 3 - nd; /* the batch dimension's entries, left out of a 2-D product's dims and strides */
    TRY(dnnl_memory_desc_init_by_strides(&a_src, nd, ad + skip, dnnl_f32, as + skip), "matmul A");
    TRY(dnnl_memory_desc_init_by_tag(&a_bf, nd, ad + skip, dnnl_bf16, plain), "matmul A");
    TRY(dnnl_memory_desc_init_by_strides(&b_src, nd, bd + skip, dnnl_f32, bs + skip), "matmul B");
    TRY(dnnl_memory_desc_init_by_tag(&b_any, nd, bd + skip, dnnl_bf16, dnnl_format_tag_any), "matmul B");
    TRY(dnnl_memory_desc_init_by_tag(&c_md, nd, cd + skip, dnnl_f32, plain), "matmul C");
    TRY(dnnl_memory_desc_init_by_tag(&bias_md, nd, biasd + skip, dnnl_f32, plain), "matmul bias");
    dnnl_matmul_desc_t desc;
    TRY(dnnl_matmul_desc_init(&desc, &a_bf, &b_any, j->bias ? &bias_md : NULL, &c_md), "matmul");
    if ((st = sd_dnnl_attr(cl, j->act, &attr)))
        goto done;
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL), "matmul");
    b_want = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    TRY(dnnl_primitive_create(&prim, pd), "matmul primitive");

    if ((st = sd_dnnl_map(cl, j->a->buf, j->a->numel * sd_dtype_size(j->a->dtype), false, &am)) ||
        (st = sd_dnnl_map(cl, j->bias ? j->bias->buf : NULL, (size_t)N * 4, false, &biasm)) ||
        (st = sd_dnnl_map(cl, j->out->buf, j->out->numel * 4, true, &cm)))
        goto done;
    /* A scaled by alpha while it is rounded to bf16 (alpha applies to the product alone). */
    if ((st = sd_dnnl_scratch_view(cl, dnnl_memory_desc_get_size(&a_bf), "bf16 matmul A", &a_tmp, &aw)) ||
        (st = reorder_any(cl, d, &a_src, am.ptr, j->a->dtype, j->a->numel, &a_bf, aw.ptr, j->alpha)))
        goto done;
    if ((st = weights_in(cl, d, j->b, &key, &b_src, &b_want, &bw, &b_tmp)))
        goto done;
    sd_dnnl_arg args[] = {{DNNL_ARG_SRC, &a_bf, aw.ptr}, {DNNL_ARG_WEIGHTS, &b_want, bw.ptr},
                          {DNNL_ARG_DST, &c_md, cm.ptr}, {DNNL_ARG_BIAS, &bias_md, biasm.ptr}};
    st = sd_dnnl_execute(cl, d, prim, args, 4, "matmul");
done:
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    sd_dnnl_scratch_done(cl, &bw, &b_tmp);
    sd_dnnl_scratch_done(cl, &aw, &a_tmp);
    sd_dnnl_unmap(cl, &am);
    sd_dnnl_unmap(cl, &biasm);
    sd_dnnl_unmap(cl, &cm);
    return st;
}

/* ---- Convolution in bands of output rows (both precisions) ---- */

/* An image whose NHWC input and output copies together exceed this many bytes (the VAE
 * decoder's 128-512 channels at 256x256 and 512x512, whose whole copies raised its fp32 peak RSS
 * from 903 to 1488 MiB) runs in bands of its output rows, each with the input rows it reads,
 * whose copies take at most an eighth of it (smaller bands measured no slower: their copies
 * stay in cache); smaller images run whole, as one band. */
static size_t whole_bytes = (size_t)64 << 20;

size_t sd_dnnl_set_band_bytes(size_t bytes)
{
    size_t prior = whole_bytes;
    whole_bytes = bytes;
    return prior;
}

/* Images per call: one, as every fp32 call (an image's bits never depend on its batch), or, in
 * bf16, the whole batch where all of its copies fit one band (the many small calls of a 256x256
 * step measured 7-10% slower one image at a time; a 512x512 one 4-6% faster). */
static int64_t images_per_call(const sd_dtensor *x, const sd_dtensor *out, dnnl_data_type_t type)
{
    double copies = 4.0 * (double)(x->numel + out->numel);
    return type != dnnl_f32 && copies <= (double)whole_bytes / 8 ? x->shape[0] : 1;
}

/* Output rows per band of an image (copies counted as f32). A band reads input rows of its own;
 * with more padding than kernel rows a band could lie in the padding alone, and an f16 input is
 * widened an image at a time (oneDNN has no f16 -> bf16 reorder here), so those run whole. */
static int band_rows(const sd_dtensor *x, const sd_dtensor *w, const sd_conv2d_params *p, const sd_dtensor *out)
{
    int OH = (int)out->shape[2];
    double in_row = 4.0 * (double)x->shape[1] * (double)x->shape[3];
    double out_row = 4.0 * (double)out->shape[1] * (double)out->shape[3];
    if (x->dtype != SD_DTYPE_F32 || p->pad_h >= w->shape[2] ||
        in_row * (double)x->shape[2] + out_row * OH <= (double)whole_bytes)
        return OH;
    double rows = (double)whole_bytes / 8 / (in_row * p->stride_h + out_row);
    return rows < 1 ? 1 : rows >= OH ? OH : (int)rows;
}

/* A plain f32 NCHW layout of `rows` rows of `images` images of t, strided as the whole of t (an
 * f16 input's once widened: reorder_any). */
static sd_status band_md(sd_cl *cl, const sd_dtensor *t, int64_t images, int64_t rows, dnnl_memory_desc_t *md)
{
    sd_status st = SD_OK;
    dnnl_dims_t dims = {images, t->shape[1], rows, t->shape[3]};
    dnnl_dims_t strides = {t->shape[1] * t->shape[2] * t->shape[3], t->shape[2] * t->shape[3], t->shape[3], 1};
    TRY(dnnl_memory_desc_init_by_strides(md, 4, dims, dnnl_f32, strides), "convolution band");
done:
    return st;
}

/* A pooled scratch view of at least `bytes` in *tmp / *m (*have bytes mapped), replacing a
 * smaller one. */
static sd_status scratch_at_least(sd_cl *cl, size_t bytes, const char *what, sd_scratch *tmp, sd_dnnl_mapping *m,
                                  size_t *have)
{
    if (m->ptr && *have >= bytes)
        return SD_OK;
    sd_dnnl_scratch_done(cl, m, tmp);
    *have = bytes;
    return sd_dnnl_scratch_view(cl, bytes, what, tmp, m);
}

/* Whether pd is one of oneDNN's reference implementations (plain loops, hundreds of times slower
 * than its JIT kernels). */
static bool reference_impl(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
           strncmp(impl, "ref", 3) == 0;
}

/* Remakes a band's primitive c with the weights layout of its own choosing, for a band that the
 * first band's layout would hand to a reference implementation (SDXL's 960 -> 320 1x1
 * convolution at 128x128: its last band of 8 rows ran 6 s instead of 4 ms); a scratch view of
 * at least that layout's size in *w_tmp / *ww (*have bytes) receives the relaid weights. */
static sd_status own_weights_band(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *x, const sd_dtensor *w,
                                  const sd_dtensor *bias, const sd_conv2d_params *p, const sd_dtensor *out,
                                  dnnl_data_type_t type, const sd_dnnl_band *band, sd_dnnl_conv *c,
                                  sd_scratch *w_tmp, sd_dnnl_mapping *ww, size_t *have)
{
    sd_dnnl_band any = *band;
    any.w_layout = NULL;
    sd_dnnl_conv_free(c);
    sd_status st = sd_dnnl_conv_make(cl, d, x, w, bias, p, out, type, &any, c);
    return st ? st : scratch_at_least(cl, dnnl_memory_desc_get_size(&c->w_want), "conv2d band weights", w_tmp, ww, have);
}

sd_status sd_dnnl_conv_bands(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *x, const sd_dtensor *w,
                             const sd_dtensor *bias, const sd_conv2d_params *p, sd_dtensor *out,
                             dnnl_data_type_t type, sd_dnnl_conv_weights_fn weights)
{
    int H = (int)x->shape[2], W = (int)x->shape[3], OH = (int)out->shape[2], OW = (int)out->shape[3];
    int KH = (int)w->shape[2], rows = band_rows(x, w, p, out);
    int64_t per_call = rows == OH ? images_per_call(x, out, type) : 1;
    size_t x_step = x->numel / (size_t)x->shape[0], o_step = out->numel / (size_t)out->shape[0];
    size_t x_size = sd_dtype_size(x->dtype);
    sd_dnnl_conv c = {0};
    dnnl_memory_desc_t w_layout, x_band, o_band, relaid = {0}; /* relaid: the layout ww holds the weights in */
    const dnnl_memory_desc_t *band_w_md = &w_layout;
    sd_dnnl_mapping xm = {0}, bm = {0}, om = {0}, xw = {0}, ow = {0}, wv = {0}, ww = {0};
    sd_scratch x_tmp = {0}, o_tmp = {0}, wv_tmp = {0}, w_tmp = {0};
    size_t xw_bytes = 0, ow_bytes = 0, ww_bytes = 0;
    void *wp = NULL, *band_wp = NULL;
    bool x_direct = false, o_direct = false;
    int made[4] = {-1, -1, -1, -1}; /* the band shape c was made for: input rows, output rows, padding */
    sd_status st;
    if ((st = sd_dnnl_map(cl, x->buf, x->numel * x_size, false, &xm)) ||
        (st = sd_dnnl_map(cl, bias ? bias->buf : NULL, (size_t)w->shape[0] * 4, false, &bm)) ||
        (st = sd_dnnl_map(cl, out->buf, out->numel * 4, true, &om)))
        goto done;
    for (int64_t b = 0; b < x->shape[0] && !st; b += per_call) {
        for (int a = 0; a < OH && !st; a += rows) {
            int n = OH - a < rows ? OH - a : rows;
            int in_lo = a * p->stride_h - p->pad_h, in_hi = (a + n - 1) * p->stride_h - p->pad_h + KH;
            int r0 = in_lo > 0 ? in_lo : 0, hb = (in_hi < H ? in_hi : H) - r0;
            int shape[4] = {hb, n, in_lo < 0 ? -in_lo : 0, in_hi > H ? in_hi - H : 0};
            if (memcmp(shape, made, sizeof shape) != 0) {
                sd_dtensor x1 = *x, o1 = *out;
                x1.shape[0] = o1.shape[0] = per_call;
                x1.shape[2] = hb;
                o1.shape[2] = n;
                sd_dnnl_band band = {shape[2], shape[3], wp ? &w_layout : NULL};
                sd_dnnl_conv_free(&c);
                memcpy(made, shape, sizeof made);
                if ((st = sd_dnnl_conv_make(cl, d, &x1, w, bias, p, &o1, type, &band, &c)) ||
                    (wp && reference_impl(c.pd) && (st = own_weights_band(cl, d, &x1, w, bias, p, &o1, type, &band,
                                                                          &c, &w_tmp, &ww, &ww_bytes))) ||
                    (st = band_md(cl, x, per_call, hb, &x_band)) ||
                    (st = band_md(cl, out, per_call, n, &o_band)))
                    break;
                cl->stats.dnnl_reference_convs += reference_impl(c.pd);
                x_direct = dnnl_memory_desc_equal(&c.x_want, &x_band);
                o_direct = dnnl_memory_desc_equal(&c.o_want, &o_band);
                if ((!x_direct && (st = scratch_at_least(cl, dnnl_memory_desc_get_size(&c.x_want), "conv2d input",
                                                         &x_tmp, &xw, &xw_bytes))) ||
                    (!o_direct && (st = scratch_at_least(cl, dnnl_memory_desc_get_size(&c.o_want), "conv2d output",
                                                         &o_tmp, &ow, &ow_bytes))))
                    break;
                if (!wp) {
                    w_layout = c.w_want;
                    if ((st = weights(cl, d, w, &c, &wv, &wv_tmp)))
                        break;
                    wp = wv.ptr;
                }
                /* A band whose primitive wants its own weights layout gets them relaid from the
                 * first's (once while that layout stays the one wanted, image after image). */
                bool own = !dnnl_memory_desc_equal(&c.w_want, &w_layout);
                band_w_md = own ? &c.w_want : &w_layout;
                band_wp = own ? ww.ptr : wp;
                if (own && !dnnl_memory_desc_equal(&relaid, &c.w_want)) {
                    if ((st = sd_dnnl_reorder(cl, d, &w_layout, wp, &c.w_want, ww.ptr, 1.0f)))
                        break;
                    relaid = c.w_want;
                }
            }
            char *xb = (char *)xm.ptr + ((size_t)b * x_step + (size_t)r0 * W) * x_size;
            float *ob = (float *)om.ptr + (size_t)b * o_step + (size_t)a * OW;
            /* f16 inputs run whole (band_rows): the band is its images' x_step values each. */
            if (!x_direct &&
                (st = reorder_any(cl, d, &x_band, xb, x->dtype, x_step * per_call, &c.x_want, xw.ptr, 1.0f)))
                break;
            sd_dnnl_arg args[] = {{DNNL_ARG_SRC, &c.x_want, x_direct ? (void *)xb : xw.ptr},
                                  {DNNL_ARG_WEIGHTS, band_w_md, band_wp},
                                  {DNNL_ARG_DST, &c.o_want, o_direct ? (void *)ob : ow.ptr},
                                  {DNNL_ARG_BIAS, &c.bias, bm.ptr}};
            if (!(st = sd_dnnl_execute(cl, d, c.prim, args, 4, "convolution")) && !o_direct)
                st = sd_dnnl_reorder(cl, d, &c.o_want, ow.ptr, &o_band, ob, 1.0f);
        }
    }
done:
    sd_dnnl_conv_free(&c);
    sd_dnnl_scratch_done(cl, &xw, &x_tmp);
    sd_dnnl_scratch_done(cl, &ow, &o_tmp);
    sd_dnnl_scratch_done(cl, &ww, &w_tmp);
    sd_dnnl_scratch_done(cl, &wv, &wv_tmp);
    sd_dnnl_unmap(cl, &xm);
    sd_dnnl_unmap(cl, &bm);
    sd_dnnl_unmap(cl, &om);
    return st;
}

/* The bf16 route's weights for the bands: w's kept bf16 form in the first band's layout. */
static sd_status bf16_weights_ready(sd_cl *cl, struct sd_dnnl *d, const sd_dtensor *w, const sd_dnnl_conv *c,
                                    sd_dnnl_mapping *view, sd_scratch *tmp)
{
    sd_derived_key key = {SD_DERIVED_DNNL_CONV, {w->shape[0], w->shape[1], w->shape[2], w->shape[3]}};
    return weights_in(cl, d, w, &key, &c->w_plain, &c->w_want, view, tmp);
}

sd_status sd_dnnl_conv2d_run(sd_cl *cl, const sd_dtensor *x, const sd_dtensor *w, const sd_dtensor *bias,
                             const sd_conv2d_params *p, sd_dtensor *out)
{
    struct sd_dnnl *d;
    sd_status st = sd_dnnl_engine(cl, &d);
    if (st || (st = sd_cl_finish(cl)))
        return st;
    return sd_dnnl_conv_bands(cl, d, x, w, bias, p, out, dnnl_bf16, bf16_weights_ready);
}

#endif
