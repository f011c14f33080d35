/* StyleModelLoader and StyleModelApply (ComfyUI's nodes.py and comfy/sd.py load_style_model) for
 * FLUX.1 Redux (ml/adapters/redux.h): the loader opens a Redux file from models/style_models; the
 * apply node turns a CLIP_VISION_OUTPUT's last_hidden_state (SigLIP's, from
 * sigclip_vision_patch14_384) into FLUX text tokens, all images' tokens in one row
 * ([1, images x tokens, 4096]), and appends them to each entry's tokens. strength_type multiply
 * scales the tokens; attn_bias (strength != 1) records on the entry a span
 * [first token, count, strength] in its "key_bias" attribute, which the sampler turns into
 * float16(log(strength)) added to those keys' attention scores for every query, as the mask
 * ComfyUI builds (nodes/cfg_denoiser.c). ComfyUI's older T2I style adapter (style_embedding) is
 * not supported. */
#include "core/checked.h"
#include "ml/adapters/control_eval.h"
#include "ml/adapters/redux.h"
#include "ml/families/family.h"
#include "nodes/conditioning.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct style_handle {
    sd_safetensors *st;
    sd_redux_config cfg;
    sd_redux *net; /* NULL until the first apply */
} style_handle;

static void style_handle_free(void *p)
{
    style_handle *h = p;
    if (!h)
        return;
    sd_redux_free(h->net);
    sd_safetensors_close(h->st);
    free(h);
}

/* Opens path as a Redux model; the message on ctx on failure. */
static sd_status style_open(sd_context *ctx, const char *path, style_handle **out)
{
    style_handle *h = *out = calloc(1, sizeof *h);
    if (!h)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    sd_status st = sd_safetensors_open(ctx, path, &h->st);
    if (!st && sd_safetensors_find(h->st, "style_embedding"))
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: a T2I style adapter; only FLUX Redux style models are supported",
                          path);
    if (!st)
        st = sd_redux_inspect(ctx, h->st, &h->cfg);
    if (st) {
        style_handle_free(h);
        *out = NULL;
    }
    return st;
}

static sd_status run_loader(sd_node_run *r)
{
    style_handle *h = NULL;
    sd_status st = style_open(sd_run_context(r), sd_run_file(r, "style_model_name"), &h);
    if (st)
        return sd_run_fail(r, st);
    sd_value *v = sd_value_handle(SD_TYPE_STYLE_MODEL, h, style_handle_free); /* frees h on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

/* Tags the output "redux:<SigLIP width>:<context width>"; reports a file that is no Redux model. */
static void check_loader(sd_node_check *c)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "style_model_name");
    style_handle *h = NULL;
    if (path && style_open(ctx, path, &h) == SD_OK) {
        char tag[48];
        snprintf(tag, sizeof tag, "redux:%d:%d", h->cfg.in_dim, h->cfg.out_dim);
        sd_check_set_tag(c, 0, tag);
    } else if (path) {
        sd_check_problem(c, "style_model_name", "%s", sd_context_errmsg(ctx));
    }
    sd_clear_error(ctx);
    style_handle_free(h);
}

