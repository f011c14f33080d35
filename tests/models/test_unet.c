/* The SD1 UNet (ml/diffusion/unet.h) against diffusers' UNet2DConditionModel on a tiny random
 * checkpoint (tests/reference/make_unet_goldens.py writes the goldens from the identical file:
 * sdflow_mkckpt --preset tiny --res-blocks 2 --depth 2 --no-clip --no-vae --seed 7).
 * Batch 2 (as CFG runs it), 16x16 latent, 33 context tokens; once plain and once with synthetic
 * ControlNet residuals (diffusers' down_block_additional_residuals / mid_block_additional_residual).
 * Tolerances: f32 weights 1e-4 absolute (the bound); f16 weights 5e-3 absolute (the
 * weights alone are rounded to 11 bits; outputs have std 0.3). Then bad input with exact errors. */
#include "test.h"
#include "support/ops_check.h"
#include "ml/families/sd1_layout.h"
#include "ml/diffusion/unet.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-4
#define F16_TOL 5e-3

static char *g_path;
static sd_safetensors *g_st;
static sd_checkpoint_config g_cfg;
static float g_t[2];
static sd_dtensor *g_x, *g_ctx;

/* Writes the test checkpoint once and reads its architecture back as the loader does. */
static bool setup(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg;
    if (!sd_checkpoint_preset("tiny", &cfg))
        return false;
    cfg.unet.num_res_blocks = 2;
    sd_unet_config_set_depth(&cfg.unet, 2);
    cfg.has_clip = cfg.has_vae = false;
    g_path = test_path(test_scratch_dir(), "unet.safetensors");
    if (sd_sd1_write_random(ctx, g_path, &cfg, SD_ST_F32, 7) || sd_safetensors_open(ctx, g_path, &g_st) ||
        sd_checkpoint_inspect(ctx, g_st, &g_cfg)) {
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
        return false;
    }
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = ops_read_golden("unet_x.bin", &nd, shape);
    if (x)
        g_x = ops_upload(x, nd, shape);
    free(x);
    float *c = ops_read_golden("unet_context.bin", &nd, shape);
    if (c)
        g_ctx = ops_upload(c, nd, shape);
    free(c);
    float *t = ops_read_golden("unet_t.bin", &nd, shape);
    if (t && nd == 1 && shape[0] == 2)
        memcpy(g_t, t, sizeof g_t);
    free(t);
    return g_x && g_ctx && t;
}

/* Synthetic residual `index` (skips 0.., middle -1) as make_unet_goldens.py computes it. */
static sd_dtensor *control_value(int index, int64_t b, int64_t c, int64_t h, int64_t w)
{
    size_t n = (size_t)(b * c * h * w);
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(0.5 * sin(0.37 * (double)i + 0.61 * index + 0.2));
    sd_dtensor *t = ops_upload(v, 4, (const int64_t[]){b, c, h, w});
    free(v);
    return t;
}

/* The residuals for every skip of the test architecture (16x16 latent, channels 32, 64, 64). */
typedef struct controls {
    sd_dtensor *skips[9];
    const sd_dtensor *view[9];
    sd_dtensor *middle;
    sd_unet_control control;
} controls;

static void controls_make(controls *k)
{
    const sd_unet_config *u = &g_cfg.unet;
    int n = 0, size = 16;
    k->skips[n] = control_value(n, 2, u->model_channels, size, size), n++;
    for (int level = 0; level < u->n_levels; level++) {
        int ch = u->model_channels * u->channel_mult[level];
        for (int r = 0; r < u->num_res_blocks; r++)
            k->skips[n] = control_value(n, 2, ch, size, size), n++;
        if (level + 1 < u->n_levels) {
            size /= 2;
            k->skips[n] = control_value(n, 2, ch, size, size), n++;
        }
    }
    for (int i = 0; i < n; i++)
        k->view[i] = k->skips[i];
    k->middle = control_value(-1, 2, u->model_channels * u->channel_mult[u->n_levels - 1], size, size);
    k->control = (sd_unet_control){.skips = k->view, .n_skips = n, .middle = k->middle};
}

