/* Sigma schedules against ComfyUI's definitions (tests/data/goldens/sigmas.txt, and
 * sigmas_custom.txt for the custom-sampling scheduler nodes) and bad input.
 * Tolerance: relative 1e-6 per sigma (the goldens are float32; the largest deviation measured is
 * printed). */
#include "test.h"
#include "core/context.h"
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REL_TOL 1e-6

static double worst_rel;
static char worst_what[256];

static FILE *open_golden(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = test_path(dir, name);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    free(dir);
    free(path);
    return f;
}

/* Reads `count` floats from the rest of a line (strtok state continues from the caller). */
static void read_values(int count, float *out)
{
    for (int i = 0; i < count; i++) {
        char *tok = strtok(NULL, " \n");
        out[i] = tok ? strtof(tok, NULL) : NAN;
    }
}

static void compare(const char *what, const float *got, size_t n_got, const float *want, int n_want)
{
    CHECK_MSG(n_got == (size_t)n_want, "%s: %zu sigmas, want %d", what, n_got, n_want);
    for (int i = 0; i < n_want && (size_t)i < n_got; i++) {
        double rel = want[i] == 0.0f ? fabs((double)got[i]) : fabs((double)got[i] / want[i] - 1.0);
        if (rel > worst_rel) {
            worst_rel = rel;
            snprintf(worst_what, sizeof worst_what, "%s, sigma %d", what, i);
        }
        CHECK_MSG(rel <= REL_TOL, "%s: sigma %d is %.9g, want %.9g", what, i, got[i], want[i]);
    }
}

/* The rest of a "sched <scheduler> <steps> <count> <values>" line (strtok state continues from the
 * caller) against sd_scheduler_sigmas over ms; `label` prefixes the failure messages. */
static void check_sched_line(sd_context *ctx, const sd_model_sampling *ms, const char *label)
{
    static float want[1100];
    char name[64];
    snprintf(name, sizeof name, "%s", strtok(NULL, " \n"));
    int steps = atoi(strtok(NULL, " \n")), count = atoi(strtok(NULL, " \n"));
    read_values(count, want);
    float *got = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sd_scheduler_sigmas(ctx, ms, name, steps, &got, &n), SD_OK);
    char what[160];
    snprintf(what, sizeof what, "%s%s%s %d steps", label, *label ? ": " : "", name, steps);
    if (got)
        compare(what, got, n, want, count);
    free(got);
}

static void test_goldens(void)
{
    FILE *f = open_golden("sigmas.txt");
    if (!f)
        return;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    static char line[65536];
    float want[1100];
    int n_sched = 0, n_ksampler = 0, n_range = 0, n_model = 0;
    worst_rel = 0.0;
    while (fgets(line, sizeof line, f)) {
        char *kind = strtok(line, " \n");
        if (!kind || kind[0] == '#')
            continue;
        if (strcmp(kind, "model") == 0) {
            for (char *tok; (tok = strtok(NULL, " \n"));) {
                int idx = atoi(tok);
                float v = strtof(strchr(tok, ':') + 1, NULL);
                CHECK_MSG(ms.sigmas[idx] == v, "model sigma %d: %.9g vs %.9g", idx,
                          ms.sigmas[idx], v);
                n_model++;
            }
        } else if (strcmp(kind, "sched") == 0) {
            check_sched_line(ctx, &ms, "");
            n_sched++;
        } else if (strcmp(kind, "ksampler") == 0) {
            char name[64], sampler[64];
            snprintf(name, sizeof name, "%s", strtok(NULL, " \n"));
            snprintf(sampler, sizeof sampler, "%s", strtok(NULL, " \n"));
            int steps = atoi(strtok(NULL, " \n"));
            double denoise = strtod(strtok(NULL, " \n"), NULL);
            int count = atoi(strtok(NULL, " \n"));
            read_values(count, want);
            float *got = NULL;
            size_t n = 0;
            CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, name, sampler, steps, denoise, &got, &n), SD_OK);
            char what[256];
            snprintf(what, sizeof what, "KSampler %s/%s %d steps denoise %g", name, sampler, steps, denoise);
            if (got)
                compare(what, got, n, want, count);
            free(got);
            n_ksampler++;
        } else if (strcmp(kind, "range") == 0) {
            char name[64];
            snprintf(name, sizeof name, "%s", strtok(NULL, " \n"));
            int steps = atoi(strtok(NULL, " \n"));
            int start = atoi(strtok(NULL, " \n")), last = atoi(strtok(NULL, " \n"));
            int force = atoi(strtok(NULL, " \n")), count = atoi(strtok(NULL, " \n"));
            read_values(count, want);
            float *got = NULL;
            size_t n = 0;
            CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, name, steps, &got, &n), SD_OK);
            bool run = got && sd_sigmas_step_range(got, &n, start, last, force != 0);
            CHECK_EQ_INT(run, count > 0);
            char what[128];
            snprintf(what, sizeof what, "range %d..%d force %d", start, last, force);
            if (got)
                compare(what, got, n, want, count);
            free(got);
            n_range++;
        }
    }
    fclose(f);
    sd_context_free(ctx);
    CHECK(n_model == 31 && n_sched == 62 && n_ksampler == 54 && n_range == 9);
    printf("sigmas: %d schedules, %d KSampler schedules, %d step ranges; worst relative deviation %.3g (%s)\n",
           n_sched, n_ksampler, n_range, worst_rel, worst_what);
}

