/* CLIP text transformer (see clip.h). Token and position embeddings are gathered on the host
 * row by row straight from the checkpoint file (the 49408-row table never goes to the device); the
 * transformer runs on the op library. Both tensor layouts (transformers', open_clip's) are read
 * through one table of names. */
#include "ml/text/clip.h"
#include "ml/text/clip_layer.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CLIP_EOS 49407 /* the end-of-text token id */

/* Tensor names of a layout outside the layers (ml/text/clip_layer.c names those). */
typedef struct clip_names {
    const char *token, *position, *final_norm;
} clip_names;

static const clip_names transformers_names = {"embeddings.token_embedding.weight",
                                              "embeddings.position_embedding.weight", "final_layer_norm"};
static const clip_names open_clip_names = {"token_embedding.weight", "positional_embedding", "ln_final"};

struct sd_clip_model {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_clip_config config;
    const clip_names *names;
    sd_weights *w;
    sd_dtensor *causal_mask; /* [positions, positions], built on first use */
};

sd_status sd_clip_model_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                            const sd_clip_config *config, sd_dtype weight_dtype, sd_clip_model **out)
{
    *out = NULL;
    sd_clip_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    m->cl = cl;
    m->st = st;
    m->config = *config;
    m->names = config->open_clip ? &open_clip_names : &transformers_names;
    sd_status s = sd_weights_new(cl, st, prefix, weight_dtype, &m->w);
    if (s) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

sd_status sd_clip_model_new_patched(sd_clip_model *base, const sd_weight_patcher *patcher, sd_clip_model **out)
{
    *out = NULL;
    sd_clip_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_set_error(base->cl->ctx, SD_ERR_NOMEM, "out of memory");
    *m = (sd_clip_model){.cl = base->cl, .st = base->st, .config = base->config, .names = base->names};
    sd_status s = sd_weights_new_patched(base->w, patcher, &m->w);
    if (s) {
        free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

static bool claims_nothing(void *user, const char *name)
{
    (void)user, (void)name;
    return false;
}

sd_status sd_clip_model_new_window(sd_clip_model *base, int positions, sd_clip_model **out)
{
    *out = NULL;
    if (positions < 1 || positions > base->config.positions)
        return sd_set_error(base->cl->ctx, SD_ERR_INVALID, "text encoder: a window of %d tokens (1..%d)", positions,
                            base->config.positions);
    sd_weight_patcher none = {.claims = claims_nothing};
    sd_status s = sd_clip_model_new_patched(base, &none, out);
    if (!s)
        (*out)->config.positions = positions;
    return s;
}

void sd_clip_model_free(sd_clip_model *m)
{
    if (!m)
        return;
    sd_dtensor_free(m->causal_mask);
    sd_weights_free(m->w);
    free(m);
}

const sd_clip_config *sd_clip_model_config(const sd_clip_model *m)
{
    return &m->config;
}

/* Row `row` of a 2-D F32/F16/BF16 table into dst (width floats). */
static sd_status read_row(sd_clip_model *m, const char *name, int64_t row, float *dst)
{
    const sd_st_tensor *t = sd_weights_info(m->w, name);
    int width = m->config.width;
    if (!t || t->ndim != 2 || t->shape[1] != width || row < 0 || row >= t->shape[0])
        return sd_set_error(m->cl->ctx, t ? SD_ERR_INVALID : SD_ERR_NOT_FOUND,
                            "%s: text encoder tensor '%s' is missing, has the wrong shape, or has no row %lld",
                            sd_safetensors_path(m->st), name, (long long)row);
    return sd_safetensors_read_f32_range(m->cl->ctx, m->st, t, (size_t)row * (size_t)width, (size_t)width, dst);
}

/* x = token_embedding[tokens] + position_embedding[0..n) on the host, uploaded as [batch, n, width];
 * ids vocab + i read row i of extra. */
static sd_status embed(sd_clip_model *m, const int32_t *tokens, int batch, const float *extra, int n_extra,
                       sd_dtensor **out)
{
    int n = m->config.positions, width = m->config.width;
    size_t count = (size_t)batch * (size_t)n * (size_t)width;
    float *host = malloc(count * sizeof *host), *pos = malloc((size_t)width * sizeof *pos);
    sd_status s = (host && pos) ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int b = 0; !s && b < batch; b++)
        for (int p = 0; !s && p < n; p++) {
            float *row = host + ((size_t)b * (size_t)n + (size_t)p) * (size_t)width;
            int32_t id = tokens[(size_t)b * (size_t)n + (size_t)p];
            if (id >= m->config.vocab && id - m->config.vocab < n_extra)
                memcpy(row, extra + (size_t)(id - m->config.vocab) * (size_t)width, (size_t)width * sizeof *row);
            else
                s = read_row(m, m->names->token, id, row);
            if (!s)
                s = read_row(m, m->names->position, p, pos);
            for (int i = 0; !s && i < width; i++)
                row[i] += pos[i];
        }
    int64_t shape[3] = {batch, n, width};
    if (!s)
        s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, out);
    if (!s && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(host);
    free(pos);
    return s;
}

static sd_status causal_mask(sd_clip_model *m)
{
    if (m->causal_mask)
        return SD_OK;
    int n = m->config.positions;
    float *host = malloc((size_t)n * (size_t)n * sizeof *host);
    if (!host)
        return sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            host[(size_t)i * (size_t)n + (size_t)j] = j > i ? -INFINITY : 0.0f;
    int64_t shape[2] = {n, n};
    sd_status s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 2, shape, &m->causal_mask);
    if (!s && (s = sd_dtensor_upload(m->causal_mask, host))) {
        sd_dtensor_free(m->causal_mask);
        m->causal_mask = NULL;
    }
    free(host);
    return s;
}

/* The shared layer code's view of this encoder. */
static sd_clip_layers layers_of(const sd_clip_model *m)
{
    return (sd_clip_layers){.cl = m->cl, .w = m->w, .open_clip = m->config.open_clip, .width = m->config.width,
                            .heads = m->config.heads, .gelu = m->config.gelu, .mask = m->causal_mask};
}

static sd_status final_norm(sd_clip_model *m, const sd_dtensor *x, sd_dtensor **out)
{
    sd_clip_layers t = layers_of(m);
    return sd_clip_layer_norm(&t, m->names->final_norm, 0, x, out);
}

sd_status sd_clip_encode(sd_clip_model *m, const int32_t *tokens, int batch, int layer_index,
                         float *hidden, float *pooled)
{
    return sd_clip_encode_ex(m, tokens, batch, layer_index, NULL, 0, hidden, pooled);
}

/* The pooled position of one window: its first end token, else its highest id. */
static int pooled_position(const int32_t *ids, int n)
{
    int best = 0;
    for (int p = 0; p < n; p++) {
        if (ids[p] == CLIP_EOS)
            return p;
        if (ids[p] > ids[best])
            best = p;
    }
    return best;
}

/* pooled[i] (sd_clip_pooled_width floats) = normed[rows[i]] (width floats each) @ text_projection
 * when the model has one, else that row. */
static sd_status project_rows(sd_clip_model *m, const float *normed, const size_t *rows, int batch, float *pooled)
{
    const sd_clip_config *c = &m->config;
    size_t width = (size_t)c->width;
    float *proj = NULL;
    sd_status s = SD_OK;
    /* open_clip: text_projection [width, projection]; transformers: text_projection.weight
     * [projection, width] (a Linear), read transposed */
    const sd_st_tensor *t =
        c->projection ? sd_weights_info(m->w, c->open_clip ? "text_projection" : "text_projection.weight") : NULL;
    int64_t prows = c->open_clip ? c->width : c->projection, cols = c->open_clip ? c->projection : c->width;
    if (c->projection) {
        if (!t || t->ndim != 2 || t->shape[0] != prows || t->shape[1] != cols)
            s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "%s: %s is missing or not [%lld, %lld]",
                             sd_safetensors_path(m->st), c->open_clip ? "text_projection" : "text_projection.weight",
                             (long long)prows, (long long)cols);
        else if (!(proj = malloc(width * (size_t)c->projection * sizeof *proj)))
            s = sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
        else
            s = sd_safetensors_read_f32(m->cl->ctx, m->st, t, proj, width * (size_t)c->projection);
    }
    for (int b = 0; !s && b < batch; b++) {
        const float *row = normed + rows[b] * width;
        if (!proj) {
            memcpy(pooled + (size_t)b * width, row, width * sizeof *pooled);
            continue;
        }
        for (int j = 0; j < c->projection; j++) { /* row @ text_projection ([width, projection]) */
            double acc = 0;
            for (size_t k = 0; k < width; k++)
                acc += (double)row[k] * proj[c->open_clip ? k * (size_t)c->projection + (size_t)j : (size_t)j * width + k];
            pooled[(size_t)b * (size_t)c->projection + (size_t)j] = (float)acc;
        }
    }
    free(proj);
    return s;
}

