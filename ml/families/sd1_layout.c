/* SD1 and SDXL single-file layouts, presets, random-weight checkpoints and family stubs. See
 * sd1_layout.h. */
#include "ml/families/sd1_layout.h"
#include "core/half.h"
#include "ml/formats/gguf.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_layout_free(sd_layout *layout)
{
    free(layout->entries);
    memset(layout, 0, sizeof *layout);
}

/* Builder state: the output list, the name prefix, and the first failure. */
typedef struct builder {
    sd_layout *out;
    const char *prefix;
    bool nomem;
} builder;

static void add(builder *b, sd_param_kind kind, int64_t fan_in, int ndim, const int64_t *shape, const char *fmt,
                ...) __attribute__((format(printf, 6, 7)));

static void add(builder *b, sd_param_kind kind, int64_t fan_in, int ndim, const int64_t *shape, const char *fmt,
                ...)
{
    if (b->nomem)
        return;
    sd_layout *l = b->out;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        sd_layout_entry *e = realloc(l->entries, cap * sizeof *e);
        if (!e) {
            b->nomem = true;
            return;
        }
        l->entries = e;
        l->cap = cap;
    }
    sd_layout_entry *e = &l->entries[l->n++];
    memset(e, 0, sizeof *e);
    int k = snprintf(e->name, sizeof e->name, "%s", b->prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name + k, sizeof e->name - (size_t)k, fmt, ap);
    va_end(ap);
    e->kind = kind;
    e->fan_in = fan_in;
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* A Linear (ndim 2) or conv (ndim 4, k x k) weight plus optional bias named <p>.weight / <p>.bias. */
static void linear(builder *b, const char *p, int64_t out, int64_t in, bool bias)
{
    add(b, SD_PARAM_WEIGHT, in, 2, SHAPE(out, in), "%s.weight", p);
    if (bias)
        add(b, SD_PARAM_BIAS, in, 1, SHAPE(out), "%s.bias", p);
}

static void conv(builder *b, const char *p, int64_t out, int64_t in, int64_t k)
{
    add(b, SD_PARAM_WEIGHT, in * k * k, 4, SHAPE(out, in, k, k), "%s.weight", p);
    add(b, SD_PARAM_BIAS, in * k * k, 1, SHAPE(out), "%s.bias", p);
}

/* 1x1 projection stored either as a conv or as a Linear. */
static void proj(builder *b, const char *p, int64_t out, int64_t in, bool as_linear)
{
    if (as_linear)
        linear(b, p, out, in, true);
    else
        conv(b, p, out, in, 1);
}

static void norm(builder *b, const char *p, int64_t c)
{
    add(b, SD_PARAM_NORM_WEIGHT, 0, 1, SHAPE(c), "%s.weight", p);
    add(b, SD_PARAM_NORM_BIAS, 0, 1, SHAPE(c), "%s.bias", p);
}

static void unet_resblock(builder *b, const char *p, int64_t in, int64_t out, int64_t temb)
{
    char n[96];
    snprintf(n, sizeof n, "%s.in_layers.0", p), norm(b, n, in);
    snprintf(n, sizeof n, "%s.in_layers.2", p), conv(b, n, out, in, 3);
    snprintf(n, sizeof n, "%s.emb_layers.1", p), linear(b, n, out, temb, true);
    snprintf(n, sizeof n, "%s.out_layers.0", p), norm(b, n, out);
    snprintf(n, sizeof n, "%s.out_layers.3", p), conv(b, n, out, out, 3);
    if (in != out)
        snprintf(n, sizeof n, "%s.skip_connection", p), conv(b, n, out, in, 1);
}

static void unet_transformer(builder *b, const char *p, int64_t c, int depth, const sd_unet_config *cfg)
{
    char n[128];
    snprintf(n, sizeof n, "%s.norm", p), norm(b, n, c);
    snprintf(n, sizeof n, "%s.proj_in", p), proj(b, n, c, c, cfg->linear_proj);
    for (int d = 0; d < depth; d++) {
        static const char *const attn[2] = {"attn1", "attn2"};
        for (int a = 0; a < 2; a++) {
            int64_t kv = a ? cfg->context_dim : c;
            snprintf(n, sizeof n, "%s.transformer_blocks.%d.%s.to_q", p, d, attn[a]), linear(b, n, c, c, false);
            snprintf(n, sizeof n, "%s.transformer_blocks.%d.%s.to_k", p, d, attn[a]), linear(b, n, c, kv, false);
            snprintf(n, sizeof n, "%s.transformer_blocks.%d.%s.to_v", p, d, attn[a]), linear(b, n, c, kv, false);
            snprintf(n, sizeof n, "%s.transformer_blocks.%d.%s.to_out.0", p, d, attn[a]), linear(b, n, c, c, true);
        }
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.ff.net.0.proj", p, d), linear(b, n, 8 * c, c, true);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.ff.net.2", p, d), linear(b, n, c, 4 * c, true);
        for (int k = 1; k <= 3; k++)
            snprintf(n, sizeof n, "%s.transformer_blocks.%d.norm%d", p, d, k), norm(b, n, c);
    }
    snprintf(n, sizeof n, "%s.proj_out", p), proj(b, n, c, c, cfg->linear_proj);
}

static sd_status finish(sd_context *ctx, builder *b)
{
    return b->nomem ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory building a tensor layout") : SD_OK;
}

static bool levels_ok(int n_levels, const int *mult)
{
    if (n_levels < 1 || n_levels > SD_MAX_LEVELS)
        return false;
    for (int l = 0; l < n_levels; l++)
        if (mult[l] < 1 || mult[l] > 64)
            return false;
    return true;
}

/* Transformer depths: 1..64 where a level has attention (0 elsewhere), middle 1..64. */
static bool depths_ok(const sd_unet_config *cfg)
{
    for (int l = 0; l < cfg->n_levels; l++)
        if (cfg->attention[l] ? cfg->depth[l] < 1 || cfg->depth[l] > 64 : cfg->depth[l] != 0)
            return false;
    return cfg->middle_depth >= 1 && cfg->middle_depth <= 64;
}