static const sd_input_desc loader_in[] = {
    SD_IN_FILE_NAME("style_model_name", "style_models", "a FLUX Redux model in models/style_models "
                    "(flux1-redux-dev.safetensors)"),
};
static const sd_output_desc loader_out[] = {
    SD_OUT("STYLE_MODEL", SD_TYPE_STYLE_MODEL, "the Redux image encoder (weights upload on first use)"),
};
const sd_node_desc sd_node_StyleModelLoader = {
    .name = "StyleModelLoader", .version = 1, .category = "loaders",
    .doc = "Opens a FLUX.1 Redux style model (redux_up / redux_down), which turns SigLIP image features into FLUX "
           "text tokens.",
    .inputs = loader_in, .n_inputs = SD_COUNT(loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_loader, .check = check_loader,
};

/* ---- StyleModelApply ---- */

/* The Redux tokens [images x tokens, out_dim] of the CLIP vision output's last_hidden_state,
 * times strength when multiply; *n their rows. */
static sd_status redux_tokens(sd_node_run *r, style_handle *h, bool multiply, float **out, int64_t *n)
{
    const sd_tensor *last = sd_value_tensor(sd_run_value(r, "clip_vision_output"), "last_hidden_state");
    *out = NULL;
    if (!last || last->ndim != 3 || last->shape[0] < 1 || last->shape[1] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'clip_vision_output' has no last_hidden_state");
    if (last->shape[2] != h->cfg.in_dim)
        return sd_run_error(r, SD_ERR_INVALID, "input 'clip_vision_output': FLUX Redux takes %d-wide SigLIP features; "
                            "these are %lld wide (encode with sigclip_vision_patch14_384)", h->cfg.in_dim,
                            (long long)last->shape[2]);
    sd_context *ctx = sd_run_context(r);
    sd_cl *cl;
    *n = last->shape[0] * last->shape[1];
    size_t count;
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st && !h->net)
        st = sd_redux_new(cl, h->st, SD_DTYPE_F16, &h->net);
    if (!st && (!sd_mul_size((size_t)*n, (size_t)h->cfg.out_dim, &count) || !(*out = malloc(count * sizeof **out))))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!st)
        st = sd_redux_project(h->net, last->data, *n, *out);
    for (size_t i = 0; !st && multiply && i < count; i++)
        (*out)[i] *= (float)sd_run_float(r, "strength");
    sd_node_model_done(r);
    if (st) {
        free(*out);
        *out = NULL;
        return sd_run_fail(r, st);
    }
    return SD_OK;
}

/* Entry i of out: its tokens [b, t, w] followed by the n Redux tokens (each batch item), and with
 * bias, the span [t, n, strength] appended to its key_bias. */
static sd_status append_entry(sd_node_run *r, sd_value *out, size_t i, const float *tokens, int64_t n, int64_t width,
                              bool bias)
{
    char name[32];
    snprintf(name, sizeof name, "cond.%zu", i);
    sd_tensor *t = sd_value_tensor(out, name);
    if (!t || t->ndim != 3 || t->shape[0] < 1 || t->shape[1] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'conditioning': entry %zu has no [batch, tokens, width] tokens",
                            i);
    if (t->shape[2] != width)
        return sd_run_error(r, SD_ERR_INVALID, "input 'conditioning': entry %zu is %lld wide; the Redux tokens are "
                            "%lld wide (FLUX's T5 width): FLUX Redux needs FLUX conditioning", i,
                            (long long)t->shape[2], (long long)width);
    int64_t b = t->shape[0], nt = t->shape[1], rows = nt + n;
    size_t count;
    float *data = NULL;
    if (!sd_mul_size((size_t)(b * rows), (size_t)width, &count) || !(data = malloc(count * sizeof *data)))
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < b; k++) {
        memcpy(data + k * rows * width, t->data + k * nt * width, (size_t)(nt * width) * sizeof *data);
        memcpy(data + (k * rows + nt) * width, tokens, (size_t)(n * width) * sizeof *data);
    }
    free(t->data);
    t->data = data;
    t->shape[1] = rows;
    if (!bias)
        return SD_OK;
    json_t *e = json_array_get(json_object_get(out->attrs, "entries"), i), *spans = json_object_get(e, "key_bias");
    if (!json_is_array(spans) && json_is_object(e) && !json_object_set_new(e, "key_bias", json_array()))
        spans = json_object_get(e, "key_bias");
    json_t *span = json_pack("[I, I, f]", (json_int_t)nt, (json_int_t)n, sd_run_float(r, "strength"));
    bool ok = span && json_is_array(spans) && !json_array_append(spans, span);
    json_decref(span);
    return ok ? SD_OK : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
}

