/* GGUF: the reader on a file written by the gguf Python package, bit-exact dequantisation of every
 * block type against its reference dequantizer (tests/reference/make_gguf_goldens.py), and every
 * validation rule with its one-line error on hand-built hostile files; bit-exact quantisation
 * (Q8_0, Q4_0, BF16) against the package's quantize(), and the streaming writer read back. */
#include "test.h"
#include "ml/families/family.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/gguf.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sd_context *ctx;

static int64_t kv_int(const sd_gguf *g, const char *key)
{
    const sd_gguf_kv *kv = sd_gguf_find_kv(g, key);
    int64_t v = -12345;
    CHECK_MSG(kv && sd_gguf_kv_int(kv, &v), "integer key %s", key);
    return v;
}

static void check_metadata(const sd_gguf *g)
{
    CHECK_EQ_INT(sd_gguf_version(g), 3);
    CHECK_EQ_INT(sd_gguf_alignment(g), 64);
    CHECK_EQ_INT(kv_int(g, "test.u8"), 200);
    CHECK_EQ_INT(kv_int(g, "test.i8"), -100);
    CHECK_EQ_INT(kv_int(g, "test.u16"), 60000);
    CHECK_EQ_INT(kv_int(g, "test.i16"), -30000);
    CHECK_EQ_INT(kv_int(g, "test.u32"), 4000000000LL);
    CHECK_EQ_INT(kv_int(g, "test.i32"), -2000000000LL);
    CHECK_EQ_INT(kv_int(g, "test.bool"), 1);
    CHECK_EQ_INT(kv_int(g, "test.u64"), INT64_MAX);
    CHECK_EQ_INT(kv_int(g, "test.i64"), -(INT64_C(1) << 62));
    double f = 0;
    CHECK(sd_gguf_kv_float(sd_gguf_find_kv(g, "test.f32"), &f) && f == 0.25);
    CHECK(sd_gguf_kv_float(sd_gguf_find_kv(g, "test.f64"), &f) && f == -1.5);
    size_t len = 0;
    const char *s = sd_gguf_kv_string(sd_gguf_find_kv(g, "test.string"), &len);
    CHECK(s && len == strlen("héllo wörld") && memcmp(s, "héllo wörld", len) == 0);
    s = sd_gguf_kv_string(sd_gguf_find_kv(g, "general.architecture"), &len);
    CHECK(s && len == 4 && memcmp(s, "flux", 4) == 0);
    const sd_gguf_kv *ints = sd_gguf_find_kv(g, "test.ints");
    int64_t v;
    CHECK(ints && ints->type == SD_GGUF_ARRAY && ints->count == 3);
    CHECK(sd_gguf_kv_array_int(ints, 1, &v) && v == -2);
    CHECK(!sd_gguf_kv_array_int(ints, 3, &v));
    CHECK(!sd_gguf_kv_int(ints, &v));
    const sd_gguf_kv *strs = sd_gguf_find_kv(g, "test.strings");
    CHECK(strs && strs->elem == SD_GGUF_STRING && strs->count == 3);
    s = sd_gguf_kv_array_string(strs, 2, &len);
    CHECK(s && len == strlen("▁piece") && memcmp(s, "▁piece", len) == 0);
    s = sd_gguf_kv_array_string(strs, 1, &len);
    CHECK(s && len == 0);
    CHECK(sd_gguf_kv_array_string(strs, 3, &len) == NULL);
    CHECK(sd_gguf_kv_array_string(ints, 0, &len) == NULL);
    CHECK(sd_gguf_find_kv(g, "nope") == NULL);
}

