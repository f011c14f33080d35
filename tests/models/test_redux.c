/* FLUX Redux's pieces against their references (goldens and tiny files from
 * tests/reference/make_redux_goldens.py): the SigLIP tower against transformers'
 * SiglipVisionModel, its preprocessing (mean and std 0.5) against ComfyUI's clip_preprocess, the
 * Redux projection against a torch re-statement of ComfyUI's ReduxImageEncoder, the FLUX
 * transformer with a key bias on the Redux tokens against diffusers with the same attention
 * mask, bad Redux files, and the layouts sdflow_mkckpt writes (--kind siglip, redux) against the
 * transformers-written files. */
#include "test.h"
#include "support/golden.h"
#include "ml/adapters/redux.h"
#include "ml/diffusion/flux.h"
#include "ml/families/sd1_layout.h"
#include "ml/vision/clip_vision.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* As the reference script: SigLIP width 144 (2 heads of 72), 3 layers, MLP 96, patch 4, image 16;
 * Redux 144 -> 3 x 48 -> 48; the FLUX golden input: 7 text tokens then 16 Redux tokens. */
#define WIDTH 144
#define IMAGE 16
#define TOKENS 16
#define BATCH 2
#define CTX 48
#define TXT 7
#define VEC 24
#define LAT (16 * 4 * 4)

static sd_context *ctx;
static sd_cl *cl;

/* max |a - b| / max |b|. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    return test_max_abs_diff(a, b, n) / scale;
}

static sd_safetensors *open_golden(const char *name)
{
    char *path = test_golden_path(name);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    free(path);
    return st;
}

static void test_siglip(void)
{
    sd_safetensors *st = open_golden("siglip_tiny.safetensors");
    sd_clip_vision_config cfg;
    CHECK_EQ_INT(sd_clip_vision_inspect(ctx, st, NULL, &cfg), SD_OK);
    CHECK(cfg.siglip && !cfg.open_clip && cfg.width == WIDTH && cfg.layers == 3 && cfg.heads == 2 &&
          cfg.intermediate == 96 && cfg.patch == 4 && cfg.image_size == IMAGE && cfg.projection == 0);
    CHECK_EQ_INT(sd_clip_vision_tokens(&cfg), TOKENS);
    CHECK_EQ_INT((int)sd_clip_vision_embeds_size(&cfg), TOKENS * WIDTH);
    sd_clip_vision *m = NULL;
    CHECK_EQ_INT(sd_clip_vision_new(cl, st, &cfg, SD_DTYPE_F32, &m), SD_OK);
    size_t nh = (size_t)BATCH * TOKENS * WIDTH;
    float *pixels = test_read_golden("siglip_pixels.f32", (size_t)BATCH * 3 * IMAGE * IMAGE * sizeof(float));
    float *last_ref = test_read_golden("siglip_last.f32", nh * sizeof(float));
    float *pen_ref = test_read_golden("siglip_penult.f32", nh * sizeof(float));
    float *last = malloc(nh * sizeof *last), *pen = malloc(nh * sizeof *pen), *emb = malloc(nh * sizeof *emb);
    if (m && pixels && last_ref && pen_ref) {
        CHECK_EQ_INT(sd_clip_vision_encode(m, pixels, BATCH, emb, last, pen), SD_OK);
        double dl = rel_diff(last, last_ref, nh), dp = rel_diff(pen, pen_ref, nh);
        fprintf(stderr, "  SigLIP: relative diff last %.3g, penultimate %.3g\n", dl, dp);
        CHECK_MSG(dl <= 1e-4 && dp <= 1e-4, "SigLIP outside 1e-4 relative: %g %g", dl, dp);
        CHECK_MSG(memcmp(emb, last, nh * sizeof *emb) == 0, "SigLIP's image_embeds is its last_hidden_state");
    }
    sd_clip_vision_free(m);
    sd_safetensors_close(st);
    free(pixels), free(last_ref), free(pen_ref), free(last), free(pen), free(emb);
}

static void test_siglip_preprocess(void)
{
    sd_clip_vision_config cfg = {.siglip = true, .image_size = IMAGE, .patch = 4};
    float *in = test_read_golden("siglip_pre_in.f32", 23 * 37 * 3 * sizeof(float)), out[3 * IMAGE * IMAGE];
    float *ref = test_read_golden("siglip_pre_center.f32", sizeof out);
    if (in && ref) {
        CHECK_EQ_INT(sd_clip_vision_preprocess_for(ctx, &cfg, in, 23, 37, true, out), SD_OK);
        int off = 0; /* equal but for a rare 8-bit rounding tie decided by one float ulp */
        for (size_t i = 0; i < 3 * IMAGE * IMAGE; i++)
            off += fabsf(out[i] - ref[i]) > 1e-5f;
        CHECK_MSG(off <= 2 && test_max_abs_diff(out, ref, 3 * IMAGE * IMAGE) < 1.01 / 255 / 0.5, "%d differ", off);
    }
    free(in), free(ref);
}

