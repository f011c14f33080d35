/* ImageScaleBy (ComfyUI "Upscale Image By"): resize by a factor. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <math.h>

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    double scale = sd_run_float(r, "scale_by");
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    /* Python's round (half to even) of the scaled sizes. */
    double width = nearbyint((double)x->shape[2] * scale), height = nearbyint((double)x->shape[1] * scale);
    if (width < 1.0 || height < 1.0)
        st = sd_run_error(r, SD_ERR_INVALID, "scale_by %g makes the %lldx%lld image empty", scale,
                          (long long)x->shape[2], (long long)x->shape[1]);
    else if (!(st = sd_node_common_upscale(r, cl, x, sd_run_string(r, "upscale_method"), (int64_t)width,
                                           (int64_t)height, false, &y)))
        st = sd_node_image_output(r, 0, y);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to resize"),
    SD_IN_ENUM("upscale_method", "nearest-exact", sd_node_upscale_methods,
               "torch interpolate modes (nearest-exact, bilinear, area, bicubic) or PIL's 8-bit lanczos"),
    SD_IN_FLOAT("scale_by", "1.0", 0.01, 8.0, "factor applied to width and height (rounded half to even)"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the resized images")};
const sd_node_desc sd_node_ImageScaleBy = {
    .name = "ImageScaleBy", .version = 1, .category = "image/upscaling",
    .doc = "Resizes images by a factor.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
