/* The LDM UNet of SD1 and SDXL (see unet.h) on the op library.
 *
 * Activations are NCHW f32 between blocks; a SpatialTransformer works token-major [B, HW, C]:
 * proj_in reads the group-normed NCHW tensor transposed straight from the GEMM (no separate
 * transpose) and proj_out's result is transposed back with the residual added in the same pass.
 * Every intermediate is freed as soon as its consumer has been enqueued, so at any time the UNet
 * holds the skip connections plus a few tensors of the current block. */
#include "ml/diffusion/unet.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define UNET_GN_EPS 1e-5f         /* GroupNorm32 in ResBlocks and the output head */
#define UNET_TRANSFORMER_EPS 1e-6f /* SpatialTransformer's GroupNorm */
#define UNET_LN_EPS 1e-5f         /* BasicTransformerBlock's LayerNorms */
#define UNET_MAX_PERIOD 10000.0f  /* sinusoidal timestep embedding */

struct sd_unet {
    sd_cl *cl;
    sd_unet_config config;
    sd_weights *w;
    /* During a forward with an attn2 hook: the hook and where the forward is. */
    const sd_unet_attn2_hook *hook;
    sd_unet_attn_site site;
    int n_input_attn, n_output_attn; /* attn2 layers of the input and output blocks */
    int seen_input, seen_output;     /* of those, run so far in this forward */
};

sd_status sd_unet_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                      const sd_unet_config *config, sd_dtype weight_dtype, sd_unet **out)
{
    *out = NULL;
    const sd_unet_config *c = config;
    if (c->n_levels < 1 || c->n_levels > SD_MAX_LEVELS || c->num_res_blocks < 1 || c->middle_depth < 1 ||
        (c->num_heads < 1 && c->head_channels < 1) || c->norm_groups < 1 || c->adm_channels < 0 || c->model_channels < 1 || c->in_channels < 1 ||
        c->out_channels < 1 || c->context_dim < 1)
        return sd_set_error(cl->ctx, SD_ERR_INVALID, "%s: UNet configuration out of range",
                            sd_safetensors_path(st));
    sd_unet *u = calloc(1, sizeof *u);
    if (!u)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    u->cl = cl;
    u->config = *config;
    sd_status s = sd_weights_new(cl, st, prefix, weight_dtype, &u->w);
    if (s) {
        free(u);
        return s;
    }
    *out = u;
    return SD_OK;
}

sd_status sd_unet_new_patched(sd_unet *base, const sd_weight_patcher *patcher, sd_unet **out)
{
    *out = NULL;
    sd_unet *u = calloc(1, sizeof *u);
    if (!u)
        return sd_set_error(base->cl->ctx, SD_ERR_NOMEM, "out of memory");
    *u = (sd_unet){.cl = base->cl, .config = base->config};
    sd_status s = sd_weights_new_patched(base->w, patcher, &u->w);
    if (s) {
        free(u);
        return s;
    }
    *out = u;
    return SD_OK;
}

sd_status sd_unet_weight(sd_unet *u, const char *name, const sd_dtensor **out)
{
    return sd_weights_get(u->w, name, out);
}

void sd_unet_free(sd_unet *u)
{
    if (!u)
        return;
    sd_weights_free(u->w);
    free(u);
}

const sd_unet_config *sd_unet_config_of(const sd_unet *u)
{
    return &u->config;
}

/* ---- layers; each returns a new tensor in *out and leaves its input alone ---- */

/* The weight <base>.<suffix>. */
static sd_status param(sd_unet *u, const char *base, const char *suffix, const sd_dtensor **out)
{
    return sd_weights_getf(u->w, out, "%s.%s", base, suffix);
}

static sd_status conv(sd_unet *u, const char *base, const sd_dtensor *x, int stride, sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = param(u, base, "weight", &w);
    if (!s)
        s = param(u, base, "bias", &b);
    if (s)
        return s;
    int pad = (int)(w->shape[w->ndim - 1] / 2);
    sd_conv2d_params p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .act = SD_ACT_NONE};
    return sd_op_conv2d(u->cl, x, w, b, &p, out);
}

