/* Family checks before running. See family_check.h. */
#include "nodes/family_check.h"
#include "core/context.h"
#include "nodes/clip_vision.h"
#include "ml/adapters/controlnet.h"
#include "ml/adapters/lora.h"
#include "ml/families/checkpoint.h"
#include "ml/formats/gguf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { CKPT_MODEL, CKPT_CLIP, CKPT_VAE };

/* A library check's failure (message on the context) as this node's problem. */
static void report_failure(sd_node_check *c, const char *input)
{
    sd_context *ctx = sd_check_context(c);
    sd_check_problem(c, input, "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
}

/* Opens a file input's safetensors header; NULL when the input is linked, the file is missing
 * (validation reports it), invalid (a PyTorch pickle checkpoint, a tensor that does not fit its
 * bytes: reported here) or cannot be read (the run reports it). */
static sd_safetensors *open_header(sd_node_check *c, const char *input)
{
    const char *path = sd_check_file(c, input);
    sd_safetensors *st = NULL;
    if (path && sd_safetensors_open(sd_check_context(c), path, &st) == SD_ERR_INVALID)
        report_failure(c, input);
    sd_clear_error(sd_check_context(c));
    return st;
}

/* open_header for a file that may be GGUF (a name ending in .gguf): its tensor view, with *g the
 * open GGUF file to close after the view. */
static sd_safetensors *open_model_header(sd_node_check *c, const char *input, sd_gguf **g)
{
    const char *path = sd_check_file(c, input);
    size_t n = path ? strlen(path) : 0;
    *g = NULL;
    if (n < 5 || strcasecmp(path + n - 5, ".gguf"))
        return open_header(c, input);
    sd_context *ctx = sd_check_context(c);
    sd_safetensors *st = NULL;
    sd_status s = sd_gguf_open(ctx, path, g);
    if (!s)
        s = sd_gguf_tensor_view(ctx, *g, &st);
    if (s == SD_ERR_INVALID)
        report_failure(c, input);
    sd_clear_error(ctx);
    return st;
}

static void tag_latent(sd_node_check *c, size_t output, int channels, sd_family family)
{
    char tag[64];
    snprintf(tag, sizeof tag, "%d:%s", channels, family == SD_FAMILY_UNKNOWN ? "" : sd_family_name(family));
    sd_check_set_tag(c, output, tag);
}

/* The family part of an empty latent's tag: samplers widen or narrow an all-zero latent to the
 * model's channels (ComfyUI's fix_empty_latent_channels). */
#define EMPTY_TAG "empty"

/* True when the LATENT on input is one EmptyLatentImage or EmptySD3LatentImage made. */
static bool empty_latent(sd_node_check *c, const char *input)
{
    const char *tag = sd_check_tag(c, input), *colon = tag ? strchr(tag, ':') : NULL;
    return colon && !strcmp(colon + 1, EMPTY_TAG);
}

/* Reads a LATENT or VAE tag; false when the input carries none (or "none"). */
static bool latent_tag(sd_node_check *c, const char *input, int *channels, sd_family *family)
{
    const char *tag = sd_check_tag(c, input);
    char *end;
    long n = tag ? strtol(tag, &end, 10) : 0;
    if (!tag || end == tag || *end != ':' || n < 1)
        return false;
    *channels = (int)n;
    *family = sd_family_find(end + 1);
    return true;
}

/* "a 16-channel FLUX latent", "a 4-channel latent", "a 4-channel SD1.x VAE". */
static const char *describe(char *buf, size_t size, int channels, sd_family family, const char *what)
{
    if (family == SD_FAMILY_UNKNOWN)
        snprintf(buf, size, "a %d-channel %s", channels, what);
    else
        snprintf(buf, size, "a %d-channel %s %s", channels, sd_family_name(family), what);
    return buf;
}

/* The checkpoint's family tags on outputs 0..2 (the CLIP's: the family whose conditionings its
 * text encoders make); with_vision: the CLIP_VISION tag on output 3, or a problem when the file
 * has no image tower. */
static void check_checkpoint(sd_node_check *c, bool with_vision)
{
    sd_safetensors *st = open_header(c, "ckpt_name");
    if (!st)
        return;
    sd_checkpoint_config cfg;
    if (sd_checkpoint_inspect(sd_check_context(c), st, &cfg) == SD_ERR_INVALID) {
        report_failure(c, "ckpt_name");
    } else {
        sd_clear_error(sd_check_context(c));
        const char *name = sd_family_name(cfg.family), *text = sd_family_name(sd_family_text(cfg.family));
        /* FLUX's inspection leaves its text encoders to their loaders: an all-in-one file has them. */
        bool has_text = cfg.has_clip || (cfg.family == SD_FAMILY_FLUX && sd_safetensors_has_prefix(st, cfg.clip_prefix));
        sd_check_set_tag(c, CKPT_MODEL, name);
        if (has_text) {
            sd_check_set_tag(c, CKPT_CLIP, text);
        } else {
            char none[48]; /* "none:<family>": the text encoders' consumers name what is missing */
            snprintf(none, sizeof none, "none:%s", name);
            sd_check_set_tag(c, CKPT_CLIP, none);
        }
        if (cfg.has_vae)
            tag_latent(c, CKPT_VAE, cfg.vae.z_channels, cfg.family);
        else
            sd_check_set_tag(c, CKPT_VAE, "none");
        if (with_vision && cfg.has_vision) {
            char tag[32];
            sd_clip_vision_tag(&cfg.vision, tag, sizeof tag);
            sd_check_set_tag(c, CKPT_VAE + 1, tag);
        } else if (with_vision) {
            sd_check_problem(c, "ckpt_name", "%s: no CLIP image tower (embedder.model.visual.*) in this %s "
                             "checkpoint; load it with CheckpointLoaderSimple", sd_safetensors_path(st), name);
        }
    }
    sd_safetensors_close(st);
}

void sd_check_checkpoint_loader(sd_node_check *c)
{
    check_checkpoint(c, false);
}

void sd_check_unclip_checkpoint_loader(sd_node_check *c)
{
    check_checkpoint(c, true);
}

void sd_check_unet_loader(sd_node_check *c)
{
    sd_gguf *g = NULL;
    sd_safetensors *st = open_model_header(c, "unet_name", &g);
    if (!st)
        return;
    sd_checkpoint_config cfg;
    if (sd_unet_file_inspect(sd_check_context(c), st, &cfg) == SD_ERR_INVALID)
        report_failure(c, "unet_name");
    else
        sd_check_set_tag(c, 0, sd_family_name(cfg.family));
    sd_clear_error(sd_check_context(c));
    sd_safetensors_close(st);
    sd_gguf_close(g);
}

void sd_check_vae_loader(sd_node_check *c)
{
    sd_safetensors *st = open_header(c, "vae_name");
    if (!st)
        return;
    sd_checkpoint_config cfg;
    if (sd_vae_inspect(sd_check_context(c), st, &cfg) == SD_ERR_INVALID)
        report_failure(c, "vae_name");
    else
        tag_latent(c, 0, cfg.vae.z_channels,
                   sd_family_get(cfg.family)->checkpoint ? cfg.family : SD_FAMILY_UNKNOWN);
    sd_clear_error(sd_check_context(c));
    sd_safetensors_close(st);
}

#define UNCLIP_MARK ";unCLIP"

/* The family of a CONDITIONING tag ("SDXL" or "SDXL;unCLIP"), SD_FAMILY_UNKNOWN when none. */
static sd_family cond_family(const char *tag)
{
    char name[48];
    const char *mark = tag ? strchr(tag, ';') : NULL;
    if (!mark)
        return sd_family_find(tag);
    snprintf(name, sizeof name, "%.*s", (int)(mark - tag), tag);
    return sd_family_find(name);
}

static bool cond_has_unclip(const char *tag)
{
    const char *mark = tag ? strchr(tag, ';') : NULL;
    return mark && !strcmp(mark, UNCLIP_MARK);
}

/* Models whose ADM input takes unCLIPConditioning's image embeddings (SDXL's pooled part, SD2
 * unCLIP's whole vector). */
static bool takes_unclip(sd_family model)
{
    sd_adm_kind adm = sd_family_get(model)->adm;
    return adm == SD_ADM_SDXL || adm == SD_ADM_SDXL_REFINER || adm == SD_ADM_UNCLIP;
}

void sd_check_unclip_conditioning(sd_node_check *c)
{
    const char *tag = sd_check_tag(c, "conditioning");
    sd_family cond = cond_family(tag);
    char out[64];
    snprintf(out, sizeof out, "%s" UNCLIP_MARK, cond == SD_FAMILY_UNKNOWN ? "" : sd_family_name(cond));
    sd_check_set_tag(c, 0, out);
    /* the conditionings of SDXL, the refiner and SD2.x (SD2 unCLIP's text family) */
    bool some = takes_unclip(cond) || cond == sd_family_text(SD_FAMILY_SD2_UNCLIP);
    if (cond != SD_FAMILY_UNKNOWN && !some)
        sd_check_problem(c, "conditioning", "the conditioning was made by %s text encoders; no %s model takes unCLIP "
                         "image embeddings (SD2.x unCLIP and SDXL do)", sd_family_name(cond), sd_family_name(cond));
}

/* The family of the model on `input`, SD_FAMILY_UNKNOWN when not known. */
static sd_family model_family(sd_node_check *c, const char *input)
{
    return sd_family_find(sd_check_tag(c, input));
}

/* An SD1-named LoRA on an SD2.x model (told by a name the two share) whose width is not SD1.x's
 * 768 at full size: the load compares it with the model's (ml/adapters/lora.c). */
static bool shared_names(const sd_safetensors *st, const char *key, sd_family lora, sd_family model)
{
    const char *width_key;
    return lora == SD_FAMILY_SD1 && sd_family_text(model) == SD_FAMILY_SD2 && sd_lora_shared_name(key) &&
           sd_family_by_context_dim(sd_lora_context_width(st, &width_key)) != SD_FAMILY_SD1;
}

void sd_check_lora_loader(sd_node_check *c)
{
    sd_family model = model_family(c, "model");
    if (model != SD_FAMILY_UNKNOWN)
        sd_check_set_tag(c, 0, sd_family_name(model));
    sd_check_set_tag(c, 1, sd_check_tag(c, "clip")); /* (LoraLoaderModelOnly: no clip, no output 1) */
    sd_safetensors *st = open_header(c, "lora_name");
    if (!st)
        return;
    const char *key = NULL;
    sd_family lora = sd_lora_family(st, &key);
    char supported[128];
    if (model != SD_FAMILY_UNKNOWN && !sd_family_get(model)->lora)
        sd_check_problem(c, "lora_name", "%s: LoRAs on %s models are not supported; sdflow supports %s LoRAs",
                         sd_safetensors_path(st), sd_family_name(model),
                         sd_family_lora_list(supported, sizeof supported));
    else if (lora != SD_FAMILY_UNKNOWN && model != SD_FAMILY_UNKNOWN && lora != sd_family_text(model) &&
             !shared_names(st, key, lora, model))
        sd_check_problem(c, "lora_name", "%s: %s LoRA detected (key '%s'); the model is %s",
                         sd_safetensors_path(st), sd_family_name(lora), key, sd_family_name(model));
    sd_safetensors_close(st);
}

/* ControlNetLoader's and DiffControlNetLoader's check: the file's kind and family (a difference
 * file only for the latter, whose model must be of the ControlNet's family). */
static void check_controlnet_file(sd_node_check *c, bool difference_ok)
{
    sd_safetensors *st = open_header(c, "control_net_name");
    if (!st)
        return;
    sd_family family = SD_FAMILY_UNKNOWN, model = difference_ok ? model_family(c, "model") : SD_FAMILY_UNKNOWN;
    if (sd_controlnet_check_kind(sd_check_context(c), st, &family) == SD_ERR_INVALID)
        report_failure(c, "control_net_name");
    else if (!difference_ok && sd_controlnet_file_is_difference(st))
        sd_check_problem(c, "control_net_name", "%s: a difference ControlNet (weights to add to a model's UNet); "
                         "load it with DiffControlNetLoader", sd_safetensors_path(st));
    else if (sd_controlnet_file_is_difference(st) && model != SD_FAMILY_UNKNOWN && family != SD_FAMILY_UNKNOWN &&
             model != family)
        sd_check_problem(c, "control_net_name", "%s: %s difference ControlNet; the model is %s",
                         sd_safetensors_path(st), sd_family_name(family), sd_family_name(model));
    else if (family != SD_FAMILY_UNKNOWN)
        sd_check_set_tag(c, 0, sd_family_name(family));
    sd_clear_error(sd_check_context(c));
    sd_safetensors_close(st);
}

void sd_check_controlnet_loader(sd_node_check *c)
{
    check_controlnet_file(c, false);
}

void sd_check_diff_controlnet_loader(sd_node_check *c)
{
    check_controlnet_file(c, true);
}

/* The conditionings on inputs (output k passes input k's tag on) against the ControlNet's family. */
static void check_controlnet_conditionings(sd_node_check *c, const char *const *inputs, size_t n)
{
    sd_family net = sd_family_find(sd_check_tag(c, "control_net"));
    for (size_t k = 0; k < n; k++) {
        const char *tag = sd_check_tag(c, inputs[k]);
        sd_family cond = cond_family(tag);
        if (tag)
            sd_check_set_tag(c, k, tag);
        if (net != SD_FAMILY_UNKNOWN && cond != SD_FAMILY_UNKNOWN && cond != net)
            sd_check_problem(c, "control_net", "the ControlNet is %s; the conditioning on '%s' was made by %s text "
                             "encoders", sd_family_name(net), inputs[k], sd_family_name(cond));
    }
}

void sd_check_controlnet_apply(sd_node_check *c)
{
    check_controlnet_conditionings(c, (const char *const[]){"conditioning"}, 1);
}

void sd_check_controlnet_apply_advanced(sd_node_check *c)
{
    check_controlnet_conditionings(c, (const char *const[]){"positive", "negative"}, 2);
}

/* True (reported) when the "vae" input comes from a checkpoint without VAE tensors. */
static bool vae_missing(sd_node_check *c)
{
    const char *vae_tag = sd_check_tag(c, "vae");
    if (!vae_tag || strcmp(vae_tag, "none"))
        return false;
    sd_check_problem(c, "vae", "the checkpoint has no VAE (no first_stage_model.* tensors); load one with VAELoader");
    return true;
}

void sd_check_vae_decode(sd_node_check *c)
{
    if (vae_missing(c))
        return;
    int lc, vc;
    sd_family lf, vf;
    char a[96], b[96];
    if (latent_tag(c, "samples", &lc, &lf) && latent_tag(c, "vae", &vc, &vf) && lc != vc)
        sd_check_problem(c, "samples", "%s cannot be decoded by %s", describe(a, sizeof a, lc, lf, "latent"),
                         describe(b, sizeof b, vc, vf, "VAE"));
}

void sd_check_vae_encode(sd_node_check *c)
{
    if (vae_missing(c))
        return;
    int vc;
    sd_family vf;
    if (latent_tag(c, "vae", &vc, &vf))
        tag_latent(c, 0, vc, vf);
}

/* The node's conditioning inputs (those it has of KSampler's and the guiders' names) against the
 * model's family. */
static void check_conditionings(sd_node_check *c, sd_family model)
{
    static const char *const inputs[] = {"positive", "negative", "conditioning", "cond1", "cond2"};
    if (model == SD_FAMILY_UNKNOWN)
        return;
    for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
        const char *tag = sd_check_tag(c, inputs[k]);
        sd_family cond = cond_family(tag);
        if (cond != SD_FAMILY_UNKNOWN && cond != sd_family_text(model))
            sd_check_problem(c, inputs[k], "a conditioning made by %s text encoders cannot condition the %s model",
                             sd_family_name(cond), sd_family_name(model));
        else if (cond_has_unclip(tag) && !takes_unclip(model))
            sd_check_problem(c, inputs[k], "an unCLIP conditioning (CLIP vision image embeddings) cannot condition "
                             "the %s model, which has no unCLIP ADM input", sd_family_name(model));
    }
}

