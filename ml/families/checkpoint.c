/* Family detection and SD1 architecture inspection. See checkpoint.h. */
#include "ml/families/checkpoint.h"
#include "ml/diffusion/flux.h"
#include "ml/families/adm.h"
#include "ml/families/sd1_layout.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const sd_st_tensor *getf(const sd_safetensors *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const sd_st_tensor *getf(const sd_safetensors *st, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sd_safetensors_find(st, name);
}

sd_family sd_checkpoint_detect(const sd_safetensors *st)
{
    return sd_family_detect(st);
}

/* The rules of one text encoder slot (the kind's MLP, padding; the family's LayerNorm use). */
static void apply_text_rules(sd_clip_config *c, const sd_text_encoder_slot *slot)
{
    c->heads = c->width / 64;
    c->gelu = slot->kind != SD_TEXT_CLIP_L;
    c->pad_token = slot->kind == SD_TEXT_CLIP_L ? 49407 : 0;
    c->norm_hidden = slot->norm_hidden;
}

void sd_checkpoint_apply_family_rules(sd_checkpoint_config *cfg)
{
    const sd_family_desc *f = sd_family_get(cfg->family);
    if (!f->checkpoint || (f->schedule.prediction == SD_PREDICT_FLOW && !f->runnable))
        f = sd_family_get(SD_FAMILY_SD1); /* a standalone VAE: the SD VAE's rules */
    cfg->unet.num_heads = f->unet_num_heads;
    cfg->unet.head_channels = f->unet_head_channels;
    cfg->unet.adm = f->adm;
    cfg->unet.norm_groups = 32;
    apply_text_rules(&cfg->clip, &f->text_encoders[0]);
    if (f->n_text_encoders > 1)
        apply_text_rules(&cfg->clip2, &f->text_encoders[1]);
    cfg->vae.norm_groups = 32;
    cfg->vae.scale_factor = f->latent->scale;
    cfg->schedule = f->schedule;
}

void sd_unet_config_set_depth(sd_unet_config *u, int depth)
{
    for (int l = 0; l < SD_MAX_LEVELS; l++)
        u->depth[l] = l < u->n_levels && u->attention[l] ? depth : 0;
    u->middle_depth = depth;
}

int sd_unet_config_heads(const sd_unet_config *u, int channels)
{
    return u->num_heads > 0 ? u->num_heads : u->head_channels > 0 ? channels / u->head_channels : 0;
}

static void shape_text(const int64_t *shape, int ndim, char *buf, size_t size)
{
    int k = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && k < (int)size; i++)
        k += snprintf(buf + k, size - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < (int)size)
        snprintf(buf + k, size - (size_t)k, "]");
}

/* A tensor the architecture is read from: must exist with ndim dimensions. */
static sd_status need(sd_context *ctx, const sd_safetensors *st, const char *what, int ndim,
                      const sd_st_tensor **out, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static sd_status need(sd_context *ctx, const sd_safetensors *st, const char *what, int ndim,
                      const sd_st_tensor **out, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    *out = sd_safetensors_find(st, name);
    if (!*out)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: missing tensor '%s' (%s)", sd_safetensors_path(st), name, what);
    if ((*out)->ndim != ndim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has %d dimensions, expected %d",
                            sd_safetensors_path(st), name, (*out)->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if ((*out)->shape[i] < 1 || (*out)->shape[i] > (1 << 20))
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': dimension %d out of range",
                                sd_safetensors_path(st), name, i);
    return SD_OK;
}

/* Checks every tensor of layout against the file. */
static sd_status verify(sd_context *ctx, const sd_safetensors *st, const sd_layout *layout, const char *what)
{
    const char *path = sd_safetensors_path(st);
    for (size_t i = 0; i < layout->n; i++) {
        const sd_layout_entry *e = &layout->entries[i];
        if (e->kind == SD_PARAM_POSITION_IDS)
            continue; /* optional, any dtype or shape: positions are always 0..n-1 */
        const sd_st_tensor *t = sd_safetensors_find(st, e->name);
        if (!t)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: missing tensor '%s' (%s)", path, e->name, what);
        bool same = t->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = t->shape[d] == e->shape[d];
        if (!same) {
            char got[96], want[96];
            shape_text(t->shape, t->ndim, got, sizeof got);
            shape_text(e->shape, e->ndim, want, sizeof want);
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has shape %s, expected %s (%s)", path, e->name,
                                got, want, what);
        }
        if (!sd_st_dtype_is_weight(t->dtype))
            return sd_set_error(ctx, SD_ERR_INVALID,
                                "%s: tensor '%s': dtype %s is not a float type (F32, F16, BF16, F8_E4M3, F8_E5M2)",
                                path, e->name, sd_st_dtype_name(t->dtype));
    }
    return SD_OK;
}

