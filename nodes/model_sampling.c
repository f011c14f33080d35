/* ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingFlux and RescaleCFG (ComfyUI's
 * comfy_extras/nodes_model_advanced.py): a MODEL that samples with another output type (eps,
 * v_prediction, lcm, x0) and optionally the zero-terminal-SNR schedule, or on a continuous
 * schedule (v_prediction, edm, eps between sigma_min and sigma_max); a MODEL whose classifier-free guidance is rescaled
 * (nodes/cfg_denoiser.c rescale_cfg). The output is a new handle on the same loaded checkpoint (weights and LoRAs shared)
 * carrying the choice; the sampling nodes read it through sd_node_model_sampling_of. Its inputs
 * are part of every downstream cache key, since a MODEL passes its node's key along the link. */
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <string.h>

static const char *const sampling_choices[] = {"eps", "v_prediction", "lcm", "x0", NULL};
static const sd_sampling_type sampling_types[] = {SD_SAMPLING_EPS, SD_SAMPLING_V_PREDICTION, SD_SAMPLING_LCM,
                                                  SD_SAMPLING_X0};

/* The sd_sampling_type of the "sampling" input among choices (NULL-terminated, types beside them);
 * -1 with the error on the run for another name. */
static int sampling_input(sd_node_run *r, const char *const *choices, const sd_sampling_type *types)
{
    const char *name = sd_run_string(r, "sampling");
    for (int i = 0; choices[i]; i++)
        if (name && strcmp(name, choices[i]) == 0)
            return (int)types[i];
    sd_run_error(r, SD_ERR_INVALID, "unknown sampling '%s'", name ? name : "");
    return -1;
}

static sd_status run_model_sampling_discrete(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    int type = sampling_input(r, sampling_choices, sampling_types);
    if (type < 0)
        return SD_ERR_INVALID;
    sd_value *v = sd_node_model_derive(SD_TYPE_MODEL, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_model_handle *out = v->handle;
    out->sampling = type;
    out->zsnr = sd_run_bool(r, "zsnr");
    out->continuous = false;
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc msd_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model"),
    SD_IN_ENUM("sampling", "eps", sampling_choices,
               "what the network predicts: eps (noise), v_prediction (SD2 768-v and v fine-tunes), lcm "
               "(latent consistency distillations: 50 timesteps, LCM boundary conditions), x0 (the clean latent)"),
    SD_IN_BOOL("zsnr", "false", "rescale the noise schedule to zero terminal SNR (sigma_max about 4500; for "
                                "models trained that way)"),
};
static const sd_output_desc msd_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the same model (weights shared) sampling that way"),
};
const sd_node_desc sd_node_ModelSamplingDiscrete = {
    .name = "ModelSamplingDiscrete", .version = 1, .category = "advanced/model",
    .doc = "Overrides how the sampler reads the model's output (and its noise schedule), as ComfyUI: for "
           "checkpoints whose prediction type the file does not show (docs/sampling.md).",
    .inputs = msd_in, .n_inputs = SD_COUNT(msd_in),
    .outputs = msd_out, .n_outputs = SD_COUNT(msd_out), .run = run_model_sampling_discrete,
};

/* ModelSamplingContinuousEDM's choices sdflow's families can use (edm_playground_v2.5 changes the
 * latent format, cosmos_rflow is another model's; neither is offered). */
static const char *const continuous_choices[] = {"v_prediction", "edm", "eps", NULL};
static const sd_sampling_type continuous_types[] = {SD_SAMPLING_V_PREDICTION, SD_SAMPLING_EDM, SD_SAMPLING_EPS};

