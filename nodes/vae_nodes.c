/* VAEDecode and VAEEncode (ComfyUI's nodes; comfy/sd.py VAE.decode / VAE.encode). LATENT values
 * hold the VAE's own latents, as in ComfyUI (the KSampler applies the model's scale factor).
 * Batches go through the VAE one image at a time to bound device memory. */
#include "core/checked.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include "runtime-opencl/tensor.h"
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* On a CPU device (device memory is host memory) the UNet's weights are given back before a
 * decode or encode, whose activations at 512x512 are about 1 GB; the next KSampler uploads them
 * again (a second or two from the page cache). */
static void release_unets_on_cpu(sd_node_run *r)
{
    sd_cl *cl = sd_context_ext(sd_run_context(r), SD_EXT_OPENCL);
    if (cl && !cl->is_gpu) {
        sd_model_store_release_unets(sd_run_context(r));
        sd_cl_pool_trim(cl); /* freed weights go to the pool first */
#ifdef __GLIBC__
        malloc_trim(0); /* the CPU driver's buffers below glibc's mmap threshold stay in its heap */
#endif
    }
}

/* Runs one batch item through the VAE: in is [1, c_in, h_in, w_in] host floats, out receives
 * [1, c_out, h_out, w_out] floats. */
static sd_status vae_item(sd_node_run *r, sd_vae *vae, bool decode, const float *in, const int64_t *shape_in,
                          float *out, size_t out_n)
{
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    sd_status st = sd_cl_get(sd_run_context(r), &cl);
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape_in, &x);
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
    return st ? sd_node_model_fail(r, st) : SD_OK;
}

static sd_status run_decode(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    const sd_tensor *lt = sd_value_tensor(sd_run_value(r, "samples"), "samples");
    sd_vae *vae;
    release_unets_on_cpu(r);
    sd_status st = sd_loaded_vae(h->loaded, &vae);
    if (st)
        return sd_node_model_fail(r, st);
    const sd_vae_config *c = sd_vae_config_of(vae);
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[1] != c->z_channels || lt->shape[2] < 1 ||
        lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' is not a [batch, %d, h, w] latent", c->z_channels);
    int64_t f = (int64_t)1 << (c->n_levels - 1), b = lt->shape[0], hh = lt->shape[2] * f, ww = lt->shape[3] * f;
    int64_t ishape[4] = {b, hh, ww, 3}, zshape[4] = {1, lt->shape[1], lt->shape[2], lt->shape[3]};
    size_t plane = (size_t)(hh * ww), item_in = (size_t)(lt->shape[1] * lt->shape[2] * lt->shape[3]);
    size_t bytes;
    if (!sd_shape_bytes(ishape, 4, sizeof(float), &bytes))
        return sd_run_error(r, SD_ERR_LIMIT, "image too large");
    float *nchw = malloc(3 * plane * sizeof *nchw);
    sd_value *out = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *it = out ? sd_value_add_tensor(out, "image", 4, ishape) : NULL;
    if (!nchw || !it) {
        free(nchw);
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %zu-byte image", bytes);
    }
    for (int64_t i = 0; i < b && !st; i++) {
        if ((st = sd_run_progress(r, (int)i, (int)b)))
            break;
        st = vae_item(r, vae, true, lt->data + (size_t)i * item_in, zshape, nchw, 3 * plane);
        float *dst = it->data + (size_t)i * 3 * plane;
        for (size_t p = 0; !st && p < plane; p++)
            for (int ch = 0; ch < 3; ch++) {
                float v = (nchw[(size_t)ch * plane + p] + 1.0f) / 2.0f;
                dst[p * 3 + (size_t)ch] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            }
    }
    free(nchw);
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
    .doc = "Decodes latents into images with the VAE.",
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
    release_unets_on_cpu(r);
    sd_status st = sd_loaded_vae(h->loaded, &vae);
    if (st)
        return sd_node_model_fail(r, st);
    const sd_vae_config *c = sd_vae_config_of(vae);
    if (!pt || pt->ndim != 4 || pt->shape[0] < 1 || pt->shape[3] < 3)
        return sd_run_error(r, SD_ERR_INVALID, "input 'pixels' is not a [batch, height, width, 3] image");
    /* ComfyUI's vae_encode_crop_pixels: the centred crop to multiples of the downscale factor. */
    int64_t f = (int64_t)1 << (c->n_levels - 1), b = pt->shape[0], ih = pt->shape[1], iw = pt->shape[2],
            ch = pt->shape[3];
    int64_t hh = ih / f * f, ww = iw / f * f, y0 = (ih % f) / 2, x0 = (iw % f) / 2;
    if (hh < f || ww < f)
        return sd_run_error(r, SD_ERR_INVALID, "image %lldx%lld is smaller than %lldx%lld", (long long)iw,
                            (long long)ih, (long long)f, (long long)f);
    int64_t xshape[4] = {1, 3, hh, ww}, lshape[4] = {b, c->z_channels, hh / f, ww / f};
    size_t plane = (size_t)(hh * ww), item_out = (size_t)(c->z_channels * (hh / f) * (ww / f));
    float *nchw = malloc(3 * plane * sizeof *nchw);
    sd_value *out = sd_value_new(SD_TYPE_LATENT);
    sd_tensor *lt = out ? sd_value_add_tensor(out, "samples", 4, lshape) : NULL;
    if (!nchw || !lt) {
        free(nchw);
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < b && !st; i++) {
        if ((st = sd_run_progress(r, (int)i, (int)b)))
            break;
        const float *src = pt->data + (size_t)(i * ih * iw * ch);
        for (int64_t y = 0; y < hh; y++)
            for (int64_t x = 0; x < ww; x++)
                for (int k = 0; k < 3; k++)
                    nchw[(size_t)k * plane + (size_t)(y * ww + x)] =
                        src[((y + y0) * iw + (x + x0)) * ch + k] * 2.0f - 1.0f;
        st = vae_item(r, vae, false, nchw, xshape, lt->data + (size_t)i * item_out, item_out);
    }
    free(nchw);
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
    .doc = "Encodes images into latents with the VAE.",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode,
};
