/* Deterministic random LoRA files in kohya layout for tests and goldens (see lora.h). */
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rand_target {
    char key[192];             /* "lora_unet_..." / "lora_te_..." / "unet...." without suffix */
    char seed_name[160];       /* what the values follow: the patched tensor (or slice) */
    int ndim;                  /* the patched tensor's (or slice's) shape */
    int64_t shape[4];
    float alpha;
    int64_t row0;              /* a slice of the tensor seed_name names: its up rows from row0 */
    bool swap;                 /* the up's row halves in the other order (FLUX's norm_out.linear) */
} rand_target;

typedef struct writer {
    rand_target *targets;
    size_t n;
    int rank;
    uint64_t seed;
    sd_lora_layout layout;
} writer;

static bool unet_selected(const sd_layout_entry *e)
{
    if (e->kind != SD_PARAM_WEIGHT)
        return false;
    return strstr(e->name, ".attn1.to_") || strstr(e->name, ".attn2.to_") || strstr(e->name, ".ff.net.") ||
           strstr(e->name, ".proj_in.") || strstr(e->name, ".proj_out.") ||
           strcmp(e->name, "input_blocks.1.0.in_layers.2.weight") == 0;
}

static bool clip_selected(const sd_layout_entry *e)
{
    return e->kind == SD_PARAM_WEIGHT && strncmp(e->name, "encoder.layers.", 15) == 0 &&
           (strstr(e->name, "_proj.") || strstr(e->name, ".mlp.fc"));
}

/* prefix + name without ".weight", dots as underscores. */
static void kohya_key(char *dst, size_t size, const char *prefix, const char *name)
{
    int n = snprintf(dst, size, "%s%.*s", prefix, (int)(strlen(name) - 7), name);
    for (char *p = dst + strlen(prefix); n > 0 && *p; p++)
        if (*p == '.')
            *p = '_';
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Entries per target: alpha, lora_down, lora_up (in that order). */
static sd_status fill(void *user, size_t index, void *dst, size_t nbytes)
{
    const writer *w = user;
    const rand_target *t = &w->targets[index / 3];
    int role = (int)(index % 3);
    float *f = dst;
    size_t n = nbytes / sizeof *f;
    if (role == 0) {
        f[0] = t->alpha;
        return SD_OK;
    }
    uint64_t state = w->seed * 0x100000001b3u + (uint64_t)role;
    for (const char *p = t->seed_name; *p; p++) /* the patched tensor's name: same values whatever the key */
        state = (state ^ (unsigned char)*p) * 0x100000001b3u;
    int64_t fan_in = 1;
    for (int d = 1; d < t->ndim; d++)
        fan_in *= t->shape[d];
    double bound = role == 1 ? 1.0 / sqrt((double)fan_in) : 0.5;
    for (int64_t i = 0; role == 2 && i < t->row0 * w->rank; i++) /* the rows above a slice */
        splitmix64(&state);
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(&state) >> 11) * (1.0 / 9007199254740992.0);
        f[i] = (float)((2.0 * u - 1.0) * bound);
    }
    for (size_t i = 0; role == 2 && t->swap && i < n / 2; i++) {
        float v = f[i];
        f[i] = f[i + n / 2];
        f[i + n / 2] = v;
    }
    return SD_OK;
}

/* A target under key patching the tensor (or row slice) of shape ndim/shape, values from seed_name. */
static void add_target(writer *w, const char *key, const char *seed_name, int ndim, const int64_t *shape)
{
    rand_target *t = &w->targets[w->n];
    snprintf(t->key, sizeof t->key, "%s", key);
    snprintf(t->seed_name, sizeof t->seed_name, "%s", seed_name);
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof t->shape);
    t->alpha = (float)w->rank / 2.0f;
    t->row0 = 0;
    t->swap = false;
    w->n++;
}

/* Every Linear of a FLUX transformer, under the FLUX names of the layout (lora.h); the diffusers
 * slices of a fused tensor carry that tensor's values. */
