/* CLIPVisionLoader and CLIPVisionEncode (ComfyUI's nodes of the same names, nodes.py and
 * comfy/clip_vision.py) over the CLIP image tower (ml/vision/clip_vision.h). The loader opens the
 * file and reads its architecture; the weights come to the device on the first encode. */
#include "nodes/clip_vision.h"
#include "nodes/model_handle.h"
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_clip_vision_handle_free(void *p)
{
    sd_clip_vision_handle *h = p;
    if (!h)
        return;
    sd_clip_vision_free(h->net);
    sd_safetensors_close(h->st);
    free(h);
}

void sd_clip_vision_tag(const sd_clip_vision_config *cfg, char *tag, size_t size)
{
    snprintf(tag, size, "%d:%d", cfg->projection, cfg->width);
}

sd_status sd_clip_vision_handle_open(sd_context *ctx, const char *path, sd_clip_vision_handle **out)
{
    return sd_clip_vision_handle_open_at(ctx, path, NULL, out);
}

sd_status sd_clip_vision_handle_open_at(sd_context *ctx, const char *path, const char *prefix,
                                        sd_clip_vision_handle **out)
{
    sd_clip_vision_handle *h = *out = calloc(1, sizeof *h);
    if (!h)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    sd_status st = sd_safetensors_open(ctx, path, &h->st);
    if (!st)
        st = sd_clip_vision_inspect(ctx, h->st, prefix, &h->cfg);
    if (st) {
        sd_clip_vision_handle_free(h);
        *out = NULL;
    }
    return st;
}

static sd_status run_loader(sd_node_run *r)
{
    sd_clip_vision_handle *h = NULL;
    sd_status st = sd_clip_vision_handle_open(sd_run_context(r), sd_run_file(r, "clip_name"), &h);
    if (st)
        return sd_run_fail(r, st);
    sd_value *v = sd_value_handle(SD_TYPE_CLIP_VISION, h, sd_clip_vision_handle_free); /* frees h on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

/* Tags the output with the encoder's "<projection>:<width>"; reports a file that is no CLIP vision model. */
static void check_loader(sd_node_check *c)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "clip_name");
    sd_safetensors *st = NULL;
    sd_clip_vision_config cfg;
    if (path && sd_safetensors_open(ctx, path, &st) == SD_OK) {
        if (sd_clip_vision_inspect(ctx, st, NULL, &cfg) == SD_OK) {
            char tag[32];
            sd_clip_vision_tag(&cfg, tag, sizeof tag);
            sd_check_set_tag(c, 0, tag);
        } else {
            sd_check_problem(c, "clip_name", "%s", sd_context_errmsg(ctx));
        }
    } else if (path) {
        sd_check_problem(c, "clip_name", "%s", sd_context_errmsg(ctx));
    }
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

static const sd_input_desc loader_in[] = {
    SD_IN_FILE_NAME("clip_name", "clip_vision",
                    "a CLIP vision model in models/clip_vision (.safetensors or .bin; transformers' or open_clip's keys)"),
};
static const sd_output_desc loader_out[] = {
    SD_OUT("CLIP_VISION", SD_TYPE_CLIP_VISION, "the image encoder (weights upload on first use)"),
};
const sd_node_desc sd_node_CLIPVisionLoader = {
    .name = "CLIPVisionLoader", .version = 1, .category = "loaders",
    .doc = "Opens a CLIP vision encoder: ViT-L/14 (OpenAI), ViT-H/14 or ViT-bigG/14 (LAION), or SigLIP "
           "(sigclip_vision_patch14_384, FLUX Redux's encoder).",
    .inputs = loader_in, .n_inputs = SD_COUNT(loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_loader, .check = check_loader,
};

sd_clip_vision_handle *sd_node_clip_vision_input(sd_node_run *r, const char *input)
{
    const sd_value *v = sd_run_value(r, input);
    if (!v || v->type != SD_TYPE_CLIP_VISION || !v->handle) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' carries no CLIP vision model", input);
        return NULL;
    }
    return v->handle;
}