static sd_status group_norm(sd_unet *u, const char *base, const sd_dtensor *x, float eps, bool silu,
                            sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_status s = param(u, base, "weight", &g);
    if (!s)
        s = param(u, base, "bias", &b);
    return s ? s : sd_op_group_norm(u->cl, x, u->config.norm_groups, eps, g, b, silu, out);
}

static sd_status layer_norm(sd_unet *u, const char *base, const sd_dtensor *x, sd_dtensor **out)
{
    const sd_dtensor *g, *b;
    sd_status s = param(u, base, "weight", &g);
    if (!s)
        s = param(u, base, "bias", &b);
    return s ? s : sd_op_layer_norm(u->cl, x, UNET_LN_EPS, g, b, out);
}

/* A Linear layer <base>.weight (a 1x1 conv kernel [N, K, 1, 1] serves as [N, K]) and, when
 * with_bias, <base>.bias. */
static sd_status linear(sd_unet *u, const char *base, const sd_dtensor *x, bool with_bias, sd_act act,
                        sd_dtensor **out)
{
    const sd_dtensor *w, *b = NULL;
    sd_status s = param(u, base, "weight", &w);
    if (!s && with_bias)
        s = param(u, base, "bias", &b);
    if (s)
        return s;
    sd_dtensor w2 = *w; /* a view with the trailing 1x1 dropped; shares w's buffer */
    w2.ndim = 2;
    return sd_op_linear(u->cl, x, &w2, b, act, out);
}

/* *acc = *acc + y; frees the old *acc and y. */
static sd_status add_into(sd_unet *u, sd_dtensor **acc, sd_dtensor *y)
{
    sd_dtensor *sum = NULL;
    sd_status s = sd_op_binary(u->cl, SD_BINARY_ADD, *acc, y, &sum);
    sd_dtensor_free(y);
    if (!s) {
        sd_dtensor_free(*acc);
        *acc = sum;
    }
    return s;
}

/* After a layer computed *next from *x with status s: on success frees the old *x and moves
 * *next into it. (A pointer, not a value: arguments are evaluated in no fixed order.) */
static sd_status advance(sd_status s, sd_dtensor **x, sd_dtensor **next)
{
    if (!s) {
        sd_dtensor_free(*x);
        *x = *next;
        *next = NULL;
    }
    return s;
}

/* ResBlock: out = skip(x) + conv(GN+SiLU(conv(GN+SiLU(x)) + Linear(SiLU(emb)))).
 * emb_silu is SiLU(emb) [B, time_embed_dim], shared by every block. */
static sd_status res_block(sd_unet *u, const char *base, const sd_dtensor *x, const sd_dtensor *emb_silu,
                           sd_dtensor **out)
{
    char name[96];
    sd_dtensor *h = NULL, *t = NULL, *e = NULL;
    snprintf(name, sizeof name, "%s.in_layers.0", base);
    sd_status s = group_norm(u, name, x, UNET_GN_EPS, true, &h);
    snprintf(name, sizeof name, "%s.in_layers.2", base);
    if (!s)
        s = advance(conv(u, name, h, 1, &t), &h, &t);
    snprintf(name, sizeof name, "%s.emb_layers.1", base);
    if (!s)
        s = linear(u, name, emb_silu, true, SD_ACT_NONE, &e);
    if (!s)
        s = sd_dtensor_reshape(e, 4, (const int64_t[]){e->shape[0], e->shape[1], 1, 1});
    if (!s)
        s = add_into(u, &h, e);
    else
        sd_dtensor_free(e);
    snprintf(name, sizeof name, "%s.out_layers.0", base);
    if (!s)
        s = advance(group_norm(u, name, h, UNET_GN_EPS, true, &t), &h, &t);
    snprintf(name, sizeof name, "%s.out_layers.3", base);
    if (!s)
        s = advance(conv(u, name, h, 1, &t), &h, &t);
    snprintf(name, sizeof name, "%s.skip_connection.weight", base);
    if (!s && sd_weights_has(u->w, name)) {
        snprintf(name, sizeof name, "%s.skip_connection", base);
        sd_dtensor *skip = NULL;
        s = conv(u, name, x, 1, &skip);
        if (!s)
            s = add_into(u, &h, skip);
    } else if (!s) {
        s = advance(sd_op_binary(u->cl, SD_BINARY_ADD, h, x, &t), &h, &t);
    }
    if (!s) {
        *out = h;
        h = NULL;
    }
    sd_dtensor_free(h);
    return s;
}

