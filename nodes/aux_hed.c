/* HEDPreprocessor (comfyui_controlnet_aux's "HED Soft-Edge Lines"): the HED network
 * (ml/annotators/hed.h) on the padded detect-resolution image, its edge map with safe on or off.
 * The weights are ControlNetHED.pth's tensors in annotators/ControlNetHED.safetensors (the
 * ckpt_name input, which comfyui_controlnet_aux does not have: it downloads the file). */
#include "ml/annotators/hed.h"
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>

typedef struct hed_run {
    sd_cl *cl;
    sd_hed *net;
    bool safe;
} hed_run;

static sd_status hed_detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    hed_run *h = arg;
    sd_dtensor *x = NULL, *proj[SD_HED_BLOCKS] = {0};
    float *host[SD_HED_BLOCKS] = {0};
    int64_t ph[SD_HED_BLOCKS], pw[SD_HED_BLOCKS];
    sd_status st = sd_node_aux_upload(r, h->cl, img, 1.0f, &x);
    if (st)
        return st;
    st = sd_hed_forward(h->net, x, proj);
    for (int b = 0; !st && b < SD_HED_BLOCKS; b++) {
        ph[b] = proj[b]->shape[2], pw[b] = proj[b]->shape[3];
        if (!(host[b] = malloc(sizeof(float) * proj[b]->numel)))
            st = sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory");
        else
            st = sd_dtensor_download(proj[b], host[b]);
    }
    if (!st)
        st = sd_hed_edge_map(sd_run_context(r), (const float *const *)host, ph, pw, img->h, img->w, h->safe, map);
    for (int b = 0; b < SD_HED_BLOCKS; b++) {
        sd_dtensor_free(proj[b]);
        free(host[b]);
    }
    sd_dtensor_free(x);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_hed(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    hed_run h = {.safe = sd_run_string(r, "safe")[0] == 'e'};
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &h.cl)))
        st = sd_hed_new(h.cl, file, &h.net);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run(r, SD_AUX_CUBIC, hed_detect, &h);
    sd_hed_free(h.net);
    sd_safetensors_close(file);
    return st;
}

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("safe", "enable", enable_disable, "enable: quantise the edges to three levels (safe_step)"),
    SD_IN_AUX_RESOLUTION,
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "ControlNetHED.safetensors", .doc = "ControlNetHED.pth's tensors as .safetensors in models/annotators"},
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "soft edges, white on black, at the detect resolution")};
const sd_node_desc sd_node_HEDPreprocessor = {
    .name = "HEDPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "HED soft-edge lines (comfyui_controlnet_aux's HEDdetector).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run_hed,
};