sd_status sd_layout_unet(sd_context *ctx, const sd_unet_config *cfg, const char *prefix, sd_layout *out)
{
    if (!levels_ok(cfg->n_levels, cfg->channel_mult) || cfg->model_channels < 1 || cfg->num_res_blocks < 1 ||
        cfg->num_res_blocks > 16 || !depths_ok(cfg) || cfg->in_channels < 1 || cfg->out_channels < 1 ||
        cfg->context_dim < 1 || cfg->time_embed_dim < 1 || cfg->adm_channels < 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "UNet configuration out of range");
    builder b = {out, prefix, false};
    int64_t mc = cfg->model_channels, temb = cfg->time_embed_dim;
    linear(&b, "time_embed.0", temb, mc, true);
    linear(&b, "time_embed.2", temb, temb, true);
    if (cfg->adm_channels) { /* label_emb: Linear, SiLU, Linear */
        linear(&b, "label_emb.0.0", temb, cfg->adm_channels, true);
        linear(&b, "label_emb.0.2", temb, temb, true);
    }
    conv(&b, "input_blocks.0.0", mc, cfg->in_channels, 3);
    int64_t skips[SD_MAX_LEVELS * 17 + 1];
    int n_skips = 0, idx = 1;
    int64_t ch = mc;
    char n[64];
    skips[n_skips++] = ch;
    for (int l = 0; l < cfg->n_levels; l++) {
        for (int r = 0; r < cfg->num_res_blocks; r++, idx++) {
            int64_t oc = mc * cfg->channel_mult[l];
            snprintf(n, sizeof n, "input_blocks.%d.0", idx), unet_resblock(&b, n, ch, oc, temb);
            ch = oc;
            if (cfg->attention[l])
                snprintf(n, sizeof n, "input_blocks.%d.1", idx), unet_transformer(&b, n, ch, cfg->depth[l], cfg);
            skips[n_skips++] = ch;
        }
        if (l != cfg->n_levels - 1) {
            snprintf(n, sizeof n, "input_blocks.%d.0.op", idx++), conv(&b, n, ch, ch, 3);
            skips[n_skips++] = ch;
        }
    }
    unet_resblock(&b, "middle_block.0", ch, ch, temb);
    unet_transformer(&b, "middle_block.1", ch, cfg->middle_depth, cfg);
    unet_resblock(&b, "middle_block.2", ch, ch, temb);
    idx = 0;
    for (int l = cfg->n_levels - 1; l >= 0; l--) {
        for (int r = 0; r <= cfg->num_res_blocks; r++, idx++) {
            int64_t oc = mc * cfg->channel_mult[l];
            snprintf(n, sizeof n, "output_blocks.%d.0", idx), unet_resblock(&b, n, ch + skips[--n_skips], oc, temb);
            ch = oc;
            int j = 1;
            if (cfg->attention[l])
                snprintf(n, sizeof n, "output_blocks.%d.%d", idx, j++),
                    unet_transformer(&b, n, ch, cfg->depth[l], cfg);
            if (l != 0 && r == cfg->num_res_blocks)
                snprintf(n, sizeof n, "output_blocks.%d.%d.conv", idx, j), conv(&b, n, ch, ch, 3);
        }
    }
    norm(&b, "out.0", ch);
    conv(&b, "out.2", cfg->out_channels, ch, 3);
    return finish(ctx, &b);
}

sd_status sd_layout_controlnet(sd_context *ctx, const sd_controlnet_config *cfg, const char *prefix,
                               sd_layout *out)
{
    const sd_unet_config *u = &cfg->unet;
    sd_layout unet = {0};
    sd_status status = sd_layout_unet(ctx, u, "", &unet);
    if (!status && (cfg->hint_channels < 1 || cfg->hint_widths[SD_CONTROLNET_HINT_CONVS - 1] != u->model_channels))
        status = sd_set_error(ctx, SD_ERR_INVALID, "ControlNet configuration out of range");
    for (int j = 0; !status && j < SD_CONTROLNET_HINT_CONVS; j++)
        if (cfg->hint_widths[j] < 1)
            status = sd_set_error(ctx, SD_ERR_INVALID, "ControlNet configuration out of range");
    if (status) {
        sd_layout_free(&unet);
        return status;
    }
    builder b = {out, prefix, false};
    for (size_t i = 0; i < unet.n; i++) { /* the encoder half: everything before the decoder */
        const sd_layout_entry *e = &unet.entries[i];
        if (strncmp(e->name, "output_blocks.", 14) != 0 && strncmp(e->name, "out.", 4) != 0)
            add(&b, e->kind, e->fan_in, e->ndim, e->shape, "%s", e->name);
    }
    sd_layout_free(&unet);
    char n[64];
    for (int j = 0; j < SD_CONTROLNET_HINT_CONVS; j++) {
        snprintf(n, sizeof n, "input_hint_block.%d", 2 * j);
        conv(&b, n, cfg->hint_widths[j], j ? cfg->hint_widths[j - 1] : cfg->hint_channels, 3);
    }
    int zero = 0;
    int64_t ch = u->model_channels;
    snprintf(n, sizeof n, "zero_convs.%d.0", zero++), conv(&b, n, ch, ch, 1);
    for (int l = 0; l < u->n_levels; l++) {
        ch = (int64_t)u->model_channels * u->channel_mult[l];
        for (int r = 0; r < u->num_res_blocks; r++)
            snprintf(n, sizeof n, "zero_convs.%d.0", zero++), conv(&b, n, ch, ch, 1);
        if (l != u->n_levels - 1)
            snprintf(n, sizeof n, "zero_convs.%d.0", zero++), conv(&b, n, ch, ch, 1);
    }
    conv(&b, "middle_block_out.0", ch, ch, 1);
    return finish(ctx, &b);
}

/* open_clip's transformer.resblocks.N (the text and image towers'): fused in_proj, ln_1/ln_2,
 * mlp.c_fc/c_proj. */
static void open_clip_resblocks(builder *b, int layers, int64_t w, int64_t intermediate)
{
    char n[96];
    for (int i = 0; i < layers; i++) {
        snprintf(n, sizeof n, "transformer.resblocks.%d.ln_1", i), norm(b, n, w);
        add(b, SD_PARAM_WEIGHT, w, 2, SHAPE(3 * w, w), "transformer.resblocks.%d.attn.in_proj_weight", i);
        add(b, SD_PARAM_BIAS, w, 1, SHAPE(3 * w), "transformer.resblocks.%d.attn.in_proj_bias", i);
        snprintf(n, sizeof n, "transformer.resblocks.%d.attn.out_proj", i), linear(b, n, w, w, true);
        snprintf(n, sizeof n, "transformer.resblocks.%d.ln_2", i), norm(b, n, w);
        snprintf(n, sizeof n, "transformer.resblocks.%d.mlp.c_fc", i), linear(b, n, intermediate, w, true);
        snprintf(n, sizeof n, "transformer.resblocks.%d.mlp.c_proj", i), linear(b, n, w, intermediate, true);
    }
}

