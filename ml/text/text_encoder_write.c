/* Test text-encoder files (see text_encoder_write.h). */
#include "ml/text/text_encoder_write.h"
#include "core/half.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/gguf.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random files ---- */

/* Appends one tensor to a layout (SD_ERR_NOMEM). */
static sd_status push(sd_context *ctx, sd_layout *l, sd_param_kind kind, int64_t fan_in, int64_t d0, int64_t d1,
                      const char *name)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        sd_layout_entry *e = realloc(l->entries, cap * sizeof *e);
        if (!e)
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        l->entries = e;
        l->cap = cap;
    }
    sd_layout_entry *e = &l->entries[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->kind = kind;
    e->fan_in = fan_in;
    e->ndim = d1 > 0 ? 2 : 1;
    e->shape[0] = d0;
    e->shape[1] = d1 > 0 ? d1 : 0;
    return SD_OK;
}

/* T5 v1.1 encoder dimensions. */
typedef struct t5_dims {
    int64_t vocab, d, inner, ff, buckets, heads;
    int blocks;
} t5_dims;

static const t5_dims t5_tiny = {32128, 32, 4 * 8, 48, 32, 4, 2};
static const t5_dims t5_xxl = {32128, 4096, 64 * 64, 10240, 32, 64, 24};

/* A T5 encoder's tensors in T5EncoderModel's names (norm weights are ones, as the layout writer
 * makes norms). */
