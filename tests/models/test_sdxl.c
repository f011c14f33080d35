/* SDXL base and refiner networks against diffusers and transformers on the tiny checkpoints
 * (tests/reference/make_sdxl_goldens.py writes the goldens from the identical files:
 * sdflow_mkckpt --preset sdxl-tiny --seed 11 and --preset sdxl-refiner-tiny --seed 12, f32).
 * - checkpoint inspection reads the per-level depths, the ADM width, both text encoders;
 * - CLIP-L (penultimate layer, no final LayerNorm) and OpenCLIP-bigG in open_clip's layout
 *   (penultimate layer; pooled = ln_final at the end token @ text_projection), windows padded
 *   with the end token (L) and with 0 (bigG);
 * - the UNet with the ADM vector built by ml/families/adm.h from the pooled vector and the size
 *   numbers (diffusers embeds the same time_ids), f32 and f16 weights;
 * - the errors of an ADM UNet called without its vector;
 * - LoRAs (tests/reference/make_sdxl_lora_goldens.py, diffusers + peft: sdflow_mklora --seed 5 on
 *   the base): the patched UNet, CLIP-L and OpenCLIP-bigG (q/k/v LoRAs on the thirds of its fused
 *   in_proj) against diffusers' merged peft layers; the PEFT layout equal to kohya's bit for bit;
 *   the unmatched-key report; SD1 LoRAs on SDXL and any LoRA on the refiner refused;
 * - ControlNets (tests/reference/make_sdxl_controlnet_goldens.py: sdflow_mkckpt --preset sdxl-tiny
 *   --kind controlnet[-diffusers] --seed 13): every residual of both layouts, with the ADM vector,
 *   against diffusers' ControlNetModel. */
#include "test.h"
#include "support/layout_check.h"
#include "support/ops_check.h"
#include "ml/adapters/controlnet.h"
#include "ml/adapters/lora.h"
#include "ml/diffusion/unet.h"
#include "ml/families/adm.h"
#include "ml/families/sd1_layout.h"
#include "ml/text/clip.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-4
#define F16_TOL 5e-3

typedef struct model_file {
    const char *preset, *file, *golden; /* golden: the name prefix, "sdxl" or "sdxl_refiner" */
    uint64_t seed;
    sd_safetensors *st;
    sd_checkpoint_config cfg;
} model_file;

static model_file g_base = {"sdxl-tiny", "sdxl.safetensors", "sdxl", 11, NULL, {0}};
static model_file g_refiner = {"sdxl-refiner-tiny", "refiner.safetensors", "sdxl_refiner", 12, NULL, {0}};

static bool open_model(model_file *m)
{
    return test_open_preset(ops_cl()->ctx, m->preset, m->file, m->seed, &m->st, &m->cfg);
}

static void test_inspect(void)
{
    const sd_checkpoint_config *b = &g_base.cfg, *r = &g_refiner.cfg;
    CHECK_EQ_INT(b->family, SD_FAMILY_SDXL);
    CHECK_EQ_INT(b->unet.n_levels, 4);
    CHECK(b->unet.depth[0] == 0 && b->unet.depth[1] == 2 && b->unet.depth[2] == 1 && b->unet.depth[3] == 2);
    CHECK_EQ_INT(b->unet.middle_depth, 2);
    CHECK_EQ_INT(b->unet.adm_channels, 160 + 6 * 256);
    CHECK(b->unet.linear_proj && b->unet.head_channels == 64 && b->unet.num_heads == 0);
    CHECK_EQ_INT(sd_unet_config_heads(&b->unet, 128), 2);
    CHECK(!b->clip.open_clip && b->clip.width == 128 && b->clip.pad_token == 49407 && !b->clip.gelu);
    CHECK(b->clip2.open_clip && b->clip2.width == 192 && b->clip2.projection == 160 && b->clip2.pad_token == 0);
    CHECK(b->clip2.gelu && !b->clip2.norm_hidden && b->clip2.heads == 3);
    CHECK(b->vae.scale_factor == 0.13025f);
    CHECK_EQ_INT(r->family, SD_FAMILY_SDXL_REFINER);
    CHECK_EQ_INT(r->unet.n_levels, 5);
    CHECK(r->unet.depth[1] == 1 && r->unet.depth[2] == 3 && r->unet.depth[4] == 0 && r->unet.middle_depth == 3);
    CHECK_EQ_INT(r->unet.adm_channels, 96 + 5 * 256);
    CHECK(r->clip.open_clip && r->clip.width == 128 && r->clip2_prefix == NULL);
}

