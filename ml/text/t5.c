/* The T5 v1.1 encoder on the op library. See t5.h. */
#include "ml/text/t5.h"
#include "ml/formats/gguf.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-6f /* layer_norm_epsilon */
#define BLOCK "encoder.block.%d.layer."

struct sd_t5_model {
    sd_cl *cl;
    const sd_safetensors *st;
    char *prefix;
    const char *embedding; /* "shared.weight" or "encoder.embed_tokens.weight" */
    sd_t5_config cfg;
    sd_weights *w;
};

/* ---- configuration ---- */

/* The tensor <prefix><name>, or NULL. */
static const sd_st_tensor *findf(const sd_safetensors *st, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const sd_st_tensor *findf(const sd_safetensors *st, const char *prefix, const char *fmt, ...)
{
    char name[256];
    int k = snprintf(name, sizeof name, "%s", prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + k, sizeof name - (size_t)k, fmt, ap);
    va_end(ap);
    return sd_safetensors_find(st, name);
}

/* Requires <prefix><name> with shape [d0] (d1 < 0) or [d0, d1]. */
static sd_status need(sd_context *ctx, const sd_safetensors *st, const char *prefix, const char *name, int64_t d0,
                      int64_t d1)
{
    const sd_st_tensor *t = findf(st, prefix, "%s", name);
    int ndim = d1 < 0 ? 1 : 2;
    if (!t)
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: missing tensor '%s%s' (T5 encoder)", sd_safetensors_path(st),
                            prefix, name);
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1))
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: tensor '%s%s' has shape [%lld%s%lld], the T5 encoder needs [%lld%s%lld]",
                            sd_safetensors_path(st), prefix, name, (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                            t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)d0, ndim > 1 ? ", " : "",
                            ndim > 1 ? (long long)d1 : 0LL);
    return SD_OK;
}

static const char *embedding_name(const sd_safetensors *st, const char *prefix)
{
    return findf(st, prefix, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
}

sd_status sd_t5_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_t5_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *emb = findf(st, prefix, "%s", embedding_name(st, prefix));
    const sd_st_tensor *q = findf(st, prefix, BLOCK "0.SelfAttention.q.weight", 0);
    const sd_st_tensor *rel = findf(st, prefix, BLOCK "0.SelfAttention.relative_attention_bias.weight", 0);
    const sd_st_tensor *wi = findf(st, prefix, BLOCK "1.DenseReluDense.wi_0.weight", 0);
    const sd_st_tensor *probe[4] = {emb, q, rel, wi};
    const char *names[4] = {"shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"};
    for (int i = 0; i < 4; i++) {
        if (!probe[i])
            return sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: missing tensor '%s%s' (T5 encoder)", path, prefix,
                                names[i]);
        if (probe[i]->ndim != 2 || probe[i]->shape[0] < 1 || probe[i]->shape[1] < 1 || probe[i]->shape[0] > INT32_MAX ||
            probe[i]->shape[1] > INT32_MAX)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s%s' is not a non-empty 2-D tensor", path, prefix,
                                probe[i]->name + strlen(prefix));
    }
    cfg->vocab = emb->shape[0];
    cfg->d_model = (int)emb->shape[1];
    cfg->buckets = (int)rel->shape[0];
    cfg->heads = (int)rel->shape[1];
    cfg->d_ff = (int)wi->shape[0];
    if (q->shape[0] % cfg->heads)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': %lld rows do not split into %d heads", path,
                            q->name, (long long)q->shape[0], cfg->heads);
    cfg->d_kv = (int)(q->shape[0] / cfg->heads);
    while (findf(st, prefix, BLOCK "0.SelfAttention.q.weight", cfg->layers))
        cfg->layers++;
    int64_t d = cfg->d_model, inner = (int64_t)cfg->heads * cfg->d_kv, ff = cfg->d_ff;
    sd_status s = need(ctx, st, prefix, "encoder.final_layer_norm.weight", d, -1);
    for (int l = 0; !s && l < cfg->layers; l++) {
        static const char *const attn[4] = {"q", "k", "v", "o"};
        char name[160];
        for (int i = 0; !s && i < 4; i++) {
            snprintf(name, sizeof name, BLOCK "0.SelfAttention.%s.weight", l, attn[i]);
            s = need(ctx, st, prefix, name, i < 3 ? inner : d, i < 3 ? d : inner);
        }
        for (int i = 0; !s && i < 2; i++) {
            snprintf(name, sizeof name, BLOCK "%d.layer_norm.weight", l, i);
            s = need(ctx, st, prefix, name, d, -1);
            snprintf(name, sizeof name, BLOCK "1.DenseReluDense.wi_%d.weight", l, i);
            if (!s)
                s = need(ctx, st, prefix, name, ff, d);
        }
        snprintf(name, sizeof name, BLOCK "1.DenseReluDense.wo.weight", l);
        if (!s)
            s = need(ctx, st, prefix, name, d, ff);
    }
    return s;
}

