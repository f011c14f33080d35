/* ImageCompositeMasked and LatentCompositeMasked (ComfyUI's comfy_extras/nodes_mask.py and its
 * composite()): source pasted onto destination at (x, y) (latents: x and y in pixels, divided by
 * 8), weighted by the mask: out = mask * source + (1 - mask) * destination inside the pasted
 * rectangle, the destination unchanged elsewhere. Where the mask is 0 the destination comes
 * through bit for bit. The source may be resized to the destination first (bilinear); the mask
 * is resized bilinearly to the source's size; source and mask batches cycle over the
 * destination's batch. */
#include "core/checked.h"
#include "nodes/bilinear.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* Planar view of a tensor: batch items of c planes of h x w, or interleaved [h, w, c]. */
typedef struct planes {
    int64_t b, c, h, w;
    bool interleaved; /* IMAGE: [b, h, w, c]; LATENT: [b, c, h, w] */
    float *data;
} planes;

static inline float *at(const planes *p, int64_t b, int64_t c, int64_t y, int64_t x)
{
    return p->interleaved ? p->data + (((b * p->h + y) * p->w + x) * p->c + c)
                          : p->data + (((b * p->c + c) * p->h + y) * p->w + x);
}

/* comfy.utils composite() on dst in place. */
static sd_status composite(sd_node_run *r, planes *dst, const planes *src_in, int64_t x, int64_t y,
                           int64_t multiplier, bool resize_source)
{
    planes src = *src_in;
    float *resized = NULL, *mask = NULL;
    sd_status st = SD_OK;
    if (resize_source && (src.h != dst->h || src.w != dst->w)) {
        /* Each item resized as an [h, w, c] image (planar items one plane at a time). */
        size_t n;
        if (!sd_mul_size((size_t)(src.b * src.c), (size_t)(dst->h * dst->w), &n) ||
            !(resized = malloc(n * sizeof *resized))) {
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory resizing the source");
            goto done;
        }
        for (int64_t b = 0; b < src.b; b++) {
            if (src.interleaved) {
                sd_bilinear_resize(src.data + (size_t)(b * src.h * src.w * src.c), src.h, src.w, src.c,
                                   resized + (size_t)(b * dst->h * dst->w * src.c), dst->h, dst->w);
                continue;
            }
            for (int64_t c = 0; c < src.c; c++)
                sd_bilinear_resize(src.data + (size_t)((b * src.c + c) * src.h * src.w), src.h, src.w, 1,
                                   resized + (size_t)((b * src.c + c) * dst->h * dst->w), dst->h, dst->w);
        }
        src.data = resized;
        src.h = dst->h;
        src.w = dst->w;
    }
    const sd_tensor *mt = sd_run_has(r, "mask") ? sd_value_tensor(sd_run_value(r, "mask"), "mask") : NULL;
    int64_t mb = 1;
    if (mt) {
        if (mt->ndim != 3 || mt->shape[0] < 1 || mt->shape[1] < 1 || mt->shape[2] < 1) {
            st = sd_run_error(r, SD_ERR_INVALID, "input 'mask' is not a [batch, height, width] mask");
            goto done;
        }
        mb = mt->shape[0];
        if (!(mask = malloc((size_t)(mb * src.h * src.w) * sizeof *mask))) {
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int64_t b = 0; b < mb; b++)
            sd_bilinear_resize(mt->data + (size_t)(b * mt->shape[1] * mt->shape[2]), mt->shape[1], mt->shape[2], 1,
                               mask + (size_t)(b * src.h * src.w), src.h, src.w);
    }
    x = x < dst->w * multiplier ? x : dst->w * multiplier;
    y = y < dst->h * multiplier ? y : dst->h * multiplier;
    int64_t left = x / multiplier, top = y / multiplier;
    int64_t vw = dst->w - left < src.w ? dst->w - left : src.w, vh = dst->h - top < src.h ? dst->h - top : src.h;
    for (int64_t b = 0; b < dst->b; b++) {
        int64_t sb = b % src.b;
        const float *mp = mask ? mask + (size_t)((b % mb) * src.h * src.w) : NULL;
        for (int64_t yy = 0; yy < vh; yy++)
            for (int64_t xx = 0; xx < vw; xx++) {
                float m = mp ? mp[yy * src.w + xx] : 1.0f, inv = 1.0f - m;
                for (int64_t c = 0; c < dst->c; c++) {
                    float *d = at(dst, b, c, top + yy, left + xx);
                    *d = m * *at(&src, sb, c, yy, xx) + inv * *d;
                }
            }
    }
done:
    free(resized);
    free(mask);
    return st;
}

