/* Conditioning nodes (ComfyUI's nodes.py): ConditioningCombine, ConditioningConcat,
 * ConditioningAverage, ConditioningZeroOut, ConditioningSetTimestepRange, ConditioningSetArea,
 * ConditioningSetAreaPercentage, ConditioningSetAreaStrength and ConditioningSetMask.
 *
 * A CONDITIONING is a list of entries (core/value.h): entry i has its tokens "cond.i"
 * [batch, tokens, width], an optional pooled vector "pooled.i" [batch, width], other per-entry
 * tensors named "<name>.i" (InpaintModelConditioning's concat_latent_image.i, concat_mask.i),
 * its attributes entries[i] (strength, start_percent, end_percent, area, mask_strength,
 * set_area_to_bounds), its mask "mask.i" [batch, height, width] and possibly a ControlNet
 * chain (ml/adapters/control_eval.h). ComfyUI's list is [[tokens, {pooled_output, ...}], ...]; these
 * nodes do to it what ComfyUI's do: Combine concatenates the lists, the others rewrite each entry
 * of one input and keep everything else about it. The KSampler averages a side's entries by
 * strength and honours their timestep ranges (nodes/ksampler.c, docs/txt2img.md). */
#include "nodes/conditioning.h"
#include "core/checked.h"
#include "ml/adapters/control_eval.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *sd_cond_entries(sd_node_run *r, const sd_value *v, const char *input, size_t *n)
{
    json_t *list = v->attrs ? json_object_get(v->attrs, "entries") : NULL;
    *n = json_is_array(list) ? json_array_size(list) : 0;
    if (*n == 0) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s': the conditioning has no entries", input);
        return NULL;
    }
    return list;
}

json_t *sd_node_cond_entries(sd_node_run *r, const char *input, size_t *n)
{
    return sd_cond_entries(r, sd_run_value(r, input), input, n);
}

static sd_tensor *entry_tensor(const sd_value *v, const char *base, size_t i)
{
    char name[32];
    snprintf(name, sizeof name, "%s.%zu", base, i);
    return sd_value_tensor(v, name);
}

/* Entry i's tokens [batch, tokens, width] on input `input`; NULL (error set) when it has none. */
static const sd_tensor *entry_tokens(sd_node_run *r, const char *input, size_t i)
{
    const sd_tensor *t = entry_tensor(sd_run_value(r, input), "cond", i);
    if (!t || t->ndim != 3 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu has no [batch, tokens, width] tokens", input, i);
        return NULL;
    }
    return t;
}

/* Entry i's pooled vector [batch, width] on input `input` into *out (NULL when it has none). */
static sd_status entry_pooled(sd_node_run *r, const char *input, size_t i, const sd_tensor **out)
{
    const sd_tensor *t = *out = entry_tensor(sd_run_value(r, input), "pooled", i);
    if (t && (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu's pooled output is not [batch, width]", input,
                            i);
    return SD_OK;
}

/* Sets entry i's tensor "<base>.<i>" of v to zeros of the given shape, replacing one of that
 * name; returns its data, or NULL when the size overflows or memory runs out. */
static float *reset_entry_tensor(sd_value *v, const char *base, size_t i, int ndim, const int64_t *shape)
{
    char name[32];
    snprintf(name, sizeof name, "%s.%zu", base, i);
    sd_tensor *t = sd_value_tensor(v, name);
    if (!t)
        return (t = sd_value_add_tensor(v, name, ndim, shape)) ? t->data : NULL;
    size_t bytes;
    float *data;
    if (!sd_shape_bytes(shape, ndim, sizeof *data, &bytes) || !(data = calloc(bytes ? bytes : 1, 1)))
        return NULL;
    free(t->data);
    t->data = data;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    return data;
}

static bool has_controls(const sd_value *v)
{
    return v->handle_free == sd_cond_controls_free;
}

/* ---- ConditioningCombine ---- */

/* The entry index of a per-entry tensor name "<name>.<i>" into *base_len and *i; false when the
 * name has no such suffix. */
static bool entry_suffix(const char *name, size_t *base_len, unsigned long long *i)
{
    const char *dot = strrchr(name, '.');
    if (!dot || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1))
        return false;
    errno = 0;
    *i = strtoull(dot + 1, NULL, 10);
    *base_len = (size_t)(dot - name);
    return errno == 0;
}

/* Appends the entries of CONDITIONING input `input` to out as entries offset, offset + 1, ...:
 * each per-entry tensor "<name>.<i>" as "<name>.<offset + i>", each entry's attributes, and its
 * ControlNet chain and flag into c (NULL when neither input carries ControlNets). */
