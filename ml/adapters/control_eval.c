/* ControlNet links on conditioning and their evaluation during sampling. See control_eval.h. */
#include "ml/adapters/control_eval.h"
#include "ml/adapters/t2i_adapter.h"
#include "core/checked.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sd_control_link {
    int refcount;
    sd_controlnet *net;
    sd_value *image; /* IMAGE [B, H, W, C] */
    float strength;
    double start_percent, end_percent;
    sd_control_link *prev;
};

sd_control_link *sd_control_link_new(sd_controlnet *net, sd_value *image, double strength, double start_percent,
                                     double end_percent, sd_control_link *prev)
{
    sd_control_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->refcount = 1;
    l->net = sd_controlnet_ref(net);
    l->image = sd_value_ref(image);
    l->strength = (float)strength;
    l->start_percent = start_percent;
    l->end_percent = end_percent;
    l->prev = sd_control_link_ref(prev);
    return l;
}

sd_control_link *sd_control_link_ref(sd_control_link *l)
{
    if (l)
        l->refcount++;
    return l;
}

void sd_control_link_unref(sd_control_link *l)
{
    while (l && --l->refcount == 0) { /* a chain is released iteratively */
        sd_control_link *prev = l->prev;
        sd_controlnet_unref(l->net);
        sd_value_unref(l->image);
        free(l);
        l = prev;
    }
}

const sd_control_link *sd_control_link_prev(const sd_control_link *l)
{
    return l->prev;
}

sd_cond_controls *sd_cond_controls_new(size_t n)
{
    sd_cond_controls *c = calloc(1, sizeof *c);
    if (!c || !(c->links = calloc(n ? n : 1, sizeof *c->links)) || !(c->to_uncond = calloc(n ? n : 1, sizeof *c->to_uncond))) {
        if (c)
            free(c->links);
        free(c);
        return NULL;
    }
    c->n = n;
    return c;
}

void sd_cond_controls_free(void *controls)
{
    sd_cond_controls *c = controls;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sd_control_link_unref(c->links[i]);
    free(c->links);
    free(c->to_uncond);
    free(c);
}

const sd_control_link *sd_cond_control(const sd_value *cond, size_t i, bool *to_uncond)
{
    const sd_cond_controls *c = cond->handle_free == sd_cond_controls_free ? cond->handle : NULL;
    bool flag = c && i < c->n && c->links[i] && c->to_uncond[i];
    if (to_uncond)
        *to_uncond = flag;
    return c && i < c->n ? c->links[i] : NULL;
}

sd_value *sd_cond_copy(const sd_value *cond)
{
    const sd_cond_controls *c = cond->handle_free == sd_cond_controls_free ? cond->handle : NULL;
    sd_value *out = sd_value_new(SD_TYPE_CONDITIONING);
    bool ok = out && sd_value_copy_contents(out, cond, NULL);
    sd_cond_controls *c2 = ok && c ? sd_cond_controls_new(c->n) : NULL;
    if (ok && c && c2) {
        for (size_t i = 0; i < c->n; i++) {
            c2->links[i] = sd_control_link_ref(c->links[i]);
            c2->to_uncond[i] = c->to_uncond[i];
        }
        out->handle = c2;
        out->handle_free = sd_cond_controls_free;
    }
    if (!ok || (c && !c2)) {
        sd_value_unref(out);
        return NULL;
    }
    return out;
}

void sd_control_fill_uncond(const sd_control_link *const *pos, const bool *pos_to_uncond, size_t n_pos,
                            const sd_control_link *const *neg, size_t n_neg, size_t *src,
                            const sd_control_link **chains, size_t *n_out)
{
    bool any_neg = false;
    for (size_t j = 0; j < n_neg; j++) {
        src[j] = j;
        chains[j] = neg[j];
        any_neg |= neg[j] != NULL;
    }
    *n_out = n_neg;
    if (any_neg || n_neg == 0)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n_pos; i++) {
        if (!pos[i] || !pos_to_uncond[i])
            continue;
        size_t target = k++ % n_neg;
        if (!chains[target]) {
            chains[target] = pos[i];
        } else {
            src[*n_out] = target;
            chains[(*n_out)++] = pos[i];
        }
    }
}

/* ---- hints ---- */

/* torch's nearest-exact source index: floor((o + 0.5) * in / out) in float, clamped. */
static int64_t nearest_exact(int64_t o, int64_t n_in, int64_t n_out)
{
    float scale = (float)n_in / (float)n_out;
    int64_t i = (int64_t)floorf((float)(((double)o + 0.5) * (double)scale));
    return i < n_in - 1 ? i : n_in - 1;
}

