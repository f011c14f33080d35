/* Samplers against float64 reference runs: tests/data/goldens/samplers.txt (k-diffusion's
 * sampling functions, or transcriptions of ComfyUI's where k-diffusion has none, on an analytic
 * denoiser) and samplers_ext.txt (the samplers added later, re-implemented in numpy after
 * ComfyUI's k_diffusion/sampling.py, on exact Gaussian denoisers with classifier-free guidance). The C run is float32 with double coefficients; tolerance 1e-5 absolute on values of
 * order 1 (the largest deviation measured is printed). Also: noise and denoiser call counts,
 * default noise = the recorded stream, interrupt, errors. */
#include "test.h"
#include "core/context.h"
#include "core/rng.h"
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 24
#define TOL 1e-5
#define NOISE_SEED 1234

static bool seen_samplers[64]; /* samplers with a golden run */

typedef struct counter {
    int denoise_calls, noise_calls, step_calls, last_step;
    int fail_at_call;     /* denoiser returns SD_ERR_CL at this call (1-based); 0: never */
    int interrupt_at_step;/* step callback returns SD_ERR_INTERRUPTED at this step; -1: never */
    sd_rng noise_rng;
} counter;

/* D(x, sigma) = x / (1 + sigma^2) + 0.25 tanh(2x) / (1 + sigma), as in the reference script. */
static sd_status analytic_denoiser(void *user, const float *x, float sigma, float *out, float *uncond, size_t n)
{
    counter *c = user;
    if (++c->denoise_calls == c->fail_at_call)
        return SD_ERR_CL;
    double s = sigma;
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)(x[i] / (1.0 + s * s) + 0.25 * tanh(2.0 * x[i]) / (1.0 + s));
        if (uncond) /* CFG++ samplers only (not in samplers.txt) */
            uncond[i] = (float)(x[i] / (1.0 + s * s));
    }
    return SD_OK;
}

/* The recorded noise: successive torch.randn draws from torch.manual_seed(NOISE_SEED + 1). */
static sd_status recorded_noise(void *user, float sigma, float sigma_next, float *out, size_t n)
{
    counter *c = user;
    c->noise_calls++;
    sd_rng_randn(&c->noise_rng, out, n);
    return SD_OK;
}

static sd_status step_cb(void *user, int step, int steps, const float *x, const float *denoised, size_t n)
{
    counter *c = user;
    CHECK_EQ_INT(step, c->step_calls < steps ? c->step_calls : steps - 1); /* dpm_adaptive: more tries than steps */
    CHECK(steps > 0 && step < steps && x && denoised && n == N);
    c->step_calls++;
    c->last_step = step;
    return step == c->interrupt_at_step ? SD_ERR_INTERRUPTED : SD_OK;
}

static sd_status set_message_and_stop(void *user, int step, int steps, const float *x, const float *denoised,
                                      size_t n)
{
    return sd_set_error(user, SD_ERR_INTERRUPTED, "node 'k' (KSampler): interrupted");
}

static void init_counter(counter *c)
{
    memset(c, 0, sizeof *c);
    c->interrupt_at_step = -1;
    sd_rng_seed(&c->noise_rng, NOISE_SEED + 1);
}

static void make_inputs(float *noise, float *image, float *mask)
{
    sd_rng rng;
    sd_rng_seed(&rng, NOISE_SEED);
    sd_rng_randn(&rng, noise, N);
    for (int i = 0; i < N; i++) {
        image[i] = (float)((i % 7) - 3) / 4.0f;
        mask[i] = (i % 6) < 3 ? 1.0f : 0.0f;
    }
}

static sd_sample_options options(const char *sampler, const float *sigmas, size_t n_sigmas, counter *c)
{
    sd_model_sampling ms;
    sd_model_sampling_sd1(&ms);
    sd_sample_options o;
    memset(&o, 0, sizeof o);
    o.sampler = sampler;
    o.sigmas = sigmas;
    o.n_sigmas = n_sigmas;
    o.sigma_max = sd_model_sampling_sigma_max(&ms);
    o.seed = NOISE_SEED;
    o.denoise = analytic_denoiser;
    o.denoise_user = c;
    o.step = step_cb;
    o.step_user = c;
    return o;
}

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

