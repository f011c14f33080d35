/* RRDBNet (ml/upscale/esrgan.h) against a PyTorch RRDBNet (goldens from
 * tests/reference/make_esrgan_goldens.py on the same tiny random files): x4, pixel-unshuffled
 * x2 and x1, f32 and f16 weights; the old and BSRGAN layouts give the new layout's output; the
 * architecture read from shapes; the tiled upscale against a whole-image run (no seams); bad
 * files named with what was found. */
#include "test.h"
#include "support/golden.h"
#include "ml/upscale/esrgan.h"
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;

/* Writes a tiny random RRDBNet file (as the reference script's tool call) and opens it. */
static sd_safetensors *make(const char *name, sd_esrgan_layout layout, int in_nc, int blocks, int seed)
{
    sd_esrgan_config c = {.layout = layout, .in_nc = in_nc, .out_nc = 3, .nf = 8, .gc = 4, .blocks = blocks, .n_up = 2};
    char *path = test_path(test_scratch_dir(), name);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_esrgan_write_random(ctx, path, &c, SD_ST_F32, (uint64_t)seed), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    free(path);
    return st;
}

/* Runs the model on a host NCHW image [1, 3, h, w]; returns a malloc'd output and its size. */
static float *forward(sd_esrgan *m, const float *x, int64_t h, int64_t w, int64_t *oh, int64_t *ow)
{
    int64_t shape[4] = {1, 3, h, w};
    sd_dtensor *in = NULL, *out = NULL;
    float *y = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &in), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(in, x), SD_OK);
    sd_status st = sd_esrgan_forward(m, in, &out);
    CHECK_MSG(st == SD_OK, "forward: %s", sd_context_errmsg(ctx));
    if (out) {
        *oh = out->shape[2];
        *ow = out->shape[3];
        y = malloc(out->numel * sizeof *y);
        CHECK_EQ_INT(sd_dtensor_download(out, y), SD_OK);
    }
    sd_dtensor_free(in);
    sd_dtensor_free(out);
    return y;
}

/* One golden case: file seed and config as in make_esrgan_goldens.py. */
static void golden_case(const char *name, int in_nc, int blocks, int seed, int64_t h, int64_t w, int scale,
                        sd_dtype dtype, double tol)
{
    char file[64], gin[64], gout[64];
    snprintf(file, sizeof file, "%s.safetensors", name);
    snprintf(gin, sizeof gin, "esrgan_%s_in.f32", name);
    snprintf(gout, sizeof gout, "esrgan_%s_out.f32", name);
    sd_safetensors *st = make(file, SD_ESRGAN_NEW, in_nc, blocks, seed);
    sd_esrgan *m = NULL;
    CHECK_EQ_INT(sd_esrgan_new(cl, st, dtype, &m), SD_OK);
    size_t n_in = (size_t)(3 * h * w), n_out = n_in * (size_t)(scale * scale);
    float *x = test_read_golden(gin, n_in * 4), *ref = test_read_golden(gout, n_out * 4);
    int64_t oh = 0, ow = 0;
    float *y = m && x && ref ? forward(m, x, h, w, &oh, &ow) : NULL;
    CHECK_EQ_INT(oh, h * scale);
    CHECK_EQ_INT(ow, w * scale);
    if (y && oh == h * scale && ow == w * scale) {
        double d = test_max_abs_diff(y, ref, n_out);
        CHECK_MSG(d <= tol, "%s %s: max abs diff %g > %g", name, sd_dtype_name(dtype), d, tol);
        fprintf(stderr, "  %s, %s weights: max abs diff %.3g\n", name, sd_dtype_name(dtype), d);
    }
    free(x);
    free(ref);
    free(y);
    sd_esrgan_free(m);
    sd_safetensors_close(st);
}

/* fp32 weights: 1e-6 on outputs of range ~[-0.13, 0.15] (measured 7.5e-8); f16-stored
 * weights: 1e-4 (measured 2.3e-5). */
static void test_goldens(void)
{
    golden_case("x4", 3, 2, 3, 16, 13, 4, SD_DTYPE_F32, 1e-6);
    golden_case("x2", 12, 1, 4, 11, 14, 2, SD_DTYPE_F32, 1e-6);
    golden_case("x1", 48, 1, 5, 9, 10, 1, SD_DTYPE_F32, 1e-6);
    golden_case("x4", 3, 2, 3, 16, 13, 4, SD_DTYPE_F16, 1e-4);
}

