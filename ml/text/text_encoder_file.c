/* Text-encoder files (see text_encoder_file.h). */
#include "ml/text/text_encoder_file.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/gguf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sd_text_file {
    sd_safetensors *file;    /* the file's tensors (a GGUF file: its tensor view) */
    sd_safetensors *renamed; /* GGUF: the view under transformers' T5 names */
    int n;
    sd_text_file_part parts[SD_TEXT_FILE_MAX_PARTS];
    sd_safetensors *aliases[SD_TEXT_FILE_MAX_PARTS]; /* CLIP parts: their tensors without prefix */
};

/* Where CLIP text models sit in the files people have: ComfyUI's clip_l/clip_g files and the
 * text_encoders.* of its all-in-one files. */
static const char *const clip_prefixes[] = {"text_model.", "text_encoders.clip_l.transformer.text_model.",
                                            "text_encoders.clip_g.transformer.text_model."};
static const char *const t5_prefixes[] = {"", "text_encoders.t5xxl.transformer."};

void sd_text_file_close(sd_text_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < SD_TEXT_FILE_MAX_PARTS; i++)
        sd_safetensors_close(f->aliases[i]);
    sd_safetensors_close(f->renamed);
    sd_safetensors_close(f->file);
    free(f);
}

const char *sd_text_file_path(const sd_text_file *f)
{
    return sd_safetensors_path(f->file);
}

const struct sd_file_id *sd_text_file_id(const sd_text_file *f)
{
    return sd_safetensors_file_id(f->file);
}

int sd_text_file_count(const sd_text_file *f)
{
    return f->n;
}

const sd_text_file_part *sd_text_file_part_at(const sd_text_file *f, int index)
{
    return &f->parts[index];
}

int sd_text_file_find(const sd_text_file *f, sd_text_encoder_kind kind)
{
    for (int i = 0; i < f->n; i++)
        if (f->parts[i].kind == kind)
            return i;
    return -1;
}

const char *sd_text_file_describe(const sd_text_file *f, char *buf, size_t size)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < f->n && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%s", i ? " + " : "", sd_text_encoder_name(f->parts[i].kind));
    return buf;
}

/* The tensors under prefix renamed without it, and <prefix minus "text_model.">text_projection.weight
 * as text_projection.weight, as an alias of st. */
static sd_status clip_alias(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_safetensors **out)
{
    size_t n = sd_safetensors_count(st), m = 0, plen = strlen(prefix);
    char proj[160];
    snprintf(proj, sizeof proj, "%.*stext_projection.weight", (int)(plen - strlen("text_model.")), prefix);
    const sd_st_tensor **from = calloc(n ? n : 1, sizeof *from);
    const char **names = calloc(n ? n : 1, sizeof *names);
    sd_status s = from && names ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        if (strncmp(t->name, prefix, plen) == 0)
            from[m] = t, names[m++] = t->name + plen;
        else if (strcmp(t->name, proj) == 0)
            from[m] = t, names[m++] = "text_projection.weight";
    }
    if (!s)
        s = sd_safetensors_alias(ctx, st, from, names, m, out);
    free(from);
    free(names);
    return s;
}

static const sd_st_tensor *find2(const sd_safetensors *st, const char *name, int ndim)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    return t && t->ndim == ndim && t->shape[0] >= 1 && t->shape[0] <= (1 << 20) &&
                   (ndim < 2 || (t->shape[1] >= 1 && t->shape[1] <= (1 << 20)))
               ? t
               : NULL;
}

