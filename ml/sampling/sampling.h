/* Samplers on host float arrays, independent of any network: the caller supplies the denoiser
 * (model call including classifier-free guidance), this module runs ComfyUI's update rules.
 *
 *   sd_sample_options o = {0};   // zeroed: ComfyUI's eta and s_noise, default noise
 *   o.sampler = "dpmpp_2m"; o.sigmas = sigmas; o.n_sigmas = n_sigmas;
 *   o.sigma_max = sd_model_sampling_sigma_max(&ms); o.seed = seed;
 *   o.denoise = my_unet_cfg; o.denoise_user = state;
 *   st = sd_sample(ctx, &o, noise, latent, out, n);
 *
 * Definitions and sources of every sampler: docs/sampling.md. */
#ifndef SD_ML_SAMPLING_H
#define SD_ML_SAMPLING_H

#include "sdflow/sdflow.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The denoiser D(x, sigma): writes the model's prediction of the clean latent for the noised
 * latent x (n floats, ComfyUI's k-diffusion "denoised", after guidance) into out. uncond is NULL,
 * except for the samplers that need the unguided prediction (sd_sampler_uses_uncond: the CFG++
 * ones, which read ComfyUI's post-CFG "uncond_denoised"): then it receives that prediction (n
 * floats), computed even where cfg 1 would skip it. Returns SD_OK or an error, which stops
 * sampling and is returned by sd_sample. */
typedef sd_status (*sd_denoise_fn)(void *user, const float *x, float sigma, float *out, float *uncond,
                                   size_t n);
/* Noise for ancestral and SDE steps from sigma to sigma_next: n standard normal values. */
typedef sd_status (*sd_noise_fn)(void *user, float sigma, float sigma_next, float *out, size_t n);
/* Called once per step after the step's first denoiser call (ComfyUI's sampler callback), with
 * the 0-based step, the step count, the current x and the denoised prediction. Returning
 * anything but SD_OK (SD_ERR_INTERRUPTED to cancel) stops sampling with that status. */
typedef sd_status (*sd_sample_step_fn)(void *user, int step, int steps, const float *x,
                                       const float *denoised, size_t n);

typedef struct sd_sample_options {
    const char *sampler;   /* ComfyUI sampler name (sd_sampler_name) */
    const float *sigmas;   /* the schedule, decreasing, usually ending in 0 */
    size_t n_sigmas;       /* steps + 1; 1: only the initial noise is added; 0: latent unchanged */
    float sigma_max;       /* the model's largest sigma: decides the initial noise scaling */
    uint64_t seed;         /* seeds the default noise (see noise) */
    sd_denoise_fn denoise; /* required */
    void *denoise_user;
    /* NULL: the default noise, torch.randn(n) draws from a torch-compatible generator seeded
     * with seed + 1 (what ComfyUI's default noise sampler does on the CPU). */
    sd_noise_fn noise;
    void *noise_user;
    sd_sample_step_fn step; /* optional */
    void *step_user;
    /* eta and s_noise are ComfyUI's defaults (eta 1 for the ancestral and SDE samplers, s_noise
     * 1) unless set_eta / set_s_noise; a zeroed struct gets the defaults. */
    bool set_eta, set_s_noise;
    double eta, s_noise;
    /* Inpainting (ComfyUI's KSamplerX0Inpaint), optional: n values in [0, 1], 1 where the latent
     * is regenerated. Every denoiser call then sees x*mask + (latent + noise*sigma)*(1-mask) and
     * its output becomes denoised*mask + latent*(1-mask). */
    const float *noise_mask;
    /* The CONST (rectified-flow) model type of FLUX: noise is added as sigma * noise + (1 - sigma)
     * * latent (also in the inpainting blend) and the result divided by 1 - the last sigma
     * (ComfyUI's CONST.noise_scaling / inverse_noise_scaling); sigma_max is then unused. */
    bool flow;
    /* sa_solver: noise is added on the steps to a sigma in [sde_end_sigma, sde_start_sigma]
     * (ComfyUI: the model's percent_to_sigma(0.2) and (0.8)); both 0 (a zeroed struct): none. */
    double sde_start_sigma, sde_end_sigma;
} sd_sample_options;

/* ComfyUI's sampler names that are implemented, in ComfyUI's order (docs/sampling.md lists
 * them and the ones left out). */
size_t sd_sampler_count(void);
const char *sd_sampler_name(size_t index);
/* Index of a sampler name, or -1. */
int sd_sampler_find(const char *name);
/* True for samplers whose KSampler schedule drops the penultimate sigma (dpm_2,
 * dpm_2_ancestral, uni_pc, uni_pc_bh2). */
bool sd_sampler_discards_penultimate_sigma(const char *name);
/* True for the samplers that read the unguided prediction (the denoiser's uncond output):
 * the *_cfg_pp ones. */
bool sd_sampler_uses_uncond(const char *name);

/* Runs KSAMPLER.sample: x = latent + noise * (sqrt(1 + sigma0^2) when sigma0 >= sigma_max, else
 * sigma0) (flow: sigma0 * noise + (1 - sigma0) * latent), then the sampler over opt->sigmas; the result goes to out (n floats; out may alias
 * latent or noise). With no sigmas the latent comes back as it is (CFGGuider.sample), with one
 * only the noise is added. noise NULL means zeros (KSamplerAdvanced add_noise disabled); latent NULL
 * means zeros (txt2img). All arrays hold the whole batch; the caller owns them.
 * Errors (message on ctx): SD_ERR_NOT_FOUND unknown sampler (the message lists the valid ones),
 * SD_ERR_INVALID missing denoiser, n == 0, or a sigma that is not finite, negative, or 0 before
 * the last one, SD_ERR_NOMEM, or the status a callback returned (SD_ERR_INTERRUPTED from the step
 * callback), with the callback's message if it set one on ctx, else one naming the sampler and
 * step; out is then unspecified. */
sd_status sd_sample(sd_context *ctx, const sd_sample_options *opt, const float *noise,
                    const float *latent, float *out, size_t n);

/* ComfyUI's prepare_noise: torch.manual_seed(seed), then torch.randn of the whole latent
 * [batch, per_item] in one draw, or, with batch_index (LatentFromBatch / RepeatLatentBatch),
 * one randn([1, ...]) per index 0..max(batch_index) with item b taking draw batch_index[b].
 * out holds batch * per_item floats. SD_ERR_INVALID for a negative index, SD_ERR_LIMIT for an
 * index above 65535 or a size that overflows. */
sd_status sd_prepare_noise(sd_context *ctx, uint64_t seed, size_t batch, size_t per_item,
                           const int64_t *batch_index, float *out);

#endif
