/* The T5 v1.1 encoder against transformers' T5EncoderModel (goldens from
 * tests/reference/make_t5_goldens.py: a tiny random configuration in t5xxl_fp16's key layout, two
 * sequences of 20 and 150 tokens), the relative-position buckets, and bad files. */
#include "test.h"
#include "support/golden.h"
#include "ml/formats/gguf.h"
#include "ml/text/t5.h"
#include "ml/text/text_encoder_file.h"
#include "ml/text/text_encoder_write.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D_MODEL 32
static const int lengths[2] = {20, 150};

static sd_context *ctx;

/* Encodes the golden token sequences with the weights of st and compares with golden `want`. */
static void encode_against(const sd_safetensors *st, const char *want, sd_dtype weight_dtype, double tol)
{
    sd_cl *cl = NULL;
    sd_t5_model *m = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    if (st && cl)
        CHECK_EQ_INT(sd_t5_model_new(cl, st, "", weight_dtype, &m), SD_OK);
    int32_t *tokens = test_read_golden("t5_tokens_in.i32", 170 * sizeof(int32_t));
    float *ref = test_read_golden(want, 170 * D_MODEL * sizeof(float));
    if (!m || !tokens || !ref)
        goto done;
    const sd_t5_config *c = sd_t5_model_config(m);
    CHECK(c->layers == 3 && c->d_model == 32 && c->heads == 4 && c->d_kv == 8 && c->d_ff == 48 && c->buckets == 32 &&
          c->vocab == 80);
    size_t at = 0;
    for (int i = 0; i < 2; i++) {
        int n = lengths[i];
        float *hidden = malloc((size_t)n * D_MODEL * sizeof *hidden);
        CHECK_EQ_INT(sd_t5_encode(m, tokens + at, n, hidden), SD_OK);
        double d = test_max_abs_diff(hidden, ref + at * D_MODEL, (size_t)n * D_MODEL);
        CHECK_MSG(d <= tol, "%d tokens: max abs diff %g > %g", n, d, tol);
        fprintf(stderr, "  %s: %s weights, %d tokens: max abs diff %.3g\n", want, sd_dtype_name(weight_dtype), n, d);
        at += (size_t)n;
        free(hidden);
    }
    int32_t bad = 80;
    float out[D_MODEL];
    CHECK_EQ_INT(sd_t5_encode(m, &bad, 1, out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "T5 token id 80 outside the vocabulary of 80");
done:
    free(tokens);
    free(ref);
    sd_t5_model_free(m);
}

static void encode_against_goldens(sd_dtype weight_dtype, double tol)
{
    char *path = test_golden_path("t5_tiny.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    encode_against(st, "t5_hidden.f32", weight_dtype, tol);
    sd_safetensors_close(st);
    free(path);
}

/* The weights are f16 in the file, so f16 storage is exact: both dtypes give the f32 reference
 * up to the order of the sums (outputs are O(1)). */
static void test_encode_f32(void)
{
    encode_against_goldens(SD_DTYPE_F32, 1e-4);
}

static void test_encode_f16(void)
{
    encode_against_goldens(SD_DTYPE_F16, 1e-4);
}

/* The same weights in a GGUF file with llama.cpp's names, matrices as Q8_0 (the embedding too):
 * renamed, the Linear matrices kept as blocks on the device and dequantised exactly in linear's
 * pack step whatever the storage dtype (embedding rows on the host), against transformers on the
 * gguf package's dequantised weights. Rounding them to f16 (as the f16 upload did before) moves
 * the outputs by 0.05: Q8_0 values d*q need up to 18 bits. */
static void test_encode_gguf(void)
{
    char *path = test_golden_path("t5_tiny.gguf");
    sd_gguf *g = NULL;
    sd_safetensors *view = NULL, *renamed = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g)
        CHECK_EQ_INT(sd_gguf_tensor_view(ctx, g, &view), SD_OK);
    if (view)
        CHECK_EQ_INT(sd_t5_rename_llama(ctx, view, &renamed), SD_OK);
    if (renamed) {
        const sd_st_tensor *q = sd_safetensors_find(renamed, "encoder.block.2.layer.0.SelfAttention.q.weight");
        CHECK(q && q->dtype == SD_ST_GGML && q->ggml_type == SD_GGML_Q8_0);
        CHECK(sd_safetensors_find(renamed, "shared.weight") && sd_safetensors_find(renamed, "encoder.final_layer_norm.weight"));
        encode_against(renamed, "t5_gguf_hidden.f32", SD_DTYPE_F16, 1e-4);
        encode_against(renamed, "t5_gguf_hidden.f32", SD_DTYPE_F32, 1e-4);
    }
    sd_safetensors_close(renamed);
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

/* transformers' _relative_position_bucket (bidirectional, 32 buckets, max distance 128). */
static void test_buckets(void)
{
    static const struct {
        int64_t distance;
        int bucket;
    } cases[] = {{0, 0},   {1, 17},   {-1, 1},   {7, 23},   {-7, 7},   {8, 24},    {-8, 8},    {11, 24},
                 {12, 25}, {16, 26},  {-16, 10}, {32, 28},  {64, 30},  {127, 31},  {128, 31},  {1000, 31},
                 {-128, 15}, {-500, 15}, {15, 25}, {-31, 11}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(sd_t5_bucket(cases[i].distance, 32, 128) == cases[i].bucket, "distance %lld: bucket %d, want %d",
                  (long long)cases[i].distance, sd_t5_bucket(cases[i].distance, 32, 128), cases[i].bucket);
}

/* A missing or misshapen tensor is one line naming the file and tensor. */
static void test_bad_files(void)
{
    char *src = test_golden_path("t5_tiny.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, src, &st), SD_OK);
    if (!st)
        goto done;
    sd_t5_config cfg;
    CHECK_EQ_INT(sd_t5_inspect(ctx, st, "text_encoders.t5xxl.transformer.", &cfg), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "missing tensor 'text_encoders.t5xxl.transformer.shared.weight' (T5 encoder)");
    /* rename a block's wo so that block 1 lacks it */
    size_t n = sd_safetensors_count(st);
    const sd_st_tensor **from = malloc(n * sizeof *from);
    const char **names = malloc(n * sizeof *names);
    for (size_t i = 0; i < n; i++) {
        from[i] = sd_safetensors_at(st, i);
        names[i] = strcmp(from[i]->name, "encoder.block.1.layer.1.DenseReluDense.wo.weight") == 0 ? "x.wo"
                                                                                                  : from[i]->name;
    }
    sd_safetensors *alias = NULL;
    CHECK_EQ_INT(sd_safetensors_alias(ctx, st, from, names, n, &alias), SD_OK);
    if (alias) {
        CHECK_EQ_INT(sd_t5_inspect(ctx, alias, "", &cfg), SD_ERR_NOT_FOUND);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx),
                           "missing tensor 'encoder.block.1.layer.1.DenseReluDense.wo.weight' (T5 encoder)");
    }
    sd_safetensors_close(alias);
    /* swap q and o of block 2: o's shape is checked */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(from[i]->name, "encoder.block.2.layer.1.DenseReluDense.wi_0.weight") == 0)
            names[i] = "encoder.block.2.layer.1.DenseReluDense.wo.weight";
        else if (strcmp(from[i]->name, "encoder.block.2.layer.1.DenseReluDense.wo.weight") == 0)
            names[i] = "encoder.block.2.layer.1.DenseReluDense.wi_0.weight";
        else
            names[i] = from[i]->name;
    }
    CHECK_EQ_INT(sd_safetensors_alias(ctx, st, from, names, n, &alias), SD_OK);
    if (alias) {
        CHECK_EQ_INT(sd_t5_inspect(ctx, alias, "", &cfg), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor 'encoder.block.2.layer.1.DenseReluDense.wi_0.weight' has "
                                                   "shape [32, 48], the T5 encoder needs [48, 32]");
    }
    sd_safetensors_close(alias);
    free(from);
    free(names);
done:
    sd_safetensors_close(st);
    free(src);
}

