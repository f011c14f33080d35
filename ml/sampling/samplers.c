/* The k-diffusion family of update rules as ComfyUI runs them for eps models
 * (comfy/k_diffusion/sampling.py; docs/sampling.md names the function each one follows).
 * Scalar coefficients are computed in double; element-wise updates in double, stored as float. */
#include "core/context.h"
#include "ml/sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Working arrays of one run, freed together. */
typedef struct work {
    float *a, *b, *c, *d;
} work;

static sd_status work_alloc(sd_sampler_run *run, work *w, int count)
{
    float **slots[4] = {&w->a, &w->b, &w->c, &w->d};
    memset(w, 0, sizeof *w);
    for (int i = 0; i < count; i++)
        if (!(*slots[i] = sd_sampler_alloc(run, run->n)))
            return SD_ERR_NOMEM;
    return SD_OK;
}

static void work_free(work *w)
{
    free(w->a);
    free(w->b);
    free(w->c);
    free(w->d);
}

/* x += (x - den) / sigma * dt: one Euler step of the probability-flow ODE. */
static void euler_update(float *x, const float *den, double sigma, double dt, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double d = ((double)x[i] - den[i]) / sigma;
        x[i] = (float)(x[i] + d * dt);
    }
}

static void add_noise(float *x, const float *noise, double scale, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(x[i] + (double)noise[i] * scale);
}

/* sample_euler (s_churn = 0); ComfyUI's "ddim" is this sampler too. */
sd_status sd_sample_euler(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 1);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        euler_update(x, w.a, s, s_next - s, run->n);
    }
    work_free(&w);
    return st;
}

/* The rectified-flow (CONST model) step of sample_euler_ancestral_RF and
 * sample_dpmpp_2s_ancestral_RF: the ancestral target sigma_down = s_next * (1 + (s_next / s - 1)
 * * eta), and the factor and noise level that renoise it to s_next (alpha = 1 - sigma). */
static void rf_ancestral_step(double s, double s_next, double eta, double *down, double *rescale, double *renoise)
{
    *down = s_next * (1.0 + (s_next / s - 1.0) * eta);
    double a_next = 1.0 - s_next, a_down = 1.0 - *down;
    *rescale = a_next / a_down;
    *renoise = sqrt(s_next * s_next - *down * *down * a_next * a_next / (a_down * a_down));
}

/* x = r x + (1 - r) den, r = to / from: the flow model's exact step from sigma `from` to `to`. */
static void rf_move(float *x, const float *den, double from, double to, size_t n)
{
    double r = to / from;
    for (size_t k = 0; k < n; k++)
        x[k] = (float)(r * x[k] + (1.0 - r) * den[k]);
}

/* x = rescale x + noise * s_noise * renoise, when eta > 0 (the RF samplers draw no noise
 * otherwise). */
static sd_status rf_renoise(sd_sampler_run *run, float *x, float *noise, double s, double s_next, double rescale,
                            double renoise)
{
    if (run->eta <= 0.0)
        return SD_OK;
    sd_status st = sd_sampler_noise(run, s, s_next, noise);
    for (size_t k = 0; !st && k < run->n; k++)
        x[k] = (float)(rescale * x[k] + (double)noise[k] * run->s_noise * renoise);
    return st;
}

/* sample_euler_ancestral_RF, which ComfyUI's euler_ancestral runs on CONST (flow) models. */
static sd_status euler_ancestral_rf(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 2);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, rescale, renoise;
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s_next == 0.0) {
            memcpy(x, w.a, run->n * sizeof(float));
            continue;
        }
        rf_ancestral_step(s, s_next, run->eta, &down, &rescale, &renoise);
        rf_move(x, w.a, s, down, run->n);
        st = rf_renoise(run, x, w.b, s, s_next, rescale, renoise);
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_euler_ancestral(sd_sampler_run *run, float *x)
{
    if (run->opt->flow)
        return euler_ancestral_rf(run, x);
    work w;
    sd_status st = work_alloc(run, &w, 2);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, up;
        if ((st = sd_sampler_denoise(run, x, s, w.a)))
            break;
        sd_ancestral_step(s, s_next, run->eta, &down, &up);
        if ((st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (down == 0.0) {
            memcpy(x, w.a, run->n * sizeof(float));
            continue;
        }
        if ((st = sd_sampler_noise(run, s, s_next, w.b)))
            break;
        for (size_t k = 0; k < run->n; k++) {
            double d = ((double)x[k] - w.a[k]) / s;
            x[k] = (float)(x[k] + d * (down - s) + (double)w.b[k] * run->s_noise * up);
        }
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_heun(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], dt = s_next - s;
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s_next == 0.0) {
            euler_update(x, w.a, s, dt, run->n);
            continue;
        }
        for (size_t k = 0; k < run->n; k++)
            w.b[k] = (float)(x[k] + ((double)x[k] - w.a[k]) / s * dt);
        if ((st = sd_sampler_denoise(run, w.b, s_next, w.c)))
            break;
        for (size_t k = 0; k < run->n; k++) {
            double d = ((double)x[k] - w.a[k]) / s;
            double d2 = ((double)w.b[k] - w.c[k]) / s_next;
            x[k] = (float)(x[k] + (d + d2) / 2.0 * dt);
        }
    }
    work_free(&w);
    return st;
}

