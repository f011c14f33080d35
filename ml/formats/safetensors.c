/* safetensors reading (validated; tensors read with pread, never mapped) and writing (atomic).
 * See safetensors.h. */
#include "ml/formats/safetensors.h"
#include "core/checked.h"
#include "core/files.h"
#include "ml/formats/pickle.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sd_safetensors {
    char *path;
    int fd;                       /* -1 for an alias; a view's own dup of the other format's fd */
    const sd_safetensors *file;   /* where tensor data is read: this handle, or the aliased one */
    sd_file_id id;                /* the file's identity when opened: reads check it is unchanged */
    sd_st_tensor *tensors;   /* data-offset order */
    sd_st_tensor **by_name;  /* sorted by name */
    size_t n;
    json_t *metadata;        /* the "__metadata__" object or NULL */
    bool owns_mem;           /* the tensors' mem (torch checkpoints) is this handle's to free */
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [SD_ST_BOOL] = {"BOOL", 1},       [SD_ST_U8] = {"U8", 1},     [SD_ST_I8] = {"I8", 1},
    [SD_ST_I16] = {"I16", 2},         [SD_ST_U16] = {"U16", 2},   [SD_ST_I32] = {"I32", 4},
    [SD_ST_U32] = {"U32", 4},         [SD_ST_I64] = {"I64", 8},   [SD_ST_U64] = {"U64", 8},
    [SD_ST_F8_E4M3] = {"F8_E4M3", 1}, [SD_ST_F8_E5M2] = {"F8_E5M2", 1},
    [SD_ST_F16] = {"F16", 2},         [SD_ST_BF16] = {"BF16", 2}, [SD_ST_F32] = {"F32", 4},
    [SD_ST_F64] = {"F64", 8},         [SD_ST_GGML] = {"GGML", 0},
};
#define N_DTYPES (sizeof dtype_info / sizeof dtype_info[0])

const char *sd_st_dtype_name(sd_st_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtype_info[dtype].name : "?";
}

size_t sd_st_dtype_size(sd_st_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtype_info[dtype].size : 0;
}

bool sd_st_dtype_is_weight(sd_st_dtype dtype)
{
    return dtype == SD_ST_F16 || dtype == SD_ST_BF16 || dtype == SD_ST_F32 || dtype == SD_ST_F8_E4M3 ||
           dtype == SD_ST_F8_E5M2;
}

static bool dtype_parse(const char *s, sd_st_dtype *out)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (i != SD_ST_GGML && strcmp(s, dtype_info[i].name) == 0) {
            *out = (sd_st_dtype)i;
            return true;
        }
    return false;
}

/* ---- reading ---- */

