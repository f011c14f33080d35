/* The IP-Adapter nodes of ComfyUI_IPAdapter_plus (IPAdapterPlus.py): IPAdapterModelLoader,
 * IPAdapterUnifiedLoader, IPAdapter, IPAdapterAdvanced, IPAdapterEncoder, IPAdapterEmbeds, and for
 * FaceID IPAdapterUnifiedLoaderFaceID and IPAdapterFaceID (with sdflow's SdflowLoadFaceIDEmbeds for
 * precomputed face embeddings). Applying
 * an IP-Adapter encodes the images with the CLIP vision model, projects the features to image
 * tokens once (ml/adapters/ipadapter.h) and returns a MODEL that carries the patch; the sampler
 * hooks every patch of its MODEL into the UNet's attn2 layers (nodes/cfg_denoiser.c), so several
 * IP-Adapters stack and ControlNets work beside them. */
#include "ml/adapters/ipadapter.h"
#include "nodes/clip_vision.h"
#include "nodes/image_device.h"
#include "nodes/insightface.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The IPADAPTER value: the adapter and, from the unified loaders, its CLIP vision model and (FaceID)
 * the InsightFace pack. */
typedef struct ipa_value {
    sd_ipadapter *model;               /* one reference */
    sd_clip_vision_handle *clip_vision; /* owned, or NULL */
    sd_face_analysis *insightface;      /* one reference, or NULL */
} ipa_value;

static void ipa_value_free(void *p)
{
    ipa_value *v = p;
    if (!v)
        return;
    sd_ipadapter_unref(v->model);
    sd_clip_vision_handle_free(v->clip_vision);
    sd_face_analysis_unref(v->insightface);
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

static bool is_faceid(const sd_ipadapter_config *c)
{
    return c->kind == SD_IPA_FACEID || c->kind == SD_IPA_FACEID_PLUS;
}

/* The IPADAPTER check tag: "<family>:<CLIP feature width>:<p|h|f|F>" (p: projected image_embeds,
 * h: hidden states, f: FaceID (no CLIP features), F: FaceID Plus (the face crop's hidden states)). */
static void adapter_tag(const sd_ipadapter_config *c, char *tag, size_t size)
{
    char kind = c->kind == SD_IPA_PLAIN ? 'p' : c->kind == SD_IPA_FACEID ? 'f' : c->kind == SD_IPA_FACEID_PLUS ? 'F' : 'h';
    snprintf(tag, size, "%s:%d:%c", adapter_family(c), c->clip_dim, kind);
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
    .doc = "Opens an IP-Adapter: plain (4 image tokens), plus / plus-face (Resampler, 16 tokens), full-face "
           "(MLP), or FaceID, FaceID Plus (v2) and portrait, for SD1.5 or SDXL.",
    .inputs = model_loader_in, .n_inputs = SD_COUNT(model_loader_in),
    .outputs = ipa_out, .n_outputs = SD_COUNT(ipa_out), .run = run_model_loader, .check = check_model_loader,
};

/* ---- Checks shared by the apply nodes ---- */

/* The adapter against the model's family, the node (FaceID adapters only on IPAdapterFaceID) and
 * the CLIP vision model's widths, where tags show them. */
static void check_adapter(sd_node_check *c, bool faceid_node)
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
    bool faceid = kind == 'f' || kind == 'F';
    if (ipa && faceid != faceid_node)
        sd_check_problem(c, "ipadapter", faceid ? "a FaceID IP-Adapter: apply it with IPAdapterFaceID"
                                                : "not a FaceID IP-Adapter: apply it with IPAdapterAdvanced");
    int proj = 0, width = 0;
    if (ipa && kind != 'f' && cv && sscanf(cv, "%d:%d", &proj, &width) == 2 && (kind == 'p' ? proj : width) != clip_dim)
        sd_check_problem(c, "clip_vision", "the IP-Adapter takes %d-wide CLIP vision %s; this CLIP vision model gives "
                         "%d (a different encoder: ViT-H/14 for most IP-Adapters, ViT-bigG/14 for ip-adapter_sdxl)",
                         clip_dim, kind == 'p' ? "image_embeds" : "hidden states", kind == 'p' ? proj : width);
}

