/* ComfyUI's later k-diffusion samplers for eps-type models (comfy/k_diffusion/sampling.py,
 * deis.py, sa_solver.py; docs/sampling.md): DPM-Solver fast and adaptive, DEIS, ER-SDE, SEEDS-2
 * and -3 (exp_heun_2_x0 and its SDE form are SEEDS-2 with r = 1 and the phi_2 solver) and
 * SA-Solver. Scalar coefficients in double; element-wise updates in double, stored as float. */
#include "core/context.h"
#include "ml/sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define MAX_BUFS 10

/* Up to MAX_BUFS working arrays of n floats, freed together. */
typedef struct bufs {
    float *b[MAX_BUFS];
} bufs;

static sd_status bufs_alloc(sd_sampler_run *run, bufs *w, int count)
{
    memset(w, 0, sizeof *w);
    for (int i = 0; i < count; i++)
        if (!(w->b[i] = sd_sampler_alloc(run, run->n)))
            return SD_ERR_NOMEM;
    return SD_OK;
}

static void bufs_free(bufs *w)
{
    for (int i = 0; i < MAX_BUFS; i++)
        free(w->b[i]);
}

/* A step's first model call and the step callback; on a last step to sigma 0 x becomes the
 * prediction and *done is set. */
static sd_status step_start(sd_sampler_run *run, int i, float *x, float *den, bool *done)
{
    sd_status st = sd_sampler_denoise(run, x, run->sigmas[i], den);
    if (!st)
        st = sd_sampler_step(run, i, x, den);
    *done = !st && run->sigmas[i + 1] == 0.0f;
    if (*done)
        memcpy(x, den, run->n * sizeof *x);
    return st;
}

/* ---- DPM-Solver (arXiv 2206.00927) on eps = (x - D(x, sigma)) / sigma in t = -log sigma. ---- */

/* One solver step's model evaluations: eps at its start and at r1, r2 inside it, each made once
 * per step (k-diffusion's eps_cache). */
typedef struct dpm {
    sd_sampler_run *run;
    float *den, *eps, *eps1, *eps2, *u;
    bool has_eps1;
} dpm;

/* out = (x - D(x, e^-t)) / e^-t; the prediction stays in d->den. */
static sd_status dpm_eps(dpm *d, const float *x, double t, float *out)
{
    double sigma = exp(-t);
    sd_status st = sd_sampler_denoise(d->run, x, sigma, d->den);
    for (size_t k = 0; !st && k < d->run->n; k++)
        out[k] = (float)(((double)x[k] - d->den[k]) / sigma);
    return st;
}

/* DPM-Solver-1 from t to t_next (d->eps holds eps at t). */
static void dpm_step1(dpm *d, const float *x, double t, double t_next, float *out)
{
    double c = exp(-t_next) * expm1(t_next - t);
    for (size_t k = 0; k < d->run->n; k++)
        out[k] = (float)(x[k] - c * d->eps[k]);
}

/* eps at s1 = t + r1 h, through u1 = x - sigma(s1) expm1(r1 h) eps (made once per step). */
static sd_status dpm_eps1(dpm *d, const float *x, double t, double h, double r1)
{
    if (d->has_eps1)
        return SD_OK;
    double s1 = t + r1 * h, c = exp(-s1) * expm1(r1 * h);
    for (size_t k = 0; k < d->run->n; k++)
        d->u[k] = (float)(x[k] - c * d->eps[k]);
    d->has_eps1 = true;
    return dpm_eps(d, d->u, s1, d->eps1);
}

/* Element k of the DPM-Solver-2 step from t to t_next = t + h (sn = e^-t_next, e = expm1(h)). */
static double dpm_2_at(const dpm *d, const float *x, size_t k, double sn, double e, double r1)
{
    return x[k] - sn * e * d->eps[k] - sn / (2 * r1) * e * ((double)d->eps1[k] - d->eps[k]);
}

