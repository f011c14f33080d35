/* The IP-Adapter nodes of ComfyUI_IPAdapter_plus (IPAdapterPlus.py): IPAdapterModelLoader,
 * IPAdapterUnifiedLoader, IPAdapter, IPAdapterAdvanced, IPAdapterEncoder, IPAdapterEmbeds. Applying
 * an IP-Adapter encodes the images with the CLIP vision model, projects the features to image
 * tokens once (ml/adapters/ipadapter.h) and returns a MODEL that carries the patch; the sampler
 * hooks every patch of its MODEL into the UNet's attn2 layers (nodes/cfg_denoiser.c), so several
 * IP-Adapters stack and ControlNets work beside them. */
#include "ml/adapters/ipadapter.h"
#include "nodes/clip_vision.h"
#include "nodes/image_device.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The IPADAPTER value: the adapter and, from IPAdapterUnifiedLoader, its CLIP vision model. */
typedef struct ipa_value {
    sd_ipadapter *model;               /* one reference */
    sd_clip_vision_handle *clip_vision; /* owned, or NULL */
} ipa_value;

static void ipa_value_free(void *p)
{
    ipa_value *v = p;
    if (!v)
        return;
    sd_ipadapter_unref(v->model);
    sd_clip_vision_handle_free(v->clip_vision);
    free(v);
}

/* Opens an IP-Adapter file into a new IPADAPTER value's contents. */
static sd_status open_adapter(sd_node_run *r, const char *path, ipa_value **out)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *st = NULL;
    sd_ipadapter_config cfg;
    sd_cl *cl;
    ipa_value *v = *out = calloc(1, sizeof *v);
    sd_status s = v ? sd_safetensors_open(ctx, path, &st) : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = sd_ipadapter_inspect(ctx, st, &cfg);
    if (!s) s = sd_cl_get(ctx, &cl);
    if (!s && !(s = sd_ipadapter_new(cl, st, &cfg, &v->model)))
        st = NULL; /* the model owns it */
    sd_safetensors_close(st);
    if (s) {
        ipa_value_free(v);
        *out = NULL;
        return sd_run_fail(r, s);
    }
    return SD_OK;
}

static sd_status set_ipa_output(sd_node_run *r, size_t index, ipa_value *iv)
{
    sd_value *v = sd_value_handle(SD_TYPE_IPADAPTER, iv, ipa_value_free); /* frees iv on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, index, v);
    return SD_OK;
}

/* The family name an adapter is for, from its context width (2048 SDXL, 1024 SD2.x, else SD1.x). */
static const char *adapter_family(const sd_ipadapter_config *c)
{
    return c->cross_dim == 2048 ? "SDXL" : c->cross_dim == 1024 ? "SD2.x" : "SD1.x";
}

/* The IPADAPTER check tag: "<family>:<CLIP feature width>:<p|h>" (p: projected image_embeds,
 * h: hidden states). */
static void adapter_tag(const sd_ipadapter_config *c, char *tag, size_t size)
{
    snprintf(tag, size, "%s:%d:%c", adapter_family(c), c->clip_dim, c->kind == SD_IPA_PLAIN ? 'p' : 'h');
}

static sd_status run_model_loader(sd_node_run *r)
{
    ipa_value *iv;
    sd_status s = open_adapter(r, sd_run_file(r, "ipadapter_file"), &iv);
    return s ? s : set_ipa_output(r, 0, iv);
}

static void check_model_loader(sd_node_check *c)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "ipadapter_file");
    sd_safetensors *st = NULL;
    sd_ipadapter_config cfg;
    if (path && (sd_safetensors_open(ctx, path, &st) || sd_ipadapter_inspect(ctx, st, &cfg)))
        sd_check_problem(c, "ipadapter_file", "%s", sd_context_errmsg(ctx));
    else if (path) {
        char tag[48];
        adapter_tag(&cfg, tag, sizeof tag);
        sd_check_set_tag(c, 0, tag);
    }
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