/* Multi-head attention <base>.to_q/k/v (no bias), to_out.0 on x [B, N, C], keys and values
 * from kv (x itself for self-attention, the context for cross-attention, where the forward's
 * attn2 hook adds its part before to_out). */
static sd_status attention(sd_unet *u, const char *base, const sd_dtensor *x, const sd_dtensor *kv, int heads,
                           bool cross, sd_dtensor **out)
{
    char name[128];
    sd_dtensor *q = NULL, *k = NULL, *v = NULL, *a = NULL;
    snprintf(name, sizeof name, "%s.to_q", base);
    sd_status s = linear(u, name, x, false, SD_ACT_NONE, &q);
    snprintf(name, sizeof name, "%s.to_k", base);
    if (!s)
        s = linear(u, name, kv, false, SD_ACT_NONE, &k);
    snprintf(name, sizeof name, "%s.to_v", base);
    if (!s)
        s = linear(u, name, kv, false, SD_ACT_NONE, &v);
    if (!s)
        s = sd_op_attention(u->cl, q, k, v, heads, NULL, &a);
    if (!s && cross && u->hook)
        s = u->hook->apply(u->hook->user, &u->site, q, heads, &a);
    sd_dtensor_free(q);
    sd_dtensor_free(k);
    sd_dtensor_free(v);
    snprintf(name, sizeof name, "%s.to_out.0", base);
    if (!s)
        s = linear(u, name, a, true, SD_ACT_NONE, out);
    sd_dtensor_free(a);
    return s;
}

/* *x += attn<k>(norm<k>(*x)) attending to context, or to itself when context is NULL. */
static sd_status attend_residual(sd_unet *u, const char *base, int k, sd_dtensor **x, const sd_dtensor *context,
                                 int heads)
{
    char name[112]; /* (attention appends ".to_out.0" into its own 128) */
    sd_dtensor *h = NULL, *y = NULL;
    snprintf(name, sizeof name, "%s.norm%d", base, k);
    sd_status s = layer_norm(u, name, *x, &h);
    snprintf(name, sizeof name, "%s.attn%d", base, k);
    if (!s)
        s = attention(u, name, h, context ? context : h, heads, context != NULL, &y);
    if (!s)
        s = add_into(u, x, y);
    sd_dtensor_free(h);
    return s;
}

/* BasicTransformerBlock on *x [B, HW, C] in place: self-attention, cross-attention on context,
 * GEGLU feed-forward, each pre-LayerNorm with a residual. */
static sd_status transformer_block(sd_unet *u, const char *base, sd_dtensor **x, const sd_dtensor *context)
{
    int heads = sd_unet_config_heads(&u->config, (int)(*x)->shape[2]);
    char name[128];
    sd_dtensor *h = NULL, *y = NULL;
    sd_status s = attend_residual(u, base, 1, x, NULL, heads);
    if (!s)
        s = attend_residual(u, base, 2, x, context, heads);
    snprintf(name, sizeof name, "%s.norm3", base);
    if (!s)
        s = layer_norm(u, name, *x, &h);
    snprintf(name, sizeof name, "%s.ff.net.0.proj", base);
    if (!s)
        s = advance(linear(u, name, h, true, SD_ACT_NONE, &y), &h, &y);
    if (!s)
        s = advance(sd_op_geglu(u->cl, h, &y), &h, &y);
    snprintf(name, sizeof name, "%s.ff.net.2", base);
    if (!s)
        s = linear(u, name, h, true, SD_ACT_NONE, &y);
    if (!s)
        s = add_into(u, x, y);
    sd_dtensor_free(h);
    return s;
}

