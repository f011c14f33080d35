/* ImageBlur (ComfyUI "Image Blur"): Gaussian blur whose kernel spans linspace(-1, 1) over
 * 2 * blur_radius + 1 taps (so sigma is relative to the radius), mirrored borders. ComfyUI
 * fails when the radius reaches the image size; here the mirror repeats instead. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    int radius = (int)sd_run_int(r, "blur_radius");
    float k[2 * 31 + 1];
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    sd_blur_kernel_comfy(radius, (float)sd_run_float(r, "sigma"), k);
    st = sd_op_blur(cl, x, radius, k, &y);
    return sd_node_image_finish(r, st, x, y);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to blur"),
    SD_IN_INT("blur_radius", "1", 1, 31, "kernel radius in pixels (2r+1 taps)"),
    SD_IN_FLOAT("sigma", "1.0", 0.1, 10.0, "Gaussian width relative to the radius"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the blurred images")};
const sd_node_desc sd_node_ImageBlur = {
    .name = "ImageBlur", .version = 1, .category = "image/postprocessing",
    .doc = "Blurs images with a Gaussian kernel.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
