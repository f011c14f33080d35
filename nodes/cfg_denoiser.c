/* The KSampler's model function (ComfyUI's CFGGuider with comfy/samplers.py calc_cond_batch):
 * the UNet on x / sqrt(sigma^2 + 1) at the nearest timestep, D = x - sigma * eps, each
 * conditioning entry averaged by strength, and classifier-free guidance
 * D = D_neg + (D_pos - D_neg) * cfg (the negative pass is skipped when cfg is 1). An entry with
 * a timestep range (ConditioningSetTimestepRange) takes part only in the calls whose sigma lies
 * in [sigma(end_percent), sigma(start_percent)]; a side none of whose entries takes part
 * predicts D = 0, as ComfyUI (get_area_and_mult, calc_cond_batch). Positive and negative entries
 * go through the UNet as one batch; conditionings of different token lengths are repeated to
 * their least common multiple (which leaves attention unchanged) when that is at most 4 times the
 * shorter, as ComfyUI's CONDCrossAttn does, else they run one by one.
 *
 * Areas and masks (ConditioningSetArea, ...Percentage, ConditioningSetMask) as comfy/samplers.py
 * resolve_areas_and_cond_masks_multidim, create_cond_with_same_area_if_none, get_area_and_mult
 * and calc_cond_batch: an entry with an area runs the UNet on that crop of x (and of the
 * inpainting concat, and with its ControlNet's hint resized to it) only, in batches of entries of
 * one size; each side's prediction is the per-value mean weighted by each entry's weight map
 * (nodes/conditioning.h sd_cond_area_mult). Entries without either take the unchanged path (one
 * weight per side). */
#include "nodes/cfg_denoiser.h"
#include "core/checked.h"
#include "ml/adapters/control_eval.h"
#include "ml/families/family.h"
#include "nodes/conditioning.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include "runtime-opencl/tensor.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LCM_RATIO 4 /* CONDCrossAttn.can_concat */

typedef struct sd_cfg_denoiser denoiser;

typedef struct cond_entry {
    const sd_tensor *cond; /* [cb, tokens, dim] */
    double strength;
    bool negative;
    const sd_control_link *control; /* ControlNets attached to the entry (borrowed), or NULL */
    bool control_to_uncond;
    /* InpaintModelConditioning's inputs for inpainting UNets (NULL when absent), and the entry's
     * own extra channels built from them (NULL: the denoiser's default concat). */
    const sd_tensor *concat_latent, *concat_mask;
    float *concat;
    /* ConditioningSetTimestepRange: the entry takes part in a model call at sigma only when
     * sigma_end <= sigma <= sigma_start (+-infinity without a range). */
    double sigma_start, sigma_end;
    /* ConditioningSetArea(Percentage) / ConditioningSetMask, resolved against the latent: the
     * entry's UNet input is rows ay .. ay + ah - 1, columns ax .. ax + aw - 1 of x (the whole
     * latent without an area), and its prediction is weighted by mult [mult_batch, ah, aw]
     * (item b uses plane b % mult_batch; NULL: strength everywhere). area is the area as
     * resolved, before clamping to the latent (ComfyUI matches areas on it). */
    bool has_area;
    int64_t area[4]; /* height, width, y, x */
    int64_t ah, aw, ay, ax;
    const sd_tensor *mask;
    double mask_strength;
    bool to_bounds;
    const float *mult;
    size_t mult_batch;
} cond_entry;