/* ModelSamplingContinuousEDM (edm_sigmas.txt): the sigma table, the nine schedulers over it, the
 * continuous timestep, sigma and percent_to_sigma, the preconditioning of EPS, V_PREDICTION and EDM. */
static void check_close(const char *what, double got, double want, double tol)
{
    double rel = want == 0.0 ? fabs(got) : fabs(got / want - 1.0);
    CHECK_MSG(rel <= tol, "%s: %.9g, want %.9g", what, got, want);
}

static void test_edm_goldens(void)
{
    FILE *f = open_golden("edm_sigmas.txt");
    if (!f)
        return;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    static sd_model_sampling ms;
    static char line[65536];
    char kind_name[32] = "";
    int n_ms = 0, n_sched = 0, n_other = 0;
    while (fgets(line, sizeof line, f)) {
        char *kind = strtok(line, " \n");
        char what[160];
        if (!kind || kind[0] == '#')
            continue;
        if (strcmp(kind, "ms") == 0) {
            snprintf(kind_name, sizeof kind_name, "%s", strtok(NULL, " \n"));
            double lo = strtod(strtok(NULL, " \n"), NULL), hi = strtod(strtok(NULL, " \n"), NULL);
            bool edm = strcmp(kind_name, "edm") == 0;
            sd_sampling_type type = edm ? SD_SAMPLING_EDM
                                    : strcmp(kind_name, "eps") == 0 ? SD_SAMPLING_EPS
                                                                    : SD_SAMPLING_V_PREDICTION;
            CHECK_EQ_INT(sd_model_sampling_continuous(ctx, &ms, type, lo, hi, edm ? 0.5 : 1.0), SD_OK);
            n_ms++;
        } else if (strcmp(kind, "model") == 0) {
            for (char *tok; (tok = strtok(NULL, " \n"));) {
                int idx = atoi(tok);
                snprintf(what, sizeof what, "%s table sigma %d", kind_name, idx);
                check_close(what, ms.sigmas[idx], strtod(strchr(tok, ':') + 1, NULL), 1e-6);
            }
        } else if (strcmp(kind, "sched") == 0) {
            check_sched_line(ctx, &ms, kind_name);
            n_sched++;
        } else {
            double arg = strtod(strtok(NULL, " \n"), NULL), v = strtod(strtok(NULL, " \n"), NULL);
            snprintf(what, sizeof what, "%s: %s %g", kind_name, kind, arg);
            if (strcmp(kind, "timestep") == 0) {
                /* 0.25 ln sigma is 0 at sigma 1: compare absolutely */
                CHECK_MSG(fabs(sd_model_sampling_timestep(&ms, (float)arg) - v) <= 1e-6, "%s", what);
            } else if (strcmp(kind, "sigma") == 0) {
                check_close(what, sd_model_sampling_sigma(&ms, (float)arg), v, 1e-6);
            } else if (strcmp(kind, "percent") == 0) {
                check_close(what, sd_model_sampling_percent_to_sigma(&ms, arg), v, 1e-12);
            } else if (strcmp(kind, "denoise") == 0) {
                double cout_want = strtod(strtok(NULL, " \n"), NULL), scale = strtod(strtok(NULL, " \n"), NULL);
                float cx, cout;
                sd_model_sampling_denoise_coefs(&ms, (float)arg, &cx, &cout);
                check_close(what, cx, v, 1e-6);
                check_close(what, cout, cout_want, 1e-6);
                check_close(what, sd_model_sampling_input_scale(&ms, (float)arg), scale, 1e-6);
            } else {
                CHECK_MSG(false, "edm_sigmas.txt: unknown line '%s'", kind);
            }
            n_other++;
        }
    }
    fclose(f);
    CHECK(n_ms == 3 && n_sched == 3 * 26 && n_other == 3 * 16);
    printf("edm: %d continuous model samplings, %d schedules, %d timestep/sigma/percent/preconditioning values\n",
           n_ms, n_sched, n_other);
    /* bad ranges */
    CHECK_EQ_INT(sd_model_sampling_continuous(ctx, &ms, SD_SAMPLING_EDM, 0.0, 120.0, 0.5), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_model_sampling_continuous(ctx, &ms, SD_SAMPLING_EDM, 5.0, 1.0, 0.5), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_model_sampling_continuous(ctx, &ms, SD_SAMPLING_LCM, 0.002, 120.0, 1.0), SD_ERR_INVALID);
    sd_context_free(ctx);
}