static const sd_input_desc model_loader_in[] = {
    SD_IN_FILE_NAME("ipadapter_file", "ipadapter", "an IP-Adapter in models/ipadapter (.safetensors or .bin)"),
};
static const sd_output_desc ipa_out[] = {
    SD_OUT("IPADAPTER", SD_TYPE_IPADAPTER, "the IP-Adapter"),
};
const sd_node_desc sd_node_IPAdapterModelLoader = {
    .name = "IPAdapterModelLoader", .version = 1, .category = "ipadapter/loaders",
    .doc = "Opens an IP-Adapter: plain (4 image tokens), plus / plus-face (Resampler, 16 tokens) or full-face "
           "(MLP), for SD1.5 or SDXL.",
    .inputs = model_loader_in, .n_inputs = SD_COUNT(model_loader_in),
    .outputs = ipa_out, .n_outputs = SD_COUNT(ipa_out), .run = run_model_loader, .check = check_model_loader,
};

/* ---- Checks shared by the apply nodes ---- */

/* The adapter against the model's family and the CLIP vision model's widths, where tags show them. */
static void check_apply(sd_node_check *c)
{
    const char *ipa = sd_check_tag(c, "ipadapter"), *model = sd_check_tag(c, "model");
    const char *cv = sd_check_tag(c, "clip_vision");
    char fam[16] = "";
    int clip_dim = 0;
    char kind = 0;
    if (ipa && sscanf(ipa, "%15[^:]:%d:%c", fam, &clip_dim, &kind) != 3)
        ipa = NULL;
    if (model)
        sd_check_set_tag(c, 0, model);
    if (ipa && model && strcmp(fam, model) != 0)
        sd_check_problem(c, "ipadapter", "the IP-Adapter is for %s models; the model is %s", fam, model);
    int proj = 0, width = 0;
    if (ipa && cv && sscanf(cv, "%d:%d", &proj, &width) == 2 && (kind == 'p' ? proj : width) != clip_dim)
        sd_check_problem(c, "clip_vision", "the IP-Adapter takes %d-wide CLIP vision %s; this CLIP vision model gives "
                         "%d (a different encoder: ViT-H/14 for most IP-Adapters, ViT-bigG/14 for ip-adapter_sdxl)",
                         clip_dim, kind == 'p' ? "image_embeds" : "hidden states", kind == 'p' ? proj : width);
}

/* ---- Encoding and applying ---- */

typedef struct features {
    float *data; /* [n, tokens, width] */
    int n, tokens, width;
} features;

static void features_free(features *f)
{
    free(f->data);
    f->data = NULL;
}

/* True when the node declares the optional input and it is set (IPAdapter lacks some of
 * IPAdapterAdvanced's). */
static bool has(sd_node_run *r, const char *input)
{
    return sd_node_desc_input(sd_run_desc(r), input) && sd_run_has(r, input);
}

/* The CLIP vision model to use: the node's clip_vision input, else the unified loader's. */
static sd_clip_vision_handle *pick_clip_vision(sd_node_run *r, const ipa_value *iv)
{
    if (has(r, "clip_vision"))
        return sd_node_clip_vision_input(r, "clip_vision");
    if (!iv->clip_vision)
        sd_run_error(r, SD_ERR_INVALID, "missing CLIP vision model: connect 'clip_vision' or load the IP-Adapter "
                     "with IPAdapterUnifiedLoader");
    return iv->clip_vision;
}

/* The features an adapter takes from img (NULL: a black 224x224 image, the plus models' negative):
 * image_embeds for the plain projection, else the penultimate hidden states. */
static sd_status encode(sd_node_run *r, const sd_ipadapter_config *ac, sd_clip_vision_handle *cv, const sd_tensor *img,
                        features *out)
{
    const sd_clip_vision_config *c = &cv->cfg;
    bool plain = ac->kind == SD_IPA_PLAIN;
    int width = plain ? c->projection : c->width;
    if (width != ac->clip_dim)
        return sd_run_error(r, SD_ERR_INVALID, "the IP-Adapter takes %d-wide CLIP vision %s; the CLIP vision model gives "
                            "%d (wrong encoder for this adapter)", ac->clip_dim, plain ? "image_embeds" : "hidden states",
                            width);
    sd_tensor zero = {.ndim = 4, .shape = {1, 224, 224, 3}}; /* the black image of ComfyUI_IPAdapter_plus */
    if (!img) {
        if (!(zero.data = calloc(224 * 224 * 3, sizeof(float))))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        img = &zero;
    }
    int n = (int)img->shape[0], tokens = plain ? 1 : sd_clip_vision_tokens(c);
    size_t count = (size_t)n * (size_t)tokens * (size_t)width;
    *out = (features){.data = malloc(count * sizeof(float)), .n = n, .tokens = tokens, .width = width};
    sd_status s = out->data ? sd_node_clip_vision_encode(r, cv, img, true, plain ? out->data : NULL, NULL,
                                                         plain ? NULL : out->data)
                            : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    if (s)
        features_free(out);
    free(zero.data);
    return s;
}

