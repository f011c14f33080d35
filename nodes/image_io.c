/* Image file input and output for the image nodes (see nodes/image_io.h). */
#include "nodes/image_io.h"
#include "core/checked.h"
#include "core/png.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A value holding one zeroed tensor; NULL with the error set on failure. */
static sd_value *new_tensor_value(sd_context *ctx, sd_type type, const char *name, int ndim,
                                  const int64_t *shape, sd_tensor **t)
{
    sd_value *v = sd_value_new(type);
    if (!v || !(*t = sd_value_add_tensor(v, name, ndim, shape))) {
        sd_value_unref(v);
        sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the %s", type == SD_TYPE_MASK ? "mask" : "image");
        return NULL;
    }
    return v;
}

sd_status sd_load_image(sd_context *ctx, const char *path, sd_value **image, sd_value **mask)
{
    *image = *mask = NULL;
    sd_image img;
    sd_status st = sd_png_read(ctx, path, NULL, &img);
    if (st)
        return st;
    size_t n = (size_t)img.width * img.height; /* bounded by the pixel budget */
    int c = img.channels;
    bool has_alpha = (c == 2 || c == 4) && !img.alpha_from_key;
    int64_t ishape[4] = {1, img.height, img.width, 3};
    int64_t mshape[3] = {1, has_alpha ? img.height : 64, has_alpha ? img.width : 64};
    sd_tensor *it, *mt;
    sd_value *iv = new_tensor_value(ctx, SD_TYPE_IMAGE, "image", 4, ishape, &it);
    sd_value *mv = iv ? new_tensor_value(ctx, SD_TYPE_MASK, "mask", 3, mshape, &mt) : NULL;
    if (!mv) {
        sd_value_unref(iv);
        st = SD_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const float *px = img.data + i * (size_t)c;
        float *out = it->data + i * 3;
        if (c <= 2) {
            out[0] = out[1] = out[2] = px[0];
        } else {
            out[0] = px[0];
            out[1] = px[1];
            out[2] = px[2];
        }
        if (has_alpha)
            mt->data[i] = 1.0f - px[c - 1];
    }
    *image = iv;
    *mask = mv;
done:
    sd_image_clear(&img);
    return st;
}

sd_status sd_load_image_mask(sd_context *ctx, const char *path, const char *channel, sd_value **mask)
{
    *mask = NULL;
    static const char *const names[] = {"red", "green", "blue", "alpha"};
    int which = -1;
    for (int k = 0; k < 4; k++)
        if (strcmp(channel, names[k]) == 0)
            which = k;
    if (which < 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "unknown channel '%s' (alpha, red, green, blue)", channel);
    sd_image img;
    sd_status st = sd_png_read(ctx, path, NULL, &img);
    if (st)
        return st;
    int c = img.channels;
    /* Where the channel lives in a pixel; -1: the file has no alpha (opaque). */
    int src = which == 3 ? (c == 2 || c == 4 ? c - 1 : -1) : (c <= 2 ? 0 : which);
    int64_t shape[3] = {1, img.height, img.width};
    sd_tensor *t;
    sd_value *v = new_tensor_value(ctx, SD_TYPE_MASK, "mask", 3, shape, &t);
    if (!v) {
        st = SD_ERR_NOMEM;
        goto done;
    }
    size_t n = (size_t)img.width * img.height;
    for (size_t i = 0; i < n; i++) {
        float x = src < 0 ? 1.0f : img.data[i * (size_t)c + (size_t)src];
        t->data[i] = which == 3 ? 1.0f - x : x;
    }
    *mask = v;
done:
    sd_image_clear(&img);
    return st;
}

/* Encodes image b of t with its provenance texts. */
static sd_status encode_one(sd_context *ctx, const sd_save_request *req, const sd_tensor *t, int64_t b,
                            unsigned char **png, size_t *len)
{
    size_t per_image = (size_t)t->shape[1] * (size_t)t->shape[2] * (size_t)t->shape[3];
    sd_image img = {.width = (uint32_t)t->shape[2], .height = (uint32_t)t->shape[1],
                    .channels = (int)t->shape[3], .bit_depth = 8, .data = t->data + (size_t)b * per_image};
    char engine[64], batch[32];
    sd_output_engine_text(engine, sizeof engine);
    snprintf(batch, sizeof batch, "%" PRId64, b);
    sd_png_text texts[8];
    size_t n = 0;
    for (size_t k = 0; k < req->n_interop && k < 3; k++)
        texts[n++] = req->interop[k];
    if (req->workflow_xml)
        texts[n++] = (sd_png_text){SD_PNG_KEY_WORKFLOW, req->workflow_xml};
    texts[n++] = (sd_png_text){SD_PNG_KEY_ENGINE, engine};
    if (req->provenance_json)
        texts[n++] = (sd_png_text){SD_PNG_KEY_PROVENANCE, req->provenance_json};
    if (req->node_id)
        texts[n++] = (sd_png_text){SD_PNG_KEY_NODE, req->node_id};
    texts[n++] = (sd_png_text){SD_PNG_KEY_BATCH, batch};
    return sd_png_encode(ctx, &img, texts, n, req->compression, png, len);
}

sd_status sd_save_images(sd_context *ctx, const sd_save_request *req, const sd_value *images,
                         sd_saved_fn saved, void *user)
{
    const sd_tensor *t = sd_value_tensor(images, "image");
    if (!t || t->ndim != 4 || (t->shape[3] != 3 && t->shape[3] != 4) || t->shape[0] < 1 ||
        t->shape[1] < 1 || t->shape[1] > SD_PNG_MAX_SIDE || t->shape[2] < 1 || t->shape[2] > SD_PNG_MAX_SIDE)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "IMAGE must be [batch, height, width, 3 or 4] with sides of 1 to %u pixels",
                            SD_PNG_MAX_SIDE);
    sd_output_names names;
    sd_status st = sd_output_names_open(ctx, req->dir, req->prefix, &names);
    for (int64_t b = 0; !st && b < t->shape[0]; b++) {
        unsigned char *png = NULL;
        char *path = NULL;
        size_t len = 0;
        if (!(st = encode_one(ctx, req, t, b, &png, &len)) &&
            !(st = sd_output_write(ctx, &names, "png", png, len, &path)) && saved)
            st = saved(user, path);
        free(png);
        free(path);
    }
    sd_output_names_clear(&names);
    return st;
}