sd_status sd_layout_verify(sd_context *ctx, const sd_safetensors *st, const sd_layout *layout, const char *what)
{
    return verify(ctx, st, layout, what);
}

static sd_status check_channels(sd_context *ctx, const char *path, const char *what, int channels, int groups,
                                int heads)
{
    if (channels % groups)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s has %d channels, not a multiple of %d GroupNorm groups", path,
                            what, channels, groups);
    if (heads && channels % heads)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s has %d channels, not a multiple of %d attention heads", path,
                            what, channels, heads);
    return SD_OK;
}

/* Counts <p><block>.transformer_blocks.N (at most 64). */
static int count_blocks(const sd_safetensors *st, const char *p, const char *block)
{
    int n = 0;
    while (n < 64 && getf(st, "%s%s.transformer_blocks.%d.norm1.weight", p, block, n))
        n++;
    return n;
}

/* The heads rule of u applied to a SpatialTransformer of `channels` channels. */
static sd_status check_heads(sd_context *ctx, const char *path, const char *what, const sd_unet_config *u,
                             int channels)
{
    if (u->num_heads > 0)
        return check_channels(ctx, path, what, channels, 32, u->num_heads);
    if (channels % u->head_channels)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s has %d channels, not a multiple of the %d-channel attention heads",
                            path, what, channels, u->head_channels);
    return check_channels(ctx, path, what, channels, 32, 0);
}

sd_status sd_unet_inspect_encoder(sd_context *ctx, const sd_safetensors *st, const char *p, const char *what,
                                  sd_unet_config *u)
{
    const char *path = sd_safetensors_path(st);
    const sd_st_tensor *t;
    sd_status status;
    if ((status = need(ctx, st, what, 4, &t, "%sinput_blocks.0.0.weight", p)))
        return status;
    u->model_channels = (int)t->shape[0];
    u->in_channels = (int)t->shape[1];
    if ((status = need(ctx, st, what, 2, &t, "%stime_embed.0.weight", p)))
        return status;
    u->time_embed_dim = (int)t->shape[0];
    u->adm_channels = 0;
    if ((t = getf(st, "%slabel_emb.0.0.weight", p))) {
        if ((status = need(ctx, st, what, 2, &t, "%slabel_emb.0.0.weight", p)))
            return status;
        u->adm_channels = (int)t->shape[1];
    }
    int level = 0, count = 0;
    u->num_res_blocks = 0;
    for (int idx = 1; idx < 1000; idx++) {
        bool down = getf(st, "%sinput_blocks.%d.0.op.weight", p, idx) != NULL;
        const sd_st_tensor *res = getf(st, "%sinput_blocks.%d.0.in_layers.2.weight", p, idx);
        if (!down && !res)
            break;
        if (down || count == 0) {
            if (down && (count == 0 || (u->num_res_blocks && count != u->num_res_blocks)))
                return sd_set_error(ctx, SD_ERR_INVALID,
                                    "%s: UNet level %d has %d res blocks; LDM UNets have the same number per level",
                                    path, level, count);
            if (down) {
                u->num_res_blocks = count;
                count = 0;
                if (++level >= SD_MAX_LEVELS)
                    return sd_set_error(ctx, SD_ERR_INVALID, "%s: UNet has more than %d levels", path, SD_MAX_LEVELS);
                continue;
            }
            if (res->ndim != 4 || res->shape[0] % u->model_channels)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%sinput_blocks.%d.0.in_layers.2.weight': "
                                    "channels not a multiple of the model channels", path, p, idx);
            u->channel_mult[level] = (int)(res->shape[0] / u->model_channels);
            u->attention[level] = getf(st, "%sinput_blocks.%d.1.proj_in.weight", p, idx) != NULL;
            char block[48];
            snprintf(block, sizeof block, "input_blocks.%d.1", idx);
            u->depth[level] = u->attention[level] ? count_blocks(st, p, block) : 0;
        }
        count++;
    }
    if (count == 0 || (u->num_res_blocks && count != u->num_res_blocks))
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: UNet level %d has %d res blocks; LDM UNets have the same number per level", path,
                            level, count);
    u->num_res_blocks = count;
    u->n_levels = level + 1;
    const char *mid = "middle_block.1";
    if ((status = need(ctx, st, what, 2, &t, "%s%s.transformer_blocks.0.attn2.to_k.weight", p, mid)))
        return status;
    u->context_dim = (int)t->shape[1];
    if (!(t = getf(st, "%s%s.proj_in.weight", p, mid)))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: missing tensor '%s%s.proj_in.weight' (%s)", path, p, mid, what);
    u->linear_proj = t->ndim == 2;
    u->middle_depth = count_blocks(st, p, mid);
    for (int l = 0; l < u->n_levels; l++) {
        char what_l[48];
        snprintf(what_l, sizeof what_l, "UNet level %d", l);
        int channels = u->model_channels * u->channel_mult[l];
        if ((status = u->attention[l] || l == u->n_levels - 1 ? check_heads(ctx, path, what_l, u, channels)
                                                               : check_channels(ctx, path, what_l, channels, 32, 0)))
            return status;
    }
    return SD_OK;
}

