/* UniPC (Zhao et al. 2023) as ComfyUI runs it (comfy/extra_samplers/uni_pc.py, sample_unipc):
 * multistep predictor-corrector on the data prediction, order min(3, len(sigmas) - 2), lower
 * order at the start and at the end, B(h) = h (bh1, "uni_pc") or expm1(h) (bh2, "uni_pc_bh2"),
 * time variable = sigma itself (SigmaConvert), in the variance-preserving scaling
 * x_vp = x / sqrt(1 + sigma^2), the last sigma 0 replaced by 0.001. */
#include "core/context.h"
#include "ml/sampling/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

enum { UNIPC_MAX_ORDER = 3 };

typedef struct unipc {
    sd_sampler_run *run;
    bool bh2;
    const double *t;        /* time steps (sigmas, last one 0.001 if it was 0) */
    float *model[UNIPC_MAX_ORDER]; /* previous data predictions, [order-1] newest */
    double t_prev[UNIPC_MAX_ORDER];
    int n_prev;
    float *scaled, *den, *x_t_, *model_t;
} unipc;

/* SigmaConvert: log alpha, alpha, std and half-log-SNR lambda for a sigma. */
static double log_alpha(double sigma)
{
    return 0.5 * log(1.0 / (sigma * sigma + 1.0));
}

static double alpha_of(double sigma)
{
    return exp(log_alpha(sigma));
}

static double std_of(double sigma)
{
    return sqrt(1.0 - exp(2.0 * log_alpha(sigma)));
}

static double lambda_of(double sigma)
{
    double la = log_alpha(sigma);
    return la - 0.5 * log(1.0 - exp(2.0 * la));
}

/* Data prediction x0 for x_vp at time sigma: the denoiser sees x_vp * sqrt(sigma^2 + 1). */
static sd_status data_prediction(unipc *u, const float *x, double sigma, float *out)
{
    sd_sampler_run *run = u->run;
    double scale = sqrt(sigma * sigma + 1.0);
    for (size_t k = 0; k < run->n; k++)
        u->scaled[k] = (float)((double)x[k] * scale);
    sd_status st = sd_sampler_denoise(run, u->scaled, sigma, u->den);
    if (st != SD_OK)
        return st;
    double a = alpha_of(sigma), sd = std_of(sigma);
    for (size_t k = 0; k < run->n; k++) {
        double eps = ((double)u->scaled[k] - u->den[k]) / sigma;
        out[k] = (float)(((double)x[k] - sd * eps) / a);
    }
    return SD_OK;
}

/* multistep_uni_pc_bh_update: x moves from the newest previous time to t; with the corrector the
 * model is evaluated at the predicted point and its prediction stored in u->model_t
 * (*have_model_t set). */
