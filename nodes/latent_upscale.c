/* LatentUpscale and LatentUpscaleBy (ComfyUI's nodes of the same names): resize the "samples"
 * of a LATENT with comfy.utils.common_upscale (nodes/latent_resize.h). Every other entry of the
 * latent (a noise mask, attributes) passes through unchanged, as ComfyUI's dict copy does. */
#include "core/checked.h"
#include "nodes/image_device.h"
#include "nodes/latent_resize.h"
#include "nodes/node_util.h"
#include <math.h>
#include <string.h>

/* One latent tensor never exceeds the largest single device buffer (2 GiB on PoCL). */
#define LATENT_MAX_BYTES ((size_t)2 << 30)

/* Sets output 0 to a copy of the LATENT on input "samples" whose samples are resized to
 * width x height (latent units). */
static sd_status upscale(sd_node_run *r, int64_t width, int64_t height, bool crop_center)
{
    const sd_value *in = sd_run_value(r, "samples");
    const sd_tensor *s = sd_value_tensor(in, "samples");
    if (!s || s->ndim != 4 || s->shape[0] < 1 || s->shape[1] < 1 || s->shape[2] < 1 || s->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a latent [batch, channels, height, width]");
    if (width < 1 || height < 1)
        return sd_run_error(r, SD_ERR_INVALID, "target latent size %lldx%lld is empty", (long long)width,
                            (long long)height);
    int64_t shape[4] = {s->shape[0], s->shape[1], height, width};
    size_t bytes;
    if (!sd_shape_bytes(shape, 4, sizeof(float), &bytes) || bytes > LATENT_MAX_BYTES)
        return sd_run_error(r, SD_ERR_LIMIT, "a %lldx%lld latent of batch %lld exceeds %zu bytes", (long long)width,
                            (long long)height, (long long)s->shape[0], LATENT_MAX_BYTES);
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    sd_tensor *out = v ? sd_value_add_tensor(v, "samples", 4, shape) : NULL;
    bool ok = out != NULL;
    ok = ok && sd_value_copy_contents(v, in, "samples");
    if (!ok) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte latent", bytes);
    }
    sd_status st = sd_latent_common_upscale(sd_run_context(r), s, width, height, sd_run_string(r, "upscale_method"),
                                            crop_center, out);
    if (st) {
        sd_value_unref(v);
        return sd_node_op_fail(r, st);
    }
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status run_upscale(sd_node_run *r)
{
    int64_t width = sd_run_int(r, "width"), height = sd_run_int(r, "height");
    if (width == 0 && height == 0) {
        sd_run_set_output(r, 0, sd_value_ref(sd_run_value(r, "samples")));
        return SD_OK;
    }
    const sd_tensor *s = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    if (!s || s->ndim != 4 || s->shape[2] < 1 || s->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a latent [batch, channels, height, width]");
    /* ComfyUI: at least 64 pixels a side; one side 0 keeps the aspect ratio (Python's round). */
    double lw = (double)s->shape[3], lh = (double)s->shape[2];
    if (width == 0) {
        height = height > 64 ? height : 64;
        width = (int64_t)fmax(64.0, nearbyint(lw * (double)height / lh));
    } else if (height == 0) {
        width = width > 64 ? width : 64;
        height = (int64_t)fmax(64.0, nearbyint(lh * (double)width / lw));
    } else {
        width = width > 64 ? width : 64;
        height = height > 64 ? height : 64;
    }
    return upscale(r, width / 8, height / 8, strcmp(sd_run_string(r, "crop"), "center") == 0);
}

static sd_status run_upscale_by(sd_node_run *r)
{
    const sd_tensor *s = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    if (!s || s->ndim != 4)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a latent [batch, channels, height, width]");
    double by = sd_run_float(r, "scale_by");
    return upscale(r, (int64_t)nearbyint((double)s->shape[3] * by), (int64_t)nearbyint((double)s->shape[2] * by),
                   false);
}

static const char *const crops[] = {"disabled", "center", NULL};
#define METHOD_INPUT                                                                                            \
    SD_IN_ENUM("upscale_method", "nearest-exact", sd_latent_upscale_methods,                                    \
               "torch interpolate modes (nearest-exact, bilinear, area, bicubic) or ComfyUI's bislerp (slerp "  \
               "between channel vectors)")
static const sd_input_desc upscale_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latents to resize"),
    METHOD_INPUT,
    SD_IN_INT("width", "512", 0, 16384, "target width in pixels (at least 64, rounded down to a multiple of 8); "
                                        "0 keeps the aspect ratio from height"),
    SD_IN_INT("height", "512", 0, 16384, "target height in pixels (at least 64, rounded down to a multiple of 8); "
                                         "0 keeps the aspect ratio from width"),
    SD_IN_ENUM("crop", "disabled", crops, "center: crop the middle to the target aspect ratio first"),
};
static const sd_output_desc latent_out[] = {SD_OUT("LATENT", SD_TYPE_LATENT, "the resized latents")};
const sd_node_desc sd_node_LatentUpscale = {
    .name = "LatentUpscale", .version = 1, .category = "latent",
    .doc = "Resizes latents to a pixel width and height (both 0: unchanged).",
    .inputs = upscale_in, .n_inputs = SD_COUNT(upscale_in),
    .outputs = latent_out, .n_outputs = SD_COUNT(latent_out), .run = run_upscale,
};

static const sd_input_desc upscale_by_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latents to resize"),
    METHOD_INPUT,
    SD_IN_FLOAT("scale_by", "1.5", 0.01, 8.0, "factor on the latent width and height (Python-rounded)"),
};
const sd_node_desc sd_node_LatentUpscaleBy = {
    .name = "LatentUpscaleBy", .version = 1, .category = "latent",
    .doc = "Resizes latents by a factor (the first step of a hires fix).",
    .inputs = upscale_by_in, .n_inputs = SD_COUNT(upscale_by_in),
    .outputs = latent_out, .n_outputs = SD_COUNT(latent_out), .run = run_upscale_by,
};
