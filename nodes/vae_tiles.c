/* VAE items and ComfyUI-style tiles (nodes/vae_tiles.h). */
#include "nodes/vae_tiles.h"
#include "nodes/model_handle.h"
#include "core/checked.h"
#include "runtime-opencl/tensor.h"
#include <stdlib.h>
#include <string.h>

int64_t sd_vae_factor(const sd_vae *vae)
{
    return (int64_t)1 << (sd_vae_config_of(vae)->n_levels - 1);
}

bool sd_vae_status_is_oom(sd_status st)
{
    return st == SD_ERR_NOMEM || st == SD_ERR_LIMIT;
}

sd_status sd_vae_run_item(sd_node_run *r, sd_vae *vae, bool decode, const float *in, int64_t h, int64_t w,
                          float *out)
{
    const sd_vae_config *c = sd_vae_config_of(vae);
    int64_t f = sd_vae_factor(vae);
    int64_t shape[4] = {1, decode ? c->z_channels : 3, h, w};
    size_t out_n = decode ? (size_t)(3 * h * f * w * f) : (size_t)(c->z_channels * (h / f) * (w / f));
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    sd_status st = sd_cl_get(sd_run_context(r), &cl);
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &x);
    if (!st)
        st = sd_dtensor_upload(x, in);
    if (!st)
        st = decode ? sd_vae_decode(vae, x, &y) : sd_vae_encode(vae, x, &y);
    if (!st && y->numel != out_n)
        st = sd_set_error(sd_run_context(r), SD_ERR_INVALID, "VAE output has %zu values, expected %zu", y->numel,
                          out_n);
    if (!st)
        st = sd_dtensor_download(y, out);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

/* One tiled pass: the input's geometry, the output scale (out = in * mul / div) and progress. */
typedef struct tiler {
    sd_node_run *r;
    sd_vae *vae;
    bool decode;
    const float *in;
    int64_t c_in, c_out, h, w, mul, div;
    int step, steps;
    float *tile_in, *tile_out; /* scratch for the largest tile */
} tiler;

/* Tile origins along one axis, as tiled_scale: range(0, size - overlap, tile - overlap) when
 * the axis is longer than the tile, else just 0. */
static int64_t n_positions(int64_t size, int64_t tile, int64_t overlap)
{
    if (size <= tile)
        return 1;
    return (size - overlap + (tile - overlap) - 1) / (tile - overlap);
}

/* The blending weights of a tile along one axis of n output samples: 1, times (t + 1) / feather
 * on the t-th sample from either end (both factors where the ramps meet), as tiled_scale's
 * mask; no ramp when feather >= n. */
static void ramp(float *wgt, int64_t n, int64_t feather)
{
    for (int64_t i = 0; i < n; i++)
        wgt[i] = 1.0f;
    if (feather >= n)
        return;
    for (int64_t t = 0; t < feather; t++) {
        float a = (float)((double)(t + 1) / (double)feather);
        wgt[t] *= a;
        wgt[n - 1 - t] *= a;
    }
}

