/* Lazily uploaded device weights (see weights.h). Uploaded tensors live in an open-addressing
 * table keyed by their name without the prefix. A patched view keeps only its patched tensors
 * in its table and forwards every other name to its base set. */
#include "ml/loading/weights.h"
#include "runtime-opencl/ops_quant.h"
#include "core/checked.h"
#include "core/half.h"
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    char *name;          /* without prefix; NULL = empty */
    sd_dtensor *tensor;
} slot;

struct sd_weights {
    sd_cl *cl;
    const sd_safetensors *st;
    char *prefix;
    sd_dtype dtype;
    slot *slots;
    size_t cap, used;    /* cap is a power of two */
    size_t device_bytes;
    sd_weights *base;    /* patched view: the set it patches; NULL for a plain set */
    uint64_t serial;     /* unique per set created in this process (sd_weights_serial) */
    sd_weight_patcher patcher;
};

sd_status sd_weights_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype dtype,
                         sd_weights **out)
{
    assert(st);
    *out = NULL;
    sd_weights *w = calloc(1, sizeof *w);
    if (!w || !(w->prefix = sd_strdup(prefix ? prefix : "")) ||
        !(w->slots = calloc(w->cap = 256, sizeof *w->slots))) {
        if (w)
            free(w->prefix);
        free(w);
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    w->cl = cl;
    w->st = st;
    w->dtype = dtype;
    static atomic_uint_fast64_t next_serial = 1;
    w->serial = atomic_fetch_add(&next_serial, 1);
    *out = w;
    return SD_OK;
}

void sd_weights_release(sd_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->cap; i++) {
        free(w->slots[i].name);
        sd_dtensor_free(w->slots[i].tensor);
        w->slots[i] = (slot){0};
    }
    w->used = 0;
    w->device_bytes = 0;
}

void sd_weights_free(sd_weights *w)
{
    if (!w)
        return;
    sd_weights_release(w);
    free(w->slots);
    free(w->prefix);
    free(w);
}

static size_t hash_name(const char *s)
{
    size_t h = 1469598103934665603u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static slot *find_slot(slot *slots, size_t cap, const char *name)
{
    size_t i = hash_name(name) & (cap - 1);
    while (slots[i].name && strcmp(slots[i].name, name) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static bool grow(sd_weights *w)
{
    size_t cap = w->cap * 2;
    slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return false;
    for (size_t i = 0; i < w->cap; i++)
        if (w->slots[i].name)
            *find_slot(slots, cap, w->slots[i].name) = w->slots[i];
    free(w->slots);
    w->slots = slots;
    w->cap = cap;
    return true;
}

const sd_st_tensor *sd_weights_info(const sd_weights *w, const char *name)
{
    char full[512];
    if ((size_t)snprintf(full, sizeof full, "%s%s", w->prefix, name) >= sizeof full)
        return NULL;
    return sd_safetensors_find(w->st, full);
}

bool sd_weights_has(const sd_weights *w, const char *name)
{
    return sd_weights_info(w, name) != NULL;
}

/* ComfyUI's scaled fp8 files (t5xxl_fp8_e4m3fn_scaled, scaled FLUX checkpoints): "<x>.weight" is
 * stored divided by the single float "<x>.scale_weight" beside it. The scale tensor, or NULL. */
static const sd_st_tensor *scale_of(sd_weights *w, const char *name)
{
    size_t n = strlen(name);
    char full[320];
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0 ||
        snprintf(full, sizeof full, "%s%.*s.scale_weight", w->prefix, (int)(n - 7), name) >= (int)sizeof full)
        return NULL;
    return sd_safetensors_find(w->st, full);
}

/* t as floats times its scale (1 without one), into host as dtype (f16 rounded once, from the
 * f32 product). Errors: a scale that is not one finite float. */
static sd_status read_scaled(sd_weights *w, const sd_st_tensor *t, const sd_st_tensor *scale, sd_dtype dtype,
                             void *host)
{
    sd_context *ctx = w->cl->ctx;
    float s = 1.0f, *f = dtype == SD_DTYPE_F16 ? malloc((t->numel ? t->numel : 1) * sizeof *f) : host;
    if (!f)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory loading tensor '%s'", t->name);
    sd_status st = SD_OK;
    if (scale && (scale->numel != 1 || !sd_st_dtype_is_weight(scale->dtype)))
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: scale '%s' is not a single float", sd_safetensors_path(w->st),
                          scale->name);
    if (!st && scale && !(st = sd_safetensors_read_f32(ctx, w->st, scale, &s, 1)) && !isfinite(s))
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: scale '%s' is not finite (%g)", sd_safetensors_path(w->st),
                          scale->name, (double)s);
    if (!st)
        st = sd_safetensors_read_f32(ctx, w->st, t, f, t->numel);
    for (size_t i = 0; !st && scale && i < t->numel; i++)
        f[i] *= s;
    for (size_t i = 0; !st && dtype == SD_DTYPE_F16 && i < t->numel; i++)
        ((uint16_t *)host)[i] = sd_float_to_half(f[i]);
    if (f != host)
        free(f);
    return st;
}

