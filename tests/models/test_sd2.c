/* SD2.x networks against diffusers and transformers on the tiny checkpoints
 * (tests/reference/make_sd2_goldens.py writes the goldens from the identical files:
 * sdflow_mkckpt --preset sd2-tiny --seed 21 and --preset sd2-v-tiny --seed 22, f32).
 * - checkpoint inspection: the SD2 family, OpenCLIP-H in open_clip's layout (GELU, pad 0, heads
 *   width / 64, the final LayerNorm on the penultimate layer), 64-channel heads, linear
 *   projections; eps or v-prediction as ComfyUI's SD20.model_type tells them;
 * - OpenCLIP-H's context (penultimate layer + final LayerNorm, windows padded with 0) against
 *   transformers' CLIPTextModel after diffusers' convert_open_clip_checkpoint;
 * - the UNet against diffusers' UNet2DConditionModel, f32 and f16 weights;
 * - a missing OpenCLIP-H tensor is named with its part;
 * - LoRAs (tests/reference/make_sd2_lora_goldens.py, diffusers + peft: sdflow_mklora --seed 5 on
 *   the eps file; kohya and PEFT layouts): the patched UNet and OpenCLIP-H (q/k/v slices of the
 *   fused in_proj); SD1.x LoRAs on SD2.x refused by family;
 * - ControlNets (tests/reference/make_sd2_controlnet_goldens.py: sdflow_mkckpt --preset sd2-tiny
 *   --kind controlnet[-diffusers] --seed 13): the SD2 family told by the Linear proj_in, every
 *   residual of both layouts against diffusers' ControlNetModel. */
#include "test.h"
#include "support/layout_check.h"
#include "support/ops_check.h"
#include "ml/adapters/controlnet.h"
#include "ml/adapters/lora.h"
#include "ml/diffusion/unet.h"
#include "ml/families/sd1_layout.h"
#include "ml/text/clip.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-4
#define F16_TOL 5e-3

typedef struct model_file {
    const char *preset, *file;
    uint64_t seed;
    sd_safetensors *st;
    sd_checkpoint_config cfg;
} model_file;

static model_file g_eps = {"sd2-tiny", "sd2.safetensors", 21, NULL, {0}};
static model_file g_v = {"sd2-v-tiny", "sd2v.safetensors", 22, NULL, {0}};

static bool open_model(model_file *m)
{
    return test_open_preset(ops_cl()->ctx, m->preset, m->file, m->seed, &m->st, &m->cfg);
}

static void test_inspect(void)
{
    const sd_checkpoint_config *c = &g_eps.cfg;
    CHECK_EQ_INT(c->family, SD_FAMILY_SD2);
    CHECK(sd_family_get(SD_FAMILY_SD2)->runnable);
    CHECK_EQ_INT(c->unet.n_levels, 3);
    CHECK(c->unet.num_res_blocks == 3 && c->unet.model_channels == 128 && c->unet.context_dim == 256);
    CHECK(c->unet.depth[0] == 2 && c->unet.depth[1] == 0 && c->unet.middle_depth == 3);
    CHECK(c->unet.linear_proj && c->unet.head_channels == 64 && c->unet.num_heads == 0 && c->unet.adm_channels == 0);
    CHECK_STR_EQ(c->clip_prefix, "cond_stage_model.model.");
    CHECK(c->clip.open_clip && c->clip.width == 256 && c->clip.layers == 5 && c->clip.heads == 4);
    CHECK(c->clip.gelu && c->clip.norm_hidden && c->clip.pad_token == 0 && c->clip.projection == 192);
    CHECK(c->clip2_prefix == NULL);
    CHECK(c->vae.scale_factor == 0.18215f);
    /* ComfyUI's SD20.model_type reads output_blocks.11.1.transformer_blocks.0.norm1.bias. */
    CHECK_EQ_INT(c->schedule.prediction, SD_PREDICT_EPS);
    CHECK_EQ_INT(g_v.cfg.schedule.prediction, SD_PREDICT_V);
    CHECK_EQ_INT(g_v.cfg.family, SD_FAMILY_SD2);
}

/* A checkpoint without the tensor ComfyUI reads (fewer output blocks) is eps, as in ComfyUI. */
static void test_prediction_without_block_11(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("sd2-v-tiny", &cfg));
    cfg.unet.num_res_blocks = 2; /* 9 output blocks */
    char *path = test_path(test_scratch_dir(), "sd2v9.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F16, 3), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    if (st) {
        CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &got), SD_OK);
        CHECK_EQ_INT(got.family, SD_FAMILY_SD2);
        CHECK_EQ_INT(got.schedule.prediction, SD_PREDICT_EPS);
    }
    sd_safetensors_close(st);
    free(path);
}

