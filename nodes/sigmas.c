/* ComfyUI's scheduler and sigma nodes (comfy_extras/nodes_custom_sampler.py,
 * nodes_align_your_steps.py): BasicScheduler, KarrasScheduler, ExponentialScheduler,
 * PolyexponentialScheduler, SDTurboScheduler, AlignYourStepsScheduler make SIGMAS; SplitSigmas,
 * SplitSigmasDenoise and FlipSigmas rearrange them. The schedules are ml/sampling/schedulers.h's. */
#include "ml/sampling/schedulers.h"
#include "nodes/node_util.h"
#include "nodes/sample_core.h"
#include <math.h>
#include <stdlib.h>

/* Sets output 0 from a schedule computed into s (freed) with status st (message on the context). */
static sd_status emit_schedule(sd_node_run *r, sd_status st, float *s, size_t n)
{
    if (!st)
        st = sd_node_set_sigmas(r, 0, s, n);
    else
        st = sd_run_fail(r, st);
    free(s);
    return st;
}

static sd_status run_basic_scheduler(sd_node_run *r)
{
    sd_model_sampling ms;
    if (!sd_node_model_sampling(r, "model", &ms))
        return SD_ERR_INVALID;
    float *s = NULL;
    size_t n = 0;
    sd_status st = sd_basic_scheduler_sigmas(sd_run_context(r), &ms, sd_run_string(r, "scheduler"),
                                             (int)sd_run_int(r, "steps"), sd_run_float(r, "denoise"), &s, &n);
    return emit_schedule(r, st, s, n);
}

static sd_status run_formula(sd_node_run *r, sd_sigma_formula formula, double rho)
{
    float *s = NULL;
    size_t n = 0;
    sd_status st = sd_formula_sigmas(sd_run_context(r), formula, (int)sd_run_int(r, "steps"),
                                     sd_run_float(r, "sigma_min"), sd_run_float(r, "sigma_max"), rho, &s, &n);
    return emit_schedule(r, st, s, n);
}

static sd_status run_karras(sd_node_run *r) { return run_formula(r, SD_SIGMAS_KARRAS, sd_run_float(r, "rho")); }
static sd_status run_exponential(sd_node_run *r) { return run_formula(r, SD_SIGMAS_EXPONENTIAL, 0.0); }
static sd_status run_polyexponential(sd_node_run *r)
{
    return run_formula(r, SD_SIGMAS_POLYEXPONENTIAL, sd_run_float(r, "rho"));
}

static sd_status run_sd_turbo(sd_node_run *r)
{
    sd_model_sampling ms;
    if (!sd_node_model_sampling(r, "model", &ms))
        return SD_ERR_INVALID;
    float *s = NULL;
    size_t n = 0;
    sd_status st = sd_sd_turbo_sigmas(sd_run_context(r), &ms, (int)sd_run_int(r, "steps"),
                                      sd_run_float(r, "denoise"), &s, &n);
    return emit_schedule(r, st, s, n);
}

static sd_status run_ays(sd_node_run *r)
{
    float *s = NULL;
    size_t n = 0;
    sd_status st = sd_ays_sigmas(sd_run_context(r), sd_run_string(r, "model_type"), (int)sd_run_int(r, "steps"),
                                 sd_run_float(r, "denoise"), &s, &n);
    return emit_schedule(r, st, s, n);
}

/* Both outputs of a split: sigmas[hi0 .. hi1) and sigmas[lo0 .. n). */
static sd_status emit_split(sd_node_run *r, const float *s, size_t hi0, size_t hi1, size_t lo0, size_t n)
{
    sd_status st = sd_node_set_sigmas(r, 0, s + hi0, hi1 - hi0);
    return st ? st : sd_node_set_sigmas(r, 1, s + lo0, n - lo0);
}

/* SplitSigmas: sigmas[:step + 1] and sigmas[step:] (Python slices, clamped). */
static sd_status run_split(sd_node_run *r)
{
    const sd_tensor *t = sd_sigmas_input(r, "sigmas");
    if (!t)
        return SD_ERR_INVALID;
    size_t n = (size_t)t->shape[0], step = (size_t)sd_run_int(r, "step");
    return emit_split(r, t->data, 0, step + 1 < n ? step + 1 : n, step < n ? step : n, n);
}

/* SplitSigmasDenoise: with k = round(steps * denoise), sigmas[:-k] and sigmas[-(k + 1):]; as in
 * Python, k = 0 makes the first part empty ([:-0] is [:0]). */
static sd_status run_split_denoise(sd_node_run *r)
{
    const sd_tensor *t = sd_sigmas_input(r, "sigmas");
    if (!t)
        return SD_ERR_INVALID;
    size_t n = (size_t)t->shape[0], steps = n > 0 ? n - 1 : 0;
    size_t k = (size_t)nearbyint((double)steps * sd_run_float(r, "denoise"));
    size_t hi1 = k == 0 || k >= n ? 0 : n - k, lo0 = k + 1 >= n ? 0 : n - (k + 1);
    return emit_split(r, t->data, 0, hi1, lo0, n);
}

/* FlipSigmas: reversed, a first sigma of 0 becoming 0.0001. */
static sd_status run_flip(sd_node_run *r)
{
    const sd_tensor *t = sd_sigmas_input(r, "sigmas");
    if (!t)
        return SD_ERR_INVALID;
    size_t n = (size_t)t->shape[0];
    float *s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        s[i] = t->data[n - 1 - i];
    if (n && s[0] == 0.0f)
        s[0] = 0.0001f;
    return emit_schedule(r, SD_OK, s, n);
}