/* Host copy of t in dtype (IEEE f16 bits for F16, floats for F32), malloc'ed into *out. An
 * f16 tensor bound for f16 storage is copied as it is: no conversion through f32. */
static sd_status read_host(sd_weights *w, const char *name, const sd_st_tensor *t, sd_dtype dtype,
                           void **out)
{
    sd_context *ctx = w->cl->ctx;
    size_t bytes;
    *out = NULL;
    if (!sd_mul_size(t->numel ? t->numel : 1, sd_dtype_size(dtype), &bytes))
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: tensor '%s%s' is too large",
                            sd_safetensors_path(w->st), w->prefix, name);
    void *host = malloc(bytes);
    if (!host)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory loading tensor '%s%s'", w->prefix, name);
    const sd_st_tensor *scale = scale_of(w, name);
    sd_status st = dtype == SD_DTYPE_F16 && !scale ? sd_safetensors_read_f16(ctx, w->st, t, host, t->numel)
                                                   : read_scaled(w, t, scale, dtype, host);
    if (st) {
        free(host);
        return st;
    }
    *out = host;
    return SD_OK;
}

/* GGUF block-quantised tensors (SD_ST_GGML): their raw blocks read from the file, uploaded as
 * they are and expanded on the device, never on the host. */
static sd_status upload_blocks(sd_weights *w, const char *name, const sd_st_tensor *t, sd_dtype dtype,
                               sd_dtensor **out)
{
    void *blocks = malloc(t->nbytes ? t->nbytes : 1);
    if (!blocks)
        return sd_set_error(w->cl->ctx, SD_ERR_NOMEM, "out of memory loading tensor '%s%s'", w->prefix, name);
    sd_status st = sd_safetensors_read_raw(w->cl->ctx, w->st, t, blocks);
    if (!st)
        st = sd_op_dequantize(w->cl, (sd_qtype)t->ggml_type, blocks, t->nbytes, dtype, t->ndim, t->shape, out);
    free(blocks);
    return st;
}

/* What a caller asks of get: the set's dtype, f32, a Linear weight (block form kept), or the
 * set's dtype with its data on the device (patching reads it; WANT_ANY may give a tensor whose
 * data the bf16 precision released, since its products read their kept bf16 form). */
typedef enum weight_want { WANT_ANY, WANT_F32, WANT_LINEAR, WANT_DATA } weight_want;

/* The block dtype a Linear weight t keeps on the device; false when it is uploaded as floats. */
static bool linear_blocks(const sd_st_tensor *t, sd_dtype *dtype)
{
    if (t->ndim != 2)
        return false;
    if (t->dtype == SD_ST_F8_E4M3 || t->dtype == SD_ST_F8_E5M2) {
        *dtype = t->dtype == SD_ST_F8_E4M3 ? SD_DTYPE_F8_E4M3 : SD_DTYPE_F8_E5M2;
        return true;
    }
    return t->dtype == SD_ST_GGML && sd_qtype_dtype((sd_qtype)t->ggml_type, dtype);
}