/* Element k of the DPM-Solver-3 step (c3 = sn / r2 * (e / h - 1)). */
static double dpm_3_at(const dpm *d, const float *x, size_t k, double sn, double e, double c3)
{
    return x[k] - sn * e * d->eps[k] - c3 * ((double)d->eps2[k] - d->eps[k]);
}

static sd_status dpm_step2(dpm *d, const float *x, double t, double t_next, double r1, float *out)
{
    double h = t_next - t, sn = exp(-t_next), e = expm1(h);
    sd_status st = dpm_eps1(d, x, t, h, r1);
    for (size_t k = 0; !st && k < d->run->n; k++)
        out[k] = (float)dpm_2_at(d, x, k, sn, e, r1);
    return st;
}

/* The evaluations of DPM-Solver-3 (r1 = 1/3, r2 = 2/3): eps1, then eps2 at t + r2 h. */
static sd_status dpm_eps2(dpm *d, const float *x, double t, double h)
{
    const double r1 = 1.0 / 3, r2 = 2.0 / 3;
    double s2 = t + r2 * h;
    double c2a = exp(-s2) * expm1(r2 * h), c2b = exp(-s2) * (r2 / r1) * (expm1(r2 * h) / (r2 * h) - 1.0);
    sd_status st = dpm_eps1(d, x, t, h, r1);
    for (size_t k = 0; !st && k < d->run->n; k++)
        d->u[k] = (float)(x[k] - c2a * d->eps[k] - c2b * ((double)d->eps1[k] - d->eps[k]));
    return st ? st : dpm_eps(d, d->u, s2, d->eps2);
}

static sd_status dpm_step3(dpm *d, const float *x, double t, double t_next, float *out)
{
    double h = t_next - t, sn = exp(-t_next), e = expm1(h), c3 = sn / (2.0 / 3) * (e / h - 1.0);
    sd_status st = dpm_eps2(d, x, t, h);
    for (size_t k = 0; !st && k < d->run->n; k++)
        out[k] = (float)dpm_3_at(d, x, k, sn, e, c3);
    return st;
}

/* comfy/samplers.py runs both from sigmas[0] to the last nonzero sigma. */
static double dpm_t_end(const sd_sampler_run *run)
{
    double last = run->sigmas[run->steps];
    return -log(last > 0.0 ? last : run->sigmas[run->steps - 1]);
}

/* sample_dpm_fast (eta 0): nfe = the step count, spent in steps of order 3 on equal steps in t. */
sd_status sd_sample_dpm_fast(sd_sampler_run *run, float *x)
{
    bufs w;
    sd_status st = bufs_alloc(run, &w, 6);
    dpm d = {run, w.b[0], w.b[1], w.b[2], w.b[3], w.b[4], false};
    float *next = w.b[5];
    int nfe = run->steps, m = nfe / 3 + 1;
    double t_start = -log((double)run->sigmas[0]), t_end = dpm_t_end(run), dt = (t_end - t_start) / m;
    for (int i = 0; !st && i < m; i++) {
        int order = nfe % 3 == 0 ? (i < m - 2 ? 3 : i == m - 2 ? 2 : 1) : (i < m - 1 ? 3 : nfe % 3);
        double t = t_start + i * dt, t_next = i + 1 == m ? t_end : t_start + (i + 1) * dt; /* numpy's linspace */
        d.has_eps1 = false;
        if ((st = dpm_eps(&d, x, t, d.eps)) || (st = sd_sampler_step(run, i, x, d.den)))
            break;
        if (order == 1)
            dpm_step1(&d, x, t, t_next, next);
        else if (order == 2)
            st = dpm_step2(&d, x, t, t_next, 0.5, next);
        else
            st = dpm_step3(&d, x, t, t_next, next);
        if (!st)
            memcpy(x, next, run->n * sizeof *x);
    }
    bufs_free(&w);
    return st;
}

#define DPM_ADAPTIVE_MAX_TRIES 1000

