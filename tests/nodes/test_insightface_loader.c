/* IPAdapterInsightFaceLoader through the scheduler: a pack in <models dir>/insightface/models/
 * buffalo_l (the tiny files of tests/reference/make_faceid_goldens.py, plus a second detector
 * that must be ignored) loads with every file it reads declared, and its handle finds the
 * reference's faces; a missing pack is one validation diagnostic before anything runs. */
#include "test.h"
#include "support/golden.h"
#include "core/run.h"
#include "core/value.h"
#include "ml/vision/face_analysis.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;

static sd_graph *graph(const char *pack)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "IPAdapterInsightFaceLoader", "fa", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "fa", "provider", "CUDA"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "fa", "model_name", pack), SD_OK);
    return g;
}

static void test_loads(void)
{
    sd_graph *g = graph("buffalo_l");
    const char *outs[] = {"fa"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, "fa", "INSIGHTFACE");
    CHECK(v && v->type == SD_TYPE_INSIGHTFACE && v->handle);
    char *gpath = test_golden_path("face_analysis.json");
    json_t *root = json_load_file(gpath, 0, NULL), *a = json_object_get(root, "a");
    float *px = test_read_golden("face_img_a.f32", 64 * 48 * 3 * 4);
    if (v && v->handle && a && px) {
        for (size_t i = 0; i < 64 * 48 * 3; i++)
            px[i] = (px[i] + 0.5f) / 255.0f;
        sd_face *faces = NULL;
        size_t n = 0;
        CHECK_EQ_INT(sd_face_analysis_run(ctx, v->handle, px, 64, 48, 64, &faces, &n), SD_OK);
        CHECK_EQ_INT(n, json_array_size(json_object_get(a, "faces")));
        free(faces);
    }
    free(px);
    json_decref(root);
    free(gpath);
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_missing_pack(void)
{
    sd_graph *g = graph("antelopev2");
    const char *outs[] = {"fa"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &opt, &res), SD_ERR_INVALID);
    bool found = false;
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++)
        found |= strstr(sd_context_diag(ctx, i), "InsightFace model pack 'antelopev2' not found") != NULL;
    CHECK_MSG(found, "no diagnostic naming the pack: %s", sd_context_errmsg(ctx));
    sd_result_free(res);
    sd_graph_free(g);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    char *models = test_path(test_scratch_dir(), "models"), *src = test_path(test_source_dir(), "tests/data/insightface/tiny_pack");
    char *d1 = test_path(models, "insightface"), *d2 = test_path(d1, "models"), *pack = test_path(d2, "buffalo_l");
    mkdir(models, 0777), mkdir(d1, 0777), mkdir(d2, 0777), mkdir(pack, 0777);
    const char *files[][2] = {{"det_tiny.onnx", "det_10g.onnx"}, {"rec_tiny.onnx", "w600k_r50.onnx"},
                              {"det_tiny.onnx", "scrfd_second.onnx"}};
    for (size_t i = 0; i < 3; i++) {
        char *from = test_path(src, files[i][0]), *to = test_path(pack, files[i][1]);
        test_copy_file(from, to);
        free(from), free(to);
    }
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_loads);
    RUN(test_missing_pack);
    sd_context_free(ctx);
    free(models), free(src), free(d1), free(d2), free(pack);
    return test_summary("test_insightface_loader");
}