/* ---- llama.cpp names ---- */

/* Replaces every occurrence of from in s (a buffer of size bytes) by to, as Python's str.replace. */
static void replace_all(char *s, size_t size, const char *from, const char *to)
{
    char out[512];
    size_t o = 0, nf = strlen(from), nt = strlen(to);
    for (const char *p = s; *p && o + 1 < sizeof out;) {
        if (strncmp(p, from, nf) == 0 && o + nt + 1 < sizeof out) {
            memcpy(out + o, to, nt);
            o += nt;
            p += nf;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    snprintf(s, size, "%s", out);
}

sd_status sd_t5_rename_llama(sd_context *ctx, const sd_safetensors *st, sd_safetensors **out)
{
    /* ComfyUI-GGUF's T5_SD_MAP, applied in this order */
    static const char *const map[][2] = {
        {"enc.", "encoder."},
        {".blk.", ".block."},
        {"token_embd", "shared"},
        {"output_norm", "final_layer_norm"},
        {"attn_q", "layer.0.SelfAttention.q"},
        {"attn_k", "layer.0.SelfAttention.k"},
        {"attn_v", "layer.0.SelfAttention.v"},
        {"attn_o", "layer.0.SelfAttention.o"},
        {"attn_norm", "layer.0.layer_norm"},
        {"attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"},
        {"ffn_up", "layer.1.DenseReluDense.wi_1"},
        {"ffn_down", "layer.1.DenseReluDense.wo"},
        {"ffn_gate", "layer.1.DenseReluDense.wi_0"},
        {"ffn_norm", "layer.1.layer_norm"},
    };
    size_t n = sd_safetensors_count(st);
    const sd_st_tensor **from = calloc(n ? n : 1, sizeof *from);
    char **names = calloc(n ? n : 1, sizeof *names);
    sd_status s = from && names ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        from[i] = sd_safetensors_at(st, i);
        if (!(names[i] = malloc(512))) {
            s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(names[i], 512, "%s", from[i]->name);
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            replace_all(names[i], 512, map[k][0], map[k][1]);
    }
    if (!s)
        s = sd_safetensors_alias(ctx, st, from, (const char *const *)names, n, out);
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(from);
    return s;
}

/* ---- model ---- */

sd_status sd_t5_model_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype weight_dtype,
                          sd_t5_model **out)
{
    *out = NULL;
    sd_t5_model *m = calloc(1, sizeof *m);
    if (!m || !(m->prefix = sd_strdup(prefix))) {
        free(m);
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    m->cl = cl;
    m->st = st;
    m->embedding = embedding_name(st, prefix);
    sd_status s = sd_t5_inspect(cl->ctx, st, prefix, &m->cfg);
    if (!s)
        s = sd_weights_new(cl, st, prefix, weight_dtype, &m->w);
    if (s) {
        sd_t5_model_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

void sd_t5_model_free(sd_t5_model *m)
{
    if (!m)
        return;
    sd_weights_free(m->w);
    free(m->prefix);
    free(m);
}

const sd_t5_config *sd_t5_model_config(const sd_t5_model *m)
{
    return &m->cfg;
}

int sd_t5_bucket(int64_t distance, int buckets, int max_distance)
{
    int half = buckets / 2, exact = half / 2, bucket = distance > 0 ? half : 0;
    int64_t r = distance < 0 ? -distance : distance;
    if (r < exact)
        return bucket + (int)r;
    /* float32 throughout, as torch computes it (the log's divisor is a float32 scalar) */
    float large = logf((float)r / (float)exact) / (float)log((double)max_distance / exact) * (float)(half - exact);
    int64_t v = exact + (int64_t)large;
    return bucket + (int)(v < half - 1 ? v : half - 1);
}

/* Row `row` of the embedding table t ([vocab, d_model]): float dtypes through the safetensors
 * reader, ggml blocks read and dequantised row by row (a row is whole blocks when d_model is). */
static sd_status read_row(sd_t5_model *m, const sd_st_tensor *t, int64_t row, float *dst)
{
    sd_context *ctx = m->cl->ctx;
    size_t d = (size_t)m->cfg.d_model, be = 1, bb = 0;
    bool blocks = t->dtype == SD_ST_GGML;
    if (t->ndim != 2 || (uint64_t)t->shape[1] != d || row < 0 || row >= t->shape[0] ||
        (blocks && (!sd_ggml_type_block((sd_ggml_type)t->ggml_type, &be, &bb) || d % be)))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': no row %lld of %zu values in a %s tensor of %d dimensions",
                            sd_safetensors_path(m->st), t->name, (long long)row, d,
                            blocks ? sd_ggml_type_name((sd_ggml_type)t->ggml_type) : sd_st_dtype_name(t->dtype),
                            t->ndim);
    if (!blocks)
        return sd_safetensors_read_f32_range(ctx, m->st, t, (size_t)row * d, d, dst);
    size_t row_bytes = d / be * bb;
    unsigned char *raw = malloc(row_bytes ? row_bytes : 1);
    if (!raw)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory reading tensor '%s'", t->name);
    sd_status st = sd_safetensors_read_raw_range(ctx, m->st, t, (size_t)row * row_bytes, row_bytes, raw);
    if (!st)
        sd_ggml_dequantize((sd_ggml_type)t->ggml_type, raw, dst, d);
    free(raw);
    return st;
}

/* Token embeddings gathered on the host, uploaded as [1, n, d_model]. */
static sd_status embed(sd_t5_model *m, const int32_t *tokens, int n, sd_dtensor **out)
{
    int d = m->cfg.d_model;
    const sd_st_tensor *t = sd_weights_info(m->w, m->embedding);
    float *host = malloc((size_t)n * (size_t)d * sizeof *host);
    sd_status s = host ? SD_OK : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++)
        s = read_row(m, t, tokens[i], host + (size_t)i * (size_t)d);
    int64_t shape[3] = {1, n, d};
    if (!s && !(s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, out)) && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(host);
    return s;
}

/* The relative-position bias [heads, n, n] from block 0's table [buckets, heads]. */
static sd_status position_bias(sd_t5_model *m, int n, sd_dtensor **out)
{
    const sd_t5_config *c = &m->cfg;
    const sd_st_tensor *t = sd_weights_info(m->w, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
    size_t tn = (size_t)c->buckets * (size_t)c->heads, nn = (size_t)n * (size_t)n;
    float *table = malloc(tn * sizeof *table), *host = malloc((size_t)c->heads * nn * sizeof *host);
    sd_status s = table && host ? sd_safetensors_read_f32(m->cl->ctx, m->st, t, table, tn)
                                : sd_set_error(m->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++)
        for (int j = 0; j < n; j++) {
            int b = sd_t5_bucket((int64_t)j - i, c->buckets, SD_T5_MAX_DISTANCE);
            for (int h = 0; h < c->heads; h++)
                host[(size_t)h * nn + (size_t)i * (size_t)n + (size_t)j] = table[(size_t)b * (size_t)c->heads + (size_t)h];
        }
    int64_t shape[3] = {c->heads, n, n};
    if (!s && !(s = sd_dtensor_new(m->cl, SD_DTYPE_F32, 3, shape, out)) && (s = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(table);
    free(host);
    return s;
}

/* [1, n, heads*d_kv] -> [heads, n, d_kv] (to_heads) or back; frees x. */
static sd_status regroup(sd_t5_model *m, sd_dtensor *x, bool to_heads, sd_dtensor **out)
{
    const sd_t5_config *c = &m->cfg;
    int64_t n = x->shape[1];
    sd_dtensor *t = NULL;
    *out = NULL;
    sd_status s = sd_op_transpose(m->cl, x, NULL, &t);
    sd_dtensor_free(x);
    if (s)
        return s;
    int64_t mid[3] = {c->heads, c->d_kv, n}, flat[3] = {1, (int64_t)c->heads * c->d_kv, n};
    if (!(s = sd_dtensor_reshape(t, 3, to_heads ? mid : flat)))
        s = sd_op_transpose(m->cl, t, NULL, out);
    sd_dtensor_free(t);
    return s;
}

/* x += o(attention(rms(x))) with the shared position bias; returns the new x (frees the old). */
static sd_status attention_block(sd_t5_model *m, int l, const sd_dtensor *bias, sd_dtensor **x)
{
    const sd_t5_config *c = &m->cfg;
    const sd_dtensor *ln, *wq, *wk, *wv, *wo;
    sd_dtensor *h = NULL, *q1 = NULL, *q = NULL, *k = NULL, *v = NULL, *a = NULL, *y = NULL;
    sd_status s;
    if ((s = sd_weights_getf(m->w, &ln, BLOCK "0.layer_norm.weight", l)) ||
        (s = sd_weights_getf_linear(m->w, &wq, BLOCK "0.SelfAttention.q.weight", l)) ||
        (s = sd_weights_getf_linear(m->w, &wk, BLOCK "0.SelfAttention.k.weight", l)) ||
        (s = sd_weights_getf_linear(m->w, &wv, BLOCK "0.SelfAttention.v.weight", l)) ||
        (s = sd_weights_getf_linear(m->w, &wo, BLOCK "0.SelfAttention.o.weight", l)) ||
        (s = sd_op_rms_norm(m->cl, *x, EPS, ln, &h)))
        return s;
    /* T5 does not scale scores by 1/sqrt(d_kv); the attention op does, so q is scaled up first
     * (exact when d_kv is a power of 4, as XXL's 64 is; a separate op, as linear's quantised
     * weights take no alpha, rounding as the product's alpha would). */
    s = sd_op_linear(m->cl, h, wq, NULL, SD_ACT_NONE, &q1);
    if (!s)
        s = sd_op_scale(m->cl, q1, sqrtf((float)c->d_kv), 0.0f, &q);
    sd_dtensor_free(q1);
    if (!s && !(s = sd_op_linear(m->cl, h, wk, NULL, SD_ACT_NONE, &k)) &&
        !(s = sd_op_linear(m->cl, h, wv, NULL, SD_ACT_NONE, &v))) {
        sd_dtensor *qh = NULL, *kh = NULL, *vh = NULL;
        s = regroup(m, q, true, &qh); /* regroup frees its input */
        q = NULL;
        if (!s) {
            s = regroup(m, k, true, &kh);
            k = NULL;
        }
        if (!s) {
            s = regroup(m, v, true, &vh);
            v = NULL;
        }
        if (!s)
            s = sd_op_attention(m->cl, qh, kh, vh, 1, bias, &a);
        sd_dtensor_free(qh);
        sd_dtensor_free(kh);
        sd_dtensor_free(vh);
        if (!s) {
            s = regroup(m, a, false, &y);
            a = NULL;
        }
    }
    sd_dtensor_free(h);
    h = NULL;
    if (!s && !(s = sd_op_linear(m->cl, y, wo, NULL, SD_ACT_NONE, &h)) &&
        !(s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, h, &a))) {
        sd_dtensor_free(*x);
        *x = a;
        a = NULL;
    }
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    sd_dtensor_free(a);
    sd_dtensor_free(y);
    sd_dtensor_free(h);
    return s;
}

/* x += wo(gelu_tanh(wi_0 rms(x)) * wi_1 rms(x)); returns the new x (frees the old). */
static sd_status ff_block(sd_t5_model *m, int l, sd_dtensor **x)
{
    const sd_dtensor *ln, *wi0, *wi1, *wo;
    sd_dtensor *h = NULL, *a = NULL, *g = NULL, *b = NULL, *p = NULL, *f = NULL, *y = NULL;
    sd_status s;
    if (!(s = sd_weights_getf(m->w, &ln, BLOCK "1.layer_norm.weight", l)) &&
        !(s = sd_weights_getf_linear(m->w, &wi0, BLOCK "1.DenseReluDense.wi_0.weight", l)) &&
        !(s = sd_weights_getf_linear(m->w, &wi1, BLOCK "1.DenseReluDense.wi_1.weight", l)) &&
        !(s = sd_weights_getf_linear(m->w, &wo, BLOCK "1.DenseReluDense.wo.weight", l)) &&
        !(s = sd_op_rms_norm(m->cl, *x, EPS, ln, &h)) && !(s = sd_op_linear(m->cl, h, wi0, NULL, SD_ACT_NONE, &a)) &&
        !(s = sd_op_unary(m->cl, SD_UNARY_GELU_TANH, a, &g)) &&
        !(s = sd_op_linear(m->cl, h, wi1, NULL, SD_ACT_NONE, &b)) &&
        !(s = sd_op_binary(m->cl, SD_BINARY_MUL, g, b, &p)) && !(s = sd_op_linear(m->cl, p, wo, NULL, SD_ACT_NONE, &f)) &&
        !(s = sd_op_binary(m->cl, SD_BINARY_ADD, *x, f, &y))) {
        sd_dtensor_free(*x);
        *x = y;
    }
    sd_dtensor_free(h);
    sd_dtensor_free(a);
    sd_dtensor_free(g);
    sd_dtensor_free(b);
    sd_dtensor_free(p);
    sd_dtensor_free(f);
    return s;
}

sd_status sd_t5_encode(sd_t5_model *m, const int32_t *tokens, int n, float *hidden)
{
    const sd_t5_config *c = &m->cfg;
    if (n < 1)
        return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "T5 encoder: no tokens");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return sd_set_error(m->cl->ctx, SD_ERR_INVALID, "%s: T5 token id %d outside the vocabulary of %lld",
                                sd_safetensors_path(m->st), tokens[i], (long long)c->vocab);
    sd_dtensor *x = NULL, *bias = NULL, *y = NULL;
    const sd_dtensor *final;
    sd_status s = embed(m, tokens, n, &x);
    if (!s)
        s = position_bias(m, n, &bias);
    for (int l = 0; !s && l < c->layers; l++)
        if (!(s = attention_block(m, l, bias, &x)))
            s = ff_block(m, l, &x);
    if (!s && !(s = sd_weights_get(m->w, "encoder.final_layer_norm.weight", &final)) &&
        !(s = sd_op_rms_norm(m->cl, x, EPS, final, &y)))
        s = sd_dtensor_download(y, hidden);
    sd_dtensor_free(x);
    sd_dtensor_free(bias);
    sd_dtensor_free(y);
    return s;
}