/* sample_dpm_adaptive with its defaults: order 3 (DPM-Solver-23), rtol 0.05, atol 0.0078,
 * h_init 0.05, an integral controller (icoeff 1), accept_safety 0.81, eta 0. Each try costs three
 * model calls; a rejected try shrinks the step. */
sd_status sd_sample_dpm_adaptive(sd_sampler_run *run, float *x)
{
    const double rtol = 0.05, atol = 0.0078, accept_safety = 0.81, b1 = 1.0 / 3;
    bufs w;
    sd_status st = bufs_alloc(run, &w, 8);
    dpm d = {run, w.b[0], w.b[1], w.b[2], w.b[3], w.b[4], false};
    float *low = w.b[5], *high = w.b[6], *prev = w.b[7];
    if (!st)
        memcpy(prev, x, run->n * sizeof *x);
    double s = -log((double)run->sigmas[0]), t_end = dpm_t_end(run), h = 0.05;
    int tries = 0;
    while (!st && s < t_end - 1e-5) {
        if (tries == DPM_ADAPTIVE_MAX_TRIES) {
            st = sd_set_error(run->ctx, SD_ERR_LIMIT, "sampler 'dpm_adaptive': no convergence after %d step tries",
                              tries);
            break;
        }
        double t = fmin(t_end, s + h);
        d.has_eps1 = false;
        int shown = tries < run->steps ? tries : run->steps - 1;
        tries++;
        if ((st = dpm_eps(&d, x, s, d.eps)) || (st = sd_sampler_step(run, shown, x, d.den)) ||
            (st = dpm_eps2(&d, x, s, t - s)))
            break;
        /* The error of the order-2 step against the order-3 one, both in double: their difference
         * cancels most of x, so float copies would lose it. */
        double sn = exp(-t), e = expm1(t - s), c3 = sn / (2.0 / 3) * (e / (t - s) - 1.0), sum = 0.0;
        for (size_t k = 0; k < run->n; k++) {
            double lo = dpm_2_at(&d, x, k, sn, e, 1.0 / 3), hi = dpm_3_at(&d, x, k, sn, e, c3);
            double delta = fmax(atol, rtol * fmax(fabs(lo), fabs((double)prev[k]))), q = (lo - hi) / delta;
            sum += q * q;
            low[k] = (float)lo;
            high[k] = (float)hi;
        }
        double inv = 1.0 / (sqrt(sum) / sqrt((double)run->n) + 1e-8);
        /* PIDStepSizeController with pcoeff = dcoeff = 0: the factor is errs[0] ** (1 / order). */
        double factor = 1.0 + atan(pow(inv, b1) - 1.0);
        if (factor >= accept_safety) {
            memcpy(prev, low, run->n * sizeof *x);
            memcpy(x, high, run->n * sizeof *x);
            s = t;
        }
        h *= factor;
    }
    bufs_free(&w);
    return st;
}

/* ---- DEIS (arXiv 2204.13902), tab mode, max order 3, as ComfyUI's deis.py: EDM's VP time
 * t(sigma) for sigma_min 0.002, sigma_max 80, eps 1e-3; coefficients by a 10000-point sum. */

typedef struct deis_vp {
    double beta_0, beta_1;
} deis_vp;

static double deis_t(const deis_vp *vp, double sigma)
{
    double beta_d = vp->beta_1 - vp->beta_0;
    return (sqrt(vp->beta_0 * vp->beta_0 + 2.0 * beta_d * log(sigma * sigma + 1.0)) - vp->beta_0) / beta_d;
}

/* The integrals over [t[i], t[i+1]] of -1/2 dlog(alpha)/dtau / sqrt(alpha (1 - alpha)) times the
 * Lagrange basis polynomials through t[i], t[i-1], ... (order of them). */
