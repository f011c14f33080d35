/* ImageInvert (ComfyUI "Invert Image"): 1 - image. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include "runtime-opencl/ops_basic.h"

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    st = sd_op_scale(cl, x, -1.0f, 1.0f, &y);
    return sd_node_image_finish(r, st, x, y);
}

static const sd_input_desc inputs[] = {SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to invert")};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "1 - image")};
const sd_node_desc sd_node_ImageInvert = {
    .name = "ImageInvert", .version = 1, .category = "image",
    .doc = "Inverts images: every channel becomes 1 - value.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