/* Every tensor dequantised equals the gguf package's reference bit for bit. */
static void test_golden(void)
{
    char *path = test_golden_path("gguf_blocks.gguf"), *ref_path = test_golden_path("gguf_blocks.f32");
    size_t ref_len = 0;
    unsigned char *ref = read_bytes(ref_path, &ref_len);
    sd_gguf *g = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    CHECK(ref != NULL);
    if (!g || !ref)
        goto done;
    check_metadata(g);
    CHECK_EQ_INT(sd_gguf_count(g), 17);
    size_t at = 0;
    int types_seen = 0;
    for (size_t i = 0; i < sd_gguf_count(g); i++) {
        const sd_gguf_tensor *t = sd_gguf_at(g, i);
        CHECK(sd_gguf_find(g, t->name) == t);
        CHECK(t->file_offset % 64 == 0);
        float *y = malloc(t->numel * sizeof *y);
        CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, t, y, t->numel), SD_OK);
        CHECK(at + t->numel * 4 <= ref_len);
        if (at + t->numel * 4 <= ref_len)
            CHECK_MSG(memcmp(y, ref + at, t->numel * 4) == 0, "tensor %s (%s) differs from the reference", t->name,
                      sd_ggml_type_name(t->type));
        at += t->numel * 4;
        types_seen |= 1 << (t->type & 31);
        free(y);
    }
    CHECK_EQ_INT(at, ref_len);
    CHECK_EQ_INT(types_seen, (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 12) |
                                 (1 << 13) | (1 << 14) | (1 << 30));
    const sd_gguf_tensor *t = sd_gguf_find(g, "Q4_K.raw");
    CHECK(t && t->type == SD_GGML_Q4_K && t->n_dims == 2 && t->ne[0] == 512 && t->ne[1] == 2);
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 512 && t->numel == 1024 && t->nbytes == 4 * 144);
    t = sd_gguf_find(g, "Q8_0.conv"); /* comfy.gguf.orig_shape override */
    CHECK(t && t->ndim == 4 && t->shape[0] == 16 && t->shape[1] == 4 && t->shape[2] == 4 && t->shape[3] == 4);
    float one[1];
    CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, t, one, 1), SD_ERR_INVALID);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'Q8_0.conv': has 1024 elements, caller expected 1", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
done:
    sd_gguf_close(g);
    free(ref);
    free(path);
    free(ref_path);
}

/* ---- hand-built files ---- */

typedef struct buf {
    unsigned char b[4096];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void u32(buf *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b->b[b->n++] = (unsigned char)(v >> (8 * i));
}

static void u64(buf *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b->b[b->n++] = (unsigned char)(v >> (8 * i));
}

static void str(buf *b, const char *s)
{
    u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void header(buf *b, uint64_t n_tensors, uint64_t n_kv)
{
    b->n = 0;
    put(b, "GGUF", 4);
    u32(b, 3);
    u64(b, n_tensors);
    u64(b, n_kv);
}

/* A 2-D tensor info [ne0, ne1] of type at offset. */
static void tinfo(buf *b, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1, uint64_t offset)
{
    str(b, name);
    u32(b, 2);
    u64(b, ne0);
    u64(b, ne1);
    u32(b, type);
    u64(b, offset);
}

/* Pads to 32 and appends n data bytes. */
static void data(buf *b, size_t n)
{
    while (b->n % 32)
        b->b[b->n++] = 0;
    memset(b->b + b->n, 0x3c, n);
    b->n += n;
}

static char *write_buf(const char *name, const unsigned char *p, size_t n)
{
    char *path = test_path(test_scratch_dir(), name);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
    return path;
}

/* Opens b's bytes expecting status and "<path>: <tail>". */
static void expect_error(const buf *b, sd_status status, const char *tail)
{
    char *path = write_buf("bad.gguf", b->b, b->n);
    sd_gguf *g = (sd_gguf *)1;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), status);
    CHECK(g == NULL);
    char want[1024];
    snprintf(want, sizeof want, "%s: %s", path, tail);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(path);
}

