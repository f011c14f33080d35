/* Inpainting nodes (ComfyUI's nodes.py): SetLatentNoiseMask, VAEEncodeForInpaint and
 * InpaintModelConditioning. A mask of another size than the image is resized to it bilinearly
 * (align_corners false), as ComfyUI does; a mask batch must be 1 or the image batch. The noise
 * mask goes on the LATENT as "noise_mask" [batch, 1, height, width]; the KSampler resizes it to
 * the latent and keeps the latent outside it (nodes/ksampler.c). */
#include "core/checked.h"
#include "ml/adapters/control_eval.h"
#include "nodes/bilinear.h"
#include "nodes/conditioning.h"
#include "nodes/model_handle.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include "nodes/vae_tiles.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new LATENT: the input's tensors and attributes with "noise_mask" set to the planes
 * [mb, 1, mh, mw] of `mask` (NULL: none). */
static sd_value *latent_with_mask(const sd_value *in, const float *mask, int64_t mb, int64_t mh, int64_t mw)
{
    sd_value *out = sd_value_new(SD_TYPE_LATENT);
    if (!out)
        return NULL;
    if (in && !sd_value_copy_contents(out, in, "noise_mask"))
        goto fail;
    if (mask) {
        int64_t shape[4] = {mb, 1, mh, mw};
        sd_tensor *t = sd_value_add_tensor(out, "noise_mask", 4, shape);
        if (!t)
            goto fail;
        memcpy(t->data, mask, (size_t)(mb * mh * mw) * sizeof *t->data);
    }
    return out;
fail:
    sd_value_unref(out);
    return NULL;
}

/* The MASK input as planes [mb, mh, mw]. */
static const sd_tensor *mask_input(sd_node_run *r, const char *name)
{
    const sd_tensor *m = sd_value_tensor(sd_run_value(r, name), "mask");
    if (!m || m->ndim != 3 || m->shape[0] < 1 || m->shape[1] < 1 || m->shape[2] < 1) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' is not a [batch, height, width] mask", name);
        return NULL;
    }
    return m;
}

/* ---- SetLatentNoiseMask ---- */

static sd_status run_set_noise_mask(sd_node_run *r)
{
    sd_value *lv = sd_run_value(r, "samples");
    const sd_tensor *m = mask_input(r, "mask");
    if (!m)
        return SD_ERR_INVALID;
    if (!sd_value_tensor(lv, "samples"))
        return sd_run_error(r, SD_ERR_INVALID, "input 'samples' has no latent samples");
    sd_value *out = latent_with_mask(lv, m->data, m->shape[0], m->shape[1], m->shape[2]);
    if (!out)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

static const sd_input_desc snm_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to inpaint"),
    SD_IN_LINK("mask", SD_TYPE_MASK, "1 where the sampler may change the latent (any size: resized to the latent)"),
};
static const sd_output_desc snm_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the latent with the mask as its noise_mask"),
};
const sd_node_desc sd_node_SetLatentNoiseMask = {
    .name = "SetLatentNoiseMask", .version = 1, .category = "latent/inpaint",
    .doc = "Limits denoising to the mask: the KSampler keeps the latent exactly as it was outside it.",
    .inputs = snm_in, .n_inputs = SD_COUNT(snm_in),
    .outputs = snm_out, .n_outputs = SD_COUNT(snm_out), .run = run_set_noise_mask,
};

/* ---- shared pre-processing ---- */

/* The image and mask of an inpainting node, cropped (centred) to multiples of the VAE factor,
 * the mask resized to the image first. pixels: [b, hh, ww, 3] with the masked pixels set to 0.5
 * ((p - 0.5) * (1 - round(mask)) + 0.5, the "nothing" the model fills in); orig: the cropped
 * input; mask: [mb, hh, ww], resized and cropped, not rounded. */
typedef struct inpaint_prep {
    int64_t b, hh, ww, mb;
    float *pixels, *orig, *mask;
} inpaint_prep;

static void prep_free(inpaint_prep *p)
{
    free(p->pixels);
    free(p->orig);
    free(p->mask);
}