/* Encodes the golden token sequences with the weights of the file at path into *out (malloc'd). */
static float *encode_file(const char *path, sd_dtype weight_dtype)
{
    sd_cl *cl = NULL;
    sd_safetensors *st = NULL;
    sd_t5_model *m = NULL;
    float *out = malloc(170 * D_MODEL * sizeof *out);
    int32_t *tokens = test_read_golden("t5_tokens_in.i32", 170 * sizeof(int32_t));
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    if (st && cl)
        CHECK_EQ_INT(sd_t5_model_new(cl, st, "", weight_dtype, &m), SD_OK);
    sd_status s = m && tokens && out ? SD_OK : SD_ERR_INVALID;
    for (int i = 0, at = 0; !s && i < 2; at += lengths[i], i++)
        s = sd_t5_encode(m, tokens + at, lengths[i], out + (size_t)at * D_MODEL);
    sd_t5_model_free(m);
    sd_safetensors_close(st);
    free(tokens);
    if (s) {
        free(out);
        return NULL;
    }
    return out;
}

/* t5xxl_fp8_e4m3fn and ComfyUI's _scaled layout (sdflow_mktextenc t5-fp8[-scaled] of the golden
 * T5): the fp8 file encodes as the F32 file of its values (fp8 value * scale_weight), read through
 * the text-encoder file loader's detection too; a NaN scale is one error naming it. */