static void controls_free(controls *k)
{
    for (int i = 0; i < 9; i++)
        sd_dtensor_free(k->skips[i]);
    sd_dtensor_free(k->middle);
}

static void forward_case(sd_dtype dtype, const sd_unet_control *control, const char *golden, double tol)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden(golden, &nd, shape);
    CHECK(ref != NULL);
    sd_unet *u = NULL;
    sd_dtensor *out = NULL;
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, dtype, &u), SD_OK);
    sd_status s = sd_unet_forward(u, g_x, g_t, g_ctx, control, &out);
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
    if (!s && ref) {
        float *got = ops_download(out);
        printf("  %s %s weights: max abs error %.3g\n", golden, sd_dtype_name(dtype),
               ops_max_diff(got, ref, out->numel));
        free(got);
        CHECK(ops_expect(golden, out, nd, shape, ref, tol, 0.0));
    }
    sd_dtensor_free(out);
    sd_unet_free(u);
    free(ref);
}

static void test_forward_f32(void)
{
    CHECK_EQ_INT(g_cfg.unet.num_heads, 8);
    CHECK_EQ_INT(g_cfg.unet.middle_depth, 2);
    forward_case(SD_DTYPE_F32, NULL, "unet_eps.bin", F32_TOL);
}

static void test_forward_control_f32(void)
{
    controls k = {0};
    controls_make(&k);
    forward_case(SD_DTYPE_F32, &k.control, "unet_eps_control.bin", F32_TOL);
    controls_free(&k);
}

/* NULL residuals add nothing (ComfyUI's None entries). */
static void test_forward_null_control(void)
{
    const sd_dtensor *none[9] = {0};
    sd_unet_control control = {.skips = none, .n_skips = 9, .middle = NULL};
    forward_case(SD_DTYPE_F32, &control, "unet_eps.bin", F32_TOL);
}

static void test_forward_f16(void)
{
    forward_case(SD_DTYPE_F16, NULL, "unet_eps.bin", F16_TOL);
}

/* proj_in / proj_out stored as Linear [C, C] (SD2-style) instead of 1x1 convs: the writer gives
 * them the same values (they depend on seed and name only), so the golden still holds. */
static void test_forward_linear_proj(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg = g_cfg, got;
    cfg.unet.linear_proj = true;
    cfg.has_clip = cfg.has_vae = false;
    char *path = test_path(test_scratch_dir(), "unet_linear.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 7), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &got), SD_OK);
    CHECK(got.unet.linear_proj);
    sd_safetensors *saved = g_st;
    g_st = st;
    forward_case(SD_DTYPE_F32, NULL, "unet_eps.bin", F32_TOL);
    g_st = saved;
    sd_safetensors_close(st);
    free(path);
}

/* One failing forward: status, exact message, no output. */
static void expect_error(sd_unet *u, const sd_dtensor *x, const float *t, const sd_dtensor *ctx,
                         const sd_unet_control *control, sd_status want, const char *msg)
{
    sd_dtensor *out = (sd_dtensor *)&out;
    CHECK_EQ_INT(sd_unet_forward(u, x, t, ctx, control, &out), want);
    CHECK(out == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ops_cl()->ctx), msg);
}

/* An odd latent (10 x 14: skips of 5 x 7 and 3 x 4) against diffusers, whose decoder then
 * upsamples to each skip's size (forward_upsample_size) as ComfyUI's does. */
static void test_forward_odd_size(void)
{
    int nd, nd_ref;
    int64_t shape[SD_TENSOR_MAX_DIMS], ref_shape[SD_TENSOR_MAX_DIMS];
    float *x = ops_read_golden("unet_odd_x.bin", &nd, shape);
    float *ref = ops_read_golden("unet_odd_eps.bin", &nd_ref, ref_shape);
    CHECK(x && ref && nd == 4 && shape[2] == 10 && shape[3] == 14);
    if (!x || !ref) {
        free(x);
        free(ref);
        return;
    }
    float *c = ops_download(g_ctx); /* the first context row: [1, 33, 64] */
    sd_dtensor *dx = ops_upload(x, nd, shape);
    sd_dtensor *dc = ops_upload(c, 3, (const int64_t[]){1, g_ctx->shape[1], g_ctx->shape[2]});
    sd_unet *u = NULL;
    sd_dtensor *out = NULL;
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, SD_DTYPE_F32, &u), SD_OK);
    sd_status s = sd_unet_forward(u, dx, g_t, dc, NULL, &out);
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
    if (!s)
        CHECK(ops_expect("unet_odd_eps.bin", out, nd_ref, ref_shape, ref, F32_TOL, 0.0));
    sd_dtensor_free(out);
    sd_unet_free(u);
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    free(c);
    free(x);
    free(ref);
}