/* One tiling (tile_w x tile_h) of the item into out [c_out, OH, OW]. */
static sd_status tiled_pass(tiler *t, int64_t tile_w, int64_t tile_h, int64_t overlap, float *out)
{
    int64_t oh = t->h * t->mul / t->div, ow = t->w * t->mul / t->div;
    size_t plane = (size_t)(oh * ow);
    if (t->h <= tile_h && t->w <= tile_w) {
        sd_status st = sd_run_progress(t->r, t->step++, t->steps);
        return st ? st : sd_vae_run_item(t->r, t->vae, t->decode, t->in, t->h, t->w, out);
    }
    float *acc = calloc((size_t)t->c_out * plane, sizeof *acc), *wsum = calloc(plane, sizeof *wsum);
    float *wy = malloc((size_t)(tile_h * t->mul / t->div + 1) * sizeof *wy);
    float *wx = malloc((size_t)(tile_w * t->mul / t->div + 1) * sizeof *wx);
    sd_status st = SD_OK;
    if (!acc || !wsum || !wy || !wx) {
        st = sd_set_error(sd_run_context(t->r), SD_ERR_NOMEM, "out of memory for a %lldx%lld tiled VAE output",
                          (long long)ow, (long long)oh);
        goto done;
    }
    int64_t ny = n_positions(t->h, tile_h, overlap), nx = n_positions(t->w, tile_w, overlap);
    int64_t feather = overlap * t->mul / t->div;
    for (int64_t iy = 0; iy < ny && !st; iy++) {
        int64_t y0 = iy * (tile_h - overlap);
        y0 = y0 > t->h - overlap ? t->h - overlap : y0;
        y0 = y0 < 0 ? 0 : y0;
        int64_t lh = t->h - y0 < tile_h ? t->h - y0 : tile_h;
        for (int64_t ix = 0; ix < nx && !st; ix++) {
            int64_t x0 = ix * (tile_w - overlap);
            x0 = x0 > t->w - overlap ? t->w - overlap : x0;
            x0 = x0 < 0 ? 0 : x0;
            int64_t lw = t->w - x0 < tile_w ? t->w - x0 : tile_w;
            if ((st = sd_run_progress(t->r, t->step++, t->steps)))
                break;
            for (int64_t c = 0; c < t->c_in; c++)
                for (int64_t y = 0; y < lh; y++)
                    memcpy(t->tile_in + (size_t)((c * lh + y) * lw),
                           t->in + (size_t)((c * t->h + y0 + y) * t->w + x0), (size_t)lw * sizeof(float));
            if ((st = sd_vae_run_item(t->r, t->vae, t->decode, t->tile_in, lh, lw, t->tile_out)))
                break;
            int64_t th = lh * t->mul / t->div, tw = lw * t->mul / t->div;
            int64_t oy = y0 * t->mul / t->div, ox = x0 * t->mul / t->div;
            ramp(wy, th, feather);
            ramp(wx, tw, feather);
            for (int64_t c = 0; c < t->c_out; c++)
                for (int64_t y = 0; y < th; y++) {
                    const float *src = t->tile_out + (size_t)((c * th + y) * tw);
                    float *dst = acc + (size_t)c * plane + (size_t)((oy + y) * ow + ox);
                    float *ws = wsum + (size_t)((oy + y) * ow + ox);
                    for (int64_t x = 0; x < tw; x++) {
                        float m = wy[y] * wx[x];
                        dst[x] += src[x] * m;
                        if (c == 0)
                            ws[x] += m;
                    }
                }
        }
    }
    for (size_t c = 0; !st && c < (size_t)t->c_out; c++)
        for (size_t i = 0; i < plane; i++)
            out[c * plane + i] = acc[c * plane + i] / wsum[i];
done:
    free(acc);
    free(wsum);
    free(wy);
    free(wx);
    return st;
}

