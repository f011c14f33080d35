/* IP-Adapter (ml/adapters/ipadapter.h) against diffusers on tiny random adapters for the tiny
 * UNet of test_unet.c (goldens from tests/reference/make_ipadapter_goldens.py): the plain,
 * plus (Resampler) and full-face projections' image tokens, and a whole UNet forward with the
 * adapter hooked into every attn2 (item 0 positive, item 1 negative tokens) against diffusers'
 * IPAdapterAttnProcessor2_0; stacking, the start/end range and ComfyUI_IPAdapter_plus's
 * per-layer weight types. FaceID, portrait and FaceID Plus (v2) tokens against diffusers'
 * IPAdapterFaceIDImageProjection / IPAdapterFaceIDPlusImageProjection (goldens from
 * tests/reference/make_ipadapter_faceid_goldens.py). */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "ml/adapters/ipadapter.h"
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCALE 0.8
#define N_EPS (2 * 4 * 16 * 16)

static sd_unet *g_unet;
static sd_safetensors *g_st;
static sd_checkpoint_config g_found;
static float g_t[2], *g_base;
static sd_dtensor *g_x, *g_ctx;

static bool setup(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg, *found = &g_found;
    if (!sd_checkpoint_preset("tiny", &cfg))
        return false;
    cfg.unet.num_res_blocks = 2;
    sd_unet_config_set_depth(&cfg.unet, 2);
    cfg.has_clip = cfg.has_vae = false;
    char *path = test_path(test_scratch_dir(), "unet.safetensors");
    bool ok = !sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 7) && !sd_safetensors_open(ctx, path, &g_st) &&
              !sd_checkpoint_inspect(ctx, g_st, found) &&
              !sd_unet_new(ops_cl(), g_st, found->unet_prefix, &found->unet, SD_DTYPE_F32, &g_unet);
    free(path);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *x = ops_read_golden("unet_x.bin", &nd, shape);
    g_x = x ? ops_upload(x, nd, shape) : NULL;
    float *c = ops_read_golden("unet_context.bin", &nd, shape);
    g_ctx = c ? ops_upload(c, nd, shape) : NULL;
    float *t = ops_read_golden("unet_t.bin", &nd, shape);
    if (t)
        memcpy(g_t, t, sizeof g_t);
    g_base = ops_read_golden("unet_eps.bin", &nd, shape);
    free(x), free(c), free(t);
    return ok && g_x && g_ctx && t && g_base;
}

/* The golden file ipa_<kind>.safetensors (kind with a '.': that file), open. */
static sd_safetensors *open_st(const char *kind)
{
    char name[64];
    snprintf(name, sizeof name, strchr(kind, '.') ? "%s" : "ipa_%s.safetensors", kind);
    char *path = test_golden_path(name);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ops_cl()->ctx, path, &st), SD_OK);
    free(path);
    return st;
}

static sd_ipadapter *open_adapter(const char *kind, sd_ipadapter_config *cfg)
{
    sd_safetensors *st = open_st(kind);
    sd_ipadapter *m = NULL;
    CHECK_EQ_INT(sd_ipadapter_inspect(ops_cl()->ctx, st, cfg), SD_OK);
    CHECK_EQ_INT(sd_ipadapter_new(ops_cl(), st, cfg, &m), SD_OK);
    return m;
}

/* A patch with the given tokens (copied) over m (a new reference). */
static sd_ipa_patch *make_patch(sd_ipadapter *m, const float *cond, const float *uncond, int n_tokens, double w)
{
    size_t n = (size_t)n_tokens * 64;
    sd_ipa_patch *p = calloc(1, sizeof *p);
    *p = (sd_ipa_patch){.model = sd_ipadapter_ref(m), .cond = malloc(n * sizeof(float)),
                        .uncond = malloc(n * sizeof(float)), .n_tokens = n_tokens, .weight = w,
                        .sigma_start = INFINITY, .sigma_end = -INFINITY};
    memcpy(p->cond, cond, n * sizeof(float));
    memcpy(p->uncond, uncond, n * sizeof(float));
    return p;
}

