/* The SD1 and SDXL ControlNets (see controlnet.h). The encoder copy runs on ml/diffusion/unet.c's encoder
 * (sd_unet_encode); this file adds the hint encoder, the zero convs, the layout and family
 * detection, and the diffusers name mapping. */
#include "ml/adapters/controlnet.h"
#include "ml/adapters/t2i_adapter.h"
#include "ml/families/sd1_layout.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORIGINAL_PREFIX "control_model."
#define SUPPORTED "SD1.x, SD2.x, SDXL"

struct sd_controlnet {
    int refcount;
    sd_context *ctx;
    sd_safetensors *file;  /* the opened file */
    sd_safetensors *alias; /* diffusers layout: the file's tensors under original names */
    const sd_safetensors *st; /* what the model reads: alias or file */
    const char *prefix;    /* "control_model." or "" */
    sd_dtype dtype;
    sd_family family;      /* SD1.x or SDXL */
    sd_controlnet_config config;
    bool global_pooling;   /* shuffle ControlNets: residuals replaced by their spatial means */
    sd_unet *unet;         /* the encoder copy, created on first forward */
    sd_weights *w;         /* hint encoder and zero convs, same file and prefix */
    sd_t2i_adapter *t2i;   /* a T2I-Adapter file: the adapter (nothing above but file, family) */
    bool difference;       /* a difference file: unet is a patched view of file_unet */
    sd_controlnet_base base; /* its model (get NULL: none yet) */
    sd_unet *file_unet;
};

/* ---- name mapping between the original and diffusers' layouts ---- */

/* Pairs of name prefixes (original, diffusers); every tensor of either layout starts with exactly
 * one prefix of its side. */
typedef struct name_pair {
    char ldm[48], diff[64];
} name_pair;

typedef struct name_map {
    name_pair *pairs;
    size_t n, cap;
    bool nomem;
} name_map;

static void pair(name_map *m, const char *ldm, const char *diff_fmt, ...) __attribute__((format(printf, 3, 4)));

static void pair(name_map *m, const char *ldm, const char *diff_fmt, ...)
{
    if (m->nomem)
        return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 128;
        name_pair *p = realloc(m->pairs, cap * sizeof *p);
        if (!p) {
            m->nomem = true;
            return;
        }
        m->pairs = p;
        m->cap = cap;
    }
    name_pair *p = &m->pairs[m->n++];
    snprintf(p->ldm, sizeof p->ldm, "%s", ldm);
    va_list ap;
    va_start(ap, diff_fmt);
    vsnprintf(p->diff, sizeof p->diff, diff_fmt, ap);
    va_end(ap);
}

/* A ResBlock's sub-layers: original name, diffusers name. */
static void resnet_pairs(name_map *m, const char *ldm, const char *diff)
{
    static const char *const sub[6][2] = {
        {"in_layers.0.", "norm1."},      {"in_layers.2.", "conv1."},  {"emb_layers.1.", "time_emb_proj."},
        {"out_layers.0.", "norm2."},     {"out_layers.3.", "conv2."}, {"skip_connection.", "conv_shortcut."},
    };
    char l[48];
    for (int i = 0; i < 6; i++) {
        snprintf(l, sizeof l, "%s%s", ldm, sub[i][0]);
        pair(m, l, "%s%s", diff, sub[i][1]);
    }
}

/* The prefix pairs of a ControlNet with n_levels levels of nrb ResBlocks (as diffusers'
 * single-file converter maps them). */