/* The open_clip text tower (SDXL's conditioner.embedders.N.model.*): fused in_proj, ln_1/ln_2,
 * mlp.c_fc/c_proj, ln_final and text_projection [width, projection]. */
static void open_clip_layout(builder *b, const sd_clip_config *cfg)
{
    int64_t w = cfg->width;
    add(b, SD_PARAM_EMBEDDING, 0, 2, SHAPE(cfg->vocab, w), "token_embedding.weight");
    add(b, SD_PARAM_EMBEDDING, 0, 2, SHAPE(cfg->positions, w), "positional_embedding");
    open_clip_resblocks(b, cfg->layers, w, cfg->intermediate);
    norm(b, "ln_final", w);
    add(b, SD_PARAM_WEIGHT, w, 2, SHAPE(w, cfg->projection), "text_projection");
}

/* transformers' CLIP (and SigLIP) encoder layers encoder.layers.N.*: width w, MLP m. */
static void clip_encoder_layers(builder *b, int layers, int64_t w, int64_t m)
{
    char n[96];
    for (int i = 0; i < layers; i++) {
        static const char *const projs[4] = {"k_proj", "v_proj", "q_proj", "out_proj"};
        for (int k = 0; k < 4; k++)
            snprintf(n, sizeof n, "encoder.layers.%d.self_attn.%s", i, projs[k]), linear(b, n, w, w, true);
        snprintf(n, sizeof n, "encoder.layers.%d.layer_norm1", i), norm(b, n, w);
        snprintf(n, sizeof n, "encoder.layers.%d.mlp.fc1", i), linear(b, n, m, w, true);
        snprintf(n, sizeof n, "encoder.layers.%d.mlp.fc2", i), linear(b, n, w, m, true);
        snprintf(n, sizeof n, "encoder.layers.%d.layer_norm2", i), norm(b, n, w);
    }
}

sd_status sd_layout_siglip(sd_context *ctx, const sd_siglip_shape *cfg, const char *prefix, sd_layout *out)
{
    if (cfg->width < 1 || cfg->layers < 2 || cfg->layers > 64 || cfg->intermediate < 1 || cfg->patch < 1 ||
        cfg->image_size < cfg->patch)
        return sd_set_error(ctx, SD_ERR_INVALID, "SigLIP configuration out of range");
    builder b = {out, prefix, false};
    int64_t w = cfg->width, p = cfg->patch, g = cfg->image_size / cfg->patch;
    add(&b, SD_PARAM_WEIGHT, 3 * p * p, 4, SHAPE(w, 3, p, p), "embeddings.patch_embedding.weight");
    add(&b, SD_PARAM_BIAS, 3 * p * p, 1, SHAPE(w), "embeddings.patch_embedding.bias");
    add(&b, SD_PARAM_EMBEDDING, 0, 2, SHAPE(g * g, w), "embeddings.position_embedding.weight");
    clip_encoder_layers(&b, cfg->layers, w, cfg->intermediate);
    norm(&b, "post_layernorm", w);
    /* the attention-pooling head (pooler_output; ComfyUI does not use it) */
    add(&b, SD_PARAM_EMBEDDING, 0, 3, SHAPE(1, 1, w), "head.probe");
    add(&b, SD_PARAM_WEIGHT, w, 2, SHAPE(3 * w, w), "head.attention.in_proj_weight");
    add(&b, SD_PARAM_BIAS, w, 1, SHAPE(3 * w), "head.attention.in_proj_bias");
    linear(&b, "head.attention.out_proj", w, w, true);
    norm(&b, "head.layernorm", w);
    linear(&b, "head.mlp.fc1", cfg->intermediate, w, true);
    linear(&b, "head.mlp.fc2", w, cfg->intermediate, true);
    return finish(ctx, &b);
}

sd_status sd_layout_redux(sd_context *ctx, int in_dim, int out_dim, sd_layout *out)
{
    if (in_dim < 1 || out_dim < 1 || out_dim > 1 << 16)
        return sd_set_error(ctx, SD_ERR_INVALID, "Redux configuration out of range");
    builder b = {out, "", false};
    linear(&b, "redux_up", 3 * (int64_t)out_dim, in_dim, true);
    linear(&b, "redux_down", out_dim, 3 * (int64_t)out_dim, true);
    return finish(ctx, &b);
}

sd_status sd_layout_clip(sd_context *ctx, const sd_clip_config *cfg, const char *prefix, sd_layout *out)
{
    if (cfg->width < 1 || cfg->layers < 1 || cfg->layers > 64 || cfg->intermediate < 1 || cfg->vocab < 1 ||
        cfg->positions < 1 || (cfg->open_clip && cfg->projection < 1))
        return sd_set_error(ctx, SD_ERR_INVALID, "CLIP configuration out of range");
    builder b = {out, prefix, false};
    if (cfg->open_clip) {
        open_clip_layout(&b, cfg);
        return finish(ctx, &b);
    }
    int64_t w = cfg->width;
    if (cfg->has_position_ids)
        add(&b, SD_PARAM_POSITION_IDS, 0, 2, SHAPE(1, cfg->positions), "embeddings.position_ids");
    add(&b, SD_PARAM_EMBEDDING, 0, 2, SHAPE(cfg->vocab, w), "embeddings.token_embedding.weight");
    add(&b, SD_PARAM_EMBEDDING, 0, 2, SHAPE(cfg->positions, w), "embeddings.position_embedding.weight");
    clip_encoder_layers(&b, cfg->layers, w, cfg->intermediate);
    norm(&b, "final_layer_norm", w);
    if (cfg->projection) /* CLIPTextModelWithProjection's Linear, beside text_model.* in its files */
        linear(&b, "text_projection", cfg->projection, w, false);
    return finish(ctx, &b);
}

sd_status sd_layout_clip_vision(sd_context *ctx, const sd_clip_vision_config *cfg, sd_layout *out)
{
    if (cfg->width < 1 || cfg->layers < 1 || cfg->layers > 64 || cfg->intermediate < 1 || cfg->patch < 1 ||
        cfg->image_size < cfg->patch || cfg->projection < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "CLIP vision configuration out of range");
    builder b = {out, cfg->prefix, false};
    int64_t w = cfg->width, p = cfg->patch;
    add(&b, SD_PARAM_WEIGHT, 3 * p * p, 4, SHAPE(w, 3, p, p), "conv1.weight");
    add(&b, SD_PARAM_EMBEDDING, 0, 1, SHAPE(w), "class_embedding");
    add(&b, SD_PARAM_EMBEDDING, 0, 2, SHAPE((int64_t)sd_clip_vision_tokens(cfg), w), "positional_embedding");
    norm(&b, "ln_pre", w);
    open_clip_resblocks(&b, cfg->layers, w, cfg->intermediate);
    norm(&b, "ln_post", w);
    add(&b, SD_PARAM_WEIGHT, w, 2, SHAPE(w, cfg->projection), "proj");
    return finish(ctx, &b);
}