/* t's bytes as stored, uploaded into a tensor of block dtype. */
static sd_status upload_kept(sd_weights *w, const char *name, const sd_st_tensor *t, sd_dtype dtype,
                             sd_dtensor **out)
{
    void *bytes = malloc(t->nbytes ? t->nbytes : 1);
    if (!bytes)
        return sd_set_error(w->cl->ctx, SD_ERR_NOMEM, "out of memory loading tensor '%s%s'", w->prefix, name);
    sd_status st = sd_safetensors_read_raw(w->cl->ctx, w->st, t, bytes);
    if (!st)
        st = sd_dtensor_new_blocks(w->cl, dtype, t->ndim, t->shape, bytes, t->nbytes, out);
    free(bytes);
    return st;
}

/* Float tensors go through a host copy in dtype; block dtypes keep the stored bytes. */
static sd_status upload(sd_weights *w, const char *name, const sd_st_tensor *t, sd_dtype dtype,
                        sd_dtensor **out)
{
    void *host = NULL;
    sd_dtensor *d = NULL;
    sd_status st;
    if (sd_dtype_is_blocks(dtype)) {
        st = upload_kept(w, name, t, dtype, &d);
    } else if (t->dtype == SD_ST_GGML) {
        st = upload_blocks(w, name, t, dtype, &d);
    } else {
        st = read_host(w, name, t, dtype, &host);
        if (!st)
            st = sd_dtensor_new_exact(w->cl, dtype, t->ndim, t->shape, &d);
        if (!st)
            st = dtype == SD_DTYPE_F16 ? sd_dtensor_upload_f16(d, host) : sd_dtensor_upload(d, host);
    }
    free(host);
    if (st) {
        sd_dtensor_free(d);
        sd_error_prefix(w->cl->ctx, "loading tensor '%s%s'", w->prefix, name);
        return st;
    }
    *out = d;
    return SD_OK;
}

static sd_status get(sd_weights *w, const char *name, weight_want want, const sd_dtensor **out);

/* A patched view's copy of name: the base set's tensor (f32 when force_f32) patched. */
static sd_status patch(sd_weights *w, const char *name, bool force_f32, sd_dtensor **out)
{
    const sd_dtensor *base;
    sd_status st = get(w->base, name, force_f32 ? WANT_F32 : WANT_DATA, &base);
    if (!st)
        st = w->patcher.apply(w->patcher.user, name, base, out);
    if (!st && (*out)->dtype != base->dtype)
        st = sd_set_error(w->cl->ctx, SD_ERR_INVALID, "patched tensor '%s%s' changed its dtype",
                          w->prefix, name);
    if (st) {
        sd_dtensor_free(*out);
        *out = NULL;
        sd_error_prefix(w->cl->ctx, "patching tensor '%s%s'", w->prefix, name);
    }
    return st;
}

