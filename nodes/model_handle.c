/* MODEL, CLIP and VAE handle values (see model_handle.h). */
#include "nodes/model_handle.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static void handle_free(void *p)
{
    sd_model_handle *h = p;
    sd_lora_stack_unref(h->lora); /* before the file: the patched view borrows its weights */
    sd_ipa_stack_unref(h->ipa);
    sd_loaded_unref(h->loaded);
    for (int k = 0; k < SD_FAMILY_MAX_TEXT_ENCODERS; k++)
        sd_loaded_unref(h->text_file[k]);
    free(h);
}

sd_value *sd_node_model_value(sd_type type, sd_loaded *l, int clip_layer)
{
    return sd_node_model_value_lora(type, l, clip_layer, NULL);
}

sd_value *sd_node_model_value_lora(sd_type type, sd_loaded *l, int clip_layer, sd_lora_stack *lora)
{
    sd_model_handle *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loaded = sd_loaded_ref(l);
    h->clip_layer = clip_layer;
    h->lora = lora ? sd_lora_stack_ref(lora) : NULL;
    h->sampling = -1;
    h->zsnr = false;
    h->rescale_cfg = -1.0;
    h->flux_shift = NAN;
    h->ipa = NULL;
    return sd_value_handle(type, h, handle_free); /* frees h on failure */
}

sd_value *sd_node_model_derive(sd_type type, const sd_model_handle *h, sd_lora_stack *lora)
{
    sd_value *v = sd_node_model_value_lora(type, h->loaded, h->clip_layer, lora);
    if (v) {
        sd_model_handle *out = v->handle;
        out->sampling = h->sampling;
        out->zsnr = h->zsnr;
        out->continuous = h->continuous;
        out->sigma_min = h->sigma_min;
        out->sigma_max = h->sigma_max;
        out->rescale_cfg = h->rescale_cfg;
        out->flux_shift = h->flux_shift;
        out->text_family = h->text_family;
        for (int k = 0; k < SD_FAMILY_MAX_TEXT_ENCODERS; k++) {
            out->text_file[k] = h->text_file[k] ? sd_loaded_ref(h->text_file[k]) : NULL;
            out->text_part[k] = h->text_part[k];
        }
        out->ipa = sd_ipa_stack_ref(h->ipa);
        out->precision = h->precision;
    }
    return v;
}

sd_value *sd_node_clip_files_value(sd_family family, sd_loaded *const *files, const int *parts, int clip_layer)
{
    sd_model_handle h = {.loaded = files[0], .clip_layer = clip_layer, .sampling = -1, .rescale_cfg = -1.0,
                         .text_family = family};
    for (int k = 0; k < sd_family_get(family)->n_text_encoders; k++) {
        h.text_file[k] = files[k];
        h.text_part[k] = parts[k];
    }
    return sd_node_model_derive(SD_TYPE_CLIP, &h, NULL);
}

sd_family sd_node_clip_family(const sd_model_handle *h)
{
    return h->text_family != SD_FAMILY_UNKNOWN ? h->text_family : sd_loaded_config(h->loaded)->family;
}

int sd_node_clip_count(const sd_model_handle *h)
{
    if (h->text_family != SD_FAMILY_UNKNOWN)
        return sd_family_get(h->text_family)->n_text_encoders;
    return sd_loaded_config(h->loaded)->clip2_prefix ? 2 : 1;
}

sd_text_encoder_kind sd_node_clip_kind(const sd_model_handle *h, int slot)
{
    if (h->text_family != SD_FAMILY_UNKNOWN)
        return sd_text_file_part_at(sd_loaded_text_file(h->text_file[slot]), h->text_part[slot])->kind;
    return sd_family_get(sd_loaded_config(h->loaded)->family)->text_encoders[slot].kind;
}

void sd_node_clip_lora_config(const sd_model_handle *h, sd_checkpoint_config *cfg)
{
    if (h->text_family == SD_FAMILY_UNKNOWN) {
        *cfg = *sd_loaded_config(h->loaded);
        return;
    }
    cfg->family = h->text_family;
    cfg->has_clip = true;
    cfg->clip_prefix = "";
    cfg->clip2_prefix = NULL;
    for (int k = 0; k < 2 && k < sd_node_clip_count(h); k++) {
        const sd_text_file_part *p = sd_text_file_part_at(sd_loaded_text_file(h->text_file[k]), h->text_part[k]);
        if (p->kind == SD_TEXT_T5XXL)
            continue; /* no LoRA keys map to T5 */
        *(k ? &cfg->clip2 : &cfg->clip) = p->clip;
        if (k)
            cfg->clip2_prefix = "";
    }
}