static int cmp_offset(const void *a, const void *b)
{
    const sd_st_tensor *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b)
{
    const sd_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void sd_safetensors_close(sd_safetensors *st)
{
    if (!st)
        return;
    if (st->fd >= 0)
        close(st->fd);
    for (size_t i = 0; i < st->n; i++) {
        free((char *)st->tensors[i].name);
        if (st->owns_mem)
            free((void *)st->tensors[i].mem);
    }
    free(st->tensors);
    free(st->by_name);
    json_decref(st->metadata);
    free(st->path);
    free(st);
}

/* Reads a JSON integer in [0, 2^63) into *out. */
static bool json_size(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Parses one tensor entry; the data section starts at file offset data and is data_size bytes. */
static sd_status parse_entry(sd_context *ctx, sd_safetensors *st, const char *name, json_t *e,
                             uint64_t data, size_t data_size, sd_st_tensor *t)
{
    const char *path = st->path;
    t->name = sd_strdup(name);
    if (!t->name)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    if (!json_is_object(e))
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': entry is not a JSON object", path, name);
    json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape");
    json_t *offs = json_object_get(e, "data_offsets");
    if (!json_is_string(dt))
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': missing or malformed \"dtype\"", path, name);
    if (!json_is_array(shape))
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': missing or malformed \"shape\"", path, name);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': missing or malformed \"data_offsets\"", path,
                            name);
    if (json_object_size(e) != 3)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': unexpected field in entry", path, name);
    if (!dtype_parse(json_string_value(dt), &t->dtype))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': unknown dtype '%s'", path, name,
                            json_string_value(dt));
    if (json_array_size(shape) > SD_ST_MAX_DIMS)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': %zu dimensions (at most %d)", path, name,
                            json_array_size(shape), SD_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (!json_size(json_array_get(shape, (size_t)i), &d))
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                                path, name, i);
        t->shape[i] = (int64_t)d;
    }
    uint64_t begin, end;
    if (!json_size(json_array_get(offs, 0), &begin) || !json_size(json_array_get(offs, 1), &end) || begin > end)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': data_offsets must be two integers 0 <= begin <= end",
                            path, name);
    if (end > data_size)
        return sd_set_error(ctx, SD_ERR_PARSE,
                            "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the file "
                            "(data section is %zu bytes)",
                            path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    size_t nbytes;
    if (!sd_shape_bytes(t->shape, t->ndim, sd_st_dtype_size(t->dtype), &nbytes) ||
        nbytes != (size_t)(end - begin)) {
        char dims[160] = "";
        for (int i = 0, k = 0; i < t->ndim && k < (int)sizeof dims - 24; i++)
            k += snprintf(dims + k, sizeof dims - (size_t)k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: tensor '%s': dtype %s with shape [%s] does not fit data_offsets [%llu, %llu] "
                            "(%llu bytes)",
                            path, name, sd_st_dtype_name(t->dtype), dims, (unsigned long long)begin,
                            (unsigned long long)end, (unsigned long long)(end - begin));
    }
    sd_shape_bytes(t->shape, t->ndim, 1, &t->numel);
    t->nbytes = nbytes;
    t->offset = data + begin;
    return SD_OK;
}

static sd_status check_metadata(sd_context *ctx, const char *path, json_t *meta)
{
    const char *k;
    json_t *v;
    if (!json_is_object(meta))
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: \"__metadata__\" is not a JSON object", path);
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: \"__metadata__\" entry '%s' is not a string", path, k);
    }
    return SD_OK;
}

/* Checks that the tensors (sorted by offset) tile the data section exactly. */
static sd_status check_layout(sd_context *ctx, sd_safetensors *st, uint64_t data, size_t data_size)
{
    size_t pos = 0;
    const sd_st_tensor *prev = NULL;
    for (size_t i = 0; i < st->n; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        size_t begin = (size_t)(t->offset - data);
        if (begin < pos)
            return sd_set_error(ctx, SD_ERR_PARSE,
                                "%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' [%zu, %zu]", st->path,
                                t->name, begin, begin + t->nbytes, prev->name, (size_t)(prev->offset - data), pos);
        if (begin > pos)
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': gap of %zu bytes before its data at offset %zu",
                                st->path, t->name, begin - pos, begin);
        pos = begin + t->nbytes;
        prev = t;
    }
    if (pos != data_size)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: %zu bytes after the last tensor's data", st->path,
                            data_size - pos);
    return SD_OK;
}

/* by_name: the tensors sorted by name. */
static void index_names(sd_safetensors *st)
{
    for (size_t i = 0; i < st->n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, st->n, sizeof *st->by_name, cmp_name);
}

static sd_status parse_header(sd_context *ctx, sd_safetensors *st, const char *text, size_t len, uint64_t data,
                              size_t data_size)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    sd_status status = SD_OK;
    if (!root)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: header is not valid JSON: %s (byte %d)", st->path, jerr.text,
                            jerr.position);
    if (!json_is_object(root)) {
        status = sd_set_error(ctx, SD_ERR_PARSE, "%s: header is not a JSON object", st->path);
        goto done;
    }
    size_t count = json_object_size(root);
    json_t *meta = json_object_get(root, "__metadata__");
    if (meta) {
        if ((status = check_metadata(ctx, st->path, meta)))
            goto done;
        st->metadata = json_incref(meta);
        count--;
    }
    st->tensors = calloc(count ? count : 1, sizeof *st->tensors);
    st->by_name = calloc(count ? count : 1, sizeof *st->by_name);
    if (!st->tensors || !st->by_name) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", st->path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        sd_st_tensor *t = &st->tensors[st->n++];
        if ((status = parse_entry(ctx, st, key, val, data, data_size, t)))
            goto done;
    }
    qsort(st->tensors, st->n, sizeof *st->tensors, cmp_offset);
    if ((status = check_layout(ctx, st, data, data_size)))
        goto done;
    index_names(st);
