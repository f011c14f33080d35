/* CLIPInterrogate: a prompt for each image with the CLIP interrogator (ml/vision/interrogator.h)
 * over both towers of a CLIP model file (ml/vision/clip_pair.h), the caption from BLIP
 * (nodes/blip_caption.h) or given. Label tables are the embedded defaults of clip-interrogator
 * (data/interrogate) unless lists_dir holds <table>.txt files; extra_tables names more tables
 * there, which join the ranking with the flavors. Label features are computed once per model
 * and table content in chunks, kept in the SQLite cache (a second interrogation encodes no
 * label) and in memory with the model. */
#include "nodes/interrogate.h"
#include "core/cache.h"
#include "core/embedded.h"
#include "core/files.h"
#include "core/hash.h"
#include "ml/vision/clip_pair.h"
#include "nodes/blip_caption.h"
#include "nodes/image_device.h"
#include "nodes/kept_model.h"
#include "nodes/node_util.h"
#include <jansson.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define KEPT_SLOT "nodes.interrogate"
#define CHUNK_LABELS 1024
#define TABLE_MAX_BYTES (64u << 20)
#define MAX_EXTRA 16
#define MEMO 32

static atomic_llong labels_encoded;

int64_t sd_interrogate_labels_encoded(void)
{
    return (int64_t)atomic_load(&labels_encoded);
}

/* The kept model: the towers and the features of label chunks computed with them. */
typedef struct memo_entry {
    sd_key key;
    int n;
    float *embeds;
} memo_entry;

typedef struct interrogate_model {
    sd_clip_pair *pair;
    memo_entry memo[MEMO];
    int next; /* the memo slot replaced next */
} interrogate_model;

static void model_free(void *p)
{
    interrogate_model *m = p;
    sd_clip_pair_free(m->pair);
    for (int i = 0; i < MEMO; i++)
        free(m->memo[i].embeds);
    free(m);
}

static sd_status model_make(sd_cl *cl, const sd_safetensors *st, void **obj)
{
    interrogate_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_clip_pair_new(cl, st, &m->pair);
    if (s) {
        free(m);
        return s;
    }
    *obj = m;
    return SD_OK;
}

/* ---- label tables ---- */

/* The look-up names of table `name` in lists_dir ("<dir>/<name>.txt"). */
static void table_file(const char *dir, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.txt", dir, name);
}

/* Calls fn for every table name the node may read from lists_dir: the named ones, then the
 * comma-separated extra_tables. */
static sd_status each_table_name(const char *extra, sd_status (*fn)(void *, const char *, int), void *user)
{
    sd_status s = SD_OK;
    for (int t = 0; t < SD_TABLE_NAMED && !s; t++)
        s = fn(user, sd_label_table_names[t], t);
    int k = SD_TABLE_NAMED;
    for (const char *p = extra ? extra : ""; *p && !s && k < SD_TABLE_NAMED + MAX_EXTRA;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ",");
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
            s = fn(user, name, k++);
        }
        p += strcspn(p, ",");
    }
    return s;
}

typedef struct declare_state {
    sd_node_files *f;
    const char *dir;
} declare_state;

static sd_status declare_one(void *user, const char *name, int index)
{
    (void)index;
    declare_state *d = user;
    char file[1200];
    const char *names[1] = {file};
    table_file(d->dir, name, file, sizeof file);
    return sd_files_find(d->f, "interrogate", names, 1);
}

static sd_status interrogate_files(sd_node_files *f)
{
    const char *dir = sd_files_literal(f, "lists_dir");
    sd_status s = sd_blip_declare_vocab(f, "blip_name");
    if (!s && dir && *dir) {
        declare_state d = {f, dir};
        s = each_table_name(sd_files_literal(f, "extra_tables"), declare_one, &d);
    }
    return s;
}

typedef struct load_state {
    sd_node_run *r;
    const char *dir;
    sd_label_table *tables;
    int n;
} load_state;

/* Table `name` from lists_dir when it holds one, else the embedded default (an extra table must
 * exist). The artists' names become "by X" and "inspired by X", as published. */