static void add_flux(writer *w, const sd_flux_config *cfg, const sd_layout *flux)
{
    for (size_t i = 0; i < flux->n; i++) {
        const sd_layout_entry *e = &flux->entries[i];
        char key[192], base[128];
        if (e->kind != SD_PARAM_WEIGHT || e->ndim != 2)
            continue;
        snprintf(base, sizeof base, "%.*s", (int)(strlen(e->name) - 7), e->name);
        if (w->layout == SD_LORA_KOHYA || w->layout == SD_LORA_BFL) {
            if (w->layout == SD_LORA_KOHYA)
                kohya_key(key, sizeof key, "lora_unet_", e->name);
            else
                snprintf(key, sizeof key, "diffusion_model.%s", base);
            add_target(w, key, e->name, 2, e->shape);
            continue;
        }
        sd_flux_diffusers_name d[4];
        int n = sd_flux_diffusers_names(cfg, base, d);
        for (int k = 0; k < n; k++) {
            int64_t shape[4] = {d[k].rows ? d[k].rows : e->shape[0], e->shape[1]};
            if (w->layout == SD_LORA_PEFT) {
                snprintf(key, sizeof key, "transformer.%.95s", d[k].name);
            } else {
                char dotted[112];
                snprintf(dotted, sizeof dotted, "%.95s.weight", d[k].name);
                kohya_key(key, sizeof key, "lora_transformer_", dotted);
            }
            add_target(w, key, e->name, 2, shape);
            w->targets[w->n - 1].row0 = d[k].row0;
            w->targets[w->n - 1].swap = d[k].swap;
        }
    }
}

static void add_unet(sd_context *ctx, writer *w, const sd_unet_config *cfg, const sd_layout *unet, sd_status *st)
{
    for (size_t i = 0; !*st && i < unet->n; i++) {
        const sd_layout_entry *e = &unet->entries[i];
        char diff[192], key[192];
        if (!unet_selected(e))
            continue;
        if (w->layout != SD_LORA_KOHYA_LDM && !sd_unet_diffusers_name(cfg, e->name, diff, sizeof diff)) {
            *st = sd_set_error(ctx, SD_ERR_INVALID, "UNet tensor '%s' has no diffusers name", e->name);
            break;
        }
        if (w->layout == SD_LORA_PEFT)
            snprintf(key, sizeof key, "unet.%.*s", (int)(strlen(diff) - 7), diff);
        else
            kohya_key(key, sizeof key, "lora_unet_", w->layout == SD_LORA_KOHYA_LDM ? e->name : diff);
        add_target(w, key, e->name, e->ndim, e->shape);
    }
}

/* Text encoder slot's key for the transformers name `name` ("encoder.layers.0.self_attn.q_proj.weight");
 * single: the model's only text encoder (SD1, SD2: kohya's lora_te_). */
static void te_key(const writer *w, char *key, size_t size, int slot, bool single, const char *name)
{
    if (w->layout == SD_LORA_PEFT)
        snprintf(key, size, "%s.text_model.%.*s", slot ? "text_encoder_2" : "text_encoder", (int)(strlen(name) - 7),
                 name);
    else
        kohya_key(key, size, slot ? "lora_te2_text_model_" : single ? "lora_te_text_model_" : "lora_te1_text_model_",
                  name);
}

/* Every projection and MLP Linear of a transformers-layout text encoder. */
static void add_clip(writer *w, const sd_layout *clip, bool single)
{
    for (size_t i = 0; i < clip->n; i++) {
        char key[192];
        if (!clip_selected(&clip->entries[i]))
            continue;
        te_key(w, key, sizeof key, 0, single, clip->entries[i].name);
        add_target(w, key, clip->entries[i].name, clip->entries[i].ndim, clip->entries[i].shape);
    }
}

/* The same Linears of an open_clip text encoder under transformers' names, as LoRA files name
 * them: q/k/v patch the row thirds of the fused in_proj. */