/* combine_embeds over several images (not concat): add, subtract, average, norm average. */
static void combine(features *f, const char *how)
{
    if (f->n < 2 || strcmp(how, "concat") == 0)
        return;
    size_t per = (size_t)f->tokens * (size_t)f->width;
    for (size_t j = 0; j < per; j++) {
        double sum = 0, rest = 0, norm = 0;
        for (int i = 0; i < f->n; i++) {
            double x = f->data[(size_t)i * per + j];
            sum += x;
            rest += i ? x : 0;
            norm += x * x;
        }
        norm = sqrt(norm);
        double v = strcmp(how, "add") == 0        ? sum
                   : strcmp(how, "subtract") == 0 ? f->data[j] - rest / (f->n - 1)
                   : strcmp(how, "average") == 0  ? sum / f->n
                                                  : sum / (norm > 0 ? norm : 1) / f->n; /* norm average */
        f->data[j] = (float)v;
    }
    f->n = 1;
}

/* Image tokens [1, n * T, cross] of n feature sets (concatenated along the tokens). */
static sd_status project(sd_node_run *r, sd_ipadapter *m, const features *f, float **out, int *n_tokens)
{
    const sd_ipadapter_config *c = sd_ipadapter_config_of(m);
    int t = c->kind == SD_IPA_FULL ? f->tokens : c->tokens;
    *n_tokens = f->n * t;
    *out = malloc((size_t)*n_tokens * (size_t)c->cross_dim * sizeof **out);
    if (!*out)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_ipadapter_project(m, f->data, f->n, f->tokens, *out);
    if (s) {
        free(*out);
        *out = NULL;
        return sd_run_fail(r, s);
    }
    return SD_OK;
}

/* Repeats the first item of f to n items (tensor_to_size for a single negative). */
static sd_status repeat_to(sd_node_run *r, features *f, int n)
{
    if (f->n >= n)
        return SD_OK;
    size_t per = (size_t)f->tokens * (size_t)f->width;
    float *d = realloc(f->data, (size_t)n * per * sizeof *d);
    if (!d)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int i = f->n; i < n; i++)
        memcpy(d + (size_t)i * per, d + (size_t)(i % f->n) * per, per * sizeof *d);
    f->data = d;
    f->n = n;
    return SD_OK;
}

static int enum_index(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return 0;
}