/* eps of the UNet with patches hooked in at sigma, item 0 positive and item 1 negative. */
static float *forward(const sd_ipa_patch *const *patches, size_t n, double sigma)
{
    bool negative[2] = {false, true};
    sd_dtensor *tokens[8] = {0}, *out = NULL;
    sd_ipa_call call = {.cl = ops_cl(), .patches = patches, .n_patches = n, .negative = negative, .batch = 2,
                        .sigma = sigma, .tokens = tokens};
    sd_unet_attn2_hook hook = {.apply = sd_ipa_attn2, .user = &call};
    sd_unet_control control = {.attn2 = &hook};
    float *eps = malloc(N_EPS * sizeof *eps);
    sd_status st = sd_unet_forward(g_unet, g_x, g_t, g_ctx, &control, &out);
    CHECK_MSG(st == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
    if (!st)
        CHECK_EQ_INT(sd_dtensor_download(out, eps), SD_OK);
    sd_ipa_call_release(&call);
    sd_dtensor_free(out);
    return eps;
}

/* The IP-Adapter's part of eps: PSNR of (eps - base) against the reference's, over its range. */
static double contribution_psnr(const float *eps, const float *ref)
{
    float *a = malloc(N_EPS * sizeof *a), *b = malloc(N_EPS * sizeof *b);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N_EPS; i++) {
        a[i] = eps[i] - g_base[i];
        b[i] = ref[i] - g_base[i];
        lo = fminf(lo, b[i]), hi = fmaxf(hi, b[i]);
    }
    double p = test_psnr(a, b, N_EPS, hi - lo);
    free(a), free(b);
    return p;
}

