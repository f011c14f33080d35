/* Mask nodes as ComfyUI's comfy_extras/nodes_mask.py: InvertMask, SolidMask, ImageToMask,
 * MaskToImage, ThresholdMask, GrowMask, FeatherMask, CropMask, MaskComposite.
 * MASK values are [batch, height, width] floats (core/value.h); these run on the host, where
 * such per-pixel passes are bound by memory bandwidth, not arithmetic. */
#include "core/checked.h"
#include "nodes/node_util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RESOLUTION 16384

/* A new MASK value of [b, h, w] (zeros); reports the failure on r and returns NULL. */
static sd_value *new_mask(sd_node_run *r, int64_t b, int64_t h, int64_t w, sd_tensor **t)
{
    int64_t shape[3] = {b, h, w};
    sd_value *v = sd_value_new(SD_TYPE_MASK);
    if (!v || !(*t = sd_value_add_tensor(v, "mask", 3, shape))) {
        sd_value_unref(v);
        sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lldx%lld mask", (long long)b,
                     (long long)h, (long long)w);
        return NULL;
    }
    return v;
}

/* The [batch, height, width] tensor of a MASK input. */
static const sd_tensor *mask_in(sd_node_run *r, const char *input)
{
    return sd_value_tensor(sd_run_value(r, input), "mask");
}

static sd_status emit(sd_node_run *r, sd_value *v)
{
    if (!v)
        return SD_ERR_NOMEM; /* the error is already set */
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static size_t numel3(const sd_tensor *t)
{
    return (size_t)t->shape[0] * (size_t)t->shape[1] * (size_t)t->shape[2];
}

/* ---- InvertMask, ThresholdMask ---- */

static sd_status run_invert(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    sd_tensor *o;
    sd_value *v = new_mask(r, m->shape[0], m->shape[1], m->shape[2], &o);
    for (size_t i = 0; v && i < numel3(m); i++)
        o->data[i] = 1.0f - m->data[i];
    return emit(r, v);
}

static sd_status run_threshold(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    float value = (float)sd_run_float(r, "value");
    sd_tensor *o;
    sd_value *v = new_mask(r, m->shape[0], m->shape[1], m->shape[2], &o);
    for (size_t i = 0; v && i < numel3(m); i++)
        o->data[i] = m->data[i] > value ? 1.0f : 0.0f;
    return emit(r, v);
}

/* ---- SolidMask ---- */

static sd_status run_solid(sd_node_run *r)
{
    sd_tensor *o;
    sd_value *v = new_mask(r, 1, sd_run_int(r, "height"), sd_run_int(r, "width"), &o);
    float value = (float)sd_run_float(r, "value");
    for (size_t i = 0; v && i < numel3(o); i++)
        o->data[i] = value;
    return emit(r, v);
}

/* ---- ImageToMask, MaskToImage ---- */

static const char *const rgb_channels[] = {"red", "green", "blue", NULL};

static sd_status run_image_to_mask(sd_node_run *r)
{
    const sd_tensor *img = sd_value_tensor(sd_run_value(r, "image"), "image");
    const char *name = sd_run_string(r, "channel");
    int c = 0;
    while (rgb_channels[c] && strcmp(rgb_channels[c], name) != 0)
        c++;
    int64_t channels = img->shape[3];
    if (c >= channels)
        return sd_run_error(r, SD_ERR_INVALID, "the image has %lld channels, no %s channel",
                            (long long)channels, name);
    sd_tensor *o;
    sd_value *v = new_mask(r, img->shape[0], img->shape[1], img->shape[2], &o);
    for (size_t i = 0; v && i < numel3(o); i++)
        o->data[i] = img->data[i * (size_t)channels + (size_t)c];
    return emit(r, v);
}

static sd_status run_mask_to_image(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    int64_t shape[4] = {m->shape[0], m->shape[1], m->shape[2], 3};
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *o = v ? sd_value_add_tensor(v, "image", 4, shape) : NULL;
    if (!o) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < numel3(m); i++)
        o->data[3 * i] = o->data[3 * i + 1] = o->data[3 * i + 2] = m->data[i];
    return emit(r, v);
}