/* The MODEL with one more IP-Adapter: cond / uncond features projected, the patch pushed. */
static sd_status apply(sd_node_run *r, const sd_model_handle *mh, sd_ipadapter *m, features *pos, features *neg,
                       const char *combine_how, double weight, sd_ipa_weight_type wt, sd_ipa_scaling scaling)
{
    sd_context *ctx = sd_run_context(r);
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(m);
    const sd_checkpoint_config *cc = sd_loaded_config(mh->loaded);
    if (cc->unet.context_dim != ac->cross_dim)
        return sd_run_error(r, SD_ERR_INVALID, "the IP-Adapter is for %s models (context %d); the model is %s (context %d)",
                            adapter_family(ac), ac->cross_dim, sd_family_name(cc->family), cc->unet.context_dim);
    if (neg->tokens != pos->tokens || neg->width != pos->width)
        return sd_run_error(r, SD_ERR_INVALID, "the negative features are [%d, %d] per image; the positive ones [%d, %d]",
                            neg->tokens, neg->width, pos->tokens, pos->width);
    combine(pos, combine_how);
    if (neg->n > pos->n)
        neg->n = pos->n; /* uncond[0] after combining */
    sd_status s = repeat_to(r, neg, pos->n);
    sd_model_sampling ms;
    if (!s && (s = sd_node_model_sampling_of(ctx, mh, &ms)))
        s = sd_node_model_fail(r, s);
    sd_ipa_patch *p = s ? NULL : calloc(1, sizeof *p);
    if (!s && !p)
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    int n_neg = 0;
    if (!s) {
        *p = (sd_ipa_patch){.model = sd_ipadapter_ref(m), .weight = weight, .weight_type = wt, .scaling = scaling,
                            .sigma_start = sd_model_sampling_percent_to_sigma(&ms, sd_run_float(r, "start_at")),
                            .sigma_end = sd_model_sampling_percent_to_sigma(&ms, sd_run_float(r, "end_at"))};
        s = project(r, m, pos, &p->cond, &p->n_tokens);
    }
    if (!s) s = project(r, m, neg, &p->uncond, &n_neg);
    const sd_tensor *mask = !s && has(r, "attn_mask") ? sd_value_tensor(sd_run_value(r, "attn_mask"), "mask") : NULL;
    if (mask && mask->ndim == 3) {
        size_t n = (size_t)(mask->shape[1] * mask->shape[2]);
        if (!(p->mask = malloc(n * sizeof *p->mask)))
            s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        else {
            memcpy(p->mask, mask->data, n * sizeof *p->mask);
            p->mask_h = mask->shape[1];
            p->mask_w = mask->shape[2];
        }
    }
    if (s) {
        sd_ipa_patch_free(p);
        return s;
    }
    sd_ipa_stack *stack = sd_ipa_stack_push(mh->ipa, p);
    sd_value *v = stack ? sd_node_model_derive(SD_TYPE_MODEL, mh, mh->lora) : NULL;
    if (!v) {
        sd_ipa_stack_unref(stack);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_model_handle *out = v->handle;
    sd_ipa_stack_unref(out->ipa);
    out->ipa = stack;
    sd_run_set_output(r, 0, v);
    sd_node_model_done(r);
    return SD_OK;
}

/* IPAdapterAdvanced / IPAdapter: encode image (and image_negative), then apply. */
static sd_status run_with_images(sd_node_run *r, const char *weight_type, const char *combine_how, sd_ipa_scaling scaling)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    const sd_value *iv = sd_run_value(r, "ipadapter");
    const ipa_value *ipa = iv && iv->type == SD_TYPE_IPADAPTER ? iv->handle : NULL;
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    if (!mh || !img)
        return SD_ERR_INVALID;
    if (!ipa)
        return sd_run_error(r, SD_ERR_INVALID, "input 'ipadapter' carries no IP-Adapter");
    sd_clip_vision_handle *cv = pick_clip_vision(r, ipa);
    if (!cv)
        return SD_ERR_INVALID;
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(ipa->model);
    features pos = {0}, neg = {0};
    const sd_tensor *nimg = has(r, "image_negative") ? sd_node_image_tensor(r, "image_negative") : NULL;
    sd_status s = encode(r, ac, cv, img, &pos);
    if (!s && (nimg || ac->kind != SD_IPA_PLAIN))
        s = encode(r, ac, cv, nimg, &neg);
    else if (!s) { /* zeros like the positive */
        neg = (features){.data = calloc((size_t)pos.n * (size_t)pos.width, sizeof(float)), .n = pos.n, .tokens = 1,
                         .width = pos.width};
        if (!neg.data)
            s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    if (!s)
        s = apply(r, mh, ipa->model, &pos, &neg, combine_how, sd_run_float(r, "weight"),
                  (sd_ipa_weight_type)enum_index(sd_ipa_weight_type_names, weight_type), scaling);
    features_free(&pos);
    features_free(&neg);
    return s;
}

static sd_status run_advanced(sd_node_run *r)
{
    return run_with_images(r, sd_run_string(r, "weight_type"), sd_run_string(r, "combine_embeds"),
                           (sd_ipa_scaling)enum_index(sd_ipa_scaling_names, sd_run_string(r, "embeds_scaling")));
}

/* IPAdapter (simple): standard = linear, prompt is more important = ease out, style transfer. */
static sd_status run_simple(sd_node_run *r)
{
    const char *t = sd_run_string(r, "weight_type");
    const char *wt = strncmp(t, "style", 5) == 0 ? "style transfer" : strcmp(t, "prompt is more important") == 0 ? "ease out"
                                                                                                                  : "linear";
    return run_with_images(r, wt, "concat", SD_IPA_V_ONLY);
}

#define IN_APPLY_COMMON                                                                                            \
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model to patch"),                                                      \
    SD_IN_LINK("ipadapter", SD_TYPE_IPADAPTER, "from IPAdapterModelLoader or IPAdapterUnifiedLoader")
#define IN_RANGE                                                                                                   \
    SD_IN_FLOAT("start_at", "0.0", 0.0, 1.0, "fraction of the schedule where the adapter starts acting"),         \
    SD_IN_FLOAT("end_at", "1.0", 0.0, 1.0, "fraction of the schedule where it stops")
#define IN_SCALING                                                                                                 \
    SD_IN_ENUM("embeds_scaling", "V only", sd_ipa_scaling_names,                                                    \
               "how the weight enters: on the output (V only), on keys and values, with a channel penalty")

static const char *const combine_names[] = {"concat", "add", "subtract", "average", "norm average", NULL};
static const char *const simple_weight_types[] = {"standard", "prompt is more important", "style transfer", NULL};
static const sd_input_desc advanced_in[] = {
    IN_APPLY_COMMON,
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the reference images (centre-cropped to the CLIP vision size)"),
    SD_IN_FLOAT("weight", "1.0", -1.0, 5.0, "strength of the image prompt"),
    SD_IN_ENUM("weight_type", "linear", sd_ipa_weight_type_names,
               "how the weight is spread over the UNet's layers (ComfyUI_IPAdapter_plus's types)"),
    SD_IN_ENUM("combine_embeds", "concat", combine_names,
               "several images: their tokens side by side (concat) or one embedding combined from theirs"),
    IN_RANGE,
    IN_SCALING,
    SD_IN_LINK_OPT("image_negative", SD_TYPE_IMAGE, "what the negative side sees instead of nothing"),
    SD_IN_LINK_OPT("attn_mask", SD_TYPE_MASK, "where the image prompt acts (first mask; resized to each layer)"),
    SD_IN_LINK_OPT("clip_vision", SD_TYPE_CLIP_VISION, "the CLIP vision model (else the unified loader's)"),
};
static const sd_output_desc model_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the model with the IP-Adapter applied at sampling time"),
};
const sd_node_desc sd_node_IPAdapterAdvanced = {
    .name = "IPAdapterAdvanced", .version = 1, .category = "ipadapter",
    .doc = "Applies an IP-Adapter: image prompts through decoupled cross-attention at every attn2 layer.",
    .inputs = advanced_in, .n_inputs = SD_COUNT(advanced_in),
    .outputs = model_out, .n_outputs = SD_COUNT(model_out), .run = run_advanced, .check = check_apply,
};

