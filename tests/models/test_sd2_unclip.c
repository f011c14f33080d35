/* SD2 unCLIP against diffusers and a torch restatement of ComfyUI's unclip_adm on the tiny
 * checkpoint (tests/reference/make_sd2_unclip_goldens.py writes the goldens from the identical file:
 * sdflow_mkckpt --preset sd2-unclip-tiny --seed 31, f32).
 * - checkpoint inspection: the SD2.x unCLIP family (runnable, v-prediction as ComfyUI's
 *   SD20.model_type tells it), its ADM width, the image tower at embedder.model.visual.;
 * - the ADM vector (sd_adm_unclip with the file's noise_augmentor statistics, merge 0.05) of one
 *   and two image embeddings against ComfyUI's unclip_adm;
 * - the UNet with its ADM input against diffusers' UNet2DConditionModel (class_embed_type
 *   "projection", the StableUnCLIP UNet), f32 and f16 weights;
 * - bad files, one line each: an image tower whose embeddings do not fit the ADM input, statistics
 *   of the wrong width. */
#include "test.h"
#include "support/golden.h"
#include "support/layout_check.h"
#include "support/ops_check.h"
#include "ml/diffusion/unet.h"
#include "ml/families/adm.h"
#include "ml/families/sd1_layout.h"
#include <stdlib.h>
#include <string.h>

#define DIM 96 /* the tiny tower's image_embeds, half the ADM width */

static sd_safetensors *g_st;
static sd_checkpoint_config g_cfg;

static void test_inspect(void)
{
    const sd_checkpoint_config *c = &g_cfg;
    CHECK_EQ_INT(c->family, SD_FAMILY_SD2_UNCLIP);
    CHECK(sd_family_get(SD_FAMILY_SD2_UNCLIP)->runnable);
    CHECK_EQ_INT(sd_family_text(SD_FAMILY_SD2_UNCLIP), SD_FAMILY_SD2);
    CHECK_EQ_INT(c->schedule.prediction, SD_PREDICT_V);
    CHECK_EQ_INT(c->unet.adm, SD_ADM_UNCLIP);
    CHECK(c->unet.adm_channels == 2 * DIM && c->unet.context_dim == 192 && c->unet.head_channels == 64);
    CHECK(c->has_clip && c->clip.open_clip && c->clip.width == 192 && c->clip.norm_hidden);
    CHECK(c->has_vision && c->vision.open_clip && c->vision.projection == DIM && c->vision.width == 128);
    CHECK_STR_EQ(c->vision.prefix, "embedder.model.visual.");
    CHECK(c->vision.image_size == 32 && c->vision.patch == 8 && c->vision.layers == 2 && !c->vision.gelu);
}

static void adm_case(const char *golden, int rows, const double *strength, const double *aug)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *emb = ops_read_golden("sd2_unclip_adm_embeds.bin", &nd, shape);
    float *stats = ops_read_golden("sd2_unclip_adm_stats.bin", &nd, shape), *ref = ops_read_golden(golden, &nd, shape);
    float *mean = NULL, *std = NULL, out[2 * DIM];
    CHECK(emb && stats && ref && nd == 2 && shape[1] == 2 * DIM);
    /* the file's statistics, as the sampler reads them */
    CHECK_EQ_INT(sd_unclip_stats_read(ops_cl()->ctx, g_st, DIM, &mean, &std), SD_OK);
    CHECK(mean && std && stats && !memcmp(mean, stats, DIM * sizeof *mean) && !memcmp(std, stats + DIM, DIM * sizeof *std));
    sd_unclip_noise a = {.dim = DIM, .mean = mean, .std = std, .merge = 0.05};
    CHECK(emb && sd_adm_unclip(&a, emb, strength, aug, rows, 42 - 10, out));
    double d = ref ? test_max_abs_diff(out, ref, 2 * DIM) : 1;
    printf("  %s: max abs diff %.3g\n", golden, d);
    CHECK_MSG(d < 1e-5, "%s: max abs diff %g", golden, d);
    free(emb), free(stats), free(ref), free(mean), free(std);
}