static void check_apply(sd_node_check *c)
{
    check_adapter(c, false);
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

/* The IPADAPTER input's value (NULL after the node's error): FaceID adapters only for the FaceID
 * node, the others only for the others. */
static const ipa_value *adapter_input(sd_node_run *r, bool faceid_node)
{
    const sd_value *v = sd_run_value(r, "ipadapter");
    const ipa_value *ipa = v && v->type == SD_TYPE_IPADAPTER ? v->handle : NULL;
    if (!ipa)
        sd_run_error(r, SD_ERR_INVALID, "input 'ipadapter' carries no IP-Adapter");
    else if (is_faceid(sd_ipadapter_config_of(ipa->model)) != faceid_node)
        sd_run_error(r, SD_ERR_INVALID, faceid_node ? "not a FaceID IP-Adapter: apply it with IPAdapterAdvanced"
                                                    : "a FaceID IP-Adapter: apply it with IPAdapterFaceID");
    else
        return ipa;
    return NULL;
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

/* SD_OK when the adapter fits the model's context width (else the node's error). */
static sd_status check_context(sd_node_run *r, const sd_model_handle *mh, const sd_ipadapter_config *ac)
{
    const sd_checkpoint_config *cc = sd_loaded_config(mh->loaded);
    if (cc->unet.context_dim != ac->cross_dim)
        return sd_run_error(r, SD_ERR_INVALID, "the IP-Adapter is for %s models (context %d); the model is %s (context %d)",
                            adapter_family(ac), ac->cross_dim, sd_family_name(cc->family), cc->unet.context_dim);
    return SD_OK;
}

/* Sets output 0 to the MODEL with one more IP-Adapter: the patch over tokens cond / uncond
 * ([n_tokens, cross] each; taken, also on failure) with the node's start_at / end_at / attn_mask. */
static sd_status push_patch(sd_node_run *r, const sd_model_handle *mh, sd_ipadapter *m, float *cond, float *uncond,
                            int n_tokens, double weight, sd_ipa_weight_type wt, sd_ipa_scaling scaling)
{
    sd_context *ctx = sd_run_context(r);
    sd_model_sampling ms;
    sd_status s = sd_node_model_sampling_of(ctx, mh, &ms);
    if (s)
        s = sd_node_model_fail(r, s);
    sd_ipa_patch *p = s ? NULL : calloc(1, sizeof *p);
    if (!s && !p)
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    if (s) {
        free(cond), free(uncond);
        return s;
    }
    *p = (sd_ipa_patch){.model = sd_ipadapter_ref(m), .cond = cond, .uncond = uncond, .n_tokens = n_tokens,
                        .weight = weight, .weight_type = wt, .scaling = scaling,
                        .sigma_start = sd_model_sampling_percent_to_sigma(&ms, sd_run_float(r, "start_at")),
                        .sigma_end = sd_model_sampling_percent_to_sigma(&ms, sd_run_float(r, "end_at"))};
    const sd_tensor *mask = has(r, "attn_mask") ? sd_value_tensor(sd_run_value(r, "attn_mask"), "mask") : NULL;
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

/* The MODEL with one more IP-Adapter: cond / uncond features projected, the patch pushed. */
static sd_status apply(sd_node_run *r, const sd_model_handle *mh, sd_ipadapter *m, features *pos, features *neg,
                       const char *combine_how, double weight, sd_ipa_weight_type wt, sd_ipa_scaling scaling)
{
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(m);
    sd_status s = check_context(r, mh, ac);
    if (s)
        return s;
    if (neg->tokens != pos->tokens || neg->width != pos->width)
        return sd_run_error(r, SD_ERR_INVALID, "the negative features are [%d, %d] per image; the positive ones [%d, %d]",
                            neg->tokens, neg->width, pos->tokens, pos->width);
    combine(pos, combine_how);
    if (neg->n > pos->n)
        neg->n = pos->n; /* uncond[0] after combining */
    s = repeat_to(r, neg, pos->n);
    float *cond = NULL, *uncond = NULL;
    int n_tokens = 0, n_neg = 0;
    if (!s) s = project(r, m, pos, &cond, &n_tokens);
    if (!s) s = project(r, m, neg, &uncond, &n_neg);
    if (s) {
        free(cond), free(uncond);
        return s;
    }
    return push_patch(r, mh, m, cond, uncond, n_tokens, weight, wt, scaling);
}

/* IPAdapterAdvanced / IPAdapter: encode image (and image_negative), then apply. */
static sd_status run_with_images(sd_node_run *r, const char *weight_type, const char *combine_how, sd_ipa_scaling scaling)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    const ipa_value *ipa = mh && img ? adapter_input(r, false) : NULL;
    if (!ipa)
        return SD_ERR_INVALID;
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
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    const ipa_value *ipa = img ? adapter_input(r, false) : NULL;
    if (!ipa)
        return SD_ERR_INVALID;
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
    const ipa_value *ipa = mh ? adapter_input(r, false) : NULL;
    if (!ipa)
        return SD_ERR_INVALID;
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

/* Opens a preset's IP-Adapter (the first of names[0..n) found in models/ipadapter) and CLIP vision
 * model (ViT-bigG when bigg, else ViT-H) into a new IPADAPTER value's contents. */
static sd_status unified_open(sd_node_run *r, const char *preset, const char *const *names, size_t n, bool bigg,
                              ipa_value **out)
{
    const char *cv_path = NULL, *ipa_path = NULL;
    sd_status s = sd_run_found_file(r, "clip_vision", clip_vision_files[bigg], 4, &cv_path);
    if (!s && !cv_path)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "no CLIP vision model for '%s' in models/clip_vision (looked for %s)",
                            preset, clip_vision_files[bigg][0]);
    if (!s) s = sd_run_found_file(r, "ipadapter", names, n, &ipa_path);
    if (!s && !ipa_path)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "no IP-Adapter for '%s' in models/ipadapter (looked for %s)", preset,
                            names[0]);
    if (s)
        return sd_run_fail(r, s);
    if ((s = open_adapter(r, ipa_path, out)))
        return s;
    if ((s = sd_clip_vision_handle_open(sd_run_context(r), cv_path, &(*out)->clip_vision))) {
        ipa_value_free(*out);
        *out = NULL;
        return sd_run_fail(r, s);
    }
    return SD_OK;
}

/* Sets the outputs: the MODEL (h with stack lora) and the IPADAPTER value iv (taken). */
static sd_status set_unified_outputs(sd_node_run *r, const sd_model_handle *h, sd_lora_stack *lora, ipa_value *iv)
{
    sd_value *mv = sd_node_model_derive(SD_TYPE_MODEL, h, lora);
    if (!mv) {
        ipa_value_free(iv);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, mv);
    return set_ipa_output(r, 1, iv);
}

static sd_status run_unified(sd_node_run *r)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    if (!mh)
        return SD_ERR_INVALID;
    const char *preset = sd_run_string(r, "preset");
    int p = preset_index(preset);
    bool xl = sd_loaded_config(mh->loaded)->family == SD_FAMILY_SDXL;
    if (sd_run_linked(r, "preset"))
        return sd_run_error(r, SD_ERR_INVALID, "'preset' must be given as a value, not through a link");
    if (!adapter_files[p][xl][0])
        return sd_run_error(r, SD_ERR_INVALID, "the preset '%s' has no %s model", preset, xl ? "SDXL" : "SD1.5");
    ipa_value *iv = NULL;
    sd_status s = unified_open(r, preset, adapter_files[p][xl], 2, p == 2, &iv);
    return s ? s : set_unified_outputs(r, mh, mh->lora, iv);
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

/* ---- FaceID: IPAdapterUnifiedLoaderFaceID, IPAdapterFaceID, SdflowLoadFaceIDEmbeds ---- */

static const char *const faceid_presets[] = {"FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2",
                                             "FACEID PORTRAIT (style transfer)",
                                             "FACEID PORTRAIT UNNORM - SDXL only (strong)", NULL};
/* Each preset's files as ComfyUI_IPAdapter_plus's README names them (its utils.py patterns match
 * them): [preset][SD1.5 / SDXL] adapter names (the portrait v11 first), and the FaceID LoRA in
 * models/loras (NULL: the preset takes none). */
#define NAMES2(a, b) {a ".safetensors", a ".bin", b ".safetensors", b ".bin"}
static const char *const faceid_files[5][2][4] = {
    {NAMES("ip-adapter-faceid_sd15"), NAMES("ip-adapter-faceid_sdxl")},
    {NAMES("ip-adapter-faceid-plus_sd15"), {NULL}},
    {NAMES("ip-adapter-faceid-plusv2_sd15"), NAMES("ip-adapter-faceid-plusv2_sdxl")},
    {NAMES2("ip-adapter-faceid-portrait-v11_sd15", "ip-adapter-faceid-portrait_sd15"),
     NAMES("ip-adapter-faceid-portrait_sdxl")},
    {{NULL}, NAMES("ip-adapter-faceid-portrait_sdxl_unnorm")},
};
static const char *const faceid_loras[5][2] = {
    {"ip-adapter-faceid_sd15_lora.safetensors", "ip-adapter-faceid_sdxl_lora.safetensors"},
    {"ip-adapter-faceid-plus_sd15_lora.safetensors", NULL},
    {"ip-adapter-faceid-plusv2_sd15_lora.safetensors", "ip-adapter-faceid-plusv2_sdxl_lora.safetensors"},
    {NULL, NULL},
    {NULL, NULL},
};
static const char *const providers[] = {"CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML", NULL};

static size_t name_count(const char *const names[4])
{
    size_t n = 0;
    while (n < 4 && names[n])
        n++;
    return n;
}

/* The InsightFace pack the unified FaceID loader brings, as ComfyUI_IPAdapter_plus's does. */
#define FACEID_PACK "buffalo_l"

static sd_status unified_faceid_files(sd_node_files *f)
{
    const char *lit = sd_files_literal(f, "preset");
    int p = lit ? enum_index(faceid_presets, lit) : -1;
    if (p < 0)
        return SD_OK;
    sd_status s = sd_files_find(f, "clip_vision", clip_vision_files[0], 4);
    for (int xl = 0; !s && xl < 2; xl++) {
        if (faceid_files[p][xl][0])
            s = sd_files_find(f, "ipadapter", faceid_files[p][xl], name_count(faceid_files[p][xl]));
        if (!s && faceid_loras[p][xl])
            s = sd_files_find(f, "loras", &faceid_loras[p][xl], 1);
    }
    return s ? s : sd_node_insightface_declare(f, FACEID_PACK);
}

/* The MODEL patched with the preset's FaceID LoRA at lora_strength (ComfyUI_IPAdapter_plus: the
 * LoRA must be found; strength 0 leaves the model as it is): *stack a new reference or NULL. */
static sd_status faceid_lora(sd_node_run *r, const sd_model_handle *mh, const char *preset, const char *const *name,
                             sd_lora_stack **stack)
{
    const char *path = NULL;
    *stack = NULL;
    sd_status s = sd_run_found_file(r, "loras", name, 1, &path);
    if (!s && !path)
        return sd_run_error(r, SD_ERR_NOT_FOUND, "no FaceID LoRA for '%s' in models/loras (looked for %s)", preset, *name);
    float strength = (float)sd_run_float(r, "lora_strength");
    sd_lora *lora = NULL;
    if (!s && strength > 0 && !(s = sd_lora_open(sd_run_context(r), path, sd_loaded_config(mh->loaded), &lora)))
        s = sd_lora_stack_push(sd_run_context(r), mh->lora, lora, strength, SD_LORA_UNET, stack);
    sd_lora_unref(lora);
    return s ? sd_node_model_fail(r, s) : SD_OK;
}

static sd_status run_unified_faceid(sd_node_run *r)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    if (!mh)
        return SD_ERR_INVALID;
    const char *preset = sd_run_string(r, "preset");
    int p = enum_index(faceid_presets, preset);
    bool xl = sd_loaded_config(mh->loaded)->family == SD_FAMILY_SDXL;
    if (sd_run_linked(r, "preset"))
        return sd_run_error(r, SD_ERR_INVALID, "'preset' must be given as a value, not through a link");
    if (!faceid_files[p][xl][0])
        return sd_run_error(r, SD_ERR_INVALID, "the preset '%s' has no %s model", preset, xl ? "SDXL" : "SD1.5");
    ipa_value *iv = NULL;
    sd_lora_stack *stack = NULL;
    sd_status s = unified_open(r, preset, faceid_files[p][xl], name_count(faceid_files[p][xl]), false, &iv);
    if (!s && faceid_loras[p][xl])
        s = faceid_lora(r, mh, preset, &faceid_loras[p][xl], &stack);
    if (!s) /* the pack, when it is there */
        s = sd_node_insightface_open(r, FACEID_PACK, false, &iv->insightface);
    if (!s)
        s = set_unified_outputs(r, mh, stack ? stack : mh->lora, iv), iv = NULL;
    ipa_value_free(iv);
    sd_lora_stack_unref(stack);
    return s;
}