static const sd_input_desc simple_in[] = {
    IN_APPLY_COMMON,
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the reference images"),
    SD_IN_FLOAT("weight", "1.0", -1.0, 3.0, "strength of the image prompt"),
    IN_RANGE,
    SD_IN_ENUM("weight_type", "standard", simple_weight_types,
               "standard (linear), prompt is more important (ease out), style transfer"),
    SD_IN_LINK_OPT("attn_mask", SD_TYPE_MASK, "where the image prompt acts"),
};
const sd_node_desc sd_node_IPAdapter = {
    .name = "IPAdapter", .version = 1, .category = "ipadapter",
    .doc = "Applies an IP-Adapter loaded with IPAdapterUnifiedLoader (the simple node).",
    .inputs = simple_in, .n_inputs = SD_COUNT(simple_in),
    .outputs = model_out, .n_outputs = SD_COUNT(model_out), .run = run_simple, .check = check_apply,
};

/* ---- Embeds ---- */

static sd_status set_embeds(sd_node_run *r, size_t index, const features *f)
{
    int64_t shape[3] = {f->n, f->tokens, f->width};
    sd_value *v = sd_value_new(SD_TYPE_EMBEDS);
    sd_tensor *t = v ? sd_value_add_tensor(v, "embeds", 3, shape) : NULL;
    if (!t) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    memcpy(t->data, f->data, (size_t)f->n * (size_t)f->tokens * (size_t)f->width * sizeof(float));
    sd_run_set_output(r, index, v);
    return SD_OK;
}