/* ---- GrowMask: |expand| passes of a 3x3 grey dilation (expand > 0) or erosion (< 0); the
 * footprint is a cross when tapered_corners, else the full square. Borders repeat the edge
 * pixel (scipy.ndimage's default 'reflect' mode, which is what ComfyUI's node calls). ---- */

static void morph_pass(const float *src, float *dst, int64_t h, int64_t w, bool dilate, bool corners)
{
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            float best = src[y * w + x];
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    if ((dx && dy && !corners) || (!dx && !dy))
                        continue;
                    int64_t yy = y + dy < 0 ? 0 : (y + dy >= h ? h - 1 : y + dy);
                    int64_t xx = x + dx < 0 ? 0 : (x + dx >= w ? w - 1 : x + dx);
                    float s = src[yy * w + xx];
                    best = dilate ? fmaxf(best, s) : fminf(best, s);
                }
            dst[y * w + x] = best;
        }
}

static sd_status run_grow(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    int64_t expand = sd_run_int(r, "expand"), b = m->shape[0], h = m->shape[1], w = m->shape[2];
    bool corners = !sd_run_bool(r, "tapered_corners");
    sd_tensor *o;
    sd_value *v = new_mask(r, b, h, w, &o);
    float *tmp = v ? malloc((size_t)(h * w) * sizeof *tmp) : NULL;
    if (v && !tmp) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    if (!v)
        return SD_ERR_NOMEM;
    memcpy(o->data, m->data, numel3(m) * sizeof(float));
    sd_status st = SD_OK;
    for (int64_t i = 0; i < (expand < 0 ? -expand : expand) && !st; i++) {
        for (int64_t k = 0; k < b; k++) {
            float *plane = o->data + k * h * w;
            morph_pass(plane, tmp, h, w, expand > 0, corners);
            memcpy(plane, tmp, (size_t)(h * w) * sizeof *tmp);
        }
        st = sd_run_progress(r, (int)i + 1, (int)(expand < 0 ? -expand : expand));
    }
    free(tmp);
    if (st) {
        sd_value_unref(v);
        return st;
    }
    return emit(r, v);
}

/* ---- FeatherMask: a linear ramp over the given number of pixels at each edge, the outermost
 * row or column scaled by 1/n, the n-th by n/n. (ComfyUI's loop for the right and bottom edges
 * starts at index -0, the first column/row; sdflow ramps the last ones as the node describes.) */

static sd_status run_feather(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    int64_t b = m->shape[0], h = m->shape[1], w = m->shape[2];
    int64_t left = sd_run_int(r, "left"), right = sd_run_int(r, "right");
    int64_t top = sd_run_int(r, "top"), bottom = sd_run_int(r, "bottom");
    left = left < w ? left : w;
    right = right < w ? right : w;
    top = top < h ? top : h;
    bottom = bottom < h ? bottom : h;
    sd_tensor *o;
    sd_value *v = new_mask(r, b, h, w, &o);
    if (!v)
        return SD_ERR_NOMEM;
    memcpy(o->data, m->data, numel3(m) * sizeof(float));
    for (int64_t k = 0; k < b; k++) {
        float *p = o->data + k * h * w;
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                float f = 1.0f;
                if (x < left)
                    f *= (float)(x + 1) / (float)left;
                if (w - 1 - x < right)
                    f *= (float)(w - x) / (float)right;
                if (y < top)
                    f *= (float)(y + 1) / (float)top;
                if (h - 1 - y < bottom)
                    f *= (float)(h - y) / (float)bottom;
                p[y * w + x] *= f;
            }
    }
    return emit(r, v);
}

/* ---- CropMask ---- */

