/* GGUF reading (validated; the header read into memory, tensors read with pread, never mapped)
 * and ggml block dequantisation. See gguf.h. */
#include "ml/formats/gguf.h"
#include "core/checked.h"
#include "core/files.h"
#include "core/half.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_ALIGNMENT 32
#define FIRST_READ ((size_t)1 << 20) /* header bytes read first; doubled while the header needs more */
#define ORIG_SHAPE_PREFIX "comfy.gguf.orig_shape."

typedef struct kv_item {
    sd_gguf_kv kv;        /* first: a const sd_gguf_kv * is a kv_item * */
    size_t *str_offsets;  /* string arrays: element i's bytes start at kv.data + str_offsets[i] */
} kv_item;

struct sd_gguf {
    char *path;
    int fd;
    sd_file_id id;             /* the file's identity when opened: reads check it is unchanged */
    unsigned char *head;       /* the file's first head_size bytes: metadata and tensor infos point here */
    size_t head_size;
    uint32_t version;
    size_t alignment;
    kv_item *kvs;
    size_t n_kv;
    sd_gguf_tensor *tensors;   /* info order */
    sd_gguf_tensor **by_name;  /* sorted by name */
    size_t n;
};

/* ---- types ---- */

static const struct {
    sd_ggml_type type;
    const char *name;
    size_t block_elems, block_bytes;
} type_info[] = {
    {SD_GGML_F32, "F32", 1, 4},      {SD_GGML_F16, "F16", 1, 2},      {SD_GGML_BF16, "BF16", 1, 2},
    {SD_GGML_Q4_0, "Q4_0", 32, 18},  {SD_GGML_Q4_1, "Q4_1", 32, 20},  {SD_GGML_Q5_0, "Q5_0", 32, 22},
    {SD_GGML_Q5_1, "Q5_1", 32, 24},  {SD_GGML_Q8_0, "Q8_0", 32, 34},  {SD_GGML_Q4_K, "Q4_K", 256, 144},
    {SD_GGML_Q5_K, "Q5_K", 256, 176}, {SD_GGML_Q6_K, "Q6_K", 256, 210},
};
#define N_TYPES (sizeof type_info / sizeof type_info[0])

static int type_index(sd_ggml_type type)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (type_info[i].type == type)
            return (int)i;
    return -1;
}

const char *sd_ggml_type_name(sd_ggml_type type)
{
    int i = type_index(type);
    return i < 0 ? "?" : type_info[i].name;
}

bool sd_ggml_type_block(sd_ggml_type type, size_t *block_elems, size_t *block_bytes)
{
    int i = type_index(type);
    if (i < 0)
        return false;
    *block_elems = type_info[i].block_elems;
    *block_bytes = type_info[i].block_bytes;
    return true;
}

/* ---- dequantisation (ggml-common.h block layouts; products in ggml's order, so results are
 * bit-identical to ggml's and the gguf package's reference dequantizers) ---- */

static uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