static sd_status run_encoder(sd_node_run *r)
{
    const sd_value *iv = sd_run_value(r, "ipadapter");
    const ipa_value *ipa = iv && iv->type == SD_TYPE_IPADAPTER ? iv->handle : NULL;
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    if (!img)
        return SD_ERR_INVALID;
    if (!ipa)
        return sd_run_error(r, SD_ERR_INVALID, "input 'ipadapter' carries no IP-Adapter");
    sd_clip_vision_handle *cv = pick_clip_vision(r, ipa);
    if (!cv)
        return SD_ERR_INVALID;
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(ipa->model);
    features pos = {0}, neg = {0};
    sd_status s = encode(r, ac, cv, img, &pos);
    if (!s && ac->kind != SD_IPA_PLAIN)
        s = encode(r, ac, cv, NULL, &neg);
    else if (!s && !(neg.data = calloc((size_t)pos.n * (size_t)pos.width, sizeof(float))))
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    else if (!s)
        neg.n = pos.n, neg.tokens = 1, neg.width = pos.width;
    float w = (float)sd_run_float(r, "weight");
    for (size_t i = 0; !s && w != 1.0f && i < (size_t)pos.n * (size_t)pos.tokens * (size_t)pos.width; i++)
        pos.data[i] *= w;
    if (!s) s = set_embeds(r, 0, &pos);
    if (!s) s = set_embeds(r, 1, &neg);
    features_free(&pos);
    features_free(&neg);
    return s;
}

static const sd_input_desc encoder_in[] = {
    SD_IN_LINK("ipadapter", SD_TYPE_IPADAPTER, "the IP-Adapter the features are for"),
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the reference images"),
    SD_IN_FLOAT("weight", "1.0", -1.0, 3.0, "multiplies the positive features"),
    SD_IN_LINK_OPT("clip_vision", SD_TYPE_CLIP_VISION, "the CLIP vision model (else the unified loader's)"),
};
static const sd_output_desc encoder_out[] = {
    SD_OUT("pos_embed", SD_TYPE_EMBEDS, "the images' CLIP features [images, tokens, width]"),
    SD_OUT("neg_embed", SD_TYPE_EMBEDS, "the negative features (zeros, or a black image's for plus models)"),
};
const sd_node_desc sd_node_IPAdapterEncoder = {
    .name = "IPAdapterEncoder", .version = 1, .category = "ipadapter/embeds",
    .doc = "Encodes images into the CLIP vision features an IP-Adapter takes (for IPAdapterEmbeds).",
    .inputs = encoder_in, .n_inputs = SD_COUNT(encoder_in),
    .outputs = encoder_out, .n_outputs = SD_COUNT(encoder_out), .run = run_encoder,
};

static sd_status read_embeds(sd_node_run *r, const char *input, const sd_ipadapter_config *ac, features *f)
{
    const sd_tensor *t = sd_value_tensor(sd_run_value(r, input), "embeds");
    if (!t || t->ndim != 3 || t->shape[2] != ac->clip_dim || t->shape[0] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input '%s' is not [n, tokens, %d] CLIP features for this IP-Adapter",
                            input, ac->clip_dim);
    size_t n = (size_t)(t->shape[0] * t->shape[1] * t->shape[2]);
    *f = (features){.data = malloc(n * sizeof(float)), .n = (int)t->shape[0], .tokens = (int)t->shape[1],
                    .width = (int)t->shape[2]};
    if (!f->data)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    memcpy(f->data, t->data, n * sizeof(float));
    return SD_OK;
}