static void deis_coeffs(const deis_vp *vp, const double *t, int i, int order, double *c)
{
    enum { POINTS = 10000 };
    double a = t[i], b = t[i + 1], step = (b - a) / (POINTS - 1), dtau = (b - a) / POINTS;
    for (int j = 0; j < order; j++)
        c[j] = 0.0;
    for (int p = 0; p < POINTS; p++) {
        double tau = p + 1 == POINTS ? b : a + p * step; /* numpy's linspace */
        double alpha = exp(-0.5 * tau * tau * (vp->beta_1 - vp->beta_0) - tau * vp->beta_0);
        double dlog = -tau * (vp->beta_1 - vp->beta_0) - vp->beta_0;
        double f = -0.5 * dlog / sqrt(alpha * (1.0 - alpha));
        for (int j = 0; j < order; j++) {
            double poly = 1.0;
            for (int k = 0; k < order; k++)
                if (k != j)
                    poly = poly * (tau - t[i - k]) / (t[i - j] - t[i - k]);
            c[j] += f * poly;
        }
    }
    for (int j = 0; j < order; j++)
        c[j] *= dtau;
}

sd_status sd_sample_deis(sd_sampler_run *run, float *x)
{
    enum { MAX_ORDER = 3 };
    const double eps_s = 1e-3, smin = 0.002, smax = 80.0;
    bufs w;
    sd_status st = bufs_alloc(run, &w, 1 + MAX_ORDER);
    double *t = calloc((size_t)run->steps + 1, sizeof *t);
    if (!st && !t)
        st = sd_set_error(run->ctx, SD_ERR_NOMEM, "sampler 'deis': out of memory");
    double beta_d = 2.0 * (log(smin * smin + 1.0) / eps_s - log(smax * smax + 1.0)) / (eps_s - 1.0);
    deis_vp vp = {log(smax * smax + 1.0) - 0.5 * beta_d, 0.0};
    vp.beta_1 = beta_d + vp.beta_0;
    for (int i = 0; t && i <= run->steps; i++)
        t[i] = deis_t(&vp, run->sigmas[i]);
    float *den = w.b[0], **ds = &w.b[1]; /* ds[0] the newest derivative, then older ones */
    for (int i = 0; !st && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, den)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        float *oldest = ds[MAX_ORDER - 1];
        memmove(ds + 1, ds, (MAX_ORDER - 1) * sizeof *ds);
        ds[0] = oldest;
        for (size_t k = 0; k < run->n; k++)
            ds[0][k] = (float)(((double)x[k] - den[k]) / s);
        int order = s_next <= 0.0 ? 1 : i + 1 < MAX_ORDER ? i + 1 : MAX_ORDER;
        double c[MAX_ORDER] = {s_next - s};
        if (order > 1)
            deis_coeffs(&vp, t, i, order, c);
        for (size_t k = 0; k < run->n; k++) {
            double acc = x[k];
            for (int j = 0; j < order; j++)
                acc += c[j] * ds[j][k];
            x[k] = (float)acc;
        }
    }
    free(t);
    bufs_free(&w);
    return st;
}

/* ---- ER-SDE-Solver-3 (arXiv 2309.06169): VP, lambda = sigma / alpha, noise scaler
 * x (e^(x^0.3) + 10), stage integrals over 200 points. */

static double er_scaler(double v)
{
    return v * (exp(pow(v, 0.3)) + 10.0);
}