done:
    json_decref(root);
    return status;
}

/* Reads nbytes at file offset `at` of st's file (core/files.h sd_file_read_at: pread, then the
 * change check). */
static sd_status read_at(sd_context *ctx, const sd_safetensors *st, uint64_t at, void *dst, size_t nbytes)
{
    const sd_safetensors *f = st->file;
    return sd_file_read_at(ctx, f->fd, f->path, &f->id, at, dst, nbytes);
}

/* Whether a file starts like a PyTorch checkpoint: a zip archive (torch.save since 1.6: .ckpt,
 * .pt, .pth) or a raw pickle (older torch.save, pickle protocol 2 to 5). */
static bool looks_like_torch(const unsigned char *p, size_t size)
{
    return (size >= 4 && memcmp(p, "PK\x03\x04", 4) == 0) || (size >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5);
}

typedef struct torch_file {
    sd_context *ctx;
    const sd_safetensors *st;
} torch_file;

static sd_status torch_read(void *user, uint64_t at, void *dst, size_t n)
{
    const torch_file *f = user;
    return read_at(f->ctx, f->st, at, dst, n);
}

/* A torch checkpoint (.ckpt, .pt, .pth, .bin) through the restricted unpickler
 * (ml/formats/pickle.h): its pickles are read with read_at, its tensors stay in the file. */
static sd_status open_torch(sd_context *ctx, sd_safetensors *st)
{
    torch_file f = {ctx, st};
    sd_torch_reader r = {.read = torch_read, .user = &f, .size = (uint64_t)st->id.size};
    sd_status status = sd_torch_parse(ctx, st->path, &r, &st->tensors, &st->n);
    st->owns_mem = true;
    if (!status)
        qsort(st->tensors, st->n, sizeof *st->tensors, cmp_offset);
    if (!status && !(st->by_name = calloc(st->n + 1, sizeof *st->by_name)))
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", st->path);
    if (!status)
        index_names(st);
    return status;
}

/* Reads and checks the 8-byte header length and the header; *text (malloc'd, *len bytes). A
 * file that starts like a PyTorch checkpoint and not like safetensors sets *torch instead. */
static sd_status read_header(sd_context *ctx, sd_safetensors *st, char **text, uint64_t *len, bool *torch)
{
    unsigned char head[9] = {0};
    uint64_t size = (uint64_t)st->id.size, hlen = 0;
    size_t n = size > 8 ? 9 : 8;
    sd_status status = read_at(ctx, st, 0, head, n);
    if (status)
        return status;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | head[i];
    bool plausible = hlen <= SD_ST_MAX_HEADER && hlen <= size - 8 && hlen > 0 && head[8] == '{';
    if ((*torch = !plausible && looks_like_torch(head, n)))
        return SD_OK;
    if (hlen > SD_ST_MAX_HEADER)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: header length %llu exceeds the limit of %u bytes", st->path,
                            (unsigned long long)hlen, SD_ST_MAX_HEADER);
    if (hlen > size - 8)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: header length %llu runs past the end of the file (%llu bytes)",
                            st->path, (unsigned long long)hlen, (unsigned long long)size);
    if (!(*text = malloc(hlen ? hlen : 1)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", st->path);
    *len = hlen;
    return read_at(ctx, st, 8, *text, (size_t)hlen);
}

sd_status sd_safetensors_open(sd_context *ctx, const char *path, sd_safetensors **out)
{
    *out = NULL;
    sd_status status = SD_OK;
    char *header = NULL;
    uint64_t hlen = 0;
    sd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = sd_strdup(path))) {
        free(st);
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    st->file = st;
    if ((status = sd_file_open(ctx, path, &st->fd, &st->id)))
        goto fail;
    if (st->id.size < 8) {
        status = sd_set_error(ctx, SD_ERR_PARSE, "%s: truncated: %lld bytes, too short for a safetensors header",
                              path, (long long)st->id.size);
        goto fail;
    }
    if ((uint64_t)st->id.size > SIZE_MAX) {
        status = sd_set_error(ctx, SD_ERR_LIMIT, "%s: too large for this machine", path);
        goto fail;
    }
    bool torch = false;
    if ((status = read_header(ctx, st, &header, &hlen, &torch)))
        goto fail;
    if (torch)
        status = open_torch(ctx, st);
    else
        status = parse_header(ctx, st, header, (size_t)hlen, 8 + hlen, (size_t)st->id.size - 8 - (size_t)hlen);
    if (status)
        goto fail;
    free(header);
    *out = st;
    return SD_OK;
fail:
    free(header);
    sd_safetensors_close(st);
    return status;
}