/* The IP-Adapter order of the attn2 of transformer block d about to run. */
static int attn_number(sd_unet *u, int d)
{
    switch (u->site.part) {
    case SD_UNET_INPUT:
        return u->seen_input++;
    case SD_UNET_OUTPUT:
        return u->n_input_attn + u->seen_output++;
    default:
        return u->n_input_attn + u->n_output_attn + d;
    }
}

/* SpatialTransformer: x + proj_out(blocks(proj_in(GN(x)))) with `depth` blocks token-major. */
static sd_status spatial_transformer(sd_unet *u, const char *base, const sd_dtensor *x, int depth,
                                     const sd_dtensor *context, sd_dtensor **out)
{
    char name[96];
    int64_t b = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    sd_dtensor *n = NULL, *t = NULL, *p = NULL;
    const sd_dtensor *w, *bias;
    snprintf(name, sizeof name, "%s.norm", base);
    sd_status s = group_norm(u, name, x, UNET_TRANSFORMER_EPS, false, &n);
    snprintf(name, sizeof name, "%s.proj_in", base);
    if (!s)
        s = sd_dtensor_reshape(n, 3, (const int64_t[]){b, c, hw});
    if (!s)
        s = param(u, name, "weight", &w);
    if (!s)
        s = param(u, name, "bias", &bias);
    if (!s) {
        sd_dtensor w2 = *w; /* [C, C, 1, 1] (conv) or [C, C] (linear) as [C, C] */
        w2.ndim = 2;
        /* [B, C, HW]^T [C_in, C_out]: token-major [B, HW, C] straight from the GEMM. */
        s = sd_op_matmul(u->cl, n, true, &w2, true, bias, SD_ACT_NONE, 1.0f, &t);
    }
    sd_dtensor_free(n);
    u->site.h = x->shape[2];
    u->site.w = x->shape[3];
    for (int d = 0; !s && d < depth; d++) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%d", base, d);
        u->site.index = d;
        u->site.number = attn_number(u, d);
        s = transformer_block(u, name, &t, context);
    }
    u->site.transformer++;
    snprintf(name, sizeof name, "%s.proj_out", base);
    if (!s)
        s = linear(u, name, t, true, SD_ACT_NONE, &p);
    sd_dtensor_free(t);
    if (!s)
        s = sd_op_transpose(u->cl, p, x, out);
    sd_dtensor_free(p);
    if (!s)
        s = sd_dtensor_reshape(*out, 4, x->shape);
    return s;
}

/* ---- the network ---- */

/* Skip connections: the stem conv, every input block's output. */
static int skip_count(const sd_unet_config *c)
{
    return 1 + c->n_levels * c->num_res_blocks + (c->n_levels - 1);
}

/* *h += residual when residual is set; its shape must equal *h's. */
static sd_status add_control(sd_unet *u, sd_dtensor **h, const sd_dtensor *residual, const char *what)
{
    if (!residual)
        return SD_OK;
    char dh[96], dr[96];
    if (!sd_dtensor_same_shape(*h, residual) || residual->dtype != SD_DTYPE_F32)
        return sd_set_error(u->cl->ctx, SD_ERR_INVALID, "ControlNet residual for %s is %s, expected %s", what,
                            sd_dtensor_describe(residual, dr, sizeof dr), sd_dtensor_describe(*h, dh, sizeof dh));
    sd_dtensor *sum = NULL;
    return advance(sd_op_binary(u->cl, SD_BINARY_ADD, *h, residual, &sum), h, &sum);
}

/* SiLU(time_embed(timestep_embedding(t)) + label_emb(y)) [B, time_embed_dim]: every ResBlock's
 * emb_layers starts with a SiLU, so it is applied once here (fused into the last linear layer
 * when there is no ADM vector y). */