static void test_minimal_valid(void)
{
    buf b;
    header(&b, 2, 0);
    tinfo(&b, "a", SD_GGML_F16, 4, 2, 0);   /* 16 bytes, next at 32 */
    tinfo(&b, "b", SD_GGML_Q4_0, 32, 1, 32); /* 18 bytes */
    data(&b, 32 + 18);
    char *path = write_buf("ok.gguf", b.b, b.n);
    sd_gguf *g = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g) {
        const sd_gguf_tensor *t = sd_gguf_find(g, "b");
        CHECK(t && t->offset == 32 && t->nbytes == 18 && t->shape[0] == 1 && t->shape[1] == 32);
        CHECK_EQ_INT(sd_gguf_alignment(g), 32);
    }
    sd_gguf_close(g);
    /* padding after the last tensor is allowed, up to the alignment */
    b.n += 13;
    free(path);
    path = write_buf("ok2.gguf", b.b, b.n);
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    sd_gguf_close(g);
    free(path);
}

static void test_header_errors(void)
{
    buf b;
    header(&b, 0, 0);
    memcpy(b.b, "GGUG", 4);
    expect_error(&b, SD_ERR_PARSE, "not a GGUF file (no \"GGUF\" magic)");
    header(&b, 0, 0);
    b.b[4] = 1;
    expect_error(&b, SD_ERR_PARSE, "GGUF version 1 is not supported (2 or 3)");
    header(&b, 0, 0);
    b.n = 20;
    expect_error(&b, SD_ERR_PARSE, "truncated: 20 bytes, too short for a GGUF header");
    header(&b, 0, UINT64_MAX);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "truncated: 18446744073709551615 metadata entries cannot fit in 8 bytes");
    header(&b, UINT64_MAX / 2, 0);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "truncated: 9223372036854775807 tensor infos cannot fit in 8 bytes");
    header(&b, 0, 0);
    b.n += 40; /* bytes beyond any padding */
    expect_error(&b, SD_ERR_PARSE, "40 bytes after the last tensor's data");
}

static void test_metadata_errors(void)
{
    buf b;
    header(&b, 0, 1);
    u64(&b, UINT64_MAX); /* key length */
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "metadata key: string of 18446744073709551615 bytes (at most 67108864)");
    header(&b, 0, 1);
    u64(&b, 100);
    put(&b, "abc", 3);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "truncated: metadata key runs past the end of the file (offset 32 of 43)");
    header(&b, 0, 1);
    u64(&b, 3);
    put(&b, "a\0b", 3);
    u32(&b, SD_GGUF_U8);
    put(&b, "x", 1);
    expect_error(&b, SD_ERR_PARSE, "metadata key holds a NUL byte");
    header(&b, 0, 1);
    str(&b, "k");
    u32(&b, 13);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "key 'k': unknown value type 13");
    header(&b, 0, 1);
    str(&b, "k");
    u32(&b, SD_GGUF_ARRAY);
    u32(&b, SD_GGUF_ARRAY);
    u64(&b, 1);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "key 'k': arrays of arrays are not supported, element type 9");
    header(&b, 0, 1);
    str(&b, "k");
    u32(&b, SD_GGUF_ARRAY);
    u32(&b, SD_GGUF_U64);
    u64(&b, UINT64_MAX / 4); /* count * 8 overflows */
    expect_error(&b, SD_ERR_PARSE, "truncated: k runs past the end of the file (offset 49 of 49)");
    header(&b, 0, 1);
    str(&b, "k");
    u32(&b, SD_GGUF_ARRAY);
    u32(&b, SD_GGUF_STRING);
    u64(&b, 1000000);
    u64(&b, 0);
    expect_error(&b, SD_ERR_PARSE, "truncated: k runs past the end of the file (offset 49 of 57)");
    header(&b, 0, 2);
    for (int i = 0; i < 2; i++) {
        str(&b, "dup");
        u32(&b, SD_GGUF_U8);
        put(&b, "x", 1);
    }
    expect_error(&b, SD_ERR_PARSE, "duplicate metadata key 'dup'");
    header(&b, 0, 1);
    str(&b, "general.alignment");
    u32(&b, SD_GGUF_U32);
    u32(&b, 48);
    expect_error(&b, SD_ERR_INVALID, "general.alignment must be a UINT32 power of two");
}