const char *sd_safetensors_path(const sd_safetensors *st)
{
    return st->path;
}

const sd_file_id *sd_safetensors_file_id(const sd_safetensors *st)
{
    return &st->file->id;
}

size_t sd_safetensors_count(const sd_safetensors *st)
{
    return st->n;
}

const sd_st_tensor *sd_safetensors_at(const sd_safetensors *st, size_t index)
{
    return index < st->n ? &st->tensors[index] : NULL;
}

const sd_st_tensor *sd_safetensors_find(const sd_safetensors *st, const char *name)
{
    sd_st_tensor key = {.name = name};
    const sd_st_tensor *kp = &key;
    sd_st_tensor **hit = bsearch(&kp, st->by_name, st->n, sizeof *st->by_name, cmp_name);
    return hit ? *hit : NULL;
}

const sd_st_tensor *sd_safetensors_findf(const sd_safetensors *st, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return len >= 0 && (size_t)len < sizeof name ? sd_safetensors_find(st, name) : NULL;
}

bool sd_safetensors_has_prefix(const sd_safetensors *st, const char *prefix)
{
    size_t len = strlen(prefix);
    /* Names sorted: the first name >= prefix is the only candidate. */
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(st->by_name[mid]->name, prefix) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->n && strncmp(st->by_name[lo]->name, prefix, len) == 0;
}

const char *sd_safetensors_metadata(const sd_safetensors *st, const char *key)
{
    return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}

/* A handle named path reading through `file` (NULL: itself) and holding copies of n tensors
 * (from[i] or tensors[i]) under names[i] (or their own names), sorted by name; duplicate names
 * rejected. */
static sd_status make_view(sd_context *ctx, const char *path, const sd_safetensors *file,
                           const sd_st_tensor *const *from, const sd_st_tensor *tensors, const char *const *names,
                           size_t n, sd_safetensors **out)
{
    *out = NULL;
    sd_status status = SD_OK;
    sd_safetensors *a = calloc(1, sizeof *a);
    if (a) {
        a->fd = -1;
        a->file = file ? file : a;
    }
    if (!a || !(a->path = sd_strdup(path)) || !(a->tensors = calloc(n ? n : 1, sizeof *a->tensors)) ||
        !(a->by_name = calloc(n ? n : 1, sizeof *a->by_name))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        sd_st_tensor *t = &a->tensors[a->n];
        *t = from ? *from[i] : tensors[i];
        if (!(t->name = sd_strdup(names ? names[i] : t->name))) {
            status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        a->by_name[a->n++] = t;
    }
    qsort(a->by_name, a->n, sizeof *a->by_name, cmp_name);
    for (size_t i = 1; i < a->n; i++)
        if (strcmp(a->by_name[i - 1]->name, a->by_name[i]->name) == 0) {
            status = sd_set_error(ctx, SD_ERR_INVALID, "%s: two tensors map to the name '%s'", path,
                                  a->by_name[i]->name);
            goto fail;
        }
    *out = a;
    return SD_OK;
fail:
    sd_safetensors_close(a);
    return status;
}

sd_status sd_safetensors_alias(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *const *from,
                               const char *const *names, size_t n, sd_safetensors **out)
{
    sd_status status = make_view(ctx, st->path, st->file, from, NULL, names, n, out);
    if (!status)
        (*out)->metadata = json_incref(st->metadata);
    return status;
}

sd_status sd_safetensors_alias_map(sd_context *ctx, const sd_safetensors *st,
                                   bool (*map)(void *user, const char *name, char *out, size_t size), void *user,
                                   sd_safetensors **out)
{
    size_t n = sd_safetensors_count(st), k = 0;
    const sd_st_tensor **from = calloc(n ? n : 1, sizeof *from);
    char (*names)[160] = calloc(n ? n : 1, sizeof *names);
    const char **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    sd_status status = SD_OK;
    if (!from || !names || !ptrs)
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", st->path);
    for (size_t i = 0; !status && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (map(user, t->name, names[k], sizeof names[k])) {
            from[k] = t;
            ptrs[k] = names[k];
            k++;
        }
    }
    if (!status)
        status = sd_safetensors_alias(ctx, st, from, ptrs, k, out);
    free(from);
    free(names);
    free(ptrs);
    return status;
}

sd_status sd_safetensors_view(sd_context *ctx, const char *path, int fd, const sd_file_id *id,
                              const sd_st_tensor *tensors, size_t n, sd_safetensors **out)
{
    sd_status status = make_view(ctx, path, NULL, NULL, tensors, NULL, n, out);
    if (status)
        return status;
    (*out)->id = *id;
    if (((*out)->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        status = sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
        sd_safetensors_close(*out);
        *out = NULL;
    }
    return status;
}

static sd_status check_float(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t)
{
    if (!sd_st_dtype_is_weight(t->dtype))
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: tensor '%s': dtype %s is not a float type (F32, F16, BF16, F8_E4M3, F8_E5M2)",
                            st->path, t->name, sd_st_dtype_name(t->dtype));
    return SD_OK;
}

static sd_status check_read(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, size_t n)
{
    sd_status status = check_float(ctx, st, t);
    if (!status && n != t->numel)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': has %zu elements, caller expected %zu", st->path,
                            t->name, t->numel, n);
    return status;
}