static sd_status prep_inputs(sd_node_run *r, sd_vae *vae, inpaint_prep *p)
{
    const sd_tensor *pt = sd_value_tensor(sd_run_value(r, "pixels"), "image");
    const sd_tensor *m = mask_input(r, "mask");
    if (!m)
        return SD_ERR_INVALID;
    if (!pt || pt->ndim != 4 || pt->shape[0] < 1 || pt->shape[3] < 3)
        return sd_run_error(r, SD_ERR_INVALID, "input 'pixels' is not a [batch, height, width, 3] image");
    int64_t f = sd_vae_factor(vae), b = pt->shape[0], ih = pt->shape[1], iw = pt->shape[2], ch = pt->shape[3];
    int64_t mb = m->shape[0], hh = ih / f * f, ww = iw / f * f, y0 = (ih % f) / 2, x0 = (iw % f) / 2;
    if (hh < f || ww < f)
        return sd_run_error(r, SD_ERR_INVALID, "image %lldx%lld is smaller than %lldx%lld", (long long)iw,
                            (long long)ih, (long long)f, (long long)f);
    if (mb != 1 && mb != b)
        return sd_run_error(r, SD_ERR_INVALID, "the mask batch of %lld does not match the image batch of %lld",
                            (long long)mb, (long long)b);
    size_t plane = (size_t)(ih * iw), cplane = (size_t)(hh * ww), n_img, n_mask;
    if (!sd_mul_size(plane, (size_t)mb, &n_mask) || !sd_mul_size(cplane * 3, (size_t)b, &n_img))
        return sd_run_error(r, SD_ERR_LIMIT, "image too large");
    float *full = malloc(n_mask * sizeof *full);
    *p = (inpaint_prep){.b = b, .hh = hh, .ww = ww, .mb = mb, .pixels = malloc(n_img * sizeof(float)),
                        .orig = malloc(n_img * sizeof(float)), .mask = malloc((size_t)mb * cplane * sizeof(float))};
    if (!full || !p->pixels || !p->orig || !p->mask) {
        free(full);
        prep_free(p);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < mb; i++) {
        float *mi = full + (size_t)i * plane;
        sd_bilinear_resize(m->data + (size_t)(i * m->shape[1] * m->shape[2]), m->shape[1], m->shape[2], 1, mi, ih, iw);
        for (int64_t y = 0; y < hh; y++)
            memcpy(p->mask + (size_t)i * cplane + (size_t)(y * ww), mi + (size_t)((y + y0) * iw + x0),
                   (size_t)ww * sizeof(float));
    }
    free(full);
    for (int64_t i = 0; i < b; i++) {
        const float *src = pt->data + (size_t)(i * ih * iw * ch);
        const float *mi = p->mask + (size_t)(i % mb) * cplane;
        for (int64_t y = 0; y < hh; y++)
            for (int64_t x = 0; x < ww; x++) {
                size_t o = ((size_t)i * cplane + (size_t)(y * ww + x)) * 3;
                float keep = 1.0f - rintf(mi[y * ww + x]);
                for (int k = 0; k < 3; k++) {
                    float v = src[((y + y0) * iw + x + x0) * ch + k];
                    p->orig[o + (size_t)k] = v;
                    p->pixels[o + (size_t)k] = (v - 0.5f) * keep + 0.5f;
                }
            }
    }
    return SD_OK;
}