static sd_status t5_layout(sd_context *ctx, sd_layout *l, const t5_dims *t)
{
    sd_status s = push(ctx, l, SD_PARAM_EMBEDDING, 0, t->vocab, t->d, "shared.weight");
    char n[128];
    for (int b = 0; !s && b < t->blocks; b++) {
        static const char *const qkv[3] = {"q", "k", "v"};
        for (int i = 0; !s && i < 3; i++)
            snprintf(n, sizeof n, "encoder.block.%d.layer.0.SelfAttention.%s.weight", b, qkv[i]),
                s = push(ctx, l, SD_PARAM_WEIGHT, t->d, t->inner, t->d, n);
        snprintf(n, sizeof n, "encoder.block.%d.layer.0.SelfAttention.o.weight", b);
        if (!s)
            s = push(ctx, l, SD_PARAM_WEIGHT, t->inner, t->d, t->inner, n);
        if (!s && b == 0)
            s = push(ctx, l, SD_PARAM_EMBEDDING, 0, t->buckets, t->heads,
                     "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        for (int k = 0; !s && k < 2; k++)
            snprintf(n, sizeof n, "encoder.block.%d.layer.%d.layer_norm.weight", b, k),
                s = push(ctx, l, SD_PARAM_NORM_WEIGHT, 0, t->d, 0, n);
        for (int k = 0; !s && k < 2; k++)
            snprintf(n, sizeof n, "encoder.block.%d.layer.1.DenseReluDense.wi_%d.weight", b, k),
                s = push(ctx, l, SD_PARAM_WEIGHT, t->d, t->ff, t->d, n);
        snprintf(n, sizeof n, "encoder.block.%d.layer.1.DenseReluDense.wo.weight", b);
        if (!s)
            s = push(ctx, l, SD_PARAM_WEIGHT, t->ff, t->d, t->ff, n);
    }
    return s ? s : push(ctx, l, SD_PARAM_NORM_WEIGHT, 0, t->d, 0, "encoder.final_layer_norm.weight");
}

/* transformers' CLIP file names: text_model.<name>, text_projection.weight beside it. */
static sd_status clip_file_name(void *user, const char *name, char *out, size_t size)
{
    (void)user;
    snprintf(out, size, "%s%s", strcmp(name, "text_projection.weight") == 0 ? "" : "text_model.", name);
    return SD_OK;
}

/* ComfyUI's all-in-one names: the CLIP-L tensors under text_encoders.clip_l.transformer., T5's
 * (encoder.block.*, encoder.final_layer_norm, shared) under text_encoders.t5xxl.transformer. */
static sd_status all_in_one_name(void *user, const char *name, char *out, size_t size)
{
    (void)user;
    bool t5 = strncmp(name, "encoder.block.", 14) == 0 || strcmp(name, "encoder.final_layer_norm.weight") == 0 ||
              strcmp(name, "shared.weight") == 0;
    char clip[160];
    clip_file_name(NULL, name, clip, sizeof clip);
    snprintf(out, size, "text_encoders.%s.transformer.%s", t5 ? "t5xxl" : "clip_l", t5 ? name : clip);
    return SD_OK;
}

/* Appends the tiny layout of kind to *layout. */
static sd_status tiny_layout(sd_context *ctx, sd_text_encoder_kind kind, sd_layout *layout)
{
    if (kind == SD_TEXT_T5XXL)
        return t5_layout(ctx, layout, &t5_tiny);
    sd_clip_config c = {.width = 64, .intermediate = 128, .vocab = 49408, .positions = 77, .has_position_ids = true};
    c.layers = kind == SD_TEXT_CLIP_L ? 2 : kind == SD_TEXT_OPENCLIP_H ? 24 : 32;
    c.projection = kind == SD_TEXT_CLIP_L ? 64 : kind == SD_TEXT_OPENCLIP_G ? 48 : 0;
    return sd_layout_clip(ctx, &c, "", layout);
}

sd_status sd_text_write_random(sd_context *ctx, const char *path, sd_text_encoder_kind kind, sd_st_dtype dtype,
                               uint64_t seed)
{
    sd_layout layout = {0};
    sd_status s = tiny_layout(ctx, kind, &layout);
    if (!s)
        s = sd_layout_write_random(ctx, path, &layout, dtype, seed, kind == SD_TEXT_T5XXL ? NULL : clip_file_name,
                                   NULL);
    sd_layout_free(&layout);
    return s;
}

sd_status sd_text_write_flux_encoders(sd_context *ctx, const char *path, sd_st_dtype dtype, uint64_t seed)
{
    sd_layout layout = {0};
    sd_status s = tiny_layout(ctx, SD_TEXT_CLIP_L, &layout);
    if (!s)
        s = tiny_layout(ctx, SD_TEXT_T5XXL, &layout);
    if (!s)
        s = sd_layout_write_random(ctx, path, &layout, dtype, seed, all_in_one_name, NULL);
    sd_layout_free(&layout);
    return s;
}

/* ---- GGUF ---- */

/* The llama.cpp name of a transformers T5 tensor (ComfyUI-GGUF's T5_SD_MAP read backwards). */
static void llama_name(const char *name, char *out, size_t size)
{
    static const char *const map[][2] = {
        {"encoder.", "enc."}, {".block.", ".blk."}, {"shared", "token_embd"}, {"final_layer_norm", "output_norm"},
        {"layer.0.SelfAttention.relative_attention_bias", "attn_rel_b"}, {"layer.0.SelfAttention.q", "attn_q"},
        {"layer.0.SelfAttention.k", "attn_k"}, {"layer.0.SelfAttention.v", "attn_v"},
        {"layer.0.SelfAttention.o", "attn_o"}, {"layer.0.layer_norm", "attn_norm"},
        {"layer.1.DenseReluDense.wi_1", "ffn_up"}, {"layer.1.DenseReluDense.wo", "ffn_down"},
        {"layer.1.DenseReluDense.wi_0", "ffn_gate"}, {"layer.1.layer_norm", "ffn_norm"}};
    char cur[256];
    snprintf(cur, sizeof cur, "%s", name);
    for (size_t k = 0; k < sizeof map / sizeof *map; k++) {
        char *at = strstr(cur, map[k][0]);
        if (at) {
            char rest[256];
            snprintf(rest, sizeof rest, "%s", at + strlen(map[k][0]));
            snprintf(at, sizeof cur - (size_t)(at - cur), "%s%s", map[k][1], rest);
        }
    }
    snprintf(out, size, "%s", cur);
}

static sd_status llama_rename(void *user, const char *name, char *out, size_t size)
{
    (void)user;
    llama_name(name, out, size);
    return SD_OK;
}

/* The ggml type a T5 tensor (transformers' name, shape [d0] or [d0, d1]) is written as in city96's
 * T5 GGUF files: vectors F32; the relative position bias F16 (llama.cpp's quantizer never
 * quantises attn_rel_b); other matrices Q8_0 where rows are whole blocks, else F16. */
static sd_ggml_type t5_gguf_type(const char *name, int ndim, const int64_t *shape)
{
    if (ndim == 1)
        return SD_GGML_F32;
    return strstr(name, "relative_attention_bias") || shape[1] % 32 ? SD_GGML_F16 : SD_GGML_Q8_0;
}

static int t5_layout_gguf_type(const sd_layout_entry *e)
{
    return t5_gguf_type(e->name, e->ndim, e->shape);
}

static sd_status t5_fill(void *user, size_t index, size_t first, size_t n, float *dst)
{
    sd_context **ctx_st = user;
    const sd_safetensors *st = (const sd_safetensors *)ctx_st[1];
    return sd_safetensors_read_f32_range(ctx_st[0], st, sd_safetensors_at(st, index), first, n, dst);
}

sd_status sd_text_write_t5_gguf(sd_context *ctx, const char *in, const char *out)
{
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, in, &st);
    if (s)
        return s;
    size_t n = sd_safetensors_count(st);
    sd_gguf_entry *entries = calloc(n ? n : 1, sizeof *entries);
    char (*names)[256] = calloc(n ? n : 1, sizeof *names);
    if (!entries || !names)
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        llama_name(t->name, names[i], sizeof names[i]);
        if (t->ndim < 1 || t->ndim > SD_GGUF_MAX_DIMS)
            s = sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': not 1- to 4-D", in, t->name);
        else
            entries[i] = (sd_gguf_entry){
                .name = names[i], .type = t5_gguf_type(t->name, t->ndim, t->shape), .ndim = t->ndim};
        if (!s)
            memcpy(entries[i].shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
    }
    void *ctx_st[2] = {ctx, st};
    if (!s)
        s = sd_gguf_write(ctx, out, "t5encoder", -1, entries, n, t5_fill, ctx_st);
    free(entries);
    free(names);
    sd_safetensors_close(st);
    return s;
}

