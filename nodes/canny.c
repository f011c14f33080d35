/* Canny (ComfyUI's ControlNet preprocessor): kornia's Canny edge detector with its defaults
 * (5x5 Gaussian, sigma 1; Sobel; non-maximum suppression; double threshold; hysteresis) on the
 * grayscale image; edges as a white-on-black RGB image. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"

/* Thresholds out of order, before anything runs when both are literals. */
static void check(sd_node_check *c)
{
    double low, high;
    if (sd_check_float(c, "low_threshold", &low) && sd_check_float(c, "high_threshold", &high) && low > high)
        sd_check_problem(c, "low_threshold", "%g is above high_threshold %g", low, high);
}

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    double low = sd_run_float(r, "low_threshold"), high = sd_run_float(r, "high_threshold");
    if (low > high)
        return sd_run_error(r, SD_ERR_INVALID, "low_threshold %g is above high_threshold %g", low, high);
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    st = sd_op_canny(cl, x, (float)low, (float)high, &y);
    return sd_node_image_finish(r, st, x, y);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images (RGB, or one channel)"),
    SD_IN_FLOAT("low_threshold", "0.4", 0.01, 0.99, "gradient magnitude that makes a weak edge"),
    SD_IN_FLOAT("high_threshold", "0.8", 0.01, 0.99, "gradient magnitude that makes a strong edge"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "edges: 1 on edges, 0 elsewhere, 3 channels")};
const sd_node_desc sd_node_Canny = {
    .name = "Canny", .version = 1, .category = "image/preprocessors",
    .doc = "Detects edges with the Canny algorithm (ControlNet canny preprocessor).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run, .check = check,
};
