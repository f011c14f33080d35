/* Noise schedules (sigmas) as ComfyUI computes them for discrete-time eps models (SD1):
 * the model's sigma table, its sigma <-> timestep mapping, the nine schedulers of ComfyUI's
 * KSampler, and KSampler's denoise and KSamplerAdvanced's step-range handling.
 * Definitions and sources: docs/sampling.md. */
#ifndef SD_ML_SCHEDULERS_H
#define SD_ML_SCHEDULERS_H

#include "sdflow/sdflow.h"
#include <stdbool.h>
#include <stddef.h>

#define SD_MODEL_SAMPLING_MAX_STEPS 10000 /* ModelSamplingFlux's table */

/* ComfyUI's ModelSamplingDiscrete: sigmas[t] = sqrt((1 - abar_t) / abar_t) for the
 * scaled-linear beta schedule, stored as float32 like ComfyUI's buffers (log_sigmas is the log of
 * the double sigma, rounded to float). sigma_min = sigmas[0], sigma_max = sigmas[n - 1]. */
/* What the network's output is, and so how the denoised latent is made from it (ComfyUI's
 * model_sampling classes, the choices of its ModelSamplingDiscrete node). */
typedef enum sd_sampling_type {
    SD_SAMPLING_EPS,          /* EPS: the noise; D = x - sigma * out */
    SD_SAMPLING_V_PREDICTION, /* V_PREDICTION (sigma_data 1): D = x / (sigma^2 + 1) - out * sigma / sqrt(sigma^2 + 1) */
    SD_SAMPLING_LCM,          /* LCM over ModelSamplingDiscreteDistilled (50 of the sigmas): D = c_out * (x - sigma
                               * out) + c_skip * x with the boundary conditions at 10 * timestep, sigma_data 0.5 */
    SD_SAMPLING_X0,           /* X0: D = out */
    SD_SAMPLING_FLOW,         /* CONST over ModelSamplingFlux (FLUX): the velocity; D = x - sigma * out, the
                               * timestep is sigma itself, sigma(t) = e^shift / (e^shift + 1/t - 1) */
    SD_SAMPLING_EDM           /* EDM (Karras et al. 2022), continuous only: D = x sd^2 / (sigma^2 + sd^2)
                               * + out sigma sd / sqrt(sigma^2 + sd^2) for sigma_data sd */
} sd_sampling_type;

typedef struct sd_model_sampling {
    int n;
    int skip;              /* timesteps per kept sigma: 1, or 20 for LCM (ModelSamplingDiscreteDistilled) */
    sd_sampling_type type; /* SD_SAMPLING_EPS unless set by sd_model_sampling_init_type */
    double shift;          /* SD_SAMPLING_FLOW: ModelSamplingFlux's shift (mu) */
    bool continuous;       /* ModelSamplingContinuousEDM: timestep = 0.25 log sigma, sigma(t) = e^(4t) */
    float sigma_data;      /* 1 except EDM's 0.5: calculate_input x / sqrt(sigma^2 + sd^2), V and EDM's D */
    float sigmas[SD_MODEL_SAMPLING_MAX_STEPS];
    float log_sigmas[SD_MODEL_SAMPLING_MAX_STEPS];
} sd_model_sampling;

/* Fills ms for betas = linspace(sqrt(linear_start), sqrt(linear_end), timesteps)^2.
 * SD_ERR_INVALID (message on ctx) unless 2 <= timesteps <= SD_MODEL_SAMPLING_MAX_STEPS and
 * 0 < linear_start <= linear_end < 1. */
sd_status sd_model_sampling_init(sd_context *ctx, sd_model_sampling *ms, int timesteps,
                                 double linear_start, double linear_end);
/* The same with ComfyUI's ModelSamplingDiscrete choices: the output type and zsnr (the sigmas
 * rescaled to zero terminal SNR, rescale_zero_terminal_snr_sigmas: sigma_max becomes about 4500);
 * LCM keeps every 20th sigma of a 1000-step schedule from the end, as ModelSamplingDiscreteDistilled
 * (timestep(sigma) = 20 * index + 19). Errors as sd_model_sampling_init, and LCM with timesteps not
 * a multiple of 50. */
sd_status sd_model_sampling_init_type(sd_context *ctx, sd_model_sampling *ms, int timesteps, double linear_start,
                                      double linear_end, sd_sampling_type type, bool zsnr);
