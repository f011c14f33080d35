/* The SD1 ControlNet (ml/adapters/controlnet.h) against diffusers' ControlNetModel + UNet on tiny random
 * files (tests/reference/make_controlnet_goldens.py writes the goldens from the identical files:
 * UNet sdflow_mkckpt --preset tiny --no-clip --no-vae --seed 7, ControlNet --kind controlnet
 * --seed 11). Batch 2, 8x8 latent, 64x64 hint, strength 0.75; f32 weights, 1e-4 absolute (the
 * issue's bound). The diffusers-layout file must give bit-identical residuals. Then bad input:
 * other families named, missing tensors, wrong hint shapes, with exact errors. */
#include "test.h"
#include "support/ops_check.h"
#include "ml/adapters/controlnet.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-4
#define STRENGTH 0.75f
#define N_RES 7 /* 6 skips + middle for the tiny preset */

static char *g_unet_path, *g_cn_path, *g_cnd_path;
static sd_checkpoint_config g_cfg;
static float g_t[2];
static sd_dtensor *g_x, *g_ctx, *g_hint;

static bool setup(void)
{
    sd_context *ctx = ops_cl()->ctx;
    if (!sd_checkpoint_preset("tiny", &g_cfg))
        return false;
    g_cfg.has_clip = g_cfg.has_vae = false;
    const char *dir = test_scratch_dir();
    g_unet_path = test_path(dir, "unet.safetensors");
    g_cn_path = test_path(dir, "cn.safetensors");
    g_cnd_path = test_path(dir, "cn_diffusers.safetensors");
    if (sd_sd1_write_random(ctx, g_unet_path, &g_cfg, SD_ST_F32, 7) ||
        sd_controlnet_write_random(ctx, g_cn_path, &g_cfg.unet, false, SD_ST_F32, 11) ||
        sd_controlnet_write_random(ctx, g_cnd_path, &g_cfg.unet, true, SD_ST_F32, 11)) {
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
        return false;
    }
    g_x = ops_golden("controlnet_x.bin");
    g_ctx = ops_golden("controlnet_context.bin");
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *t = ops_read_golden("controlnet_t.bin", &nd, shape);
    if (t && nd == 1 && shape[0] == 2)
        memcpy(g_t, t, sizeof g_t);
    free(t);
    /* The hint: 0.5 + 0.5 sin(0.13 i + 0.7) over the flat index, as the reference script. */
    int64_t hs[4] = {2, 3, 64, 64};
    size_t n = 2 * 3 * 64 * 64;
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; h && i < n; i++)
        h[i] = (float)(0.5 + 0.5 * sin(0.13 * (double)i + 0.7));
    g_hint = h ? ops_upload(h, 4, hs) : NULL;
    free(h);
    return g_x && g_ctx && t && g_hint;
}

/* Opens path and runs one forward into res (N_RES tensors). */
static bool run_controlnet(const char *path, sd_dtensor **res, bool *diffusers)
{
    sd_controlnet *cn = NULL;
    sd_status s = sd_controlnet_open(ops_cl()->ctx, path, SD_DTYPE_F32, &cn);
    CHECK_MSG(s == SD_OK, "open: %s", sd_context_errmsg(ops_cl()->ctx));
    if (s)
        return false;
    *diffusers = sd_controlnet_is_diffusers(cn);
    CHECK_EQ_INT(sd_controlnet_residual_count(cn), N_RES);
    s = sd_controlnet_forward(cn, g_x, g_hint, g_t, g_ctx, NULL, STRENGTH, res);
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
    sd_controlnet_unref(cn);
    return s == SD_OK;
}

static void free_res(sd_dtensor **res)
{
    for (int i = 0; i < N_RES; i++)
        sd_dtensor_free(res[i]), res[i] = NULL;
}

static void test_config(void)
{
    sd_controlnet *cn = NULL;
    CHECK_EQ_INT(sd_controlnet_open(ops_cl()->ctx, g_cn_path, SD_DTYPE_F16, &cn), SD_OK);
    if (!cn)
        return;
    const sd_controlnet_config *c = sd_controlnet_config_of(cn);
    CHECK_EQ_INT(c->unet.model_channels, 32);
    CHECK_EQ_INT(c->unet.n_levels, 3);
    CHECK_EQ_INT(c->unet.num_res_blocks, 1);
    CHECK_EQ_INT(c->unet.context_dim, 64);
    CHECK_EQ_INT(c->unet.num_heads, 8);
    CHECK(c->unet.attention[0] && c->unet.attention[1] && !c->unet.attention[2]);
    CHECK_EQ_INT(c->hint_channels, 3);
    static const int widths[8] = {16, 16, 32, 32, 96, 96, 256, 32};
    for (int j = 0; j < 8; j++)
        CHECK_EQ_INT(c->hint_widths[j], widths[j]);
    CHECK(!sd_controlnet_is_diffusers(cn));
    CHECK_STR_EQ(sd_controlnet_path(cn), g_cn_path);
    sd_controlnet_unref(cn);
}

