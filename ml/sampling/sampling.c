/* Sampling driver: sampler registry, KSAMPLER.sample's noise scaling and inpainting wrapper,
 * default noise, and prepare_noise (comfy/samplers.py, comfy/sample.py). */
#include "ml/sampling/sampling.h"

#include "core/checked.h"
#include "core/context.h"
#include "ml/sampling/sampler_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct sampler_entry {
    const char *name;
    sd_sampler_fn fn;
    unsigned flags; /* SD_SAMPLER_* */
    double default_eta;
} sampler_entry;

#define DISCARD SD_SAMPLER_DISCARD_PENULTIMATE
#define CFG_PP SD_SAMPLER_CFG_PP
#define ANCESTRAL SD_SAMPLER_ANCESTRAL

/* ComfyUI's order (comfy.samplers.SAMPLER_NAMES), restricted to the implemented ones. The _gpu
 * names are ComfyUI's Brownian-tree noise on the GPU; here they are their CPU namesakes (the
 * seed + 1 noise stream, docs/sampling.md). */
static const sampler_entry samplers[] = {
    {"euler", sd_sample_euler, 0, 0.0},
    {"euler_cfg_pp", sd_sample_euler_ancestral_cfg_pp, CFG_PP, 0.0},
    {"euler_ancestral", sd_sample_euler_ancestral, 0, 1.0},
    {"euler_ancestral_cfg_pp", sd_sample_euler_ancestral_cfg_pp, CFG_PP | ANCESTRAL, 1.0},
    {"heun", sd_sample_heun, 0, 0.0},
    {"heunpp2", sd_sample_heunpp2, 0, 0.0},
    {"exp_heun_2_x0", sd_sample_exp_heun_2_x0, 0, 0.0},
    {"exp_heun_2_x0_sde", sd_sample_exp_heun_2_x0, ANCESTRAL, 1.0},
    {"dpm_2", sd_sample_dpm_2, DISCARD, 0.0},
    {"dpm_2_ancestral", sd_sample_dpm_2_ancestral, DISCARD, 1.0},
    {"lms", sd_sample_lms, 0, 0.0},
    {"dpm_fast", sd_sample_dpm_fast, 0, 0.0},
    {"dpm_adaptive", sd_sample_dpm_adaptive, 0, 0.0},
    {"dpmpp_2s_ancestral", sd_sample_dpmpp_2s_ancestral, 0, 1.0},
    {"dpmpp_2s_ancestral_cfg_pp", sd_sample_dpmpp_2s_ancestral_cfg_pp, CFG_PP, 1.0},
    {"dpmpp_sde", sd_sample_dpmpp_sde, 0, 1.0},
    {"dpmpp_sde_gpu", sd_sample_dpmpp_sde, 0, 1.0},
    {"dpmpp_2m", sd_sample_dpmpp_2m, 0, 0.0},
    {"dpmpp_2m_cfg_pp", sd_sample_dpmpp_2m_cfg_pp, CFG_PP, 0.0},
    {"dpmpp_2m_sde", sd_sample_dpmpp_2m_sde, 0, 1.0},
    {"dpmpp_2m_sde_gpu", sd_sample_dpmpp_2m_sde, 0, 1.0},
    {"dpmpp_2m_sde_heun", sd_sample_dpmpp_2m_sde, SD_SAMPLER_HEUN, 1.0},
    {"dpmpp_2m_sde_heun_gpu", sd_sample_dpmpp_2m_sde, SD_SAMPLER_HEUN, 1.0},
    {"dpmpp_3m_sde", sd_sample_dpmpp_3m_sde, 0, 1.0},
    {"dpmpp_3m_sde_gpu", sd_sample_dpmpp_3m_sde, 0, 1.0},
    {"ddpm", sd_sample_ddpm, 0, 0.0},
    {"lcm", sd_sample_lcm, 0, 0.0},
    {"ipndm", sd_sample_ipndm, 0, 0.0},
    {"ipndm_v", sd_sample_ipndm, SD_SAMPLER_VARIABLE, 0.0},
    {"deis", sd_sample_deis, 0, 0.0},
    {"res_multistep", sd_sample_res_multistep, 0, 0.0},
    {"res_multistep_cfg_pp", sd_sample_res_multistep, CFG_PP, 0.0},
    {"res_multistep_ancestral", sd_sample_res_multistep, ANCESTRAL, 1.0},
    {"res_multistep_ancestral_cfg_pp", sd_sample_res_multistep, CFG_PP | ANCESTRAL, 1.0},
    {"gradient_estimation", sd_sample_gradient_estimation, 0, 0.0},
    {"gradient_estimation_cfg_pp", sd_sample_gradient_estimation, CFG_PP, 0.0},
    {"er_sde", sd_sample_er_sde, 0, 0.0},
    {"seeds_2", sd_sample_seeds_2, 0, 1.0},
    {"seeds_3", sd_sample_seeds_3, 0, 1.0},
    {"sa_solver", sd_sample_sa_solver, 0, 1.0},
    {"sa_solver_pece", sd_sample_sa_solver, SD_SAMPLER_PECE, 1.0},
    {"ddim", sd_sample_euler, SD_SAMPLER_RANDOM_INPAINT, 0.0},
    {"uni_pc", sd_sample_uni_pc_bh1, DISCARD, 0.0},
    {"uni_pc_bh2", sd_sample_uni_pc_bh2, DISCARD, 0.0},
};
#define N_SAMPLERS (sizeof samplers / sizeof samplers[0])

