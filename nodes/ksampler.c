/* KSampler and KSamplerAdvanced (ComfyUI's nodes; nodes.py common_ksampler, comfy/sample.py):
 * KSampler's sigma schedule and step range, then the run every sampling node shares
 * (nodes/sample_core.h: initial noise, noise mask, ml/sampling/sampling.h's sampler on the model
 * function of nodes/cfg_denoiser.h with a CFG guider over positive and negative).
 *
 * LATENT values hold the VAE's latents as ComfyUI does (not multiplied by the scale factor):
 * the sampler works on latent * scale and returns its result / scale.
 *
 * Version 2: the latent is kept bit for bit where the noise mask is 0; inpainting UNets get
 * each conditioning entry's concat_latent_image / concat_mask (InpaintModelConditioning), and
 * their mask channel is rounded half to even as torch.round (was half away from zero). */
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include "nodes/sample_core.h"
#include <stdlib.h>
#include <string.h>

typedef struct ksampler_args {
    uint64_t seed;
    int steps;
    double cfg, denoise;
    const char *sampler, *scheduler;
    bool add_noise;
    int start_step, last_step; /* -1: not given */
    bool force_full_denoise;
} ksampler_args;

/* common_ksampler: KSampler.set_steps' sigmas and KSampler.sample's step range, then the shared
 * run with a CFG guider over "positive" and "negative". */
static sd_status common_ksampler(sd_node_run *r, const ksampler_args *a)
{
    static const char *const conds[] = {"positive", "negative"};
    sd_model_sampling ms;
    if (!sd_node_model_sampling(r, "model", &ms))
        return SD_ERR_INVALID;
    float *sigmas = NULL;
    size_t n_sigmas = 0;
    sd_status st = sd_ksampler_sigmas(sd_run_context(r), &ms, a->scheduler, a->sampler, a->steps, a->denoise,
                                      &sigmas, &n_sigmas);
    if (st)
        return sd_run_fail(r, st);
    if (!sd_sigmas_step_range(sigmas, &n_sigmas, a->start_step, a->last_step, a->force_full_denoise))
        n_sigmas = 0; /* nothing to run: the input as is */
    sd_guider g = sd_guider_from_inputs(r, SD_GUIDER_CFG, conds, 2, a->cfg, 0.0);
    sd_sample_request q = {.guider = &g, .sampler = a->sampler, .sigmas = sigmas, .n_sigmas = n_sigmas,
                           .add_noise = a->add_noise, .seed = a->seed};
    st = sd_node_sample(r, &q);
    free(sigmas);
    return st;
}

static sd_status run_ksampler(sd_node_run *r)
{
    ksampler_args a = {
        .seed = (uint64_t)sd_run_int(r, "seed"), .steps = (int)sd_run_int(r, "steps"),
        .cfg = sd_run_float(r, "cfg"), .denoise = sd_run_float(r, "denoise"),
        .sampler = sd_run_string(r, "sampler_name"), .scheduler = sd_run_string(r, "scheduler"),
        .add_noise = true, .start_step = -1, .last_step = -1,
    };
    return common_ksampler(r, &a);
}

static sd_status run_ksampler_advanced(sd_node_run *r)
{
    ksampler_args a = {
        .seed = (uint64_t)sd_run_int(r, "noise_seed"), .steps = (int)sd_run_int(r, "steps"),
        .cfg = sd_run_float(r, "cfg"), .denoise = 1.0,
        .sampler = sd_run_string(r, "sampler_name"), .scheduler = sd_run_string(r, "scheduler"),
        .add_noise = strcmp(sd_run_string(r, "add_noise"), "enable") == 0,
        .start_step = (int)sd_run_int(r, "start_at_step"), .last_step = (int)sd_run_int(r, "end_at_step"),
        .force_full_denoise = strcmp(sd_run_string(r, "return_with_leftover_noise"), "enable") != 0,
    };
    return common_ksampler(r, &a);
}

#define SEED_MAX 9223372036854775807.0 /* sdflow's INT is 64-bit signed (ComfyUI: up to 2^64 - 1) */
#define IN_STEPS SD_IN_INT("steps", "20", 1, 10000, "number of sampling steps")
#define IN_CFG SD_IN_FLOAT("cfg", "8.0", 0.0, 100.0, "classifier-free guidance scale; 1 skips the negative")
#define IN_SAMPLER SD_IN_ENUM("sampler_name", "euler", sd_sampler_choices, "sampler (docs/sampling.md)")
#define IN_SCHEDULER SD_IN_ENUM("scheduler", "normal", sd_scheduler_choices, "noise schedule (docs/sampling.md)")
#define IN_CONDS                                                                          \
    SD_IN_LINK("positive", SD_TYPE_CONDITIONING, "what the image should show"),           \
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "what it should not show (guidance)"), \
    SD_IN_LINK("latent_image", SD_TYPE_LATENT, "the latent to start from")

static const sd_input_desc ks_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the UNet"),
    SD_IN_INT("seed", "0", 0, SEED_MAX, "noise seed (torch.manual_seed, as ComfyUI on the CPU)"),
    IN_STEPS, IN_CFG, IN_SAMPLER, IN_SCHEDULER, IN_CONDS,
    SD_IN_FLOAT("denoise", "1.0", 0.0, 1.0, "fraction of the schedule to run (img2img strength)"),
};
static const sd_output_desc ks_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the denoised latent"),
};
const sd_node_desc sd_node_KSampler = {
    .name = "KSampler", .version = 2, .category = "sampling",
    .doc = "Denoises a latent with the model, guided by positive and negative conditioning.",
    .inputs = ks_in, .n_inputs = SD_COUNT(ks_in),
    .outputs = ks_out, .n_outputs = SD_COUNT(ks_out), .run = run_ksampler,
    .check = sd_check_sampler,
};

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const sd_input_desc ksa_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the UNet"),
    SD_IN_ENUM("add_noise", "enable", enable_disable, "add the seed's noise to the latent first"),
    SD_IN_INT("noise_seed", "0", 0, SEED_MAX, "noise seed (torch.manual_seed, as ComfyUI on the CPU)"),
    IN_STEPS, IN_CFG, IN_SAMPLER, IN_SCHEDULER, IN_CONDS,
    SD_IN_INT("start_at_step", "0", 0, 10000, "first step of the schedule to run"),
    SD_IN_INT("end_at_step", "10000", 0, 10000, "step to stop at"),
    SD_IN_ENUM("return_with_leftover_noise", "disable", enable_disable,
               "enable: stop at end_at_step's sigma; disable: denoise fully at the end"),
};
const sd_node_desc sd_node_KSamplerAdvanced = {
    .name = "KSamplerAdvanced", .version = 2, .category = "sampling",
    .doc = "KSampler over a range of the schedule's steps, with optional noise and leftover noise.",
    .inputs = ksa_in, .n_inputs = SD_COUNT(ksa_in),
    .outputs = ks_out, .n_outputs = SD_COUNT(ks_out), .run = run_ksampler_advanced,
    .check = sd_check_sampler,
};
