/* Values flowing between nodes: reference-counted, typed by socket type.
 *
 * - Scalars (INT, FLOAT, BOOLEAN, STRING, ENUM) hold i / f / b / s.
 * - Tensor values (LATENT, IMAGE, MASK, CONDITIONING) hold named fp32 host tensors plus small
 *   JSON attributes. Conventions (as ComfyUI):
 *     IMAGE        "image"      [batch, height, width, 3], RGB in [0, 1]
 *     MASK         "mask"       [batch, height, width], 1 = masked
 *     LATENT       "samples"    [batch, 4, height/8, width/8]; optional "noise_mask"
 *     CONDITIONING entries i = 0..n-1: "cond.i" [batch, tokens, dim], optional "pooled.i";
 *                  attrs {"entries":[{"strength":..,...}, ...]}
 *     SIGMAS       "sigmas"     [n]
 *   SAMPLER and NOISE hold attrs only ({"sampler_name": ..}, {"seed": ..}; nodes/sample_core.h).
 * - Handle values (MODEL, CLIP, VAE, CONTROL_NET, UPSCALE_MODEL, GUIDER) and tensor values with
 *   attachments (a CONDITIONING carrying a ControlNet) hold an opaque object with a free
 *   function; such values are not cacheable.
 * Cacheable values serialize to bytes and back exactly (sd_value_serialize). */
#ifndef SD_CORE_VALUE_H
#define SD_CORE_VALUE_H

#include "sdflow/node.h"
#include <jansson.h>

#define SD_TENSOR_MAX_DIMS 5

typedef struct sd_tensor {
    int ndim;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *data; /* owned by the value; numel floats, row-major */
} sd_tensor;

typedef struct sd_named_tensor {
    char name[32];
    sd_tensor tensor;
} sd_named_tensor;

typedef struct sd_value {
    sd_type type;
    int refcount;
    int64_t i;
    double f;
    bool b;
    char *s;                 /* STRING, ENUM */
    sd_named_tensor **tensors; /* each allocated on its own: pointers stay valid as tensors are added */
    size_t n_tensors;
    json_t *attrs;           /* JSON object or NULL; owned */
    void *handle;            /* opaque object (models, attachments) */
    void (*handle_free)(void *handle);
} sd_value;

sd_value *sd_value_new(sd_type type);      /* refcount 1; NULL on out of memory */
sd_value *sd_value_ref(sd_value *v);       /* returns v; NULL-safe */
void sd_value_unref(sd_value *v);          /* frees at zero; NULL-safe */

sd_value *sd_value_int(int64_t i);
sd_value *sd_value_float(double f);
sd_value *sd_value_bool(bool b);
sd_value *sd_value_string(sd_type type, const char *s); /* STRING, ENUM or POSE_KEYPOINT; copies s */
/* A handle value owning obj (freed with free_fn when the last reference goes). */
sd_value *sd_value_handle(sd_type type, void *obj, void (*free_fn)(void *));

/* Adds a zero-filled tensor; returns it (valid as long as the value), or NULL when the size
 * overflows or memory runs out. The name must be unique within the value and shorter than
 * 32 bytes. */
sd_tensor *sd_value_add_tensor(sd_value *v, const char *name, int ndim, const int64_t *shape);
sd_tensor *sd_value_tensor(const sd_value *v, const char *name); /* NULL when absent */

/* Copies src's tensors (all but the one named `except`, which may be NULL) and attributes into
 * dst, which must not already hold tensors of those names. False when memory runs out. */
bool sd_value_copy_contents(sd_value *dst, const sd_value *src, const char *except);

/* Number of elements; false when the product overflows size_t or a dimension is negative. */
bool sd_tensor_numel(const sd_tensor *t, size_t *numel);

/* True when the value can be stored in the cache (no handle). */
bool sd_value_cacheable(const sd_value *v);
/* A deep copy of a cacheable value (tensors, attrs); NULL for handle values or no memory. */
sd_value *sd_value_copy(const sd_value *v);

/* Exact binary serialization of a cacheable value. *out is malloc'd. */
sd_status sd_value_serialize(const sd_value *v, unsigned char **out, size_t *len);
/* Parses bytes written by sd_value_serialize; SD_ERR_PARSE on any inconsistency. */
sd_status sd_value_deserialize(const unsigned char *data, size_t len, sd_value **out);

#endif