static float f16at(const unsigned char *p)
{
    return sd_half_to_float(le16(p));
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1: element j < 16 is the low nibble of qs[j], 16 + j the high one; Q5
 * adds bit j of the little-endian u32 qh as the 5th bit. x = d * (q - offset) [+ m]. */
static void dq_q4q5(const unsigned char *b, float *y, bool has_min, bool five)
{
    float d = f16at(b), m = has_min ? f16at(b + 2) : 0.0f;
    const unsigned char *p = b + (has_min ? 4 : 2);
    uint32_t qh = five ? le32(p) : 0;
    const unsigned char *qs = p + (five ? 4 : 0);
    int offset = has_min ? 0 : (five ? 16 : 8);
    for (int j = 0; j < 32; j++) {
        int q = (j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4) | (int)(((qh >> j) & 1u) << 4);
        float v = d * (float)(q - offset);
        y[j] = has_min ? v + m : v;
    }
}

static void dq_q8_0(const unsigned char *b, float *y)
{
    float d = f16at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

/* The 6-bit (scale, min) pair of sub-block j of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4). */
static void scale_min_k4(int j, const unsigned char *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K (144 B) and Q5_K (176 B): d, dmin, 12 B of scales, [Q5: 32 B high bits], 128 B nibbles;
 * sub-block j (32 elements) has x = (d*sc_j) * q - (dmin*m_j); the low nibbles of bytes
 * 32*(j/2).. hold even j, the high nibbles odd j; Q5's bit j of qh[l] is element 32*j + l's 5th. */
static void dq_k45(const unsigned char *b, float *y, bool five)
{
    float d = f16at(b), dmin = f16at(b + 2);
    const unsigned char *scales = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_k4(j, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        const unsigned char *q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? q[l] >> 4 : q[l] & 0x0F;
            if (five)
                v |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = d1 * (float)v - m1;
        }
    }
}

/* Q6_K (210 B): 128 B ql, 64 B qh, 16 int8 scales, d. Per 128-element half h: element 32*k + l
 * (k < 4) takes the nibble k/2 of ql[64h + 32*(k&1) + l] and bits 2k..2k+1 of qh[32h + l];
 * x = (d * scale[e/16]) * (q - 32). */
static void dq_q6_k(const unsigned char *b, float *y)
{
    const unsigned char *ql = b, *qh = b + 128, *sc = b + 192;
    float d = f16at(b + 208);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (ql[64 * h + 32 * (k & 1) + l] >> (4 * (k / 2))) & 0x0F;
        int hi = (qh[32 * h + l] >> (2 * k)) & 3;
        y[e] = (d * (float)(int8_t)sc[e / 16]) * (float)((lo | (hi << 4)) - 32);
    }
}

static float f32at(const unsigned char *p)
{
    uint32_t bits = le32(p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

bool sd_ggml_dequantize(sd_ggml_type type, const void *src, float *dst, size_t n)
{
    size_t be, bb;
    if (!sd_ggml_type_block(type, &be, &bb) || n % be)
        return false;
    const unsigned char *p = src;
    for (size_t i = 0; i < n / be; i++, p += bb) {
        float *y = dst + i * be;
        switch (type) {
        case SD_GGML_F32: y[0] = f32at(p); break;
        case SD_GGML_F16: y[0] = f16at(p); break;
        case SD_GGML_BF16: y[0] = sd_bf16_to_float(le16(p)); break;
        case SD_GGML_Q4_0: dq_q4q5(p, y, false, false); break;
        case SD_GGML_Q4_1: dq_q4q5(p, y, true, false); break;
        case SD_GGML_Q5_0: dq_q4q5(p, y, false, true); break;
        case SD_GGML_Q5_1: dq_q4q5(p, y, true, true); break;
        case SD_GGML_Q8_0: dq_q8_0(p, y); break;
        case SD_GGML_Q4_K: dq_k45(p, y, false); break;
        case SD_GGML_Q5_K: dq_k45(p, y, true); break;
        case SD_GGML_Q6_K: dq_q6_k(p, y); break;
        }
    }
    return true;
}

/* ---- quantisation (ggml's reference quantizers) ---- */

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void q8_0_block(const float *x, unsigned char *b)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put16(b, sd_float_to_half(d));
    for (int j = 0; j < 32; j++)
        b[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
}

static void q4_0_block(const float *x, unsigned char *b)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put16(b, sd_float_to_half(d));
    for (int j = 0; j < 16; j++) {
        int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[16 + j] * id + 8.5f);
        b[2 + j] = (unsigned char)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

bool sd_ggml_quantize(sd_ggml_type type, const float *src, void *dst, size_t n)
{
    size_t be, bb;
    bool known = type == SD_GGML_F32 || type == SD_GGML_F16 || type == SD_GGML_BF16 || type == SD_GGML_Q8_0 ||
                 type == SD_GGML_Q4_0;
    if (!known || !sd_ggml_type_block(type, &be, &bb) || n % be)
        return false;
    unsigned char *p = dst;
    for (size_t i = 0; i < n / be; i++, p += bb) {
        const float *x = src + i * be;
        uint32_t bits;
        switch (type) {
        case SD_GGML_F32:
            memcpy(&bits, x, 4);
            put16(p, (uint16_t)bits);
            put16(p + 2, (uint16_t)(bits >> 16));
            break;
        case SD_GGML_F16: put16(p, sd_float_to_half(x[0])); break;
        case SD_GGML_BF16: put16(p, sd_float_to_bf16(x[0])); break;
        case SD_GGML_Q8_0: q8_0_block(x, p); break;
        case SD_GGML_Q4_0: q4_0_block(x, p); break;
        default: break;
        }
    }
    return true;
}

/* ---- reading ---- */

/* A bounds-checked cursor over the bytes read from the start of the file (size of file_size). */
typedef struct cursor {
    sd_context *ctx;
    const char *path;
    const unsigned char *base;
    size_t pos, size, file_size;
    bool more; /* a take ran past the bytes read but not past the file: read more and parse again */
} cursor;

static sd_status truncated(cursor *c, const char *what)
{
    return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: truncated: %s runs past the end of the file (offset %zu of %zu)",
                        c->path, what, c->pos, c->file_size);
}

/* Bytes of the file after the cursor: what bounds counts before allocating. */
static size_t remaining(const cursor *c)
{
    return c->file_size - c->pos;
}

/* Takes n bytes (n ≤ what remains) and returns where they start. */
static sd_status take(cursor *c, size_t n, const char *what, const unsigned char **out)
{
    *out = c->base + c->pos;
    if (n > c->size - c->pos) {
        c->more = c->size < c->file_size && n <= remaining(c);
        return truncated(c, what);
    }
    c->pos += n;
    return SD_OK;
}

static sd_status read_u32(cursor *c, const char *what, uint32_t *v)
{
    const unsigned char *p;
    sd_status s = take(c, 4, what, &p);
    if (!s)
        *v = le32(p);
    return s;
}

static sd_status read_u64(cursor *c, const char *what, uint64_t *v)
{
    const unsigned char *p;
    sd_status s = take(c, 8, what, &p);
    if (!s)
        *v = le64(p);
    return s;
}

/* A string (u64 length + bytes, at most SD_GGUF_MAX_STRING). */
static sd_status read_str(cursor *c, const char *what, const unsigned char **bytes, size_t *len)
{
    uint64_t n;
    sd_status s = read_u64(c, what, &n);
    if (s)
        return s;
    if (n > SD_GGUF_MAX_STRING)
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s: string of %llu bytes (at most %u)", c->path, what,
                            (unsigned long long)n, SD_GGUF_MAX_STRING);
    *len = (size_t)n;
    return take(c, *len, what, bytes);
}

/* A NUL-free string copied to a malloc'd C string. */
static sd_status read_name(cursor *c, const char *what, char **out)
{
    const unsigned char *b;
    size_t len;
    sd_status s = read_str(c, what, &b, &len);
    if (s)
        return s;
    if (memchr(b, 0, len))
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s holds a NUL byte", c->path, what);
    if (!(*out = malloc(len + 1)))
        return sd_set_error(c->ctx, SD_ERR_NOMEM, "%s: out of memory", c->path);
    memcpy(*out, b, len);
    (*out)[len] = 0;
    return SD_OK;
}

/* Bytes of one scalar of a fixed-size value type; 0 for STRING and ARRAY, SIZE_MAX if unknown. */
static size_t vtype_size(uint32_t t)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sizes / sizeof sizes[0] ? sizes[t] : SIZE_MAX;
}

