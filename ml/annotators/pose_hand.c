/* Hand boxes, the hand network's multi-scale maps and their peaks. See pose_hand.h. */
#include "ml/annotators/pose_hand.h"
#include "ml/annotators/aux_image.h"
#include "runtime-opencl/ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BOX 20.0
#define PEAK_THRESHOLD 0.05

/* One hand from shoulder s, elbow e and wrist r (body indices). */
static bool hand_box(const sd_pose_point *p, int s, int e, int r, int h, int w, bool left, sd_pose_hand_box *out)
{
    if (!p[s].present || !p[e].present || !p[r].present)
        return false;
    double x = p[r].x + 0.33 * (p[r].x - p[e].x), y = p[r].y + 0.33 * (p[r].y - p[e].y);
    double forearm = sqrt((p[r].x - p[e].x) * (p[r].x - p[e].x) + (p[r].y - p[e].y) * (p[r].y - p[e].y));
    double upper = sqrt((p[e].x - p[s].x) * (p[e].x - p[s].x) + (p[e].y - p[s].y) * (p[e].y - p[s].y));
    double width = 1.5 * fmax(forearm, 0.9 * upper);
    x -= width / 2.0, y -= width / 2.0;
    x = x < 0 ? 0 : x, y = y < 0 ? 0 : y;
    double w1 = x + width > w ? (double)w - x : width, w2 = y + width > h ? (double)h - y : width;
    width = fmin(w1, w2);
    if (width < MIN_BOX)
        return false;
    *out = (sd_pose_hand_box){(int)x, (int)y, (int)width, left};
    return true;
}

int sd_pose_hand_boxes(const sd_pose_person *person, int h, int w, sd_pose_hand_box boxes[2])
{
    int n = 0;
    n += hand_box(person->points, 5, 6, 7, h, w, true, &boxes[n]);
    n += hand_box(person->points, 2, 3, 4, h, w, false, &boxes[n]);
    return n;
}

/* 8-connected components of mask (n x n) numbered 1.. in raster order of their first pixel into
 * label; returns the count. stack: n * n ints. */
static int label_components(const unsigned char *mask, int n, int *label, int *stack)
{
    int count = 0;
    memset(label, 0, sizeof *label * (size_t)(n * n));
    for (int start = 0; start < n * n; start++) {
        if (!mask[start] || label[start])
            continue;
        int top = 0;
        label[start] = ++count;
        stack[top++] = start;
        while (top > 0) {
            int i = stack[--top], y = i / n, x = i % n;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = y + dy, xx = x + dx, j = yy * n + xx;
                    if (yy >= 0 && yy < n && xx >= 0 && xx < n && mask[j] && !label[j])
                        label[j] = count, stack[top++] = j;
                }
        }
    }
    return count;
}

/* The label (1..count) whose values of plane, summed in raster order as numpy sums them, are the
 * largest (the first on ties). */
static int best_component(const double *plane, const int *label, int count, int n, size_t *offs, double *vals)
{
    memset(offs, 0, sizeof *offs * (size_t)(count + 2));
    for (int i = 0; i < n * n; i++)
        offs[label[i] + 1]++;
    for (int k = 1; k <= count + 1; k++)
        offs[k] += offs[k - 1];
    size_t *fill = offs + count + 2; /* a second table after the first: write cursors */
    memcpy(fill, offs, sizeof *offs * (size_t)(count + 1));
    for (int i = 0; i < n * n; i++)
        vals[fill[label[i]]++] = plane[i];
    int best = 1;
    double best_sum = -INFINITY;
    for (int k = 1; k <= count; k++) {
        double s = sd_numpy_sum(vals + offs[k], offs[k + 1] - offs[k]);
        if (s > best_sum)
            best = k, best_sum = s;
    }
    return best;
}

sd_status sd_pose_hand_peak(sd_context *ctx, const double *plane, int crop_h, int crop_w, int *x, int *y)
{
    const int n = SD_POSE_HAND_MAP;
    size_t cells = (size_t)(n * n);
    double *blur = malloc(sizeof *blur * cells), *vals = malloc(sizeof *vals * cells);
    int *label = malloc(sizeof *label * cells), *stack = malloc(sizeof *stack * cells);
    unsigned char *mask = malloc(cells);
    size_t *offs = malloc(sizeof *offs * (2 * cells + 4));
    sd_status st = blur && vals && label && stack && mask && offs
                       ? sd_pose_gaussian_filter(ctx, plane, n, n, 3.0, blur)
                       : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a hand heatmap");
    *x = *y = 0;
    int count = 0;
    for (size_t i = 0; !st && i < cells; i++)
        mask[i] = blur[i] > PEAK_THRESHOLD;
    if (!st)
        count = label_components(mask, n, label, stack);
    if (count > 0) {
        int best = best_component(plane, label, count, n, offs, vals);
        /* npmax of the plane zeroed outside the component: each row's first maximum, then the
         * first row with the largest */
        int by = 0, bx = 0;
        double top = 0;
        for (int r = 0; r < n; r++) {
            int cx = 0;
            double m = label[r * n] == best ? plane[r * n] : 0.0;
            for (int c = 1; c < n; c++) {
                double v = label[r * n + c] == best ? plane[r * n + c] : 0.0;
                if (v > m)
                    m = v, cx = c;
            }
            if (r == 0 || m > top)
                top = m, by = r, bx = cx;
        }
        *y = (int)((double)by * (double)crop_h / (double)n);
        *x = (int)((double)bx * (double)crop_w / (double)n);
    }
    free(blur), free(vals), free(label), free(stack), free(mask), free(offs);
    return st;
}