/* The MODEL passes on its tag; the IPADAPTER is tagged "insightface" when the pack is there. */
static void check_unified_faceid(sd_node_check *c)
{
    const char *model = sd_check_tag(c, "model");
    char *pack = sd_node_insightface_find(sd_check_context(c), FACEID_PACK);
    if (model)
        sd_check_set_tag(c, 0, model);
    if (pack)
        sd_check_set_tag(c, 1, "insightface");
    free(pack);
}

static const sd_input_desc unified_faceid_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model (its family picks the SD1.5 or SDXL files)"),
    SD_IN_ENUM("preset", "FACEID", faceid_presets,
               "which FaceID IP-Adapter (models/ipadapter), LoRA (models/loras) and CLIP vision model to load"),
    SD_IN_FLOAT("lora_strength", "0.6", 0.0, 1.0, "how strongly the FaceID LoRA patches the model (0: not at all)"),
    SD_IN_ENUM("provider", "CPU", providers, "accepted for ComfyUI compatibility (InsightFace runs on sdflow's ops)"),
    SD_IN_LINK_OPT("ipadapter", SD_TYPE_IPADAPTER, "accepted for ComfyUI compatibility (not used)"),
};
static const sd_output_desc unified_faceid_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the model with the preset's FaceID LoRA (portrait presets: unchanged)"),
    SD_OUT("ipadapter", SD_TYPE_IPADAPTER, "the FaceID IP-Adapter with its CLIP vision model and, when "
           "models/insightface/models/buffalo_l/ is there, that InsightFace pack"),
};
const sd_node_desc sd_node_IPAdapterUnifiedLoaderFaceID = {
    .name = "IPAdapterUnifiedLoaderFaceID", .version = 1, .category = "ipadapter/faceid",
    .doc = "Loads a FaceID preset's IP-Adapter, CLIP vision model and LoRA by their usual file names and applies "
           "the LoRA to the model.",
    .inputs = unified_faceid_in, .n_inputs = SD_COUNT(unified_faceid_in),
    .outputs = unified_faceid_out, .n_outputs = SD_COUNT(unified_faceid_out), .run = run_unified_faceid,
    .files = unified_faceid_files, .check = check_unified_faceid,
};

