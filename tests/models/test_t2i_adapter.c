/* T2I-Adapters (ml/adapters/t2i_adapter.h) against tests/reference/make_t2i_goldens.py: the
 * adapters re-written as ComfyUI builds them and checked there against diffusers' T2IAdapter, on
 * tiny random files in the real layouts (a full SD1 adapter in diffusers' layout, a 1-channel one
 * with stride-2 down convs and 3x3 kernels at odd sizes, an SDXL one, a light one): the
 * architecture read from the shapes, the four features within 1e-4. The UNet side: features added
 * after input blocks 2, 5, 8, 11 (sd_unet_control.inputs) against diffusers' UNet with
 * down_intrablock_additional_residuals. The ControlNet object: a T2I file opened by
 * sd_controlnet_open, its features placed in the residual slots by sd_control_eval_call (times the
 * strength, cycled over the batch, the hint averaged to one channel); a misshapen file named. */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "core/value.h"
#include "ml/adapters/control_eval.h"
#include "ml/adapters/t2i_adapter.h"
#include "ml/families/sd1_layout.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4

static sd_context *ctx(void)
{
    return ops_cl()->ctx;
}

/* The reference hint: 0.5 + 0.5 sin(0.37 i + 0.2) over the flat index of [2, c, h, w]. */
static float *hint_host(int64_t c, int64_t h, int64_t w)
{
    size_t n = (size_t)(2 * c * h * w);
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)(0.5 + 0.5 * sin(0.37 * (double)i + 0.2));
    return v;
}

static sd_safetensors *open_golden(const char *name)
{
    char *path = test_golden_path(name);
    sd_safetensors *st = NULL;
    CHECK_MSG(sd_safetensors_open(ctx(), path, &st) == SD_OK, "%s", sd_context_errmsg(ctx()));
    free(path);
    return st;
}

typedef struct adapter_case {
    const char *name;
    bool light, xl, use_conv;
    int input_channels, ksize, nums_rb;
    int64_t h, w; /* the hint */
} adapter_case;

static const adapter_case cases[] = {
    {"t2i_full", false, false, false, 3, 1, 2, 128, 64},
    {"t2i_conv", false, false, true, 1, 3, 2, 80, 48},
    {"t2i_xl", false, true, false, 3, 1, 2, 128, 64},
    {"t2i_light", true, false, false, 3, 0, 4, 80, 48},
};

static void test_features(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const adapter_case *tc = &cases[i];
        char file[64];
        snprintf(file, sizeof file, "%s.safetensors", tc->name);
        sd_safetensors *st = open_golden(file);
        sd_t2i_adapter *a = NULL;
        if (!st)
            continue;
        CHECK_MSG(sd_t2i_adapter_detect(st), "%s not detected", tc->name);
        CHECK_MSG(sd_t2i_adapter_new(ctx(), st, SD_DTYPE_F32, &a) == SD_OK, "%s", sd_context_errmsg(ctx()));
        if (!a) {
            sd_safetensors_close(st);
            continue;
        }
        const sd_t2i_config *c = sd_t2i_adapter_config(a);
        CHECK(c->light == tc->light && c->xl == tc->xl && c->use_conv == tc->use_conv);
        CHECK_EQ_INT(c->input_channels, tc->input_channels);
        CHECK_EQ_INT(c->nums_rb, tc->nums_rb);
        if (!tc->light)
            CHECK_EQ_INT(c->ksize, tc->ksize);
        CHECK(c->width[0] == 8 && c->width[1] == 16 && c->width[2] == 32 && c->width[3] == 32);
        CHECK_EQ_INT(c->input_blocks, tc->xl ? 9 : 12);
        CHECK_EQ_INT(c->feature_block[3], tc->xl ? -1 : 11);
        float *h = hint_host(c->input_channels, tc->h, tc->w);
        sd_dtensor *x = ops_upload(h, 4, (const int64_t[]){2, c->input_channels, tc->h, tc->w}), *f[4] = {0};
        CHECK_MSG(sd_t2i_adapter_forward(a, x, f) == SD_OK, "%s", sd_context_errmsg(ctx()));
        double worst = 0;
        for (int k = 0; k < 4 && f[0]; k++) {
            snprintf(file, sizeof file, "%s_f%d.bin", tc->name, k);
            int nd;
            int64_t shape[SD_TENSOR_MAX_DIMS];
            float *ref = ops_read_golden(file, &nd, shape), *got = ops_download(f[k]);
            if (ref && got && f[k]->numel == (size_t)(shape[0] * shape[1] * shape[2] * shape[3]))
                worst = fmax(worst, ops_max_diff(got, ref, f[k]->numel));
            CHECK(ops_expect(file, f[k], nd, shape, ref, TOL, TOL));
            free(ref);
            free(got);
            sd_dtensor_free(f[k]);
        }
        printf("  %s: max abs error %.3g\n", tc->name, worst);
        free(h);
        sd_dtensor_free(x);
        sd_t2i_adapter_free(a);
        sd_safetensors_close(st);
    }
}