static sd_status run_apply(sd_node_run *r)
{
    const sd_value *sv = sd_run_value(r, "style_model");
    if (!sv || sv->type != SD_TYPE_STYLE_MODEL || !sv->handle)
        return sd_run_error(r, SD_ERR_INVALID, "input 'style_model' carries no style model");
    style_handle *h = sv->handle;
    size_t n_entries;
    if (!sd_node_cond_entries(r, "conditioning", &n_entries))
        return SD_ERR_INVALID;
    bool attn_bias = strcmp(sd_run_string(r, "strength_type"), "attn_bias") == 0;
    float *tokens;
    int64_t n = 0;
    sd_status st = redux_tokens(r, h, !attn_bias, &tokens, &n);
    if (st)
        return st;
    sd_value *out = sd_cond_copy(sd_run_value(r, "conditioning"));
    if (!out)
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    bool bias = attn_bias && sd_run_float(r, "strength") != 1.0;
    for (size_t i = 0; !st && i < n_entries; i++)
        st = append_entry(r, out, i, tokens, n, h->cfg.out_dim, bias);
    free(tokens);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

/* FLUX conditioning only, and SigLIP features as wide as the Redux model's input, where tags show
 * them; the output keeps the conditioning's tag. */
static void check_apply(sd_node_check *c)
{
    const char *cond = sd_check_tag(c, "conditioning"), *style = sd_check_tag(c, "style_model");
    const char *cv = sd_check_tag(c, "clip_vision_output");
    if (cond)
        sd_check_set_tag(c, 0, cond);
    int in_dim = 0, out_dim = 0, proj = 0, width = 0;
    if (style && sscanf(style, "redux:%d:%d", &in_dim, &out_dim) != 2)
        style = NULL;
    if (cond && sd_family_find(cond) != SD_FAMILY_FLUX)
        sd_check_problem(c, "conditioning", "FLUX Redux's image tokens are for FLUX conditioning; this conditioning "
                         "is %s", cond);
    if (style && cv && sscanf(cv, "%d:%d", &proj, &width) == 2 && width != in_dim)
        sd_check_problem(c, "clip_vision_output", "FLUX Redux takes %d-wide SigLIP features; this CLIP vision model "
                         "gives %d (encode with sigclip_vision_patch14_384)", in_dim, width);
}

static const char *const strength_types[] = {"multiply", "attn_bias", NULL};
static const sd_input_desc apply_in[] = {
    SD_IN_LINK("conditioning", SD_TYPE_CONDITIONING, "FLUX conditioning to extend"),
    SD_IN_LINK("style_model", SD_TYPE_STYLE_MODEL, "from StyleModelLoader"),
    SD_IN_LINK("clip_vision_output", SD_TYPE_CLIP_VISION_OUTPUT,
               "from CLIPVisionEncode with sigclip_vision_patch14_384 (its last_hidden_state; several images give "
               "all their tokens)"),
    SD_IN_FLOAT("strength", "1.0", 0.0, 10.0, "how much the image tokens count"),
    SD_IN_ENUM("strength_type", "multiply", strength_types,
               "multiply: the image tokens are scaled by strength; attn_bias: log(strength) is added to their "
               "attention scores"),
};
static const sd_output_desc apply_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "each entry's tokens followed by the image tokens"),
};
const sd_node_desc sd_node_StyleModelApply = {
    .name = "StyleModelApply", .version = 1, .category = "conditioning/style_model",
    .doc = "Prompts FLUX with images (FLUX.1 Redux): the Redux tokens of a SigLIP encoding are appended to every "
           "entry's text tokens, scaled by strength (multiply) or weighted in attention (attn_bias).",
    .inputs = apply_in, .n_inputs = SD_COUNT(apply_in),
    .outputs = apply_out, .n_outputs = SD_COUNT(apply_out), .run = run_apply, .check = check_apply,
};