/* The DPM-Solver-2 midpoint step from s to target shared by dpm_2 and dpm_2_ancestral:
 * den holds D(x, s); tmp and den2 are scratch. */
static sd_status dpm2_step(sd_sampler_run *run, float *x, const float *den, double s, double target,
                           float *tmp, float *den2)
{
    double mid = exp(log(s) + 0.5 * (log(target) - log(s)));
    for (size_t k = 0; k < run->n; k++)
        tmp[k] = (float)(x[k] + ((double)x[k] - den[k]) / s * (mid - s));
    sd_status st = sd_sampler_denoise(run, tmp, mid, den2);
    if (st != SD_OK)
        return st;
    for (size_t k = 0; k < run->n; k++) {
        double d2 = ((double)tmp[k] - den2[k]) / mid;
        x[k] = (float)(x[k] + d2 * (target - s));
    }
    return SD_OK;
}

sd_status sd_sample_dpm_2(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s_next == 0.0)
            euler_update(x, w.a, s, s_next - s, run->n);
        else
            st = dpm2_step(run, x, w.a, s, s_next, w.b, w.c);
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_dpm_2_ancestral(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, up;
        if ((st = sd_sampler_denoise(run, x, s, w.a)))
            break;
        sd_ancestral_step(s, s_next, run->eta, &down, &up);
        if ((st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (down == 0.0) {
            euler_update(x, w.a, s, down - s, run->n);
            continue;
        }
        if ((st = dpm2_step(run, x, w.a, s, down, w.b, w.c)) ||
            (st = sd_sampler_noise(run, s, s_next, w.b)))
            break;
        add_noise(x, w.b, run->s_noise * up, run->n);
    }
    work_free(&w);
    return st;
}

/* Integral over [t[i], t[i+1]] of the Lagrange basis polynomial j through t[i], ..., t[i-order+1]
 * (linear_multistep_coeff; exact, where k-diffusion integrates numerically to 1e-4 relative,
 * which is exact for these degree <= 3 polynomials up to rounding). */
static double lms_coeff(int order, const float *t, int i, int j)
{
    double poly[4] = {1.0, 0.0, 0.0, 0.0}; /* coefficients of tau^0..tau^3 */
    int degree = 0;
    for (int k = 0; k < order; k++) {
        if (k == j)
            continue;
        double root = t[i - k], denom = (double)t[i - j] - t[i - k];
        for (int p = degree + 1; p >= 0; p--) {
            double shifted = p > 0 ? poly[p - 1] : 0.0;
            double kept = p <= degree ? poly[p] : 0.0;
            poly[p] = (shifted - root * kept) / denom;
        }
        degree++;
    }
    double a = t[i], b = t[i + 1], sum = 0.0;
    for (int p = 0; p <= degree; p++)
        sum += poly[p] * (pow(b, p + 1) - pow(a, p + 1)) / (p + 1);
    return sum;
}

sd_status sd_sample_lms(sd_sampler_run *run, float *x)
{
    enum { ORDER = 4 };
    float *ds[ORDER] = {0}; /* ds[0] is the newest derivative */
    float *den = sd_sampler_alloc(run, run->n);
    sd_status st = den ? SD_OK : SD_ERR_NOMEM;
    for (int k = 0; st == SD_OK && k < ORDER; k++)
        if (!(ds[k] = sd_sampler_alloc(run, run->n)))
            st = SD_ERR_NOMEM;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i];
        if ((st = sd_sampler_denoise(run, x, s, den)))
            break;
        float *oldest = ds[ORDER - 1];
        memmove(ds + 1, ds, (ORDER - 1) * sizeof ds[0]);
        ds[0] = oldest;
        for (size_t k = 0; k < run->n; k++)
            ds[0][k] = (float)(((double)x[k] - den[k]) / s);
        if ((st = sd_sampler_step(run, i, x, den)))
            break;
        if (run->sigmas[i + 1] == 0.0f) {
            memcpy(x, den, run->n * sizeof(float));
            continue;
        }
        int order = i + 1 < ORDER ? i + 1 : ORDER;
        double coeff[ORDER];
        for (int j = 0; j < order; j++)
            coeff[j] = lms_coeff(order, run->sigmas, i, j);
        for (size_t k = 0; k < run->n; k++) {
            double acc = 0.0;
            for (int j = 0; j < order; j++)
                acc += coeff[j] * ds[j][k];
            x[k] = (float)(x[k] + acc);
        }
    }
    free(den);
    for (int k = 0; k < ORDER; k++)
        free(ds[k]);
    return st;
}

