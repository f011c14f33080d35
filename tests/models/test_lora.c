/* LoRA (ml/adapters/lora.h) against diffusers' load_lora_weights + fuse_lora
 * (tests/reference/make_lora_goldens.py writes the goldens from the identical files:
 * sdflow_mkckpt --preset tiny --no-vae --seed 7, sdflow_mklora --seed 3). UNet strength 0.8,
 * text encoder 1.3; f32 weights within 1e-4, f16 within 5e-3 (as test_unet.c). Then: LDM key
 * names, stacking, per-key alpha, LoCon's lora_mid, diffusers/PEFT names, sharing of base
 * weights, and bad files with their exact errors. */
#include "test.h"
#include "support/ops_check.h"
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-4
#define F16_TOL 5e-3
#define WIDTH 64

static char *g_ckpt, *g_lora, *g_lora_ldm;
static sd_safetensors *g_st;
static sd_checkpoint_config g_cfg;
static float g_t[2];
static sd_dtensor *g_x, *g_ctx;
static const int32_t g_window[8] = {49406, 320, 1125, 539, 320, 2368, 267, 49407};

/* Collected warnings (the log callback). */
static char g_log[4096];
static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

static bool setup(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_context_set_log(ctx, collect, NULL);
    sd_checkpoint_config cfg;
    if (!sd_checkpoint_preset("tiny", &cfg))
        return false;
    cfg.has_vae = false;
    g_ckpt = test_path(test_scratch_dir(), "ck.safetensors");
    g_lora = test_path(test_scratch_dir(), "lora.safetensors");
    g_lora_ldm = test_path(test_scratch_dir(), "lora_ldm.safetensors");
    if (sd_sd1_write_random(ctx, g_ckpt, &cfg, SD_ST_F32, 7) || sd_safetensors_open(ctx, g_ckpt, &g_st) ||
        sd_checkpoint_inspect(ctx, g_st, &g_cfg) || sd_lora_write_random(ctx, g_lora, &g_cfg, 4, 3, SD_LORA_KOHYA) ||
        sd_lora_write_random(ctx, g_lora_ldm, &g_cfg, 4, 3, SD_LORA_KOHYA_LDM)) {
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
        return false;
    }
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = ops_read_golden("lora_unet_x.bin", &nd, shape);
    if (x)
        g_x = ops_upload(x, nd, shape);
    free(x);
    float *c = ops_read_golden("lora_unet_context.bin", &nd, shape);
    if (c)
        g_ctx = ops_upload(c, nd, shape);
    free(c);
    float *t = ops_read_golden("lora_unet_t.bin", &nd, shape);
    if (t && nd == 1 && shape[0] == 2)
        memcpy(g_t, t, sizeof g_t);
    free(t);
    return g_x && g_ctx && t;
}

static sd_lora *open_lora(const char *path)
{
    sd_lora *l = NULL;
    sd_status st = sd_lora_open(ops_cl()->ctx, path, &g_cfg, &l);
    CHECK_MSG(st == SD_OK, "open %s: %s", path, sd_context_errmsg(ops_cl()->ctx));
    return l;
}

/* The UNet output (malloc'd, 2*4*16*16 floats) of u on the golden inputs. */
static float *unet_eps(sd_unet *u)
{
    sd_dtensor *out = NULL;
    sd_status s = sd_unet_forward(u, g_x, g_t, g_ctx, NULL, &out);
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
    float *r = out ? ops_download(out) : NULL;
    sd_dtensor_free(out);
    return r;
}