static void add_open_clip(writer *w, const sd_clip_config *cfg, int slot, bool single)
{
    static const char *const names[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
    int64_t width = cfg->width, inter = cfg->intermediate;
    for (int l = 0; l < cfg->layers; l++)
        for (int k = 0; k < 6; k++) {
            char name[128], key[192], seed_name[160];
            int64_t shape[4] = {k == 4 ? inter : width, k == 5 ? inter : width};
            snprintf(name, sizeof name, "encoder.layers.%d.%s.weight", l, names[k]);
            snprintf(seed_name, sizeof seed_name, "open_clip.%s", name);
            te_key(w, key, sizeof key, slot, single, name);
            add_target(w, key, seed_name, 2, shape);
        }
}

sd_status sd_lora_write_random(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg, int rank,
                               uint64_t seed, sd_lora_layout layout)
{
    sd_layout unet = {0}, clip = {0};
    writer w = {.rank = rank, .seed = seed, .layout = layout};
    sd_st_entry *entries = NULL;
    char **names = NULL;
    sd_status st = SD_OK;
    if (rank < 1 || rank > 1024)
        return sd_set_error(ctx, SD_ERR_INVALID, "LoRA rank %d out of range (1 .. 1024)", rank);
    bool has_clip2 = cfg->has_clip && cfg->clip2_prefix, open_clip = cfg->has_clip && cfg->clip.open_clip;
    bool flux = cfg->family == SD_FAMILY_FLUX;
    if (cfg->has_unet)
        st = flux ? sd_layout_flux(ctx, &cfg->flux, "", &unet) : sd_layout_unet(ctx, &cfg->unet, "", &unet);
    if (!st && cfg->has_clip && !open_clip)
        st = sd_layout_clip(ctx, &cfg->clip, "", &clip);
    size_t cap = 4 * unet.n + clip.n + (open_clip ? 6 * (size_t)cfg->clip.layers : 0) +
                 (has_clip2 ? 6 * (size_t)cfg->clip2.layers : 0);
    if (!st && (!(w.targets = calloc(cap ? cap : 1, sizeof *w.targets)) ||
                !(entries = calloc(3 * (cap ? cap : 1), sizeof *entries)) ||
                !(names = calloc(3 * (cap ? cap : 1), sizeof *names))))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!st && flux)
        add_flux(&w, &cfg->flux, &unet);
    else if (!st)
        add_unet(ctx, &w, &cfg->unet, &unet, &st);
    if (!st && open_clip)
        add_open_clip(&w, &cfg->clip, 0, !has_clip2);
    else if (!st)
        add_clip(&w, &clip, !has_clip2);
    if (!st && has_clip2)
        add_open_clip(&w, &cfg->clip2, 1, false);
    for (size_t i = 0; !st && i < w.n; i++) {
        const rand_target *t = &w.targets[i];
        static const char *const kohya[3] = {".alpha", ".lora_down.weight", ".lora_up.weight"};
        static const char *const peft[3] = {".alpha", ".lora_A.weight", ".lora_B.weight"};
        for (int r = 0; r < 3; r++) {
            sd_st_entry *en = &entries[3 * i + (size_t)r];
            const char *suffix = (layout == SD_LORA_PEFT || layout == SD_LORA_BFL ? peft : kohya)[r];
            if (!(names[3 * i + (size_t)r] = sd_strfmt("%s%s", t->key, suffix))) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                break;
            }
            en->name = names[3 * i + (size_t)r];
            en->dtype = SD_ST_F32;
            if (r == 1) { /* down: [rank, in(, kh, kw)] */
                en->ndim = t->ndim;
                en->shape[0] = rank;
                for (int d = 1; d < t->ndim; d++)
                    en->shape[d] = t->shape[d];
            } else if (r == 2) { /* up: [out, rank(, 1, 1)] */
                en->ndim = t->ndim;
                en->shape[0] = t->shape[0];
                en->shape[1] = rank;
                for (int d = 2; d < t->ndim; d++)
                    en->shape[d] = 1;
            }
        }
    }
    if (!st)
        st = sd_safetensors_write(ctx, path, entries, 3 * w.n, NULL, fill, &w);
    for (size_t i = 0; names && i < 3 * w.n; i++)
        free(names[i]);
    free(names);
    free(entries);
    free(w.targets);
    sd_layout_free(&unet);
    sd_layout_free(&clip);
    return st;
}