/* ---- full-size random files ---- */

sd_status sd_text_write_full(sd_context *ctx, const char *path, sd_text_encoder_kind kind, sd_st_dtype dtype,
                             bool gguf, uint64_t seed)
{
    sd_layout layout = {0};
    sd_status s = SD_OK;
    if (kind == SD_TEXT_T5XXL) {
        s = t5_layout(ctx, &layout, &t5_xxl);
    } else if (kind == SD_TEXT_CLIP_L && !gguf) {
        sd_clip_config c = {.width = 768, .layers = 12, .intermediate = 3072, .vocab = 49408, .positions = 77,
                            .projection = 768, .has_position_ids = true};
        s = sd_layout_clip(ctx, &c, "", &layout);
    } else {
        s = sd_set_error(ctx, SD_ERR_INVALID,
                         "%s: full-size files: T5-XXL (safetensors or GGUF Q8_0) or CLIP-L (safetensors)", path);
    }
    if (!s && gguf)
        s = sd_layout_write_random_gguf(ctx, path, &layout, "t5encoder", 7, t5_layout_gguf_type, seed, llama_rename,
                                        NULL);
    else if (!s)
        s = sd_layout_write_random(ctx, path, &layout, dtype, seed, kind == SD_TEXT_T5XXL ? NULL : clip_file_name,
                                   NULL);
    sd_layout_free(&layout);
    return s;
}

/* ---- an SDXL checkpoint's text encoders as separate files ---- */

/* One tensor of the output: rows [row0, row0 + rows) of source (all rows when rows is 0),
 * transposed when transpose. */
typedef struct split_entry {
    char name[160];
    const sd_st_tensor *src;
    int64_t row0, rows;
    bool transpose;
} split_entry;

typedef struct split_file {
    const sd_safetensors *st;
    split_entry *e;
    size_t n, cap;
    sd_context *ctx;
} split_file;