/* eps of base patched by the stack (lora at strength, then lora2 at strength2 when given). */
static float *patched_eps(sd_unet *base, sd_lora *lora, float strength, sd_lora *lora2, float strength2)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_lora_stack *s1 = NULL, *s2 = NULL;
    sd_unet *u = NULL;
    float *r = NULL;
    CHECK_EQ_INT(sd_lora_stack_push(ctx, NULL, lora, strength, SD_LORA_UNET, &s1), SD_OK);
    if (lora2)
        CHECK_EQ_INT(sd_lora_stack_push(ctx, s1, lora2, strength2, SD_LORA_UNET, &s2), SD_OK);
    sd_status st = sd_lora_stack_unet(s2 ? s2 : s1, base, &u);
    CHECK_MSG(st == SD_OK, "stack: %s", sd_context_errmsg(ctx));
    if (u)
        r = unet_eps(u);
    sd_lora_stack_unref(s1);
    sd_lora_stack_unref(s2);
    return r;
}

static void test_unet_golden(void)
{
    if (!g_x)
        return;
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("lora_unet_eps.bin", &nd, shape);
    CHECK(ref && nd == 4 && shape[0] == 2 && shape[1] == 4);
    size_t n = 2 * 4 * 16 * 16;
    sd_lora *lora = open_lora(g_lora);
    CHECK_EQ_INT(sd_lora_count(lora, SD_LORA_UNET), 85);
    CHECK_EQ_INT(sd_lora_count(lora, SD_LORA_CLIP), 12);
    CHECK(strstr(g_log, "matched nothing") == NULL);
    static const struct {
        sd_dtype dtype;
        double tol;
    } cases[] = {{SD_DTYPE_F32, F32_TOL}, {SD_DTYPE_F16, F16_TOL}};
    for (size_t c = 0; c < 2; c++) {
        sd_unet *base = NULL;
        CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, cases[c].dtype, &base), SD_OK);
        float *plain = unet_eps(base);
        sd_lora_stack *s = NULL;
        sd_unet *u = NULL;
        CHECK_EQ_INT(sd_lora_stack_push(ops_cl()->ctx, NULL, lora, 0.8f, SD_LORA_UNET, &s), SD_OK);
        CHECK_EQ_INT(sd_lora_stack_unet(s, base, &u), SD_OK);
        float *eps = unet_eps(u);
        double d = ref && eps ? ops_max_diff(eps, ref, n) : 1e9;
        CHECK_MSG(d <= cases[c].tol, "%s: patched UNet max abs diff %g > %g", sd_dtype_name(cases[c].dtype), d,
                  cases[c].tol);
        printf("  patched UNet, %s weights: max abs diff %.2g vs diffusers\n", sd_dtype_name(cases[c].dtype), d);
        /* The base model is untouched and keeps serving unpatched results. */
        float *again = unet_eps(base);
        CHECK(plain && again && memcmp(plain, again, n * sizeof *plain) == 0);
        CHECK(plain && eps && ops_max_diff(plain, eps, n) > 1e-3);
        free(plain);
        free(again);
        free(eps);
        sd_lora_stack_unref(s);
        sd_unet_free(base);
    }
    free(ref);
    sd_lora_unref(lora);
}

static void test_clip_golden(void)
{
    sd_context *ctx = ops_cl()->ctx;
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("lora_clip_hidden.bin", &nd, shape);
    CHECK(ref && nd == 3 && shape[1] == 77 && shape[2] == WIDTH);
    int32_t tokens[77];
    for (int i = 0; i < 77; i++)
        tokens[i] = i < 8 ? g_window[i] : 49407;
    sd_lora *lora = open_lora(g_lora);
    sd_clip_model *base = NULL, *m = NULL;
    sd_lora_stack *s = NULL;
    CHECK_EQ_INT(sd_clip_model_new(ops_cl(), g_st, g_cfg.clip_prefix, &g_cfg.clip, SD_DTYPE_F32, &base), SD_OK);
    CHECK_EQ_INT(sd_lora_stack_push(ctx, NULL, lora, 1.3f, SD_LORA_CLIP, &s), SD_OK);
    sd_unet *wrong = NULL;
    CHECK_EQ_INT(sd_lora_stack_unet(s, NULL, &wrong), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "LoRA stack for the text encoder asked for a UNet");
    CHECK_EQ_INT(sd_lora_stack_clip(s, 0, base, &m), SD_OK);
    float hidden[77 * WIDTH];
    CHECK_EQ_INT(sd_clip_encode(m, tokens, 1, -1, hidden, NULL), SD_OK);
    double d = ref ? ops_max_diff(hidden, ref, 77 * WIDTH) : 1e9;
    CHECK_MSG(d <= F32_TOL, "patched text encoder max abs diff %g > %g", d, F32_TOL);
    printf("  patched text encoder, f32 weights: max abs diff %.2g vs transformers\n", d);
    free(ref);
    sd_lora_stack_unref(s);
    sd_clip_model_free(base);
    sd_lora_unref(lora);
}

