/* ImageCrop (ComfyUI "Image Crop"): a width x height rectangle at (x, y), clipped to the image
 * as ComfyUI's slicing does (x and y are first limited to the last column and row). */
#include "nodes/image_device.h"
#include "nodes/node_util.h"

static sd_status run(sd_node_run *r)
{
    sd_status st;
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    if ((st = sd_node_image_upload(r, "image", &cl, &x)))
        return st;
    int64_t h = x->shape[1], w = x->shape[2];
    int64_t left = sd_run_int(r, "x"), top = sd_run_int(r, "y");
    left = left < w - 1 ? left : w - 1;
    top = top < h - 1 ? top : h - 1;
    int64_t cw = sd_run_int(r, "width"), ch = sd_run_int(r, "height");
    cw = cw < w - left ? cw : w - left;
    ch = ch < h - top ? ch : h - top;
    st = sd_op_crop(cl, x, top, left, ch, cw, &y);
    return sd_node_image_finish(r, st, x, y);
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to crop"),
    SD_IN_INT("width", "512", 1, 16384, "crop width (clipped at the right edge)"),
    SD_IN_INT("height", "512", 1, 16384, "crop height (clipped at the bottom edge)"),
    SD_IN_INT("x", "0", 0, 16384, "left column (at most the last column)"),
    SD_IN_INT("y", "0", 0, 16384, "top row (at most the last row)"),
};
static const sd_output_desc outputs[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the cropped images")};
const sd_node_desc sd_node_ImageCrop = {
    .name = "ImageCrop", .version = 1, .category = "image/transform",
    .doc = "Crops a rectangle out of images.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