/* Residuals and the UNet output with them against diffusers. */
static void test_forward_original(void)
{
    sd_dtensor *res[N_RES] = {0};
    bool diffusers = true;
    if (!run_controlnet(g_cn_path, res, &diffusers))
        return;
    CHECK(!diffusers);
    double worst = 0;
    for (int i = 0; i < N_RES; i++) {
        char name[48];
        if (i + 1 < N_RES)
            snprintf(name, sizeof name, "controlnet_res%d.bin", i);
        else
            snprintf(name, sizeof name, "controlnet_mid.bin");
        int nd;
        int64_t shape[SD_TENSOR_MAX_DIMS];
        float *ref = ops_read_golden(name, &nd, shape);
        CHECK(ref != NULL);
        if (!ref)
            continue;
        float *got = ops_download(res[i]);
        double d = ops_max_diff(got, ref, res[i]->numel);
        worst = d > worst ? d : worst;
        CHECK(ops_expect(name, res[i], nd, shape, ref, F32_TOL, 0.0));
        free(got);
        free(ref);
    }
    printf("  residuals: max abs error %.3g\n", worst);

    /* The UNet with these residuals (as sd_unet_control) against diffusers' UNet. */
    sd_safetensors *st = NULL;
    sd_checkpoint_config cfg;
    sd_unet *u = NULL;
    sd_dtensor *eps = NULL;
    sd_context *ctx = ops_cl()->ctx;
    CHECK_EQ_INT(sd_safetensors_open(ctx, g_unet_path, &st), SD_OK);
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &cfg), SD_OK);
    CHECK_EQ_INT(sd_unet_new(ops_cl(), st, SD1_UNET_PREFIX, &cfg.unet, SD_DTYPE_F32, &u), SD_OK);
    const sd_dtensor *skips[N_RES - 1];
    for (int i = 0; i < N_RES - 1; i++)
        skips[i] = res[i];
    sd_unet_control control = {.skips = skips, .n_skips = N_RES - 1, .middle = res[N_RES - 1]};
    sd_status s = sd_unet_forward(u, g_x, g_t, g_ctx, &control, &eps);
    CHECK_MSG(s == SD_OK, "unet: %s", sd_context_errmsg(ctx));
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("controlnet_eps.bin", &nd, shape);
    if (!s && ref) {
        float *got = ops_download(eps);
        printf("  UNet with the residuals: max abs error %.3g\n", ops_max_diff(got, ref, eps->numel));
        free(got);
        CHECK(ops_expect("controlnet_eps.bin", eps, nd, shape, ref, F32_TOL, 0.0));
    }
    free(ref);
    sd_dtensor_free(eps);
    sd_unet_free(u);
    sd_safetensors_close(st);
    free_res(res);
}

/* The diffusers-layout file holds the same tensors: bit-identical residuals. */
static void test_forward_diffusers(void)
{
    sd_dtensor *a[N_RES] = {0}, *b[N_RES] = {0};
    bool da = true, db = false;
    if (run_controlnet(g_cn_path, a, &da) && run_controlnet(g_cnd_path, b, &db)) {
        CHECK(!da && db);
        for (int i = 0; i < N_RES; i++) {
            float *x = ops_download(a[i]), *y = ops_download(b[i]);
            CHECK_MSG(a[i]->numel == b[i]->numel && memcmp(x, y, a[i]->numel * sizeof *x) == 0,
                      "residual %d differs between the layouts", i);
            free(x);
            free(y);
        }
    }
    free_res(a);
    free_res(b);
}

/* f16 weights (what the nodes use): close to the f32 goldens. */
static void test_forward_f16(void)
{
    sd_controlnet *cn = NULL;
    sd_dtensor *res[N_RES] = {0};
    CHECK_EQ_INT(sd_controlnet_open(ops_cl()->ctx, g_cnd_path, SD_DTYPE_F16, &cn), SD_OK);
    if (!cn)
        return;
    CHECK_EQ_INT(sd_controlnet_forward(cn, g_x, g_hint, g_t, g_ctx, NULL, STRENGTH, res), SD_OK);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("controlnet_mid.bin", &nd, shape);
    if (ref && res[N_RES - 1])
        CHECK(ops_expect("controlnet_mid.bin (f16 weights)", res[N_RES - 1], nd, shape, ref, 5e-3, 0.0));
    free(ref);
    free_res(res);
    sd_controlnet_unref(cn);
}