/* Reads a value of element type t (not ARRAY) count times, recording string offsets. */
static sd_status read_values(cursor *c, const char *key, uint32_t t, uint64_t count, kv_item *it)
{
    size_t esize = vtype_size(t), start = c->pos;
    if (esize == SIZE_MAX || t == SD_GGUF_ARRAY)
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: key '%s': %s %u", c->path, key,
                            t == SD_GGUF_ARRAY ? "arrays of arrays are not supported, element type" : "unknown value type",
                            t);
    const unsigned char *p;
    if (esize) {
        size_t bytes;
        if (!sd_mul_size((size_t)count, esize, &bytes) || count > SIZE_MAX)
            return truncated(c, key);
        sd_status s = take(c, bytes, key, &p);
        if (s)
            return s;
        it->kv.data = p;
        it->kv.size = bytes;
        return SD_OK;
    }
    /* strings: each takes at least its 8-byte length, so count is bounded before allocating */
    if (count > remaining(c) / 8)
        return truncated(c, key);
    if (it->kv.type == SD_GGUF_ARRAY && !(it->str_offsets = malloc((count ? count : 1) * sizeof(size_t))))
        return sd_set_error(c->ctx, SD_ERR_NOMEM, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < count; i++) {
        size_t len;
        sd_status s = read_str(c, key, &p, &len);
        if (s)
            return s;
        if (it->str_offsets)
            it->str_offsets[i] = (size_t)(p - (c->base + start)) - 8;
        else
            it->kv.data = p, it->kv.size = len;
    }
    if (it->str_offsets) {
        it->kv.data = c->base + start;
        it->kv.size = c->pos - start;
    }
    return SD_OK;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const kv_item *)a)->kv.key, ((const kv_item *)b)->kv.key);
}