sd_status sd_sample_er_sde(sd_sampler_run *run, float *x)
{
    enum { POINTS = 200 };
    bufs w;
    sd_status st = bufs_alloc(run, &w, 5);
    float *den = w.b[0], *old = w.b[1], *den_d = w.b[2], *old_d = w.b[3], *noise = w.b[4];
    for (int i = 0; !st && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        if ((st = sd_sampler_denoise(run, x, s, den)) || (st = sd_sampler_step(run, i, x, den)))
            break;
        int stage = i + 1 < 3 ? i + 1 : 3;
        if (s_next == 0.0) {
            memcpy(x, den, run->n * sizeof *x);
        } else {
            double ls = exp(log(s)), lt = exp(log(s_next)); /* exp(-half_log_snr) as ComfyUI computes it */
            double alpha_s = s / ls, alpha_t = s_next / lt, r = er_scaler(lt) / er_scaler(ls);
            double ca = alpha_t / alpha_s * r, cb = alpha_t * (1.0 - r), c2 = 0.0, c3 = 0.0, d2 = 1.0, d3 = 1.0;
            if (stage >= 2) {
                double dt = lt - ls, step = -dt / POINTS, sum = 0.0, sum_u = 0.0;
                for (int p = 0; p < POINTS; p++) {
                    double pos = lt + p * step, scaled = er_scaler(pos);
                    sum += 1.0 / scaled;
                    sum_u += (pos - ls) / scaled;
                }
                c2 = alpha_t * (dt + sum * step * er_scaler(lt));
                c3 = alpha_t * (dt * dt / 2.0 + sum_u * step * er_scaler(lt));
                double l1 = exp(log((double)run->sigmas[i - 1]));
                d2 = ls - l1;
                d3 = stage >= 3 ? (ls - exp(log((double)run->sigmas[i - 2]))) / 2.0 : 1.0;
            }
            for (size_t k = 0; k < run->n; k++) {
                double v = ca * x[k] + cb * den[k];
                if (stage >= 2) {
                    double dd = ((double)den[k] - old[k]) / d2;
                    v += c2 * dd;
                    if (stage >= 3)
                        v += c3 * ((dd - old_d[k]) / d3);
                    den_d[k] = (float)dd;
                }
                x[k] = (float)v;
            }
            if (stage >= 2) {
                float *tmp = old_d;
                old_d = den_d;
                den_d = tmp;
            }
            if (run->s_noise > 0.0) {
                double var = lt * lt - ls * ls * r * r;
                if ((st = sd_sampler_noise(run, s, s_next, noise)))
                    break;
                double c = alpha_t * run->s_noise * (var >= 0.0 ? sqrt(var) : 0.0);
                for (size_t k = 0; k < run->n; k++)
                    x[k] = (float)(x[k] + (double)noise[k] * c);
            }
        }
        float *tmp = old;
        old = den;
        den = tmp;
    }
    bufs_free(&w);
    return st;
}

/* ---- SEEDS (arXiv 2305.14267), VP data prediction in lambda = -log sigma. ---- */

/* h * phi_2(h) of exponential integrators. */
static double h_phi_2(double h)
{
    return (expm1(h) - h) / h;
}

/* The SDE noise of a SEEDS stage: with the previous stage's noise z (n values, updated in
 * place), z = z e^seg + sqrt(-expm1(2 seg)) * fresh noise from sigma to sigma_next; a first stage
 * (first) starts from sqrt(-expm1(2 seg)) * noise. Then x += z * sigma_next * s_noise. */
static sd_status seeds_noise(sd_sampler_run *run, float *x, float *z, float *fresh, bool first, double seg,
                             double sigma, double sigma_next, double s_noise)
{
    sd_status st = sd_sampler_noise(run, sigma, sigma_next, fresh);
    double keep = first ? 0.0 : exp(seg), c = sqrt(-expm1(2.0 * seg));
    for (size_t k = 0; !st && k < run->n; k++) {
        z[k] = (float)((first ? 0.0 : (double)z[k] * keep) + c * fresh[k]);
        x[k] = (float)(x[k] + (double)z[k] * sigma_next * s_noise);
    }
    return st;
}

/* SEEDS' first stage from sigma s (lambda ls, step h in lambda): the exponential-integrator step
 * to lambda ls + r h (sigma *s1) with its noise (z started), then the prediction there into den1. */