static sd_status append_entries(sd_node_run *r, const char *input, sd_value *out, size_t offset,
                                sd_cond_controls *c)
{
    const sd_value *src = sd_run_value(r, input);
    size_t n;
    json_t *list = sd_node_cond_entries(r, input, &n), *entries = json_object_get(out->attrs, "entries");
    if (!list)
        return SD_ERR_INVALID;
    for (size_t k = 0; k < src->n_tensors; k++) {
        const sd_named_tensor *nt = src->tensors[k];
        size_t base_len, numel;
        unsigned long long i;
        char name[32];
        if (!entry_suffix(nt->name, &base_len, &i) || i >= n)
            return sd_run_error(r, SD_ERR_INVALID, "input '%s': tensor '%s' belongs to no entry", input, nt->name);
        if ((size_t)snprintf(name, sizeof name, "%.*s.%llu", (int)base_len, nt->name, i + offset) >= sizeof name)
            return sd_run_error(r, SD_ERR_LIMIT, "input '%s': too many entries", input);
        sd_tensor *t = sd_value_add_tensor(out, name, nt->tensor.ndim, nt->tensor.shape);
        if (!t || !sd_tensor_numel(t, &numel))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        memcpy(t->data, nt->tensor.data, numel * sizeof *t->data);
    }
    for (size_t i = 0; i < n; i++) {
        if (json_array_append_new(entries, json_deep_copy(json_array_get(list, i))))
            return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        if (c) {
            bool to_uncond;
            c->links[offset + i] = sd_control_link_ref((sd_control_link *)sd_cond_control(src, i, &to_uncond));
            c->to_uncond[offset + i] = to_uncond;
        }
    }
    return SD_OK;
}

static sd_status run_combine(sd_node_run *r)
{
    const sd_value *a = sd_run_value(r, "conditioning_1"), *b = sd_run_value(r, "conditioning_2");
    size_t na, nb;
    if (!sd_node_cond_entries(r, "conditioning_1", &na) || !sd_node_cond_entries(r, "conditioning_2", &nb))
        return SD_ERR_INVALID;
    bool controls = has_controls(a) || has_controls(b);
    sd_value *out = sd_value_new(SD_TYPE_CONDITIONING);
    sd_cond_controls *c = controls ? sd_cond_controls_new(na + nb) : NULL;
    sd_status st;
    if (!out || (controls && !c) || !(out->attrs = json_pack("{s:[]}", "entries"))) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = append_entries(r, "conditioning_1", out, 0, c)) || (st = append_entries(r, "conditioning_2", out, na, c)))
        goto fail;
    if (c) {
        out->handle = c;
        out->handle_free = sd_cond_controls_free;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
fail:
    sd_cond_controls_free(c);
    sd_value_unref(out);
    return st;
}

static const sd_input_desc combine_in[] = {
    SD_IN_LINK("conditioning_1", SD_TYPE_CONDITIONING, "the first entries"),
    SD_IN_LINK("conditioning_2", SD_TYPE_CONDITIONING, "entries appended after those of conditioning_1"),
};
static const sd_output_desc combine_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING,
           "the entries of conditioning_1 then those of conditioning_2, each with all attached to it"),
};
const sd_node_desc sd_node_ConditioningCombine = {
    .name = "ConditioningCombine", .version = 1, .category = "conditioning",
    .doc = "Joins two conditionings' entry lists; the KSampler averages the predictions of a side's entries by "
           "strength.",
    .inputs = combine_in, .n_inputs = SD_COUNT(combine_in),
    .outputs = combine_out, .n_outputs = SD_COUNT(combine_out), .run = run_combine,
};

/* ---- entry-wise nodes ---- */

/* Rewrites entry i of out, a copy of the node's CONDITIONING input. */
typedef sd_status (*entry_fn)(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user);

/* Output 0: a copy of CONDITIONING input `input` (tensors, attributes, ControlNets) with fn
 * applied to each entry. */