static uint16_t load16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static float load_f32(const unsigned char *p)
{
    uint32_t bits = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* torch's float8_e4m3fn (bias 7, no infinities, S.1111.111 is NaN) as f16 bits: exact, every
 * value (448 at most, 2^-9 at least) is an f16 number. */
static uint16_t e4m3fn_to_half(unsigned char b)
{
    unsigned sign = (unsigned)(b & 0x80) << 8, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return (uint16_t)(sign | 0x7e00);
    if (e == 0) { /* subnormal m * 2^-9 = 2^(p - 9) (m / 2^p) with p m's top bit */
        if (!m)
            return (uint16_t)sign;
        unsigned p = m >= 4 ? 2 : m >= 2 ? 1 : 0;
        return (uint16_t)(sign | (p + 6) << 10 | (m - (1u << p)) << (10 - p));
    }
    return (uint16_t)(sign | (e - 7 + 15) << 10 | m << 7);
}

/* Converts n elements of dtype `from` (file bytes at p) to f32, or to f16 bits when to_half
 * (round to nearest even). fp8 (torch's float8_e4m3fn and float8_e5m2) converts exactly. */
static void convert(sd_st_dtype from, const unsigned char *p, size_t n, bool to_half, void *dst)
{
    float *f = dst;
    uint16_t *h = dst;
    for (size_t i = 0; i < n; i++) {
        if (from == SD_ST_F8_E4M3 || from == SD_ST_F8_E5M2) {
            uint16_t bits = from == SD_ST_F8_E5M2 ? (uint16_t)(p[i] << 8) : e4m3fn_to_half(p[i]);
            if (to_half)
                h[i] = bits;
            else
                f[i] = sd_half_to_float(bits);
            continue;
        }
        if (to_half) {
            switch (from) {
            case SD_ST_F16: h[i] = load16(p + 2 * i); break;
            case SD_ST_F32: h[i] = sd_float_to_half(load_f32(p + 4 * i)); break;
            default: h[i] = sd_float_to_half(sd_bf16_to_float(load16(p + 2 * i))); break;
            }
        } else {
            switch (from) {
            case SD_ST_F32: f[i] = load_f32(p + 4 * i); break;
            case SD_ST_F16: f[i] = sd_half_to_float(load16(p + 2 * i)); break;
            default: f[i] = sd_bf16_to_float(load16(p + 2 * i)); break;
            }
        }
    }
}

/* n bytes at byte `at` of tensor t's data (at + n within it): from memory for a torch tensor held
 * there, else from the file. */
static sd_status tensor_read(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, uint64_t at,
                             void *dst, size_t n)
{
    if (t->mem) {
        memcpy(dst, t->mem + at, n);
        return SD_OK;
    }
    return read_at(ctx, st, t->offset + at, dst, n);
}

/* Elements [first, first + n) of float tensor t into dst as f32 or f16 bits. A dtype that is
 * already the one asked for (on a little-endian host) is read straight into dst; others go
 * through a small buffer that stays in the CPU cache. */
static sd_status read_elements(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, size_t first,
                               size_t n, bool to_half, void *dst)
{
    size_t esize = sd_st_dtype_size(t->dtype), out_size = to_half ? 2 : 4;
    uint64_t at = (uint64_t)first * esize;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t->dtype == (to_half ? SD_ST_F16 : SD_ST_F32))
        return tensor_read(ctx, st, t, at, dst, n * esize);
#endif
    enum { CHUNK = 1 << 18 }; /* elements per read */
    unsigned char *buf = malloc((n < CHUNK ? n : CHUNK) * esize + 1);
    if (!buf)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory reading tensor '%s'", st->path, t->name);
    sd_status status = SD_OK;
    for (size_t done = 0; !status && done < n; done += CHUNK) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (!(status = tensor_read(ctx, st, t, at + (uint64_t)done * esize, buf, k * esize)))
            convert(t->dtype, buf, k, to_half, (unsigned char *)dst + done * out_size);
    }
    free(buf);
    return status;
}