/* Encodes prepared pixels [b, hh, ww, 3] into a new LATENT value's "samples". */
static sd_status encode_prepared(sd_node_run *r, sd_vae *vae, const inpaint_prep *p, const float *pixels,
                                 sd_value **out)
{
    int64_t f = sd_vae_factor(vae);
    sd_tensor img = {.ndim = 4, .shape = {p->b, p->hh, p->ww, 3}, .data = (float *)pixels};
    int64_t lshape[4] = {p->b, sd_vae_config_of(vae)->z_channels, p->hh / f, p->ww / f};
    *out = sd_value_new(SD_TYPE_LATENT);
    sd_tensor *lt = *out ? sd_value_add_tensor(*out, "samples", 4, lshape) : NULL;
    if (!lt) {
        sd_value_unref(*out);
        *out = NULL;
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_status st = sd_vae_encode_image(r, vae, &img, 0, 0, lt);
    if (st) {
        sd_value_unref(*out);
        *out = NULL;
    }
    return st;
}

static sd_status vae_input(sd_node_run *r, sd_vae **vae)
{
    const sd_model_handle *h = sd_node_model_input(r, "vae");
    if (!h)
        return SD_ERR_INVALID;
    sd_status st = sd_loaded_vae(h->loaded, vae);
    return st ? sd_node_model_fail(r, st) : SD_OK;
}

/* ---- VAEEncodeForInpaint ---- */

/* ComfyUI's mask growth: conv2d of the rounded mask with a g x g kernel of ones, padding
 * ceil((g - 1) / 2), the top-left hh x ww of the result clamped to [0, 1] and rounded. The
 * window sums are exact (integers), taken separably. out: [hh, ww]. */
static sd_status grow_mask(sd_node_run *r, const float *mask, int64_t hh, int64_t ww, int64_t g, float *out)
{
    if (g == 0) {
        for (int64_t i = 0; i < hh * ww; i++)
            out[i] = rintf(mask[i]);
        return SD_OK;
    }
    int64_t pad = g / 2;
    double *rows = malloc((size_t)(hh * ww) * sizeof *rows);
    if (!rows)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int64_t y = 0; y < hh; y++)
        for (int64_t x = 0; x < ww; x++) {
            double s = 0;
            for (int64_t k = x - pad; k < x - pad + g; k++)
                if (k >= 0 && k < ww)
                    s += rintf(mask[y * ww + k]);
            rows[y * ww + x] = s;
        }
    for (int64_t y = 0; y < hh; y++)
        for (int64_t x = 0; x < ww; x++) {
            double s = 0;
            for (int64_t k = y - pad; k < y - pad + g; k++)
                if (k >= 0 && k < hh)
                    s += rows[k * ww + x];
            out[y * ww + x] = s < 0 ? 0.0f : s > 1 ? 1.0f : rintf((float)s);
        }
    free(rows);
    return SD_OK;
}

static sd_status run_encode_for_inpaint(sd_node_run *r)
{
    sd_vae *vae;
    inpaint_prep p = {0};
    sd_status st = vae_input(r, &vae);
    if (st || (st = prep_inputs(r, vae, &p)))
        return st;
    int64_t g = sd_run_int(r, "grow_mask_by");
    size_t cplane = (size_t)(p.hh * p.ww);
    float *grown = malloc((size_t)p.mb * cplane * sizeof *grown);
    sd_value *enc = NULL, *out = NULL;
    if (!grown) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < p.mb && !st; i++)
        st = grow_mask(r, p.mask + (size_t)i * cplane, p.hh, p.ww, g, grown + (size_t)i * cplane);
    if (st || (st = encode_prepared(r, vae, &p, p.pixels, &enc)))
        goto done;
    if (!(out = latent_with_mask(enc, grown, p.mb, p.hh, p.ww))) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    sd_run_set_output(r, 0, out);
done:
    sd_value_unref(enc);
    free(grown);
    prep_free(&p);
    return st;
}

static const sd_input_desc efi_in[] = {
    SD_IN_LINK("pixels", SD_TYPE_IMAGE, "the image to inpaint (centre-cropped to multiples of 8)"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
    SD_IN_LINK("mask", SD_TYPE_MASK, "1 where to inpaint (any size: resized bilinearly to the image)"),
    SD_IN_INT("grow_mask_by", "6", 0, 64, "grow the noise mask by this many pixels (a g x g window)"),
};
static const sd_output_desc efi_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the latent of the image with the masked pixels grey, and the grown noise mask"),
};
const sd_node_desc sd_node_VAEEncodeForInpaint = {
    .name = "VAEEncodeForInpaint", .version = 1, .category = "latent/inpaint",
    .doc = "Encodes an image for inpainting: masked pixels neutral grey (0.5), the grown mask as noise mask. "
           "Use with denoise 1.",
    .inputs = efi_in, .n_inputs = SD_COUNT(efi_in),
    .outputs = efi_out, .n_outputs = SD_COUNT(efi_out), .run = run_encode_for_inpaint,
    .check = sd_check_vae_encode,
};

/* ---- InpaintModelConditioning ---- */

/* Sets (or replaces, same shape) tensor `name` of v to a copy of data. */
static bool put_tensor(sd_value *v, const char *name, int ndim, const int64_t *shape, const float *data)
{
    sd_tensor *t = sd_value_tensor(v, name);
    size_t n;
    if (t) {
        if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape))
            return false;
    } else if (!(t = sd_value_add_tensor(v, name, ndim, shape))) {
        return false;
    }
    if (!sd_tensor_numel(t, &n))
        return false;
    memcpy(t->data, data, n * sizeof *data);
    return true;
}

