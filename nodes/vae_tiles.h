/* Running the VAE from nodes: one item at a time, or in overlapping tiles blended as ComfyUI's
 * comfy.utils.tiled_scale does (each tile weighted by a linear ramp over `overlap` on every side,
 * the weighted sum divided by the summed weights), averaged over ComfyUI's three tilings
 * (comfy/sd.py VAE.decode_tiled_ / encode_tiled_: tile_w x tile_h, tile_w/2 x 2*tile_h and
 * 2*tile_w x tile_h/2). Used by VAEDecode/VAEEncode (and their out-of-memory fallback),
 * VAEDecodeTiled/VAEEncodeTiled and the inpainting nodes.
 *
 * Planes are host floats, one batch item, NCHW without the N: images [3, H, W] in [-1, 1],
 * latents [z_channels, H/f, W/f] as the VAE's own latents (f = 2^(levels - 1)). */
#ifndef SD_NODES_VAE_TILES_H
#define SD_NODES_VAE_TILES_H

#include "core/node.h"
#include "ml/vae/vae.h"

/* The VAE's downscale factor f. */
int64_t sd_vae_factor(const sd_vae *vae);

/* One item through the VAE, untiled: decode z [zc, h, w] -> out [3, f*h, f*w], or encode
 * x [3, H, W] (multiples of f) -> out [zc, H/f, W/f]. Returns the status with the message on
 * the context and the node's error NOT yet recorded, so that callers can fall back on
 * SD_ERR_NOMEM / SD_ERR_LIMIT (the device could not hold it). */
sd_status sd_vae_run_item(sd_node_run *r, sd_vae *vae, bool decode, const float *in, int64_t h, int64_t w,
                          float *out);

/* The same in tiles: tile and overlap in the input's units (latent cells for decode, pixels for
 * encode, where both must be multiples of 2f and f). Requires 0 <= overlap < tile / 2, so that
 * every one of the three tilings advances. Progress is reported per tile. Same status contract
 * as sd_vae_run_item. */
sd_status sd_vae_run_tiled(sd_node_run *r, sd_vae *vae, bool decode, const float *in, int64_t h, int64_t w,
                           int64_t tile, int64_t overlap, float *out);

/* True for the statuses that mean "too large for the device now": worth retrying in tiles. */
bool sd_vae_status_is_oom(sd_status st);

/* Decodes the latents lt [b, zc, h, w] into img [b, f*h, f*w, 3] as (x + 1) / 2 clamped to
 * [0, 1] (ComfyUI's process_output). tile > 0: in tiles of `tile` latent cells with `overlap`
 * (sd_vae_run_tiled). tile == 0: each item whole; when the device runs out of memory the node
 * warns and retries that item in tiles as ComfyUI does (64 cells, overlap 16), halving the tiles
 * down to 8 cells (64 px, VAEDecodeTiled's smallest) while they still do not fit. Records the node's error on failure. */
sd_status sd_vae_decode_image(sd_node_run *r, sd_vae *vae, const sd_tensor *lt, int64_t tile, int64_t overlap,
                              sd_tensor *img);
/* Encodes img [b, H, W, C >= 3] (RGB in [0, 1]; the centred crop to multiples of f) into
 * lat [b, zc, H/f, W/f]. tile > 0: tiles of `tile` pixels (a multiple of 2f) with `overlap`
 * (a multiple of f). tile == 0: whole, with the same out-of-memory fallback (512 px tiles,
 * overlap 64, halving down to 64 px). Records the node's error on failure. */
sd_status sd_vae_encode_image(sd_node_run *r, sd_vae *vae, const sd_tensor *img, int64_t tile, int64_t overlap,
                              sd_tensor *lat);

/* The VAE of a node's "vae" input. On a CPU device the UNets' weights are released first, so
 * that the VAE's activations do not sit beside them. Records the node's error on failure. */
sd_status sd_vae_node_input(sd_node_run *r, sd_vae **vae);
/* The body of VAEDecode / VAEDecodeTiled: the "samples" input decoded (sd_vae_decode_image with
 * tile and overlap) into a new IMAGE set as output 0. */
sd_status sd_vae_decode_node(sd_node_run *r, sd_vae *vae, int64_t tile, int64_t overlap);
/* The body of VAEEncode / VAEEncodeTiled: the "pixels" input encoded (sd_vae_encode_image with
 * tile and overlap) into a new LATENT set as output 0. */
sd_status sd_vae_encode_node(sd_node_run *r, sd_vae *vae, int64_t tile, int64_t overlap);

#endif
