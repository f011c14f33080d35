/* LatentComposite, LatentBlend, LatentFlip, LatentRotate and LatentCrop (ComfyUI's nodes.py).
 *
 * Each output is a copy of its first LATENT input with new "samples": the noise mask,
 * batch_index and other entries pass through unchanged, as ComfyUI's dict copy does (a flip,
 * rotation or crop does not move the noise mask; the second input's mask is dropped). Pixel
 * offsets and sizes are divided by 8 (floor) as ComfyUI does; clipping follows Python's
 * slicing. Batches and channels broadcast as torch does (equal, or 1 on the pasted or blended
 * side). */
#include "core/checked.h"
#include "nodes/image_device.h"
#include "nodes/latent_resize.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* One latent tensor never exceeds the largest single device buffer (2 GiB on PoCL). */
#define LATENT_MAX_BYTES ((size_t)2 << 30)
#define MAX_RES 16384 /* ComfyUI's MAX_RESOLUTION */

/* The samples [B, C, H, W] (all >= 1) of LATENT input `input`, or NULL (error recorded). */
static const sd_tensor *latent_in(sd_node_run *r, const char *input)
{
    const sd_tensor *t = sd_value_tensor(sd_run_value(r, input), "samples");
    if (!t || t->ndim != 4 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1 || t->shape[3] < 1) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' is not a latent [batch, channels, height, width]", input);
        return NULL;
    }
    return t;
}

/* *out: a new LATENT with every entry of LATENT input `input` but its samples, and zero samples
 * of `shape` (*samples). Errors are recorded as the node's. */
static sd_status latent_like(sd_node_run *r, const char *input, const int64_t shape[4], sd_value **out,
                             sd_tensor **samples)
{
    size_t bytes;
    *out = NULL;
    if (!sd_shape_bytes(shape, 4, sizeof(float), &bytes) || bytes > LATENT_MAX_BYTES)
        return sd_run_error(r, SD_ERR_LIMIT, "a latent [%lld, %lld, %lld, %lld] exceeds %zu bytes", (long long)shape[0],
                            (long long)shape[1], (long long)shape[2], (long long)shape[3], LATENT_MAX_BYTES);
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    *samples = v ? sd_value_add_tensor(v, "samples", 4, shape) : NULL;
    if (!*samples || !sd_value_copy_contents(v, sd_run_value(r, input), "samples")) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte latent", bytes);
    }
    *out = v;
    return SD_OK;
}

/* Python's slice [start:stop] of an axis of n items: returns its length (>= 0), *first its
 * first index. */
static int64_t py_slice(int64_t start, int64_t stop, int64_t n, int64_t *first)
{
    start = start < 0 ? (start + n < 0 ? 0 : start + n) : (start > n ? n : start);
    stop = stop < 0 ? (stop + n < 0 ? 0 : stop + n) : (stop > n ? n : stop);
    *first = start;
    return stop > start ? stop - start : 0;
}

/* Index into [B, C, H, W] data of shape s. */
static inline size_t idx(const int64_t *s, int64_t b, int64_t c, int64_t y, int64_t x)
{
    return (size_t)(((b * s[1] + c) * s[2] + y) * s[3] + x);
}

/* t[b, c, y, x], batch and channel broadcast from size 1 (torch). */
static inline float at_bc(const sd_tensor *t, int64_t b, int64_t c, int64_t y, int64_t x)
{
    return t->data[idx(t->shape, t->shape[0] == 1 ? 0 : b, t->shape[1] == 1 ? 0 : c, y, x)];
}

/* True when `from` broadcasts onto `to` in dimension d (equal, or 1). */
static bool fits(const sd_tensor *from, const sd_tensor *to, int d)
{
    return from->shape[d] == to->shape[d] || from->shape[d] == 1;
}

/* ---- LatentComposite ---- */

/* ComfyUI's feather mask for a vh x vw paste: ones, then for t < feather each edge row/column
 * t (counted from the edge, Python slicing: past the far side it wraps) scaled by
 * (t + 1) / feather in float, for the edges that do not touch the destination's border, in
 * ComfyUI's order (top, bottom, left, right). NULL when memory runs out. */
static float *feather_mask(int64_t vh, int64_t vw, int64_t feather, bool top, bool bottom, bool left, bool right)
{
    float *m = malloc((size_t)(vh * vw) * sizeof *m);
    for (int64_t i = 0; m && i < vh * vw; i++)
        m[i] = 1.0f;
    for (int64_t t = 0; m && t < feather; t++) {
        float f = (float)((1.0 / (double)feather) * (double)(t + 1));
        int64_t first;
        bool rows[2] = {top, bottom}, cols[2] = {left, right};
        for (int e = 0; e < 2; e++) {
            int64_t start = e ? vh - 1 - t : t, n = rows[e] ? py_slice(start, start + 1, vh, &first) : 0;
            for (int64_t x = 0; n && x < vw; x++)
                m[first * vw + x] *= f;
        }
        for (int e = 0; e < 2; e++) {
            int64_t start = e ? vw - 1 - t : t, n = cols[e] ? py_slice(start, start + 1, vw, &first) : 0;
            for (int64_t y = 0; n && y < vh; y++)
                m[y * vw + first] *= f;
        }
    }
    return m;
}

