/* ComfyUI's custom-sampling nodes (comfy_extras/nodes_custom_sampler.py): SamplerCustom and
 * SamplerCustomAdvanced, which sample with a SAMPLER over SIGMAS, and the nodes that make a
 * SAMPLER (KSamplerSelect), NOISE (RandomNoise, DisableNoise) and GUIDER (BasicGuider, CFGGuider,
 * DualCFGGuider). The sampling itself is nodes/sample_core.h's, the one KSampler uses. */
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include "nodes/sample_core.h"
#include <string.h>

#define SEED_MAX 9223372036854775807.0 /* sdflow's INT is 64-bit signed (ComfyUI: up to 2^64 - 1) */
#define SEED_DOC "noise seed (torch.manual_seed, as ComfyUI on the CPU)"

static sd_status emit(sd_node_run *r, sd_value *v)
{
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

/* Both sampler nodes: sampler and sigmas from their inputs, outputs output and denoised_output. */
static sd_status sample_custom(sd_node_run *r, const sd_guider *g, bool add_noise, uint64_t seed)
{
    const char *sampler = sd_sampler_input(r, "sampler");
    const sd_tensor *sigmas = sampler ? sd_sigmas_input(r, "sigmas") : NULL;
    if (!sigmas)
        return SD_ERR_INVALID;
    sd_sample_request q = {.guider = g, .sampler = sampler, .sigmas = sigmas->data,
                           .n_sigmas = (size_t)sigmas->shape[0], .add_noise = add_noise, .seed = seed,
                           .denoised_output = true};
    return sd_node_sample(r, &q);
}

static sd_status run_sampler_custom(sd_node_run *r)
{
    static const char *const conds[] = {"positive", "negative"};
    sd_guider g = sd_guider_from_inputs(r, SD_GUIDER_CFG, conds, 2, sd_run_float(r, "cfg"), 0.0);
    return sample_custom(r, &g, sd_run_bool(r, "add_noise"), (uint64_t)sd_run_int(r, "noise_seed"));
}

static sd_status run_sampler_custom_advanced(sd_node_run *r)
{
    const sd_guider *g = sd_guider_input(r, "guider");
    bool add = false;
    uint64_t seed = 0;
    if (!g || !sd_noise_input(r, "noise", &add, &seed))
        return SD_ERR_INVALID;
    return sample_custom(r, g, add, seed);
}

static const sd_output_desc sample_out[] = {
    SD_OUT("output", SD_TYPE_LATENT, "the sampled latent"),
    SD_OUT("denoised_output", SD_TYPE_LATENT, "the last step's prediction of the clean latent"),
};
#define IN_SAMPLING                                                                          \
    SD_IN_LINK("sampler", SD_TYPE_SAMPLER, "the sampling algorithm (KSamplerSelect)"),        \
    SD_IN_LINK("sigmas", SD_TYPE_SIGMAS, "the noise schedule (BasicScheduler, ...)"),        \
    SD_IN_LINK("latent_image", SD_TYPE_LATENT, "the latent to start from")

static const sd_input_desc custom_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the UNet"),
    SD_IN_BOOL("add_noise", "true", "add the seed's noise to the latent first"),
    SD_IN_INT("noise_seed", "0", 0, SEED_MAX, SEED_DOC),
    SD_IN_FLOAT("cfg", "8.0", 0.0, 100.0, "classifier-free guidance scale; 1 skips the negative"),
    SD_IN_LINK("positive", SD_TYPE_CONDITIONING, "what the image should show"),
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "what it should not show (guidance)"),
    IN_SAMPLING,
};
const sd_node_desc sd_node_SamplerCustom = {
    .name = "SamplerCustom", .version = 1, .category = "sampling/custom_sampling",
    .doc = "Samples a latent with a chosen sampler over a given noise schedule, with CFG guidance.",
    .inputs = custom_in, .n_inputs = SD_COUNT(custom_in),
    .outputs = sample_out, .n_outputs = SD_COUNT(sample_out), .run = run_sampler_custom,
    .check = sd_check_sampler,
};

static const sd_input_desc advanced_in[] = {
    SD_IN_LINK("noise", SD_TYPE_NOISE, "the initial noise (RandomNoise, DisableNoise)"),
    SD_IN_LINK("guider", SD_TYPE_GUIDER, "the model with its conditionings (CFGGuider, ...)"),
    IN_SAMPLING,
};
const sd_node_desc sd_node_SamplerCustomAdvanced = {
    .name = "SamplerCustomAdvanced", .version = 1, .category = "sampling/custom_sampling",
    .doc = "Samples a latent from noise, guider, sampler and noise schedule given as separate pieces.",
    .inputs = advanced_in, .n_inputs = SD_COUNT(advanced_in),
    .outputs = sample_out, .n_outputs = SD_COUNT(sample_out), .run = run_sampler_custom_advanced,
    .check = sd_check_guided_sampler,
};

/* ---- SAMPLER */

static sd_status run_ksampler_select(sd_node_run *r)
{
    return emit(r, sd_sampler_value(sd_run_string(r, "sampler_name")));
}

static const sd_input_desc select_in[] = {
    SD_IN_ENUM("sampler_name", "euler", sd_sampler_choices, "sampler (docs/sampling.md)"),
};
static const sd_output_desc sampler_out[] = {SD_OUT("SAMPLER", SD_TYPE_SAMPLER, "the sampler")};
const sd_node_desc sd_node_KSamplerSelect = {
    .name = "KSamplerSelect", .version = 1, .category = "sampling/samplers",
    .doc = "Chooses one of KSampler's samplers by name.",
    .inputs = select_in, .n_inputs = SD_COUNT(select_in),
    .outputs = sampler_out, .n_outputs = SD_COUNT(sampler_out), .run = run_ksampler_select,
};