/* The faces IPAdapterFaceID applies: identity embeddings id [n, 1, id_dim] and the aligned face
 * crops (an IMAGE tensor [n, S, S, 3]) whose CLIP features FaceID Plus reads: borrowed from an
 * input, or in crops_value (one reference, NULL when borrowed). */
typedef struct faces {
    features id;
    const sd_tensor *crops;
    sd_value *crops_value;
} faces;

#define NO_FACE_EMBEDDINGS                                                                                         \
    "IPAdapterFaceID needs face embeddings: connect 'insightface' (IPAdapterInsightFaceLoader), load the adapter "  \
    "with IPAdapterUnifiedLoaderFaceID and models/insightface/models/buffalo_l/, or connect 'faceid_embeds' "        \
    "(SdflowLoadFaceIDEmbeds)"

/* Channels 0-2 of image i of img [n, h, w, c] (c 1: gray replicated) into rgb [h, w, 3]. */
static void image_rgb(const sd_tensor *img, int64_t i, float *rgb)
{
    size_t px = (size_t)img->shape[1] * (size_t)img->shape[2], c = (size_t)img->shape[3];
    const float *src = img->data + (size_t)i * px * c;
    for (size_t p = 0; p < px; p++)
        for (size_t k = 0; k < 3; k++)
            rgb[p * 3 + k] = src[p * c + (c >= 3 ? k : 0)];
}