/* pooled [batch, sd_clip_pooled_width] = final_norm(last)[first end token] (@ text_projection):
 * normed_last is the normed last layer when the caller already has it on the host, else NULL. */
static sd_status pool(sd_clip_model *m, const int32_t *tokens, int batch, const sd_dtensor *last,
                      const float *normed_last, float *pooled)
{
    const sd_clip_config *c = &m->config;
    size_t width = (size_t)c->width, count = (size_t)batch * (size_t)c->positions * width;
    sd_dtensor *normed = NULL;
    float *all = NULL;
    size_t *rows = malloc((size_t)batch * sizeof *rows);
    sd_status s = rows ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s && !normed_last) {
        if (!(all = malloc(count * sizeof *all)))
            s = sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
        if (!s)
            s = final_norm(m, last, &normed);
        if (!s)
            s = sd_dtensor_download(normed, all);
        normed_last = all;
    }
    for (int b = 0; !s && b < batch; b++)
        rows[b] = (size_t)b * (size_t)c->positions +
                  (size_t)pooled_position(tokens + (size_t)b * (size_t)c->positions, c->positions);
    if (!s)
        s = project_rows(m, normed_last, rows, batch, pooled);
    sd_dtensor_free(normed);
    free(all);
    free(rows);
    return s;
}

