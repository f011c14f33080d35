/* BLIP captioning (ml/vision/blip.h) against transformers' BlipForConditionalGeneration on a
 * tiny random configuration (goldens from tests/reference/make_blip_goldens.py): the vision
 * tower's last_hidden_state, and the generated ids of greedy and beam search with min_length,
 * max_length and the repetition penalty; bad files named with what is wrong. */
#include "test.h"
#include "support/golden.h"
#include "ml/vision/blip.h"
#include <math.h>
#include <stdlib.h>

#define TINY_N 17  /* 1 + (32 / 8)^2 image tokens */
#define TINY_W 64
#define TINY_BOS 100
#define TINY_SEP 13

static sd_context *ctx;
static sd_cl *cl;

static sd_safetensors *open_tiny(void)
{
    char *path = test_golden_path("blip_tiny.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    free(path);
    return st;
}

/* The image features of the golden pixels; NULL on failure (a failed check). */
static sd_dtensor *encode(sd_blip *m)
{
    float *pixels = test_read_golden("blip_pixels.f32", 3 * 32 * 32 * 4);
    sd_dtensor *img = NULL;
    if (pixels) {
        sd_status s = sd_blip_encode_image(m, pixels, &img);
        CHECK_MSG(s == SD_OK, "encode: %s", sd_context_errmsg(ctx));
    }
    free(pixels);
    return img;
}

/* Relative error ||a - b|| / ||b|| of the vision tower: 1e-4 at most (the file is f16, the
 * weights stored as f32 on the device). */
static void test_config_and_vision(void)
{
    sd_safetensors *st = open_tiny();
    sd_blip *m = NULL;
    CHECK_EQ_INT(sd_blip_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
    if (!m)
        return;
    const sd_blip_config *c = sd_blip_config_of(m);
    CHECK_EQ_INT(c->image_size, 32);
    CHECK_EQ_INT(c->patch, 8);
    CHECK_EQ_INT(c->vis_width, 64);
    CHECK_EQ_INT(c->vis_layers, 2);
    CHECK_EQ_INT(c->vis_ff, 128);
    CHECK_EQ_INT(c->txt_layers, 2);
    CHECK_EQ_INT(c->vocab, 102);
    CHECK_EQ_INT(c->positions, 40);
    sd_dtensor *img = encode(m);
    float *ref = test_read_golden("blip_vision.f32", TINY_N * TINY_W * 4);
    if (img && ref) {
        CHECK_EQ_INT(img->shape[1], TINY_N);
        float got[TINY_N * TINY_W];
        CHECK_EQ_INT(sd_dtensor_download(img, got), SD_OK);
        double num = 0, den = 0;
        for (int i = 0; i < TINY_N * TINY_W; i++) {
            num += (double)(got[i] - ref[i]) * (got[i] - ref[i]);
            den += (double)ref[i] * ref[i];
        }
        double rel = sqrt(num / den);
        CHECK_MSG(rel <= 1e-4, "vision relative error %g", rel);
        fprintf(stderr, "  vision last_hidden_state: relative error %.3g\n", rel);
    }
    free(ref);
    sd_dtensor_free(img);
    sd_blip_free(m);
    sd_safetensors_close(st);
}

/* One generate() case of the reference script; n_ref ids in blip_<name>.i32. */
static void generate_case(sd_blip *m, const sd_dtensor *img, const char *name, int n_ref, int beams, int min_len,
                          int max_len, float penalty)
{
    char file[64];
    snprintf(file, sizeof file, "blip_%s.i32", name);
    int32_t *ref = test_read_golden(file, (size_t)n_ref * 4), ids[64];
    sd_blip_generate_params p = {.num_beams = beams, .min_length = min_len, .max_length = max_len,
                                 .repetition_penalty = penalty, .bos = TINY_BOS, .eos = TINY_SEP};
    int n = 0;
    sd_status s = sd_blip_generate(m, img, &p, ids, &n, NULL, NULL);
    CHECK_MSG(s == SD_OK, "%s: %s", name, sd_context_errmsg(ctx));
    CHECK_MSG(n == n_ref, "%s: %d ids, transformers %d", name, n, n_ref);
    for (int i = 0; ref && i < n && i < n_ref; i++)
        CHECK_MSG(ids[i] == ref[i], "%s: id %d is %d, transformers %d", name, i, ids[i], ref[i]);
    free(ref);
}

static void test_generate(void)
{
    sd_safetensors *st = open_tiny();
    sd_blip *m = NULL;
    CHECK_EQ_INT(sd_blip_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
    sd_dtensor *img = m ? encode(m) : NULL;
    if (img) {
        generate_case(m, img, "greedy", 6, 1, 0, 13, 1.0f);          /* max_new_tokens=12 */
        generate_case(m, img, "greedy_min", 11, 1, 10, 14, 1.4f);
        generate_case(m, img, "beam", 12, 3, 5, 12, 1.0f);
        generate_case(m, img, "beam_rep", 8, 4, 0, 11, 1.3f);        /* max_new_tokens=10 */
    }
    sd_dtensor_free(img);
    sd_blip_free(m);
    sd_safetensors_close(st);
}

/* A file without BLIP's tensors, and a wrong shape, are one-line errors naming file and tensor. */
static void test_bad_files(void)
{
    char *path = test_golden_path("t5_tiny.safetensors");
    sd_safetensors *st = NULL;
    sd_blip_config c;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_blip_inspect(ctx, st, &c), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "missing tensor 'vision_model.embeddings.patch_embedding.weight' (BLIP caption model)");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "t5_tiny.safetensors");
    CHECK(!strchr(sd_context_errmsg(ctx), '\n'));
    sd_safetensors_close(st);
    free(path);
    sd_safetensors *tiny = open_tiny();
    sd_blip *m = NULL;
    CHECK_EQ_INT(sd_blip_new(cl, tiny, SD_DTYPE_F32, &m), SD_OK);
    if (m) {
        sd_dtensor *img = encode(m);
        int32_t ids[64];
        int n = 0;
        sd_blip_generate_params p = {.num_beams = 1, .max_length = 41, .repetition_penalty = 1, .bos = TINY_BOS};
        CHECK_EQ_INT(sd_blip_generate(m, img, &p, ids, &n, NULL, NULL), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "max_length 41 (2..40)");
        sd_dtensor_free(img);
    }
    sd_blip_free(m);
    sd_safetensors_close(tiny);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    sd_context_set_cache_path(ctx, NULL);
    if (sd_cl_get(ctx, &cl) != SD_OK) {
        fprintf(stderr, "%s\n", sd_context_errmsg(ctx));
        return 1;
    }
    RUN(test_config_and_vision);
    RUN(test_generate);
    RUN(test_bad_files);
    sd_context_free(ctx);
    return test_summary("test_blip");
}
