/* The CLIP transformer layer both towers share (see clip_layer.h). */
#include "ml/text/clip_layer.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <stdio.h>

/* Tensor names of a layer in a layout; "%d" is the layer. */
typedef struct layer_names {
    const char *ln1, *ln2, *out_proj, *fc1, *fc2;
} layer_names;

static const layer_names transformers_names = {
    "encoder.layers.%d.layer_norm1", "encoder.layers.%d.layer_norm2", "encoder.layers.%d.self_attn.out_proj",
    "encoder.layers.%d.mlp.fc1", "encoder.layers.%d.mlp.fc2"};
static const layer_names open_clip_names = {
    "transformer.resblocks.%d.ln_1", "transformer.resblocks.%d.ln_2", "transformer.resblocks.%d.attn.out_proj",
    "transformer.resblocks.%d.mlp.c_fc", "transformer.resblocks.%d.mlp.c_proj"};

/* <fmt>.weight and <fmt>.bias with fmt naming layer `layer`. */
static sd_status weight_and_bias(const sd_clip_layers *t, const char *fmt, int layer, const sd_dtensor **w,
                                 const sd_dtensor **b)
{
    char name[160];
    int k = snprintf(name, sizeof name, fmt, layer);
    snprintf(name + k, sizeof name - (size_t)k, ".weight");
    sd_status s = sd_weights_get(t->w, name, w);
    snprintf(name + k, sizeof name - (size_t)k, ".bias");
    return s ? s : sd_weights_get(t->w, name, b);
}

/* A Linear layer <fmt>.weight / <fmt>.bias, fmt naming layer `layer`. */
static sd_status linear(const sd_clip_layers *t, int layer, const char *fmt, const sd_dtensor *x, sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = weight_and_bias(t, fmt, layer, &w, &b);
    return s ? s : sd_op_linear(t->cl, x, w, b, SD_ACT_NONE, out);
}

sd_status sd_clip_layer_norm(const sd_clip_layers *t, const char *fmt, int layer, const sd_dtensor *x,
                             sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_status s = weight_and_bias(t, fmt, layer, &g, &b);
    return s ? s : sd_op_layer_norm(t->cl, x, t->eps > 0 ? t->eps : SD_CLIP_LN_EPS, g, b, out);
}

/* q, k, v of h: transformers' three projections, or open_clip's fused in_proj [3W, W] whose
 * output is split in three. */
static sd_status qkv(const sd_clip_layers *t, int layer, const sd_dtensor *h, sd_dtensor **q, sd_dtensor **k,
                     sd_dtensor **v)
{
    if (!t->open_clip) {
        sd_status s = linear(t, layer, "encoder.layers.%d.self_attn.q_proj", h, q);
        if (!s)
            s = linear(t, layer, "encoder.layers.%d.self_attn.k_proj", h, k);
        return s ? s : linear(t, layer, "encoder.layers.%d.self_attn.v_proj", h, v);
    }
    const sd_dtensor *w, *b;
    sd_dtensor *all = NULL;
    int64_t width = t->width;
    sd_status s = sd_weights_getf(t->w, &w, "transformer.resblocks.%d.attn.in_proj_weight", layer);
    if (!s)
        s = sd_weights_getf(t->w, &b, "transformer.resblocks.%d.attn.in_proj_bias", layer);
    if (!s)
        s = sd_op_linear(t->cl, h, w, b, SD_ACT_NONE, &all);
    if (!s)
        s = sd_op_slice(t->cl, all, 2, 0, width, q);
    if (!s)
        s = sd_op_slice(t->cl, all, 2, width, width, k);
    if (!s)
        s = sd_op_slice(t->cl, all, 2, 2 * width, width, v);
    sd_dtensor_free(all);
    return s;
}

sd_status sd_clip_layer(const sd_clip_layers *t, int layer, sd_dtensor **x)
{
    const layer_names *n = t->open_clip ? &open_clip_names : &transformers_names;
    sd_dtensor *h = NULL, *q = NULL, *k = NULL, *v = NULL, *a = NULL, *o = NULL, *sum = NULL;
    sd_status s = sd_clip_layer_norm(t, n->ln1, layer, *x, &h);
    if (!s) s = qkv(t, layer, h, &q, &k, &v);
    if (!s) s = sd_op_attention(t->cl, q, k, v, t->heads, t->mask, &a);
    if (!s) s = linear(t, layer, n->out_proj, a, &o);
    if (!s) s = sd_op_binary(t->cl, SD_BINARY_ADD, *x, o, &sum);
    if (!s) {
        sd_dtensor_free(*x);
        *x = sum;
        sum = NULL;
    }
    sd_dtensor_free(h), h = NULL;
    sd_dtensor_free(a), a = NULL;
    sd_dtensor_free(o), o = NULL;
    if (!s) s = sd_clip_layer_norm(t, n->ln2, layer, *x, &h);
    if (!s) s = linear(t, layer, n->fc1, h, &a);
    sd_unary act = t->gelu_tanh ? SD_UNARY_GELU_TANH : t->gelu ? SD_UNARY_GELU : SD_UNARY_QUICK_GELU;
    if (!s) s = sd_op_unary(t->cl, act, a, &o);
    sd_dtensor_free(a), a = NULL;
    if (!s) s = linear(t, layer, n->fc2, o, &a);
    if (!s) s = sd_op_binary(t->cl, SD_BINARY_ADD, *x, a, &sum);
    if (!s) {
        sd_dtensor_free(*x);
        *x = sum;
    }
    sd_dtensor_free(h);
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    sd_dtensor_free(a);
    sd_dtensor_free(o);
    return s;
}