static sd_status run_embeds(sd_node_run *r)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    const sd_value *iv = sd_run_value(r, "ipadapter");
    const ipa_value *ipa = iv && iv->type == SD_TYPE_IPADAPTER ? iv->handle : NULL;
    if (!mh)
        return SD_ERR_INVALID;
    if (!ipa)
        return sd_run_error(r, SD_ERR_INVALID, "input 'ipadapter' carries no IP-Adapter");
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(ipa->model);
    features pos = {0}, neg = {0};
    sd_status s = read_embeds(r, "pos_embed", ac, &pos);
    if (!s && has(r, "neg_embed"))
        s = read_embeds(r, "neg_embed", ac, &neg);
    else if (!s && ac->kind != SD_IPA_PLAIN) {
        sd_clip_vision_handle *cv = pick_clip_vision(r, ipa);
        s = cv ? encode(r, ac, cv, NULL, &neg) : SD_ERR_INVALID;
    } else if (!s && !(neg.data = calloc((size_t)pos.n * (size_t)pos.tokens * (size_t)pos.width, sizeof(float))))
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    else if (!s)
        neg.n = pos.n, neg.tokens = pos.tokens, neg.width = pos.width;
    if (!s)
        s = apply(r, mh, ipa->model, &pos, &neg, "concat", sd_run_float(r, "weight"),
                  (sd_ipa_weight_type)enum_index(sd_ipa_weight_type_names, sd_run_string(r, "weight_type")),
                  (sd_ipa_scaling)enum_index(sd_ipa_scaling_names, sd_run_string(r, "embeds_scaling")));
    features_free(&pos);
    features_free(&neg);
    return s;
}

static const sd_input_desc embeds_in[] = {
    IN_APPLY_COMMON,
    SD_IN_LINK("pos_embed", SD_TYPE_EMBEDS, "from IPAdapterEncoder"),
    SD_IN_FLOAT("weight", "1.0", -1.0, 3.0, "strength of the image prompt"),
    SD_IN_ENUM("weight_type", "linear", sd_ipa_weight_type_names, "how the weight is spread over the layers"),
    IN_RANGE,
    IN_SCALING,
    SD_IN_LINK_OPT("neg_embed", SD_TYPE_EMBEDS, "the negative features (else zeros / a black image's)"),
    SD_IN_LINK_OPT("attn_mask", SD_TYPE_MASK, "where the image prompt acts"),
    SD_IN_LINK_OPT("clip_vision", SD_TYPE_CLIP_VISION, "for the plus models' default negative"),
};
const sd_node_desc sd_node_IPAdapterEmbeds = {
    .name = "IPAdapterEmbeds", .version = 1, .category = "ipadapter/embeds",
    .doc = "Applies an IP-Adapter from precomputed CLIP features (IPAdapterEncoder).",
    .inputs = embeds_in, .n_inputs = SD_COUNT(embeds_in),
    .outputs = model_out, .n_outputs = SD_COUNT(model_out), .run = run_embeds, .check = check_apply,
};

/* ---- IPAdapterUnifiedLoader ---- */

static const char *const presets[] = {"LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)",
                                      "VIT-G (medium strength)", "PLUS (high strength)", "PLUS FACE (portraits)",
                                      "FULL FACE - SD1.5 only (portraits stronger)", NULL};

/* The file names each preset looks for, as the files of ComfyUI_IPAdapter_plus's README are
 * called (its regular expressions in utils.py match them): [preset][SD1.5 / SDXL], and the CLIP
 * vision file (ViT-bigG for VIT-G, else ViT-H). NULL: the preset has no model for that family. */
#define NAMES(base) {base ".safetensors", base ".bin"}
static const char *const adapter_files[6][2][2] = {
    {NAMES("ip-adapter_sd15_light_v11"), {NULL, NULL}},
    {NAMES("ip-adapter_sd15"), NAMES("ip-adapter_sdxl_vit-h")},
    {NAMES("ip-adapter_sd15_vit-G"), NAMES("ip-adapter_sdxl")},
    {NAMES("ip-adapter-plus_sd15"), NAMES("ip-adapter-plus_sdxl_vit-h")},
    {NAMES("ip-adapter-plus-face_sd15"), NAMES("ip-adapter-plus-face_sdxl_vit-h")},
    {NAMES("ip-adapter-full-face_sd15"), {NULL, NULL}},
};
static const char *const clip_vision_files[2][4] = {
    {"CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "ViT-H-14-laion2B-s32B-b79K.safetensors",
     "CLIP-ViT-H-14-laion2B-s32B-b79K.bin", "ViT-H-14-laion2B-s32B-b79K.bin"},
    {"CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "ViT-bigG-14-laion2B-39B-b160k.safetensors",
     "CLIP-ViT-bigG-14-laion2B-39B-b160k.bin", "ViT-bigG-14-laion2B-39B-b160k.bin"},
};

