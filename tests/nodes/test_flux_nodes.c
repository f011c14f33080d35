/* FLUX through the nodes on the goldens' tiny transformers (tests/reference/make_flux_goldens.py),
 * with a CONDITIONING built by hand as the FLUX text encoders give it (cond.0 [1, 7, 48] T5
 * stand-in, pooled.0 [1, 24] CLIP-L stand-in):
 * - KSampler (seed 42, euler, simple, 4 steps, cfg 1) on EmptySD3LatentImage against the goldens'
 *   ComfyUI-style runs: schnell from the BFL file opened as a diffusion model (UNETLoader's path),
 *   dev from the all-in-one file through ModelSamplingFlux and FluxGuidance;
 * - EmptyLatentImage's 4-channel latent widened to 16 channels as ComfyUI does (same result);
 * - img2img (denoise 0.75) from a given latent; the GGUF file through the model store;
 * - FluxGuidance's default equals 3.5, FluxDisableGuidance changes the result;
 * - ModelSamplingFlux refuses an SD model. */
#include "test.h"
#include "support/golden.h"
#include "support/node_direct.h"
#include "ml/families/sd1_layout.h"
#include "nodes/model_handle.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { C = 16, LAT = 8, LAT_N = C * LAT * LAT, T = 7, CTX = 48, VEC = 24 };
#define SCALE 0.3611f
#define SHIFT 0.1159f

static sd_context *g_ctx;

static sd_value *run_ok(const char *type, sd_value **in)
{
    sd_status st;
    sd_value *v = test_run_node(g_ctx, type, in, &st);
    CHECK_MSG(st == SD_OK && v, "%s: %s", type, sd_context_errmsg(g_ctx));
    return v;
}

/* A MODEL value on golden file `name` opened as kind. */
static sd_value *model(const char *name, sd_model_file_kind kind)
{
    char *path = test_golden_path(name);
    sd_loaded *l = NULL;
    CHECK_EQ_INT(sd_model_store_open(g_ctx, path, kind, SD_DTYPE_F16, &l), SD_OK);
    free(path);
    sd_value *v = l ? sd_node_model_value(SD_TYPE_MODEL, l, -1) : NULL;
    sd_loaded_unref(l);
    return v;
}

/* The goldens' conditioning: one entry of flux_run_in.f32's context and pooled vector. */
static sd_value *conditioning(void)
{
    float *in = test_read_golden("flux_run_in.f32", (LAT_N + T * CTX + VEC) * sizeof(float));
    sd_value *v = sd_value_new(SD_TYPE_CONDITIONING);
    if (in && v) {
        test_put_tensor(v, "cond.0", 3, (const int64_t[]){1, T, CTX}, in + LAT_N);
        test_put_tensor(v, "pooled.0", 2, (const int64_t[]){1, VEC}, in + LAT_N + T * CTX);
        v->attrs = json_pack("{s:[{}]}", "entries");
    }
    free(in);
    return v;
}

static sd_value *empty_latent(const char *type)
{
    sd_value *w = sd_value_int(64), *h = sd_value_int(64), *b = sd_value_int(1);
    sd_value *out = run_ok(type, (sd_value *[]){w, h, b});
    sd_value_unref(w);
    sd_value_unref(h);
    sd_value_unref(b);
    return out;
}

/* KSampler(model, seed 42, euler, simple, 4 steps, cfg 1, cond on both sides, latent, denoise):
 * its samples (malloc'd LAT_N floats) or NULL. */