/* Reads a CLIP part's configuration from the alias st and checks every tensor. */
static sd_status inspect_clip(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_text_file_part *p)
{
    const char *path = sd_safetensors_path(st);
    sd_clip_config *c = &p->clip;
    static const char *const need[3] = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                                        "encoder.layers.0.mlp.fc1.weight"};
    const sd_st_tensor *t[3];
    for (int i = 0; i < 3; i++)
        if (!(t[i] = find2(st, need[i], 2)))
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s%s' is missing or not a 2-D tensor (CLIP text model)",
                                path, prefix, need[i]);
    memset(c, 0, sizeof *c);
    c->vocab = (int)t[0]->shape[0];
    c->width = (int)t[0]->shape[1];
    c->positions = (int)t[1]->shape[0];
    c->intermediate = (int)t[2]->shape[0];
    char name[96];
    do
        snprintf(name, sizeof name, "encoder.layers.%d.layer_norm1.weight", c->layers);
    while (sd_safetensors_find(st, name) && ++c->layers < 64);
    c->has_position_ids = sd_safetensors_find(st, "embeddings.position_ids") != NULL;
    /* ComfyUI's detect_te_model: the depth tells the kind */
    p->kind = sd_safetensors_find(st, "encoder.layers.30.mlp.fc1.weight")   ? SD_TEXT_OPENCLIP_G
              : sd_safetensors_find(st, "encoder.layers.22.mlp.fc1.weight") ? SD_TEXT_OPENCLIP_H
                                                                            : SD_TEXT_CLIP_L;
    const sd_st_tensor *proj = find2(st, "text_projection.weight", 2);
    if (p->kind == SD_TEXT_OPENCLIP_G && !proj)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: OpenCLIP-bigG text model without a 2-D text_projection.weight",
                            path);
    if (p->kind != SD_TEXT_CLIP_L && proj)
        c->projection = (int)proj->shape[0];
    if (c->width % 64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP text model width %d is not a multiple of 64 (the head size)",
                            path, c->width);
    c->heads = c->width / 64;
    c->gelu = p->kind != SD_TEXT_CLIP_L;
    c->pad_token = p->kind == SD_TEXT_CLIP_L ? 49407 : 0;
    sd_layout layout = {0};
    char what[64];
    snprintf(what, sizeof what, "%s text model", sd_text_encoder_name(p->kind));
    sd_status s = sd_layout_clip(ctx, c, "", &layout);
    if (!s)
        s = sd_layout_verify(ctx, st, &layout, what);
    else
        sd_error_prefix(ctx, "%s", path);
    sd_layout_free(&layout);
    return s;
}

static sd_status add_part(sd_context *ctx, sd_text_file *f, const char *path, sd_text_file_part **out)
{
    if (f->n == SD_TEXT_FILE_MAX_PARTS)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: more than %d text encoders in one file", path,
                            SD_TEXT_FILE_MAX_PARTS);
    *out = &f->parts[f->n++];
    return SD_OK;
}

/* Finds the parts of f->file (and f->renamed). */
static sd_status find_parts(sd_context *ctx, sd_text_file *f)
{
    const char *path = sd_safetensors_path(f->file);
    sd_text_file_part *p = NULL;
    sd_status s = SD_OK;
    for (size_t i = 0; !s && i < sizeof clip_prefixes / sizeof *clip_prefixes; i++) {
        char probe[160];
        snprintf(probe, sizeof probe, "%sembeddings.token_embedding.weight", clip_prefixes[i]);
        if (!sd_safetensors_find(f->file, probe))
            continue;
        if (!(s = add_part(ctx, f, path, &p)) && !(s = clip_alias(ctx, f->file, clip_prefixes[i], &f->aliases[f->n - 1]))) {
            p->st = f->aliases[f->n - 1];
            p->prefix = "";
            s = inspect_clip(ctx, p->st, clip_prefixes[i], p);
        }
    }
    const sd_safetensors *t5 = f->renamed ? f->renamed : f->file;
    for (size_t i = 0; !s && i < sizeof t5_prefixes / sizeof *t5_prefixes; i++) {
        char probe[160];
        snprintf(probe, sizeof probe, "%sencoder.block.0.layer.0.SelfAttention.q.weight", t5_prefixes[i]);
        if (!sd_safetensors_find(t5, probe) || (s = add_part(ctx, f, path, &p)))
            continue;
        p->kind = SD_TEXT_T5XXL;
        p->st = t5;
        p->prefix = t5_prefixes[i];
        s = sd_t5_inspect(ctx, t5, p->prefix, &p->t5);
        if (s == SD_ERR_NOT_FOUND)
            s = SD_ERR_INVALID;
    }
    if (s || f->n)
        return s;
    sd_family family = sd_family_detect(f->file);
    if (sd_family_get(family)->checkpoint)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: %s checkpoint detected, not a text-encoder file; load it with CheckpointLoaderSimple",
                            path, sd_family_name(family));
    return sd_set_error(ctx, SD_ERR_INVALID,
                        "%s: not a text-encoder file (no CLIP text_model.* or T5 encoder.block.* tensors)", path);
}

static bool is_gguf(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strcasecmp(path + n - 5, ".gguf") == 0;
}

sd_status sd_text_file_open(sd_context *ctx, const char *path, sd_text_file **out)
{
    *out = NULL;
    sd_text_file *f = calloc(1, sizeof *f);
    if (!f)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s;
    if (is_gguf(path)) {
        sd_gguf *g = NULL;
        if (!(s = sd_gguf_open(ctx, path, &g)) && !(s = sd_gguf_tensor_view(ctx, g, &f->file)))
            s = sd_t5_rename_llama(ctx, f->file, &f->renamed);
        sd_gguf_close(g);
    } else {
        s = sd_safetensors_open(ctx, path, &f->file);
    }
    if (!s)
        s = find_parts(ctx, f);
    if (s) {
        sd_text_file_close(f);
        return s;
    }
    *out = f;
    return SD_OK;
}
