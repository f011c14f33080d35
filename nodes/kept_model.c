/* Models kept per context (see kept_model.h). */
#include "nodes/kept_model.h"
#include "core/files.h"
#include "nodes/image_device.h"
#include <stdlib.h>
#include <string.h>

typedef struct kept {
    char *path;
    sd_file_id id;
    sd_safetensors *st;
    void *obj;
    void (*free_obj)(void *);
} kept;

static void kept_free(void *p)
{
    kept *k = p;
    if (!k)
        return;
    if (k->obj)
        k->free_obj(k->obj);
    sd_safetensors_close(k->st);
    free(k->path);
    free(k);
}

sd_status sd_node_kept_model(sd_node_run *r, const char *slot, const char *path, sd_kept_make make,
                             void (*free_obj)(void *), void **obj)
{
    sd_context *ctx = sd_run_context(r);
    kept *k = sd_context_ext(ctx, slot);
    struct stat sb;
    sd_file_id now = {0};
    if (stat(path, &sb) == 0)
        sd_file_id_from_stat(&sb, &now);
    if (k && strcmp(k->path, path) == 0 && sd_file_id_equal(&k->id, &now)) {
        *obj = k->obj;
        return SD_OK;
    }
    /* The device first: slots are freed in reverse order of creation, so the model's device
     * tensors go before the device. */
    sd_cl *cl;
    sd_status st = sd_cl_get(ctx, &cl);
    if (st)
        return sd_node_op_fail(r, st);
    sd_context_set_ext(ctx, slot, NULL, NULL); /* frees the one kept before */
    if (!(k = calloc(1, sizeof *k)) || !(k->path = sd_strdup(path))) {
        kept_free(k);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    k->free_obj = free_obj;
    if (!(st = sd_safetensors_open(ctx, path, &k->st))) {
        k->id = *sd_safetensors_file_id(k->st);
        st = make(cl, k->st, &k->obj);
    }
    if (!st)
        st = sd_context_set_ext(ctx, slot, k, kept_free);
    if (st) {
        kept_free(k);
        return sd_node_op_fail(r, st);
    }
    *obj = k->obj;
    return SD_OK;
}
