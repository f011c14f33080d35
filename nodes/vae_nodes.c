/* VAEDecode and VAEEncode (ComfyUI's nodes; comfy/sd.py VAE.decode / VAE.encode). LATENT values
 * hold the VAE's own latents, as in ComfyUI (the KSampler applies the model's scale factor).
 * Batches go through the VAE one image at a time to bound device memory; an image the device
 * cannot hold whole is retried in tiles with a warning (nodes/vae_tiles.h), as ComfyUI does. */
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include "nodes/vae_tiles.h"

static sd_status run_decode(sd_node_run *r)
{
    sd_vae *vae;
    sd_status st = sd_vae_node_input(r, &vae);
    return st ? st : sd_vae_decode_node(r, vae, 0, 0);
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
    .check = sd_check_vae_decode,
};

static sd_status run_encode(sd_node_run *r)
{
    sd_vae *vae;
    sd_status st = sd_vae_node_input(r, &vae);
    return st ? st : sd_vae_encode_node(r, vae, 0, 0);
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
    .check = sd_check_vae_encode,
};
