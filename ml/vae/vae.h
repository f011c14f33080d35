/* The LDM AutoencoderKL (first_stage_model): encoder to the posterior mean, decoder with its
 * mid-block attention, on the op library with lazily uploaded weights. Images here are NCHW in
 * [-1, 1]; the VAE nodes convert from/to IMAGE ([B, H, W, 3] in [0, 1]) and apply the family's
 * scale factor (latent = scale * mean). */
#ifndef SD_ML_VAE_H
#define SD_ML_VAE_H

#include "ml/families/checkpoint.h"
#include "ml/loading/weights.h"

typedef struct sd_vae sd_vae;

/* A VAE over <prefix>encoder.*, <prefix>decoder.*, <prefix>quant_conv.*, <prefix>post_quant_conv.*
 * (the last two absent in FLUX's VAE: config->no_quant_conv) (prefix "first_stage_model." in a checkpoint, "" in a standalone VAE file). Nothing is
 * uploaded until first use; encoder and decoder weights upload independently. */
sd_status sd_vae_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                     const sd_vae_config *config, sd_dtype weight_dtype, sd_vae **out);
void sd_vae_free(sd_vae *v); /* NULL-safe */
const sd_vae_config *sd_vae_config_of(const sd_vae *v);

/* z: [B, z_channels, h, w] (already divided by the scale factor) -> *out: new [B, 3, 8h, 8w]
 * in about [-1, 1] (not clamped). */
sd_status sd_vae_decode(sd_vae *v, const sd_dtensor *z, sd_dtensor **out);
/* x: [B, 3, H, W] in [-1, 1], H and W multiples of 8 -> *out: new [B, z_channels, H/8, W/8], the
 * posterior mean (not yet multiplied by the scale factor). */
sd_status sd_vae_encode(sd_vae *v, const sd_dtensor *x, sd_dtensor **out);

#endif