struct sd_cfg_denoiser {
    sd_node_run *r;
    sd_cl *cl;
    sd_unet *unet;
    const sd_model_sampling *ms;
    size_t batch, per_item; /* latent items and floats per item (4 * h * w) */
    int64_t h, w;
    int in_channels;       /* 4, or 9 for inpainting models */
    const sd_latent_format *preview; /* step previews with its RGB factors (NULL: none) */
    uint8_t *preview_rgb;  /* h * w * 3, allocated on the first preview */
    float *concat;         /* inpainting models: batch * 5 * h * w (mask, masked latent); owned */
    int64_t dim;           /* the UNet's context width */
    cond_entry *entries;
    size_t n_entries;
    size_t *active, n_active; /* the entries taking part at the current sigma (indices, in order) */
    size_t *next;             /* scratch: the entries taking part at a new sigma */
    size_t *order;         /* positions in active, grouped by UNet input size */
    size_t *group_start;   /* UNet calls: group g is the active entries order[start[g] .. start[g+1] - 1] */
    size_t *eps_at;        /* per active entry: where its prediction is in eps */
    size_t n_groups;
    sd_dtensor **contexts; /* per group, uploaded when the active entries change */
    double cfg;
    bool use_negative;
    float *x_in, *eps, *pos, *neg;
    double *pos_count, *neg_count; /* per-value weights when an entry has an area or mask, else NULL */
    float **mults;                 /* the entries' weight maps (shared by copies), owned */
    size_t n_mults;
    bool reported; /* the node's error is already recorded */
    sd_control_eval *control; /* NULL when no entry carries a ControlNet */
};

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A mask plane [mh, mw] resized bilinearly (align_corners false, as torch's interpolate) to
 * dst [h, w]; an equal size is copied as is. */
static void resize_plane(const float *src, int64_t mh, int64_t mw, int64_t h, int64_t w, float *dst)
{
    for (int64_t y = 0; y < h; y++) {
        double sy = fmax(((double)y + 0.5) * (double)mh / (double)h - 0.5, 0.0);
        int64_t y0 = (int64_t)sy, y1 = y0 + 1 < mh ? y0 + 1 : mh - 1;
        double fy = sy - (double)y0;
        for (int64_t x = 0; x < w; x++) {
            double sx = fmax(((double)x + 0.5) * (double)mw / (double)w - 0.5, 0.0);
            int64_t x0 = (int64_t)sx, x1 = x0 + 1 < mw ? x0 + 1 : mw - 1;
            double fx = sx - (double)x0;
            double v = (1 - fy) * ((1 - fx) * src[y0 * mw + x0] + fx * src[y0 * mw + x1]) +
                       fy * ((1 - fx) * src[y1 * mw + x0] + fx * src[y1 * mw + x1]);
            dst[y * w + x] = (float)v;
        }
    }
}

/* Entry i's area (ConditioningSetArea: [height, width, y, x] in latent units;
 * ConditioningSetAreaPercentage: ["percentage", height, width, y, x] as fractions, resolved
 * against the latent as ComfyUI's resolve_areas_and_cond_masks_multidim: max(1, round(height *
 * h)), max(1, round(width * w)), round(y * h), round(x * w), half to even as Python's round)
 * and mask (ConditioningSetMask) into e. */
static sd_status read_region(sd_node_run *r, const denoiser *d, const char *input, size_t i, const json_t *attrs,
                             const sd_value *v, cond_entry *e)
{
    json_t *area = json_object_get(attrs, "area"), *ms = json_object_get(attrs, "mask_strength");
    char name[32];
    snprintf(name, sizeof name, "mask.%zu", i);
    e->ah = d->h, e->aw = d->w;
    e->mask = sd_value_tensor(v, name);
    e->mask_strength = json_is_number(ms) ? json_number_value(ms) : 1.0;
    e->to_bounds = json_is_true(json_object_get(attrs, "set_area_to_bounds"));
    if (e->mask && (e->mask->ndim != 3 || e->mask->shape[0] < 1 || e->mask->shape[1] < 1 || e->mask->shape[2] < 1))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's mask is not [batch, height, width]", input, i);
    if (!area)
        return SD_OK;
    bool pct = json_array_size(area) == 5 && json_is_string(json_array_get(area, 0)) &&
               strcmp(json_string_value(json_array_get(area, 0)), "percentage") == 0;
    bool ok = json_array_size(area) == (pct ? 5u : 4u);
    double a[4];
    for (size_t k = 0; ok && k < 4; k++) {
        json_t *x = json_array_get(area, k + pct);
        ok = pct ? json_is_number(x) : json_is_integer(x);
        a[k] = ok ? json_number_value(x) : 0;
    }
    if (!ok || (!pct && (a[0] < 1 || a[1] < 1 || a[2] < 0 || a[3] < 0)) ||
        (pct && !(a[0] >= 0 && a[1] >= 0 && a[2] >= 0 && a[3] >= 0 && a[0] <= 1 && a[1] <= 1 && a[2] <= 1 &&
                  a[3] <= 1)))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's area is not [height, width, y, x]", input, i);
    if (pct) {
        a[0] = fmax(1, rint(a[0] * (double)d->h)), a[1] = fmax(1, rint(a[1] * (double)d->w));
        a[2] = rint(a[2] * (double)d->h), a[3] = rint(a[3] * (double)d->w);
    }
    e->has_area = true;
    for (int k = 0; k < 4; k++)
        e->area[k] = (int64_t)fmin(a[k], 1e15);
    return SD_OK;
}

/* Reads a CONDITIONING input's entries into d->entries (appending). */
static sd_status read_conditioning(sd_node_run *r, denoiser *d, const char *input, bool negative)
{
    int64_t dim = d->dim;
    sd_value *v = sd_run_value(r, input);
    size_t n;
    json_t *list = sd_node_cond_entries(r, input, &n);
    if (!list)
        return SD_ERR_INVALID;
    cond_entry *grown = realloc(d->entries, (d->n_entries + n) * sizeof *grown);
    if (!grown)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    d->entries = grown;
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "cond.%zu", i);
        const sd_tensor *t = sd_value_tensor(v, name);
        if (!t || t->ndim != 3 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] != dim)
            return sd_run_error(r, SD_ERR_INVALID,
                                "input '%s': entry %zu is not [batch, tokens, %lld] (a conditioning made "
                                "for another model?)",
                                input, i, (long long)dim);
        json_t *s = json_object_get(json_array_get(list, i), "strength");
        char lname[48], mname[48];
        snprintf(lname, sizeof lname, "concat_latent_image.%zu", i);
        snprintf(mname, sizeof mname, "concat_mask.%zu", i);
        cond_entry *e = &d->entries[d->n_entries++];
        *e = (cond_entry){.cond = t, .strength = json_is_number(s) ? json_number_value(s) : 1.0,
                          .negative = negative, .concat_latent = sd_value_tensor(v, lname),
                          .concat_mask = sd_value_tensor(v, mname)};
        e->control = sd_cond_control(v, i, &e->control_to_uncond);
        /* comfy/samplers.py calculate_start_end_timesteps: each bound only when given */
        json_t *start = json_object_get(json_array_get(list, i), "start_percent");
        json_t *end = json_object_get(json_array_get(list, i), "end_percent");
        e->sigma_start = json_is_number(start) ? sd_model_sampling_percent_to_sigma(d->ms, json_number_value(start))
                                               : INFINITY;
        e->sigma_end = json_is_number(end) ? sd_model_sampling_percent_to_sigma(d->ms, json_number_value(end))
                                           : -INFINITY;
        sd_status st = read_region(r, d, input, i, json_array_get(list, i), v, e);
        if (st)
            return st;
    }
    return SD_OK;
}