static void test_goldens(void)
{
    FILE *f = open_golden("samplers.txt");
    if (!f)
        return;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float noise[N], image[N], mask[N];
    make_inputs(noise, image, mask);
    static char line[16384], out_line[16384];
    int runs = 0;
    double worst = 0.0;
    char worst_name[160] = "";
    bool *seen = seen_samplers;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "run ", 4) != 0)
            continue;
        if (!fgets(out_line, sizeof out_line, f))
            break;
        char sampler[64], sched[64], latent_kind[16];
        int steps, use_mask, want_calls, want_noise, n_sigmas, pos;
        double denoise;
        CHECK(sscanf(line, "run %63s %63s %d %lf %15s %d %d %d %d%n", sampler, sched, &steps, &denoise, latent_kind,
                     &use_mask, &want_calls, &want_noise, &n_sigmas, &pos) == 9);
        float sigmas[64];
        char *p = line + pos;
        for (int i = 0; i < n_sigmas && i < 64; i++)
            sigmas[i] = strtof(p, &p);
        double want[N];
        p = out_line + 3;
        for (int i = 0; i < N; i++)
            want[i] = strtod(p, &p);
        int idx = sd_sampler_find(sampler);
        CHECK(idx >= 0);
        if (idx >= 0)
            seen[idx] = true;

        counter c;
        init_counter(&c);
        sd_sample_options o = options(sampler, sigmas, (size_t)n_sigmas, &c);
        o.noise = recorded_noise;
        o.noise_user = &c;
        o.noise_mask = use_mask ? mask : NULL;
        const float *latent = strcmp(latent_kind, "image") == 0 ? image : NULL;
        float out[N];
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, latent, out, N), SD_OK);
        CHECK_MSG(c.denoise_calls == want_calls, "%s: %d denoiser calls, want %d", sampler, c.denoise_calls, want_calls);
        CHECK_MSG(c.noise_calls == want_noise, "%s: %d noise draws, want %d", sampler, c.noise_calls, want_noise);
        CHECK_MSG(c.step_calls == n_sigmas - 1, "%s: %d step callbacks for %d steps", sampler, c.step_calls,
                  n_sigmas - 1);
        double err = 0.0;
        for (int i = 0; i < N; i++)
            err = fmax(err, fabs(out[i] - want[i]));
        CHECK_MSG(err <= TOL, "%s/%s %d steps denoise %g%s: max abs error %.3g", sampler, sched, steps, denoise,
                  use_mask ? " masked" : "", err);
        if (err > worst) {
            worst = err;
            snprintf(worst_name, sizeof worst_name, "%s/%s", sampler, sched);
        }
        /* The default noise is the same stream: identical bits without the callback. */
        counter d;
        init_counter(&d);
        sd_sample_options od = options(sampler, sigmas, (size_t)n_sigmas, &d);
        od.noise_mask = o.noise_mask;
        float out2[N];
        CHECK_EQ_INT(sd_sample(ctx, &od, noise, latent, out2, N), SD_OK);
        CHECK_MSG(memcmp(out, out2, sizeof out) == 0, "%s: default noise differs from the recorded stream", sampler);
        runs++;
    }
    fclose(f);
    sd_context_free(ctx);
    CHECK_EQ_INT(runs, 22);
    printf("samplers: %d runs, worst max abs error %.3g (%s)\n", runs, worst, worst_name);
}

/* ---- samplers_ext.txt: exact Gaussian denoisers with guidance, noise from the file. */

typedef struct ext_model {
    int calls, draws, n_draws;
    float (*draw)[N];
} ext_model;

/* D(x, s) for data x0 ~ N(mu, sd^2): (sd^2 x + s^2 mu) / (sd^2 + s^2). */
static double gauss(double x, double s, double mu, double sd)
{
    return (sd * sd * x + s * s * mu) / (sd * sd + s * s);
}

static sd_status ext_denoiser(void *user, const float *x, float sigma, float *out, float *uncond, size_t n)
{
    ext_model *m = user;
    m->calls++;
    for (size_t i = 0; i < n; i++) {
        double c = gauss(x[i], sigma, ((int)(i % 5) - 2) * 0.3, 0.7), u = gauss(x[i], sigma, ((int)(i % 3) - 1) * 0.2, 1.1);
        out[i] = (float)(u + (c - u) * 2.5);
        if (uncond)
            uncond[i] = (float)u;
    }
    return SD_OK;
}