/* A sampling node whose model's family is tagged on `model_input` (a MODEL, or a GUIDER that
 * carries its model's tag): the latent must have the family's channel count. */
static void check_sampling(sd_node_check *c, const char *model_input)
{
    sd_family model = model_family(c, model_input);
    int lc;
    sd_family lf;
    bool known = latent_tag(c, "latent_image", &lc, &lf);
    if (model == SD_FAMILY_UNKNOWN) {
        if (known)
            tag_latent(c, 0, lc, lf);
        return;
    }
    check_conditionings(c, model);
    const sd_latent_format *want = sd_family_get(model)->latent;
    char a[96];
    if (known && want && lc != want->channels && !empty_latent(c, "latent_image"))
        sd_check_problem(c, "latent_image", "%s cannot be sampled by the %s model, which takes %d-channel latents",
                         describe(a, sizeof a, lc, lf, "latent"), sd_family_name(model), want->channels);
    if (want)
        tag_latent(c, 0, want->channels, model);
}

void sd_check_sampler(sd_node_check *c)
{
    check_sampling(c, "model");
}

void sd_check_guided_sampler(sd_node_check *c)
{
    check_sampling(c, "guider");
}

void sd_check_guider(sd_node_check *c)
{
    sd_family model = model_family(c, "model");
    if (model != SD_FAMILY_UNKNOWN)
        sd_check_set_tag(c, 0, sd_family_name(model));
    check_conditionings(c, model);
}

