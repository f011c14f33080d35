/* The annotator network tests' shared inputs. */
#include "support/aux_net.h"
#include "test.h"
#include "support/golden.h"
#include "ml/annotators/aux_image.h"
#include <stdlib.h>

sd_safetensors *aux_open_golden_net(sd_context *ctx, const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens"), *path = test_path(dir, name);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    free(dir);
    free(path);
    return st;
}

sd_dtensor *aux_padded_input(sd_context *ctx, sd_cl *cl, float divisor)
{
    unsigned char *img = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    sd_img8 in = {48, 40, 3, img}, padded = {0};
    int64_t th, tw, hw = AUX_NET_H * AUX_NET_W;
    sd_dtensor *dx = NULL;
    float *x = malloc(sizeof *x * 3 * (size_t)hw);
    CHECK_EQ_INT(sd_aux_resize_with_pad(ctx, &in, 64, SD_AUX_CUBIC, &padded, &th, &tw), SD_OK);
    if (img && x && padded.h == AUX_NET_H && padded.w == AUX_NET_W) {
        for (int c = 0; c < 3; c++)
            for (int64_t i = 0; i < hw; i++)
                x[c * hw + i] = (float)padded.px[i * 3 + c] / divisor;
        CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, AUX_NET_H, AUX_NET_W}, &dx), SD_OK);
        CHECK_EQ_INT(sd_dtensor_upload(dx, x), SD_OK);
    }
    free(img);
    free(x);
    sd_img8_free(&padded);
    return dx;
}

sd_context *aux_net_context(sd_cl **cl)
{
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx) != SD_OK)
        return NULL;
    sd_context_set_cache_path(ctx, NULL);
    if (sd_cl_get(ctx, cl) != SD_OK) {
        fprintf(stderr, "%s\n", sd_context_errmsg(ctx));
        sd_context_free(ctx);
        return NULL;
    }
    return ctx;
}
