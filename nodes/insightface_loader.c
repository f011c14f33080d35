/* IPAdapterInsightFaceLoader (ComfyUI_IPAdapter_plus): an InsightFace model pack from
 * models/insightface/models/<model_name>/ (where ComfyUI_IPAdapter_plus has insightface look),
 * run by sdflow itself on its device (ml/vision/face_analysis.h); the provider input is kept for
 * workflow compatibility. Every .onnx file of the pack is declared to the planner, so the pack
 * is part of the cache key of what its faces make. */
#include "nodes/insightface.h"
#include "core/context.h"
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include "runtime-opencl/runtime.h"
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const providers[] = {"CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML", NULL};
static const char *const packs[] = {"buffalo_l", "antelopev2", NULL};

char *sd_node_insightface_find(sd_context *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->n_models_dirs; i++) {
        char *dir = sd_strfmt("%s/insightface/models/%s", ctx->models_dirs[i], name);
        struct stat sb;
        char *real = dir && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? realpath(dir, NULL) : NULL;
        free(dir);
        if (real)
            return real;
    }
    return NULL;
}

/* insightface reads every file of the folder. */
sd_status sd_node_insightface_declare(sd_node_files *f, const char *name)
{
    char *dir = sd_node_insightface_find(sd_files_context(f), name);
    DIR *d = dir ? opendir(dir) : NULL;
    sd_status st = SD_OK;
    for (struct dirent *e; d && !st && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".onnx"))
            continue;
        char *rel = sd_strfmt("models/%s/%s", name, e->d_name);
        const char *names[1] = {rel};
        st = rel ? sd_files_find(f, "insightface", names, 1) : SD_ERR_NOMEM;
        free(rel);
    }
    if (d)
        closedir(d);
    free(dir);
    return st;
}

static sd_status loader_files(sd_node_files *f)
{
    const char *name = sd_files_literal(f, "model_name");
    sd_status st = SD_OK;
    for (size_t i = 0; packs[i] && !st; i++) /* a linked name may be either */
        if (!name || !strcmp(name, packs[i]))
            st = sd_node_insightface_declare(f, packs[i]);
    return st;
}

static void loader_check(sd_node_check *c)
{
    const char *name = sd_check_literal(c, "model_name");
    char *dir = name ? sd_node_insightface_find(sd_check_context(c), name) : NULL;
    if (name && !dir)
        sd_check_problem(c, "model_name", "InsightFace model pack '%s' not found: no insightface/models/%s/ folder in the "
                                          "model directories", name, name);
    sd_check_set_tag(c, 0, "insightface");
    free(dir);
}

static void pack_free(void *p)
{
    sd_face_analysis_unref(p);
}

sd_status sd_node_insightface_open(sd_node_run *r, const char *name, bool required, sd_face_analysis **out)
{
    sd_context *ctx = sd_run_context(r);
    char *dir = sd_node_insightface_find(ctx, name);
    *out = NULL;
    if (!dir && !required)
        return SD_OK;
    if (!dir)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "InsightFace model pack '%s' not found: no insightface/models/%s/ folder "
                                                 "in the model directories", name, name);
    sd_cl *cl;
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st)
        st = sd_face_analysis_load(ctx, cl, dir, out);
    free(dir);
    return st ? sd_node_op_fail(r, st) : SD_OK;
}

static sd_status run_loader(sd_node_run *r)
{
    sd_face_analysis *fa = NULL;
    sd_status st = sd_node_insightface_open(r, sd_run_string(r, "model_name"), true, &fa);
    if (st)
        return st;
    sd_value *v = sd_value_handle(SD_TYPE_INSIGHTFACE, fa, pack_free); /* unrefs fa on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc loader_in[] = {
    SD_IN_ENUM("provider", "CPU", providers,
               "onnxruntime's execution provider in ComfyUI; sdflow runs the models on its own device whatever is chosen"),
    SD_IN_ENUM("model_name", "buffalo_l", packs,
               "the pack folder in models/insightface/models/ (buffalo_l: det_10g + w600k_r50; antelopev2: "
               "scrfd_10g_bnkps + glintr100)"),
};
static const sd_output_desc loader_out[] = {
    SD_OUT("INSIGHTFACE", SD_TYPE_INSIGHTFACE, "SCRFD face detection with five landmarks and the ArcFace embedding"),
};
const sd_node_desc sd_node_IPAdapterInsightFaceLoader = {
    .name = "IPAdapterInsightFaceLoader", .version = 1, .category = "ipadapter/loaders",
    .doc = "Loads an InsightFace pack for FaceID (the ONNX files run on sdflow's op library, no onnxruntime): "
           "detection and recognition models are found by their graphs, other files are ignored.",
    .inputs = loader_in, .n_inputs = SD_COUNT(loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_loader, .files = loader_files,
    .check = loader_check,
};
