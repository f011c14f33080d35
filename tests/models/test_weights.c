/* Lazily uploaded device weights: dtype rules, laziness, missing tensors, patched views. */
#include "test.h"
#include "ml/loading/weights.h"
#include "runtime-opencl/ops.h"
#include <math.h>
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
    /* Serials identify a set even when a freed set's address is reused by a new one. */
    uint64_t first = sd_weights_serial(w);
    sd_weights_free(w);
    sd_weights *again_w = NULL;
    CHECK_EQ_INT(sd_weights_new(cl, st, "m.", SD_DTYPE_F16, &again_w), SD_OK);
    CHECK(again_w && sd_weights_serial(again_w) > first);
    sd_weights_free(again_w);
    sd_safetensors_close(st);
    free(path);
    sd_context_free(ctx);
}

/* A patcher that claims "proj.weight" and adds 1 to every element (on the host, for the test). */
static bool claims(void *user, const char *name)
{
    (*(int *)user)++;
    return strcmp(name, "proj.weight") == 0;
}

static sd_status plus_one(void *user, const char *name, const sd_dtensor *base, sd_dtensor **out)
{
    (void)user;
    (void)name;
    float host[15];
    sd_status st = sd_dtensor_download(base, host);
    for (int i = 0; i < 15; i++)
        host[i] += 1.0f;
    if (!st)
        st = sd_dtensor_new(base->cl, base->dtype, base->ndim, base->shape, out);
    if (!st)
        st = sd_dtensor_upload(*out, host);
    return st;
}

/* A patched view: unclaimed tensors are the base set's own, claimed ones are patched copies
 * counted in the view's device bytes; the base keeps its unpatched tensor. */
static void test_patched_view(void)
{
    sd_context *ctx;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    char *path = test_path(test_scratch_dir(), "p.safetensors");
    sd_st_entry entries[] = {
        {.name = "m.proj.weight", .dtype = SD_ST_F32, .ndim = 2, .shape = {3, 5}},
        {.name = "m.proj.bias", .dtype = SD_ST_F32, .ndim = 1, .shape = {3}},
    };
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, entries, 2, NULL, fill, NULL), SD_OK);
    sd_safetensors *st = NULL;
    sd_cl *cl;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    sd_weights *base, *view;
    int calls = 0;
    sd_weight_patcher p = {claims, plus_one, &calls};
    CHECK_EQ_INT(sd_weights_new(cl, st, "m.", SD_DTYPE_F32, &base), SD_OK);
    CHECK_EQ_INT(sd_weights_new_patched(base, &p, &view), SD_OK);
    const sd_dtensor *vb, *bb, *vw, *bw, *again;
    CHECK_EQ_INT(sd_weights_get(view, "proj.bias", &vb), SD_OK);
    CHECK_EQ_INT(sd_weights_get(base, "proj.bias", &bb), SD_OK);
    CHECK(vb == bb);
    CHECK_EQ_INT(sd_weights_get(view, "proj.weight", &vw), SD_OK);
    CHECK_EQ_INT(sd_weights_get(base, "proj.weight", &bw), SD_OK);
    CHECK(vw != bw);
    CHECK_EQ_INT(sd_weights_get(view, "proj.weight", &again), SD_OK);
    CHECK(again == vw);
    CHECK_EQ_INT(sd_weights_device_bytes(view), 15 * 4);
    CHECK_EQ_INT(sd_weights_device_bytes(base), 15 * 4 + 3 * 4);
    float a[15], b[15];
    CHECK_EQ_INT(sd_dtensor_download(vw, a), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(bw, b), SD_OK);
    CHECK_NEAR(a[7], b[7] + 1.0, 1e-6);
    CHECK(sd_weights_has(view, "proj.bias") && sd_weights_info(view, "proj.weight") != NULL);
    CHECK_EQ_INT(sd_weights_get(view, "proj.missing", &again), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor 'm.proj.missing' is missing");
    sd_weights_free(view);
    sd_weights_free(base);
    sd_safetensors_close(st);
    free(path);
    sd_context_free(ctx);
}

#ifdef SDFLOW_HAVE_DNNL
/* A new context in bf16 with a weight set (prefix "m.") over a file, written in the scratch
 * folder as `name`, holding one f32 tensor m.proj.weight of rows x cols. */
typedef struct bf16_set {
    sd_context *ctx;
    sd_cl *cl;
    char *path;
    sd_safetensors *st;
    sd_weights *w;
} bf16_set;

static void bf16_set_open(bf16_set *b, const char *name, int64_t rows, int64_t cols)
{
    memset(b, 0, sizeof *b);
    CHECK_EQ_INT(sd_context_new(&b->ctx), SD_OK);
    sd_context_set_cache_path(b->ctx, NULL);
    b->path = test_path(test_scratch_dir(), name);
    sd_st_entry entries[] = {{.name = "m.proj.weight", .dtype = SD_ST_F32, .ndim = 2, .shape = {rows, cols}}};
    CHECK_EQ_INT(sd_safetensors_write(b->ctx, b->path, entries, 1, NULL, fill, NULL), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(b->ctx, b->path, &b->st), SD_OK);
    CHECK_EQ_INT(sd_cl_get(b->ctx, &b->cl), SD_OK);
    CHECK_EQ_INT(sd_context_set_precision(b->ctx, "bf16"), SD_OK);
    CHECK_EQ_INT(sd_weights_new(b->cl, b->st, "m.", SD_DTYPE_F16, &b->w), SD_OK);
}