/* ComfyUI_IPAdapter_plus's InsightFace step: per image, the first face InsightFace finds (det_size
 * 640, lowered by 64 down to 320 until one is found), its normed embedding (the raw one for
 * portrait unnorm) and its norm_crop (224 for SD1.5, 256 for SDXL) into crops_value. No face in
 * an image is an error naming it. */
static sd_status detect_faces(sd_node_run *r, sd_face_analysis *fa, const sd_ipadapter_config *ac, const sd_tensor *img,
                              faces *out)
{
    sd_context *ctx = sd_run_context(r);
    int n = (int)img->shape[0], h = (int)img->shape[1], w = (int)img->shape[2], size = ac->sdxl ? 256 : 224;
    if (ac->id_dim != 512)
        return sd_run_error(r, SD_ERR_INVALID, "the FaceID IP-Adapter takes %d-wide face embeddings; InsightFace's "
                            "ArcFace gives 512", ac->id_dim);
    int64_t shape[4] = {n, size, size, 3};
    out->crops_value = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *crops = out->crops_value ? sd_value_add_tensor(out->crops_value, "image", 4, shape) : NULL;
    out->id = (features){.data = malloc((size_t)n * 512 * sizeof(float)), .n = n, .tokens = 1, .width = 512};
    float *rgb = malloc((size_t)w * (size_t)h * 3 * sizeof *rgb);
    sd_status s = crops && out->id.data && rgb ? SD_OK : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++) {
        sd_face *found = NULL;
        size_t count = 0;
        image_rgb(img, i, rgb);
        if ((s = sd_face_analysis_run_retry(ctx, fa, rgb, w, h, &found, &count)))
            s = sd_node_op_fail(r, s);
        else if (count == 0)
            s = sd_run_error(r, SD_ERR_INVALID, "InsightFace found no face in image %d of input 'image' (%dx%d)", i + 1, w,
                             h);
        else if ((s = sd_face_norm_crop(ctx, rgb, w, h, found[0].landmarks, size,
                                        crops->data + (size_t)i * (size_t)size * (size_t)size * 3)))
            s = sd_node_op_fail(r, s);
        for (int k = 0; !s && k < 512; k++)
            out->id.data[(size_t)i * 512 + (size_t)k] =
                found[0].embedding[k] * (ac->portrait_unnorm ? found[0].embedding_norm : 1.0f);
        free(found);
    }
    free(rgb);
    out->crops = crops;
    return s;
}

