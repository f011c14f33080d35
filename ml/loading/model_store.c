/* Opened model files kept per context (see model_store.h). */
#include "ml/loading/model_store.h"
#include "core/files.h"
#include "ml/families/adm.h"
#include "ml/formats/gguf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct sd_loaded {
    int refcount;
    sd_cl *cl;
    char *path;
    sd_model_file_kind kind;
    sd_dtype dtype;
    sd_file_id id;       /* of the file when opened */
    uint64_t last_use;
    sd_gguf *gguf;       /* a GGUF file, read through st (its tensor view); NULL for safetensors */
    sd_safetensors *st;
    sd_checkpoint_config cfg;
    sd_unet *unet;
    sd_flux *flux;       /* FLUX files' transformer, instead of unet */
    sd_clip_model *clip[2]; /* the family's text encoders (cfg.clip, cfg.clip2) */
    sd_vae *vae;
    sd_text_file *text; /* SD_MODEL_FILE_TEXT_ENCODERS */
    sd_clip_model *text_clip[SD_TEXT_FILE_MAX_PARTS][2]; /* per part, per norm_hidden */
    sd_t5_model *text_t5[SD_TEXT_FILE_MAX_PARTS];
    bool unclip_read;    /* the noise augmentor's statistics were looked for */
    float *unclip_mean, *unclip_std;
    sd_model_store_stats *stats; /* the store's counters */
};

typedef struct model_store {
    sd_loaded **entries;
    size_t n, cap;
    uint64_t clock;
    sd_clip_tokenizer *tokenizer;
    sd_t5_tokenizer *t5_tokenizer;
    sd_model_store_stats stats;
} model_store;

/* Frees the text-encoder objects of a text-encoder entry. */
static void free_text_models(sd_loaded *l)
{
    for (int i = 0; i < SD_TEXT_FILE_MAX_PARTS; i++) {
        sd_clip_model_free(l->text_clip[i][0]);
        sd_clip_model_free(l->text_clip[i][1]);
        sd_t5_model_free(l->text_t5[i]);
        l->text_clip[i][0] = l->text_clip[i][1] = NULL;
        l->text_t5[i] = NULL;
    }
}

static void loaded_free(sd_loaded *l)
{
    sd_unet_free(l->unet);
    sd_flux_free(l->flux);
    sd_clip_model_free(l->clip[0]);
    sd_clip_model_free(l->clip[1]);
    free_text_models(l);
    sd_text_file_close(l->text);
    sd_vae_free(l->vae);
    sd_safetensors_close(l->st);
    sd_gguf_close(l->gguf);
    free(l->unclip_mean);
    free(l->unclip_std);
    free(l->path);
    free(l);
}

sd_loaded *sd_loaded_ref(sd_loaded *l)
{
    l->refcount++;
    return l;
}

void sd_loaded_unref(sd_loaded *l)
{
    if (l && --l->refcount == 0)
        loaded_free(l);
}

static void store_free(void *p)
{
    model_store *s = p;
    for (size_t i = 0; i < s->n; i++)
        sd_loaded_unref(s->entries[i]);
    free(s->entries);
    sd_clip_tokenizer_free(s->tokenizer);
    sd_t5_tokenizer_free(s->t5_tokenizer);
    free(s);
}

/* The context's store, created on first use after the OpenCL runtime, so that the context frees
 * it (and the device weights) before the runtime. */