static sd_status get(sd_weights *w, const char *name, weight_want want, const sd_dtensor **out)
{
    *out = NULL;
    bool force_f32 = want == WANT_F32;
    if (w->base && !w->patcher.claims(w->patcher.user, name))
        return get(w->base, name, want, out);
    slot *s = find_slot(w->slots, w->cap, name);
    if (s->name) {
        bool blocks = sd_dtype_is_blocks(s->tensor->dtype);
        /* Data released after a bf16 conversion serves bf16 products only. */
        bool gone = sd_dtensor_released(s->tensor) &&
                    (want == WANT_DATA || want == WANT_F32 || !sd_context_bf16(w->cl->ctx));
        if (!gone && (want == WANT_LINEAR || !blocks) && (!force_f32 || s->tensor->dtype == SD_DTYPE_F32)) {
            *out = s->tensor;
            return SD_OK;
        }
        /* Stored narrower than asked, or released: replace with an f32 (or the set's float) copy. */
        w->device_bytes -= sd_dtensor_bytes(s->tensor);
        sd_dtensor_free(s->tensor);
        s->tensor = NULL;
    }
    sd_dtensor *d = NULL;
    sd_status st;
    if (w->base) {
        st = patch(w, name, force_f32, &d);
    } else {
        const sd_st_tensor *t = sd_weights_info(w, name);
        if (!t)
            return sd_set_error(w->cl->ctx, SD_ERR_NOT_FOUND, "%s: tensor '%s%s' is missing",
                                sd_safetensors_path(w->st), w->prefix, name);
        sd_dtype dtype = (force_f32 || t->ndim < 2) ? SD_DTYPE_F32 : w->dtype;
        if (want == WANT_LINEAR && !scale_of(w, name)) /* scaled fp8 is multiplied out at upload */
            linear_blocks(t, &dtype);
        st = upload(w, name, t, dtype, &d);
    }
    /* Weights are only read from now on: ops keep their packed forms with them, and a bf16
     * product may free the data once it keeps its bf16 form (uploaded again above if asked for). */
    if (!st && (st = sd_dtensor_set_constant(d)))
        sd_dtensor_free(d);
    if (!st)
        sd_dtensor_set_releasable(d);
    if (st)
        return st;
    if (!s->name) {
        if ((w->used + 1) * 2 > w->cap) {
            if (!grow(w)) {
                sd_dtensor_free(d);
                return sd_set_error(w->cl->ctx, SD_ERR_NOMEM, "out of memory");
            }
            s = find_slot(w->slots, w->cap, name);
        }
        if (!(s->name = sd_strdup(name))) {
            sd_dtensor_free(d);
            return sd_set_error(w->cl->ctx, SD_ERR_NOMEM, "out of memory");
        }
        w->used++;
    }
    s->tensor = d;
    w->device_bytes += sd_dtensor_bytes(d);
    *out = d;
    return SD_OK;
}

sd_status sd_weights_get(sd_weights *w, const char *name, const sd_dtensor **out)
{
    return get(w, name, WANT_ANY, out);
}

sd_status sd_weights_get_f32(sd_weights *w, const char *name, const sd_dtensor **out)
{
    return get(w, name, WANT_F32, out);
}

sd_status sd_weights_get_linear(sd_weights *w, const char *name, const sd_dtensor **out)
{
    return get(w, name, WANT_LINEAR, out);
}

/* get with a vsnprintf-formatted name. */
static sd_status vget(sd_weights *w, weight_want want, const sd_dtensor **out, const char *fmt, va_list ap)
{
    char name[512];
    int n = vsnprintf(name, sizeof name, fmt, ap);
    if (n < 0 || (size_t)n >= sizeof name)
        return sd_set_error(w->cl->ctx, SD_ERR_INVALID, "tensor name too long");
    return get(w, name, want, out);
}

sd_status sd_weights_getf(sd_weights *w, const sd_dtensor **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sd_status st = vget(w, WANT_ANY, out, fmt, ap);
    va_end(ap);
    return st;
}

sd_status sd_weights_getf_linear(sd_weights *w, const sd_dtensor **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sd_status st = vget(w, WANT_LINEAR, out, fmt, ap);
    va_end(ap);
    return st;
}

size_t sd_weights_device_bytes(const sd_weights *w)
{
    return w->device_bytes;
}

sd_status sd_weights_new_patched(sd_weights *base, const sd_weight_patcher *patcher, sd_weights **out)
{
    sd_status st = sd_weights_new(base->cl, base->st, base->prefix, base->dtype, out);
    if (!st) {
        (*out)->base = base;
        (*out)->patcher = *patcher;
    }
    return st;
}

uint64_t sd_weights_serial(const sd_weights *w)
{
    return w->serial;
}