sd_status sd_control_hint_resize(sd_context *ctx, const sd_tensor *image, int64_t width, int64_t height, float **out)
{
    *out = NULL;
    int64_t b = image->shape[0], oh = image->shape[1], ow = image->shape[2], c = image->shape[3];
    int64_t cx = 0, cy = 0;
    double old_aspect = (double)ow / (double)oh, new_aspect = (double)width / (double)height;
    if (old_aspect > new_aspect) /* keep the centre with the target's aspect ratio (Python's round) */
        cx = (int64_t)nearbyint(((double)ow - (double)ow * (new_aspect / old_aspect)) / 2.0);
    else if (old_aspect < new_aspect)
        cy = (int64_t)nearbyint(((double)oh - (double)oh * (old_aspect / new_aspect)) / 2.0);
    size_t n;
    if (!sd_shape_bytes((const int64_t[]){b, c, height, width}, 4, sizeof(float), &n))
        return sd_set_error(ctx, SD_ERR_LIMIT, "ControlNet hint of %lldx%lld is too large", (long long)width,
                            (long long)height);
    float *o = malloc(n);
    int64_t *xs = malloc((size_t)width * sizeof *xs);
    if (!o || !xs) {
        free(o);
        free(xs);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a ControlNet hint");
    }
    for (int64_t x = 0; x < width; x++)
        xs[x] = cx + nearest_exact(x, ow - 2 * cx, width);
    for (int64_t i = 0; i < b; i++)
        for (int64_t y = 0; y < height; y++) {
            const float *row = image->data + (i * oh + cy + nearest_exact(y, oh - 2 * cy, height)) * ow * c;
            for (int64_t ch = 0; ch < c; ch++) {
                float *dst = o + ((i * c + ch) * height + y) * width;
                for (int64_t x = 0; x < width; x++)
                    dst[x] = row[xs[x] * c + ch];
            }
        }
    free(xs);
    *out = o;
    return SD_OK;
}

/* ---- evaluation ---- */

typedef struct hint_cache {
    const sd_control_link *link;
    int64_t h, w; /* the latent size it was resized for */
    float *hint;  /* [hb, C, hh, hw]: 8h x 8w, a T2I-Adapter's size (sd_t2i_adapter_hint_size) */
    int64_t hb, c, hh, hw;
    /* T2I-Adapters: the features of the hint batch times the strength, [hb, fc, fh, fw] each */
    float *feat[SD_T2I_LEVELS];
    int64_t fshape[SD_T2I_LEVELS][4];
} hint_cache;

struct sd_control_eval {
    sd_context *ctx;
    sd_model_sampling ms;
    hint_cache *hints;
    size_t n_hints;
};

sd_status sd_control_eval_new(sd_context *ctx, const sd_model_sampling *ms, sd_control_eval **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    (*out)->ctx = ctx;
    (*out)->ms = *ms;
    return SD_OK;
}

void sd_control_eval_free(sd_control_eval *ev)
{
    if (!ev)
        return;
    for (size_t i = 0; i < ev->n_hints; i++) {
        free(ev->hints[i].hint);
        for (int k = 0; k < SD_T2I_LEVELS; k++)
            free(ev->hints[i].feat[k]);
    }
    free(ev->hints);
    free(ev);
}

/* ControlBase.get_control's timestep_range test. */
static bool link_active(const sd_control_eval *ev, const sd_control_link *l, float sigma)
{
    double s = sigma;
    return !(s > sd_model_sampling_percent_to_sigma(&ev->ms, l->start_percent) ||
             s < sd_model_sampling_percent_to_sigma(&ev->ms, l->end_percent));
}

static bool chain_active(const sd_control_eval *ev, const sd_control_link *l, float sigma)
{
    for (; l; l = l->prev)
        if (link_active(ev, l, sigma))
            return true;
    return false;
}

/* torch.mean(hint, 1, keepdim=True) of [b, c, n] into [b, 1, n] (a 1-channel T2I-Adapter). */
static float *channel_mean(const float *hint, int64_t b, int64_t c, int64_t n)
{
    float *m = malloc((size_t)(b * n) * sizeof *m);
    for (int64_t i = 0; m && i < b; i++)
        for (int64_t j = 0; j < n; j++) {
            float sum = 0.0f;
            for (int64_t k = 0; k < c; k++)
                sum += hint[(i * c + k) * n + j];
            m[i * n + j] = sum / (float)c;
        }
    return m;
}

/* A T2I-Adapter's features for c's hint, times the link's strength (ComfyUI's T2IAdapter runs
 * the adapter once per hint size and scales copies of its output). */