static void test_redux_projection(void)
{
    sd_safetensors *st = open_golden("redux_tiny.safetensors");
    sd_redux *r = NULL;
    CHECK(sd_redux_present(st));
    CHECK_EQ_INT(sd_redux_new(cl, st, SD_DTYPE_F32, &r), SD_OK);
    size_t rows = (size_t)BATCH * TOKENS;
    float *in = test_read_golden("siglip_last.f32", rows * WIDTH * sizeof(float));
    float *ref = test_read_golden("redux_out.f32", rows * CTX * sizeof(float)), *out = malloc(rows * CTX * sizeof *out);
    if (r && in && ref) {
        const sd_redux_config *c = sd_redux_config_of(r);
        CHECK(c->in_dim == WIDTH && c->hidden == 3 * CTX && c->out_dim == CTX);
        CHECK_EQ_INT(sd_redux_project(r, in, (int64_t)rows, out), SD_OK);
        double d = rel_diff(out, ref, rows * CTX);
        fprintf(stderr, "  Redux: relative diff %.3g\n", d);
        CHECK_MSG(d <= 1e-5, "Redux projection: %g", d);
    }
    sd_redux_free(r);
    sd_safetensors_close(st);
    free(in), free(ref), free(out);
}

/* A file without Redux tensors, and one whose redux_down does not chain. */
static void test_bad_redux(void)
{
    sd_safetensors *st = open_golden("siglip_tiny.safetensors");
    sd_redux_config c;
    CHECK(!sd_redux_present(st));
    CHECK_EQ_INT(sd_redux_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not a FLUX Redux model");
    sd_safetensors_close(st);
}

static sd_dtensor *upload(int ndim, const int64_t *shape, const float *host)
{
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    return t;
}

/* FLUX schnell with log(0.4) (as float16) on the Redux keys, against diffusers with that mask. */
static void test_flux_key_bias(void)
{
    const int n = TXT + TOKENS;
    sd_safetensors *st = open_golden("flux_schnell_tiny.safetensors");
    sd_flux *f = NULL;
    CHECK_EQ_INT(sd_flux_new(cl, st, "", SD_DTYPE_F32, &f), SD_OK);
    float *in = test_read_golden("redux_flux_in.f32", (size_t)(n * CTX + VEC + LAT + 1) * sizeof(float));
    float *ref = test_read_golden("redux_flux_out.f32", LAT * sizeof(float));
    if (f && in && ref) {
        int64_t cs[3] = {1, n, CTX}, ys[2] = {1, VEC}, xs[4] = {1, 16, 4, 4};
        sd_dtensor *cx = upload(3, cs, in), *y = upload(2, ys, in + n * CTX), *x = upload(4, xs, in + n * CTX + VEC);
        float bias[TXT + TOKENS] = {0}, got[LAT], plain[LAT];
        for (int j = TXT; j < n; j++)
            bias[j] = -0.91650390625f; /* float16(log 0.4) */
        sd_dtensor *out = NULL, *out0 = NULL;
        const float *t = in + n * CTX + VEC + LAT;
        CHECK_EQ_INT(sd_flux_forward_biased(f, x, t, cx, y, NULL, bias, &out), SD_OK);
        CHECK_EQ_INT(sd_flux_forward(f, x, t, cx, y, NULL, &out0), SD_OK);
        if (out && out0) {
            CHECK_EQ_INT(sd_dtensor_download(out, got), SD_OK);
            CHECK_EQ_INT(sd_dtensor_download(out0, plain), SD_OK);
            double d = rel_diff(got, ref, LAT), d0 = rel_diff(plain, ref, LAT);
            fprintf(stderr, "  FLUX with the Redux key bias: relative diff %.3g (without the bias %.3g)\n", d, d0);
            CHECK_MSG(d <= 1e-4 && d0 > 1e-3, "key bias: %g, unbiased %g", d, d0);
        }
        sd_dtensor_free(out), sd_dtensor_free(out0), sd_dtensor_free(cx), sd_dtensor_free(y), sd_dtensor_free(x);
    }
    sd_flux_free(f);
    sd_safetensors_close(st);
    free(in), free(ref);
}

/* sd_layout_siglip / sd_layout_redux name and shape exactly the tensors of the reference files;
 * the so400m layout has SiglipVisionModel's 448 tensors. */
static void test_layouts(void)
{
    static const sd_siglip_shape tiny = {WIDTH, 3, 96, 4, IMAGE}, so400m = {1152, 27, 4304, 14, 384};
    sd_safetensors *st = open_golden("siglip_tiny.safetensors"), *rx = open_golden("redux_tiny.safetensors");
    sd_layout a = {0}, b = {0}, c = {0};
    CHECK_EQ_INT(sd_layout_siglip(ctx, &tiny, "vision_model.", &a), SD_OK);
    CHECK_EQ_INT(sd_layout_verify(ctx, st, &a, "SigLIP"), SD_OK);
    CHECK_EQ_INT((int)a.n, (int)sd_safetensors_count(st));
    CHECK_EQ_INT(sd_layout_redux(ctx, WIDTH, CTX, &b), SD_OK);
    CHECK_EQ_INT(sd_layout_verify(ctx, rx, &b, "Redux"), SD_OK);
    CHECK_EQ_INT((int)b.n, (int)sd_safetensors_count(rx));
    CHECK_EQ_INT(sd_layout_siglip(ctx, &so400m, "vision_model.", &c), SD_OK);
    CHECK_EQ_INT((int)c.n, 448);
    sd_layout_free(&a), sd_layout_free(&b), sd_layout_free(&c);
    sd_safetensors_close(st);
    sd_safetensors_close(rx);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    sd_context_set_cache_path(ctx, NULL);
    if (sd_cl_get(ctx, &cl) != SD_OK)
        return 2;
    RUN(test_siglip);
    RUN(test_siglip_preprocess);
    RUN(test_redux_projection);
    RUN(test_bad_redux);
    RUN(test_flux_key_bias);
    RUN(test_layouts);
    sd_context_free(ctx);
    return test_summary("test_redux");
}