static void expect_inspect_error(const sd_checkpoint_config *cfg, const char *drop, const char *grow,
                                 const char *tail)
{
    test_expect_inspect_error(ops_cl()->ctx, cfg, drop, grow, tail);
}

/* Missing and misshapen tensors of each part are named with the part; text encoders that do not
 * fit the UNet's context or ADM width are refused. */
static void test_bad_files(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("sdxl-tiny", &cfg));
    expect_inspect_error(&cfg, "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_bias", NULL,
                         "missing tensor 'conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_bias' "
                         "(SDXL OpenCLIP-bigG text model)");
    expect_inspect_error(&cfg, "model.diffusion_model.label_emb.0.2.weight", NULL,
                         "missing tensor 'model.diffusion_model.label_emb.0.2.weight' (SDXL UNet)");
    expect_inspect_error(&cfg, NULL, "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
                         "tensor 'model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight' has "
                         "shape [65, 320], expected [64, 320] (SDXL UNet)");
    expect_inspect_error(&cfg, "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias", NULL,
                         "missing tensor 'conditioner.embedders.0.transformer.text_model.final_layer_norm.bias' "
                         "(SDXL CLIP text model)");
    sd_checkpoint_config narrow = cfg;
    narrow.clip2.projection = 150;
    expect_inspect_error(&narrow, NULL, NULL,
                         "the UNet's ADM input (label_emb) is 1696 wide, the SDXL conditioning makes 1686");
    narrow = cfg;
    narrow.clip.width = 192;
    expect_inspect_error(&narrow, NULL, NULL,
                         "text encoders' combined width 384 does not match the UNet context dimension 320");
    CHECK(sd_checkpoint_preset("sdxl-refiner-tiny", &cfg));
    expect_inspect_error(&cfg, "conditioner.embedders.0.model.text_projection", NULL,
                         "missing tensor 'conditioner.embedders.0.model.text_projection' (SDXL refiner OpenCLIP-bigG "
                         "text model)");
}

/* The golden token windows (ids stored as floats), padded after the end token with pad. */
static int32_t *read_tokens(int pad, int *n_windows)
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
    for (int w = 0; w < *n_windows; w++) {
        bool ended = false;
        for (int p = 0; p < 77; p++) {
            int32_t id = (int32_t)f[w * 77 + p];
            ids[w * 77 + p] = ended ? pad : id;
            ended |= id == 49407;
        }
    }
    free(f);
    return ids;
}

/* Encodes the golden windows with one text encoder at layer -2 (patched by lora at strength when
 * lora is not NULL) and compares hidden and pooled; the hidden states into *kept when kept. */
