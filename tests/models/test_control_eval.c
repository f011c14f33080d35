/* ml/adapters/control_eval.h: the residuals sd_control_eval_call assembles for one model call equal
 * the ControlNet run directly on the batch ComfyUI would build (x and the hint cycled over the
 * latent batch and the entries, the entry's context rows), bit for bit; entries without an
 * active ControlNet get zeros; nothing active gives no residuals; a chain sums its links; the
 * percent range follows ComfyUI's percent_to_sigma. */
#include "test.h"
#include "support/ops_check.h"
#include "ml/adapters/control_eval.h"
#include "ml/families/sd1_layout.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, LH = 8, LW = 8, TOKENS = 7, CTX = 64, N_RES = 7 };

static sd_controlnet *g_cn;
static sd_value *g_img2, *g_img1; /* hint batches of 2 (48x40) and 1 (64x64) */
static float g_x[B * 4 * LH * LW];
static float g_x2[2 * B * 4 * LH * LW]; /* g_x for each of two entries, as the sampler passes it */
static sd_dtensor *g_ctx; /* [2 entries * B, TOKENS, CTX] */
static sd_model_sampling g_ms;

static sd_value *image(int64_t b, int64_t h, int64_t w, unsigned seed)
{
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = v ? sd_value_add_tensor(v, "image", 4, (const int64_t[]){b, h, w, 3}) : NULL;
    float *r = ops_random((size_t)(b * h * w * 3), 0.0f, 1.0f, seed);
    if (t && r)
        memcpy(t->data, r, (size_t)(b * h * w * 3) * sizeof *r);
    free(r);
    return v;
}

static bool setup(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg;
    char *path = test_path(test_scratch_dir(), "cn.safetensors");
    bool ok = sd_checkpoint_preset("tiny", &cfg) && !sd_controlnet_write_random(ctx, path, &cfg.unet, false, SD_ST_F32, 11) &&
              !sd_controlnet_open(ctx, path, SD_DTYPE_F32, &g_cn);
    free(path);
    g_img2 = image(2, 48, 40, 5);
    g_img1 = image(1, 64, 64, 6);
    float *x = ops_random(sizeof g_x / sizeof *g_x, -1.0f, 1.0f, 7);
    if (x) {
        memcpy(g_x, x, sizeof g_x);
        memcpy(g_x2, x, sizeof g_x);
        memcpy(g_x2 + B * 4 * LH * LW, x, sizeof g_x);
    }
    free(x);
    g_ctx = ops_upload_random(-1.0f, 1.0f, 8, 3, (const int64_t[]){2 * B, TOKENS, CTX});
    sd_model_sampling_sd1(&g_ms);
    return ok && g_img2 && g_img1 && x && g_ctx;
}

/* The ControlNet run directly on `items` items starting at item `first` of the call (entry
 * e = item / B, latent b = item % B; hint item b % hint batch). */
static void direct(const sd_value *img, size_t first, size_t items, float strength, float timestep, sd_dtensor **outs)
{
    const sd_tensor *t = sd_value_tensor(img, "image");
    float *hint = NULL;
    CHECK_EQ_INT(sd_control_hint_resize(ops_cl()->ctx, t, 8 * LW, 8 * LH, &hint), SD_OK);
    size_t xi = 4 * LH * LW, hi = 3 * 64 * LH * LW;
    float *xs = malloc(items * xi * sizeof *xs), *hs = malloc(items * hi * sizeof *hs), ts[2 * B];
    for (size_t i = 0; i < items; i++) {
        size_t b = (first + i) % B;
        memcpy(xs + i * xi, g_x + b * xi, xi * sizeof *xs);
        memcpy(hs + i * hi, hint + (b % (size_t)t->shape[0]) * hi, hi * sizeof *hs);
        ts[i] = timestep;
    }
    sd_dtensor *x = ops_upload(xs, 4, (const int64_t[]){(int64_t)items, 4, LH, LW});
    sd_dtensor *h = ops_upload(hs, 4, (const int64_t[]){(int64_t)items, 3, 8 * LH, 8 * LW});
    sd_dtensor *c = NULL;
    CHECK_EQ_INT(sd_op_slice(ops_cl(), g_ctx, 0, (int64_t)first, (int64_t)items, &c), SD_OK);
    CHECK_EQ_INT(sd_controlnet_forward(g_cn, x, h, ts, c, NULL, strength, outs), SD_OK);
    sd_dtensor_free(x);
    sd_dtensor_free(h);
    sd_dtensor_free(c);
    free(xs);
    free(hs);
    free(hint);
}

/* Residual i of the call, items [first, first + n), against want (or zeros when want is NULL). */
static double compare(const sd_dtensor *got, size_t first, size_t n, const sd_dtensor *want)
{
    float *g = ops_download(got), *w = want ? ops_download(want) : NULL;
    size_t item = got->numel / (size_t)got->shape[0];
    double worst = 0;
    for (size_t k = 0; k < n * item; k++)
        worst = fmax(worst, fabs(g[first * item + k] - (w ? w[k] : 0.0f)));
    free(g);
    free(w);
    return worst;
}