/* The features at SD1's input blocks of a 4-level, 2-res-block UNet vs diffusers. */
static void test_unet_inputs(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    sd_unet_config *u = &cfg.unet;
    u->n_levels = 4;
    memcpy(u->channel_mult, (const int[]){1, 2, 4, 4}, 4 * sizeof(int));
    memcpy(u->attention, (const bool[]){1, 1, 1, 0}, 4 * sizeof(bool));
    u->num_res_blocks = 2;
    sd_unet_config_set_depth(u, u->middle_depth);
    u->time_embed_dim = 4 * u->model_channels;
    cfg.has_clip = cfg.has_vae = false;
    sd_checkpoint_apply_family_rules(&cfg);
    char *path = test_path(test_scratch_dir(), "unet4.safetensors");
    CHECK_MSG(sd_sd1_write_random(ctx(), path, &cfg, SD_ST_F32, 5) == SD_OK, "%s", sd_context_errmsg(ctx()));
    sd_safetensors *st = NULL;
    sd_unet *unet = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx(), path, &st), SD_OK);
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx(), st, &cfg), SD_OK);
    CHECK_EQ_INT(sd_unet_new(ops_cl(), st, SD1_UNET_PREFIX, &cfg.unet, SD_DTYPE_F32, &unet), SD_OK);
    sd_dtensor *x = ops_golden("t2i_unet_x.bin"), *context = ops_golden("t2i_unet_context.bin"), *f[4], *eps = NULL;
    float t[2] = {700.0f, 120.0f};
    const sd_dtensor *inputs[12] = {0}, *skips[12] = {0};
    char name[32];
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "t2i_unet_f%d.bin", k);
        sd_dtensor *raw = ops_golden(name);
        f[k] = NULL;
        if (raw)
            CHECK_EQ_INT(sd_op_scale(ops_cl(), raw, 0.8f, 0.0f, &f[k]), SD_OK);
        sd_dtensor_free(raw);
        inputs[3 * k + 2] = f[k];
    }
    sd_unet_control control = {.skips = skips, .n_skips = 12, .inputs = inputs, .n_inputs = 12};
    if (unet && x && context) {
        sd_status s = sd_unet_forward(unet, x, t, context, &control, &eps);
        CHECK_MSG(s == SD_OK, "unet: %s", sd_context_errmsg(ctx()));
        int nd;
        int64_t shape[SD_TENSOR_MAX_DIMS];
        float *ref = ops_read_golden("t2i_unet_eps.bin", &nd, shape), *got = eps ? ops_download(eps) : NULL;
        if (ref && got)
            printf("  UNet with the features: max abs error %.3g\n", ops_max_diff(got, ref, eps->numel));
        CHECK(ops_expect("t2i_unet_eps.bin", eps, nd, shape, ref, TOL, 0.0));
        free(ref);
        free(got);
        /* a feature of the wrong shape is named */
        sd_dtensor_free(eps), eps = NULL;
        inputs[3] = f[0];
        CHECK_EQ_INT(sd_unet_forward(unet, x, t, context, &control, &eps), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx()), "input block 3");
    }
    for (int k = 0; k < 4; k++)
        sd_dtensor_free(f[k]);
    sd_dtensor_free(x);
    sd_dtensor_free(context);
    sd_dtensor_free(eps);
    sd_unet_free(unet);
    sd_safetensors_close(st);
    free(path);
}

/* The slot of feature k in an eval's residuals (the middle or input block `block`) against golden
 * <name>_f<k>.bin's item 0 times 0.5, repeated over batch items. */
static void expect_feature(const sd_unet_control *control, const char *name, int k, int block, size_t batch)
{
    char file[32];
    snprintf(file, sizeof file, "%s_f%d.bin", name, k);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden(file, &nd, shape); /* [2, C, fh, fw]: item 0 is this hint's */
    size_t item = ref ? (size_t)(shape[1] * shape[2] * shape[3]) : 0;
    float *want = malloc(batch * item * sizeof *want);
    for (size_t b = 0; ref && want && b < batch; b++)
        for (size_t i = 0; i < item; i++)
            want[b * item + i] = 0.5f * ref[i];
    shape[0] = (int64_t)batch;
    CHECK(ops_expect(file, block < 0 ? control->middle : control->inputs[block], 4, shape, want, TOL, TOL));
    free(ref);
    free(want);
}

/* ControlNetLoader's object on golden <name>: an RGB image holding the reference hint's first item
 * (for a 1-channel adapter R = G = B, whose mean it is) for a latent of h x w, strength 0.5, a
 * batch of 3: the features in the slots of `blocks` (-1: the middle), nothing elsewhere. */
