/* ModelComputeDtype (ComfyUI's comfy_extras/nodes_model_advanced.py): a MODEL whose forward calls
 * compute in another precision than the run's (docs/precision.md "Per-node precision"). The output
 * is a new handle on the same loaded file (weights, LoRAs and patches shared) carrying the choice;
 * the samplers switch the context's precision around the model's forward calls (nodes/cfg_denoiser.c
 * model_forward). The dtype is an input, so it is part of every downstream cache key and of the
 * workflow an image records: the image replays in the precision that made it. */
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <string.h>

/* ComfyUI's choices. sdflow has no fp16 arithmetic: fp16 computes in fp32, which keeps every
 * digit fp16 would (fp32's significand and range hold fp16's). */
static const char *const dtype_choices[] = {"default", "fp32", "fp16", "bf16", NULL};
static const sd_model_precision dtype_precisions[] = {SD_MODEL_PRECISION_RUN, SD_MODEL_PRECISION_FP32,
                                                      SD_MODEL_PRECISION_FP32, SD_MODEL_PRECISION_BF16};

static sd_status run_model_compute_dtype(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    const char *dtype = sd_run_string(r, "dtype"); /* one of the choices: the engine checks enums */
    size_t i = 0;
    while (dtype_choices[i + 1] && strcmp(dtype_choices[i], dtype))
        i++;
    sd_value *v = sd_node_model_derive(SD_TYPE_MODEL, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    ((sd_model_handle *)v->handle)->precision = dtype_precisions[i];
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc mcd_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model"),
    SD_IN_ENUM("dtype", "default", dtype_choices,
               "precision of the model's forward calls: default (the run's: --precision), fp32, bf16 (needs "
               "oneDNN and a CPU device), fp16 (computed in fp32: sdflow has no fp16 arithmetic)"),
};
static const sd_output_desc mcd_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the same model (weights shared) computing in that precision"),
};
const sd_node_desc sd_node_ModelComputeDtype = {
    .name = "ModelComputeDtype", .version = 1, .category = "advanced/debug/model",
    .doc = "Sets the precision the model's forward calls compute in, whatever the run's (docs/precision.md); "
           "text encoders, VAE and ControlNets keep the run's precision, the sampler stays fp32.",
    .inputs = mcd_in, .n_inputs = SD_COUNT(mcd_in),
    .outputs = mcd_out, .n_outputs = SD_COUNT(mcd_out), .run = run_model_compute_dtype,
};
