/* LatentFromBatch and RepeatLatentBatch (ComfyUI's nodes of the same names). Both record each
 * output item's position in the original batch as the LATENT attribute "batch_index", so that
 * the KSampler gives every item the noise it had in the full batch (sd_prepare_noise). */
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

/* Items in the batch dimension of a noise mask ([B, H, W] or [B, 1, H, W]; [H, W] is one). */
static int64_t mask_batch(const sd_tensor *m)
{
    return m->ndim >= 3 ? m->shape[0] : 1;
}

/* Adds tensor `name` to out: items rows[0..n) of src's batch dimension (cycled). */
static bool add_rows(sd_value *out, const char *name, const sd_tensor *src, const int64_t *rows, int64_t n)
{
    int64_t shape[SD_TENSOR_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    int64_t sb = src->ndim >= 3 ? src->shape[0] : 1;
    if (src->ndim >= 3)
        shape[0] = n;
    sd_tensor *t = sd_value_add_tensor(out, name, src->ndim, shape);
    if (!t)
        return false;
    size_t numel;
    sd_tensor_numel(src, &numel);
    size_t item = numel / (size_t)sb;
    for (int64_t i = 0; i < (src->ndim >= 3 ? n : 1); i++)
        memcpy(t->data + (size_t)i * item, src->data + (size_t)(rows[i] % sb) * item, item * sizeof(float));
    return true;
}

/* The LATENT input's samples, or NULL with the node's error recorded. */
static const sd_tensor *samples_of(sd_node_run *r, sd_value *v)
{
    const sd_tensor *t = sd_value_tensor(v, "samples");
    if (!t || t->ndim != 4 || t->shape[0] < 1) {
        sd_run_error(r, SD_ERR_INVALID, "input 'samples' has no [batch, channels, h, w] samples");
        return NULL;
    }
    return t;
}

/* A new LATENT value with in's attributes and batch_index (taken over; NULL: none). */
static sd_value *latent_like(const sd_value *in, json_t *batch_index)
{
    sd_value *out = sd_value_new(SD_TYPE_LATENT);
    if (out) {
        out->attrs = in->attrs ? json_deep_copy(in->attrs) : json_object();
        if (out->attrs)
            json_object_del(out->attrs, "batch_index");
    }
    if (!out || !out->attrs || (batch_index && json_object_set_new(out->attrs, "batch_index", batch_index))) {
        sd_value_unref(out);
        return NULL;
    }
    return out;
}

static sd_status run_from_batch(sd_node_run *r)
{
    sd_value *in = sd_run_value(r, "samples");
    const sd_tensor *s = samples_of(r, in);
    if (!s)
        return SD_ERR_INVALID;
    int64_t b = s->shape[0], first = sd_run_int(r, "batch_index"), len = sd_run_int(r, "length");
    first = first < b - 1 ? first : b - 1;
    len = len < b - first ? len : b - first;
    json_t *old = in->attrs ? json_object_get(in->attrs, "batch_index") : NULL, *bi = json_array();
    int64_t rows[64];
    for (int64_t i = 0; i < len; i++) {
        rows[i] = first + i;
        json_t *o = json_is_array(old) ? json_array_get(old, (size_t)(first + i)) : NULL;
        if (bi)
            json_array_append_new(bi, json_is_integer(o) ? json_incref(o) : json_integer(first + i));
    }
    sd_value *out = bi ? latent_like(in, bi) : NULL;
    const sd_tensor *m = sd_value_tensor(in, "noise_mask");
    bool ok = out && add_rows(out, "samples", s, rows, len);
    if (ok && m) {
        if (mask_batch(m) == 1) {
            int64_t zero[1] = {0};
            ok = add_rows(out, "noise_mask", m, zero, 1);
        } else {
            ok = add_rows(out, "noise_mask", m, rows, len);
        }
    }
    if (!ok) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc from_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "a batch of latents"),
    SD_IN_INT("batch_index", "0", 0, 63, "first item to take (clamped to the batch)"),
    SD_IN_INT("length", "1", 1, 64, "number of items (clamped to the batch)"),
};
static const sd_output_desc latent_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the latents, with batch_index recording their noise"),
};
const sd_node_desc sd_node_LatentFromBatch = {
    .name = "LatentFromBatch", .version = 1, .category = "latent/batch",
    .doc = "Takes items out of a batch of latents; they keep the noise they had in the batch.",
    .inputs = from_in, .n_inputs = SD_COUNT(from_in),
    .outputs = latent_out, .n_outputs = SD_COUNT(latent_out), .run = run_from_batch,
};

static sd_status run_repeat(sd_node_run *r)
{
    sd_value *in = sd_run_value(r, "samples");
    const sd_tensor *s = samples_of(r, in);
    if (!s)
        return SD_ERR_INVALID;
    int64_t b = s->shape[0], amount = sd_run_int(r, "amount"), n = b * amount;
    int64_t *rows = malloc((size_t)n * sizeof *rows);
    json_t *old = in->attrs ? json_object_get(in->attrs, "batch_index") : NULL;
    bool has_old = json_is_array(old) && json_array_size(old) == (size_t)b;
    /* Without a batch_index ComfyUI sets none (the items then draw noise as one batch); an
     * existing one is extended by offsets of (max - min + 1). */
    json_t *bi = has_old ? json_array() : NULL;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t i = 0; has_old && i < b; i++) {
        int64_t v = json_integer_value(json_array_get(old, (size_t)i));
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    for (int64_t i = 0; rows && i < n; i++) {
        rows[i] = i % b;
        if (bi)
            json_array_append_new(bi, json_integer(json_integer_value(json_array_get(old, (size_t)(i % b))) +
                                                   (i / b) * (hi - lo + 1)));
    }
    sd_value *out = NULL;
    if (rows && (bi || !has_old))
        out = latent_like(in, bi);
    else
        json_decref(bi);
    const sd_tensor *m = sd_value_tensor(in, "noise_mask");
    bool ok = out && add_rows(out, "samples", s, rows, n);
    if (ok && m) {
        /* ComfyUI repeats a mask with more than one item `amount` times (as it is), else keeps it. */
        int64_t mb = mask_batch(m), mn = mb > 1 ? mb * amount : 1;
        int64_t *mrows = malloc((size_t)mn * sizeof *mrows);
        for (int64_t i = 0; mrows && i < mn; i++)
            mrows[i] = i % mb;
        ok = mrows && add_rows(out, "noise_mask", m, mrows, mn);
        free(mrows);
    }
    free(rows);
    if (!ok) {
        sd_value_unref(out);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc repeat_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "a batch of latents"),
    SD_IN_INT("amount", "1", 1, 64, "how many times to repeat the batch"),
};
const sd_node_desc sd_node_RepeatLatentBatch = {
    .name = "RepeatLatentBatch", .version = 1, .category = "latent/batch",
    .doc = "Repeats a batch of latents (for img2img variations of one input).",
    .inputs = repeat_in, .n_inputs = SD_COUNT(repeat_in),
    .outputs = latent_out, .n_outputs = SD_COUNT(latent_out), .run = run_repeat,
};