/* The faces IPAdapterFaceID applies: from the faceid_embeds input (SdflowLoadFaceIDEmbeds: its
 * embeddings, and its face_image crops or else the node's image as the crops), else found by
 * InsightFace (the insightface input, or the unified loader's pack) in the node's image. */
static sd_status face_input(sd_node_run *r, const ipa_value *ipa, const sd_ipadapter_config *ac, const sd_tensor *img,
                            faces *out)
{
    const sd_value *v = has(r, "faceid_embeds") ? sd_run_value(r, "faceid_embeds") : NULL;
    if (!v) {
        const sd_value *iv = has(r, "insightface") ? sd_run_value(r, "insightface") : NULL;
        sd_face_analysis *fa = iv && iv->type == SD_TYPE_INSIGHTFACE ? iv->handle : ipa->insightface;
        return fa ? detect_faces(r, fa, ac, img, out) : sd_run_error(r, SD_ERR_INVALID, NO_FACE_EMBEDDINGS);
    }
    const sd_tensor *t = sd_value_tensor(v, "faceid_embeds");
    if (!t || t->ndim != 2 || t->shape[0] < 1 || t->shape[1] != ac->id_dim)
        return sd_run_error(r, SD_ERR_INVALID, "input 'faceid_embeds' is not [faces, %d] face embeddings for this FaceID "
                            "IP-Adapter", ac->id_dim);
    size_t n = (size_t)t->shape[0] * (size_t)t->shape[1];
    out->id = (features){.data = malloc(n * sizeof(float)), .n = (int)t->shape[0], .tokens = 1, .width = ac->id_dim};
    if (!out->id.data)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    memcpy(out->id.data, t->data, n * sizeof(float));
    const sd_tensor *crops = sd_value_tensor(v, "face_image");
    out->crops = crops ? crops : img;
    return SD_OK;
}

/* Output index: a new IMAGE holding a copy of t. */
static sd_status set_image_copy(sd_node_run *r, size_t index, const sd_tensor *t)
{
    size_t n = 0;
    sd_value *v = sd_tensor_numel(t, &n) ? sd_value_new(SD_TYPE_IMAGE) : NULL;
    sd_tensor *c = v ? sd_value_add_tensor(v, "image", t->ndim, t->shape) : NULL;
    if (!c) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    memcpy(c->data, t->data, n * sizeof(float));
    sd_run_set_output(r, index, v);
    return SD_OK;
}

/* FaceID Plus: the crops' CLIP hidden states (pos) and image_negative's or a black image's (neg). */
static sd_status encode_faces(sd_node_run *r, const ipa_value *ipa, const faces *f, features *pos, features *neg)
{
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(ipa->model);
    sd_clip_vision_handle *cv = pick_clip_vision(r, ipa);
    const sd_tensor *nimg = has(r, "image_negative") ? sd_node_image_tensor(r, "image_negative") : NULL;
    sd_status s = cv ? encode(r, ac, cv, f->crops, pos) : SD_ERR_INVALID;
    if (!s && pos->n != f->id.n)
        s = sd_run_error(r, SD_ERR_INVALID, "%d face images for %d face embeddings", pos->n, f->id.n);
    if (!s) s = encode(r, ac, cv, nimg, neg);
    return s;
}

