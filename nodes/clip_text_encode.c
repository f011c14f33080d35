/* CLIPTextEncode and CLIPSetLastLayer (ComfyUI's nodes, SD1 semantics of comfy/sd1_clip.py).
 *
 * A prompt is weighted, tokenized and cut into 77-token windows (models/prompt_weights.h); the
 * windows are encoded as one batch and concatenated along the tokens. When any token's weight
 * is not 1, the empty prompt's window (BOS, then EOS padding) is encoded too and each weighted
 * token's vector becomes z_empty + (z - z_empty) * weight, at the same position. The pooled
 * output is the first window's. "embedding:NAME" reads a textual-inversion embedding from the
 * embeddings directories (models/embeddings.h); an unknown one is a warning and is left out.
 * The files hook declares the look-up of every name the prompt gives, so the embedding files
 * (or their absence) are part of the cache key and of the provenance. */
#include "core/checked.h"
#include "models/embeddings.h"
#include "models/prompt_weights.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* Windows encoded per CLIP call (bounds the device memory of very long prompts). */
#define WINDOWS_PER_CALL 8

/* Encodes n windows of token ids (ids >= vocab: rows of the embeddings) into hidden
 * (n * 77 * width) and pooled (n * width). */
static sd_status encode_windows(sd_clip_model *m, const int32_t *ids, size_t n, int layer, const float *rows,
                                int n_rows, float *hidden, float *pooled)
{
    int width = sd_clip_model_config(m)->width;
    for (size_t w = 0; w < n; w += WINDOWS_PER_CALL) {
        int batch = (int)(n - w < WINDOWS_PER_CALL ? n - w : WINDOWS_PER_CALL);
        sd_status st = sd_clip_encode_ex(m, ids + w * SD_CLIP_WINDOW, batch, layer, rows, n_rows,
                                         hidden + w * SD_CLIP_WINDOW * (size_t)width, pooled + w * (size_t)width);
        if (st)
            return st;
    }
    return SD_OK;
}

/* Declares the look-up of one embedding name (an sd_embedding_lookup_fn; user: declaring). */
typedef struct declaring {
    sd_node_files *files;
    sd_status st;
} declaring;

static int declare_embedding(void *user, const char *name)
{
    declaring *d = user;
    char *names[SD_EMBEDDING_CANDIDATES];
    if (!d->st && !(d->st = sd_embedding_candidates(sd_files_context(d->files), name, names))) {
        d->st = sd_files_find(d->files, "embeddings", (const char *const *)names, SD_EMBEDDING_CANDIDATES);
        sd_embedding_candidates_free(names);
    }
    return 0;
}

/* The files hook: every embedding a literal prompt names. A linked prompt is known only when
 * the node runs, so it reads no embedding (run_encode says so). */
static sd_status encode_files(sd_node_files *f)
{
    const char *text = sd_files_literal(f, "text");
    declaring d = {f, SD_OK};
    sd_status st = text ? sd_prompt_embedding_names(sd_files_context(f), text, declare_embedding, &d) : SD_OK;
    return st ? st : d.st;
}

/* An sd_embedding_find_fn (user: the run): the file the declared look-up found. */
static sd_status find_embedding(void *user, const char *name, const char **path)
{
    sd_node_run *r = user;
    char *names[SD_EMBEDDING_CANDIDATES];
    sd_status st = sd_embedding_candidates(sd_run_context(r), name, names);
    if (!st)
        st = sd_run_found_file(r, "embeddings", (const char *const *)names, SD_EMBEDDING_CANDIDATES, path);
    sd_embedding_candidates_free(names);
    return st;
}