static int preset_index(const char *preset)
{
    return preset ? enum_index(presets, preset) : -1;
}

static sd_status unified_files(sd_node_files *f)
{
    int p = preset_index(sd_files_literal(f, "preset"));
    if (p < 0)
        return SD_OK;
    sd_status s = sd_files_find(f, "clip_vision", clip_vision_files[p == 2], 4);
    for (int xl = 0; !s && xl < 2; xl++)
        if (adapter_files[p][xl][0])
            s = sd_files_find(f, "ipadapter", adapter_files[p][xl], 2);
    return s;
}

static sd_status run_unified(sd_node_run *r)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    if (!mh)
        return SD_ERR_INVALID;
    const char *preset = sd_run_string(r, "preset");
    int p = preset_index(preset);
    bool xl = sd_loaded_config(mh->loaded)->family == SD_FAMILY_SDXL;
    const char *cv_path = NULL, *ipa_path = NULL;
    if (sd_run_linked(r, "preset"))
        return sd_run_error(r, SD_ERR_INVALID, "'preset' must be given as a value, not through a link");
    if (!adapter_files[p][xl][0])
        return sd_run_error(r, SD_ERR_INVALID, "the preset '%s' has no %s model", preset, xl ? "SDXL" : "SD1.5");
    sd_status s = sd_run_found_file(r, "clip_vision", clip_vision_files[p == 2], 4, &cv_path);
    if (!s && !cv_path)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "no CLIP vision model for '%s' in models/clip_vision (looked for %s)",
                            preset, clip_vision_files[p == 2][0]);
    if (!s) s = sd_run_found_file(r, "ipadapter", adapter_files[p][xl], 2, &ipa_path);
    if (!s && !ipa_path)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "no IP-Adapter for '%s' in models/ipadapter (looked for %s)", preset,
                            adapter_files[p][xl][0]);
    if (s)
        return sd_run_fail(r, s);
    ipa_value *iv = NULL;
    if ((s = open_adapter(r, ipa_path, &iv)))
        return s;
    if ((s = sd_clip_vision_handle_open(sd_run_context(r), cv_path, &iv->clip_vision))) {
        ipa_value_free(iv);
        return sd_run_fail(r, s);
    }
    sd_value *mv = sd_node_model_derive(SD_TYPE_MODEL, mh, mh->lora);
    if (!mv) {
        ipa_value_free(iv);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, mv);
    return set_ipa_output(r, 1, iv);
}

static const sd_input_desc unified_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model (its family picks the SD1.5 or SDXL file)"),
    SD_IN_ENUM("preset", "STANDARD (medium strength)", presets,
               "which IP-Adapter and CLIP vision files to load from models/ipadapter and models/clip_vision"),
    SD_IN_LINK_OPT("ipadapter", SD_TYPE_IPADAPTER, "accepted for ComfyUI compatibility (not used)"),
};
static const sd_output_desc unified_out[] = {
    SD_OUT("model", SD_TYPE_MODEL, "the model, unchanged"),
    SD_OUT("ipadapter", SD_TYPE_IPADAPTER, "the IP-Adapter with its CLIP vision model"),
};
const sd_node_desc sd_node_IPAdapterUnifiedLoader = {
    .name = "IPAdapterUnifiedLoader", .version = 1, .category = "ipadapter",
    .doc = "Loads the IP-Adapter and CLIP vision model of a preset by their usual file names.",
    .inputs = unified_in, .n_inputs = SD_COUNT(unified_in),
    .outputs = unified_out, .n_outputs = SD_COUNT(unified_out), .run = run_unified, .files = unified_files,
};