/* The same LoRA with LDM-named keys patches the same tensors with the same values; two stacked
 * copies at 0.5 and 0.3 equal one at 0.8; strength 0 patches nothing. */
static void test_names_and_stacking(void)
{
    if (!g_x)
        return;
    size_t n = 2 * 4 * 16 * 16;
    sd_lora *a = open_lora(g_lora), *b = open_lora(g_lora_ldm);
    CHECK_EQ_INT(sd_lora_count(b, SD_LORA_UNET), 85);
    sd_unet *base = NULL;
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, SD_DTYPE_F32, &base), SD_OK);
    float *ea = patched_eps(base, a, 0.8f, NULL, 0), *eb = patched_eps(base, b, 0.8f, NULL, 0);
    float *stacked = patched_eps(base, a, 0.5f, b, 0.3f), *zero = patched_eps(base, a, 0.0f, NULL, 0);
    float *plain = unet_eps(base);
    CHECK(ea && eb && memcmp(ea, eb, n * sizeof *ea) == 0);
    double d = ea && stacked ? ops_max_diff(ea, stacked, n) : 1e9;
    CHECK_MSG(d <= 1e-5, "stacked 0.5 + 0.3 vs 0.8: %g", d);
    CHECK(zero && plain && memcmp(zero, plain, n * sizeof *zero) == 0);
    free(ea);
    free(eb);
    free(stacked);
    free(zero);
    free(plain);
    sd_unet_free(base);
    sd_lora_unref(a);
    sd_lora_unref(b);
}

/* ---- Hand-made LoRA files ---- */

typedef struct tensor_spec {
    const char *name;
    int ndim;
    int64_t shape[4];
    float scale; /* values scale * sin(0.37 i + 0.11 * index) */
} tensor_spec;

static sd_status fill_spec(void *user, size_t index, void *dst, size_t nbytes)
{
    const tensor_spec *specs = user;
    float *f = dst;
    for (size_t i = 0; i < nbytes / sizeof *f; i++)
        f[i] = specs[index].scale * (float)sin(0.37 * (double)i + 0.11 * (double)index);
    return SD_OK;
}

/* user: const void *data[]; entry index is copied from data[index]. */
static sd_status fill_from(void *user, size_t index, void *dst, size_t nbytes)
{
    const void *const *data = user;
    memcpy(dst, data[index], nbytes);
    return SD_OK;
}

static void write_specs(const char *path, const tensor_spec *specs, size_t n)
{
    sd_st_entry e[16];
    for (size_t i = 0; i < n; i++) {
        e[i] = (sd_st_entry){.name = specs[i].name, .dtype = SD_ST_F32, .ndim = specs[i].ndim};
        memcpy(e[i].shape, specs[i].shape, sizeof specs[i].shape);
    }
    CHECK_EQ_INT(sd_safetensors_write(ops_cl()->ctx, path, e, n, NULL, fill_spec, (void *)specs), SD_OK);
}

/* LoCon's Tucker form (down [r, in, 1, 1], mid [r, r, 3, 3], up [out, r, 1, 1]) against the
 * plain form with the combined 3x3 down computed here; and a diffusers/PEFT file (unet. prefix,
 * lora_A/lora_B, no alpha) against the kohya file with alpha = rank. */
