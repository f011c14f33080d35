/* One sampling run shared by KSampler, KSamplerAdvanced, SamplerCustom and
 * SamplerCustomAdvanced, and the SAMPLER, SIGMAS, NOISE and GUIDER values they pass around
 * (nodes/sample_core.h). */
#include "nodes/sample_core.h"
#include "ml/sampling/sampling.h"
#include "ml/families/family.h"
#include "nodes/cfg_denoiser.h"
#include "nodes/model_handle.h"
#include <stdlib.h>
#include <string.h>

const char *const sd_sampler_choices[] = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2", NULL};
const char *const sd_scheduler_choices[] = {
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
    "linear_quadratic", "kl_optimal", NULL};

/* ---- GUIDER */

static void guider_free(void *obj)
{
    sd_guider *g = obj;
    sd_value_unref(g->model);
    for (size_t i = 0; i < g->n_conds; i++)
        sd_value_unref(g->conds[i]);
    free(g);
}

sd_guider sd_guider_from_inputs(sd_node_run *r, sd_guider_kind kind, const char *const *names, size_t n_conds,
                                double cfg, double cfg2)
{
    sd_guider g = {.kind = kind, .model = sd_run_value(r, "model"), .n_conds = n_conds, .cfg = cfg, .cfg2 = cfg2};
    for (size_t i = 0; i < n_conds; i++) {
        g.conds[i] = sd_run_value(r, names[i]);
        g.names[i] = names[i];
    }
    return g;
}

sd_value *sd_guider_value(const sd_guider *g)
{
    sd_guider *copy = malloc(sizeof *copy);
    if (!copy)
        return NULL;
    *copy = *g;
    sd_value_ref(copy->model);
    for (size_t i = 0; i < copy->n_conds; i++)
        sd_value_ref(copy->conds[i]);
    return sd_value_handle(SD_TYPE_GUIDER, copy, guider_free);
}

const sd_guider *sd_guider_input(sd_node_run *r, const char *input)
{
    const sd_value *v = sd_run_value(r, input);
    if (!v || v->type != SD_TYPE_GUIDER || !v->handle) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' holds no guider", input);
        return NULL;
    }
    return v->handle;
}

/* ---- SAMPLER, NOISE, SIGMAS */

/* A value of `type` with attrs (taken over), or NULL. */
static sd_value *attrs_value(sd_type type, json_t *attrs)
{
    sd_value *v = attrs ? sd_value_new(type) : NULL;
    if (!v) {
        json_decref(attrs);
        return NULL;
    }
    v->attrs = attrs;
    return v;
}

sd_value *sd_sampler_value(const char *name)
{
    return attrs_value(SD_TYPE_SAMPLER, json_pack("{s:s}", "sampler_name", name));
}

const char *sd_sampler_input(sd_node_run *r, const char *input)
{
    const sd_value *v = sd_run_value(r, input);
    const char *name = v->attrs ? json_string_value(json_object_get(v->attrs, "sampler_name")) : NULL;
    if (!name)
        sd_run_error(r, SD_ERR_INVALID, "input '%s' names no sampler", input);
    return name;
}

sd_value *sd_noise_value(bool add, uint64_t seed)
{
    json_t *a = add ? json_pack("{s:I}", "seed", (json_int_t)seed) : json_pack("{s:i,s:b}", "seed", 0, "disabled", 1);
    return attrs_value(SD_TYPE_NOISE, a);
}

bool sd_noise_input(sd_node_run *r, const char *input, bool *add, uint64_t *seed)
{
    const sd_value *v = sd_run_value(r, input);
    json_t *s = v->attrs ? json_object_get(v->attrs, "seed") : NULL;
    if (!json_is_integer(s) || json_integer_value(s) < 0) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' holds no noise seed", input);
        return false;
    }
    *seed = (uint64_t)json_integer_value(s);
    *add = !json_is_true(json_object_get(v->attrs, "disabled"));
    return true;
}

sd_value *sd_sigmas_value(const float *sigmas, size_t n)
{
    sd_value *v = sd_value_new(SD_TYPE_SIGMAS);
    sd_tensor *t = v ? sd_value_add_tensor(v, "sigmas", 1, (const int64_t[]){(int64_t)n}) : NULL;
    if (!t) {
        sd_value_unref(v);
        return NULL;
    }
    if (n)
        memcpy(t->data, sigmas, n * sizeof *t->data);
    return v;
}

const sd_tensor *sd_sigmas_input(sd_node_run *r, const char *input)
{
    const sd_tensor *t = sd_value_tensor(sd_run_value(r, input), "sigmas");
    if (!t || t->ndim != 1) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' holds no 1-D sigmas", input);
        return NULL;
    }
    return t;
}