static float *ksample(sd_value *m, sd_value *cond, sd_value *latent, double denoise)
{
    sd_value *in[] = {m, sd_value_int(42), sd_value_string(SD_TYPE_ENUM, "fixed"), sd_value_int(4),
                      sd_value_float(1.0), sd_value_string(SD_TYPE_ENUM, "euler"),
                      sd_value_string(SD_TYPE_ENUM, "simple"), cond, cond, latent, sd_value_float(denoise)};
    sd_value *out = m && cond && latent ? run_ok("KSampler", in) : NULL;
    for (int i = 1; i < 11; i++)
        if (i < 7 || i == 10)
            sd_value_unref(in[i]);
    const sd_tensor *t = out ? sd_value_tensor(out, "samples") : NULL;
    float *got = NULL;
    CHECK(!out || (t && t->ndim == 4 && t->shape[1] == C && t->shape[2] == LAT && t->shape[3] == LAT));
    if (t && t->shape[1] == C && (got = malloc(LAT_N * sizeof *got)))
        memcpy(got, t->data, LAT_N * sizeof *got);
    sd_value_unref(out);
    return got;
}

/* PSNR against golden LATENT `ref_name` on the model's contribution (the sampler-space latent
 * minus the initial noise): >= 90 dB, not the 40 the issue asks for, as the tiny model depends so
 * little on x that an input wrongly scaled by 1 / sqrt(sigma^2 + 1) still gives 50 dB. */
static void expect_run(const float *got, const char *ref_name, const char *what)
{
    float *ref = test_read_golden(ref_name, LAT_N * sizeof(float));
    float *noise = test_read_golden("flux_run_in.f32", (LAT_N + T * CTX + VEC) * sizeof(float));
    CHECK(got && ref && noise);
    if (got && ref && noise) {
        float cg[LAT_N], cr[LAT_N], lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < LAT_N; i++) {
            cg[i] = (got[i] - SHIFT) * SCALE - noise[i];
            cr[i] = (ref[i] - SHIFT) * SCALE - noise[i];
            lo = fminf(lo, cr[i]), hi = fmaxf(hi, cr[i]);
        }
        double p = test_psnr(cg, cr, LAT_N, hi - lo);
        printf("  %s: PSNR %.1f dB on the model's contribution\n", what, p);
        CHECK_MSG(p >= 90.0, "%s: %.1f dB", what, p);
    }
    free(ref);
    free(noise);
}

static float *g_schnell; /* the schnell txt2img run, shared */

static void test_schnell_txt2img(void)
{
    sd_value *m = model("flux_schnell_tiny.safetensors", SD_MODEL_FILE_UNET), *cond = conditioning();
    sd_value *latent = empty_latent("EmptySD3LatentImage");
    g_schnell = ksample(m, cond, latent, 1.0);
    expect_run(g_schnell, "flux_schnell_run.f32", "schnell (BFL file), KSampler euler 4 steps");
    sd_value_unref(latent);
    /* EmptyLatentImage's 4 channels: widened, as ComfyUI's fix_empty_latent_channels */
    latent = empty_latent("EmptyLatentImage");
    float *widened = ksample(m, cond, latent, 1.0);
    CHECK(widened && g_schnell && memcmp(widened, g_schnell, LAT_N * sizeof(float)) == 0);
    free(widened);
    sd_value_unref(latent);
    sd_value_unref(cond);
    sd_value_unref(m);
}

static void test_dev_txt2img(void)
{
    sd_value *ckpt = model("flux_dev_tiny.safetensors", SD_MODEL_FILE_CHECKPOINT), *cond = conditioning();
    sd_value *mx = sd_value_float(1.15), *base = sd_value_float(0.5), *w = sd_value_int(64), *h = sd_value_int(64);
    sd_value *m = ckpt && cond ? run_ok("ModelSamplingFlux", (sd_value *[]){ckpt, mx, base, w, h}) : NULL;
    sd_value *g = sd_value_float(3.5);
    sd_value *guided = cond ? run_ok("FluxGuidance", (sd_value *[]){cond, g}) : NULL;
    sd_value *latent = empty_latent("EmptySD3LatentImage");
    float *got = ksample(m, guided, latent, 1.0);
    expect_run(got, "flux_dev_run.f32", "dev (all-in-one), ModelSamplingFlux + FluxGuidance 3.5");
    /* without FluxGuidance the entry's guidance is ComfyUI's default 3.5 */
    float *plain = ksample(m, cond, latent, 1.0);
    CHECK(got && plain && memcmp(got, plain, LAT_N * sizeof(float)) == 0);
    sd_value *off = cond ? run_ok("FluxDisableGuidance", (sd_value *[]){cond}) : NULL;
    float *unguided = ksample(m, off, latent, 1.0);
    CHECK(got && unguided && memcmp(got, unguided, LAT_N * sizeof(float)) != 0);
    free(got);
    free(plain);
    free(unguided);
    sd_value *values[] = {ckpt, cond, mx, base, w, h, m, g, guided, latent, off};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        sd_value_unref(values[i]);
}