static sd_status map_entries(sd_node_run *r, const char *input, entry_fn fn, const void *user)
{
    size_t n;
    if (!sd_node_cond_entries(r, input, &n))
        return SD_ERR_INVALID;
    sd_value *out = sd_cond_copy(sd_run_value(r, input));
    if (!out)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        sd_status st = fn(r, input, out, i, user);
        if (st) {
            sd_value_unref(out);
            return st;
        }
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

/* conditioning_from's first entry, and conditioning_to_strength for ConditioningAverage. */
typedef struct from_entry {
    const sd_tensor *tokens, *pooled;
    double to_strength;
} from_entry;

static sd_status read_from(sd_node_run *r, from_entry *f)
{
    size_t n;
    if (!sd_node_cond_entries(r, "conditioning_from", &n) || !(f->tokens = entry_tokens(r, "conditioning_from", 0)))
        return SD_ERR_INVALID;
    if (n > 1)
        sd_run_warn(r, "conditioning_from has %zu entries: only the first is used", n);
    return entry_pooled(r, "conditioning_from", 0, &f->pooled);
}

static void shape_text(char *buf, size_t size, const sd_tensor *t)
{
    int used = snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && used > 0 && (size_t)used < size; d++)
        used += snprintf(buf + used, size - (size_t)used, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (used > 0 && (size_t)used < size)
        snprintf(buf + used, size - (size_t)used, "]");
}

/* The error for entry i of conditioning_to and conditioning_from's first entry (what names the
 * tensors: "tokens" or "pooled output") that cannot be combined. */
static sd_status mismatch(sd_node_run *r, const char *what, size_t i, const sd_tensor *to, const sd_tensor *from,
                          const char *why)
{
    char a[96], b[96];
    shape_text(a, sizeof a, to);
    shape_text(b, sizeof b, from);
    return sd_run_error(r, SD_ERR_INVALID, "input 'conditioning_from': first entry's %s %s vs entry %zu of "
                        "'conditioning_to' %s: %s", what, b, i, a, why);
}

/* ConditioningConcat: entry i's tokens followed by those of conditioning_from's first entry
 * (torch.cat along the tokens: batch and width must be equal). */
static sd_status concat_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    const sd_tensor *t0 = ((const from_entry *)user)->tokens, *t1 = entry_tokens(r, input, i);
    if (!t1)
        return SD_ERR_INVALID;
    if (t0->shape[0] != t1->shape[0] || t0->shape[2] != t1->shape[2])
        return mismatch(r, "tokens", i, t1, t0, "the batch and the width must be equal");
    int64_t b = t1->shape[0], n1 = t1->shape[1] * t1->shape[2], n0 = t0->shape[1] * t0->shape[2];
    int64_t shape[3] = {b, t1->shape[1] + t0->shape[1], t1->shape[2]};
    float *o = reset_entry_tensor(out, "cond", i, 3, shape);
    if (!o)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < b; k++) {
        memcpy(o + k * (n1 + n0), t1->data + k * n1, (size_t)n1 * sizeof *o);
        memcpy(o + k * (n1 + n0) + n1, t0->data + k * n0, (size_t)n0 * sizeof *o);
    }
    return SD_OK;
}

static sd_status run_concat(sd_node_run *r)
{
    from_entry f;
    sd_status st = read_from(r, &f);
    return st ? st : map_entries(r, "conditioning_to", concat_entry, &f);
}

static const sd_input_desc concat_in[] = {
    SD_IN_LINK("conditioning_to", SD_TYPE_CONDITIONING, "the entries to extend"),
    SD_IN_LINK("conditioning_from", SD_TYPE_CONDITIONING,
               "its first entry's tokens are appended (further entries are ignored with a warning)"),
};
static const sd_output_desc concat_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING,
           "conditioning_to, each entry's tokens followed by conditioning_from's; all else kept"),
};
const sd_node_desc sd_node_ConditioningConcat = {
    .name = "ConditioningConcat", .version = 1, .category = "conditioning",
    .doc = "Appends the tokens of conditioning_from's first entry to every entry of conditioning_to (batch and width "
           "must match); further entries of conditioning_from are ignored with a warning, as in ComfyUI.",
    .inputs = concat_in, .n_inputs = SD_COUNT(concat_in),
    .outputs = concat_out, .n_outputs = SD_COUNT(concat_out), .run = run_concat,
};

/* out [batch, rows, width] = a * s + b * (1 - s) in float32 as torch (each product rounded,
 * then the sum) for a and b of shape [batch or 1, rows, width] ([batch or 1, width] when rows is
 * 1), broadcast over the batch; b may have fewer or more rows: cut, and zeros past its last. */
