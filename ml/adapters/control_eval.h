/* ControlNets attached to conditioning and evaluated during sampling (ComfyUI's ControlNet
 * objects in comfy/controlnet.py and their use in comfy/samplers.py).
 *
 * ControlNetApply / ControlNetApplyAdvanced attach a chain of links to each conditioning entry:
 * a link is one ControlNet with its hint image, strength and [start_percent, end_percent], and
 * points to the link applied before it on that entry (set_previous_controlnet). A CONDITIONING
 * value carrying links holds an sd_cond_controls as its handle (so it is not cacheable: it
 * references a model).
 *
 * At each model call the sampler asks for the residuals of the entries it batches: every link of
 * an entry's chain whose percent range contains the current sigma runs on the entry's items
 * (the scaled latent or a regional entry's area of it, the entry's context, the hint cropped to
 * that input's aspect ratio and resized nearest-exact to 8x its size, as
 * comfy.utils.common_upscale(..., "nearest-exact",
 * "center")), each scaled by its strength; the chain's residuals are summed, oldest link first.
 * Entries without an active link get zeros when batched with ones that have one (exact: items
 * are independent in the UNet), and no residuals at all when none in the call is active. */
#ifndef SD_ML_CONTROL_EVAL_H
#define SD_ML_CONTROL_EVAL_H

#include "core/value.h"
#include "ml/adapters/controlnet.h"
#include "ml/sampling/schedulers.h"

typedef struct sd_control_link sd_control_link;

/* A new link (refcount 1) holding new references to net, image (an IMAGE value) and prev (NULL
 * for the first ControlNet on an entry). NULL when memory runs out. */
sd_control_link *sd_control_link_new(sd_controlnet *net, sd_value *image, double strength, double start_percent,
                                     double end_percent, sd_control_link *prev);
sd_control_link *sd_control_link_ref(sd_control_link *l); /* returns l; NULL-safe */
void sd_control_link_unref(sd_control_link *l);           /* NULL-safe */
const sd_control_link *sd_control_link_prev(const sd_control_link *l);

/* The handle of a CONDITIONING value with ControlNets: per entry a chain (one reference, or
 * NULL) and whether it also applies to the negative side (ControlNetApply's
 * control_apply_to_uncond). */
typedef struct sd_cond_controls {
    size_t n;
    sd_control_link **links;
    bool *to_uncond;
} sd_cond_controls;

/* A zeroed attachment for n entries; NULL when memory runs out. */
sd_cond_controls *sd_cond_controls_new(size_t n);
void sd_cond_controls_free(void *controls); /* the value's handle_free; drops the references */

/* Entry i's chain on a CONDITIONING value (borrowed; NULL when none); *to_uncond (may be NULL)
 * receives its apply-to-negative flag. */
const sd_control_link *sd_cond_control(const sd_value *cond, size_t i, bool *to_uncond);

/* A deep copy of a CONDITIONING value (tensors, attrs) that keeps its ControlNets: the copy's
 * attachment holds new references to the same chains. For nodes that change conditioning entries
 * without changing their number or order (adding tensors or attributes). NULL when memory runs
 * out. */
sd_value *sd_cond_copy(const sd_value *cond);

/* ComfyUI's apply_empty_x_to_equal_area for ControlNets: when no negative entry has a chain,
 * each positive chain flagged to_uncond in turn (k = 0, 1, ...) goes to negative entry k % n_neg,
 * which takes it if it has none yet and is otherwise repeated with it as a new entry. Writes the
 * resulting negative entries as (source index src[j], chain chains[j]) for j < *n_out; src and
 * chains must hold n_neg + n_pos items. Without such chains the negative entries stay as they are. */
void sd_control_fill_uncond(const sd_control_link *const *pos, const bool *pos_to_uncond, size_t n_pos,
                            const sd_control_link *const *neg, size_t n_neg, size_t *src,
                            const sd_control_link **chains, size_t *n_out);

/* Per-sampling state: the model's sigma schedule (for percent -> sigma) and each link's hint
 * resized once per model input size. Must not outlive the links it saw. */
typedef struct sd_control_eval sd_control_eval;
sd_status sd_control_eval_new(sd_context *ctx, const sd_model_sampling *ms, sd_control_eval **out);
void sd_control_eval_free(sd_control_eval *ev); /* NULL-safe */

/* Residuals of one model call, owned by the caller (sd_control_residuals_free). */
typedef struct sd_control_residuals {
    /* n_slots = 2 n - 1: the n - 1 skip residuals, the middle one (tensors[n - 1]), then the
     * T2I-Adapter features per input block (tensors[n + k] for block k); a NULL slot adds nothing */
    sd_dtensor **tensors;
    const sd_dtensor **skips;
    int n, n_slots;
    sd_unet_control control;
} sd_control_residuals;

/* The residuals for a model call over n_entries entries (ControlNets and T2I-Adapters: an
 * adapter runs once per link and latent size on the link's hint batch, its features times the
 * strength cycled over the items as the hint would be) of batch items each (entry k has items
 * k * batch .. k * batch + batch - 1; chains[k] its chain or NULL). x: the host latents the model
 * sees, one [4, h, w] per item (h x w: the latent, or a regional entry's area of it; each hint is
 * resized to 8x that, as ComfyUI does); sigma and timestep of the call; context: device
 * [n_entries * batch, tokens, dim]; y: the items' ADM vectors [n_entries * batch, adm] for an
 * SDXL model (what its UNet gets; SDXL ControlNets take them too), NULL otherwise. On success *control is NULL when no link is
 * active, else res->control (valid until res is freed). Errors: the ControlNet's (shapes named,
 * device errors), SD_ERR_INVALID for a hint whose channels the ControlNet does not take. */
sd_status sd_control_eval_call(sd_control_eval *ev, const sd_control_link *const *chains, size_t n_entries,
                               size_t batch, const float *x, int64_t h, int64_t w, float sigma, float timestep,
                               const sd_dtensor *context, const sd_dtensor *y, sd_control_residuals *res,
                               const sd_unet_control **control);
void sd_control_residuals_free(sd_control_residuals *res); /* leaves it zeroed */

/* comfy.utils.common_upscale(image, width, height, "nearest-exact", "center") of an IMAGE tensor
 * [B, H, W, C] into a new host array [B, C, height, width] (*out, malloc'd). SD_ERR_NOMEM or
 * SD_ERR_LIMIT (message on ctx). */
sd_status sd_control_hint_resize(sd_context *ctx, const sd_tensor *image, int64_t width, int64_t height, float **out);

#endif
