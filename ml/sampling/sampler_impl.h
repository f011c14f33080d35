/* Internal interface between the sampling driver (sampling.c) and the update rules
 * (samplers.c, sampler_unipc.c). Not for nodes: they use ml/sampling/sampling.h. */
#ifndef SD_ML_SAMPLER_IMPL_H
#define SD_ML_SAMPLER_IMPL_H

#include "core/rng.h"
#include "ml/sampling/sampling.h"

/* Registry flags of a sampler (models/sampling.c), visible to its update rule as run->flags. */
enum {
    SD_SAMPLER_DISCARD_PENULTIMATE = 1u << 0, /* KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS */
    SD_SAMPLER_RANDOM_INPAINT = 1u << 1,      /* inpaint_options {"random": True} (ddim) */
    SD_SAMPLER_CFG_PP = 1u << 2,              /* CFG++: reads the unguided prediction */
    SD_SAMPLER_ANCESTRAL = 1u << 3,           /* the eta variant of an update rule */
    SD_SAMPLER_HEUN = 1u << 4,                /* dpmpp_2m_sde's solver_type heun */
    SD_SAMPLER_VARIABLE = 1u << 5,            /* ipndm_v's variable-step coefficients */
    SD_SAMPLER_PECE = 1u << 6                 /* sa_solver_pece: the corrected state evaluated again */
};

typedef struct sd_sampler_run {
    sd_context *ctx;
    unsigned flags;     /* the sampler's SD_SAMPLER_* flags */
    const sd_sample_options *opt;
    const float *sigmas;
    int steps;          /* n_sigmas - 1 */
    size_t n;
    double eta, s_noise; /* resolved defaults */
    const float *latent;        /* inpainting: the initial latent, or NULL for zeros */
    const float *inpaint_noise; /* inpainting: noise that re-noises the kept region, or NULL */
    float *masked_x;            /* inpainting scratch (n floats) */
    sd_rng noise_rng;           /* default noise stream */
} sd_sampler_run;

/* D(x, sigma) with inpainting applied; out must not alias x. */
sd_status sd_sampler_denoise(sd_sampler_run *run, const float *x, double sigma, float *out);
/* The same, also writing the unguided prediction into uncond (CFG++ samplers; not blended with
 * the inpainting latent, as ComfyUI's post-CFG hook sees it before KSamplerX0Inpaint). */
sd_status sd_sampler_denoise_uncond(sd_sampler_run *run, const float *x, double sigma, float *out, float *uncond);
/* Noise for a step from sigma to sigma_next (n values). */
sd_status sd_sampler_noise(sd_sampler_run *run, double sigma, double sigma_next, float *out);
/* The per-step callback. */
sd_status sd_sampler_step(sd_sampler_run *run, int step, const float *x, const float *denoised);

/* k-diffusion's get_ancestral_step. */
void sd_ancestral_step(double sigma_from, double sigma_to, double eta, double *sigma_down,
                       double *sigma_up);

/* One update rule: x (n floats) holds the noised latent at sigmas[0] on entry and the result on
 * return. */
typedef sd_status (*sd_sampler_fn)(sd_sampler_run *run, float *x);

sd_status sd_sample_euler(sd_sampler_run *run, float *x);
sd_status sd_sample_euler_ancestral(sd_sampler_run *run, float *x);
sd_status sd_sample_euler_ancestral_cfg_pp(sd_sampler_run *run, float *x); /* euler_cfg_pp without ANCESTRAL */
sd_status sd_sample_heun(sd_sampler_run *run, float *x);
sd_status sd_sample_heunpp2(sd_sampler_run *run, float *x);
sd_status sd_sample_exp_heun_2_x0(sd_sampler_run *run, float *x); /* and _sde (ANCESTRAL); samplers_ext.c */
sd_status sd_sample_dpm_2(sd_sampler_run *run, float *x);
sd_status sd_sample_dpm_2_ancestral(sd_sampler_run *run, float *x);
sd_status sd_sample_lms(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_2s_ancestral(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_2s_ancestral_cfg_pp(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_sde(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_2m(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_2m_cfg_pp(sd_sampler_run *run, float *x);
sd_status sd_sample_dpmpp_2m_sde(sd_sampler_run *run, float *x); /* and _heun (HEUN) */
sd_status sd_sample_dpmpp_3m_sde(sd_sampler_run *run, float *x);
sd_status sd_sample_ddpm(sd_sampler_run *run, float *x);
sd_status sd_sample_lcm(sd_sampler_run *run, float *x);
sd_status sd_sample_ipndm(sd_sampler_run *run, float *x); /* and ipndm_v (VARIABLE) */
sd_status sd_sample_res_multistep(sd_sampler_run *run, float *x); /* CFG_PP, ANCESTRAL variants */
sd_status sd_sample_gradient_estimation(sd_sampler_run *run, float *x); /* and _cfg_pp (CFG_PP) */
/* samplers_ext.c */
sd_status sd_sample_dpm_fast(sd_sampler_run *run, float *x);
sd_status sd_sample_dpm_adaptive(sd_sampler_run *run, float *x);
sd_status sd_sample_deis(sd_sampler_run *run, float *x);
sd_status sd_sample_er_sde(sd_sampler_run *run, float *x);
sd_status sd_sample_seeds_2(sd_sampler_run *run, float *x);
sd_status sd_sample_seeds_3(sd_sampler_run *run, float *x);
sd_status sd_sample_sa_solver(sd_sampler_run *run, float *x); /* and sa_solver_pece (PECE) */
sd_status sd_sample_uni_pc_bh1(sd_sampler_run *run, float *x);
sd_status sd_sample_uni_pc_bh2(sd_sampler_run *run, float *x);

/* "unknown <what> '<name>' (valid: a, b, ...)" as SD_ERR_NOT_FOUND on ctx. */
sd_status sd_unknown_name_error(sd_context *ctx, const char *what, const char *name,
                                size_t (*count)(void), const char *(*name_at)(size_t));

/* Solves the m x m system a x = b (a row-major with row stride `stride`; a and b are
 * overwritten) by Gaussian elimination with partial pivoting (UniPC's and SA-Solver's small
 * systems). */
void sd_solve_linear(int m, int stride, double *a, double *b, double *x);

/* n floats, or NULL with SD_ERR_NOMEM set on run->ctx. */
float *sd_sampler_alloc(sd_sampler_run *run, size_t count);

#endif