static sd_status seeds_stage1(sd_sampler_run *run, const float *x, const float *den, double s, double h, double r,
                              double eta, double s_noise, float *xs, float *z, float *fresh, float *den1,
                              double *s1)
{
    double ls = -log(s), ls1 = ls + r * h, alpha_s1;
    *s1 = exp(-ls1);
    alpha_s1 = *s1 * exp(ls1);
    double ca = *s1 / s * exp(-r * h * eta), cb = alpha_s1 * expm1(-r * h * (eta + 1.0));
    for (size_t k = 0; k < run->n; k++)
        xs[k] = (float)(ca * x[k] - cb * den[k]);
    sd_status st = SD_OK;
    if (eta > 0.0 && s_noise > 0.0)
        st = seeds_noise(run, xs, z, fresh, true, -r * h * eta, s, *s1, s_noise);
    return st ? st : sd_sampler_denoise(run, xs, *s1, den1);
}

/* sample_seeds_2: a stage at lambda_s + r h, then the step with the phi_1 blend of both
 * predictions (phi_2: the phi_2 weights). */
static sd_status seeds_2(sd_sampler_run *run, float *x, double eta, double s_noise, double r, bool phi_2)
{
    bool inject = eta > 0.0 && s_noise > 0.0;
    bufs w;
    sd_status st = bufs_alloc(run, &w, 5);
    float *den = w.b[0], *x2 = w.b[1], *den2 = w.b[2], *z = w.b[3], *fresh = w.b[4];
    for (int i = 0; !st && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        bool done;
        if ((st = step_start(run, i, x, den, &done)) || done)
            continue;
        double lt = -log(s_next), h = lt + log(s), h_eta = h * (eta + 1.0), alpha_t = s_next * exp(lt), s1;
        if ((st = seeds_stage1(run, x, den, s, h, r, eta, s_noise, x2, z, fresh, den2, &s1)))
            break;
        double cx = s_next / s * exp(-h * eta), b2 = phi_2 ? h_phi_2(-h_eta) / r : 0.0, b1 = expm1(-h_eta) - b2;
        double fac = 1.0 / (2.0 * r), e = expm1(-h_eta);
        for (size_t k = 0; k < run->n; k++) {
            double mix = phi_2 ? b1 * den[k] + b2 * (double)den2[k]
                               : e * (den[k] + fac * ((double)den2[k] - den[k]));
            x[k] = (float)(cx * x[k] - alpha_t * mix);
        }
        if (inject && (st = seeds_noise(run, x, z, fresh, false, (r - 1.0) * h * eta, s1, s_next, s_noise)))
            break;
    }
    bufs_free(&w);
    return st;
}

sd_status sd_sample_seeds_2(sd_sampler_run *run, float *x)
{
    return seeds_2(run, x, run->eta, run->s_noise, 0.5, false);
}

/* sample_exp_heun_2_x0 (eta 0, deterministic) and _sde: SEEDS-2 with r 1 and the phi_2 solver. */
sd_status sd_sample_exp_heun_2_x0(sd_sampler_run *run, float *x)
{
    bool sde = run->flags & SD_SAMPLER_ANCESTRAL;
    return seeds_2(run, x, sde ? run->eta : 0.0, sde ? run->s_noise : 0.0, 1.0, true);
}