static void vae_resblock(builder *b, const char *p, int64_t in, int64_t out)
{
    char n[96];
    snprintf(n, sizeof n, "%s.norm1", p), norm(b, n, in);
    snprintf(n, sizeof n, "%s.conv1", p), conv(b, n, out, in, 3);
    snprintf(n, sizeof n, "%s.norm2", p), norm(b, n, out);
    snprintf(n, sizeof n, "%s.conv2", p), conv(b, n, out, out, 3);
    if (in != out)
        snprintf(n, sizeof n, "%s.nin_shortcut", p), conv(b, n, out, in, 1);
}

static void vae_mid(builder *b, const char *p, int64_t c, bool attn_linear)
{
    char n[96];
    snprintf(n, sizeof n, "%s.mid.block_1", p), vae_resblock(b, n, c, c);
    snprintf(n, sizeof n, "%s.mid.attn_1.norm", p), norm(b, n, c);
    static const char *const names[4] = {"q", "k", "v", "proj_out"};
    for (int i = 0; i < 4; i++)
        snprintf(n, sizeof n, "%s.mid.attn_1.%s", p, names[i]), proj(b, n, c, c, attn_linear);
    snprintf(n, sizeof n, "%s.mid.block_2", p), vae_resblock(b, n, c, c);
}

/* A FLUX MLPEmbedder <p>.in_layer [h, in], <p>.out_layer [h, h]. */
static void flux_mlp_embedder(builder *b, const char *p, int64_t in, int64_t h)
{
    char n[64];
    snprintf(n, sizeof n, "%s.in_layer", p), linear(b, n, h, in, true);
    snprintf(n, sizeof n, "%s.out_layer", p), linear(b, n, h, h, true);
}

/* RMSNorm scales of a FLUX QKNorm <p>.query_norm / key_norm [d]. */
static void flux_qk_norm(builder *b, const char *p, int64_t d)
{
    add(b, SD_PARAM_NORM_WEIGHT, 0, 1, SHAPE(d), "%s.query_norm.scale", p);
    add(b, SD_PARAM_NORM_WEIGHT, 0, 1, SHAPE(d), "%s.key_norm.scale", p);
}

sd_status sd_layout_flux(sd_context *ctx, const sd_flux_config *cfg, const char *prefix, sd_layout *out)
{
    int64_t h = cfg->hidden, m = cfg->mlp_hidden, d = cfg->head_dim;
    if (h < 1 || d < 1 || h % d || m < 1 || cfg->in_channels < 1 || cfg->out_channels < 1 || cfg->context_dim < 1 ||
        cfg->vec_dim < 1 || cfg->depth < 0 || cfg->depth_single < 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "FLUX configuration out of range");
    builder b = {out, prefix, false};
    char n[96];
    linear(&b, "img_in", h, 4 * (int64_t)cfg->in_channels, true);
    linear(&b, "txt_in", h, cfg->context_dim, true);
    flux_mlp_embedder(&b, "time_in", 256, h);
    flux_mlp_embedder(&b, "vector_in", cfg->vec_dim, h);
    if (cfg->guidance)
        flux_mlp_embedder(&b, "guidance_in", 256, h);
    for (int i = 0; i < cfg->depth; i++)
        for (int s = 0; s < 2; s++) {
            const char *side = s ? "txt" : "img";
            snprintf(n, sizeof n, "double_blocks.%d.%s_mod.lin", i, side), linear(&b, n, 6 * h, h, true);
            snprintf(n, sizeof n, "double_blocks.%d.%s_attn.qkv", i, side), linear(&b, n, 3 * h, h, true);
            snprintf(n, sizeof n, "double_blocks.%d.%s_attn.norm", i, side), flux_qk_norm(&b, n, d);
            snprintf(n, sizeof n, "double_blocks.%d.%s_attn.proj", i, side), linear(&b, n, h, h, true);
            snprintf(n, sizeof n, "double_blocks.%d.%s_mlp.0", i, side), linear(&b, n, m, h, true);
            snprintf(n, sizeof n, "double_blocks.%d.%s_mlp.2", i, side), linear(&b, n, h, m, true);
        }
    for (int i = 0; i < cfg->depth_single; i++) {
        snprintf(n, sizeof n, "single_blocks.%d.linear1", i), linear(&b, n, 3 * h + m, h, true);
        snprintf(n, sizeof n, "single_blocks.%d.linear2", i), linear(&b, n, h, h + m, true);
        snprintf(n, sizeof n, "single_blocks.%d.norm", i), flux_qk_norm(&b, n, d);
        snprintf(n, sizeof n, "single_blocks.%d.modulation.lin", i), linear(&b, n, 3 * h, h, true);
    }
    linear(&b, "final_layer.linear", 4 * (int64_t)cfg->out_channels, h, true);
    linear(&b, "final_layer.adaLN_modulation.1", 2 * h, h, true);
    return b.nomem ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
}