static sd_status read_metadata(cursor *c, sd_gguf *g, uint64_t n_kv)
{
    /* each entry takes at least 8 (key length) + 4 (type) + 1 bytes */
    if (n_kv > remaining(c) / 13)
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: truncated: %llu metadata entries cannot fit in %zu bytes",
                            c->path, (unsigned long long)n_kv, remaining(c));
    if (!(g->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kvs)))
        return sd_set_error(c->ctx, SD_ERR_NOMEM, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        kv_item *it = &g->kvs[g->n_kv];
        char *key = NULL;
        sd_status s = read_name(c, "metadata key", &key);
        if (s)
            return s;
        it->kv.key = key;
        g->n_kv++;
        uint32_t t;
        if ((s = read_u32(c, key, &t)))
            return s;
        it->kv.type = (sd_gguf_vtype)t;
        it->kv.elem = (sd_gguf_vtype)t;
        it->kv.count = 1;
        if (t == SD_GGUF_ARRAY) {
            uint32_t et;
            uint64_t count;
            if ((s = read_u32(c, key, &et)) || (s = read_u64(c, key, &count)))
                return s;
            it->kv.elem = (sd_gguf_vtype)et;
            it->kv.count = count;
            s = read_values(c, key, et, count, it);
        } else {
            s = read_values(c, key, t, 1, it);
        }
        if (s)
            return s;
    }
    /* sorted copy only to find duplicates: lookups stay in file order (few keys) */
    kv_item *sorted = malloc((g->n_kv ? g->n_kv : 1) * sizeof *sorted);
    if (!sorted)
        return sd_set_error(c->ctx, SD_ERR_NOMEM, "%s: out of memory", c->path);
    memcpy(sorted, g->kvs, g->n_kv * sizeof *sorted);
    qsort(sorted, g->n_kv, sizeof *sorted, cmp_kv);
    sd_status s = SD_OK;
    for (size_t i = 1; i < g->n_kv && !s; i++)
        if (strcmp(sorted[i - 1].kv.key, sorted[i].kv.key) == 0)
            s = sd_set_error(c->ctx, SD_ERR_PARSE, "%s: duplicate metadata key '%s'", c->path, sorted[i].kv.key);
    free(sorted);
    return s;
}

