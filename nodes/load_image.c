/* LoadImage and LoadImageMask: a PNG from the input directory as IMAGE and MASK (ComfyUI's
 * nodes of the same names; see nodes/image_io.h for the exact conversions). */
#include "nodes/image_io.h"
#include "nodes/node_util.h"

static sd_status run_load_image(sd_node_run *r)
{
    sd_value *image, *mask;
    sd_status st = sd_load_image(sd_run_context(r), sd_run_file(r, "image"), &image, &mask);
    if (st)
        return sd_run_fail(r, st);
    sd_run_set_output(r, 0, image);
    sd_run_set_output(r, 1, mask);
    return SD_OK;
}

/* ComfyUI's API workflows carry the upload widget of the image input ("upload": "image");
 * it is accepted so they import one to one, and has no effect. */
static const char *const upload_choices[] = {"image", NULL};
#define UPLOAD_INPUT SD_IN_ENUM("upload", "image", upload_choices, "ComfyUI's upload widget; no effect")

static const sd_input_desc load_in[] = {
    SD_IN_FILE_NAME("image", "input", "PNG file name in the input directory"
                    " (an absolute path needs --allow-absolute-paths)"),
    UPLOAD_INPUT,
};
static const sd_output_desc load_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the image as RGB in [0, 1], batch of 1"),
    SD_OUT("MASK", SD_TYPE_MASK, "1 - alpha; zeros 64x64 when the file has no alpha"),
};
const sd_node_desc sd_node_LoadImage = {
    .name = "LoadImage", .version = 1, .category = "image",
    .doc = "Loads a PNG from the input directory as an image and a mask from its alpha.",
    .inputs = load_in, .n_inputs = SD_COUNT(load_in),
    .outputs = load_out, .n_outputs = SD_COUNT(load_out), .run = run_load_image,
};

static sd_status run_load_image_mask(sd_node_run *r)
{
    sd_value *mask;
    sd_status st = sd_load_image_mask(sd_run_context(r), sd_run_file(r, "image"),
                                      sd_run_string(r, "channel"), &mask);
    if (st)
        return sd_run_fail(r, st);
    sd_run_set_output(r, 0, mask);
    return SD_OK;
}

static const char *const channels[] = {"alpha", "red", "green", "blue", NULL};
static const sd_input_desc mask_in[] = {
    SD_IN_FILE_NAME("image", "input", "PNG file name in the input directory"
                    " (an absolute path needs --allow-absolute-paths)"),
    SD_IN_ENUM("channel", "alpha", channels, "channel to use; alpha is inverted (1 - alpha)"),
    UPLOAD_INPUT,
};
static const sd_output_desc mask_out[] = {
    SD_OUT("MASK", SD_TYPE_MASK, "the channel as a mask, batch of 1"),
};
const sd_node_desc sd_node_LoadImageMask = {
    .name = "LoadImageMask", .version = 1, .category = "mask",
    .doc = "Loads one channel of a PNG from the input directory as a mask.",
    .inputs = mask_in, .n_inputs = SD_COUNT(mask_in),
    .outputs = mask_out, .n_outputs = SD_COUNT(mask_out), .run = run_load_image_mask,
};