/* A file named *_shuffle_fp16 (ComfyUI's rule) gives each residual's spatial mean. */
static void test_shuffle_pooling(void)
{
    char *path = test_path(test_scratch_dir(), "control_v11e_sd15_shuffle_fp16.safetensors");
    sd_controlnet *cn = NULL, *plain = NULL;
    sd_dtensor *a[N_RES] = {0}, *b[N_RES] = {0};
    sd_context *ctx = ops_cl()->ctx;
    CHECK_EQ_INT(sd_controlnet_write_random(ctx, path, &g_cfg.unet, false, SD_ST_F32, 11), SD_OK);
    CHECK_EQ_INT(sd_controlnet_open(ctx, path, SD_DTYPE_F32, &cn), SD_OK);
    CHECK_EQ_INT(sd_controlnet_open(ctx, g_cn_path, SD_DTYPE_F32, &plain), SD_OK);
    if (cn && plain) {
        CHECK(sd_controlnet_global_pooling(cn) && !sd_controlnet_global_pooling(plain));
        CHECK_EQ_INT(sd_controlnet_forward(cn, g_x, g_hint, g_t, g_ctx, NULL, STRENGTH, a), SD_OK);
        CHECK_EQ_INT(sd_controlnet_forward(plain, g_x, g_hint, g_t, g_ctx, NULL, STRENGTH, b), SD_OK);
    }
    double worst = 0;
    for (int i = 0; i < N_RES && a[i] && b[i]; i++) {
        float *p = ops_download(a[i]), *q = ops_download(b[i]);
        size_t hw = (size_t)(b[i]->shape[2] * b[i]->shape[3]);
        for (size_t plane = 0; plane < b[i]->numel / hw; plane++) {
            double mean = 0;
            for (size_t k = 0; k < hw; k++)
                mean += q[plane * hw + k];
            mean /= (double)hw;
            for (size_t k = 0; k < hw; k++)
                worst = fmax(worst, fabs(p[plane * hw + k] - mean));
        }
        free(p);
        free(q);
    }
    CHECK(a[0] && worst < 1e-6);
    free_res(a);
    free_res(b);
    sd_controlnet_unref(cn);
    sd_controlnet_unref(plain);
    free(path);
}

/* ---- bad input ---- */

static sd_status fill_ones(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    (void)index;
    for (size_t i = 0; i + 4 <= nbytes; i += 4)
        memcpy((unsigned char *)dst + i, (const unsigned char[]){0x00, 0x00, 0x80, 0x3f}, 4);
    return SD_OK;
}

/* A file holding the named [4, 4] tensors. */
static char *write_stub(const char *file, const char *const *names)
{
    sd_st_entry e[8];
    size_t n = 0;
    for (; names[n]; n++)
        e[n] = (sd_st_entry){.name = names[n], .dtype = SD_ST_F32, .ndim = 2, .shape = {4, 4}};
    char *path = test_path(test_scratch_dir(), file);
    CHECK_EQ_INT(sd_safetensors_write(ops_cl()->ctx, path, e, n, NULL, fill_ones, NULL), SD_OK);
    return path;
}

/* Opening path fails with status and the message "<path>: <msg>". */
static void expect_open_error(const char *path, sd_status want, const char *msg)
{
    sd_controlnet *cn = (sd_controlnet *)&cn;
    CHECK_EQ_INT(sd_controlnet_open(ops_cl()->ctx, path, SD_DTYPE_F32, &cn), want);
    CHECK(cn == NULL);
    char *full = sd_strfmt("%s: %s", path, msg);
    CHECK_STR_EQ(sd_context_errmsg(ops_cl()->ctx), full);
    free(full);
}

static void test_other_families(void)
{
    static const char *const lora[] = {"lora_controlnet", "input_blocks.0.0.weight", NULL};
    static const char *const flux[] = {"controlnet_blocks.0.weight", "double_blocks.0.img_attn.qkv.weight", NULL};
    static const char *const t2i[] = {"adapter.body.0.resnets.0.block1.weight", NULL};
    static const char *const nothing[] = {"foo.weight", NULL};
    char *p;
    expect_open_error(p = write_stub("lora.safetensors", lora), SD_ERR_INVALID,
                      "Control-LoRA detected (a ControlNet stored as LoRA differences); sdflow loads full SD1.x, "
                      "SD2.x, SDXL ControlNets"),
        free(p);
    expect_open_error(p = write_stub("flux.safetensors", flux), SD_ERR_INVALID,
                      "FLUX ControlNet detected; sdflow supports SD1.x, SD2.x, SDXL ControlNets"),
        free(p);
    expect_open_error(p = write_stub("t2i.safetensors", t2i), SD_ERR_INVALID,
                      "T2I-Adapter tensor 'conv_in.weight' is missing or misshapen"),
        free(p);
    expect_open_error(p = write_stub("nothing.safetensors", nothing), SD_ERR_INVALID,
                      "not a ControlNet (no control_model.*, input_hint_block.* or controlnet_cond_embedding.* "
                      "tensors)"),
        free(p);
    /* A checkpoint given as a ControlNet. */
    expect_open_error(g_unet_path, SD_ERR_INVALID, "SD1.x file detected, not a ControlNet");
}