static sd_status ext_noise(void *user, float sigma, float sigma_next, float *out, size_t n)
{
    ext_model *m = user;
    if (m->draws >= m->n_draws)
        return SD_ERR_LIMIT;
    memcpy(out, m->draw[m->draws++], n * sizeof *out);
    return SD_OK;
}

/* Reads N floats after a line's keyword into v; false when the line is not "<key> ...". */
static bool read_values(const char *line, const char *key, float *v)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || line[k] != ' ')
        return false;
    char *p = (char *)line + k;
    for (int i = 0; i < N; i++)
        v[i] = strtof(p, &p);
    return true;
}

static void test_ext_goldens(void)
{
    FILE *f = open_golden("samplers_ext.txt");
    if (!f)
        return;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    static char line[16384], out_line[16384];
    static float draws[64][N];
    float noise[N] = {0}, image[N], mask[N], scratch[N];
    make_inputs(scratch, image, mask);
    int n_draws = 0, runs = 0;
    double worst = 0.0, sde_start = 0.0, sde_end = 0.0;
    char worst_name[64] = "";
    while (fgets(line, sizeof line, f)) {
        read_values(line, "noise", noise);
        sscanf(line, "sa_interval %lf %lf", &sde_start, &sde_end);
        if (n_draws < 64 && read_values(line, "draw", draws[n_draws]))
            n_draws++;
        if (strncmp(line, "run ", 4) != 0 || !fgets(out_line, sizeof out_line, f))
            continue;
        char sampler[64], latent_kind[16];
        int use_mask, want_calls, want_draws, n_sigmas, pos;
        CHECK(sscanf(line, "run %63s %15s %d %d %d %d%n", sampler, latent_kind, &use_mask, &want_calls, &want_draws,
                     &n_sigmas, &pos) == 6);
        float sigmas[64], want[N], out[N];
        char *p = line + pos;
        for (int i = 0; i < n_sigmas && i < 64; i++)
            sigmas[i] = strtof(p, &p);
        CHECK(read_values(out_line, "out", want));
        int idx = sd_sampler_find(sampler);
        CHECK_MSG(idx >= 0, "unknown sampler %s", sampler);
        if (idx >= 0)
            seen_samplers[idx] = true;
        ext_model m = {.draw = draws, .n_draws = n_draws};
        counter c;
        init_counter(&c);
        sd_sample_options o = options(sampler, sigmas, (size_t)n_sigmas, &c);
        o.denoise = ext_denoiser;
        o.denoise_user = &m;
        o.noise = ext_noise;
        o.noise_user = &m;
        o.noise_mask = use_mask ? mask : NULL;
        o.sde_start_sigma = sde_start;
        o.sde_end_sigma = sde_end;
        o.flow = strncmp(latent_kind, "flow_", 5) == 0; /* a CONST model: the RF forms */
        bool zero = strcmp(latent_kind + (o.flow ? 5 : 0), "zero") == 0;
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, zero ? NULL : image, out, N), SD_OK);
        CHECK_MSG(m.calls == want_calls, "%s: %d model calls, want %d", sampler, m.calls, want_calls);
        CHECK_MSG(m.draws == want_draws, "%s: %d noise draws, want %d", sampler, m.draws, want_draws);
        /* DPM-Solver's steps are its own: dpm_fast's orders, dpm_adaptive's tries (one callback each). */
        bool own_steps = !strncmp(sampler, "dpm_fast", 8) || !strncmp(sampler, "dpm_adaptive", 12);
        CHECK_MSG(own_steps ? c.step_calls >= 1 : c.step_calls == n_sigmas - 1, "%s: %d step callbacks", sampler,
                  c.step_calls);
        double err = 0.0;
        for (int i = 0; i < N; i++)
            err = fmax(err, fabs(out[i] - want[i]));
        CHECK_MSG(err <= TOL, "%s (%s%s, %d sigmas): max abs error %.3g", sampler, latent_kind,
                  use_mask ? ", masked" : "", n_sigmas, err);
        if (err > worst) {
            worst = err;
            snprintf(worst_name, sizeof worst_name, "%s", sampler);
        }
        runs++;
    }
    fclose(f);
    sd_context_free(ctx);
    CHECK_EQ_INT(n_draws, 40);
    CHECK_EQ_INT(runs, 46);
    printf("samplers_ext: %d runs, worst max abs error %.3g (%s)\n", runs, worst, worst_name);
}