/* sample_seeds_3: stages at r1 = 1/3 and r2 = 2/3 of the step in lambda. */
sd_status sd_sample_seeds_3(sd_sampler_run *run, float *x)
{
    const double r1 = 1.0 / 3, r2 = 2.0 / 3, eta = run->eta, s_noise = run->s_noise;
    bool inject = eta > 0.0 && s_noise > 0.0;
    bufs w;
    sd_status st = bufs_alloc(run, &w, 6);
    float *den = w.b[0], *xs = w.b[1], *den2 = w.b[2], *den3 = w.b[3], *z = w.b[4], *fresh = w.b[5];
    for (int i = 0; !st && i < run->steps; i++) {
        double s = run->sigmas[i], s_next = run->sigmas[i + 1];
        bool done;
        if ((st = step_start(run, i, x, den, &done)) || done)
            continue;
        double ls = -log(s), lt = -log(s_next), h = lt - ls, h_eta = h * (eta + 1.0), s1;
        double ls2 = ls + r2 * (lt - ls), s2 = exp(-ls2), alpha_s2 = s2 * exp(ls2), alpha_t = s_next * exp(lt);
        if ((st = seeds_stage1(run, x, den, s, h, r1, eta, s_noise, xs, z, fresh, den2, &s1)))
            break;
        double ca, a32 = r2 / r1 * h_phi_2(-r2 * h_eta), a31 = expm1(-r2 * h_eta) - a32;
        ca = s2 / s * exp(-r2 * h * eta);
        for (size_t k = 0; k < run->n; k++)
            xs[k] = (float)(ca * x[k] - alpha_s2 * (a31 * den[k] + a32 * (double)den2[k]));
        if (inject && (st = seeds_noise(run, xs, z, fresh, false, (r1 - r2) * h * eta, s1, s2, s_noise)))
            break;
        if ((st = sd_sampler_denoise(run, xs, s2, den3)))
            break;
        double b3 = h_phi_2(-h_eta) / r2, b1 = expm1(-h_eta) - b3;
        ca = s_next / s * exp(-h * eta);
        for (size_t k = 0; k < run->n; k++)
            x[k] = (float)(ca * x[k] - alpha_t * (b1 * den[k] + b3 * (double)den3[k]));
        if (inject && (st = seeds_noise(run, x, z, fresh, false, (r2 - 1.0) * h * eta, s2, s_next, s_noise)))
            break;
    }
    bufs_free(&w);
    return st;
}

/* ---- SA-Solver (arXiv 2309.05019): stochastic Adams predictor (order 3) and corrector
 * (order 4) in lambda = -log sigma; tau = eta where the next sigma lies in the options'
 * [sde_end_sigma, sde_start_sigma], else 0 (an ODE step). */

#define SA_MAX_ORDER 4

/* compute_stochastic_adams_b_coeffs: the weights of the n predictions at lambdas lam[0..n) for
 * a step from lambda_s to lambda_t, with exp((1 + tau^2) lambda_t) factored out. */
static void sa_b_coeffs(double sigma_next, const double *lam, int n, double lambda_s, double lambda_t, double tau,
                        double *b)
{
    double tau_mul = 1.0 + tau * tau, h = lambda_t - lambda_s, terms[SA_MAX_ORDER], integrals[SA_MAX_ORDER];
    double vander[SA_MAX_ORDER][SA_MAX_ORDER];
    for (int p = 0; p < n; p++)
        terms[p] = pow(lambda_t, p) - pow(lambda_s, p) * exp(-tau_mul * h);
    for (int p = 0; p < n; p++) {
        integrals[p] = 0.0;
        for (int q = 0; q <= p; q++) {
            double c = lgamma(p + 1.0) - lgamma(q + 1.0);
            if (tau > 0.0)
                c -= (p - q) * log(tau_mul);
            integrals[p] += ((p - q) % 2 == 0 ? 1.0 : -1.0) * exp(c) * terms[q];
        }
    }
    for (int p = 0; p < n; p++) /* the transposed Vandermonde matrix: row p holds lam[k]^p */
        for (int k = 0; k < n; k++)
            vander[p][k] = pow(lam[k], p);
    sd_solve_linear(n, SA_MAX_ORDER, &vander[0][0], integrals, b);
    double alpha_t = sigma_next * exp(lambda_t);
    for (int k = 0; k < n; k++)
        b[k] *= alpha_t;
}

/* x = sigma_ratio * e^(-tau^2 h) * x + sum_k b[k] preds[k] over the newest `order` predictions. */
static void sa_combine(sd_sampler_run *run, float *out, const float *x, double cx, const double *b,
                       float *const *preds, int n_preds, int order)
{
    for (size_t k = 0; k < run->n; k++) {
        double v = cx * x[k];
        for (int j = 0; j < order; j++)
            v += b[j] * preds[n_preds - order + j][k];
        out[k] = (float)v;
    }
}