static void test_model_sampling(void)
{
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    CHECK_NEAR(sd_model_sampling_sigma_min(&ms), 0.0291675, 1e-6);
    CHECK_NEAR(sd_model_sampling_sigma_max(&ms), 14.6146, 1e-4);
    for (int t = 0; t < 1000; t += 111)
        CHECK_EQ_INT(sd_model_sampling_timestep(&ms, ms.sigmas[t]), t);
    CHECK_NEAR(sd_model_sampling_sigma(&ms, 500.0f), ms.sigmas[500], 1e-6);
    /* Halfway between two timesteps: the geometric mean of their sigmas. */
    CHECK_NEAR(sd_model_sampling_sigma(&ms, 500.5f), sqrt((double)ms.sigmas[500] * ms.sigmas[501]), 1e-5);
    CHECK(sd_model_sampling_sigma(&ms, -3.0f) == sd_model_sampling_sigma(&ms, 0.0f));
    CHECK(sd_model_sampling_sigma(&ms, 5000.0f) == sd_model_sampling_sigma(&ms, 999.0f));
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK_EQ_INT(sd_model_sampling_init(ctx, &ms, 1, 0.00085, 0.012), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "1 timesteps");
    CHECK_EQ_INT(sd_model_sampling_init(ctx, &ms, 1000, 0.02, 0.01), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "beta range");
    sd_context_free(ctx);
}

static void test_names(void)
{
    CHECK_EQ_INT(sd_scheduler_count(), 9);
    CHECK_STR_EQ(sd_scheduler_name(0), "normal");
    CHECK_STR_EQ(sd_scheduler_name(8), "kl_optimal");
    CHECK(sd_scheduler_name(9) == NULL);
    CHECK_EQ_INT(sd_scheduler_find("beta"), 6);
    CHECK_EQ_INT(sd_scheduler_find("Beta"), -1);
    CHECK_EQ_INT(sd_scheduler_find(NULL), -1);
}