static void test_layouts(void)
{
    /* The same seed in the three layouts is the same network: identical outputs. */
    static const sd_esrgan_layout layouts[] = {SD_ESRGAN_NEW, SD_ESRGAN_OLD, SD_ESRGAN_BSRGAN};
    static const char *const files[] = {"l_new.safetensors", "l_old.safetensors", "l_bsrgan.safetensors"};
    float x[3 * 7 * 9];
    for (int i = 0; i < 3 * 7 * 9; i++)
        x[i] = (float)((i * 37) % 101) / 100.0f;
    float *first = NULL;
    for (int l = 0; l < 3; l++) {
        sd_safetensors *st = make(files[l], layouts[l], 3, 3, 11);
        sd_esrgan_config c = {0};
        CHECK_EQ_INT(sd_esrgan_inspect(ctx, st, &c), SD_OK);
        CHECK(c.layout == layouts[l]);
        CHECK(c.blocks == 3 && c.nf == 8 && c.gc == 4 && c.in_nc == 3 && c.out_nc == 3 && c.n_up == 2);
        CHECK(c.shuffle == 1 && c.scale == 4 && c.image_channels == 3);
        sd_esrgan *m = NULL;
        CHECK_EQ_INT(sd_esrgan_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
        int64_t oh, ow;
        float *y = m ? forward(m, x, 7, 9, &oh, &ow) : NULL;
        if (l == 0)
            first = y;
        else if (y && first) {
            CHECK_MSG(test_max_abs_diff(y, first, (size_t)(3 * 28 * 36)) == 0.0, "%s differs from the new layout",
                      files[l]);
            free(y);
        }
        sd_esrgan_free(m);
        sd_safetensors_close(st);
    }
    free(first);
    /* Old layout at other scales: model.<3 n_up + 4> is the last conv. */
    int ups[3] = {0, 1, 3}, scales[3] = {1, 2, 8};
    for (int i = 0; i < 3; i++) {
        sd_esrgan_config c = {.layout = SD_ESRGAN_OLD, .in_nc = 3, .out_nc = 3, .nf = 4, .gc = 2, .blocks = 1,
                              .n_up = ups[i]};
        char *path = test_path(test_scratch_dir(), "scales.safetensors");
        sd_safetensors *st = NULL;
        CHECK_EQ_INT(sd_esrgan_write_random(ctx, path, &c, SD_ST_F16, 1), SD_OK);
        CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
        char last[32];
        snprintf(last, sizeof last, "model.%d.weight", 3 * ups[i] + 4);
        CHECK(st && sd_safetensors_find(st, last));
        sd_esrgan_config got = {0};
        CHECK_EQ_INT(sd_esrgan_inspect(ctx, st, &got), SD_OK);
        CHECK_EQ_INT(got.scale, scales[i]);
        sd_safetensors_close(st);
        free(path);
    }
}

/* The tiled upscale of a 40x56 image (2 x 3 tiles of 32 overlapping by 16) against one
 * whole-image run. Tiles see zero padding at their borders where the whole run sees neighbours;
 * the feathered blend keeps the difference below one 8-bit level everywhere (measured 2.2e-3 on
 * outputs of range ~0.3) and smooth: no jump between neighbouring pixels of the difference
 * above one level (measured 2.9e-3), no column or row whose mean difference stands out
 * (measured 7.6e-4 at worst, 1e-4 on average). */
static void test_tiled(void)
{
    sd_safetensors *st = make("tiled.safetensors", SD_ESRGAN_NEW, 3, 1, 21);
    sd_esrgan *m = NULL;
    CHECK_EQ_INT(sd_esrgan_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
    enum { H = 40, W = 56, S = 4, OH = H * S, OW = W * S, TILE = 32, OVERLAP = 16 };
    float *img = malloc(H * W * 3 * sizeof *img), *whole = malloc(OH * OW * 3 * sizeof *whole);
    float *tiled = malloc(OH * OW * 3 * sizeof *tiled);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                img[(y * W + x) * 3 + c] = 0.5f + 0.4f * sinf(0.31f * x + 0.17f * y + 2.0f * c) * cosf(0.23f * y - x * 0.05f);
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, 64, 8, NULL, NULL, whole), SD_OK);
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, TILE, OVERLAP, NULL, NULL, tiled), SD_OK);
    /* Worst difference, and the mean difference per output column and row: a seam would show as
     * a spike along a tile border. */
    double worst = 0, col_max = 0, col_mean = 0, row_max = 0;
    for (int x = 0; x < OW; x++) {
        double sum = 0;
        for (int y = 0; y < OH; y++)
            for (int c = 0; c < 3; c++) {
                double d = fabs(tiled[(y * OW + x) * 3 + c] - whole[(y * OW + x) * 3 + c]);
                sum += d;
                worst = d > worst ? d : worst;
            }
        sum /= OH * 3;
        col_mean += sum / OW;
        col_max = sum > col_max ? sum : col_max;
    }
    for (int y = 0; y < OH; y++) {
        double sum = 0;
        for (int x = 0; x < OW * 3; x++)
            sum += fabs(tiled[y * OW * 3 + x] - whole[y * OW * 3 + x]);
        sum /= OW * 3;
        row_max = sum > row_max ? sum : row_max;
    }
    double jump = 0;
    for (int y = 0; y < OH; y++)
        for (int x = 0; x + 1 < OW; x++)
            for (int c = 0; c < 3; c++) {
                double d0 = tiled[(y * OW + x) * 3 + c] - whole[(y * OW + x) * 3 + c];
                double d1 = tiled[(y * OW + x + 1) * 3 + c] - whole[(y * OW + x + 1) * 3 + c];
                jump = fabs(d1 - d0) > jump ? fabs(d1 - d0) : jump;
            }
    fprintf(stderr, "  tiled vs whole: max %.3g, largest jump %.3g, column mean %.3g (worst column %.3g, row %.3g)\n",
            worst, jump, col_mean, col_max, row_max);
    CHECK_MSG(worst < 1.0 / 255, "tiled vs whole: max abs diff %g", worst);
    CHECK_MSG(jump < 1.0 / 255, "tiled vs whole: the difference jumps by %g between neighbours", jump);
    CHECK_MSG(col_max < 1.5e-3 && row_max < 1.5e-3, "seam: worst column %g, worst row %g", col_max, row_max);
    /* An image within one tile runs whole: identical to the forward pass. */
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, 61, 60, NULL, NULL, tiled), SD_OK);
    CHECK(test_max_abs_diff(tiled, whole, OH * OW * 3) == 0.0);
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, 16, 16, NULL, NULL, tiled), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "ESRGAN upscale: overlap 16 must be below the tile size 16");
    free(img);
    free(whole);
    free(tiled);
    sd_esrgan_free(m);
    sd_safetensors_close(st);
}

