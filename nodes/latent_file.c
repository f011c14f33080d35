/* .latent files (see nodes/latent_file.h). */
#include "nodes/latent_file.h"
#include "core/png.h"
#include "ml/formats/safetensors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills the tensors of a .latent file: index 0 the samples as little-endian f32, index 1 the
 * empty version tensor. */
static sd_status fill_latent(void *user, size_t index, void *dst, size_t nbytes)
{
    const sd_tensor *t = user;
    unsigned char *p = dst;
    for (size_t i = 0; index == 0 && i < nbytes / 4; i++) {
        uint32_t bits;
        memcpy(&bits, &t->data[i], 4);
        for (int k = 0; k < 4; k++)
            p[4 * i + (size_t)k] = (unsigned char)(bits >> (8 * k));
    }
    return SD_OK;
}

sd_status sd_save_latent(sd_context *ctx, const sd_save_request *req, const sd_value *latent, char **path)
{
    *path = NULL;
    const sd_tensor *t = latent ? sd_value_tensor(latent, "samples") : NULL;
    if (!t || t->ndim < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "LATENT has no samples");
    sd_st_entry entries[2] = {{.name = SD_LATENT_TENSOR, .dtype = SD_ST_F32, .ndim = t->ndim},
                              {.name = SD_LATENT_VERSION_0, .dtype = SD_ST_F32, .ndim = 1, .shape = {0}}};
    memcpy(entries[0].shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    char engine[64];
    sd_output_engine_text(engine, sizeof engine);
    const char *meta[9];
    size_t n = 0;
    const char *texts[4][2] = {{SD_PNG_KEY_WORKFLOW, req->workflow_xml},
                               {SD_PNG_KEY_ENGINE, engine},
                               {SD_PNG_KEY_PROVENANCE, req->provenance_json},
                               {SD_PNG_KEY_NODE, req->node_id}};
    for (int k = 0; k < 4; k++)
        if (texts[k][1]) {
            meta[n++] = texts[k][0];
            meta[n++] = texts[k][1];
        }
    meta[n] = NULL;
    unsigned char *data = NULL;
    size_t len = 0;
    sd_output_names names;
    sd_status st = sd_output_names_open(ctx, req->dir, req->prefix, &names);
    if (!st && !(st = sd_safetensors_encode(ctx, req->prefix, entries, 2, meta, fill_latent, (void *)t, &data, &len)))
        st = sd_output_write(ctx, &names, "latent", data, len, path);
    free(data);
    sd_output_names_clear(&names);
    return st;
}

sd_status sd_load_latent(sd_context *ctx, const char *path, sd_value **latent)
{
    *latent = NULL;
    sd_safetensors *f = NULL;
    sd_value *v = NULL;
    sd_status st = sd_safetensors_open(ctx, path, &f);
    if (st)
        return st;
    const sd_st_tensor *t = sd_safetensors_find(f, SD_LATENT_TENSOR);
    if (!t) {
        st = sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: no tensor '%s'", path, SD_LATENT_TENSOR);
        goto done;
    }
    bool empty = false;
    for (int d = 0; d < t->ndim; d++)
        empty |= t->shape[d] < 1;
    if (t->ndim != 4 || empty) {
        char dims[96] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: %s has shape [%s]; a latent is [batch, channels, height, width]",
                          path, SD_LATENT_TENSOR, dims);
        goto done;
    }
    if (!sd_st_dtype_is_weight(t->dtype)) {
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: %s has dtype %s; a latent is F32, F16 or BF16", path,
                          SD_LATENT_TENSOR, sd_st_dtype_name(t->dtype));
        goto done;
    }
    sd_tensor *s;
    if (!(v = sd_value_new(SD_TYPE_LATENT)) || !(s = sd_value_add_tensor(v, "samples", 4, t->shape))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory for the latent", path);
        goto done;
    }
    if ((st = sd_safetensors_read_f32(ctx, f, t, s->data, t->numel)))
        goto done;
    if (!sd_safetensors_find(f, SD_LATENT_VERSION_0)) {
        /* torch multiplies an f32 tensor by a Python float in f32. */
        const float scale = (float)(1.0 / SD_LATENT_OLD_SCALE);
        for (size_t i = 0; i < t->numel; i++)
            s->data[i] *= scale;
    }
    *latent = v;
    v = NULL;
done:
    sd_value_unref(v);
    sd_safetensors_close(f);
    return st;
}
