/* The FLUX transformer against diffusers' FluxTransformer2DModel and whole euler flow-sampling runs
 * against the same model sampled as ComfyUI does (goldens from tests/reference/make_flux_goldens.py:
 * tiny schnell and dev configurations in BFL's and ComfyUI's all-in-one layouts and as GGUF), the
 * flow model sampling, and bad files. */
#include "test.h"
#include "support/golden.h"
#include "ml/diffusion/flux.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/gguf.h"
#include "ml/vae/vae.h"
#include "core/half.h"
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
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
#define CTX_N (B * T * CTX)
#define IN_N (X_N + CTX_N + B * VEC + B + B)
#define RUN_N (C * 8 * 8)

static sd_context *ctx;

static sd_dtensor *upload(sd_cl *cl, int ndim, const int64_t *shape, const float *host)
{
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t), SD_OK);
    if (t)
        CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    return t;
}

/* max |a - ref| / max |ref|. */
static double rel_diff(const float *a, const float *ref, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(ref[i]));
    return test_max_abs_diff(a, ref, n) / m;
}

static size_t last_live_bytes; /* device bytes of forward_against's weights, kept forms excluded */

/* The forward pass of the model in st under prefix on the golden inputs against golden `want`. */
static void forward_against(const sd_safetensors *st, const char *prefix, bool dev, const char *want, sd_dtype dtype,
                            double tol)
{
    sd_cl *cl = NULL;
    sd_flux *f = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    if (cl)
        CHECK_EQ_INT(sd_flux_new(cl, st, prefix, dtype, &f), SD_OK);
    float *in = test_read_golden("flux_in.f32", IN_N * sizeof(float));
    float *ref = test_read_golden(want, X_N * sizeof(float));
    if (!f || !in || !ref)
        goto done;
    const sd_flux_config *c = sd_flux_config_of(f);
    CHECK(c->hidden == 64 && c->heads == 2 && c->head_dim == 32 && c->mlp_hidden == 256 && c->depth == 2 &&
          c->depth_single == 2 && c->context_dim == CTX && c->vec_dim == VEC && c->in_channels == C &&
          c->out_channels == C && c->guidance == dev && c->axes_dim[0] == 4 && c->axes_dim[1] == 14);
    int64_t xs[4] = {B, C, LH, LW}, cs[3] = {B, T, CTX}, ys[2] = {B, VEC};
    sd_dtensor *x = upload(cl, 4, xs, in), *cx = upload(cl, 3, cs, in + X_N), *y = upload(cl, 2, ys, in + X_N + CTX_N);
    const float *t = in + X_N + CTX_N + B * VEC, *g = t + B;
    sd_dtensor *out = NULL;
    CHECK_EQ_INT(sd_flux_forward(f, x, t, cx, y, g, &out), SD_OK);
    if (out) {
        float got[X_N];
        CHECK(out->ndim == 4 && out->shape[1] == C && out->shape[2] == LH && out->shape[3] == LW);
        CHECK_EQ_INT(sd_dtensor_download(out, got), SD_OK);
        double d = rel_diff(got, ref, X_N);
        CHECK_MSG(d <= tol, "%s: relative difference %g > %g", want, d, tol);
        fprintf(stderr, "  %s, %s weights: max relative difference %.3g\n", want, sd_dtype_name(dtype), d);
    }
    sd_dtensor_free(out);
    /* the weights are what stays live after the forward pass (docs/flux.md quotes these) */
    last_live_bytes = cl->stats.live_bytes - cl->stats.derived_bytes;
    fprintf(stderr, "  %s: %zu device bytes live after the forward pass (%zu in kept packed forms)\n", want,
            cl->stats.live_bytes, cl->stats.derived_bytes);
    sd_dtensor_free(x);
    sd_dtensor_free(cx);
    sd_dtensor_free(y);
done:
    free(in);
    free(ref);
    sd_flux_free(f);
}

static sd_safetensors *open_golden(const char *name)
{
    char *path = test_golden_path(name);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    free(path);
    return st;
}

/* bf16 in the file: f32 and f16 storage both hold the weights exactly. */
static void test_forward_schnell(void)
{
    sd_safetensors *st = open_golden("flux_schnell_tiny.safetensors");
    if (st) {
        forward_against(st, "", false, "flux_schnell_out.f32", SD_DTYPE_F32, 1e-4);
        forward_against(st, "", false, "flux_schnell_out.f32", SD_DTYPE_F16, 1e-4);
    }
    sd_safetensors_close(st);
}

static void test_forward_dev_all_in_one(void)
{
    sd_safetensors *st = open_golden("flux_dev_tiny.safetensors");
    if (st) {
        CHECK(sd_flux_present(st, "model.diffusion_model.") && !sd_flux_present(st, ""));
        forward_against(st, "model.diffusion_model.", true, "flux_dev_out.f32", SD_DTYPE_F32, 1e-4);
    }
    sd_safetensors_close(st);
}

