/* LineArtPreprocessor (comfyui_controlnet_aux's "Realistic Lineart"): the informative-drawings
 * Generator (ml/annotators/lineart.h), fine or coarse, on the padded detect-resolution image in
 * [0, 1]; the plane is 255 - 255 sigmoid(output): white lines on black. The weights are
 * sk_model.pth's and sk_model2.pth's tensors as annotators/sk_model.safetensors and
 * sk_model2.safetensors (the ckpt_name and coarse_ckpt_name inputs, which comfyui_controlnet_aux
 * does not have: it downloads both files, as it loads both whichever is used). */
#include "ml/annotators/lineart.h"
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>

typedef struct lineart_run {
    sd_cl *cl;
    sd_lineart *net;
} lineart_run;

static sd_status lineart_detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    lineart_run *l = arg;
    sd_dtensor *x = NULL, *y = NULL;
    float *host = NULL;
    sd_status st = sd_node_aux_upload(r, l->cl, img, 255.0f, &x);
    if (st)
        return st;
    if (!(st = sd_lineart_forward(l->net, x, &y))) {
        if (!(host = malloc(sizeof *host * y->numel)))
            st = sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory");
        else if (!(st = sd_dtensor_download(y, host)))
            sd_lineart_map(host, y->numel, map);
    }
    free(host);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_lineart(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    bool coarse = sd_run_string(r, "coarse")[0] == 'e';
    sd_safetensors *file = NULL;
    lineart_run l = {0};
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, coarse ? "coarse_ckpt_name" : "ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &l.cl)))
        st = sd_lineart_new(l.cl, file, &l.net);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run(r, SD_AUX_CUBIC, lineart_detect, &l);
    sd_lineart_free(l.net);
    sd_safetensors_close(file);
    return st;
}

static const char *const disable_enable[] = {"disable", "enable", NULL};
static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("coarse", "disable", disable_enable, "enable: the coarse model (sk_model2)"),
    SD_IN_AUX_RESOLUTION,
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "sk_model.safetensors", .doc = "sk_model.pth's tensors as .safetensors in models/annotators"},
    {.name = "coarse_ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "sk_model2.safetensors", .doc = "sk_model2.pth's tensors as .safetensors in models/annotators"},
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "white lines on black at the detect resolution")};
const sd_node_desc sd_node_LineArtPreprocessor = {
    .name = "LineArtPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Realistic line art (comfyui_controlnet_aux's LineartDetector), fine or coarse.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run_lineart,
};
