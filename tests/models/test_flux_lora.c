/* LoRA on FLUX: a diffusers/PEFT LoRA on the tiny schnell transformer against diffusers + peft
 * (goldens from tests/reference/make_flux_lora_goldens.py), the same random LoRA in the four key
 * layouts giving bit-identical patched weights, the unmatched-key report, and the family checks
 * (an SD LoRA on FLUX, a FLUX LoRA on SD1). */
#include "test.h"
#include "support/golden.h"
#include "ml/adapters/lora.h"
#include "ml/diffusion/flux.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B 2
#define C 16
#define LH 5
#define LW 6
#define T 7
#define CTX 48
#define VEC 24
#define X_N (B * C * LH * LW)
#define IN_N (X_N + B * T * CTX + B * VEC + B + B)

static sd_context *ctx;
static sd_cl *cl;
static sd_safetensors *g_st;
static sd_checkpoint_config g_cfg;
static sd_flux *g_base;

static char g_log[8192];
static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

static sd_dtensor *upload(int ndim, const int64_t *shape, const float *host)
{
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    return t;
}

/* The patched view of the tiny schnell model by the LoRA at path (strength 1), or NULL. */
static sd_lora_stack *open_stack(const char *path, sd_flux **view)
{
    sd_lora *l = NULL;
    sd_lora_stack *s = NULL;
    *view = NULL;
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_cfg, &l), SD_OK);
    if (l && !sd_lora_stack_push(ctx, NULL, l, 1.0f, SD_LORA_UNET, &s))
        CHECK_EQ_INT(sd_lora_stack_flux(s, g_base, view), SD_OK);
    sd_lora_unref(l);
    return s;
}

/* diffusers' Linears, PEFT keys (q/k/v and proj_mlp on fused BFL tensors, norm_out swapped). */
static void test_against_diffusers(void)
{
    char *path = test_golden_path("flux_lora_peft.safetensors");
    sd_flux *f = NULL;
    g_log[0] = '\0';
    sd_lora_stack *s = open_stack(path, &f);
    CHECK_MSG(strstr(g_log, "matched nothing") == NULL, "%s", g_log);
    float *in = test_read_golden("flux_in.f32", IN_N * sizeof(float));
    float *ref = test_read_golden("flux_lora_out.f32", X_N * sizeof(float));
    if (f && in && ref) {
        int64_t xs[4] = {B, C, LH, LW}, cs[3] = {B, T, CTX}, ys[2] = {B, VEC};
        sd_dtensor *x = upload(4, xs, in), *cx = upload(3, cs, in + X_N), *y = upload(2, ys, in + X_N + B * T * CTX);
        sd_dtensor *out = NULL;
        CHECK_EQ_INT(sd_flux_forward(f, x, in + X_N + B * T * CTX + B * VEC, cx, y, NULL, &out), SD_OK);
        float got[X_N];
        if (out && !sd_dtensor_download(out, got)) {
            double m = 0;
            for (int i = 0; i < X_N; i++)
                m = fmax(m, fabs(ref[i]));
            double d = test_max_abs_diff(got, ref, X_N) / m;
            CHECK_MSG(d <= 1e-4, "relative difference %g", d);
            fprintf(stderr, "  PEFT LoRA against diffusers + peft: max relative difference %.3g\n", d);
        }
        sd_dtensor_free(out);
        sd_dtensor_free(x);
        sd_dtensor_free(cx);
        sd_dtensor_free(y);
    }
    free(in);
    free(ref);
    free(path);
    sd_lora_stack_unref(s);
}

/* The host copy of every patched 2-D weight of view f (in layout order), concatenated. */
static float *patched_weights(sd_flux *f, const sd_layout *lay, size_t total)
{
    float *all = calloc(total, sizeof *all);
    size_t at = 0;
    for (size_t i = 0; all && f && i < lay->n; i++) {
        const sd_layout_entry *e = &lay->entries[i];
        const sd_dtensor *w = NULL;
        if (e->kind != SD_PARAM_WEIGHT || e->ndim != 2)
            continue;
        CHECK_EQ_INT(sd_flux_weight(f, e->name, &w), SD_OK);
        if (w)
            CHECK_EQ_INT(sd_dtensor_download(w, all + at), SD_OK);
        at += (size_t)(e->shape[0] * e->shape[1]);
    }
    return all;
}

/* kohya (lora_unet_<BFL>), OneTrainer (lora_transformer_<diffusers>), PEFT and ComfyUI's BFL
 * (diffusion_model.<BFL>) layouts of one random LoRA patch every Linear identically. */
