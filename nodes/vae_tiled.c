/* VAEDecodeTiled and VAEEncodeTiled (ComfyUI's nodes; comfy/sd.py VAE.decode_tiled_ and
 * encode_tiled_): the VAE over overlapping tiles blended with linear ramps, averaged over three
 * tilings (nodes/vae_tiles.h), so that images larger than the device can hold decode and encode
 * without visible seams. temporal_size and temporal_overlap are ComfyUI's inputs for video VAEs;
 * like ComfyUI, an image VAE ignores them (they are accepted so that workflows import). */
#include "core/checked.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include "nodes/vae_tiles.h"

/* The VAE input and the tile_size / overlap checks common to both nodes. */
static sd_status tiled_inputs(sd_node_run *r, sd_vae **vae, int64_t *tile, int64_t *overlap)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    sd_status st = sd_loaded_vae(h->loaded, vae);
    if (st)
        return sd_node_model_fail(r, st);
    *tile = sd_run_int(r, "tile_size");
    *overlap = sd_run_int(r, "overlap");
    if (*tile <= *overlap)
        return sd_run_error(r, SD_ERR_INVALID,
                            "tile_size %lld is not larger than overlap %lld: tiles would not advance", (long long)*tile,
                            (long long)*overlap);
    return SD_OK;
}

static sd_status run_decode_tiled(sd_node_run *r)
{
    sd_vae *vae;
    int64_t tile = 0, overlap = 0;
    sd_status st = tiled_inputs(r, &vae, &tile, &overlap);
    if (st)
        return st;
    const sd_vae_config *c = sd_vae_config_of(vae);
    const sd_tensor *lt = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[1] != c->z_channels || lt->shape[2] < 1 ||
        lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a [batch, %d, h, w] latent", c->z_channels);
    /* ComfyUI: overlap at most a quarter of the tile, both in latent cells. */
    if (tile < overlap * 4)
        overlap = tile / 4;
    int64_t f = sd_vae_factor(vae), ishape[4] = {lt->shape[0], lt->shape[2] * f, lt->shape[3] * f, 3};
    size_t bytes;
    if (!sd_shape_bytes(ishape, 4, sizeof(float), &bytes))
        return sd_run_error(r, SD_ERR_LIMIT, "image too large");
    sd_value *out = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *it = out ? sd_value_add_tensor(out, "image", 4, ishape) : NULL;
    if (!it) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte image", bytes);
    }
    if ((st = sd_vae_decode_image(r, vae, lt, tile / f, overlap / f, it))) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static sd_status run_encode_tiled(sd_node_run *r)
{
    sd_vae *vae;
    int64_t tile = 0, overlap = 0;
    sd_status st = tiled_inputs(r, &vae, &tile, &overlap);
    if (st)
        return st;
    const sd_vae_config *c = sd_vae_config_of(vae);
    const sd_tensor *pt = sd_value_tensor(sd_run_value(r, "pixels"), "image");
    if (!pt || pt->ndim != 4 || pt->shape[0] < 1 || pt->shape[3] < 3)
        return sd_run_error(r, SD_ERR_INVALID, "input 'pixels' is not a [batch, height, width, 3] image");
    /* Tiles on the VAE's grid: tile_size down to a multiple of 2f (half tiles stay on it),
     * overlap down to a multiple of f. ComfyUI's widgets step by 64 and 32, which this keeps. */
    int64_t f = sd_vae_factor(vae), hh = pt->shape[1] / f * f, ww = pt->shape[2] / f * f;
    tile = tile / (2 * f) * (2 * f);
    overlap = overlap / f * f;
    if (tile / 2 <= overlap)
        return sd_run_error(r, SD_ERR_INVALID,
                            "overlap %lld is not smaller than half of tile_size %lld: the half-size tiles of "
                            "the tiled encode would not advance",
                            (long long)overlap, (long long)tile);
    if (hh < f || ww < f)
        return sd_run_error(r, SD_ERR_INVALID, "image %lldx%lld is smaller than %lldx%lld", (long long)pt->shape[2],
                            (long long)pt->shape[1], (long long)f, (long long)f);
    int64_t lshape[4] = {pt->shape[0], c->z_channels, hh / f, ww / f};
    sd_value *out = sd_value_new(SD_TYPE_LATENT);
    sd_tensor *lt = out ? sd_value_add_tensor(out, "samples", 4, lshape) : NULL;
    if (!lt) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    if ((st = sd_vae_encode_image(r, vae, pt, tile, overlap, lt))) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

#define IN_TEMPORAL                                                                                      \
    SD_IN_INT("temporal_size", "64", 8, 4096, "video VAEs only (frames per tile); ignored here, as ComfyUI"), \
    SD_IN_INT("temporal_overlap", "8", 4, 4096, "video VAEs only (frames of overlap); ignored here, as ComfyUI")

static const sd_input_desc decode_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to decode"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
    SD_IN_INT("tile_size", "512", 64, 4096, "tile side in pixels (a multiple of 8 is used)"),
    SD_IN_INT("overlap", "64", 0, 4096,
              "pixels shared by neighbouring tiles, blended; at most tile_size / 4 (larger is reduced); "
              "not smaller than tile_size is an error"),
    IN_TEMPORAL,
};
static const sd_output_desc decode_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the decoded images, RGB in [0, 1]"),
};
const sd_node_desc sd_node_VAEDecodeTiled = {
    .name = "VAEDecodeTiled", .version = 1, .category = "latent",
    .doc = "Decodes latents with the VAE in overlapping, blended tiles (large images in little device memory).",
    .inputs = decode_in, .n_inputs = SD_COUNT(decode_in),
    .outputs = decode_out, .n_outputs = SD_COUNT(decode_out), .run = run_decode_tiled,
};

static const sd_input_desc encode_in[] = {
    SD_IN_LINK("pixels", SD_TYPE_IMAGE, "images to encode (centre-cropped to multiples of 8)"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
    SD_IN_INT("tile_size", "512", 64, 4096, "tile side in pixels (rounded down to a multiple of 16)"),
    SD_IN_INT("overlap", "64", 0, 4096,
              "pixels shared by neighbouring tiles (rounded down to a multiple of 8); must be smaller than "
              "tile_size / 2"),
    IN_TEMPORAL,
};
static const sd_output_desc encode_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the posterior means [batch, 4, height/8, width/8]"),
};
const sd_node_desc sd_node_VAEEncodeTiled = {
    .name = "VAEEncodeTiled", .version = 1, .category = "latent",
    .doc = "Encodes images with the VAE in overlapping, blended tiles.",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode_tiled,
};