static sd_status time_embedding(sd_unet *u, const float *timesteps, int64_t batch, const sd_dtensor *y,
                                sd_dtensor **out)
{
    sd_dtensor *t = NULL, *e = NULL, *h = NULL, *a = NULL, *sum = NULL;
    sd_status s = sd_dtensor_new(u->cl, SD_DTYPE_F32, 1, &batch, &t);
    if (!s)
        s = sd_dtensor_upload(t, timesteps);
    if (!s)
        s = sd_op_timestep_embedding(u->cl, t, u->config.model_channels, UNET_MAX_PERIOD, &e);
    if (!s)
        s = linear(u, "time_embed.0", e, true, SD_ACT_SILU, &h);
    if (!s && !y)
        s = linear(u, "time_embed.2", h, true, SD_ACT_SILU, out);
    if (!s && y) { /* label_emb: Linear, SiLU, Linear, added to the time embedding */
        sd_dtensor_free(e), e = NULL;
        s = linear(u, "time_embed.2", h, true, SD_ACT_NONE, &e);
        if (!s)
            s = advance(linear(u, "label_emb.0.0", y, true, SD_ACT_SILU, &a), &h, &a);
        if (!s)
            s = linear(u, "label_emb.0.2", h, true, SD_ACT_NONE, &a);
        if (!s)
            s = sd_op_binary(u->cl, SD_BINARY_ADD, e, a, &sum);
        if (!s)
            s = sd_op_unary(u->cl, SD_UNARY_SILU, sum, out);
    }
    sd_dtensor_free(t);
    sd_dtensor_free(e);
    sd_dtensor_free(h);
    sd_dtensor_free(a);
    sd_dtensor_free(sum);
    return s;
}

static sd_status check_inputs(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                              const sd_dtensor *y, const sd_unet_control *control)
{
    const sd_unet_config *c = &u->config;
    sd_context *ctx = u->cl->ctx;
    char d[96];
    if (x->ndim != 4 || x->dtype != SD_DTYPE_F32 || x->shape[0] < 1 || x->shape[2] < 1 || x->shape[3] < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "latent %s is not an f32 [B, C, H, W] tensor",
                            sd_dtensor_describe(x, d, sizeof d));
    if (x->shape[1] != c->in_channels)
        return sd_set_error(ctx, SD_ERR_INVALID, "latent %s has %lld channels, the model takes %d",
                            sd_dtensor_describe(x, d, sizeof d), (long long)x->shape[1], c->in_channels);
    if (context->ndim != 3 || context->dtype != SD_DTYPE_F32 || context->shape[0] != x->shape[0] ||
        context->shape[1] < 1 || context->shape[2] != c->context_dim)
        return sd_set_error(ctx, SD_ERR_INVALID, "context %s is not an f32 [%lld, tokens, %d] tensor",
                            sd_dtensor_describe(context, d, sizeof d), (long long)x->shape[0], c->context_dim);
    if (c->adm_channels && (!y || y->ndim != 2 || y->dtype != SD_DTYPE_F32 || y->shape[0] != x->shape[0] ||
                            y->shape[1] != c->adm_channels))
        return sd_set_error(ctx, SD_ERR_INVALID, "ADM vector %s is not an f32 [%lld, %d] tensor",
                            y ? sd_dtensor_describe(y, d, sizeof d) : "(none)", (long long)x->shape[0],
                            c->adm_channels);
    if (!c->adm_channels && y)
        return sd_set_error(ctx, SD_ERR_INVALID, "the model takes no ADM vector");
    for (int64_t i = 0; i < x->shape[0]; i++)
        if (!isfinite(timesteps[i]))
            return sd_set_error(ctx, SD_ERR_INVALID, "timestep %lld is not a finite number", (long long)i);
    if (control && control->skips && control->n_skips != skip_count(c))
        return sd_set_error(ctx, SD_ERR_INVALID, "ControlNet gives %d skip residuals, the model has %d skips",
                            control->n_skips, skip_count(c));
    if (control && control->n_inputs && control->n_inputs != skip_count(c))
        return sd_set_error(ctx, SD_ERR_INVALID, "T2I-Adapter features for %d input blocks, the model has %d",
                            control->n_inputs, skip_count(c));
    return SD_OK;
}