/* ---- the hand network over four scales ---- */

#define HAND_BOX 368.0
#define HAND_SCALES 4
#define STRIDE 8

/* The box of img in BGR, blurred (cv2.GaussianBlur, sigma 0.8) into *out (new). */
static sd_status blurred_crop(sd_context *ctx, const sd_img8 *img, const sd_pose_hand_box *box, sd_img8 *out)
{
    int64_t n = box->size;
    unsigned char *plane = malloc((size_t)(2 * n * n));
    sd_status st = plane ? sd_img8_new(ctx, n, n, 3, out) : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a hand");
    for (int c = 0; !st && c < 3; c++) {
        for (int64_t y = 0; y < n; y++)
            for (int64_t x = 0; x < n; x++)
                plane[y * n + x] = img->px[((box->y + y) * img->w + box->x + x) * 3 + 2 - c];
        st = sd_aux_gaussian_blur_u8(ctx, plane, n, n, 0.8, plane + n * n);
        for (int64_t i = 0; !st && i < n * n; i++)
            out->px[i * 3 + c] = plane[n * n + i];
    }
    if (st)
        sd_img8_free(out);
    free(plane);
    return st;
}

/* One scale: the crop resized to side x side (util.smart_resize: INTER_AREA when shrinking,
 * else INTER_LANCZOS4), / 256 - 0.5, the network, each map x8 (Lanczos) and to 128 x 128
 * (INTER_AREA), added / 4 to avg [128][128][22]. side is a multiple of 8: no padding. */
static sd_status add_scale(sd_cl *cl, sd_pose_net *net, const sd_img8 *crop, int64_t side, double *avg)
{
    sd_context *ctx = cl->ctx;
    const int64_t m = SD_POSE_HAND_MAP, o = side / STRIDE;
    sd_img8 scaled = {0};
    sd_dtensor *x = NULL, *out[2] = {0};
    float *in = malloc(sizeof *in * (size_t)(3 * side * side)), *host = malloc(sizeof *host * (size_t)(SD_POSE_HAND * o * o));
    float *up = malloc(sizeof *up * (size_t)(side * side)), *small = malloc(sizeof *small * (size_t)(m * m));
    sd_status st = in && host && up && small
                       ? sd_aux_resize(ctx, crop, side, side, side < crop->h ? SD_AUX_AREA : SD_AUX_LANCZOS4, &scaled)
                       : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the hand network");
    for (int c = 0; !st && c < 3; c++)
        for (int64_t i = 0; i < side * side; i++)
            in[c * side * side + i] = (float)scaled.px[i * 3 + c] / 256.0f - 0.5f;
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, side, side}, &x);
    if (!st)
        st = sd_dtensor_upload(x, in);
    if (!st)
        st = sd_pose_net_forward(net, x, out);
    if (!st)
        st = sd_dtensor_download(out[0], host);
    for (int64_t k = 0; !st && k < SD_POSE_HAND; k++) {
        st = sd_aux_resize_lanczos4_f32(ctx, host + k * o * o, o, o, up, side, side);
        if (!st)
            st = sd_aux_resize_area_f32(ctx, up, side, side, small, m, m);
        for (int64_t i = 0; !st && i < m * m; i++)
            avg[i * SD_POSE_HAND + k] += (double)(small[i] / (float)HAND_SCALES);
    }
    sd_img8_free(&scaled);
    sd_dtensor_free(x), sd_dtensor_free(out[0]), sd_dtensor_free(out[1]);
    free(in), free(host), free(up), free(small);
    return st;
}

sd_status sd_pose_hand_maps(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_hand_box *box,
                            double *avg)
{
    static const double scales[HAND_SCALES] = {0.5, 1.0, 1.5, 2.0};
    sd_img8 crop = {0};
    memset(avg, 0, sizeof *avg * (size_t)(SD_POSE_HAND_MAP * SD_POSE_HAND_MAP * SD_POSE_HAND));
    sd_status st = blurred_crop(cl->ctx, img, box, &crop);
    for (int s = 0; !st && s < HAND_SCALES; s++)
        st = add_scale(cl, net, &crop, (int64_t)(scales[s] * HAND_BOX), avg);
    sd_img8_free(&crop);
    return st;
}

sd_status sd_pose_hand_keypoints(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_hand_box *box,
                                 float points[SD_POSE_HAND_POINTS][2])
{
    const int64_t m = SD_POSE_HAND_MAP;
    double *avg = malloc(sizeof *avg * (size_t)(m * m * SD_POSE_HAND)), *plane = malloc(sizeof *plane * (size_t)(m * m));
    sd_status st = avg && plane ? sd_pose_hand_maps(cl, net, img, box, avg)
                                : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory for the hand maps");
    for (int k = 0; !st && k < SD_POSE_HAND_POINTS; k++) {
        int px, py;
        for (int64_t i = 0; i < m * m; i++)
            plane[i] = avg[i * SD_POSE_HAND + k];
        st = sd_pose_hand_peak(cl->ctx, plane, box->size, box->size, &px, &py);
        /* detect_hands: float32 (peak + corner) / size, -1 / size where the peak is 0 */
        points[k][0] = (px == 0 ? -1.0f : (float)(px + box->x)) / (float)img->w;
        points[k][1] = (py == 0 ? -1.0f : (float)(py + box->y)) / (float)img->h;
    }
    free(avg), free(plane);
    return st;
}