/* sample_dpmpp_2s_ancestral_RF: the midpoint in lambda = log((1 - sigma) / sigma), whose inverse
 * is sigma = 1 / (exp(lambda) + 1); sigma 1 itself takes the midpoint 0.9999 as ComfyUI does. */
static sd_status dpmpp_2s_ancestral_rf(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, rescale, renoise;
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        rf_ancestral_step(s, s_next, run->eta, &down, &rescale, &renoise);
        if (s_next == 0.0) {
            euler_update(x, w.a, s, down - s, run->n);
            continue;
        }
        double mid = 0.9999;
        if (s != 1.0) {
            double l = log((1.0 - s) / s), l_down = log((1.0 - down) / down);
            mid = 1.0 / (exp(l + 0.5 * (l_down - l)) + 1.0);
        }
        memcpy(w.b, x, run->n * sizeof(float));
        rf_move(w.b, w.a, s, mid, run->n);
        if ((st = sd_sampler_denoise(run, w.b, mid, w.c)))
            break;
        rf_move(x, w.c, s, down, run->n);
        st = rf_renoise(run, x, w.b, s, s_next, rescale, renoise);
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_dpmpp_2s_ancestral(sd_sampler_run *run, float *x)
{
    if (run->opt->flow)
        return dpmpp_2s_ancestral_rf(run, x);
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, up;
        if ((st = sd_sampler_denoise(run, x, s, w.a)))
            break;
        sd_ancestral_step(s, s_next, run->eta, &down, &up);
        if ((st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (down == 0.0) {
            euler_update(x, w.a, s, down - s, run->n);
        } else {
            double t = -log(s), t_next = -log(down), h = t_next - t, t_mid = t + 0.5 * h;
            double ratio_mid = exp(-t_mid) / exp(-t), c_mid = expm1(-h * 0.5);
            for (size_t k = 0; k < run->n; k++)
                w.b[k] = (float)(ratio_mid * x[k] - c_mid * w.a[k]);
            if ((st = sd_sampler_denoise(run, w.b, exp(-t_mid), w.c)))
                break;
            double ratio = exp(-t_next) / exp(-t), c = expm1(-h);
            for (size_t k = 0; k < run->n; k++)
                x[k] = (float)(ratio * x[k] - c * w.c[k]);
        }
        if (s_next > 0.0) {
            if ((st = sd_sampler_noise(run, s, s_next, w.b)))
                break;
            add_noise(x, w.b, run->s_noise * up, run->n);
        }
    }
    work_free(&w);
    return st;
}

/* sample_dpmpp_sde with r = 1/2; half-log-SNR lambda = -log(sigma) and alpha = 1 for eps models
 * (ComfyUI's sigma * exp(lambda) factors are kept). */
sd_status sd_sample_dpmpp_sde(sd_sampler_run *run, float *x)
{
    const double r = 0.5, fac = 1.0 / (2.0 * r);
    bool noisy = run->eta > 0.0 && run->s_noise > 0.0;
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s_next == 0.0) {
            memcpy(x, w.a, run->n * sizeof(float));
            continue;
        }
        double lambda_s = -log(s), lambda_t = -log(s_next), h = lambda_t - lambda_s;
        double lambda_s1 = lambda_s + r * h, sigma_s1 = exp(-lambda_s1);
        double alpha_s = s * exp(lambda_s), alpha_s1 = sigma_s1 * exp(lambda_s1);
        double alpha_t = s_next * exp(lambda_t), down, up;
        /* Step 1: to the midpoint. */
        sd_ancestral_step(exp(-lambda_s), exp(-lambda_s1), run->eta, &down, &up);
        double h_ = -log(down) - lambda_s;
        double ca = alpha_s1 / alpha_s * exp(-h_), cb = alpha_s1 * expm1(-h_);
        for (size_t k = 0; k < run->n; k++)
            w.b[k] = (float)(ca * x[k] - cb * w.a[k]);
        if (noisy) {
            if ((st = sd_sampler_noise(run, s, sigma_s1, w.c)))
                break;
            add_noise(w.b, w.c, alpha_s1 * run->s_noise * up, run->n);
        }
        if ((st = sd_sampler_denoise(run, w.b, sigma_s1, w.c)))
            break;
        /* Step 2: the full step with the blended prediction. */
        sd_ancestral_step(exp(-lambda_s), exp(-lambda_t), run->eta, &down, &up);
        h_ = -log(down) - lambda_s;
        ca = alpha_t / alpha_s * exp(-h_);
        cb = alpha_t * expm1(-h_);
        for (size_t k = 0; k < run->n; k++) {
            double den_d = (1.0 - fac) * w.a[k] + fac * (double)w.c[k];
            x[k] = (float)(ca * x[k] - cb * den_d);
        }
        if (noisy) {
            if ((st = sd_sampler_noise(run, s, s_next, w.b)))
                break;
            add_noise(x, w.b, alpha_t * run->s_noise * up, run->n);
        }
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_dpmpp_2m(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 2);
    float *den = w.a, *old = w.b;
    bool have_old = false;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, den)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        if (s_next == 0.0) {
            memcpy(x, den, run->n * sizeof(float)); /* the formula's limit: sigma_fn(inf) = 0 */
        } else {
            double t = -log(s), t_next = -log(s_next), h = t_next - t;
            double ratio = exp(-t_next) / exp(-t), c = expm1(-h);
            if (!have_old) {
                for (size_t k = 0; k < run->n; k++)
                    x[k] = (float)(ratio * x[k] - c * den[k]);
            } else {
                double h_last = t - (-log((double)run->sigmas[i - 1]));
                double rr = h_last / h, a = 1.0 + 1.0 / (2.0 * rr), b = 1.0 / (2.0 * rr);
                for (size_t k = 0; k < run->n; k++)
                    x[k] = (float)(ratio * x[k] - c * (a * den[k] - b * (double)old[k]));
            }
        }
        float *tmp = old;
        old = den;
        den = tmp;
        have_old = true;
    }
    work_free(&w);
    return st;
}

