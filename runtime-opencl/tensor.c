/* Device tensors on pooled buffers; host copies with fp16 conversion. */
#include "runtime-opencl/tensor.h"
#include "runtime-opencl/gemm.h"
#include "core/checked.h"
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t elems, bytes;
} dtypes[] = {
    [SD_DTYPE_F32] = {"f32", 1, 4},       [SD_DTYPE_F16] = {"f16", 1, 2},
    [SD_DTYPE_Q4_0] = {"q4_0", 32, 18},   [SD_DTYPE_Q4_1] = {"q4_1", 32, 20},
    [SD_DTYPE_Q5_0] = {"q5_0", 32, 22},   [SD_DTYPE_Q5_1] = {"q5_1", 32, 24},
    [SD_DTYPE_Q8_0] = {"q8_0", 32, 34},   [SD_DTYPE_Q4_K] = {"q4_k", 256, 144},
    [SD_DTYPE_Q5_K] = {"q5_k", 256, 176}, [SD_DTYPE_Q6_K] = {"q6_k", 256, 210},
    [SD_DTYPE_F8_E4M3] = {"f8_e4m3fn", 1, 1}, [SD_DTYPE_F8_E5M2] = {"f8_e5m2", 1, 1},
};

size_t sd_dtype_size(sd_dtype dtype)
{
    return dtypes[dtype].elems == 1 ? dtypes[dtype].bytes : 0;
}

const char *sd_dtype_name(sd_dtype dtype)
{
    return dtypes[dtype].name;
}

void sd_dtype_block(sd_dtype dtype, size_t *elems, size_t *bytes)
{
    *elems = dtypes[dtype].elems;
    *bytes = dtypes[dtype].bytes;
}

bool sd_dtype_is_blocks(sd_dtype dtype)
{
    return dtype != SD_DTYPE_F32 && dtype != SD_DTYPE_F16;
}

sd_status sd_dtensor_require_float(const sd_dtensor *t, const char *op, const char *what)
{
    char d[96];
    if (!t || !sd_dtype_is_blocks(t->dtype))
        return SD_OK;
    return sd_set_error(t->cl->ctx, SD_ERR_INVALID, "%s: %s %s holds quantised weights, which only linear reads", op,
                        what, sd_dtensor_describe(t, d, sizeof d));
}

size_t sd_dtensor_bytes(const sd_dtensor *t)
{
    return t->numel / dtypes[t->dtype].elems * dtypes[t->dtype].bytes;
}


const char *sd_dtensor_describe(const sd_dtensor *t, char *buf, size_t size)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < t->ndim && used < size; i++) {
        n = snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < size)
        snprintf(buf + used, size - used, "] %s", sd_dtype_name(t->dtype));
    return buf;
}

static sd_status check_shape(sd_cl *cl, int ndim, const int64_t *shape, size_t elem, size_t *numel,
                             size_t *bytes)
{
    if (ndim < 1 || ndim > SD_TENSOR_MAX_DIMS)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "tensor rank %d is outside 1..%d", ndim,
                            SD_TENSOR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return sd_set_error(cl->ctx, SD_ERR_INVALID, "tensor dimension %d is negative (%lld)", i,
                                (long long)shape[i]);
    if (!sd_shape_bytes(shape, ndim, 1, numel) || !sd_shape_bytes(shape, ndim, elem, bytes))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "tensor size overflows");
    return SD_OK;
}

/* sd_dtensor_new and sd_dtensor_new_exact: `exact` picks the buffer getter. */
static sd_status tensor_new(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, bool exact,
                            sd_dtensor **out)
{
    *out = NULL;
    size_t numel, bytes, be, bb;
    sd_dtype_block(dtype, &be, &bb);
    sd_status st = check_shape(cl, ndim, shape, 1, &numel, &bytes);
    if (st)
        return st;
    if (numel % be || !sd_mul_size(numel / be, bb, &bytes))
        return sd_set_error(cl->ctx, SD_ERR_LIMIT, "tensor size overflows");
    sd_dtensor *t = calloc(1, sizeof *t);
    if (!t)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    t->cl = cl;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    char what[160] = "tensor ";
    sd_dtensor_describe(t, what + 7, sizeof what - 7);
    st = exact ? sd_cl_buffer_get_exact(cl, bytes, what, &t->buf, &t->cap_bytes)
               : sd_cl_buffer_get(cl, bytes, what, &t->buf, &t->cap_bytes);
    if (st) {
        free(t);
        return st;
    }
    *out = t;
    return SD_OK;
}