static void test_bad_input(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    float *out = NULL;
    size_t n = 12345;
    CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, "normal", 0, &out, &n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "scheduler 'normal': steps is 0, must be at least 1");
    CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, "linear", 10, &out, &n), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "unknown scheduler 'linear' (valid: normal, karras, exponential, sgm_uniform, simple, "
                 "ddim_uniform, beta, linear_quadratic, kl_optimal)");
    CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, "karras", SD_SCHEDULE_MAX_STEPS + 1, &out, &n), SD_ERR_LIMIT);
    CHECK(out == NULL && n == 12345);

    CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "normal", "euler", 0, 1.0, &out, &n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "steps is 0, must be at least 1");
    CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "normal", "eulr", 20, 1.0, &out, &n), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "unknown sampler 'eulr' (valid: euler, euler_cfg_pp, euler_ancestral,");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sa_solver, sa_solver_pece, ddim, uni_pc, uni_pc_bh2)");
    CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "nope", "euler", 20, 1.0, &out, &n), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "unknown scheduler 'nope'");
    const double bad_denoise[] = {0.0, -0.5, 1.0001, NAN};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "normal", "euler", 20, bad_denoise[i], &out, &n), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "must be in (0, 1]");
    }
    CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, "normal", "euler", 10000, 0.001, &out, &n), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "need 10000000 steps");
    CHECK(out == NULL && n == 12345);
    sd_context_free(ctx);
}

/* KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, SDTurboScheduler and
 * AlignYourStepsScheduler against numpy's computation of ComfyUI's formulas. */
static void test_custom_goldens(void)
{
    FILE *f = open_golden("sigmas_custom.txt");
    if (!f)
        return;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    static char line[8192];
    float want[64];
    int lines = 0;
    worst_rel = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char what[256];
        snprintf(what, sizeof what, "%.*s", (int)strcspn(line, "\n"), line);
        char *kind = strtok(line, " \n"), *type = NULL;
        if (strcmp(kind, "ays") == 0)
            type = strtok(NULL, " ");
        int steps = atoi(strtok(NULL, " "));
        double a = strtod(strtok(NULL, " "), NULL), b = 0, rho = 0;
        if (strcmp(kind, "karras") == 0 || strcmp(kind, "polyexponential") == 0 || strcmp(kind, "exponential") == 0)
            b = strtod(strtok(NULL, " "), NULL);
        if (strcmp(kind, "karras") == 0 || strcmp(kind, "polyexponential") == 0)
            rho = strtod(strtok(NULL, " "), NULL);
        int count = atoi(strtok(NULL, " "));
        CHECK(count >= 0 && count <= 64);
        read_values(count, want);
        float *got = NULL;
        size_t n = 0;
        sd_status st;
        if (strcmp(kind, "karras") == 0)
            st = sd_formula_sigmas(ctx, SD_SIGMAS_KARRAS, steps, b, a, rho, &got, &n);
        else if (strcmp(kind, "polyexponential") == 0)
            st = sd_formula_sigmas(ctx, SD_SIGMAS_POLYEXPONENTIAL, steps, b, a, rho, &got, &n);
        else if (strcmp(kind, "exponential") == 0)
            st = sd_formula_sigmas(ctx, SD_SIGMAS_EXPONENTIAL, steps, b, a, 0.0, &got, &n);
        else if (strcmp(kind, "sd_turbo") == 0)
            st = sd_sd_turbo_sigmas(ctx, &ms, steps, a, &got, &n);
        else
            st = sd_ays_sigmas(ctx, type, steps, a, &got, &n);
        CHECK_MSG(st == SD_OK, "%s: %s", what, sd_context_errmsg(ctx));
        if (st == SD_OK)
            compare(what, got, n, want, count);
        free(got);
        lines++;
    }
    fclose(f);
    CHECK_EQ_INT(lines, 106);
    printf("sigmas_custom: %d schedules; worst relative deviation %.3g (%s)\n", lines, worst_rel, worst_what);
    /* Bad input: one line each. */
    float *out = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sd_formula_sigmas(ctx, SD_SIGMAS_EXPONENTIAL, 5, 0.0, 14.6, 0.0, &out, &n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "exponential schedule: sigma_max 14.6, sigma_min 0 and rho 0 give a sigma that is not finite");
    /* rho 0: x^0 is 1 even for the NaN of inf * 0, as in torch: ones, then 0 */
    CHECK_EQ_INT(sd_formula_sigmas(ctx, SD_SIGMAS_KARRAS, 3, 0.03, 14.6, 0.0, &out, &n), SD_OK);
    CHECK(n == 4 && out[0] == 1.0f && out[2] == 1.0f && out[3] == 0.0f);
    free(out);
    out = NULL;
    CHECK_EQ_INT(sd_formula_sigmas(ctx, SD_SIGMAS_POLYEXPONENTIAL, 0, 0.03, 14.6, 1.0, &out, &n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "polyexponential schedule: steps is 0, must be in 1..100000");
    CHECK_EQ_INT(sd_sd_turbo_sigmas(ctx, &ms, 11, 1.0, &out, &n), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_ays_sigmas(ctx, "SD3", 10, 1.0, &out, &n), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "unknown Align Your Steps model type 'SD3' (valid: SD1, SDXL, SVD)");
    CHECK(out == NULL);
    sd_context_free(ctx);
}