/* sample_dpmpp_2m_sde (solver midpoint, or heun) and sample_dpmpp_3m_sde share the
 * exponential-integrator step with eta-scaled noise; `order` picks how many previous predictions
 * correct it. */
static sd_status dpmpp_multistep_sde(sd_sampler_run *run, float *x, int order, bool heun)
{
    const double eta = run->eta;
    bool noisy = eta > 0.0 && run->s_noise > 0.0;
    work w;
    sd_status st = work_alloc(run, &w, 4);
    float *den = w.a, *den1 = w.b, *den2 = w.c, *noise = w.d;
    int n_old = 0; /* valid previous predictions in den1, den2 */
    double h = 0.0, h1 = 0.0, h2 = 0.0;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, den)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        if (s_next == 0.0) {
            memcpy(x, den, run->n * sizeof(float));
        } else {
            double lambda_s = -log(s), lambda_t = -log(s_next);
            h = lambda_t - lambda_s;
            double h_eta = h * (eta + 1.0);
            double alpha_t = s_next * exp(lambda_t);
            double ca = s_next / s * exp(-h * eta), cb = alpha_t * -expm1(-h_eta);
            for (size_t k = 0; k < run->n; k++)
                x[k] = (float)(ca * x[k] + cb * den[k]);
            if (order == 3 && n_old >= 2) {
                double r0 = h1 / h, r1 = h2 / h;
                double phi_2 = expm1(-h_eta) / h_eta + 1.0, phi_3 = phi_2 / h_eta - 0.5;
                for (size_t k = 0; k < run->n; k++) {
                    double d1_0 = ((double)den[k] - den1[k]) / r0;
                    double d1_1 = ((double)den1[k] - den2[k]) / r1;
                    double d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1);
                    double d2 = (d1_0 - d1_1) / (r0 + r1);
                    x[k] = (float)(x[k] + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2);
                }
            } else if (order == 3 && n_old == 1) {
                double rr = h1 / h, phi_2 = expm1(-h_eta) / h_eta + 1.0;
                for (size_t k = 0; k < run->n; k++)
                    x[k] = (float)(x[k] + (alpha_t * phi_2) * (((double)den[k] - den1[k]) / rr));
            } else if (order == 2 && n_old >= 1) {
                double rr = h1 / h;
                double c = heun ? alpha_t * (-expm1(-h_eta) / -h_eta + 1.0) * (1.0 / rr)
                                : 0.5 * alpha_t * -expm1(-h_eta) * (1.0 / rr);
                for (size_t k = 0; k < run->n; k++)
                    x[k] = (float)(x[k] + c * ((double)den[k] - den1[k]));
            }
            if (noisy) {
                if ((st = sd_sampler_noise(run, s, s_next, noise)))
                    break;
                add_noise(x, noise, s_next * sqrt(-expm1(-2.0 * h * eta)) * run->s_noise, run->n);
            }
        }
        float *tmp = den2;
        den2 = den1;
        den1 = den;
        den = tmp;
        n_old = n_old < 2 ? n_old + 1 : 2;
        h2 = h1;
        h1 = h;
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_dpmpp_2m_sde(sd_sampler_run *run, float *x)
{
    return dpmpp_multistep_sde(run, x, 2, run->flags & SD_SAMPLER_HEUN);
}