static void mix(float *out, int64_t batch, int64_t rows, int64_t width, const sd_tensor *a, const sd_tensor *b,
                double s)
{
    float sa = (float)s, sb = (float)(1.0 - s);
    int64_t ab = a->shape[0], bb = b->shape[0], b_rows = b->ndim == 3 ? b->shape[1] : 1;
    for (int64_t k = 0; k < batch; k++)
        for (int64_t y = 0; y < rows; y++) {
            const float *pa = a->data + ((k % ab) * rows + y) * width;
            const float *pb = y < b_rows ? b->data + ((k % bb) * b_rows + y) * width : NULL;
            float *o = out + (k * rows + y) * width;
            for (int64_t x = 0; x < width; x++) {
                float u = pa[x] * sa, v = (pb ? pb[x] : 0.0f) * sb;
                o[x] = u + v;
            }
        }
}

/* The batch of torch's broadcast of batches a and b; 0 when they do not broadcast. */
static int64_t broadcast_batch(int64_t a, int64_t b)
{
    return a == b || b == 1 ? a : a == 1 ? b : 0;
}

/* ConditioningAverage: entry i's tokens t1 and conditioning_from's first entry's t0 (cut or
 * zero-padded to t1's length) as t1 * s + t0 * (1 - s); the pooled outputs likewise, entry i's
 * pooled output being conditioning_from's when it has none (ComfyUI's dict.get default). */
static sd_status average_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    const from_entry *f = user;
    const sd_tensor *t0 = f->tokens, *t1 = entry_tokens(r, input, i), *p1;
    sd_status st;
    if (!t1)
        return SD_ERR_INVALID;
    if ((st = entry_pooled(r, input, i, &p1)))
        return st;
    int64_t b = broadcast_batch(t1->shape[0], t0->shape[0]), rows = t1->shape[1], width = t1->shape[2];
    if (t0->shape[2] != width)
        return mismatch(r, "tokens", i, t1, t0, "the widths differ");
    if (t0->shape[1] < rows && t0->shape[0] != 1) /* torch.cat with zeros of batch 1 fails */
        return mismatch(r, "tokens", i, t1, t0, "only a batch of 1 can be zero-padded to the longer tokens");
    if (!b)
        return mismatch(r, "tokens", i, t1, t0, "the batches differ");
    float *o = reset_entry_tensor(out, "cond", i, 3, (const int64_t[]){b, rows, width});
    if (!o)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    mix(o, b, rows, width, t1, t0, f->to_strength);
    if (!f->pooled)
        return SD_OK; /* entry i's pooled output, if any, is kept */
    p1 = p1 ? p1 : f->pooled; /* p1 and t1 are the input's: replacing the output's tensors leaves them */
    int64_t pb = broadcast_batch(p1->shape[0], f->pooled->shape[0]);
    if (p1->shape[1] != f->pooled->shape[1] || !pb)
        return mismatch(r, "pooled output", i, p1, f->pooled, "the shapes do not broadcast");
    float *po = reset_entry_tensor(out, "pooled", i, 2, (const int64_t[]){pb, p1->shape[1]});
    if (!po)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    mix(po, pb, 1, p1->shape[1], p1, f->pooled, f->to_strength);
    return SD_OK;
}

static sd_status run_average(sd_node_run *r)
{
    from_entry f;
    sd_status st = read_from(r, &f);
    f.to_strength = sd_run_float(r, "conditioning_to_strength");
    return st ? st : map_entries(r, "conditioning_to", average_entry, &f);
}

static const sd_input_desc average_in[] = {
    SD_IN_LINK("conditioning_to", SD_TYPE_CONDITIONING, "the entries to blend (their other fields are kept)"),
    SD_IN_LINK("conditioning_from", SD_TYPE_CONDITIONING,
               "its first entry is blended into each (further entries are ignored with a warning)"),
    SD_IN_FLOAT("conditioning_to_strength", "1.0", 0.0, 1.0,
                "weight of conditioning_to: 1 keeps it, 0 gives conditioning_from's tokens"),
};
static const sd_output_desc average_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING,
           "to * s + from * (1 - s) per entry, from's tokens cut or zero-padded to to's length; pooled outputs alike"),
};
const sd_node_desc sd_node_ConditioningAverage = {
    .name = "ConditioningAverage", .version = 1, .category = "conditioning",
    .doc = "Blends conditioning_from's first entry into every entry of conditioning_to (tokens and pooled output); "
           "further entries of conditioning_from are ignored with a warning, as in ComfyUI.",
    .inputs = average_in, .n_inputs = SD_COUNT(average_in),
    .outputs = average_out, .n_outputs = SD_COUNT(average_out), .run = run_average,
};