/* A copy of the CONDITIONING input with concat_latent_image.i and concat_mask.i on every entry
 * (what an inpainting UNet gets as its 5 extra input channels; nodes/ksampler.c). */
static sd_status conditioning_with_concat(sd_node_run *r, const char *input, const sd_tensor *latent,
                                          const inpaint_prep *p, sd_value **out)
{
    size_t n;
    if (!sd_node_cond_entries(r, input, &n))
        return SD_ERR_INVALID;
    if (!(*out = sd_cond_copy(sd_run_value(r, input)))) /* keeps ControlNets applied before */
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    int64_t mshape[4] = {p->mb, 1, p->hh, p->ww};
    for (size_t i = 0; i < n; i++) {
        char lname[48], mname[48];
        snprintf(lname, sizeof lname, "concat_latent_image.%zu", i);
        snprintf(mname, sizeof mname, "concat_mask.%zu", i);
        if (!put_tensor(*out, lname, 4, latent->shape, latent->data) ||
            !put_tensor(*out, mname, 4, mshape, p->mask)) {
            sd_value_unref(*out);
            *out = NULL;
            return sd_run_error(r, SD_ERR_INVALID,
                                "input '%s': entry %zu already carries an inpainting image of another size "
                                "(or out of memory)",
                                input, i);
        }
    }
    return SD_OK;
}

static sd_status run_inpaint_conditioning(sd_node_run *r)
{
    sd_vae *vae;
    inpaint_prep p = {0};
    sd_status st = vae_input(r, &vae);
    if (st || (st = prep_inputs(r, vae, &p)))
        return st;
    sd_value *concat = NULL, *orig = NULL, *pos = NULL, *neg = NULL, *latent = NULL;
    if ((st = encode_prepared(r, vae, &p, p.pixels, &concat)) || (st = encode_prepared(r, vae, &p, p.orig, &orig)))
        goto done;
    const sd_tensor *cl = sd_value_tensor(concat, "samples");
    if ((st = conditioning_with_concat(r, "positive", cl, &p, &pos)) ||
        (st = conditioning_with_concat(r, "negative", cl, &p, &neg)))
        goto done;
    if (!(latent = latent_with_mask(orig, sd_run_bool(r, "noise_mask") ? p.mask : NULL, p.mb, p.hh, p.ww))) {
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    sd_run_set_output(r, 0, pos);
    sd_run_set_output(r, 1, neg);
    sd_run_set_output(r, 2, latent);
    pos = neg = latent = NULL;
done:
    sd_value_unref(concat);
    sd_value_unref(orig);
    sd_value_unref(pos);
    sd_value_unref(neg);
    sd_value_unref(latent);
    prep_free(&p);
    return st;
}

static const sd_input_desc imc_in[] = {
    SD_IN_LINK("positive", SD_TYPE_CONDITIONING, "positive conditioning"),
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "negative conditioning"),
    SD_IN_LINK("vae", SD_TYPE_VAE, "the VAE"),
    SD_IN_LINK("pixels", SD_TYPE_IMAGE, "the image to inpaint (centre-cropped to multiples of 8)"),
    SD_IN_LINK("mask", SD_TYPE_MASK, "1 where to inpaint (any size: resized bilinearly to the image)"),
    SD_IN_BOOL("noise_mask", "true", "also limit sampling to the mask (a noise mask on the latent)"),
};
static const sd_output_desc imc_out[] = {
    SD_OUT("positive", SD_TYPE_CONDITIONING, "positive with the masked image latent and the mask attached"),
    SD_OUT("negative", SD_TYPE_CONDITIONING, "negative with the masked image latent and the mask attached"),
    SD_OUT("latent", SD_TYPE_LATENT, "the latent of the image (with the mask as noise mask when asked)"),
};
const sd_node_desc sd_node_InpaintModelConditioning = {
    .name = "InpaintModelConditioning", .version = 1, .category = "conditioning/inpaint",
    .doc = "Prepares an inpainting checkpoint's extra inputs (mask and masked-image latent) on both conditionings.",
    .inputs = imc_in, .n_inputs = SD_COUNT(imc_in),
    .outputs = imc_out, .n_outputs = SD_COUNT(imc_out), .run = run_inpaint_conditioning,
};