/* Out of device memory: the tile is halved until it fits (ComfyUI's retry), and the result is
 * the upscale at the tile that fitted. The device's maximum allocation is lowered to 8 MB: the
 * conv scratch of a 64-pixel tile needs 19 MB, a 32-pixel tile 5 MB. */
static void test_fit(void)
{
    sd_safetensors *st = make("fit.safetensors", SD_ESRGAN_NEW, 3, 1, 31);
    sd_esrgan *m = NULL;
    CHECK_EQ_INT(sd_esrgan_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
    enum { H = 50, W = 70, N = H * 4 * W * 4 * 3 };
    float *img = malloc(H * W * 3 * sizeof *img), *want = malloc(N * sizeof *want), *got = malloc(N * sizeof *got);
    for (int i = 0; i < H * W * 3; i++)
        img[i] = (float)((i * 7919) % 1000) / 1000.0f;
    /* On the OpenCL kernels (the GEMM's 64 MB chunked scratch; oneDNN's fp32 route, where
     * sd_cl_host_fp32 is on, needs far less and fits). */
    bool host = cl->host_fp32;
    cl->host_fp32 = false;
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, 32, 8, NULL, NULL, want), SD_OK);
    cl_ulong max_alloc = cl->max_alloc;
    sd_cl_pool_trim(cl);
    cl->max_alloc = 8u << 20;
    int64_t tile = 64;
    CHECK_EQ_INT(sd_esrgan_upscale(m, img, H, W, tile, 8, NULL, NULL, got), SD_ERR_LIMIT);
    CHECK_EQ_INT(sd_esrgan_upscale_fit(m, img, H, W, &tile, 16, 8, NULL, NULL, got), SD_OK);
    CHECK_EQ_INT(tile, 32);
    CHECK(test_max_abs_diff(got, want, N) == 0.0);
    /* Nothing fits above the smallest tile allowed: the device's error is returned. */
    tile = 64;
    CHECK_EQ_INT(sd_esrgan_upscale_fit(m, img, H, W, &tile, 48, 8, NULL, NULL, got), SD_ERR_LIMIT);
    CHECK_EQ_INT(tile, 64);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "above the device's maximum allocation of 8388608 bytes");
    cl->max_alloc = max_alloc;
    cl->host_fp32 = host;
    free(img);
    free(want);
    free(got);
    sd_esrgan_free(m);
    sd_safetensors_close(st);
}

