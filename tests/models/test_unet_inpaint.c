/* A 9-channel (sd-v1-5-inpainting layout) UNet against diffusers' UNet2DConditionModel with
 * in_channels 9, on a tiny random checkpoint (tests/reference/make_inpaint_goldens.py writes the
 * goldens from the identical file: sdflow_mkckpt --preset tiny --in-channels 9 --no-clip
 * --no-vae --seed 11). Batch 2, 16x16 latent, 77 tokens. Tolerance 1e-4 absolute (f32 weights),
 * as the 4-channel UNet test. */
#include "test.h"
#include "support/ops_check.h"
#include "ml/families/sd1_layout.h"
#include "ml/diffusion/unet.h"
#include <stdlib.h>
#include <string.h>

static sd_dtensor *upload_golden(const char *name, int want_nd)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *data = ops_read_golden(name, &nd, shape);
    CHECK_MSG(data && nd == want_nd, "%s: missing or misshapen golden", name);
    sd_dtensor *t = data && nd == want_nd ? ops_upload(data, nd, shape) : NULL;
    free(data);
    return t;
}

static void test_forward_9ch(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.unet.in_channels = 9;
    cfg.has_clip = cfg.has_vae = false;
    char *path = test_path(test_scratch_dir(), "unet9.safetensors");
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, 11), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &got), SD_OK);
    CHECK_EQ_INT(got.unet.in_channels, 9);
    sd_dtensor *x = upload_golden("unet9_x.bin", 4), *c = upload_golden("unet9_context.bin", 3);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *t = ops_read_golden("unet9_t.bin", &nd, shape), *ref = ops_read_golden("unet9_eps.bin", &nd, shape);
    CHECK(t && ref && nd == 4 && shape[1] == 4);
    sd_unet *u = NULL;
    sd_dtensor *out = NULL;
    if (st && x && c && t && ref) {
        CHECK_EQ_INT(sd_unet_new(ops_cl(), st, SD1_UNET_PREFIX, &got.unet, SD_DTYPE_F32, &u), SD_OK);
        sd_status s = u ? sd_unet_forward(u, x, t, c, NULL, &out) : SD_ERR_INVALID;
        CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
        if (!s) {
            float *y = ops_download(out);
            printf("  9-channel UNet: max abs error %.3g\n", ops_max_diff(y, ref, out->numel));
            free(y);
            CHECK(ops_expect("unet9_eps", out, nd, shape, ref, 1e-4, 0.0));
        }
    }
    sd_dtensor_free(out);
    sd_unet_free(u);
    sd_dtensor_free(x);
    sd_dtensor_free(c);
    free(t);
    free(ref);
    sd_safetensors_close(st);
    free(path);
}

int main(void)
{
    RUN(test_forward_9ch);
    return test_summary("test_unet_inpaint");
}