static sd_status inspect_unet(sd_context *ctx, const sd_safetensors *st, const char *p, const char *what,
                              sd_unet_config *u)
{
    const sd_st_tensor *t;
    sd_status status = sd_unet_inspect_encoder(ctx, st, p, what, u);
    if (!status && !(status = need(ctx, st, what, 4, &t, "%sout.2.weight", p)))
        u->out_channels = (int)t->shape[0];
    return status;
}

/* Tensor names of the two text-model layouts: transformers' CLIPTextModel and open_clip's. */
static const char *const clip_names[2][4] = {
    {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight", "encoder.layers.0.mlp.fc1.weight",
     "encoder.layers.%d.layer_norm1.weight"},
    {"token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight",
     "transformer.resblocks.%d.ln_1.weight"},
};

static sd_status inspect_clip(sd_context *ctx, const sd_safetensors *st, const char *p, const char *what,
                              sd_clip_config *c)
{
    const char *const *names = clip_names[c->open_clip];
    const sd_st_tensor *t;
    sd_status status;
    if ((status = need(ctx, st, what, 2, &t, "%s%s", p, names[0])))
        return status;
    c->vocab = (int)t->shape[0];
    c->width = (int)t->shape[1];
    if ((status = need(ctx, st, what, 2, &t, "%s%s", p, names[1])))
        return status;
    c->positions = (int)t->shape[0];
    if ((status = need(ctx, st, what, 2, &t, "%s%s", p, names[2])))
        return status;
    c->intermediate = (int)t->shape[0];
    c->layers = 0;
    char layer_fmt[96];
    snprintf(layer_fmt, sizeof layer_fmt, "%%s%s", names[3]);
    while (c->layers < 64 && getf(st, layer_fmt, p, c->layers))
        c->layers++;
    c->has_position_ids = !c->open_clip && getf(st, "%sembeddings.position_ids", p) != NULL;
    c->projection = 0;
    if (c->open_clip) {
        if ((status = need(ctx, st, what, 2, &t, "%stext_projection", p)))
            return status;
        c->projection = (int)t->shape[1];
    }
    if (c->width % 64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s width %d is not a multiple of 64 (the CLIP head size)",
                            sd_safetensors_path(st), what, c->width);
    return SD_OK;
}