sd_status sd_sample_dpmpp_3m_sde(sd_sampler_run *run, float *x)
{
    return dpmpp_multistep_sde(run, x, 3, false);
}

/* generic_step_sampler with DDPMSampler_step: the DDPM posterior step in the VP parametrisation. */
sd_status sd_sample_ddpm(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 2);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_prev = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        double ac = 1.0 / (s * s + 1.0), ac_prev = 1.0 / (s_prev * s_prev + 1.0);
        double alpha = ac / ac_prev;
        double in_scale = sqrt(1.0 + s * s), out_scale = s_prev != 0.0 ? sqrt(1.0 + s_prev * s_prev) : 1.0;
        double c_mu = sqrt(1.0 / alpha), c_eps = (1.0 - alpha) / sqrt(1.0 - ac);
        double c_noise = sqrt((1.0 - alpha) * (1.0 - ac_prev) / (1.0 - ac));
        if (s_prev > 0.0 && (st = sd_sampler_noise(run, s, s_prev, w.b)))
            break;
        for (size_t k = 0; k < run->n; k++) {
            double eps = ((double)x[k] - w.a[k]) / s;
            double mu = c_mu * ((double)x[k] / in_scale - c_eps * eps);
            if (s_prev > 0.0)
                mu += c_noise * w.b[k];
            x[k] = (float)(mu * out_scale);
        }
    }
    work_free(&w);
    return st;
}

/* sample_lcm: jump to the prediction, then re-noise to the next sigma (EPS noise_scaling). */
sd_status sd_sample_lcm(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 2);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        memcpy(x, w.a, run->n * sizeof(float));
        if (s_next > 0.0) {
            if ((st = sd_sampler_noise(run, s, s_next, w.b)))
                break;
            add_noise(x, w.b, s_next, run->n);
        }
    }
    work_free(&w);
    return st;
}

/* ---- CFG++ (arXiv 2406.08070) for eps models: the step follows the unguided prediction and
 * adds the guidance as a correction; ComfyUI's *_cfg_pp functions with alpha = sigma *
 * exp(-log sigma) (1 up to rounding) kept as computed there. */

/* sample_euler_ancestral_cfg_pp; with eta and s_noise 0 (euler_cfg_pp, without the ANCESTRAL
 * flag) sample_euler_cfg_pp, which draws no noise. */
static sd_status euler_ancestral_cfg_pp(sd_sampler_run *run, float *x, double eta, double s_noise)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise_uncond(run, x, s, w.a, w.b)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s_next == 0.0) {
            memcpy(x, w.a, run->n * sizeof(float));
            continue;
        }
        double alpha_s = s * exp(-log(s)), alpha_t = s_next * exp(-log(s_next)), down, up;
        sd_ancestral_step(s / alpha_s, s_next / alpha_t, eta, &down, &up);
        down *= alpha_t;
        for (size_t k = 0; k < run->n; k++) {
            double d = ((double)x[k] - alpha_s * w.b[k]) / s;
            x[k] = (float)(alpha_t * w.a[k] + down * d);
        }
        if (eta > 0.0 && s_noise > 0.0) {
            if ((st = sd_sampler_noise(run, s, s_next, w.c)))
                break;
            add_noise(x, w.c, alpha_t * s_noise * up, run->n);
        }
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_euler_ancestral_cfg_pp(sd_sampler_run *run, float *x)
{
    bool ancestral = run->flags & SD_SAMPLER_ANCESTRAL;
    return euler_ancestral_cfg_pp(run, x, ancestral ? run->eta : 0.0, ancestral ? run->s_noise : 0.0);
}