sd_status sd_clip_encode_ex(sd_clip_model *m, const int32_t *tokens, int batch, int layer_index,
                            const float *extra, int n_extra, float *hidden, float *pooled)
{
    const sd_clip_config *c = &m->config;
    if (batch < 1 || layer_index > 0 || -layer_index > c->layers)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID,
                            "text encoder: layer %d out of range (0 .. -%d), batch %d", layer_index,
                            c->layers, batch);
    bool norm = c->norm_hidden || layer_index == 0; /* 0: ComfyUI's "last", always normed */
    if (layer_index == 0)
        layer_index = -1;
    if (c->heads < 1 || c->width % c->heads)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "text encoder: width %d not divisible by %d heads",
                            c->width, c->heads);
    int stop = c->layers + layer_index + 1; /* layers to run for the selected output */
    int run_layers = pooled ? c->layers : stop;
    sd_dtensor *x = NULL, *selected = NULL, *normed = NULL;
    sd_status s = causal_mask(m);
    if (!s)
        s = embed(m, tokens, batch, extra, n_extra, &x);
    sd_clip_layers t = layers_of(m);
    for (int l = 0; !s && l < run_layers; l++) {
        s = sd_clip_layer(&t, l, &x);
        if (!s && l + 1 == stop && stop < run_layers) {
            /* Keep the selected intermediate layer while the rest run for the pooled output. */
            int64_t shape[3] = {batch, c->positions, c->width};
            s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, &selected);
            if (!s)
                s = sd_dtensor_copy(selected, x);
        }
    }
    /* ComfyUI applies the final LayerNorm to an intermediate layer's output too in SD1
     * (layer_norm_hidden_state), not in SDXL. */
    const sd_dtensor *chosen = selected ? selected : x;
    if (!s && norm && !(s = final_norm(m, chosen, &normed)))
        chosen = normed;
    if (!s)
        s = sd_dtensor_download(chosen, hidden);
    if (!s && pooled)
        s = pool(m, tokens, batch, x, norm && !selected ? hidden : NULL, pooled);
    sd_dtensor_free(x);
    sd_dtensor_free(selected);
    sd_dtensor_free(normed);
    if (s)
        sd_error_prefix(m->cl->ctx, "text encoder");
    return s;
}

uint64_t sd_clip_model_serial(const sd_clip_model *m)
{
    return sd_weights_serial(m->w);
}

/* The packed sequence of sd_clip_encode_packed: ids, positions and owners (-1: the prefix, else
 * the window) of its n tokens, and the row of each window's pooled token. */
typedef struct packed {
    int n;
    int32_t *ids;
    int *pos, *owner;
    size_t *rows;
} packed;

static void packed_free(packed *p)
{
    free(p->ids);
    free(p->pos);
    free(p->owner);
    free(p->rows);
}