/* The output blocks from hs (freed as they are consumed) and the middle output h. */
static sd_status decoder(sd_unet *u, sd_dtensor **hs, int n_hs, sd_dtensor **h, const sd_dtensor *emb,
                         const sd_dtensor *context, const sd_unet_control *control)
{
    const sd_unet_config *c = &u->config;
    char name[64];
    sd_status s = SD_OK;
    int block = 0;
    for (int level = c->n_levels - 1; !s && level >= 0; level--)
        for (int i = 0; !s && i <= c->num_res_blocks; i++, block++) {
            sd_dtensor *skip = hs[--n_hs], *t = NULL;
            hs[n_hs] = NULL;
            snprintf(name, sizeof name, "skip %d", n_hs);
            s = add_control(u, &skip, control && control->n_skips ? control->skips[n_hs] : NULL, name);
            if (!s)
                s = advance(sd_op_concat(u->cl, *h, skip, 1, &t), h, &t);
            sd_dtensor_free(skip);
            snprintf(name, sizeof name, "output_blocks.%d.0", block);
            if (!s)
                s = advance(res_block(u, name, *h, emb, &t), h, &t);
            int sub = 1;
            snprintf(name, sizeof name, "output_blocks.%d.1", block);
            if (!s && c->attention[level]) {
                u->site.part = SD_UNET_OUTPUT, u->site.block = block;
                s = advance(spatial_transformer(u, name, *h, c->depth[level], context, &t), h, &t);
                sub = 2;
            }
            if (!s && level > 0 && i == c->num_res_blocks) {
                /* to the next skip's size: twice this one, or one less when that skip was odd */
                const sd_dtensor *next = hs[n_hs - 1];
                s = advance(sd_op_upsample_nearest(u->cl, *h, next->shape[2], next->shape[3], &t), h, &t);
                snprintf(name, sizeof name, "output_blocks.%d.%d.conv", block, sub);
                if (!s)
                    s = advance(conv(u, name, *h, 1, &t), h, &t);
            }
        }
    return s;
}

/* hs[k] += the control's input feature k (a T2I-Adapter's), if any. */
static sd_status add_input(sd_unet *u, sd_dtensor **hs, int k, const sd_unet_control *control)
{
    if (!control || k >= control->n_inputs || !control->inputs[k])
        return SD_OK;
    char name[48];
    snprintf(name, sizeof name, "input block %d", k);
    return add_control(u, &hs[k], control->inputs[k], name);
}

/* The encoder half: the time embedding *emb, every skip connection into hs (n_skips tensors)
 * and the middle block's output *h. hint (NULL: none) is added to the stem conv's output as a
 * ControlNet does with its encoded hint; control's input features (NULL: none) to the blocks'
 * outputs. On failure the caller still frees hs, *emb and *h. */
static sd_status encode(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                        const sd_dtensor *y, const sd_dtensor *hint, const sd_unet_control *control, sd_dtensor **hs,
                        sd_dtensor **emb, sd_dtensor **h)
{
    const sd_unet_config *c = &u->config;
    sd_dtensor *t = NULL;
    char name[64];
    int n_hs = 0;
    sd_status s = time_embedding(u, timesteps, x->shape[0], y, emb);
    if (!s)
        s = conv(u, "input_blocks.0.0", x, 1, &hs[n_hs++]);
    if (!s && hint)
        s = add_control(u, &hs[0], hint, "the encoded hint");
    if (!s)
        s = add_input(u, hs, 0, control);
    int block = 1;
    for (int level = 0; !s && level < c->n_levels; level++) {
        for (int i = 0; !s && i < c->num_res_blocks; i++, block++) {
            snprintf(name, sizeof name, "input_blocks.%d.0", block);
            s = res_block(u, name, hs[n_hs - 1], *emb, h);
            snprintf(name, sizeof name, "input_blocks.%d.1", block);
            u->site.part = SD_UNET_INPUT, u->site.block = block;
            if (!s && c->attention[level])
                s = advance(spatial_transformer(u, name, *h, c->depth[level], context, &t), h, &t);
            if (!s)
                hs[n_hs++] = *h, *h = NULL;
            if (!s)
                s = add_input(u, hs, n_hs - 1, control);
        }
        if (!s && level + 1 < c->n_levels) {
            snprintf(name, sizeof name, "input_blocks.%d.0.op", block++);
            s = conv(u, name, hs[n_hs - 1], 2, &hs[n_hs]);
            if (!s)
                n_hs++;
            if (!s)
                s = add_input(u, hs, n_hs - 1, control);
        }
    }
    if (!s)
        s = res_block(u, "middle_block.0", hs[n_hs - 1], *emb, h);
    u->site.part = SD_UNET_MIDDLE, u->site.block = 1;
    if (!s)
        s = advance(spatial_transformer(u, "middle_block.1", *h, c->middle_depth, context, &t), h, &t);
    if (!s)
        s = advance(res_block(u, "middle_block.2", *h, *emb, &t), h, &t);
    return s;
}