static sd_status bh_update(unipc *u, float *x, double t, int order, bool use_corrector,
                           bool *have_model_t)
{
    sd_sampler_run *run = u->run;
    int newest = u->n_prev - 1;
    double t0 = u->t_prev[newest];
    const float *m0 = u->model[newest];
    double lambda0 = lambda_of(t0), lambda_t = lambda_of(t);
    double sigma0 = std_of(t0), sigma_t = std_of(t), alpha_t = exp(log_alpha(t));
    double h = lambda_t - lambda0;
    double rks[UNIPC_MAX_ORDER];
    const float *prev[UNIPC_MAX_ORDER];
    for (int i = 1; i < order; i++) {
        prev[i - 1] = u->model[newest - i];
        rks[i - 1] = (lambda_of(u->t_prev[newest - i]) - lambda0) / h;
    }
    rks[order - 1] = 1.0;
    double hh = -h, h_phi_1 = expm1(hh);
    double b_h = u->bh2 ? expm1(hh) : hh;
    double r[UNIPC_MAX_ORDER][UNIPC_MAX_ORDER], b[UNIPC_MAX_ORDER];
    double h_phi_k = expm1(hh) / hh - 1.0, factorial = 1.0;
    for (int i = 1; i <= order; i++) {
        for (int j = 0; j < order; j++)
            r[i - 1][j] = pow(rks[j], i - 1);
        b[i - 1] = h_phi_k * factorial / b_h;
        factorial *= i + 1;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    double rhos_p[UNIPC_MAX_ORDER] = {0}, rhos_c[UNIPC_MAX_ORDER] = {0};
    int n_d1 = order - 1;
    if (n_d1 > 0) {
        if (order == 2) {
            rhos_p[0] = 0.5;
        } else {
            double rp[UNIPC_MAX_ORDER][UNIPC_MAX_ORDER], bp[UNIPC_MAX_ORDER];
            memcpy(rp, r, sizeof rp);
            memcpy(bp, b, sizeof bp);
            sd_solve_linear(order - 1, UNIPC_MAX_ORDER, &rp[0][0], bp, rhos_p);
        }
    }
    if (use_corrector) {
        if (order == 1)
            rhos_c[0] = 0.5;
        else
            sd_solve_linear(order, UNIPC_MAX_ORDER, &r[0][0], b, rhos_c);
    }
    double c_x = sigma_t / sigma0, c_m = alpha_t * h_phi_1, c_res = alpha_t * b_h;
    for (size_t k = 0; k < run->n; k++) {
        double base = c_x * x[k] - c_m * m0[k];
        double pred = 0.0;
        for (int i = 0; i < n_d1; i++)
            pred += ((double)prev[i][k] - m0[k]) / rks[i] * rhos_p[i];
        u->x_t_[k] = (float)base;
        x[k] = (float)(base - c_res * pred);
    }
    *have_model_t = false;
    if (!use_corrector)
        return SD_OK;
    sd_status st = data_prediction(u, x, t, u->model_t);
    if (st != SD_OK)
        return st;
    for (size_t k = 0; k < run->n; k++) {
        double corr = 0.0;
        for (int i = 0; i < n_d1; i++)
            corr += ((double)prev[i][k] - m0[k]) / rks[i] * rhos_c[i];
        double d1_t = (double)u->model_t[k] - m0[k];
        x[k] = (float)((double)u->x_t_[k] - c_res * (corr + rhos_c[order - 1] * d1_t));
    }
    *have_model_t = true;
    return SD_OK;
}

/* Stores a new (time, prediction) pair: appended while filling, else shifted in as newest. */
static void push_prev(unipc *u, double t, const float *model, int order)
{
    if (u->n_prev < order) {
        memcpy(u->model[u->n_prev], model, u->run->n * sizeof(float));
        u->t_prev[u->n_prev++] = t;
        return;
    }
    float *oldest = u->model[0];
    for (int i = 0; i < order - 1; i++) {
        u->model[i] = u->model[i + 1];
        u->t_prev[i] = u->t_prev[i + 1];
    }
    u->model[order - 1] = oldest;
    memcpy(oldest, model, u->run->n * sizeof(float));
    u->t_prev[order - 1] = t;
}

static sd_status unipc_sample(sd_sampler_run *run, float *x, bool bh2)
{
    int steps = run->steps;
    int order = steps - 1 < UNIPC_MAX_ORDER ? steps - 1 : UNIPC_MAX_ORDER;
    unipc u = {.run = run, .bh2 = bh2};
    double *t = malloc(((size_t)steps + 1) * sizeof(double));
    sd_status st = t ? SD_OK : sd_set_error(run->ctx, SD_ERR_NOMEM, "sampler '%s': out of memory",
                                           run->opt->sampler);
    for (int i = 0; i < UNIPC_MAX_ORDER && st == SD_OK; i++)
        if (!(u.model[i] = sd_sampler_alloc(run, run->n)))
            st = SD_ERR_NOMEM;
    float **scratch[4] = {&u.scaled, &u.den, &u.x_t_, &u.model_t};
    for (int i = 0; i < 4 && st == SD_OK; i++)
        if (!(*scratch[i] = sd_sampler_alloc(run, run->n)))
            st = SD_ERR_NOMEM;
    if (st != SD_OK)
        goto done;
    for (int i = 0; i <= steps; i++)
        t[i] = run->sigmas[i];
    if (t[steps] == 0.0)
        t[steps] = 0.001;
    u.t = t;
    double in_scale = sqrt(1.0 + t[0] * t[0]);
    for (size_t k = 0; k < run->n; k++)
        x[k] = (float)((double)x[k] / in_scale);

    bool have_model_t = false;
    for (int step_index = 0; step_index < steps; step_index++) {
        if (step_index == 0) {
            if ((st = data_prediction(&u, x, t[0], u.model_t)))
                goto done;
            push_prev(&u, t[0], u.model_t, order > 0 ? order : 1);
        } else if (step_index < order) {
            if ((st = bh_update(&u, x, t[step_index], step_index, true, &have_model_t)))
                goto done;
            push_prev(&u, t[step_index], u.model_t, order);
        } else {
            int last = step_index == steps - 1 ? step_index + 1 : step_index;
            for (int step = step_index; step <= last; step++) {
                int step_order = steps + 1 - step < order ? steps + 1 - step : order;
                bool corrector = step != steps;
                if ((st = bh_update(&u, x, t[step], step_order, corrector, &have_model_t)))
                    goto done;
                /* The final update (step == steps) needs no model value and ends the run. */
                if (step < steps) {
                    if (!have_model_t && (st = data_prediction(&u, x, t[step], u.model_t)))
                        goto done;
                    push_prev(&u, t[step], u.model_t, order);
                }
            }
        }
        if ((st = sd_sampler_step(run, step_index, x, u.model[u.n_prev - 1])))
            goto done;
    }
    double out_scale = alpha_of(t[steps]);
    for (size_t k = 0; k < run->n; k++)
        x[k] = (float)((double)x[k] / out_scale);

done:
    free(t);
    for (int i = 0; i < UNIPC_MAX_ORDER; i++)
        free(u.model[i]);
    free(u.scaled);
    free(u.den);
    free(u.x_t_);
    free(u.model_t);
    return st;
}

sd_status sd_sample_uni_pc_bh1(sd_sampler_run *run, float *x)
{
    return unipc_sample(run, x, false);
}

sd_status sd_sample_uni_pc_bh2(sd_sampler_run *run, float *x)
{
    return unipc_sample(run, x, true);
}
