/* Deterministic random LoRA files in kohya layout for tests and goldens (see lora.h). */
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rand_target {
    char key[192];             /* "lora_unet_..." / "lora_te_..." without suffix */
    const sd_layout_entry *e;  /* the patched tensor */
    float alpha;
} rand_target;

typedef struct writer {
    rand_target *targets;
    size_t n;
    int rank;
    uint64_t seed;
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
    for (const char *p = t->e->name; *p; p++) /* the patched tensor's name: same values whatever the key */
        state = (state ^ (unsigned char)*p) * 0x100000001b3u;
    int64_t fan_in = 1;
    for (int d = 1; d < t->e->ndim; d++)
        fan_in *= t->e->shape[d];
    double bound = role == 1 ? 1.0 / sqrt((double)fan_in) : 0.5;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(&state) >> 11) * (1.0 / 9007199254740992.0);
        f[i] = (float)((2.0 * u - 1.0) * bound);
    }
    return SD_OK;
}

static void add_target(writer *w, const char *key, const sd_layout_entry *e)
{
    rand_target *t = &w->targets[w->n];
    snprintf(t->key, sizeof t->key, "%s", key);
    t->e = e;
    t->alpha = (float)w->rank / 2.0f;
    w->n++;
}

sd_status sd_lora_write_random(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg, int rank,
                               uint64_t seed, bool ldm_names)
{
    sd_layout unet = {0}, clip = {0};
    writer w = {.rank = rank, .seed = seed};
    sd_st_entry *entries = NULL;
    char **names = NULL;
    sd_status st = SD_OK;
    if (rank < 1 || rank > 1024)
        return sd_set_error(ctx, SD_ERR_INVALID, "LoRA rank %d out of range (1 .. 1024)", rank);
    if (cfg->has_unet)
        st = sd_layout_unet(ctx, &cfg->unet, "", &unet);
    if (!st && cfg->has_clip)
        st = sd_layout_clip(ctx, &cfg->clip, "", &clip);
    size_t cap = unet.n + clip.n;
    if (!st && (!(w.targets = calloc(cap ? cap : 1, sizeof *w.targets)) ||
                !(entries = calloc(3 * (cap ? cap : 1), sizeof *entries)) ||
                !(names = calloc(3 * (cap ? cap : 1), sizeof *names))))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < unet.n; i++) {
        const sd_layout_entry *e = &unet.entries[i];
        char diff[192], key[192];
        if (!unet_selected(e))
            continue;
        if (!ldm_names && !sd_unet_diffusers_name(&cfg->unet, e->name, diff, sizeof diff))
            st = sd_set_error(ctx, SD_ERR_INVALID, "UNet tensor '%s' has no diffusers name", e->name);
        if (!st)
            kohya_key(key, sizeof key, "lora_unet_", ldm_names ? e->name : diff);
        if (!st)
            add_target(&w, key, e);
    }
    for (size_t i = 0; !st && i < clip.n; i++) {
        char key[192];
        if (!clip_selected(&clip.entries[i]))
            continue;
        kohya_key(key, sizeof key, "lora_te_text_model_", clip.entries[i].name);
        add_target(&w, key, &clip.entries[i]);
    }
    for (size_t i = 0; !st && i < w.n; i++) {
        const sd_layout_entry *e = w.targets[i].e;
        static const char *const suffix[3] = {".alpha", ".lora_down.weight", ".lora_up.weight"};
        for (int r = 0; r < 3; r++) {
            sd_st_entry *en = &entries[3 * i + (size_t)r];
            if (!(names[3 * i + (size_t)r] = sd_strfmt("%s%s", w.targets[i].key, suffix[r]))) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                break;
            }
            en->name = names[3 * i + (size_t)r];
            en->dtype = SD_ST_F32;
            if (r == 1) { /* down: [rank, in(, kh, kw)] */
                en->ndim = e->ndim;
                en->shape[0] = rank;
                for (int d = 1; d < e->ndim; d++)
                    en->shape[d] = e->shape[d];
            } else if (r == 2) { /* up: [out, rank(, 1, 1)] */
                en->ndim = e->ndim;
                en->shape[0] = e->shape[0];
                en->shape[1] = rank;
                for (int d = 2; d < e->ndim; d++)
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