static sd_status run_image_composite(sd_node_run *r)
{
    const sd_tensor *dt = sd_value_tensor(sd_run_value(r, "destination"), "image");
    const sd_tensor *stt = sd_value_tensor(sd_run_value(r, "source"), "image");
    if (!dt || dt->ndim != 4 || !stt || stt->ndim != 4)
        return sd_run_error(r, SD_ERR_INVALID, "inputs 'destination' and 'source' must be images");
    if (dt->shape[3] != stt->shape[3])
        return sd_run_error(r, SD_ERR_INVALID, "destination has %lld channels, source %lld",
                            (long long)dt->shape[3], (long long)stt->shape[3]);
    sd_value *out = sd_value_copy(sd_run_value(r, "destination"));
    sd_tensor *ot = out ? sd_value_tensor(out, "image") : NULL;
    if (!ot) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    planes d = {ot->shape[0], ot->shape[3], ot->shape[1], ot->shape[2], true, ot->data};
    planes s = {stt->shape[0], stt->shape[3], stt->shape[1], stt->shape[2], true, stt->data};
    sd_status st = composite(r, &d, &s, sd_run_int(r, "x"), sd_run_int(r, "y"), 1, sd_run_bool(r, "resize_source"));
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static sd_status run_latent_composite(sd_node_run *r)
{
    const sd_tensor *dt = sd_value_tensor(sd_run_value(r, "destination"), "samples");
    const sd_tensor *stt = sd_value_tensor(sd_run_value(r, "source"), "samples");
    if (!dt || dt->ndim != 4 || !stt || stt->ndim != 4)
        return sd_run_error(r, SD_ERR_INVALID, "inputs 'destination' and 'source' must be [batch, c, h, w] latents");
    if (dt->shape[1] != stt->shape[1])
        return sd_run_error(r, SD_ERR_INVALID, "destination has %lld channels, source %lld",
                            (long long)dt->shape[1], (long long)stt->shape[1]);
    sd_value *out = sd_value_copy(sd_run_value(r, "destination"));
    sd_tensor *ot = out ? sd_value_tensor(out, "samples") : NULL;
    if (!ot) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    planes d = {ot->shape[0], ot->shape[1], ot->shape[2], ot->shape[3], false, ot->data};
    planes s = {stt->shape[0], stt->shape[1], stt->shape[2], stt->shape[3], false, stt->data};
    sd_status st = composite(r, &d, &s, sd_run_int(r, "x"), sd_run_int(r, "y"), 8, sd_run_bool(r, "resize_source"));
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

#define MAX_RES 16384.0 /* ComfyUI's MAX_RESOLUTION */

static const sd_input_desc image_in[] = {
    SD_IN_LINK("destination", SD_TYPE_IMAGE, "the image pasted onto"),
    SD_IN_LINK("source", SD_TYPE_IMAGE, "the image pasted"),
    SD_IN_INT("x", "0", 0, MAX_RES, "left edge of the paste in the destination, pixels"),
    SD_IN_INT("y", "0", 0, MAX_RES, "top edge of the paste in the destination, pixels"),
    SD_IN_BOOL("resize_source", "false", "resize the source to the destination's size first (bilinear)"),
    SD_IN_LINK_OPT("mask", SD_TYPE_MASK, "weight of the source (resized bilinearly to it); none: all source"),
};
static const sd_output_desc image_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the destination with the source pasted; unchanged where the mask is 0"),
};
const sd_node_desc sd_node_ImageCompositeMasked = {
    .name = "ImageCompositeMasked", .version = 1, .category = "image",
    .doc = "Pastes an image onto another through a mask (inpainting: put the result back into the original).",
    .inputs = image_in, .n_inputs = SD_COUNT(image_in),
    .outputs = image_out, .n_outputs = SD_COUNT(image_out), .run = run_image_composite,
};

static const sd_input_desc latent_in[] = {
    SD_IN_LINK("destination", SD_TYPE_LATENT, "the latent pasted onto"),
    SD_IN_LINK("source", SD_TYPE_LATENT, "the latent pasted"),
    SD_IN_INT("x", "0", 0, MAX_RES, "left edge of the paste in pixels (divided by 8)"),
    SD_IN_INT("y", "0", 0, MAX_RES, "top edge of the paste in pixels (divided by 8)"),
    SD_IN_BOOL("resize_source", "false", "resize the source to the destination's size first (bilinear)"),
    SD_IN_LINK_OPT("mask", SD_TYPE_MASK, "weight of the source (resized bilinearly to it); none: all source"),
};
static const sd_output_desc latent_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the destination with the source pasted (its noise mask kept)"),
};
const sd_node_desc sd_node_LatentCompositeMasked = {
    .name = "LatentCompositeMasked", .version = 1, .category = "latent",
    .doc = "Pastes a latent onto another through a mask.",
    .inputs = latent_in, .n_inputs = SD_COUNT(latent_in),
    .outputs = latent_out, .n_outputs = SD_COUNT(latent_out), .run = run_latent_composite,
};