size_t sd_sampler_count(void)
{
    return N_SAMPLERS;
}

const char *sd_sampler_name(size_t index)
{
    return index < N_SAMPLERS ? samplers[index].name : NULL;
}

int sd_sampler_find(const char *name)
{
    for (size_t i = 0; name && i < N_SAMPLERS; i++)
        if (strcmp(name, samplers[i].name) == 0)
            return (int)i;
    return -1;
}

bool sd_sampler_discards_penultimate_sigma(const char *name)
{
    int i = sd_sampler_find(name);
    return i >= 0 && (samplers[i].flags & SD_SAMPLER_DISCARD_PENULTIMATE);
}

bool sd_sampler_uses_uncond(const char *name)
{
    int i = sd_sampler_find(name);
    return i >= 0 && (samplers[i].flags & SD_SAMPLER_CFG_PP);
}

float *sd_sampler_alloc(sd_sampler_run *run, size_t count)
{
    size_t bytes;
    float *p = NULL;
    if (sd_mul_size(count, sizeof(float), &bytes))
        p = malloc(bytes);
    if (!p)
        sd_set_error(run->ctx, SD_ERR_NOMEM, "sampler '%s': out of memory for %zu values",
                     run->opt->sampler, count);
    return p;
}

void sd_ancestral_step(double sigma_from, double sigma_to, double eta, double *sigma_down,
                       double *sigma_up)
{
    if (eta == 0.0) {
        *sigma_down = sigma_to;
        *sigma_up = 0.0;
        return;
    }
    double up = eta * sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                           (sigma_from * sigma_from));
    if (up > sigma_to)
        up = sigma_to;
    *sigma_up = up;
    *sigma_down = sqrt(sigma_to * sigma_to - up * up);
}

sd_status sd_sampler_denoise(sd_sampler_run *run, const float *x, double sigma, float *out)
{
    return sd_sampler_denoise_uncond(run, x, sigma, out, NULL);
}

sd_status sd_sampler_denoise_uncond(sd_sampler_run *run, const float *x, double sigma, float *out, float *uncond)
{
    const sd_sample_options *o = run->opt;
    const float *m = o->noise_mask;
    const float *in = x;
    float s = (float)sigma;
    if (m) {
        for (size_t i = 0; i < run->n; i++) {
            float lat = run->latent ? run->latent[i] : 0.0f;
            float nz = run->inpaint_noise ? run->inpaint_noise[i] : 0.0f;
            float noised = o->flow ? nz * s + (1.0f - s) * lat : nz * s + lat;
            run->masked_x[i] = x[i] * m[i] + noised * (1.0f - m[i]);
        }
        in = run->masked_x;
    }
    sd_status st = o->denoise(o->denoise_user, in, s, out, uncond, run->n);
    if (st != SD_OK) {
        if (!sd_context_errmsg(run->ctx)[0])
            sd_set_error(run->ctx, st, "sampler '%s': denoiser failed at sigma %g", o->sampler, sigma);
        return st;
    }
    if (m)
        for (size_t i = 0; i < run->n; i++)
            out[i] = out[i] * m[i] + (run->latent ? run->latent[i] : 0.0f) * (1.0f - m[i]);
    return SD_OK;
}

sd_status sd_sampler_noise(sd_sampler_run *run, double sigma, double sigma_next, float *out)
{
    const sd_sample_options *o = run->opt;
    if (!o->noise) {
        sd_rng_randn(&run->noise_rng, out, run->n);
        return SD_OK;
    }
    sd_status st = o->noise(o->noise_user, (float)sigma, (float)sigma_next, out, run->n);
    if (st != SD_OK && !sd_context_errmsg(run->ctx)[0])
        sd_set_error(run->ctx, st, "sampler '%s': noise callback failed", o->sampler);
    return st;
}