static void test_mid_and_peft(void)
{
    if (!g_x)
        return;
    char *mid_path = test_path(test_scratch_dir(), "mid.safetensors");
    char *plain_path = test_path(test_scratch_dir(), "plain.safetensors");
    const char *k = "lora_unet_input_blocks_1_0_in_layers_2";
    char up[96], down[96], mid[96];
    snprintf(up, sizeof up, "%s.lora_up.weight", k);
    snprintf(down, sizeof down, "%s.lora_down.weight", k);
    snprintf(mid, sizeof mid, "%s.lora_mid.weight", k);
    tensor_spec tucker[3] = {{up, 4, {32, 2, 1, 1}, 0.3f}, {down, 4, {2, 32, 1, 1}, 0.2f}, {mid, 4, {2, 2, 3, 3}, 0.5f}};
    write_specs(mid_path, tucker, 3);
    /* The combined down D[a, i, y, x] = sum_b mid[a, b, y, x] down[b, i] (fill_spec's values). */
    float dn[2 * 32], md[2 * 2 * 9], comb[2 * 32 * 9] = {0};
    for (size_t i = 0; i < 64; i++)
        dn[i] = 0.2f * (float)sin(0.37 * (double)i + 0.11 * 1);
    for (size_t i = 0; i < 36; i++)
        md[i] = 0.5f * (float)sin(0.37 * (double)i + 0.11 * 2);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 32; i++)
                for (int s = 0; s < 9; s++)
                    comb[(a * 32 + i) * 9 + s] += md[(a * 2 + b) * 9 + s] * dn[b * 32 + i];
    sd_context *ctx = ops_cl()->ctx;
    sd_unet *base = NULL;
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, SD_DTYPE_F32, &base), SD_OK);
    sd_lora *lm = open_lora(mid_path);
    float *e_mid = lm ? patched_eps(base, lm, 1.0f, NULL, 0) : NULL;
    /* Plain file: up as before (spec index 0), down = comb. */
    sd_st_entry pe[2] = {{.name = up, .dtype = SD_ST_F32, .ndim = 4, .shape = {32, 2, 1, 1}},
                         {.name = down, .dtype = SD_ST_F32, .ndim = 4, .shape = {2, 32, 3, 3}}};
    const void *data[2] = {NULL, comb};
    float upv[64];
    for (size_t i = 0; i < 64; i++)
        upv[i] = 0.3f * (float)sin(0.37 * (double)i);
    data[0] = upv;
    CHECK_EQ_INT(sd_safetensors_write(ctx, plain_path, pe, 2, NULL, fill_from, (void *)data), SD_OK);
    sd_lora *lp = open_lora(plain_path);
    float *e_plain = lp ? patched_eps(base, lp, 1.0f, NULL, 0) : NULL;
    double d = e_mid && e_plain ? ops_max_diff(e_mid, e_plain, 2 * 4 * 16 * 16) : 1e9;
    CHECK_MSG(d <= 1e-5, "lora_mid vs combined down: %g", d);
    free(e_mid);
    free(e_plain);
    sd_lora_unref(lm);
    sd_lora_unref(lp);

    /* PEFT names (no alpha: scale 1) vs kohya names with alpha 1 at rank 2 (scale 0.5) and twice
     * the up values: the same delta. */
    char *peft_path = test_path(test_scratch_dir(), "peft.safetensors");
    char *kohya_path = test_path(test_scratch_dir(), "kohya.safetensors");
    tensor_spec peft[2] = {{"unet.down_blocks.0.attentions.0.proj_in.lora_B.weight", 4, {32, 2, 1, 1}, 0.15f},
                           {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", 4, {2, 32, 1, 1}, 0.2f}};
    tensor_spec kohya[3] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.3f},
                            {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.2f},
                            {"lora_unet_input_blocks_1_1_proj_in.alpha", 0, {0}, 0.0f}};
    write_specs(peft_path, peft, 2);
    sd_st_entry ke[3];
    for (int i = 0; i < 3; i++) {
        ke[i] = (sd_st_entry){.name = kohya[i].name, .dtype = SD_ST_F32, .ndim = kohya[i].ndim};
        memcpy(ke[i].shape, kohya[i].shape, sizeof kohya[i].shape);
    }
    float one = 1.0f;
    const void *kdata[3] = {NULL, NULL, &one};
    float kup[64], kdown[64];
    for (size_t i = 0; i < 64; i++) {
        kup[i] = 0.3f * (float)sin(0.37 * (double)i);
        kdown[i] = 0.2f * (float)sin(0.37 * (double)i + 0.11);
    }
    kdata[0] = kup;
    kdata[1] = kdown;
    CHECK_EQ_INT(sd_safetensors_write(ctx, kohya_path, ke, 3, NULL, fill_from, (void *)kdata), SD_OK);
    sd_lora *a = open_lora(peft_path), *b = open_lora(kohya_path);
    float *ea = a ? patched_eps(base, a, 0.7f, NULL, 0) : NULL, *eb = b ? patched_eps(base, b, 0.7f, NULL, 0) : NULL;
    d = ea && eb ? ops_max_diff(ea, eb, 2 * 4 * 16 * 16) : 1e9;
    CHECK_MSG(d <= 1e-6, "PEFT vs kohya with alpha: %g", d);
    free(ea);
    free(eb);
    sd_lora_unref(a);
    sd_lora_unref(b);
    sd_unet_free(base);
    free(mid_path);
    free(plain_path);
    free(peft_path);
    free(kohya_path);
}