sd_status sd_layout_vae(sd_context *ctx, const sd_vae_config *cfg, const char *prefix, sd_layout *out)
{
    if (!levels_ok(cfg->n_levels, cfg->ch_mult) || cfg->ch < 1 || cfg->num_res_blocks < 1 ||
        cfg->num_res_blocks > 16 || cfg->z_channels < 1 || cfg->embed_dim < 1 || cfg->in_channels < 1 ||
        cfg->out_channels < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "VAE configuration out of range");
    builder b = {out, prefix, false};
    int64_t ch = cfg->ch, z = cfg->z_channels, e = cfg->embed_dim;
    char n[64];
    conv(&b, "encoder.conv_in", ch, cfg->in_channels, 3);
    int64_t bin = ch;
    for (int l = 0; l < cfg->n_levels; l++) {
        int64_t bout = ch * cfg->ch_mult[l];
        for (int r = 0; r < cfg->num_res_blocks; r++) {
            snprintf(n, sizeof n, "encoder.down.%d.block.%d", l, r), vae_resblock(&b, n, bin, bout);
            bin = bout;
        }
        if (l != cfg->n_levels - 1)
            snprintf(n, sizeof n, "encoder.down.%d.downsample.conv", l), conv(&b, n, bin, bin, 3);
    }
    vae_mid(&b, "encoder", bin, cfg->attn_linear);
    norm(&b, "encoder.norm_out", bin);
    conv(&b, "encoder.conv_out", 2 * z, bin, 3);
    if (!cfg->no_quant_conv) {
        conv(&b, "quant_conv", 2 * e, 2 * z, 1);
        conv(&b, "post_quant_conv", z, e, 1);
    }
    bin = ch * cfg->ch_mult[cfg->n_levels - 1];
    conv(&b, "decoder.conv_in", bin, z, 3);
    vae_mid(&b, "decoder", bin, cfg->attn_linear);
    for (int l = cfg->n_levels - 1; l >= 0; l--) {
        int64_t bout = ch * cfg->ch_mult[l];
        for (int r = 0; r <= cfg->num_res_blocks; r++) {
            snprintf(n, sizeof n, "decoder.up.%d.block.%d", l, r), vae_resblock(&b, n, bin, bout);
            bin = bout;
        }
        if (l != 0)
            snprintf(n, sizeof n, "decoder.up.%d.upsample.conv", l), conv(&b, n, bin, bin, 3);
    }
    norm(&b, "decoder.norm_out", bin);
    conv(&b, "decoder.conv_out", cfg->out_channels, bin, 3);
    return finish(ctx, &b);
}

/* ---- presets ---- */

/* The SDXL base and refiner presets: full shapes (sd_xl_base_1.0, sd_xl_refiner_1.0) and tiny
 * ones that differ from SD1's tiny preset and from each other in levels, depths per level, res
 * blocks, widths, head counts and context width. */
static bool sdxl_preset(const char *name, sd_checkpoint_config *cfg)
{
    sd_unet_config *u = &cfg->unet;
    sd_clip_config *l = &cfg->clip, *g = &cfg->clip2;
    sd_clip_config bigg = {.open_clip = true, .width = 1280, .layers = 32, .intermediate = 5120, .vocab = 49408,
                           .positions = 77, .projection = 1280};
    if (strcmp(name, "sdxl") == 0) {
        *u = (sd_unet_config){.model_channels = 320, .n_levels = 3, .channel_mult = {1, 2, 4}, .num_res_blocks = 2,
                              .attention = {0, 1, 1}, .depth = {0, 2, 10}, .middle_depth = 10,
                              .context_dim = 2048, .time_embed_dim = 1280, .adm_channels = 2816};
        *l = (sd_clip_config){.width = 768, .layers = 12, .intermediate = 3072, .vocab = 49408, .positions = 77,
                              .has_position_ids = true};
        *g = bigg;
    } else if (strcmp(name, "sdxl-tiny") == 0) {
        *u = (sd_unet_config){.model_channels = 64, .n_levels = 4, .channel_mult = {1, 1, 2, 2}, .num_res_blocks = 2,
                              .attention = {0, 1, 1, 1}, .depth = {0, 2, 1, 2}, .middle_depth = 2,
                              .context_dim = 320, .time_embed_dim = 256, .adm_channels = 160 + 6 * 256};
        *l = (sd_clip_config){.width = 128, .layers = 3, .intermediate = 512, .vocab = 49408, .positions = 77,
                              .has_position_ids = true};
        *g = (sd_clip_config){.open_clip = true, .width = 192, .layers = 4, .intermediate = 768, .vocab = 49408,
                              .positions = 77, .projection = 160};
    } else if (strcmp(name, "sdxl-refiner") == 0) {
        cfg->family = SD_FAMILY_SDXL_REFINER;
        *u = (sd_unet_config){.model_channels = 384, .n_levels = 4, .channel_mult = {1, 2, 4, 4},
                              .num_res_blocks = 2, .attention = {0, 1, 1, 0}, .depth = {0, 4, 4, 0},
                              .middle_depth = 4, .context_dim = 1280, .time_embed_dim = 1536,
                              .adm_channels = 2560};
        *l = bigg;
    } else if (strcmp(name, "sdxl-refiner-tiny") == 0) {
        cfg->family = SD_FAMILY_SDXL_REFINER;
        *u = (sd_unet_config){.model_channels = 64, .n_levels = 5, .channel_mult = {1, 2, 1, 2, 1},
                              .num_res_blocks = 2, .attention = {0, 1, 1, 1, 0}, .depth = {0, 1, 3, 1, 0},
                              .middle_depth = 3, .context_dim = 128, .time_embed_dim = 256,
                              .adm_channels = 96 + 5 * 256};
        *l = (sd_clip_config){.open_clip = true, .width = 128, .layers = 3, .intermediate = 512, .vocab = 49408,
                              .positions = 77, .projection = 96};
    } else {
        return false;
    }
    u->in_channels = u->out_channels = 4;
    u->linear_proj = true;
    const sd_family_desc *f = sd_family_get(cfg->family);
    cfg->clip_prefix = f->text_encoders[0].prefix;
    cfg->clip2_prefix = f->n_text_encoders > 1 ? f->text_encoders[1].prefix : NULL;
    return true;
}

/* The SD2.x presets: full shapes (v2-1_512 / v2-1_768: the two differ only in their weights) and
 * tiny ones unlike SD1's and SDXL's in levels, res blocks, depths per level, widths, head counts
 * and context width; the tiny UNet has 12 output blocks with attention in the last, so that
 * output_blocks.11.1 (where ComfyUI tells 768-v files from 512-base ones) exists. "-v" presets are
 * v-prediction: the writer gives that block's norm1.bias a spread above ComfyUI's threshold. */
static bool sd2_preset(const char *name, sd_checkpoint_config *cfg)
{
    sd_unet_config *u = &cfg->unet;
    sd_clip_config *c = &cfg->clip;
    if (strcmp(name, "sd2") == 0 || strcmp(name, "sd2-v") == 0) {
        *u = (sd_unet_config){.model_channels = 320, .n_levels = 4, .channel_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                              .attention = {1, 1, 1, 0}, .depth = {1, 1, 1, 0}, .middle_depth = 1,
                              .context_dim = 1024, .time_embed_dim = 1280};
        *c = (sd_clip_config){.open_clip = true, .width = 1024, .layers = 24, .intermediate = 4096, .vocab = 49408,
                              .positions = 77, .projection = 1024};
    } else if (strcmp(name, "sd2-tiny") == 0 || strcmp(name, "sd2-v-tiny") == 0) {
        *u = (sd_unet_config){.model_channels = 128, .n_levels = 3, .channel_mult = {1, 1, 1}, .num_res_blocks = 3,
                              .attention = {1, 0, 0}, .depth = {2, 0, 0}, .middle_depth = 3,
                              .context_dim = 256, .time_embed_dim = 512};
        *c = (sd_clip_config){.open_clip = true, .width = 256, .layers = 5, .intermediate = 640, .vocab = 49408,
                              .positions = 77, .projection = 192};
    } else {
        return false;
    }
    cfg->family = SD_FAMILY_SD2;
    u->in_channels = u->out_channels = 4;
    u->linear_proj = true;
    cfg->clip_prefix = sd_family_get(SD_FAMILY_SD2)->text_encoders[0].prefix;
    return true;
}