sd_status sd_sampler_step(sd_sampler_run *run, int step, const float *x, const float *denoised)
{
    const sd_sample_options *o = run->opt;
    if (!o->step)
        return SD_OK;
    sd_status st = o->step(o->step_user, step, run->steps, x, denoised, run->n);
    if (st != SD_OK && !sd_context_errmsg(run->ctx)[0])
        sd_set_error(run->ctx, st, "sampler '%s': %s at step %d of %d", o->sampler,
                     st == SD_ERR_INTERRUPTED ? "interrupted" : "stopped", step + 1, run->steps);
    return st;
}

void sd_solve_linear(int m, int stride, double *a, double *b, double *x)
{
    for (int c = 0; c < m; c++) {
        int p = c;
        for (int r = c + 1; r < m; r++)
            if (fabs(a[r * stride + c]) > fabs(a[p * stride + c]))
                p = r;
        for (int k = 0; k < m; k++) {
            double t = a[c * stride + k];
            a[c * stride + k] = a[p * stride + k];
            a[p * stride + k] = t;
        }
        double t = b[c];
        b[c] = b[p];
        b[p] = t;
        for (int r = c + 1; r < m; r++) {
            double f = a[r * stride + c] / a[c * stride + c];
            for (int k = c; k < m; k++)
                a[r * stride + k] -= f * a[c * stride + k];
            b[r] -= f * b[c];
        }
    }
    for (int r = m - 1; r >= 0; r--) {
        double v = b[r];
        for (int k = r + 1; k < m; k++)
            v -= a[r * stride + k] * x[k];
        x[r] = v / a[r * stride + r];
    }
}

sd_status sd_unknown_name_error(sd_context *ctx, const char *what, const char *name,
                                size_t (*count)(void), const char *(*name_at)(size_t))
{
    char list[1024];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < count() && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", name_at(i));
    return sd_set_error(ctx, SD_ERR_NOT_FOUND, "unknown %s '%s' (valid: %s)", what,
                        name ? name : "(null)", list);
}