sd_status sd_safetensors_read_f32(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, float *dst,
                                  size_t n)
{
    sd_status status = check_read(ctx, st, t, n);
    return status ? status : read_elements(ctx, st, t, 0, n, false, dst);
}

sd_status sd_safetensors_read_f16(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, uint16_t *dst,
                                  size_t n)
{
    sd_status status = check_read(ctx, st, t, n);
    return status ? status : read_elements(ctx, st, t, 0, n, true, dst);
}

sd_status sd_safetensors_read_f32_range(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t,
                                        size_t first, size_t n, float *dst)
{
    sd_status status = check_float(ctx, st, t);
    if (!status && (first > t->numel || n > t->numel - first))
        status = sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': elements [%zu, %zu) past its %zu elements",
                              st->path, t->name, first, first + n, t->numel);
    return status ? status : read_elements(ctx, st, t, first, n, false, dst);
}

sd_status sd_safetensors_read_raw(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, void *dst)
{
    return tensor_read(ctx, st, t, 0, dst, t->nbytes);
}

sd_status sd_safetensors_read_raw_range(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, size_t first,
                                        size_t nbytes, void *dst)
{
    if (first > t->nbytes || nbytes > t->nbytes - first)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': bytes [%zu, %zu) past its %zu bytes", st->path,
                            t->name, first, first + nbytes, t->nbytes);
    return tensor_read(ctx, st, t, first, dst, nbytes);
}

/* ---- writing ---- */

static sd_status build_header(sd_context *ctx, const char *path, const sd_st_entry *entries, size_t n,
                              const char *const *metadata, char **out, size_t *out_len)
{
    sd_status status = SD_OK;
    json_t *root = json_object();
    char *text = NULL;
    if (!root)
        goto nomem;
    if (metadata && metadata[0]) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta))
            goto nomem;
        for (size_t i = 0; metadata[i] && metadata[i + 1]; i += 2)
            if (json_object_set_new(meta, metadata[i], json_string(metadata[i + 1])))
                goto nomem;
    }
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const sd_st_entry *e = &entries[i];
        size_t nbytes;
        if (!e->name || !*e->name || strcmp(e->name, "__metadata__") == 0 || json_object_get(root, e->name)) {
            status = sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': empty, reserved or duplicate name", path,
                                  e->name ? e->name : "");
            goto done;
        }
        if (e->ndim < 0 || e->ndim > SD_ST_MAX_DIMS || !sd_shape_bytes(e->shape, e->ndim, sd_st_dtype_size(e->dtype),
                                                                       &nbytes)) {
            status = sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': invalid shape", path, e->name);
            goto done;
        }
        json_t *shape = json_array(), *t = json_object();
        if (!shape || !t) {
            json_decref(shape);
            json_decref(t);
            goto nomem;
        }
        for (int d = 0; d < e->ndim; d++)
            json_array_append_new(shape, json_integer(e->shape[d]));
        json_object_set_new(t, "dtype", json_string(sd_st_dtype_name(e->dtype)));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + nbytes)));
        if (json_object_set_new(root, e->name, t))
            goto nomem;
        if (!sd_add_size(offset, nbytes, &offset)) {
            status = sd_set_error(ctx, SD_ERR_INVALID, "%s: total size overflows", path);
            goto done;
        }
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        goto nomem;
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *p = realloc(text, padded + 1);
    if (!p)
        goto nomem;
    text = p;
    memset(text + len, ' ', padded - len);
    text[padded] = 0;
    *out = text;
    *out_len = padded;
    text = NULL;
    goto done;
