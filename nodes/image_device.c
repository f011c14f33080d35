/* IMAGE values to and from device tensors for the image nodes. See image_device.h. */
#include "nodes/image_device.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

sd_status sd_node_op_fail(sd_node_run *r, sd_status st)
{
    return sd_run_fail(r, st);
}

const sd_tensor *sd_node_image_tensor(sd_node_run *r, const char *input)
{
    const sd_value *v = sd_run_value(r, input);
    const sd_tensor *t = v ? sd_value_tensor(v, "image") : NULL;
    if (!t || t->ndim != 4 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1 || t->shape[3] < 1) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s' is not an image [batch, height, width, channels]", input);
        return NULL;
    }
    return t;
}

sd_status sd_node_image_upload(sd_node_run *r, const char *input, sd_cl **cl, sd_dtensor **out)
{
    sd_status st;
    *out = NULL;
    const sd_tensor *t = sd_node_image_tensor(r, input);
    if (!t)
        return SD_ERR_INVALID;
    if ((st = sd_cl_get(sd_run_context(r), cl)) || (st = sd_dtensor_from_host(*cl, t, SD_DTYPE_F32, out)))
        return sd_node_op_fail(r, st);
    return SD_OK;
}

sd_status sd_node_image_output(sd_node_run *r, size_t index, const sd_dtensor *t)
{
    sd_status st;
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *host = v ? sd_value_add_tensor(v, "image", t->ndim, t->shape) : NULL;
    if (!host) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)t->shape[2],
                            (long long)t->shape[1]);
    }
    if ((st = sd_dtensor_download(t, host->data))) {
        sd_value_unref(v);
        return sd_node_op_fail(r, st);
    }
    sd_run_set_output(r, index, v);
    return SD_OK;
}

const char *const sd_node_upscale_methods[] = {"nearest-exact", "bilinear", "area", "bicubic", "lanczos", NULL};

sd_status sd_node_common_upscale(sd_node_run *r, sd_cl *cl, const sd_dtensor *x, const char *method,
                                 int64_t width, int64_t height, bool crop_center, sd_dtensor **out)
{
    static const sd_resize_method methods[] = {SD_RESIZE_NEAREST_EXACT, SD_RESIZE_BILINEAR, SD_RESIZE_AREA,
                                               SD_RESIZE_BICUBIC, SD_RESIZE_LANCZOS_U8};
    sd_status st = SD_OK;
    sd_dtensor *cropped = NULL;
    size_t m = 0;
    while (sd_node_upscale_methods[m] && strcmp(sd_node_upscale_methods[m], method) != 0)
        m++;
    *out = NULL;
    if (!sd_node_upscale_methods[m])
        return sd_run_error(r, SD_ERR_INVALID, "unknown upscale method '%s'", method);
    const sd_dtensor *src = x;
    if (crop_center) {
        /* Keep the centre with the target's aspect ratio (Python's round: half to even). */
        int64_t ow = x->shape[2], oh = x->shape[1], cx = 0, cy = 0;
        double old_aspect = (double)ow / (double)oh, new_aspect = (double)width / (double)height;
        if (old_aspect > new_aspect)
            cx = (int64_t)nearbyint((ow - ow * (new_aspect / old_aspect)) / 2.0);
        else if (old_aspect < new_aspect)
            cy = (int64_t)nearbyint((oh - oh * (old_aspect / new_aspect)) / 2.0);
        if (cx || cy) {
            if ((st = sd_op_crop(cl, x, cy, cx, oh - 2 * cy, ow - 2 * cx, &cropped)))
                return sd_node_op_fail(r, st);
            src = cropped;
        }
    }
    if ((st = sd_op_resize(cl, src, height, width, methods[m], out)))
        st = sd_node_op_fail(r, st);
    sd_dtensor_free(cropped);
    return st;
}

sd_value *sd_node_outpaint_mask(int64_t h, int64_t w, int64_t top, int64_t bottom, int64_t left, int64_t right,
                               int64_t feathering)
{
    int64_t mh = h + top + bottom, mw = w + left + right, shape[3] = {1, mh, mw};
    sd_value *v = sd_value_new(SD_TYPE_MASK);
    sd_tensor *t = v ? sd_value_add_tensor(v, "mask", 3, shape) : NULL;
    if (!t) {
        sd_value_unref(v);
        return NULL;
    }
    bool feather = feathering > 0 && feathering * 2 < h && feathering * 2 < w;
    for (int64_t i = 0; i < mh; i++)
        for (int64_t j = 0; j < mw; j++) {
            int64_t y = i - top, x = j - left;
            float m = 1.0f;
            if (y >= 0 && y < h && x >= 0 && x < w) {
                m = 0.0f;
                if (feather) {
                    int64_t dt = top ? y : h, db = bottom ? h - y : h, dl = left ? x : w, dr = right ? w - x : w;
                    int64_t d = dt < db ? dt : db;
                    d = d < dl ? d : dl;
                    d = d < dr ? d : dr;
                    if (d < feathering) {
                        double f = (double)(feathering - d) / (double)feathering;
                        m = (float)(f * f);
                    }
                }
            }
            t->data[i * mw + j] = m;
        }
    return v;
}

sd_status sd_node_image_finish(sd_node_run *r, sd_status st, sd_dtensor *x, sd_dtensor *y)
{
    st = st ? sd_node_op_fail(r, st) : sd_node_image_output(r, 0, y);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}

sd_status sd_node_resize_to(sd_node_run *r, sd_cl *cl, sd_dtensor *x, double width, double height, const char *why)
{
    sd_status st;
    sd_dtensor *y = NULL;
    if (width < 1.0 || height < 1.0)
        st = sd_run_error(r, SD_ERR_INVALID, "%s makes the %lldx%lld image empty", why, (long long)x->shape[2],
                          (long long)x->shape[1]);
    else if (!(st = sd_node_common_upscale(r, cl, x, sd_run_string(r, "upscale_method"), (int64_t)width,
                                           (int64_t)height, false, &y)))
        st = sd_node_image_output(r, 0, y);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st;
}
