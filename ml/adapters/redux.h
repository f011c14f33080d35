/* FLUX.1 Redux's image encoder (Black Forest Labs' flux1-redux-dev.safetensors; ComfyUI's
 * comfy/ldm/flux/redux.py ReduxImageEncoder): SigLIP's last hidden state [tokens, 1152] becomes
 * FLUX text tokens [tokens, 4096] = redux_down(silu(redux_up(x))), with redux_up 1152 -> 3 x 4096
 * and redux_down 3 x 4096 -> 4096. Sizes come from the tensor shapes (the tiny test files). */
#ifndef SD_ML_REDUX_H
#define SD_ML_REDUX_H

#include "ml/loading/weights.h"

typedef struct sd_redux_config {
    int in_dim;  /* redux_up's input: the SigLIP width (1152) */
    int hidden;  /* redux_up's output (3 x 4096) */
    int out_dim; /* redux_down's output: FLUX's context width (4096) */
} sd_redux_config;

/* True when st holds a Redux model (redux_down.weight). */
bool sd_redux_present(const sd_safetensors *st);

/* The architecture from the tensor shapes; SD_ERR_INVALID naming the file and tensor when one is
 * missing or of a shape that does not chain (redux_up.weight [hidden, in], redux_up.bias [hidden],
 * redux_down.weight [out, hidden], redux_down.bias [out]). */
sd_status sd_redux_inspect(sd_context *ctx, const sd_safetensors *st, sd_redux_config *cfg);

typedef struct sd_redux sd_redux;

/* A Redux encoder over st (which must outlive it); inspects first. Weights upload on first use. */
sd_status sd_redux_new(sd_cl *cl, const sd_safetensors *st, sd_dtype weight_dtype, sd_redux **out);
void sd_redux_free(sd_redux *r); /* NULL-safe */
const sd_redux_config *sd_redux_config_of(const sd_redux *r);

/* out [rows, out_dim] = the encoder on x [rows, in_dim] (host arrays). */
sd_status sd_redux_project(sd_redux *r, const float *x, int64_t rows, float *out);

#endif
