/* comfyui_controlnet_aux's depth and normal estimators: DepthAnythingV2Preprocessor ("Depth
 * Anything V2 - Relative") on ml/annotators/depth_anything.h, MiDaS-DepthMapPreprocessor and
 * MiDaS-NormalMapPreprocessor on ml/annotators/midas.h and midas_maps.h,
 * BAE-NormalMapPreprocessor ("BAE Normal Map") on ml/annotators/normalbae.h, reading the original
 * .pth / .pt files (or .safetensors with the same tensors) from the `annotators` model folder. */
#include "ml/annotators/depth_anything.h"
#include "ml/annotators/dpt.h"
#include "ml/annotators/midas.h"
#include "ml/annotators/midas_maps.h"
#include "ml/annotators/normalbae.h"
#include "runtime-opencl/ops_basic.h"
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>

#define DEPTH_INPUT_SIZE 518 /* infer_image's input_size in the detector */

static sd_status depth_detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    size_t n = (size_t)(img->h * img->w);
    float *depth = malloc(sizeof *depth * n);
    sd_status st = depth ? sd_depth_anything_infer(arg, img, DEPTH_INPUT_SIZE, depth)
                         : sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory");
    if (!st)
        sd_depth_anything_map(depth, n, map);
    free(depth);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_depth_anything(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    sd_depth_anything *m = NULL;
    sd_cl *cl = NULL;
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &cl)))
        st = sd_depth_anything_new(cl, file, &m);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run_then_resize(r, depth_detect, m);
    sd_depth_anything_free(m);
    sd_safetensors_close(file);
    return st;
}

/* The ckpt_name file must hold the network `inspect` checks (reported on the input before
 * anything runs; a missing file was reported by validation). */
static void check_file(sd_node_check *c, sd_status (*inspect)(sd_context *ctx, const sd_safetensors *st))
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "ckpt_name");
    sd_safetensors *st = NULL;
    if (path && sd_safetensors_open(ctx, path, &st) == SD_OK && inspect(ctx, st) == SD_OK) {
        sd_safetensors_close(st);
        return;
    }
    if (path)
        sd_check_problem(c, "ckpt_name", "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

static sd_status depth_anything_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_depth_anything_config cfg;
    return sd_depth_anything_inspect(ctx, st, &cfg);
}

static void check_depth_anything(sd_node_check *c)
{
    check_file(c, depth_anything_inspect);
}

/* ---- MiDaS ---- */

typedef struct midas_run {
    sd_cl *cl;
    sd_midas *net;
    bool normal;
    float a, bg_th;
} midas_run;

/* The network on the padded image as v / 127.5 - 1; the depth image, or the normal map. */
static sd_status midas_detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    midas_run *n = arg;
    sd_context *ctx = sd_run_context(r);
    size_t hw = (size_t)(img->h * img->w);
    sd_dtensor *x = NULL, *x1 = NULL, *y = NULL;
    float *depth = malloc(sizeof *depth * hw), *norm = malloc(sizeof *norm * hw);
    unsigned char *plane = n->normal ? malloc(hw) : map;
    sd_status st = !depth || !norm || !plane ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
    if (st)
        st = sd_run_fail(r, st);
    else if (!(st = sd_node_aux_upload(r, n->cl, img, 127.5f, false, &x))) { /* errors reported */
        if (!(st = sd_op_scale(n->cl, x, 1.0f, -1.0f, &x1)) && !(st = sd_midas_forward(n->net, x1, &y)) &&
            !(st = sd_dtensor_download(y, depth))) {
            sd_midas_depth_map(depth, img->h, img->w, norm, plane);
            if (n->normal)
                st = sd_midas_normal_map(ctx, depth, norm, img->h, img->w, n->a, n->bg_th, map);
        }
        st = st ? sd_run_fail(r, st) : SD_OK;
    }
    if (plane != map)
        free(plane);
    free(depth), free(norm);
    sd_dtensor_free(x), sd_dtensor_free(x1), sd_dtensor_free(y);
    return st;
}

static sd_status run_midas(sd_node_run *r, bool normal)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    midas_run n = {.normal = normal, .a = (float)sd_run_float(r, "a"), .bg_th = (float)sd_run_float(r, "bg_threshold")};
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &n.cl)))
        st = sd_midas_new(n.cl, file, &n.net);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run_channels(r, SD_AUX_CUBIC, normal ? 3 : 1, midas_detect, &n, NULL);
    sd_midas_free(n.net);
    sd_safetensors_close(file);
    return st;
}

static sd_status run_midas_depth(sd_node_run *r)
{
    return run_midas(r, false);
}

static sd_status run_midas_normal(sd_node_run *r)
{
    return run_midas(r, true);
}

static sd_status midas_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_midas_config cfg;
    return sd_midas_inspect(ctx, st, &cfg);
}

static void check_midas(sd_node_check *c)
{
    check_file(c, midas_inspect);
}

/* ---- BAE ---- */

typedef struct bae_run {
    sd_cl *cl;
    sd_normalbae *net;
} bae_run;