sd_status sd_sample(sd_context *ctx, const sd_sample_options *opt, const float *noise,
                    const float *latent, float *out, size_t n)
{
    int idx = sd_sampler_find(opt->sampler);
    if (idx < 0)
        return sd_unknown_name_error(ctx, "sampler", opt->sampler, sd_sampler_count, sd_sampler_name);
    if (!opt->denoise)
        return sd_set_error(ctx, SD_ERR_INVALID, "sampler '%s': no denoiser given", opt->sampler);
    if (n == 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "sampler '%s': empty latent", opt->sampler);
    if ((opt->set_eta && !(opt->eta >= 0.0 && opt->eta <= 1e3)) ||
        (opt->set_s_noise && !(opt->s_noise >= 0.0 && opt->s_noise <= 1e3)))
        return sd_set_error(ctx, SD_ERR_INVALID, "sampler '%s': eta %g and s_noise %g must be in [0, 1000]",
                            opt->sampler, opt->set_eta ? opt->eta : 1.0, opt->set_s_noise ? opt->s_noise : 1.0);
    if (opt->n_sigmas > 0 && !opt->sigmas)
        return sd_set_error(ctx, SD_ERR_INVALID, "sampler '%s': no sigmas given", opt->sampler);
    if (opt->n_sigmas > (size_t)INT32_MAX)
        return sd_set_error(ctx, SD_ERR_LIMIT, "sampler '%s': %zu sigmas", opt->sampler, opt->n_sigmas);
    for (size_t i = 0; i < opt->n_sigmas; i++)
        if (!isfinite(opt->sigmas[i]) || opt->sigmas[i] < 0.0f || (i + 1 < opt->n_sigmas && opt->sigmas[i] == 0.0f))
            return sd_set_error(ctx, SD_ERR_INVALID,
                                "sampler '%s': sigma %zu is %g (sigmas must be finite, positive, only the last may be 0)",
                                opt->sampler, i, (double)opt->sigmas[i]);
    const sampler_entry *e = &samplers[idx];
    /* A callback that fails may leave its own message; anything on ctx afterwards is its. */
    sd_clear_error(ctx);
    sd_sampler_run run = {0};
    run.ctx = ctx;
    run.opt = opt;
    run.flags = e->flags;
    run.sigmas = opt->sigmas;
    run.steps = opt->n_sigmas >= 2 ? (int)(opt->n_sigmas - 1) : 0;
    run.n = n;
    run.eta = opt->set_eta ? opt->eta : e->default_eta;
    run.s_noise = opt->set_s_noise ? opt->s_noise : 1.0;
    sd_rng_seed(&run.noise_rng, opt->seed + 1);
    float *saved_latent = NULL, *saved_noise = NULL;
    sd_status st = SD_OK;

    if (opt->n_sigmas == 0) {
        /* CFGGuider.sample with no sigmas returns the latent unchanged. */
        for (size_t i = 0; i < n; i++)
            out[i] = latent ? latent[i] : 0.0f;
        return SD_OK;
    }
    if (opt->noise_mask) {
        /* out may alias latent or noise: keep copies for the inpainting blend. */
        run.masked_x = sd_sampler_alloc(&run, n);
        saved_latent = latent ? sd_sampler_alloc(&run, n) : NULL;
        saved_noise = sd_sampler_alloc(&run, n);
        if (!run.masked_x || (latent && !saved_latent) || !saved_noise) {
            st = SD_ERR_NOMEM;
            goto done;
        }
        if (latent)
            memcpy(saved_latent, latent, n * sizeof(float));
        if (e->flags & SD_SAMPLER_RANDOM_INPAINT) {
            sd_rng rng;
            sd_rng_seed(&rng, opt->seed + 1);
            sd_rng_randn(&rng, saved_noise, n);
        } else if (noise) {
            memcpy(saved_noise, noise, n * sizeof(float));
        } else {
            memset(saved_noise, 0, n * sizeof(float));
        }
        run.latent = saved_latent;
        run.inpaint_noise = saved_noise;
    }

    float sigma0 = opt->sigmas[0];
    bool max_denoise = fabsf(opt->sigma_max - sigma0) <= 1e-5f * fmaxf(fabsf(opt->sigma_max), fabsf(sigma0)) ||
                       sigma0 > opt->sigma_max;
    float scale = max_denoise && !opt->flow ? sqrtf(1.0f + sigma0 * sigma0) : sigma0;
    float keep = opt->flow ? 1.0f - sigma0 : 1.0f;
    for (size_t i = 0; i < n; i++) {
        float nz = noise ? noise[i] : 0.0f;
        out[i] = nz * scale + keep * (latent ? latent[i] : 0.0f);
    }
    if (run.steps > 0)
        st = e->fn(&run, out);
    float last = opt->sigmas[opt->n_sigmas - 1];
    for (size_t i = 0; !st && opt->flow && last < 1.0f && i < n; i++)
        out[i] /= 1.0f - last;

done:
    free(run.masked_x);
    free(saved_latent);
    free(saved_noise);
    return st;
}

sd_status sd_prepare_noise(sd_context *ctx, uint64_t seed, size_t batch, size_t per_item,
                           const int64_t *batch_index, float *out)
{
    size_t total;
    if (!sd_mul_size(batch, per_item, &total))
        return sd_set_error(ctx, SD_ERR_LIMIT, "noise: %zu x %zu values overflow", batch, per_item);
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    if (!batch_index) {
        sd_rng_randn(&rng, out, total);
        return SD_OK;
    }
    int64_t max_index = -1;
    for (size_t b = 0; b < batch; b++) {
        if (batch_index[b] < 0)
            return sd_set_error(ctx, SD_ERR_INVALID, "noise: batch_index[%zu] is %lld, must be >= 0", b,
                                (long long)batch_index[b]);
        if (batch_index[b] > 65535)
            return sd_set_error(ctx, SD_ERR_LIMIT, "noise: batch_index[%zu] is %lld, above 65535", b,
                                (long long)batch_index[b]);
        if (batch_index[b] > max_index)
            max_index = batch_index[b];
    }
    size_t bytes;
    if (!sd_mul_size(per_item, sizeof(float), &bytes))
        return sd_set_error(ctx, SD_ERR_LIMIT, "noise: %zu values overflow", per_item);
    float *draw = malloc(bytes ? bytes : 1);
    if (!draw)
        return sd_set_error(ctx, SD_ERR_NOMEM, "noise: out of memory");
    for (int64_t i = 0; i <= max_index; i++) {
        sd_rng_randn(&rng, draw, per_item);
        for (size_t b = 0; b < batch; b++)
            if (batch_index[b] == i)
                memcpy(out + b * per_item, draw, per_item * sizeof(float));
    }
    free(draw);
    return SD_OK;
}