static void adapter_case(const char *kind, sd_ipadapter_kind want, int tokens, const char *features_pos,
                         const char *features_neg, int in_tokens)
{
    sd_ipadapter_config cfg;
    sd_ipadapter *m = open_adapter(kind, &cfg);
    if (!m)
        return;
    CHECK_EQ_INT(cfg.kind, want);
    CHECK_EQ_INT(cfg.layers, 22);
    CHECK_EQ_INT(cfg.cross_dim, 64);
    CHECK(!cfg.sdxl);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    char name[64];
    snprintf(name, sizeof name, "ipa_%s_tokens.bin", kind);
    float *ref_tokens = ops_read_golden(name, &nd, shape);
    CHECK(ref_tokens && nd == 3 && shape[0] == 2 && shape[1] == tokens && shape[2] == 64);
    /* features: item 0 positive, item 1 negative (zeros for the plain projection) */
    size_t per = (size_t)in_tokens * (size_t)cfg.clip_dim;
    float *feat = calloc(2 * per, sizeof *feat), *got = malloc(2 * (size_t)tokens * 64 * sizeof *got);
    float *pos = ops_read_golden(features_pos, &nd, shape);
    float *neg = features_neg ? ops_read_golden(features_neg, &nd, shape) : NULL;
    if (pos)
        memcpy(feat, pos, per * sizeof *feat);
    if (neg)
        memcpy(feat + per, neg, per * sizeof *feat);
    CHECK_EQ_INT(sd_ipadapter_project(m, feat, 2, in_tokens, got), SD_OK);
    double dt = ref_tokens ? test_max_abs_diff(got, ref_tokens, 2 * (size_t)tokens * 64) : 1;
    CHECK_MSG(dt < 1e-4, "%s tokens: max abs diff %g", kind, dt);

    const sd_ipa_patch *p = make_patch(m, got, got + (size_t)tokens * 64, tokens, SCALE);
    float *eps = forward(&p, 1, 1.0);
    snprintf(name, sizeof name, "ipa_%s_eps.bin", kind);
    float *ref = ops_read_golden(name, &nd, shape);
    double d = ref ? test_max_abs_diff(eps, ref, N_EPS) : 1, psnr = ref ? contribution_psnr(eps, ref) : 0;
    fprintf(stderr, "  %s: tokens max diff %.3g; eps max diff %.3g, the adapter's contribution %.1f dB\n", kind, dt, d,
            psnr);
    CHECK_MSG(d < 2e-4 && psnr >= 40, "%s: eps max diff %g, contribution %.1f dB", kind, d, psnr);

    /* Two patches of weights 0.5 and 0.3 stack to one of 0.8 (V only is linear in the weight). */
    sd_ipa_patch *a = make_patch(m, got, got + (size_t)tokens * 64, tokens, 0.5);
    sd_ipa_patch *b = make_patch(m, got, got + (size_t)tokens * 64, tokens, 0.3);
    const sd_ipa_patch *two[2] = {a, b};
    float *eps2 = forward(two, 2, 1.0);
    double d2 = test_max_abs_diff(eps2, eps, N_EPS);
    CHECK_MSG(d2 < 1e-5, "%s: stacked patches differ by %g", kind, d2);
    /* Outside its sigma range a patch adds nothing: the UNet's own eps, bit for bit. */
    a->sigma_start = 0.5, a->sigma_end = 0.1;
    float *eps3 = forward((const sd_ipa_patch *const *)&a, 1, 1.0), *plain = forward(NULL, 0, 1.0);
    CHECK(memcmp(eps3, plain, N_EPS * sizeof *eps3) == 0);
    /* attn_mask: all ones changes nothing; all zeros (any size: it is resized per layer) removes
     * the adapter's part. */
    float ones[6 * 5], zeros[6 * 5] = {0};
    for (int i = 0; i < 30; i++)
        ones[i] = 1.0f;
    a->sigma_start = INFINITY, a->sigma_end = -INFINITY, a->weight = SCALE;
    a->mask = ones, a->mask_h = 6, a->mask_w = 5;
    float *eps_ones = forward((const sd_ipa_patch *const *)&a, 1, 1.0);
    CHECK_MSG(test_max_abs_diff(eps_ones, eps, N_EPS) < 1e-6, "%s: an all-ones mask changed eps", kind);
    a->mask = zeros;
    float *eps_zeros = forward((const sd_ipa_patch *const *)&a, 1, 1.0);
    CHECK_MSG(test_max_abs_diff(eps_zeros, plain, N_EPS) < 1e-6, "%s: an all-zeros mask left the adapter's part", kind);
    a->mask = NULL;
    free(eps_ones), free(eps_zeros);
    sd_ipa_patch_free(a), sd_ipa_patch_free(b), sd_ipa_patch_free((sd_ipa_patch *)p);
    free(eps), free(eps2), free(eps3), free(plain), free(ref), free(ref_tokens), free(feat), free(got), free(pos),
        free(neg);
    sd_ipadapter_unref(m);
}

static void test_plain(void)
{
    adapter_case("plain", SD_IPA_PLAIN, 4, "ipa_emb_pos.bin", NULL, 1);
}

static void test_plus(void)
{
    adapter_case("plus", SD_IPA_PLUS, 16, "ipa_hid_pos.bin", "ipa_hid_neg.bin", 17);
}

static void test_full_face(void)
{
    adapter_case("full", SD_IPA_FULL, 17, "ipa_hid_pos.bin", "ipa_hid_neg.bin", 17);
}