static sd_status run_composite(sd_node_run *r)
{
    const sd_tensor *to = latent_in(r, "samples_to"), *from = to ? latent_in(r, "samples_from") : NULL;
    if (!from)
        return SD_ERR_INVALID;
    if (!fits(from, to, 0) || !fits(from, to, 1))
        return sd_run_error(r, SD_ERR_INVALID,
                            "samples_from [%lld, %lld, ...] does not fit samples_to [%lld, %lld, ...] (batch and "
                            "channels must match or be 1)",
                            (long long)from->shape[0], (long long)from->shape[1], (long long)to->shape[0],
                            (long long)to->shape[1]);
    int64_t x = sd_run_int(r, "x") / 8, y = sd_run_int(r, "y") / 8, feather = sd_run_int(r, "feather") / 8;
    int64_t th = to->shape[2], tw = to->shape[3], y0, x0, sy0, sx0;
    /* Destination s[y:y+fh, x:x+fw], source from[:th-y, :tw-x]: torch needs equal lengths. */
    int64_t vh = py_slice(0, th - y, from->shape[2], &sy0), vw = py_slice(0, tw - x, from->shape[3], &sx0);
    if (py_slice(y, y + vh, th, &y0) != vh || py_slice(x, x + vw, tw, &x0) != vw)
        return sd_run_error(r, SD_ERR_INVALID, "the paste at x %lld, y %lld lies outside samples_to (%lldx%lld pixels)",
                            (long long)(x * 8), (long long)(y * 8), (long long)(tw * 8), (long long)(th * 8));
    sd_value *out;
    sd_tensor *s;
    sd_status st = latent_like(r, "samples_to", to->shape, &out, &s);
    if (st)
        return st;
    memcpy(s->data, to->data, (size_t)(to->shape[0] * to->shape[1] * th * tw) * sizeof(float));
    bool fade = feather && vh && vw;
    float *mask = fade ? feather_mask(vh, vw, feather, y != 0, y + vh < th, x != 0, x + vw < tw) : NULL;
    if (fade && !mask) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    for (int64_t b = 0; b < to->shape[0]; b++)
        for (int64_t c = 0; c < to->shape[1]; c++)
            for (int64_t i = 0; i < vh; i++)
                for (int64_t j = 0; j < vw; j++) {
                    float v = at_bc(from, b, c, i, j);
                    float *d = s->data + idx(s->shape, b, c, y + i, x + j);
                    if (mask) {
                        float m = mask[i * vw + j], rev = 1.0f - m;
                        *d = v * m + *d * rev;
                    } else {
                        *d = v;
                    }
                }
    free(mask);
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc composite_in[] = {
    SD_IN_LINK("samples_to", SD_TYPE_LATENT, "the latent pasted onto (its noise mask is kept)"),
    SD_IN_LINK("samples_from", SD_TYPE_LATENT, "the latent pasted (batch and channels: as samples_to's, or 1)"),
    SD_IN_INT("x", "0", 0, MAX_RES, "left edge of the paste in pixels (divided by 8)"),
    SD_IN_INT("y", "0", 0, MAX_RES, "top edge of the paste in pixels (divided by 8)"),
    SD_IN_INT("feather", "0", 0, MAX_RES,
              "pixels (divided by 8) over which the pasted edges fade in linearly; edges on the border of "
              "samples_to are not feathered"),
};
static const sd_output_desc composite_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "samples_to with samples_from pasted"),
};
const sd_node_desc sd_node_LatentComposite = {
    .name = "LatentComposite", .version = 1, .category = "latent",
    .doc = "Pastes one latent onto another at a pixel position, optionally with feathered edges.",
    .inputs = composite_in, .n_inputs = SD_COUNT(composite_in),
    .outputs = composite_out, .n_outputs = SD_COUNT(composite_out), .run = run_composite,
};

/* ---- LatentBlend ---- */