/* BasicScheduler: the scheduler's sigmas, the last steps + 1 of int(steps / denoise) for
 * denoise < 1, none for denoise 0; the same as KSampler's where KSampler adjusts nothing. */
static void test_basic_scheduler(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    float *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    const double denoises[] = {1.0, 0.6, 0.3};
    for (size_t k = 0; k < sd_scheduler_count(); k++)
        for (int d = 0; d < 3; d++) {
            const char *name = sd_scheduler_name(k);
            CHECK_EQ_INT(sd_basic_scheduler_sigmas(ctx, &ms, name, 7, denoises[d], &a, &na), SD_OK);
            CHECK_EQ_INT(sd_ksampler_sigmas(ctx, &ms, name, "euler", 7, denoises[d], &b, &nb), SD_OK);
            bool same = na == nb && memcmp(a, b, na * sizeof *a) == 0;
            /* ddim_uniform's 7-step schedule has more than 8 sigmas: BasicScheduler keeps 8 */
            CHECK_MSG(same == !(strcmp(name, "ddim_uniform") == 0 && d == 0), "%s denoise %g", name, denoises[d]);
            free(a), free(b);
        }
    CHECK_EQ_INT(sd_basic_scheduler_sigmas(ctx, &ms, "ddim_uniform", 7, 1.0, &a, &na), SD_OK);
    CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, "ddim_uniform", 7, &b, &nb), SD_OK);
    CHECK(na == 8 && nb > 8 && memcmp(a, b + (nb - 8), 8 * sizeof *a) == 0);
    free(a), free(b);
    CHECK_EQ_INT(sd_basic_scheduler_sigmas(ctx, &ms, "karras", 20, 0.0, &a, &na), SD_OK);
    CHECK_EQ_INT(na, 0);
    free(a);
    CHECK_EQ_INT(sd_basic_scheduler_sigmas(ctx, &ms, "karras", 20, 1.5, &a, &na), SD_ERR_INVALID);
    sd_context_free(ctx);
}

/* Every scheduler for every step count up to 60: finite, non-increasing, ending in 0. */
static void test_shapes(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    for (size_t k = 0; k < sd_scheduler_count(); k++) {
        for (int steps = 1; steps <= 60; steps++) {
            float *s = NULL;
            size_t n = 0;
            CHECK_EQ_INT(sd_scheduler_sigmas(ctx, &ms, sd_scheduler_name(k), steps, &s, &n), SD_OK);
            bool ok = s && n >= 2 && s[n - 1] == 0.0f;
            for (size_t i = 0; ok && i + 1 < n; i++)
                ok = isfinite(s[i]) && s[i] > 0.0f && s[i + 1] <= s[i];
            CHECK_MSG(ok, "%s with %d steps is not a decreasing schedule ending in 0", sd_scheduler_name(k), steps);
            free(s);
        }
    }
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_model_sampling);
    RUN(test_names);
    RUN(test_goldens);
    RUN(test_edm_goldens);
    RUN(test_custom_goldens);
    RUN(test_basic_scheduler);
    RUN(test_bad_input);
    RUN(test_shapes);
    return test_summary("test_schedulers");
}