static sd_status split_add(split_file *f, const char *name, const sd_st_tensor *src, int64_t row0, int64_t rows,
                           bool transpose)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        split_entry *g = realloc(f->e, cap * sizeof *g);
        if (!g)
            return sd_set_error(f->ctx, SD_ERR_NOMEM, "out of memory");
        f->e = g;
        f->cap = cap;
    }
    split_entry *e = &f->e[f->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->src = src;
    e->row0 = row0;
    e->rows = rows;
    e->transpose = transpose;
    return SD_OK;
}

static sd_status split_fill(void *user, size_t index, void *dst, size_t nbytes)
{
    split_file *f = user;
    const split_entry *e = &f->e[index];
    const sd_st_tensor *t = e->src;
    float *all = malloc(t->numel * sizeof *all);
    if (!all)
        return sd_set_error(f->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_safetensors_read_f32(f->ctx, f->st, t, all, t->numel);
    int64_t cols = t->ndim > 1 ? (int64_t)(t->numel / (size_t)t->shape[0]) : 1;
    float *out = dst;
    if (!s && e->transpose)
        for (int64_t i = 0; i < t->shape[0]; i++)
            for (int64_t j = 0; j < cols; j++)
                out[j * t->shape[0] + i] = all[i * cols + j];
    else if (!s)
        memcpy(out, all + e->row0 * cols, nbytes);
    free(all);
    return s;
}

static sd_status split_write(split_file *f, const char *path)
{
    sd_st_entry *entries = calloc(f->n ? f->n : 1, sizeof *entries);
    if (!entries)
        return sd_set_error(f->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < f->n; i++) {
        const split_entry *e = &f->e[i];
        entries[i] = (sd_st_entry){.name = e->name, .dtype = SD_ST_F32, .ndim = e->src->ndim};
        memcpy(entries[i].shape, e->src->shape, sizeof entries[i].shape);
        if (e->rows)
            entries[i].shape[0] = e->rows;
        if (e->transpose)
            entries[i].shape[0] = e->src->shape[1], entries[i].shape[1] = e->src->shape[0];
    }
    sd_status s = sd_safetensors_write(f->ctx, path, entries, f->n, NULL, split_fill, f);
    free(entries);
    return s;
}

/* open_clip's names -> transformers' (after "transformer.resblocks.N."). */
static const char *const open_clip_map[][2] = {
    {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"attn.out_proj.", "self_attn.out_proj."},
    {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."}};

/* The OpenCLIP tensor t (name without prefix: rest) into f under transformers' names; layers at
 * or past max_layers are left out. */
static sd_status add_open_clip(split_file *f, const sd_st_tensor *t, const char *rest, int max_layers)
{
    char name[160];
    int layer, used = 0;
    if (strcmp(rest, "token_embedding.weight") == 0)
        return split_add(f, "text_model.embeddings.token_embedding.weight", t, 0, 0, false);
    if (strcmp(rest, "positional_embedding") == 0)
        return split_add(f, "text_model.embeddings.position_embedding.weight", t, 0, 0, false);
    if (strcmp(rest, "text_projection") == 0)
        return split_add(f, "text_projection.weight", t, 0, 0, true);
    if (strncmp(rest, "ln_final.", 9) == 0) {
        snprintf(name, sizeof name, "text_model.final_layer_norm.%s", rest + 9);
        return split_add(f, name, t, 0, 0, false);
    }
    if (sscanf(rest, "transformer.resblocks.%d.%n", &layer, &used) != 1 || !used || layer >= max_layers)
        return SD_OK; /* not part of the text model, or past the depth kept */
    const char *tail = rest + used;
    if (strncmp(tail, "attn.in_proj_", 13) == 0) {
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        int64_t w = t->shape[0] / 3;
        sd_status s = SD_OK;
        for (int k = 0; !s && k < 3; k++) {
            snprintf(name, sizeof name, "text_model.encoder.layers.%d.self_attn.%s.%s", layer, qkv[k],
                     strcmp(tail + 13, "weight") == 0 ? "weight" : "bias");
            s = split_add(f, name, t, k * w, w, false);
        }
        return s;
    }
    for (size_t k = 0; k < sizeof open_clip_map / sizeof *open_clip_map; k++)
        if (strncmp(tail, open_clip_map[k][0], strlen(open_clip_map[k][0])) == 0) {
            snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s%s", layer, open_clip_map[k][1],
                     tail + strlen(open_clip_map[k][0]));
            return split_add(f, name, t, 0, 0, false);
        }
    return SD_OK;
}

/* The text encoder of st under prefix (open_clip's layout or transformers') as a file in
 * transformers' layout at out, its first max_layers layers (open_clip only). */
static sd_status write_split(sd_context *ctx, const sd_safetensors *st, const char *prefix, bool open_clip,
                             int max_layers, const char *out)
{
    split_file f = {.st = st, .ctx = ctx};
    size_t plen = strlen(prefix);
    sd_status s = SD_OK;
    for (size_t i = 0; !s && i < sd_safetensors_count(st); i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        char name[160];
        if (strncmp(t->name, prefix, plen) != 0)
            continue;
        if (open_clip) {
            s = add_open_clip(&f, t, t->name + plen, max_layers);
        } else if (strcmp(t->name + plen, "embeddings.position_ids") != 0) {
            snprintf(name, sizeof name, "text_model.%s", t->name + plen);
            s = split_add(&f, name, t, 0, 0, false);
        }
    }
    if (!s && !f.n)
        s = sd_set_error(ctx, SD_ERR_INVALID, "%s: no text encoder tensors (%s*)", sd_safetensors_path(st), prefix);
    if (!s)
        s = split_write(&f, out);
    free(f.e);
    return s;
}

sd_status sd_text_write_sdxl_split(sd_context *ctx, const char *ckpt, const char *out_l, const char *out_g)
{
    const sd_family_desc *fam = sd_family_get(SD_FAMILY_SDXL);
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, ckpt, &st);
    if (!s)
        s = write_split(ctx, st, fam->text_encoders[0].prefix, false, 0, out_l);
    if (!s)
        s = write_split(ctx, st, fam->text_encoders[1].prefix, true, INT32_MAX, out_g);
    sd_safetensors_close(st);
    return s;
}

sd_status sd_text_write_sd2_split(sd_context *ctx, const char *ckpt, int layers, const char *out)
{
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, ckpt, &st);
    if (!s)
        s = write_split(ctx, st, sd_family_get(SD_FAMILY_SD2)->text_encoders[0].prefix, true, layers, out);
    sd_safetensors_close(st);
    return s;
}

