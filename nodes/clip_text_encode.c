/* CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner and CLIPSetLastLayer (ComfyUI's
 * nodes, semantics of comfy/sd1_clip.py and comfy/sdxl_clip.py).
 *
 * A prompt is weighted, tokenized and cut into 77-token windows (ml/text/prompt_weights.h); each
 * of the family's text encoders encodes the windows as one batch (after its end token a window is
 * padded with the encoder's pad token: the end token for CLIP-L, 0 for OpenCLIP-bigG), and the
 * windows are concatenated along the tokens. When any token's weight is not 1, the empty
 * prompt's window (BOS, EOS, padding) is encoded too and each weighted token's vector becomes
 * z_empty + (z - z_empty) * weight, at the same position. With two encoders (SDXL) their hidden
 * states are concatenated per token (CLIP-L first), and the pooled output is the first window's
 * of the family's pooled encoder (OpenCLIP-bigG's, projected). "embedding:NAME" reads a
 * textual-inversion embedding from the embeddings directories (ml/adapters/embeddings.h); an
 * unknown one is a warning and is left out. The files hook declares the look-up of every name a
 * literal prompt gives, so the embedding files (or their absence) are part of the cache key and
 * of the provenance.
 *
 * The SDXL size conditioning (width, height, crops, targets, aesthetic score) rides on the
 * conditioning entry as ComfyUI's does; the sampler builds the ADM vector from it
 * (ml/families/adm.h), with ComfyUI's defaults for what plain CLIPTextEncode leaves out. */
#include "core/checked.h"
#include "ml/adapters/embeddings.h"
#include "ml/text/prompt_weights.h"
#include "ml/text/t5_prompt.h"
#include "nodes/family_check.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* Windows encoded per CLIP call (bounds the device memory of very long prompts). */
#define WINDOWS_PER_CALL 8
#define MAX_RESOLUTION 16384 /* ComfyUI's */

/* Encodes n windows of token ids (ids >= vocab: rows of the embeddings) into hidden
 * (n * 77 * width) and pooled (n * pooled width). */