static void clip_case_lora(const model_file *m, int slot, sd_lora *lora, float strength, const char *hidden_golden,
                           const char *pooled_golden, sd_dtype dtype, double tol, float **kept)
{
    const sd_clip_config *c = slot ? &m->cfg.clip2 : &m->cfg.clip;
    sd_clip_model *base = NULL, *model = NULL;
    sd_lora_stack *stack = NULL;
    CHECK_EQ_INT(sd_clip_model_new(ops_cl(), m->st, slot ? m->cfg.clip2_prefix : m->cfg.clip_prefix, c, dtype, &base),
                 SD_OK);
    model = base;
    if (lora && base) {
        CHECK_EQ_INT(sd_lora_stack_push(ops_cl()->ctx, NULL, lora, strength, SD_LORA_CLIP, &stack), SD_OK);
        CHECK_EQ_INT(sd_lora_stack_clip(stack, slot, base, &model), SD_OK);
    }
    int n = 0, nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    int32_t *ids = read_tokens(c->pad_token, &n);
    float *ref = ops_read_golden(hidden_golden, &nd, shape);
    float *ref_pooled = pooled_golden ? ops_read_golden(pooled_golden, &nd, shape) : NULL;
    size_t count = (size_t)n * 77 * (size_t)c->width;
    float *hidden = malloc(count * sizeof *hidden);
    float *pooled = malloc((size_t)n * (size_t)sd_clip_pooled_width(c) * sizeof *pooled);
    CHECK(ids && ref && model && (ref_pooled || !pooled_golden));
    if (ids && ref && model) {
        sd_status s = sd_clip_encode(model, ids, n, -2, hidden, pooled);
        CHECK_MSG(s == SD_OK, "encode: %s", sd_context_errmsg(ops_cl()->ctx));
        double d = s ? 1e9 : ops_max_diff(hidden, ref, count);
        printf("  %s %s weights: max abs error %.3g\n", hidden_golden, sd_dtype_name(dtype), d);
        CHECK(d <= tol);
        if (kept && !s) {
            *kept = hidden;
            hidden = NULL;
        }
        if (ref_pooled && !s) {
            d = ops_max_diff(pooled, ref_pooled, (size_t)n * (size_t)c->projection);
            printf("  %s %s weights: max abs error %.3g\n", pooled_golden, sd_dtype_name(dtype), d);
            CHECK(d <= tol);
        }
    }
    sd_lora_stack_unref(stack);
    sd_clip_model_free(base);
    free(ids);
    free(ref);
    free(ref_pooled);
    free(hidden);
    free(pooled);
}

static void clip_case(const model_file *m, int slot, const char *hidden_golden, const char *pooled_golden,
                      sd_dtype dtype, double tol)
{
    clip_case_lora(m, slot, NULL, 0.0f, hidden_golden, pooled_golden, dtype, tol, NULL);
}

static void test_clip_l(void)
{
    clip_case(&g_base, 0, "sdxl_clip_l.bin", NULL, SD_DTYPE_F32, F32_TOL);
}

/* Layer 0 is ComfyUI's "last" output (a CLIPSetLastLayer deeper than the encoder): the last layer
 * with the final LayerNorm even in SDXL, so at the end token it is CLIP-L's pooled output, while
 * layer -1 is the same layer without the LayerNorm. */
static void test_clip_last(void)
{
    const sd_clip_config *c = &g_base.cfg.clip;
    sd_clip_model *model = NULL;
    CHECK_EQ_INT(sd_clip_model_new(ops_cl(), g_base.st, g_base.cfg.clip_prefix, c, SD_DTYPE_F32, &model), SD_OK);
    int n = 0;
    int32_t *ids = read_tokens(c->pad_token, &n);
    size_t w = (size_t)c->width, count = 77 * w;
    float *last = malloc(count * sizeof *last), *raw = malloc(count * sizeof *raw), *pooled = malloc(w * sizeof *pooled);
    CHECK(ids && model && last && raw && pooled);
    if (ids && model && last && raw && pooled) {
        CHECK_EQ_INT(sd_clip_encode(model, ids, 1, 0, last, pooled), SD_OK);
        CHECK_EQ_INT(sd_clip_encode(model, ids, 1, -1, raw, NULL), SD_OK);
        int eos = 0;
        while (eos < 76 && ids[eos] != 49407)
            eos++;
        CHECK(memcmp(last + (size_t)eos * w, pooled, w * sizeof *pooled) == 0);
        CHECK(ops_max_diff(last, raw, count) > 0.1);
        CHECK_EQ_INT(sd_clip_encode(model, ids, 1, 1, last, NULL), SD_ERR_INVALID);
        CHECK_STR_EQ(sd_context_errmsg(ops_cl()->ctx), "text encoder: layer 1 out of range (0 .. -3), batch 1");
    }
    sd_clip_model_free(model);
    free(ids);
    free(last);
    free(raw);
    free(pooled);
}