/* The network on the padded image normalised as NormalBaeDetector does; its RGB normal image. */
static sd_status bae_detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    bae_run *n = arg;
    size_t hw = (size_t)(img->h * img->w);
    float *x = malloc(sizeof *x * 3 * hw), *normals = malloc(sizeof *normals * 4 * hw);
    sd_dtensor *dx = NULL;
    sd_status st = !x || !normals ? sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory") : SD_OK;
    if (!st) {
        sd_normalbae_input(img->px, img->h, img->w, x);
        st = sd_dpt_upload(n->cl, 4, (const int64_t[]){1, 3, img->h, img->w}, x, &dx);
    }
    if (!st && !(st = sd_normalbae_forward(n->net, dx, normals)))
        sd_normalbae_map(normals, hw, map);
    free(x), free(normals);
    sd_dtensor_free(dx);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_bae(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    bae_run n = {0};
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &n.cl)))
        st = sd_normalbae_new(n.cl, file, &n.net);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run_channels(r, SD_AUX_CUBIC, 3, bae_detect, &n, NULL);
    sd_normalbae_free(n.net);
    sd_safetensors_close(file);
    return st;
}

static sd_status bae_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_normalbae_config cfg;
    return sd_normalbae_inspect(ctx, st, &cfg);
}

static void check_bae(sd_node_check *c)
{
    check_file(c, bae_inspect);
}

static const sd_input_desc depth_anything_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "depth_anything_v2_vitl.pth",
     .doc = "depth_anything_v2_vits.pth, _vitb or _vitl (the original files; .safetensors with the same tensors "
            "also) in models/annotators"},
    SD_IN_AUX_RESOLUTION,
};
static const sd_output_desc depth_outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "relative depth, near bright, at the detect resolution")};

const sd_node_desc sd_node_DepthAnythingV2Preprocessor = {
    .name = "DepthAnythingV2Preprocessor", .version = 1, .category = "ControlNet Preprocessors/Normal and Depth Estimators",
    .doc = "Depth Anything V2 relative depth (comfyui_controlnet_aux's DepthAnythingV2Detector): the network at 518 "
           "on the shorter side, the depth min-max scaled to 8 bits, then resized to the detect resolution.",
    .inputs = depth_anything_inputs, .n_inputs = SD_COUNT(depth_anything_inputs),
    .outputs = depth_outputs, .n_outputs = 1, .run = run_depth_anything, .check = check_depth_anything,
};

static const sd_input_desc midas_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_FLOAT("a", "6.283185307179586", 0.0, 15.707963267948966, "the normal map's third component (2 pi)"),
    SD_IN_FLOAT("bg_threshold", "0.1", 0.0, 1.0, "normal map: flat (facing the viewer) where the normalised depth is below"),
    SD_IN_AUX_RESOLUTION,
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "dpt_hybrid-midas-501f0c75.pt", .doc = "MiDaS v3 DPT-Hybrid (the original .pt) in models/annotators"},
};

const sd_node_desc sd_node_MiDaS_DepthMapPreprocessor = {
    .name = "MiDaS-DepthMapPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Normal and Depth Estimators",
    .doc = "MiDaS DPT-Hybrid relative depth (comfyui_controlnet_aux's MidasDetector): near bright; a and bg_threshold "
           "are accepted and unused, as there.",
    .inputs = midas_inputs, .n_inputs = SD_COUNT(midas_inputs),
    .outputs = depth_outputs, .n_outputs = 1, .run = run_midas_depth, .check = check_midas,
};

static const sd_output_desc normal_outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "normal map from the MiDaS depth at the detect resolution")};

const sd_node_desc sd_node_MiDaS_NormalMapPreprocessor = {
    .name = "MiDaS-NormalMapPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Normal and Depth Estimators",
    .doc = "Normal map from the MiDaS DPT-Hybrid depth (comfyui_controlnet_aux's MidasDetector, depth_and_normal): "
           "Sobel gradients of the depth with a as the third component, flat below bg_threshold.",
    .inputs = midas_inputs, .n_inputs = SD_COUNT(midas_inputs),
    .outputs = normal_outputs, .n_outputs = 1, .run = run_midas_normal, .check = check_midas,
};

static const sd_input_desc bae_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_AUX_RESOLUTION,
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators", .def = "scannet.pt",
     .doc = "BAE's scannet.pt (lllyasviel/Annotators; .safetensors with the same tensors also) in models/annotators"},
};
static const sd_output_desc bae_outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "normal map (x, y, z as RGB) at the detect resolution")};

const sd_node_desc sd_node_BAE_NormalMapPreprocessor = {
    .name = "BAE-NormalMapPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Normal and Depth Estimators",
    .doc = "Surface normals from the BAE network (comfyui_controlnet_aux's NormalBaeDetector: EfficientNet-B5 encoder, "
           "uncertainty-guided decoder) on the padded image, (n + 1) / 2 as RGB.",
    .inputs = bae_inputs, .n_inputs = SD_COUNT(bae_inputs),
    .outputs = bae_outputs, .n_outputs = 1, .run = run_bae, .check = check_bae,
};