/* ---- fp8 T5 ---- */

/* The value of fp8 E4M3FN code c (c < 0x7f: no NaN). */
static float e4m3_value(unsigned c)
{
    unsigned e = (c >> 3) & 15u, m = c & 7u;
    float v = e ? ldexpf(1.0f + (float)m / 8.0f, (int)e - 7) : ldexpf((float)m / 8.0f, -6);
    return (c & 0x80u) ? -v : v;
}

/* v rounded to the nearest E4M3FN value (ties to the even code), as torch's .to(float8_e4m3fn);
 * |v| is at most 448 here. */
static unsigned char e4m3_code(float v)
{
    float a = fabsf(v);
    unsigned best = 0;
    for (unsigned c = 1; c < 0x7f; c++) {
        float d = fabsf(e4m3_value(c) - a), db = fabsf(e4m3_value(best) - a);
        if (d < db || (d == db && (c & 1u) == 0))
            best = c;
    }
    return (unsigned char)(best | (v < 0 ? 0x80u : 0u));
}

typedef struct fp8_file {
    sd_st_entry *entries;
    void **data; /* per entry: its bytes */
    size_t n;
} fp8_file;

static sd_status fp8_fill(void *user, size_t index, void *dst, size_t nbytes)
{
    const fp8_file *f = user;
    memcpy(dst, f->data[index], nbytes);
    return SD_OK;
}