static const char *side_name(const cond_entry *e)
{
    return e->negative ? "negative" : "positive";
}

/* Entry e (number i of its side): its mask resized to the latent, the mask's bounding box as
 * its area for "mask bounds" (ComfyUI's resolve_areas_and_cond_masks_multidim: at least 8 x 8;
 * 8 x 8 at the origin for an empty mask), the area clamped to the latent (get_area_and_mult),
 * and its weight map. */
static sd_status resolve_region(denoiser *d, cond_entry *e, size_t i)
{
    sd_node_run *r = d->r;
    size_t hw = (size_t)(d->h * d->w);
    float *mask = NULL;
    size_t mb = 1;
    sd_status st = SD_OK;
    if (e->mask) {
        mb = (size_t)e->mask->shape[0] < d->batch ? (size_t)e->mask->shape[0] : d->batch; /* mask[:batch] */
        if (d->batch % mb)
            return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's mask has a batch of %zu, which does not "
                                "divide the latent's batch of %zu", side_name(e), i, mb, d->batch);
        if (!(mask = malloc(mb * hw * sizeof *mask)))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        int64_t mh = e->mask->shape[1], mw = e->mask->shape[2];
        for (size_t b = 0; b < mb; b++)
            resize_plane(e->mask->data + b * (size_t)(mh * mw), mh, mw, d->h, d->w, mask + b * hw);
    }
    if (e->mask && e->to_bounds) {
        int64_t y0 = d->h, y1 = -1, x0 = d->w, x1 = -1;
        for (size_t b = 0; b < mb; b++)
            for (int64_t y = 0; y < d->h; y++)
                for (int64_t x = 0; x < d->w; x++)
                    if (mask[b * hw + (size_t)(y * d->w + x)] != 0.0f) {
                        y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
                        x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                    }
        e->has_area = true;
        if (y1 < 0)
            memcpy(e->area, (const int64_t[]){8, 8, 0, 0}, sizeof e->area);
        else
            memcpy(e->area, (const int64_t[]){y1 - y0 + 1 > 8 ? y1 - y0 + 1 : 8, x1 - x0 + 1 > 8 ? x1 - x0 + 1 : 8, y0, x0},
                   sizeof e->area);
    }
    if (e->has_area) {
        if (e->area[2] >= d->h || e->area[3] >= d->w) {
            st = sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's area starts at x %lld, y %lld (latent "
                              "units), outside the %lldx%lld latent", side_name(e), i, (long long)e->area[3],
                              (long long)e->area[2], (long long)d->w, (long long)d->h);
            goto done;
        }
        e->ay = e->area[2], e->ax = e->area[3];
        e->ah = e->area[0] < d->h - e->ay ? e->area[0] : d->h - e->ay;
        e->aw = e->area[1] < d->w - e->ax ? e->area[1] : d->w - e->ax;
    }
    if (!e->has_area && !e->mask)
        goto done;
    float *mult = malloc(mb * (size_t)(e->ah * e->aw) * sizeof *mult), **grown = NULL;
    if (!mult || !(grown = realloc(d->mults, (d->n_mults + 1) * sizeof *grown))) {
        free(mult);
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    d->mults = grown;
    d->mults[d->n_mults++] = mult;
    const int64_t area[4] = {e->ah, e->aw, e->ay, e->ax};
    for (size_t b = 0; b < mb; b++)
        sd_cond_area_mult(d->h, d->w, area, mask ? mask + b * hw : NULL, e->mask_strength, e->strength,
                          mult + b * (size_t)(e->ah * e->aw));
    e->mult = mult;
    e->mult_batch = mb;
done:
    free(mask);
    return st;
}

/* Whether area a lies inside area b (both height, width, y, x). */
static bool area_inside(const int64_t *a, const int64_t *b)
{
    return a[2] >= b[2] && a[3] >= b[3] && a[0] + a[2] <= b[0] + b[2] && a[1] + a[3] <= b[1] + b[3];
}

/* ComfyUI's create_cond_with_same_area_if_none: for entry c with an area, the other side's
 * entry that encloses it most tightly (an entry without an area encloses everything but loses
 * to any with one) lends its tokens and inpainting inputs to a copy of c on the other side,
 * unless its area is c's. Appends the copy to other (room for it is the caller's). */
static void same_area(const cond_entry *c, cond_entry *other, size_t *n_other)
{
    const cond_entry *best = NULL;
    if (!c->has_area)
        return;
    for (size_t k = 0; k < *n_other; k++) {
        const cond_entry *x = &other[k];
        if (x->has_area ? area_inside(c->area, x->area) &&
                              (!best || !best->has_area || best->area[0] * best->area[1] > x->area[0] * x->area[1])
                        : !best)
            best = x;
    }
    if (!best || (best->has_area && memcmp(best->area, c->area, sizeof c->area) == 0))
        return;
    cond_entry copy = *c;
    copy.negative = !c->negative;
    copy.cond = best->cond;
    copy.concat_latent = best->concat_latent;
    copy.concat_mask = best->concat_mask;
    other[(*n_other)++] = copy;
}