static sd_status run_model_sampling_continuous(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    int type = sampling_input(r, continuous_choices, continuous_types);
    if (type < 0)
        return SD_ERR_INVALID;
    double sigma_max = sd_run_float(r, "sigma_max"), sigma_min = sd_run_float(r, "sigma_min");
    if (!(sigma_min > 0.0 && sigma_min < sigma_max))
        return sd_run_error(r, SD_ERR_INVALID, "sigma_min %g must be above 0 and below sigma_max %g", sigma_min,
                            sigma_max);
    sd_value *v = sd_node_model_derive(SD_TYPE_MODEL, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_model_handle *out = v->handle;
    out->sampling = type;
    out->zsnr = false;
    out->continuous = true;
    out->sigma_min = sigma_min;
    out->sigma_max = sigma_max;
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc msc_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model"),
    SD_IN_ENUM("sampling", "v_prediction", continuous_choices,
               "what the network predicts: v_prediction (sigma_data 1), edm (EDM preconditioning, sigma_data 0.5), "
               "eps (the noise)"),
    SD_IN_FLOAT("sigma_max", "120.0", 0, 1000, "the largest noise level of the schedule"),
    SD_IN_FLOAT("sigma_min", "0.002", 0, 1000, "the smallest noise level of the schedule (above 0)"),
};
static const sd_output_desc msc_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the same model (weights shared) on the continuous schedule"),
};
const sd_node_desc sd_node_ModelSamplingContinuousEDM = {
    .name = "ModelSamplingContinuousEDM", .version = 1, .category = "advanced/model",
    .doc = "Samples the model on a continuous noise schedule between sigma_min and sigma_max, as ComfyUI: the "
           "timestep is 0.25 * ln(sigma), the output read as v, EDM or eps (for models trained that way, such "
           "as CosXL and EDM fine-tunes; docs/sampling.md).",
    .inputs = msc_in, .n_inputs = SD_COUNT(msc_in),
    .outputs = msc_out, .n_outputs = SD_COUNT(msc_out), .run = run_model_sampling_continuous,
};

static sd_status run_model_sampling_flux(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    if (sd_loaded_config(h->loaded)->family != SD_FAMILY_FLUX)
        return sd_run_error(r, SD_ERR_INVALID, "input 'model': ModelSamplingFlux takes a FLUX model, not %s",
                            sd_family_name(sd_loaded_config(h->loaded)->family));
    sd_value *v = sd_node_model_derive(SD_TYPE_MODEL, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    ((sd_model_handle *)v->handle)->flux_shift =
        sd_flux_shift(sd_run_float(r, "max_shift"), sd_run_float(r, "base_shift"), (double)sd_run_int(r, "width"),
                      (double)sd_run_int(r, "height"));
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc msf_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "a FLUX model"),
    SD_IN_FLOAT("max_shift", "1.15", 0, 100, "the shift at 4096 image tokens (1024x1024)"),
    SD_IN_FLOAT("base_shift", "0.5", 0, 100, "the shift at 256 image tokens (256x256)"),
    SD_IN_INT("width", "1024", 16, 16384, "image width in pixels"),
    SD_IN_INT("height", "1024", 16, 16384, "image height in pixels"),
};
static const sd_output_desc msf_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the same model (weights shared) with that shift"),
};
const sd_node_desc sd_node_ModelSamplingFlux = {
    .name = "ModelSamplingFlux", .version = 1, .category = "advanced/model",
    .doc = "FLUX's time shift for an image size, as ComfyUI: linear in width * height / 256 through (256, base_shift) "
           "and (4096, max_shift); sigma(t) = e^shift / (e^shift + 1/t - 1) (docs/flux.md).",
    .inputs = msf_in, .n_inputs = SD_COUNT(msf_in),
    .outputs = msf_out, .n_outputs = SD_COUNT(msf_out), .run = run_model_sampling_flux,
};

static sd_status run_rescale_cfg(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    sd_value *v = sd_node_model_derive(SD_TYPE_MODEL, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    ((sd_model_handle *)v->handle)->rescale_cfg = sd_run_float(r, "multiplier");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc rescale_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model"),
    SD_IN_FLOAT("multiplier", "0.7", 0, 1, "how much of the rescaled guidance to use (0: plain CFG)"),
};
static const sd_output_desc rescale_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the same model (weights shared) with its guidance rescaled"),
};
const sd_node_desc sd_node_RescaleCFG = {
    .name = "RescaleCFG", .version = 1, .category = "advanced/model",
    .doc = "Rescales classifier-free guidance in v space to the positive prediction's spread (arXiv 2305.08891), "
           "as ComfyUI; for v-prediction and zero-terminal-SNR models at high CFG (docs/sampling.md).",
    .inputs = rescale_in, .n_inputs = SD_COUNT(rescale_in),
    .outputs = rescale_out, .n_outputs = SD_COUNT(rescale_out), .run = run_rescale_cfg,
};
