/* Textual-inversion embeddings (see embeddings.h). */
#include "ml/adapters/embeddings.h"
#include "core/checked.h"
#include "ml/formats/safetensors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tensor holding the vectors: a known key, else the only tensor. */
static const sd_st_tensor *find_vectors(const sd_safetensors *st)
{
    static const char *const keys[] = {"emb_params", "string_to_param.*", "clip_l"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const sd_st_tensor *t = sd_safetensors_find(st, keys[i]);
        if (t)
            return t;
    }
    return sd_safetensors_count(st) == 1 ? sd_safetensors_at(st, 0) : NULL;
}

const char *sd_embedding_key(sd_family family, int slot)
{
    const sd_family_desc *f = sd_family_get(family);
    bool bigg = false;
    for (int i = 0; i < f->n_text_encoders; i++)
        bigg |= f->text_encoders[i].kind == SD_TEXT_OPENCLIP_G;
    if (!bigg || slot < 0 || slot >= f->n_text_encoders)
        return NULL;
    return f->text_encoders[slot].kind == SD_TEXT_OPENCLIP_G ? "clip_g" : "clip_l";
}

/* The tensor of key in st (SDXL files: clip_l and clip_g of the same length), or NULL with
 * *foreign set when st has none (a file of another family) or the message set. */
static const sd_st_tensor *find_keyed(sd_context *ctx, const sd_safetensors *st, const char *key, bool *foreign)
{
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *t = sd_safetensors_find(st, key), *l = sd_safetensors_find(st, "clip_l"),
                       *g = sd_safetensors_find(st, "clip_g");
    if (!t) {
        *foreign = true;
        sd_set_error(ctx, SD_ERR_INVALID,
                     "%s: no %s tensor (an SD1.x embedding?); SDXL text encoders take files with clip_l and clip_g "
                     "tensors", path, key);
        return NULL;
    }
    if (l && g && (l->ndim == 2 ? l->shape[0] : 1) != (g->ndim == 2 ? g->shape[0] : 1)) {
        sd_set_error(ctx, SD_ERR_INVALID, "%s: clip_l has %lld vectors, clip_g %lld", path,
                     (long long)(l->ndim == 2 ? l->shape[0] : 1), (long long)(g->ndim == 2 ? g->shape[0] : 1));
        return NULL;
    }
    return t;
}

/* sd_embedding_read; *foreign set when a keyed read finds a file of another family. */
static sd_status read_vectors(sd_context *ctx, const char *path, int width, const char *key, sd_embedding *out,
                              bool *foreign)
{
    memset(out, 0, sizeof *out);
    *foreign = false;
    sd_safetensors *st = NULL;
    sd_status status = sd_safetensors_open(ctx, path, &st);
    if (status)
        return status;
    const sd_st_tensor *t = key ? find_keyed(ctx, st, key, foreign) : find_vectors(st);
    int64_t rows = t && t->ndim == 2 ? t->shape[0] : 1, cols = t ? t->shape[t->ndim - 1] : 0;
    if (!t && key) {
        status = SD_ERR_INVALID;
    } else if (!t) {
        status = sd_set_error(ctx, SD_ERR_INVALID,
                              "%s: no embedding tensor (emb_params, string_to_param.*, clip_l, or a single tensor)",
                              path);
    } else if ((t->ndim != 1 && t->ndim != 2) || rows < 1) {
        status = sd_set_error(ctx, SD_ERR_INVALID, "%s: embedding tensor '%s' is %d-D; expected [vectors, %d]", path,
                              t->name, t->ndim, width);
    } else if (cols != width) {
        sd_family f = sd_family_by_context_dim(cols); /* SD1.x's 768, SD2.x's 1024 */
        char which[64] = "an embedding for another model family";
        if (f != SD_FAMILY_UNKNOWN)
            snprintf(which, sizeof which, "an %s embedding", sd_family_name(f));
        status = sd_set_error(ctx, SD_ERR_INVALID, "%s: embedding vectors are %lld wide (%s); the text encoder's are %d",
                              path, (long long)cols, which, width);
    } else if (rows > SD_EMBEDDING_MAX_VECTORS) {
        status = sd_set_error(ctx, SD_ERR_LIMIT, "%s: embedding has %lld vectors (at most %d)", path,
                              (long long)rows, SD_EMBEDDING_MAX_VECTORS);
    } else if (!(out->vectors = malloc(t->numel * sizeof *out->vectors))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    } else if (!(status = sd_safetensors_read_f32(ctx, st, t, out->vectors, t->numel))) {
        out->n_vectors = (int)rows;
        out->width = width;
    }
    if (status) {
        free(out->vectors);
        out->vectors = NULL;
    }
    sd_safetensors_close(st);
    return status;
}

sd_status sd_embedding_read(sd_context *ctx, const char *path, int width, const char *key, sd_embedding *out)
{
    bool foreign;
    return read_vectors(ctx, path, width, key, out, &foreign);
}

void sd_embedding_clear(sd_embedding *e)
{
    if (e) {
        free(e->vectors);
        memset(e, 0, sizeof *e);
    }
}

typedef struct named {
    char *name;
    sd_embedding e;   /* n_vectors 0: looked up, not usable */
    bool refused;     /* a file of another family: the set's error */
} named;