static void test_tensor_errors(void)
{
    buf b;
    header(&b, 1, 0);
    tinfo(&b, "t", 10 /* Q2_K */, 256, 1, 0);
    data(&b, 84);
    expect_error(&b, SD_ERR_INVALID, "tensor 't': unknown GGUF type 10");
    header(&b, 1, 0);
    tinfo(&b, "t", SD_GGML_Q8_0, 48, 1, 0);
    data(&b, 64);
    expect_error(&b, SD_ERR_INVALID, "tensor 't': innermost dimension 48 is not a multiple of the Q8_0 block size 32");
    header(&b, 1, 0);
    str(&b, "t");
    u32(&b, 5);
    for (int i = 0; i < 4; i++)
        u64(&b, 1);
    expect_error(&b, SD_ERR_INVALID, "tensor 't': 5 dimensions (1 to 4)");
    header(&b, 1, 0);
    tinfo(&b, "t", SD_GGML_F32, UINT64_MAX, 1, 0);
    expect_error(&b, SD_ERR_INVALID, "tensor 't': dimension 0 is negative");
    header(&b, 1, 0);
    tinfo(&b, "t", SD_GGML_F32, INT64_MAX, 4, 0);
    expect_error(&b, SD_ERR_INVALID, "tensor 't': size of dimensions [9223372036854775807, 4] overflows");
    header(&b, 2, 0);
    tinfo(&b, "t", SD_GGML_F32, 2, 1, 0);
    tinfo(&b, "t", SD_GGML_F32, 2, 1, 32);
    data(&b, 40);
    expect_error(&b, SD_ERR_PARSE, "duplicate tensor 't'");
    header(&b, 2, 0);
    tinfo(&b, "a", SD_GGML_F32, 2, 1, 0);
    tinfo(&b, "b", SD_GGML_F32, 2, 1, 8); /* must start at 32 */
    data(&b, 40);
    expect_error(&b, SD_ERR_PARSE, "tensor 'b': data offset 8, expected 32");
    header(&b, 1, 0);
    tinfo(&b, "a", SD_GGML_F32, 2, 1, 32);
    data(&b, 40);
    expect_error(&b, SD_ERR_PARSE, "tensor 'a': data offset 32, expected 0");
    header(&b, 1, 0);
    tinfo(&b, "big", SD_GGML_Q6_K, 256, 2, 0);
    data(&b, 210);
    expect_error(&b, SD_ERR_PARSE,
                 "truncated: tensor 'big' (Q6_K, 420 bytes at data offset 0) runs past the end of the file (data "
                 "section is 210 bytes)");
    header(&b, 1, 0);
    tinfo(&b, "t", SD_GGML_F32, 2, 1, 0);
    expect_error(&b, SD_ERR_PARSE, "truncated: the data section would start at 96, past the end (65)");
    header(&b, 1, 1);
    str(&b, "comfy.gguf.orig_shape.t");
    u32(&b, SD_GGUF_ARRAY);
    u32(&b, SD_GGUF_I32);
    u64(&b, 2);
    u32(&b, 3);
    u32(&b, 3);
    tinfo(&b, "t", SD_GGML_F32, 4, 2, 0);
    data(&b, 32);
    expect_error(&b, SD_ERR_INVALID,
                 "tensor 't': comfy.gguf.orig_shape.t must be an integer array of at most 8 dimensions holding its 8 "
                 "elements (got [3, 3])");
    header(&b, 1, 0);
    str(&b, "a\nb"); /* the message stays on one line */
    u32(&b, 1);
    u64(&b, 1);
    u32(&b, 99);
    u64(&b, 0);
    expect_error(&b, SD_ERR_INVALID, "tensor 'a b': unknown GGUF type 99");
}

/* Opens path (expecting success) and returns its tensor view, or NULL. */
static sd_safetensors *open_view(const char *path, sd_gguf **g)
{
    sd_safetensors *view = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, g), SD_OK);
    if (*g)
        CHECK_EQ_INT(sd_gguf_tensor_view(ctx, *g, &view), SD_OK);
    return view;
}