static void test_encode_fp8(void)
{
    char *src = test_golden_path("t5_tiny.safetensors");
    for (int scaled = 0; scaled < 2; scaled++) {
        char *fp8 = test_path(test_scratch_dir(), scaled ? "t5_fp8_scaled.safetensors" : "t5_fp8.safetensors");
        char *ref = test_path(test_scratch_dir(), "t5_fp8_ref.safetensors");
        CHECK_EQ_INT(sd_text_write_t5_fp8(ctx, src, fp8, ref, scaled), SD_OK);
        sd_text_file *tf = NULL;
        CHECK_EQ_INT(sd_text_file_open(ctx, fp8, &tf), SD_OK);
        if (tf)
            CHECK(sd_text_file_count(tf) == 1 && sd_text_file_part_at(tf, 0)->kind == SD_TEXT_T5XXL);
        sd_text_file_close(tf);
        for (int f16 = 0; f16 < 2; f16++) {
            sd_dtype dt = f16 ? SD_DTYPE_F16 : SD_DTYPE_F32;
            float *a = encode_file(fp8, dt), *b = encode_file(ref, dt), *orig = encode_file(src, dt);
            if (a && b && orig) {
                double d = test_max_abs_diff(a, b, 170 * D_MODEL), moved = test_max_abs_diff(a, orig, 170 * D_MODEL);
                CHECK_MSG(d <= 1e-6, "%s fp8%s: %g from the F32 file of its values", sd_dtype_name(dt),
                          scaled ? " scaled" : "", d);
                CHECK_MSG(moved > 1e-3, "fp8 rounding should move the output (%g)", moved);
                fprintf(stderr, "  fp8%s T5, %s weights: max abs diff %.3g (%.3g from the unrounded weights)\n",
                        scaled ? " scaled" : "", sd_dtype_name(dt), d, moved);
            }
            free(a);
            free(b);
            free(orig);
        }
        free(fp8);
        free(ref);
    }
    free(src);
}

typedef struct nan_copy {
    sd_safetensors *st;
    const char *nan_name;
} nan_copy;

static sd_status copy_fill(void *user, size_t index, void *dst, size_t nbytes)
{
    const nan_copy *c = user;
    const sd_st_tensor *t = sd_safetensors_at(c->st, index);
    if (strcmp(t->name, c->nan_name) == 0 && nbytes == sizeof(float)) {
        float v = NAN;
        memcpy(dst, &v, sizeof v);
        return SD_OK;
    }
    return sd_safetensors_read_raw(ctx, c->st, t, dst);
}

static void test_fp8_nan_scale(void)
{
    char *src = test_golden_path("t5_tiny.safetensors");
    char *fp8 = test_path(test_scratch_dir(), "t5_nan_src.safetensors");
    char *bad = test_path(test_scratch_dir(), "t5_nan_scale.safetensors");
    CHECK_EQ_INT(sd_text_write_t5_fp8(ctx, src, fp8, NULL, true), SD_OK);
    nan_copy c = {NULL, "encoder.block.1.layer.1.DenseReluDense.wo.scale_weight"};
    CHECK_EQ_INT(sd_safetensors_open(ctx, fp8, &c.st), SD_OK);
    size_t n = c.st ? sd_safetensors_count(c.st) : 0;
    sd_st_entry *e = calloc(n ? n : 1, sizeof *e);
    for (size_t i = 0; e && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(c.st, i);
        e[i] = (sd_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
    }
    if (e && c.st)
        CHECK_EQ_INT(sd_safetensors_write(ctx, bad, e, n, NULL, copy_fill, &c), SD_OK);
    CHECK(encode_file(bad, SD_DTYPE_F32) == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "t5_nan_scale.safetensors: scale "
                                               "'encoder.block.1.layer.1.DenseReluDense.wo.scale_weight' is not finite");
    free(e);
    sd_safetensors_close(c.st);
    free(src);
    free(fp8);
    free(bad);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    RUN(test_buckets);
    RUN(test_bad_files);
    RUN(test_encode_f32);
    RUN(test_encode_f16);
    RUN(test_encode_gguf);
    RUN(test_encode_fp8);
    RUN(test_fp8_nan_scale);
    sd_context_free(ctx);
    return test_summary("test_t5");
}