static sd_status read_alignment(sd_context *ctx, sd_gguf *g)
{
    g->alignment = DEFAULT_ALIGNMENT;
    const sd_gguf_kv *kv = sd_gguf_find_kv(g, "general.alignment");
    if (!kv)
        return SD_OK;
    int64_t a;
    if (kv->type != SD_GGUF_U32 || !sd_gguf_kv_int(kv, &a) || a == 0 || (a & (a - 1)) != 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: general.alignment must be a UINT32 power of two", g->path);
    g->alignment = (size_t)a;
    return SD_OK;
}

static void shape_text(char *buf, size_t size, const int64_t *dims, int n)
{
    buf[0] = 0;
    for (int i = 0, k = 0; i < n && k < (int)size - 24; i++)
        k += snprintf(buf + k, size - (size_t)k, "%s%lld", i ? ", " : "", (long long)dims[i]);
}

/* Applies comfy.gguf.orig_shape.<name> to t's torch shape, if present. */
static sd_status apply_orig_shape(sd_context *ctx, const sd_gguf *g, sd_gguf_tensor *t)
{
    char *key = sd_strfmt(ORIG_SHAPE_PREFIX "%s", t->name);
    if (!key)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", g->path);
    const sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    free(key);
    if (!kv)
        return SD_OK;
    int64_t shape[SD_GGUF_MAX_SHAPE];
    size_t numel = 1;
    bool ok = kv->type == SD_GGUF_ARRAY && kv->count <= SD_GGUF_MAX_SHAPE;
    for (uint64_t i = 0; ok && i < kv->count; i++)
        ok = sd_gguf_kv_array_int(kv, i, &shape[i]) && shape[i] >= 0 && sd_mul_size(numel, (size_t)shape[i], &numel);
    if (!ok || numel != t->numel) {
        char dims[160] = "";
        if (ok)
            shape_text(dims, sizeof dims, shape, (int)kv->count);
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: tensor '%s': " ORIG_SHAPE_PREFIX "%s must be an integer array of at most %d "
                            "dimensions holding its %zu elements%s%s%s",
                            g->path, t->name, t->name, SD_GGUF_MAX_SHAPE, t->numel, ok ? " (got [" : "", dims,
                            ok ? "])" : "");
    }
    t->ndim = (int)kv->count;
    memcpy(t->shape, shape, sizeof shape[0] * kv->count);
    return SD_OK;
}

/* Reads one tensor info (its offset is checked later, by check_layout). */
static sd_status read_tensor_info(cursor *c, sd_gguf *g, sd_gguf_tensor *t)
{
    char *name = NULL;
    sd_status s = read_name(c, "tensor name", &name);
    if (s)
        return s;
    t->name = name;
    uint32_t nd, type;
    if ((s = read_u32(c, name, &nd)))
        return s;
    if (nd < 1 || nd > SD_GGUF_MAX_DIMS)
        return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: tensor '%s': %u dimensions (1 to %d)", c->path, name, nd,
                            SD_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if ((s = read_u64(c, name, &d)))
            return s;
        if (d > (uint64_t)INT64_MAX)
            return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: tensor '%s': dimension %u is negative", c->path, name, i);
        t->ne[i] = (int64_t)d;
    }
    if ((s = read_u32(c, name, &type)))
        return s;
    size_t be, bb;
    if (!sd_ggml_type_block((sd_ggml_type)type, &be, &bb))
        return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: tensor '%s': unknown GGUF type %u", c->path, name, type);
    t->type = (sd_ggml_type)type;
    char dims[160];
    if (t->ne[0] % (int64_t)be) {
        return sd_set_error(c->ctx, SD_ERR_INVALID,
                            "%s: tensor '%s': innermost dimension %lld is not a multiple of the %s block size %zu",
                            c->path, name, (long long)t->ne[0], sd_ggml_type_name(t->type), be);
    }
    int64_t rows[SD_GGUF_MAX_DIMS];
    memcpy(rows, t->ne, sizeof rows);
    rows[0] = t->ne[0] / (int64_t)be;
    if (!sd_shape_bytes(t->ne, t->n_dims, 1, &t->numel) || !sd_shape_bytes(rows, t->n_dims, bb, &t->nbytes)) {
        shape_text(dims, sizeof dims, t->ne, t->n_dims);
        return sd_set_error(c->ctx, SD_ERR_INVALID, "%s: tensor '%s': size of dimensions [%s] overflows", c->path,
                            name, dims);
    }
    t->ndim = t->n_dims;
    for (int i = 0; i < t->n_dims; i++)
        t->shape[i] = t->ne[t->n_dims - 1 - i];
    uint64_t offset;
    if ((s = read_u64(c, name, &offset)))
        return s;
    t->offset = offset; /* checked and resolved to t->file_offset by check_layout */
    return apply_orig_shape(c->ctx, g, t);
}