static sd_status load_one(void *user, const char *name, int index)
{
    load_state *l = user;
    sd_context *ctx = sd_run_context(l->r);
    sd_label_table *t = &l->tables[index];
    snprintf(t->name, sizeof t->name, "%s", name);
    l->n = index + 1;
    char file[1200], gz[96], *text = NULL;
    const char *names[1] = {file}, *path = NULL;
    size_t len = 0;
    sd_status s = SD_OK;
    if (*l->dir) {
        table_file(l->dir, name, file, sizeof file);
        s = sd_run_found_file(l->r, "interrogate", names, 1, &path);
    }
    if (!s && path)
        s = sd_file_read_text(ctx, path, TABLE_MAX_BYTES, &text, &len);
    else if (!s && index == SD_TABLE_TRENDINGS)
        return sd_label_table_trendings(ctx, t);
    else if (!s && index < SD_TABLE_NAMED) {
        snprintf(gz, sizeof gz, "%s.txt.gz", name);
        s = sd_embedded_gunzip(ctx, gz, "label table", &text, &len);
    } else if (!s)
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "label table '%s' not found in models/interrogate/%s", name,
                            l->dir);
    if (!s && index == SD_TABLE_ARTISTS) {
        s = sd_label_table_add_lines(ctx, t, text, len, "by ");
        if (!s)
            s = sd_label_table_add_lines(ctx, t, text, len, "inspired by ");
    } else if (!s) {
        s = sd_label_table_add_lines(ctx, t, text, len, "");
    }
    free(text);
    return s;
}

/* ---- label features ---- */

static void chunk_key(const sd_key *model, const sd_label_table *t, int start, int n, int dim, sd_key *out)
{
    sd_hasher h;
    sd_hasher_init(&h);
    sd_hasher_str(&h, "sdflow.interrogate.labels.1");
    sd_hasher_key(&h, model);
    sd_hasher_i64(&h, dim);
    for (int i = 0; i < n; i++)
        sd_hasher_str(&h, t->labels[start + i]);
    sd_hasher_final(&h, out);
}

static memo_entry *memo_find(interrogate_model *m, const sd_key *key, int n)
{
    for (int i = 0; i < MEMO; i++)
        if (m->memo[i].embeds && m->memo[i].n == n && !memcmp(&m->memo[i].key, key, sizeof *key))
            return &m->memo[i];
    return NULL;
}

static void memo_put(interrogate_model *m, const sd_key *key, int n, const float *embeds, int dim)
{
    float *copy = malloc((size_t)n * (size_t)dim * sizeof *copy);
    if (!copy)
        return;
    memcpy(copy, embeds, (size_t)n * (size_t)dim * sizeof *copy);
    memo_entry *e = &m->memo[m->next];
    m->next = (m->next + 1) % MEMO;
    free(e->embeds);
    *e = (memo_entry){*key, n, copy};
}

/* A chunk's features from memory or the cache into dst; false when neither has it. */
static bool chunk_known(sd_context *ctx, interrogate_model *m, const sd_key *key, int n, int dim, float *dst)
{
    memo_entry *e = memo_find(m, key, n);
    if (e) {
        memcpy(dst, e->embeds, (size_t)n * (size_t)dim * sizeof *dst);
        return true;
    }
    sd_cache *cache = sd_context_cache(ctx);
    sd_value *v = NULL;
    if (!cache || !sd_cache_get(cache, key, 1, &v))
        return false;
    const sd_tensor *t = sd_value_tensor(v, "label_features");
    bool ok = t && t->ndim == 2 && t->shape[0] == n && t->shape[1] == dim;
    if (ok) {
        memcpy(dst, t->data, (size_t)n * (size_t)dim * sizeof *dst);
        memo_put(m, key, n, dst, dim);
    }
    sd_value_unref(v);
    return ok;
}