/* A missing OpenCLIP-H tensor is named with the part. */
static void test_missing_tensor(void)
{
    test_expect_inspect_error(ops_cl()->ctx, &g_eps.cfg, "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight",
                              NULL,
                              "missing tensor 'cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight' "
                              "(SD2.x OpenCLIP-H text model)");
}

/* The golden windows (make_sdxl_goldens.py's ids) padded after the end token with 0. */
static int32_t *read_tokens(int *n_windows)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *f = ops_read_golden("sdxl_clip_tokens.bin", &nd, shape);
    if (!f || nd != 2 || shape[1] != 77) {
        free(f);
        return NULL;
    }
    *n_windows = (int)shape[0];
    int32_t *ids = malloc((size_t)(shape[0] * 77) * sizeof *ids);
    for (int w = 0; ids && w < *n_windows; w++) {
        bool ended = false;
        for (int p = 0; p < 77; p++) {
            int32_t id = (int32_t)f[w * 77 + p];
            ids[w * 77 + p] = ended ? 0 : id;
            ended |= id == 49407;
        }
    }
    free(f);
    return ids;
}

/* The golden windows through OpenCLIP-H (patched by lora at strength when not NULL) against
 * the golden; the hidden states into *kept when kept. */
static void clip_case(sd_lora *lora, float strength, const char *golden, sd_dtype dtype, double tol, float **kept)
{
    const sd_clip_config *c = &g_eps.cfg.clip;
    sd_clip_model *base = NULL, *model = NULL;
    sd_lora_stack *stack = NULL;
    CHECK_EQ_INT(sd_clip_model_new(ops_cl(), g_eps.st, g_eps.cfg.clip_prefix, c, dtype, &base), SD_OK);
    model = base;
    if (lora && base) {
        CHECK_EQ_INT(sd_lora_stack_push(ops_cl()->ctx, NULL, lora, strength, SD_LORA_CLIP, &stack), SD_OK);
        CHECK_EQ_INT(sd_lora_stack_clip(stack, 0, base, &model), SD_OK);
    }
    int n = 0, nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    int32_t *ids = read_tokens(&n);
    float *ref = ops_read_golden(golden, &nd, shape);
    size_t count = (size_t)n * 77 * (size_t)c->width;
    float *hidden = malloc(count * sizeof *hidden);
    float *pooled = malloc((size_t)n * (size_t)sd_clip_pooled_width(c) * sizeof *pooled);
    CHECK(ids && ref && model && hidden && pooled);
    if (ids && ref && model && hidden && pooled) {
        sd_status s = sd_clip_encode(model, ids, n, -2, hidden, pooled);
        CHECK_MSG(s == SD_OK, "encode: %s", sd_context_errmsg(ops_cl()->ctx));
        double d = s ? 1e9 : ops_max_diff(hidden, ref, count);
        printf("  %s (OpenCLIP-H penultimate + final LayerNorm), %s weights: max abs error %.3g\n", golden,
               sd_dtype_name(dtype), d);
        CHECK(d <= tol);
        if (kept && !s) {
            *kept = hidden;
            hidden = NULL;
        }
    }
    sd_lora_stack_unref(stack);
    sd_clip_model_free(base);
    free(ids);
    free(ref);
    free(hidden);
    free(pooled);
}

static void test_clip_h(void)
{
    clip_case(NULL, 0.0f, "sd2_clip_h.bin", SD_DTYPE_F32, F32_TOL, NULL);
    clip_case(NULL, 0.0f, "sd2_clip_h.bin", SD_DTYPE_F16, F16_TOL, NULL);
}

/* One forward on the golden inputs (patched by lora at strength when not NULL) against the
 * golden; the output into *kept when kept. */
