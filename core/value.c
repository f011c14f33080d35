/* Reference-counted node values and their exact binary serialization (cache payloads). */
#include "core/value.h"
#include "core/checked.h"
#include "core/context.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

sd_value *sd_value_new(sd_type type)
{
    sd_value *v = calloc(1, sizeof *v);
    if (v) {
        v->type = type;
        v->refcount = 1;
    }
    return v;
}

sd_value *sd_value_ref(sd_value *v)
{
    if (v)
        v->refcount++;
    return v;
}

void sd_value_unref(sd_value *v)
{
    if (!v || --v->refcount > 0)
        return;
    for (size_t i = 0; i < v->n_tensors; i++) {
        free(v->tensors[i]->tensor.data);
        free(v->tensors[i]);
    }
    free(v->tensors);
    free(v->s);
    if (v->attrs)
        json_decref(v->attrs);
    if (v->handle && v->handle_free)
        v->handle_free(v->handle);
    free(v);
}

sd_value *sd_value_int(int64_t i)
{
    sd_value *v = sd_value_new(SD_TYPE_INT);
    if (v)
        v->i = i;
    return v;
}

sd_value *sd_value_float(double f)
{
    sd_value *v = sd_value_new(SD_TYPE_FLOAT);
    if (v)
        v->f = f;
    return v;
}

sd_value *sd_value_bool(bool b)
{
    sd_value *v = sd_value_new(SD_TYPE_BOOLEAN);
    if (v)
        v->b = b;
    return v;
}

sd_value *sd_value_string(sd_type type, const char *s)
{
    sd_value *v = sd_value_new(type);
    if (v && !(v->s = sd_strdup(s ? s : ""))) {
        sd_value_unref(v);
        return NULL;
    }
    return v;
}

sd_value *sd_value_handle(sd_type type, void *obj, void (*free_fn)(void *))
{
    sd_value *v = sd_value_new(type);
    if (!v) {
        if (free_fn)
            free_fn(obj);
        return NULL;
    }
    v->handle = obj;
    v->handle_free = free_fn;
    return v;
}

bool sd_tensor_numel(const sd_tensor *t, size_t *numel)
{
    return sd_shape_bytes(t->shape, t->ndim, 1, numel);
}

sd_tensor *sd_value_add_tensor(sd_value *v, const char *name, int ndim, const int64_t *shape)
{
    assert(strlen(name) < sizeof v->tensors[0]->name);
    assert(!sd_value_tensor(v, name));
    if (ndim < 0 || ndim > SD_TENSOR_MAX_DIMS)
        return NULL;
    size_t bytes;
    if (!sd_shape_bytes(shape, ndim, sizeof(float), &bytes))
        return NULL;
    sd_named_tensor **list = realloc(v->tensors, (v->n_tensors + 1) * sizeof *list);
    if (!list)
        return NULL;
    v->tensors = list;
    sd_named_tensor *t = calloc(1, sizeof *t);
    float *data = calloc(bytes ? bytes / sizeof(float) : 1, sizeof(float));
    if (!t || !data) {
        free(t);
        free(data);
        return NULL;
    }
    strcpy(t->name, name);
    t->tensor.ndim = ndim;
    memcpy(t->tensor.shape, shape, (size_t)ndim * sizeof *shape);
    t->tensor.data = data;
    list[v->n_tensors++] = t;
    return &t->tensor;
}

sd_tensor *sd_value_tensor(const sd_value *v, const char *name)
{
    for (size_t i = 0; i < v->n_tensors; i++)
        if (strcmp(v->tensors[i]->name, name) == 0)
            return &v->tensors[i]->tensor;
    return NULL;
}

bool sd_value_copy_contents(sd_value *dst, const sd_value *src, const char *except)
{
    for (size_t i = 0; i < src->n_tensors; i++) {
        const sd_named_tensor *nt = src->tensors[i];
        if (except && strcmp(nt->name, except) == 0)
            continue;
        size_t n;
        sd_tensor *t = sd_value_add_tensor(dst, nt->name, nt->tensor.ndim, nt->tensor.shape);
        if (!t || !sd_tensor_numel(t, &n))
            return false;
        memcpy(t->data, nt->tensor.data, n * sizeof *t->data);
    }
    if (src->attrs) {
        json_t *copy = json_deep_copy(src->attrs);
        if (!copy)
            return false;
        if (dst->attrs)
            json_decref(dst->attrs);
        dst->attrs = copy;
    }
    return true;
}

bool sd_value_cacheable(const sd_value *v)
{
    return v && !v->handle;
}

sd_value *sd_value_copy(const sd_value *v)
{
    if (!sd_value_cacheable(v))
        return NULL;
    unsigned char *buf;
    size_t len;
    if (sd_value_serialize(v, &buf, &len))
        return NULL;
    sd_value *copy = NULL;
    if (sd_value_deserialize(buf, len, &copy))
        copy = NULL;
    free(buf);
    return copy;
}

/* ---- Serialization: little-endian host layout (caches are per machine).
 * "SDV1" type:u32 i:i64 f:f64 b:u8 slen:u64 s attrlen:u64 attrs-json ntensors:u32
 * { name[32] ndim:u32 shape:i64[ndim] floats } */