static void eval_case(const char *name, sd_family family, int n_blocks, const int blocks[4], int64_t h, int64_t w)
{
    char file[48];
    snprintf(file, sizeof file, "%s.safetensors", name);
    char *path = test_golden_path(file);
    sd_controlnet *cn = NULL;
    CHECK_MSG(sd_controlnet_open(ctx(), path, SD_DTYPE_F32, &cn) == SD_OK, "%s", sd_context_errmsg(ctx()));
    free(path);
    if (!cn)
        return;
    CHECK(sd_controlnet_t2i(cn) != NULL);
    CHECK_EQ_INT(sd_controlnet_residual_count(cn), n_blocks + 1);
    CHECK(sd_controlnet_family(cn) == family);
    int c = sd_controlnet_config_of(cn)->hint_channels;
    CHECK(sd_controlnet_takes_channels(cn, 3) && sd_controlnet_takes_channels(cn, 1) == (c == 1));
    int64_t hh = 8 * h, hw = 8 * w;
    float *ref_hint = hint_host(c, hh, hw);
    sd_value *img = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = sd_value_add_tensor(img, "image", 4, (const int64_t[]){1, hh, hw, 3});
    for (int64_t i = 0; t && i < hh * hw; i++)
        for (int ch = 0; ch < 3; ch++)
            t->data[i * 3 + ch] = ref_hint[(c == 1 ? 0 : ch) * hh * hw + i];
    sd_control_link *link = sd_control_link_new(cn, img, 0.5, 0.0, 1.0, NULL);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    sd_control_eval *ev = NULL;
    CHECK_EQ_INT(sd_control_eval_new(ctx(), &ms, &ev), SD_OK);
    size_t batch = 3;
    float *x = calloc(batch * 4 * (size_t)(h * w), sizeof *x);
    sd_dtensor *context = NULL;
    CHECK_EQ_INT(sd_dtensor_zeros(ops_cl(), SD_DTYPE_F32, 3, (const int64_t[]){(int64_t)batch, 2, 8}, &context), SD_OK);
    const sd_control_link *chains[1] = {link};
    sd_control_residuals res;
    const sd_unet_control *control = NULL;
    sd_status s = sd_control_eval_call(ev, chains, 1, batch, x, h, w, 5.0f, 500.0f, context, NULL, &res, &control);
    CHECK_MSG(s == SD_OK, "%s", sd_context_errmsg(ctx()));
    if (!s && control) {
        CHECK_EQ_INT(control->n_inputs, n_blocks);
        bool has[64] = {0};
        for (int k = 0; k < 4; k++) {
            expect_feature(control, name, k, blocks[k], batch);
            if (blocks[k] >= 0)
                has[blocks[k]] = true;
        }
        for (int k = 0; k < n_blocks; k++)
            CHECK_MSG(has[k] || control->inputs[k] == NULL, "block %d has a feature", k);
        CHECK(blocks[3] < 0 || control->middle == NULL);
        CHECK(control->skips[0] == NULL);
        sd_control_residuals_free(&res);
    }
    free(x);
    free(ref_hint);
    sd_dtensor_free(context);
    sd_control_eval_free(ev);
    sd_control_link_unref(link);
    sd_value_unref(img);
    sd_controlnet_unref(cn);
}

/* The 1-channel SD1 file (blocks 2, 5, 8, 11; the RGB hint averaged) and the SDXL file (blocks
 * 3, 5, 8 and the middle; its hint rounded up to multiples of 16 is the 8x size here). */
static void test_eval_slots(void)
{
    eval_case("t2i_conv", SD_FAMILY_SD1, 12, (const int[]){2, 5, 8, 11}, 10, 6);
    eval_case("t2i_xl", SD_FAMILY_SDXL, 9, (const int[]){3, 5, 8, -1}, 16, 8);
}

/* A full adapter missing a block's conv is named. */
static void test_missing(void)
{
    sd_safetensors *st = open_golden("t2i_xl.safetensors");
    if (!st)
        return;
    size_t n = sd_safetensors_count(st), k = 0;
    const sd_st_tensor **from = calloc(n, sizeof *from);
    const char **names = calloc(n, sizeof *names);
    for (size_t i = 0; from && names && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (strcmp(t->name, "body.5.block2.weight") != 0)
            from[k] = t, names[k++] = t->name;
    }
    sd_safetensors *alias = NULL;
    CHECK_EQ_INT(sd_safetensors_alias(ctx(), st, from, names, k, &alias), SD_OK);
    sd_t2i_adapter *a = (sd_t2i_adapter *)&a;
    CHECK_EQ_INT(sd_t2i_adapter_new(ctx(), alias, SD_DTYPE_F32, &a), SD_ERR_INVALID);
    CHECK(a == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx()), "T2I-Adapter tensor 'body.5.block2.weight' is missing");
    sd_safetensors_close(alias);
    sd_safetensors_close(st);
    free(from);
    free(names);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_features);
    RUN(test_unet_inputs);
    RUN(test_eval_slots);
    RUN(test_missing);
    ops_cl_release();
    return test_summary("test_t2i_adapter");
}
