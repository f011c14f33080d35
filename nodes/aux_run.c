/* The shared frame of the comfyui_controlnet_aux preprocessor nodes. */
#include "nodes/aux_run.h"
#include "nodes/image_device.h"
#include <stdlib.h>
#include <string.h>

/* One item in 8 bits, resized and padded. */
static sd_status prepare_item(sd_node_run *r, const float *src, const int64_t *shape, sd_aux_interp up,
                              sd_img8 *padded, int64_t *th, int64_t *tw)
{
    sd_context *ctx = sd_run_context(r);
    sd_img8 img;
    sd_status st = sd_aux_from_float(ctx, src, shape[1], shape[2], shape[3], &img);
    if (!st)
        st = sd_aux_resize_with_pad(ctx, &img, sd_run_int(r, "resolution"), up, padded, th, tw);
    sd_img8_free(&img);
    if (st)
        return sd_run_fail(r, st);
    return SD_OK;
}

sd_status sd_node_aux_run(sd_node_run *r, sd_aux_interp up, sd_aux_detect_fn detect, void *arg, sd_aux_post_fn post)
{
    return sd_node_aux_run_channels(r, up, 1, detect, arg, post);
}

sd_status sd_node_aux_run_channels(sd_node_run *r, sd_aux_interp up, int channels, sd_aux_detect_fn detect, void *arg,
                                   sd_aux_post_fn post)
{
    const sd_tensor *t = sd_node_image_tensor(r, "image");
    if (!t)
        return SD_ERR_INVALID;
    int64_t b = t->shape[0], item = t->shape[1] * t->shape[2] * t->shape[3];
    sd_value *out = NULL;
    sd_tensor *o = NULL;
    unsigned char *map = NULL;
    sd_status st = SD_OK;
    for (int64_t i = 0; i < b && !st; i++) {
        sd_img8 padded = {0};
        int64_t th, tw;
        if (!(st = prepare_item(r, t->data + i * item, t->shape, up, &padded, &th, &tw))) {
            if (!o) {
                int64_t shape[4] = {b, th, tw, 3};
                out = sd_value_new(SD_TYPE_IMAGE);
                o = out ? sd_value_add_tensor(out, "image", 4, shape) : NULL;
                map = malloc((size_t)(padded.h * padded.w * channels));
                if (!o || !map)
                    st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)tw,
                                      (long long)th);
            }
            if (!st)
                st = detect(r, &padded, arg, map);
            for (int64_t y = 0; !st && y < th; y++) /* cut the padding off: th x tw at the front */
                memmove(map + y * tw * channels, map + y * padded.w * channels, (size_t)(tw * channels));
            if (!st && post)
                st = post(r, map, th, tw);
            for (int64_t p = 0; !st && p < th * tw; p++) /* one channel: repeated (HWC3) */
                for (int k = 0; k < 3; k++)
                    o->data[(i * th * tw + p) * 3 + k] = (float)map[p * channels + (channels == 3 ? k : 0)] / 255.0f;
        }
        sd_img8_free(&padded);
        if (!st)
            st = sd_run_progress(r, (int)(i + 1), (int)b);
    }
    free(map);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

/* One item: the plane at the image's size, then resized with its padding cut off into out
 * (th x tw x 3 floats, allocated with the output on the first item). */
static sd_status plane_then_resize(sd_node_run *r, const float *src, const int64_t *shape, sd_aux_plane_fn detect,
                                   void *arg, sd_value **out, sd_tensor **o, int64_t i)
{
    sd_context *ctx = sd_run_context(r);
    sd_img8 img = {0}, rep = {0}, padded = {0};
    int64_t th, tw;
    sd_status st = sd_aux_from_float(ctx, src, shape[1], shape[2], shape[3], &img);
    if (!st)
        st = sd_img8_new(ctx, img.h, img.w, 3, &rep);
    if (st)
        st = sd_run_fail(r, st);
    else if (!(st = detect(r, &img, arg, rep.px))) {
        for (int64_t p = img.h * img.w - 1; p >= 0; p--) /* repeated over 3 channels, in place */
            rep.px[3 * p] = rep.px[3 * p + 1] = rep.px[3 * p + 2] = rep.px[p];
        if ((st = sd_aux_resize_with_pad(ctx, &rep, sd_run_int(r, "resolution"), SD_AUX_CUBIC, &padded, &th, &tw)))
            st = sd_run_fail(r, st);
    }
    if (!st && !*o) {
        int64_t oshape[4] = {shape[0], th, tw, 3};
        *out = sd_value_new(SD_TYPE_IMAGE);
        *o = *out ? sd_value_add_tensor(*out, "image", 4, oshape) : NULL;
        if (!*o)
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)tw, (long long)th);
    }
    for (int64_t y = 0; !st && y < th; y++)
        for (int64_t x = 0; x < tw * 3; x++)
            (*o)->data[(i * th + y) * tw * 3 + x] = (float)padded.px[y * padded.w * 3 + x] / 255.0f;
    sd_img8_free(&img), sd_img8_free(&rep), sd_img8_free(&padded);
    return st;
}

sd_status sd_node_aux_run_then_resize(sd_node_run *r, sd_aux_plane_fn detect, void *arg)
{
    const sd_tensor *t = sd_node_image_tensor(r, "image");
    if (!t)
        return SD_ERR_INVALID;
    int64_t b = t->shape[0], item = t->shape[1] * t->shape[2] * t->shape[3];
    sd_value *out = NULL;
    sd_tensor *o = NULL;
    sd_status st = SD_OK;
    for (int64_t i = 0; i < b && !st; i++)
        if (!(st = plane_then_resize(r, t->data + i * item, t->shape, detect, arg, &out, &o, i)))
            st = sd_run_progress(r, (int)(i + 1), (int)b);
    if (st) {
        sd_value_unref(out);
        return st;
    }
    sd_run_set_output(r, 0, out);
    return SD_OK;
}

sd_status sd_node_aux_upload(sd_node_run *r, sd_cl *cl, const sd_img8 *img, float divisor, bool bgr,
                             sd_dtensor **out)
{
    int64_t hw = img->h * img->w;
    float *x = malloc(sizeof *x * (size_t)(3 * hw));
    *out = NULL;
    if (!x)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)img->w,
                            (long long)img->h);
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < hw; i++)
            x[c * hw + i] = (float)img->px[i * 3 + (bgr ? 2 - c : c)] / divisor;
    sd_status st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, img->h, img->w}, out);
    if (!st && (st = sd_dtensor_upload(*out, x))) {
        sd_dtensor_free(*out);
        *out = NULL;
    }
    free(x);
    return st ? sd_run_fail(r, st) : SD_OK;
}