/* Image tokens of n faces into a new array *out (n * tokens * cross floats). */
static sd_status project_faces(sd_node_run *r, sd_ipadapter *m, const float *id, const features *clip, int n,
                               float v2_scale, float **out)
{
    const sd_ipadapter_config *c = sd_ipadapter_config_of(m);
    *out = malloc((size_t)n * (size_t)c->tokens * (size_t)c->cross_dim * sizeof **out);
    if (!*out)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_ipadapter_project_faceid(m, id, clip->data, n, clip->tokens, v2_scale, *out);
    return s ? sd_run_fail(r, s) : SD_OK;
}

static sd_status run_faceid(sd_node_run *r)
{
    const sd_model_handle *mh = sd_node_model_input(r, "model");
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    const ipa_value *ipa = mh && img ? adapter_input(r, true) : NULL;
    if (!ipa)
        return SD_ERR_INVALID;
    const sd_ipadapter_config *ac = sd_ipadapter_config_of(ipa->model);
    bool plus = ac->kind == SD_IPA_FACEID_PLUS;
    const char *how = sd_run_string(r, "combine_embeds");
    faces f = {0};
    features pos = {0}, neg = {0};
    float *cond = NULL, *uncond = NULL, *zeros = NULL;
    sd_status s = check_context(r, mh, ac);
    if (!s) s = face_input(r, ipa, ac, img, &f);
    if (!s && plus) {
        if (!(s = encode_faces(r, ipa, &f, &pos, &neg))) {
            combine(&pos, how);
            neg.n = neg.n > pos.n ? pos.n : neg.n; /* uncond[0] after combining */
            s = repeat_to(r, &neg, pos.n);
        }
    }
    if (!s) {
        combine(&f.id, how);
        if (!(zeros = calloc((size_t)f.id.n * (size_t)ac->id_dim, sizeof *zeros)))
            s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    float v2 = (float)sd_run_float(r, "weight_faceidv2");
    if (!s) s = project_faces(r, ipa->model, f.id.data, &pos, f.id.n, v2, &cond);
    if (!s) s = project_faces(r, ipa->model, zeros, &neg, f.id.n, v2, &uncond);
    if (!s) {
        s = push_patch(r, mh, ipa->model, cond, uncond, f.id.n * ac->tokens, sd_run_float(r, "weight"),
                       (sd_ipa_weight_type)enum_index(sd_ipa_weight_type_names, sd_run_string(r, "weight_type")),
                       (sd_ipa_scaling)enum_index(sd_ipa_scaling_names, sd_run_string(r, "embeds_scaling")));
        cond = uncond = NULL;
    }
    if (!s) s = set_image_copy(r, 1, f.crops);
    free(cond), free(uncond), free(zeros);
    features_free(&f.id), features_free(&pos), features_free(&neg);
    sd_value_unref(f.crops_value);
    return s;
}

/* IPAdapterFaceID's checks: the adapter's, and a source of face embeddings (the faceid_embeds or
 * insightface link, or a unified loader that found its InsightFace pack). */
static void check_faceid(sd_node_check *c)
{
    const char *ipa = sd_check_tag(c, "ipadapter");
    check_adapter(c, true);
    if (!sd_check_tag(c, "faceid_embeds") && !sd_check_tag(c, "insightface") && !(ipa && !strcmp(ipa, "insightface")))
        sd_check_problem(c, "faceid_embeds", NO_FACE_EMBEDDINGS);
}

static const sd_input_desc faceid_in[] = {
    IN_APPLY_COMMON,
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the face images, one face used per image (with precomputed embeddings: the "
               "aligned face crops)"),
    SD_IN_FLOAT("weight", "1.0", -1.0, 3.0, "strength of the face prompt"),
    SD_IN_FLOAT("weight_faceidv2", "1.0", -1.0, 5.0, "FaceID Plus v2: weight of the CLIP part (the Resampler's "
                "output added to the identity tokens)"),
    SD_IN_ENUM("weight_type", "linear", sd_ipa_weight_type_names, "how the weight is spread over the UNet's layers"),
    SD_IN_ENUM("combine_embeds", "concat", combine_names,
               "several faces: their tokens side by side (concat) or one embedding combined from theirs"),
    IN_RANGE,
    IN_SCALING,
    SD_IN_LINK_OPT("image_negative", SD_TYPE_IMAGE, "FaceID Plus: what the negative side's CLIP part sees"),
    SD_IN_LINK_OPT("attn_mask", SD_TYPE_MASK, "where the face prompt acts"),
    SD_IN_LINK_OPT("clip_vision", SD_TYPE_CLIP_VISION, "FaceID Plus: the CLIP vision model (else the unified loader's)"),
    SD_IN_LINK_OPT("insightface", SD_TYPE_INSIGHTFACE,
                   "finds the face in each image (else the unified loader's InsightFace pack)"),
    SD_IN_LINK_OPT("faceid_embeds", SD_TYPE_EMBEDS,
                   "sdflow: precomputed face embeddings (SdflowLoadFaceIDEmbeds), one per face, used instead of "
                   "InsightFace"),
};
static const sd_output_desc faceid_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the model with the FaceID IP-Adapter applied at sampling time"),
    SD_OUT("face_image", SD_TYPE_IMAGE, "the aligned face crops (FaceID Plus encodes them with CLIP vision)"),
};
const sd_node_desc sd_node_IPAdapterFaceID = {
    .name = "IPAdapterFaceID", .version = 1, .category = "ipadapter/faceid",
    .doc = "Applies a FaceID IP-Adapter (FaceID, FaceID Plus, Plus v2, portrait): identity embeddings of faces, "
           "and for Plus the CLIP vision features of the face crops, as image tokens at every attn2 layer.",
    .inputs = faceid_in, .n_inputs = SD_COUNT(faceid_in),
    .outputs = faceid_out, .n_outputs = SD_COUNT(faceid_out), .run = run_faceid, .check = check_faceid,
};