static void test_clip_g(void)
{
    clip_case(&g_base, 1, "sdxl_clip_g.bin", "sdxl_clip_g_pooled.bin", SD_DTYPE_F32, F32_TOL);
    clip_case(&g_base, 1, "sdxl_clip_g.bin", "sdxl_clip_g_pooled.bin", SD_DTYPE_F16, F16_TOL);
    clip_case(&g_refiner, 0, "sdxl_refiner_clip_g.bin", "sdxl_refiner_clip_g_pooled.bin", SD_DTYPE_F32, F32_TOL);
}

/* The golden `<prefix>_unet_<name>.bin` uploaded (NULL when missing). */
static float *golden(const model_file *m, const char *name, int *nd, int64_t *shape)
{
    char file[96];
    snprintf(file, sizeof file, "%s_unet_%s.bin", m->golden, name);
    return ops_read_golden(file, nd, shape);
}

/* The ADM vectors [2, adm] of the golden pooled vectors and time ids. */
static sd_dtensor *adm_vectors(const model_file *m)
{
    int nd, nd2;
    int64_t shape[SD_TENSOR_MAX_DIMS], ids_shape[SD_TENSOR_MAX_DIMS];
    float *pooled = golden(m, "pooled", &nd, shape), *ids = golden(m, "time_ids", &nd2, ids_shape);
    sd_adm_kind kind = sd_family_get(m->cfg.family)->adm;
    int adm = m->cfg.unet.adm_channels, pw = (int)shape[1];
    float *y = calloc((size_t)(2 * adm), sizeof *y);
    sd_dtensor *t = NULL;
    if (pooled && ids && y && ids_shape[1] == sd_adm_embeddings(kind) && pw + 256 * ids_shape[1] == adm) {
        for (int b = 0; b < 2; b++) {
            const float *v = ids + b * ids_shape[1];
            sd_adm_params p = {.height = v[0], .width = v[1], .crop_h = v[2], .crop_w = v[3]};
            if (kind == SD_ADM_SDXL)
                p.target_height = v[4], p.target_width = v[5];
            else
                p.aesthetic_score = v[4];
            sd_adm_vector(kind, pooled + b * pw, pw, &p, y + b * adm);
        }
        t = ops_upload(y, 2, (const int64_t[]){2, adm});
    }
    free(pooled);
    free(ids);
    free(y);
    return t;
}

/* One forward on the golden inputs (patched by lora at strength when lora is not NULL) against
 * eps_golden (NULL: <prefix>_unet_eps.bin); the output into *kept when kept. */
