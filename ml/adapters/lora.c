/* LoRA files: key mapping, checks and the device patch (see lora.h, docs/lora.md). */
#include "ml/adapters/lora.h"
#include "core/checked.h"
#include "ml/families/sd1_layout.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 192
#define LIST_CHARS 600 /* characters of key names listed in one message */

/* ---- LDM <-> diffusers UNet names ---- */

static const char *const resnet_map[][2] = {
    {"in_layers.0.", "norm1."},       {"in_layers.2.", "conv1."},  {"emb_layers.1.", "time_emb_proj."},
    {"out_layers.0.", "norm2."},      {"out_layers.3.", "conv2."}, {"skip_connection.", "conv_shortcut."},
};

/* <block>.<rest> for a ResBlock: the diffusers spelling of rest. */
static bool resnet_rest(const char *rest, const char **mapped, const char **tail)
{
    for (size_t i = 0; i < sizeof resnet_map / sizeof resnet_map[0]; i++) {
        size_t n = strlen(resnet_map[i][0]);
        if (strncmp(rest, resnet_map[i][0], n) == 0) {
            *mapped = resnet_map[i][1];
            *tail = rest + n;
            return true;
        }
    }
    return false;
}

static bool put(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool put(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < size;
}

bool sd_unet_diffusers_name(const sd_unet_config *cfg, const char *ldm, char *out, size_t size)
{
    static const char *const top[][2] = {
        {"input_blocks.0.0.", "conv_in."},          {"time_embed.0.", "time_embedding.linear_1."},
        {"time_embed.2.", "time_embedding.linear_2."}, {"out.0.", "conv_norm_out."}, {"out.2.", "conv_out."},
        {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strncmp(ldm, top[i][0], strlen(top[i][0])) == 0)
            return put(out, size, "%s%s", top[i][1], ldm + strlen(top[i][0]));
    int r = cfg->num_res_blocks, levels = cfg->n_levels, nb, m, used = 0;
    const char *mapped, *tail;
    if (sscanf(ldm, "input_blocks.%d.%d.%n", &nb, &m, &used) == 2 && used > 0 && nb >= 1) {
        int x = (nb - 1) / (r + 1), j = (nb - 1) % (r + 1);
        const char *rest = ldm + used;
        if (x >= levels)
            return false;
        if (j < r && m == 0 && resnet_rest(rest, &mapped, &tail))
            return put(out, size, "down_blocks.%d.resnets.%d.%s%s", x, j, mapped, tail);
        if (j < r && m == 1 && cfg->attention[x])
            return put(out, size, "down_blocks.%d.attentions.%d.%s", x, j, rest);
        if (j == r && m == 0 && x + 1 < levels && strncmp(rest, "op.", 3) == 0)
            return put(out, size, "down_blocks.%d.downsamplers.0.conv.%s", x, rest + 3);
        return false;
    }
    if (sscanf(ldm, "middle_block.%d.%n", &m, &used) == 1 && used > 0) {
        const char *rest = ldm + used;
        if ((m == 0 || m == 2) && resnet_rest(rest, &mapped, &tail))
            return put(out, size, "mid_block.resnets.%d.%s%s", m / 2, mapped, tail);
        if (m == 1)
            return put(out, size, "mid_block.attentions.0.%s", rest);
        return false;
    }
    if (sscanf(ldm, "output_blocks.%d.%d.%n", &nb, &m, &used) == 2 && used > 0 && nb >= 0) {
        int x = nb / (r + 1), i = nb % (r + 1);
        const char *rest = ldm + used;
        if (x >= levels)
            return false;
        bool attn = cfg->attention[levels - 1 - x];
        if (m == 0 && resnet_rest(rest, &mapped, &tail))
            return put(out, size, "up_blocks.%d.resnets.%d.%s%s", x, i, mapped, tail);
        if (m == 1 && attn)
            return put(out, size, "up_blocks.%d.attentions.%d.%s", x, i, rest);
        if (m == (attn ? 2 : 1) && i == r && x + 1 < levels && strncmp(rest, "conv.", 5) == 0)
            return put(out, size, "up_blocks.%d.upsamplers.0.conv.%s", x, rest + 5);
        return false;
    }
    return false;
}

/* ---- FLUX: BFL <-> diffusers names ---- */

static const char *const flux_top[][2] = {
    {"img_in", "x_embedder"},
    {"txt_in", "context_embedder"},
    {"time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"},
    {"time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"},
    {"vector_in.in_layer", "time_text_embed.text_embedder.linear_1"},
    {"vector_in.out_layer", "time_text_embed.text_embedder.linear_2"},
    {"guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"},
    {"guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"},
    {"final_layer.linear", "proj_out"},
};

static const char *const flux_double[][2] = {
    {"img_mod.lin", "norm1.linear"},     {"txt_mod.lin", "norm1_context.linear"},
    {"img_attn.proj", "attn.to_out.0"}, {"txt_attn.proj", "attn.to_add_out"},
    {"img_mlp.0", "ff.net.0.proj"},     {"img_mlp.2", "ff.net.2"},
    {"txt_mlp.0", "ff_context.net.0.proj"}, {"txt_mlp.2", "ff_context.net.2"},
};

static const char *const flux_single[][2] = {{"linear2", "proj_out"}, {"modulation.lin", "norm.linear"}};

static int flux_name(sd_flux_diffusers_name *o, int64_t row0, int64_t rows, bool swap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int flux_name(sd_flux_diffusers_name *o, int64_t row0, int64_t rows, bool swap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->name, sizeof o->name, fmt, ap);
    va_end(ap);
    o->row0 = row0;
    o->rows = rows;
    o->swap = swap;
    return n >= 0 && (size_t)n < sizeof o->name;
}

int sd_flux_diffusers_names(const sd_flux_config *cfg, const char *bfl, sd_flux_diffusers_name out[4])
{
    static const char *const qkv[3] = {"q", "k", "v"};
    int64_t h = cfg->hidden;
    int b, used = 0, n = 0;
    for (size_t i = 0; i < sizeof flux_top / sizeof flux_top[0]; i++)
        if (strcmp(bfl, flux_top[i][0]) == 0)
            return flux_name(out, 0, 0, false, "%s", flux_top[i][1]);
    if (strcmp(bfl, "final_layer.adaLN_modulation.1") == 0)
        return flux_name(out, 0, 0, true, "norm_out.linear");
    if (sscanf(bfl, "double_blocks.%d.%n", &b, &used) == 1 && used > 0) {
        const char *rest = bfl + used;
        for (size_t i = 0; i < sizeof flux_double / sizeof flux_double[0]; i++)
            if (strcmp(rest, flux_double[i][0]) == 0)
                return flux_name(out, 0, 0, false, "transformer_blocks.%d.%s", b, flux_double[i][1]);
        bool img = strcmp(rest, "img_attn.qkv") == 0, txt = strcmp(rest, "txt_attn.qkv") == 0;
        for (int k = 0; (img || txt) && k < 3; k++)
            n += flux_name(&out[n], k * h, h, false, img ? "transformer_blocks.%d.attn.to_%s"
                                                         : "transformer_blocks.%d.attn.add_%s_proj", b, qkv[k]);
        return n;
    }
    if (sscanf(bfl, "single_blocks.%d.%n", &b, &used) == 1 && used > 0) {
        const char *rest = bfl + used;
        for (size_t i = 0; i < sizeof flux_single / sizeof flux_single[0]; i++)
            if (strcmp(rest, flux_single[i][0]) == 0)
                return flux_name(out, 0, 0, false, "single_transformer_blocks.%d.%s", b, flux_single[i][1]);
        if (strcmp(rest, "linear1") != 0)
            return 0;
        for (int k = 0; k < 3; k++)
            n += flux_name(&out[n], k * h, h, false, "single_transformer_blocks.%d.attn.to_%s", b, qkv[k]);
        return n + flux_name(&out[n], 3 * h, cfg->mlp_hidden, false, "single_transformer_blocks.%d.proj_mlp", b);
    }
    return 0;
}

/* ---- The key map: LoRA key bases -> checkpoint tensors ---- */

typedef struct target {
    char key[NAME_MAX_LEN];  /* LoRA key base, e.g. "lora_unet_down_blocks_0_attentions_0_proj_in" */
    sd_lora_part part;
    int layout_index;        /* entry in the part's layout */
    int64_t row0, rows;      /* the rows patched (open_clip's fused in_proj: q, k, v); rows 0: all */
    bool swap;               /* the up's row halves in the other order (FLUX's norm_out.linear) */
} target;

#define N_PARTS 3

typedef struct keymap {
    target *t;
    size_t n, cap;
    sd_layout layouts[N_PARTS]; /* per sd_lora_part; tensor names relative to the sub-model's prefix */
    bool nomem;
} keymap;

static void map_add_rows(keymap *km, sd_lora_part part, int index, int64_t row0, int64_t rows, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void map_add_rows(keymap *km, sd_lora_part part, int index, int64_t row0, int64_t rows, const char *fmt, ...)
{
    if (km->nomem)
        return;
    if (km->n == km->cap) {
        size_t cap = km->cap ? 2 * km->cap : 1024;
        target *t = realloc(km->t, cap * sizeof *t);
        if (!t) {
            km->nomem = true;
            return;
        }
        km->t = t;
        km->cap = cap;
    }
    target *t = &km->t[km->n];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->key, sizeof t->key, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof t->key)
        return;
    t->part = part;
    t->layout_index = index;
    t->row0 = row0;
    t->rows = rows;
    t->swap = false;
    km->n++;
}

#define map_add(km, part, index, ...) map_add_rows(km, part, index, 0, 0, __VA_ARGS__)

/* name with '.' written as '_'. */
static void underscores(char *dst, const char *src, size_t size)
{
    size_t i = 0;
    for (; size > 0 && i + 1 < size && src[i]; i++)
        dst[i] = src[i] == '.' ? '_' : src[i];
    if (size > 0)
        dst[i] = '\0';
}

/* base without its trailing ".weight" into dst; false for other names. */
static bool strip_weight(char *dst, const char *name, size_t size)
{
    size_t n = strlen(name);
    if (n <= 7 || strcmp(name + n - 7, ".weight") != 0 || n - 7 >= size)
        return false;
    memcpy(dst, name, n - 7);
    dst[n - 7] = '\0';
    return true;
}

static void map_unet(keymap *km, const sd_unet_config *cfg)
{
    const sd_layout *unet = &km->layouts[SD_LORA_UNET];
    for (size_t i = 0; i < unet->n; i++) {
        const sd_layout_entry *e = &unet->entries[i];
        char base[NAME_MAX_LEN], us[NAME_MAX_LEN], diff[NAME_MAX_LEN], dbase[NAME_MAX_LEN];
        if (e->kind != SD_PARAM_WEIGHT || !strip_weight(base, e->name, sizeof base))
            continue;
        underscores(us, base, sizeof us);
        map_add(km, SD_LORA_UNET, (int)i, "lora_unet_%s", us);
        if (!sd_unet_diffusers_name(cfg, e->name, diff, sizeof diff) || !strip_weight(dbase, diff, sizeof dbase))
            continue;
        underscores(us, dbase, sizeof us);
        map_add(km, SD_LORA_UNET, (int)i, "lora_unet_%s", us);
        map_add(km, SD_LORA_UNET, (int)i, "%s", dbase);
        map_add(km, SD_LORA_UNET, (int)i, "unet.%s", dbase);
        /* Old diffusers attention processors: <attn>.processor.to_q, ..., <attn>.processor.to_out. */
        char *to = strstr(dbase, ".to_");
        if (to) {
            size_t len = strlen(dbase);
            int keep = (int)len - ((len > 9 && strcmp(dbase + len - 9, ".to_out.0") == 0) ? 2 : 0);
            map_add(km, SD_LORA_UNET, (int)i, "%.*s.processor%.*s", (int)(to - dbase), dbase,
                    keep - (int)(to - dbase), to);
            map_add(km, SD_LORA_UNET, (int)i, "unet.%.*s.processor%.*s", (int)(to - dbase), dbase,
                    keep - (int)(to - dbase), to);
        }
    }
}

/* FLUX: every Linear under BFL's names (ComfyUI's diffusion_model.<name>, bare, kohya's
 * lora_unet_<name>) and diffusers' (transformer.<name>, OneTrainer's lora_transformer_<name>),
 * whose q, k, v (and proj_mlp) patch row slices of the fused BFL tensors. */
static void map_flux(keymap *km, const sd_flux_config *cfg)
{
    const sd_layout *flux = &km->layouts[SD_LORA_UNET];
    for (size_t i = 0; i < flux->n; i++) {
        const sd_layout_entry *e = &flux->entries[i];
        char base[NAME_MAX_LEN], us[NAME_MAX_LEN];
        sd_flux_diffusers_name d[4];
        if (e->kind != SD_PARAM_WEIGHT || e->ndim != 2 || !strip_weight(base, e->name, sizeof base))
            continue;
        underscores(us, base, sizeof us);
        map_add(km, SD_LORA_UNET, (int)i, "lora_unet_%s", us);
        map_add(km, SD_LORA_UNET, (int)i, "diffusion_model.%s", base);
        map_add(km, SD_LORA_UNET, (int)i, "%s", base);
        int n = sd_flux_diffusers_names(cfg, base, d);
        for (int k = 0; k < n; k++) {
            size_t first = km->n;
            underscores(us, d[k].name, sizeof us);
            map_add_rows(km, SD_LORA_UNET, (int)i, d[k].row0, d[k].rows, "transformer.%s", d[k].name);
            map_add_rows(km, SD_LORA_UNET, (int)i, d[k].row0, d[k].rows, "lora_transformer_%s", us);
            for (size_t j = first; j < km->n; j++)
                km->t[j].swap = d[k].swap;
        }
    }
}

/* The key prefixes of a text encoder: kohya's ("lora_te1_") and diffusers' ("text_encoder."). The
 * first encoder also takes SD1's "lora_te_" (an SD1 file on SDXL is refused by family first). */
static const char *const kohya_te[2][2] = {{"lora_te_", "lora_te1_"}, {"lora_te2_", NULL}};
static const char *const diffusers_te[2] = {"text_encoder.", "text_encoder_2."};

/* Every key naming base (transformers' name without ".weight", "encoder.layers.0.self_attn.q_proj")
 * for rows [row0, row0 + rows) of layout entry index of text encoder part. */
static void map_te_key(keymap *km, sd_lora_part part, int index, int64_t row0, int64_t rows, const char *base)
{
    int slot = part == SD_LORA_CLIP2;
    char us[NAME_MAX_LEN];
    underscores(us, base, sizeof us);
    for (int k = 0; k < 2; k++)
        if (kohya_te[slot][k])
            map_add_rows(km, part, index, row0, rows, "%stext_model_%s", kohya_te[slot][k], us);
    map_add_rows(km, part, index, row0, rows, "%stext_model.%s", diffusers_te[slot], base);
}

/* transformers' layout: every encoder.layers.N.* Linear under its own name. */
static void map_clip(keymap *km, sd_lora_part part)
{
    const sd_layout *clip = &km->layouts[part];
    for (size_t i = 0; i < clip->n; i++) {
        const sd_layout_entry *e = &clip->entries[i];
        char base[NAME_MAX_LEN];
        if (e->kind == SD_PARAM_WEIGHT && strncmp(e->name, "encoder.layers.", 15) == 0 &&
            strip_weight(base, e->name, sizeof base))
            map_te_key(km, part, (int)i, 0, 0, base);
    }
}

/* open_clip's layout under transformers' names, as LoRA files name it (kohya; ComfyUI converts
 * the weights to transformers' layout instead): q_proj, k_proj, v_proj are the row thirds of
 * the fused attn.in_proj_weight, out_proj is attn.out_proj, fc1 / fc2 are mlp.c_fc / mlp.c_proj. */
static void map_open_clip(keymap *km, sd_lora_part part, int64_t width)
{
    static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
    static const char *const other[][2] = {
        {"attn.out_proj.weight", "self_attn.out_proj"}, {"mlp.c_fc.weight", "mlp.fc1"}, {"mlp.c_proj.weight", "mlp.fc2"}};
    const sd_layout *clip = &km->layouts[part];
    for (size_t i = 0; i < clip->n; i++) {
        const char *name = clip->entries[i].name;
        char base[NAME_MAX_LEN];
        int layer, used = 0;
        if (sscanf(name, "transformer.resblocks.%d.%n", &layer, &used) != 1 || used == 0)
            continue;
        if (strcmp(name + used, "attn.in_proj_weight") == 0)
            for (int k = 0; k < 3; k++) {
                snprintf(base, sizeof base, "encoder.layers.%d.self_attn.%s", layer, qkv[k]);
                map_te_key(km, part, (int)i, k * width, width, base);
            }
        for (size_t k = 0; k < sizeof other / sizeof other[0]; k++)
            if (strcmp(name + used, other[k][0]) == 0) {
                snprintf(base, sizeof base, "encoder.layers.%d.%s", layer, other[k][1]);
                map_te_key(km, part, (int)i, 0, 0, base);
            }
    }
}

static sd_status map_text_encoder(sd_context *ctx, keymap *km, sd_lora_part part, const sd_clip_config *cfg)
{
    sd_status st = sd_layout_clip(ctx, cfg, "", &km->layouts[part]);
    if (!st && cfg->open_clip)
        map_open_clip(km, part, cfg->width);
    else if (!st)
        map_clip(km, part);
    return st;
}

static int cmp_target(const void *a, const void *b)
{
    return strcmp(((const target *)a)->key, ((const target *)b)->key);
}

static sd_status keymap_build(sd_context *ctx, const sd_checkpoint_config *cfg, keymap *km)
{
    memset(km, 0, sizeof *km);
    sd_status st = SD_OK;
    if (cfg->has_unet && cfg->family == SD_FAMILY_FLUX) {
        if (!(st = sd_layout_flux(ctx, &cfg->flux, "", &km->layouts[SD_LORA_UNET])))
            map_flux(km, &cfg->flux);
    } else if (cfg->has_unet && !(st = sd_layout_unet(ctx, &cfg->unet, "", &km->layouts[SD_LORA_UNET]))) {
        map_unet(km, &cfg->unet);
    }
    if (!st && cfg->has_clip)
        st = map_text_encoder(ctx, km, SD_LORA_CLIP, &cfg->clip);
    if (!st && cfg->has_clip && cfg->clip2_prefix)
        st = map_text_encoder(ctx, km, SD_LORA_CLIP2, &cfg->clip2);
    if (!st && km->nomem)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!st)
        qsort(km->t, km->n, sizeof *km->t, cmp_target);
    return st;
}

static void keymap_free(keymap *km)
{
    free(km->t);
    for (int i = 0; i < N_PARTS; i++)
        sd_layout_free(&km->layouts[i]);
}

static const target *keymap_find(const keymap *km, const char *key)
{
    target probe;
    if (!put(probe.key, sizeof probe.key, "%s", key))
        return NULL;
    return bsearch(&probe, km->t, km->n, sizeof *km->t, cmp_target);
}

/* ---- File keys ---- */

typedef enum role { ROLE_UP, ROLE_DOWN, ROLE_MID, ROLE_ALPHA } role;

static const struct {
    const char *suffix;
    role role;
} suffixes[] = {
    {".lora_up.weight", ROLE_UP},         {".lora_down.weight", ROLE_DOWN},
    {".lora_mid.weight", ROLE_MID},       {".alpha", ROLE_ALPHA},
    {"_lora.up.weight", ROLE_UP},         {"_lora.down.weight", ROLE_DOWN},
    {".lora_B.weight", ROLE_UP},          {".lora_A.weight", ROLE_DOWN},
    {".lora.up.weight", ROLE_UP},         {".lora.down.weight", ROLE_DOWN},
    {".lora_linear_layer.up.weight", ROLE_UP}, {".lora_linear_layer.down.weight", ROLE_DOWN},
};

typedef struct filekey {
    const sd_st_tensor *t;
    char base[NAME_MAX_LEN]; /* "" when the suffix is not a LoRA one */
    role role;
} filekey;

static void split_key(filekey *k)
{
    const char *name = k->t->name;
    size_t n = strlen(name);
    k->base[0] = '\0';
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t s = strlen(suffixes[i].suffix);
        if (n > s && n - s < sizeof k->base && strcmp(name + n - s, suffixes[i].suffix) == 0) {
            memcpy(k->base, name, n - s);
            k->base[n - s] = '\0';
            k->role = suffixes[i].role;
            return;
        }
    }
}