sd_status sd_node_model_sampling_of(sd_context *ctx, const sd_model_handle *h, sd_model_sampling *ms)
{
    const sd_checkpoint_config *cfg = sd_loaded_config(h->loaded);
    const sd_schedule_config *s = &cfg->schedule;
    if (s->prediction == SD_PREDICT_FLOW) {
        if (cfg->family != SD_FAMILY_FLUX || h->sampling >= 0)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s does not apply to a %s model",
                                sd_family_name(cfg->family),
                                h->continuous ? "ModelSamplingContinuousEDM" : "ModelSamplingDiscrete",
                                sd_family_name(cfg->family));
        sd_model_sampling_flux(ms, isnan(h->flux_shift) ? (cfg->flux.guidance ? 1.15 : 1.0) : h->flux_shift);
        return SD_OK;
    }
    if (h->continuous)
        return sd_model_sampling_continuous(ctx, ms, (sd_sampling_type)h->sampling, h->sigma_min, h->sigma_max,
                                            h->sampling == SD_SAMPLING_EDM ? 0.5 : 1.0);
    sd_sampling_type type = h->sampling >= 0                    ? (sd_sampling_type)h->sampling
                            : s->prediction == SD_PREDICT_V ? SD_SAMPLING_V_PREDICTION
                                                            : SD_SAMPLING_EPS;
    return sd_model_sampling_init_type(ctx, ms, s->timesteps, s->beta_start, s->beta_end, type, h->zsnr);
}

sd_status sd_node_model_unet(const sd_model_handle *h, sd_unet **out)
{
    sd_unet *base;
    sd_status st = sd_loaded_unet(h->loaded, &base);
    *out = base;
    return st || !h->lora ? st : sd_lora_stack_unet(h->lora, base, out);
}

sd_status sd_node_model_flux(const sd_model_handle *h, sd_flux **out)
{
    sd_flux *base;
    sd_status st = sd_loaded_flux(h->loaded, &base);
    *out = base;
    return st || !h->lora ? st : sd_lora_stack_flux(h->lora, base, out);
}

sd_status sd_node_model_clip(const sd_model_handle *h, sd_clip_model **out)
{
    return sd_node_model_text_encoder(h, 0, out);
}

sd_status sd_node_model_text_encoder(const sd_model_handle *h, int slot, sd_clip_model **out)
{
    sd_clip_model *base;
    sd_status st = h->text_family == SD_FAMILY_UNKNOWN
                       ? sd_loaded_text_encoder(h->loaded, slot, &base)
                       : sd_loaded_text_clip(h->text_file[slot], h->text_part[slot],
                                             sd_family_get(h->text_family)->text_encoders[slot].norm_hidden, &base);
    *out = base;
    return st || !h->lora ? st : sd_lora_stack_clip(h->lora, slot, base, out);
}

sd_status sd_node_model_t5(const sd_model_handle *h, int slot, sd_t5_model **out)
{
    bool files = h->text_family != SD_FAMILY_UNKNOWN && slot >= 0 && slot < sd_node_clip_count(h);
    return sd_loaded_text_t5(files ? h->text_file[slot] : h->loaded, files ? h->text_part[slot] : -1, out);
}

const sd_model_handle *sd_node_model_input(sd_node_run *r, const char *input)
{
    sd_value *v = sd_run_value(r, input);
    if (!v || !v->handle || v->handle_free != handle_free) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' carries no loaded model", input);
        return NULL;
    }
    return v->handle;
}

sd_status sd_node_model_fail(sd_node_run *r, sd_status st)
{
    char msg[sizeof ((sd_context *)0)->errmsg];
    snprintf(msg, sizeof msg, "%s", sd_context_errmsg(sd_run_context(r)));
    return sd_run_error(r, st, "%s", msg);
}

void sd_node_model_done(sd_node_run *r)
{
    sd_cl *cl = sd_context_ext(sd_run_context(r), SD_EXT_OPENCL);
    if (cl)
        sd_cl_pool_trim(cl);
}

void sd_node_trim_host_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

void sd_node_release_on_cpu(sd_node_run *r, bool unets, bool clips)
{
    sd_cl *cl = sd_context_ext(sd_run_context(r), SD_EXT_OPENCL);
    if (cl && !cl->is_gpu) {
        sd_model_store_release(sd_run_context(r), unets, clips);
        sd_cl_pool_trim(cl); /* freed weights go to the pool first */
        sd_node_trim_host_memory();
    }
}
