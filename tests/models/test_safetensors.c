/* safetensors: every validation rule with its exact error, conversions, writer round trip. */
#include "test.h"
#include "ml/formats/safetensors.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static sd_context *ctx;

/* Writes 8-byte length (hlen_override if non-zero) + header + data_len bytes of 0x11. */
static char *write_raw(const char *name, const char *header, size_t data_len, uint64_t hlen_override)
{
    char *path = test_path(test_scratch_dir(), name);
    FILE *f = fopen(path, "wb");
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)((hlen >> (8 * i)) & 0xff), f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0x11, f);
    fclose(f);
    return path;
}

/* Opens path expecting failure with status and the message "<path>: <tail>". */
static void expect_error(const char *path, sd_status status, const char *tail)
{
    sd_safetensors *st = (sd_safetensors *)1;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), status);
    CHECK(st == NULL);
    char want[1024];
    snprintf(want, sizeof want, "%s: %s", path, tail);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
}

static void test_valid_file(void)
{
    char *p = write_raw("ok.safetensors",
                        "{\"__metadata__\":{\"format\":\"pt\"},"
                        "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[16,16]}}  ",
                        16, 0);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, p, &st), SD_OK);
    if (!st)
        goto done;
    CHECK_EQ_INT(sd_safetensors_count(st), 3);
    CHECK_STR_EQ(sd_safetensors_at(st, 0)->name, "a"); /* offset order */
    CHECK_STR_EQ(sd_safetensors_at(st, 1)->name, "b");
    const sd_st_tensor *b = sd_safetensors_find(st, "b");
    CHECK(b && b->dtype == SD_ST_F16 && b->ndim == 2 && b->shape[1] == 2 && b->numel == 4 && b->nbytes == 8);
    const sd_st_tensor *e = sd_safetensors_find(st, "e");
    CHECK(e && e->numel == 0 && e->nbytes == 0);
    CHECK(sd_safetensors_find(st, "c") == NULL);
    CHECK(sd_safetensors_has_prefix(st, "b"));
    CHECK(!sd_safetensors_has_prefix(st, "bb"));
    CHECK_STR_EQ(sd_safetensors_metadata(st, "format"), "pt");
    CHECK(sd_safetensors_metadata(st, "nope") == NULL);
    /* I64 is listed but is not a weight dtype. */
    float f[1];
    CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, e, f, 0), SD_ERR_INVALID);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'e': dtype I64 is not a float type (F32, F16, BF16, F8_E4M3, F8_E5M2)", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    float four[4];
    CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, b, four, 3), SD_ERR_INVALID);
    snprintf(want, sizeof want, "%s: tensor 'b': has 4 elements, caller expected 3", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
done:
    sd_safetensors_close(st);
    free(p);
}

static void test_truncated_file(void)
{
    char *p = test_path(test_scratch_dir(), "short.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("\x10\0\0\0\0", 1, 5, f);
    fclose(f);
    expect_error(p, SD_ERR_PARSE, "truncated: 5 bytes, too short for a safetensors header");
    free(p);
    /* The data section is shorter than the offsets say. */
    p = write_raw("trunc_data.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'a': data_offsets [0, 16] run past the end of the file (data section is 8 bytes)");
    free(p);
}

static void test_header_past_end(void)
{
    char *p = write_raw("hlen.safetensors", "{}", 0, 4096);
    expect_error(p, SD_ERR_PARSE, "header length 4096 runs past the end of the file (10 bytes)");
    free(p);
}

static void test_header_limit(void)
{
    char *p = write_raw("huge.safetensors", "{}", 0, 100u * 1024 * 1024 + 1);
    expect_error(p, SD_ERR_LIMIT, "header length 104857601 exceeds the limit of 104857600 bytes");
    free(p);
}

/* Files that start like PyTorch checkpoints (.ckpt/.pt/.pth) go to the restricted unpickler
 * (tests/models/test_pickle.c reads real ones): a broken one is its parse error naming the file,
 * not a header length over the limit (exit 4); a safetensors file whose length bytes happen to start like a pickle
 * (a 640-byte header: 80 02 00 ...) still opens. */
static void test_pickle(void)
{
    static const struct {
        const char *name, *bytes, *tail;
        size_t len;
    } files[] = {
        {"zip.ckpt", "PK\003\004\024\000\000\010\000\000archive/data.pkl",
         "not a zip file (no end of central directory)", 26},
        {"raw.pt", "\200\002\212\012l\374\234F\371 j\250P\031.", "truncated pickle (no STOP)", 15},
        {"p5.pt", "\200\005\225\013\000\000\000\000\000\000\000}\224.", "truncated pickle (no STOP)", 14},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = test_path(test_scratch_dir(), files[i].name);
        FILE *f = fopen(p, "wb");
        fwrite(files[i].bytes, 1, files[i].len, f);
        fclose(f);
        expect_error(p, SD_ERR_PARSE, files[i].tail);
        free(p);
    }
    char header[641];
    memset(header, ' ', 640);
    memcpy(header, "{}", 2);
    header[640] = '\0';
    char *p = write_raw("looks_like_pickle.safetensors", header, 0, 0);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, p, &st), SD_OK);
    CHECK(st && sd_safetensors_count(st) == 0);
    sd_safetensors_close(st);
    free(p);
}

