/* LoraLoader and LoraLoaderModelOnly (ComfyUI's nodes of the same names): a LoRA file from
 * models/loras patches the MODEL (and CLIP) it is given. The outputs are new handles on the
 * same loaded checkpoint carrying the input's LoRA stack plus this LoRA; the patched tensors
 * are computed when a node first uses them, base weights are shared (ml/adapters/lora.h,
 * docs/lora.md). The file's content hash and the strengths are inputs, so they are part of
 * every downstream cache key. A strength of 0 passes that input through unchanged, as ComfyUI. */
#include "nodes/model_handle.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"

/* The handle for one part: h with lora pushed at strength onto its stack (h itself at 0). */
static sd_status patched_output(sd_node_run *r, sd_type type, const sd_model_handle *h, sd_lora *lora,
                                float strength, sd_lora_part part, int index)
{
    sd_lora_stack *s = NULL;
    if (strength != 0.0f) {
        sd_status st = sd_lora_stack_push(sd_run_context(r), h->lora, lora, strength, part, &s);
        if (st)
            return sd_node_model_fail(r, st);
    }
    sd_value *v = sd_node_model_derive(type, h, s ? s : h->lora);
    sd_lora_stack_unref(s);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, index, v);
    return SD_OK;
}

static sd_status run_lora(sd_node_run *r, bool with_clip)
{
    const sd_model_handle *model = sd_node_model_input(r, "model");
    const sd_model_handle *clip = with_clip ? sd_node_model_input(r, "clip") : NULL;
    if (!model || (with_clip && !clip))
        return SD_ERR_INVALID;
    float sm = (float)sd_run_float(r, "strength_model");
    float sc = with_clip ? (float)sd_run_float(r, "strength_clip") : 0.0f;
    sd_lora *lora = NULL, *clip_lora = NULL;
    sd_status st = SD_OK;
    if (sm != 0.0f || sc != 0.0f) {
        /* Keys are matched against the MODEL's checkpoint (both parts: a text-encoder key is
         * never "unmatched" just because only the UNet is patched). */
        st = sd_lora_open(sd_run_context(r), sd_run_file(r, "lora_name"), sd_loaded_config(model->loaded), &lora);
        if (st)
            return sd_node_model_fail(r, st);
        clip_lora = sd_lora_ref(lora);
    }
    if (sc != 0.0f && (clip->loaded != model->loaded || clip->text_family != SD_FAMILY_UNKNOWN)) {
        /* A CLIP from other files: its text-encoder keys are mapped for their layout. */
        sd_checkpoint_config cfg = *sd_loaded_config(model->loaded);
        sd_node_clip_lora_config(clip, &cfg);
        sd_lora_unref(clip_lora);
        clip_lora = NULL;
        st = sd_lora_open(sd_run_context(r), sd_run_file(r, "lora_name"), &cfg, &clip_lora);
    }
    if (st)
        st = sd_node_model_fail(r, st);
    if (!st)
        st = patched_output(r, SD_TYPE_MODEL, model, lora, sm, SD_LORA_UNET, 0);
    if (!st && with_clip)
        st = patched_output(r, SD_TYPE_CLIP, clip, clip_lora, sc, SD_LORA_CLIP, 1);
    sd_lora_unref(lora);
    sd_lora_unref(clip_lora);
    return st;
}

static sd_status run_lora_both(sd_node_run *r)
{
    return run_lora(r, true);
}

static sd_status run_lora_model(sd_node_run *r)
{
    return run_lora(r, false);
}

#define LORA_NAME_INPUT \
    SD_IN_FILE_NAME("lora_name", "loras", \
                    "SD1.x, SD2.x, SDXL or FLUX LoRA .safetensors (kohya-ss, diffusers/PEFT or BFL layout) in models/loras" \
                    " (an absolute path needs --allow-absolute-paths)")

static const sd_input_desc lora_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model to patch"),
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the text encoder to patch"),
    LORA_NAME_INPUT,
    SD_IN_FLOAT("strength_model", "1.0", -100, 100, "how strongly to patch the UNet / FLUX transformer (0: not at all)"),
    SD_IN_FLOAT("strength_clip", "1.0", -100, 100, "how strongly to patch the text encoder (0: not at all)"),
};
static const sd_output_desc lora_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the patched model (base weights shared)"),
    SD_OUT("CLIP", SD_TYPE_CLIP, "the patched text encoder (base weights shared)"),
};
const sd_node_desc sd_node_LoraLoader = {
    .name = "LoraLoader", .version = 1, .category = "loaders",
    .doc = "Applies a LoRA to a model and its text encoder as weight patches; LoRAs stack when chained.",
    .inputs = lora_in, .n_inputs = SD_COUNT(lora_in),
    .outputs = lora_out, .n_outputs = SD_COUNT(lora_out), .run = run_lora_both,
    .check = sd_check_lora_loader,
};

static const sd_input_desc model_only_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model to patch"),
    LORA_NAME_INPUT,
    SD_IN_FLOAT("strength_model", "1.0", -100, 100, "how strongly to patch the UNet / FLUX transformer (0: not at all)"),
};
static const sd_output_desc model_only_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the patched model (base weights shared)"),
};
const sd_node_desc sd_node_LoraLoaderModelOnly = {
    .name = "LoraLoaderModelOnly", .version = 1, .category = "loaders",
    .doc = "Applies a LoRA to the UNet only, as weight patches.",
    .inputs = model_only_in, .n_inputs = SD_COUNT(model_only_in),
    .outputs = model_only_out, .n_outputs = SD_COUNT(model_only_out), .run = run_lora_model,
    .check = sd_check_lora_loader,
};
