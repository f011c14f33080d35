/* KSampler and KSamplerAdvanced (ComfyUI's nodes; nodes.py common_ksampler, comfy/sample.py):
 * the sigma schedule, the initial noise, the noise mask, then ml/sampling/sampling.h's sampler on the
 * model function of nodes/cfg_denoiser.h (conditioning entries, areas, ControlNets, CFG).
 *
 * LATENT values hold the VAE's latents as ComfyUI does (not multiplied by the scale factor):
 * the sampler works on latent * scale and returns its result / scale.
 *
 * Version 2: the latent is kept bit for bit where the noise mask is 0; inpainting UNets get
 * each conditioning entry's concat_latent_image / concat_mask (InpaintModelConditioning), and
 * their mask channel is rounded half to even as torch.round (was half away from zero). */
#include "ml/sampling/sampling.h"
#include "ml/sampling/schedulers.h"
#include "nodes/cfg_denoiser.h"
#include "nodes/model_handle.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* ComfyUI's names, in sdflow's registry order (tests check they match sd_sampler_name and
 * sd_scheduler_name). */
static const char *const sampler_names[] = {
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
    "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm", "ddim", "uni_pc",
    "uni_pc_bh2", NULL};
static const char *const scheduler_names[] = {
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
    "linear_quadratic", "kl_optimal", NULL};

/* The LATENT output: a copy of the input (noise_mask, batch_index kept) with new samples.
 * Where the resized noise mask is exactly 0 the input latent is kept bit for bit (the sampler's
 * last step only reproduces it to rounding). */
static sd_status set_latent_output(sd_node_run *r, const sd_value *in, const float *samples, const float *mask,
                                   float inv_scale)
{
    sd_value *out = sd_value_copy(in);
    sd_tensor *t = out ? sd_value_tensor(out, "samples") : NULL;
    if (!t) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    size_t n;
    sd_tensor_numel(t, &n);
    if (samples)
        for (size_t i = 0; i < n; i++)
            if (!mask || mask[i] != 0.0f)
                t->data[i] = samples[i] * inv_scale;
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

typedef struct ksampler_args {
    uint64_t seed;
    int steps;
    double cfg, denoise;
    const char *sampler, *scheduler;
    bool add_noise;
    int start_step, last_step; /* -1: not given */
    bool force_full_denoise;
} ksampler_args;

/* Reads the latent's batch_index attribute (LatentFromBatch, RepeatLatentBatch) into *out
 * (malloc'd, batch entries), or NULL when absent. */
static sd_status batch_index(sd_node_run *r, const sd_value *latent, size_t batch, int64_t **out)
{
    *out = NULL;
    json_t *bi = latent->attrs ? json_object_get(latent->attrs, "batch_index") : NULL;
    if (!bi)
        return SD_OK;
    if (!json_is_array(bi) || json_array_size(bi) != batch)
        return sd_run_error(r, SD_ERR_INVALID, "latent batch_index does not list %zu items", batch);
    int64_t *idx = malloc(batch * sizeof *idx);
    if (!idx)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < batch; i++) {
        json_t *e = json_array_get(bi, i);
        if (!json_is_integer(e)) {
            free(idx);
            return sd_run_error(r, SD_ERR_INVALID, "latent batch_index entry %zu is not an integer", i);
        }
        idx[i] = json_integer_value(e);
    }
    *out = idx;
    return SD_OK;
}