static void bf16_set_close(bf16_set *b)
{
    sd_weights_free(b->w);
    sd_safetensors_close(b->st);
    free(b->path);
    sd_context_free(b->ctx);
}

/* In bf16, a Linear weight's data is freed once oneDNN keeps its bf16 form: the set keeps handing
 * out that tensor (same results), a product that would need the data again fails clearly, and
 * fp32 or a patched view gets the data uploaded again from the file. */
static void test_bf16_release(void)
{
    bf16_set set;
    bf16_set_open(&set, "b.safetensors", 3, 5);
    sd_context *ctx = set.ctx;
    sd_cl *cl = set.cl;
    sd_weights *w = set.w, *view;
    const sd_dtensor *wt, *again;
    sd_dtensor *x = NULL, *y1 = NULL, *y2 = NULL, *bad = (sd_dtensor *)1;
    int64_t xs[2] = {2, 5};
    float xh[10], a[6], b[6], host[15];
    for (int i = 0; i < 10; i++)
        xh[i] = 0.125f * (float)i - 0.5f;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, xs, &x), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(x, xh), SD_OK);
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &wt), SD_OK);
    CHECK(!sd_dtensor_released(wt));
    CHECK_EQ_INT(sd_op_linear(cl, x, wt, NULL, SD_ACT_NONE, &y1), SD_OK);
    CHECK(sd_dtensor_released(wt) && wt->buf == NULL);
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &again), SD_OK);
    CHECK(again == wt);
    CHECK_EQ_INT(sd_op_linear(cl, x, again, NULL, SD_ACT_NONE, &y2), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(y1, a), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(y2, b), SD_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* another product shape needs the data: refused with a message, not read from nothing */
    CHECK_EQ_INT(sd_op_matmul(cl, y1, false, wt, false, NULL, SD_ACT_NONE, 1.0f, &bad), SD_ERR_INVALID);
    CHECK(bad == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "weight [3, 5] f16 was released after its bf16 conversion");
    /* fp32 gets the data back from the file */
    CHECK_EQ_INT(sd_context_set_precision(ctx, "fp32"), SD_OK);
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &again), SD_OK);
    CHECK(!sd_dtensor_released(again));
    CHECK_EQ_INT(sd_dtensor_download(again, host), SD_OK);
    CHECK_NEAR(host[4], 0.5 + 4 * 0.25, 1e-6);
    /* a patched view in bf16 reads the base's data, uploaded again after another release */
    CHECK_EQ_INT(sd_context_set_precision(ctx, "bf16"), SD_OK);
    sd_dtensor_free(y2);
    y2 = NULL;
    CHECK_EQ_INT(sd_op_linear(cl, x, again, NULL, SD_ACT_NONE, &y2), SD_OK);
    CHECK(sd_dtensor_released(again));
    int calls = 0;
    sd_weight_patcher p = {claims, plus_one, &calls};
    CHECK_EQ_INT(sd_weights_new_patched(w, &p, &view), SD_OK);
    const sd_dtensor *vw;
    CHECK_EQ_INT(sd_weights_get(view, "proj.weight", &vw), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(vw, host), SD_OK);
    CHECK_NEAR(host[4], 1.5 + 4 * 0.25, 1e-6);
    sd_weights_free(view);
    sd_dtensor_free(x), sd_dtensor_free(y1), sd_dtensor_free(y2);
    bf16_set_close(&set);
}

/* oneDNN may lay a weight out differently for products of different rows (a 64 x 77 one: 48-wide
 * blocks at 16 rows, 64-wide at 2): once the data is released, the kept form is relaid for the
 * other shape instead of the product failing, with the same results. */
static void test_bf16_release_rows(void)
{
    bf16_set set;
    bf16_set_open(&set, "rows.safetensors", 77, 64);
    sd_cl *cl = set.cl;
    sd_weights *w = set.w;
    const sd_dtensor *wt;
    sd_dtensor *x16 = NULL, *x2 = NULL, *y16 = NULL, *y2 = NULL;
    int64_t s16[2] = {16, 64}, s2[2] = {2, 64};
    float xh[16 * 64], a[16 * 77], b[2 * 77];
    for (int i = 0; i < 16 * 64; i++)
        xh[i] = 0.0078125f * (float)(i % 97) - 0.375f;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, s16, &x16), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, s2, &x2), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(x16, xh), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(x2, xh), SD_OK);
    CHECK_EQ_INT(sd_weights_get(w, "proj.weight", &wt), SD_OK);
    CHECK_EQ_INT(sd_op_linear(cl, x16, wt, NULL, SD_ACT_NONE, &y16), SD_OK);
    CHECK(sd_dtensor_released(wt));
    CHECK_EQ_INT(sd_op_linear(cl, x2, wt, NULL, SD_ACT_NONE, &y2), SD_OK);
    if (y16 && y2) {
        CHECK_EQ_INT(sd_dtensor_download(y16, a), SD_OK);
        CHECK_EQ_INT(sd_dtensor_download(y2, b), SD_OK);
        for (int i = 0; i < 2 * 77; i++)
            CHECK_NEAR(b[i], a[i], 1e-4 * (fabs(a[i]) + 1.0));
    }
    sd_dtensor_free(x16), sd_dtensor_free(x2), sd_dtensor_free(y16), sd_dtensor_free(y2);
    bf16_set_close(&set);
}
#endif

int main(void)
{
    RUN(test_weights);
    RUN(test_patched_view);
#ifdef SDFLOW_HAVE_DNNL
    RUN(test_bf16_release);
    RUN(test_bf16_release_rows);
#endif
    return test_summary("test_weights");
}