static bool build_map(int n_levels, int nrb, name_map *m)
{
    char l[48], d[64];
    pair(m, "time_embed.0.", "time_embedding.linear_1.");
    pair(m, "time_embed.2.", "time_embedding.linear_2.");
    pair(m, "label_emb.0.0.", "add_embedding.linear_1.");
    pair(m, "label_emb.0.2.", "add_embedding.linear_2.");
    pair(m, "input_blocks.0.0.", "conv_in.");
    int zero = 0;
    pair(m, "zero_convs.0.0.", "controlnet_down_blocks.0.");
    for (int lv = 0; lv < n_levels; lv++) {
        for (int r = 0; r <= nrb; r++) {
            int idx = 1 + lv * (nrb + 1) + r;
            if (r == nrb && lv == n_levels - 1)
                break;
            if (r == nrb) {
                snprintf(l, sizeof l, "input_blocks.%d.0.op.", idx);
                pair(m, l, "down_blocks.%d.downsamplers.0.conv.", lv);
            } else {
                snprintf(l, sizeof l, "input_blocks.%d.0.", idx);
                snprintf(d, sizeof d, "down_blocks.%d.resnets.%d.", lv, r);
                resnet_pairs(m, l, d);
                snprintf(l, sizeof l, "input_blocks.%d.1.", idx);
                pair(m, l, "down_blocks.%d.attentions.%d.", lv, r);
            }
            snprintf(l, sizeof l, "zero_convs.%d.0.", ++zero);
            pair(m, l, "controlnet_down_blocks.%d.", zero);
        }
    }
    resnet_pairs(m, "middle_block.0.", "mid_block.resnets.0.");
    pair(m, "middle_block.1.", "mid_block.attentions.0.");
    resnet_pairs(m, "middle_block.2.", "mid_block.resnets.1.");
    pair(m, "middle_block_out.0.", "controlnet_mid_block.");
    pair(m, "input_hint_block.0.", "controlnet_cond_embedding.conv_in.");
    for (int i = 0; i < 6; i++) {
        snprintf(l, sizeof l, "input_hint_block.%d.", 2 * i + 2);
        pair(m, l, "controlnet_cond_embedding.blocks.%d.", i);
    }
    pair(m, "input_hint_block.14.", "controlnet_cond_embedding.conv_out.");
    return !m->nomem;
}

/* Maps name from one side of the pairs to the other (to_diffusers: original -> diffusers).
 * false when no prefix matches or the result does not fit. */
static bool map_name(const name_map *m, bool to_diffusers, const char *name, char *out, size_t size)
{
    for (size_t i = 0; i < m->n; i++) {
        const char *from = to_diffusers ? m->pairs[i].ldm : m->pairs[i].diff;
        const char *to = to_diffusers ? m->pairs[i].diff : m->pairs[i].ldm;
        size_t len = strlen(from);
        if (strncmp(name, from, len) == 0)
            return (size_t)snprintf(out, size, "%s%s", to, name + len) < size;
    }
    return false;
}

sd_status sd_controlnet_diffusers_name(sd_context *ctx, const sd_controlnet_config *cfg, const char *name,
                                       char *out, size_t size)
{
    name_map m = {0};
    sd_status st = SD_OK;
    if (!build_map(cfg->unet.n_levels, cfg->unet.num_res_blocks, &m))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    else if (!map_name(&m, true, name, out, size))
        st = sd_set_error(ctx, SD_ERR_INVALID, "ControlNet tensor '%s' has no diffusers name", name);
    free(m.pairs);
    return st;
}

/* The diffusers name of a layout name (which carries the original prefix). */
static sd_status diffusers_name(void *user, const char *name, char *out, size_t size)
{
    void **args = user;
    return sd_controlnet_diffusers_name(args[0], args[1], name + strlen(ORIGINAL_PREFIX), out, size);
}

sd_status sd_controlnet_write_random(sd_context *ctx, const char *path, const sd_unet_config *unet, bool diffusers,
                                     sd_st_dtype dtype, uint64_t seed)
{
    sd_controlnet_config cn = {.unet = *unet, .hint_channels = 3,
                               .hint_widths = {16, 16, 32, 32, 96, 96, 256, unet->model_channels}};
    sd_layout layout = {0};
    void *args[2] = {ctx, &cn};
    sd_status st = sd_layout_controlnet(ctx, &cn, ORIGINAL_PREFIX, &layout);
    if (!st)
        st = sd_layout_write_random(ctx, path, &layout, dtype, seed, diffusers ? diffusers_name : NULL, args);
    sd_layout_free(&layout);
    return st;
}

