/* ImageSharpen (ComfyUI "Image Sharpen", comfy_extras/nodes_post_processing.py): convolution
 * with the kernel -10 alpha G, whose centre is raised so that the kernel sums to 1 (G: ImageBlur's
 * normalised Gaussian over linspace(-1, 1) on 2r+1 taps), reflected borders, clamped to [0, 1].
 * That is (1 + 10 alpha) image - 10 alpha blur(image): here ImageBlur's separable device blur and
 * the elementwise ops, within 2e-6 of the direct 2-D convolution in double (tests/nodes/test_latent_ops.c).
 * ComfyUI fails when the radius reaches the image size; here the mirror repeats instead. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include "runtime-opencl/ops_basic.h"

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *blur = NULL, *neg = NULL, *pos = NULL, *sum = NULL, *y = NULL;
    int radius = (int)sd_run_int(r, "sharpen_radius");
    float amount = (float)(sd_run_float(r, "alpha") * 10.0), k[2 * 31 + 1];
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    sd_blur_kernel_comfy(radius, (float)sd_run_float(r, "sigma"), k);
    if (!(st = sd_op_blur(cl, x, radius, k, &blur)) && !(st = sd_op_scale(cl, blur, -amount, 0.0f, &neg)) &&
        !(st = sd_op_scale(cl, x, 1.0f + amount, 0.0f, &pos)) &&
        !(st = sd_op_binary(cl, SD_BINARY_ADD, pos, neg, &sum)))
        st = sd_op_clamp(cl, sum, 0.0f, 1.0f, &y);
    sd_dtensor_free(blur);
    sd_dtensor_free(neg);
    sd_dtensor_free(pos);
    sd_dtensor_free(sum);
    return sd_node_image_finish(r, st, x, y);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to sharpen"),
    SD_IN_INT("sharpen_radius", "1", 1, 31, "kernel radius in pixels (2r+1 taps)"),
    SD_IN_FLOAT("sigma", "1.0", 0.1, 10.0, "Gaussian width relative to the radius"),
    SD_IN_FLOAT("alpha", "1.0", 0.0, 5.0, "strength: the image minus its blur is added 10 alpha times"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the sharpened images, clamped to [0, 1]")};
const sd_node_desc sd_node_ImageSharpen = {
    .name = "ImageSharpen", .version = 1, .category = "image/postprocessing",
    .doc = "Sharpens images (unsharp masking with ComfyUI's Gaussian kernel).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