static sd_status fill_ones(void *user, size_t index, void *dst, size_t nbytes)
{
    for (size_t i = 0; i + 4 <= nbytes; i += 4)
        memcpy((char *)dst + i, &(float){1.0f}, 4);
    return SD_OK;
}

/* Writes a file of 4x4 F32 tensors with the given names. */
static char *write_names(const char *file, const char *const *names, size_t n)
{
    sd_st_entry e[8];
    for (size_t i = 0; i < n; i++)
        e[i] = (sd_st_entry){.name = names[i], .dtype = SD_ST_F32, .ndim = 2, .shape = {4, 4}};
    char *path = test_path(test_scratch_dir(), file);
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n, NULL, fill_ones, NULL), SD_OK);
    return path;
}

static sd_status inspect_file(const char *path)
{
    sd_safetensors *st = NULL;
    sd_esrgan_config c;
    sd_status s = sd_safetensors_open(ctx, path, &st);
    if (!s)
        s = sd_esrgan_inspect(ctx, st, &c);
    sd_safetensors_close(st);
    return s;
}

static void test_bad_files(void)
{
    char msg[600];
    /* A SwinIR file: unknown layout, with what was found. */
    const char *swin[] = {"layers.0.residual_group.blocks.0.norm1.weight", "conv_first.weight", "upsample.0.weight"};
    char *path = write_names("swinir.safetensors", swin, 3);
    CHECK_EQ_INT(inspect_file(path), SD_ERR_INVALID);
    snprintf(msg, sizeof msg,
             "%s: unknown upscale model layout: not an ESRGAN/RRDBNet file (looked for conv_first + "
             "body.0.rdb1.conv1, conv_first + RRDB_trunk.0.RDB1.conv1, or model.0 + model.1.sub.0.RDB1.conv1.0); "
             "found 3 tensors: 'layers.0.residual_group.blocks.0.norm1.weight', 'conv_first.weight', "
             "'upsample.0.weight'",
             path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(path);
    /* ESRGAN+ is refused by name. */
    const char *plus[] = {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"};
    path = write_names("plus.safetensors", plus, 3);
    CHECK_EQ_INT(inspect_file(path), SD_ERR_INVALID);
    snprintf(msg, sizeof msg, "%s: ESRGAN+ files (RDB conv1x1 paths) are not supported", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(path);
    /* The right names with wrong shapes: the first misshapen tensor is named. */
    const char *fake[] = {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight"};
    path = write_names("fake.safetensors", fake, 3);
    CHECK_EQ_INT(inspect_file(path), SD_ERR_INVALID);
    snprintf(msg, sizeof msg, "%s: ESRGAN convolution weights must be 4-D", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(path);
    /* A real file with one tensor left out: named with its expected shape. */
    sd_safetensors *st = make("full.safetensors", SD_ESRGAN_NEW, 3, 1, 2);
    size_t n = sd_safetensors_count(st);
    sd_st_entry *e = calloc(n, sizeof *e);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (strcmp(t->name, "body.0.rdb2.conv3.bias") == 0)
            continue;
        e[k] = (sd_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(e[k].shape, t->shape, sizeof t->shape);
        k++;
    }
    path = test_path(test_scratch_dir(), "missing.safetensors");
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, k, NULL, fill_ones, NULL), SD_OK);
    CHECK_EQ_INT(inspect_file(path), SD_ERR_INVALID);
    snprintf(msg, sizeof msg, "%s: ESRGAN tensor 'body.0.rdb2.conv3.bias' [4] is missing", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(path);
    free(e);
    /* A wrong input shape for the forward pass. */
    sd_esrgan *m = NULL;
    CHECK_EQ_INT(sd_esrgan_new(cl, st, SD_DTYPE_F32, &m), SD_OK);
    int64_t shape[4] = {1, 4, 5, 5};
    sd_dtensor *x = NULL, *out = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, shape, &x), SD_OK);
    CHECK_EQ_INT(sd_esrgan_forward(m, x, &out), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "ESRGAN: input [1, 4, 5, 5] f32 is not [1, 3, H, W] f32");
    CHECK(out == NULL);
    sd_dtensor_free(x);
    sd_esrgan_free(m);
    sd_safetensors_close(st);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    sd_context_set_cache_path(ctx, NULL);
    if (sd_cl_get(ctx, &cl) != SD_OK) {
        fprintf(stderr, "%s\n", sd_context_errmsg(ctx));
        return 1;
    }
    RUN(test_goldens);
    RUN(test_layouts);
    RUN(test_tiled);
    RUN(test_fit);
    RUN(test_bad_files);
    sd_context_free(ctx);
    return test_summary("test_esrgan");
}
