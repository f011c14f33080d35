/* The sampling nodes' model function (ComfyUI's CFGGuider, Guider_Basic and Guider_DualCFG with
 * comfy/samplers.py calc_cond_batch): the UNet on x / sqrt(sigma^2 + sigma_data^2) at the model timestep
 * (the FLUX transformer on x at timestep sigma, with each entry's pooled output and guidance),
 * D from its output as the model sampling says (eps: x - sigma * eps; v-prediction, x0, LCM;
 * flow: x - sigma * v),
 * each side's conditioning entries averaged by strength, then the guider's
 * combination: BasicGuider D_pos; CFGGuider D_neg + (D_pos - D_neg) * cfg (the negative pass is
 * skipped when cfg is 1); DualCFGGuider regular D_neg + (D_mid - D_neg) * cfg2 +
 * (D_pos - D_mid) * cfg1 (negative skipped when cfg2 is 1, middle too when cfg1 is also 1) and
 * nested D_neg + cfg2 * (D_mid + (D_pos - D_mid) * cfg1 - D_neg). CFG++ samplers also get the
 * unguided prediction (CFG: D_neg; regular dual: D_neg; nested: D_mid; basic: 0), every side
 * then being computed whatever the scales (disable_cfg1_optimization). An entry with
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
 * weight per side).
 *
 * A model patched by RescaleCFG has the CFGGuider's mix rescaled in v space (rescale_cfg).
 *
 * ADM UNets (SDXL) also take each entry's "y" vector, built once from its pooled output and size
 * conditioning (read_adm) and batched with the contexts.
 *
 * FLUX entries with a "key_bias" (StyleModelApply's attn_bias) add it to the attention scores of
 * those context keys for every query, as ComfyUI's attention_mask; only entries with the same
 * bias batch. */
#include "nodes/cfg_denoiser.h"
#include "core/checked.h"
#include "core/half.h"
#include "ml/adapters/control_eval.h"
#include "ml/families/adm.h"
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
#define MAX_SIDES SD_GUIDER_MAX_CONDS

typedef struct sd_cfg_denoiser denoiser;

typedef struct cond_entry {
    const sd_tensor *cond; /* [cb, tokens, dim] */
    double strength;
    int side; /* the guider's conditioning it belongs to (0: positive) */
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
    /* ADM UNets (SDXL): the entry's ADM vectors [adm_rows, adm width], one per item of its
     * pooled output (owned by the denoiser's adms; copies share them). */
    const float *adm;
    size_t adm_rows;
    /* FLUX: the entry's "guidance" attribute (FluxGuidance; 3.5 when absent as ComfyUI's Flux
     * extra_conds, NAN when FluxDisableGuidance set it to null). */
    float guidance;
    /* FLUX: StyleModelApply's attention bias on the entry's keys (its "key_bias" attribute,
     * borrowed; NULL: none), see key_bias_fill. */
    const json_t *key_bias;
} cond_entry;

