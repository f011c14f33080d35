/* EmptyImage (ComfyUI's node of the same name): a batch of images of one colour. */
#include "core/checked.h"
#include "nodes/node_util.h"
#include <inttypes.h>

/* One image tensor never exceeds the largest single device buffer (2 GiB on PoCL). */
#define IMAGE_MAX_BYTES ((size_t)2 << 30)

static sd_status run(sd_node_run *r)
{
    int64_t w = sd_run_int(r, "width"), h = sd_run_int(r, "height"), n = sd_run_int(r, "batch_size");
    int64_t color = sd_run_int(r, "color"), shape[4] = {n, h, w, 3};
    size_t bytes;
    if (!sd_shape_bytes(shape, 4, sizeof(float), &bytes) || bytes > IMAGE_MAX_BYTES)
        return sd_run_error(r, SD_ERR_LIMIT, "%" PRId64 " images of %" PRId64 "x%" PRId64 " exceed %zu bytes", n, w,
                            h, IMAGE_MAX_BYTES);
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = v ? sd_value_add_tensor(v, "image", 4, shape) : NULL;
    if (!t) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte image", bytes);
    }
    /* ComfyUI: each byte / 255 in double, stored as float32. */
    float rgb[3] = {(float)((double)((color >> 16) & 0xFF) / 255.0), (float)((double)((color >> 8) & 0xFF) / 255.0),
                    (float)((double)(color & 0xFF) / 255.0)};
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        t->data[i] = rgb[i % 3];
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc inputs[] = {
    SD_IN_INT("width", "512", 1, 16384, "image width in pixels"),
    SD_IN_INT("height", "512", 1, 16384, "image height in pixels"),
    SD_IN_INT("batch_size", "1", 1, 4096, "number of images"),
    SD_IN_INT("color", "0", 0, 0xFFFFFF, "colour as 0xRRGGBB (each byte / 255)"),
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "[batch_size, height, width, 3] of the colour"),
};
const sd_node_desc sd_node_EmptyImage = {
    .name = "EmptyImage", .version = 1, .category = "image",
    .doc = "A batch of images filled with one colour.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run,
};