/* map_name from diffusers' side for sd_safetensors_alias_map (user: the name_map). */
static bool original_name(void *user, const char *name, char *out, size_t size)
{
    return map_name(user, false, name, out, size);
}

/* The file's tensors under their original names (diffusers layout). Tensors the map does not
 * know are left out (the layout check then names whatever is missing). */
static sd_status make_alias(sd_context *ctx, const sd_safetensors *st, sd_safetensors **out)
{
    int n_levels = 0, nrb = 0;
    char p[64];
    for (;; n_levels++) {
        snprintf(p, sizeof p, "down_blocks.%d.", n_levels);
        if (n_levels > SD_MAX_LEVELS || !sd_safetensors_has_prefix(st, p))
            break;
    }
    for (;; nrb++) {
        snprintf(p, sizeof p, "down_blocks.0.resnets.%d.", nrb);
        if (nrb > 16 || !sd_safetensors_has_prefix(st, p))
            break;
    }
    name_map m = {0};
    sd_status status = build_map(n_levels, nrb, &m) ? sd_safetensors_alias_map(ctx, st, original_name, &m, out)
                                                    : sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory",
                                                                   sd_safetensors_path(st));
    free(m.pairs);
    return status;
}

/* ---- family and layout detection ---- */

typedef enum layout { LAYOUT_ORIGINAL, LAYOUT_DIFFUSERS, LAYOUT_T2I } layout;

/* Decides the layout, prefix and family, or refuses a file of another kind with a message naming it. */
static sd_status detect(sd_context *ctx, const sd_safetensors *st, layout *lay, const char **prefix, sd_family *fam)
{
    const char *path = sd_safetensors_path(st);
    const char *family = NULL;
    *fam = SD_FAMILY_SD1;
    if (sd_safetensors_find(st, "lora_controlnet"))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: Control-LoRA detected (a ControlNet stored as LoRA "
                            "differences); sdflow loads full " SUPPORTED " ControlNets", path);
    if (sd_safetensors_has_prefix(st, ORIGINAL_PREFIX) || sd_safetensors_find(st, "input_hint_block.0.weight") ||
        sd_safetensors_find(st, "zero_convs.0.0.weight")) {
        *lay = LAYOUT_ORIGINAL;
        *prefix = sd_safetensors_has_prefix(st, ORIGINAL_PREFIX) ? ORIGINAL_PREFIX : "";
        const sd_st_tensor *k = sd_safetensors_findf(st, "%smiddle_block.1.transformer_blocks.0.attn2.to_k.weight", *prefix);
        const sd_st_tensor *proj = sd_safetensors_findf(st, "%smiddle_block.1.proj_in.weight", *prefix);
        if (sd_safetensors_findf(st, "%slabel_emb.0.0.weight", *prefix) || (k && k->ndim == 2 && k->shape[1] == 2048))
            *fam = SD_FAMILY_SDXL;
        else if ((k && k->ndim == 2 && k->shape[1] == 1024) || (proj && proj->ndim == 2))
            *fam = SD_FAMILY_SD2; /* SD2's Linear proj_in (SD1's is a 1x1 convolution) */
    } else if (sd_safetensors_find(st, "controlnet_cond_embedding.conv_in.weight")) {
        *lay = LAYOUT_DIFFUSERS;
        *prefix = "";
        const sd_st_tensor *k = sd_safetensors_find(st, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
        const sd_st_tensor *proj = sd_safetensors_find(st, "mid_block.attentions.0.proj_in.weight");
        if (sd_safetensors_has_prefix(st, "add_embedding.") || (k && k->ndim == 2 && k->shape[1] == 2048))
            *fam = SD_FAMILY_SDXL;
        else if (sd_safetensors_has_prefix(st, "transformer_blocks.") || sd_safetensors_has_prefix(st, "pos_embed"))
            family = "SD3";
        else if ((k && k->ndim == 2 && k->shape[1] == 1024) || (proj && proj->ndim == 2))
            *fam = SD_FAMILY_SD2;
    } else if (sd_safetensors_has_prefix(st, "double_blocks.") ||
               sd_safetensors_has_prefix(st, "single_transformer_blocks.") ||
               (sd_safetensors_has_prefix(st, "controlnet_blocks.") &&
                sd_safetensors_has_prefix(st, "transformer_blocks."))) {
        family = sd_safetensors_has_prefix(st, "pos_embed") ? "SD3" : "FLUX";
    } else if (sd_t2i_adapter_detect(st)) {
        *lay = LAYOUT_T2I;
        *prefix = "";
        sd_t2i_adapter *a = NULL;
        sd_status s = sd_t2i_adapter_new(ctx, st, SD_DTYPE_F32, &a); /* inspects only */
        if (!s)
            *fam = sd_t2i_adapter_config(a)->xl ? SD_FAMILY_SDXL : SD_FAMILY_SD1;
        sd_t2i_adapter_free(a);
        return s;
    } else {
        sd_family f = sd_checkpoint_detect(st);
        if (f != SD_FAMILY_UNKNOWN && f != SD_FAMILY_DIFFUSERS)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s file detected, not a ControlNet", path,
                                sd_family_name(f));
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: not a ControlNet (no control_model.*, input_hint_block.* or "
                            "controlnet_cond_embedding.* tensors)", path);
    }
    if (family)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s ControlNet detected; sdflow supports " SUPPORTED " ControlNets", path,
                            family);
    return SD_OK;
}

