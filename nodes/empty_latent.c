/* EmptyLatentImage and EmptySD3LatentImage: a batch of zero latents of 4 or 16 channels (ComfyUI's
 * nodes of the same names; a sampler widens an empty 4-channel latent for a 16-channel model). */
#include "core/checked.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include <inttypes.h>

/* One latent tensor never exceeds the largest single device buffer (2 GiB on PoCL). */
#define LATENT_MAX_BYTES ((size_t)2 << 30)

/* ComfyUI's widgets step by 8; a size between steps is refused rather than rounded down: before
 * anything runs when the size is a literal, else when the node runs. */
static void check_sizes(sd_node_check *c)
{
    static const char *const sides[] = {"width", "height"};
    for (int i = 0; i < 2; i++) {
        int64_t v;
        if (sd_check_int(c, sides[i], &v) && v % 8)
            sd_check_problem(c, sides[i], "%" PRId64 " is not a multiple of 8", v);
    }
}

static void check(sd_node_check *c)
{
    check_sizes(c);
    sd_check_empty_latent(c, 4);
}

static void check_sd3(sd_node_check *c)
{
    check_sizes(c);
    sd_check_empty_latent(c, 16);
}

/* Output 0: zeros [batch_size, channels, height / 8, width / 8]. */
static sd_status run_zeros(sd_node_run *r, int channels)
{
    int64_t w = sd_run_int(r, "width"), h = sd_run_int(r, "height"), n = sd_run_int(r, "batch_size");
    if (w % 8 || h % 8)
        return sd_run_error(r, SD_ERR_INVALID, "%s %" PRId64 " is not a multiple of 8", w % 8 ? "width" : "height",
                            w % 8 ? w : h);
    int64_t shape[4] = {n, channels, h / 8, w / 8};
    size_t bytes;
    if (!sd_shape_bytes(shape, 4, sizeof(float), &bytes) || bytes > LATENT_MAX_BYTES)
        return sd_run_error(r, SD_ERR_LIMIT,
                            "latent %" PRId64 "x%dx%" PRId64 "x%" PRId64 " exceeds %zu bytes", n, channels,
                            h / 8, w / 8, LATENT_MAX_BYTES);
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    if (!v || !sd_value_add_tensor(v, "samples", 4, shape)) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte latent", bytes);
    }
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status run(sd_node_run *r)
{
    return run_zeros(r, 4);
}

static sd_status run_sd3(sd_node_run *r)
{
    return run_zeros(r, 16);
}

static const sd_input_desc inputs[] = {
    SD_IN_INT("width", "512", 16, 16384, "image width in pixels, a multiple of 8"),
    SD_IN_INT("height", "512", 16, 16384, "image height in pixels, a multiple of 8"),
    SD_IN_INT("batch_size", "1", 1, 4096, "number of latents"),
};
static const sd_output_desc outputs[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "zeros [batch_size, 4, height/8, width/8]"),
};
const sd_node_desc sd_node_EmptyLatentImage = {
    .name = "EmptyLatentImage", .version = 1, .category = "latent",
    .doc = "A batch of empty (zero) latents to start sampling from.",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run, .check = check,
};

static const sd_input_desc sd3_inputs[] = {
    SD_IN_INT("width", "1024", 16, 16384, "image width in pixels, a multiple of 8"),
    SD_IN_INT("height", "1024", 16, 16384, "image height in pixels, a multiple of 8"),
    SD_IN_INT("batch_size", "1", 1, 4096, "number of latents"),
};
static const sd_output_desc sd3_outputs[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "zeros [batch_size, 16, height/8, width/8]"),
};
const sd_node_desc sd_node_EmptySD3LatentImage = {
    .name = "EmptySD3LatentImage", .version = 1, .category = "latent/sd3",
    .doc = "A batch of empty (zero) 16-channel latents, for FLUX (and SD3) models.",
    .inputs = sd3_inputs, .n_inputs = SD_COUNT(sd3_inputs),
    .outputs = sd3_outputs, .n_outputs = SD_COUNT(sd3_outputs), .run = run_sd3, .check = check_sd3,
};