/* ---- NOISE */

static sd_status run_random_noise(sd_node_run *r)
{
    return emit(r, sd_noise_value(true, (uint64_t)sd_run_int(r, "noise_seed")));
}

static sd_status run_disable_noise(sd_node_run *r)
{
    return emit(r, sd_noise_value(false, 0));
}

static const sd_input_desc random_noise_in[] = {SD_IN_INT("noise_seed", "0", 0, SEED_MAX, SEED_DOC)};
static const sd_output_desc noise_out[] = {SD_OUT("NOISE", SD_TYPE_NOISE, "the initial noise")};
const sd_node_desc sd_node_RandomNoise = {
    .name = "RandomNoise", .version = 1, .category = "sampling/noise",
    .doc = "Initial noise from a seed (ComfyUI's prepare_noise, batch_index aware).",
    .inputs = random_noise_in, .n_inputs = SD_COUNT(random_noise_in),
    .outputs = noise_out, .n_outputs = SD_COUNT(noise_out), .run = run_random_noise,
};
const sd_node_desc sd_node_DisableNoise = {
    .name = "DisableNoise", .version = 1, .category = "sampling/noise",
    .doc = "No initial noise: the latent is sampled as it is (its seed for step noise is 0).",
    .outputs = noise_out, .n_outputs = SD_COUNT(noise_out), .run = run_disable_noise,
};

/* ---- GUIDER */

static sd_status guider_out(sd_node_run *r, sd_guider_kind kind, const char *const *conds, size_t n, double cfg,
                            double cfg2)
{
    sd_guider g = sd_guider_from_inputs(r, kind, conds, n, cfg, cfg2);
    return emit(r, sd_guider_value(&g));
}

static sd_status run_basic_guider(sd_node_run *r)
{
    static const char *const conds[] = {"conditioning"};
    return guider_out(r, SD_GUIDER_BASIC, conds, 1, 1.0, 0.0);
}

static sd_status run_cfg_guider(sd_node_run *r)
{
    static const char *const conds[] = {"positive", "negative"};
    return guider_out(r, SD_GUIDER_CFG, conds, 2, sd_run_float(r, "cfg"), 0.0);
}

static sd_status run_dual_cfg_guider(sd_node_run *r)
{
    static const char *const conds[] = {"cond1", "cond2", "negative"};
    bool nested = strcmp(sd_run_string(r, "style"), "nested") == 0;
    return guider_out(r, nested ? SD_GUIDER_DUAL_NESTED : SD_GUIDER_DUAL, conds, 3, sd_run_float(r, "cfg_conds"),
                      sd_run_float(r, "cfg_cond2_negative"));
}

#define IN_MODEL SD_IN_LINK("model", SD_TYPE_MODEL, "the UNet")
static const sd_output_desc guider_outs[] = {
    SD_OUT("GUIDER", SD_TYPE_GUIDER, "the model, its conditionings and how they combine"),
};
static const sd_input_desc basic_in[] = {
    IN_MODEL,
    SD_IN_LINK("conditioning", SD_TYPE_CONDITIONING, "the conditioning (no negative, no guidance)"),
};
const sd_node_desc sd_node_BasicGuider = {
    .name = "BasicGuider", .version = 1, .category = "sampling/guiders",
    .doc = "A guider that predicts with one conditioning alone (for models without CFG).",
    .inputs = basic_in, .n_inputs = SD_COUNT(basic_in),
    .outputs = guider_outs, .n_outputs = SD_COUNT(guider_outs), .run = run_basic_guider,
    .check = sd_check_guider,
};

static const sd_input_desc cfg_in[] = {
    IN_MODEL,
    SD_IN_LINK("positive", SD_TYPE_CONDITIONING, "what the image should show"),
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "what it should not show"),
    SD_IN_FLOAT("cfg", "8.0", 0.0, 100.0, "classifier-free guidance scale; 1 skips the negative"),
};
const sd_node_desc sd_node_CFGGuider = {
    .name = "CFGGuider", .version = 1, .category = "sampling/guiders",
    .doc = "Classifier-free guidance: negative + (positive - negative) * cfg, as KSampler.",
    .inputs = cfg_in, .n_inputs = SD_COUNT(cfg_in),
    .outputs = guider_outs, .n_outputs = SD_COUNT(guider_outs), .run = run_cfg_guider,
    .check = sd_check_guider,
};

static const char *const dual_styles[] = {"regular", "nested", NULL};
static const sd_input_desc dual_in[] = {
    IN_MODEL,
    SD_IN_LINK("cond1", SD_TYPE_CONDITIONING, "the main conditioning"),
    SD_IN_LINK("cond2", SD_TYPE_CONDITIONING, "the second conditioning, between cond1 and negative"),
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "what it should not show"),
    SD_IN_FLOAT("cfg_conds", "8.0", 0.0, 100.0, "guidance of cond1 against cond2"),
    SD_IN_FLOAT("cfg_cond2_negative", "8.0", 0.0, 100.0, "guidance of cond2 against negative"),
    SD_IN_ENUM("style", "regular", dual_styles,
               "regular: both guidances added; nested: cfg_cond2_negative applied to cond1's guided result"),
};
const sd_node_desc sd_node_DualCFGGuider = {
    .name = "DualCFGGuider", .version = 1, .category = "sampling/guiders",
    .doc = "Guidance with two conditionings and a negative, each with its own scale.",
    .inputs = dual_in, .n_inputs = SD_COUNT(dual_in),
    .outputs = guider_outs, .n_outputs = SD_COUNT(guider_outs), .run = run_dual_cfg_guider,
    .check = sd_check_guider,
};
