/* Sigma schedules, following comfy/samplers.py, comfy/model_sampling.py and
 * comfy/k_diffusion/sampling.py (see docs/sampling.md).
 *
 * Where ComfyUI computes in float32 tensors, the same operations are done here in float, in the
 * same order; where it computes in Python floats, in double. The file is ISO C (no implicit
 * fused multiply-add), so results agree with ComfyUI to a few float ulps. */
#include "ml/sampling/schedulers.h"

#include "core/checked.h"
#include "core/context.h"
#include "ml/sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

typedef enum sched_kind {
    SCHED_NORMAL,
    SCHED_KARRAS,
    SCHED_EXPONENTIAL,
    SCHED_SGM_UNIFORM,
    SCHED_SIMPLE,
    SCHED_DDIM_UNIFORM,
    SCHED_BETA,
    SCHED_LINEAR_QUADRATIC,
    SCHED_KL_OPTIMAL,
    SCHED_COUNT
} sched_kind;

static const char *const sched_names[SCHED_COUNT] = {
    "normal", "karras", "exponential", "sgm_uniform", "simple",
    "ddim_uniform", "beta", "linear_quadratic", "kl_optimal",
};

size_t sd_scheduler_count(void)
{
    return SCHED_COUNT;
}

const char *sd_scheduler_name(size_t index)
{
    return index < SCHED_COUNT ? sched_names[index] : NULL;
}

int sd_scheduler_find(const char *name)
{
    for (int i = 0; name && i < SCHED_COUNT; i++)
        if (strcmp(name, sched_names[i]) == 0)
            return i;
    return -1;
}

/* torch.linspace(start, end, n)[i] for a float64 tensor (the CPU kernel's formula). */
static double linspace_f64(double start, double end, int n, int i)
{
    if (n == 1)
        return start;
    double step = (end - start) / (double)(n - 1);
    if (i < n / 2)
        return start + step * (double)i;
    return end - step * (double)(n - 1 - i);
}

/* The same for a float32 tensor: start and end rounded to float, arithmetic in float. */
static float linspace_f32(double start_d, double end_d, int n, int i)
{
    float start = (float)start_d, end = (float)end_d;
    if (n == 1)
        return start;
    float step = (end - start) / (float)(n - 1);
    if (i < n / 2)
        return start + step * (float)i;
    return end - step * (float)(n - 1 - i);
}

/* make_beta_schedule("linear") in float64, cumprod, optionally rescale_zero_terminal_snr_sigmas
 * (in float64 too), sigmas rounded to float like ComfyUI's buffers. */
static void model_sampling_fill(sd_model_sampling *ms, int timesteps, double linear_start, double linear_end,
                                bool zsnr)
{
    double start = sqrt(linear_start), end = sqrt(linear_end);
    double alphas_cumprod = 1.0, sigma[SD_MODEL_SAMPLING_MAX_STEPS];
    ms->n = timesteps;
    ms->skip = 1;
    ms->type = SD_SAMPLING_EPS;
    ms->continuous = false;
    ms->sigma_data = 1.0f;
    for (int t = 0; t < timesteps; t++) {
        double b = linspace_f64(start, end, timesteps, t);
        alphas_cumprod *= 1.0 - b * b;
        sigma[t] = sqrt((1.0 - alphas_cumprod) / alphas_cumprod);
    }
    if (zsnr) {
        double a0 = sqrt(1.0 / (sigma[0] * sigma[0] + 1.0));
        double aT = sqrt(1.0 / (sigma[timesteps - 1] * sigma[timesteps - 1] + 1.0));
        for (int t = 0; t < timesteps; t++) {
            double a = sqrt(1.0 / (sigma[t] * sigma[t] + 1.0));
            a -= aT;
            a *= a0 / (a0 - aT);
            double abar = t == timesteps - 1 ? 4.8973451890853435e-08 : a * a;
            sigma[t] = sqrt((1.0 - abar) / abar);
        }
    }
    for (int t = 0; t < timesteps; t++) {
        ms->sigmas[t] = (float)sigma[t];
        ms->log_sigmas[t] = (float)log(sigma[t]);
    }
}

