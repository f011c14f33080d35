/* The sampling nodes' model function over a guider's conditionings: entries averaged by
 * strength, timestep ranges, areas and masks, ControlNets, inpainting channels, and the guider's
 * combination (classifier-free guidance, the dual guiders), as ComfyUI's CFGGuider,
 * Guider_DualCFG and calc_cond_batch (nodes/cfg_denoiser.c). */
#ifndef SD_NODES_CFG_DENOISER_H
#define SD_NODES_CFG_DENOISER_H

#include "ml/sampling/schedulers.h"
#include "ml/adapters/ipadapter.h"
#include "ml/diffusion/flux.h"
#include "ml/diffusion/unet.h"
#include "nodes/model_handle.h"
#include "nodes/sample_core.h"

typedef struct sd_cfg_denoiser sd_cfg_denoiser;

typedef struct sd_cfg_setup {
    sd_node_run *r;               /* the sampler node (errors, progress) */
    const sd_guider *guider;      /* its conditionings and how they combine; must outlive the denoiser */
    bool need_uncond;             /* the sampler reads the unguided prediction (CFG++) */
    sd_cl *cl;
    sd_unet *unet;                /* the model: a UNet, or (unet NULL) the FLUX transformer flux, which
                                   * takes each entry's pooled output as y and its "guidance" attribute */
    sd_flux *flux;
    const sd_model_sampling *ms;  /* must outlive the denoiser */
    size_t batch;                 /* latent items */
    int64_t h, w;                 /* latent size */
    int in_channels;              /* the UNet's: 4, or 9 for inpainting models (FLUX: 16) */
    int64_t dim;                  /* the UNet's context width */
    const struct sd_latent_format *preview; /* latent format for step previews, NULL: none */
    double rescale_cfg;           /* RescaleCFG's multiplier on the model (< 0: none) */
    const sd_ipa_stack *ipadapters; /* the model's IP-Adapters (NULL: none); must outlive the denoiser */
    uint64_t seed;                /* the noise seed (unCLIP noise augmentation: seed - 10, as ComfyUI) */
    sd_model_precision precision; /* the model's forward calls' (ModelComputeDtype) */
    const float *unclip_mean, *unclip_std; /* SD2 unCLIP: the noise augmentor's statistics (NULL: 0 and 1;
                                            * ml/loading/model_store.h sd_loaded_unclip_stats); must outlive it */
} sd_cfg_setup;

/* Reads the guider's conditionings (entries, regions, ControlNets) and allocates the working
 * memory. On failure the node's error is set; *out is still to be freed. */
sd_status sd_cfg_denoiser_new(const sd_cfg_setup *s, sd_cfg_denoiser **out);
/* For inpainting UNets: the extra channels of every entry (InpaintModelConditioning's image and
 * mask, else noise_mask and the scaled input latent; see BaseModel.concat_cond). noise_mask:
 * batch * 4 * h * w or NULL; latent: the scaled input latent. */
sd_status sd_cfg_denoiser_inpaint(sd_cfg_denoiser *d, const float *noise_mask, const float *latent, float scale);
/* The sampler's callbacks (ml/sampling/sampling.h sd_sample_options.denoise / .step; user: the
 * denoiser). On failure the node's error is set (sd_cfg_denoiser_reported). */
sd_status sd_cfg_denoise(void *user, const float *x, float sigma, float *out, float *uncond, size_t n);
sd_status sd_cfg_on_step(void *user, int step, int steps, const float *x, const float *denoised, size_t n);
bool sd_cfg_denoiser_reported(const sd_cfg_denoiser *d);
void sd_cfg_denoiser_free(sd_cfg_denoiser *d); /* NULL-safe */

/* ComfyUI's reshape_mask: a noise_mask ([B or 1, H, W] or [B, 1, H, W], any resolution) resized
 * bilinearly (align_corners false) to h x w, repeated over the channels and cycled over the
 * batch. out: batch * channels * h * w. */
sd_status sd_noise_mask_resize(sd_node_run *r, const sd_tensor *m, size_t batch, int channels, int64_t h,
                               int64_t w, float *out);

#endif
