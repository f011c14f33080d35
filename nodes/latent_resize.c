/* Latent resizing as comfy.utils.common_upscale; see latent_resize.h. */
#include "nodes/latent_resize.h"
#include "runtime-opencl/ops_image.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const sd_latent_upscale_methods[] = {"nearest-exact", "bilinear", "area", "bicubic", "bislerp", NULL};

/* slerp of channel vectors a and b (c values, `step` floats apart) at ratio r into o (values
 * `ostep` floats apart), as ComfyUI's bislerp.slerp in float32. */
static void slerp(const float *a, const float *b, size_t step, int64_t c, float r, float *o, size_t ostep)
{
    float na = 0.0f, nb = 0.0f, dot = 0.0f;
    for (int64_t k = 0; k < c; k++) {
        na += a[k * step] * a[k * step];
        nb += b[k * step] * b[k * step];
    }
    na = sqrtf(na);
    nb = sqrtf(nb);
#define UNIT(v, norm) ((norm) == 0.0f ? 0.0f : (v) / (norm))
    for (int64_t k = 0; k < c; k++)
        dot += UNIT(a[k * step], na) * UNIT(b[k * step], nb);
    if (dot > 1.0f - 1e-5f) {
        for (int64_t k = 0; k < c; k++)
            o[k * ostep] = a[k * step];
        return;
    }
    if (dot < 1e-5f - 1.0f) {
        for (int64_t k = 0; k < c; k++)
            o[k * ostep] = a[k * step] * (1.0f - r) + b[k * step] * r;
        return;
    }
    float omega = acosf(dot), so = sinf(omega);
    float fa = sinf((1.0f - r) * omega) / so, fb = sinf(r * omega) / so, norm = na * (1.0f - r) + nb * r;
    for (int64_t k = 0; k < c; k++)
        o[k * ostep] = (fa * UNIT(a[k * step], na) + fb * UNIT(b[k * step], nb)) * norm;
#undef UNIT
}

/* ComfyUI's generate_bilinear_data: torch's bilinear interpolation (align_corners False, in
 * float) of the coordinates 0..n-1 and of 1..n-1, n-1 at n_out points, truncated to integers,
 * with the fractional part of the first as the ratio. */
static void bilinear_data(int64_t n_in, int64_t n_out, int64_t *c1, int64_t *c2, float *ratio)
{
    float scale = (float)n_in / (float)n_out;
    for (int64_t o = 0; o < n_out; o++) {
        float src = scale * ((float)o + 0.5f) - 0.5f;
        if (src < 0.0f)
            src = 0.0f;
        int64_t i0 = (int64_t)floorf(src);
        if (i0 > n_in - 1)
            i0 = n_in - 1;
        int64_t i1 = i0 < n_in - 1 ? i0 + 1 : i0;
        float l = fminf(fmaxf(src - (float)i0, 0.0f), 1.0f), w0 = 1.0f - l;
        float v1 = (float)i0 * w0 + (float)i1 * l;
        float s0 = (float)(i0 < n_in - 1 ? i0 + 1 : n_in - 1), s1 = (float)(i1 < n_in - 1 ? i1 + 1 : n_in - 1);
        float v2 = s0 * w0 + s1 * l;
        c1[o] = (int64_t)v1;
        c2[o] = (int64_t)v2;
        ratio[o] = v1 - floorf(v1);
    }
}