static void test_img2img(void)
{
    sd_value *m = model("flux_schnell_tiny.safetensors", SD_MODEL_FILE_UNET), *cond = conditioning();
    float *start = test_read_golden("flux_img2img_in.f32", LAT_N * sizeof(float));
    sd_value *latent = sd_value_new(SD_TYPE_LATENT);
    if (start && latent)
        test_put_tensor(latent, "samples", 4, (const int64_t[]){1, C, LAT, LAT}, start);
    float *got = ksample(m, cond, latent, 0.75);
    expect_run(got, "flux_img2img_run.f32", "schnell img2img, denoise 0.75");
    free(got);
    free(start);
    sd_value_unref(latent);
    sd_value_unref(cond);
    sd_value_unref(m);
}

/* The Q8_0 GGUF file (UnetLoaderGGUF's path) samples close to the safetensors run. */
static void test_gguf(void)
{
    sd_value *m = model("flux_schnell_tiny.gguf", SD_MODEL_FILE_UNET), *cond = conditioning();
    sd_value *latent = empty_latent("EmptySD3LatentImage");
    float *got = ksample(m, cond, latent, 1.0);
    if (got && g_schnell) {
        double p = test_psnr(got, g_schnell, LAT_N, 2.0);
        printf("  GGUF Q8_0 run vs the bf16 file: %.1f dB\n", p);
        CHECK(p >= 30.0);
    }
    free(got);
    sd_value_unref(latent);
    sd_value_unref(cond);
    sd_value_unref(m);
}

static void test_model_sampling_flux_on_sd(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    char *path = test_path(test_scratch_dir(), "sd1.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(g_ctx, path, &cfg, SD_ST_F32, 1), SD_OK);
    sd_loaded *l = NULL;
    CHECK_EQ_INT(sd_model_store_open(g_ctx, path, SD_MODEL_FILE_CHECKPOINT, SD_DTYPE_F16, &l), SD_OK);
    sd_value *m = l ? sd_node_model_value(SD_TYPE_MODEL, l, -1) : NULL;
    sd_value *mx = sd_value_float(1.15), *base = sd_value_float(0.5), *w = sd_value_int(64), *h = sd_value_int(64);
    sd_status st;
    sd_value *out = test_run_node(g_ctx, "ModelSamplingFlux", (sd_value *[]){m, mx, base, w, h}, &st);
    CHECK(!out && st == SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(g_ctx), "ModelSamplingFlux takes a FLUX model, not SD1.x");
    sd_value *values[] = {m, mx, base, w, h};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        sd_value_unref(values[i]);
    sd_loaded_unref(l);
    free(path);
}

int main(void)
{
    if (sd_context_new(&g_ctx) != SD_OK)
        return 1;
    sd_context_set_cache_path(g_ctx, NULL);
    RUN(test_schnell_txt2img);
    RUN(test_dev_txt2img);
    RUN(test_img2img);
    RUN(test_gguf);
    RUN(test_model_sampling_flux_on_sd);
    free(g_schnell);
    sd_context_free(g_ctx);
    return test_summary("test_flux_nodes");
}