static void test_layouts_identical(void)
{
    static const sd_lora_layout layouts[4] = {SD_LORA_KOHYA, SD_LORA_KOHYA_LDM, SD_LORA_PEFT, SD_LORA_BFL};
    static const char *const names[4] = {"kohya", "onetrainer", "peft", "bfl"};
    sd_layout lay = {0};
    CHECK_EQ_INT(sd_layout_flux(ctx, &g_cfg.flux, "", &lay), SD_OK);
    size_t total = 0;
    for (size_t i = 0; i < lay.n; i++)
        if (lay.entries[i].kind == SD_PARAM_WEIGHT && lay.entries[i].ndim == 2)
            total += (size_t)(lay.entries[i].shape[0] * lay.entries[i].shape[1]);
    float *first = NULL, *base = patched_weights(g_base, &lay, total);
    for (int k = 0; k < 4; k++) {
        char file[64];
        snprintf(file, sizeof file, "flux_lora_%s.safetensors", names[k]);
        char *path = test_path(test_scratch_dir(), file);
        sd_flux *f = NULL;
        g_log[0] = '\0';
        CHECK_EQ_INT(sd_lora_write_random(ctx, path, &g_cfg, 4, 11, layouts[k]), SD_OK);
        sd_lora_stack *s = open_stack(path, &f);
        CHECK_MSG(strstr(g_log, "matched nothing") == NULL, "%s: %s", names[k], g_log);
        float *w = patched_weights(f, &lay, total);
        if (k == 0 && w && base) {
            size_t changed = 0;
            for (size_t i = 0; i < total; i++)
                changed += w[i] != base[i];
            CHECK_MSG(changed > total / 2, "kohya: %zu of %zu values patched", changed, total);
        }
        if (k > 0 && w && first)
            CHECK_MSG(memcmp(w, first, total * sizeof *w) == 0, "%s: patched weights differ from kohya's", names[k]);
        if (k == 0)
            first = w;
        else
            free(w);
        sd_lora_stack_unref(s);
        free(path);
    }
    free(first);
    free(base);
    sd_layout_free(&lay);
}

static sd_status fill_small(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    float *f = dst;
    for (size_t i = 0; i < nbytes / sizeof *f; i++)
        f[i] = 0.01f * (float)((i + index) % 7);
    return SD_OK;
}

static void write_pair(const char *path, const char *up, const char *down, int64_t out, int64_t in)
{
    sd_st_entry e[2] = {{.name = up, .dtype = SD_ST_F32, .ndim = 2, .shape = {out, 2}},
                        {.name = down, .dtype = SD_ST_F32, .ndim = 2, .shape = {2, in}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, 2, NULL, fill_small, NULL), SD_OK);
}

/* Unmatched keys are listed; an SD LoRA on FLUX and a FLUX LoRA on SD1 are refused by name. */
static void test_report_and_families(void)
{
    char *path = test_path(test_scratch_dir(), "flux_partial.safetensors");
    sd_lora *l = NULL;
    sd_st_entry e[4] = {
        {.name = "diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {2, 64}},
        {.name = "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {64, 2}},
        {.name = "diffusion_model.double_blocks.7.img_attn.proj.lora_A.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {2, 64}},
        {.name = "diffusion_model.double_blocks.7.img_attn.proj.lora_B.weight", .dtype = SD_ST_F32, .ndim = 2,
         .shape = {64, 2}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, 4, NULL, fill_small, NULL), SD_OK);
    g_log[0] = '\0';
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_cfg, &l), SD_OK);
    CHECK_STR_CONTAINS(g_log, "flux_partial.safetensors: 2 LoRA keys matched nothing: "
                              "diffusion_model.double_blocks.7.img_attn.proj.lora_B.weight, "
                              "diffusion_model.double_blocks.7.img_attn.proj.lora_A.weight");
    sd_lora_unref(l);
    free(path);

    sd_checkpoint_config sd1;
    CHECK(sd_checkpoint_preset("tiny", &sd1));
    path = test_path(test_scratch_dir(), "sd1_on_flux.safetensors");
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &sd1, 4, 3, SD_LORA_KOHYA), SD_OK);
    l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_cfg, &l), SD_ERR_INVALID);
    CHECK(l == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "SD1.x LoRA detected");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "the model is FLUX");
    free(path);

    path = test_golden_path("flux_lora_peft.safetensors");
    l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_open(ctx, path, &sd1, &l), SD_ERR_INVALID);
    CHECK(l == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "FLUX LoRA detected (key 'transformer.");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "the model is SD1.x");
    free(path);
    path = test_path(test_scratch_dir(), "kohya_flux_on_sd1.safetensors");
    write_pair(path, "lora_unet_single_blocks_0_linear2.lora_up.weight",
               "lora_unet_single_blocks_0_linear2.lora_down.weight", 64, 320);
    CHECK_EQ_INT(sd_lora_open(ctx, path, &sd1, &l), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "FLUX LoRA detected (key 'lora_unet_single_blocks_0_linear2.");
    free(path);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    sd_context_set_log(ctx, collect, NULL);
    char *path = test_golden_path("flux_schnell_tiny.safetensors");
    if (sd_cl_get(ctx, &cl) || sd_safetensors_open(ctx, path, &g_st) || sd_checkpoint_inspect(ctx, g_st, &g_cfg) ||
        sd_flux_new(cl, g_st, "", SD_DTYPE_F32, &g_base)) {
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
        return 1;
    }
    free(path);
    CHECK(g_cfg.family == SD_FAMILY_FLUX);
    RUN(test_against_diffusers);
    RUN(test_layouts_identical);
    RUN(test_report_and_families);
    sd_flux_free(g_base);
    sd_safetensors_close(g_st);
    sd_context_free(ctx);
    return test_summary("test_flux_lora");
}