sd_status sd_controlnet_check_kind(sd_context *ctx, const sd_safetensors *st, sd_family *family)
{
    layout lay;
    const char *prefix;
    sd_family f;
    sd_status s = detect(ctx, st, &lay, &prefix, &f);
    if (family)
        *family = s ? SD_FAMILY_UNKNOWN : f;
    return s;
}

/* Reads the architecture from the (original-named) tensors and checks the whole layout. */
static sd_status inspect(sd_context *ctx, const sd_safetensors *st, const char *p, sd_family family,
                         sd_controlnet_config *cfg)
{
    const char *path = sd_safetensors_path(st);
    char what[64];
    snprintf(what, sizeof what, "%s ControlNet", sd_family_name(family));
    sd_checkpoint_config rules = {.family = family};
    sd_checkpoint_apply_family_rules(&rules);
    cfg->unet = rules.unet;
    sd_status status = sd_unet_inspect_encoder(ctx, st, p, what, &cfg->unet);
    if (status)
        return status;
    cfg->unet.out_channels = cfg->unet.in_channels; /* unused: the ControlNet has no output head */
    for (int j = 0; j < SD_CONTROLNET_HINT_CONVS; j++) {
        const sd_st_tensor *t = sd_safetensors_findf(st, "%sinput_hint_block.%d.weight", p, 2 * j);
        if (!t || t->ndim != 4 || t->shape[0] < 1 || t->shape[0] > 65536 || t->shape[1] < 1 || t->shape[1] > 65536)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s tensor '%sinput_hint_block.%d.weight' (%s)", path,
                                t ? "malformed" : "missing", p, 2 * j, what);
        cfg->hint_widths[j] = (int)t->shape[0];
        if (j == 0)
            cfg->hint_channels = (int)t->shape[1];
    }
    if (cfg->hint_widths[SD_CONTROLNET_HINT_CONVS - 1] != cfg->unet.model_channels)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: the hint encoder ends in %d channels, the model has %d (%s)",
                            path, cfg->hint_widths[SD_CONTROLNET_HINT_CONVS - 1], cfg->unet.model_channels, what);
    sd_layout lay = {0};
    status = sd_layout_controlnet(ctx, cfg, p, &lay);
    if (!status)
        status = sd_layout_verify(ctx, st, &lay, what);
    sd_layout_free(&lay);
    return status;
}