typedef struct writer {
    unsigned char *buf;
    size_t len, cap;
    bool failed;
} writer;

static void put(writer *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    size_t need;
    if (!sd_add_size(w->len, n, &need)) {
        w->failed = true;
        return;
    }
    if (need > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < need)
            if (!sd_mul_size(cap, 2, &cap)) {
                w->failed = true;
                return;
            }
        unsigned char *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = true;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len = need;
}

static void put_u64(writer *w, uint64_t v) { put(w, &v, sizeof v); }
static void put_u32(writer *w, uint32_t v) { put(w, &v, sizeof v); }

sd_status sd_value_serialize(const sd_value *v, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!sd_value_cacheable(v))
        return SD_ERR_INVALID;
    writer w = {0};
    put(&w, "SDV1", 4);
    put_u32(&w, (uint32_t)v->type);
    put(&w, &v->i, sizeof v->i);
    put(&w, &v->f, sizeof v->f);
    unsigned char b = v->b;
    put(&w, &b, 1);
    size_t slen = v->s ? strlen(v->s) : 0;
    put_u64(&w, v->s ? slen + 1 : 0);
    if (v->s)
        put(&w, v->s, slen + 1);
    char *attrs = v->attrs ? json_dumps(v->attrs, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (v->attrs && !attrs)
        w.failed = true;
    size_t alen = attrs ? strlen(attrs) : 0;
    put_u64(&w, alen);
    if (attrs)
        put(&w, attrs, alen);
    free(attrs);
    put_u32(&w, (uint32_t)v->n_tensors);
    for (size_t i = 0; i < v->n_tensors; i++) {
        const sd_named_tensor *t = v->tensors[i];
        size_t n;
        put(&w, t->name, sizeof t->name);
        put_u32(&w, (uint32_t)t->tensor.ndim);
        put(&w, t->tensor.shape, (size_t)t->tensor.ndim * sizeof(int64_t));
        if (!sd_tensor_numel(&t->tensor, &n) || !sd_mul_size(n, sizeof(float), &n))
            w.failed = true;
        else
            put(&w, t->tensor.data, n);
    }
    if (w.failed) {
        free(w.buf);
        return SD_ERR_NOMEM;
    }
    *out = w.buf;
    *len = w.len;
    return SD_OK;
}

typedef struct reader {
    const unsigned char *p;
    size_t left;
} reader;

static bool get(reader *r, void *dst, size_t n)
{
    if (n > r->left)
        return false;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

sd_status sd_value_deserialize(const unsigned char *data, size_t len, sd_value **out)
{
    *out = NULL;
    reader r = {data, len};
    char magic[4];
    uint32_t type, ntensors;
    uint64_t slen, alen;
    unsigned char b;
    if (!get(&r, magic, 4) || memcmp(magic, "SDV1", 4) != 0 || !get(&r, &type, 4) ||
        type >= SD_TYPE_COUNT)
        return SD_ERR_PARSE;
    sd_value *v = sd_value_new((sd_type)type);
    if (!v)
        return SD_ERR_NOMEM;
    sd_status st = SD_ERR_PARSE;
    if (!get(&r, &v->i, sizeof v->i) || !get(&r, &v->f, sizeof v->f) || !get(&r, &b, 1) ||
        b > 1 || !get(&r, &slen, 8) || slen > r.left)
        goto fail;
    v->b = b;
    if (slen) {
        if (r.p[slen - 1] != '\0' || strlen((const char *)r.p) != slen - 1)
            goto fail;
        if (!(v->s = sd_strdup((const char *)r.p))) {
            st = SD_ERR_NOMEM;
            goto fail;
        }
        r.p += slen;
        r.left -= slen;
    }
    if (!get(&r, &alen, 8) || alen > r.left)
        goto fail;
    if (alen) {
        json_error_t err;
        v->attrs = json_loadb((const char *)r.p, alen, JSON_REJECT_DUPLICATES, &err);
        if (!v->attrs || !json_is_object(v->attrs))
            goto fail;
        r.p += alen;
        r.left -= alen;
    }
    if (!get(&r, &ntensors, 4) || ntensors > 4096)
        goto fail;
    for (uint32_t i = 0; i < ntensors; i++) {
        char name[32];
        uint32_t ndim;
        int64_t shape[SD_TENSOR_MAX_DIMS];
        size_t bytes;
        if (!get(&r, name, sizeof name) || memchr(name, '\0', sizeof name) == NULL ||
            !get(&r, &ndim, 4) || ndim > SD_TENSOR_MAX_DIMS ||
            !get(&r, shape, ndim * sizeof(int64_t)) ||
            !sd_shape_bytes(shape, (int)ndim, sizeof(float), &bytes) || bytes > r.left ||
            sd_value_tensor(v, name))
            goto fail;
        sd_tensor *t = sd_value_add_tensor(v, name, (int)ndim, shape);
        if (!t) {
            st = SD_ERR_NOMEM;
            goto fail;
        }
        get(&r, t->data, bytes);
    }
    if (r.left != 0)
        goto fail;
    *out = v;
    return SD_OK;
fail:
    sd_value_unref(v);
    return st;
}