static sd_status inspect_vae(sd_context *ctx, const sd_safetensors *st, const char *p, sd_vae_config *v)
{
    const char *path = sd_safetensors_path(st), *what = "VAE";
    const sd_st_tensor *t;
    sd_status status;
    if ((status = need(ctx, st, what, 4, &t, "%sencoder.conv_in.weight", p)))
        return status;
    v->ch = (int)t->shape[0];
    v->in_channels = (int)t->shape[1];
    v->n_levels = 0;
    while (v->n_levels < SD_MAX_LEVELS + 1 && getf(st, "%sencoder.down.%d.block.0.conv1.weight", p, v->n_levels))
        v->n_levels++;
    if (v->n_levels < 1 || v->n_levels > SD_MAX_LEVELS)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: VAE encoder has %d levels (1 to %d supported)", path, v->n_levels,
                            SD_MAX_LEVELS);
    v->num_res_blocks = 0;
    while (v->num_res_blocks < 17 && getf(st, "%sencoder.down.0.block.%d.conv1.weight", p, v->num_res_blocks))
        v->num_res_blocks++;
    for (int l = 0; l < v->n_levels; l++) {
        if ((status = need(ctx, st, what, 4, &t, "%sencoder.down.%d.block.0.conv1.weight", p, l)))
            return status;
        if (t->shape[0] % v->ch)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: VAE level %d channels not a multiple of %d", path, l, v->ch);
        v->ch_mult[l] = (int)(t->shape[0] / v->ch);
        char what_l[48];
        snprintf(what_l, sizeof what_l, "VAE level %d", l);
        if ((status = check_channels(ctx, path, what_l, (int)t->shape[0], 32, 0)))
            return status;
    }
    if ((status = need(ctx, st, what, 4, &t, "%sdecoder.conv_in.weight", p)))
        return status;
    v->z_channels = (int)t->shape[1];
    v->no_quant_conv = !getf(st, "%spost_quant_conv.weight", p) && !getf(st, "%squant_conv.weight", p);
    v->embed_dim = v->z_channels;
    if (!v->no_quant_conv) {
        if ((status = need(ctx, st, what, 4, &t, "%spost_quant_conv.weight", p)))
            return status;
        v->embed_dim = (int)t->shape[1];
    }
    if ((status = need(ctx, st, what, 4, &t, "%sdecoder.conv_out.weight", p)))
        return status;
    v->out_channels = (int)t->shape[0];
    if (!(t = getf(st, "%sencoder.mid.attn_1.q.weight", p)))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: missing tensor '%sencoder.mid.attn_1.q.weight' (VAE)", path, p);
    v->attn_linear = t->ndim == 2;
    return SD_OK;
}

static sd_status family_error(sd_context *ctx, const sd_safetensors *st, sd_family family)
{
    const char *path = sd_safetensors_path(st);
    switch (family) {
    case SD_FAMILY_VAE:
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: standalone VAE file detected, not a checkpoint; load it with VAELoader",
                            path);
    case SD_FAMILY_DIFFUSERS:
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: diffusers-format weights detected; sdflow reads single-file checkpoints", path);
    case SD_FAMILY_UNKNOWN:
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)", path);
    default: {
        char runnable[128];
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s checkpoint detected; sdflow supports %s", path,
                            sd_family_name(family), sd_family_runnable_list(runnable, sizeof runnable));
    }
    }
}

/* "SD1.x UNet", "SDXL OpenCLIP-bigG text model", ... into buf. */
static const char *part_name(char *buf, size_t size, sd_family family, int part)
{
    const char *name = sd_family_name(family);
    if (part == 0)
        snprintf(buf, size, "%s UNet", name);
    else if (part == 3)
        snprintf(buf, size, "VAE");
    else if (part == 4)
        snprintf(buf, size, "%s CLIP image tower", name);
    else
        snprintf(buf, size, "%s %s text model", name,
                 sd_text_encoder_name(sd_family_get(family)->text_encoders[part - 1].kind));
    return buf;
}

/* Builds the layout of one part (0 UNet, 1 and 2 the text encoders, 3 VAE, 4 the CLIP image
 * tower) and verifies the file against it. */
