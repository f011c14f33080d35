/* The pieces every sampling node is built from, as ComfyUI's custom-sampling objects
 * (comfy_extras/nodes_custom_sampler.py, comfy/samplers.py): KSampler, KSamplerAdvanced,
 * SamplerCustom and SamplerCustomAdvanced all assemble a guider, a sampler, sigmas and noise and
 * run sd_node_sample, so the same settings give the same bits whichever node asks.
 *
 * Values (docs/sampling.md):
 *   SIGMAS   tensor value, "sigmas" [n] float32 (cacheable)
 *   SAMPLER  attrs {"sampler_name": name} (cacheable)
 *   NOISE    attrs {"seed": s} or {"seed": 0, "disabled": true} (cacheable)
 *   GUIDER   handle on an sd_guider holding references to its MODEL and CONDITIONING values
 *            (not cacheable, like the MODEL it holds; its node's key covers theirs). */
#ifndef SD_NODES_SAMPLE_CORE_H
#define SD_NODES_SAMPLE_CORE_H

#include "core/node.h"
#include "ml/sampling/schedulers.h"

/* ComfyUI's sampler and scheduler names as ENUM choices (NULL-terminated; the same lists as
 * ml/sampling/sampling.h's and ml/sampling/schedulers.h's registries, which tests check). */
extern const char *const sd_sampler_choices[];
extern const char *const sd_scheduler_choices[];

typedef enum sd_guider_kind {
    SD_GUIDER_BASIC,      /* BasicGuider: the positive prediction alone */
    SD_GUIDER_CFG,        /* CFGGuider: negative + (positive - negative) * cfg */
    SD_GUIDER_DUAL,       /* DualCFGGuider "regular" */
    SD_GUIDER_DUAL_NESTED /* DualCFGGuider "nested" */
} sd_guider_kind;

#define SD_GUIDER_MAX_CONDS 3

/* A guider: the model and its conditionings in ComfyUI's order (positive first; then negative
 * for CFG; middle (cond2) and negative for the dual guiders), with the input names they came
 * from for messages. */
typedef struct sd_guider {
    sd_guider_kind kind;
    sd_value *model;
    sd_value *conds[SD_GUIDER_MAX_CONDS];
    const char *names[SD_GUIDER_MAX_CONDS]; /* static strings */
    size_t n_conds;
    double cfg;  /* CFG: cfg; dual: cfg_conds (positive against middle) */
    double cfg2; /* dual: cfg_cond2_negative (middle against negative) */
} sd_guider;

/* The guider of node r's inputs: "model" and the named CONDITIONING inputs (borrowed values;
 * valid during the run). */
sd_guider sd_guider_from_inputs(sd_node_run *r, sd_guider_kind kind, const char *const *names, size_t n_conds,
                                double cfg, double cfg2);
/* A GUIDER value holding new references to g's values; NULL when memory runs out. */
sd_value *sd_guider_value(const sd_guider *g);
/* The guider on a GUIDER input (borrowed), or NULL with the node's error set. */
const sd_guider *sd_guider_input(sd_node_run *r, const char *input);

/* SAMPLER and NOISE values and their inputs (NULL / false with the node's error set when the
 * value is not one). */
sd_value *sd_sampler_value(const char *name);
const char *sd_sampler_input(sd_node_run *r, const char *input);
sd_value *sd_noise_value(bool add, uint64_t seed);
bool sd_noise_input(sd_node_run *r, const char *input, bool *add, uint64_t *seed);

/* SIGMAS values: a copy of n floats; the sigmas on an input (NULL with the node's error set when
 * it is not a 1-D "sigmas" tensor). */
sd_value *sd_sigmas_value(const float *sigmas, size_t n);
const sd_tensor *sd_sigmas_input(sd_node_run *r, const char *input);
/* Sets output `index` to a SIGMAS value of n floats (which it copies); SD_ERR_NOMEM with the
 * node's error set. */
sd_status sd_node_set_sigmas(sd_node_run *r, size_t index, const float *sigmas, size_t n);

/* The model's sampling schedule (its sigma table) for the MODEL on `input`: its family's
 * discrete schedule; false with the node's error set when the input holds no model. */
bool sd_node_model_sampling(sd_node_run *r, const char *input, sd_model_sampling *ms);

/* One sampling run (comfy/sample.py sample_custom, CFGGuider.sample): the latent on input
 * "latent_image", the initial noise of the seed unless add_noise is false (prepare_noise, with
 * the latent's batch_index), the noise mask, the guider's model function, the sampler over the
 * sigmas. Output 0 is the sampled LATENT; with denoised_output, output 1 is the last step's
 * denoised prediction (SamplerCustom's denoised_output; the sampled latent when no step ran).
 * No sigmas return the input latent. Where the noise mask is 0 the input latent is kept bit for
 * bit. */
typedef struct sd_sample_request {
    const sd_guider *guider;
    const char *sampler;
    const float *sigmas;
    size_t n_sigmas;
    bool add_noise;
    uint64_t seed;
    bool denoised_output;
} sd_sample_request;

sd_status sd_node_sample(sd_node_run *r, const sd_sample_request *q);

#endif