/* A GGUF file seen through the safetensors view: family detection, shapes, F16 reads, and
 * quantised tensors refused by the float readers. */
static void test_tensor_view(void)
{
    buf b;
    header(&b, 2, 0);
    tinfo(&b, "double_blocks.0.img_attn.proj.weight", SD_GGML_Q8_0, 32, 2, 0); /* 68 bytes, next at 96 */
    tinfo(&b, "img_in.weight", SD_GGML_F16, 4, 2, 96);
    data(&b, 96 + 16);
    char *path = write_buf("flux.gguf", b.b, b.n);
    sd_gguf *g = NULL;
    sd_safetensors *view = open_view(path, &g);
    if (!view)
        goto done;
    CHECK_EQ_INT(sd_family_detect(view), SD_FAMILY_FLUX);
    const sd_st_tensor *w = sd_safetensors_find(view, "img_in.weight");
    CHECK(w && w->dtype == SD_ST_F16 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 4 && w->numel == 8);
    float a[8], c[8];
    CHECK_EQ_INT(sd_safetensors_read_f32(ctx, view, w, a, 8), SD_OK);
    CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, sd_gguf_find(g, "img_in.weight"), c, 8), SD_OK);
    CHECK(memcmp(a, c, sizeof a) == 0);
    const sd_st_tensor *q = sd_safetensors_find(view, "double_blocks.0.img_attn.proj.weight");
    CHECK(q && q->dtype == SD_ST_GGML && q->nbytes == 68 && q->shape[0] == 2 && q->shape[1] == 32);
    float f[64];
    CHECK_EQ_INT(sd_safetensors_read_f32(ctx, view, q, f, 64), SD_ERR_INVALID);
    char want[512];
    snprintf(want, sizeof want,
             "%s: tensor 'double_blocks.0.img_attn.proj.weight': dtype GGML is not a float type (F32, F16, BF16, F8_E4M3, F8_E5M2)", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
done:
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

/* A file truncated while open: the GGUF reader and its view (which outlives it) read with pread
 * and report the change as an I/O error naming the file, where a mapping died with SIGBUS. */
static void test_changed_while_open(void)
{
    buf b;
    header(&b, 2, 0);
    tinfo(&b, "a", SD_GGML_F16, 4, 2, 0);
    tinfo(&b, "q", SD_GGML_Q8_0, 32, 1, 32);
    data(&b, 32 + 34);
    char *path = write_buf("changed.gguf", b.b, b.n);
    sd_gguf *g = NULL;
    sd_safetensors *view = open_view(path, &g);
    if (!view)
        goto done;
    const sd_st_tensor *a = sd_safetensors_find(view, "a"), *q = sd_safetensors_find(view, "q");
    unsigned char blocks[34], row[34];
    float f[8];
    CHECK(a && q && q->offset == sd_gguf_find(g, "q")->file_offset);
    CHECK_EQ_INT(sd_safetensors_read_raw(ctx, view, q, blocks), SD_OK);
    CHECK_EQ_INT(sd_safetensors_read_raw_range(ctx, view, q, 2, 32, row), SD_OK);
    CHECK(memcmp(blocks + 2, row, 32) == 0 && blocks[2] == 0x3c);
    CHECK_EQ_INT(sd_safetensors_read_raw_range(ctx, view, q, 2, 33, row), SD_ERR_INVALID);
    size_t was = b.n;
    CHECK(truncate(path, (off_t)(b.n - 20)) == 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: changed since it was opened (now %zu bytes, was %zu)", path, was - 20, was);
    CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, sd_gguf_find(g, "a"), f, 8), SD_ERR_IO);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    sd_gguf_close(g);
    g = NULL;
    CHECK_EQ_INT(sd_safetensors_read_f32(ctx, view, a, f, 8), SD_ERR_IO); /* the view outlives g */
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK_EQ_INT(sd_safetensors_read_raw(ctx, view, q, blocks), SD_ERR_IO);
done:
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

/* Metadata larger than the first read (1 MiB): the header is read again, twice as large, until
 * it holds the metadata and tensor infos. */
static void test_large_metadata(void)
{
    enum { BIG = 3 * 1024 * 1024 + 5 };
    buf h, t;
    header(&h, 1, 1);
    str(&h, "big");
    u32(&h, SD_GGUF_STRING);
    u64(&h, BIG);
    t.n = 0;
    tinfo(&t, "w", SD_GGML_F16, 4, 2, 0);
    size_t end = h.n + BIG + t.n;
    while (end % 32)
        t.b[t.n++] = 0, end++;
    memset(t.b + t.n, 0x3c, 16);
    t.n += 16;
    char *big = malloc(BIG);
    char *path = test_path(test_scratch_dir(), "big.gguf");
    FILE *f = fopen(path, "wb");
    CHECK(big && f);
    if (!big || !f)
        goto done;
    memset(big, 'x', BIG);
    big[BIG - 1] = 'y';
    CHECK(fwrite(h.b, 1, h.n, f) == h.n && fwrite(big, 1, BIG, f) == BIG && fwrite(t.b, 1, t.n, f) == t.n);
    fclose(f);
    f = NULL;
    sd_gguf *g = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g) {
        size_t len = 0;
        const char *v = sd_gguf_kv_string(sd_gguf_find_kv(g, "big"), &len);
        CHECK(v && len == BIG && v[0] == 'x' && v[BIG - 1] == 'y');
        const sd_gguf_tensor *w = sd_gguf_find(g, "w");
        float x[8];
        CHECK(w && w->file_offset % 32 == 0 && w->file_offset == end);
        CHECK_EQ_INT(w ? sd_gguf_read_f32(ctx, g, w, x, 8) : SD_ERR_INVALID, SD_OK);
    }
    sd_gguf_close(g);
done:
    if (f)
        fclose(f);
    free(big);
    free(path);
}