/* Every sampler has a golden run in one of the two files. */
static void test_every_sampler_checked(void)
{
    for (size_t i = 0; i < sd_sampler_count(); i++)
        CHECK_MSG(seen_samplers[i], "no golden run for sampler %s", sd_sampler_name(i));
}

/* The _gpu names are their CPU namesakes here: the same bits. */
static void test_gpu_aliases(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float noise[N], image[N], mask[N];
    make_inputs(noise, image, mask);
    float sig[7] = {14.6146402f, 5.09240818f, 2.27973056f, 1.16286457f, 0.571188867f, 0.0291671604f, 0.0f};
    const char *pairs[][2] = {{"dpmpp_sde", "dpmpp_sde_gpu"}, {"dpmpp_2m_sde", "dpmpp_2m_sde_gpu"},
                              {"dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"}, {"dpmpp_3m_sde", "dpmpp_3m_sde_gpu"}};
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        float a[N], b[N];
        counter c;
        init_counter(&c);
        sd_sample_options o = options(pairs[k][0], sig, 7, &c);
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, a, N), SD_OK);
        init_counter(&c);
        o = options(pairs[k][1], sig, 7, &c);
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, b, N), SD_OK);
        CHECK_MSG(memcmp(a, b, sizeof a) == 0, "%s differs from %s", pairs[k][1], pairs[k][0]);
    }
    CHECK(sd_sampler_uses_uncond("euler_cfg_pp") && sd_sampler_uses_uncond("res_multistep_ancestral_cfg_pp"));
    CHECK(!sd_sampler_uses_uncond("euler") && !sd_sampler_uses_uncond("res_multistep") &&
          !sd_sampler_uses_uncond("nope"));
    sd_context_free(ctx);
}

/* The whole chain for a real KSampler call: schedule from C, noise from the seed. */
static void test_inplace_and_unchanged(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float noise[N], image[N], mask[N];
    make_inputs(noise, image, mask);
    float sig[7] = {14.6146402f, 5.09240818f, 2.27973056f, 1.16286457f, 0.571188867f, 0.0291671604f, 0.0f};
    counter c;
    init_counter(&c);
    sd_sample_options o = options("euler", sig, 7, &c);
    float a[N], b[N];
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, image, a, N), SD_OK);
    /* out may alias the latent. */
    memcpy(b, image, sizeof b);
    init_counter(&c);
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, b, b, N), SD_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* No sigmas: the latent comes back (CFGGuider.sample). One sigma: only the noise is added
     * (KSAMPLER.sample's noise scaling, no step). */
    init_counter(&c);
    o.n_sigmas = 0;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, image, a, N), SD_OK);
    CHECK(memcmp(a, image, sizeof a) == 0 && c.denoise_calls == 0);
    float one[1] = {2.0f};
    o.sigmas = one;
    o.n_sigmas = 1;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, image, a, N), SD_OK);
    for (int i = 0; i < N; i++)
        CHECK(a[i] == noise[i] * 2.0f + image[i]);
    CHECK_EQ_INT(c.denoise_calls, 0);
    o.sigmas = sig;
    /* Inpainting with a mask of zeros keeps the latent. */
    float zeros[N] = {0};
    init_counter(&c);
    o.n_sigmas = 7;
    o.noise_mask = zeros;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, image, a, N), SD_OK);
    for (int i = 0; i < N; i++)
        CHECK_NEAR(a[i], image[i], 1e-6);
    sd_context_free(ctx);
}

/* eta 0 turns euler_ancestral into euler (ComfyUI still draws the noise, scaled by 0). */
static void test_eta(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float noise[N], image[N], mask[N];
    make_inputs(noise, image, mask);
    float sig[7] = {14.6146402f, 5.09240818f, 2.27973056f, 1.16286457f, 0.571188867f, 0.0291671604f, 0.0f};
    counter c;
    init_counter(&c);
    sd_sample_options o = options("euler", sig, 7, &c);
    float euler[N], ancestral[N];
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, euler, N), SD_OK);
    init_counter(&c);
    o = options("euler_ancestral", sig, 7, &c);
    o.noise = recorded_noise;
    o.noise_user = &c;
    o.set_eta = true;
    o.eta = 0.0;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, ancestral, N), SD_OK);
    CHECK_EQ_INT(c.noise_calls, 5);
    for (int i = 0; i < N; i++)
        CHECK_NEAR(ancestral[i], euler[i], 1e-6);
    o.eta = -0.5;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, ancestral, N), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "sampler 'euler_ancestral': eta -0.5 and s_noise 1 must be in [0, 1000]");
    sd_context_free(ctx);
}