/* ComfyUI's ModelSamplingContinuousEDM (the ModelSamplingContinuousEDM node): 1000 float32 sigmas
 * exp(linspace(log sigma_min, log sigma_max)) (kept for the table-based schedulers), continuous
 * timesteps, type EPS, V_PREDICTION or EDM with sigma_data. SD_ERR_INVALID (message on ctx) unless
 * 0 < sigma_min < sigma_max are finite, sigma_data > 0 and the type is one of those three. */
sd_status sd_model_sampling_continuous(sd_context *ctx, sd_model_sampling *ms, sd_sampling_type type,
                                       double sigma_min, double sigma_max, double sigma_data);
/* calculate_input's divisor: the network sees x / sd_model_sampling_input_scale(ms, sigma), i.e.
 * sqrt(sigma^2 + sigma_data^2); 1 for FLOW (CONST takes x as it is). */
float sd_model_sampling_input_scale(const sd_model_sampling *ms, float sigma);
/* The denoised value is cx * x + cout * out for a model output `out` at the noisy x and sigma > 0
 * (calculate_denoised; for EPS exactly x - out * sigma). */
void sd_model_sampling_denoise_coefs(const sd_model_sampling *ms, float sigma, float *cx, float *cout);
/* ComfyUI's ModelSamplingFlux with CONST: 10000 sigmas sigma((i + 1) / 10000) in float32 for
 * sigma(t) = e^shift / (e^shift + 1/t - 1) (flux_time_shift). FluxSchnell's shift is 1.0, Flux
 * (dev)'s 1.15 unless the ModelSamplingFlux node sets one (sd_flux_shift). Cannot fail. */
void sd_model_sampling_flux(sd_model_sampling *ms, double shift);
/* The ModelSamplingFlux node's shift for an image size: linear in the 2x2-patch token count
 * width * height / 256 through (256, base_shift) and (4096, max_shift). */
double sd_flux_shift(double max_shift, double base_shift, double width, double height);
/* The SD1 family's schedule: 1000 steps, 0.00085 .. 0.012. Cannot fail. */
void sd_model_sampling_sd1(sd_model_sampling *ms);
float sd_model_sampling_sigma_min(const sd_model_sampling *ms);
float sd_model_sampling_sigma_max(const sd_model_sampling *ms);
/* The model's timestep for a sigma: the index of the nearest log-sigma (ComfyUI's
 * ModelSamplingDiscrete.timestep; times skip plus skip - 1 for LCM), sigma itself for FLOW,
 * 0.25 * log(sigma) in float32 for a continuous schedule.
 * sigma must be > 0. */
float sd_model_sampling_timestep(const sd_model_sampling *ms, float sigma);
/* Sigma for a fractional timestep (clamped to [0, n-1]) by linear interpolation of log-sigma;
 * FLOW: flux_time_shift(shift, 1, timestep); continuous: exp(timestep / 0.25). */
float sd_model_sampling_sigma(const sd_model_sampling *ms, float timestep);
/* ComfyUI's ModelSamplingDiscrete.percent_to_sigma: the sigma at a fraction of the model's
 * schedule (0 its start, 1 its end): sigma((1 - percent) * 999) with the argument rounded to
 * float32 as ComfyUI's tensor; percent <= 0 gives 999999999.9 (above every sigma), percent >= 1
 * gives 0 (FLOW: 1 for percent <= 0, sigma(1 - percent) between; continuous: log-linear between
 * sigma_max and sigma_min, in double). Used for ControlNet and conditioning percent ranges. */
double sd_model_sampling_percent_to_sigma(const sd_model_sampling *ms, double percent);

/* ComfyUI's scheduler names, in ComfyUI's order: normal, karras, exponential, sgm_uniform,
 * simple, ddim_uniform, beta, linear_quadratic, kl_optimal. */
size_t sd_scheduler_count(void);
const char *sd_scheduler_name(size_t index);
/* Index of a scheduler name, or -1. */
int sd_scheduler_find(const char *name);

/* Largest step count accepted, after denoise's extension (ComfyUI allows 10000 steps). */
#define SD_SCHEDULE_MAX_STEPS 100000

/* The sigmas of one scheduler for `steps` steps (comfy.samplers.calculate_sigmas), ending in 0.
 * *out is malloc'd (caller frees) and holds *n_out values; most schedulers give steps + 1 values,
 * ddim_uniform and beta may give more or fewer, as in ComfyUI.
 * Errors (message on ctx, *out untouched): SD_ERR_NOT_FOUND for an unknown name (the message lists
 * the valid ones), SD_ERR_INVALID for steps < 1, SD_ERR_LIMIT above SD_SCHEDULE_MAX_STEPS,
 * SD_ERR_NOMEM. */