static int cmp_filekey(const void *a, const void *b)
{
    const filekey *x = a, *y = b;
    int c = strcmp(x->base, y->base);
    return c ? c : (int)x->role - (int)y->role;
}

/* ---- The parsed LoRA ---- */

typedef struct patch {
    sd_lora_part part;
    char name[128];          /* tensor within the part, e.g. "input_blocks.1.1.proj_in.weight" */
    int64_t row0, rows;      /* the rows of it patched (rows: shape[0] unless a fused in_proj slice) */
    int ndim;                /* the patched tensor's shape */
    int64_t shape[4];
    const sd_safetensors *st; /* the LoRA file holding up, down, mid */
    const sd_st_tensor *up, *down, *mid;
    float scale;             /* alpha / rank (1 without alpha) */
    bool swap;               /* up's row halves in the other order (target.swap) */
} patch;

struct sd_lora {
    int refcount;
    sd_context *ctx;
    sd_safetensors *st;
    patch *patches;          /* sorted by (part, name) */
    size_t n;
};

static int cmp_patch(const void *a, const void *b)
{
    const patch *x = a, *y = b;
    if (x->part != y->part)
        return (int)x->part - (int)y->part;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->row0 > y->row0) - (x->row0 < y->row0);
}

/* Appends name to list (a message fragment of at most LIST_CHARS), counting what did not fit. */
static void list_add(char *list, size_t *omitted, const char *name)
{
    size_t len = strlen(list);
    if (*omitted || len + strlen(name) + 2 > LIST_CHARS) {
        (*omitted)++;
        return;
    }
    snprintf(list + len, LIST_CHARS + 1 - len, "%s%s", len ? ", " : "", name);
}