static void test_interrupt_and_errors(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float noise[N], image[N], mask[N];
    make_inputs(noise, image, mask);
    float sig[7] = {14.6146402f, 5.09240818f, 2.27973056f, 1.16286457f, 0.571188867f, 0.0291671604f, 0.0f};
    for (size_t k = 0; k < sd_sampler_count(); k++) {
        counter c;
        init_counter(&c);
        c.interrupt_at_step = 2;
        sd_sample_options o = options(sd_sampler_name(k), sig, 7, &c);
        float out[N];
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, out, N), SD_ERR_INTERRUPTED);
        CHECK_EQ_INT(c.step_calls, 3);
        char want[128];
        snprintf(want, sizeof want, "sampler '%s': interrupted at step 3 of 6", sd_sampler_name(k));
        CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    }
    /* A callback's own message survives. */
    {
        counter c;
        init_counter(&c);
        c.interrupt_at_step = 0;
        sd_sample_options o = options("euler", sig, 7, &c);
        o.step = set_message_and_stop;
        o.step_user = ctx;
        float out[N];
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, out, N), SD_ERR_INTERRUPTED);
        CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'k' (KSampler): interrupted");
    }
    counter c;
    init_counter(&c);
    c.fail_at_call = 2;
    sd_sample_options o = options("heun", sig, 7, &c);
    float out[N];
    sd_set_error(ctx, SD_ERR_IO, "a stale message");
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, out, N), SD_ERR_CL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sampler 'heun': denoiser failed at sigma 5.09");
    CHECK_EQ_INT(c.denoise_calls, 2);

    float sentinel[N];
    for (int i = 0; i < N; i++)
        sentinel[i] = 7.0f;
    init_counter(&c);
    o = options("euler_a", sig, 7, &c);
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, sentinel, N), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "unknown sampler 'euler_a' (valid: euler, euler_cfg_pp, euler_ancestral, ");
    o = options("euler", sig, 7, &c);
    o.denoise = NULL;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, sentinel, N), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "sampler 'euler': no denoiser given");
    o = options("euler", sig, 7, &c);
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, sentinel, 0), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "sampler 'euler': empty latent");
    const float bad_sigmas[3][3] = {{14.6f, NAN, 0.0f}, {14.6f, -1.0f, 0.0f}, {14.6f, 0.0f, 0.0f}};
    for (int k = 0; k < 3; k++) {
        o = options("euler", bad_sigmas[k], 3, &c);
        CHECK_EQ_INT(sd_sample(ctx, &o, noise, NULL, sentinel, N), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "sampler 'euler': sigma 1 is ");
    }
    for (int i = 0; i < N; i++)
        CHECK(sentinel[i] == 7.0f);
    CHECK_EQ_INT(c.denoise_calls, 0);
    sd_context_free(ctx);
}

/* Every name of ComfyUI's comfy.samplers.SAMPLER_NAMES, in its order. */
static void test_registry(void)
{
    static const char *const comfy[] = {
        "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
        "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
        "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
        "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
        "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"};
    size_t n = sizeof comfy / sizeof comfy[0];
    CHECK_EQ_INT(sd_sampler_count(), n);
    for (size_t i = 0; i < n && i < sd_sampler_count(); i++)
        CHECK_STR_EQ(sd_sampler_name(i), comfy[i]);
    CHECK(sd_sampler_discards_penultimate_sigma("dpm_2"));
    CHECK(sd_sampler_discards_penultimate_sigma("uni_pc"));
    CHECK(!sd_sampler_discards_penultimate_sigma("euler"));
    CHECK(!sd_sampler_discards_penultimate_sigma("nope"));
    CHECK_EQ_INT(sd_sampler_find(NULL), -1);
}

int main(void)
{
    RUN(test_registry);
    RUN(test_goldens);
    RUN(test_ext_goldens);
    RUN(test_every_sampler_checked);
    RUN(test_gpu_aliases);
    RUN(test_inplace_and_unchanged);
    RUN(test_eta);
    RUN(test_interrupt_and_errors);
    return test_summary("test_samplers");
}