static sd_status t2i_features(sd_control_eval *ev, const sd_control_link *l, hint_cache *c)
{
    sd_t2i_adapter *a = sd_controlnet_t2i(l->net);
    sd_cl *cl;
    sd_dtensor *x = NULL, *f[SD_T2I_LEVELS] = {0};
    sd_status st = sd_cl_get(ev->ctx, &cl);
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){c->hb, c->c, c->hh, c->hw}, &x);
    if (!st)
        st = sd_dtensor_upload(x, c->hint);
    if (!st)
        st = sd_t2i_adapter_forward(a, x, f);
    for (int k = 0; !st && k < SD_T2I_LEVELS; k++) {
        memcpy(c->fshape[k], f[k]->shape, sizeof c->fshape[k]);
        if (!(c->feat[k] = malloc(f[k]->numel * sizeof *c->feat[k])))
            st = sd_set_error(ev->ctx, SD_ERR_NOMEM, "out of memory for T2I-Adapter features");
        if (!st)
            st = sd_dtensor_download(f[k], c->feat[k]);
        for (size_t i = 0; !st && i < f[k]->numel; i++)
            c->feat[k][i] *= l->strength;
    }
    sd_dtensor_free(x);
    for (int k = 0; k < SD_T2I_LEVELS; k++)
        sd_dtensor_free(f[k]);
    return st;
}

/* The link's hint at 8x a latent of h x w (a T2I-Adapter's: rounded up to its unshuffle factor,
 * averaged over the channels for a 1-channel adapter, and its features), prepared once per size
 * (ControlBase.get_control resizes the whole hint to the model input, which is an area of the
 * latent for regional entries). */
static sd_status link_hint(sd_control_eval *ev, const sd_control_link *l, int64_t h, int64_t w, const hint_cache **out)
{
    for (size_t i = 0; i < ev->n_hints; i++)
        if (ev->hints[i].link == l && ev->hints[i].h == h && ev->hints[i].w == w) {
            *out = &ev->hints[i];
            return SD_OK;
        }
    const sd_tensor *img = sd_value_tensor(l->image, "image");
    int want = sd_controlnet_config_of(l->net)->hint_channels;
    sd_t2i_adapter *a = sd_controlnet_t2i(l->net);
    if (!img || img->ndim != 4 || img->shape[0] < 1 || img->shape[1] < 1 || img->shape[2] < 1)
        return sd_set_error(ev->ctx, SD_ERR_INVALID, "ControlNet hint is not an image");
    if (!sd_controlnet_takes_channels(l->net, img->shape[3]))
        return sd_set_error(ev->ctx, SD_ERR_INVALID, "ControlNet hint image has %lld channels, %s takes %d",
                            (long long)img->shape[3], sd_controlnet_path(l->net), want);
    hint_cache *grown = realloc(ev->hints, (ev->n_hints + 1) * sizeof *grown);
    if (!grown)
        return sd_set_error(ev->ctx, SD_ERR_NOMEM, "out of memory");
    ev->hints = grown;
    hint_cache *c = &ev->hints[ev->n_hints++];
    *c = (hint_cache){.link = l, .h = h, .w = w, .hb = img->shape[0], .c = img->shape[3], .hh = 8 * h, .hw = 8 * w};
    if (a)
        sd_t2i_adapter_hint_size(a, h, w, &c->hh, &c->hw);
    sd_status st = sd_control_hint_resize(ev->ctx, img, c->hw, c->hh, &c->hint);
    if (!st && a && want == 1 && c->c > 1) {
        float *m = channel_mean(c->hint, c->hb, c->c, c->hh * c->hw);
        free(c->hint);
        c->hint = m;
        c->c = 1;
        if (!m)
            st = sd_set_error(ev->ctx, SD_ERR_NOMEM, "out of memory");
    }
    if (!st && a)
        st = t2i_features(ev, l, c);
    if (st) { /* dropped: a later call prepares it again */
        free(c->hint);
        for (int k = 0; k < SD_T2I_LEVELS; k++)
            free(c->feat[k]);
        ev->n_hints--;
        return st;
    }
    *out = c;
    return SD_OK;
}

/* A device tensor of items copies of per-item data cycled from src (n_src items of item floats):
 * item i is src[(i % batch) % n_src] (comfy.utils.broadcast_image_to with batched entries). */