static void unet_case_lora(const model_file *m, sd_lora *lora, float strength, const char *eps_golden,
                           sd_dtype dtype, double tol, float **kept)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = golden(m, "x", &nd, shape);
    sd_dtensor *dx = x ? ops_upload(x, nd, shape) : NULL;
    float *c = golden(m, "context", &nd, shape);
    sd_dtensor *dc = c ? ops_upload(c, nd, shape) : NULL;
    float *ref = eps_golden ? ops_read_golden(eps_golden, &nd, shape) : golden(m, "eps", &nd, shape);
    sd_dtensor *y = adm_vectors(m), *out = NULL;
    const float t[2] = {981.0f, 250.5f};
    sd_unet *base = NULL, *u = NULL;
    sd_lora_stack *stack = NULL;
    CHECK(dx && dc && ref && y);
    CHECK_EQ_INT(sd_unet_new(ops_cl(), m->st, m->cfg.unet_prefix, &m->cfg.unet, dtype, &base), SD_OK);
    u = base;
    if (lora && base) {
        CHECK_EQ_INT(sd_lora_stack_push(ops_cl()->ctx, NULL, lora, strength, SD_LORA_UNET, &stack), SD_OK);
        CHECK_EQ_INT(sd_lora_stack_unet(stack, base, &u), SD_OK);
    }
    if (dx && dc && ref && y && u) {
        sd_status s = sd_unet_forward_adm(u, dx, t, dc, y, NULL, &out);
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
        if (!s) {
            float *got = ops_download(out);
            printf("  %s UNet %s weights: max abs error %.3g\n", eps_golden ? eps_golden : m->golden,
                   sd_dtype_name(dtype), ops_max_diff(got, ref, out->numel));
            if (kept)
                *kept = got;
            else
                free(got);
            CHECK(ops_expect(m->golden, out, nd, shape, ref, tol, 0.0));
        }
        /* Without its ADM vector, or a vector of another width: one line naming the shapes. */
        sd_dtensor *tmp = NULL;
        CHECK_EQ_INT(sd_unet_forward(u, dx, t, dc, NULL, &tmp), SD_ERR_INVALID);
        char want[128];
        snprintf(want, sizeof want, "unet: ADM vector (none) is not an f32 [2, %d] tensor", m->cfg.unet.adm_channels);
        CHECK_STR_EQ(sd_context_errmsg(ops_cl()->ctx), want);
        sd_dtensor_free(tmp);
    }
    sd_lora_stack_unref(stack);
    sd_unet_free(base);
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    sd_dtensor_free(y);
    sd_dtensor_free(out);
    free(x);
    free(c);
    free(ref);
}

static void unet_case(const model_file *m, sd_dtype dtype, double tol)
{
    unet_case_lora(m, NULL, 0.0f, NULL, dtype, tol, NULL);
}

static void test_unet_base(void)
{
    unet_case(&g_base, SD_DTYPE_F32, F32_TOL);
    unet_case(&g_base, SD_DTYPE_F16, F16_TOL);
}

static void test_unet_refiner(void)
{
    unet_case(&g_refiner, SD_DTYPE_F32, F32_TOL);
}

/* The size embeddings: cos then sin of value * exp(-ln(10000) i / 128), and the layout. */
static void test_adm_vector(void)
{
    float pooled[3] = {1, 2, 3}, out[3 + 6 * 256];
    sd_adm_params p = {.height = 1024, .width = 768, .crop_h = 0, .crop_w = 8, .target_height = 1024,
                       .target_width = 768, .aesthetic_score = 6};
    sd_adm_vector(SD_ADM_SDXL, pooled, 3, &p, out);
    CHECK(out[0] == 1 && out[2] == 3);
    CHECK(out[3] == cosf(1024.0f) && out[3 + 128] == sinf(1024.0f)); /* frequency 1 */
    CHECK(out[3 + 2 * 256] == 1.0f && out[3 + 2 * 256 + 128] == 0.0f); /* crop_h 0 */
    CHECK(out[3 + 5 * 256] == cosf(768.0f));
    CHECK_EQ_INT(sd_adm_embeddings(SD_ADM_SDXL_REFINER), 5);
    sd_adm_vector(SD_ADM_SDXL_REFINER, pooled, 3, &p, out);
    CHECK(out[3 + 4 * 256] == cosf(6.0f));
}