static int cmp_name(const void *a, const void *b)
{
    const sd_gguf_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static size_t pad_to(size_t x, size_t align, bool *ok)
{
    size_t r = x % align, out = x;
    *ok = r == 0 || sd_add_size(x, align - r, &out);
    return out;
}

/* Checks that the tensors tile the data section (each at the previous end padded to the
 * alignment), resolves their file offsets, and allows only padding after the last. */
static sd_status check_layout(sd_context *ctx, sd_gguf *g, size_t info_end)
{
    bool ok = true;
    size_t file_size = (size_t)g->id.size;
    size_t data_start = pad_to(info_end, g->alignment, &ok);
    size_t data_size = ok && data_start <= file_size ? file_size - data_start : 0;
    if (g->n && (!ok || data_start > file_size))
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: truncated: the data section would start at %zu, past the end (%zu)",
                            g->path, data_start, file_size);
    size_t expect = 0, end = 0;
    for (size_t i = 0; i < g->n; i++) {
        sd_gguf_tensor *t = &g->tensors[i];
        if (t->offset != expect)
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': data offset %llu, expected %zu", g->path, t->name,
                                (unsigned long long)t->offset, expect);
        if (!sd_add_size(expect, t->nbytes, &end) || end > data_size)
            return sd_set_error(ctx, SD_ERR_PARSE,
                                "%s: truncated: tensor '%s' (%s, %zu bytes at data offset %zu) runs past the end of "
                                "the file (data section is %zu bytes)",
                                g->path, t->name, sd_ggml_type_name(t->type), t->nbytes, expect, data_size);
        t->file_offset = (uint64_t)data_start + expect;
        expect = pad_to(end, g->alignment, &ok);
        if (!ok)
            expect = SIZE_MAX;
    }
    size_t tail = g->n ? data_size - end : file_size - info_end;
    if (tail >= g->alignment)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: %zu bytes after the last tensor's data", g->path, tail);
    return SD_OK;
}

static sd_status read_tensors(cursor *c, sd_gguf *g, uint64_t n)
{
    /* each info takes at least 8 (name length) + 4 + 8 + 4 + 8 bytes */
    if (n > remaining(c) / 32)
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: truncated: %llu tensor infos cannot fit in %zu bytes", c->path,
                            (unsigned long long)n, remaining(c));
    g->tensors = calloc(n ? (size_t)n : 1, sizeof *g->tensors);
    g->by_name = calloc(n ? (size_t)n : 1, sizeof *g->by_name);
    if (!g->tensors || !g->by_name)
        return sd_set_error(c->ctx, SD_ERR_NOMEM, "%s: out of memory", c->path);
    for (uint64_t i = 0; i < n; i++) {
        sd_status s = read_tensor_info(c, g, &g->tensors[g->n++]);
        if (s)
            return s;
    }
    for (size_t i = 0; i < g->n; i++)
        g->by_name[i] = &g->tensors[i];
    qsort(g->by_name, g->n, sizeof *g->by_name, cmp_name);
    for (size_t i = 1; i < g->n; i++)
        if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0)
            return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: duplicate tensor '%s'", c->path, g->by_name[i]->name);
    return check_layout(c->ctx, g, c->pos);
}

/* Parses the header from g->head; c->more when it needs bytes past head_size. */
static sd_status parse(cursor *cur, sd_gguf *g)
{
    sd_context *ctx = cur->ctx;
    cursor c = *cur;
    const unsigned char *magic;
    sd_status s = take(&c, 4, "magic", &magic);
    if (s)
        return s;
    if (memcmp(magic, "GGUF", 4) != 0)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: not a GGUF file (no \"GGUF\" magic)", g->path);
    uint64_t n_tensors, n_kv;
    if ((s = read_u32(&c, "version", &g->version)))
        return s;
    if (g->version != 2 && g->version != 3)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: GGUF version %u is not supported (2 or 3)", g->path, g->version);
    if (!(s = read_u64(&c, "tensor count", &n_tensors)) && !(s = read_u64(&c, "metadata count", &n_kv)) &&
        !(s = read_metadata(&c, g, n_kv)) && !(s = read_alignment(ctx, g)))
        s = read_tensors(&c, g, n_tensors);
    cur->more = c.more;
    return s;
}