static sd_status store_get(sd_context *ctx, model_store **out)
{
    *out = sd_context_ext(ctx, SD_EXT_MODEL_STORE);
    if (*out)
        return SD_OK;
    sd_cl *cl;
    sd_status st = sd_cl_get(ctx, &cl);
    if (st)
        return st;
    model_store *s = calloc(1, sizeof *s);
    if (!s)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    st = sd_context_set_ext(ctx, SD_EXT_MODEL_STORE, s, store_free);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

/* Drops the store's reference to the least recently used unreferenced entries beyond the
 * SD_MODEL_STORE_KEEP most recent ones. */
static void store_trim(model_store *s)
{
    for (;;) {
        size_t idle = 0, oldest = s->n;
        for (size_t i = 0; i < s->n; i++)
            if (s->entries[i]->refcount == 1) {
                idle++;
                if (oldest == s->n || s->entries[i]->last_use < s->entries[oldest]->last_use)
                    oldest = i;
            }
        if (idle <= SD_MODEL_STORE_KEEP)
            return;
        sd_loaded_unref(s->entries[oldest]);
        s->entries[oldest] = s->entries[--s->n];
    }
}

/* True for a path ending in ".gguf" (any case). */
static bool is_gguf(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strcasecmp(path + n - 5, ".gguf") == 0;
}

/* Opens l->path: a safetensors (or torch) file, or a GGUF file through its tensor view. */
static sd_status open_tensors(sd_context *ctx, sd_loaded *l)
{
    if (!is_gguf(l->path))
        return sd_safetensors_open(ctx, l->path, &l->st);
    sd_status st = sd_gguf_open(ctx, l->path, &l->gguf);
    return st ? st : sd_gguf_tensor_view(ctx, l->gguf, &l->st);
}

static sd_status inspect(sd_context *ctx, sd_loaded *l)
{
    if (l->kind == SD_MODEL_FILE_VAE)
        return sd_vae_inspect(ctx, l->st, &l->cfg);
    if (l->kind == SD_MODEL_FILE_UNET)
        return sd_unet_file_inspect(ctx, l->st, &l->cfg);
    return sd_checkpoint_inspect(ctx, l->st, &l->cfg);
}

sd_status sd_model_store_open(sd_context *ctx, const char *path, sd_model_file_kind kind, sd_dtype dtype,
                              sd_loaded **out)
{
    *out = NULL;
    sd_cl *cl;
    model_store *s;
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st)
        st = store_get(ctx, &s);
    if (st)
        return st;
    /* Opened through the read guard even when the store has the file: inside a node this checks
     * that the file is in the node's key and unchanged since it was hashed. */
    int fd;
    sd_file_id id;
    if ((st = sd_file_open(ctx, path, &fd, &id)))
        return st;
    close(fd);
    for (size_t i = 0; i < s->n; i++) {
        sd_loaded *e = s->entries[i];
        if (e->kind == kind && e->dtype == dtype && sd_file_id_equal(&e->id, &id) && strcmp(e->path, path) == 0) {
            e->last_use = ++s->clock;
            *out = sd_loaded_ref(e);
            return SD_OK;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        sd_loaded **grown = realloc(s->entries, cap * sizeof *grown);
        if (!grown)
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        s->entries = grown;
        s->cap = cap;
    }
    sd_loaded *l = calloc(1, sizeof *l);
    if (!l || !(l->path = sd_strdup(path))) {
        free(l);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    l->refcount = 1;
    l->cl = cl;
    l->kind = kind;
    l->dtype = dtype;
    l->stats = &s->stats;
    if (kind == SD_MODEL_FILE_TEXT_ENCODERS)
        st = sd_text_file_open(ctx, path, &l->text);
    else if (!(st = open_tensors(ctx, l)))
        st = inspect(ctx, l);
    if (st) {
        loaded_free(l);
        return st;
    }
    l->id = *(l->text ? sd_text_file_id(l->text) : sd_safetensors_file_id(l->st));
    s->stats.files_opened++;
    l->last_use = ++s->clock;
    s->entries[s->n++] = l;
    *out = sd_loaded_ref(l);
    store_trim(s);
    return SD_OK;
}

const sd_checkpoint_config *sd_loaded_config(const sd_loaded *l)
{
    return &l->cfg;
}

static sd_status missing_part(sd_loaded *l, const char *part)
{
    return sd_set_error(l->cl->ctx, SD_ERR_INVALID, "%s: the file has no %s", l->path, part);
}

sd_status sd_loaded_unet(sd_loaded *l, sd_unet **out)
{
    *out = l->unet;
    if (l->unet)
        return SD_OK;
    if (!l->cfg.has_unet)
        return missing_part(l, "UNet (model.diffusion_model.*)");
    if (l->cfg.family == SD_FAMILY_FLUX)
        return sd_set_error(l->cl->ctx, SD_ERR_INVALID, "%s: a FLUX transformer, not a UNet", l->path);
    sd_status st = sd_unet_new(l->cl, l->st, l->cfg.unet_prefix, &l->cfg.unet, l->dtype, &l->unet);
    if (!st)
        l->stats->unets_created++;
    *out = l->unet;
    return st;
}

sd_status sd_loaded_flux(sd_loaded *l, sd_flux **out)
{
    *out = l->flux;
    if (l->flux)
        return SD_OK;
    if (!l->cfg.has_unet || l->cfg.family != SD_FAMILY_FLUX)
        return missing_part(l, "FLUX transformer (double_blocks.*)");
    sd_status st = sd_flux_new(l->cl, l->st, l->cfg.unet_prefix, l->dtype, &l->flux);
    if (!st)
        l->stats->unets_created++;
    *out = l->flux;
    return st;
}

sd_status sd_loaded_clip(sd_loaded *l, sd_clip_model **out)
{
    return sd_loaded_text_encoder(l, 0, out);
}

sd_status sd_loaded_text_encoder(sd_loaded *l, int slot, sd_clip_model **out)
{
    *out = l->clip[slot];
    if (l->clip[slot])
        return SD_OK;
    if (slot && !l->cfg.clip2_prefix)
        return missing_part(l, "second text encoder");
    if (!l->cfg.has_clip) {
        char part[160];
        snprintf(part, sizeof part, "CLIP text encoder (%s*)", l->cfg.clip_prefix ? l->cfg.clip_prefix : "");
        return missing_part(l, part);
    }
    sd_status st = sd_clip_model_new(l->cl, l->st, slot ? l->cfg.clip2_prefix : l->cfg.clip_prefix,
                                     slot ? &l->cfg.clip2 : &l->cfg.clip, l->dtype, &l->clip[slot]);
    if (!st)
        l->stats->clips_created++;
    *out = l->clip[slot];
    return st;
}

const sd_text_file *sd_loaded_text_file(const sd_loaded *l)
{
    return l->text;
}

/* Part `part` of a text-encoder entry, which must be of kind CLIP (t5 false) or T5 (t5 true). */
static sd_status text_part(sd_loaded *l, int part, bool t5, const sd_text_file_part **out)
{
    *out = l->text && part >= 0 && part < sd_text_file_count(l->text) ? sd_text_file_part_at(l->text, part) : NULL;
    if (!*out || ((*out)->kind == SD_TEXT_T5XXL) != t5)
        return missing_part(l, t5 ? "T5 encoder" : "CLIP text model");
    return SD_OK;
}

sd_status sd_loaded_text_clip(sd_loaded *l, int part, bool norm_hidden, sd_clip_model **out)
{
    const sd_text_file_part *p;
    sd_status st = text_part(l, part, false, &p);
    *out = st ? NULL : l->text_clip[part][norm_hidden];
    if (st || *out)
        return st;
    sd_clip_config c = p->clip;
    c.norm_hidden = norm_hidden;
    if (!(st = sd_clip_model_new(l->cl, p->st, p->prefix, &c, l->dtype, &l->text_clip[part][norm_hidden])))
        l->stats->clips_created++;
    *out = l->text_clip[part][norm_hidden];
    return st;
}

sd_status sd_loaded_text_t5(sd_loaded *l, int part, sd_t5_model **out)
{
    const sd_text_file_part *p;
    sd_status st = text_part(l, part, true, &p);
    *out = st ? NULL : l->text_t5[part];
    if (st || *out)
        return st;
    if (!(st = sd_t5_model_new(l->cl, p->st, p->prefix, l->dtype, &l->text_t5[part])))
        l->stats->clips_created++;
    *out = l->text_t5[part];
    return st;
}

sd_status sd_loaded_unclip_stats(sd_loaded *l, const float **mean, const float **std)
{
    sd_status status = SD_OK;
    if (!l->unclip_read && l->cfg.unet.adm == SD_ADM_UNCLIP &&
        !(status = sd_unclip_stats_read(l->cl->ctx, l->st, l->cfg.unet.adm_channels / 2, &l->unclip_mean,
                                        &l->unclip_std)))
        l->unclip_read = true;
    *mean = l->unclip_mean;
    *std = l->unclip_std;
    return status;
}

sd_status sd_loaded_vae(sd_loaded *l, sd_vae **out)
{
    *out = l->vae;
    if (l->vae)
        return SD_OK;
    if (!l->cfg.has_vae)
        return missing_part(l, "VAE (first_stage_model.*)");
    sd_status st = sd_vae_new(l->cl, l->st, l->cfg.vae_prefix, &l->cfg.vae, l->dtype, &l->vae);
    if (!st)
        l->stats->vaes_created++;
    *out = l->vae;
    return st;
}

void sd_model_store_release(sd_context *ctx, bool unets, bool clips)
{
    model_store *s = sd_context_ext(ctx, SD_EXT_MODEL_STORE);
    for (size_t i = 0; s && i < s->n; i++) {
        if (unets) {
            sd_unet_free(s->entries[i]->unet);
            s->entries[i]->unet = NULL;
            sd_flux_free(s->entries[i]->flux);
            s->entries[i]->flux = NULL;
        }
        for (int k = 0; clips && k < 2; k++) {
            sd_clip_model_free(s->entries[i]->clip[k]);
            s->entries[i]->clip[k] = NULL;
        }
        if (clips)
            free_text_models(s->entries[i]);
    }
}

sd_status sd_model_store_tokenizer(sd_context *ctx, const sd_clip_tokenizer **out)
{
    model_store *s;
    sd_status st = store_get(ctx, &s);
    if (!st && !s->tokenizer)
        st = sd_clip_tokenizer_new(ctx, &s->tokenizer);
    *out = s->tokenizer;
    return st;
}

sd_status sd_model_store_t5_tokenizer(sd_context *ctx, const sd_t5_tokenizer **out)
{
    model_store *s;
    sd_status st = store_get(ctx, &s);
    if (!st && !s->t5_tokenizer)
        st = sd_t5_tokenizer_new(ctx, &s->t5_tokenizer);
    *out = st ? NULL : s->t5_tokenizer;
    return st;
}

void sd_model_store_stats_get(sd_context *ctx, sd_model_store_stats *out)
{
    model_store *s = sd_context_ext(ctx, SD_EXT_MODEL_STORE);
    memset(out, 0, sizeof *out);
    if (s) {
        *out = s->stats;
        out->entries = s->n;
    }
}