/* ComfyUI_IPAdapter_plus's weight types at a few layers (CrossAttentionPatch.py, IPAdapterPlus.py). */
static void test_weight_types(void)
{
    sd_ipadapter_config cfg;
    sd_ipadapter *m = open_adapter("plain", &cfg);
    if (!m)
        return;
    sd_ipa_patch p = {.model = m, .weight = 0.8};
    sd_unet_attn_site in4 = {.part = SD_UNET_INPUT, .transformer = 4}, mid = {.part = SD_UNET_MIDDLE, .transformer = 6};
    sd_unet_attn_site out9 = {.part = SD_UNET_OUTPUT, .transformer = 9};
    bool swap;
    p.weight_type = SD_IPA_EASE_IN;
    CHECK_NEAR(sd_ipa_site_weight(&p, &in4, &swap), 0.8 * (0.05 + 0.95 * (1 - 4.0 / 16)), 1e-12);
    p.weight_type = SD_IPA_REVERSE_IN_OUT;
    CHECK_NEAR(sd_ipa_site_weight(&p, &out9, &swap), 0.8 * (0.05 + 0.95 * (1.0 / 8)), 1e-12);
    p.weight_type = SD_IPA_WEAK_MIDDLE;
    CHECK_NEAR(sd_ipa_site_weight(&p, &mid, &swap), 0.16, 1e-12);
    CHECK_NEAR(sd_ipa_site_weight(&p, &in4, &swap), 0.8, 1e-12);
    p.weight_type = SD_IPA_STYLE_TRANSFER; /* SD1.5: {0..3, 9..15} */
    CHECK_NEAR(sd_ipa_site_weight(&p, &in4, &swap), 0.0, 0);
    CHECK_NEAR(sd_ipa_site_weight(&p, &out9, &swap), 0.8, 1e-12);
    p.weight_type = SD_IPA_COMPOSITION; /* SD1.5: {4: w/4, 5: w} */
    CHECK_NEAR(sd_ipa_site_weight(&p, &in4, &swap), 0.2, 1e-12);
    CHECK_NEAR(sd_ipa_site_weight(&p, &mid, &swap), 0.0, 0);
    p.weight_type = SD_IPA_COMPOSITION_PRECISE; /* sides swapped away from 4 and 5 */
    CHECK_NEAR(sd_ipa_site_weight(&p, &mid, &swap), 0.08, 1e-12);
    CHECK(swap);
    CHECK_NEAR(sd_ipa_site_weight(&p, &in4, &swap), 0.2, 1e-12);
    CHECK(!swap);
    sd_ipadapter_unref(m);
}

/* FaceID tokens of the two faces of faceid_embeds.bin (FaceID Plus: with ipa_hid_pos / ipa_hid_neg
 * as their face crops' CLIP features) against diffusers', relative to the golden's range. */
static void faceid_case(const char *file, sd_ipadapter_kind want, bool v2, int tokens, const char *golden)
{
    sd_ipadapter_config cfg;
    sd_ipadapter *m = open_adapter(file, &cfg);
    if (!m)
        return;
    CHECK_EQ_INT(cfg.kind, want);
    CHECK_EQ_INT(cfg.tokens, tokens);
    CHECK_EQ_INT(cfg.id_dim, 64);
    CHECK_EQ_INT(cfg.layers, 22);
    CHECK(cfg.faceid_v2 == (want == SD_IPA_FACEID_PLUS));
    CHECK(cfg.portrait == (tokens == 16));
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *faces = ops_read_golden("faceid_embeds.bin", &nd, shape), *ref = ops_read_golden(golden, &nd, shape);
    float *pos = ops_read_golden("ipa_hid_pos.bin", &nd, shape), *neg = ops_read_golden("ipa_hid_neg.bin", &nd, shape);
    size_t per = 17 * 32, n_out = 2 * (size_t)tokens * 64;
    float *clip = malloc(2 * per * sizeof *clip), *got = malloc(n_out * sizeof *got);
    if (pos && neg) {
        memcpy(clip, pos, per * sizeof *clip);
        memcpy(clip + per, neg, per * sizeof *clip);
    }
    if (!v2) { /* the same file read as FaceID Plus (not v2): no shortcut */
        cfg.faceid_v2 = false;
        sd_ipadapter_unref(m);
        CHECK_EQ_INT(sd_ipadapter_new(ops_cl(), open_st(file), &cfg, &m), SD_OK);
    }
    bool plus = want == SD_IPA_FACEID_PLUS;
    CHECK_EQ_INT(sd_ipadapter_project_faceid(m, faces, plus ? clip : NULL, 2, plus ? 17 : 0, 1.5f, got), SD_OK);
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; ref && i < n_out; i++)
        lo = fminf(lo, ref[i]), hi = fmaxf(hi, ref[i]);
    double d = ref ? test_max_abs_diff(got, ref, n_out) / (hi - lo) : 1;
    fprintf(stderr, "  %s: tokens max diff %.3g of their range\n", golden, d);
    CHECK_MSG(d < 1e-4, "%s: max diff %g of the range", golden, d);
    /* CLIP features are refused: FaceID takes face embeddings */
    CHECK_EQ_INT(sd_ipadapter_project(m, clip, 1, 17, got), SD_ERR_INVALID);
    free(faces), free(ref), free(pos), free(neg), free(clip), free(got);
    sd_ipadapter_unref(m);
}

