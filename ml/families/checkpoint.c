/* Family detection and SD1 architecture inspection. See checkpoint.h. */
#include "ml/families/checkpoint.h"
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

void sd_checkpoint_apply_sd1_rules(sd_checkpoint_config *cfg)
{
    cfg->unet.num_heads = 8;
    cfg->unet.norm_groups = 32;
    cfg->clip.heads = cfg->clip.width / 64;
    cfg->vae.norm_groups = 32;
    const sd_family_desc *sd1 = sd_family_get(SD_FAMILY_SD1);
    cfg->vae.scale_factor = sd1->latent->scale;
    cfg->schedule = sd1->schedule;
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
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': dtype %s is not a float type (F32, F16, BF16)",
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
                                    "%s: UNet level %d has %d res blocks; SD1 UNets have the same number per level",
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
        }
        count++;
    }
    if (count == 0 || (u->num_res_blocks && count != u->num_res_blocks))
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: UNet level %d has %d res blocks; SD1 UNets have the same number per level", path,
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
    u->transformer_depth = 0;
    while (u->transformer_depth < 64 &&
           getf(st, "%s%s.transformer_blocks.%d.norm1.weight", p, mid, u->transformer_depth))
        u->transformer_depth++;
    for (int l = 0; l < u->n_levels; l++) {
        char what_l[48];
        snprintf(what_l, sizeof what_l, "UNet level %d", l);
        if ((status = check_channels(ctx, path, what_l, u->model_channels * u->channel_mult[l], 32, 8)))
            return status;
    }
    return SD_OK;
}

static sd_status inspect_unet(sd_context *ctx, const sd_safetensors *st, const char *p, sd_unet_config *u)
{
    const char *what = "SD1.x UNet";
    const sd_st_tensor *t;
    sd_status status = sd_unet_inspect_encoder(ctx, st, p, what, u);
    if (!status && !(status = need(ctx, st, what, 4, &t, "%sout.2.weight", p)))
        u->out_channels = (int)t->shape[0];
    return status;
}

static sd_status inspect_clip(sd_context *ctx, const sd_safetensors *st, const char *p, sd_clip_config *c)
{
    const char *what = "SD1.x CLIP text model";
    const sd_st_tensor *t;
    sd_status status;
    if ((status = need(ctx, st, what, 2, &t, "%sembeddings.token_embedding.weight", p)))
        return status;
    c->vocab = (int)t->shape[0];
    c->width = (int)t->shape[1];
    if ((status = need(ctx, st, what, 2, &t, "%sembeddings.position_embedding.weight", p)))
        return status;
    c->positions = (int)t->shape[0];
    if ((status = need(ctx, st, what, 2, &t, "%sencoder.layers.0.mlp.fc1.weight", p)))
        return status;
    c->intermediate = (int)t->shape[0];
    c->layers = 0;
    while (c->layers < 64 && getf(st, "%sencoder.layers.%d.layer_norm1.weight", p, c->layers))
        c->layers++;
    c->has_position_ids = getf(st, "%sembeddings.position_ids", p) != NULL;
    if (c->width % 64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP width %d is not a multiple of 64 (the SD1 CLIP head size)",
                            sd_safetensors_path(st), c->width);
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
    if ((status = need(ctx, st, what, 4, &t, "%spost_quant_conv.weight", p)))
        return status;
    v->embed_dim = (int)t->shape[1];
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
                            "%s: diffusers-format weights detected; sdflow reads single-file SD1.x checkpoints", path);
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

/* Builds the layout of one part (0 UNet, 1 CLIP, 2 VAE) and verifies the file against it. */
static sd_status verify_part(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg, int part)
{
    sd_layout layout = {0};
    sd_status status;
    const char *what;
    switch (part) {
    case 0: status = sd_layout_unet(ctx, &cfg->unet, cfg->unet_prefix, &layout), what = "SD1.x UNet"; break;
    case 1: status = sd_layout_clip(ctx, &cfg->clip, cfg->clip_prefix, &layout), what = "SD1.x CLIP text model"; break;
    default: status = sd_layout_vae(ctx, &cfg->vae, cfg->vae_prefix, &layout), what = "VAE"; break;
    }
    if (!status)
        status = verify(ctx, st, &layout, what);
    else if (status == SD_ERR_INVALID)
        sd_error_prefix(ctx, "%s", sd_safetensors_path(st));
    sd_layout_free(&layout);
    return status;
}

sd_status sd_checkpoint_inspect(sd_context *ctx, const sd_safetensors *st, sd_checkpoint_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    sd_status status;
    cfg->family = sd_checkpoint_detect(st);
    if (cfg->family != SD_FAMILY_SD1)
        return family_error(ctx, st, cfg->family);
    cfg->unet_prefix = SD1_UNET_PREFIX;
    cfg->clip_prefix = SD1_CLIP_PREFIX;
    cfg->vae_prefix = SD1_VAE_PREFIX;
    cfg->has_unet = true;
    cfg->has_clip = sd_safetensors_has_prefix(st, SD1_CLIP_PREFIX);
    if (!cfg->has_clip && sd_safetensors_has_prefix(st, SD1_CLIP_PREFIX_OLD "embeddings.")) {
        cfg->clip_prefix = SD1_CLIP_PREFIX_OLD; /* older transformers layout, no "text_model." */
        cfg->has_clip = true;
    }
    cfg->has_vae = sd_safetensors_has_prefix(st, SD1_VAE_PREFIX);
    if ((status = inspect_unet(ctx, st, cfg->unet_prefix, &cfg->unet)))
        return status;
    if (cfg->has_clip && (status = inspect_clip(ctx, st, cfg->clip_prefix, &cfg->clip)))
        return status;
    if (cfg->has_vae && (status = inspect_vae(ctx, st, cfg->vae_prefix, &cfg->vae)))
        return status;
    if (cfg->has_clip && cfg->clip.width != cfg->unet.context_dim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: CLIP width %d does not match the UNet context dimension %d",
                            sd_safetensors_path(st), cfg->clip.width, cfg->unet.context_dim);
    sd_checkpoint_apply_sd1_rules(cfg);
    for (int part = 0; part < 3; part++) {
        bool present = part == 0 ? cfg->has_unet : part == 1 ? cfg->has_clip : cfg->has_vae;
        if (present && (status = verify_part(ctx, st, cfg, part)))
            return status;
    }
    return SD_OK;
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
    sd_checkpoint_apply_sd1_rules(cfg);
    return verify_part(ctx, st, cfg, 2);
}