static void list_finish(char *list, size_t omitted)
{
    if (omitted) {
        size_t len = strlen(list);
        snprintf(list + len, LIST_CHARS + 64 - len, " and %zu more", omitted);
    }
}

/* An SD1-named LoRA (SD1.x and SD2.x LoRAs share their key names) on an SD2.x model: the model's
 * own when the text context it reads is as wide as the model's; else an error naming the key. */
static sd_status check_sd1_names_on_sd2(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg)
{
    const char *key = NULL;
    int64_t width = sd_lora_context_width(st, &key), want = key && strstr(key, "attn2") ? cfg->unet.context_dim
                                                                                        : cfg->clip.width;
    if (width == want)
        return SD_OK;
    return sd_set_error(ctx, SD_ERR_INVALID,
                        "%s: SD1.x LoRA detected (key '%s' reads a %lld-wide text context; the SD2.x model's is %lld)",
                        sd_safetensors_path(st), key ? key : "", (long long)width, (long long)want);
}

/* Another family's LoRA, told by its key names or by the cross-attention width. */
static sd_status check_family(sd_context *ctx, const sd_safetensors *st, const sd_checkpoint_config *cfg)
{
    const char *key = NULL;
    sd_family f = sd_lora_family(st, &key);
    char supported[128];
    sd_family_lora_list(supported, sizeof supported);
    if (!sd_family_get(cfg->family)->lora)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: LoRAs on %s models are not supported; sdflow supports %s LoRAs",
                            sd_safetensors_path(st), sd_family_name(cfg->family), supported);
    if (f == SD_FAMILY_UNKNOWN || f == sd_family_text(cfg->family)) /* SD2 LoRAs patch SD2 unCLIP models too */
        return SD_OK;
    if (f == SD_FAMILY_SD1 && sd_family_text(cfg->family) == SD_FAMILY_SD2 && sd_lora_shared_name(key))
        return check_sd1_names_on_sd2(ctx, st, cfg);
    return sd_set_error(ctx, SD_ERR_INVALID, "%s: %s LoRA detected (key '%s'); the model is %s; sdflow supports %s LoRAs",
                        sd_safetensors_path(st), sd_family_name(f), key, sd_family_name(cfg->family), supported);
}

