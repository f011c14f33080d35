/* VAEDecode and VAEEncode (ComfyUI's nodes; comfy/sd.py VAE.decode / VAE.encode). LATENT values
 * hold the VAE's own latents, as in ComfyUI (the KSampler applies the model's scale factor).
 * Batches go through the VAE one image at a time to bound device memory; an image the device
 * cannot hold whole is retried in tiles with a warning (nodes/vae_tiles.h), as ComfyUI does. */
#include "core/checked.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include "nodes/vae_tiles.h"
#include "runtime-opencl/tensor.h"
#include <stdlib.h>

static sd_status run_decode(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    const sd_tensor *lt = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    sd_vae *vae;
    sd_node_release_on_cpu(r, true, false);
    sd_status st = sd_loaded_vae(h->loaded, &vae);
    if (st)
        return sd_node_model_fail(r, st);
    const sd_vae_config *c = sd_vae_config_of(vae);
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[1] != c->z_channels || lt->shape[2] < 1 ||
        lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a [batch, %d, h, w] latent", c->z_channels);
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
    st = sd_vae_decode_image(r, vae, lt, 0, 0, it);
    sd_node_model_done(r);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc decode_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to decode"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
};
static const sd_output_desc decode_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the decoded images, RGB in [0, 1] ((x + 1) / 2 clamped)"),
};
const sd_node_desc sd_node_VAEDecode = {
    .name = "VAEDecode", .version = 1, .category = "latent",
    .doc = "Decodes latents into images with the VAE (in tiles, with a warning, when the device runs out of memory).",
    .inputs = decode_in, .n_inputs = SD_COUNT(decode_in),
    .outputs = decode_out, .n_outputs = SD_COUNT(decode_out), .run = run_decode,
};

static sd_status run_encode(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    const sd_tensor *pt = sd_value_tensor(sd_run_value(r, "pixels"), "image");
    sd_vae *vae;
    sd_node_release_on_cpu(r, true, false);
    sd_status st = sd_loaded_vae(h->loaded, &vae);
    if (st)
        return sd_node_model_fail(r, st);
    const sd_vae_config *c = sd_vae_config_of(vae);
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
    st = sd_vae_encode_image(r, vae, pt, 0, 0, lt);
    sd_node_model_done(r);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc encode_in[] = {
    SD_IN_LINK("pixels", SD_TYPE_IMAGE, "images to encode (centre-cropped to multiples of 8)"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
};
static const sd_output_desc encode_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the posterior means [batch, 4, height/8, width/8]"),
};
const sd_node_desc sd_node_VAEEncode = {
    .name = "VAEEncode", .version = 1, .category = "latent",
    .doc = "Encodes images into latents with the VAE (in tiles, with a warning, when the device runs out of memory).",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode,
};