sd_status sd_node_set_sigmas(sd_node_run *r, size_t index, const float *sigmas, size_t n)
{
    sd_value *v = sd_sigmas_value(sigmas, n);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, index, v);
    return SD_OK;
}

/* The MODEL handle's model sampling into ms; false with the node's error set. */
static bool handle_sampling(sd_node_run *r, const sd_model_handle *h, sd_model_sampling *ms)
{
    if (sd_node_model_sampling_of(sd_run_context(r), h, ms)) {
        sd_run_fail(r, SD_ERR_INVALID);
        return false;
    }
    return true;
}

bool sd_node_model_sampling(sd_node_run *r, const char *input, sd_model_sampling *ms)
{
    const sd_model_handle *h = sd_node_model_input(r, input);
    return h && handle_sampling(r, h, ms);
}

/* ---- the run */

/* Sets output `index`: a copy of the input latent (noise_mask, batch_index kept) with samples /
 * scale + shift, except where the resized noise mask is exactly 0, where the input latent is kept
 * bit for bit (the sampler's last step only reproduces it to rounding). samples NULL: the input as
 * is. */
static sd_status set_latent_output(sd_node_run *r, size_t index, const sd_value *in, const float *samples,
                                   const float *mask, float inv_scale, float shift)
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
                t->data[i] = samples[i] * inv_scale + shift;
    sd_run_set_output(r, index, out);
    return SD_OK;
}

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

/* The step callback: the denoiser's progress report, and the step's denoised prediction kept for
 * denoised_output. */
typedef struct step_state {
    sd_cfg_denoiser *d;
    float *denoised; /* NULL when not wanted */
    bool stepped;
} step_state;

static sd_status on_step(void *user, int step, int steps, const float *x, const float *denoised, size_t n)
{
    step_state *s = user;
    if (s->denoised) {
        memcpy(s->denoised, denoised, n * sizeof *denoised);
        s->stepped = true;
    }
    return sd_cfg_on_step(s->d, step, steps, x, denoised, n);
}

/* Both outputs when nothing was sampled: the input latent. */
static sd_status set_unchanged(sd_node_run *r, const sd_sample_request *q, const sd_value *latent)
{
    sd_status st = set_latent_output(r, 0, latent, NULL, NULL, 1.0f, 0.0f);
    if (!st && q->denoised_output)
        st = set_latent_output(r, 1, latent, NULL, NULL, 1.0f, 0.0f);
    return st;
}

/* ComfyUI's fix_empty_latent_channels: an all-zero latent of other channels than the model's
 * (EmptyLatentImage's 4 for a 16-channel FLUX model) becomes a zero latent of the model's
 * channels, as a new value with the input's other contents (*out NULL: keep the input). */
static sd_status widen_empty_latent(sd_node_run *r, const sd_value *in, const sd_tensor *lt, int channels,
                                    sd_value **out)
{
    size_t n;
    *out = NULL;
    if (lt->shape[1] == channels || !sd_tensor_numel(lt, &n))
        return SD_OK;
    for (size_t i = 0; i < n; i++)
        if (lt->data[i] != 0.0f)
            return SD_OK;
    int64_t shape[4] = {lt->shape[0], channels, lt->shape[2], lt->shape[3]};
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    if (!v || !sd_value_add_tensor(v, "samples", 4, shape) || !sd_value_copy_contents(v, in, "samples")) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    *out = v;
    return SD_OK;
}