/* Every prefix of a valid file fails cleanly with a one-line message. */
static void test_every_truncation(void)
{
    char *path = test_golden_path("gguf_blocks.gguf");
    size_t len = 0;
    unsigned char *all = read_bytes(path, &len);
    CHECK(all && len > 1000);
    for (size_t n = 0; all && n < len - 63; n += (n < 1600 ? 1 : 97)) {
        char *p = write_buf("prefix.gguf", all, n);
        sd_gguf *g = NULL;
        sd_status s = sd_gguf_open(ctx, p, &g);
        CHECK_MSG(s != SD_OK && g == NULL, "prefix of %zu bytes opened", n);
        const char *m = sd_context_errmsg(ctx);
        CHECK_MSG(m && *m && !strchr(m, '\n'), "prefix of %zu bytes: message '%s'", n, m ? m : "");
        free(p);
    }
    free(all);
    free(path);
}

/* sd_ggml_quantize equals the gguf package's quantize() byte for byte (Q8_0, Q4_0, BF16). */
static void test_quantize_golden(void)
{
    char *in_path = test_golden_path("gguf_quantize.f32"), *ref_path = test_golden_path("gguf_quantize.bin");
    size_t in_len = 0, ref_len = 0;
    unsigned char *in = read_bytes(in_path, &in_len), *ref = read_bytes(ref_path, &ref_len);
    CHECK(in && ref && in_len == 384 * 4 && ref_len == 12 * 34 + 12 * 18 + 384 * 2);
    if (in && ref && in_len == 384 * 4 && ref_len == 12 * 34 + 12 * 18 + 384 * 2) {
        float x[384];
        memcpy(x, in, sizeof x);
        unsigned char q[384 * 2];
        const struct {
            sd_ggml_type type;
            size_t bytes;
        } types[] = {{SD_GGML_Q8_0, 12 * 34}, {SD_GGML_Q4_0, 12 * 18}, {SD_GGML_BF16, 384 * 2}};
        size_t at = 0;
        for (size_t t = 0; t < 3; t++) {
            CHECK(sd_ggml_quantize(types[t].type, x, q, 384));
            for (size_t b = 0; b < types[t].bytes; b++)
                if (q[b] != ref[at + b]) {
                    CHECK_MSG(false, "%s byte %zu: %u, reference %u", sd_ggml_type_name(types[t].type), b, q[b],
                              ref[at + b]);
                    break;
                }
            at += types[t].bytes;
        }
    }
    CHECK(!sd_ggml_quantize(SD_GGML_Q4_1, NULL, NULL, 0));
    CHECK(!sd_ggml_quantize(SD_GGML_Q8_0, NULL, NULL, 16));
    free(in);
    free(ref);
    free(in_path);
    free(ref_path);
}