/* Sets up the attn2 hook (NULL: none) and the site counters for a forward on x. */
static void start_sites(sd_unet *u, const sd_unet_attn2_hook *hook, const sd_dtensor *x)
{
    const sd_unet_config *c = &u->config;
    u->hook = hook;
    u->n_input_attn = u->n_output_attn = u->seen_input = u->seen_output = 0;
    u->site = (sd_unet_attn_site){.latent_h = x->shape[2], .latent_w = x->shape[3], .transformers = 1};
    for (int level = 0; level < c->n_levels; level++)
        if (c->attention[level]) {
            u->n_input_attn += c->num_res_blocks * c->depth[level];
            u->n_output_attn += (c->num_res_blocks + 1) * c->depth[level];
            u->site.transformers += 2 * c->num_res_blocks + 1;
        }
}

sd_status sd_unet_forward(sd_unet *u, const sd_dtensor *x, const float *timesteps,
                          const sd_dtensor *context, const sd_unet_control *control, sd_dtensor **out)
{
    return sd_unet_forward_adm(u, x, timesteps, context, NULL, control, out);
}

sd_status sd_unet_forward_adm(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                              const sd_dtensor *y, const sd_unet_control *control, sd_dtensor **out)
{
    *out = NULL;
    const sd_unet_config *c = &u->config;
    sd_status s = check_inputs(u, x, timesteps, context, y, control);
    if (s) {
        sd_error_prefix(u->cl->ctx, "unet");
        return s;
    }
    int n_skips = skip_count(c);
    sd_dtensor **hs = calloc((size_t)n_skips, sizeof *hs);
    sd_dtensor *emb = NULL, *h = NULL, *t = NULL;
    if (!hs)
        return sd_set_error(u->cl->ctx, SD_ERR_NOMEM, "out of memory");
    start_sites(u, control ? control->attn2 : NULL, x);
    s = encode(u, x, timesteps, context, y, NULL, control, hs, &emb, &h);
    if (!s && control)
        s = add_control(u, &h, control->middle, "the middle block");
    if (!s)
        s = decoder(u, hs, n_skips, &h, emb, context, control);
    u->hook = NULL;
    if (!s)
        s = advance(group_norm(u, "out.0", h, UNET_GN_EPS, true, &t), &h, &t);
    if (!s)
        s = conv(u, "out.2", h, 1, out);
    for (int i = 0; i < n_skips; i++)
        sd_dtensor_free(hs[i]);
    free(hs);
    sd_dtensor_free(emb);
    sd_dtensor_free(h);
    if (s)
        sd_error_prefix(u->cl->ctx, "unet");
    return s;
}

int sd_unet_skip_count(const sd_unet *u)
{
    return skip_count(&u->config);
}

sd_status sd_unet_encode(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                         const sd_dtensor *y, const sd_dtensor *hint, sd_dtensor **outs)
{
    const sd_unet_config *c = &u->config;
    int n_skips = skip_count(c);
    for (int i = 0; i <= n_skips; i++)
        outs[i] = NULL;
    sd_dtensor *emb = NULL;
    sd_status s = check_inputs(u, x, timesteps, context, y, NULL);
    if (!s)
        s = encode(u, x, timesteps, context, y, hint, NULL, outs, &emb, &outs[n_skips]);
    sd_dtensor_free(emb);
    if (s) {
        for (int i = 0; i <= n_skips; i++)
            sd_dtensor_free(outs[i]), outs[i] = NULL;
        sd_error_prefix(u->cl->ctx, "unet");
    }
    return s;
}

uint64_t sd_unet_serial(const sd_unet *u)
{
    return sd_weights_serial(u->w);
}