static sd_status verify_part(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg, int part)
{
    sd_layout layout = {0};
    sd_status status;
    char what[64];
    const sd_clip_config *clip = part == 2 ? &cfg->clip2 : &cfg->clip;
    part_name(what, sizeof what, cfg->family, part);
    switch (part) {
    case 0: status = sd_layout_unet(ctx, &cfg->unet, cfg->unet_prefix, &layout); break;
    case 1: status = sd_layout_clip(ctx, clip, cfg->clip_prefix, &layout); break;
    case 2: status = sd_layout_clip(ctx, clip, cfg->clip2_prefix, &layout); break;
    case 3: status = sd_layout_vae(ctx, &cfg->vae, cfg->vae_prefix, &layout); break;
    default: status = sd_layout_clip_vision(ctx, &cfg->vision, &layout); break;
    }
    if (!status)
        status = verify(ctx, st, &layout, what);
    else if (status == SD_ERR_INVALID)
        sd_error_prefix(ctx, "%s", sd_safetensors_path(st));
    sd_layout_free(&layout);
    return status;
}

/* The text encoders' widths against the UNet: the context is their hidden states side by side,
 * and the ADM vector starts with the pooled output of the family's pooled encoder. */
static sd_status check_text_fit(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg)
{
    const char *path = sd_safetensors_path(st);
    const sd_family_desc *f = sd_family_get(cfg->family);
    int width = cfg->clip.width + (cfg->clip2_prefix ? cfg->clip2.width : 0);
    if (width != cfg->unet.context_dim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s width %d does not match the UNet context dimension %d", path,
                            cfg->clip2_prefix ? "text encoders' combined" : "CLIP", width, cfg->unet.context_dim);
    int pooled = 0;
    for (int i = 0; i < f->n_text_encoders; i++)
        if (f->text_encoders[i].pooled) {
            const sd_clip_config *c = i ? &cfg->clip2 : &cfg->clip;
            pooled = c->projection ? c->projection : c->width;
        }
    int adm = f->adm == SD_ADM_NONE     ? 0
              : f->adm == SD_ADM_UNCLIP ? cfg->unet.adm_channels /* from the image tower: check_vision_fit */
                                        : pooled + 256 * (f->adm == SD_ADM_SDXL ? 6 : 5);
    if (adm != cfg->unet.adm_channels)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: the UNet's ADM input (label_emb) is %d wide, the %s conditioning makes %d", path,
                            cfg->unet.adm_channels, f->name, adm);
    return SD_OK;
}

/* SD2 unCLIP: the UNet takes an ADM vector of the image embeddings and their noise level's
 * embedding, as wide as each other (ComfyUI: adm_in_channels 2048 / 1536, timestep_dim 1024 / 768);
 * the image tower in the file, if any, must make embeddings of that width. */
static sd_status check_vision_fit(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg)
{
    const char *path = sd_safetensors_path(st);
    int adm = cfg->unet.adm_channels;
    if (adm < 2 || adm % 2)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: the %s UNet's ADM input (label_emb) is %d wide, not twice an "
                            "image embedding's width", path, sd_family_name(cfg->family), adm);
    if (cfg->has_vision && 2 * cfg->vision.projection != adm)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: the UNet's ADM input (label_emb) is %d wide; the image tower's "
                            "%d-wide embeddings make %d", path, adm, cfg->vision.projection, 2 * cfg->vision.projection);
    return SD_OK;
}

/* Where the family's text encoders sit in st (cfg->clip_prefix, clip2_prefix) and whether the
 * file has them (has_clip: the first one's tensors are there). */
static void find_text_encoders(const sd_safetensors *st, const sd_family_desc *f, sd_checkpoint_config *cfg)
{
    cfg->clip_prefix = f->text_encoders[0].prefix;
    cfg->clip.open_clip = f->text_encoders[0].kind != SD_TEXT_CLIP_L;
    cfg->has_clip = sd_safetensors_has_prefix(st, cfg->clip_prefix);
    if (!cfg->has_clip && f->id == SD_FAMILY_SD1 && sd_safetensors_has_prefix(st, SD1_CLIP_PREFIX_OLD "embeddings.")) {
        cfg->clip_prefix = SD1_CLIP_PREFIX_OLD; /* older transformers layout, no "text_model." */
        cfg->has_clip = true;
    }
    if (f->n_text_encoders > 1) {
        cfg->clip2_prefix = f->text_encoders[1].prefix;
        cfg->clip2.open_clip = f->text_encoders[1].kind != SD_TEXT_CLIP_L;
    }
}