sd_status sd_controlnet_open(sd_context *ctx, const char *path, sd_dtype dtype, sd_controlnet **out)
{
    *out = NULL;
    sd_controlnet *cn = calloc(1, sizeof *cn);
    if (!cn)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    cn->refcount = 1;
    cn->ctx = ctx;
    cn->dtype = dtype;
    layout lay = LAYOUT_ORIGINAL;
    sd_status st = sd_safetensors_open(ctx, path, &cn->file);
    if (!st)
        st = detect(ctx, cn->file, &lay, &cn->prefix, &cn->family);
    if (!st && lay == LAYOUT_DIFFUSERS)
        st = make_alias(ctx, cn->file, &cn->alias);
    if (!st && lay == LAYOUT_T2I) {
        st = sd_t2i_adapter_new(ctx, cn->file, dtype, &cn->t2i);
        if (!st)
            cn->config.hint_channels = sd_t2i_adapter_config(cn->t2i)->input_channels;
    } else if (!st) {
        /* ComfyUI's rule: a file named *_shuffle or *_shuffle_fp16 pools its residuals. */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t len = strrchr(base, '.') ? (size_t)(strrchr(base, '.') - base) : strlen(base);
        cn->global_pooling = (len >= 8 && strncmp(base + len - 8, "_shuffle", 8) == 0) ||
                             (len >= 13 && strncmp(base + len - 13, "_shuffle_fp16", 13) == 0);
        cn->st = cn->alias ? cn->alias : cn->file;
        cn->difference = sd_controlnet_file_is_difference(cn->st);
        st = inspect(ctx, cn->st, cn->prefix, cn->family, &cn->config);
    }
    if (st) {
        sd_controlnet_unref(cn);
        return st;
    }
    *out = cn;
    return SD_OK;
}

sd_controlnet *sd_controlnet_ref(sd_controlnet *cn)
{
    if (cn)
        cn->refcount++;
    return cn;
}

void sd_controlnet_unref(sd_controlnet *cn)
{
    if (!cn || --cn->refcount > 0)
        return;
    sd_unet_free(cn->unet);
    sd_unet_free(cn->file_unet);
    if (cn->base.release)
        cn->base.release(cn->base.user);
    sd_weights_free(cn->w);
    sd_t2i_adapter_free(cn->t2i);
    sd_safetensors_close(cn->alias);
    sd_safetensors_close(cn->file);
    free(cn);
}

const sd_controlnet_config *sd_controlnet_config_of(const sd_controlnet *cn)
{
    return &cn->config;
}

const char *sd_controlnet_path(const sd_controlnet *cn)
{
    return sd_safetensors_path(cn->file);
}

sd_family sd_controlnet_family(const sd_controlnet *cn)
{
    return cn->family;
}

bool sd_controlnet_is_diffusers(const sd_controlnet *cn)
{
    return cn->alias != NULL;
}

bool sd_controlnet_global_pooling(const sd_controlnet *cn)
{
    return cn->global_pooling;
}

sd_t2i_adapter *sd_controlnet_t2i(const sd_controlnet *cn)
{
    return cn->t2i;
}

bool sd_controlnet_takes_channels(const sd_controlnet *cn, int64_t channels)
{
    return channels == cn->config.hint_channels || (cn->t2i && cn->config.hint_channels == 1 && channels > 0);
}

int sd_controlnet_residual_count(const sd_controlnet *cn)
{
    if (cn->t2i)
        return sd_t2i_adapter_config(cn->t2i)->input_blocks + 1;
    const sd_unet_config *u = &cn->config.unet;
    return 1 + u->n_levels * u->num_res_blocks + (u->n_levels - 1) + 1;
}

/* ---- difference files ---- */

bool sd_controlnet_file_is_difference(const sd_safetensors *st)
{
    return sd_safetensors_find(st, "difference") && sd_safetensors_has_prefix(st, ORIGINAL_PREFIX);
}

bool sd_controlnet_is_difference(const sd_controlnet *cn)
{
    return cn->difference;
}

sd_status sd_controlnet_set_base(sd_controlnet *cn, const sd_controlnet_base *base)
{
    if (!cn->difference || cn->base.get || cn->unet) {
        if (base->release)
            base->release(base->user);
        return sd_set_error(cn->ctx, SD_ERR_INVALID, "%s: %s", sd_controlnet_path(cn),
                            cn->difference ? "the difference ControlNet already has a model"
                                           : "not a difference ControlNet (no 'difference' tensor)");
    }
    cn->base = *base;
    return SD_OK;
}