static void controlnet_case(bool diffusers)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_path(test_scratch_dir(), diffusers ? "cnd.safetensors" : "cn.safetensors");
    sd_controlnet *cn = NULL;
    CHECK_EQ_INT(sd_controlnet_write_random(ctx, path, &g_base.cfg.unet, diffusers, SD_ST_F32, 13), SD_OK);
    CHECK_EQ_INT(sd_controlnet_open(ctx, path, SD_DTYPE_F32, &cn), SD_OK);
    free(path);
    if (!cn)
        return;
    CHECK_EQ_INT(sd_controlnet_family(cn), SD_FAMILY_SDXL);
    int nd, n = sd_controlnet_residual_count(cn);
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = golden(&g_base, "x", &nd, shape);
    sd_dtensor *dx = x ? ops_upload(x, nd, shape) : NULL;
    float *c = golden(&g_base, "context", &nd, shape);
    sd_dtensor *dc = c ? ops_upload(c, nd, shape) : NULL;
    int64_t hs[4] = {2, 3, 128, 128};
    float *h = malloc(2 * 3 * 128 * 128 * sizeof *h); /* make_controlnet_goldens.py's hint_value */
    for (size_t i = 0; h && i < 2 * 3 * 128 * 128; i++)
        h[i] = (float)(0.5 + 0.5 * sin(0.13 * (double)i + 0.7));
    sd_dtensor *dh = h ? ops_upload(h, 4, hs) : NULL, *y = adm_vectors(&g_base);
    sd_dtensor **outs = calloc((size_t)n, sizeof *outs);
    const float t[2] = {981.0f, 250.5f};
    CHECK_EQ_INT(n, 13);
    CHECK(dx && dc && dh && y && outs);
    if (dx && dc && dh && y && outs) {
        sd_status s = sd_controlnet_forward(cn, dx, dh, t, dc, y, 0.75f, outs);
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
        double worst = s ? 1e9 : ops_controlnet_residual_error(outs, n, "sdxl");
        printf("  SDXL ControlNet (%s layout) residuals: max abs error %.3g\n", diffusers ? "diffusers" : "original",
               worst);
        CHECK(worst <= F32_TOL);
        /* Without the ADM vector: one line. */
        for (int i = 0; i < n; i++)
            sd_dtensor_free(outs[i]), outs[i] = NULL;
        CHECK_EQ_INT(sd_controlnet_forward(cn, dx, dh, t, dc, NULL, 0.75f, outs), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "ADM vector (none) is not an f32 [2, 1696] tensor");
    }
    for (int i = 0; outs && i < n; i++)
        sd_dtensor_free(outs[i]);
    free(outs);
    sd_dtensor_free(dx);
    sd_dtensor_free(dc);
    sd_dtensor_free(dh);
    sd_dtensor_free(y);
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

/* Collected warnings (the log callback). */
static char g_log[4096];
static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

static sd_lora *write_lora(const char *file, const sd_checkpoint_config *cfg, sd_lora_layout layout)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_path(test_scratch_dir(), file);
    sd_lora *l = NULL;
    sd_status s = sd_lora_write_random(ctx, path, cfg, 4, 5, layout);
    if (!s)
        s = sd_lora_open(ctx, path, &g_base.cfg, &l);
    CHECK_MSG(s == SD_OK, "%s: %s", file, sd_context_errmsg(ctx));
    free(path);
    return l;
}

/* Strengths of make_sdxl_lora_goldens.py. */
#define LORA_UNET 0.8f
#define LORA_L 1.3f
#define LORA_G 0.6f