struct sd_embedding_set {
    sd_context *ctx;
    int width;
    sd_embedding_find_fn find;
    void *find_user;
    const char *key;       /* sd_embedding_key's, NULL: SD1 rules */
    sd_status error;       /* the first file of another family looked up */
    char *error_message;
    named *items;
    size_t n, cap;
};

sd_status sd_embedding_candidates(sd_context *ctx, const char *name, char *names[SD_EMBEDDING_CANDIDATES])
{
    static const char *const ext[SD_EMBEDDING_CANDIDATES] = {"", ".safetensors", ".pt", ".bin"};
    bool ok = true;
    for (int i = 0; i < SD_EMBEDDING_CANDIDATES; i++)
        ok &= (names[i] = sd_strfmt("%s%s", name, ext[i])) != NULL;
    if (ok)
        return SD_OK;
    sd_embedding_candidates_free(names);
    return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
}

void sd_embedding_candidates_free(char *names[SD_EMBEDDING_CANDIDATES])
{
    for (int i = 0; i < SD_EMBEDDING_CANDIDATES; i++) {
        free(names[i]);
        names[i] = NULL;
    }
}

sd_status sd_embedding_set_new(sd_context *ctx, int width, const char *key, sd_embedding_find_fn find,
                               void *find_user, sd_embedding_set **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    (*out)->ctx = ctx;
    (*out)->width = width;
    (*out)->find = find;
    (*out)->find_user = find_user;
    (*out)->key = key;
    return SD_OK;
}

void sd_embedding_set_free(sd_embedding_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].name);
        sd_embedding_clear(&s->items[i].e);
    }
    free(s->items);
    free(s->error_message);
    free(s);
}

static named *set_find(sd_embedding_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].name, name) == 0)
            return &s->items[i];
    return NULL;
}

/* Reads name's file into e (n_vectors stays 0 when there is none or it is unusable); true when
 * the file is of another family (the set's error). */
static bool set_load(sd_embedding_set *s, const char *name, sd_embedding *e)
{
    const char *path = NULL;
    bool foreign = false;
    sd_status st = s->find(s->find_user, name, &path);
    if (!st && path)
        st = read_vectors(s->ctx, path, s->width, s->key, e, &foreign);
    if (st && !foreign) {
        sd_warn(s->ctx, "embedding:%s cannot be used: %s", name, sd_context_errmsg(s->ctx));
    } else if (st && !s->error) {
        s->error = st;
        s->error_message = sd_strdup(sd_context_errmsg(s->ctx));
    }
    return foreign;
}

int sd_embedding_set_lookup(void *user, const char *name)
{
    sd_embedding_set *s = user;
    named *found = set_find(s, name);
    if (found)
        return found->refused ? 1 : found->e.n_vectors;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        named *items = realloc(s->items, cap * sizeof *items);
        if (!items)
            return 0;
        s->items = items;
        s->cap = cap;
    }
    named *item = &s->items[s->n];
    memset(item, 0, sizeof *item);
    if (!(item->name = sd_strdup(name)))
        return 0;
    s->n++;
    item->refused = set_load(s, name, &item->e);
    return item->refused ? 1 : item->e.n_vectors; /* refused: 1, so that the parser does not call it missing */
}

sd_status sd_embedding_set_error(sd_embedding_set *s)
{
    if (s->error)
        sd_set_error(s->ctx, s->error, "%s", s->error_message ? s->error_message : "embedding of another family");
    return s->error;
}

sd_status sd_embedding_set_ids(sd_embedding_set *s, const sd_prompt_tokens *toks, int vocab, int32_t *ids,
                               float **rows, int *n_rows)
{
    *rows = NULL;
    *n_rows = 0;
    int *first = calloc(toks->n_embeddings ? toks->n_embeddings : 1, sizeof *first);
    if (!first)
        return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
    int total = 0;
    for (size_t e = 0; e < toks->n_embeddings; e++) {
        named *item = set_find(s, toks->embeddings[e]);
        if (!item || item->e.n_vectors == 0) {
            free(first);
            return sd_set_error(s->ctx, SD_ERR_INVALID, "embedding '%s' was not looked up", toks->embeddings[e]);
        }
        first[e] = total;
        total += item->e.n_vectors;
    }
    size_t bytes = 0;
    if (total && (!sd_mul_size((size_t)total * (size_t)s->width, sizeof **rows, &bytes) || !(*rows = malloc(bytes)))) {
        free(first);
        return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
    }
    for (size_t e = 0; e < toks->n_embeddings; e++) {
        const sd_embedding *em = &set_find(s, toks->embeddings[e])->e;
        memcpy(*rows + (size_t)first[e] * (size_t)s->width, em->vectors,
               (size_t)em->n_vectors * (size_t)s->width * sizeof **rows);
    }
    for (size_t i = 0; i < toks->n_windows * SD_CLIP_WINDOW; i++) {
        const sd_prompt_token *t = &toks->tokens[i];
        ids[i] = t->kind == SD_PROMPT_EMBEDDING ? vocab + first[t->embedding] + t->id : t->id;
    }
    *n_rows = total;
    free(first);
    return SD_OK;
}