static sd_status packed_init(sd_clip_model *m, const int32_t *prefix, int n_prefix, const int32_t *const *suffix,
                             const int *n_suffix, int batch, packed *p)
{
    int positions = m->config.positions;
    *p = (packed){0};
    int64_t n = n_prefix;
    for (int i = 0; i < batch; i++) {
        if (n_suffix[i] < 1 || n_prefix + n_suffix[i] > positions)
            return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "text encoder: a window of %d + %d tokens (1 .. %d)",
                                n_prefix, n_suffix[i], positions);
        n += n_suffix[i];
    }
    if (n_prefix < 1 || n > INT32_MAX / (int64_t)positions)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "text encoder: %d prefix tokens, %lld packed", n_prefix,
                            (long long)n);
    p->n = (int)n;
    p->ids = malloc((size_t)n * sizeof *p->ids);
    p->pos = malloc((size_t)n * sizeof *p->pos);
    p->owner = malloc((size_t)n * sizeof *p->owner);
    p->rows = malloc((size_t)batch * sizeof *p->rows);
    int32_t *window = malloc((size_t)positions * sizeof *window);
    sd_status s = p->ids && p->pos && p->owner && p->rows && window
                      ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int k = 0; !s && k < n_prefix; k++) {
        if (prefix[k] == CLIP_EOS)
            s = sd_set_error(m->cl->ctx, SD_ERR_INVALID, "text encoder: an end token in a shared prefix");
        p->ids[k] = prefix[k], p->pos[k] = k, p->owner[k] = -1;
    }
    if (!s)
        memcpy(window, prefix, (size_t)n_prefix * sizeof *window);
    for (int i = 0, at = n_prefix; !s && i < batch; at += n_suffix[i++]) {
        memcpy(window + n_prefix, suffix[i], (size_t)n_suffix[i] * sizeof *window);
        for (int k = 0; k < n_suffix[i]; k++)
            p->ids[at + k] = suffix[i][k], p->pos[at + k] = n_prefix + k, p->owner[at + k] = i;
        p->rows[i] = (size_t)at + (size_t)(pooled_position(window, n_prefix + n_suffix[i]) - n_prefix);
    }
    free(window);
    if (s)
        packed_free(p);
    return s;
}

/* The packed sequence's embeddings [1, n, width] and its mask [n, n]: a token sees the earlier
 * tokens of the prefix and of its own window. */
static sd_status packed_upload(sd_clip_model *m, const packed *p, sd_dtensor **x, sd_dtensor **mask)
{
    size_t n = (size_t)p->n, width = (size_t)m->config.width;
    float *host = malloc(n * width * sizeof *host), *pos = malloc(width * sizeof *pos);
    float *bias = malloc(n * n * sizeof *bias);
    sd_status s = host && pos && bias ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t t = 0; !s && t < n; t++) {
        s = read_row(m, m->names->token, p->ids[t], host + t * width);
        if (!s)
            s = read_row(m, m->names->position, p->pos[t], pos);
        for (size_t i = 0; !s && i < width; i++)
            host[t * width + i] += pos[i];
        for (size_t j = 0; j < n; j++)
            bias[t * n + j] = j <= t && (p->owner[j] < 0 || p->owner[j] == p->owner[t]) ? 0.0f : -INFINITY;
    }
    int64_t xs[3] = {1, (int64_t)n, (int64_t)width}, ms[2] = {(int64_t)n, (int64_t)n};
    if (!s) s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, xs, x);
    if (!s) s = sd_dtensor_upload(*x, host);
    if (!s) s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 2, ms, mask);
    if (!s) s = sd_dtensor_upload(*mask, bias);
    free(host);
    free(pos);
    free(bias);
    return s;
}

sd_status sd_clip_encode_packed(sd_clip_model *m, const int32_t *prefix, int n_prefix, const int32_t *const *suffix,
                                const int *n_suffix, int batch, float *pooled)
{
    packed p;
    sd_dtensor *x = NULL, *mask = NULL, *normed = NULL;
    float *host = NULL;
    sd_status s = batch < 1 ? sd_set_error(m->cl->ctx, SD_ERR_INVALID, "text encoder: batch %d", batch)
                            : packed_init(m, prefix, n_prefix, suffix, n_suffix, batch, &p);
    if (s)
        return s;
    s = packed_upload(m, &p, &x, &mask);
    sd_clip_layers t = layers_of(m);
    t.mask = mask;
    for (int l = 0; !s && l < m->config.layers; l++)
        s = sd_clip_layer(&t, l, &x);
    if (!s && !(host = malloc((size_t)p.n * (size_t)m->config.width * sizeof *host)))
        s = sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = final_norm(m, x, &normed);
    if (!s) s = sd_dtensor_download(normed, host);
    if (!s) s = project_rows(m, host, p.rows, batch, pooled);
    sd_dtensor_free(x);
    sd_dtensor_free(mask);
    sd_dtensor_free(normed);
    free(host);
    packed_free(&p);
    if (s)
        sd_error_prefix(m->cl->ctx, "text encoder");
    return s;
}