/* The CLIP's family as the conditioning's tag; a node made for one family names another. */
static void text_encode(sd_node_check *c, sd_family need)
{
    const char *tag = sd_check_tag(c, "clip");
    if (tag && !strncmp(tag, "none:", 5)) {
        sd_check_problem(c, "clip", "the %s checkpoint has no text encoders; load them with CLIPLoader or DualCLIPLoader",
                         tag + 5);
        return;
    }
    sd_family got = sd_family_find(tag);
    if (need != SD_FAMILY_UNKNOWN && got != SD_FAMILY_UNKNOWN && got != need)
        sd_check_problem(c, "clip", "the text encoders are %s; this node takes %s ones", sd_family_name(got),
                         sd_family_name(need));
    if (got != SD_FAMILY_UNKNOWN)
        sd_check_set_tag(c, 0, tag);
}

void sd_check_text_encode(sd_node_check *c)
{
    text_encode(c, SD_FAMILY_UNKNOWN);
}

void sd_check_text_encode_sdxl(sd_node_check *c)
{
    /* as ComfyUI, the node encodes for FLUX too (text_g for T5, text_l for CLIP-L) */
    bool flux = sd_family_find(sd_check_tag(c, "clip")) == SD_FAMILY_FLUX;
    text_encode(c, flux ? SD_FAMILY_FLUX : SD_FAMILY_SDXL);
}

void sd_check_text_encode_flux(sd_node_check *c)
{
    text_encode(c, SD_FAMILY_FLUX);
}

void sd_check_text_encode_refiner(sd_node_check *c)
{
    text_encode(c, SD_FAMILY_SDXL_REFINER);
}

void sd_check_empty_latent(sd_node_check *c, int channels)
{
    char tag[32];
    snprintf(tag, sizeof tag, "%d:" EMPTY_TAG, channels);
    sd_check_set_tag(c, 0, tag);
}