/* sample_dpmpp_2s_ancestral_cfg_pp: the DPM-Solver++(2S) step on the unguided predictions (the
 * midpoint call's guided output is unused), then x += D - D_uncond of the step's first call. */
sd_status sd_sample_dpmpp_2s_ancestral_cfg_pp(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 4);
    float *den = w.a, *guidance = w.b, *unc = w.c, *tmp = w.d;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, up;
        if ((st = sd_sampler_denoise_uncond(run, x, s, den, unc)))
            break;
        for (size_t k = 0; k < run->n; k++)
            guidance[k] = den[k] - unc[k];
        sd_ancestral_step(s, s_next, run->eta, &down, &up);
        if ((st = sd_sampler_step(run, i, x, den)))
            break;
        if (down == 0.0) {
            euler_update(x, unc, s, down - s, run->n);
        } else {
            double t = -log(s), t_next = -log(down), h = t_next - t, t_mid = t + 0.5 * h;
            double ratio_mid = exp(-t_mid) / exp(-t), c_mid = expm1(-h * 0.5);
            for (size_t k = 0; k < run->n; k++)
                tmp[k] = (float)(ratio_mid * x[k] - c_mid * unc[k]);
            if ((st = sd_sampler_denoise_uncond(run, tmp, exp(-t_mid), den, unc)))
                break;
            double ratio = exp(-t_next) / exp(-t), c = expm1(-h);
            for (size_t k = 0; k < run->n; k++)
                x[k] = (float)(ratio * x[k] - c * unc[k]);
        }
        if (s_next > 0.0) {
            if ((st = sd_sampler_noise(run, s, s_next, tmp)))
                break;
            add_noise(x, tmp, run->s_noise * up, run->n);
        }
        for (size_t k = 0; k < run->n; k++)
            x[k] = x[k] + guidance[k];
    }
    work_free(&w);
    return st;
}

/* sample_dpmpp_2m_cfg_pp. */
sd_status sd_sample_dpmpp_2m_cfg_pp(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 3);
    float *den = w.a, *unc = w.b, *old = w.c;
    bool have_old = false;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise_uncond(run, x, s, den, unc)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        if (s_next == 0.0) {
            memcpy(x, den, run->n * sizeof(float)); /* exp(-h) = 0 */
        } else {
            double t = -log(s), h = -log(s_next) - t, e = exp(-h);
            double c = have_old ? -expm1(-h) * (1.0 / (2.0 * ((t + log((double)run->sigmas[i - 1])) / h))) : 0.0;
            for (size_t k = 0; k < run->n; k++) {
                double mix = -e * unc[k] + (have_old ? c * ((double)den[k] - old[k]) : 0.0);
                x[k] = (float)(den[k] + mix + e * x[k]);
            }
        }
        float *tmp = old;
        old = unc;
        unc = tmp;
        have_old = true;
    }
    work_free(&w);
    return st;
}

/* res_multistep (arXiv 2308.02157's second-order multistep, ComfyUI's res_multistep): eta 0 for
 * res_multistep(_cfg_pp), eta for the ancestral ones; noise is drawn before every step that
 * does not end at 0 (times sigma_up, 0 without eta). */