/* The SD2 unCLIP presets: sd21-unclip-h / -l (SD2's UNet and OpenCLIP-H with an ADM input of
 * twice the image embeddings' width; the ViT-H/14 or ViT-L/14 tower at embedder.model.visual.) and
 * a tiny one unlike the other tiny presets (its UNet has 12 output blocks with attention in the
 * last, as sd2-tiny's, so that it is written as v-prediction the way ComfyUI tells it). */
static bool sd2_unclip_preset(const char *name, sd_checkpoint_config *cfg)
{
    sd_unet_config *u = &cfg->unet;
    sd_clip_vision_config *v = &cfg->vision;
    if (strcmp(name, "sd2-unclip-h") == 0 || strcmp(name, "sd2-unclip-l") == 0) {
        bool h = name[11] == 'h';
        if (!sd2_preset("sd2", cfg))
            return false;
        *v = h ? (sd_clip_vision_config){.width = 1280, .layers = 32, .intermediate = 5120, .patch = 14,
                                         .image_size = 224, .projection = 1024, .heads = 16, .gelu = true}
               : (sd_clip_vision_config){.width = 1024, .layers = 24, .intermediate = 4096, .patch = 14,
                                         .image_size = 224, .projection = 768, .heads = 16};
    } else if (strcmp(name, "sd2-unclip-tiny") == 0) {
        *u = (sd_unet_config){.model_channels = 64, .n_levels = 3, .channel_mult = {1, 2, 2}, .num_res_blocks = 3,
                              .attention = {1, 1, 0}, .depth = {1, 2, 0}, .middle_depth = 1,
                              .context_dim = 192, .time_embed_dim = 256};
        cfg->clip = (sd_clip_config){.open_clip = true, .width = 192, .layers = 3, .intermediate = 384,
                                     .vocab = 49408, .positions = 77, .projection = 128};
        *v = (sd_clip_vision_config){.width = 128, .layers = 2, .intermediate = 256, .patch = 8, .image_size = 32,
                                     .projection = 96, .heads = 2};
    } else {
        return false;
    }
    const sd_family_desc *f = sd_family_get(SD_FAMILY_SD2_UNCLIP);
    cfg->family = f->id;
    u->in_channels = u->out_channels = 4;
    u->linear_proj = true;
    u->adm_channels = 2 * v->projection;
    cfg->clip_prefix = f->text_encoders[0].prefix;
    cfg->has_vision = true;
    v->open_clip = true;
    snprintf(v->prefix, sizeof v->prefix, "%s", f->vision_prefix);
    cfg->schedule.prediction = SD_PREDICT_V;
    return true;
}

/* flux-schnell-tiny, flux-dev-tiny: ComfyUI's all-in-one layout (model.diffusion_model., vae.) at
 * the size of tests/reference/make_flux_goldens.py (width 64 = 2 heads of 32, 2 + 2 blocks), with
 * the context and pooled widths of the tiny text encoders (T5 32, CLIP-L 64) and a 16-channel VAE
 * without quant convs; no text encoders (their loaders read separate files). flux-schnell,
 * flux-dev: the 12B shapes of flux1-schnell / flux1-dev (3072 wide, 24 heads of 128, MLP 12288,
 * 19 + 38 blocks, T5-XXL context 4096, CLIP-L pooled 768) and ae.safetensors' VAE. */
static bool flux_preset(const char *name, sd_checkpoint_config *cfg)
{
    bool dev = strncmp(name, "flux-dev", 8) == 0, tiny = strstr(name, "-tiny") != NULL;
    if (strcmp(name, "flux-dev-tiny") != 0 && strcmp(name, "flux-schnell-tiny") != 0 &&
        strcmp(name, "flux-dev") != 0 && strcmp(name, "flux-schnell") != 0)
        return false;
    cfg->family = SD_FAMILY_FLUX;
    cfg->has_clip = false;
    cfg->vae_prefix = "vae.";
    if (tiny)
        cfg->flux = (sd_flux_config){.in_channels = 16, .out_channels = 16, .hidden = 64, .head_dim = 32, .heads = 2,
                                     .axes_dim = {4, 14, 14}, .mlp_hidden = 256, .context_dim = 32, .vec_dim = 64,
                                     .depth = 2, .depth_single = 2, .guidance = dev};
    else
        cfg->flux = (sd_flux_config){.in_channels = 16, .out_channels = 16, .hidden = 3072, .head_dim = 128,
                                     .heads = 24, .axes_dim = {16, 56, 56}, .mlp_hidden = 12288, .context_dim = 4096,
                                     .vec_dim = 768, .depth = 19, .depth_single = 38, .guidance = dev};
    cfg->vae.z_channels = cfg->vae.embed_dim = 16;
    cfg->vae.no_quant_conv = true;
    return true;
}