/* F8_E4M3 matrices (as Kijai's and ComfyUI's fp8 FLUX files) kept as fp8 bytes on the device and
 * widened exactly in linear's pack step, against diffusers on the same fp8-rounded weights. */
static void test_forward_fp8(void)
{
    sd_safetensors *st = open_golden("flux_dev_fp8.safetensors");
    if (st) {
        const sd_st_tensor *t = sd_safetensors_find(st, "model.diffusion_model.single_blocks.0.linear1.weight");
        CHECK(t && t->dtype == SD_ST_F8_E4M3);
        forward_against(st, "model.diffusion_model.", true, "flux_fp8_out.f32", SD_DTYPE_F16, 1e-4);
    }
    sd_safetensors_close(st);
}

/* Every fp8 byte (E4M3FN and E5M2) read as f32 and as f16 bits equals torch's value (NaN where
 * torch's is NaN). */
static void test_fp8_values(void)
{
    sd_safetensors *st = open_golden("fp8_all.safetensors");
    float *want = test_read_golden("fp8_all.f32", 512 * sizeof(float));
    for (int k = 0; st && want && k < 2; k++) {
        const sd_st_tensor *t = sd_safetensors_find(st, k ? "e5m2" : "e4m3");
        float got[256];
        uint16_t half[256];
        CHECK(t && t->dtype == (k ? SD_ST_F8_E5M2 : SD_ST_F8_E4M3));
        if (!t || sd_safetensors_read_f32(ctx, st, t, got, 256) || sd_safetensors_read_f16(ctx, st, t, half, 256)) {
            CHECK(false);
            continue;
        }
        for (int i = 0; i < 256; i++) {
            float w = want[k * 256 + i], h = sd_half_to_float(half[i]);
            CHECK_MSG(isnan(w) ? isnan(got[i]) && isnan(h) : got[i] == w && h == w && signbit(got[i]) == signbit(w),
                      "%s byte %d: %g / %g, torch %g", t->name, i, got[i], h, w);
        }
    }
    free(want);
    sd_safetensors_close(st);
}

/* Q8_0 matrices kept as blocks on the device (dequantised in linear's pack step; the vectors
 * expanded at upload), against diffusers on gguf's dequantisation; the device holds fewer bytes
 * than for the same model's f16 weights. */
static void test_forward_gguf(void)
{
    char *path = test_golden_path("flux_schnell_tiny.gguf");
    sd_gguf *g = NULL;
    sd_safetensors *view = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g)
        CHECK_EQ_INT(sd_gguf_tensor_view(ctx, g, &view), SD_OK);
    if (view) {
        const sd_st_tensor *q = sd_safetensors_find(view, "double_blocks.1.img_attn.qkv.weight");
        CHECK(q && q->dtype == SD_ST_GGML && q->ggml_type == SD_GGML_Q8_0);
        forward_against(view, "", false, "flux_gguf_out.f32", SD_DTYPE_F32, 1e-4);
        forward_against(view, "", false, "flux_gguf_out.f32", SD_DTYPE_F16, 1e-4);
        size_t q8 = last_live_bytes;
        sd_safetensors *f16 = open_golden("flux_schnell_tiny.safetensors");
        if (f16)
            forward_against(f16, "", false, "flux_schnell_out.f32", SD_DTYPE_F16, 1e-4);
        CHECK_MSG(q8 < last_live_bytes, "Q8_0 weights take %zu device bytes, f16 ones %zu", q8, last_live_bytes);
        sd_safetensors_close(f16);
    }
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

/* ---- sampling ---- */

typedef struct runner {
    sd_cl *cl;
    sd_flux *f;
    sd_dtensor *cx, *y;
    float guidance;
} runner;

/* D(x, sigma) = x - sigma * v (CONST), the model called with timestep sigma. */
static sd_status flow_denoise(void *user, const float *x, float sigma, float *out, float *uncond, size_t n)
{
    (void)uncond;
    runner *r = user;
    int64_t xs[4] = {1, C, 8, 8};
    sd_dtensor *xd = upload(r->cl, 4, xs, x), *v = NULL;
    sd_status s = xd ? sd_flux_forward(r->f, xd, &sigma, r->cx, r->y, &r->guidance, &v) : SD_ERR_NOMEM;
    if (!s)
        s = sd_dtensor_download(v, out);
    for (size_t i = 0; !s && i < n; i++)
        out[i] = x[i] - sigma * out[i];
    sd_dtensor_free(xd);
    sd_dtensor_free(v);
    return s;
}