static void test_lora_golden(void)
{
    g_log[0] = '\0';
    sd_lora *kohya = write_lora("xl_kohya.safetensors", &g_base.cfg, SD_LORA_KOHYA);
    sd_lora *peft = write_lora("xl_peft.safetensors", &g_base.cfg, SD_LORA_PEFT);
    CHECK(kohya && peft && strstr(g_log, "matched nothing") == NULL);
    if (!kohya || !peft) {
        sd_lora_unref(kohya);
        sd_lora_unref(peft);
        return;
    }
    CHECK_EQ_INT(sd_lora_count(kohya, SD_LORA_UNET), 303);
    CHECK_EQ_INT(sd_lora_count(kohya, SD_LORA_CLIP), 18);
    CHECK_EQ_INT(sd_lora_count(kohya, SD_LORA_CLIP2), 24); /* 4 layers x (q, k, v slices, out, fc1, fc2) */
    float *a = NULL, *b = NULL;
    unet_case_lora(&g_base, kohya, LORA_UNET, "sdxl_lora_unet_eps.bin", SD_DTYPE_F32, F32_TOL, &a);
    unet_case_lora(&g_base, peft, LORA_UNET, "sdxl_lora_unet_eps.bin", SD_DTYPE_F32, F32_TOL, &b);
    CHECK(a && b && memcmp(a, b, 2 * 4 * 16 * 16 * sizeof *a) == 0);
    free(a);
    free(b);
    a = b = NULL;
    unet_case_lora(&g_base, kohya, LORA_UNET, "sdxl_lora_unet_eps.bin", SD_DTYPE_F16, F16_TOL, NULL);
    clip_case_lora(&g_base, 0, kohya, LORA_L, "sdxl_lora_clip_l.bin", NULL, SD_DTYPE_F32, F32_TOL, NULL);
    clip_case_lora(&g_base, 1, kohya, LORA_G, "sdxl_lora_clip_g.bin", "sdxl_lora_clip_g_pooled.bin", SD_DTYPE_F32,
                   F32_TOL, &a);
    clip_case_lora(&g_base, 1, peft, LORA_G, "sdxl_lora_clip_g.bin", "sdxl_lora_clip_g_pooled.bin", SD_DTYPE_F32,
                   F32_TOL, &b);
    CHECK(a && b && memcmp(a, b, 2 * 77 * 192 * sizeof *a) == 0);
    free(a);
    free(b);
    sd_lora_unref(kohya);
    sd_lora_unref(peft);
}

/* An SDXL LoRA with keys for tensors the model lacks: listed in one warning; SD1 LoRAs on SDXL
 * and LoRAs on the refiner refused, naming the file. */
static void test_lora_refusals(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config sd1;
    CHECK(sd_checkpoint_preset("tiny", &sd1));
    char *path = test_path(test_scratch_dir(), "sd1_lora.safetensors");
    sd_lora *l = (sd_lora *)1;
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &sd1, 4, 5, SD_LORA_KOHYA), SD_OK);
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_base.cfg, &l), SD_ERR_INVALID);
    CHECK(l == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sd1_lora.safetensors: SD1.x LoRA detected (key '");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "the model is SDXL; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, FLUX LoRAs");
    free(path);
    path = test_path(test_scratch_dir(), "xl_kohya.safetensors");
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_refiner.cfg, &l), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx),
                       "xl_kohya.safetensors: LoRAs on SDXL refiner models are not supported; sdflow supports");
    free(path);
    /* A deeper bigG than this model's and a UNet block it lacks: matched nothing, reported. */
    sd_checkpoint_config deeper = g_base.cfg;
    deeper.clip2.layers = 5;
    deeper.unet.middle_depth = 3;
    path = test_path(test_scratch_dir(), "xl_deeper.safetensors");
    g_log[0] = '\0';
    CHECK_EQ_INT(sd_lora_write_random(ctx, path, &deeper, 4, 5, SD_LORA_KOHYA), SD_OK);
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_base.cfg, &l), SD_OK);
    /* 6 bigG Linears of layer 4 and 10 of the middle block's third transformer block, 3 keys each */
    CHECK_STR_CONTAINS(g_log, "xl_deeper.safetensors: 48 LoRA keys matched nothing: "
                              "lora_te2_text_model_encoder_layers_4_mlp_fc1.lora_up.weight, ");
    sd_lora_unref(l);
    free(path);
}

int main(void)
{
    if (!ops_cl() || !open_model(&g_base) || !open_model(&g_refiner))
        return 1;
    RUN(test_inspect);
    RUN(test_bad_files);
    RUN(test_adm_vector);
    RUN(test_clip_l);
    RUN(test_clip_last);
    RUN(test_clip_g);
    RUN(test_unet_base);
    RUN(test_unet_refiner);
    sd_context_set_log(ops_cl()->ctx, collect, NULL);
    RUN(test_lora_golden);
    RUN(test_lora_refusals);
    RUN(test_controlnet);
    sd_safetensors_close(g_base.st);
    sd_safetensors_close(g_refiner.st);
    ops_cl_release();
    return test_summary("test_sdxl");
}