static sd_status run_crop(sd_node_run *r)
{
    const sd_tensor *m = mask_in(r, "mask");
    int64_t b = m->shape[0], h = m->shape[1], w = m->shape[2];
    int64_t x = sd_run_int(r, "x"), y = sd_run_int(r, "y");
    int64_t cw = sd_run_int(r, "width"), ch = sd_run_int(r, "height");
    /* As torch slicing mask[:, y:y+height, x:x+width]: clipped to the mask. */
    x = x < w ? x : w;
    y = y < h ? y : h;
    cw = x + cw <= w ? cw : w - x;
    ch = y + ch <= h ? ch : h - y;
    if (cw < 1 || ch < 1)
        return sd_run_error(r, SD_ERR_INVALID, "crop at (%lld, %lld) lies outside the %lldx%lld mask",
                            (long long)x, (long long)y, (long long)w, (long long)h);
    sd_tensor *o;
    sd_value *v = new_mask(r, b, ch, cw, &o);
    for (int64_t k = 0; v && k < b; k++)
        for (int64_t row = 0; row < ch; row++)
            memcpy(o->data + (k * ch + row) * cw, m->data + (k * h + y + row) * w + x, (size_t)cw * sizeof(float));
    return emit(r, v);
}

/* ---- MaskComposite: combine source into destination at (x, y), clamped to [0, 1]. ---- */

static const char *const composite_ops[] = {"multiply", "add", "subtract", "and", "or", "xor", NULL};

static float combine(int op, float d, float s)
{
    switch (op) {
    case 0: return d * s;
    case 1: return d + s;
    case 2: return d - s;
    case 3: return (d != 0.0f && s != 0.0f) ? 1.0f : 0.0f;
    case 4: return (d != 0.0f || s != 0.0f) ? 1.0f : 0.0f;
    default: return ((d != 0.0f) != (s != 0.0f)) ? 1.0f : 0.0f;
    }
}

static sd_status run_composite(sd_node_run *r)
{
    const sd_tensor *d = mask_in(r, "destination"), *s = mask_in(r, "source");
    int64_t x = sd_run_int(r, "x"), y = sd_run_int(r, "y");
    const char *name = sd_run_string(r, "operation");
    int op = 0;
    while (composite_ops[op] && strcmp(composite_ops[op], name) != 0)
        op++;
    int64_t b = d->shape[0], h = d->shape[1], w = d->shape[2];
    sd_tensor *o;
    sd_value *v = new_mask(r, b, h, w, &o);
    if (!v)
        return SD_ERR_NOMEM;
    memcpy(o->data, d->data, numel3(d) * sizeof(float));
    int64_t right = x + s->shape[2] < w ? x + s->shape[2] : w;
    int64_t bottom = y + s->shape[1] < h ? y + s->shape[1] : h;
    for (int64_t k = 0; k < b; k++) {
        /* A smaller source batch repeats, as ComfyUI's repeat_to_batch_size. */
        const float *sp = s->data + (k % s->shape[0]) * s->shape[1] * s->shape[2];
        for (int64_t yy = y; yy < bottom; yy++)
            for (int64_t xx = x; xx < right; xx++) {
                float *dp = &o->data[(k * h + yy) * w + xx];
                *dp = combine(op, *dp, sp[(yy - y) * s->shape[2] + (xx - x)]);
            }
    }
    for (size_t i = 0; i < numel3(o); i++)
        o->data[i] = fminf(fmaxf(o->data[i], 0.0f), 1.0f);
    return emit(r, v);
}

/* ---- Descriptors ---- */

static const sd_output_desc mask_out[] = {SD_OUT("MASK", SD_TYPE_MASK, "the mask")};
#define MASK_IN SD_IN_LINK("mask", SD_TYPE_MASK, "the mask")
#define MASK_NODE(nm, fn, dc, ins)                                                                 \
    const sd_node_desc sd_node_##nm = {                                                          \
        .name = #nm, .version = 1, .category = "mask", .doc = dc, .inputs = ins,                 \
        .n_inputs = SD_COUNT(ins), .outputs = mask_out, .n_outputs = SD_COUNT(mask_out), .run = fn, \
    }

static const sd_input_desc invert_in[] = {MASK_IN};
MASK_NODE(InvertMask, run_invert, "1 - mask.", invert_in);