/* Names only UNets with attention at the first level have (SD1, SD2; not SDXL), and only a
 * transformer depth above 1 gives (SDXL; SD2's tiny test preset too, which has first-level
 * attention). */
static bool first_level_attention(const char *name)
{
    return strstr(name, "down_blocks_0_attentions") || strstr(name, "down_blocks.0.attentions") ||
           strstr(name, "input_blocks_1_1_") || strstr(name, "input_blocks_2_1_");
}

static bool deep_transformer(const char *name)
{
    const char *p = strstr(name, "transformer_blocks");
    return p && (p[18] == '_' || p[18] == '.') && p[19] >= '1' && p[19] <= '9';
}

/* Whether t is the down matrix of a LoRA pair (kohya, PEFT or old diffusers names). */
static bool down_matrix(const sd_st_tensor *t)
{
    return t->ndim == 2 &&
           (strstr(t->name, "lora_down.") || strstr(t->name, "lora_A.") || strstr(t->name, "lora.down."));
}

/* Whether t patches the input of a cross-attention key or value projection (reads the context). */
static bool cross_kv(const sd_st_tensor *t)
{
    return strstr(t->name, "attn2") && (strstr(t->name, "to_k") || strstr(t->name, "to_v")) && down_matrix(t);
}

/* Whether t patches the input of a single text encoder's q/k/v projection or first MLP Linear. */
static bool text_input(const sd_st_tensor *t)
{
    return (strncmp(t->name, "lora_te_", 8) == 0 || strncmp(t->name, "text_encoder.", 13) == 0) &&
           (strstr(t->name, "q_proj") || strstr(t->name, "k_proj") || strstr(t->name, "v_proj") ||
            strstr(t->name, "fc1")) &&
           down_matrix(t);
}