static sd_status run_blend(sd_node_run *r)
{
    const sd_tensor *s1 = latent_in(r, "samples1"), *s2 = s1 ? latent_in(r, "samples2") : NULL;
    if (!s2)
        return SD_ERR_INVALID;
    int64_t shape[4] = {s1->shape[0], s1->shape[1], s1->shape[2], s1->shape[3]};
    for (int d = 0; d < 2; d++) {
        if (s1->shape[d] != s2->shape[d] && s1->shape[d] != 1 && s2->shape[d] != 1)
            return sd_run_error(r, SD_ERR_INVALID, "samples1 has %s %lld, samples2 %lld (they must match or one be 1)",
                                d ? "channels" : "batch", (long long)s1->shape[d], (long long)s2->shape[d]);
        shape[d] = s1->shape[d] > s2->shape[d] ? s1->shape[d] : s2->shape[d];
    }
    sd_value *out;
    sd_tensor *o;
    sd_status st = latent_like(r, "samples1", shape, &out, &o);
    if (st)
        return st;
    /* ComfyUI: a samples2 of another size is resized to samples1's (bicubic, centre crop to the
     * aspect ratio). Equal sizes are left as they are (torch's bicubic copies them). */
    sd_tensor resized = {.ndim = 4, .shape = {s2->shape[0], s2->shape[1], s1->shape[2], s1->shape[3]}};
    const sd_tensor *b2 = s2;
    if (s2->shape[2] != s1->shape[2] || s2->shape[3] != s1->shape[3]) {
        size_t n;
        if (!sd_tensor_numel(&resized, &n) || !(resized.data = malloc(n * sizeof(float)))) {
            sd_value_unref(out);
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory resizing samples2");
        }
        if ((st = sd_latent_common_upscale(sd_run_context(r), s2, s1->shape[3], s1->shape[2], "bicubic", true,
                                           &resized))) {
            free(resized.data);
            sd_value_unref(out);
            return sd_node_op_fail(r, st);
        }
        b2 = &resized;
    }
    double f = sd_run_float(r, "blend_factor");
    float f1 = (float)f, f2 = (float)(1.0 - f); /* torch: Python scalars as float32 */
    for (int64_t b = 0; b < shape[0]; b++)
        for (int64_t c = 0; c < shape[1]; c++)
            for (int64_t i = 0; i < shape[2]; i++)
                for (int64_t j = 0; j < shape[3]; j++) {
                    o->data[idx(shape, b, c, i, j)] = at_bc(s1, b, c, i, j) * f1 + at_bc(b2, b, c, i, j) * f2;
                }
    free(resized.data);
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc blend_in[] = {
    SD_IN_LINK("samples1", SD_TYPE_LATENT, "the first latent (its noise mask is kept)"),
    SD_IN_LINK("samples2", SD_TYPE_LATENT,
               "the second latent, resized to the first's size (bicubic, centre crop) when it differs"),
    SD_IN_FLOAT("blend_factor", "0.5", 0.0, 1.0, "weight of samples1; samples2 gets 1 - blend_factor"),
};
static const sd_output_desc blend_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "samples1 * blend_factor + samples2 * (1 - blend_factor)"),
};
const sd_node_desc sd_node_LatentBlend = {
    .name = "LatentBlend", .version = 1, .category = "_for_testing",
    .doc = "Mixes two latents linearly.",
    .inputs = blend_in, .n_inputs = SD_COUNT(blend_in),
    .outputs = blend_out, .n_outputs = SD_COUNT(blend_out), .run = run_blend,
};

/* ---- LatentFlip and LatentRotate ---- */

/* Output 0: the samples of input "samples" rearranged: out[b, c, i, j] = in[b, c, src(i, j)],
 * the output's height and width swapped when `transpose`. `kind` picks src (below). */
enum remap { FLIP_ROWS, FLIP_COLS, ROT_90, ROT_180, ROT_270, IDENTITY };