bool sd_checkpoint_preset(const char *name, sd_checkpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->family = strncmp(name, "sdxl", 4) == 0 ? SD_FAMILY_SDXL : SD_FAMILY_SD1;
    cfg->has_unet = cfg->has_clip = cfg->has_vae = true;
    cfg->unet_prefix = SD1_UNET_PREFIX;
    cfg->clip_prefix = SD1_CLIP_PREFIX;
    cfg->vae_prefix = SD1_VAE_PREFIX;
    sd_unet_config *u = &cfg->unet;
    sd_clip_config *c = &cfg->clip;
    sd_vae_config *v = &cfg->vae;
    v->in_channels = v->out_channels = 3;
    v->z_channels = v->embed_dim = 4;
    bool full = strcmp(name, "sd15") == 0 || strcmp(name, "sdxl") == 0 || strcmp(name, "sdxl-refiner") == 0 ||
                strcmp(name, "sd2") == 0 || strcmp(name, "sd2-v") == 0 || strcmp(name, "sd2-unclip-h") == 0 ||
                strcmp(name, "sd2-unclip-l") == 0 || strcmp(name, "flux-schnell") == 0 || strcmp(name, "flux-dev") == 0;
    v->ch = full ? 128 : 32;
    v->n_levels = 4;
    memcpy(v->ch_mult, full ? (const int[]){1, 2, 4, 4} : (const int[]){1, 2, 2, 2}, 4 * sizeof(int));
    v->num_res_blocks = full ? 2 : 1;
    if (strcmp(name, "sd15") == 0) {
        *u = (sd_unet_config){.in_channels = 4, .out_channels = 4, .model_channels = 320, .n_levels = 4,
                              .channel_mult = {1, 2, 4, 4}, .num_res_blocks = 2, .attention = {1, 1, 1, 0},
                              .depth = {1, 1, 1, 0}, .middle_depth = 1, .context_dim = 768, .time_embed_dim = 1280};
        *c = (sd_clip_config){.width = 768, .layers = 12, .intermediate = 3072, .vocab = 49408, .positions = 77,
                              .has_position_ids = true};
    } else if (strcmp(name, "tiny") == 0) {
        *u = (sd_unet_config){.in_channels = 4, .out_channels = 4, .model_channels = 32, .n_levels = 3,
                              .channel_mult = {1, 2, 2}, .num_res_blocks = 1, .attention = {1, 1, 0},
                              .depth = {1, 1, 0}, .middle_depth = 1, .context_dim = 64, .time_embed_dim = 128};
        *c = (sd_clip_config){.width = 64, .layers = 2, .intermediate = 256, .vocab = 49408, .positions = 77,
                              .has_position_ids = true};
    } else if (!sdxl_preset(name, cfg) && !sd2_preset(name, cfg) && !sd2_unclip_preset(name, cfg) &&
               !flux_preset(name, cfg)) {
        return false;
    }
    sd_checkpoint_apply_family_rules(cfg);
    if (strncmp(name, "sd2-v", 5) == 0 || strncmp(name, "sd2-unclip", 10) == 0)
        cfg->schedule.prediction = SD_PREDICT_V;
    return true;
}

/* ---- random weights ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

typedef struct random_fill {
    const sd_layout *layout;
    sd_st_dtype dtype;
    uint64_t seed;
} random_fill;

/* Value i of a parameter; bound is 1/sqrt(fan_in) for weights and biases. */
static float param_value(const sd_layout_entry *e, uint64_t *state, double bound)
{
    switch (e->kind) {
    case SD_PARAM_WEIGHT:
    case SD_PARAM_BIAS: return (float)((2.0 * uniform01(state) - 1.0) * bound);
    case SD_PARAM_NORM_WEIGHT: return 1.0f;
    case SD_PARAM_SCALE: return (float)(0.5 + uniform01(state));
    case SD_PARAM_EMBEDDING: {
        double u1 = uniform01(state), u2 = uniform01(state);
        return (float)(0.02 * sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2));
    }
    case SD_PARAM_NORM_BIAS:
    case SD_PARAM_POSITION_IDS: break;
    }
    return 0.0f;
}

/* The random stream of a parameter: its values in order, depending only on seed and its name. */
typedef struct param_stream {
    const sd_layout_entry *e;
    uint64_t state;
    double bound;
} param_stream;

static param_stream param_stream_start(const sd_layout_entry *e, uint64_t seed)
{
    param_stream ps = {e, seed, e->fan_in > 0 ? 1.0 / sqrt((double)e->fan_in) : 0.0};
    for (const char *p = e->name; *p; p++) /* FNV-1a of the name, mixed with the seed */
        ps.state = (ps.state ^ (unsigned char)*p) * 0x100000001b3ull;
    return ps;
}

static sd_status fill_random(void *user, size_t index, void *dst, size_t nbytes)
{
    const random_fill *rf = user;
    const sd_layout_entry *e = &rf->layout->entries[index];
    unsigned char *out = dst;
    if (e->kind == SD_PARAM_POSITION_IDS) {
        for (size_t i = 0; i < nbytes / 8; i++)
            for (int k = 0; k < 8; k++)
                out[8 * i + (size_t)k] = (unsigned char)((uint64_t)i >> (8 * k));
        return SD_OK;
    }
    size_t esize = sd_st_dtype_size(rf->dtype);
    param_stream ps = param_stream_start(e, rf->seed);
    for (size_t i = 0; i < nbytes / esize; i++) {
        float v = param_value(e, &ps.state, ps.bound);
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        if (rf->dtype == SD_ST_F16)
            bits = sd_float_to_half(v);
        else if (rf->dtype == SD_ST_BF16)
            bits = sd_float_to_bf16(v);
        for (size_t k = 0; k < esize; k++)
            out[i * esize + k] = (unsigned char)(bits >> (8 * k));
    }
    return SD_OK;
}

/* ---- the same values as a GGUF file ---- */

typedef struct gguf_fill {
    const sd_layout *layout;
    uint64_t seed;
    param_stream ps; /* of the entry being written */
} gguf_fill;

static sd_status fill_gguf(void *user, size_t index, size_t first, size_t n, float *dst)
{
    gguf_fill *gf = user;
    const sd_layout_entry *e = &gf->layout->entries[index];
    if (first == 0)
        gf->ps = param_stream_start(e, gf->seed);
    for (size_t i = 0; i < n; i++)
        dst[i] = e->kind == SD_PARAM_POSITION_IDS ? (float)(first + i) : param_value(e, &gf->ps.state, gf->ps.bound);
    return SD_OK;
}

sd_status sd_layout_write_random_gguf(sd_context *ctx, const char *path, const sd_layout *layout, const char *arch,
                                      int file_type, sd_layout_gguf_type_fn type_of, uint64_t seed,
                                      sd_layout_rename_fn rename, void *user)
{
    sd_gguf_entry *entries = calloc(layout->n ? layout->n : 1, sizeof *entries);
    char (*names)[128] = calloc(layout->n ? layout->n : 1, sizeof *names);
    sd_status status = SD_OK;
    if (!entries || !names) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < layout->n; i++) {
        const sd_layout_entry *e = &layout->entries[i];
        snprintf(names[i], sizeof names[i], "%s", e->name);
        if (rename && (status = rename(user, e->name, names[i], sizeof names[i])))
            goto done;
        entries[i] = (sd_gguf_entry){.name = names[i], .type = (sd_ggml_type)type_of(e), .ndim = e->ndim};
        memcpy(entries[i].shape, e->shape, sizeof entries[i].shape);
    }
    gguf_fill gf = {layout, seed, {0}};
    status = sd_gguf_write(ctx, path, arch, file_type, entries, layout->n, fill_gguf, &gf);
done:
    free(entries);
    free(names);
    return status;
}