sd_status sd_vae_run_tiled(sd_node_run *r, sd_vae *vae, bool decode, const float *in, int64_t h, int64_t w,
                           int64_t tile, int64_t overlap, float *out)
{
    const sd_vae_config *c = sd_vae_config_of(vae);
    int64_t f = sd_vae_factor(vae);
    tiler t = {.r = r, .vae = vae, .decode = decode, .in = in, .h = h, .w = w,
               .c_in = decode ? c->z_channels : 3, .c_out = decode ? 3 : c->z_channels,
               .mul = decode ? f : 1, .div = decode ? 1 : f};
    /* ComfyUI's three tilings, in its order of accumulation: decode sums (w/2 x 2h) + (2w x h/2)
     * + (w x h); encode (w x h) + (2w x h/2) + (w/2 x 2h). */
    int64_t tw[3], th[3];
    if (decode) {
        tw[0] = tile / 2, th[0] = tile * 2, tw[1] = tile * 2, th[1] = tile / 2, tw[2] = tile, th[2] = tile;
    } else {
        tw[0] = tile, th[0] = tile, tw[1] = tile * 2, th[1] = tile / 2, tw[2] = tile / 2, th[2] = tile * 2;
    }
    for (int p = 0; p < 3; p++)
        t.steps += h <= th[p] && w <= tw[p] ? 1
                                            : (int)(n_positions(h, th[p], overlap) * n_positions(w, tw[p], overlap));
    /* Scratch for the largest tile: at most 2 * tile along each axis. */
    int64_t oh = h * t.mul / t.div, ow = w * t.mul / t.div;
    int64_t mh = h < tile * 2 ? h : tile * 2, mw = w < tile * 2 ? w : tile * 2;
    size_t n_out = (size_t)(t.c_out * oh * ow), n_in_tile = (size_t)(t.c_in * mh * mw), n_out_tile;
    sd_status st = SD_OK;
    float *pass = NULL;
    if (!sd_mul_size((size_t)(t.c_out * (mh * t.mul / t.div)), (size_t)(mw * t.mul / t.div), &n_out_tile))
        return sd_set_error(sd_run_context(r), SD_ERR_LIMIT, "VAE tile too large");
    t.tile_in = malloc(n_in_tile * sizeof *t.tile_in);
    t.tile_out = malloc(n_out_tile * sizeof *t.tile_out);
    pass = malloc(n_out * sizeof *pass);
    if (!t.tile_in || !t.tile_out || !pass) {
        st = sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory for VAE tiles");
        goto done;
    }
    for (int p = 0; p < 3 && !st; p++) {
        float *dst = p == 0 ? out : pass;
        if ((st = tiled_pass(&t, tw[p], th[p], overlap, dst)) || p == 0)
            continue;
        for (size_t i = 0; i < n_out; i++)
            out[i] += pass[i];
    }
    for (size_t i = 0; !st && i < n_out; i++)
        out[i] /= 3.0f;
done:
    free(t.tile_in);
    free(t.tile_out);
    free(pass);
    return st;
}

/* Records the node's error for a status from the helpers above (an interrupt is recorded
 * already). */
static sd_status node_fail(sd_node_run *r, sd_status st)
{
    return st == SD_ERR_INTERRUPTED ? st : sd_node_model_fail(r, st);
}

/* One item whole, or in tiles; when whole does not fit (tile == 0), warns and retries with
 * fallback tiles from `fb_tile` / `fb_overlap`, halving while above `fb_min`. */
static sd_status run_with_fallback(sd_node_run *r, sd_vae *vae, bool decode, const float *in, int64_t h,
                                   int64_t w, int64_t tile, int64_t overlap, int64_t fb_tile,
                                   int64_t fb_overlap, int64_t fb_min, float *out)
{
    if (tile > 0)
        return sd_vae_run_tiled(r, vae, decode, in, h, w, tile, overlap, out);
    sd_status st = sd_vae_run_item(r, vae, decode, in, h, w, out);
    if (!sd_vae_status_is_oom(st))
        return st;
    int64_t f = sd_vae_factor(vae), unit = decode ? f : 1;
    for (tile = fb_tile, overlap = fb_overlap; sd_vae_status_is_oom(st) && tile >= fb_min;
         tile /= 2, overlap /= 2) {
        if (tile == fb_tile)
            sd_run_warn(r, "%s; retrying with tiled %s in %lld px tiles, overlap %lld px (as VAE%sTiled)",
                        sd_context_errmsg(sd_run_context(r)), decode ? "decoding" : "encoding",
                        (long long)(tile * unit), (long long)(overlap * unit), decode ? "Decode" : "Encode");
        else
            sd_run_warn(r, "%lld px tiles do not fit either; retrying with %lld px tiles, overlap %lld px",
                        (long long)(tile * 2 * unit), (long long)(tile * unit), (long long)(overlap * unit));
        st = sd_vae_run_tiled(r, vae, decode, in, h, w, tile, overlap, out);
    }
    return st;
}

sd_status sd_vae_decode_image(sd_node_run *r, sd_vae *vae, const sd_tensor *lt, int64_t tile, int64_t overlap,
                              sd_tensor *img)
{
    int64_t f = sd_vae_factor(vae), b = lt->shape[0], zc = lt->shape[1], h = lt->shape[2], w = lt->shape[3];
    size_t plane = (size_t)(h * f * w * f), item_in = (size_t)(zc * h * w);
    float *nchw = malloc(3 * plane * sizeof *nchw);
    if (!nchw)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)(w * f),
                            (long long)(h * f));
    sd_status st = SD_OK;
    for (int64_t i = 0; i < b && !st; i++) {
        if (tile == 0 && (st = sd_run_progress(r, (int)i, (int)b)))
            break;
        st = run_with_fallback(r, vae, true, lt->data + (size_t)i * item_in, h, w, tile, overlap, 64, 16, 8, nchw);
        float *dst = img->data + (size_t)i * 3 * plane;
        for (size_t p = 0; !st && p < plane; p++)
            for (int c = 0; c < 3; c++) {
                float v = (nchw[(size_t)c * plane + p] + 1.0f) / 2.0f;
                dst[p * 3 + (size_t)c] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            }
    }
    free(nchw);
    return st ? node_fail(r, st) : SD_OK;
}