/* ModelSamplingDiscreteDistilled: 50 float sigmas, every skip-th from the end, logs in float. */
static void model_sampling_distill(sd_model_sampling *ms)
{
    enum { KEPT = 50 };
    float kept[KEPT];
    int skip = ms->n / KEPT;
    for (int x = 0; x < KEPT; x++)
        kept[KEPT - 1 - x] = ms->sigmas[ms->n - 1 - x * skip];
    for (int i = 0; i < KEPT; i++) {
        ms->sigmas[i] = kept[i];
        ms->log_sigmas[i] = logf(kept[i]);
    }
    ms->n = KEPT;
    ms->skip = skip;
}

static sd_status check_schedule(sd_context *ctx, int timesteps, double linear_start, double linear_end)
{
    if (timesteps < 2 || timesteps > SD_MODEL_SAMPLING_MAX_STEPS)
        return sd_set_error(ctx, SD_ERR_INVALID, "model sampling: %d timesteps (expected 2..%d)",
                            timesteps, SD_MODEL_SAMPLING_MAX_STEPS);
    if (!(linear_start > 0.0 && linear_start <= linear_end && linear_end < 1.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "model sampling: beta range %g..%g is not inside (0, 1)",
                            linear_start, linear_end);
    return SD_OK;
}

sd_status sd_model_sampling_init(sd_context *ctx, sd_model_sampling *ms, int timesteps,
                                 double linear_start, double linear_end)
{
    sd_status st = check_schedule(ctx, timesteps, linear_start, linear_end);
    if (!st)
        model_sampling_fill(ms, timesteps, linear_start, linear_end, false);
    return st;
}

sd_status sd_model_sampling_init_type(sd_context *ctx, sd_model_sampling *ms, int timesteps, double linear_start,
                                      double linear_end, sd_sampling_type type, bool zsnr)
{
    sd_status st = check_schedule(ctx, timesteps, linear_start, linear_end);
    if (st)
        return st;
    if (type == SD_SAMPLING_LCM && timesteps % 50)
        return sd_set_error(ctx, SD_ERR_INVALID, "model sampling: LCM needs a multiple of 50 timesteps, not %d",
                            timesteps);
    model_sampling_fill(ms, timesteps, linear_start, linear_end, zsnr);
    if (type == SD_SAMPLING_LCM)
        model_sampling_distill(ms);
    ms->type = type;
    return SD_OK;
}

sd_status sd_model_sampling_continuous(sd_context *ctx, sd_model_sampling *ms, sd_sampling_type type,
                                       double sigma_min, double sigma_max, double sigma_data)
{
    enum { TABLE = 1000 };
    if (type != SD_SAMPLING_EPS && type != SD_SAMPLING_V_PREDICTION && type != SD_SAMPLING_EDM)
        return sd_set_error(ctx, SD_ERR_INVALID, "model sampling: a continuous schedule takes eps, v_prediction "
                                                 "or edm");
    if (!(sigma_min > 0.0 && sigma_min < sigma_max && isfinite(sigma_max) && sigma_data > 0.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "model sampling: sigma range %g..%g (expected 0 < sigma_min "
                                                 "< sigma_max)", sigma_min, sigma_max);
    ms->n = TABLE;
    ms->skip = 1;
    ms->type = type;
    ms->shift = 0.0;
    ms->continuous = true;
    ms->sigma_data = (float)sigma_data;
    for (int i = 0; i < TABLE; i++) {
        ms->sigmas[i] = expf(linspace_f32(log(sigma_min), log(sigma_max), TABLE, i));
        ms->log_sigmas[i] = logf(ms->sigmas[i]);
    }
    return SD_OK;
}

float sd_model_sampling_input_scale(const sd_model_sampling *ms, float sigma)
{
    if (ms->type == SD_SAMPLING_FLOW)
        return 1.0f;
    return sqrtf(sigma * sigma + ms->sigma_data * ms->sigma_data);
}

void sd_model_sampling_denoise_coefs(const sd_model_sampling *ms, float sigma, float *cx, float *cout)
{
    switch (ms->type) {
    case SD_SAMPLING_EPS:
        *cx = 1.0f, *cout = -sigma;
        return;
    case SD_SAMPLING_V_PREDICTION:
    case SD_SAMPLING_EDM: {
        float sd = ms->sigma_data, s2 = sigma * sigma + sd * sd, c_out = sigma * sd / sqrtf(s2);
        *cx = sd * sd / s2, *cout = ms->type == SD_SAMPLING_EDM ? c_out : -c_out;
        return;
    }
    case SD_SAMPLING_LCM: {
        float t = (float)sd_model_sampling_timestep(ms, sigma) * 10.0f;
        float c_skip = 0.25f / (t * t + 0.25f), c_out = t / sqrtf(t * t + 0.25f);
        *cx = c_out + c_skip, *cout = -(c_out * sigma);
        return;
    }
    case SD_SAMPLING_FLOW:
        *cx = 1.0f, *cout = -sigma;
        return;
    case SD_SAMPLING_X0:
        break;
    }
    *cx = 0.0f, *cout = 1.0f;
}

/* flux_time_shift(shift, 1, t) in float32 as torch computes it on a float32 t. */
static float flux_time_shift(double shift, float t)
{
    float e = (float)exp(shift);
    return e / (e + (1.0f / t - 1.0f));
}

void sd_model_sampling_flux(sd_model_sampling *ms, double shift)
{
    ms->n = SD_MODEL_SAMPLING_MAX_STEPS;
    ms->skip = 1;
    ms->type = SD_SAMPLING_FLOW;
    ms->shift = shift;
    ms->continuous = false;
    ms->sigma_data = 1.0f;
    for (int i = 0; i < ms->n; i++) {
        ms->sigmas[i] = flux_time_shift(shift, (float)(i + 1) / (float)ms->n);
        ms->log_sigmas[i] = logf(ms->sigmas[i]);
    }
}

double sd_flux_shift(double max_shift, double base_shift, double width, double height)
{
    double mm = (max_shift - base_shift) / (4096 - 256), b = base_shift - mm * 256;
    return width * height / (8 * 8 * 2 * 2) * mm + b;
}

void sd_model_sampling_sd1(sd_model_sampling *ms)
{
    model_sampling_fill(ms, 1000, 0.00085, 0.012, false);
}

float sd_model_sampling_sigma_min(const sd_model_sampling *ms)
{
    return ms->sigmas[0];
}

float sd_model_sampling_sigma_max(const sd_model_sampling *ms)
{
    return ms->sigmas[ms->n - 1];
}

float sd_model_sampling_timestep(const sd_model_sampling *ms, float sigma)
{
    if (ms->type == SD_SAMPLING_FLOW)
        return sigma;
    if (ms->continuous)
        return 0.25f * logf(sigma);
    float log_sigma = logf(sigma);
    int best = 0;
    float best_dist = fabsf(log_sigma - ms->log_sigmas[0]);
    for (int t = 1; t < ms->n; t++) {
        float d = fabsf(log_sigma - ms->log_sigmas[t]);
        if (d < best_dist) {
            best_dist = d;
            best = t;
        }
    }
    return (float)(best * ms->skip + ms->skip - 1);
}

float sd_model_sampling_sigma(const sd_model_sampling *ms, float timestep)
{
    if (ms->type == SD_SAMPLING_FLOW)
        return flux_time_shift(ms->shift, timestep);
    if (ms->continuous)
        return expf(timestep / 0.25f);
    if (ms->skip > 1) /* ModelSamplingDiscreteDistilled.sigma */
        timestep = (timestep - (float)(ms->skip - 1)) / (float)ms->skip;
    float t = fminf(fmaxf(timestep, 0.0f), (float)(ms->n - 1));
    float lo = floorf(t);
    float w = t - lo;
    int low = (int)lo, high = (int)ceilf(t);
    float log_sigma = (1.0f - w) * ms->log_sigmas[low] + w * ms->log_sigmas[high];
    return expf(log_sigma);
}

double sd_model_sampling_percent_to_sigma(const sd_model_sampling *ms, double percent)
{
    if (percent <= 0.0)
        return ms->type == SD_SAMPLING_FLOW ? 1.0 : 999999999.9;
    if (percent >= 1.0)
        return 0.0;
    if (ms->type == SD_SAMPLING_FLOW)
        return (double)flux_time_shift(ms->shift, (float)(1.0 - percent));
    if (ms->continuous) { /* ModelSamplingContinuousEDM.percent_to_sigma, in Python floats */
        double lo = log((double)sd_model_sampling_sigma_min(ms)), hi = log((double)sd_model_sampling_sigma_max(ms));
        return exp((hi - lo) * (1.0 - percent) + lo);
    }
    return (double)sd_model_sampling_sigma(ms, (float)((1.0 - percent) * 999.0));
}

/* normal and sgm_uniform (normal_scheduler). */
static size_t sched_normal(const sd_model_sampling *ms, int steps, bool sgm, float *out)
{
    float start = sd_model_sampling_timestep(ms, sd_model_sampling_sigma_max(ms));
    float end = sd_model_sampling_timestep(ms, sd_model_sampling_sigma_min(ms));
    size_t n = 0;
    bool append_zero = true;
    int count = sgm ? steps + 1 : steps;
    if (!sgm && fabsf(sd_model_sampling_sigma(ms, end)) <= 1e-5f) {
        count = steps + 1;
        append_zero = false;
    }
    int used = sgm ? steps : count;
    for (int i = 0; i < used; i++)
        out[n++] = sd_model_sampling_sigma(ms, linspace_f32(start, end, count, i));
    if (append_zero)
        out[n++] = 0.0f;
    return n;
}

/* k_diffusion get_sigmas_karras (KSampler: rho 7 between the model's sigmas). */
static size_t sched_karras(double sigma_min, double sigma_max, double rho, int steps, float *out)
{
    double min_inv_rho = pow(sigma_min, 1.0 / rho);
    double max_inv_rho = pow(sigma_max, 1.0 / rho);
    for (int i = 0; i < steps; i++) {
        float ramp = linspace_f32(0.0, 1.0, steps, i);
        float v = (float)max_inv_rho + ramp * (float)(min_inv_rho - max_inv_rho);
        out[i] = powf(v, (float)rho);
    }
    out[steps] = 0.0f;
    return (size_t)steps + 1;
}

/* k_diffusion get_sigmas_exponential. */
static size_t sched_exponential(double sigma_min, double sigma_max, int steps, float *out)
{
    for (int i = 0; i < steps; i++)
        out[i] = expf(linspace_f32(log(sigma_max), log(sigma_min), steps, i));
    out[steps] = 0.0f;
    return (size_t)steps + 1;
}

/* k_diffusion get_sigmas_polyexponential: exp(linspace(1, 0)^rho (log max - log min) + log min). */
static size_t sched_polyexponential(double sigma_min, double sigma_max, double rho, int steps, float *out)
{
    float span = (float)(log(sigma_max) - log(sigma_min)), base = (float)log(sigma_min);
    for (int i = 0; i < steps; i++) {
        float ramp = powf(linspace_f32(1.0, 0.0, steps, i), (float)rho);
        out[i] = expf(ramp * span + base);
    }
    out[steps] = 0.0f;
    return (size_t)steps + 1;
}

static size_t sched_simple(const sd_model_sampling *ms, int steps, float *out)
{
    double ss = (double)ms->n / (double)steps;
    for (int x = 0; x < steps; x++)
        out[x] = ms->sigmas[ms->n - 1 - (int)((double)x * ss)];
    out[steps] = 0.0f;
    return (size_t)steps + 1;
}

/* ddim_scheduler: every ss-th sigma from index 1, reversed, then 0 (more than steps + 1 values
 * when 1000 is not a multiple of steps). */
static size_t sched_ddim_uniform(const sd_model_sampling *ms, int steps, float *out)
{
    size_t n = 0;
    bool zero_first = fabsf(ms->sigmas[1]) > 1e-5f;
    if (!zero_first)
        steps += 1;
    int ss = ms->n / steps;
    if (ss < 1)
        ss = 1;
    if (zero_first)
        out[n++] = 0.0f;
    for (int x = 1; x < ms->n; x += ss)
        out[n++] = ms->sigmas[x];
    for (size_t i = 0; i < n / 2; i++) {
        float t = out[i];
        out[i] = out[n - 1 - i];
        out[n - 1 - i] = t;
    }
    return n;
}

/* Regularised incomplete beta function I_x(a, b) by its continued fraction (modified Lentz). */
static double incomplete_beta(double x, double a, double b)
{
    if (x <= 0.0)
        return 0.0;
    if (x >= 1.0)
        return 1.0;
    if (x > (a + 1.0) / (a + b + 2.0))
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    double front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x)) / a;
    const double tiny = 1e-300;
    double f = 1.0, c = 1.0, d = 0.0;
    for (int i = 0; i <= 400; i++) {
        int m = i / 2;
        double num;
        if (i == 0)
            num = 1.0;
        else if (i % 2 == 0)
            num = (m * (b - m) * x) / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        else
            num = -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        if (fabs(d) < tiny)
            d = tiny;
        d = 1.0 / d;
        c = 1.0 + num / c;
        if (fabs(c) < tiny)
            c = tiny;
        double cd = c * d;
        f *= cd;
        if (fabs(1.0 - cd) < 1e-16)
            break;
    }
    return front * (f - 1.0);
}