sd_status sd_layout_write_random(sd_context *ctx, const char *path, const sd_layout *layout, sd_st_dtype dtype,
                                 uint64_t seed, sd_layout_rename_fn rename, void *user)
{
    sd_st_entry *entries = NULL;
    char (*names)[128] = NULL;
    sd_status status = SD_OK;
    if (!sd_st_dtype_is_weight(dtype)) {
        status = sd_set_error(ctx, SD_ERR_INVALID, "%s: weights must be F32, F16 or BF16", path);
        goto done;
    }
    if (!(entries = calloc(layout->n ? layout->n : 1, sizeof *entries)) ||
        (rename && !(names = calloc(layout->n ? layout->n : 1, sizeof *names)))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < layout->n; i++) {
        const sd_layout_entry *e = &layout->entries[i];
        entries[i].name = e->name;
        if (rename) {
            if ((status = rename(user, e->name, names[i], sizeof names[i])))
                goto done;
            entries[i].name = names[i];
        }
        entries[i].dtype = e->kind == SD_PARAM_POSITION_IDS ? SD_ST_I64 : dtype;
        entries[i].ndim = e->ndim;
        memcpy(entries[i].shape, e->shape, sizeof e->shape);
    }
    random_fill rf = {layout, dtype, seed};
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    const char *meta[] = {"format", "pt", "sdflow.random_seed", seed_text, NULL};
    status = sd_safetensors_write(ctx, path, entries, layout->n, meta, fill_random, &rf);
done:
    free(entries);
    free(names);
    return status;
}

/* A v-prediction SD2 file as ComfyUI tells it (family.c sd2_prediction): output_blocks.11.1's
 * first norm1.bias drawn uniform in +-0.5 (standard deviation 0.29, above 0.09) instead of 0. */
static void mark_v_prediction(sd_layout *layout, const char *unet_prefix)
{
    char name[128];
    snprintf(name, sizeof name, "%soutput_blocks.11.1.transformer_blocks.0.norm1.bias", unet_prefix);
    for (size_t i = 0; i < layout->n; i++)
        if (strcmp(layout->entries[i].name, name) == 0) {
            layout->entries[i].kind = SD_PARAM_BIAS;
            layout->entries[i].fan_in = 4;
        }
}

sd_status sd_layout_checkpoint(sd_context *ctx, const sd_checkpoint_config *cfg, sd_layout *out)
{
    sd_status status = SD_OK;
    bool flux = cfg->family == SD_FAMILY_FLUX;
    if (!(cfg->has_unet && flux && (status = sd_layout_flux(ctx, &cfg->flux, cfg->unet_prefix, out))) &&
        !(cfg->has_unet && !flux && (status = sd_layout_unet(ctx, &cfg->unet, cfg->unet_prefix, out))) &&
        !(cfg->has_clip && (status = sd_layout_clip(ctx, &cfg->clip, cfg->clip_prefix, out))) &&
        !(cfg->has_clip && cfg->clip2_prefix && (status = sd_layout_clip(ctx, &cfg->clip2, cfg->clip2_prefix, out))) &&
        !(cfg->has_vae && (status = sd_layout_vae(ctx, &cfg->vae, cfg->vae_prefix, out))) &&
        !(cfg->has_vision && (status = sd_layout_clip_vision(ctx, &cfg->vision, out))) && cfg->has_vision) {
        builder b = {out, "noise_augmentor.", false};
        add(&b, SD_PARAM_BIAS, 4, 2, SHAPE(1, cfg->vision.projection), "data_mean");
        add(&b, SD_PARAM_SCALE, 0, 2, SHAPE(1, cfg->vision.projection), "data_std");
        status = finish(ctx, &b);
    }
    return status;
}

sd_status sd_sd1_write_random(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg,
                              sd_st_dtype dtype, uint64_t seed)
{
    sd_layout layout = {0};
    sd_status status = sd_layout_checkpoint(ctx, cfg, &layout);
    if (!status) {
        if ((cfg->family == SD_FAMILY_SD2 || cfg->family == SD_FAMILY_SD2_UNCLIP) &&
            cfg->schedule.prediction == SD_PREDICT_V)
            mark_v_prediction(&layout, cfg->unet_prefix);
        status = sd_layout_write_random(ctx, path, &layout, dtype, seed, NULL, NULL);
    }
    sd_layout_free(&layout);
    return status;
}

/* ---- other families' stubs ---- */

static sd_status fill_ones(void *user, size_t index, void *dst, size_t nbytes)
{
    static const unsigned char one_f32_le[4] = {0x00, 0x00, 0x80, 0x3f};
    for (size_t i = 0; i + 4 <= nbytes; i += 4)
        memcpy((unsigned char *)dst + i, one_f32_le, 4);
    return SD_OK;
}

sd_status sd_write_family_stub(sd_context *ctx, const char *path, sd_family family)
{
    static const char *const sd2[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                      "cond_stage_model.model.token_embedding.weight", NULL};
    static const char *const sdxl[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                       "model.diffusion_model.label_emb.0.0.weight",
                                       "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                                       "conditioner.embedders.1.model.token_embedding.weight", NULL};
    static const char *const refiner[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                          "model.diffusion_model.label_emb.0.0.weight",
                                          "conditioner.embedders.0.model.token_embedding.weight", NULL};
    static const char *const sd2_unclip[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                             "model.diffusion_model.label_emb.0.0.weight",
                                             "cond_stage_model.model.token_embedding.weight",
                                             "embedder.model.visual.conv1.weight", "noise_augmentor.data_mean", NULL};
    static const char *const sd3[] = {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", NULL};
    static const char *const flux[] = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight", NULL};
    const char *const *names;
    switch (family) {
    case SD_FAMILY_SD2: names = sd2; break;
    case SD_FAMILY_SDXL: names = sdxl; break;
    case SD_FAMILY_SDXL_REFINER: names = refiner; break;
    case SD_FAMILY_SD2_UNCLIP: names = sd2_unclip; break;
    case SD_FAMILY_SD3: names = sd3; break;
    case SD_FAMILY_FLUX: names = flux; break;
    default: return sd_set_error(ctx, SD_ERR_INVALID, "%s: no family-detection sample for %s", path, sd_family_name(family));
    }
    sd_st_entry entries[8];
    size_t n = 0;
    for (; names[n]; n++)
        entries[n] = (sd_st_entry){.name = names[n], .dtype = SD_ST_F32, .ndim = 2, .shape = {4, 4}};
    return sd_safetensors_write(ctx, path, entries, n, NULL, fill_ones, NULL);
}