static void chunk_store(sd_context *ctx, interrogate_model *m, const sd_key *key, int n, int dim, const float *src)
{
    memo_put(m, key, n, src, dim);
    sd_cache *cache = sd_context_cache(ctx);
    int64_t shape[2] = {n, dim};
    sd_value *v = cache ? sd_value_new(SD_TYPE_CONDITIONING) : NULL;
    sd_tensor *t = v ? sd_value_add_tensor(v, "label_features", 2, shape) : NULL;
    if (t) {
        memcpy(t->data, src, (size_t)n * (size_t)dim * sizeof *src);
        sd_cache_put(cache, key, "CLIPInterrogate.labels", 1, &v);
    }
    sd_value_unref(v);
}

/* Every table's features: known chunks first, then the rest encoded with a progress bar. */
static sd_status embed_tables(sd_node_run *r, interrogate_model *m, const sd_key *model, sd_label_table *tables, int n)
{
    sd_context *ctx = sd_run_context(r);
    int dim = sd_clip_pair_dim(m->pair), todo = 0, done = 0;
    bool *missing[SD_TABLE_NAMED + MAX_EXTRA] = {NULL};
    sd_status s = SD_OK;
    for (int t = 0; t < n && !s; t++) {
        int chunks = (tables[t].n + CHUNK_LABELS - 1) / CHUNK_LABELS;
        tables[t].embeds = malloc(((size_t)tables[t].n * (size_t)dim + 1) * sizeof *tables[t].embeds);
        missing[t] = calloc((size_t)chunks + 1, sizeof *missing[t]);
        if (!tables[t].embeds || !missing[t])
            s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        for (int c = 0; !s && c < chunks; c++) {
            int start = c * CHUNK_LABELS, len = tables[t].n - start < CHUNK_LABELS ? tables[t].n - start : CHUNK_LABELS;
            sd_key key;
            chunk_key(model, &tables[t], start, len, dim, &key);
            if (!chunk_known(ctx, m, &key, len, dim, tables[t].embeds + (size_t)start * (size_t)dim)) {
                missing[t][c] = true;
                todo += len;
            }
        }
    }
    for (int t = 0; t < n && !s; t++)
        for (int c = 0; !s && c * CHUNK_LABELS < tables[t].n; c++) {
            if (!missing[t][c])
                continue;
            int start = c * CHUNK_LABELS, len = tables[t].n - start < CHUNK_LABELS ? tables[t].n - start : CHUNK_LABELS;
            float *dst = tables[t].embeds + (size_t)start * (size_t)dim;
            sd_key key;
            chunk_key(model, &tables[t], start, len, dim, &key);
            for (int b = 0; !s && b < len; b += 64) { /* progress every 64 labels */
                int k = len - b < 64 ? len - b : 64;
                s = sd_clip_pair_text_features(m->pair, (const char *const *)tables[t].labels + start + b, k,
                                               dst + (size_t)b * (size_t)dim);
                if (s) {
                    s = sd_node_op_fail(r, s);
                    break;
                }
                atomic_fetch_add(&labels_encoded, k);
                done += k;
                s = sd_run_progress(r, done, todo);
            }
            if (!s)
                chunk_store(ctx, m, &key, len, dim, dst);
        }
    for (int t = 0; t < n; t++)
        free(missing[t]);
    return s;
}

/* ---- the node ---- */

/* {"mode", "caption", "tables": {name: [{"label", "score"}...]}} of one image. */
static json_t *report(const sd_label_table *tables, int n, int dim, const float *image, int top, int chunk,
                      const char *mode, const char *caption)
{
    json_t *o = json_object(), *ts = json_object();
    int *idx = malloc(((size_t)top + 1) * sizeof *idx);
    float *score = malloc(((size_t)top + 1) * sizeof *score);
    if (!o || !ts || !idx || !score) {
        json_decref(o);
        json_decref(ts);
        free(idx);
        free(score);
        return NULL;
    }
    for (int t = 0; t < n; t++) {
        json_t *list = json_array();
        int k = sd_label_table_top(&tables[t], dim, image, top, chunk, idx, score);
        for (int i = 0; i < k; i++)
            json_array_append_new(list, json_pack("{s:s,s:f}", "label", tables[t].labels[idx[i]], "score",
                                                  (double)score[i]));
        json_object_set_new(ts, tables[t].name, list);
    }
    json_object_set_new(o, "mode", json_string(mode));
    json_object_set_new(o, "caption", json_string(caption));
    json_object_set_new(o, "tables", ts);
    free(idx);
    free(score);
    return o;
}