static sd_status encode_windows(sd_clip_model *m, const int32_t *ids, size_t n, int layer, const float *rows,
                                int n_rows, float *hidden, float *pooled)
{
    const sd_clip_config *c = sd_clip_model_config(m);
    for (size_t w = 0; w < n; w += WINDOWS_PER_CALL) {
        int batch = (int)(n - w < WINDOWS_PER_CALL ? n - w : WINDOWS_PER_CALL);
        sd_status st = sd_clip_encode_ex(m, ids + w * SD_CLIP_WINDOW, batch, layer, rows, n_rows,
                                         hidden + w * SD_CLIP_WINDOW * (size_t)c->width,
                                         pooled + w * (size_t)sd_clip_pooled_width(c));
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

/* Declares every embedding the literal prompts among `inputs` name. A linked prompt is known
 * only when the node runs, so it reads no embedding (embeddings_readable says so). */
static sd_status declare_prompts(sd_node_files *f, const char *const *inputs, size_t n)
{
    declaring d = {f, SD_OK};
    sd_status st = SD_OK;
    for (size_t i = 0; i < n && !st && !d.st; i++) {
        const char *text = sd_files_literal(f, inputs[i]);
        if (text)
            st = sd_prompt_embedding_names(sd_files_context(f), text, declare_embedding, &d);
    }
    return st ? st : d.st;
}

/* The files hook of CLIPTextEncode and CLIPTextEncodeSDXLRefiner. */
static sd_status encode_files(sd_node_files *f)
{
    static const char *const inputs[] = {"text"};
    return declare_prompts(f, inputs, SD_COUNT(inputs));
}

/* The files hook of CLIPTextEncodeSDXL. */
static sd_status encode_sdxl_files(sd_node_files *f)
{
    static const char *const inputs[] = {"text_g", "text_l"};
    return declare_prompts(f, inputs, SD_COUNT(inputs));
}

/* Whether embedding:NAME in the prompt `input` is read: only in a literal prompt, whose look-ups
 * the files hook declared; a linked prompt naming one is warned about. */
static bool embeddings_readable(sd_node_run *r, const char *input)
{
    if (!sd_run_linked(r, input))
        return true;
    if (strstr(sd_run_string(r, input), "embedding:"))
        sd_run_warn(r, "the prompt comes through a link, so embedding:NAME in it is read as plain text: an embedding "
                       "file must be part of the cache key, which is made before the prompt is known; set the "
                       "prompt as a value");
    return false;
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

/* One text encoder's encoding of a prompt: n_windows * 77 tokens of width floats, and the first
 * window's pooled vector (pooled_width floats). */
typedef struct encoding {
    float *hidden, *pooled;
    size_t n_windows;
    int width, pooled_width;
} encoding;

static void encoding_free(encoding *e)
{
    free(e->hidden);
    free(e->pooled);
    memset(e, 0, sizeof *e);
}

/* Rewrites every window's positions after its first end token to the encoder's pad token. */
static void pad_windows(int32_t *ids, size_t n_windows, int pad)
{
    for (size_t w = 0; pad != SD_CLIP_EOS && w < n_windows; w++) {
        int32_t *win = ids + w * SD_CLIP_WINDOW;
        int p = 0;
        while (p < SD_CLIP_WINDOW && win[p] != SD_CLIP_EOS)
            p++;
        for (p++; p < SD_CLIP_WINDOW; p++)
            win[p] = pad;
    }
}

/* Encodes text with text encoder `slot` of the CLIP handle h into *out; embedding:NAME is read
 * when `embeddings` (else it is plain text). */
static sd_status encode_text(sd_node_run *r, const sd_model_handle *h, int slot, const char *text, bool embeddings,
                             encoding *out)
{
    sd_context *ctx = sd_run_context(r);
    sd_clip_model *m;
    const sd_clip_tokenizer *tok;
    sd_prompt_tokens toks = {0};
    int32_t *ids = NULL;
    float *hidden = NULL, *pooled = NULL, *rows = NULL;
    int n_rows = 0;
    sd_embedding_set *emb = NULL;
    memset(out, 0, sizeof *out);
    sd_status st = sd_node_model_text_encoder(h, slot, &m);
    if (!st)
        st = sd_model_store_tokenizer(ctx, &tok);
    if (!st)
        st = sd_embedding_set_new(ctx, sd_clip_model_config(m)->width,
                                  sd_embedding_key(sd_node_clip_family(h), slot), find_embedding, r, &emb);
    if (!st)
        st = sd_prompt_tokenize(ctx, tok, text, embeddings ? sd_embedding_set_lookup : NULL, emb, &toks);
    if (!st)
        st = sd_embedding_set_error(emb);
    if (st) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    const sd_clip_config *c = sd_clip_model_config(m);
    int layer = -h->clip_layer > c->layers ? 0 : h->clip_layer; /* ComfyUI: beyond the depth = "last" */
    bool weighted = false;
    for (size_t i = 0; i < toks.n_windows * SD_CLIP_WINDOW; i++)
        weighted |= toks.tokens[i].weight != 1.0;
    size_t n = toks.n_windows + (weighted ? 1 : 0), width = (size_t)c->width, hid_n, ids_n;
    size_t pw = (size_t)sd_clip_pooled_width(c);
    if (!sd_mul_size(n, SD_CLIP_WINDOW, &ids_n) || !sd_mul_size(ids_n, width, &hid_n)) {
        st = sd_run_error(r, SD_ERR_LIMIT, "prompt of %zu windows is too long", toks.n_windows);
        goto done;
    }
    ids = malloc(ids_n * sizeof *ids);
    hidden = malloc(hid_n * sizeof *hidden);
    pooled = malloc(n * pw * sizeof *pooled);
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
    pad_windows(ids, n, c->pad_token);
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
    *out = (encoding){.hidden = hidden, .pooled = pooled, .n_windows = toks.n_windows, .width = c->width,
                      .pooled_width = (int)pw};
    hidden = pooled = NULL;
done:
    sd_prompt_tokens_free(&toks);
    sd_embedding_set_free(emb);
    free(rows);
    free(ids);
    free(hidden);
    free(pooled);
    return st;
}

/* Appends copies of the empty prompt's window (encoded by the same encoder) until e has n
 * windows, as ComfyUI's CLIPTextEncodeSDXL evens out the two encoders' window counts. */
static sd_status pad_with_empty(sd_node_run *r, const sd_model_handle *h, int slot, encoding *e, size_t n)
{
    if (e->n_windows >= n)
        return SD_OK;
    encoding empty;
    sd_status st = encode_text(r, h, slot, "", false, &empty);
    if (st)
        return st;
    size_t win = SD_CLIP_WINDOW * (size_t)e->width;
    float *grown = realloc(e->hidden, n * win * sizeof *grown);
    if (!grown) {
        encoding_free(&empty);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    e->hidden = grown;
    for (; e->n_windows < n; e->n_windows++)
        memcpy(e->hidden + e->n_windows * win, empty.hidden, win * sizeof *grown);
    encoding_free(&empty);
    return SD_OK;
}

/* Sets output 0 to a CONDITIONING of one entry: the encoders' hidden states side by side per token
 * and the pooled vector of the family's pooled encoder (else the first's); extra (stolen, may be
 * NULL) holds the entry's size-conditioning numbers. */
static sd_status set_conditioning(sd_node_run *r, const sd_model_handle *h, const encoding *parts, int n_parts,
                                  json_t *extra)
{
    const sd_family_desc *f = sd_family_get(sd_node_clip_family(h));
    size_t tokens = parts[0].n_windows * SD_CLIP_WINDOW, width = 0;
    int pooled_part = 0;
    for (int k = 0; k < n_parts; k++) {
        width += (size_t)parts[k].width;
        if (k < f->n_text_encoders && f->text_encoders[k].pooled)
            pooled_part = k;
    }
    json_t *entry = extra ? extra : json_object();
    int64_t cshape[3] = {1, (int64_t)tokens, (int64_t)width};
    int64_t pshape[2] = {1, parts[pooled_part].pooled_width};
    sd_tensor *ct, *pt;
    sd_value *out = sd_value_new(SD_TYPE_CONDITIONING);
    if (!entry || json_object_set_new(entry, "strength", json_real(1.0)) || !out ||
        !(ct = sd_value_add_tensor(out, "cond.0", 3, cshape)) || !(pt = sd_value_add_tensor(out, "pooled.0", 2, pshape)) ||
        !(out->attrs = json_pack("{s:[O]}", "entries", entry))) {
        json_decref(entry);
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    json_decref(entry);
    for (size_t t = 0; t < tokens; t++) {
        float *dst = ct->data + t * width;
        for (int k = 0; k < n_parts; k++) {
            memcpy(dst, parts[k].hidden + t * (size_t)parts[k].width, (size_t)parts[k].width * sizeof *dst);
            dst += parts[k].width;
        }
    }
    memcpy(pt->data, parts[pooled_part].pooled, (size_t)parts[pooled_part].pooled_width * sizeof(float));
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

/* The CLIP input's handle, of `family` unless that is SD_FAMILY_UNKNOWN (else the node's error). */
static const sd_model_handle *clip_input(sd_node_run *r, sd_family family)
{
    const sd_model_handle *h = sd_node_model_input(r, "clip");
    sd_family got = h ? sd_node_clip_family(h) : SD_FAMILY_UNKNOWN;
    if (h && family != SD_FAMILY_UNKNOWN && got != family) {
        sd_run_error(r, SD_ERR_INVALID, "input 'clip': the text encoders are %s; this node takes %s ones",
                     sd_family_name(got), sd_family_name(family));
        return NULL;
    }
    return h;
}

/* The slot of the CLIP handle's text encoder of that kind, or -1. */
static int slot_of(const sd_model_handle *h, sd_text_encoder_kind kind)
{
    for (int k = 0; k < sd_node_clip_count(h); k++)
        if (sd_node_clip_kind(h, k) == kind)
            return k;
    return -1;
}

/* T5's last hidden state of text (ml/text/t5_prompt.h: FLUX's 256-token minimum) into *out (its
 * tokens in n_windows, hidden [n_windows, width]; no pooled vector), weighted as ComfyUI's
 * ClipTokenWeightEncoder: a token of weight w becomes z_empty + (z - z_empty) * w, z_empty the
 * encoding of </s> and padding of the same length. */
static sd_status encode_t5(sd_node_run *r, const sd_model_handle *h, int slot, const char *text, encoding *out)
{
    sd_context *ctx = sd_run_context(r);
    sd_t5_model *m;
    const sd_t5_tokenizer *tok;
    sd_t5_prompt p = {0};
    float *hidden = NULL, *empty = NULL;
    int32_t *empty_ids = NULL;
    memset(out, 0, sizeof *out);
    sd_status st = sd_node_model_t5(h, slot, &m);
    if (!st)
        st = sd_model_store_t5_tokenizer(ctx, &tok);
    if (!st)
        st = sd_t5_prompt_tokenize(ctx, tok, text, SD_T5_FLUX_MIN_LENGTH, &p);
    if (st)
        return sd_node_model_fail(r, st);
    size_t width = (size_t)sd_t5_model_config(m)->d_model, count;
    if (p.n > INT32_MAX || !sd_mul_size(p.n, width, &count)) {
        st = sd_run_error(r, SD_ERR_LIMIT, "T5 prompt of %zu tokens is too long", p.n);
        goto done;
    }
    hidden = malloc(count * sizeof *hidden);
    if (p.weighted) {
        empty = malloc(count * sizeof *empty);
        empty_ids = calloc(p.n, sizeof *empty_ids);
    }
    if (!hidden || (p.weighted && (!empty || !empty_ids))) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for %zu T5 tokens", p.n);
        goto done;
    }
    if ((st = sd_t5_encode(m, p.ids, (int)p.n, hidden))) {
        st = sd_node_model_fail(r, st);
        goto done;
    }
    if (p.weighted) {
        empty_ids[0] = SD_T5_EOS; /* the rest is <pad> (0) */
        if ((st = sd_t5_encode(m, empty_ids, (int)p.n, empty))) {
            st = sd_node_model_fail(r, st);
            goto done;
        }
        for (size_t i = 0; i < p.n; i++)
            for (size_t k = 0; p.weights[i] != 1.0 && k < width; k++) {
                float *z = hidden + i * width + k, e = empty[i * width + k];
                *z = (float)((*z - e) * p.weights[i] + e);
            }
    }
    *out = (encoding){.hidden = hidden, .n_windows = p.n, .width = (int)width};
    hidden = NULL;
done:
    sd_t5_prompt_free(&p);
    free(hidden);
    free(empty);
    free(empty_ids);
    return st;
}

/* FLUX's conditioning (comfy/text_encoders/flux.py): cond.0 [1, tokens, d_model] is T5's
 * encoding of text_t5, pooled.0 [1, width] CLIP-L's pooled output of text_l's first window
 * without projection; extra (stolen, may be NULL) holds the entry's other attributes. */
static sd_status encode_flux(sd_node_run *r, const sd_model_handle *h, const char *text_l, bool embeddings_l,
                             const char *text_t5, json_t *extra)
{
    int ls = slot_of(h, SD_TEXT_CLIP_L), ts = slot_of(h, SD_TEXT_T5XXL);
    encoding l = {0}, t = {0};
    sd_status st = ls < 0 || ts < 0 ? sd_run_error(r, SD_ERR_INVALID, "input 'clip': FLUX needs CLIP-L and T5-XXL")
                                    : encode_text(r, h, ls, text_l, embeddings_l, &l);
    if (!st)
        st = encode_t5(r, h, ts, text_t5, &t);
    json_t *entry = extra ? extra : json_object();
    extra = NULL;
    sd_value *out = st ? NULL : sd_value_new(SD_TYPE_CONDITIONING);
    int64_t cshape[3] = {1, (int64_t)t.n_windows, t.width}, pshape[2] = {1, l.pooled_width};
    sd_tensor *ct = NULL, *pt = NULL;
    if (!st && (!entry || json_object_set_new(entry, "strength", json_real(1.0)) || !out ||
                !(ct = sd_value_add_tensor(out, "cond.0", 3, cshape)) ||
                !(pt = sd_value_add_tensor(out, "pooled.0", 2, pshape)) ||
                !(out->attrs = json_pack("{s:[O]}", "entries", entry))))
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    if (!st) {
        memcpy(ct->data, t.hidden, t.n_windows * (size_t)t.width * sizeof(float));
        memcpy(pt->data, l.pooled, (size_t)l.pooled_width * sizeof(float));
        sd_run_set_output(r, 0, out);
    } else {
        sd_value_unref(out);
    }
    json_decref(entry);
    encoding_free(&l);
    encoding_free(&t);
    sd_node_model_done(r);
    return st;
}

/* Encodes texts[k] with the handle's text encoder k (n of them; embedding:NAME read where
 * embeddings[k]), evened out to one window count, and sets the conditioning output. */
static sd_status encode_all(sd_node_run *r, const sd_model_handle *h, const char *const *texts,
                            const bool *embeddings, int n, json_t *extra)
{
    encoding parts[2] = {{0}};
    sd_status st = SD_OK;
    size_t windows = 0;
    for (int k = 0; !st && k < n; k++)
        if (!(st = encode_text(r, h, k, texts[k], embeddings[k], &parts[k])) && parts[k].n_windows > windows)
            windows = parts[k].n_windows;
    for (int k = 0; !st && k < n; k++)
        st = pad_with_empty(r, h, k, &parts[k], windows);
    if (!st)
        st = set_conditioning(r, h, parts, n, extra);
    else
        json_decref(extra);
    for (int k = 0; k < n; k++)
        encoding_free(&parts[k]);
    sd_node_model_done(r);
    return st;
}

static sd_status run_encode(sd_node_run *r)
{
    const sd_model_handle *h = clip_input(r, SD_FAMILY_UNKNOWN);
    if (!h)
        return SD_ERR_INVALID;
    const char *text = sd_run_string(r, "text");
    const char *texts[2] = {text, text};
    bool readable = embeddings_readable(r, "text");
    const bool embeddings[2] = {readable, readable};
    if (slot_of(h, SD_TEXT_T5XXL) >= 0)
        return encode_flux(r, h, text, readable, text, NULL);
    return encode_all(r, h, texts, embeddings, sd_node_clip_count(h), NULL);
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
    .doc = "Encodes a prompt with the model's text encoders (ComfyUI's weighting and 75-token chunks).",
    .inputs = encode_in, .n_inputs = SD_COUNT(encode_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode, .files = encode_files,
    .check = sd_check_text_encode,
};

static sd_status run_encode_sdxl(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "clip");
    /* ComfyUI's node encodes for FLUX too: text_g for T5, text_l for CLIP-L */
    h = h && sd_node_clip_family(h) == SD_FAMILY_FLUX ? h : clip_input(r, SD_FAMILY_SDXL);
    if (!h)
        return SD_ERR_INVALID;
    const char *texts[2] = {sd_run_string(r, "text_l"), sd_run_string(r, "text_g")};
    json_t *extra = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "width", (json_int_t)sd_run_int(r, "width"), "height",
                              (json_int_t)sd_run_int(r, "height"), "crop_w", (json_int_t)sd_run_int(r, "crop_w"),
                              "crop_h", (json_int_t)sd_run_int(r, "crop_h"), "target_width",
                              (json_int_t)sd_run_int(r, "target_width"), "target_height",
                              (json_int_t)sd_run_int(r, "target_height"));
    if (!extra)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    const bool embeddings[2] = {embeddings_readable(r, "text_l"), embeddings_readable(r, "text_g")};
    if (sd_node_clip_family(h) == SD_FAMILY_FLUX)
        return encode_flux(r, h, texts[0], embeddings[0], texts[1], extra);
    return encode_all(r, h, texts, embeddings, 2, extra);
}

static const sd_input_desc sdxl_in[] = {
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the SDXL text encoders"),
    SD_IN_INT("width", "1024", 0, MAX_RESOLUTION, "the original image width the model is told (size conditioning)"),
    SD_IN_INT("height", "1024", 0, MAX_RESOLUTION, "the original image height"),
    SD_IN_INT("crop_w", "0", 0, MAX_RESOLUTION, "the left crop offset the model is told"),
    SD_IN_INT("crop_h", "0", 0, MAX_RESOLUTION, "the top crop offset"),
    SD_IN_INT("target_width", "1024", 0, MAX_RESOLUTION, "the target width the model is told"),
    SD_IN_INT("target_height", "1024", 0, MAX_RESOLUTION, "the target height"),
    SD_IN_TEXT("text_g", NULL, "the prompt for OpenCLIP-bigG (and the pooled vector)"),
    SD_IN_TEXT("text_l", NULL, "the prompt for CLIP-L"),
};
const sd_node_desc sd_node_CLIPTextEncodeSDXL = {
    .name = "CLIPTextEncodeSDXL", .version = 1, .category = "advanced/conditioning",
    .doc = "Encodes an SDXL prompt per text encoder with the size conditioning (ComfyUI's node).",
    .inputs = sdxl_in, .n_inputs = SD_COUNT(sdxl_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode_sdxl, .files = encode_sdxl_files,
    .check = sd_check_text_encode_sdxl,
};

static sd_status run_encode_flux(sd_node_run *r)
{
    const sd_model_handle *h = clip_input(r, SD_FAMILY_FLUX);
    if (!h)
        return SD_ERR_INVALID;
    json_t *extra = json_pack("{s:f}", "guidance", sd_run_float(r, "guidance"));
    if (!extra)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    return encode_flux(r, h, sd_run_string(r, "clip_l"), embeddings_readable(r, "clip_l"), sd_run_string(r, "t5xxl"),
                       extra);
}

/* The files hook of CLIPTextEncodeFlux (embeddings are read for CLIP-L only). */
static sd_status encode_flux_files(sd_node_files *f)
{
    static const char *const inputs[] = {"clip_l"};
    return declare_prompts(f, inputs, SD_COUNT(inputs));
}

static const sd_input_desc flux_in[] = {
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the FLUX text encoders (CLIP-L and T5-XXL)"),
    SD_IN_TEXT("clip_l", NULL, "the prompt for CLIP-L (its pooled vector)"),
    SD_IN_TEXT("t5xxl", NULL, "the prompt for T5-XXL (the token embeddings)"),
    SD_IN_FLOAT("guidance", "3.5", 0.0, 100.0, "the guidance the model is told (FLUX dev's distilled guidance)"),
};
static const sd_output_desc flux_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING,
           "T5-XXL's token embeddings [1, max(tokens + 1, 256), 4096], CLIP-L's pooled vector [1, 768], guidance"),
};
const sd_node_desc sd_node_CLIPTextEncodeFlux = {
    .name = "CLIPTextEncodeFlux", .version = 1, .category = "advanced/conditioning/flux",
    .doc = "Encodes a FLUX prompt per text encoder with the guidance value (ComfyUI's node).",
    .inputs = flux_in, .n_inputs = SD_COUNT(flux_in),
    .outputs = flux_out, .n_outputs = SD_COUNT(flux_out), .run = run_encode_flux, .files = encode_flux_files,
    .check = sd_check_text_encode_flux,
};

static sd_status run_encode_refiner(sd_node_run *r)
{
    const sd_model_handle *h = clip_input(r, SD_FAMILY_SDXL_REFINER);
    if (!h)
        return SD_ERR_INVALID;
    const char *texts[1] = {sd_run_string(r, "text")};
    json_t *extra = json_pack("{s:f,s:I,s:I}", "aesthetic_score", sd_run_float(r, "ascore"), "width",
                              (json_int_t)sd_run_int(r, "width"), "height", (json_int_t)sd_run_int(r, "height"));
    if (!extra)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    const bool embeddings[1] = {embeddings_readable(r, "text")};
    return encode_all(r, h, texts, embeddings, 1, extra);
}

static const sd_input_desc refiner_in[] = {
    SD_IN_LINK("clip", SD_TYPE_CLIP, "the SDXL refiner's text encoder"),
    SD_IN_FLOAT("ascore", "6.0", 0.0, 1000.0, "the aesthetic score the model is told (ComfyUI's example: 6 "
                                               "positive, 2.5 negative)"),
    SD_IN_INT("width", "1024", 0, MAX_RESOLUTION, "the original image width the model is told"),
    SD_IN_INT("height", "1024", 0, MAX_RESOLUTION, "the original image height"),
    SD_IN_TEXT("text", NULL, "the prompt"),
};
const sd_node_desc sd_node_CLIPTextEncodeSDXLRefiner = {
    .name = "CLIPTextEncodeSDXLRefiner", .version = 1, .category = "advanced/conditioning",
    .doc = "Encodes a prompt for the SDXL refiner with the aesthetic score and size (ComfyUI's node).",
    .inputs = refiner_in, .n_inputs = SD_COUNT(refiner_in),
    .outputs = encode_out, .n_outputs = SD_COUNT(encode_out), .run = run_encode_refiner, .files = encode_files,
    .check = sd_check_text_encode_refiner,
};

static sd_status run_last_layer(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "clip");
    if (!h)
        return SD_ERR_INVALID;
    sd_value *v = sd_node_model_derive(SD_TYPE_CLIP, h, h->lora);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    ((sd_model_handle *)v->handle)->clip_layer = (int)sd_run_int(r, "stop_at_clip_layer");
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