/* ConditioningZeroOut: entry i's tokens and pooled output set to zeros of their shapes. */
static sd_status zero_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    const char *const bases[] = {"cond", "pooled"};
    for (size_t k = 0; k < 2; k++) {
        sd_tensor *t = entry_tensor(out, bases[k], i);
        size_t n;
        if (t && sd_tensor_numel(t, &n))
            memset(t->data, 0, n * sizeof *t->data);
    }
    return SD_OK;
}

static sd_status run_zero_out(sd_node_run *r)
{
    return map_entries(r, "conditioning", zero_entry, NULL);
}

#define IN_COND SD_IN_LINK("conditioning", SD_TYPE_CONDITIONING, "the conditioning")
static const sd_input_desc zero_in[] = {
    IN_COND,
};
static const sd_output_desc zero_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the same entries with tokens and pooled outputs all zero"),
};
const sd_node_desc sd_node_ConditioningZeroOut = {
    .name = "ConditioningZeroOut", .version = 1, .category = "advanced/conditioning",
    .doc = "Zeroes every entry's tokens and pooled output, keeping shapes and everything else.",
    .inputs = zero_in, .n_inputs = SD_COUNT(zero_in),
    .outputs = zero_out, .n_outputs = SD_COUNT(zero_out), .run = run_zero_out,
};

/* The attributes in `user` (a JSON object) set on entry i's, replacing those of the same names
 * (ComfyUI's node_helpers.conditioning_set_values). */
static sd_status set_values_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    json_t *e = json_array_get(json_object_get(out->attrs, "entries"), i);
    if (!json_is_object(e))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu has no attributes", input, i);
    if (json_object_update(e, (json_t *)user))
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

/* Output 0: input "conditioning" with the attributes of `values` (a new reference, taken) set
 * on every entry. */
static sd_status set_values(sd_node_run *r, json_t *values)
{
    sd_status st = values ? map_entries(r, "conditioning", set_values_entry, values)
                          : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    json_decref(values);
    return st;
}

static sd_status run_set_range(sd_node_run *r)
{
    return set_values(r, json_pack("{s:f, s:f}", "start_percent", sd_run_float(r, "start"), "end_percent",
                                   sd_run_float(r, "end")));
}

static const sd_input_desc range_in[] = {
    IN_COND,
    SD_IN_FLOAT("start", "0.0", 0.0, 1.0, "fraction of the model's schedule where the entries start acting"),
    SD_IN_FLOAT("end", "1.0", 0.0, 1.0, "fraction where they stop (an end before the start: never)"),
};
static const sd_output_desc range_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with start_percent and end_percent set"),
};
const sd_node_desc sd_node_ConditioningSetTimestepRange = {
    .name = "ConditioningSetTimestepRange", .version = 1, .category = "advanced/conditioning",
    .doc = "Limits the entries to a part of sampling: the KSampler skips an entry at steps whose sigma is outside "
           "[sigma(start), sigma(end)].",
    .inputs = range_in, .n_inputs = SD_COUNT(range_in),
    .outputs = range_out, .n_outputs = SD_COUNT(range_out), .run = run_set_range,
};

/* ---- FLUX guidance (comfy_extras/nodes_flux.py) ---- */

static sd_status run_flux_guidance(sd_node_run *r)
{
    return set_values(r, json_pack("{s:f}", "guidance", sd_run_float(r, "guidance")));
}

static const sd_input_desc flux_guidance_in[] = {
    IN_COND,
    SD_IN_FLOAT("guidance", "3.5", 0.0, 100.0, "the guidance a guidance-distilled model (FLUX dev) is told to follow"),
};
static const sd_output_desc flux_guidance_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with their guidance attribute set"),
};
const sd_node_desc sd_node_FluxGuidance = {
    .name = "FluxGuidance", .version = 1, .category = "advanced/conditioning/flux",
    .doc = "Sets the guidance value FLUX dev's guidance embedding receives (the model's default is 3.5; schnell "
           "ignores it). Classifier-free guidance (cfg) stays 1 for FLUX.",
    .inputs = flux_guidance_in, .n_inputs = SD_COUNT(flux_guidance_in),
    .outputs = flux_guidance_out, .n_outputs = SD_COUNT(flux_guidance_out), .run = run_flux_guidance,
};

static sd_status run_flux_disable_guidance(sd_node_run *r)
{
    return set_values(r, json_pack("{s:n}", "guidance"));
}