/* Whether the T5 tensor t is a Linear of the blocks (what ComfyUI's fp8 T5 files store as fp8). */
static bool t5_fp8_matrix(const sd_st_tensor *t)
{
    size_t n = strlen(t->name);
    return t->ndim == 2 && strncmp(t->name, "encoder.block.", 14) == 0 && n > 7 &&
           strcmp(t->name + n - 7, ".weight") == 0 && !strstr(t->name, "relative_attention_bias");
}

/* Appends entry (name copied) with data (owned) to both files' lists; false when out of memory. */
static bool fp8_add(fp8_file *f, const char *name, sd_st_dtype dtype, int ndim, const int64_t *shape, void *data)
{
    char *copy = sd_strfmt("%s", name);
    if (!copy) {
        free(data);
        return false;
    }
    sd_st_entry *e = &f->entries[f->n];
    memset(e, 0, sizeof *e);
    e->name = copy;
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        e->shape[d] = shape[d];
    f->data[f->n++] = data;
    return true;
}

static void fp8_free(fp8_file *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free((char *)f->entries[i].name);
        free(f->data[i]);
    }
    free(f->entries);
    free(f->data);
}

sd_status sd_text_write_t5_fp8(sd_context *ctx, const char *in, const char *out, const char *ref, bool scaled)
{
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, in, &st);
    if (s)
        return s;
    size_t n = sd_safetensors_count(st), cap = 2 * n + 1;
    fp8_file q = {calloc(cap, sizeof(sd_st_entry)), calloc(cap, sizeof(void *)), 0};
    fp8_file r = {calloc(cap, sizeof(sd_st_entry)), calloc(cap, sizeof(void *)), 0};
    if (!q.entries || !q.data || !r.entries || !r.data)
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        float *v = malloc((t->numel ? t->numel : 1) * sizeof *v);
        unsigned char *codes = NULL;
        if (!v || (t5_fp8_matrix(t) && !(codes = malloc(t->numel ? t->numel : 1)))) {
            free(v);
            s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            break;
        }
        if ((s = sd_safetensors_read_f32(ctx, st, t, v, t->numel))) {
            free(v);
            free(codes);
            break;
        }
        if (!codes) { /* kept as it is (F32) in both files */
            float *copy = malloc((t->numel ? t->numel : 1) * sizeof *copy);
            if (copy)
                memcpy(copy, v, t->numel * sizeof *copy);
            if (!copy || !fp8_add(&q, t->name, SD_ST_F32, t->ndim, t->shape, copy) ||
                !fp8_add(&r, t->name, SD_ST_F32, t->ndim, t->shape, v))
                s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            continue;
        }
        float maxabs = 0.0f, *scale = malloc(sizeof *scale);
        for (size_t k = 0; k < t->numel; k++)
            maxabs = fmaxf(maxabs, fabsf(v[k]));
        if (scale)
            *scale = scaled && maxabs > 0.0f ? maxabs / 448.0f : 1.0f;
        for (size_t k = 0; scale && k < t->numel; k++) {
            codes[k] = e4m3_code(v[k] / *scale);
            v[k] = e4m3_value(codes[k]) * *scale; /* what the loader computes */
        }
        char name[160];
        snprintf(name, sizeof name, "%.*s.scale_weight", (int)(strlen(t->name) - 7), t->name);
        int64_t one = 1;
        if (!scale || !fp8_add(&q, t->name, SD_ST_F8_E4M3, t->ndim, t->shape, codes) ||
            !fp8_add(&r, t->name, SD_ST_F32, t->ndim, t->shape, v) ||
            (scaled ? !fp8_add(&q, name, SD_ST_F32, 1, &one, scale) : (free(scale), false)))
            s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    int64_t zero = 0;
    if (!s && scaled && !fp8_add(&q, "scaled_fp8", SD_ST_F8_E4M3, 1, &zero, malloc(1)))
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = sd_safetensors_write(ctx, out, q.entries, q.n, NULL, fp8_fill, &q);
    if (!s && ref)
        s = sd_safetensors_write(ctx, ref, r.entries, r.n, NULL, fp8_fill, &r);
    fp8_free(&q);
    fp8_free(&r);
    sd_safetensors_close(st);
    return s;
}