static sd_status upload_items(sd_cl *cl, const float *src, size_t n_src, size_t item, size_t items, size_t batch,
                              int ndim, const int64_t *shape, sd_dtensor **out)
{
    float *host = malloc(items * item * sizeof *host);
    if (!host)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < items; i++)
        memcpy(host + i * item, src + ((i % batch) % n_src) * item, item * sizeof *host);
    sd_status st = sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, out);
    if (!st)
        st = sd_dtensor_upload(*out, host);
    free(host);
    return st;
}

/* *acc += y (frees y); *acc = y when empty. */
static sd_status accumulate(sd_cl *cl, sd_dtensor **acc, sd_dtensor *y)
{
    if (!*acc) {
        *acc = y;
        return SD_OK;
    }
    sd_dtensor *sum = NULL;
    sd_status st = sd_op_binary(cl, SD_BINARY_ADD, *acc, y, &sum);
    sd_dtensor_free(y);
    if (!st) {
        sd_dtensor_free(*acc);
        *acc = sum;
    }
    return st;
}

/* A T2I-Adapter link's features into their slots of acc (2 n - 1 slots, see
 * sd_control_residuals), cycled over the items as its hint would be. */
static sd_status add_features(sd_cl *cl, const sd_control_link *l, const hint_cache *hc, size_t items, size_t batch,
                              sd_dtensor **acc, int n)
{
    const sd_t2i_config *cfg = sd_t2i_adapter_config(sd_controlnet_t2i(l->net));
    sd_status st = SD_OK;
    for (int k = 0; !st && k < SD_T2I_LEVELS; k++) {
        int slot = cfg->feature_block[k] < 0 ? n - 1 : n + cfg->feature_block[k];
        int64_t shape[4] = {(int64_t)items, hc->fshape[k][1], hc->fshape[k][2], hc->fshape[k][3]};
        size_t item = (size_t)(shape[1] * shape[2] * shape[3]);
        sd_dtensor *t = NULL;
        st = upload_items(cl, hc->feat[k], (size_t)hc->hb, item, items, batch, 4, shape, &t);
        if (!st)
            st = accumulate(cl, &acc[slot], t);
    }
    return st;
}

/* The residuals of one chain over `items` items (x: their latents, [4, h, w] each) into acc (2 n - 1
 * slots, summed oldest link first; n: the residual count of the call's ControlNets). */
static sd_status run_chain(sd_control_eval *ev, sd_cl *cl, const sd_control_link *chain, size_t items, size_t batch,
                           const float *x, int64_t h, int64_t w, float sigma, float timestep,
                           const sd_dtensor *context, const sd_dtensor *y, sd_dtensor **acc, int n)
{
    const sd_control_link *order[64];
    int depth = 0;
    for (const sd_control_link *l = chain; l; l = l->prev) {
        if (depth == 64)
            return sd_set_error(ev->ctx, SD_ERR_LIMIT, "more than 64 ControlNets chained on one conditioning");
        order[depth++] = l;
    }
    int64_t xs[4] = {(int64_t)items, 4, h, w};
    sd_dtensor *xd = NULL, *hint = NULL, **outs = calloc((size_t)n, sizeof *outs);
    float *t = malloc(items * sizeof *t);
    sd_status st = !outs || !t ? sd_set_error(ev->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
    for (size_t i = 0; !st && i < items; i++)
        t[i] = timestep;
    if (!st && !(st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, xs, &xd)))
        st = sd_dtensor_upload(xd, x);
    for (int k = depth - 1; !st && k >= 0; k--) {
        const sd_control_link *l = order[k];
        if (!link_active(ev, l, sigma))
            continue;
        if (sd_controlnet_residual_count(l->net) != n) {
            st = sd_set_error(ev->ctx, SD_ERR_INVALID, "ControlNets of different architectures on one model");
            break;
        }
        const hint_cache *hc = NULL;
        if ((st = link_hint(ev, l, h, w, &hc)))
            break;
        if (sd_controlnet_t2i(l->net)) {
            st = add_features(cl, l, hc, items, batch, acc, n);
            continue;
        }
        int64_t hs[4] = {(int64_t)items, hc->c, 8 * h, 8 * w};
        st = upload_items(cl, hc->hint, (size_t)hc->hb, (size_t)(hc->c * 64 * h * w), items, batch, 4, hs, &hint);
        if (!st)
            st = sd_controlnet_forward(l->net, xd, hint, t, context, y, l->strength, outs);
        sd_dtensor_free(hint), hint = NULL;
        for (int i = 0; i < n; i++) {
            if (!st)
                st = accumulate(cl, &acc[i], outs[i]);
            else
                sd_dtensor_free(outs[i]);
            outs[i] = NULL;
        }
    }
    sd_dtensor_free(xd);
    free(outs);
    free(t);
    return st;
}