static const sd_output_desc flux_disable_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with their guidance set to none"),
};
const sd_node_desc sd_node_FluxDisableGuidance = {
    .name = "FluxDisableGuidance", .version = 1, .category = "advanced/conditioning/flux",
    .doc = "Leaves FLUX's guidance embedding out (guidance none), for models distilled without it.",
    .inputs = flux_guidance_in, .n_inputs = 1,
    .outputs = flux_disable_out, .n_outputs = SD_COUNT(flux_disable_out), .run = run_flux_disable_guidance,
};

/* ---- regional conditioning: areas and masks ---- */

/* An entry's "area" attribute, as ComfyUI's: [height, width, y, x] in latent units (pixels / 8),
 * or ["percentage", height, width, y, x] as fractions of the latent, resolved by the KSampler. */

#define MAX_RES 16384.0 /* ComfyUI's MAX_RESOLUTION */

static sd_status run_set_area(sd_node_run *r)
{
    json_int_t h = sd_run_int(r, "height") / 8, w = sd_run_int(r, "width") / 8;
    json_int_t y = sd_run_int(r, "y") / 8, x = sd_run_int(r, "x") / 8;
    return set_values(r, json_pack("{s:[I, I, I, I], s:f, s:b}", "area", h, w, y, x, "strength",
                                   sd_run_float(r, "strength"), "set_area_to_bounds", 0));
}

static sd_status run_set_area_percentage(sd_node_run *r)
{
    return set_values(r, json_pack("{s:[s, f, f, f, f], s:f, s:b}", "area", "percentage", sd_run_float(r, "height"),
                                   sd_run_float(r, "width"), sd_run_float(r, "y"), sd_run_float(r, "x"), "strength",
                                   sd_run_float(r, "strength"), "set_area_to_bounds", 0));
}

static sd_status run_set_area_strength(sd_node_run *r)
{
    return set_values(r, json_pack("{s:f}", "strength", sd_run_float(r, "strength")));
}

/* ConditioningSetMask: entry i's "mask.<i>" [batch, height, width] replaced by the node's mask,
 * and its attributes set. */
typedef struct mask_values {
    const sd_tensor *mask;
    json_t *values;
} mask_values;

static sd_status mask_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    const mask_values *mv = user;
    size_t n;
    float *dst = reset_entry_tensor(out, "mask", i, 3, mv->mask->shape);
    if (!dst || !sd_tensor_numel(mv->mask, &n))
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    memcpy(dst, mv->mask->data, n * sizeof *dst);
    return set_values_entry(r, input, out, i, mv->values);
}

static sd_status run_set_mask(sd_node_run *r)
{
    const sd_tensor *m = sd_value_tensor(sd_run_value(r, "mask"), "mask");
    if (!m || m->ndim < 2 || m->ndim > 3 || m->shape[0] < 1 || m->shape[1] < 1 || (m->ndim == 3 && m->shape[2] < 1))
        return sd_run_error(r, SD_ERR_INVALID, "input 'mask' is not a [batch, height, width] mask");
    sd_tensor m3 = *m; /* ComfyUI's unsqueeze(0) of a [height, width] mask */
    if (m->ndim == 2) {
        m3.ndim = 3;
        m3.shape[0] = 1, m3.shape[1] = m->shape[0], m3.shape[2] = m->shape[1];
    }
    mask_values mv = {&m3, json_pack("{s:b, s:f}", "set_area_to_bounds",
                                     strcmp(sd_run_string(r, "set_cond_area"), "default") != 0, "mask_strength",
                                     sd_run_float(r, "strength"))};
    sd_status st = mv.values ? map_entries(r, "conditioning", mask_entry, &mv)
                             : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    json_decref(mv.values);
    return st;
}

#define IN_AREA_STRENGTH                                                                                   \
    SD_IN_FLOAT("strength", "1.0", 0.0, 10.0, "the entries' weight in the KSampler's average where they act")
static const sd_output_desc area_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with the area and strength set"),
};

static const sd_input_desc area_in[] = {
    IN_COND,
    SD_IN_INT("width", "64", 64, MAX_RES, "area width in pixels (floored to a multiple of 8)"),
    SD_IN_INT("height", "64", 64, MAX_RES, "area height in pixels (floored to a multiple of 8)"),
    SD_IN_INT("x", "0", 0, MAX_RES, "left edge in pixels (floored to a multiple of 8)"),
    SD_IN_INT("y", "0", 0, MAX_RES, "top edge in pixels (floored to a multiple of 8)"),
    IN_AREA_STRENGTH,
};
const sd_node_desc sd_node_ConditioningSetArea = {
    .name = "ConditioningSetArea", .version = 1, .category = "conditioning",
    .doc = "Limits the entries to a rectangle of the image: the KSampler runs them on that part of the latent "
           "only and blends their prediction in with feathered edges (docs/txt2img.md).",
    .inputs = area_in, .n_inputs = SD_COUNT(area_in),
    .outputs = area_out, .n_outputs = SD_COUNT(area_out), .run = run_set_area,
};

