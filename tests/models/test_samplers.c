/* Samplers against float64 reference runs (tests/data/goldens/samplers.txt): k-diffusion's
 * sampling functions, or transcriptions of ComfyUI's where k-diffusion has none, on an analytic
 * denoiser. The C run is float32 with double coefficients; tolerance 1e-5 absolute on values of
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

typedef struct counter {
    int denoise_calls, noise_calls, step_calls, last_step;
    int fail_at_call;     /* denoiser returns SD_ERR_CL at this call (1-based); 0: never */
    int interrupt_at_step;/* step callback returns SD_ERR_INTERRUPTED at this step; -1: never */
    sd_rng noise_rng;
} counter;

/* D(x, sigma) = x / (1 + sigma^2) + 0.25 tanh(2x) / (1 + sigma), as in the reference script. */
static sd_status analytic_denoiser(void *user, const float *x, float sigma, float *out, size_t n)
{
    counter *c = user;
    if (++c->denoise_calls == c->fail_at_call)
        return SD_ERR_CL;
    double s = sigma;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(x[i] / (1.0 + s * s) + 0.25 * tanh(2.0 * x[i]) / (1.0 + s));
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
    CHECK_EQ_INT(step, c->step_calls);
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

static void test_goldens(void)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = test_path(dir, "samplers.txt");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    free(dir);
    free(path);
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
    bool seen[32] = {false};
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
    for (size_t i = 0; i < sd_sampler_count(); i++)
        CHECK_MSG(seen[i], "no golden run for sampler %s", sd_sampler_name(i));
    printf("samplers: %d runs, worst max abs error %.3g (%s)\n", runs, worst, worst_name);
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
    /* One sigma: nothing to run, the latent comes back (CFGGuider.sample). */
    init_counter(&c);
    o.n_sigmas = 1;
    CHECK_EQ_INT(sd_sample(ctx, &o, noise, image, a, N), SD_OK);
    CHECK(memcmp(a, image, sizeof a) == 0 && c.denoise_calls == 0);
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
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "unknown sampler 'euler_a' (valid: euler, euler_ancestral, heun, dpm_2, dpm_2_ancestral, lms, "
                 "dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde, ddpm, lcm, ddim, uni_pc, "
                 "uni_pc_bh2)");
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

static void test_registry(void)
{
    CHECK_EQ_INT(sd_sampler_count(), 16);
    CHECK(sd_sampler_discards_penultimate_sigma("dpm_2"));
    CHECK(sd_sampler_discards_penultimate_sigma("uni_pc"));
    CHECK(!sd_sampler_discards_penultimate_sigma("euler"));
    CHECK(!sd_sampler_discards_penultimate_sigma("nope"));
    CHECK_EQ_INT(sd_sampler_find("ddim"), 13);
    CHECK_EQ_INT(sd_sampler_find(NULL), -1);
}

int main(void)
{
    RUN(test_registry);
    RUN(test_goldens);
    RUN(test_inplace_and_unchanged);
    RUN(test_eta);
    RUN(test_interrupt_and_errors);
    return test_summary("test_samplers");
}
