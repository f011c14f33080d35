/* FLUX Redux's image encoder (see redux.h): two Linear layers on the op library. */
#include "ml/adapters/redux.h"
#include "runtime-opencl/ops.h"
#include <stdlib.h>

struct sd_redux {
    sd_cl *cl;
    const sd_safetensors *st;
    sd_redux_config cfg;
    sd_weights *w;
};

bool sd_redux_present(const sd_safetensors *st)
{
    return sd_safetensors_find(st, "redux_down.weight") != NULL;
}

/* Tensor `name` of st with shape [rows] (cols 0) or [rows, cols], else the error. */
static sd_status expect(sd_context *ctx, const sd_safetensors *st, const char *name, int64_t rows, int64_t cols)
{
    const sd_st_tensor *t = sd_safetensors_find(st, name);
    int ndim = cols ? 2 : 1;
    if (!t || t->ndim != ndim || t->shape[0] != rows || (cols && t->shape[1] != cols))
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: Redux tensor '%s' is missing or not [%lld%s%.0lld]",
                            sd_safetensors_path(st), name, (long long)rows, cols ? ", " : "", (long long)cols);
    return SD_OK;
}

sd_status sd_redux_inspect(sd_context *ctx, const sd_safetensors *st, sd_redux_config *cfg)
{
    const sd_st_tensor *up = sd_safetensors_find(st, "redux_up.weight");
    const sd_st_tensor *down = sd_safetensors_find(st, "redux_down.weight");
    if (!up || !down || up->ndim != 2 || down->ndim != 2 || up->shape[0] > 1 << 20 || up->shape[1] > 1 << 20 ||
        down->shape[0] > 1 << 20)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not a FLUX Redux model (no 2-D redux_up.weight and "
                            "redux_down.weight)", sd_safetensors_path(st));
    *cfg = (sd_redux_config){.in_dim = (int)up->shape[1], .hidden = (int)up->shape[0], .out_dim = (int)down->shape[0]};
    sd_status s = expect(ctx, st, "redux_up.bias", cfg->hidden, 0);
    if (!s)
        s = expect(ctx, st, "redux_down.weight", cfg->out_dim, cfg->hidden);
    return s ? s : expect(ctx, st, "redux_down.bias", cfg->out_dim, 0);
}

sd_status sd_redux_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_redux **out)
{
    *out = NULL;
    sd_redux_config cfg;
    sd_status s = sd_redux_inspect(cl->ctx, st, &cfg);
    if (s)
        return s;
    sd_redux *r = calloc(1, sizeof *r);
    if (!r)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    *r = (sd_redux){.cl = cl, .st = st, .cfg = cfg};
    if ((s = sd_weights_new(cl, st, "", weight_dtype, &r->w))) {
        free(r);
        return s;
    }
    *out = r;
    return SD_OK;
}

void sd_redux_free(sd_redux *r)
{
    if (!r)
        return;
    sd_weights_free(r->w);
    free(r);
}

const sd_redux_config *sd_redux_config_of(const sd_redux *r)
{
    return &r->cfg;
}

/* The Linear layer <name>.weight / <name>.bias on x with activation act. */
static sd_status linear(sd_redux *r, const char *name, const sd_dtensor *x, sd_act act, sd_dtensor **out)
{
    const sd_dtensor *w, *b;
    sd_status s = sd_weights_getf_linear(r->w, &w, "%s.weight", name);
    if (!s)
        s = sd_weights_getf(r->w, &b, "%s.bias", name);
    return s ? s : sd_op_linear(r->cl, x, w, b, act, out);
}

sd_status sd_redux_project(sd_redux *r, const float *x, int64_t rows, float *out)
{
    if (rows < 1)
        return sd_set_error(r->cl->ctx, SD_ERR_INVALID, "Redux: %lld rows", (long long)rows);
    int64_t shape[2] = {rows, r->cfg.in_dim};
    sd_dtensor *in = NULL, *up = NULL, *down = NULL;
    sd_status s = sd_dtensor_new(r->cl, SD_DTYPE_F32, 2, shape, &in);
    if (!s)
        s = sd_dtensor_upload(in, x);
    if (!s)
        s = linear(r, "redux_up", in, SD_ACT_SILU, &up);
    if (!s)
        s = linear(r, "redux_down", up, SD_ACT_NONE, &down);
    if (!s)
        s = sd_dtensor_download(down, out);
    sd_dtensor_free(in);
    sd_dtensor_free(up);
    sd_dtensor_free(down);
    if (s)
        sd_error_prefix(r->cl->ctx, "Redux");
    return s;
}