static bool proj_key(const char *name)
{
    return strstr(name, "proj_in") || strstr(name, "proj_out");
}

bool sd_lora_shared_name(const char *key)
{
    return key && !proj_key(key);
}

int64_t sd_lora_context_width(const sd_safetensors *st, const char **key)
{
    size_t n = sd_safetensors_count(st);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            const sd_st_tensor *t = sd_safetensors_at(st, i);
            if (pass == 0 ? cross_kv(t) : text_input(t)) {
                *key = t->name;
                return t->shape[1];
            }
        }
    *key = NULL;
    return 0;
}

/* FLUX's names: BFL's blocks, diffusers' under transformer. (or OneTrainer's lora_transformer_). */
static bool flux_key(const char *name)
{
    static const char *const diffusers[] = {"transformer_blocks.", "single_transformer_blocks.", "x_embedder.",
                                            "context_embedder.", "time_text_embed.", "norm_out.", "proj_out."};
    if (strstr(name, "double_blocks") || strstr(name, "single_blocks") || strncmp(name, "lora_transformer_", 17) == 0)
        return true;
    for (size_t i = 0; strncmp(name, "transformer.", 12) == 0 && i < sizeof diffusers / sizeof diffusers[0]; i++)
        if (strncmp(name + 12, diffusers[i], strlen(diffusers[i])) == 0)
            return true;
    return false;
}

sd_family sd_lora_family(const sd_safetensors *st, const char **key)
{
    size_t n = sd_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        *key = sd_safetensors_at(st, i)->name;
        if (flux_key(*key))
            return SD_FAMILY_FLUX;
    }
    /* Beyond doubt first: SDXL's second text encoder, a text context width of another family. */
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        *key = t->name;
        if (strncmp(t->name, "lora_te2_", 9) == 0 || strncmp(t->name, "text_encoder_2.", 15) == 0)
            return SD_FAMILY_SDXL; /* patches SDXL's second text encoder */
        sd_family f = cross_kv(t) || text_input(t) ? sd_family_by_context_dim(t->shape[1]) : SD_FAMILY_UNKNOWN;
        if (f != SD_FAMILY_UNKNOWN && f != SD_FAMILY_SD1)
            return f; /* reads another family's text context (SD1's 768 is also a tiny model's width) */
    }
    /* Then the UNet's shape: SDXL's deeper transformers without attention at the first level; SD1's
     * and SD2's attention there, where SD1's proj_in / proj_out are 1x1 convolutions and SD2's
     * Linears. */
    bool first_level = false;
    for (size_t i = 0; i < n; i++)
        first_level |= first_level_attention(sd_safetensors_at(st, i)->name);
    for (size_t i = 0; i < n && !first_level; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        *key = t->name;
        if (deep_transformer(t->name))
            return SD_FAMILY_SDXL;
    }
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        bool proj = proj_key(t->name) &&
                    (strstr(t->name, "lora_down.") || strstr(t->name, "lora_A.") || strstr(t->name, "lora.down."));
        *key = t->name;
        if (proj && t->ndim == 4)
            return SD_FAMILY_SD1;
        if (proj && t->ndim == 2 && first_level)
            return SD_FAMILY_SD2;
    }
    /* Then the names: kohya writes SD1's and SD2's text encoder lora_te_ (SDXL's lora_te1_, lora_te2_). */
    for (size_t i = 0; i < n; i++) {
        const sd_st_tensor *t = sd_safetensors_at(st, i);
        *key = t->name;
        if (strncmp(t->name, "lora_te_", 8) == 0 || first_level)
            return SD_FAMILY_SD1;
    }
    *key = NULL;
    return SD_FAMILY_UNKNOWN;
}

static bool float_dtype(const sd_st_tensor *t)
{
    return sd_st_dtype_is_weight(t->dtype);
}

