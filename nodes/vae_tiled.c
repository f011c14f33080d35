/* VAEDecodeTiled and VAEEncodeTiled (ComfyUI's nodes; comfy/sd.py VAE.decode_tiled_ and
 * encode_tiled_): the VAE over overlapping tiles blended with linear ramps, averaged over three
 * tilings (nodes/vae_tiles.h), so that images larger than the device can hold decode and encode
 * without visible seams. temporal_size and temporal_overlap are ComfyUI's inputs for video VAEs;
 * like ComfyUI, an image VAE ignores them (they are accepted so that workflows import). */
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include "nodes/vae_tiles.h"

/* The VAE input and the tile_size / overlap checks common to both nodes. */
static sd_status tiled_inputs(sd_node_run *r, sd_vae **vae, int64_t *tile, int64_t *overlap)
{
    sd_status st = sd_vae_node_input(r, vae);
    if (st)
        return st;
    *tile = sd_run_int(r, "tile_size");
    *overlap = sd_run_int(r, "overlap");
    if (*tile <= *overlap)
        return sd_run_error(r, SD_ERR_INVALID,
                            "tile_size %lld is not larger than overlap %lld: tiles would not advance", (long long)*tile,
                            (long long)*overlap);
    return SD_OK;
}

/* The tile_size / overlap rule common to both nodes, before anything runs when both are literals. */
static void check_tiles(sd_node_check *c)
{
    int64_t tile, overlap;
    if (sd_check_int(c, "tile_size", &tile) && sd_check_int(c, "overlap", &overlap) && tile <= overlap)
        sd_check_problem(c, "tile_size", "%lld is not larger than overlap %lld: tiles would not advance",
                         (long long)tile, (long long)overlap);
}

static void check_decode_tiled(sd_node_check *c)
{
    check_tiles(c);
    sd_check_vae_decode(c);
}

static void check_encode_tiled(sd_node_check *c)
{
    check_tiles(c);
    sd_check_vae_encode(c);
}

static sd_status run_decode_tiled(sd_node_run *r)
{
    sd_vae *vae;
    int64_t tile = 0, overlap = 0;
    sd_status st = tiled_inputs(r, &vae, &tile, &overlap);
    if (st)
        return st;
    /* ComfyUI: overlap at most a quarter of the tile, both in latent cells. */
    if (tile < overlap * 4)
        overlap = tile / 4;
    int64_t f = sd_vae_factor(vae);
    return sd_vae_decode_node(r, vae, tile / f, overlap / f);
}

static sd_status run_encode_tiled(sd_node_run *r)
{
    sd_vae *vae;
    int64_t tile = 0, overlap = 0;
    sd_status st = tiled_inputs(r, &vae, &tile, &overlap);
    if (st)
        return st;
    /* Tiles on the VAE's grid: tile_size down to a multiple of 2f (half tiles stay on it),
     * overlap down to a multiple of f. ComfyUI's widgets step by 64 and 32, which this keeps. */
    int64_t f = sd_vae_factor(vae);
    tile = tile / (2 * f) * (2 * f);
    overlap = overlap / f * f;
    if (tile / 2 <= overlap)
        return sd_run_error(r, SD_ERR_INVALID,
                            "overlap %lld is not smaller than half of tile_size %lld: the half-size tiles of "
                            "the tiled encode would not advance",
                            (long long)overlap, (long long)tile);
    return sd_vae_encode_node(r, vae, tile, overlap);
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
    .check = check_decode_tiled,
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
    .check = check_encode_tiled,
};