/* Copies src to dst leaving out the tensor named drop. */
typedef struct copy_job {
    const sd_safetensors *st;
    const sd_st_tensor **kept;
} copy_job;

static sd_status fill_copy(void *user, size_t index, void *dst, size_t nbytes)
{
    const copy_job *j = user;
    (void)nbytes;
    return sd_safetensors_read_raw(ops_cl()->ctx, j->st, j->kept[index], dst);
}

static char *copy_without(const char *src, const char *file, const char *drop)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, src, &st), SD_OK);
    size_t n = sd_safetensors_count(st), k = 0;
    sd_st_entry *e = calloc(n, sizeof *e);
    const sd_st_tensor **kept = calloc(n, sizeof *kept);
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (strcmp(t->name, drop) == 0)
            continue;
        kept[k] = t;
        e[k] = (sd_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(e[k].shape, t->shape, sizeof e[k].shape);
        k++;
    }
    CHECK_EQ_INT(k, n - 1);
    char *path = test_path(test_scratch_dir(), file);
    copy_job j = {st, kept};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, k, NULL, fill_copy, &j), SD_OK);
    free(e);
    free(kept);
    sd_safetensors_close(st);
    return path;
}

static void test_missing_tensors(void)
{
    char *p = copy_without(g_cn_path, "no_zero3.safetensors", "control_model.zero_convs.3.0.weight");
    expect_open_error(p, SD_ERR_INVALID, "missing tensor 'control_model.zero_convs.3.0.weight' (SD1.x ControlNet)");
    free(p);
    p = copy_without(g_cn_path, "no_hint.safetensors", "control_model.input_hint_block.8.weight");
    expect_open_error(p, SD_ERR_INVALID, "missing tensor 'control_model.input_hint_block.8.weight' (SD1.x ControlNet)");
    free(p);
    p = copy_without(g_cnd_path, "no_mid_d.safetensors", "controlnet_mid_block.bias");
    expect_open_error(p, SD_ERR_INVALID, "missing tensor 'middle_block_out.0.bias' (SD1.x ControlNet)");
    free(p);
    char *missing = test_path(test_scratch_dir(), "absent.safetensors");
    sd_controlnet *cn = NULL;
    CHECK_EQ_INT(sd_controlnet_open(ops_cl()->ctx, missing, SD_DTYPE_F32, &cn), SD_ERR_IO);
    CHECK(cn == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ops_cl()->ctx), "absent.safetensors: No such file or directory");
    free(missing);
}

static void test_bad_hint(void)
{
    sd_controlnet *cn = NULL;
    sd_dtensor *res[N_RES], *h = NULL, *h1 = NULL;
    sd_cl *cl = ops_cl();
    CHECK_EQ_INT(sd_controlnet_open(cl->ctx, g_cn_path, SD_DTYPE_F32, &cn), SD_OK);
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, (const int64_t[]){2, 3, 32, 64}, &h), SD_OK);
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, (const int64_t[]){2, 1, 64, 64}, &h1), SD_OK);
    if (cn && h && h1) {
        CHECK_EQ_INT(sd_controlnet_forward(cn, g_x, h, g_t, g_ctx, NULL, 1.0f, res), SD_ERR_INVALID);
        CHECK_STR_EQ(sd_context_errmsg(cl->ctx),
                     "controlnet: hint [2, 3, 32, 64] f32 is not an f32 [2, 3, 64, 64] image");
        CHECK(res[0] == NULL && res[N_RES - 1] == NULL);
        CHECK_EQ_INT(sd_controlnet_forward(cn, g_x, h1, g_t, g_ctx, NULL, 1.0f, res), SD_ERR_INVALID);
        CHECK_STR_EQ(sd_context_errmsg(cl->ctx),
                     "controlnet: hint [2, 1, 64, 64] f32 is not an f32 [2, 3, 64, 64] image");
    }
    sd_dtensor_free(h);
    sd_dtensor_free(h1);
    sd_controlnet_unref(cn);
}

int main(void)
{
    if (!ops_cl() || !setup())
        return 1;
    RUN(test_config);
    RUN(test_forward_original);
    RUN(test_forward_diffusers);
    RUN(test_forward_f16);
    RUN(test_shuffle_pooling);
    RUN(test_other_families);
    RUN(test_missing_tensors);
    RUN(test_bad_hint);
    sd_dtensor_free(g_x);
    sd_dtensor_free(g_ctx);
    sd_dtensor_free(g_hint);
    free(g_unet_path);
    free(g_cn_path);
    free(g_cnd_path);
    ops_cl_release();
    return test_summary("test_controlnet");
}