static void test_bad_input(void)
{
    sd_cl *cl = ops_cl();
    sd_unet *u = NULL;
    CHECK_EQ_INT(sd_unet_new(cl, g_st, SD1_UNET_PREFIX, &g_cfg.unet, SD_DTYPE_F32, &u), SD_OK);
    sd_dtensor *x3 = NULL, *c1 = NULL, *c48 = NULL;
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, (const int64_t[]){2, 3, 16, 16}, &x3), SD_OK);
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 3, (const int64_t[]){1, 33, 64}, &c1), SD_OK);
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 3, (const int64_t[]){2, 33, 48}, &c48), SD_OK);
    expect_error(u, x3, g_t, g_ctx, NULL, SD_ERR_INVALID,
                 "unet: latent [2, 3, 16, 16] f32 has 3 channels, the model takes 4");
    expect_error(u, g_x, g_t, c1, NULL, SD_ERR_INVALID,
                 "unet: context [1, 33, 64] f32 is not an f32 [2, tokens, 64] tensor");
    expect_error(u, g_x, g_t, c48, NULL, SD_ERR_INVALID,
                 "unet: context [2, 33, 48] f32 is not an f32 [2, tokens, 64] tensor");
    float bad_t[2] = {500.0f, NAN};
    expect_error(u, g_x, bad_t, g_ctx, NULL, SD_ERR_INVALID, "unet: timestep 1 is not a finite number");

    controls k = {0};
    controls_make(&k);
    k.control.n_skips = 8;
    expect_error(u, g_x, g_t, g_ctx, &k.control, SD_ERR_INVALID,
                 "unet: ControlNet gives 8 skip residuals, the model has 9 skips");
    k.control.n_skips = 9;
    const sd_dtensor *saved = k.view[4];
    k.view[4] = k.middle;
    expect_error(u, g_x, g_t, g_ctx, &k.control, SD_ERR_INVALID,
                 "unet: ControlNet residual for skip 4 is [2, 64, 4, 4] f32, expected [2, 64, 8, 8] f32");
    k.view[4] = saved;
    k.control.middle = k.skips[0];
    expect_error(u, g_x, g_t, g_ctx, &k.control, SD_ERR_INVALID,
                 "unet: ControlNet residual for the middle block is [2, 32, 16, 16] f32, expected [2, 64, 4, 4] f32");
    controls_free(&k);

    sd_unet_config bad = g_cfg.unet;
    bad.n_levels = 0;
    sd_unet *none = (sd_unet *)&bad;
    CHECK_EQ_INT(sd_unet_new(cl, g_st, SD1_UNET_PREFIX, &bad, SD_DTYPE_F32, &none), SD_ERR_INVALID);
    CHECK(none == NULL);
    char want[512];
    snprintf(want, sizeof want, "%s: UNet configuration out of range", g_path);
    CHECK_STR_EQ(sd_context_errmsg(cl->ctx), want);
    sd_dtensor_free(x3);
    sd_dtensor_free(c1);
    sd_dtensor_free(c48);
    sd_unet_free(u);
}

int main(void)
{
    if (!ops_cl() || !setup())
        return 1;
    RUN(test_forward_f32);
    RUN(test_forward_control_f32);
    RUN(test_forward_null_control);
    RUN(test_forward_f16);
    RUN(test_forward_linear_proj);
    RUN(test_forward_odd_size);
    RUN(test_bad_input);
    sd_dtensor_free(g_x);
    sd_dtensor_free(g_ctx);
    sd_safetensors_close(g_st);
    free(g_path);
    ops_cl_release();
    return test_summary("test_unet");
}