/* KSampler's euler run (simple scheduler, denoise 1, cfg 1) on an empty latent against the golden
 * LATENT, compared on the model's contribution (final latent minus the initial noise) in the
 * sampler's space. */
static void run_against(const char *file, const char *prefix, double shift, const char *want)
{
    sd_safetensors *st = open_golden(file);
    float *in = test_read_golden("flux_run_in.f32", (RUN_N + T * CTX + VEC) * sizeof(float));
    float *ref = test_read_golden(want, RUN_N * sizeof(float));
    runner r = {.guidance = 3.5f};
    CHECK_EQ_INT(sd_cl_get(ctx, &r.cl), SD_OK);
    if (!st || !in || !ref || !r.cl || sd_flux_new(r.cl, st, prefix, SD_DTYPE_F16, &r.f) != SD_OK)
        goto done;
    int64_t cs[3] = {1, T, CTX}, ys[2] = {1, VEC};
    r.cx = upload(r.cl, 3, cs, in + RUN_N);
    r.y = upload(r.cl, 2, ys, in + RUN_N + T * CTX);
    sd_model_sampling ms;
    sd_model_sampling_flux(&ms, shift);
    float *sigmas = NULL, latent[RUN_N], out[RUN_N], got[RUN_N], want_c[RUN_N];
    size_t ns = 0;
    CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "simple", "euler", 4, 1.0, &sigmas, &ns), SD_OK);
    const float scale = 0.3611f, sh = 0.1159f;
    for (int i = 0; i < RUN_N; i++)
        latent[i] = (0.0f - sh) * scale;
    sd_sample_options o = {.sampler = "euler", .sigmas = sigmas, .n_sigmas = ns, .flow = true,
                           .sigma_max = sd_model_sampling_sigma_max(&ms), .denoise = flow_denoise, .denoise_user = &r};
    CHECK_EQ_INT(sd_sample(ctx, &o, in, latent, out, RUN_N), SD_OK);
    for (int i = 0; i < RUN_N; i++) {
        got[i] = out[i] - in[i];
        want_c[i] = (ref[i] - sh) * scale - in[i];
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < RUN_N; i++)
        lo = fmin(lo, want_c[i]), hi = fmax(hi, want_c[i]);
    double p = test_psnr(got, want_c, RUN_N, hi - lo);
    CHECK_MSG(p >= 40.0, "%s: PSNR %.1f dB < 40", want, p);
    fprintf(stderr, "  %s: model contribution %.1f dB PSNR\n", want, p);
    free(sigmas);
done:
    sd_dtensor_free(r.cx);
    sd_dtensor_free(r.y);
    sd_flux_free(r.f);
    sd_safetensors_close(st);
    free(in);
    free(ref);
}

static void test_run_schnell(void)
{
    run_against("flux_schnell_tiny.safetensors", "", 1.0, "flux_schnell_run.f32");
}

static void test_run_dev(void)
{
    run_against("flux_dev_tiny.safetensors", "model.diffusion_model.", sd_flux_shift(1.15, 0.5, 64, 64),
                "flux_dev_run.f32");
}

/* The 16-channel VAE without quant convs (FLUX's ae.safetensors layout) against diffusers'
 * AutoencoderKL(latent_channels 16, use_quant_conv False): decode and encode. */
static void test_vae(void)
{
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("flux-dev-tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    char *path = test_path(test_scratch_dir(), "ae.safetensors");
    sd_safetensors *st = NULL;
    sd_cl *cl = NULL;
    sd_vae *vae = NULL;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 7), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    if (st && cl && !sd_vae_inspect(ctx, st, &got)) {
        CHECK(got.vae.z_channels == 16 && got.vae.no_quant_conv && !sd_safetensors_find(st, "quant_conv.weight"));
        CHECK_EQ_INT(sd_vae_new(cl, st, got.vae_prefix, &got.vae, SD_DTYPE_F32, &vae), SD_OK);
    }
    float *z = test_read_golden("flux_vae_z.f32", 16 * 8 * 8 * 4);
    float *image = test_read_golden("flux_vae_image.f32", 3 * 64 * 64 * 4);
    float *dec_ref = test_read_golden("flux_vae_decoded.f32", 3 * 64 * 64 * 4);
    float *mean_ref = test_read_golden("flux_vae_mean.f32", 16 * 8 * 8 * 4);
    float *dec = malloc(3 * 64 * 64 * sizeof *dec), mean[16 * 8 * 8];
    if (vae && z && image && dec_ref && mean_ref) {
        int64_t zs[4] = {1, 16, 8, 8}, is[4] = {1, 3, 64, 64};
        sd_dtensor *zd = upload(cl, 4, zs, z), *id = upload(cl, 4, is, image), *o = NULL, *m = NULL;
        CHECK_EQ_INT(sd_vae_decode(vae, zd, &o), SD_OK);
        CHECK_EQ_INT(sd_vae_encode(vae, id, &m), SD_OK);
        if (o && m && !sd_dtensor_download(o, dec) && !sd_dtensor_download(m, mean)) {
            double dd = test_max_abs_diff(dec, dec_ref, 3 * 64 * 64), dm = test_max_abs_diff(mean, mean_ref, 16 * 64);
            CHECK_MSG(dd <= 1e-4 && dm <= 1e-4, "decode %g, encode %g", dd, dm);
            fprintf(stderr, "  16-channel VAE: decode max abs diff %.3g, encode %.3g\n", dd, dm);
        }
        sd_dtensor_free(zd);
        sd_dtensor_free(id);
        sd_dtensor_free(o);
        sd_dtensor_free(m);
    }
    free(z);
    free(image);
    free(dec_ref);
    free(mean_ref);
    free(dec);
    sd_vae_free(vae);
    sd_safetensors_close(st);
    free(path);
}