sd_status sd_vae_encode_image(sd_node_run *r, sd_vae *vae, const sd_tensor *img, int64_t tile, int64_t overlap,
                              sd_tensor *lat)
{
    int64_t f = sd_vae_factor(vae), b = img->shape[0], ih = img->shape[1], iw = img->shape[2], ch = img->shape[3];
    int64_t hh = ih / f * f, ww = iw / f * f, y0 = (ih % f) / 2, x0 = (iw % f) / 2;
    size_t plane = (size_t)(hh * ww), item_out = (size_t)(lat->shape[1] * (hh / f) * (ww / f));
    float *nchw = malloc(3 * plane * sizeof *nchw);
    if (!nchw)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)ww, (long long)hh);
    sd_status st = SD_OK;
    for (int64_t i = 0; i < b && !st; i++) {
        if (tile == 0 && (st = sd_run_progress(r, (int)i, (int)b)))
            break;
        const float *src = img->data + (size_t)(i * ih * iw * ch);
        for (int64_t y = 0; y < hh; y++)
            for (int64_t x = 0; x < ww; x++)
                for (int k = 0; k < 3; k++)
                    nchw[(size_t)k * plane + (size_t)(y * ww + x)] =
                        src[((y + y0) * iw + (x + x0)) * ch + k] * 2.0f - 1.0f;
        st = run_with_fallback(r, vae, false, nchw, hh, ww, tile, overlap, 512, 64, 64,
                               lat->data + (size_t)i * item_out);
    }
    free(nchw);
    return st ? node_fail(r, st) : SD_OK;
}

sd_status sd_vae_node_input(sd_node_run *r, sd_vae **vae)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    sd_node_release_on_cpu(r, true, false);
    sd_status st = sd_loaded_vae(h->loaded, vae);
    return st ? sd_node_model_fail(r, st) : SD_OK;
}

/* Sets out as output 0 after a successful run status st (otherwise drops it); trims the pool. */
static sd_status finish(sd_node_run *r, sd_status st, sd_value *out)
{
    sd_node_model_done(r);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

sd_status sd_vae_decode_node(sd_node_run *r, sd_vae *vae, int64_t tile, int64_t overlap)
{
    const sd_vae_config *c = sd_vae_config_of(vae);
    const sd_tensor *lt = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[2] < 1 || lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a [batch, %d, h, w] latent", c->z_channels);
    if (lt->shape[1] != c->z_channels)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples': a %lld-channel latent cannot be decoded by a %d-channel VAE",
                            (long long)lt->shape[1], c->z_channels);
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
    return finish(r, sd_vae_decode_image(r, vae, lt, tile, overlap, it), out);
}

sd_status sd_vae_encode_node(sd_node_run *r, sd_vae *vae, int64_t tile, int64_t overlap)
{
    const sd_vae_config *c = sd_vae_config_of(vae);
    const sd_tensor *pt = sd_value_tensor(sd_run_value(r, "pixels"), "image");
    if (!pt || pt->ndim != 4 || pt->shape[0] < 1 || pt->shape[3] < 3)
        return sd_run_error(r, SD_ERR_INVALID, "input 'pixels' is not a [batch, height, width, 3] image");
    /* ComfyUI's vae_encode_crop_pixels: the centred crop to multiples of the downscale factor. */
    int64_t f = sd_vae_factor(vae), hh = pt->shape[1] / f * f, ww = pt->shape[2] / f * f;
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
    return finish(r, sd_vae_encode_image(r, vae, pt, tile, overlap, lt), out);
}