static bool claims_all(void *user, const char *name)
{
    (void)user;
    (void)name;
    return true;
}

/* file weight + the model's weight of the same name (ComfyUI adds them for every
 * control_model.X whose diffusion_model.X the model has: the encoder copy's weights). */
static sd_status add_model_weight(void *user, const char *name, const sd_dtensor *base, sd_dtensor **out)
{
    sd_controlnet *cn = user;
    const sd_dtensor *m = NULL;
    sd_dtensor *delta = NULL;
    float *host = NULL;
    sd_status s = cn->base.get(cn->base.user, name, &m);
    if (!s && m->numel != base->numel)
        s = sd_set_error(cn->ctx, SD_ERR_INVALID, "%s: tensor '%s%s' has %zu elements, the model's %zu",
                         sd_controlnet_path(cn), cn->prefix, name, base->numel, m->numel);
    if (!s && !(host = malloc(m->numel * sizeof *host)))
        s = sd_set_error(cn->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = sd_dtensor_download(m, host);
    if (!s)
        s = sd_dtensor_new(base->cl, SD_DTYPE_F32, base->ndim, base->shape, &delta);
    if (!s)
        s = sd_dtensor_upload(delta, host);
    if (!s)
        s = sd_op_weight_add(base->cl, base, delta, out);
    free(host);
    sd_dtensor_free(delta);
    return s;
}

/* The encoder copy: the file's, or for a difference file a view adding the model's weights. */
static sd_status make_unet(sd_controlnet *cn, sd_cl *cl)
{
    sd_unet **file = cn->difference ? &cn->file_unet : &cn->unet;
    if (cn->difference && !cn->base.get)
        return sd_set_error(cn->ctx, SD_ERR_INVALID,
                            "%s: a difference ControlNet needs the model it was made for (DiffControlNetLoader)",
                            sd_controlnet_path(cn));
    sd_status s = *file ? SD_OK : sd_unet_new(cl, cn->st, cn->prefix, &cn->config.unet, cn->dtype, file);
    sd_weight_patcher patcher = {.claims = claims_all, .apply = add_model_weight, .user = cn};
    if (!s && cn->difference)
        s = sd_unet_new_patched(cn->file_unet, &patcher, &cn->unet);
    return s;
}

/* ---- forward ---- */

/* A conv <base>.weight/bias with "same" padding, stride and activation. */
static sd_status conv(sd_controlnet *cn, sd_cl *cl, const char *base, const sd_dtensor *x, int stride, sd_act act,
                      sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = sd_weights_getf(cn->w, &w, "%s.weight", base);
    if (!s)
        s = sd_weights_getf(cn->w, &b, "%s.bias", base);
    if (s)
        return s;
    int pad = (int)(w->shape[3] / 2);
    sd_conv2d_params p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .act = act};
    return sd_op_conv2d(cl, x, w, b, &p, out);
}

/* input_hint_block: 3x3 convs with SiLU between them; stride 2 at convs 2, 4 and 6 (0-based). */
static sd_status encode_hint(sd_controlnet *cn, sd_cl *cl, const sd_dtensor *hint, sd_dtensor **out)
{
    sd_dtensor *h = NULL, *next = NULL;
    sd_status s = SD_OK;
    char name[48];
    for (int j = 0; !s && j < SD_CONTROLNET_HINT_CONVS; j++) {
        bool last = j == SD_CONTROLNET_HINT_CONVS - 1;
        snprintf(name, sizeof name, "input_hint_block.%d", 2 * j);
        s = conv(cn, cl, name, h ? h : hint, j == 2 || j == 4 || j == 6 ? 2 : 1, last ? SD_ACT_NONE : SD_ACT_SILU,
                 &next);
        sd_dtensor_free(h);
        h = next;
        next = NULL;
    }
    if (s)
        sd_dtensor_free(h), h = NULL;
    *out = h;
    return s;
}

