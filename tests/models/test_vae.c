/* The VAE decoder and encoder against diffusers' AutoencoderKL (goldens from
 * tests/reference/make_vae_goldens.py on the same tiny standalone VAE file). */
#include "test.h"
#include "support/golden.h"
#include "ml/families/sd1_layout.h"
#include "ml/vae/vae.h"
#include <stdlib.h>

typedef struct fixture {
    sd_context *ctx;
    sd_safetensors *st;
    sd_cl *cl;
    sd_checkpoint_config cfg;
} fixture;

static bool setup(fixture *f)
{
    CHECK_EQ_INT(sd_context_new(&f->ctx), SD_OK);
    sd_context_set_cache_path(f->ctx, NULL);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    char *path = test_path(test_scratch_dir(), "vae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(f->ctx, path, &cfg, SD_ST_F32, 5), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(f->ctx, path, &f->st), SD_OK);
    free(path);
    CHECK_EQ_INT(sd_vae_inspect(f->ctx, f->st, &f->cfg), SD_OK);
    CHECK_EQ_INT(sd_cl_get(f->ctx, &f->cl), SD_OK);
    return f->st && f->cl;
}

static void teardown(fixture *f)
{
    sd_safetensors_close(f->st);
    sd_context_free(f->ctx);
}

static sd_dtensor *upload(fixture *f, const float *data, int64_t b, int64_t c, int64_t h, int64_t w)
{
    int64_t shape[4] = {b, c, h, w};
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(f->cl, SD_DTYPE_F32, 4, shape, &t), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(t, data), SD_OK);
    return t;
}

/* fp32 weights: max abs error 1e-4; f16-stored weights: 3e-2 on outputs of range ~[-2.5, 2.5]. */
static void roundtrip(sd_dtype dtype, double tol)
{
    fixture f = {0};
    if (!setup(&f))
        return;
    sd_vae *vae = NULL;
    CHECK_EQ_INT(sd_vae_new(f.cl, f.st, f.cfg.vae_prefix, &f.cfg.vae, dtype, &vae), SD_OK);
    float *z = test_read_golden("vae_z.f32", 4 * 8 * 8 * 4);
    float *decoded_ref = test_read_golden("vae_decoded.f32", 3 * 64 * 64 * 4);
    float *image = test_read_golden("vae_image.f32", 3 * 64 * 64 * 4);
    float *mean_ref = test_read_golden("vae_mean.f32", 4 * 8 * 8 * 4);
    float *decoded = malloc(3 * 64 * 64 * sizeof(float)), mean[4 * 8 * 8];

    sd_dtensor *zt = upload(&f, z, 1, 4, 8, 8), *img = upload(&f, image, 1, 3, 64, 64), *out = NULL;
    CHECK_EQ_INT(sd_vae_decode(vae, zt, &out), SD_OK);
    CHECK(out && out->shape[1] == 3 && out->shape[2] == 64 && out->shape[3] == 64);
    CHECK_EQ_INT(sd_dtensor_download(out, decoded), SD_OK);
    double d_dec = test_max_abs_diff(decoded, decoded_ref, 3 * 64 * 64);
    CHECK_MSG(d_dec <= tol, "decode: max abs diff %g > %g", d_dec, tol);
    sd_dtensor_free(out);
    out = NULL;
    CHECK_EQ_INT(sd_vae_encode(vae, img, &out), SD_OK);
    CHECK(out && out->shape[1] == 4 && out->shape[2] == 8 && out->shape[3] == 8);
    CHECK_EQ_INT(sd_dtensor_download(out, mean), SD_OK);
    double d_enc = test_max_abs_diff(mean, mean_ref, 4 * 8 * 8);
    CHECK_MSG(d_enc <= tol, "encode: max abs diff %g > %g", d_enc, tol);
    fprintf(stderr, "  %s weights: decode max abs diff %.3g (PSNR %.1f dB over [-1,1]), encode %.3g\n",
            sd_dtype_name(dtype), d_dec, test_psnr(decoded, decoded_ref, 3 * 64 * 64, 2.0), d_enc);
    sd_dtensor_free(out);

    /* An image whose size is not a multiple of 8 is refused with the shapes named. */
    sd_dtensor *odd = upload(&f, image, 1, 3, 60, 64);
    out = NULL;
    CHECK_EQ_INT(sd_vae_encode(vae, odd, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(f.ctx), "[1, 3, 60, 64] f32 is not [batch, 3, H, W] with H and W multiples of 8");
    CHECK(out == NULL);
    sd_dtensor_free(odd);
    sd_dtensor_free(zt);
    sd_dtensor_free(img);
    free(z);
    free(decoded_ref);
    free(image);
    free(mean_ref);
    free(decoded);
    sd_vae_free(vae);
    teardown(&f);
}

static void test_vae_f32(void) { roundtrip(SD_DTYPE_F32, 1e-4); }
static void test_vae_f16(void) { roundtrip(SD_DTYPE_F16, 3e-2); }

int main(void)
{
    RUN(test_vae_f32);
    RUN(test_vae_f16);
    return test_summary("test_vae");
}