/* Resolves every entry's area and mask, then gives each area an opposite entry of the same area
 * as ComfyUI's process_conds (positive entries first, then the negative ones). */
static sd_status resolve_regions(denoiser *d)
{
    size_t np = 0, nn, i;
    bool any = false;
    for (i = 0; i < d->n_entries; i++) {
        cond_entry *e = &d->entries[i];
        np += !e->negative;
        sd_status st = resolve_region(d, e, e->negative ? i - np : i);
        if (st)
            return st;
        any |= e->has_area;
    }
    if (!any)
        return SD_OK;
    nn = d->n_entries - np;
    size_t total = 2 * (np + nn), n_pos = np, n_neg = nn;
    cond_entry *pos = malloc(total * sizeof *pos), *neg = malloc(total * sizeof *neg);
    if (!pos || !neg) {
        free(pos), free(neg);
        return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    }
    memcpy(pos, d->entries, np * sizeof *pos);
    memcpy(neg, d->entries + np, nn * sizeof *neg);
    for (i = 0; i < np; i++)
        same_area(&pos[i], neg, &n_neg);
    for (i = 0; i < n_neg; i++) /* the copies just made find their own area among the positives */
        same_area(&neg[i], pos, &n_pos);
    cond_entry *grown = realloc(d->entries, (n_pos + n_neg) * sizeof *grown);
    if (grown) {
        memcpy(grown, pos, n_pos * sizeof *grown);
        memcpy(grown + n_pos, neg, n_neg * sizeof *grown);
        d->entries = grown;
        d->n_entries = n_pos + n_neg;
    }
    free(pos), free(neg);
    return grown ? SD_OK : sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
}

/* ControlNets attached with ControlNetApply act on the negative side too (ComfyUI's
 * apply_empty_x_to_equal_area, ml/adapters/control_eval.h): negative entries are rewritten. */