/* Frees what a parse built, leaving g as before it. */
static void clear_parse(sd_gguf *g)
{
    for (size_t i = 0; i < g->n_kv; i++) {
        free((char *)g->kvs[i].kv.key);
        free(g->kvs[i].str_offsets);
    }
    for (size_t i = 0; i < g->n; i++)
        free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->by_name);
    g->kvs = NULL, g->tensors = NULL, g->by_name = NULL;
    g->n_kv = g->n = 0;
    g->alignment = 0;
}

void sd_gguf_close(sd_gguf *g)
{
    if (!g)
        return;
    clear_parse(g);
    if (g->fd >= 0)
        close(g->fd);
    free(g->head);
    free(g->path);
    free(g);
}

/* Reads the start of the file and parses the header from it, reading twice as much (up to
 * SD_GGUF_MAX_HEADER bytes) while the metadata and tensor infos run past what was read. */
static sd_status read_header(sd_context *ctx, sd_gguf *g)
{
    size_t file_size = (size_t)g->id.size, want = FIRST_READ;
    for (;;) {
        size_t n = want < file_size ? want : file_size;
        unsigned char *head = realloc(g->head, n);
        if (!head)
            return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", g->path);
        g->head = head;
        g->head_size = n;
        sd_status s = sd_file_read_at(ctx, g->fd, g->path, &g->id, 0, head, n);
        if (s)
            return s;
        cursor c = {ctx, g->path, head, 0, n, file_size, false};
        if (!(s = parse(&c, g)) || !c.more)
            return s;
        clear_parse(g);
        if (n >= SD_GGUF_MAX_HEADER)
            return sd_set_error(ctx, SD_ERR_LIMIT, "%s: metadata and tensor infos exceed the limit of %zu bytes",
                                g->path, (size_t)SD_GGUF_MAX_HEADER);
        want = n * 2 < SD_GGUF_MAX_HEADER ? n * 2 : SD_GGUF_MAX_HEADER;
    }
}

sd_status sd_gguf_open(sd_context *ctx, const char *path, sd_gguf **out)
{
    *out = NULL;
    sd_status status = SD_OK;
    sd_gguf *g = calloc(1, sizeof *g);
    if (g)
        g->fd = -1;
    if (!g || !(g->path = sd_strdup(path)))
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    else if (!(status = sd_file_open(ctx, path, &g->fd, &g->id))) {
        if (g->id.size < 24)
            status = sd_set_error(ctx, SD_ERR_PARSE, "%s: truncated: %lld bytes, too short for a GGUF header", path,
                                  (long long)g->id.size);
        else if ((uint64_t)g->id.size > SIZE_MAX)
            status = sd_set_error(ctx, SD_ERR_LIMIT, "%s: too large for this machine", path);
        else
            status = read_header(ctx, g);
    }
    if (status) {
        sd_gguf_close(g);
        return status;
    }
    *out = g;
    return SD_OK;
}

const char *sd_gguf_path(const sd_gguf *g)
{
    return g->path;
}

uint32_t sd_gguf_version(const sd_gguf *g)
{
    return g->version;
}

size_t sd_gguf_alignment(const sd_gguf *g)
{
    return g->alignment;
}

size_t sd_gguf_kv_count(const sd_gguf *g)
{
    return g->n_kv;
}

const sd_gguf_kv *sd_gguf_kv_at(const sd_gguf *g, size_t index)
{
    return index < g->n_kv ? &g->kvs[index].kv : NULL;
}

const sd_gguf_kv *sd_gguf_find_kv(const sd_gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kvs[i].kv.key, key) == 0)
            return &g->kvs[i].kv;
    return NULL;
}

/* Integer element of type t at p. */
static bool int_at(sd_gguf_vtype t, const unsigned char *p, int64_t *out)
{
    switch (t) {
    case SD_GGUF_U8: *out = p[0]; return true;
    case SD_GGUF_I8: *out = (int8_t)p[0]; return true;
    case SD_GGUF_BOOL: *out = p[0] != 0; return true;
    case SD_GGUF_U16: *out = le16(p); return true;
    case SD_GGUF_I16: *out = (int16_t)le16(p); return true;
    case SD_GGUF_U32: *out = le32(p); return true;
    case SD_GGUF_I32: *out = (int32_t)le32(p); return true;
    case SD_GGUF_U64: *out = (int64_t)le64(p); return le64(p) <= (uint64_t)INT64_MAX;
    case SD_GGUF_I64: *out = (int64_t)le64(p); return true;
    default: return false;
    }
}

