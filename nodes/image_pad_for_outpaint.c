/* ImagePadForOutpaint (ComfyUI "Pad Image for Outpainting"): grows the canvas with grey (0.5)
 * and returns a mask that is 1 on the new area and, when feathering > 0, fades into the old
 * image: at distance d < feathering from a padded side the mask is ((feathering - d) /
 * feathering)^2 (sides that were not padded do not count; feathering applies only when twice it
 * is below both image sides). */
#include "nodes/image_device.h"
#include "nodes/node_util.h"

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    int64_t left = sd_run_int(r, "left"), top = sd_run_int(r, "top"), right = sd_run_int(r, "right"),
            bottom = sd_run_int(r, "bottom");
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    sd_value *mask = sd_node_outpaint_mask(x->shape[1], x->shape[2], top, bottom, left, right, sd_run_int(r, "feathering"));
    if (!mask)
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for the outpainting mask");
    else if ((st = sd_op_pad(cl, x, top, bottom, left, right, SD_PAD_CONSTANT, 0.5f, &y)))
        st = sd_node_op_fail(r, st);
    else if (!(st = sd_node_image_output(r, 0, y))) {
        sd_run_set_output(r, 1, mask);
        mask = NULL;
    }
    sd_value_unref(mask);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to extend"),
    SD_IN_INT("left", "0", 0, 16384, "pixels added on the left"),
    SD_IN_INT("top", "0", 0, 16384, "pixels added on top"),
    SD_IN_INT("right", "0", 0, 16384, "pixels added on the right"),
    SD_IN_INT("bottom", "0", 0, 16384, "pixels added at the bottom"),
    SD_IN_INT("feathering", "40", 0, 16384, "width of the mask's fade into the original image"),
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the images on the larger canvas, new area grey (0.5)"),
    SD_OUT("MASK", SD_TYPE_MASK, "1 on the new area, fading into the image, [1, height, width]"),
};
const sd_node_desc sd_node_ImagePadForOutpaint = {
    .name = "ImagePadForOutpaint", .version = 1, .category = "image",
    .doc = "Extends images for outpainting and makes the matching inpainting mask.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