/* bislerp of src [n, c, h, w] to dst [n, c, oh, ow] through a [n, c, h, ow] intermediate. */
static sd_status bislerp(sd_context *ctx, const float *src, int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, float *dst)
{
    int64_t m = oh > ow ? oh : ow;
    int64_t *c1 = malloc((size_t)m * sizeof *c1), *c2 = malloc((size_t)m * sizeof *c2);
    float *ratio = malloc((size_t)m * sizeof *ratio), *mid = malloc((size_t)(n * c * h * ow) * sizeof *mid);
    sd_status st = SD_OK;
    if (!c1 || !c2 || !ratio || !mid) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "bislerp: out of memory");
        goto done;
    }
    bilinear_data(w, ow, c1, c2, ratio);
    for (int64_t b = 0; b < n; b++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < ow; x++) {
                const float *row = src + (size_t)(b * c * h * w + y * w);
                slerp(row + c1[x], row + c2[x], (size_t)(h * w), c, ratio[x],
                      mid + (size_t)(b * c * h * ow + y * ow + x), (size_t)(h * ow));
            }
    bilinear_data(h, oh, c1, c2, ratio);
    for (int64_t b = 0; b < n; b++)
        for (int64_t y = 0; y < oh; y++)
            for (int64_t x = 0; x < ow; x++) {
                const float *plane = mid + (size_t)(b * c * h * ow + x);
                slerp(plane + c1[y] * ow, plane + c2[y] * ow, (size_t)(h * ow), c, ratio[y],
                      dst + (size_t)(b * c * oh * ow + y * ow + x), (size_t)(oh * ow));
            }
done:
    free(c1);
    free(c2);
    free(ratio);
    free(mid);
    return st;
}

/* The torch modes: planes [B*C, h, w, 1] through the device resize. */
static sd_status interpolate(sd_context *ctx, const float *src, int64_t planes, int64_t h, int64_t w, int64_t oh,
                             int64_t ow, sd_resize_method method, float *dst)
{
    sd_cl *cl;
    sd_dtensor *x = NULL, *y = NULL;
    int64_t shape[4] = {planes, h, w, 1};
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, shape, &x);
    if (!st)
        st = sd_dtensor_upload(x, src);
    if (!st)
        st = sd_op_resize(cl, x, oh, ow, method, &y);
    if (!st)
        st = sd_dtensor_download(y, dst);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

sd_status sd_latent_common_upscale(sd_context *ctx, const sd_tensor *in, int64_t width, int64_t height,
                                   const char *method, bool crop_center, sd_tensor *out)
{
    static const sd_resize_method modes[] = {SD_RESIZE_NEAREST_EXACT, SD_RESIZE_BILINEAR, SD_RESIZE_AREA,
                                             SD_RESIZE_BICUBIC};
    size_t m = 0;
    while (sd_latent_upscale_methods[m] && strcmp(sd_latent_upscale_methods[m], method) != 0)
        m++;
    if (!sd_latent_upscale_methods[m])
        return sd_set_error(ctx, SD_ERR_INVALID, "unknown latent upscale method '%s'", method);
    int64_t n = in->shape[0], c = in->shape[1], h = in->shape[2], w = in->shape[3];
    int64_t cx = 0, cy = 0;
    if (crop_center) {
        /* Keep the centre with the target's aspect ratio (Python's round: half to even). */
        double old_aspect = (double)w / (double)h, new_aspect = (double)width / (double)height;
        if (old_aspect > new_aspect)
            cx = (int64_t)nearbyint(((double)w - (double)w * (new_aspect / old_aspect)) / 2.0);
        else if (old_aspect < new_aspect)
            cy = (int64_t)nearbyint(((double)h - (double)h * (old_aspect / new_aspect)) / 2.0);
    }
    int64_t ch = h - 2 * cy, cw = w - 2 * cx;
    const float *src = in->data;
    float *cropped = NULL;
    if (cx || cy) {
        if (!(cropped = malloc((size_t)(n * c * ch * cw) * sizeof *cropped)))
            return sd_set_error(ctx, SD_ERR_NOMEM, "latent upscale: out of memory");
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t y = 0; y < ch; y++)
                memcpy(cropped + (size_t)((p * ch + y) * cw), in->data + (size_t)((p * h + y + cy) * w + cx),
                       (size_t)cw * sizeof *cropped);
        src = cropped;
    }
    sd_status st = m == 4 ? bislerp(ctx, src, n, c, ch, cw, height, width, out->data)
                          : interpolate(ctx, src, n * c, ch, cw, height, width, modes[m], out->data);
    free(cropped);
    return st;
}
