/* comfyui_controlnet_aux's depth estimators: DepthAnythingV2Preprocessor ("Depth Anything V2 -
 * Relative") on ml/annotators/depth_anything.h, reading the original .pth (or a .safetensors
 * with the same tensors) from the `annotators` model folder. */
#include "ml/annotators/depth_anything.h"
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

/* The file must hold the network (reported on the input before anything runs; a missing file
 * was reported by validation). */
static void check_depth_anything(sd_node_check *c)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "ckpt_name");
    sd_safetensors *st = NULL;
    sd_depth_anything_config cfg;
    if (path && sd_safetensors_open(ctx, path, &st) == SD_OK && sd_depth_anything_inspect(ctx, st, &cfg) == SD_OK) {
        sd_safetensors_close(st);
        return;
    }
    if (path)
        sd_check_problem(c, "ckpt_name", "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
    sd_safetensors_close(st);
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