static void free_all(sd_dtensor **t, int n)
{
    for (int i = 0; i < n; i++)
        sd_dtensor_free(t[i]), t[i] = NULL;
}

static void test_batch_and_zeros(void)
{
    sd_control_link *l = sd_control_link_new(g_cn, g_img2, 0.5, 0.0, 1.0, NULL);
    sd_control_eval *ev = NULL;
    CHECK_EQ_INT(sd_control_eval_new(ops_cl()->ctx, &g_ms, &ev), SD_OK);
    float sigma = 3.0f, timestep = (float)sd_model_sampling_timestep(&g_ms, sigma);
    sd_control_residuals res;
    const sd_unet_control *control = NULL;
    sd_dtensor *want[N_RES] = {0};

    /* Both entries with the same ControlNet: one run over 4 items. */
    const sd_control_link *both[2] = {l, l};
    CHECK_EQ_INT(sd_control_eval_call(ev, both, 2, B, g_x2, LH, LW, sigma, timestep, g_ctx, NULL, &res, &control), SD_OK);
    CHECK(control == &res.control && control->n_skips == N_RES - 1);
    direct(g_img2, 0, 2 * B, 0.5f, timestep, want);
    for (int i = 0; control && i < N_RES; i++)
        CHECK_MSG(compare(res.tensors[i], 0, 2 * B, want[i]) == 0.0, "residual %d differs", i);
    free_all(want, N_RES);
    sd_control_residuals_free(&res);

    /* Only the second entry: zeros for the first's items. */
    const sd_control_link *second[2] = {NULL, l};
    CHECK_EQ_INT(sd_control_eval_call(ev, second, 2, B, g_x2, LH, LW, sigma, timestep, g_ctx, NULL, &res, &control), SD_OK);
    CHECK(control != NULL);
    direct(g_img2, B, B, 0.5f, timestep, want);
    for (int i = 0; control && i < N_RES; i++) {
        CHECK_EQ_INT(res.tensors[i]->shape[0], 2 * B);
        CHECK_MSG(compare(res.tensors[i], 0, B, NULL) == 0.0, "residual %d: first entry not zero", i);
        CHECK_MSG(compare(res.tensors[i], B, B, want[i]) == 0.0, "residual %d: second entry differs", i);
    }
    free_all(want, N_RES);
    sd_control_residuals_free(&res);

    /* None: no residuals at all. */
    const sd_control_link *none[2] = {NULL, NULL};
    CHECK_EQ_INT(sd_control_eval_call(ev, none, 2, B, g_x2, LH, LW, sigma, timestep, g_ctx, NULL, &res, &control), SD_OK);
    CHECK(control == NULL && res.tensors == NULL);
    sd_control_eval_free(ev);
    sd_control_link_unref(l);
}

/* A chain sums its links (oldest first), each with its own hint and strength. */
static void test_chain(void)
{
    sd_control_link *a = sd_control_link_new(g_cn, g_img2, 0.5, 0.0, 1.0, NULL);
    sd_control_link *b = sd_control_link_new(g_cn, g_img1, 1.25, 0.0, 1.0, a);
    CHECK(sd_control_link_prev(b) == a);
    sd_control_eval *ev = NULL;
    CHECK_EQ_INT(sd_control_eval_new(ops_cl()->ctx, &g_ms, &ev), SD_OK);
    float sigma = 1.5f, timestep = (float)sd_model_sampling_timestep(&g_ms, sigma);
    sd_control_residuals res;
    const sd_unet_control *control = NULL;
    const sd_control_link *chains[2] = {b, b};
    CHECK_EQ_INT(sd_control_eval_call(ev, chains, 2, B, g_x2, LH, LW, sigma, timestep, g_ctx, NULL, &res, &control), SD_OK);
    sd_dtensor *ra[N_RES] = {0}, *rb[N_RES] = {0};
    direct(g_img2, 0, 2 * B, 0.5f, timestep, ra);
    direct(g_img1, 0, 2 * B, 1.25f, timestep, rb);
    for (int i = 0; control && i < N_RES; i++) {
        sd_dtensor *sum = NULL;
        CHECK_EQ_INT(sd_op_binary(ops_cl(), SD_BINARY_ADD, ra[i], rb[i], &sum), SD_OK);
        CHECK_MSG(compare(res.tensors[i], 0, 2 * B, sum) == 0.0, "residual %d is not the sum", i);
        sd_dtensor_free(sum);
    }
    free_all(ra, N_RES);
    free_all(rb, N_RES);
    sd_control_residuals_free(&res);
    sd_control_eval_free(ev);
    sd_control_link_unref(b); /* drops b's reference to a as well */
    sd_control_link_unref(a);
}

