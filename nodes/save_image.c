/* SaveImage and PreviewImage: write an IMAGE batch as PNGs carrying their provenance
 * (ComfyUI's nodes of the same names; numbering and texts in nodes/image_io.h). */
#include "nodes/image_io.h"
#include "nodes/node_util.h"

static sd_status record_file(void *user, const char *path)
{
    return sd_run_add_file(user, path);
}

static sd_status save(sd_node_run *r, sd_dir_kind dir, const char *prefix, int compression)
{
    sd_save_request req;
    sd_status st = sd_node_save_request(r, dir, prefix, compression, &req);
    if (!st && (st = sd_save_images(sd_run_context(r), &req, sd_run_value(r, "images"), record_file, r)))
        return sd_run_fail(r, st);
    return st;
}

/* zlib levels as ComfyUI: 4 for saved images, 1 for previews. */
static sd_status run_save_image(sd_node_run *r)
{
    return save(r, SD_DIR_OUTPUT, sd_run_string(r, "filename_prefix"), 4);
}

static sd_status run_preview_image(sd_node_run *r)
{
    return save(r, SD_DIR_TEMP, "sdflow_preview", 1);
}

static const sd_input_desc save_in[] = {
    SD_IN_LINK("images", SD_TYPE_IMAGE, "the images to save"),
    SD_IN_PREFIX("filename_prefix", "sdflow",
                 "file name prefix, may include subfolders; files are PREFIX_00001_.png, ..."),
};
const sd_node_desc sd_node_SaveImage = {
    .name = "SaveImage", .version = 1, .category = "image",
    .doc = "Saves images as PNGs in the output directory, with the workflow embedded.",
    .inputs = save_in, .n_inputs = SD_COUNT(save_in), .flags = SD_NODE_OUTPUT | SD_NODE_NO_CACHE,
    .run = run_save_image,
};

static const sd_input_desc preview_in[] = {
    SD_IN_LINK("images", SD_TYPE_IMAGE, "the images to preview"),
};
const sd_node_desc sd_node_PreviewImage = {
    .name = "PreviewImage", .version = 1, .category = "image",
    .doc = "Saves images as PNGs in the temp directory for a quick look.",
    .inputs = preview_in, .n_inputs = SD_COUNT(preview_in), .flags = SD_NODE_OUTPUT | SD_NODE_NO_CACHE,
    .run = run_preview_image,
};
