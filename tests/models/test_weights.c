/* Lazily uploaded device weights: dtype rules, laziness, missing tensors. */
#include "test.h"
#include "models/weights.h"
#include <stdlib.h>
#include <string.h>

static sd_status fill(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    float *f = dst;
    for (size_t i = 0; i < nbytes / 4; i++)
        f[i] = (float)(index + 1) * 0.5f + (float)i * 0.25f;
    return SD_OK;
}

static void test_weights(void)
{
    sd_context *ctx;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    char *path = test_path(test_scratch_dir(), "w.safetensors");
    sd_st_entry entries[] = {
        {.name = "m.proj.weight", .dtype = SD_ST_F32, .ndim = 2, .shape = {3, 5}},
        {.name = "m.proj.bias", .dtype = SD_ST_F32, .ndim = 1, .shape = {3}},
    };
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, entries, 2, NULL, fill, NULL), SD_OK);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    sd_weights *w;
    CHECK_EQ_INT(sd_weights_new(cl, st, "m.", SD_DTYPE_F16, &w), SD_OK);
    CHECK_EQ_INT(sd_weights_device_bytes(w), 0);
    CHECK(sd_weights_has(w, "proj.weight") && !sd_weights_has(w, "proj.nope"));
    const sd_dtensor *wt, *b, *again;
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &wt), SD_OK);
    CHECK(wt->dtype == SD_DTYPE_F16 && wt->ndim == 2 && wt->shape[1] == 5);
    CHECK_EQ_INT(sd_weights_getf(w, &b, "proj.%s", "bias"), SD_OK);
    CHECK(b->dtype == SD_DTYPE_F32);
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &again), SD_OK);
    CHECK(again == wt);
    CHECK_EQ_INT(sd_weights_device_bytes(w), 15 * 2 + 3 * 4);
    float host[15];
    CHECK_EQ_INT(sd_dtensor_download(wt, host), SD_OK);
    CHECK_NEAR(host[4], 0.5 + 4 * 0.25, 1e-3); /* f16 storage of 1.5 is exact */
    const sd_dtensor *f32;
    CHECK_EQ_INT(sd_weights_get_f32(w, "proj.weight", &f32), SD_OK);
    CHECK(f32->dtype == SD_DTYPE_F32);
    CHECK_EQ_INT(sd_weights_get(w, "proj.missing", &again), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor 'm.proj.missing' is missing");
    sd_weights_free(w);
    sd_safetensors_close(st);
    free(path);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_weights);
    return test_summary("test_weights");
}
