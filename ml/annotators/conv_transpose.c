/* Transposed-convolution weights as plain ones. */
#include "ml/annotators/conv_transpose.h"
#include <stdlib.h>

sd_status sd_conv_transpose_upload(sd_cl *cl, const sd_safetensors *st, const char *name, sd_dtensor **out)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    int64_t ci = t->shape[0], co = t->shape[1], k = t->shape[2];
    float *src = malloc(sizeof *src * t->numel), *dst = malloc(sizeof *dst * t->numel);
    sd_status s = !src || !dst ? sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
    if (!s)
        s = sd_safetensors_read_f32(cl->ctx, st, t, src, t->numel);
    for (int64_t i = 0; !s && i < ci; i++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t y = 0; y < k; y++)
                for (int64_t x = 0; x < k; x++)
                    dst[((o * ci + i) * k + y) * k + x] = src[((i * co + o) * k + (k - 1 - y)) * k + (k - 1 - x)];
    if (!s && !(s = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){co, ci, k, k}, out)) &&
        (s = sd_dtensor_upload(*out, dst))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(src);
    free(dst);
    return s;
}