struct sd_cfg_denoiser {
    sd_node_run *r;
    sd_cl *cl;
    sd_unet *unet;
    sd_flux *flux;         /* instead of unet for FLUX models */
    const sd_model_sampling *ms;
    int channels;          /* latent channels: 4, or 16 for FLUX */
    size_t batch, per_item; /* latent items and floats per item (channels * h * w) */
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
    const sd_guider *g;
    bool need_uncond;
    bool used[MAX_SIDES];  /* sides that are computed (ComfyUI's cfg 1 optimisation drops others) */
    float *x_in, *eps, *acc[MAX_SIDES];
    double *count[MAX_SIDES]; /* per-value weights when an entry has an area or mask, else NULL */
    sd_dtensor **ys;       /* per group, the ADM vectors (ADM UNets only), uploaded with contexts */
    int adm_dim;           /* the UNet's ADM width (0: none) */
    const float *unclip_mean, *unclip_std; /* SD2 unCLIP's noise augmentor statistics (NULL: 0 and 1) */
    float **adms;          /* the entries' ADM vectors, owned */
    size_t n_adms;
    float **mults;                 /* the entries' weight maps (shared by copies), owned */
    size_t n_mults;
    bool reported; /* the node's error is already recorded */
    sd_control_eval *control; /* NULL when no entry carries a ControlNet */
    double rescale;        /* RescaleCFG multiplier (< 0: none) */
    const sd_ipa_patch **ipa; /* the model's IP-Adapters, oldest first (NULL: none) */
    uint64_t seed;            /* the sampler's noise seed */
    size_t n_ipa;
    sd_model_precision precision; /* the model's forward calls' */
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

/* A number of an entry's JSON attributes, or def when it has none. */
static double attr_number(const json_t *attrs, const char *key, double def)
{
    json_t *v = json_object_get(attrs, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

/* unCLIPConditioning's image embeddings on entry i (tensor "unclip.i", attribute "unclip") through
 * the model's noise augmentation (ml/families/adm.h sd_adm_unclip, seed - 10): *out a malloc'd
 * vector of 2 * a->dim floats, or NULL when the entry has none. hint names the image tower the
 * model needs (for the message on embeddings of another width). */
static sd_status unclip_vector(sd_node_run *r, const denoiser *d, const char *input, size_t i, const json_t *attrs,
                               const sd_value *v, const sd_unclip_noise *a, const char *hint, float **out)
{
    char name[32];
    snprintf(name, sizeof name, "unclip.%zu", i);
    const sd_tensor *t = sd_value_tensor(v, name);
    const json_t *list = json_object_get(attrs, "unclip");
    *out = NULL;
    if (!t || !json_is_array(list))
        return SD_OK;
    if (t->ndim != 2 || t->shape[1] != a->dim)
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's unCLIP image embeddings are %lld wide; the "
                            "model's ADM input takes %d (%s)", input, i,
                            (long long)(t->ndim == 2 ? t->shape[1] : 0), a->dim, hint);
    int rows = (int)t->shape[0], row = 0;
    double *strength = calloc((size_t)rows, sizeof *strength), *aug = calloc((size_t)rows, sizeof *aug);
    float *data = malloc(2 * (size_t)a->dim * sizeof *data);
    size_t k;
    const json_t *rec;
    json_array_foreach(list, k, rec) {
        json_int_t n = json_integer_value(json_object_get(rec, "rows"));
        for (json_int_t j = 0; strength && aug && j < n && row < rows; j++, row++) {
            strength[row] = json_number_value(json_object_get(rec, "strength"));
            aug[row] = json_number_value(json_object_get(rec, "noise_augmentation"));
        }
    }
    if (!strength || !aug || !data || !sd_adm_unclip(a, t->data, strength, aug, rows, d->seed - 10, data)) {
        free(strength), free(aug), free(data);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    free(strength), free(aug);
    *out = data;
    return SD_OK;
}

/* Keeps adm (malloc'd, rows x the ADM width) as entry e's ADM vectors; frees it on failure. */
static sd_status keep_adm(sd_node_run *r, denoiser *d, cond_entry *e, float *adm, size_t rows)
{
    float **grown = adm ? realloc(d->adms, (d->n_adms + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(adm);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    d->adms = grown;
    d->adms[d->n_adms++] = adm;
    e->adm = adm;
    e->adm_rows = rows;
    return SD_OK;
}

/* SD2 unCLIP's ADM vector of entry i (ComfyUI's SD21UNCLIP.encode_adm): the unCLIP image
 * embeddings through the checkpoint's noise augmentor (merge 0.05), or zeros without them. */
static sd_status read_unclip_adm(sd_node_run *r, denoiser *d, const char *input, size_t i, const json_t *attrs,
                                 const sd_value *v, cond_entry *e)
{
    sd_unclip_noise a = {.dim = d->adm_dim / 2, .mean = d->unclip_mean, .std = d->unclip_std, .merge = 0.05};
    float *adm = NULL;
    sd_status st = unclip_vector(r, d, input, i, attrs, v, &a, "SD2 unCLIP-H takes ViT-H/14's 1024, -L ViT-L/14's 768",
                                 &adm);
    if (st)
        return st;
    return keep_adm(r, d, e, adm ? adm : calloc((size_t)d->adm_dim, sizeof *adm), 1);
}

/* Entry i's ADM vectors from its pooled output and size conditioning, as ComfyUI's encode_adm
 * with encode_model_conds' defaults: width and height the latent's times 8, crops 0, targets the
 * width and height, aesthetic score 6 (positive) or 2.5 (negative); SDXL's pooled output from
 * unCLIPConditioning's image embeddings when the entry has them (sdxl_pooled). */
static sd_status read_adm(sd_node_run *r, denoiser *d, const char *input, size_t i, const json_t *attrs,
                          const sd_value *v, cond_entry *e)
{
    char name[32];
    snprintf(name, sizeof name, "pooled.%zu", i);
    const sd_tensor *p = sd_value_tensor(v, name);
    sd_adm_kind kind = d->flux ? SD_ADM_NONE : sd_unet_config_of(d->unet)->adm;
    if (kind == SD_ADM_UNCLIP)
        return read_unclip_adm(r, d, input, i, attrs, v, e);
    int n = d->flux ? 0 : sd_adm_embeddings(kind);
    sd_unclip_noise a = {.dim = d->adm_dim - SD_ADM_EMBED_DIM * n};
    float *pooled = NULL;
    sd_status st = d->flux ? SD_OK
                           : unclip_vector(r, d, input, i, attrs, v, &a, "SDXL Revision needs ViT-bigG/14's 1280", &pooled);
    if (st)
        return st;
    sd_tensor unclip = {.ndim = 2, .shape = {1, a.dim}, .data = pooled}; /* its first dim values */
    if (pooled)
        p = &unclip;
    if (!p || p->ndim != 2 || p->shape[0] < 1 || p->shape[1] + SD_ADM_EMBED_DIM * n != d->adm_dim) {
        free(pooled);
        return sd_run_error(r, SD_ERR_INVALID,
                            "input '%s': entry %zu has no pooled output of width %d, which the model's ADM input "
                            "needs (a conditioning made for another model?)",
                            input, i, d->adm_dim - SD_ADM_EMBED_DIM * n);
    }
    float *adm = malloc((size_t)p->shape[0] * (size_t)d->adm_dim * sizeof *adm);
    double w = attr_number(attrs, "width", (double)(d->w * 8)), h = attr_number(attrs, "height", (double)(d->h * 8));
    sd_adm_params prm = {.width = w, .height = h, .crop_w = attr_number(attrs, "crop_w", 0),
                         .crop_h = attr_number(attrs, "crop_h", 0), .target_width = attr_number(attrs, "target_width", w),
                         .target_height = attr_number(attrs, "target_height", h),
                         .aesthetic_score = attr_number(attrs, "aesthetic_score", strcmp(d->g->names[e->side], "negative") ? 6.0 : 2.5)};
    for (int64_t b = 0; adm && b < p->shape[0]; b++) /* FLUX: the pooled vector itself */
        if (d->flux)
            memcpy(adm + b * d->adm_dim, p->data + b * p->shape[1], (size_t)d->adm_dim * sizeof *adm);
        else
            sd_adm_vector(kind, p->data + b * p->shape[1], (int)p->shape[1], &prm, adm + b * d->adm_dim);
    size_t rows = (size_t)p->shape[0];
    free(pooled);
    return keep_adm(r, d, e, adm, rows);
}

/* The spans of a "key_bias" attribute: [[start, count, strength], ...] over the tokens (as
 * nodes/style_model.c writes them); false when it is malformed or a span passes `tokens`. */
static bool key_bias_valid(const json_t *spans, int64_t tokens)
{
    size_t i;
    const json_t *span;
    if (!json_is_array(spans))
        return false;
    json_array_foreach(spans, i, span) {
        json_int_t start = json_integer_value(json_array_get(span, 0)), count = json_integer_value(json_array_get(span, 1));
        if (json_array_size(span) != 3 || !json_is_number(json_array_get(span, 2)) || start < 0 || count < 1 ||
            start > tokens - count)
            return false;
    }
    return true;
}

/* bias[tokens]: 0, and on each span float16(log(strength)) as ComfyUI's float16 attention_mask
 * (log 0 = -inf masks the keys). */
static void key_bias_fill(const json_t *spans, int64_t tokens, float *bias)
{
    size_t i;
    const json_t *span;
    memset(bias, 0, (size_t)tokens * sizeof *bias);
    json_array_foreach(spans, i, span) {
        json_int_t start = json_integer_value(json_array_get(span, 0)), count = json_integer_value(json_array_get(span, 1));
        float b = sd_half_to_float(sd_float_to_half((float)log(json_number_value(json_array_get(span, 2)))));
        for (json_int_t j = start; j < start + count; j++)
            bias[j] = b;
    }
}

/* Entry i's key bias: well formed, and on a FLUX model (the only one whose attention takes it). */
static sd_status check_key_bias(sd_node_run *r, const denoiser *d, const char *input, size_t i, const cond_entry *e)
{
    if (!d->flux)
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu has StyleModelApply's attn_bias, which only a "
                            "FLUX model takes", input, i);
    if (!key_bias_valid(e->key_bias, e->cond->shape[1]))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's key_bias is not [[start, count, strength], "
                            "...] within its %lld tokens", input, i, (long long)e->cond->shape[1]);
    return SD_OK;
}

/* Reads the entries of the guider's conditioning `side` into d->entries (appending). */
static sd_status read_conditioning(sd_node_run *r, denoiser *d, int side)
{
    int64_t dim = d->dim;
    const sd_value *v = d->g->conds[side];
    const char *input = d->g->names[side];
    size_t n;
    json_t *list = sd_cond_entries(r, v, input, &n);
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
                          .side = side, .concat_latent = sd_value_tensor(v, lname),
                          .concat_mask = sd_value_tensor(v, mname)};
        e->control = sd_cond_control(v, i, &e->control_to_uncond);
        /* comfy/samplers.py calculate_start_end_timesteps: each bound only when given */
        json_t *start = json_object_get(json_array_get(list, i), "start_percent");
        json_t *end = json_object_get(json_array_get(list, i), "end_percent");
        e->sigma_start = json_is_number(start) ? sd_model_sampling_percent_to_sigma(d->ms, json_number_value(start))
                                               : INFINITY;
        e->sigma_end = json_is_number(end) ? sd_model_sampling_percent_to_sigma(d->ms, json_number_value(end))
                                           : -INFINITY;
        json_t *guidance = json_object_get(json_array_get(list, i), "guidance");
        e->guidance = json_is_number(guidance) ? (float)json_number_value(guidance) : guidance ? NAN : 3.5f;
        e->key_bias = json_object_get(json_array_get(list, i), "key_bias");
        sd_status st = e->key_bias ? check_key_bias(r, d, input, i, e) : SD_OK;
        if (!st)
            st = read_region(r, d, input, i, json_array_get(list, i), v, e);
        if (!st && d->adm_dim)
            st = read_adm(r, d, input, i, json_array_get(list, i), v, e);
        if (st)
            return st;
    }
    return SD_OK;
}

static const char *side_name(const denoiser *d, const cond_entry *e)
{
    return d->g->names[e->side];
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
                                "divide the latent's batch of %zu", side_name(d, e), i, mb, d->batch);
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
                              "units), outside the %lldx%lld latent", side_name(d, e), i, (long long)e->area[3],
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

/* ComfyUI's create_cond_with_same_area_if_none: for entry c with an area, the entry of another
 * side that encloses it most tightly (an entry without an area encloses everything but loses to
 * any with one) lends its tokens and inpainting inputs to a copy of c on that side, unless its
 * area is c's. Appends the copy to other, the entries of side `side` (room for it is the
 * caller's). */
static void same_area(const cond_entry *c, cond_entry *other, size_t *n_other, int side)
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
    copy.side = side;
    copy.cond = best->cond;
    copy.concat_latent = best->concat_latent;
    copy.concat_mask = best->concat_mask;
    copy.adm = best->adm; /* ComfyUI copies the lender's model_conds: its y too */
    copy.adm_rows = best->adm_rows;
    other[(*n_other)++] = copy;
}