bool sd_gguf_kv_int(const sd_gguf_kv *kv, int64_t *out)
{
    return kv->type != SD_GGUF_ARRAY && int_at(kv->type, kv->data, out);
}

bool sd_gguf_kv_array_int(const sd_gguf_kv *kv, uint64_t i, int64_t *out)
{
    if (kv->type != SD_GGUF_ARRAY || i >= kv->count)
        return false;
    size_t es = vtype_size(kv->elem);
    return es && es != SIZE_MAX && int_at(kv->elem, kv->data + (size_t)i * es, out);
}

bool sd_gguf_kv_float(const sd_gguf_kv *kv, double *out)
{
    if (kv->type == SD_GGUF_F32)
        *out = f32at(kv->data);
    else if (kv->type == SD_GGUF_F64) {
        uint64_t bits = le64(kv->data);
        memcpy(out, &bits, sizeof *out);
    } else
        return false;
    return true;
}

const char *sd_gguf_kv_string(const sd_gguf_kv *kv, size_t *len)
{
    if (kv->type != SD_GGUF_STRING)
        return NULL;
    *len = kv->size;
    return (const char *)kv->data;
}

const char *sd_gguf_kv_array_string(const sd_gguf_kv *kv, uint64_t i, size_t *len)
{
    const kv_item *it = (const kv_item *)kv;
    if (kv->type != SD_GGUF_ARRAY || kv->elem != SD_GGUF_STRING || i >= kv->count)
        return NULL;
    const unsigned char *p = kv->data + it->str_offsets[i];
    *len = (size_t)le64(p);
    return (const char *)p + 8;
}

size_t sd_gguf_count(const sd_gguf *g)
{
    return g->n;
}

const sd_gguf_tensor *sd_gguf_at(const sd_gguf *g, size_t index)
{
    return index < g->n ? &g->tensors[index] : NULL;
}

const sd_gguf_tensor *sd_gguf_find(const sd_gguf *g, const char *name)
{
    sd_gguf_tensor key = {.name = name};
    const sd_gguf_tensor *kp = &key;
    sd_gguf_tensor **hit = bsearch(&kp, g->by_name, g->n, sizeof *g->by_name, cmp_name);
    return hit ? *hit : NULL;
}

sd_status sd_gguf_read_f32(sd_context *ctx, const sd_gguf *g, const sd_gguf_tensor *t, float *dst, size_t n)
{
    if (n != t->numel)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': has %zu elements, caller expected %zu", g->path,
                            t->name, t->numel, n);
    unsigned char *raw = malloc(t->nbytes ? t->nbytes : 1);
    if (!raw)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory reading tensor '%s'", g->path, t->name);
    sd_status status = sd_file_read_at(ctx, g->fd, g->path, &g->id, t->file_offset, raw, t->nbytes);
    if (!status)
        sd_ggml_dequantize(t->type, raw, dst, n); /* type and size were validated on open */
    free(raw);
    return status;
}

sd_status sd_gguf_tensor_view(sd_context *ctx, const sd_gguf *g, sd_safetensors **out)
{
    sd_st_tensor *ts = calloc(g->n ? g->n : 1, sizeof *ts);
    if (!ts)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", g->path);
    for (size_t i = 0; i < g->n; i++) {
        const sd_gguf_tensor *t = &g->tensors[i];
        ts[i] = (sd_st_tensor){.name = t->name, .ndim = t->ndim, .numel = t->numel, .nbytes = t->nbytes,
                               .offset = t->file_offset};
        memcpy(ts[i].shape, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
        ts[i].dtype = t->type == SD_GGML_F32    ? SD_ST_F32
                      : t->type == SD_GGML_F16  ? SD_ST_F16
                      : t->type == SD_GGML_BF16 ? SD_ST_BF16
                                                : SD_ST_GGML;
        ts[i].ggml_type = (int)t->type;
    }
    sd_status status = sd_safetensors_view(ctx, g->path, g->fd, &g->id, ts, g->n, out);
    free(ts);
    return status;
}
