/* MODEL, CLIP and VAE handle values (see model_handle.h). */
#include "nodes/model_handle.h"
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static void handle_free(void *p)
{
    sd_model_handle *h = p;
    sd_lora_stack_unref(h->lora); /* before the file: the patched view borrows its weights */
    sd_ipa_stack_unref(h->ipa);
    sd_loaded_unref(h->loaded);
    free(h);
}

sd_value *sd_node_model_value(sd_type type, sd_loaded *l, int clip_layer)
{
    return sd_node_model_value_lora(type, l, clip_layer, NULL);
}

sd_value *sd_node_model_value_lora(sd_type type, sd_loaded *l, int clip_layer, sd_lora_stack *lora)
{
    sd_model_handle *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    h->loaded = sd_loaded_ref(l);
    h->clip_layer = clip_layer;
    h->lora = lora ? sd_lora_stack_ref(lora) : NULL;
    h->sampling = -1;
    h->zsnr = false;
    h->rescale_cfg = -1.0;
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
        out->rescale_cfg = h->rescale_cfg;
        out->ipa = sd_ipa_stack_ref(h->ipa);
    }
    return v;
}

sd_status sd_node_model_sampling_of(sd_context *ctx, const sd_model_handle *h, sd_model_sampling *ms)
{
    const sd_checkpoint_config *cfg = sd_loaded_config(h->loaded);
    const sd_schedule_config *s = &cfg->schedule;
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

sd_status sd_node_model_clip(const sd_model_handle *h, sd_clip_model **out)
{
    return sd_node_model_text_encoder(h, 0, out);
}

sd_status sd_node_model_text_encoder(const sd_model_handle *h, int slot, sd_clip_model **out)
{
    sd_clip_model *base;
    sd_status st = sd_loaded_text_encoder(h->loaded, slot, &base);
    *out = base;
    return st || !h->lora ? st : sd_lora_stack_clip(h->lora, slot, base, out);
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