static sd_status ramp_fill(void *user, size_t index, size_t first, size_t n, float *dst)
{
    (void)user;
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)index + 0.001f * (float)((first + i) % 997) - 0.5f;
    return SD_OK;
}

static sd_status failing_fill(void *user, size_t index, size_t first, size_t n, float *dst)
{
    (void)dst, (void)n, (void)first;
    return index == 1 ? sd_set_error(user, SD_ERR_IO, "fill failed") : SD_OK;
}

/* The streaming writer: a file the reader opens, with the architecture, the file type and each
 * tensor's values as quantise-then-dequantise gives them, across chunk boundaries (a tensor of
 * 3 x 2^20 + 64 elements); a failed fill leaves no file; unwritable types are refused. */
static void test_writer(void)
{
    char *path = test_path(test_scratch_dir(), "written.gguf");
    const sd_gguf_entry entries[] = {
        {"a.weight", SD_GGML_Q4_0, 2, {3 * 32768 + 2, 32}},
        {"b.weight", SD_GGML_Q8_0, 2, {3, 64}},
        {"c.bias", SD_GGML_F32, 1, {5}},
        {"d.weight", SD_GGML_F16, 3, {2, 3, 7}},
    };
    CHECK_EQ_INT(sd_gguf_write(ctx, path, "flux", 2, entries, 4, ramp_fill, NULL), SD_OK);
    sd_gguf *g = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g) {
        size_t len = 0;
        const char *arch = sd_gguf_kv_string(sd_gguf_find_kv(g, "general.architecture"), &len);
        CHECK(arch && len == 4 && memcmp(arch, "flux", 4) == 0);
        CHECK_EQ_INT(kv_int(g, "general.file_type"), 2);
        CHECK_EQ_INT(kv_int(g, "general.quantization_version"), 2);
        CHECK_EQ_INT(sd_gguf_count(g), 4);
        for (size_t i = 0; i < 4 && i < sd_gguf_count(g); i++) {
            const sd_gguf_tensor *t = sd_gguf_at(g, i);
            CHECK_STR_EQ(t->name, entries[i].name);
            CHECK_EQ_INT(t->type, entries[i].type);
            CHECK_EQ_INT(t->ndim, entries[i].ndim);
            for (int d = 0; d < t->ndim; d++)
                CHECK_EQ_INT(t->shape[d], entries[i].shape[d]);
            float *want = malloc(t->numel * sizeof *want), *got = malloc(t->numel * sizeof *got);
            void *q = malloc(t->numel * 4);
            ramp_fill(NULL, i, 0, t->numel, want);
            CHECK(sd_ggml_quantize(t->type, want, q, t->numel) && sd_ggml_dequantize(t->type, q, want, t->numel));
            CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, t, got, t->numel), SD_OK);
            CHECK_MSG(memcmp(want, got, t->numel * sizeof *got) == 0, "tensor %s read back differs", t->name);
            free(want);
            free(got);
            free(q);
        }
        sd_gguf_close(g);
    }
    char *failed = test_path(test_scratch_dir(), "failed.gguf");
    CHECK_EQ_INT(sd_gguf_write(ctx, failed, "flux", -1, entries, 4, failing_fill, ctx), SD_ERR_IO);
    CHECK(access(failed, F_OK) != 0);
    const sd_gguf_entry bad[] = {{"odd", SD_GGML_Q8_0, 2, {2, 48}}};
    CHECK_EQ_INT(sd_gguf_write(ctx, failed, "flux", -1, bad, 1, ramp_fill, NULL), SD_ERR_INVALID);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'odd': shape or type the GGUF writer cannot store", failed);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    const sd_gguf_entry k4[] = {{"k", SD_GGML_Q4_K, 1, {256}}};
    CHECK_EQ_INT(sd_gguf_write(ctx, failed, "flux", -1, k4, 1, ramp_fill, NULL), SD_ERR_INVALID);
    CHECK(access(failed, F_OK) != 0);
    free(failed);
    free(path);
}

