/* ImageScaleToTotalPixels (ComfyUI "Scale Image to Total Pixels"): resize to about `megapixels`
 * x 1024 x 1024 pixels keeping the aspect ratio, each side rounded to a multiple of
 * resolution_steps. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <math.h>
#include <stdio.h>

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL;
    double megapixels = sd_run_float(r, "megapixels");
    int64_t steps = sd_run_int(r, "resolution_steps");
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    /* ComfyUI's arithmetic in doubles: scale = sqrt(total / (w h)), each side
     * round(side * scale / steps) * steps with Python's round (half to even). */
    double w0 = (double)x->shape[2], h0 = (double)x->shape[1], s = (double)steps;
    double scale = sqrt(megapixels * 1024 * 1024 / (w0 * h0));
    char why[96];
    snprintf(why, sizeof why, "megapixels %g with resolution_steps %lld", megapixels, (long long)steps);
    return sd_node_resize_to(r, cl, x, nearbyint(w0 * scale / s) * s, nearbyint(h0 * scale / s) * s, why);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to resize"),
    SD_IN_UPSCALE_METHOD,
    SD_IN_FLOAT("megapixels", "1.0", 0.01, 16.0, "target size in units of 1024 x 1024 pixels"),
    SD_IN_INT("resolution_steps", "1", 1, 256, "each side is rounded to a multiple of this"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the resized images")};
const sd_node_desc sd_node_ImageScaleToTotalPixels = {
    .name = "ImageScaleToTotalPixels", .version = 1, .category = "image/upscaling",
    .doc = "Resizes images to a total number of pixels, keeping the aspect ratio.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