/* *t = its mean over the spatial dimensions, repeated (torch.mean(x, (2, 3), keepdim=True)). */
static sd_status global_pool(sd_controlnet *cn, sd_dtensor **t)
{
    size_t hw = (size_t)((*t)->shape[2] * (*t)->shape[3]), planes = (*t)->numel / hw;
    float *host = malloc((*t)->numel * sizeof *host);
    if (!host)
        return sd_set_error(cn->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_dtensor_download(*t, host);
    for (size_t p = 0; !s && p < planes; p++) {
        double sum = 0;
        for (size_t i = 0; i < hw; i++)
            sum += host[p * hw + i];
        float mean = (float)(sum / (double)hw);
        for (size_t i = 0; i < hw; i++)
            host[p * hw + i] = mean;
    }
    if (!s)
        s = sd_dtensor_upload(*t, host);
    free(host);
    return s;
}

static sd_status check_hint(sd_controlnet *cn, const sd_dtensor *x, const sd_dtensor *hint)
{
    char d[96];
    if (x->ndim != 4)
        return SD_OK; /* sd_unet_encode reports it */
    if (hint->ndim != 4 || hint->dtype != SD_DTYPE_F32 || hint->shape[0] != x->shape[0] ||
        hint->shape[1] != cn->config.hint_channels || hint->shape[2] != 8 * x->shape[2] ||
        hint->shape[3] != 8 * x->shape[3])
        return sd_set_error(cn->ctx, SD_ERR_INVALID, "hint %s is not an f32 [%lld, %d, %lld, %lld] image",
                            sd_dtensor_describe(hint, d, sizeof d), (long long)x->shape[0],
                            cn->config.hint_channels, (long long)(8 * x->shape[2]), (long long)(8 * x->shape[3]));
    return SD_OK;
}

sd_status sd_controlnet_forward(sd_controlnet *cn, const sd_dtensor *x, const sd_dtensor *hint,
                                const float *timesteps, const sd_dtensor *context, const sd_dtensor *y,
                                float strength, sd_dtensor **outs)
{
    int n = sd_controlnet_residual_count(cn);
    for (int i = 0; i < n; i++)
        outs[i] = NULL;
    sd_cl *cl;
    sd_dtensor *guided = NULL, **raw = calloc((size_t)n, sizeof *raw);
    if (!raw)
        return sd_set_error(cn->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = sd_cl_get(cn->ctx, &cl);
    if (!s && !cn->unet)
        s = make_unet(cn, cl);
    if (!s && !cn->w)
        s = sd_weights_new(cl, cn->st, cn->prefix, cn->dtype, &cn->w);
    if (!s)
        s = check_hint(cn, x, hint);
    if (!s)
        s = encode_hint(cn, cl, hint, &guided);
    if (!s)
        s = sd_unet_encode(cn->unet, x, timesteps, context, y, guided, raw);
    sd_dtensor_free(guided);
    char name[48];
    for (int i = 0; !s && i < n; i++) {
        if (i + 1 < n)
            snprintf(name, sizeof name, "zero_convs.%d.0", i);
        else
            snprintf(name, sizeof name, "middle_block_out.0");
        s = conv(cn, cl, name, raw[i], 1, SD_ACT_NONE, &outs[i]);
        sd_dtensor_free(raw[i]), raw[i] = NULL;
        if (!s && cn->global_pooling)
            s = global_pool(cn, &outs[i]);
        if (!s && strength != 1.0f) {
            sd_dtensor *scaled = NULL;
            s = sd_op_scale(cl, outs[i], strength, 0.0f, &scaled);
            sd_dtensor_free(outs[i]);
            outs[i] = scaled;
        }
    }
    for (int i = 0; i < n; i++)
        sd_dtensor_free(raw[i]);
    free(raw);
    if (s) {
        for (int i = 0; i < n; i++)
            sd_dtensor_free(outs[i]), outs[i] = NULL;
        sd_error_prefix(cn->ctx, "controlnet");
    }
    return s;
}