/* Checks one key group's tensors against the tensor they patch and fills p. */
static sd_status make_patch(sd_context *ctx, const sd_safetensors *st, const char *key, const sd_layout_entry *e,
                            const target *t, const sd_st_tensor *up, const sd_st_tensor *down,
                            const sd_st_tensor *mid, const sd_st_tensor *alpha, patch *p)
{
    const char *path = sd_safetensors_path(st);
    const char *what = !up ? "lora_up / lora_B" : !down ? "lora_down / lora_A" : NULL;
    if (what)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: LoRA key '%s' has no %s tensor", path, key, what);
    const sd_st_tensor *all[4] = {up, down, mid, alpha};
    for (int i = 0; i < 4; i++)
        if (all[i] && !float_dtype(all[i]))
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' has dtype %s, not a float type", path,
                                all[i]->name, sd_st_dtype_name(all[i]->dtype));
    int64_t rank = down->shape[0], out = t->rows ? t->rows : e->shape[0], in_k = 1;
    for (int d = 1; d < e->ndim; d++)
        in_k *= e->shape[d];
    bool up_ok = (up->ndim == 2 || (up->ndim == 4 && up->shape[2] == 1 && up->shape[3] == 1)) &&
                 up->shape[0] == out && up->shape[1] == rank;
    bool down_ok = (down->ndim == 2 || down->ndim == 4) && rank >= 1;
    /* Elements per rank row of the (mid-combined) down projection; shapes come from the file, so
     * the product is overflow-checked (a zero dimension makes any other one legal there). */
    size_t down_k = 0;
    if (mid) {
        down_ok = down_ok && down->ndim == 4 && down->shape[2] == 1 && down->shape[3] == 1 && mid->ndim == 4 &&
                  mid->shape[0] == rank && mid->shape[1] == rank;
        int64_t dims[3] = {down->shape[1], mid->shape[2], mid->shape[3]};
        down_ok = down_ok && sd_shape_bytes(dims, 3, 1, &down_k);
    } else {
        down_ok = down_ok && sd_shape_bytes(down->shape + 1, down->ndim - 1, 1, &down_k);
    }
    if (!up_ok || !down_ok || down_k != (size_t)in_k) {
        char us[64], ds[64], ws[64];
        snprintf(us, sizeof us, "[%lld, %lld%s]", (long long)up->shape[0], (long long)(up->ndim > 1 ? up->shape[1] : 0),
                 up->ndim > 2 ? ", ..." : "");
        snprintf(ds, sizeof ds, "[%lld, %lld%s]", (long long)down->shape[0],
                 (long long)(down->ndim > 1 ? down->shape[1] : 0), down->ndim > 2 ? ", ..." : "");
        snprintf(ws, sizeof ws, "[%lld, %lld%s]%s", (long long)out, (long long)e->shape[1],
                 e->ndim > 2 ? ", ..." : "", t->rows ? " (a row slice)" : "");
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "%s: LoRA key '%s' (up %s, down %s%s) does not fit tensor '%s' %s", path, key, us, ds,
                            mid ? ", with lora_mid" : "", e->name, ws);
    }
    memset(p, 0, sizeof *p);
    p->part = t->part;
    snprintf(p->name, sizeof p->name, "%s", e->name);
    p->row0 = t->row0;
    p->rows = out;
    p->ndim = e->ndim;
    memcpy(p->shape, e->shape, sizeof p->shape);
    p->st = st;
    p->up = up;
    p->down = down;
    p->mid = mid;
    p->scale = 1.0f;
    p->swap = t->swap;
    if (alpha) {
        float a;
        if (alpha->numel != 1)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: LoRA alpha '%s' is not a single number", path,
                                alpha->name);
        sd_status status = sd_safetensors_read_f32(ctx, st, alpha, &a, 1);
        if (status)
            return status;
        if (!isfinite(a))
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: LoRA alpha '%s' is not finite", path, alpha->name);
        p->scale = a / (float)rank;
    }
    return SD_OK;
}

static void lora_free(sd_lora *l)
{
    sd_safetensors_close(l->st);
    free(l->patches);
    free(l);
}

/* Groups the file's keys by base, matches each group and fills l->patches. */
static sd_status match_keys(sd_context *ctx, sd_lora *l, const keymap *km, sd_family family)
{
    const char *path = sd_safetensors_path(l->st);
    size_t n = sd_safetensors_count(l->st), unmatched = 0, omitted = 0;
    char list[LIST_CHARS + 64] = "";
    filekey *keys = calloc(n ? n : 1, sizeof *keys);
    l->patches = calloc(n ? n : 1, sizeof *l->patches);
    if (!keys || !l->patches) {
        free(keys);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        keys[i].t = sd_safetensors_at(l->st, i);
        split_key(&keys[i]);
    }
    qsort(keys, n, sizeof *keys, cmp_filekey);
    sd_status st = SD_OK;
    for (size_t i = 0, end; i < n && !st; i = end) {
        /* keys[i, end): one base (a key without a LoRA suffix stands alone) */
        end = i + 1;
        while (keys[i].base[0] && end < n && strcmp(keys[end].base, keys[i].base) == 0)
            end++;
        const sd_st_tensor *by_role[4] = {0};
        bool duplicate = false;
        for (size_t k = i; keys[i].base[0] && k < end; k++) {
            duplicate |= by_role[keys[k].role] != NULL;
            by_role[keys[k].role] = keys[k].t;
        }
        const target *t = keys[i].base[0] ? keymap_find(km, keys[i].base) : NULL;
        if (!t || (!by_role[ROLE_UP] && !by_role[ROLE_DOWN])) {
            for (size_t k = i; k < end; k++, unmatched++)
                list_add(list, &omitted, keys[k].t->name);
            continue;
        }
        if (duplicate) {
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: LoRA key '%s' is given twice in different layouts", path,
                              keys[i].base);
            break;
        }
        st = make_patch(ctx, l->st, keys[i].base, &km->layouts[t->part].entries[t->layout_index], t, by_role[ROLE_UP],
                        by_role[ROLE_DOWN], by_role[ROLE_MID], by_role[ROLE_ALPHA], &l->patches[l->n]);
        if (!st)
            l->n++;
    }
    free(keys);
    if (st)
        return st;
    list_finish(list, omitted);
    if (l->n == 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: no key matches an %s UNet or text encoder tensor (%zu keys: %s)",
                            path, sd_family_name(family), unmatched, n ? list : "the file is empty");
    qsort(l->patches, l->n, sizeof *l->patches, cmp_patch);
    for (size_t i = 1; i < l->n; i++)
        if (cmp_patch(&l->patches[i - 1], &l->patches[i]) == 0)
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: two LoRA keys patch tensor '%s'", path, l->patches[i].name);
    if (unmatched)
        sd_warn(ctx, "%s: %zu LoRA key%s matched nothing: %s", path, unmatched, unmatched == 1 ? "" : "s", list);
    return SD_OK;
}

sd_status sd_lora_open(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg, sd_lora **out)
{
    *out = NULL;
    sd_lora *l = calloc(1, sizeof *l);
    if (!l)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    l->refcount = 1;
    l->ctx = ctx;
    keymap km = {0};
    sd_status st = sd_safetensors_open(ctx, path, &l->st);
    if (!st)
        st = check_family(ctx, l->st, cfg);
    if (!st)
        st = keymap_build(ctx, cfg, &km);
    if (!st)
        st = match_keys(ctx, l, &km, cfg->family);
    keymap_free(&km);
    if (st) {
        lora_free(l);
        return st;
    }
    *out = l;
    return SD_OK;
}

sd_lora *sd_lora_ref(sd_lora *lora)
{
    lora->refcount++;
    return lora;
}