static int q8_type(const sd_layout_entry *e)
{
    return e->ndim == 1 ? SD_GGML_F32 : SD_GGML_Q8_0;
}

/* A random layout written as GGUF holds the values the safetensors writer gives (vectors exactly,
 * matrices within Q8_0's rounding), under the rename's names. */
static void test_random_gguf(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("flux-schnell-tiny", &cfg));
    sd_layout layout = {0};
    CHECK_EQ_INT(sd_layout_flux(ctx, &cfg.flux, "", &layout), SD_OK);
    char *gpath = test_path(test_scratch_dir(), "flux.gguf"), *spath = test_path(test_scratch_dir(), "flux.st");
    CHECK_EQ_INT(sd_layout_write_random_gguf(ctx, gpath, &layout, "flux", 7, q8_type, 5, NULL, NULL), SD_OK);
    CHECK_EQ_INT(sd_layout_write_random(ctx, spath, &layout, SD_ST_F32, 5, NULL, NULL), SD_OK);
    sd_gguf *g = NULL;
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, gpath, &g), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, spath, &st), SD_OK);
    for (size_t i = 0; g && st && i < layout.n; i++) {
        const sd_gguf_tensor *t = sd_gguf_find(g, layout.entries[i].name);
        const sd_st_tensor *s = sd_safetensors_find(st, layout.entries[i].name);
        CHECK_MSG(t && s && t->numel == s->numel, "tensor %s", layout.entries[i].name);
        if (!t || !s || t->numel != s->numel)
            continue;
        CHECK_EQ_INT(t->type, layout.entries[i].ndim == 1 ? SD_GGML_F32 : SD_GGML_Q8_0);
        float *a = malloc(t->numel * sizeof *a), *b = malloc(t->numel * sizeof *b);
        CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, t, a, t->numel), SD_OK);
        CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, s, b, s->numel), SD_OK);
        float err = 0, amax = 0;
        for (size_t k = 0; k < t->numel; k++) {
            float d = a[k] - b[k];
            err = d < 0 ? -d > err ? -d : err : d > err ? d : err;
            amax = b[k] < 0 ? -b[k] > amax ? -b[k] : amax : b[k] > amax ? b[k] : amax;
        }
        CHECK_MSG(t->type == SD_GGML_F32 ? err == 0 : err <= amax / 127.0f, "tensor %s differs by %g",
                  t->name, (double)err);
        free(a);
        free(b);
    }
    sd_gguf_close(g);
    sd_safetensors_close(st);
    sd_layout_free(&layout);
    free(gpath);
    free(spath);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    RUN(test_golden);
    RUN(test_minimal_valid);
    RUN(test_header_errors);
    RUN(test_metadata_errors);
    RUN(test_tensor_errors);
    RUN(test_tensor_view);
    RUN(test_changed_while_open);
    RUN(test_large_metadata);
    RUN(test_every_truncation);
    RUN(test_quantize_golden);
    RUN(test_writer);
    RUN(test_random_gguf);
    sd_context_free(ctx);
    return test_summary("test_gguf");
}