#define IN_MODEL SD_IN_LINK("model", SD_TYPE_MODEL, "the model, for its sigma table")
#define IN_STEPS(df, hi) SD_IN_INT("steps", df, 1, hi, "number of sampling steps")
#define IN_DENOISE(doc) SD_IN_FLOAT("denoise", "1.0", 0.0, 1.0, doc)
#define IN_SIGMA_MAX SD_IN_FLOAT("sigma_max", "14.614642", 0.0, 5000.0, "the largest sigma (first step)")
#define IN_SIGMA_MIN SD_IN_FLOAT("sigma_min", "0.0291675", 0.0, 5000.0, "the smallest sigma (before the final 0)")
#define SCHEDULER(nm, run_fn, in, dc)                                                                     \
    const sd_node_desc sd_node_##nm = {                                                                 \
        .name = #nm, .version = 1, .category = "sampling/schedulers", .doc = dc,        \
        .inputs = in, .n_inputs = SD_COUNT(in), .outputs = sigmas_out, .n_outputs = SD_COUNT(sigmas_out), \
        .run = run_fn,                                                                                  \
    }

static const sd_output_desc sigmas_out[] = {SD_OUT("SIGMAS", SD_TYPE_SIGMAS, "the noise schedule")};

static const sd_input_desc basic_in[] = {
    IN_MODEL,
    SD_IN_ENUM("scheduler", "simple", sd_scheduler_choices, "noise schedule (docs/sampling.md)"),
    IN_STEPS("20", 10000),
    IN_DENOISE("fraction of the schedule to run: the last steps of steps / denoise"),
};
SCHEDULER(BasicScheduler, run_basic_scheduler, basic_in, "One of KSampler's schedules for the model.");

static const sd_input_desc karras_in[] = {
    IN_STEPS("20", 10000), IN_SIGMA_MAX, IN_SIGMA_MIN,
    SD_IN_FLOAT("rho", "7.0", 0.0, 100.0, "the exponent; larger spends more steps at small sigmas"),
};
SCHEDULER(KarrasScheduler, run_karras, karras_in, "The schedule of Karras et al. (2022) between two sigmas.");

static const sd_input_desc exponential_in[] = {IN_STEPS("20", 10000), IN_SIGMA_MAX, IN_SIGMA_MIN};
SCHEDULER(ExponentialScheduler, run_exponential, exponential_in, "Sigmas evenly spaced in log sigma.");

static const sd_input_desc poly_in[] = {
    IN_STEPS("20", 10000), IN_SIGMA_MAX, IN_SIGMA_MIN,
    SD_IN_FLOAT("rho", "1.0", 0.0, 100.0, "the exponent of the polynomial in log sigma (1: exponential)"),
};
SCHEDULER(PolyexponentialScheduler, run_polyexponential, poly_in, "Sigmas along a polynomial in log sigma.");

static const sd_input_desc turbo_in[] = {
    IN_MODEL, IN_STEPS("1", 10), IN_DENOISE("fraction of the ten-step schedule to start from"),
};
SCHEDULER(SDTurboScheduler, run_sd_turbo, turbo_in, "SD Turbo's schedule: timesteps 999, 899, ..., 99.");

static const char *const ays_types[] = {"SD1", "SDXL", "SVD", NULL};
static const sd_input_desc ays_in[] = {
    SD_IN_ENUM("model_type", "SD1", ays_types, "whose optimised noise levels"),
    IN_STEPS("10", 10000), IN_DENOISE("fraction of the schedule to run (its last steps)"),
};
SCHEDULER(AlignYourStepsScheduler, run_ays, ays_in,
          "Align Your Steps' optimised noise levels, log-linearly resampled to the step count.");

static const sd_input_desc sigmas_in[] = {SD_IN_LINK("sigmas", SD_TYPE_SIGMAS, "the noise schedule")};
static const sd_output_desc split_out[] = {
    SD_OUT("high_sigmas", SD_TYPE_SIGMAS, "the first part (the larger sigmas)"),
    SD_OUT("low_sigmas", SD_TYPE_SIGMAS, "the rest, starting with the last sigma of the first part"),
};
static const sd_input_desc split_in[] = {
    SD_IN_LINK("sigmas", SD_TYPE_SIGMAS, "the noise schedule"),
    SD_IN_INT("step", "0", 0, 10000, "where to split: high is sigmas 0..step, low sigmas step..end"),
};
const sd_node_desc sd_node_SplitSigmas = {
    .name = "SplitSigmas", .version = 1, .category = "sampling/sigmas",
    .doc = "Splits a schedule at a step, to sample its two parts with different settings.",
    .inputs = split_in, .n_inputs = SD_COUNT(split_in),
    .outputs = split_out, .n_outputs = SD_COUNT(split_out), .run = run_split,
};
static const sd_input_desc split_denoise_in[] = {
    SD_IN_LINK("sigmas", SD_TYPE_SIGMAS, "the noise schedule"),
    IN_DENOISE("fraction of the steps that go to low_sigmas"),
};
const sd_node_desc sd_node_SplitSigmasDenoise = {
    .name = "SplitSigmasDenoise", .version = 1, .category = "sampling/sigmas",
    .doc = "Splits a schedule so that low_sigmas holds the last denoise fraction of its steps.",
    .inputs = split_denoise_in, .n_inputs = SD_COUNT(split_denoise_in),
    .outputs = split_out, .n_outputs = SD_COUNT(split_out), .run = run_split_denoise,
};
const sd_node_desc sd_node_FlipSigmas = {
    .name = "FlipSigmas", .version = 1, .category = "sampling/sigmas",
    .doc = "Reverses a schedule (a first sigma of 0 becomes 0.0001), for unsampling.",
    .inputs = sigmas_in, .n_inputs = SD_COUNT(sigmas_in),
    .outputs = sigmas_out, .n_outputs = SD_COUNT(sigmas_out), .run = run_flip,
};