/* Where side `side`'s entries start in d->entries (which is ordered by side), and how many. */
static size_t side_range(const denoiser *d, int side, size_t *count)
{
    size_t start = 0, end;
    while (start < d->n_entries && d->entries[start].side < side)
        start++;
    for (end = start; end < d->n_entries && d->entries[end].side == side; end++)
        ;
    *count = end - start;
    return start;
}

/* Replaces side `side`'s entries with the n of block (copied). */
static sd_status replace_side(denoiser *d, int side, const cond_entry *block, size_t n)
{
    size_t count, start = side_range(d, side, &count), tail = d->n_entries - start - count;
    cond_entry *e = malloc((start + n + tail + 1) * sizeof *e);
    if (!e)
        return sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    memcpy(e, d->entries, start * sizeof *e);
    memcpy(e + start, block, n * sizeof *e);
    memcpy(e + start + n, d->entries + start + count, tail * sizeof *e);
    free(d->entries);
    d->entries = e;
    d->n_entries = start + n + tail;
    return SD_OK;
}

/* Resolves every entry's area and mask, then gives each area an entry of the same area on every
 * other side, as ComfyUI's process_conds: side by side in the guider's order (positive first),
 * each entry of a side (the copies it received included) against every other side. */
static sd_status resolve_regions(denoiser *d)
{
    size_t idx[MAX_SIDES] = {0}, n = d->n_entries, len[MAX_SIDES] = {0};
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        cond_entry *e = &d->entries[i];
        sd_status st = resolve_region(d, e, idx[e->side]++);
        if (st)
            return st;
        any |= e->has_area;
    }
    if (!any)
        return SD_OK;
    int ns = (int)d->g->n_conds;
    cond_entry *side[MAX_SIDES] = {0};
    sd_status st = SD_OK;
    for (int k = 0; k < ns && !st; k++) /* each side ends with at most 4 n entries */
        if (!(side[k] = malloc((4 * n + 1) * sizeof *side[k])))
            st = sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < n; i++)
        side[d->entries[i].side][len[d->entries[i].side]++] = d->entries[i];
    for (int k = 0; !st && k < ns; k++)
        for (size_t i = 0; i < len[k]; i++)
            for (int o = 0; o < ns; o++)
                if (o != k)
                    same_area(&side[k][i], side[o], &len[o], o);
    for (int k = 0; !st && k < ns; k++)
        st = replace_side(d, k, side[k], len[k]);
    for (int k = 0; k < ns; k++)
        free(side[k]);
    return st;
}