static sd_status run_encode(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    const sd_model_handle *h = sd_node_model_input(r, "clip");
    if (!h)
        return SD_ERR_INVALID;
    sd_clip_model *m;
    const sd_clip_tokenizer *tok;
    sd_prompt_tokens toks = {0};
    int32_t *ids = NULL;
    float *hidden = NULL, *pooled = NULL, *rows = NULL;
    int n_rows = 0;
    sd_embedding_set *emb = NULL;
    sd_value *out = NULL;
    sd_status st = sd_node_model_clip(h, &m);
    if (!st)
        st = sd_model_store_tokenizer(ctx, &tok);
    const char *text = sd_run_string(r, "text");
    bool linked = sd_run_linked(r, "text");
    if (linked && strstr(text, "embedding:"))
        sd_run_warn(r, "the prompt comes through a link, so embedding:NAME in it is read as plain text: an embedding "
                       "file must be part of the cache key, which is made before the prompt is known; set the "
                       "prompt as a value");
    if (!st)
        st = sd_embedding_set_new(ctx, sd_clip_model_config(m)->width, find_embedding, r, &emb);
    if (!st)
        st = sd_prompt_tokenize(ctx, tok, text, linked ? NULL : sd_embedding_set_lookup, emb, &toks);
    if (st) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    const sd_clip_config *c = sd_clip_model_config(m);
    int layer = -h->clip_layer > c->layers ? -1 : h->clip_layer; /* ComfyUI: beyond the depth = last */
    bool weighted = false;
    for (size_t i = 0; i < toks.n_windows * SD_CLIP_WINDOW; i++)
        weighted |= toks.tokens[i].weight != 1.0;
    size_t n = toks.n_windows + (weighted ? 1 : 0), width = (size_t)c->width, hid_n, ids_n;
    if (!sd_mul_size(n, SD_CLIP_WINDOW, &ids_n) || !sd_mul_size(ids_n, width, &hid_n)) {
        st = sd_run_error(r, SD_ERR_LIMIT, "prompt of %zu windows is too long", toks.n_windows);
        goto done;
    }
    ids = malloc(ids_n * sizeof *ids);
    hidden = malloc(hid_n * sizeof *hidden);
    pooled = malloc(n * width * sizeof *pooled);
    if (!ids || !hidden || !pooled) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for %zu prompt windows", n);
        goto done;
    }
    if ((st = sd_embedding_set_ids(emb, &toks, c->vocab, ids, &rows, &n_rows))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    if (weighted) { /* the empty prompt's window */
        int32_t *e = ids + toks.n_windows * SD_CLIP_WINDOW;
        e[0] = SD_CLIP_BOS;
        for (int i = 1; i < SD_CLIP_WINDOW; i++)
            e[i] = SD_CLIP_EOS;
    }
    if ((st = encode_windows(m, ids, n, layer, rows, n_rows, hidden, pooled))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    if (weighted) {
        const float *z_empty = hidden + toks.n_windows * SD_CLIP_WINDOW * width;
        for (size_t i = 0; i < toks.n_windows * SD_CLIP_WINDOW; i++) {
            double wt = toks.tokens[i].weight;
            if (wt == 1.0)
                continue;
            float *z = hidden + i * width;
            const float *e = z_empty + (i % SD_CLIP_WINDOW) * width;
            for (size_t k = 0; k < width; k++)
                z[k] = (float)((z[k] - e[k]) * wt + e[k]);
        }
    }
    int64_t cshape[3] = {1, (int64_t)(toks.n_windows * SD_CLIP_WINDOW), (int64_t)width};
    int64_t pshape[2] = {1, (int64_t)width};
    sd_tensor *ct, *pt;
    out = sd_value_new(SD_TYPE_CONDITIONING);
    if (!out || !(ct = sd_value_add_tensor(out, "cond.0", 3, cshape)) ||
        !(pt = sd_value_add_tensor(out, "pooled.0", 2, pshape)) ||
        !(out->attrs = json_pack("{s:[{s:f}]}", "entries", "strength", 1.0))) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(ct->data, hidden, toks.n_windows * SD_CLIP_WINDOW * width * sizeof(float));
    memcpy(pt->data, pooled, width * sizeof(float));
    sd_run_set_output(r, 0, out);
    out = NULL;
done:
    sd_node_model_done(r);
    sd_value_unref(out);
    sd_prompt_tokens_free(&toks);
    sd_embedding_set_free(emb);
    free(rows);
    free(ids);
    free(hidden);
    free(pooled);
    return st;
}

static const sd_input_desc encode_in[] = {
    SD_IN_TEXT("text", NULL, "the prompt; (word:1.2) and (word) weighting and embedding:NAME as ComfyUI"),
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the text encoder"),
};
static const sd_output_desc encode_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "token embeddings [1, 77 * windows, width] and the pooled vector"),
};
const sd_node_desc sd_node_CLIPTextEncode = {
    .name = "CLIPTextEncode", .version = 1, .category = "conditioning",
    .doc = "Encodes a prompt with the CLIP text encoder (ComfyUI's weighting and 75-token chunks).",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode, .files = encode_files,
};

static sd_status run_last_layer(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "clip");
    if (!h)
        return SD_ERR_INVALID;
    sd_value *v = sd_node_model_value_lora(SD_TYPE_CLIP, h->loaded, (int)sd_run_int(r, "stop_at_clip_layer"), h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc last_in[] = {
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the text encoder"),
    SD_IN_INT("stop_at_clip_layer", "-1", -24, -1,
              "layer whose output is used: -1 the last, -2 the one before (\"clip skip 2\"), ..."),
};
static const sd_output_desc last_out[] = {
    SD_OUT("CLIP", SD_TYPE_CLIP, "the same encoder (weights shared) stopping at that layer"),
};
const sd_node_desc sd_node_CLIPSetLastLayer = {
    .name = "CLIPSetLastLayer", .version = 1, .category = "conditioning",
    .doc = "Makes CLIPTextEncode use an earlier layer's output (clip skip), as ComfyUI.",
    .inputs = last_in, .n_inputs = SD_COUNT(last_in),
    .outputs = last_out, .n_outputs = SD_COUNT(last_out), .run = run_last_layer,
};