/* start 50%, end 80%: active for sigmas between percent_to_sigma(0.5) and percent_to_sigma(0.8). */
static void test_percent_range(void)
{
    sd_control_link *l = sd_control_link_new(g_cn, g_img1, 1.0, 0.5, 0.8, NULL);
    sd_control_eval *ev = NULL;
    CHECK_EQ_INT(sd_control_eval_new(ops_cl()->ctx, &g_ms, &ev), SD_OK);
    float hi = sd_model_sampling_sigma(&g_ms, (float)((1.0 - 0.5) * 999.0));
    float lo = sd_model_sampling_sigma(&g_ms, (float)((1.0 - 0.8) * 999.0));
    const float sigmas[] = {14.6f, hi * 1.01f, hi, 0.5f * (hi + lo), lo, lo * 0.99f, 0.03f};
    const bool active[] = {false, false, true, true, true, false, false};
    const sd_control_link *chains[2] = {l, NULL};
    for (size_t k = 0; k < sizeof sigmas / sizeof *sigmas; k++) {
        sd_control_residuals res;
        const sd_unet_control *control = &res.control; /* must be overwritten */
        CHECK_EQ_INT(sd_control_eval_call(ev, chains, 2, B, g_x2, LH, LW, sigmas[k], 500.0f, g_ctx, NULL, &res, &control), SD_OK);
        CHECK_MSG((control != NULL) == active[k], "sigma %g: active %d, expected %d", sigmas[k], control != NULL,
                  active[k]);
        sd_control_residuals_free(&res);
    }
    sd_control_eval_free(ev);
    sd_control_link_unref(l);
}

/* A hint whose channels the ControlNet does not take: an error naming the file. */
static void test_bad_hint(void)
{
    sd_value *gray = sd_value_new(SD_TYPE_IMAGE);
    sd_value_add_tensor(gray, "image", 4, (const int64_t[]){1, 16, 16, 1});
    sd_control_link *l = sd_control_link_new(g_cn, gray, 1.0, 0.0, 1.0, NULL);
    sd_control_eval *ev = NULL;
    CHECK_EQ_INT(sd_control_eval_new(ops_cl()->ctx, &g_ms, &ev), SD_OK);
    sd_control_residuals res;
    const sd_unet_control *control = NULL;
    const sd_control_link *chains[2] = {l, l};
    CHECK_EQ_INT(sd_control_eval_call(ev, chains, 2, B, g_x2, LH, LW, 2.0f, 500.0f, g_ctx, NULL, &res, &control), SD_ERR_INVALID);
    CHECK(control == NULL && res.tensors == NULL);
    char *want = sd_strfmt("ControlNet hint image has 1 channels, %s takes 3", sd_controlnet_path(g_cn));
    CHECK_STR_EQ(sd_context_errmsg(ops_cl()->ctx), want);
    free(want);
    sd_control_eval_free(ev);
    sd_control_link_unref(l);
    sd_value_unref(gray);
}

/* sd_cond_copy: tensors and attributes copied, the chains shared and kept alive by the copy. */
static void test_cond_copy(void)
{
    sd_value *cond = sd_value_new(SD_TYPE_CONDITIONING);
    sd_tensor *t = sd_value_add_tensor(cond, "cond.0", 3, (const int64_t[]){1, 2, 3});
    sd_value_add_tensor(cond, "cond.1", 3, (const int64_t[]){1, 2, 3});
    for (int i = 0; i < 6; i++)
        t->data[i] = (float)i;
    cond->attrs = json_pack("{s:[{s:f},{s:f}]}", "entries", "strength", 1.0, "strength", 0.5);
    sd_cond_controls *c = sd_cond_controls_new(2);
    c->links[1] = sd_control_link_new(g_cn, g_img1, 1.0, 0.0, 1.0, NULL);
    c->to_uncond[1] = true;
    cond->handle = c;
    cond->handle_free = sd_cond_controls_free;
    const sd_control_link *l = c->links[1];
    sd_value *copy = sd_cond_copy(cond);
    CHECK(copy != NULL);
    sd_value_unref(cond); /* the copy keeps the chain alive */
    if (copy) {
        bool flag = false;
        CHECK(sd_cond_control(copy, 0, NULL) == NULL);
        CHECK(sd_cond_control(copy, 1, &flag) == l && flag);
        const sd_tensor *ct = sd_value_tensor(copy, "cond.0");
        CHECK(ct && ct->data[5] == 5.0f && sd_value_tensor(copy, "cond.1"));
        CHECK(json_real_value(json_object_get(json_array_get(json_object_get(copy->attrs, "entries"), 1), "strength")) ==
              0.5);
        CHECK(sd_control_link_prev(l) == NULL);
    }
    sd_value_unref(copy);
}

int main(void)
{
    if (!ops_cl() || !setup())
        return 1;
    RUN(test_batch_and_zeros);
    RUN(test_chain);
    RUN(test_percent_range);
    RUN(test_bad_hint);
    RUN(test_cond_copy);
    sd_dtensor_free(g_ctx);
    sd_value_unref(g_img2);
    sd_value_unref(g_img1);
    sd_controlnet_unref(g_cn);
    ops_cl_release();
    return test_summary("test_control_eval");
}