/* ModelSamplingFlux: the 10000-entry table, timestep = sigma, the node's shift formula. */
static void test_model_sampling(void)
{
    sd_model_sampling ms;
    sd_model_sampling_flux(&ms, 1.15);
    CHECK(ms.n == 10000 && ms.type == SD_SAMPLING_FLOW);
    CHECK(sd_model_sampling_sigma_max(&ms) == 1.0f);
    CHECK(fabs(sd_model_sampling_sigma_min(&ms) - exp(1.15) / (exp(1.15) + 9999.0)) < 1e-7);
    CHECK(sd_model_sampling_timestep(&ms, 0.25f) == 0.25f);
    CHECK(fabs(sd_flux_shift(1.15, 0.5, 1024, 1024) - 1.15) < 1e-12);
    CHECK(fabs(sd_flux_shift(1.15, 0.5, 256, 256) - 0.5) < 1e-12);
    CHECK(sd_model_sampling_percent_to_sigma(&ms, 0.0) == 1.0);
    float cx, cout;
    sd_model_sampling_denoise_coefs(&ms, 0.5f, &cx, &cout);
    CHECK(cx == 1.0f && cout == -0.5f);
}

/* A misshapen tensor is one line naming the file and tensor. */
static void test_bad_shapes(void)
{
    sd_safetensors *st = open_golden("flux_schnell_tiny.safetensors");
    if (!st)
        return;
    size_t n = sd_safetensors_count(st);
    const sd_st_tensor **from = malloc(n * sizeof *from);
    const char **names = malloc(n * sizeof *names);
    for (size_t i = 0; i < n; i++) {
        from[i] = sd_safetensors_at(st, i);
        names[i] = !strcmp(from[i]->name, "single_blocks.1.linear2.weight")   ? "single_blocks.1.linear1.weight"
                   : !strcmp(from[i]->name, "single_blocks.1.linear1.weight") ? "single_blocks.1.linear2.weight"
                                                                              : from[i]->name;
    }
    sd_safetensors *alias = NULL;
    sd_flux_config cfg;
    CHECK_EQ_INT(sd_safetensors_alias(ctx, st, from, names, n, &alias), SD_OK);
    if (alias) {
        CHECK_EQ_INT(sd_flux_inspect(ctx, alias, "", &cfg), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor 'single_blocks.1.linear1.weight' has shape [64, 320] (2 "
                                                   "dimensions), the FLUX transformer needs [448, 64]");
    }
    sd_safetensors_close(alias);
    CHECK_EQ_INT(sd_flux_inspect(ctx, st, "model.diffusion_model.", &cfg), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor 'model.diffusion_model.img_in.weight' is missing");
    free(from);
    free(names);
    sd_safetensors_close(st);
    /* the same mistake in a GGUF file (a transposed Q8_0 matrix) */
    char *path = test_golden_path("flux_bad_shape.gguf");
    sd_gguf *g = NULL;
    sd_safetensors *view = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    if (g && !sd_gguf_tensor_view(ctx, g, &view)) {
        CHECK_EQ_INT(sd_flux_inspect(ctx, view, "", &cfg), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "flux_bad_shape.gguf: tensor 'single_blocks.1.linear2.weight' has "
                                                   "shape [320, 64] (2 dimensions), the FLUX transformer needs [64, 320]");
    }
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    RUN(test_model_sampling);
    RUN(test_bad_shapes);
    RUN(test_forward_schnell);
    RUN(test_forward_dev_all_in_one);
    RUN(test_forward_gguf);
    RUN(test_fp8_values);
    RUN(test_forward_fp8);
    RUN(test_vae);
    RUN(test_run_schnell);
    RUN(test_run_dev);
    sd_context_free(ctx);
    return test_summary("test_flux");
}