static void test_faceid(void)
{
    faceid_case("faceid", SD_IPA_FACEID, true, 4, "faceid_tokens.bin");
    faceid_case("ipa_faceid_torch.bin", SD_IPA_FACEID, true, 4, "faceid_tokens.bin"); /* h94's .bin layout */
    faceid_case("faceid_portrait", SD_IPA_FACEID, true, 16, "faceid_portrait_tokens.bin");
    faceid_case("faceid_plusv2", SD_IPA_FACEID_PLUS, true, 4, "faceid_plusv2_tokens.bin");
    faceid_case("faceid_plusv2", SD_IPA_FACEID_PLUS, false, 4, "faceid_plus_tokens.bin");
}

/* The FaceID LoRA's layout (kohya keys with diffusers names, no alpha, to_q / to_k / to_v /
 * to_out_0 of every attn1 and attn2): every pair patches a UNet tensor, and the patched first
 * attn1.to_q at strength 0.6 is W + 0.6 * up @ down (faceid_lora_q.bin). */
static void test_faceid_lora(void)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_golden_path("ipa_faceid_lora.safetensors");
    sd_lora *lora = NULL;
    sd_lora_stack *stack = NULL;
    sd_weights *base = NULL, *view = NULL;
    const sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_lora_open(ctx, path, &g_found, &lora), SD_OK);
    free(path);
    if (!lora)
        return;
    CHECK_EQ_INT((int)sd_lora_count(lora, SD_LORA_UNET), 44 * 4);
    CHECK_EQ_INT(sd_lora_stack_push(ctx, NULL, lora, 0.6f, SD_LORA_UNET, &stack), SD_OK);
    sd_weight_patcher patcher;
    sd_lora_stack_patcher(stack, SD_LORA_UNET, &patcher);
    CHECK_EQ_INT(sd_weights_new(ops_cl(), g_st, g_found.unet_prefix, SD_DTYPE_F32, &base), SD_OK);
    CHECK_EQ_INT(sd_weights_new_patched(base, &patcher, &view), SD_OK);
    CHECK_EQ_INT(sd_weights_getf(view, &t, "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"), SD_OK);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("faceid_lora_q.bin", &nd, shape), *got = t ? ops_download(t) : NULL;
    double d = ref && got && nd == 2 && shape[0] * shape[1] == 32 * 32 ? test_max_abs_diff(got, ref, 32 * 32) : 1;
    CHECK_MSG(d < 1e-5, "patched attn1.to_q: max diff %g", d);
    free(ref), free(got);
    sd_weights_free(view), sd_weights_free(base);
    sd_lora_stack_unref(stack);
    sd_lora_unref(lora);
}

static void test_not_an_adapter(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_ipadapter_config cfg;
    CHECK_EQ_INT(sd_ipadapter_inspect(ctx, g_st, &cfg), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not an IP-Adapter");
}

int main(void)
{
    if (!setup()) {
        fprintf(stderr, "setup failed: %s\n", sd_context_errmsg(ops_cl()->ctx));
        return 1;
    }
    RUN(test_plain);
    RUN(test_plus);
    RUN(test_full_face);
    RUN(test_weight_types);
    RUN(test_faceid);
    RUN(test_faceid_lora);
    RUN(test_not_an_adapter);
    sd_unet_free(g_unet);
    sd_safetensors_close(g_st);
    sd_dtensor_free(g_x), sd_dtensor_free(g_ctx);
    free(g_base);
    return test_summary("test_ipadapter");
}