static const sd_input_desc area_pct_in[] = {
    IN_COND,
    SD_IN_FLOAT("width", "1.0", 0.0, 1.0, "area width as a fraction of the latent's"),
    SD_IN_FLOAT("height", "1.0", 0.0, 1.0, "area height as a fraction of the latent's"),
    SD_IN_FLOAT("x", "0", 0.0, 1.0, "left edge as a fraction of the latent's width"),
    SD_IN_FLOAT("y", "0", 0.0, 1.0, "top edge as a fraction of the latent's height"),
    IN_AREA_STRENGTH,
};
const sd_node_desc sd_node_ConditioningSetAreaPercentage = {
    .name = "ConditioningSetAreaPercentage", .version = 1, .category = "conditioning",
    .doc = "ConditioningSetArea with fractions of the latent, resolved by the KSampler against the latent it "
           "samples (rounded half to even; at least 1 latent pixel wide and high).",
    .inputs = area_pct_in, .n_inputs = SD_COUNT(area_pct_in),
    .outputs = area_out, .n_outputs = SD_COUNT(area_out), .run = run_set_area_percentage,
};

static const sd_input_desc area_strength_in[] = {IN_COND, IN_AREA_STRENGTH};
static const sd_output_desc area_strength_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with the strength set"),
};
const sd_node_desc sd_node_ConditioningSetAreaStrength = {
    .name = "ConditioningSetAreaStrength", .version = 1, .category = "conditioning",
    .doc = "Sets the entries' strength, their weight in the KSampler's average.",
    .inputs = area_strength_in, .n_inputs = SD_COUNT(area_strength_in),
    .outputs = area_strength_out, .n_outputs = SD_COUNT(area_strength_out), .run = run_set_area_strength,
};

static const char *const cond_area_choices[] = {"default", "mask bounds", NULL};
static const sd_input_desc set_mask_in[] = {
    IN_COND,
    SD_IN_LINK("mask", SD_TYPE_MASK, "where the entries act, as weights (any size: resized bilinearly to the latent)"),
    SD_IN_FLOAT("strength", "1.0", 0.0, 10.0, "multiplies the mask"),
    SD_IN_ENUM("set_cond_area", "default", cond_area_choices,
               "default: the entries run on the whole latent; mask bounds: on the mask's bounding box only"),
};
static const sd_output_desc set_mask_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with the mask, mask_strength and set_area_to_bounds"),
};
const sd_node_desc sd_node_ConditioningSetMask = {
    .name = "ConditioningSetMask", .version = 1, .category = "conditioning",
    .doc = "Weights the entries' prediction by a mask: the KSampler blends each entry in where its mask is "
           "non-zero (docs/txt2img.md).",
    .inputs = set_mask_in, .n_inputs = SD_COUNT(set_mask_in),
    .outputs = set_mask_out, .n_outputs = SD_COUNT(set_mask_out), .run = run_set_mask,
};

void sd_cond_area_mult(int64_t lat_h, int64_t lat_w, const int64_t area[4], const float *mask, double mask_strength,
                       double strength, float *out)
{
    int64_t ah = area[0], aw = area[1], ay = area[2], ax = area[3];
    for (int64_t y = 0; y < ah; y++)
        for (int64_t x = 0; x < aw; x++)
            out[y * aw + x] = mask ? mask[(ay + y) * lat_w + ax + x] * (float)mask_strength * (float)strength
                                   : 1.0f * (float)strength;
    if (mask)
        return;
    /* dimension 0 (rows) then 1 (columns): the start edge, then the end edge */
    const int64_t size[2] = {ah, aw}, off[2] = {ay, ax}, lat[2] = {lat_h, lat_w};
    for (int dim = 0; dim < 2; dim++) {
        int64_t rr = size[dim] / 4 < 8 ? size[dim] / 4 : 8;
        for (int edge = 0; edge < 2; edge++) {
            if (edge == 0 ? off[dim] == 0 : off[dim] + size[dim] >= lat[dim])
                continue;
            for (int64_t t = 0; t < rr; t++) {
                float f = (float)((1.0 / (double)rr) * (double)(t + 1));
                int64_t line = edge == 0 ? t : size[dim] - 1 - t;
                for (int64_t k = 0; k < size[1 - dim]; k++)
                    out[dim == 0 ? line * aw + k : k * aw + line] *= f;
            }
        }
    }
}

