/* The face box, the face network's heatmaps and their peaks. See pose_face.h. */
#include "ml/annotators/pose_face.h"
#include "ml/annotators/aux_image.h"
#include "runtime-opencl/ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BOX 20.0
#define FACE_SIDE 384 /* Face.__call__'s w_size */
#define PEAK_THRESHOLD 0.05f

bool sd_pose_face_box_find(const sd_pose_person *person, int h, int w, sd_pose_face_box *out)
{
    static const int parts[4] = {14, 15, 16, 17}; /* eyes (x 3), then ears (x 1.5) */
    const sd_pose_point *p = person->points, *nose = &p[0];
    bool any = false;
    double width = 0.0;
    for (int i = 0; i < 4; i++) {
        const sd_pose_point *q = &p[parts[i]];
        if (!q->present)
            continue;
        any = true;
        double d = fmax(fabs(nose->x - q->x), fabs(nose->y - q->y));
        width = fmax(width, d * (i < 2 ? 3.0 : 1.5));
    }
    if (!nose->present || !any)
        return false;
    double x = nose->x - width, y = nose->y - width;
    x = x < 0 ? 0 : x, y = y < 0 ? 0 : y;
    double w1 = x + width > w ? (double)w - x : width * 2, w2 = y + width > h ? (double)h - y : width * 2;
    width = fmin(w1, w2);
    if (width < MIN_BOX)
        return false;
    *out = (sd_pose_face_box){(int)x, (int)y, (int)width};
    return true;
}

/* compute_source_index_and_lambda (align_corners) for output index i: *i0, *i1 and the weights. */
static void corner_weights(int in, int out, int i, int *i0, int *i1, float *l0, float *l1)
{
    if (in == out) {
        *i0 = *i1 = i, *l0 = 1.0f, *l1 = 0.0f;
        return;
    }
    float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f, real = scale * (float)i;
    int idx = (int)floorf(real);
    idx = idx < in - 1 ? idx : in - 1;
    float l = real - (float)idx;
    *l1 = l < 0.0f ? 0.0f : l > 1.0f ? 1.0f : l;
    *l0 = 1.0f - *l1;
    *i0 = idx, *i1 = idx + (idx < in - 1 ? 1 : 0);
}

void sd_pose_resize_bilinear_corners(const float *src, int sh, int sw, float *dst, int dh, int dw)
{
    for (int y = 0; y < dh; y++) {
        int y0, y1;
        float wy0, wy1;
        corner_weights(sh, dh, y, &y0, &y1, &wy0, &wy1);
        for (int x = 0; x < dw; x++) {
            int x0, x1;
            float wx0, wx1;
            corner_weights(sw, dw, x, &x0, &x1, &wx0, &wx1);
            float r0 = src[y0 * sw + x0] * wx0 + src[y0 * sw + x1] * wx1;
            float r1 = src[y1 * sw + x0] * wx0 + src[y1 * sw + x1] * wx1;
            dst[y * dw + x] = r0 * wy0 + r1 * wy1;
        }
    }
}

bool sd_pose_face_peak(const float *plane, int h, int w, int *x, int *y)
{
    size_t best = 0, n = (size_t)h * (size_t)w;
    for (size_t i = 1; i < n; i++)
        if (plane[i] > plane[best])
            best = i;
    if (!(n && plane[best] > PEAK_THRESHOLD))
        return false;
    *x = (int)(best % (size_t)w), *y = (int)(best / (size_t)w);
    return true;
}

/* The network input for the crop (rows y0 .. y0 + ch, columns x0 .. x0 + cw of img): resized to
 * FACE_SIDE square, BGR / 256 - 0.5, into *out. */
static sd_status face_input(sd_cl *cl, const sd_img8 *img, int x0, int y0, int ch, int cw, sd_dtensor **out)
{
    sd_context *ctx = cl->ctx;
    const int64_t n = FACE_SIDE;
    sd_img8 crop = {0}, scaled = {0};
    float *x = malloc(sizeof *x * (size_t)(3 * n * n));
    sd_status st = x ? sd_img8_new(ctx, ch, cw, 3, &crop) : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a face");
    for (int r = 0; !st && r < ch; r++)
        memcpy(crop.px + (size_t)r * (size_t)cw * 3, img->px + ((size_t)(y0 + r) * (size_t)img->w + (size_t)x0) * 3,
               (size_t)cw * 3);
    if (!st) /* smart_resize: k = (384 + 384) / (ch + cw) */
        st = sd_aux_resize(ctx, &crop, n, n, ch + cw > 2 * n ? SD_AUX_AREA : SD_AUX_LANCZOS4, &scaled);
    for (int c = 0; !st && c < 3; c++) /* channel c of BGR is RGB's 2 - c */
        for (int64_t i = 0; i < n * n; i++)
            x[c * n * n + i] = (float)scaled.px[i * 3 + 2 - c] / 256.0f - 0.5f;
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, n, n}, out);
    if (!st && (st = sd_dtensor_upload(*out, x)))
        sd_dtensor_free(*out), *out = NULL;
    sd_img8_free(&crop), sd_img8_free(&scaled);
    free(x);
    return st;
}

sd_status sd_pose_face_keypoints(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_face_box *box,
                                 float points[SD_POSE_FACE_POINTS][2], size_t *n)
{
    sd_context *ctx = cl->ctx;
    /* oriImg[y:y+w, x:x+w]: numpy cuts the slice at the image */
    int ch = box->size < img->h - box->y ? box->size : (int)img->h - box->y;
    int cw = box->size < img->w - box->x ? box->size : (int)img->w - box->x;
    sd_dtensor *x = NULL, *out[2] = {0};
    float *host = NULL, *plane = malloc(sizeof *plane * (size_t)ch * (size_t)cw);
    *n = 0;
    sd_status st = plane ? face_input(cl, img, box->x, box->y, ch, cw, &x)
                         : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the face maps");
    if (!st)
        st = sd_pose_net_forward(net, x, out);
    int64_t oh = st ? 0 : out[0]->shape[2], ow = st ? 0 : out[0]->shape[3];
    if (!st && !(host = malloc(sizeof *host * (size_t)out[0]->numel)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the face maps");
    if (!st)
        st = sd_dtensor_download(out[0], host);
    for (int k = 0; !st && k < SD_POSE_FACE; k++) {
        int px, py;
        sd_pose_resize_bilinear_corners(host + k * oh * ow, (int)oh, (int)ow, plane, ch, cw);
        if (!sd_pose_face_peak(plane, ch, cw, &px, &py))
            continue;
        /* detect_face: float32 (peak + corner) / size, -1 / size where the peak is 0 */
        points[*n][0] = (px == 0 ? -1.0f : (float)(px + box->x)) / (float)img->w;
        points[*n][1] = (py == 0 ? -1.0f : (float)(py + box->y)) / (float)img->h;
        (*n)++;
    }
    if (st)
        *n = 0;
    sd_dtensor_free(x), sd_dtensor_free(out[0]), sd_dtensor_free(out[1]);
    free(host), free(plane);
    return st;
}