/* Opens specs as a LoRA and expects status with message containing msg (NULL: success). */
static void expect_open(const char *file, const tensor_spec *specs, size_t n, sd_status status, const char *msg)
{
    char *path = test_path(test_scratch_dir(), file);
    write_specs(path, specs, n);
    sd_lora *l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_open(ops_cl()->ctx, path, &g_cfg, &l), status);
    if (msg)
        CHECK_STR_CONTAINS(sd_context_errmsg(ops_cl()->ctx), msg);
    if (status)
        CHECK(l == NULL);
    sd_lora_unref(status ? NULL : l);
    free(path);
}

static void test_bad_files(void)
{
    tensor_spec sdxl_te2[2] = {{"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", 2, {1280, 4}, 0.1f},
                               {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", 2, {4, 1280}, 0.1f}};
    expect_open("sdxl_te2.safetensors", sdxl_te2, 2, SD_ERR_INVALID,
                "SDXL LoRA detected (key 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight'); "
                "the model is SD1.x; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, FLUX LoRAs");
    tensor_spec sdxl_ctx[2] = {
        {"lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_up.weight", 2, {640, 4}, 0.1f},
        {"lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight", 2, {4, 2048}, 0.1f}};
    expect_open("sdxl_ctx.safetensors", sdxl_ctx, 2, SD_ERR_INVALID,
                "SDXL LoRA detected (key 'lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight'); "
                "the model is SD1.x");
    tensor_spec nothing[2] = {{"lora_unet_foo_bar.lora_up.weight", 2, {8, 2}, 0.1f},
                              {"transformer.blocks.0.weight", 2, {8, 8}, 0.1f}};
    expect_open("nothing.safetensors", nothing, 2, SD_ERR_INVALID,
                "nothing.safetensors: no key matches an SD1.x UNet or text encoder tensor (2 keys: "
                "transformer.blocks.0.weight, lora_unet_foo_bar.lora_up.weight)");
    tensor_spec no_down[1] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f}};
    expect_open("no_down.safetensors", no_down, 1, SD_ERR_INVALID,
                "LoRA key 'lora_unet_input_blocks_1_1_proj_in' has no lora_down / lora_A tensor");
    tensor_spec misfit[2] = {{"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", 2, {256, 4}, 0.1f},
                             {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, {4, 768}, 0.1f}};
    expect_open("misfit.safetensors", misfit, 2, SD_ERR_INVALID,
                "LoRA key 'lora_te_text_model_encoder_layers_0_mlp_fc1' (up [256, 4], down [4, 768]) does not fit "
                "tensor 'encoder.layers.0.mlp.fc1.weight' [256, 64]");
    tensor_spec empty[2] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 0, 1, 1}, 0.1f},
                            {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", 4, {0, 32, 1, 1}, 0.1f}};
    expect_open("empty.safetensors", empty, 2, SD_ERR_INVALID,
                "LoRA key 'lora_unet_input_blocks_1_1_proj_in' (up [32, 0, ...], down [0, 32, ...]) does not fit "
                "tensor 'input_blocks.1.1.proj_in.weight' [32, 32, ...]");
    /* Some keys match, some do not: a warning lists the others and the LoRA loads. */
    g_log[0] = '\0';
    tensor_spec partial[4] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f},
                              {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.1f},
                              {"lora_unet_input_blocks_9_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f},
                              {"lora_unet_input_blocks_9_1_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.1f}};
    expect_open("partial.safetensors", partial, 4, SD_OK, NULL);
    CHECK_STR_CONTAINS(g_log, "partial.safetensors: 2 LoRA keys matched nothing: "
                              "lora_unet_input_blocks_9_1_proj_in.lora_up.weight, "
                              "lora_unet_input_blocks_9_1_proj_in.lora_down.weight");
    /* The older diffusers layouts: attention processors and transformers' lora_linear_layer. */
    tensor_spec old[4] = {
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", 2, {32, 2}, 0.1f},
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight", 2, {2, 32}, 0.1f},
        {"text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.up.weight", 2, {64, 2}, 0.1f},
        {"text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.down.weight", 2, {2, 64}, 0.1f}};
    char *old_path = test_path(test_scratch_dir(), "old.safetensors");
    write_specs(old_path, old, 4);
    sd_lora *ol = open_lora(old_path);
    CHECK(ol && sd_lora_count(ol, SD_LORA_UNET) == 1 && sd_lora_count(ol, SD_LORA_CLIP) == 1);
    sd_lora_unref(ol);
    free(old_path);
    /* The same group in two layouts, and two names for one tensor. */
    tensor_spec twice[3] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f},
                            {"lora_unet_input_blocks_1_1_proj_in.lora_B.weight", 4, {32, 2, 1, 1}, 0.1f},
                            {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.1f}};
    expect_open("twice.safetensors", twice, 3, SD_ERR_INVALID,
                "LoRA key 'lora_unet_input_blocks_1_1_proj_in' is given twice in different layouts");
    tensor_spec both[4] = {{"lora_unet_input_blocks_1_1_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f},
                           {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.1f},
                           {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", 4, {32, 2, 1, 1}, 0.1f},
                           {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", 4, {2, 32, 1, 1}, 0.1f}};
    expect_open("both.safetensors", both, 4, SD_ERR_INVALID,
                "both.safetensors: two LoRA keys patch tensor 'input_blocks.1.1.proj_in.weight'");
    /* A missing file: the safetensors error. */
    sd_lora *l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_open(ops_cl()->ctx, "/nonexistent/x.safetensors", &g_cfg, &l), SD_ERR_IO);
    CHECK(l == NULL);
}

/* Values k / 8 for small integers k: exact in f16, bf16 and f32. */
static sd_status fill_exact(void *user, size_t index, void *dst, size_t nbytes)
{
    const sd_st_dtype *dtype = user;
    size_t size = sd_st_dtype_size(*dtype);
    for (size_t i = 0; i < nbytes / size; i++) {
        float v = (float)((int)((i * 7 + index * 3) % 9) - 4) * 0.125f;
        unsigned char *p = (unsigned char *)dst + i * size;
        if (*dtype == SD_ST_F32) {
            memcpy(p, &v, 4);
        } else {
            uint32_t bits;
            memcpy(&bits, &v, 4);
            uint16_t h = *dtype == SD_ST_F16 ? sd_float_to_half(v) : (uint16_t)(bits >> 16);
            memcpy(p, &h, 2);
        }
    }
    return SD_OK;
}

/* LoRAs stored as F16 and BF16 (most files are) patch exactly as the same values in F32. */
static void test_half_files(void)
{
    if (!g_x)
        return;
    static const sd_st_dtype dtypes[3] = {SD_ST_F32, SD_ST_F16, SD_ST_BF16};
    float *eps[3] = {NULL, NULL, NULL};
    sd_unet *base = NULL;
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, SD1_UNET_PREFIX, &g_cfg.unet, SD_DTYPE_F32, &base), SD_OK);
    for (int d = 0; d < 3; d++) {
        sd_st_entry e[3] = {
            {.name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.lora_up.weight", .dtype = dtypes[d],
             .ndim = 2, .shape = {32, 2}},
            {.name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.lora_down.weight", .dtype = dtypes[d],
             .ndim = 2, .shape = {2, 64}},
            {.name = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.alpha", .dtype = dtypes[d], .ndim = 0}};
        char name[32];
        snprintf(name, sizeof name, "half%d.safetensors", d);
        char *path = test_path(test_scratch_dir(), name);
        CHECK_EQ_INT(sd_safetensors_write(ops_cl()->ctx, path, e, 3, NULL, fill_exact, (void *)&dtypes[d]), SD_OK);
        sd_lora *l = open_lora(path);
        eps[d] = l ? patched_eps(base, l, 1.0f, NULL, 0) : NULL;
        sd_lora_unref(l);
        free(path);
    }
    size_t n = 2 * 4 * 16 * 16 * sizeof(float);
    CHECK(eps[0] && eps[1] && eps[2] && memcmp(eps[0], eps[1], n) == 0 && memcmp(eps[0], eps[2], n) == 0);
    for (int d = 0; d < 3; d++)
        free(eps[d]);
    sd_unet_free(base);
}

static void test_diffusers_names(void)
{
    const sd_unet_config *u = &g_cfg.unet;
    char out[160];
    static const char *const cases[][2] = {
        {"input_blocks.0.0.weight", "conv_in.weight"},
        {"input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.conv1.weight"},
        {"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
         "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"},
        {"input_blocks.2.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
        {"input_blocks.3.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
        {"middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.time_emb_proj.weight"},
        {"middle_block.1.proj_out.weight", "mid_block.attentions.0.proj_out.weight"},
        {"output_blocks.1.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
        {"output_blocks.2.1.proj_in.weight", "up_blocks.1.attentions.0.proj_in.weight"},
        {"output_blocks.3.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"},
        {"output_blocks.5.0.out_layers.3.weight", "up_blocks.2.resnets.1.conv2.weight"},
        {"time_embed.2.weight", "time_embedding.linear_2.weight"},
        {"out.2.weight", "conv_out.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_MSG(sd_unet_diffusers_name(u, cases[i][0], out, sizeof out), "%s has no diffusers name", cases[i][0]);
        CHECK_STR_EQ(out, cases[i][1]);
    }
    CHECK(!sd_unet_diffusers_name(u, "output_blocks.0.1.proj_in.weight", out, sizeof out)); /* no attention */
    CHECK(!sd_unet_diffusers_name(u, "input_blocks.7.0.in_layers.2.weight", out, sizeof out));
}

int main(void)
{
    if (!ops_cl())
        return test_summary("test_lora");
    CHECK(setup());
    RUN(test_diffusers_names);
    RUN(test_unet_golden);
    RUN(test_clip_golden);
    RUN(test_names_and_stacking);
    RUN(test_mid_and_peft);
    RUN(test_half_files);
    RUN(test_bad_files);
    sd_dtensor_free(g_x);
    sd_dtensor_free(g_ctx);
    sd_safetensors_close(g_st);
    free(g_ckpt);
    free(g_lora);
    free(g_lora_ldm);
    ops_cl_release();
    return test_summary("test_lora");
}