static void test_overlap(void)
{
    char *p = write_raw("overlap.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                        12, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]");
    free(p);
}

static void test_gap(void)
{
    char *p = write_raw("gap.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                        20, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'b': gap of 4 bytes before its data at offset 12");
    free(p);
    p = write_raw("trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, 0);
    expect_error(p, SD_ERR_PARSE, "4 bytes after the last tensor's data");
    free(p);
}

static void test_dtype_shape_mismatch(void)
{
    char *p = write_raw("mismatch.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}",
                        8, 0);
    expect_error(p, SD_ERR_INVALID,
                 "tensor 'a': dtype F16 with shape [2, 3] does not fit data_offsets [0, 8] (8 bytes)");
    free(p);
    /* A shape whose byte size overflows size_t. */
    p = write_raw("overflow.safetensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,8]}}", 8, 0);
    expect_error(p, SD_ERR_INVALID,
                 "tensor 'a': dtype F32 with shape [4611686018427387904, 8] does not fit data_offsets [0, 8] (8 bytes)");
    free(p);
    p = write_raw("dtype.safetensors", "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0);
    expect_error(p, SD_ERR_INVALID, "tensor 'a': unknown dtype 'Q4_K'");
    free(p);
    p = write_raw("negshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'a': shape entry 0 is not a non-negative integer");
    free(p);
    p = write_raw("nooffs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'a': missing or malformed \"data_offsets\"");
    free(p);
}

/* A tensor name with a line break (JSON "\n") is quoted on one line (found by fuzz_safetensors). */
static void test_name_with_newline(void)
{
    char *p = write_raw("newline.safetensors", "{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                        8, 0);
    expect_error(p, SD_ERR_PARSE, "tensor 'a b': data_offsets [0, 16] run past the end of the file (data section is 8 bytes)");
    CHECK(strchr(sd_context_errmsg(ctx), '\n') == NULL);
    free(p);
}

static void test_duplicate_key(void)
{
    char *p = write_raw("dup.safetensors",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                        8, 0);
    expect_error(p, SD_ERR_PARSE, "header is not valid JSON: duplicate object key near '\"a\"' (byte 57)");
    free(p);
}

static void test_not_json(void)
{
    char *p = write_raw("nojson.safetensors", "{\"a\": [1, 2,", 0, 0);
    expect_error(p, SD_ERR_PARSE, "header is not valid JSON: ']' expected near end of file (byte 12)");
    free(p);
    p = write_raw("array.safetensors", "[1, 2]", 0, 0);
    expect_error(p, SD_ERR_PARSE, "header is not a JSON object");
    free(p);
    p = write_raw("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, 0);
    expect_error(p, SD_ERR_PARSE, "\"__metadata__\" entry 'k' is not a string");
    free(p);
    char *missing = test_path(test_scratch_dir(), "absent.safetensors");
    expect_error(missing, SD_ERR_IO, "No such file or directory");
    free(missing);
}

static void test_half_conversions(void)
{
    /* Every finite half survives half -> float -> half; NaNs stay NaN. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_half_to_float((uint16_t)h);
        uint16_t back = sd_float_to_half(f);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu))
            bad += !(isnan(f) && (back & 0x7c00u) == 0x7c00u && (back & 0x3ffu));
        else
            bad += back != h;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(sd_half_to_float(0x3c00) == 1.0f);
    CHECK(sd_half_to_float(0x0001) == ldexpf(1.0f, -24));
    CHECK(sd_half_to_float(0x7bff) == 65504.0f);
    CHECK(sd_half_to_float(0xc000) == -2.0f);
    /* Round to nearest even. */
    CHECK_EQ_INT(sd_float_to_half(1.0f + ldexpf(1.0f, -11)), 0x3c00);       /* tie: to even */
    CHECK_EQ_INT(sd_float_to_half(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);   /* tie: to even (up) */
    CHECK_EQ_INT(sd_float_to_half(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3c01);
    CHECK_EQ_INT(sd_float_to_half(65519.0f), 0x7bff);
    CHECK_EQ_INT(sd_float_to_half(65520.0f), 0x7c00);
    CHECK_EQ_INT(sd_float_to_half(-1e30f), 0xfc00);
    CHECK_EQ_INT(sd_float_to_half(ldexpf(1.0f, -25)), 0x0000);              /* tie to even: zero */
    CHECK_EQ_INT(sd_float_to_half(ldexpf(1.5f, -25)), 0x0001);
    CHECK_EQ_INT(sd_float_to_half(ldexpf(3.0f, -25)), 0x0002);              /* 1.5 subnormal ulps: tie up to even */
    CHECK_EQ_INT(sd_float_to_half(ldexpf(1.0f, -14) * (1.0f - ldexpf(1.0f, -12))), 0x0400); /* rounds up to normal */
    CHECK_EQ_INT(sd_float_to_half(-0.0f), 0x8000);
    CHECK(isnan(sd_half_to_float(sd_float_to_half(NAN))));
    /* bf16 is the top half of a float: exact. */
    CHECK(sd_bf16_to_float(0x3f80) == 1.0f);
    CHECK(sd_bf16_to_float(0xc2f7) == -123.5f);
    CHECK(sd_bf16_to_float(0x0001) == ldexpf(1.0f, -133));
}

typedef struct fill_data {
    const void *const *src;
} fill_data;

static sd_status fill_copy(void *user, size_t index, void *dst, size_t nbytes)
{
    fill_data *fd = user;
    memcpy(dst, fd->src[index], nbytes);
    return SD_OK;
}

static void test_write_and_convert(void)
{
    const float f32[3] = {1.0f, -2.5f, 1.0f + ldexpf(1.0f, -11)};
    const uint16_t f16[3] = {0x3c00, 0xc100, 0x0001};
    const uint16_t bf16[3] = {0x3f80, 0xc2f7, 0x0001};
    const void *src[3] = {f32, f16, bf16};
    sd_st_entry e[3] = {{"w.f32", SD_ST_F32, 1, {3}}, {"w.f16", SD_ST_F16, 2, {1, 3}}, {"w.bf16", SD_ST_BF16, 1, {3}}};
    const char *meta[] = {"format", "pt", NULL};
    char *p = test_path(test_scratch_dir(), "written.safetensors");
    fill_data fd = {src};
    CHECK_EQ_INT(sd_safetensors_write(ctx, p, e, 3, meta, fill_copy, &fd), SD_OK);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, p, &st), SD_OK);
    if (st) {
        float out[3];
        uint16_t h[3];
        CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, sd_safetensors_find(st, "w.f32"), out, 3), SD_OK);
        CHECK(memcmp(out, f32, sizeof out) == 0);
        CHECK_EQ_INT(sd_safetensors_read_f16(ctx, st, sd_safetensors_find(st, "w.f32"), h, 3), SD_OK);
        CHECK(h[0] == 0x3c00 && h[1] == 0xc100 && h[2] == 0x3c00);
        CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, sd_safetensors_find(st, "w.f16"), out, 3), SD_OK);
        CHECK(out[0] == 1.0f && out[1] == -2.5f && out[2] == ldexpf(1.0f, -24));
        CHECK_EQ_INT(sd_safetensors_read_f16(ctx, st, sd_safetensors_find(st, "w.f16"), h, 3), SD_OK);
        CHECK(memcmp(h, f16, sizeof h) == 0);
        CHECK_EQ_INT(sd_safetensors_read_f32(ctx, st, sd_safetensors_find(st, "w.bf16"), out, 3), SD_OK);
        CHECK(out[0] == 1.0f && out[1] == -123.5f && out[2] == ldexpf(1.0f, -133));
        CHECK_EQ_INT(sd_safetensors_read_f16(ctx, st, sd_safetensors_find(st, "w.bf16"), h, 3), SD_OK);
        CHECK(h[0] == 0x3c00 && h[1] == sd_float_to_half(-123.5f) && h[2] == 0x0000);
        CHECK_STR_EQ(sd_safetensors_metadata(st, "format"), "pt");
    }
    sd_safetensors_close(st);
    /* A duplicate name is refused and nothing is written. */
    char *q = test_path(test_scratch_dir(), "dupwrite.safetensors");
    sd_st_entry d[2] = {{"x", SD_ST_F32, 1, {1}}, {"x", SD_ST_F32, 1, {1}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, q, d, 2, NULL, fill_copy, &fd), SD_ERR_INVALID);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'x': empty, reserved or duplicate name", q);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(!test_file_exists(q));
    free(q);
    free(p);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    RUN(test_valid_file);
    RUN(test_truncated_file);
    RUN(test_header_past_end);
    RUN(test_header_limit);
    RUN(test_pickle);
    RUN(test_overlap);
    RUN(test_gap);
    RUN(test_dtype_shape_mismatch);
    RUN(test_name_with_newline);
    RUN(test_duplicate_key);
    RUN(test_not_json);
    RUN(test_half_conversions);
    RUN(test_write_and_convert);
    sd_context_free(ctx);
    return test_summary("test_safetensors");
}