/* Inverse of I_x(a, b) by bisection to double precision (scipy.stats.beta.ppf). */
static double beta_ppf(double p, double a, double b)
{
    if (p <= 0.0)
        return 0.0;
    if (p >= 1.0)
        return 1.0;
    if (a == b && p == 0.5)
        return 0.5; /* exact by symmetry; bisection could land one ulp off and flip rint() */
    double lo = 0.0, hi = 1.0;
    for (int i = 0; i < 200 && hi - lo > 0.0; i++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi)
            break;
        if (incomplete_beta(mid, a, b) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* beta_scheduler with alpha = beta = 0.6 (arXiv 2407.12173): timesteps at beta quantiles,
 * consecutive duplicates dropped. */
static size_t sched_beta(const sd_model_sampling *ms, int steps, float *out)
{
    const double alpha = 0.6, beta = 0.6;
    int total = ms->n - 1;
    size_t n = 0;
    double last_t = -1.0;
    for (int i = 0; i < steps; i++) {
        double q = 1.0 - (double)i / (double)steps; /* 1 - linspace(0, 1, steps, endpoint=False) */
        double t = nearbyint(beta_ppf(q, alpha, beta) * (double)total);
        if (t != last_t)
            out[n++] = ms->sigmas[(int)t];
        last_t = t;
    }
    out[n++] = 0.0f;
    return n;
}

/* linear_quadratic_schedule (from Mochi) with threshold_noise 0.025, linear_steps = steps / 2. */
static size_t sched_linear_quadratic(float sigma_max, int steps, float *out)
{
    if (steps == 1) {
        out[0] = 1.0f * sigma_max;
        out[1] = 0.0f;
        return 2;
    }
    const double threshold = 0.025;
    int linear_steps = steps / 2;
    double diff = (double)linear_steps - threshold * (double)steps;
    int quadratic_steps = steps - linear_steps;
    double qs2 = (double)quadratic_steps * (double)quadratic_steps;
    double quadratic_coef = diff / ((double)linear_steps * qs2);
    double linear_coef = threshold / (double)linear_steps - 2.0 * diff / qs2;
    double constant = quadratic_coef * ((double)linear_steps * (double)linear_steps);
    for (int i = 0; i <= steps; i++) {
        double s;
        if (i < linear_steps)
            s = (double)i * threshold / (double)linear_steps;
        else if (i < steps)
            s = quadratic_coef * ((double)i * (double)i) + linear_coef * (double)i + constant;
        else
            s = 1.0;
        out[i] = (float)(1.0 - s) * sigma_max;
    }
    return (size_t)steps + 1;
}

/* kl_optimal_scheduler (AUTOMATIC1111 PR 15608). ComfyUI divides 0 by 0 for one step (a NaN
 * sigma); here one step starts at sigma_max. */
static size_t sched_kl_optimal(float sigma_min, float sigma_max, int steps, float *out)
{
    float atan_min = (float)atan((double)sigma_min), atan_max = (float)atan((double)sigma_max);
    for (int i = 0; i < steps; i++) {
        float t = steps > 1 ? (float)i / (float)(steps - 1) : 0.0f;
        out[i] = tanf(t * atan_min + (1.0f - t) * atan_max);
    }
    out[steps] = 0.0f;
    return (size_t)steps + 1;
}

sd_status sd_scheduler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                              int steps, float **out, size_t *n_out)
{
    int kind = sd_scheduler_find(scheduler);
    if (kind < 0)
        return sd_unknown_name_error(ctx, "scheduler", scheduler, sd_scheduler_count, sd_scheduler_name);
    if (steps < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "scheduler '%s': steps is %d, must be at least 1",
                            scheduler, steps);
    if (steps > SD_SCHEDULE_MAX_STEPS)
        return sd_set_error(ctx, SD_ERR_LIMIT, "scheduler '%s': %d steps is more than %d", scheduler,
                            steps, SD_SCHEDULE_MAX_STEPS);
    /* ddim_uniform yields up to n sigmas, the others at most steps + 2. */
    size_t cap = (size_t)steps + 2;
    if (cap < (size_t)ms->n + 1)
        cap = (size_t)ms->n + 1;
    size_t bytes;
    if (!sd_mul_size(cap, sizeof(float), &bytes))
        return sd_set_error(ctx, SD_ERR_LIMIT, "scheduler '%s': too many steps", scheduler);
    float *s = malloc(bytes);
    if (!s)
        return sd_set_error(ctx, SD_ERR_NOMEM, "scheduler '%s': out of memory", scheduler);
    float smin = sd_model_sampling_sigma_min(ms), smax = sd_model_sampling_sigma_max(ms);
    size_t n = 0;
    switch ((sched_kind)kind) {
    case SCHED_NORMAL: n = sched_normal(ms, steps, false, s); break;
    case SCHED_KARRAS: n = sched_karras(smin, smax, 7.0, steps, s); break;
    case SCHED_EXPONENTIAL: n = sched_exponential(smin, smax, steps, s); break;
    case SCHED_SGM_UNIFORM: n = sched_normal(ms, steps, true, s); break;
    case SCHED_SIMPLE: n = sched_simple(ms, steps, s); break;
    case SCHED_DDIM_UNIFORM: n = sched_ddim_uniform(ms, steps, s); break;
    case SCHED_BETA: n = sched_beta(ms, steps, s); break;
    case SCHED_LINEAR_QUADRATIC: n = sched_linear_quadratic(smax, steps, s); break;
    case SCHED_KL_OPTIMAL: n = sched_kl_optimal(smin, smax, steps, s); break;
    case SCHED_COUNT: break;
    }
    *out = s;
    *n_out = n;
    return SD_OK;
}

/* Allocates room for count sigmas (at least one float) or sets SD_ERR_NOMEM / SD_ERR_LIMIT. */
static sd_status alloc_sigmas(sd_context *ctx, const char *what, size_t count, float **out)
{
    size_t bytes;
    if (!sd_mul_size(count ? count : 1, sizeof(float), &bytes))
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: too many steps", what);
    if (!(*out = malloc(bytes)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", what);
    return SD_OK;
}

/* int(steps / denoise) for denoise in (0, 1) (ComfyUI's extension of the schedule for partial
 * denoising), checked against SD_SCHEDULE_MAX_STEPS. */
static sd_status extended_steps(sd_context *ctx, int steps, double denoise, int *total)
{
    double extended = floor((double)steps / denoise);
    if (extended > (double)SD_SCHEDULE_MAX_STEPS)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%d steps at denoise %g need %.0f steps, more than %d", steps,
                            denoise, extended, SD_SCHEDULE_MAX_STEPS);
    *total = (int)extended;
    return SD_OK;
}

/* Keeps the last `keep` of the *n sigmas (Python's sigmas[-keep:]: all when fewer). */
static void keep_last(float *s, size_t *n, size_t keep)
{
    if (*n > keep) {
        memmove(s, s + (*n - keep), keep * sizeof *s);
        *n = keep;
    }
}

sd_status sd_ksampler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                             const char *sampler, int steps, double denoise, float **out,
                             size_t *n_out)
{
    if (sd_sampler_find(sampler) < 0)
        return sd_unknown_name_error(ctx, "sampler", sampler, sd_sampler_count, sd_sampler_name);
    if (!(denoise > 0.0 && denoise <= 1.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "denoise is %g, must be in (0, 1]", denoise);
    if (steps < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "steps is %d, must be at least 1", steps);
    int total = steps;
    sd_status st;
    if (denoise <= 0.9999 && (st = extended_steps(ctx, steps, denoise, &total)))
        return st;
    bool discard = sd_sampler_discards_penultimate_sigma(sampler);
    float *s = NULL;
    size_t n = 0;
    if ((st = sd_scheduler_sigmas(ctx, ms, scheduler, discard ? total + 1 : total, &s, &n)))
        return st;
    if (discard && n >= 2) {
        s[n - 2] = s[n - 1];
        n--;
    }
    if (denoise <= 0.9999)
        keep_last(s, &n, (size_t)steps + 1);
    *out = s;
    *n_out = n;
    return SD_OK;
}

sd_status sd_basic_scheduler_sigmas(sd_context *ctx, const sd_model_sampling *ms, const char *scheduler,
                                    int steps, double denoise, float **out, size_t *n_out)
{
    if (!(denoise <= 1.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "denoise is %g, must be at most 1", denoise);
    if (denoise <= 0.0) {
        *n_out = 0;
        return alloc_sigmas(ctx, "scheduler", 0, out);
    }
    int total = steps;
    sd_status st;
    if (steps >= 1 && denoise < 1.0 && (st = extended_steps(ctx, steps, denoise, &total)))
        return st;
    if ((st = sd_scheduler_sigmas(ctx, ms, scheduler, total, out, n_out)))
        return st;
    keep_last(*out, n_out, (size_t)steps + 1);
    return SD_OK;
}

static const char *const formula_names[] = {"karras", "exponential", "polyexponential"};

sd_status sd_formula_sigmas(sd_context *ctx, sd_sigma_formula formula, int steps, double sigma_min,
                            double sigma_max, double rho, float **out, size_t *n_out)
{
    const char *name = formula_names[formula];
    if (steps < 1 || steps > SD_SCHEDULE_MAX_STEPS)
        return sd_set_error(ctx, steps < 1 ? SD_ERR_INVALID : SD_ERR_LIMIT,
                            "%s schedule: steps is %d, must be in 1..%d", name, steps, SD_SCHEDULE_MAX_STEPS);
    float *s;
    sd_status st = alloc_sigmas(ctx, name, (size_t)steps + 1, &s);
    if (st)
        return st;
    size_t n = formula == SD_SIGMAS_KARRAS        ? sched_karras(sigma_min, sigma_max, rho, steps, s)
               : formula == SD_SIGMAS_EXPONENTIAL ? sched_exponential(sigma_min, sigma_max, steps, s)
                                                  : sched_polyexponential(sigma_min, sigma_max, rho, steps, s);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(s[i])) {
            free(s);
            return sd_set_error(ctx, SD_ERR_INVALID,
                                "%s schedule: sigma_max %g, sigma_min %g and rho %g give a sigma that is not "
                                "finite", name, sigma_max, sigma_min, rho);
        }
    *out = s;
    *n_out = n;
    return SD_OK;
}

sd_status sd_sd_turbo_sigmas(sd_context *ctx, const sd_model_sampling *ms, int steps, double denoise,
                             float **out, size_t *n_out)
{
    if (steps < 1 || steps > 10 || !(denoise >= 0.0 && denoise <= 1.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "SD Turbo schedule: steps %d and denoise %g must be in "
                            "1..10 and [0, 1]", steps, denoise);
    float *s;
    sd_status st = alloc_sigmas(ctx, "SD Turbo schedule", (size_t)steps + 1, &s);
    if (st)
        return st;
    int start = 10 - (int)(10.0 * denoise); /* timesteps 999, 899, ..., 99 from here on */
    size_t n = 0;
    for (int k = start; k < start + steps && k < 10; k++)
        s[n++] = sd_model_sampling_sigma(ms, (float)((10 - k) * 100 - 1));
    s[n++] = 0.0f;
    *out = s;
    *n_out = n;
    return SD_OK;
}

/* Align Your Steps' optimised noise levels for 10 steps (research.nvidia.com/labs/toronto-ai/
 * AlignYourSteps, as ComfyUI's nodes_align_your_steps.py lists them). */
static const char *const ays_names[] = {"SD1", "SDXL", "SVD"};
static const double ays_levels[3][11] = {
    {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
     0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582},
    {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
     0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582},
    {700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002},
};

size_t sd_ays_model_type_count(void)
{
    return sizeof ays_names / sizeof ays_names[0];
}

const char *sd_ays_model_type_name(size_t index)
{
    return index < sd_ays_model_type_count() ? ays_names[index] : NULL;
}

/* numpy's linspace(0, 1, num)[i]: i * (1 / (num - 1)), the last exactly 1. */
static double unit_linspace(size_t num, size_t i)
{
    return num < 2 ? 0.0 : i + 1 == num ? 1.0 : (double)i * (1.0 / (double)(num - 1));
}

/* ComfyUI's loglinear_interp: the 11 decreasing levels resampled to num points, linearly in
 * log sigma over evenly spaced positions (numpy.interp on the reversed logs). */
static void ays_interp(const double *levels, size_t num, double *out)
{
    enum { L = 11 };
    double ys[L];
    for (size_t k = 0; k < L; k++)
        ys[k] = log(levels[L - 1 - k]);
    for (size_t i = 0; i < num; i++) {
        double x = unit_linspace(num, i), v;
        size_t j = 0;
        while (j + 1 < L && unit_linspace(L, j + 1) <= x)
            j++;
        if (j + 1 == L || unit_linspace(L, j) == x) {
            v = ys[j];
        } else {
            double x0 = unit_linspace(L, j), slope = (ys[j + 1] - ys[j]) / (unit_linspace(L, j + 1) - x0);
            v = slope * (x - x0) + ys[j];
        }
        out[num - 1 - i] = exp(v);
    }
}

sd_status sd_ays_sigmas(sd_context *ctx, const char *model_type, int steps, double denoise, float **out,
                        size_t *n_out)
{
    int type = -1;
    for (size_t k = 0; model_type && k < sd_ays_model_type_count(); k++)
        if (strcmp(model_type, ays_names[k]) == 0)
            type = (int)k;
    if (type < 0)
        return sd_unknown_name_error(ctx, "Align Your Steps model type", model_type, sd_ays_model_type_count,
                                     sd_ays_model_type_name);
    if (steps < 1 || steps > SD_SCHEDULE_MAX_STEPS || !(denoise <= 1.0))
        return sd_set_error(ctx, SD_ERR_INVALID, "Align Your Steps: steps %d must be in 1..%d and denoise %g at "
                            "most 1", steps, SD_SCHEDULE_MAX_STEPS, denoise);
    size_t num = (size_t)steps + 1, keep = num;
    if (denoise <= 0.0) {
        *n_out = 0;
        return alloc_sigmas(ctx, "Align Your Steps", 0, out);
    }
    if (denoise < 1.0)
        keep = (size_t)nearbyint((double)steps * denoise) + 1; /* round() half to even */
    double *levels = malloc(num * sizeof *levels);
    float *s = NULL;
    sd_status st = levels ? alloc_sigmas(ctx, "Align Your Steps", keep, &s)
                          : sd_set_error(ctx, SD_ERR_NOMEM, "Align Your Steps: out of memory");
    if (st) {
        free(levels);
        return st;
    }
    if (num == 11)
        memcpy(levels, ays_levels[type], sizeof ays_levels[type]);
    else
        ays_interp(ays_levels[type], num, levels);
    for (size_t i = 0; i < keep; i++)
        s[i] = (float)levels[num - keep + i];
    s[keep - 1] = 0.0f;
    free(levels);
    *out = s;
    *n_out = keep;
    return SD_OK;
}

bool sd_sigmas_step_range(float *sigmas, size_t *n, int start_step, int last_step,
                          bool force_full_denoise)
{
    if (last_step >= 0 && *n > 0 && (size_t)last_step < *n - 1) {
        *n = (size_t)last_step + 1;
        if (force_full_denoise)
            sigmas[*n - 1] = 0.0f;
    }
    if (start_step >= 0) {
        if (*n > 0 && (size_t)start_step < *n - 1) {
            memmove(sigmas, sigmas + start_step, (*n - (size_t)start_step) * sizeof(float));
            *n -= (size_t)start_step;
        } else {
            *n = 0;
            return false;
        }
    }
    return true;
}
