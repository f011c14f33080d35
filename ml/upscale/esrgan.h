/* RRDBNet, the ESRGAN / Real-ESRGAN super-resolution network, from .safetensors files in the
 * key layouts ComfyUI (through spandrel) accepts for it:
 *
 *   new (Real-ESRGAN, basicsr)  conv_first, body.N.rdbK.convJ, conv_body, conv_upU, conv_hr, conv_last
 *   BSRGAN / RealSR             conv_first, RRDB_trunk.N.RDBK.convJ, trunk_conv, upconvU, HRconv, conv_last
 *   old (original ESRGAN)       model.0, model.1.sub.N.RDBK.convJ.0, model.1.sub.<blocks>,
 *                               model.3, model.6, ... (one per 2x), then HR conv and last conv
 *
 * Everything is read from the shapes: blocks, features (nf), growth channels (gc), in/out
 * channels and the number of 2x upsampling steps. An input with 4x or 16x the output channels
 * (Real-ESRGAN x2plus: 12, x1: 48) means a pixel-unshuffle input by 2 or 4, which divides the
 * scale. The network: feat = conv_first(x); body = conv_body(RRDB^blocks(feat)); f = feat + body;
 * per 2x: f = lrelu(conv_up(nearest2x(f))); out = conv_last(lrelu(conv_hr(f))); every conv 3x3,
 * LeakyReLU slope 0.2; a dense block's convs 1..4 are followed by LeakyReLU, the fifth gives
 * x + 0.2 conv5, and an RRDB of three dense blocks gives x + 0.2 rdb3(rdb2(rdb1(x))). */
#ifndef SD_ML_ESRGAN_H
#define SD_ML_ESRGAN_H

#include "ml/loading/weights.h"

typedef enum sd_esrgan_layout { SD_ESRGAN_NEW, SD_ESRGAN_OLD, SD_ESRGAN_BSRGAN } sd_esrgan_layout;

typedef struct sd_esrgan_config {
    sd_esrgan_layout layout;
    int in_nc, out_nc;  /* conv_first input channels (after unshuffle), conv_last output channels */
    int nf, gc, blocks; /* features, growth channels, RRDB blocks */
    int n_up;           /* 2x upsampling steps */
    int shuffle;        /* pixel-unshuffle factor of the input: 1, 2 or 4 */
    int scale;          /* output size / input size: 2^n_up / shuffle */
    int image_channels; /* channels of the image fed in: in_nc / shuffle^2 */
} sd_esrgan_config;

/* Limits on what a file may declare (beyond them: SD_ERR_INVALID). */
#define SD_ESRGAN_MAX_BLOCKS 256
#define SD_ESRGAN_MAX_FEATURES 1024
#define SD_ESRGAN_MAX_UP 4

const char *sd_esrgan_layout_name(sd_esrgan_layout layout); /* "new", "old", "BSRGAN" */

/* Detects the layout of st and reads the architecture from its shapes, checking that every
 * tensor of it is present with the expected shape. SD_ERR_INVALID (message naming the file) for
 * an unknown layout (listing a few of the names found), a missing or misshapen tensor (named,
 * with both shapes), ESRGAN+ files, or numbers outside the limits. */
sd_status sd_esrgan_inspect(sd_context *ctx, const sd_safetensors *st, sd_esrgan_config *out);

typedef struct sd_esrgan sd_esrgan;

/* A model over st (which must outlive it), inspected as above; weights upload on first use,
 * stored on the device as weight_dtype (f32, or f16 for half the memory). */
sd_status sd_esrgan_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_esrgan **out);
void sd_esrgan_free(sd_esrgan *m); /* NULL-safe */
const sd_esrgan_config *sd_esrgan_config_of(const sd_esrgan *m);

/* x: [1, image_channels, H, W] f32 (any H, W >= 1) -> *out: new [1, out_nc, scale H, scale W]
 * (not clamped). SD_ERR_INVALID for another shape; device errors as the ops report them
 * (SD_ERR_NOMEM / SD_ERR_LIMIT when a tile is too large for the device). */
sd_status sd_esrgan_forward(sd_esrgan *m, const sd_dtensor *x, sd_dtensor **out);

/* Called after each tile; a non-zero status (an interrupt) stops the upscale and is returned. */
typedef sd_status (*sd_esrgan_progress)(void *user, int done, int total);

/* Upscales one host image img [H, W, C] (C = image_channels, values as given) into
 * out [scale H, scale W, out_nc] as ComfyUI's comfy.utils.tiled_scale does: an image that fits
 * one tile x tile square runs whole; else tiles of at most tile x tile start every
 * tile - overlap pixels (the last of a row or column is cut at the border), and each tile's
 * output is weighted by a mask ramping linearly over round(overlap * scale) output pixels at
 * every side, (t + 1) / feather at distance t from the edge, then normalised by the summed
 * weights. Needs 0 <= overlap < tile (SD_ERR_INVALID). progress may be NULL. */
sd_status sd_esrgan_upscale(sd_esrgan *m, const float *img, int64_t h, int64_t w, int64_t tile, int64_t overlap,
                            sd_esrgan_progress progress, void *user, float *out);

/* sd_esrgan_upscale with the tile halved, down to min_tile (and above overlap), while the device
 * reports SD_ERR_NOMEM or SD_ERR_LIMIT, as ComfyUI's ImageUpscaleWithModel retries; pooled device
 * buffers are released before each retry. *tile: the first size to try, on return the size that
 * was used (or last tried). */
sd_status sd_esrgan_upscale_fit(sd_esrgan *m, const float *img, int64_t h, int64_t w, int64_t *tile, int64_t min_tile,
                                int64_t overlap, sd_esrgan_progress progress, void *user, float *out);

/* Writes an RRDBNet file with deterministic random weights for cfg (layout, in_nc, out_nc, nf,
 * gc, blocks, n_up are used) in dtype F32, F16 or BF16. Weights and biases are uniform in
 * +-1/sqrt(fan_in) (PyTorch's default); a tensor's values depend only on seed and its name in
 * the new layout, so the three layouts of one seed hold the same network. Written atomically. */
sd_status sd_esrgan_write_random(sd_context *ctx, const char *path, const sd_esrgan_config *cfg, sd_st_dtype dtype,
                                 uint64_t seed);

#endif
