/* ImageScaleBy (ComfyUI "Upscale Image By"): resize by a factor. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <math.h>
#include <stdio.h>

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL;
    double scale = sd_run_float(r, "scale_by");
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    /* Python's round (half to even) of the scaled sizes. */
    char why[64];
    snprintf(why, sizeof why, "scale_by %g", scale);
    return sd_node_resize_to(r, cl, x, nearbyint((double)x->shape[2] * scale), nearbyint((double)x->shape[1] * scale),
                             why);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to resize"),
    SD_IN_UPSCALE_METHOD,
    SD_IN_FLOAT("scale_by", "1.0", 0.01, 8.0, "factor applied to width and height (rounded half to even)"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the resized images")};
const sd_node_desc sd_node_ImageScaleBy = {
    .name = "ImageScaleBy", .version = 1, .category = "image/upscaling",
    .doc = "Resizes images by a factor.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
