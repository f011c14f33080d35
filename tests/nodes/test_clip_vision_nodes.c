/* CLIPVisionLoader -> CLIPVisionEncode through the scheduler: a tiny CLIP vision file in
 * <models dir>/clip_vision gives exactly what the model API gives for the preprocessed image
 * (crop center and none), and a file that is no CLIP vision model is reported before running. */
#include "test.h"
#include "support/golden.h"
#include "core/run.h"
#include "ml/vision/clip_vision.h"
#include "ml/families/sd1_layout.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;
static char *models;
enum { W = 23, H = 13, COLOR = 0x3377cc };

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK(in && out);
    char buf[4096];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

static sd_graph *graph(const char *file, const char *crop)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyImage", "img", NULL), SD_OK);
    char num[32];
    snprintf(num, sizeof num, "%d", W);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "width", num), SD_OK);
    snprintf(num, sizeof num, "%d", H);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "height", num), SD_OK);
    snprintf(num, sizeof num, "%d", COLOR);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "color", num), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionLoader", "cv", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "cv", "clip_name", file), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "enc", "crop", crop), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "cv", "CLIP_VISION", "enc", "clip_vision"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "enc", "image"), SD_OK);
    return g;
}

static void expect_encode(const char *crop)
{
    sd_graph *g = graph("tiny.safetensors", crop);
    const char *outs[] = {"enc", "img"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 2, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, "enc", "CLIP_VISION_OUTPUT");
    const sd_value *iv = st ? NULL : sd_result_value(res, "img", "IMAGE");
    const sd_tensor *emb = v ? sd_value_tensor(v, "image_embeds") : NULL;
    const sd_tensor *last = v ? sd_value_tensor(v, "last_hidden_state") : NULL;
    const sd_tensor *pen = v ? sd_value_tensor(v, "penultimate_hidden_states") : NULL;
    const sd_tensor *img = iv ? sd_value_tensor(iv, "image") : NULL;
    CHECK(emb && emb->ndim == 2 && emb->shape[0] == 1 && emb->shape[1] == 24);
    CHECK(last && last->ndim == 3 && last->shape[1] == 17 && last->shape[2] == 32);
    CHECK(pen && pen->ndim == 3 && pen->shape[1] == 17 && pen->shape[2] == 32);
    if (emb && last && pen && img) {
        char *dir = test_path(models, "clip_vision"), *path = test_path(dir, "tiny.safetensors");
        sd_safetensors *f = NULL;
        sd_clip_vision_config cfg;
        sd_clip_vision *m = NULL;
        sd_cl *cl = NULL;
        float pixels[3 * 16 * 16], e[24], l[17 * 32], p[17 * 32];
        CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
        CHECK_EQ_INT(sd_clip_vision_inspect(ctx, f, NULL, &cfg), SD_OK);
        CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
        CHECK_EQ_INT(sd_clip_vision_new(cl, f, &cfg, SD_DTYPE_F16, &m), SD_OK);
        CHECK_EQ_INT(sd_clip_vision_preprocess(ctx, img->data, H, W, 16, strcmp(crop, "center") == 0, pixels), SD_OK);
        CHECK_EQ_INT(sd_clip_vision_encode(m, pixels, 1, e, l, p), SD_OK);
        CHECK(memcmp(e, emb->data, sizeof e) == 0);
        CHECK(memcmp(l, last->data, sizeof l) == 0);
        CHECK(memcmp(p, pen->data, sizeof p) == 0);
        sd_clip_vision_free(m);
        sd_safetensors_close(f);
        free(dir);
        free(path);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_encode(void)
{
    expect_encode("center");
    expect_encode("none");
}

/* A checkpoint-like file without CLIP vision tensors fails validation naming the input. */
static void test_not_clip_vision(void)
{
    sd_graph *g = graph("other.safetensors", "center");
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    bool found = false;
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++)
        found |= strstr(sd_context_diag(ctx, i), "not a CLIP vision model") != NULL;
    CHECK_MSG(found, "no diagnostic naming the file: %s", sd_context_errmsg(ctx));
    sd_graph_free(g);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    models = test_path(test_scratch_dir(), "models");
    char *dir = test_path(models, "clip_vision"), *to = test_path(dir, "tiny.safetensors");
    char *other = test_path(dir, "other.safetensors");
    char *src = test_golden_path("clip_vision_hf.safetensors");
    mkdir(models, 0777);
    mkdir(dir, 0777);
    copy_file(src, to);
    sd_checkpoint_config cfg;
    if (!sd_checkpoint_preset("tiny", &cfg) || sd_sd1_write_random(ctx, other, &cfg, SD_ST_F16, 1) != SD_OK)
        return 2;
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_encode);
    RUN(test_not_clip_vision);
    sd_context_free(ctx);
    free(models), free(dir), free(to), free(other), free(src);
    return test_summary("test_clip_vision_nodes");
}
