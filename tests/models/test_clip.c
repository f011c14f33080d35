/* The CLIP text encoder against transformers' CLIPTextModel (goldens from
 * tests/reference/make_clip_goldens.py on the same tiny checkpoint). */
#include "test.h"
#include "support/golden.h"
#include "ml/text/clip.h"
#include "ml/families/sd1_layout.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_WINDOWS 2
#define POSITIONS 77
#define WIDTH 64

/* Writes the same checkpoint as the reference script: tiny preset, CLIP width 64, 2 layers,
 * MLP 256, seed 11, f32, no VAE; 2 heads instead of the family's width/64 to test multi-head. */
static void encode_against_goldens(sd_dtype weight_dtype, double tol)
{
    sd_context *ctx;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_vae = false;
    char *path = test_path(test_scratch_dir(), "clip.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 11), SD_OK);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    sd_checkpoint_config found;
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &found), SD_OK);
    CHECK_EQ_INT(found.clip.width, WIDTH);
    found.clip.heads = 2;
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    sd_clip_model *m = NULL;
    CHECK_EQ_INT(sd_clip_model_new(cl, st, found.clip_prefix, &found.clip, weight_dtype, &m), SD_OK);

    size_t n = (size_t)N_WINDOWS * POSITIONS * WIDTH;
    int32_t *tokens = test_read_golden("clip_tokens.i32", N_WINDOWS * POSITIONS * sizeof(int32_t));
    float *last = test_read_golden("clip_last.f32", n * sizeof(float));
    float *skip2 = test_read_golden("clip_skip2.f32", n * sizeof(float));
    float *pooled_ref = test_read_golden("clip_pooled.f32", N_WINDOWS * WIDTH * sizeof(float));
    float *hidden = malloc(n * sizeof *hidden), pooled[N_WINDOWS * WIDTH];

    CHECK_EQ_INT(sd_clip_encode(m, tokens, N_WINDOWS, -1, hidden, pooled), SD_OK);
    double d_last = test_max_abs_diff(hidden, last, n), d_pool = test_max_abs_diff(pooled, pooled_ref, N_WINDOWS * WIDTH);
    CHECK_MSG(d_last <= tol, "last layer: max abs diff %g > %g", d_last, tol);
    CHECK_MSG(d_pool <= tol, "pooled: max abs diff %g > %g", d_pool, tol);
    CHECK_EQ_INT(sd_clip_encode(m, tokens, N_WINDOWS, -2, hidden, NULL), SD_OK);
    double d_skip = test_max_abs_diff(hidden, skip2, n);
    CHECK_MSG(d_skip <= tol, "clip skip 2: max abs diff %g > %g", d_skip, tol);
    fprintf(stderr, "  %s weights: max abs diff last %.3g, skip2 %.3g, pooled %.3g\n",
            sd_dtype_name(weight_dtype), d_last, d_skip, d_pool);

    CHECK_EQ_INT(sd_clip_encode(m, tokens, N_WINDOWS, -3, hidden, NULL), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "layer -3 out of range");

    free(hidden);
    free(tokens);
    free(last);
    free(skip2);
    free(pooled_ref);
    sd_clip_model_free(m);
    sd_safetensors_close(st);
    free(path);
    sd_context_free(ctx);
}

/* fp32 weights: max abs error 1e-4 (DESIGN/issue tolerance); f16-stored weights: 2e-2 (the
 * activations are O(1); f16 rounding of weights gives ~1e-3 relative error per layer). */
static void test_clip_f32(void) { encode_against_goldens(SD_DTYPE_F32, 1e-4); }
static void test_clip_f16(void) { encode_against_goldens(SD_DTYPE_F16, 2e-2); }

int main(void)
{
    RUN(test_clip_f32);
    RUN(test_clip_f16);
    return test_summary("test_clip");
}