/* A FLUX file: ComfyUI's all-in-one checkpoint (model.diffusion_model., vae., text_encoders.*) or
 * a transformer alone (BFL's names, with or without model.diffusion_model.; what UNETLoader
 * reads). The text encoders are inspected by their own loaders. */
static sd_status inspect_flux(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg)
{
    const sd_family_desc *f = sd_family_get(SD_FAMILY_FLUX);
    cfg->family = SD_FAMILY_FLUX;
    cfg->unet_prefix = sd_flux_present(st, f->unet_prefix) ? f->unet_prefix : "";
    cfg->vae_prefix = f->vae_prefix;
    cfg->clip_prefix = f->text_encoders[0].prefix;
    cfg->has_unet = true;
    cfg->has_vae = sd_safetensors_has_prefix(st, cfg->vae_prefix);
    sd_checkpoint_apply_family_rules(cfg);
    sd_status status = sd_flux_inspect(ctx, st, cfg->unet_prefix, &cfg->flux);
    if (!status && cfg->has_vae && !(status = inspect_vae(ctx, st, cfg->vae_prefix, &cfg->vae))) {
        sd_checkpoint_apply_family_rules(cfg);
        status = verify_part(ctx, st, cfg, 3);
    }
    return status;
}

sd_status sd_checkpoint_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    sd_status status;
    cfg->family = sd_checkpoint_detect(st);
    const sd_family_desc *f = sd_family_get(cfg->family);
    if (cfg->family == SD_FAMILY_FLUX && f->runnable)
        return inspect_flux(ctx, st, cfg);
    if (!f->runnable || !f->checkpoint)
        return family_error(ctx, st, cfg->family);
    cfg->unet_prefix = f->unet_prefix;
    cfg->vae_prefix = f->vae_prefix;
    cfg->has_unet = true;
    find_text_encoders(st, f, cfg);
    cfg->has_vae = sd_safetensors_has_prefix(st, cfg->vae_prefix);
    sd_checkpoint_apply_family_rules(cfg);
    char what[64];
    if ((status = inspect_unet(ctx, st, cfg->unet_prefix, part_name(what, sizeof what, cfg->family, 0),
                               &cfg->unet)))
        return status;
    if (cfg->has_clip &&
        (status = inspect_clip(ctx, st, cfg->clip_prefix, part_name(what, sizeof what, cfg->family, 1),
                               &cfg->clip)))
        return status;
    if (cfg->has_clip && cfg->clip2_prefix &&
        (status = inspect_clip(ctx, st, cfg->clip2_prefix,
                               part_name(what, sizeof what, cfg->family, 2), &cfg->clip2)))
        return status;
    if (cfg->has_vae && (status = inspect_vae(ctx, st, cfg->vae_prefix, &cfg->vae)))
        return status;
    if (cfg->has_clip && (status = check_text_fit(ctx, st, cfg)))
        return status;
    cfg->has_vision = f->vision_prefix && sd_safetensors_has_prefix(st, f->vision_prefix);
    if (cfg->has_vision && (status = sd_clip_vision_inspect(ctx, st, f->vision_prefix, &cfg->vision)))
        return status;
    if (f->adm == SD_ADM_UNCLIP && (status = check_vision_fit(ctx, st, cfg)))
        return status;
    sd_checkpoint_apply_family_rules(cfg);
    for (int part = 0; part < 5; part++) {
        bool present = part == 0   ? cfg->has_unet
                       : part == 1 ? cfg->has_clip
                       : part == 2 ? cfg->has_clip && cfg->clip2_prefix
                       : part == 3 ? cfg->has_vae
                                   : cfg->has_vision;
        if (present && (status = verify_part(ctx, st, cfg, part)))
            return status;
    }
    return f->prediction ? f->prediction(ctx, st, cfg->unet.in_channels, &cfg->schedule.prediction) : SD_OK;
}