static void unet_case(sd_lora *lora, float strength, const char *golden, sd_dtype dtype, double tol, float **kept)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = ops_read_golden("sd2_unet_x.bin", &nd, shape);
    sd_dtensor *dx = x ? ops_upload(x, nd, shape) : NULL;
    float *c = ops_read_golden("sd2_unet_context.bin", &nd, shape);
    sd_dtensor *dc = c ? ops_upload(c, nd, shape) : NULL;
    float *ref = ops_read_golden(golden, &nd, shape);
    sd_dtensor *out = NULL;
    const float t[2] = {981.0f, 250.5f};
    sd_unet *base = NULL, *u = NULL;
    sd_lora_stack *stack = NULL;
    CHECK(dx && dc && ref);
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_eps.st, g_eps.cfg.unet_prefix, &g_eps.cfg.unet, dtype, &base), SD_OK);
    u = base;
    if (lora && base) {
        CHECK_EQ_INT(sd_lora_stack_push(ops_cl()->ctx, NULL, lora, strength, SD_LORA_UNET, &stack), SD_OK);
        CHECK_EQ_INT(sd_lora_stack_unet(stack, base, &u), SD_OK);
    }
    if (dx && dc && ref && u) {
        sd_status s = sd_unet_forward(u, dx, t, dc, NULL, &out);
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
        if (!s) {
            float *got = ops_download(out);
            printf("  %s (SD2 UNet) %s weights: max abs error %.3g\n", golden, sd_dtype_name(dtype),
                   ops_max_diff(got, ref, out->numel));
            if (kept)
                *kept = got;
            else
                free(got);
            CHECK(ops_expect("sd2", out, nd, shape, ref, tol, 0.0));
        }
    }
    sd_lora_stack_unref(stack);
    sd_unet_free(base);
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    sd_dtensor_free(out);
    free(x);
    free(c);
    free(ref);
}

static void test_unet(void)
{
    unet_case(NULL, 0.0f, "sd2_unet_eps.bin", SD_DTYPE_F32, F32_TOL, NULL);
    unet_case(NULL, 0.0f, "sd2_unet_eps.bin", SD_DTYPE_F16, F16_TOL, NULL);
}

static void controlnet_case(bool diffusers)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_path(test_scratch_dir(), diffusers ? "cnd.safetensors" : "cn.safetensors");
    sd_controlnet *cn = NULL;
    CHECK_EQ_INT(sd_controlnet_write_random(ctx, path, &g_eps.cfg.unet, diffusers, SD_ST_F32, 13), SD_OK);
    CHECK_EQ_INT(sd_controlnet_open(ctx, path, SD_DTYPE_F32, &cn), SD_OK);
    free(path);
    if (!cn)
        return;
    CHECK_EQ_INT(sd_controlnet_family(cn), SD_FAMILY_SD2);
    int nd, n = sd_controlnet_residual_count(cn);
    int64_t shape[SD_TENSOR_MAX_DIMS], hs[4] = {2, 3, 128, 128};
    float *x = ops_read_golden("sd2_unet_x.bin", &nd, shape);
    sd_dtensor *dx = x ? ops_upload(x, nd, shape) : NULL;
    float *c = ops_read_golden("sd2_unet_context.bin", &nd, shape);
    sd_dtensor *dc = c ? ops_upload(c, nd, shape) : NULL;
    float *h = malloc(2 * 3 * 128 * 128 * sizeof *h); /* make_controlnet_goldens.py's hint_value */
    for (size_t i = 0; h && i < 2 * 3 * 128 * 128; i++)
        h[i] = (float)(0.5 + 0.5 * sin(0.13 * (double)i + 0.7));
    sd_dtensor *dh = h ? ops_upload(h, 4, hs) : NULL;
    sd_dtensor **outs = calloc((size_t)n, sizeof *outs);
    const float t[2] = {981.0f, 250.5f};
    CHECK_EQ_INT(n, 13);
    CHECK(dx && dc && dh && outs);
    if (dx && dc && dh && outs) {
        sd_status s = sd_controlnet_forward(cn, dx, dh, t, dc, NULL, 0.75f, outs);
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
        double worst = s ? 1e9 : ops_controlnet_residual_error(outs, n, "sd2");
        printf("  SD2 ControlNet (%s layout) residuals: max abs error %.3g\n", diffusers ? "diffusers" : "original",
               worst);
        CHECK(worst <= F32_TOL);
    }
    for (int i = 0; outs && i < n; i++)
        sd_dtensor_free(outs[i]);
    free(outs);
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    sd_dtensor_free(dh);
    free(x);
    free(c);
    free(h);
    sd_controlnet_unref(cn);
}

static void test_controlnet(void)
{
    controlnet_case(false);
    controlnet_case(true);
}