sd_status sd_scheduler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                              int steps, float **out, size_t *n_out);

/* KSampler's sigmas (comfy.samplers.KSampler.set_steps): for samplers that discard the
 * penultimate sigma (dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2) one extra step is scheduled and
 * its second-to-last sigma dropped; for denoise < 0.9999 the schedule of int(steps / denoise)
 * steps is computed and its last steps + 1 sigmas kept. Errors as sd_scheduler_sigmas, plus
 * SD_ERR_NOT_FOUND for an unknown sampler and SD_ERR_INVALID for denoise outside (0, 1]. */
sd_status sd_ksampler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                             const char *sampler, int steps, double denoise, float **out,
                             size_t *n_out);

/* BasicScheduler (comfy_extras/nodes_custom_sampler.py): the scheduler's sigmas for
 * int(steps / denoise) steps when denoise < 1, of which the last steps + 1 are kept (all when
 * fewer, so ddim_uniform and beta may give other counts than steps + 1); denoise <= 0 gives no
 * sigmas (*out is still malloc'd). No sampler adjusts it (KSampler's discard of the penultimate
 * sigma is not applied). Errors as sd_scheduler_sigmas, SD_ERR_INVALID for denoise above 1,
 * SD_ERR_LIMIT when the extension passes SD_SCHEDULE_MAX_STEPS. */
sd_status sd_basic_scheduler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                                    int steps, double denoise, float **out, size_t *n_out);

/* k-diffusion's schedules between given sigmas (KarrasScheduler, ExponentialScheduler,
 * PolyexponentialScheduler): steps + 1 values ending in 0, float32 as torch computes them.
 * karras: (max^(1/rho) + linspace(0, 1) (min^(1/rho) - max^(1/rho)))^rho; exponential:
 * exp(linspace(log max, log min)) (rho unused); polyexponential:
 * exp(linspace(1, 0)^rho (log max - log min) + log min). SD_ERR_INVALID for steps < 1 or when a
 * sigma comes out NaN or infinite (rho 0, sigma_min 0 for the logarithmic ones), SD_ERR_LIMIT
 * above SD_SCHEDULE_MAX_STEPS, SD_ERR_NOMEM. */
typedef enum sd_sigma_formula {
    SD_SIGMAS_KARRAS,
    SD_SIGMAS_EXPONENTIAL,
    SD_SIGMAS_POLYEXPONENTIAL
} sd_sigma_formula;
sd_status sd_formula_sigmas(sd_context *ctx, sd_sigma_formula formula, int steps, double sigma_min,
                            double sigma_max, double rho, float **out, size_t *n_out);

/* SDTurboScheduler: the model's sigmas at timesteps 999, 899, ..., 99 starting from entry
 * 10 - int(10 * denoise), steps of them (fewer when the list ends), then 0. SD_ERR_INVALID
 * unless 1 <= steps <= 10 and 0 <= denoise <= 1. */
sd_status sd_sd_turbo_sigmas(sd_context *ctx, const sd_model_sampling *ms, int steps, double denoise,
                             float **out, size_t *n_out);

/* AlignYourStepsScheduler: the model type's ten-step noise levels (SD1, SDXL, SVD), resampled
 * log-linearly to steps + 1 points for other step counts (loglinear_interp), of which the last
 * round(steps * denoise) + 1 are kept when denoise < 1 (none for denoise <= 0), the last set to 0.
 * SD_ERR_NOT_FOUND for an unknown model type, SD_ERR_INVALID for steps outside
 * 1..SD_SCHEDULE_MAX_STEPS or denoise above 1. */
size_t sd_ays_model_type_count(void);
const char *sd_ays_model_type_name(size_t index);
sd_status sd_ays_sigmas(sd_context *ctx, const char *model_type, int steps, double denoise, float **out,
                        size_t *n_out);

/* KSamplerAdvanced's step range applied in place to sigmas[0..*n) (KSampler.sample): when
 * last_step < *n - 1 the list is cut after last_step (and its last sigma set to 0 if
 * force_full_denoise), then the first start_step sigmas are dropped. A negative start_step or
 * last_step means "not given". Returns false (and *n = 0) when start_step leaves no step to run,
 * in which case ComfyUI returns the input latent unchanged. */
bool sd_sigmas_step_range(float *sigmas, size_t *n, int start_step, int last_step,
                          bool force_full_denoise);

#endif