static sd_status common_ksampler(sd_node_run *r, const ksampler_args *a)
{
    sd_context *ctx = sd_run_context(r);
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    sd_value *latent_v = sd_run_value(r, "latent_image");
    const sd_checkpoint_config *cfg = sd_loaded_config(h->loaded);
    const sd_family_desc *family = sd_family_get(cfg->family);
    const sd_latent_format *format = family->latent;
    const sd_tensor *lt = sd_value_tensor(latent_v, "samples");
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[2] < 1 || lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'latent_image' has no [batch, channels, h, w] samples");
    if (lt->shape[1] != format->channels)
        return sd_run_error(r, SD_ERR_INVALID, "input 'latent_image': a %lld-channel latent cannot be sampled by the %s "
                            "model, which takes %d-channel latents", (long long)lt->shape[1], family->name,
                            format->channels);
    sd_model_sampling ms;
    if (sd_model_sampling_init(ctx, &ms, family->schedule.timesteps, family->schedule.beta_start,
                               family->schedule.beta_end))
        return sd_run_fail(r, SD_ERR_INVALID);
    sd_cfg_setup s = {.r = r, .ms = &ms, .batch = (size_t)lt->shape[0], .h = lt->shape[2], .w = lt->shape[3],
                      .in_channels = cfg->unet.in_channels, .dim = cfg->unet.context_dim, .cfg = a->cfg,
                      .preview = format};
    size_t per_item = (size_t)(format->channels * s.h * s.w), n = s.batch * per_item;
    sd_cfg_denoiser *d = NULL;
    float *sigmas = NULL, *noise = NULL, *latent = NULL, *mask = NULL;
    int64_t *bidx = NULL;
    size_t n_sigmas = 0;
    sd_status st = sd_ksampler_sigmas(ctx, &ms, a->scheduler, a->sampler, a->steps, a->denoise, &sigmas, &n_sigmas);
    if (st)
        return sd_node_model_fail(r, st);
    if (!sd_sigmas_step_range(sigmas, &n_sigmas, a->start_step, a->last_step, a->force_full_denoise)) {
        free(sigmas);
        return set_latent_output(r, latent_v, NULL, NULL, 1.0f); /* nothing to run: the input as is */
    }
    /* The conditionings are computed: on a CPU device the text encoders' weights go back. */
    sd_node_release_on_cpu(r, false, true);
    if ((st = sd_node_model_unet(h, &s.unet)) || (st = sd_cl_get(ctx, &s.cl))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    if (s.in_channels != 4 && s.in_channels != 9) {
        st = sd_run_error(r, SD_ERR_INVALID, "a UNet with %d input channels is not supported", s.in_channels);
        goto done;
    }
    if ((st = sd_cfg_denoiser_new(&s, &d)) || (st = batch_index(r, latent_v, s.batch, &bidx)))
        goto done;
    float scale = format->scale; /* (the SD formats have no shift) */
    latent = malloc(n * sizeof *latent);
    noise = a->add_noise ? malloc(n * sizeof *noise) : NULL;
    if (!latent || (a->add_noise && !noise)) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for a latent of %zu values", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        latent[i] = lt->data[i] * scale;
    if (noise && (st = sd_prepare_noise(ctx, a->seed, s.batch, per_item, bidx, noise))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    const sd_tensor *mt = sd_value_tensor(latent_v, "noise_mask");
    if (mt) {
        if (!(mask = malloc(n * sizeof *mask))) {
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = sd_noise_mask_resize(r, mt, s.batch, format->channels, s.h, s.w, mask)))
            goto done;
    }
    if (s.in_channels == 9 && (st = sd_cfg_denoiser_inpaint(d, mask, latent, scale)))
        goto done;
    sd_sample_options o = {
        .sampler = a->sampler, .sigmas = sigmas, .n_sigmas = n_sigmas,
        .sigma_max = sd_model_sampling_sigma_max(&ms), .seed = a->seed,
        .denoise = sd_cfg_denoise, .denoise_user = d, .step = sd_cfg_on_step, .step_user = d, .noise_mask = mask,
    };
    if ((st = sd_sample(ctx, &o, noise, latent, latent, n))) {
        if (!sd_cfg_denoiser_reported(d))
            st = sd_node_model_fail(r, st);
        goto done;
    }
    st = set_latent_output(r, latent_v, latent, mask, 1.0f / scale);
done:
    sd_cfg_denoiser_free(d);
    sd_node_model_done(r);
    free(sigmas);
    free(noise);
    free(latent);
    free(mask);
    free(bidx);
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
#define IN_SAMPLER SD_IN_ENUM("sampler_name", "euler", sampler_names, "sampler (docs/sampling.md)")
#define IN_SCHEDULER SD_IN_ENUM("scheduler", "normal", scheduler_names, "noise schedule (docs/sampling.md)")
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