/* faceid_embeds [faces, width] and optional face_image [faces, h, w, 3] from a safetensors file. */
static sd_status run_load_face_embeds(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    const char *path = sd_run_file(r, "embeds_file");
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, path, &st);
    if (s)
        return sd_run_fail(r, s);
    const sd_st_tensor *e = sd_safetensors_find(st, "faceid_embeds"), *c = sd_safetensors_find(st, "face_image");
    sd_value *v = NULL;
    sd_tensor *te = NULL, *tc = NULL;
    if (!e || e->ndim != 2 || e->shape[0] < 1 || e->shape[1] < 1)
        s = sd_run_error(r, SD_ERR_INVALID, "%s: no faceid_embeds tensor [faces, width]", path);
    else if (c && (c->ndim != 4 || c->shape[0] != e->shape[0] || c->shape[3] != 3 || c->shape[1] < 1 || c->shape[2] < 1))
        s = sd_run_error(r, SD_ERR_INVALID, "%s: face_image is not [%lld faces, height, width, 3]", path,
                         (long long)e->shape[0]);
    else if (!(v = sd_value_new(SD_TYPE_EMBEDS)) || !(te = sd_value_add_tensor(v, "faceid_embeds", 2, e->shape)) ||
             (c && !(tc = sd_value_add_tensor(v, "face_image", 4, c->shape))))
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    if (!s) s = sd_safetensors_read_f32(ctx, st, e, te->data, e->numel);
    if (!s && c) s = sd_safetensors_read_f32(ctx, st, c, tc->data, c->numel);
    sd_safetensors_close(st);
    if (s) {
        sd_value_unref(v);
        return sd_run_fail(r, s);
    }
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static void check_load_face_embeds(sd_node_check *c)
{
    sd_check_set_tag(c, 0, "faceid");
}

static const sd_input_desc face_embeds_in[] = {
    SD_IN_FILE_NAME("embeds_file", "input", "a .safetensors file in the input directory: faceid_embeds [faces, 512] "
                    "(InsightFace normed_embedding) and optionally face_image [faces, size, size, 3] (the aligned crops)"),
};
static const sd_output_desc face_embeds_out[] = {
    SD_OUT("faceid_embeds", SD_TYPE_EMBEDS, "the face embeddings (and crops) for IPAdapterFaceID"),
};
const sd_node_desc sd_node_SdflowLoadFaceIDEmbeds = {
    .name = "SdflowLoadFaceIDEmbeds", .version = 1, .category = "ipadapter/faceid",
    .doc = "sdflow's own node (not in ComfyUI): loads precomputed InsightFace face embeddings for IPAdapterFaceID "
           "(docs/ipadapter.md shows how to make the file).",
    .inputs = face_embeds_in, .n_inputs = SD_COUNT(face_embeds_in),
    .outputs = face_embeds_out, .n_outputs = SD_COUNT(face_embeds_out), .run = run_load_face_embeds,
    .check = check_load_face_embeds,
};