static sd_status control_fill_uncond(sd_node_run *r, denoiser *d)
{
    size_t np = 0, nn, n_out, n_area = 0;
    bool any = false;
    for (size_t i = 0; i < d->n_entries; i++)
        any |= d->entries[i].control != NULL;
    if (!any)
        return SD_OK;
    while (np < d->n_entries && !d->entries[np].negative)
        np++;
    /* Entries with an area take no part (ComfyUI's apply_empty_x_to_equal_area): the negative
     * ones are moved past the others, and kept as they are. */
    for (size_t i = np, k = np; i < d->n_entries; i++) {
        cond_entry e = d->entries[i];
        if (e.has_area) {
            n_area++;
            continue;
        }
        memmove(d->entries + k + 1, d->entries + k, (i - k) * sizeof e);
        d->entries[k++] = e;
    }
    nn = d->n_entries - np - n_area;
    const sd_control_link **chains = calloc(3 * (np + nn) + 1, sizeof *chains);
    size_t *src = calloc(np + nn + 1, sizeof *src);
    bool *flags = calloc(np + 1, sizeof *flags);
    cond_entry *grown = realloc(d->entries, (2 * (np + nn + n_area) + 1) * sizeof *grown);
    if (!chains || !src || !flags || !grown) {
        free(chains), free(src), free(flags);
        d->entries = grown ? grown : d->entries;
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    d->entries = grown;
    const sd_control_link **pos = chains + np + nn, **neg = pos + np;
    for (size_t i = 0; i < np + nn; i++) {
        *(i < np ? &pos[i] : &neg[i - np]) = d->entries[i].has_area ? NULL : d->entries[i].control;
        if (i < np)
            flags[i] = d->entries[i].control_to_uncond;
    }
    sd_control_fill_uncond(pos, flags, np, neg, nn, src, chains, &n_out);
    cond_entry *old_neg = d->entries + 2 * np + nn + n_area; /* the negatives, copied past the new ones */
    memcpy(old_neg, d->entries + np, (nn + n_area) * sizeof *old_neg);
    for (size_t j = 0; j < n_out; j++) {
        d->entries[np + j] = old_neg[src[j]];
        d->entries[np + j].control = chains[j];
    }
    memmove(d->entries + np + n_out, old_neg + nn, n_area * sizeof *old_neg);
    d->n_entries = np + n_out + n_area;
    free(chains), free(src), free(flags);
    return SD_OK;
}

/* Drops the negative entries when cfg 1 leaves them unused, and allocates the active-entry
 * lists (every entry is active until the first model call says otherwise). */
static sd_status drop_unused(denoiser *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->n_entries; i++)
        if (!d->entries[i].negative || d->use_negative)
            d->entries[k++] = d->entries[i];
    d->n_entries = k;
    d->active = calloc(k + 1, sizeof *d->active);
    d->next = calloc(k + 1, sizeof *d->next);
    d->eps_at = calloc(k + 1, sizeof *d->eps_at);
    if (!d->active || !d->next || !d->eps_at)
        return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

static void free_groups(denoiser *d)
{
    for (size_t g = 0; d->contexts && g < d->n_groups; g++)
        sd_dtensor_free(d->contexts[g]);
    free(d->contexts);
    free(d->group_start);
    free(d->order);
    d->contexts = NULL;
    d->group_start = NULL;
    d->order = NULL;
    d->n_groups = 0;
}

/* The entry at position k of the grouped active entries. */
static const cond_entry *grouped(const denoiser *d, size_t k)
{
    return &d->entries[d->active[d->order[k]]];
}

/* Splits the active entries into UNet calls: entries of one UNet input size (their area's),
 * together when their token lengths allow (CONDCrossAttn.can_concat), else one by one. Uploads
 * each call's context [entries * batch, lcm tokens, dim] (entry e's item b is its cond item
 * b % cb, repeated). */
static sd_status prepare_groups(denoiser *d)
{
    size_t n = d->n_active, placed = 0;
    int64_t dim = d->dim;
    free_groups(d);
    d->group_start = calloc(n + 1, sizeof *d->group_start);
    d->contexts = calloc(n + 1, sizeof *d->contexts);
    d->order = calloc(n + 1, sizeof *d->order);
    bool *taken = calloc(n + 1, sizeof *taken);
    if (!d->group_start || !d->contexts || !d->order || !taken) {
        free(taken);
        return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    }
    for (size_t first = 0; first < n; first++) {
        if (taken[first])
            continue;
        const cond_entry *a = &d->entries[d->active[first]];
        size_t c0 = placed;
        int64_t lcm = 1, lo = INT64_MAX;
        bool together = true;
        for (size_t i = first; i < n; i++) {
            const cond_entry *b = &d->entries[d->active[i]];
            if (taken[i] || b->ah != a->ah || b->aw != a->aw)
                continue;
            taken[i] = true;
            d->order[placed++] = i;
            int64_t t = b->cond->shape[1];
            lo = t < lo ? t : lo;
            lcm = lcm / gcd64(lcm, t) * t;
            if (lcm / lo > MAX_LCM_RATIO)
                together = false;
        }
        for (size_t k = c0; k < placed; k += together ? placed - c0 : 1)
            d->group_start[d->n_groups++] = k;
    }
    d->group_start[d->n_groups] = n;
    free(taken);
    for (size_t g = 0; g < d->n_groups; g++) {
        size_t k0 = d->group_start[g], k1 = d->group_start[g + 1];
        int64_t tokens = 1;
        for (size_t k = k0; k < k1; k++) {
            int64_t t = grouped(d, k)->cond->shape[1];
            tokens = tokens / gcd64(tokens, t) * t;
        }
        int64_t shape[3] = {(int64_t)((k1 - k0) * d->batch), tokens, dim};
        size_t numel;
        if (!sd_shape_bytes(shape, 3, 1, &numel))
            return sd_run_error(d->r, SD_ERR_LIMIT, "conditioning too large");
        float *host = malloc(numel * sizeof *host);
        if (!host)
            return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory for the conditioning");
        float *p = host;
        for (size_t k = k0; k < k1; k++) {
            const sd_tensor *c = grouped(d, k)->cond;
            size_t item = (size_t)(c->shape[1] * dim);
            for (size_t b = 0; b < d->batch; b++) {
                const float *src = c->data + (b % (size_t)c->shape[0]) * item;
                for (int64_t rep = 0; rep < tokens / c->shape[1]; rep++, p += item)
                    memcpy(p, src, item * sizeof *p);
            }
        }
        sd_status st = sd_dtensor_new(d->cl, SD_DTYPE_F32, 3, shape, &d->contexts[g]);
        if (!st)
            st = sd_dtensor_upload(d->contexts[g], host);
        free(host);
        if (st)
            return sd_node_model_fail(d->r, st);
    }
    return SD_OK;
}

/* Makes the active entries those taking part at sigma (ComfyUI's get_area_and_mult timestep
 * test: skipped when sigma > sigma_start or sigma < sigma_end) and regroups them when that set
 * changed. Without timestep ranges every entry is active and the groups are made once. */
static sd_status select_entries(denoiser *d, float sigma)
{
    size_t k = 0;
    for (size_t e = 0; e < d->n_entries; e++)
        if (!((double)sigma > d->entries[e].sigma_start || (double)sigma < d->entries[e].sigma_end))
            d->next[k++] = e;
    if (d->group_start && k == d->n_active && memcmp(d->next, d->active, k * sizeof *d->next) == 0)
        return SD_OK;
    memcpy(d->active, d->next, k * sizeof *d->active);
    d->n_active = k;
    return prepare_groups(d);
}

/* Copies the nc channels of item [*, h, w] of src cropped to e's area into dst
 * [nc, ah, aw]. */
static void crop_item(const denoiser *d, const cond_entry *e, const float *src, int nc, float *dst)
{
    for (int c = 0; c < nc; c++)
        for (int64_t y = 0; y < e->ah; y++)
            memcpy(dst + (c * e->ah + y) * e->aw, src + (c * d->h + e->ay + y) * d->w + e->ax,
                   (size_t)e->aw * sizeof *dst);
}

/* The ControlNet residuals for a call whose n_entries * batch items are in host (in_item floats
 * each, the latent's 4 channels first, ah x aw: the whole latent or the group's area). */
static sd_status control_call(denoiser *d, const sd_control_link *const *chains, size_t n_entries, const float *host,
                              size_t in_item, int64_t ah, int64_t aw, float sigma, float timestep,
                              const sd_dtensor *context, sd_control_residuals *res, const sd_unet_control **control)
{
    size_t items = n_entries * d->batch, item = (size_t)(4 * ah * aw);
    if (in_item == item) /* no extra channels: host already holds the latents back to back */
        return sd_control_eval_call(d->control, chains, n_entries, d->batch, host, ah, aw, sigma, timestep, context,
                                    res, control);
    float *x = malloc(items * item * sizeof *x);
    if (!x)
        return sd_set_error(d->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < items; i++)
        memcpy(x + i * item, host + i * in_item, item * sizeof *x);
    sd_status st = sd_control_eval_call(d->control, chains, n_entries, d->batch, x, ah, aw, sigma, timestep, context,
                                        res, control);
    free(x);
    return st;
}

/* One UNet call for group g: eps of every (active entry, item) of the group, on each entry's
 * area of the latent, into d->eps (the group's entries one after the other from
 * d->eps + k0 * batch * per_item; d->eps_at says where each is). */
static sd_status unet_group(denoiser *d, size_t g, float sigma)
{
    size_t k0 = d->group_start[g], k1 = d->group_start[g + 1], items = (k1 - k0) * d->batch;
    const cond_entry *e0 = grouped(d, k0);
    bool whole = e0->ah == d->h && e0->aw == d->w;
    size_t hw = (size_t)(e0->ah * e0->aw), in_item = (size_t)d->in_channels * hw;
    size_t full_item = (size_t)d->in_channels * (size_t)(d->h * d->w), out_item = 4 * hw;
    int64_t shape[4] = {(int64_t)items, d->in_channels, e0->ah, e0->aw};
    float *host = malloc(items * in_item * sizeof *host), *t = malloc(items * sizeof *t);
    sd_dtensor *x = NULL, *out = NULL;
    const sd_control_link **chains = calloc(k1 - k0, sizeof *chains);
    sd_control_residuals res = {0};
    const sd_unet_control *control = NULL;
    sd_status st = SD_OK;
    if (!host || !t || !chains) {
        st = sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
        d->reported = true;
        goto done;
    }
    float timestep = (float)sd_model_sampling_timestep(d->ms, sigma);
    for (size_t i = 0; i < items; i++) {
        size_t b = i % d->batch;
        const cond_entry *e = grouped(d, k0 + i / d->batch);
        const float *concat = e->concat ? e->concat : d->concat;
        size_t concat_item = full_item - d->per_item;
        if (whole) { /* as it was before areas: bit for bit the same input */
            memcpy(host + i * in_item, d->x_in + b * d->per_item, d->per_item * sizeof *host);
            if (concat)
                memcpy(host + i * in_item + d->per_item, concat + b * concat_item, concat_item * sizeof *host);
        } else { /* get_area_and_mult's input_x and CONDNoiseShape.process_cond's cropped concat */
            crop_item(d, e, d->x_in + b * d->per_item, 4, host + i * in_item);
            if (concat)
                crop_item(d, e, concat + b * concat_item, d->in_channels - 4, host + i * in_item + out_item);
        }
        t[i] = timestep;
    }
    for (size_t k = k0; k < k1; k++) {
        chains[k - k0] = grouped(d, k)->control;
        d->eps_at[d->order[k]] = k0 * d->batch * d->per_item + (k - k0) * d->batch * out_item;
    }
    if (!(st = sd_dtensor_new(d->cl, SD_DTYPE_F32, 4, shape, &x)) && !(st = sd_dtensor_upload(x, host)) &&
        (!d->control || !(st = control_call(d, chains, k1 - k0, host, in_item, e0->ah, e0->aw, sigma, timestep,
                                             d->contexts[g], &res, &control))) &&
        !(st = sd_unet_forward(d->unet, x, t, d->contexts[g], control, &out)))
        st = sd_dtensor_download(out, d->eps + k0 * d->batch * d->per_item);
done:
    sd_control_residuals_free(&res);
    free(chains);
    sd_dtensor_free(x);
    sd_dtensor_free(out);
    free(host);
    free(t);
    return st;
}

sd_status sd_cfg_denoise(void *user, const float *x, float sigma, float *out, size_t n)
{
    denoiser *d = user;
    float scale = sqrtf(sigma * sigma + 1.0f);
    for (size_t i = 0; i < n; i++)
        d->x_in[i] = x[i] / scale;
    sd_status st = select_entries(d, sigma);
    if (st) {
        d->reported = true; /* select_entries named the failure */
        return st;
    }
    for (size_t g = 0; g < d->n_groups; g++) {
        st = unet_group(d, g, sigma);
        if (st) {
            if (!d->reported)
                st = sd_node_model_fail(d->r, st);
            d->reported = true;
            return st;
        }
    }
    /* Weighted mean of the active entries' predictions, per side and value, as ComfyUI's
     * calc_cond_batch: out_cond / (out_count + 1e-37), each entry adding its prediction times
     * its weight (its strength, or its weight map over its area) and the weight; a value no
     * entry of a side covers (all outside their timestep ranges or areas, or of weight 0)
     * predicts 0. Without areas and masks one count per side serves every value. */
    memset(d->pos, 0, n * sizeof *d->pos);
    memset(d->neg, 0, n * sizeof *d->neg);
    if (d->pos_count) {
        memset(d->pos_count, 0, n * sizeof *d->pos_count);
        memset(d->neg_count, 0, n * sizeof *d->neg_count);
    }
    double wp = 0, wn = 0;
    for (size_t k = 0; k < d->n_active; k++) {
        const cond_entry *e = &d->entries[d->active[k]];
        const float *eps = d->eps + d->eps_at[k];
        float s = (float)e->strength, *acc = e->negative ? d->neg : d->pos;
        double *count = e->negative ? d->neg_count : d->pos_count;
        if (!e->mult) {
            for (size_t i = 0; i < n; i++)
                acc[i] += (x[i] - eps[i] * sigma) * s;
            *(e->negative ? &wn : &wp) += e->strength;
            for (size_t i = 0; count && i < n; i++)
                count[i] += e->strength;
            continue;
        }
        size_t plane = (size_t)(e->ah * e->aw);
        for (size_t b = 0; b < d->batch; b++)
            for (size_t c = 0; c < 4; c++)
                for (int64_t y = 0; y < e->ah; y++) {
                    size_t i = ((b * 4 + c) * (size_t)d->h + (size_t)(e->ay + y)) * (size_t)d->w + (size_t)e->ax;
                    const float *m = e->mult + (b % e->mult_batch) * plane + (size_t)(y * e->aw);
                    const float *p = eps + (b * 4 + c) * plane + (size_t)(y * e->aw);
                    for (int64_t xx = 0; xx < e->aw; xx++) {
                        acc[i + (size_t)xx] += (x[i + (size_t)xx] - p[xx] * sigma) * m[xx];
                        count[i + (size_t)xx] += m[xx];
                    }
                }
    }
    for (size_t i = 0; i < n; i++) {
        double cp = d->pos_count ? d->pos_count[i] : wp, cn = d->neg_count ? d->neg_count[i] : wn;
        float p = cp != 0 ? d->pos[i] / (float)cp : 0.0f;
        if (!d->use_negative) {
            out[i] = p;
            continue;
        }
        float u = cn != 0 ? d->neg[i] / (float)cn : 0.0f;
        out[i] = u + (p - u) * (float)d->cfg;
    }
    return SD_OK;
}

/* ComfyUI's latent-to-RGB preview of the first item of the denoised latent: rgb = bias + x0 .
 * factors per cell, mapped from [-1, 1] to bytes. NULL when out of memory (no preview then). */
static const uint8_t *preview_image(denoiser *d, const float *denoised)
{
    size_t cells = (size_t)(d->h * d->w);
    if (!d->preview_rgb && !(d->preview_rgb = malloc(cells * 3)))
        return NULL;
    const sd_latent_format *f = d->preview;
    int channels = f->channels < 4 ? f->channels : 4; /* the denoiser's latents have 4 channels */
    for (size_t p = 0; p < cells; p++)
        for (int c = 0; c < 3; c++) {
            float v = f->rgb_bias[c];
            for (int k = 0; k < channels; k++)
                v += denoised[(size_t)k * cells + p] * f->rgb_factors[k][c];
            v = (v + 1.0f) * 0.5f;
            d->preview_rgb[p * 3 + (size_t)c] = (uint8_t)(v <= 0.0f ? 0 : v >= 1.0f ? 255 : v * 255.0f + 0.5f);
        }
    return d->preview_rgb;
}

sd_status sd_cfg_on_step(void *user, int step, int steps, const float *x, const float *denoised, size_t n)
{
    (void)x;
    (void)n;
    denoiser *d = user;
    const uint8_t *rgb = d->preview && sd_run_wants_preview(d->r) ? preview_image(d, denoised) : NULL;
    sd_status st = sd_run_progress_preview(d->r, step + 1, steps, rgb, (int)d->w, (int)d->h);
    d->reported |= st != SD_OK;
    return st;
}

sd_status sd_noise_mask_resize(sd_node_run *r, const sd_tensor *m, size_t batch, int channels, int64_t h,
                               int64_t w, float *out)
{
    if (m->ndim < 2 || m->ndim > 4 || (m->ndim == 4 && m->shape[1] != 1))
        return sd_run_error(r, SD_ERR_INVALID, "latent noise_mask is not [batch, height, width]");
    int64_t mh = m->shape[m->ndim - 2], mw = m->shape[m->ndim - 1], mb = 1;
    for (int i = 0; i < m->ndim - 2; i++)
        mb *= m->shape[i];
    if (mh < 1 || mw < 1 || mb < 1)
        return sd_run_error(r, SD_ERR_INVALID, "latent noise_mask is empty");
    for (size_t b = 0; b < batch; b++) {
        float *dst = out + b * (size_t)channels * (size_t)(h * w);
        resize_plane(m->data + (size_t)((int64_t)b % mb) * (size_t)(mh * mw), mh, mw, h, w, dst);
        for (int c = 1; c < channels; c++)
            memcpy(dst + (size_t)c * (size_t)(h * w), dst, (size_t)(h * w) * sizeof *dst);
    }
    return SD_OK;
}

/* The inpainting UNet's extra channels (BaseModel.concat_cond) into out [batch, 5, h, w]: the
 * mask (concat_mask resized to the latent, else the noise mask) rounded half to even as torch,
 * then the masked-image latent (concat_latent_image times the VAE scale, else the scaled input
 * latent); without any mask, ones and the latent of a blank image. A concat_latent_image must
 * have the latent's size. */
static sd_status inpaint_concat(sd_node_run *r, const sd_tensor *c_latent, const sd_tensor *c_mask,
                                const float *noise_mask, const float *latent, float scale, size_t batch, int64_t h,
                                int64_t w, float *out)
{
    static const float blank[4] = {0.8223f, -0.6876f, 0.6364f, 0.1380f};
    size_t hw = (size_t)(h * w);
    float *mask1 = NULL;
    if (c_latent && (c_latent->ndim != 4 || c_latent->shape[0] < 1 || c_latent->shape[1] != 4 ||
                     c_latent->shape[2] != h || c_latent->shape[3] != w))
        return sd_run_error(r, SD_ERR_INVALID,
                            "the conditioning's inpainting image latent is not [batch, 4, %lld, %lld] like the "
                            "latent (make both from the same image)",
                            (long long)h, (long long)w);
    if (c_mask) {
        sd_status st;
        if (!(mask1 = malloc(batch * hw * sizeof *mask1)))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        if ((st = sd_noise_mask_resize(r, c_mask, batch, 1, h, w, mask1))) {
            free(mask1);
            return st;
        }
    }
    for (size_t b = 0; b < batch; b++) {
        float *o = out + b * 5 * hw;
        bool masked = mask1 || noise_mask;
        const float *cl = c_latent ? c_latent->data + (b % (size_t)c_latent->shape[0]) * 4 * hw : NULL;
        for (size_t i = 0; i < hw; i++)
            o[i] = !masked ? 1.0f : rintf(mask1 ? mask1[b * hw + i] : noise_mask[b * 4 * hw + i]);
        for (size_t c = 0; c < 4; c++)
            for (size_t i = 0; i < hw; i++)
                o[(1 + c) * hw + i] = !masked ? blank[c]
                                      : cl    ? cl[c * hw + i] * scale
                                              : latent[(b * 4 + c) * hw + i];
    }
    free(mask1);
    return SD_OK;
}

sd_status sd_cfg_denoiser_new(const sd_cfg_setup *s, sd_cfg_denoiser **out)
{
    sd_node_run *r = s->r;
    denoiser *d = calloc(1, sizeof *d);
    *out = d;
    if (!d)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    *d = (denoiser){.r = r, .cl = s->cl, .unet = s->unet, .ms = s->ms, .batch = s->batch, .h = s->h, .w = s->w,
                    .in_channels = s->in_channels, .dim = s->dim, .cfg = s->cfg, .preview = s->preview,
                    .use_negative = fabs(s->cfg - 1.0) > 1e-9};
    d->per_item = (size_t)(4 * d->h * d->w);
    size_t n = d->batch * d->per_item, n_eps;
    sd_status st;
    if ((st = read_conditioning(r, d, "positive", false)) || (st = read_conditioning(r, d, "negative", true)) ||
        (st = resolve_regions(d)) || (st = control_fill_uncond(r, d)) || (st = drop_unused(d)))
        return st;
    for (size_t e = 0; e < d->n_entries && !d->control; e++)
        if (d->entries[e].control && (st = sd_control_eval_new(sd_run_context(r), s->ms, &d->control)))
            return sd_node_model_fail(r, st);
    d->x_in = malloc(n * sizeof *d->x_in);
    d->pos = malloc(n * sizeof *d->pos);
    d->neg = malloc(n * sizeof *d->neg);
    if (!sd_mul_size(d->n_entries, n, &n_eps) || !d->x_in || !d->pos || !d->neg ||
        !(d->eps = malloc(n_eps * sizeof *d->eps)))
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a latent of %zu values", n);
    for (size_t e = 0; e < d->n_entries && !d->pos_count; e++)
        if (d->entries[e].mult && (!(d->pos_count = calloc(n, sizeof *d->pos_count)) ||
                                   !(d->neg_count = calloc(n, sizeof *d->neg_count))))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

sd_status sd_cfg_denoiser_inpaint(sd_cfg_denoiser *d, const float *noise_mask, const float *latent, float scale)
{
    size_t item = 5 * (size_t)(d->h * d->w);
    if (!(d->concat = malloc(d->batch * item * sizeof *d->concat)))
        return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    sd_status st = inpaint_concat(d->r, NULL, NULL, noise_mask, latent, scale, d->batch, d->h, d->w, d->concat);
    for (size_t e = 0; !st && e < d->n_entries; e++) {
        cond_entry *ce = &d->entries[e];
        if (!ce->concat_latent && !ce->concat_mask)
            continue;
        if (!(ce->concat = malloc(d->batch * item * sizeof *ce->concat)))
            return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
        st = inpaint_concat(d->r, ce->concat_latent, ce->concat_mask, noise_mask, latent, scale, d->batch, d->h, d->w,
                            ce->concat);
    }
    return st;
}

bool sd_cfg_denoiser_reported(const sd_cfg_denoiser *d)
{
    return d->reported;
}

void sd_cfg_denoiser_free(sd_cfg_denoiser *d)
{
    if (!d)
        return;
    sd_control_eval_free(d->control);
    free_groups(d);
    free(d->active);
    free(d->next);
    for (size_t e = 0; d->entries && e < d->n_entries; e++)
        free(d->entries[e].concat);
    free(d->entries);
    free(d->concat);
    free(d->preview_rgb);
    free(d->x_in);
    free(d->eps);
    free(d->eps_at);
    free(d->pos_count);
    free(d->neg_count);
    for (size_t m = 0; m < d->n_mults; m++)
        free(d->mults[m]);
    free(d->mults);
    free(d->pos);
    free(d->neg);
    free(d);
}
