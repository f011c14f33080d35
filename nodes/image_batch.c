/* ImageBatch (ComfyUI's node: two image batches into one, the second resized to the first's
 * size with bilinear centre-crop scaling when they differ) and SdflowImageGrid (sdflow's own:
 * ComfyUI has no built-in grid node) which lays a batch out as one contact-sheet image. */
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

static sd_status run_batch(sd_node_run *r)
{
    const sd_tensor *a = sd_node_image_tensor(r, "image1"), *b = sd_node_image_tensor(r, "image2");
    if (!a || !b)
        return SD_ERR_INVALID;
    sd_value *resized = NULL;
    if (a->shape[1] != b->shape[1] || a->shape[2] != b->shape[2] || a->shape[3] != b->shape[3]) {
        sd_cl *cl;
        sd_dtensor *x = NULL, *y = NULL;
        sd_status st = sd_node_image_upload(r, "image2", &cl, &x);
        if (!st && x->shape[3] != a->shape[3])
            st = sd_run_error(r, SD_ERR_INVALID, "image2 has %lld channels, image1 %lld", (long long)x->shape[3],
                              (long long)a->shape[3]);
        if (!st)
            st = sd_node_common_upscale(r, cl, x, "bilinear", a->shape[2], a->shape[1], true, &y);
        if (!st && !(resized = sd_value_new(SD_TYPE_IMAGE)))
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        sd_tensor *t = NULL;
        if (!st && !(t = sd_value_add_tensor(resized, "image", 4, y->shape)))
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        if (!st && (st = sd_dtensor_download(y, t->data)))
            st = sd_node_op_fail(r, st);
        sd_dtensor_free(x);
        sd_dtensor_free(y);
        if (st) {
            sd_value_unref(resized);
            return st;
        }
        b = sd_value_tensor(resized, "image");
    }
    int64_t shape[4] = {a->shape[0] + b->shape[0], a->shape[1], a->shape[2], a->shape[3]};
    size_t na = (size_t)(a->shape[0] * a->shape[1] * a->shape[2] * a->shape[3]);
    size_t nb = (size_t)(b->shape[0] * b->shape[1] * b->shape[2] * b->shape[3]);
    sd_value *out = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = out ? sd_value_add_tensor(out, "image", 4, shape) : NULL;
    if (!t) {
        sd_value_unref(out);
        sd_value_unref(resized);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    memcpy(t->data, a->data, na * sizeof(float));
    memcpy(t->data + na, b->data, nb * sizeof(float));
    sd_value_unref(resized);
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc batch_in[] = {
    SD_IN_LINK("image1", SD_TYPE_IMAGE, "first images"),
    SD_IN_LINK("image2", SD_TYPE_IMAGE, "images appended (resized to image1's size if different)"),
};
static const sd_output_desc batch_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "image1's items followed by image2's"),
};
const sd_node_desc sd_node_ImageBatch = {
    .name = "ImageBatch", .version = 1, .category = "image",
    .doc = "Concatenates two image batches.",
    .inputs = batch_in, .n_inputs = SD_COUNT(batch_in),
    .outputs = batch_out, .n_outputs = SD_COUNT(batch_out), .run = run_batch,
};

static sd_status run_grid(sd_node_run *r)
{
    const sd_tensor *in = sd_node_image_tensor(r, "images");
    if (!in)
        return SD_ERR_INVALID;
    int64_t n = in->shape[0], h = in->shape[1], w = in->shape[2], c = in->shape[3];
    int64_t cols = sd_run_int(r, "columns"), gap = sd_run_int(r, "spacing");
    cols = cols < n ? cols : n;
    int64_t rows = (n + cols - 1) / cols;
    int64_t shape[4] = {1, rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c};
    if (shape[1] > 16384 || shape[2] > 16384)
        return sd_run_error(r, SD_ERR_LIMIT, "grid of %lldx%lld pixels exceeds 16384", (long long)shape[2],
                            (long long)shape[1]);
    sd_value *out = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = out ? sd_value_add_tensor(out, "image", 4, shape) : NULL;
    if (!t) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    float bg = (float)sd_run_float(r, "background");
    size_t total = (size_t)(shape[1] * shape[2] * c);
    for (size_t i = 0; i < total; i++)
        t->data[i] = bg;
    for (int64_t k = 0; k < n; k++) {
        int64_t y0 = (k / cols) * (h + gap), x0 = (k % cols) * (w + gap);
        for (int64_t y = 0; y < h; y++)
            memcpy(t->data + ((y0 + y) * shape[2] + x0) * c, in->data + ((k * h + y) * w) * c,
                   (size_t)(w * c) * sizeof(float));
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc grid_in[] = {
    SD_IN_LINK("images", SD_TYPE_IMAGE, "the batch to lay out, row by row"),
    SD_IN_INT("columns", "4", 1, 256, "images per row (at most the batch size)"),
    SD_IN_INT("spacing", "4", 0, 256, "pixels between images"),
    SD_IN_FLOAT("background", "1.0", 0.0, 1.0, "grey level of the spacing and empty cells"),
};
static const sd_output_desc grid_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "one image holding the whole batch"),
};
const sd_node_desc sd_node_SdflowImageGrid = {
    .name = "SdflowImageGrid", .version = 1, .category = "image/sdflow",
    .doc = "sdflow's own node (not in ComfyUI): lays out an image batch as one contact sheet.",
    .inputs = grid_in, .n_inputs = SD_COUNT(grid_in),
    .outputs = grid_out, .n_outputs = SD_COUNT(grid_out), .run = run_grid,
};