static const sd_input_desc threshold_in[] = {
    MASK_IN,
    SD_IN_FLOAT("value", "0.5", 0, 1, "values above it become 1, the rest 0"),
};
MASK_NODE(ThresholdMask, run_threshold, "Binarizes a mask at a threshold.", threshold_in);

static const sd_input_desc solid_in[] = {
    SD_IN_FLOAT("value", "1.0", 0, 1, "the mask value everywhere"),
    SD_IN_INT("width", "512", 1, MAX_RESOLUTION, "mask width in pixels"),
    SD_IN_INT("height", "512", 1, MAX_RESOLUTION, "mask height in pixels"),
};
MASK_NODE(SolidMask, run_solid, "A mask of one value, [1, height, width].", solid_in);

static const sd_input_desc image_to_mask_in[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("channel", "red", rgb_channels, "the channel that becomes the mask"),
};
MASK_NODE(ImageToMask, run_image_to_mask, "One channel of an image as a mask.", image_to_mask_in);

static const sd_input_desc grow_in[] = {
    MASK_IN,
    SD_IN_INT("expand", "0", -MAX_RESOLUTION, MAX_RESOLUTION, "pixels to grow (positive) or shrink (negative)"),
    SD_IN_BOOL("tapered_corners", "true", "grow with a cross (rounder corners) instead of a square"),
};
MASK_NODE(GrowMask, run_grow, "Grows or shrinks a mask by whole pixels (grey dilation/erosion).", grow_in);

static const sd_input_desc feather_in[] = {
    MASK_IN,
    SD_IN_INT("left", "0", 0, MAX_RESOLUTION, "ramp width at the left edge"),
    SD_IN_INT("top", "0", 0, MAX_RESOLUTION, "ramp height at the top edge"),
    SD_IN_INT("right", "0", 0, MAX_RESOLUTION, "ramp width at the right edge"),
    SD_IN_INT("bottom", "0", 0, MAX_RESOLUTION, "ramp height at the bottom edge"),
};
MASK_NODE(FeatherMask, run_feather, "Fades a mask linearly towards its edges.", feather_in);

static const sd_input_desc crop_in[] = {
    MASK_IN,
    SD_IN_INT("x", "0", 0, MAX_RESOLUTION, "left edge of the crop"),
    SD_IN_INT("y", "0", 0, MAX_RESOLUTION, "top edge of the crop"),
    SD_IN_INT("width", "512", 1, MAX_RESOLUTION, "crop width (clipped to the mask)"),
    SD_IN_INT("height", "512", 1, MAX_RESOLUTION, "crop height (clipped to the mask)"),
};
MASK_NODE(CropMask, run_crop, "A rectangle cut out of a mask.", crop_in);

static const sd_input_desc composite_in[] = {
    SD_IN_LINK("destination", SD_TYPE_MASK, "the mask combined into"),
    SD_IN_LINK("source", SD_TYPE_MASK, "the mask combined from"),
    SD_IN_INT("x", "0", 0, MAX_RESOLUTION, "where the source's left edge lands"),
    SD_IN_INT("y", "0", 0, MAX_RESOLUTION, "where the source's top edge lands"),
    SD_IN_ENUM("operation", "multiply", composite_ops, "how overlapping values combine (and/or/xor: nonzero is true)"),
};
MASK_NODE(MaskComposite, run_composite, "Combines two masks at an offset; the result is clamped to [0, 1].",
          composite_in);

static const sd_input_desc mask_to_image_in[] = {MASK_IN};
static const sd_output_desc image_out[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "the mask as a grey image")};
const sd_node_desc sd_node_MaskToImage = {
    .name = "MaskToImage", .version = 1, .category = "mask", .doc = "A mask as a grey RGB image.",
    .inputs = mask_to_image_in, .n_inputs = SD_COUNT(mask_to_image_in), .outputs = image_out,
    .n_outputs = SD_COUNT(image_out), .run = run_mask_to_image,
};