nomem:
    status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
done:
    free(text);
    json_decref(root);
    return status;
}

/* The 8-byte little-endian header length that starts a file. */
static void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static sd_status write_all(sd_context *ctx, const char *path, FILE *f, const void *buf, size_t len)
{
    if (len && fwrite(buf, 1, len, f) != len)
        return sd_set_error(ctx, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return SD_OK;
}

sd_status sd_safetensors_write(sd_context *ctx, const char *path, const sd_st_entry *entries, size_t n,
                               const char *const *metadata, sd_st_fill_fn fill, void *user)
{
    sd_status status;
    char *header = NULL, *tmp = NULL;
    unsigned char *buf = NULL;
    size_t hlen = 0, cap = 0;
    FILE *f = NULL;
    if ((status = build_header(ctx, path, entries, n, metadata, &header, &hlen)))
        goto done;
    if (!(tmp = sd_strfmt("%s.tmpXXXXXX", path))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int fd = mkstemp(tmp);
    if (fd < 0 || fchmod(fd, 0644) != 0 || !(f = fdopen(fd, "wb"))) {
        status = sd_set_error(ctx, SD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(tmp);
        tmp = NULL;
        goto done;
    }
    unsigned char len8[8];
    put_u64le(len8, hlen);
    if ((status = write_all(ctx, path, f, len8, 8)) || (status = write_all(ctx, path, f, header, hlen)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        size_t nbytes;
        sd_shape_bytes(entries[i].shape, entries[i].ndim, sd_st_dtype_size(entries[i].dtype), &nbytes);
        if (nbytes > cap) {
            unsigned char *nb = realloc(buf, nbytes);
            if (!nb) {
                status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            buf = nb;
            cap = nbytes;
        }
        if ((status = fill(user, i, buf, nbytes)) || (status = write_all(ctx, path, f, buf, nbytes)))
            goto done;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0 || rename(tmp, path) != 0) {
        status = sd_set_error(ctx, SD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
done:
    if (f)
        fclose(f);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(buf);
    free(header);
    return status;
}

sd_status sd_safetensors_encode(sd_context *ctx, const char *name, const sd_st_entry *entries, size_t n,
                                const char *const *metadata, sd_st_fill_fn fill, void *user, unsigned char **out,
                                size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    char *header = NULL;
    unsigned char *buf = NULL;
    size_t hlen = 0, total = 0;
    sd_status status = build_header(ctx, name, entries, n, metadata, &header, &hlen);
    if (status)
        return status;
    size_t *sizes = calloc(n ? n : 1, sizeof *sizes);
    bool ok = sizes && sd_add_size(8, hlen, &total);
    for (size_t i = 0; ok && i < n; i++) /* each size and their sum were checked by build_header */
        ok = sd_shape_bytes(entries[i].shape, entries[i].ndim, sd_st_dtype_size(entries[i].dtype), &sizes[i]) &&
             sd_add_size(total, sizes[i], &total);
    if (!ok || !(buf = malloc(total))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    put_u64le(buf, hlen);
    memcpy(buf + 8, header, hlen);
    size_t at = 8 + hlen;
    for (size_t i = 0; i < n; at += sizes[i], i++)
        if ((status = fill(user, i, buf + at, sizes[i])))
            goto done;
    *out = buf;
    *out_len = total;
    buf = NULL;
done:
    free(buf);
    free(sizes);
    free(header);
    return status;
}