sd_status sd_sample_sa_solver(sd_sampler_run *run, float *x)
{
    enum { PREDICTOR = 3, CORRECTOR = 4 };
    bool pece = run->flags & SD_SAMPLER_PECE;
    const float *sig = run->sigmas;
    double start = run->opt->sde_start_sigma, end = run->opt->sde_end_sigma, eta = run->eta;
    bufs w;
    sd_status st = bufs_alloc(run, &w, 3 + SA_MAX_ORDER);
    double *lam = calloc((size_t)run->steps + 1, sizeof *lam);
    if (!st && !lam)
        st = sd_set_error(run->ctx, SD_ERR_NOMEM, "sampler '%s': out of memory", run->opt->sampler);
    for (int i = 0; lam && i <= run->steps; i++)
        lam[i] = sig[i] > 0.0f ? -log((double)sig[i]) : INFINITY;
    float *cur = w.b[0], *pred = w.b[1], *noise = w.b[2], **preds = &w.b[3]; /* oldest first */
    int n_preds = 0;
    bool to_end = sig[run->steps] == 0.0f;
    double h = 0.0, tau = 0.0;
    if (!st)
        memcpy(pred, x, run->n * sizeof *x);
    for (int i = 0; !st && i < run->steps; i++) {
        if (n_preds == SA_MAX_ORDER) {
            float *oldest = preds[0];
            memmove(preds, preds + 1, (SA_MAX_ORDER - 1) * sizeof *preds);
            preds[SA_MAX_ORDER - 1] = oldest;
            n_preds--;
        }
        float *den = preds[n_preds++];
        if ((st = sd_sampler_denoise(run, pred, sig[i], den)) || (st = sd_sampler_step(run, i, pred, den)))
            break;
        int p_order = PREDICTOR < n_preds ? PREDICTOR : n_preds;
        int c_order = i == 0 || (sig[i + 1] == 0.0f && !pece) ? 0 : CORRECTOR < n_preds ? CORRECTOR : n_preds;
        if (to_end) {
            p_order = p_order < run->steps - 1 - i ? p_order : run->steps - 1 - i;
            c_order = c_order < run->steps - i ? c_order : run->steps - i;
        }
        double b[SA_MAX_ORDER];
        if (c_order == 0) {
            memcpy(cur, pred, run->n * sizeof *x);
        } else {
            sa_b_coeffs(sig[i], lam + i - c_order + 1, c_order, lam[i - 1], lam[i], tau, b);
            sa_combine(run, cur, cur, (double)sig[i] / sig[i - 1] * exp(-(tau * tau) * h), b, preds, n_preds,
                       c_order);
            if (tau > 0.0 && run->s_noise > 0.0)
                for (size_t k = 0; k < run->n; k++)
                    cur[k] = cur[k] + noise[k];
            if (pece && (st = sd_sampler_denoise(run, cur, sig[i], den)))
                break;
        }
        if (sig[i + 1] == 0.0f) {
            memcpy(pred, den, run->n * sizeof *x);
            continue;
        }
        double s_next = sig[i + 1];
        tau = eta > 0.0 && start >= s_next && s_next >= end ? eta : 0.0;
        sa_b_coeffs(s_next, lam + i - p_order + 1, p_order, lam[i], lam[i + 1], tau, b);
        h = lam[i + 1] - lam[i];
        sa_combine(run, pred, cur, s_next / sig[i] * exp(-(tau * tau) * h), b, preds, n_preds, p_order);
        if (tau > 0.0 && run->s_noise > 0.0) {
            if ((st = sd_sampler_noise(run, sig[i], s_next, noise)))
                break;
            double c = s_next * sqrt(-expm1(-2.0 * tau * tau * h)) * run->s_noise;
            for (size_t k = 0; k < run->n; k++) {
                noise[k] = (float)((double)noise[k] * c);
                pred[k] = pred[k] + noise[k];
            }
        }
    }
    if (!st)
        memcpy(x, pred, run->n * sizeof *x);
    free(lam);
    bufs_free(&w);
    return st;
}
