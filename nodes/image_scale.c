/* ImageScale (ComfyUI "Upscale Image"): resize to a width and height with a chosen method,
 * optionally cropping the centre to the target aspect ratio first. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <math.h>

static sd_status run(sd_node_run *r)
{
    sd_status st;
    int64_t width = sd_run_int(r, "width"), height = sd_run_int(r, "height");
    if (width == 0 && height == 0) {
        if (!sd_node_image_tensor(r, "image"))
            return SD_ERR_INVALID;
        sd_run_set_output(r, 0, sd_value_ref(sd_run_value(r, "image")));
        return SD_OK;
    }
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    /* One side 0: keep the aspect ratio (Python's round, half to even). */
    double w0 = (double)x->shape[2], h0 = (double)x->shape[1];
    if (width == 0)
        width = (int64_t)fmax(1.0, nearbyint(w0 * (double)height / h0));
    else if (height == 0)
        height = (int64_t)fmax(1.0, nearbyint(h0 * (double)width / w0));
    bool center = sd_run_string(r, "crop")[0] == 'c';
    if (!(st = sd_node_common_upscale(r, cl, x, sd_run_string(r, "upscale_method"), width, height, center, &y)))
        st = sd_node_image_output(r, 0, y);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

static const char *const crops[] = {"disabled", "center", NULL};
static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to resize"),
    SD_IN_UPSCALE_METHOD,
    SD_IN_INT("width", "512", 0, 16384, "target width; 0 keeps the aspect ratio from height"),
    SD_IN_INT("height", "512", 0, 16384, "target height; 0 keeps the aspect ratio from width"),
    SD_IN_ENUM("crop", "disabled", crops, "center: crop the middle to the target aspect ratio first"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the resized images")};
const sd_node_desc sd_node_ImageScale = {
    .name = "ImageScale", .version = 1, .category = "image/upscaling",
    .doc = "Resizes images to a width and height (both 0: unchanged).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