/* ---- unCLIPConditioning ---- */

/* Entry i gets the image embeddings appended to its "unclip.i" rows and one record
 * {strength, noise_augmentation, rows} appended to its "unclip" list (ComfyUI's
 * unclip_conditioning, append=True). */
static sd_status unclip_entry(sd_node_run *r, const char *input, sd_value *out, size_t i, const void *user)
{
    const sd_tensor *emb = user;
    char name[32];
    snprintf(name, sizeof name, "unclip.%zu", i);
    const sd_tensor *old = sd_value_tensor(out, name);
    int64_t rows = old ? old->shape[0] : 0, dim = emb->shape[1];
    if (old && old->shape[1] != dim)
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': entry %zu already has %lld-wide image embeddings, not %lld",
                            input, i, (long long)old->shape[1], (long long)dim);
    size_t keep = (size_t)(rows * dim);
    float *prev = keep ? malloc(keep * sizeof *prev) : NULL;
    if (keep && !prev)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    if (prev)
        memcpy(prev, old->data, keep * sizeof *prev);
    int64_t shape[2] = {rows + emb->shape[0], dim};
    float *dst = reset_entry_tensor(out, "unclip", i, 2, shape);
    json_t *e = json_array_get(json_object_get(out->attrs, "entries"), i), *list = json_object_get(e, "unclip");
    json_t *rec = json_pack("{s:f, s:f, s:I}", "strength", sd_run_float(r, "strength"), "noise_augmentation",
                            sd_run_float(r, "noise_augmentation"), "rows", (json_int_t)emb->shape[0]);
    if (!json_is_array(list) && json_is_object(e) && !json_object_set_new(e, "unclip", json_array()))
        list = json_object_get(e, "unclip");
    bool ok = dst && rec && json_is_array(list) && !json_array_append(list, rec);
    json_decref(rec);
    if (ok) {
        if (prev)
            memcpy(dst, prev, keep * sizeof *dst);
        memcpy(dst + keep, emb->data, (size_t)(emb->shape[0] * dim) * sizeof *dst);
    }
    free(prev);
    return ok ? SD_OK : sd_run_error(r, SD_ERR_NOMEM, "out of memory");
}

static sd_status run_unclip(sd_node_run *r)
{
    const sd_tensor *emb = sd_value_tensor(sd_run_value(r, "clip_vision_output"), "image_embeds");
    if (!emb || emb->ndim != 2 || emb->shape[0] < 1 || emb->shape[1] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'clip_vision_output' has no image_embeds");
    if (sd_run_float(r, "strength") == 0) { /* ComfyUI returns the conditioning as it is */
        sd_run_set_output(r, 0, sd_value_ref(sd_run_value(r, "conditioning")));
        return SD_OK;
    }
    return map_entries(r, "conditioning", unclip_entry, emb);
}

static const sd_input_desc unclip_in[] = {
    IN_COND,
    SD_IN_LINK("clip_vision_output", SD_TYPE_CLIP_VISION_OUTPUT, "from CLIPVisionEncode (its image_embeds)"),
    SD_IN_FLOAT("strength", "1.0", -10.0, 10.0, "weight of the image embedding"),
    SD_IN_FLOAT("noise_augmentation", "0.0", 0.0, 1.0, "noise added to the embedding (0: none; the noise level is "
                                                      "round(999 x this))"),
};
static const sd_output_desc unclip_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the entries with the image embedding attached"),
};
const sd_node_desc sd_node_unCLIPConditioning = {
    /* version 2: several embeddings are merged with the seeded generator's next normals (ComfyUI on
     * the CPU), no longer its first ones again */
    .name = "unCLIPConditioning", .version = 2, .category = "conditioning",
    .doc = "Attaches a CLIP vision image embedding to a conditioning, noise-augmented with the sampler's seed - 10: "
           "on an SD2.x unCLIP model it forms the ADM vector (with its noise level's embedding; entries without "
           "one get zeros), on SDXL (Revision) it replaces the pooled output in the ADM vector.",
    .inputs = unclip_in, .n_inputs = SD_COUNT(unclip_in),
    .outputs = unclip_out, .n_outputs = SD_COUNT(unclip_out), .run = run_unclip,
    .check = sd_check_unclip_conditioning,
};