static sd_status res_multistep(sd_sampler_run *run, float *x, double eta, bool cfg_pp)
{
    work w;
    sd_status st = work_alloc(run, &w, 4);
    float *den = w.a, *unc = w.b, *old = w.c, *noise = w.d;
    bool have_old = false;
    double old_down = 0.0;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], down, up;
        if ((st = sd_sampler_denoise_uncond(run, x, s, den, cfg_pp ? unc : NULL)))
            break;
        sd_ancestral_step(s, s_next, eta, &down, &up);
        if ((st = sd_sampler_step(run, i, x, den)))
            break;
        const float *base = cfg_pp ? unc : den; /* what the step integrates */
        if (down == 0.0 || !have_old) {
            for (size_t k = 0; k < run->n; k++) {
                double d = ((double)x[k] - base[k]) / s;
                x[k] = (float)(cfg_pp ? den[k] + d * down : x[k] + d * (down - s));
            }
        } else {
            double t = -log(s), t_old = -log(old_down), t_next = -log(down);
            double t_prev = -log((double)run->sigmas[i - 1]);
            double h = t_next - t, c2 = (t_prev - t_old) / h;
            double phi1 = expm1(-h) / -h, phi2 = (phi1 - 1.0) / -h;
            double b1 = phi1 - phi2 / c2, b2 = phi2 / c2;
            b1 = isnan(b1) ? 0.0 : b1; /* torch.nan_to_num(nan=0) */
            b2 = isnan(b2) ? 0.0 : b2;
            double e = exp(-h);
            for (size_t k = 0; k < run->n; k++) {
                float xk = cfg_pp ? x[k] + (den[k] - unc[k]) : x[k];
                x[k] = (float)(e * xk + h * (b1 * base[k] + b2 * old[k]));
            }
        }
        if (s_next > 0.0) {
            if ((st = sd_sampler_noise(run, s, s_next, noise)))
                break;
            add_noise(x, noise, run->s_noise * up, run->n);
        }
        memcpy(old, base, run->n * sizeof(float));
        have_old = true;
        old_down = down;
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_res_multistep(sd_sampler_run *run, float *x)
{
    return res_multistep(run, x, run->flags & SD_SAMPLER_ANCESTRAL ? run->eta : 0.0, run->flags & SD_SAMPLER_CFG_PP);
}

/* sample_gradient_estimation with ge_gamma 2 (openreview o2ND9v0CeK). */
static sd_status gradient_estimation(sd_sampler_run *run, float *x, bool cfg_pp)
{
    const double ge_gamma = 2.0;
    work w;
    sd_status st = work_alloc(run, &w, 4);
    float *den = w.a, *unc = w.b, *d = w.c, *old_d = w.d;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1], dt = s_next - s;
        if ((st = sd_sampler_denoise_uncond(run, x, s, den, cfg_pp ? unc : NULL)))
            break;
        const float *base = cfg_pp ? unc : den;
        for (size_t k = 0; k < run->n; k++)
            d[k] = (float)(((double)x[k] - base[k]) / s);
        if ((st = sd_sampler_step(run, i, x, den)))
            break;
        if (s_next == 0.0) {
            memcpy(x, den, run->n * sizeof(float));
        } else {
            for (size_t k = 0; k < run->n; k++) {
                double xk = cfg_pp ? den[k] + (double)d[k] * s_next : x[k] + (double)d[k] * dt;
                if (i >= 1)
                    xk = (double)(float)xk + (ge_gamma - 1.0) * ((double)d[k] - old_d[k]) * dt;
                x[k] = (float)xk;
            }
        }
        float *tmp = old_d;
        old_d = d;
        d = tmp;
    }
    work_free(&w);
    return st;
}

sd_status sd_sample_gradient_estimation(sd_sampler_run *run, float *x)
{
    return gradient_estimation(run, x, run->flags & SD_SAMPLER_CFG_PP);
}

/* sample_ipndm (max_order 4) and sample_ipndm_v (variable-step coefficients), from zju-pi's
 * diff-solvers: Adams-Bashforth steps on the derivative history. */
