/* UpscaleModelLoader -> ImageUpscaleWithModel through the scheduler: a tiny random x4 RRDBNet
 * found in <models dir>/upscale_models gives exactly the model's tiled upscale of the loaded
 * image, clamped to [0, 1]; an x2 Real-ESRGAN-style file doubles the size; a file of another
 * architecture fails at the loader with the file named and what was found, and nothing is
 * written. */
#include "test.h"
#include "core/run.h"
#include "ml/upscale/esrgan.h"
#include "support/png_fixture.h"
#include <stdlib.h>
#include <sys/stat.h>

static sd_context *ctx;
static char *models, *output;
enum { W = 19, H = 14 };

static void write_model(const char *name, int in_nc, int seed)
{
    sd_esrgan_config c = {.layout = SD_ESRGAN_OLD, .in_nc = in_nc, .out_nc = 3, .nf = 8, .gc = 4, .blocks = 1, .n_up = 2};
    char *dir = test_path(models, "upscale_models"), *path = test_path(dir, name);
    mkdir(dir, 0777);
    CHECK_EQ_INT(sd_esrgan_write_random(ctx, path, &c, SD_ST_F16, (uint64_t)seed), SD_OK);
    free(dir);
    free(path);
}

static sd_graph *graph(const char *model, bool save)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "load", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "UpscaleModelLoader", "model", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "model", "model_name", model), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "ImageUpscaleWithModel", "up", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "model", "UPSCALE_MODEL", "up", "upscale_model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "up", "image"), SD_OK);
    if (save) {
        CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "save", NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "up", "IMAGE", "save", "images"), SD_OK);
    }
    return g;
}

/* Runs the graph for "up" and "load"; checks the output against the model's own upscale. */
static void expect_upscale(const char *model, int scale)
{
    sd_graph *g = graph(model, false);
    const char *outs[] = {"up", "load"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 2, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s: %s", model, sd_context_errmsg(ctx));
    const sd_value *up = st ? NULL : sd_result_value(res, "up", "IMAGE");
    const sd_value *in = st ? NULL : sd_result_value(res, "load", "IMAGE");
    const sd_tensor *t = up ? sd_value_tensor(up, "image") : NULL, *src = in ? sd_value_tensor(in, "image") : NULL;
    CHECK(t && t->shape[0] == 1 && t->shape[1] == H * scale && t->shape[2] == W * scale && t->shape[3] == 3);
    if (t && src && t->shape[1] == H * scale && t->shape[2] == W * scale) {
        /* The same file through the model API, clamped as the node does. */
        char *dir = test_path(models, "upscale_models"), *path = test_path(dir, model);
        sd_safetensors *f = NULL;
        sd_esrgan *m = NULL;
        sd_cl *cl = NULL;
        size_t n = (size_t)(H * scale * W * scale * 3);
        float *want = malloc(n * sizeof *want);
        CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
        CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
        CHECK_EQ_INT(sd_esrgan_new(cl, f, SD_DTYPE_F32, &m), SD_OK);
        CHECK_EQ_INT(sd_esrgan_upscale(m, src->data, H, W, 512, 32, NULL, NULL, want), SD_OK);
        size_t clamped = 0, differ = 0;
        for (size_t i = 0; i < n; i++) {
            float v = want[i] < 0.0f ? 0.0f : want[i] > 1.0f ? 1.0f : want[i];
            clamped += want[i] < 0.0f;
            differ += t->data[i] != v || t->data[i] < 0.0f || t->data[i] > 1.0f;
        }
        CHECK_MSG(differ == 0, "%s: %zu of %zu values differ from the model's clamped upscale", model, differ, n);
        CHECK_MSG(clamped > 0 && clamped < n, "%s: %zu of %zu values were clamped", model, clamped, n);
        sd_esrgan_free(m);
        sd_safetensors_close(f);
        free(want);
        free(dir);
        free(path);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_upscale(void)
{
    write_model("tiny-x4.safetensors", 3, 7);
    write_model("tiny-x2.safetensors", 12, 8); /* pixel-unshuffled input: x2 */
    expect_upscale("tiny-x4.safetensors", 4);
    expect_upscale("tiny-x2.safetensors", 2);
}

static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    memset(dst, 0, nbytes);
    return SD_OK;
}

static void test_unknown_layout(void)
{
    /* A SwinIR-like file in upscale_models: the loader names it and what it found; SaveImage
     * never runs. */
    char *dir = test_path(models, "upscale_models"), *path = test_path(dir, "swinir.safetensors");
    mkdir(dir, 0777);
    sd_st_entry e[2] = {{.name = "layers.0.residual_group.blocks.0.norm1.weight", .dtype = SD_ST_F32, .ndim = 1, .shape = {4}},
                        {.name = "conv_after_body.weight", .dtype = SD_ST_F32, .ndim = 1, .shape = {4}}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, 2, NULL, fill_zero, NULL), SD_OK);
    sd_graph *g = graph("swinir.safetensors", true);
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    char want[700];
    snprintf(want, sizeof want,
             "node 'model' (UpscaleModelLoader): %s: unknown upscale model layout: not an ESRGAN/RRDBNet file "
             "(looked for conv_first + body.0.rdb1.conv1, conv_first + RRDB_trunk.0.RDB1.conv1, or model.0 + "
             "model.1.sub.0.RDB1.conv1.0); found 2 tensors: 'layers.0.residual_group.blocks.0.norm1.weight', "
             "'conv_after_body.weight'",
             path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK_EQ_INT(count_dir_entries(output), 0);
    sd_result_free(res);
    sd_graph_free(g);
    free(dir);
    free(path);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    char *input = test_path(test_scratch_dir(), "input");
    models = test_path(test_scratch_dir(), "models");
    output = test_path(test_scratch_dir(), "output");
    mkdir(input, 0777);
    mkdir(models, 0777);
    mkdir(output, 0777);
    sd_context_set_dir(ctx, SD_DIR_INPUT, input);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, output);
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    sd_context_set_cache_path(ctx, NULL);
    static unsigned char px[H * W * 3];
    for (int i = 0; i < H * W * 3; i++)
        px[i] = (unsigned char)((i * 53 + (i / (W * 3)) * 17) % 256);
    fixture fx = {.w = W, .h = H, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    free(write_fixture("input/in.png", &fx));
    RUN(test_upscale);
    RUN(test_unknown_layout);
    sd_context_free(ctx);
    free(input);
    free(models);
    free(output);
    return test_summary("test_upscale_model");
}