void sd_lora_unref(sd_lora *lora)
{
    if (lora && --lora->refcount == 0)
        lora_free(lora);
}

size_t sd_lora_count(const sd_lora *lora, sd_lora_part part)
{
    size_t n = 0;
    for (size_t i = 0; i < lora->n; i++)
        n += lora->patches[i].part == part;
    return n;
}

const char *sd_lora_path(const sd_lora *lora)
{
    return sd_safetensors_path(lora->st);
}

/* The patches of tensor name of part (row slices in order): *count of them from the returned one. */
static const patch *lora_find(const sd_lora *l, sd_lora_part part, const char *name, size_t *count)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) { /* the first patch not before (part, name) */
        size_t mid = lo + (hi - lo) / 2;
        const patch *p = &l->patches[mid];
        if (p->part < part || (p->part == part && strcmp(p->name, name) < 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < l->n && l->patches[end].part == part && strcmp(l->patches[end].name, name) == 0)
        end++;
    *count = end - lo;
    return end > lo ? &l->patches[lo] : NULL;
}

/* ---- Stacks and the device patch ---- */

typedef struct stack_entry {
    sd_lora *lora;
    float strength;
} stack_entry;

typedef struct part_patcher { /* the user pointer of a view's patcher: the stack and the part */
    sd_lora_stack *stack;
    sd_lora_part part;
} part_patcher;

struct sd_lora_stack {
    int refcount;
    sd_context *ctx;
    sd_lora_part part;
    stack_entry *entries;
    size_t n;
    part_patcher patchers[N_PARTS];
    uint64_t unet_base, clip_base[2];    /* serials of the bases the views below were made for */
    sd_unet *unet;                       /* the patched view made for the UNet unet_base */
    uint64_t flux_base;                  /* the same for a FLUX transformer */
    sd_flux *flux;
    sd_clip_model *clip[2];              /* per text encoder */
};

sd_status sd_lora_stack_push(sd_context *ctx, const sd_lora_stack *base, sd_lora *lora, float strength,
                             sd_lora_part part, sd_lora_stack **out)
{
    *out = NULL;
    size_t n = (base ? base->n : 0) + 1;
    sd_lora_stack *s = calloc(1, sizeof *s);
    if (!s || !(s->entries = calloc(n, sizeof *s->entries))) {
        free(s);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    s->refcount = 1;
    s->ctx = ctx;
    s->part = part;
    for (int i = 0; i < N_PARTS; i++)
        s->patchers[i] = (part_patcher){s, (sd_lora_part)i};
    for (size_t i = 0; i + 1 < n; i++)
        s->entries[i] = (stack_entry){sd_lora_ref(base->entries[i].lora), base->entries[i].strength};
    s->entries[n - 1] = (stack_entry){sd_lora_ref(lora), strength};
    s->n = n;
    *out = s;
    return SD_OK;
}

sd_lora_stack *sd_lora_stack_ref(sd_lora_stack *s)
{
    s->refcount++;
    return s;
}

void sd_lora_stack_unref(sd_lora_stack *s)
{
    if (!s || --s->refcount > 0)
        return;
    sd_unet_free(s->unet);
    sd_flux_free(s->flux);
    sd_clip_model_free(s->clip[0]);
    sd_clip_model_free(s->clip[1]);
    for (size_t i = 0; i < s->n; i++)
        sd_lora_unref(s->entries[i].lora);
    free(s->entries);
    free(s);
}

static bool stack_claims(void *user, const char *name)
{
    const part_patcher *pp = user;
    const sd_lora_stack *s = pp->stack;
    size_t count;
    for (size_t i = 0; i < s->n; i++)
        if (s->entries[i].strength != 0.0f && lora_find(s->entries[i].lora, pp->part, name, &count))
            return true;
    return false;
}

/* A host f32 copy of t (n elements). */
static sd_status read_host(sd_context *ctx, const patch *p, const sd_st_tensor *t, float **out)
{
    size_t bytes;
    *out = NULL;
    if (!sd_mul_size(t->numel, sizeof(float), &bytes) || !(*out = malloc(bytes ? bytes : 1)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory reading LoRA tensor '%s'", t->name);
    sd_status st = sd_safetensors_read_f32(ctx, p->st, t, *out, t->numel);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

static sd_status upload_matrix(sd_cl *cl, const float *host, int64_t rows, int64_t cols, sd_dtensor **out)
{
    sd_status st = sd_dtensor_new(cl, SD_DTYPE_F32, 2, (const int64_t[]){rows, cols}, out);
    if (!st && (st = sd_dtensor_upload(*out, host))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    return st;
}

/* p's down projection as [rank, k] floats into *out (k = p's patched tensor's in * kh * kw). With
 * a Tucker mid ([rank, rank, kh, kw], down [rank, in, 1, 1]) it is combined on the host:
 * D[a, i, y, x] = sum_b mid[a, b, y, x] down[b, i]. */
static sd_status read_down(sd_context *ctx, const patch *p, float **out)
{
    float *down = NULL, *mid = NULL;
    sd_status st = read_host(ctx, p, p->down, &down);
    if (st || !p->mid) {
        *out = down;
        return st;
    }
    int64_t rank = p->down->shape[0], in = p->down->shape[1], kk = p->mid->shape[2] * p->mid->shape[3];
    float *comb = NULL;
    st = read_host(ctx, p, p->mid, &mid);
    if (!st && !(comb = calloc((size_t)(rank * in * kk), sizeof *comb)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int64_t a = 0; !st && a < rank; a++)
        for (int64_t b = 0; b < rank; b++)
            for (int64_t i = 0; i < in; i++)
                for (int64_t s = 0; s < kk; s++)
                    comb[(a * in + i) * kk + s] += mid[(a * rank + b) * kk + s] * down[b * in + i];
    free(down);
    free(mid);
    *out = comb;
    return st;
}

/* delta = mul * sum_j scale_j up_j @ down_j over the n patches ps of one tensor (row slices of
 * it, or the whole) as [out, in * kh * kw] f32 on the device: one matmul of a block up
 * [out, R] (up_j scaled, at its rows and its columns) by the downs stacked [R, k], R the ranks'
 * sum; rows no patch covers stay 0. */
static sd_status patch_delta(sd_cl *cl, const patch *ps, size_t n, float mul, sd_dtensor **out)
{
    sd_context *ctx = cl->ctx;
    int64_t out_ch = ps[0].shape[0], numel = 1, ranks = 0;
    for (int d = 0; d < ps[0].ndim; d++)
        numel *= ps[0].shape[d];
    for (size_t j = 0; j < n; j++)
        ranks += ps[j].down->shape[0];
    int64_t k = numel / out_ch;
    size_t ub, db;
    float *up = NULL, *down = NULL, *u_all = NULL, *d_all = NULL;
    sd_status st = SD_OK;
    if (!sd_mul_size((size_t)out_ch, (size_t)ranks, &ub) || !sd_mul_size(ub, sizeof(float), &ub) ||
        !sd_mul_size((size_t)ranks, (size_t)k, &db) || !sd_mul_size(db, sizeof(float), &db) ||
        !(u_all = calloc(1, ub ? ub : 1)) || !(d_all = malloc(db ? db : 1)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory patching '%s'", ps[0].name);
    for (int64_t j = 0, c0 = 0; !st && j < (int64_t)n; c0 += ps[j].down->shape[0], j++) {
        const patch *p = &ps[j];
        int64_t rank = p->down->shape[0];
        if ((st = read_host(ctx, p, p->up, &up)) || (st = read_down(ctx, p, &down)))
            break;
        for (int64_t i = 0, half = p->rows / 2; i < p->rows; i++) {
            int64_t row = p->row0 + (p->swap ? (i + half) % p->rows : i);
            for (int64_t a = 0; a < rank; a++)
                u_all[row * ranks + c0 + a] = p->scale * up[i * rank + a];
        }
        memcpy(d_all + c0 * k, down, (size_t)(rank * k) * sizeof *down);
        free(up);
        free(down);
        up = down = NULL;
    }
    sd_dtensor *u = NULL, *d = NULL;
    if (!st)
        st = upload_matrix(cl, u_all, out_ch, ranks, &u);
    if (!st)
        st = upload_matrix(cl, d_all, ranks, k, &d);
    if (!st)
        st = sd_op_matmul(cl, u, false, d, false, NULL, SD_ACT_NONE, mul, out);
    sd_dtensor_free(u);
    sd_dtensor_free(d);
    free(up);
    free(down);
    free(u_all);
    free(d_all);
    return st;
}

static sd_status stack_apply(void *user, const char *name, const sd_dtensor *base, sd_dtensor **out)
{
    const part_patcher *pp = user;
    sd_lora_stack *s = pp->stack;
    sd_cl *cl = base->cl;
    sd_dtensor *sum = NULL;
    *out = NULL;
    sd_status st = SD_OK;
    for (size_t i = 0; !st && i < s->n; i++) {
        size_t count;
        const patch *p = lora_find(s->entries[i].lora, pp->part, name, &count);
        if (!p || s->entries[i].strength == 0.0f)
            continue;
        sd_dtensor *delta = NULL, *added = NULL;
        st = patch_delta(cl, p, count, s->entries[i].strength, &delta);
        if (!st && sum) {
            st = sd_op_binary(cl, SD_BINARY_ADD, sum, delta, &added);
            sd_dtensor_free(delta);
            sd_dtensor_free(sum);
            delta = added;
        }
        sum = delta;
        if (st)
            sd_error_prefix(s->ctx, "LoRA %s", sd_lora_path(s->entries[i].lora));
    }
    if (!st)
        st = sd_op_weight_add(cl, base, sum, out);
    sd_dtensor_free(sum);
    return st;
}

void sd_lora_stack_patcher(sd_lora_stack *s, sd_lora_part part, sd_weight_patcher *out)
{
    *out = (sd_weight_patcher){stack_claims, stack_apply, &s->patchers[part]};
}

static sd_status wrong_part(sd_lora_stack *s, const char *want)
{
    return sd_set_error(s->ctx, SD_ERR_INVALID, "LoRA stack for the %s asked for a %s",
                        s->part == SD_LORA_UNET ? "UNet" : "text encoder", want);
}

sd_status sd_lora_stack_unet(sd_lora_stack *s, sd_unet *base, sd_unet **out)
{
    *out = NULL;
    if (s->part != SD_LORA_UNET)
        return wrong_part(s, "UNet");
    /* Serials, not addresses: a base freed and re-created (model store release on CPU devices)
     * may come back at the same address, and the old view would then reach freed weights. */
    if (!s->unet || s->unet_base != sd_unet_serial(base)) {
        sd_unet_free(s->unet);
        s->unet = NULL;
        sd_weight_patcher p;
        sd_lora_stack_patcher(s, SD_LORA_UNET, &p);
        sd_status st = sd_unet_new_patched(base, &p, &s->unet);
        if (st)
            return st;
        s->unet_base = sd_unet_serial(base);
    }
    *out = s->unet;
    return SD_OK;
}

sd_status sd_lora_stack_flux(sd_lora_stack *s, sd_flux *base, sd_flux **out)
{
    *out = NULL;
    if (s->part != SD_LORA_UNET)
        return wrong_part(s, "FLUX transformer");
    if (!s->flux || s->flux_base != sd_flux_serial(base)) { /* serials: as sd_lora_stack_unet */
        sd_flux_free(s->flux);
        s->flux = NULL;
        sd_weight_patcher p;
        sd_lora_stack_patcher(s, SD_LORA_UNET, &p);
        sd_status st = sd_flux_new_patched(base, &p, &s->flux);
        if (st)
            return st;
        s->flux_base = sd_flux_serial(base);
    }
    *out = s->flux;
    return SD_OK;
}

sd_status sd_lora_stack_clip(sd_lora_stack *s, int slot, sd_clip_model *base, sd_clip_model **out)
{
    *out = NULL;
    if (s->part != SD_LORA_CLIP || slot < 0 || slot > 1)
        return wrong_part(s, "text encoder");
    if (!s->clip[slot] || s->clip_base[slot] != sd_clip_model_serial(base)) {
        sd_clip_model_free(s->clip[slot]);
        s->clip[slot] = NULL;
        sd_weight_patcher p;
        sd_lora_stack_patcher(s, slot ? SD_LORA_CLIP2 : SD_LORA_CLIP, &p);
        sd_status st = sd_clip_model_new_patched(base, &p, &s->clip[slot]);
        if (st)
            return st;
        s->clip_base[slot] = sd_clip_model_serial(base);
    }
    *out = s->clip[slot];
    return SD_OK;
}