/* ControlNets attached with ControlNetApply act on the other sides too (ComfyUI's
 * apply_empty_x_to_equal_area for every conditioning but the positive, ml/adapters/control_eval.h):
 * side `side`'s entries are rewritten. Its entries with an area take no part: they are moved
 * past the others and kept as they are. */
static sd_status control_fill_side(denoiser *d, int side)
{
    size_t np, nn = 0, cnt, n_out;
    side_range(d, 0, &np);
    size_t start = side_range(d, side, &cnt);
    cond_entry *block = malloc((2 * cnt + np + 1) * sizeof *block);
    const sd_control_link **chains = calloc(3 * (np + cnt) + 1, sizeof *chains);
    size_t *src = calloc(np + cnt + 1, sizeof *src);
    bool *flags = calloc(np + 1, sizeof *flags);
    sd_status st = SD_OK;
    if (!block || !chains || !src || !flags) {
        st = sd_run_error(d->r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    cond_entry *old = block + np + cnt; /* the side's entries, those without an area first */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = start; i < start + cnt; i++)
            if (d->entries[i].has_area == (pass == 1)) {
                nn += pass == 0;
                *old++ = d->entries[i];
            }
    old = block + np + cnt;
    const sd_control_link **pos = chains + np + cnt, **neg = pos + np;
    for (size_t i = 0; i < np; i++) {
        pos[i] = d->entries[i].has_area ? NULL : d->entries[i].control;
        flags[i] = d->entries[i].control_to_uncond;
    }
    for (size_t i = 0; i < nn; i++)
        neg[i] = old[i].control;
    sd_control_fill_uncond(pos, flags, np, neg, nn, src, chains, &n_out);
    for (size_t j = 0; j < n_out; j++) {
        block[j] = old[src[j]];
        block[j].control = chains[j];
    }
    memmove(block + n_out, old + nn, (cnt - nn) * sizeof *block);
    st = replace_side(d, side, block, n_out + cnt - nn);
done:
    free(block), free(chains), free(src), free(flags);
    return st;
}

static sd_status control_fill_uncond(denoiser *d)
{
    bool any = false;
    for (size_t i = 0; i < d->n_entries; i++)
        any |= d->entries[i].control != NULL;
    sd_status st = SD_OK;
    for (int side = 1; any && !st && side < (int)d->g->n_conds; side++)
        st = control_fill_side(d, side);
    return st;
}

/* Drops the entries of the sides the guider leaves uncomputed, and allocates the active-entry
 * lists (every entry is active until the first model call says otherwise). */
static sd_status drop_unused(denoiser *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->n_entries; i++)
        if (d->used[d->entries[i].side])
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
    for (size_t g = 0; d->ys && g < d->n_groups; g++)
        sd_dtensor_free(d->ys[g]);
    free(d->contexts);
    free(d->ys);
    d->ys = NULL;
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

/* Uploads group g's ADM vectors [entries * batch, adm width] (entry e's item b is its row
 * b % adm_rows, as its context). */
static sd_status upload_adm(denoiser *d, size_t g)
{
    size_t k0 = d->group_start[g], k1 = d->group_start[g + 1], row = (size_t)d->adm_dim;
    float *host = malloc((k1 - k0) * d->batch * row * sizeof *host);
    if (!host)
        return sd_set_error(d->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t k = k0; k < k1; k++) {
        const cond_entry *e = grouped(d, k);
        for (size_t b = 0; b < d->batch; b++)
            memcpy(host + ((k - k0) * d->batch + b) * row, e->adm + (b % e->adm_rows) * row, row * sizeof *host);
    }
    int64_t shape[2] = {(int64_t)((k1 - k0) * d->batch), d->adm_dim};
    sd_status st = sd_dtensor_new(d->cl, SD_DTYPE_F32, 2, shape, &d->ys[g]);
    if (!st)
        st = sd_dtensor_upload(d->ys[g], host);
    free(host);
    return st;
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
    d->ys = d->adm_dim ? calloc(n + 1, sizeof *d->ys) : NULL;
    d->order = calloc(n + 1, sizeof *d->order);
    bool *taken = calloc(n + 1, sizeof *taken);
    if (!d->group_start || !d->contexts || !d->order || !taken || (d->adm_dim && !d->ys)) {
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
            /* FLUX's context is CONDRegular: only equal shapes, the same guidance (present or not) and
             * the same key bias batch */
            if (lcm / lo > MAX_LCM_RATIO ||
                (d->flux && (t != a->cond->shape[1] || isnan(b->guidance) != isnan(a->guidance) ||
                             !(a->key_bias ? b->key_bias && json_equal(a->key_bias, b->key_bias) : !b->key_bias))))
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
        if (!st && d->adm_dim)
            st = upload_adm(d, g);
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
                              const sd_dtensor *context, const sd_dtensor *y, sd_control_residuals *res,
                              const sd_unet_control **control)
{
    size_t items = n_entries * d->batch, item = (size_t)(d->channels * ah * aw);
    if (in_item == item) /* no extra channels: host already holds the latents back to back */
        return sd_control_eval_call(d->control, chains, n_entries, d->batch, host, ah, aw, sigma, timestep, context,
                                    y, res, control);
    float *x = malloc(items * item * sizeof *x);
    if (!x)
        return sd_set_error(d->cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < items; i++)
        memcpy(x + i * item, host + i * in_item, item * sizeof *x);
    sd_status st = sd_control_eval_call(d->control, chains, n_entries, d->batch, x, ah, aw, sigma, timestep, context,
                                        y, res, control);
    free(x);
    return st;
}

/* The UNet forward of unet_group with the model's IP-Adapters hooked into its attn2 layers (items
 * of the negative side, ComfyUI's cond_or_uncond 1, attend to the unconditional image tokens). */
static sd_status forward_ipa(denoiser *d, size_t k0, size_t items, float sigma, const sd_dtensor *x, const float *t,
                             size_t g, const sd_unet_control *control, sd_dtensor **out)
{
    const sd_dtensor *y = d->ys ? d->ys[g] : NULL;
    if (!d->n_ipa)
        return sd_unet_forward_adm(d->unet, x, t, d->contexts[g], y, control, out);
    bool *negative = malloc(items * sizeof *negative);
    sd_dtensor **tokens = calloc(2 * d->n_ipa, sizeof *tokens);
    if (!negative || !tokens) {
        free(negative), free(tokens);
        return sd_set_error(sd_run_context(d->r), SD_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < items; i++)
        negative[i] = grouped(d, k0 + i / d->batch)->side == 1;
    sd_ipa_call call = {.cl = d->cl, .patches = d->ipa, .n_patches = d->n_ipa, .negative = negative,
                        .batch = (int64_t)items, .sigma = sigma, .tokens = tokens};
    sd_unet_attn2_hook hook = {.apply = sd_ipa_attn2, .user = &call};
    sd_unet_control with_hook = control ? *control : (sd_unet_control){0};
    with_hook.attn2 = &hook;
    sd_status st = sd_unet_forward_adm(d->unet, x, t, d->contexts[g], y, &with_hook, out);
    sd_ipa_call_release(&call);
    free(tokens);
    free(negative);
    return st;
}

/* The model's forward call of unet_group (FLUX, or the UNet with its IP-Adapters) in the model's own
 * precision when it has one: the context's is switched for the call and restored after it, error
 * or not. The ControlNets keep the run's, as ComfyUI's keep their own dtype. */
static sd_status model_forward(denoiser *d, size_t k0, size_t items, float sigma, const sd_dtensor *x, const float *t,
                               size_t g, const float *guidance, const float *bias, const sd_unet_control *control,
                               sd_dtensor **out)
{
    sd_context *ctx = sd_run_context(d->r);
    bool run_bf16 = sd_context_bf16(ctx);
    if (d->precision != SD_MODEL_PRECISION_RUN)
        sd_context_swap_bf16(ctx, d->precision == SD_MODEL_PRECISION_BF16);
    sd_status st = d->flux ? sd_flux_forward_biased(d->flux, x, t, d->contexts[g], d->ys[g], guidance, bias, out)
                           : forward_ipa(d, k0, items, sigma, x, t, g, control, out);
    sd_context_swap_bf16(ctx, run_bf16);
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
    size_t full_item = (size_t)d->in_channels * (size_t)(d->h * d->w), out_item = (size_t)d->channels * hw;
    int64_t shape[4] = {(int64_t)items, d->in_channels, e0->ah, e0->aw};
    float *host = malloc(items * in_item * sizeof *host), *t = malloc(items * sizeof *t);
    float *guidance = malloc(items * sizeof *guidance), *bias = NULL;
    sd_dtensor *x = NULL, *out = NULL;
    const sd_control_link **chains = calloc(k1 - k0, sizeof *chains);
    sd_control_residuals res = {0};
    const sd_unet_control *control = NULL;
    sd_status st = SD_OK;
    if (e0->key_bias && (bias = malloc((size_t)e0->cond->shape[1] * sizeof *bias)))
        key_bias_fill(e0->key_bias, e0->cond->shape[1], bias);
    if (!host || !t || !chains || !guidance || (e0->key_bias && !bias)) {
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
            crop_item(d, e, d->x_in + b * d->per_item, d->channels, host + i * in_item);
            if (concat)
                crop_item(d, e, concat + b * concat_item, d->in_channels - 4, host + i * in_item + out_item);
        }
        t[i] = timestep;
        guidance[i] = e->guidance;
    }
    for (size_t k = k0; k < k1; k++) {
        chains[k - k0] = grouped(d, k)->control;
        d->eps_at[d->order[k]] = k0 * d->batch * d->per_item + (k - k0) * d->batch * out_item;
    }
    if (!(st = sd_dtensor_new(d->cl, SD_DTYPE_F32, 4, shape, &x)) && !(st = sd_dtensor_upload(x, host)) &&
        (!d->control || !(st = control_call(d, chains, k1 - k0, host, in_item, e0->ah, e0->aw, sigma, timestep,
                                             d->contexts[g], d->ys ? d->ys[g] : NULL, &res, &control))) &&
        !(st = model_forward(d, k0, items, sigma, x, t, g, isnan(guidance[0]) ? NULL : guidance, bias, control,
                             &out)))
        st = sd_dtensor_download(out, d->eps + k0 * d->batch * d->per_item);
done:
    sd_control_residuals_free(&res);
    free(chains);
    sd_dtensor_free(x);
    sd_dtensor_free(out);
    free(host);
    free(t);
    free(guidance);
    free(bias);
    return st;
}

/* The guider's combination of the side predictions m[side] (0 where a side is not computed), in
 * float as ComfyUI's cfg_function and Guider_DualCFG.predict_noise; the unguided prediction into
 * uncond (when not NULL). */
static void combine(const denoiser *d, float *const *m, float *out, float *uncond, size_t n)
{
    const sd_guider *g = d->g;
    float cfg = (float)g->cfg, cfg2 = (float)g->cfg2;
    for (size_t i = 0; i < n; i++) {
        float p = m[0][i], u = g->n_conds > 1 ? m[g->n_conds - 1][i] : 0.0f, mid = g->n_conds > 2 ? m[1][i] : 0.0f;
        switch (g->kind) {
        case SD_GUIDER_BASIC:
            out[i] = p;
            break;
        case SD_GUIDER_CFG:
            out[i] = d->used[1] ? u + (p - u) * cfg : p;
            break;
        case SD_GUIDER_DUAL:
            out[i] = (u + (mid - u) * cfg2) + (p - mid) * cfg;
            break;
        case SD_GUIDER_DUAL_NESTED:
            out[i] = u + cfg2 * ((mid + (p - mid) * cfg) - u);
            break;
        }
        if (uncond)
            uncond[i] = g->kind == SD_GUIDER_DUAL_NESTED ? mid : u;
    }
}

/* Unbiased standard deviation of v[0 .. n-1] (torch.std), accumulated in double. */
static double std_unbiased(const float *v, size_t n)
{
    double mean = 0, ss = 0;
    for (size_t i = 0; i < n; i++)
        mean += v[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++)
        ss += (v[i] - mean) * (v[i] - mean);
    return n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
}

/* ComfyUI's RescaleCFG (arXiv 2305.08891) as its sampler_cfg_function: the positive and negative
 * predictions in v space, their CFG mix rescaled per item to the positive's standard deviation
 * and blended by the multiplier, back to a denoised latent into out. Only when both sides were
 * computed (at cfg 1 it is the positive prediction, as in ComfyUI). */
static void rescale_cfg(const denoiser *d, const float *x, float sigma, float *out)
{
    float s2 = sigma * sigma + 1.0f, root = sqrtf(s2), cfg = (float)d->g->cfg, mult = (float)d->rescale;
    const float *pos = d->acc[0], *neg = d->acc[d->g->n_conds - 1];
    float *vc = d->x_in; /* scratch: the model input is no longer needed */
    for (size_t b = 0; b < d->batch; b++) {
        size_t o = b * d->per_item, n = d->per_item;
        for (size_t i = 0; i < n; i++) {
            float xs = x[o + i] / s2;
            float c = (xs - pos[o + i]) * root / sigma, u = (xs - neg[o + i]) * root / sigma;
            vc[o + i] = c;
            out[o + i] = u + cfg * (c - u); /* x_cfg */
        }
        float ratio = (float)(std_unbiased(vc + o, n) / std_unbiased(out + o, n));
        for (size_t i = 0; i < n; i++) {
            float x_cfg = out[o + i], final = mult * (x_cfg * ratio) + (1.0f - mult) * x_cfg;
            out[o + i] = x[o + i] / s2 - final * sigma / root;
        }
    }
}

sd_status sd_cfg_denoise(void *user, const float *x, float sigma, float *out, float *uncond, size_t n)
{
    denoiser *d = user;
    /* calculate_input: x / sqrt(sigma^2 + sigma_data^2); the CONST (flow) type takes x as it is */
    float scale = sd_model_sampling_input_scale(d->ms, sigma);
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
    /* The model sampling's calculate_denoised: D = cx * x + cout * out (EPS: x - out * sigma). */
    float cx, cout;
    sd_model_sampling_denoise_coefs(d->ms, sigma, &cx, &cout);
    /* Weighted mean of the active entries' predictions, per side and value, as ComfyUI's
     * calc_cond_batch: out_cond / (out_count + 1e-37), each entry adding its prediction times
     * its weight (its strength, or its weight map over its area) and the weight; a value no
     * entry of a side covers (all outside their timestep ranges or areas, or of weight 0)
     * predicts 0. Without areas and masks one count per side serves every value. */
    size_t ns = d->g->n_conds;
    double w[MAX_SIDES] = {0};
    for (size_t k = 0; k < ns; k++) {
        memset(d->acc[k], 0, n * sizeof *d->acc[k]);
        if (d->count[k])
            memset(d->count[k], 0, n * sizeof *d->count[k]);
    }
    for (size_t k = 0; k < d->n_active; k++) {
        const cond_entry *e = &d->entries[d->active[k]];
        const float *eps = d->eps + d->eps_at[k];
        float s = (float)e->strength, *acc = d->acc[e->side];
        double *count = d->count[e->side];
        if (!e->mult) {
            for (size_t i = 0; i < n; i++)
                acc[i] += (cx * x[i] + cout * eps[i]) * s;
            w[e->side] += e->strength;
            for (size_t i = 0; count && i < n; i++)
                count[i] += e->strength;
            continue;
        }
        size_t plane = (size_t)(e->ah * e->aw);
        for (size_t b = 0; b < d->batch; b++)
            for (size_t c = 0, nc = (size_t)d->channels; c < nc; c++)
                for (int64_t y = 0; y < e->ah; y++) {
                    size_t i = ((b * nc + c) * (size_t)d->h + (size_t)(e->ay + y)) * (size_t)d->w + (size_t)e->ax;
                    const float *m = e->mult + (b % e->mult_batch) * plane + (size_t)(y * e->aw);
                    const float *p = eps + (b * nc + c) * plane + (size_t)(y * e->aw);
                    for (int64_t xx = 0; xx < e->aw; xx++) {
                        acc[i + (size_t)xx] += (cx * x[i + (size_t)xx] + cout * p[xx]) * m[xx];
                        count[i + (size_t)xx] += m[xx];
                    }
                }
    }
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < n; i++) {
            double c = d->count[k] ? d->count[k][i] : w[k];
            d->acc[k][i] = c != 0 ? d->acc[k][i] / (float)c : 0.0f;
        }
    combine(d, d->acc, out, uncond, n);
    if (d->rescale >= 0 && d->g->kind == SD_GUIDER_CFG && d->used[1])
        rescale_cfg(d, x, sigma, out);
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
    int channels = f->channels < d->channels ? f->channels : d->channels;
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

/* Which sides the guider computes: all of them for CFG++ samplers (disable_cfg1_optimization),
 * else ComfyUI's cfg 1 shortcuts (math.isclose, relative 1e-9). */
static void set_used(denoiser *d)
{
    const sd_guider *g = d->g;
    bool cfg_not_1 = fabs(g->cfg - 1.0) > 1e-9 * fmax(fabs(g->cfg), 1.0);
    bool cfg2_not_1 = fabs(g->cfg2 - 1.0) > 1e-9 * fmax(fabs(g->cfg2), 1.0);
    d->used[0] = true;
    if (g->kind == SD_GUIDER_CFG)
        d->used[1] = d->need_uncond || cfg_not_1;
    if (g->kind == SD_GUIDER_DUAL || g->kind == SD_GUIDER_DUAL_NESTED) {
        bool all = d->need_uncond || g->kind == SD_GUIDER_DUAL_NESTED;
        d->used[2] = all || cfg2_not_1;
        d->used[1] = d->used[2] || cfg_not_1;
    }
}

sd_status sd_cfg_denoiser_new(const sd_cfg_setup *s, sd_cfg_denoiser **out)
{
    sd_node_run *r = s->r;
    denoiser *d = calloc(1, sizeof *d);
    *out = d;
    if (!d)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    *d = (denoiser){.r = r, .cl = s->cl, .unet = s->unet, .flux = s->flux, .ms = s->ms, .batch = s->batch,
                    .h = s->h, .w = s->w, .in_channels = s->in_channels, .dim = s->dim, .g = s->guider,
                    .need_uncond = s->need_uncond, .rescale = s->rescale_cfg, .preview = s->preview, .seed = s->seed,
                    .channels = s->flux ? sd_flux_config_of(s->flux)->in_channels : 4,
                    .adm_dim = s->flux ? sd_flux_config_of(s->flux)->vec_dim : sd_unet_config_of(s->unet)->adm_channels,
                    .unclip_mean = s->unclip_mean, .unclip_std = s->unclip_std, .precision = s->precision};
    set_used(d);
    if ((d->n_ipa = sd_ipa_stack_count(s->ipadapters))) {
        if (!(d->ipa = malloc(d->n_ipa * sizeof *d->ipa)))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        sd_ipa_stack_list(s->ipadapters, d->ipa);
    }
    d->per_item = (size_t)d->channels * (size_t)(d->h * d->w);
    size_t n = d->batch * d->per_item, n_eps;
    sd_status st = SD_OK;
    for (int side = 0; side < (int)d->g->n_conds && !st; side++)
        st = read_conditioning(r, d, side);
    if (st || (st = resolve_regions(d)) || (st = control_fill_uncond(d)) || (st = drop_unused(d)))
        return st;
    for (size_t e = 0; e < d->n_entries && !d->control; e++)
        if (d->entries[e].control && (st = sd_control_eval_new(sd_run_context(r), s->ms, &d->control)))
            return sd_node_model_fail(r, st);
    bool counts = false;
    for (size_t e = 0; e < d->n_entries; e++)
        counts |= d->entries[e].mult != NULL;
    d->x_in = malloc(n * sizeof *d->x_in);
    bool ok = d->x_in && sd_mul_size(d->n_entries, n, &n_eps) && (d->eps = malloc((n_eps ? n_eps : 1) * sizeof *d->eps));
    for (size_t k = 0; ok && k < d->g->n_conds; k++)
        ok = (d->acc[k] = malloc(n * sizeof *d->acc[k])) && (!counts || (d->count[k] = calloc(n, sizeof *d->count[k])));
    if (!ok)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a latent of %zu values", n);
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
    for (size_t k = 0; k < MAX_SIDES; k++) {
        free(d->acc[k]);
        free(d->count[k]);
    }
    for (size_t m = 0; m < d->n_mults; m++)
        free(d->mults[m]);
    free(d->mults);
    for (size_t m = 0; m < d->n_adms; m++)
        free(d->adms[m]);
    free(d->adms);
    free(d->ipa);
    free(d);
}