static sd_status ipndm(sd_sampler_run *run, float *x, bool variable)
{
    enum { MAX_ORDER = 4 };
    float *den = sd_sampler_alloc(run, run->n), *hist[MAX_ORDER] = {0}; /* hist[0]: this step's d */
    sd_status st = den ? SD_OK : SD_ERR_NOMEM;
    for (int k = 0; st == SD_OK && k < MAX_ORDER; k++)
        if (!(hist[k] = sd_sampler_alloc(run, run->n)))
            st = SD_ERR_NOMEM;
    const float *t = run->sigmas;
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double tc = t[i], tn = t[i + 1], dt = tn - tc;
        if ((st = sd_sampler_denoise(run, x, tc, den)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        float *oldest = hist[MAX_ORDER - 1];
        memmove(hist + 1, hist, (MAX_ORDER - 1) * sizeof hist[0]);
        hist[0] = oldest;
        for (size_t k = 0; k < run->n; k++)
            hist[0][k] = (float)(((double)x[k] - den[k]) / tc);
        int order = i + 1 < MAX_ORDER ? i + 1 : MAX_ORDER;
        double c[MAX_ORDER] = {1.0, 0.0, 0.0, 0.0}, div = 1.0;
        if (!variable) {
            static const double ab[MAX_ORDER][MAX_ORDER + 1] = {
                {1, 0, 0, 0, 1}, {3, -1, 0, 0, 2}, {23, -16, 5, 0, 12}, {55, -59, 37, -9, 24}};
            memcpy(c, ab[order - 1], sizeof c);
            div = ab[order - 1][MAX_ORDER];
        } else if (order >= 2) {
            double hn = dt, h1 = tc - t[i - 1];
            double h2 = order >= 3 ? (double)t[i - 1] - t[i - 2] : 0, h3 = order >= 4 ? (double)t[i - 2] - t[i - 3] : 0;
            c[0] = (2 + hn / h1) / 2;
            c[1] = -(hn / h1) / 2;
            if (order >= 3) {
                double t1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2;
                c[0] += t1;
                c[1] -= (1 + h1 / h2) * t1;
                c[2] = t1 * h1 / h2;
                if (order == 4) {
                    double t2 = ((1 - hn / (3 * (hn + h1))) / 2 + (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2))) *
                                (hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3));
                    double q = h1 * (h1 + h2) / (h2 * (h2 + h3));
                    c[0] += t2;
                    c[1] -= (1 + h1 / h2 + q) * t2;
                    c[2] += (h1 / h2 + q * (1 + h2 / h3)) * t2;
                    c[3] = -t2 * q * h1 / h2;
                }
            }
        }
        if (tn == 0.0) {
            memcpy(x, den, run->n * sizeof(float));
            continue;
        }
        for (size_t k = 0; k < run->n; k++) {
            double acc = 0.0;
            for (int j = 0; j < order; j++)
                acc += c[j] * hist[j][k];
            x[k] = (float)(x[k] + dt * (acc / div));
        }
    }
    free(den);
    for (int k = 0; k < MAX_ORDER; k++)
        free(hist[k]);
    return st;
}

sd_status sd_sample_ipndm(sd_sampler_run *run, float *x)
{
    return ipndm(run, x, run->flags & SD_SAMPLER_VARIABLE);
}

/* sample_heunpp2 (s_churn 0): Euler into the last sigma, Heun with weights sigma/(2 sigma_0)
 * one step before, else Heun++ with a second lookahead step. */
sd_status sd_sample_heunpp2(sd_sampler_run *run, float *x)
{
    work w;
    sd_status st = work_alloc(run, &w, 4);
    const float *sg = run->sigmas;
    double s_end = sg[run->steps];
    for (int i = 0; st == SD_OK && i < run->steps; i++) {
        double s = sg[i], s1 = sg[i + 1], dt = s1 - s;
        if ((st = sd_sampler_denoise(run, x, s, w.a)) || (st = sd_sampler_step(run, i, x, w.a)))
            break;
        if (s1 == s_end) {
            euler_update(x, w.a, s, dt, run->n);
            continue;
        }
        for (size_t k = 0; k < run->n; k++)
            w.b[k] = (float)(x[k] + ((double)x[k] - w.a[k]) / s * dt);
        if ((st = sd_sampler_denoise(run, w.b, s1, w.c)))
            break;
        double s2 = sg[i + 2];
        if (s2 == s_end) {
            double w2 = s1 / (2.0 * sg[0]), w1 = 1.0 - w2;
            for (size_t k = 0; k < run->n; k++) {
                double d = ((double)x[k] - w.a[k]) / s, d2 = ((double)w.b[k] - w.c[k]) / s1;
                x[k] = (float)(x[k] + (d * w1 + d2 * w2) * dt);
            }
            continue;
        }
        for (size_t k = 0; k < run->n; k++) { /* x_3 = x_2 + d_2 (s2 - s1); d_2 replaces den_2 */
            double d2 = ((double)w.b[k] - w.c[k]) / s1;
            w.d[k] = (float)(w.b[k] + d2 * (s2 - s1));
            w.c[k] = (float)d2;
        }
        float *den3 = w.b; /* x_2 is no longer needed */
        if ((st = sd_sampler_denoise(run, w.d, s2, den3)))
            break;
        double wt = 3.0 * sg[0], w2 = s1 / wt, w3 = s2 / wt, w1 = 1.0 - w2 - w3;
        for (size_t k = 0; k < run->n; k++) {
            double d = ((double)x[k] - w.a[k]) / s, d3 = ((double)w.d[k] - den3[k]) / s2;
            x[k] = (float)(x[k] + (w1 * d + w2 * (double)w.c[k] + w3 * d3) * dt);
        }
    }
    work_free(&w);
    return st;
}