/* sd_node_sample on the latent value latent_v (samples lt) with the guider's model h. */
static sd_status sample_latent(sd_node_run *r, const sd_sample_request *q, const sd_model_handle *h,
                               const sd_value *latent_v, const sd_tensor *lt)
{
    sd_context *ctx = sd_run_context(r);
    const sd_guider *g = q->guider;
    const sd_checkpoint_config *cfg = sd_loaded_config(h->loaded);
    const sd_family_desc *family = sd_family_get(cfg->family);
    const sd_latent_format *format = family->latent;
    if (lt->shape[1] != format->channels)
        return sd_run_error(r, SD_ERR_INVALID, "input 'latent_image': a %lld-channel latent cannot be sampled by the %s "
                            "model, which takes %d-channel latents", (long long)lt->shape[1], family->name,
                            format->channels);
    if (sd_sampler_find(q->sampler) < 0)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "unknown sampler '%s' (sdflow nodes KSamplerSelect lists them)",
                            q->sampler);
    if (q->n_sigmas == 0)
        return set_unchanged(r, q, latent_v); /* CFGGuider.sample: no sigmas, nothing to do */
    sd_model_sampling ms;
    if (!handle_sampling(r, h, &ms))
        return SD_ERR_INVALID;
    bool flux = cfg->family == SD_FAMILY_FLUX;
    sd_cfg_setup s = {.r = r, .guider = g, .need_uncond = sd_sampler_uses_uncond(q->sampler), .ms = &ms,
                      .batch = (size_t)lt->shape[0], .h = lt->shape[2], .w = lt->shape[3],
                      .in_channels = flux ? cfg->flux.in_channels : cfg->unet.in_channels,
                      .dim = flux ? cfg->flux.context_dim : cfg->unet.context_dim, .preview = format,
                      .rescale_cfg = h->rescale_cfg, .ipadapters = h->ipa, .seed = q->seed, .precision = h->precision};
    size_t per_item = (size_t)(format->channels * s.h * s.w), n = s.batch * per_item;
    sd_cfg_denoiser *d = NULL;
    float *noise = NULL, *latent = NULL, *mask = NULL;
    int64_t *bidx = NULL;
    step_state step = {0};
    sd_status st;
    /* The conditionings are computed: on a CPU device the text encoders' weights go back. */
    sd_node_release_on_cpu(r, false, true);
    if ((st = flux ? sd_node_model_flux(h, &s.flux) : sd_node_model_unet(h, &s.unet)) || (st = sd_cl_get(ctx, &s.cl)) ||
        (st = sd_loaded_unclip_stats(h->loaded, &s.unclip_mean, &s.unclip_std))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    if (!flux && s.in_channels != 4 && s.in_channels != 9) {
        st = sd_run_error(r, SD_ERR_INVALID, "a UNet with %d input channels is not supported", s.in_channels);
        goto done;
    }
    if ((st = sd_cfg_denoiser_new(&s, &d)) || (st = batch_index(r, latent_v, s.batch, &bidx)))
        goto done;
    float scale = format->scale, shift = format->shift; /* process_in: (latent - shift) * scale */
    latent = malloc(n * sizeof *latent);
    noise = q->add_noise ? malloc(n * sizeof *noise) : NULL;
    step.d = d;
    step.denoised = q->denoised_output ? malloc(n * sizeof *step.denoised) : NULL;
    if (!latent || (q->add_noise && !noise) || (q->denoised_output && !step.denoised)) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for a latent of %zu values", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        latent[i] = (lt->data[i] - shift) * scale;
    if (noise && (st = sd_prepare_noise(ctx, q->seed, s.batch, per_item, bidx, noise))) {
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
        .sampler = q->sampler, .sigmas = q->sigmas, .n_sigmas = q->n_sigmas,
        .sigma_max = sd_model_sampling_sigma_max(&ms), .seed = q->seed,
        .denoise = sd_cfg_denoise, .denoise_user = d, .step = on_step, .step_user = &step, .noise_mask = mask,
        .flow = ms.type == SD_SAMPLING_FLOW,
        .sde_start_sigma = sd_model_sampling_percent_to_sigma(&ms, 0.2),
        .sde_end_sigma = sd_model_sampling_percent_to_sigma(&ms, 0.8),
    };
    if ((st = sd_sample(ctx, &o, noise, latent, latent, n))) {
        if (!sd_cfg_denoiser_reported(d))
            st = sd_node_model_fail(r, st);
        goto done;
    }
    st = set_latent_output(r, 0, latent_v, latent, mask, 1.0f / scale, shift);
    if (!st && q->denoised_output)
        st = set_latent_output(r, 1, latent_v, step.stepped ? step.denoised : latent, mask, 1.0f / scale, shift);
done:
    sd_cfg_denoiser_free(d);
    sd_node_model_done(r);
    free(noise);
    free(latent);
    free(mask);
    free(bidx);
    free(step.denoised);
    return st;
}

sd_status sd_node_sample(sd_node_run *r, const sd_sample_request *q)
{
    const sd_guider *g = q->guider;
    const sd_model_handle *h = g->model && g->model->type == SD_TYPE_MODEL ? g->model->handle : NULL;
    if (!h)
        return sd_run_error(r, SD_ERR_INVALID, "the guider holds no model");
    sd_value *latent_v = sd_run_value(r, "latent_image");
    const sd_latent_format *format = sd_family_get(sd_loaded_config(h->loaded)->family)->latent;
    const sd_tensor *lt = sd_value_tensor(latent_v, "samples");
    if (!lt || lt->ndim != 4 || lt->shape[0] < 1 || lt->shape[2] < 1 || lt->shape[3] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'latent_image' has no [batch, channels, h, w] samples");
    sd_value *widened = NULL;
    if (widen_empty_latent(r, latent_v, lt, format->channels, &widened))
        return SD_ERR_NOMEM;
    if (widened) {
        latent_v = widened;
        lt = sd_value_tensor(widened, "samples");
    }
    sd_status st = sample_latent(r, q, h, latent_v, lt);
    sd_value_unref(widened);
    return st;
}