static void test_adm(void)
{
    adm_case("sd2_unclip_adm_one.bin", 1, (const double[]){0.7}, (const double[]){0.3});
    adm_case("sd2_unclip_adm_two.bin", 2, (const double[]){1.2, 0.5}, (const double[]){0.0, 0.25});
}

static sd_dtensor *golden_tensor(const char *name, float **host)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    *host = ops_read_golden(name, &nd, shape);
    return *host ? ops_upload(*host, nd, shape) : NULL;
}

static void unet_case(sd_dtype dtype, double tol)
{
    float *x, *c, *y, *ref;
    sd_dtensor *dx = golden_tensor("sd2_unclip_unet_x.bin", &x), *dc = golden_tensor("sd2_unclip_unet_context.bin", &c);
    sd_dtensor *dy = golden_tensor("sd2_unclip_unet_y.bin", &y), *dref = golden_tensor("sd2_unclip_unet_eps.bin", &ref);
    sd_dtensor *out = NULL;
    sd_unet *u = NULL;
    const float t[2] = {981.0f, 250.5f};
    CHECK(dx && dc && dy && dref);
    CHECK_EQ_INT(sd_unet_new(ops_cl(), g_st, g_cfg.unet_prefix, &g_cfg.unet, dtype, &u), SD_OK);
    if (dx && dc && dy && dref && u) {
        sd_status s = sd_unet_forward_adm(u, dx, t, dc, dy, NULL, &out);
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ops_cl()->ctx));
        if (!s) {
            float *got = ops_download(out);
            printf("  SD2 unCLIP UNet %s weights: max abs error %.3g\n", sd_dtype_name(dtype),
                   ops_max_diff(got, ref, out->numel));
            free(got);
            CHECK(ops_expect("sd2-unclip", out, dref->ndim, dref->shape, ref, tol, 0.0));
        }
    }
    sd_unet_free(u);
    sd_dtensor_free(dx), sd_dtensor_free(dc), sd_dtensor_free(dy), sd_dtensor_free(dref), sd_dtensor_free(out);
    free(x), free(c), free(y), free(ref);
}

static void test_unet(void)
{
    unet_case(SD_DTYPE_F32, 1e-4);
    unet_case(SD_DTYPE_F16, 5e-3);
}

/* Writes cfg as `file` and expects sd_checkpoint_inspect to fail with exactly `want` after the path. */
static void expect_refused(const sd_checkpoint_config *cfg, const char *file, const char *want)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_path(test_scratch_dir(), file), msg[512];
    sd_safetensors *st = NULL;
    sd_checkpoint_config got;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, cfg, SD_ST_F16, 3), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    if (st)
        CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &got), SD_ERR_INVALID);
    snprintf(msg, sizeof msg, "%s: %s", path, want);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    sd_safetensors_close(st);
    free(path);
}

static void test_bad_files(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("sd2-unclip-tiny", &cfg));
    cfg.vision.projection = 80; /* the ADM input stays 192 wide */
    cfg.unet.adm_channels = 2 * DIM;
    expect_refused(&cfg, "unclip-narrow.safetensors",
                   "the UNet's ADM input (label_emb) is 192 wide; the image tower's 80-wide embeddings make 160");
    /* statistics of another width than the image embeddings' */
    sd_context *ctx = ops_cl()->ctx;
    float *mean = NULL, *std = NULL;
    CHECK_EQ_INT(sd_unclip_stats_read(ctx, g_st, DIM + 1, &mean, &std), SD_ERR_INVALID);
    CHECK(mean == NULL && std == NULL);
    CHECK(strstr(sd_context_errmsg(ctx), "tensor 'noise_augmentor.data_mean' is not 97 wide") != NULL);
}

int main(void)
{
    if (!ops_cl() || !test_open_preset(ops_cl()->ctx, "sd2-unclip-tiny", "unclip.safetensors", 31, &g_st, &g_cfg))
        return 1;
    RUN(test_inspect);
    RUN(test_adm);
    RUN(test_unet);
    RUN(test_bad_files);
    sd_safetensors_close(g_st);
    ops_cl_release();
    return test_summary("test_sd2_unclip");
}