sd_status sd_node_clip_vision_encode(sd_node_run *r, sd_clip_vision_handle *h, const sd_tensor *img, bool crop,
                                     float *embeds, float *last, float *penult)
{
    sd_context *ctx = sd_run_context(r);
    const sd_clip_vision_config *c = &h->cfg;
    sd_cl *cl;
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st && !h->net)
        st = sd_clip_vision_new(cl, h->st, c, SD_DTYPE_F16, &h->net);
    int64_t b = img->shape[0], ih = img->shape[1], iw = img->shape[2];
    size_t size = (size_t)c->image_size, hidden = (size_t)sd_clip_vision_tokens(c) * (size_t)c->width;
    float *pixels = st ? NULL : malloc(3 * size * size * sizeof *pixels);
    if (!st && !pixels)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !st && i < b; i++) {
        st = sd_clip_vision_preprocess_for(ctx, c, img->data + (size_t)(i * ih * iw * 3), ih, iw, crop, pixels);
        if (!st)
            st = sd_clip_vision_encode(h->net, pixels, 1, embeds ? embeds + (size_t)i * sd_clip_vision_embeds_size(c) : NULL,
                                       last ? last + (size_t)i * hidden : NULL, penult ? penult + (size_t)i * hidden : NULL);
    }
    free(pixels);
    sd_node_model_done(r);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_encode(sd_node_run *r)
{
    sd_clip_vision_handle *h = sd_node_clip_vision_input(r, "clip_vision");
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    if (!h || !img)
        return SD_ERR_INVALID;
    const sd_clip_vision_config *c = &h->cfg;
    int64_t b = img->shape[0], tokens = sd_clip_vision_tokens(c);
    int64_t es[2] = {b, c->projection}, hs[3] = {b, tokens, c->width};
    sd_value *v = sd_value_new(SD_TYPE_CLIP_VISION_OUTPUT);
    sd_tensor *embeds = v ? sd_value_add_tensor(v, "image_embeds", c->siglip ? 3 : 2, c->siglip ? hs : es) : NULL;
    sd_tensor *last = embeds ? sd_value_add_tensor(v, "last_hidden_state", 3, hs) : NULL;
    sd_tensor *penult = last ? sd_value_add_tensor(v, "penultimate_hidden_states", 3, hs) : NULL;
    if (!penult) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    bool crop = strcmp(sd_run_string(r, "crop"), "center") == 0;
    sd_status st = sd_node_clip_vision_encode(r, h, img, crop, embeds->data, last->data, penult->data);
    if (st) {
        sd_value_unref(v);
        return st;
    }
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

/* The output carries the encoder's tag ("<projection>:<width>"), for the nodes it feeds. */
static void check_encode(sd_node_check *c)
{
    const char *tag = sd_check_tag(c, "clip_vision");
    if (tag)
        sd_check_set_tag(c, 0, tag);
}

static const char *const crops[] = {"center", "none", NULL};
static const sd_input_desc encode_in[] = {
    SD_IN_LINK("clip_vision", SD_TYPE_CLIP_VISION, "from CLIPVisionLoader"),
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to encode (each one separately)"),
    SD_IN_ENUM("crop", "center", crops,
               "center: resize the short side to the encoder's size and crop the middle; none: resize to a square"),
};
static const sd_output_desc encode_out[] = {
    SD_OUT("CLIP_VISION_OUTPUT", SD_TYPE_CLIP_VISION_OUTPUT,
           "image_embeds [B, projection], last_hidden_state and penultimate_hidden_states [B, tokens, width] "
           "(SigLIP: image_embeds is last_hidden_state)"),
};
const sd_node_desc sd_node_CLIPVisionEncode = {
    .name = "CLIPVisionEncode", .version = 1, .category = "conditioning",
    .doc = "Encodes images with a CLIP vision model, after ComfyUI's clip_preprocess (bicubic antialiased resize, "
           "8-bit rounding, CLIP mean and std; SigLIP: 384 pixels, mean and std 0.5).",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode, .check = check_encode,
};