/* Block types only through sd_dtensor_new_blocks. */
static sd_status float_only(sd_cl *cl, sd_dtype dtype)
{
    return sd_dtype_is_blocks(dtype) ? sd_set_error(cl->ctx, SD_ERR_INVALID, "tensor of %s: not an element type",
                                                    sd_dtype_name(dtype))
                                     : SD_OK;
}

sd_status sd_dtensor_new(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, sd_dtensor **out)
{
    *out = NULL;
    sd_status st = float_only(cl, dtype);
    return st ? st : tensor_new(cl, dtype, ndim, shape, false, out);
}

sd_status sd_dtensor_new_exact(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape,
                               sd_dtensor **out)
{
    *out = NULL;
    sd_status st = float_only(cl, dtype);
    return st ? st : tensor_new(cl, dtype, ndim, shape, true, out);
}

sd_status sd_dtensor_new_blocks(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, const void *data,
                                size_t nbytes, sd_dtensor **out)
{
    *out = NULL;
    size_t be, bb, numel, want;
    sd_dtype_block(dtype, &be, &bb);
    if (!sd_dtype_is_blocks(dtype) || ndim < 1 || ndim > SD_TENSOR_MAX_DIMS || shape[ndim - 1] < 0 ||
        shape[ndim - 1] % (int64_t)be || !sd_shape_bytes(shape, ndim, 1, &numel) ||
        !sd_mul_size(numel / be, bb, &want) || want != nbytes)
        return sd_set_error(cl->ctx, SD_ERR_INVALID,
                            "tensor of %s: %zu bytes are not whole blocks (%zu elements, %zu bytes each) of a "
                            "rank-%d shape whose rows are whole blocks",
                            sd_dtype_name(dtype), nbytes, be, bb, ndim);
    sd_status st = tensor_new(cl, dtype, ndim, shape, true, out);
    if (!st && nbytes && (st = sd_cl_write(cl, (*out)->buf, 0, nbytes, data))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

sd_status sd_dtensor_zeros(sd_cl *cl, sd_dtype dtype, int ndim, const int64_t *shape, sd_dtensor **out)
{
    sd_status st = sd_dtensor_new(cl, dtype, ndim, shape, out);
    if (!st && (st = sd_dtensor_zero(*out))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

/* Kept forms of a constant tensor: a list of buffers, each with the key it was computed for. */
typedef struct derived_form {
    struct derived_form *next;
    sd_derived_key key;
    sd_scratch s;
    void *meta; /* NULL or a copy of the layout description it was kept with */
} derived_form;

struct sd_dtensor_derived {
    derived_form *forms;
    sd_dtensor *owner; /* set by sd_dtensor_set_releasable */
    bool released;     /* the owner's data was freed */
};

static void derived_clear(sd_cl *cl, struct sd_dtensor_derived *d)
{
    while (d && d->forms) {
        derived_form *f = d->forms;
        d->forms = f->next;
        cl->stats.derived_bytes -= f->s.cap;
        sd_scratch_release(cl, &f->s);
        free(f->meta);
        free(f);
    }
}

sd_status sd_dtensor_set_constant(sd_dtensor *t)
{
    if (t->derived)
        return SD_OK;
    if (!(t->derived = calloc(1, sizeof *t->derived)))
        return sd_set_error(t->cl->ctx, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

void sd_dtensor_set_releasable(sd_dtensor *t)
{
    if (t->derived)
        t->derived->owner = t;
}

void sd_dtensor_release_data(const sd_dtensor *t)
{
    struct sd_dtensor_derived *d = t->derived;
    if (!d || !d->owner || d->released || !d->owner->buf)
        return;
    sd_dtensor *o = d->owner;
    o->cl->stats.live_bytes -= o->cap_bytes;
    clReleaseMemObject(o->buf);
    o->buf = NULL;
    d->released = true;
}

bool sd_dtensor_released(const sd_dtensor *t)
{
    return t && t->derived && t->derived->released;
}

sd_status sd_dtensor_require_data(const sd_dtensor *t, const char *op, const char *what)
{
    char desc[96];
    if (!sd_dtensor_released(t))
        return SD_OK;
    return sd_set_error(t->cl->ctx, SD_ERR_INVALID, "%s: %s %s was released after its bf16 conversion", op, what,
                        sd_dtensor_describe(t, desc, sizeof desc));
}

static bool same_key(const sd_derived_key *a, const sd_derived_key *b)
{
    if (a->kind != b->kind)
        return false;
    for (size_t i = 0; i < sizeof a->p / sizeof a->p[0]; i++)
        if (a->p[i] != b->p[i])
            return false;
    return true;
}

cl_mem sd_derived_find(const sd_dtensor *t, const sd_derived_key *key)
{
    for (derived_form *f = t->derived ? t->derived->forms : NULL; f; f = f->next)
        if (same_key(&f->key, key))
            return f->s.buf;
    return NULL;
}

/* Hands s over to t's forms under key with a copy of meta (may be NULL). */
static sd_status derived_keep(const sd_dtensor *t, const sd_derived_key *key, sd_scratch *s, const void *meta,
                              size_t meta_size)
{
    derived_form *f = calloc(1, sizeof *f);
    if (!f || (meta && !(f->meta = malloc(meta_size)))) {
        free(f);
        return sd_set_error(t->cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    if (meta)
        memcpy(f->meta, meta, meta_size);
    f->key = *key;
    f->s = *s;
    f->next = t->derived->forms;
    t->derived->forms = f;
    t->cl->stats.derived_builds++;
    t->cl->stats.derived_bytes += s->cap;
    s->buf = NULL;
    s->cap = 0;
    return SD_OK;
}

sd_status sd_derived_add(const sd_dtensor *t, const sd_derived_key *key, sd_scratch *s)
{
    if (t->cl->stats.derived_bytes + s->cap > t->cl->keep_limit)
        return SD_OK;
    return derived_keep(t, key, s, NULL, 0);
}

cl_mem sd_derived_find_meta(const sd_dtensor *t, const sd_derived_key *key,
                            bool (*fits)(const void *meta, const void *want), const void *want)
{
    for (derived_form *f = t->derived ? t->derived->forms : NULL; f; f = f->next)
        if (same_key(&f->key, key) && f->meta && fits(f->meta, want))
            return f->s.buf;
    return NULL;
}

cl_mem sd_derived_find_any_meta(const sd_dtensor *t, const sd_derived_key *key, const void **meta)
{
    for (derived_form *f = t->derived ? t->derived->forms : NULL; f; f = f->next)
        if (same_key(&f->key, key) && f->meta) {
            *meta = f->meta;
            return f->s.buf;
        }
    return NULL;
}

sd_status sd_derived_keep_meta(const sd_dtensor *t, const sd_derived_key *key, sd_scratch *s, const void *meta,
                               size_t meta_size)
{
    return derived_keep(t, key, s, meta, meta_size);
}

sd_status sd_dtensor_drop_on_error(sd_dtensor **out, sd_status st)
{
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

void sd_dtensor_free(sd_dtensor *t)
{
    if (!t)
        return;
    derived_clear(t->cl, t->derived);
    free(t->derived);
    sd_cl_buffer_release(t->cl, t->buf, t->cap_bytes);
    free(t);
}

sd_status sd_dtensor_upload(sd_dtensor *t, const float *host)
{
    sd_status st = sd_dtensor_require_float(t, "upload", "tensor");
    if (st)
        return st;
    derived_clear(t->cl, t->derived);
    if (t->dtype == SD_DTYPE_F32)
        return sd_cl_write(t->cl, t->buf, 0, t->numel * 4, host);
    uint16_t *h = malloc(t->numel ? t->numel * 2 : 1);
    if (!h)
        return sd_set_error(t->cl->ctx, SD_ERR_NOMEM, "out of memory converting a tensor to f16");
    for (size_t i = 0; i < t->numel; i++)
        h[i] = sd_float_to_half(host[i]);
    st = sd_cl_write(t->cl, t->buf, 0, t->numel * 2, h);
    free(h);
    return st;
}

sd_status sd_dtensor_upload_f16(sd_dtensor *t, const uint16_t *host)
{
    char d[96];
    if (t->dtype != SD_DTYPE_F16)
        return sd_set_error(t->cl->ctx, SD_ERR_INVALID, "f16 upload into %s", sd_dtensor_describe(t, d, sizeof d));
    derived_clear(t->cl, t->derived);
    return sd_cl_write(t->cl, t->buf, 0, t->numel * 2, host);
}

sd_status sd_dtensor_download(const sd_dtensor *t, float *host)
{
    sd_status st = sd_dtensor_require_float(t, "download", "tensor");
    if (st)
        return st;
    if (t->dtype == SD_DTYPE_F32)
        return sd_cl_read(t->cl, t->buf, 0, t->numel * 4, host);
    uint16_t *h = malloc(t->numel ? t->numel * 2 : 1);
    if (!h)
        return sd_set_error(t->cl->ctx, SD_ERR_NOMEM, "out of memory converting a tensor from f16");
    st = sd_cl_read(t->cl, t->buf, 0, t->numel * 2, h);
    for (size_t i = 0; !st && i < t->numel; i++)
        host[i] = sd_half_to_float(h[i]);
    free(h);
    return st;
}

sd_status sd_dtensor_from_host(sd_cl *cl, const sd_tensor *host, sd_dtype dtype, sd_dtensor **out)
{
    sd_status st = sd_dtensor_new(cl, dtype, host->ndim, host->shape, out);
    if (!st && (st = sd_dtensor_upload(*out, host->data))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

sd_status sd_dtensor_zero(sd_dtensor *t)
{
    sd_status st = sd_dtensor_require_float(t, "zero", "tensor");
    if (st)
        return st;
    derived_clear(t->cl, t->derived);
    size_t bytes = t->numel * sd_dtype_size(t->dtype);
    if (bytes == 0)
        return SD_OK;
    cl_uint zero = 0;
    size_t pattern = bytes % 4 == 0 ? 4 : 2;
    cl_int err = clEnqueueFillBuffer(t->cl->queue, t->buf, &zero, pattern, 0, bytes, 0, NULL, NULL);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(t->cl, err, "clEnqueueFillBuffer");
}

sd_status sd_dtensor_copy(sd_dtensor *dst, const sd_dtensor *src)
{
    char a[96], b[96];
    sd_status st = sd_dtensor_require_float(src, "tensor copy", "source");
    if (st)
        return st;
    if (dst->dtype != src->dtype || dst->numel != src->numel)
        return sd_set_error(dst->cl->ctx, SD_ERR_INVALID, "tensor copy: %s into %s",
                            sd_dtensor_describe(src, a, sizeof a), sd_dtensor_describe(dst, b, sizeof b));
    derived_clear(dst->cl, dst->derived);
    size_t bytes = src->numel * sd_dtype_size(src->dtype);
    if (bytes == 0 || dst->buf == src->buf)
        return SD_OK;
    cl_int err = clEnqueueCopyBuffer(dst->cl->queue, src->buf, dst->buf, 0, 0, bytes, 0, NULL, NULL);
    return err == CL_SUCCESS ? SD_OK : SD_CL_FAIL(dst->cl, err, "clEnqueueCopyBuffer");
}

sd_status sd_dtensor_reshape(sd_dtensor *t, int ndim, const int64_t *shape)
{
    size_t numel, bytes;
    sd_status st = check_shape(t->cl, ndim, shape, 1, &numel, &bytes);
    if (st)
        return st;
    size_t be, bb;
    sd_dtype_block(t->dtype, &be, &bb);
    if (numel != t->numel || shape[ndim - 1] % (int64_t)be) {
        char a[96];
        return sd_set_error(t->cl->ctx, SD_ERR_INVALID, "cannot reshape %s to %zu elements",
                            sd_dtensor_describe(t, a, sizeof a), numel);
    }
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    return SD_OK;
}

bool sd_dtensor_same_shape(const sd_dtensor *a, const sd_dtensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}