static sd_status remap(sd_node_run *r, enum remap kind)
{
    const sd_tensor *in = latent_in(r, "samples");
    if (!in)
        return SD_ERR_INVALID;
    int64_t h = in->shape[2], w = in->shape[3];
    bool transpose = kind == ROT_90 || kind == ROT_270;
    int64_t shape[4] = {in->shape[0], in->shape[1], transpose ? w : h, transpose ? h : w};
    sd_value *out;
    sd_tensor *o;
    sd_status st = latent_like(r, "samples", shape, &out, &o);
    if (st)
        return st;
    for (int64_t b = 0; b < shape[0]; b++)
        for (int64_t c = 0; c < shape[1]; c++)
            for (int64_t i = 0; i < shape[2]; i++)
                for (int64_t j = 0; j < shape[3]; j++) {
                    int64_t sy = i, sx = j; /* torch.flip / torch.rot90(k, dims=[3, 2]) */
                    switch (kind) {
                    case FLIP_ROWS: sy = h - 1 - i; break;
                    case FLIP_COLS: sx = w - 1 - j; break;
                    case ROT_90: sy = h - 1 - j, sx = i; break;
                    case ROT_180: sy = h - 1 - i, sx = w - 1 - j; break;
                    case ROT_270: sy = j, sx = w - 1 - i; break;
                    case IDENTITY: break;
                    }
                    o->data[idx(shape, b, c, i, j)] = in->data[idx(in->shape, b, c, sy, sx)];
                }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const char *const flip_methods[] = {"x-axis: vertically", "y-axis: horizontally", NULL};
static const char *const rotations[] = {"none", "90 degrees", "180 degrees", "270 degrees", NULL};

static sd_status run_flip(sd_node_run *r)
{
    return remap(r, strcmp(sd_run_string(r, "flip_method"), flip_methods[0]) == 0 ? FLIP_ROWS : FLIP_COLS);
}

static sd_status run_rotate(sd_node_run *r)
{
    static const enum remap kinds[] = {IDENTITY, ROT_90, ROT_180, ROT_270};
    const char *rot = sd_run_string(r, "rotation");
    size_t k = 0;
    while (rotations[k] && strcmp(rotations[k], rot) != 0)
        k++;
    if (!rotations[k])
        return sd_run_error(r, SD_ERR_INVALID, "unknown rotation '%s'", rot);
    return remap(r, kinds[k]);
}

static const sd_output_desc transform_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the transformed latent (its noise mask unchanged, as ComfyUI)"),
};
static const sd_input_desc flip_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to flip"),
    SD_IN_ENUM("flip_method", "x-axis: vertically", flip_methods,
               "x-axis: vertically (top and bottom swap); y-axis: horizontally (left and right swap)"),
};
const sd_node_desc sd_node_LatentFlip = {
    .name = "LatentFlip", .version = 1, .category = "latent/transform",
    .doc = "Mirrors latents vertically or horizontally.",
    .inputs = flip_in, .n_inputs = SD_COUNT(flip_in),
    .outputs = transform_out, .n_outputs = SD_COUNT(transform_out), .run = run_flip,
};

static const sd_input_desc rotate_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to rotate"),
    SD_IN_ENUM("rotation", "none", rotations, "clockwise rotation"),
};
const sd_node_desc sd_node_LatentRotate = {
    .name = "LatentRotate", .version = 1, .category = "latent/transform",
    .doc = "Rotates latents clockwise by a multiple of 90 degrees.",
    .inputs = rotate_in, .n_inputs = SD_COUNT(rotate_in),
    .outputs = transform_out, .n_outputs = SD_COUNT(transform_out), .run = run_rotate,
};

/* ---- LatentCrop ---- */

static sd_status run_crop(sd_node_run *r)
{
    const sd_tensor *in = latent_in(r, "samples");
    if (!in)
        return SD_ERR_INVALID;
    int64_t h = in->shape[2], w = in->shape[3], x = sd_run_int(r, "x") / 8, y = sd_run_int(r, "y") / 8;
    /* ComfyUI keeps at least 8 latent columns and rows (64 pixels) by moving x and y back; on a
     * latent smaller than that they turn negative and count from the end (Python slicing). */
    x = x > w - 8 ? w - 8 : x;
    y = y > h - 8 ? h - 8 : y;
    int64_t x0, y0, cw = py_slice(x, x + sd_run_int(r, "width") / 8, w, &x0);
    int64_t ch = py_slice(y, y + sd_run_int(r, "height") / 8, h, &y0);
    int64_t shape[4] = {in->shape[0], in->shape[1], ch, cw};
    sd_value *out;
    sd_tensor *o;
    sd_status st = latent_like(r, "samples", shape, &out, &o);
    if (st)
        return st;
    for (int64_t b = 0; b < shape[0]; b++)
        for (int64_t c = 0; c < shape[1]; c++)
            for (int64_t i = 0; i < ch; i++)
                memcpy(o->data + idx(shape, b, c, i, 0), in->data + idx(in->shape, b, c, y0 + i, x0),
                       (size_t)cw * sizeof(float));
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc crop_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to crop"),
    SD_IN_INT("width", "512", 64, MAX_RES, "crop width in pixels (divided by 8; cut at the right edge)"),
    SD_IN_INT("height", "512", 64, MAX_RES, "crop height in pixels (divided by 8; cut at the bottom edge)"),
    SD_IN_INT("x", "0", 0, MAX_RES, "left edge in pixels (divided by 8; at most 8 latent columns from the right)"),
    SD_IN_INT("y", "0", 0, MAX_RES, "top edge in pixels (divided by 8; at most 8 latent rows from the bottom)"),
};
const sd_node_desc sd_node_LatentCrop = {
    .name = "LatentCrop", .version = 1, .category = "latent/transform",
    .doc = "Crops a rectangle out of latents.",
    .inputs = crop_in, .n_inputs = SD_COUNT(crop_in),
    .outputs = transform_out, .n_outputs = SD_COUNT(transform_out), .run = run_crop,
};