/* The captions: the caption input for every image, BLIP's, or none (negative mode). */
static sd_status captions_of(sd_node_run *r, const sd_tensor *img, sd_interrogate_mode mode, char ***out)
{
    const char *given = sd_run_string(r, "caption");
    int64_t b = img->shape[0];
    if ((given && *given) || mode == SD_INTERROGATE_NEGATIVE) {
        char **c = calloc((size_t)b, sizeof *c);
        for (int64_t i = 0; c && i < b; i++)
            if (!(c[i] = strdup(given ? given : ""))) {
                for (int64_t k = 0; k < i; k++)
                    free(c[k]);
                free(c);
                c = NULL;
            }
        *out = c;
        return c ? SD_OK : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    if (!sd_run_file(r, "blip_name"))
        return sd_run_error(r, SD_ERR_INVALID, "mode %s needs a caption: set blip_name (a BLIP model) or caption",
                            sd_interrogate_mode_names[mode]);
    sd_blip_generate_params p;
    sd_status s = sd_blip_read_params(r, &p);
    return s ? s : sd_blip_caption_images(r, "blip_name", img, &p, out);
}

static sd_status set_strings(sd_node_run *r, char *prompts, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    sd_value *a = sd_value_string(SD_TYPE_STRING, prompts), *b = text ? sd_value_string(SD_TYPE_STRING, text) : NULL;
    free(text);
    if (!a || !b) {
        sd_value_unref(a);
        sd_value_unref(b);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, a);
    sd_run_set_output(r, 1, b);
    return SD_OK;
}

static sd_status run_interrogate(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    if (!img)
        return SD_ERR_INVALID;
    const char *mode_name = sd_run_string(r, "mode"), *dir = sd_run_string(r, "lists_dir");
    sd_interrogate_mode mode = SD_INTERROGATE_BEST;
    for (int i = 0; sd_interrogate_mode_names[i]; i++)
        if (!strcmp(mode_name, sd_interrogate_mode_names[i]))
            mode = (sd_interrogate_mode)i;
    sd_interrogate_params p = {(int)sd_run_int(r, "chunk_size"), (int)sd_run_int(r, "intermediate_count"),
                               (int)sd_run_int(r, "min_flavors"), (int)sd_run_int(r, "max_flavors")};
    int64_t b = img->shape[0], h = img->shape[1], w = img->shape[2];
    if (img->shape[3] != 3)
        return sd_run_error(r, SD_ERR_INVALID, "the interrogator reads RGB images; this one has %lld channels",
                            (long long)img->shape[3]);
    sd_label_table tables[SD_TABLE_NAMED + MAX_EXTRA];
    memset(tables, 0, sizeof tables);
    load_state ls = {r, dir ? dir : "", tables, 0};
    char **captions = NULL;
    interrogate_model *m = NULL;
    sd_key model_key;
    sd_status s = captions_of(r, img, mode, &captions);
    if (!s && (s = each_table_name(sd_run_string(r, "extra_tables"), load_one, &ls)))
        s = sd_run_fail(r, s);
    if (!s)
        s = sd_node_kept_model(r, KEPT_SLOT, sd_run_file(r, "clip_name"), model_make, model_free, (void **)&m);
    if (!s && (s = sd_hash_file(ctx, sd_run_file(r, "clip_name"), &model_key)))
        s = sd_run_fail(r, s);
    if (!s)
        s = embed_tables(r, m, &model_key, tables, ls.n);
    int dim = m ? sd_clip_pair_dim(m->pair) : 0, size = m ? sd_clip_pair_vision_config(m->pair)->image_size : 0;
    float *pixels = malloc((size_t)3 * (size_t)size * (size_t)size * sizeof *pixels + 1);
    float *feat = malloc(((size_t)dim + 1) * sizeof *feat);
    json_t *all = json_array();
    char *joined = NULL;
    size_t jlen = 0;
    if (!s && (!pixels || !feat || !all))
        s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_text_encoder enc = m ? sd_clip_pair_encoder(m->pair) : (sd_text_encoder){0};
    for (int64_t i = 0; !s && i < b; i++) {
        char *prompt = NULL;
        s = sd_clip_vision_preprocess(ctx, img->data + (size_t)(i * h * w * 3), h, w, size, true, pixels);
        if (!s)
            s = sd_clip_pair_image_features(m->pair, pixels, feat);
        if (!s)
            s = sd_interrogate(ctx, &enc, tables, ls.n, feat, captions[i], mode, &p, &prompt);
        if (s) {
            s = s == SD_ERR_INTERRUPTED ? s : sd_node_op_fail(r, s);
            break;
        }
        char *grown = realloc(joined, jlen + strlen(prompt) + 2);
        if (!grown) {
            free(prompt);
            s = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
            break;
        }
        joined = grown;
        jlen += (size_t)sprintf(joined + jlen, "%s%s", i ? "\n" : "", prompt);
        free(prompt);
        json_array_append_new(all, report(tables, ls.n, dim, feat, (int)sd_run_int(r, "top_count"), p.chunk_size,
                                          mode_name, captions[i]));
    }
    if (!s)
        s = set_strings(r, joined ? joined : "", b == 1 ? json_array_get(all, 0) : all);
    for (int64_t i = 0; captions && i < b; i++)
        free(captions[i]);
    free(captions);
    for (int t = 0; t < SD_TABLE_NAMED + MAX_EXTRA; t++)
        sd_label_table_clear(&tables[t]);
    json_decref(all);
    free(joined);
    free(pixels);
    free(feat);
    return s;
}

static const sd_input_desc interrogate_in[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to interrogate (one prompt a line for a batch)"),
    SD_IN_FILE_NAME("clip_name", "clip_vision",
                    "CLIP model with both towers and projections in models/clip_vision (transformers' CLIPModel, "
                    "e.g. openai/clip-vit-large-patch14's model.safetensors, or open_clip's layout)"),
    {.name = "blip_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE | SD_IN_OPTIONAL, .file_dir = "blip",
     .doc = "BLIP captioning model in models/blip (vocab.txt beside it); not needed with a caption or in "
            "negative mode"},
    SD_IN_STRING("caption", "", "a caption to start from instead of BLIP's"),
    SD_IN_ENUM("mode", "best", sd_interrogate_mode_names,
               "best (the most similar of caption, classic, fast and the flavour chain), classic, fast or "
               "negative"),
    SD_IN_STRING("lists_dir", "",
                 "a folder of label tables <table>.txt replacing the built-in ones (artists, flavors, mediums, "
                 "movements, trendings, negative) under models/interrogate; empty: the built-in tables"),
    SD_IN_STRING("extra_tables", "", "comma-separated names of more tables in lists_dir, ranked with the flavors"),
    SD_IN_INT("min_flavors", "8", 0, 256, "chain steps taken even when the similarity drops"),
    SD_IN_INT("max_flavors", "32", 1, 256, "at most this many labels chained (fast: appended)"),
    SD_IN_INT("intermediate_count", "2048", 1, 1000000, "best labels the chain chooses from"),
    SD_IN_INT("chunk_size", "2048", 1, 1000000, "labels ranked per chunk of a long table"),
    SD_IN_INT("top_count", "5", 1, 1000, "labels per table with their scores in the json output"),
    SD_BLIP_PARAM_INPUTS,
};
static const sd_output_desc interrogate_out[] = {
    SD_OUT("prompt", SD_TYPE_STRING, "the prompts, one a line"),
    SD_OUT("json", SD_TYPE_STRING, "the mode, caption and each table's best labels with their cosine similarities"),
};
const sd_node_desc sd_node_CLIPInterrogate = {
    .name = "CLIPInterrogate", .version = 1, .category = "image/captioning",
    .doc = "A prompt likely to make a similar image: the CLIP interrogator (clip-interrogator 0.6's algorithm).",
    .inputs = interrogate_in, .n_inputs = SD_COUNT(interrogate_in),
    .outputs = interrogate_out, .n_outputs = SD_COUNT(interrogate_out), .run = run_interrogate,
    .files = interrogate_files,
};