/* The family of a UNet without text encoders, from its shapes: an ADM UNet with 1024-wide
 * cross-attention is SD2 unCLIP, other ADM UNets SDXL or the SDXL refiner (ComfyUI's widths 2816 /
 * 2560; other sizes by whether the base's six size embeddings fit), one with 1024-wide
 * cross-attention SD2.x, else SD1.x. */
static sd_family unet_family(const sd_unet_config *u)
{
    if (u->adm_channels && u->context_dim == 1024)
        return SD_FAMILY_SD2_UNCLIP; /* SD2's cross-attention with an ADM input */
    if (u->adm_channels == 2560 || (u->adm_channels && u->adm_channels != 2816 &&
                                    u->adm_channels <= 6 * SD_ADM_EMBED_DIM))
        return SD_FAMILY_SDXL_REFINER;
    if (u->adm_channels)
        return SD_FAMILY_SDXL;
    return u->context_dim == 1024 ? SD_FAMILY_SD2 : SD_FAMILY_SD1;
}

sd_status sd_unet_file_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *path = sd_safetensors_path(st);
    if (sd_checkpoint_detect(st) == SD_FAMILY_FLUX && sd_family_get(SD_FAMILY_FLUX)->runnable) {
        sd_status status = inspect_flux(ctx, st, cfg);
        cfg->has_vae = false; /* a diffusion model's loader gives the MODEL alone */
        return status;
    }
    if (sd_safetensors_find(st, SD1_UNET_PREFIX "input_blocks.0.0.weight"))
        cfg->unet_prefix = SD1_UNET_PREFIX;
    else if (sd_safetensors_find(st, "input_blocks.0.0.weight"))
        cfg->unet_prefix = "";
    else {
        sd_family f = sd_checkpoint_detect(st);
        if (f != SD_FAMILY_UNKNOWN)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s file detected, not an LDM diffusion model "
                                "(input_blocks.*, with or without model.diffusion_model.)", path, sd_family_name(f));
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a diffusion model (no input_blocks.0.0.weight, with or "
                            "without model.diffusion_model.)", path);
    }
    /* The shapes first under SD1's rules (heads are checked again under the family's below). */
    sd_checkpoint_config probe = {.family = SD_FAMILY_SD1};
    sd_checkpoint_apply_family_rules(&probe);
    probe.unet.num_heads = 1;
    sd_status status = inspect_unet(ctx, st, cfg->unet_prefix, "UNet", &probe.unet);
    if (status)
        return status;
    cfg->family = unet_family(&probe.unet);
    const sd_family_desc *f = sd_family_get(cfg->family);
    if (!f->runnable)
        return family_error(ctx, st, cfg->family);
    cfg->has_unet = true;
    sd_checkpoint_apply_family_rules(cfg);
    char what[64];
    if ((status = inspect_unet(ctx, st, cfg->unet_prefix, part_name(what, sizeof what, cfg->family, 0),
                               &cfg->unet)))
        return status;
    sd_checkpoint_apply_family_rules(cfg);
    return verify_part(ctx, st, cfg, 0);
}

sd_status sd_vae_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    sd_status status;
    sd_family family = sd_checkpoint_detect(st);
    if (family == SD_FAMILY_VAE) {
        cfg->vae_prefix = "";
    } else if (sd_safetensors_has_prefix(st, SD1_VAE_PREFIX "encoder.")) {
        cfg->vae_prefix = SD1_VAE_PREFIX;
    } else if (family == SD_FAMILY_DIFFUSERS) {
        return family_error(ctx, st, family);
    } else {
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: no VAE tensors (encoder.* and decoder.*, or first_stage_model.*)",
                            sd_safetensors_path(st));
    }
    cfg->family = family;
    cfg->has_vae = true;
    if ((status = inspect_vae(ctx, st, cfg->vae_prefix, &cfg->vae)))
        return status;
    sd_checkpoint_apply_family_rules(cfg);
    return verify_part(ctx, st, cfg, 3);
}