void sd_control_residuals_free(sd_control_residuals *res)
{
    for (int i = 0; res->tensors && i < res->n_slots; i++)
        sd_dtensor_free(res->tensors[i]);
    free(res->tensors);
    free(res->skips);
    memset(res, 0, sizeof *res);
}

sd_status sd_control_eval_call(sd_control_eval *ev, const sd_control_link *const *chains, size_t n_entries,
                               size_t batch, const float *x, int64_t h, int64_t w, float sigma, float timestep,
                               const sd_dtensor *context, const sd_dtensor *y, sd_control_residuals *res,
                               const sd_unet_control **control)
{
    memset(res, 0, sizeof *res);
    *control = NULL;
    const sd_controlnet *net = NULL;
    for (size_t k = 0; k < n_entries && !net; k++)
        if (chain_active(ev, chains[k], sigma))
            for (const sd_control_link *l = chains[k]; l && !net; l = l->prev)
                net = link_active(ev, l, sigma) ? l->net : NULL;
    if (!net)
        return SD_OK;
    sd_cl *cl;
    sd_status st = sd_cl_get(ev->ctx, &cl);
    if (st)
        return st;
    int n = sd_controlnet_residual_count(net), n_slots = 2 * n - 1;
    /* Runs of consecutive entries with the same chain; each run's residuals, in item order. */
    sd_dtensor **runs = calloc(n_entries * (size_t)n_slots, sizeof *runs);
    size_t *run_items = calloc(n_entries, sizeof *run_items), n_runs = 0;
    res->n = n;
    res->n_slots = n_slots;
    res->tensors = calloc((size_t)n_slots, sizeof *res->tensors);
    res->skips = calloc((size_t)n_slots, sizeof *res->skips);
    if (!runs || !run_items || !res->tensors || !res->skips)
        st = sd_set_error(ev->ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t k = 0; !st && k < n_entries; n_runs++) {
        size_t first = k;
        while (k < n_entries && chains[k] == chains[first])
            k++;
        run_items[n_runs] = (k - first) * batch;
        if (!chain_active(ev, chains[first], sigma))
            continue;
        sd_dtensor *ctx_run = NULL, *y_run = NULL;
        st = sd_op_slice(cl, context, 0, (int64_t)(first * batch), (int64_t)run_items[n_runs], &ctx_run);
        if (!st && y)
            st = sd_op_slice(cl, y, 0, (int64_t)(first * batch), (int64_t)run_items[n_runs], &y_run);
        if (!st)
            st = run_chain(ev, cl, chains[first], run_items[n_runs], batch, x + first * batch * (size_t)(4 * h * w), h,
                           w, sigma, timestep, ctx_run, y_run, runs + n_runs * (size_t)n_slots, n);
        sd_dtensor_free(ctx_run);
        sd_dtensor_free(y_run);
    }
    for (int i = 0; !st && i < n_slots; i++) {
        const sd_dtensor *some = NULL; /* a run's residual in this slot gives the zeros' shape */
        for (size_t r = 0; r < n_runs && !some; r++)
            some = runs[r * (size_t)n_slots + (size_t)i];
        if (!some)
            continue; /* no link gives this one: the UNet adds nothing there */
        int64_t shape[4];
        memcpy(shape, some->shape, sizeof shape);
        for (size_t r = 0; !st && r < n_runs; r++) {
            sd_dtensor **slot = &runs[r * (size_t)n_slots + (size_t)i];
            if (!*slot) {
                shape[0] = (int64_t)run_items[r];
                st = sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, shape, slot);
            }
            if (!st && r > 0) {
                sd_dtensor *joined = NULL;
                st = sd_op_concat(cl, res->tensors[i], *slot, 0, &joined);
                sd_dtensor_free(res->tensors[i]);
                sd_dtensor_free(*slot);
                *slot = NULL;
                res->tensors[i] = joined;
            } else if (!st) {
                res->tensors[i] = *slot;
                *slot = NULL;
            }
        }
        res->skips[i] = res->tensors[i];
    }
    for (size_t j = 0; runs && j < n_entries * (size_t)n_slots; j++)
        sd_dtensor_free(runs[j]);
    free(runs);
    free(run_items);
    if (st) {
        sd_control_residuals_free(res);
        return st;
    }
    res->control = (sd_unet_control){.skips = res->skips, .n_skips = n - 1, .middle = res->tensors[n - 1],
                                     .inputs = res->skips + n, .n_inputs = n - 1};
    *control = &res->control;
    return SD_OK;
}