static sd_lora *write_lora(const char *file, const sd_checkpoint_config *cfg, sd_lora_layout layout)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_path(test_scratch_dir(), file);
    sd_lora *l = NULL;
    sd_status s = sd_lora_write_random(ctx, path, cfg, 4, 5, layout);
    if (!s)
        s = sd_lora_open(ctx, path, &g_eps.cfg, &l);
    CHECK_MSG(s == SD_OK, "%s: %s", file, sd_context_errmsg(ctx));
    free(path);
    return l;
}

/* Strengths of make_sd2_lora_goldens.py. */
#define LORA_UNET 0.8f
#define LORA_H 1.3f

/* SD2 LoRAs in kohya's layout (lora_te_ under transformers' names: q/k/v patch the row thirds of
 * OpenCLIP-H's fused in_proj) and PEFT's patch the UNet and the text encoder as diffusers + peft
 * do, the two layouts bit for bit alike. */
static void test_lora_golden(void)
{
    sd_lora *kohya = write_lora("sd2_kohya.safetensors", &g_eps.cfg, SD_LORA_KOHYA);
    sd_lora *peft = write_lora("sd2_peft.safetensors", &g_eps.cfg, SD_LORA_PEFT);
    if (!kohya || !peft) {
        sd_lora_unref(kohya);
        sd_lora_unref(peft);
        return;
    }
    CHECK_EQ_INT(sd_lora_count(kohya, SD_LORA_UNET), 187);
    CHECK_EQ_INT(sd_lora_count(kohya, SD_LORA_CLIP), 30); /* 5 layers x (q, k, v slices, out, fc1, fc2) */
    float *a = NULL, *b = NULL;
    unet_case(kohya, LORA_UNET, "sd2_lora_unet_eps.bin", SD_DTYPE_F32, F32_TOL, &a);
    unet_case(peft, LORA_UNET, "sd2_lora_unet_eps.bin", SD_DTYPE_F32, F32_TOL, &b);
    CHECK(a && b && memcmp(a, b, 2 * 4 * 16 * 16 * sizeof *a) == 0);
    free(a);
    free(b);
    a = b = NULL;
    unet_case(kohya, LORA_UNET, "sd2_lora_unet_eps.bin", SD_DTYPE_F16, F16_TOL, NULL);
    clip_case(kohya, LORA_H, "sd2_lora_clip_h.bin", SD_DTYPE_F32, F32_TOL, &a);
    clip_case(peft, LORA_H, "sd2_lora_clip_h.bin", SD_DTYPE_F32, F32_TOL, &b);
    CHECK(a && b && memcmp(a, b, 2 * 77 * 256 * sizeof *a) == 0);
    free(a);
    free(b);
    sd_lora_unref(kohya);
    sd_lora_unref(peft);
}

/* SD1.x LoRAs on SD2.x, refused by family: one told by its 1x1-convolution proj_in, one of the
 * text encoder only (names SD2 LoRAs share) by the width of the text it reads. */
static void test_lora_refusals(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config sd1;
    CHECK(sd_checkpoint_preset("tiny", &sd1));
    char *path = test_path(test_scratch_dir(), "sd1_lora.safetensors");
    sd_lora *l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &sd1, 4, 5, SD_LORA_KOHYA), SD_OK);
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_eps.cfg, &l), SD_ERR_INVALID);
    CHECK(l == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sd1_lora.safetensors: SD1.x LoRA detected (key 'lora_unet_");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "proj_in");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "the model is SD2.x");
    free(path);
    sd1.has_unet = false;
    path = test_path(test_scratch_dir(), "sd1_te_lora.safetensors");
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &sd1, 4, 5, SD_LORA_KOHYA), SD_OK);
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_eps.cfg, &l), SD_ERR_INVALID);
    char want[160];
    snprintf(want, sizeof want, "reads a %d-wide text context; the SD2.x model's is 256)", sd1.clip.width);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sd1_te_lora.safetensors: SD1.x LoRA detected (key 'lora_te_text_model_");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), want);
    free(path);
}

int main(void)
{
    if (!ops_cl() || !open_model(&g_eps) || !open_model(&g_v))
        return 1;
    RUN(test_inspect);
    RUN(test_prediction_without_block_11);
    RUN(test_missing_tensor);
    RUN(test_clip_h);
    RUN(test_unet);
    RUN(test_lora_golden);
    RUN(test_lora_refusals);
    RUN(test_controlnet);
    sd_safetensors_close(g_eps.st);
    sd_safetensors_close(g_v.st);
    ops_cl_release();
    return test_summary("test_sd2");
}
