/* The OpenPose body, hand and face networks on the op API. See openpose.h. */
#include "ml/annotators/openpose.h"
#include "ml/annotators/aux_image.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include "runtime-opencl/ops_esrgan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 4096
#define STAGES 6
#define POOL "|" /* a 2x2 max-pool between front layers */

static const char *const body_front[] = {"conv1_1", "conv1_2", POOL, "conv2_1", "conv2_2", POOL, "conv3_1",
                                         "conv3_2", "conv3_3", "conv3_4", POOL, "conv4_1", "conv4_2",
                                         "conv4_3_CPM", "conv4_4_CPM", NULL};
static const char *const hand_front[] = /* also the face network's */ {"conv1_1", "conv1_2", POOL, "conv2_1", "conv2_2", POOL, "conv3_1",
                                         "conv3_2", "conv3_3", "conv3_4", POOL, "conv4_1", "conv4_2", "conv4_3",
                                         "conv4_4", "conv5_1", "conv5_2", "conv5_3_CPM", NULL};

struct sd_pose_net {
    sd_cl *cl;
    sd_pose_kind kind;
    sd_weights *w;
};

/* The name of layer i (0-based) of branch `branch` (body: 1 PAF, 2 heatmap; hand, face: 0) of
 * stage s. */
static void layer_name(sd_pose_kind kind, int s, int branch, int i, char *out, size_t size)
{
    if (kind == SD_POSE_BODY && s == 1)
        snprintf(out, size, "conv5_%d_CPM_L%d", i + 1, branch);
    else if (kind == SD_POSE_BODY)
        snprintf(out, size, "Mconv%d_stage%d_L%d", i + 1, s, branch);
    else if (s == 1)
        snprintf(out, size, "conv6_%d_CPM", i + 1);
    else
        snprintf(out, size, "Mconv%d_stage%d", i + 1, s);
}

static int branch_layers(sd_pose_kind kind, int s)
{
    return s > 1 ? 7 : kind == SD_POSE_BODY ? 5 : 2;
}

/* Checks <name>.weight [o, in, k, k] (k odd up to 7; o read into *out when o is 0) and
 * <name>.bias [o] of the `what` network. */
static sd_status expect_conv(sd_context *ctx, const sd_safetensors *st, const char *what, const char *name,
                             int64_t in, int64_t o, int64_t *out)
{
    const sd_st_tensor *w = sd_safetensors_findf(st, "%s.weight", name), *b = sd_safetensors_findf(st, "%s.bias", name);
    if (!w)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: not an OpenPose %s network: tensor '%s.weight' is missing",
                            sd_safetensors_path(st), what, name);
    bool ok = w->ndim == 4 && sd_st_dtype_is_weight(w->dtype) && w->shape[1] == in && w->shape[2] == w->shape[3] &&
              w->shape[2] % 2 == 1 && w->shape[2] <= 7 && w->shape[0] >= 1 && w->shape[0] <= MAX_WIDTH &&
              (o == 0 || w->shape[0] == o) && b && b->ndim == 1 && sd_st_dtype_is_weight(b->dtype) &&
              b->shape[0] == w->shape[0];
    if (!ok)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: OpenPose %s network: tensor '%s.weight' or its bias has the "
                            "wrong shape", sd_safetensors_path(st), what, name);
    *out = w->shape[0];
    return SD_OK;
}

sd_status sd_pose_inspect(sd_context *ctx, const sd_safetensors *st, sd_pose_kind kind)
{
    const char *const *front = kind == SD_POSE_BODY ? body_front : hand_front;
    const char *what = kind == SD_POSE_BODY ? "body" : kind == SD_POSE_HAND_NET ? "hand" : "face";
    int64_t c = 3, feat;
    sd_status s = SD_OK;
    for (int i = 0; !s && front[i]; i++)
        if (strcmp(front[i], POOL) != 0)
            s = expect_conv(ctx, st, what, front[i], c, 0, &c);
    feat = c;
    int nb = kind == SD_POSE_BODY ? 2 : 1;
    const int64_t outs[2] = {kind == SD_POSE_BODY ? SD_POSE_PAF : kind == SD_POSE_HAND_NET ? SD_POSE_HAND : SD_POSE_FACE,
                             SD_POSE_HEAT};
    int64_t stage_in = feat + outs[0] + (nb == 2 ? outs[1] : 0);
    char name[48];
    for (int st_i = 1; !s && st_i <= STAGES; st_i++)
        for (int b = 0; !s && b < nb; b++) {
            int64_t in = st_i == 1 ? feat : stage_in;
            int n = branch_layers(kind, st_i);
            for (int i = 0; !s && i < n; i++) {
                layer_name(kind, st_i, nb == 2 ? b + 1 : 0, i, name, sizeof name);
                s = expect_conv(ctx, st, what, name, in, i == n - 1 ? outs[b] : 0, &in);
            }
        }
    return s;
}

sd_status sd_pose_net_new(sd_cl *cl, const sd_safetensors *st, sd_pose_kind kind, sd_pose_net **out)
{
    *out = NULL;
    sd_status s = sd_pose_inspect(cl->ctx, st, kind);
    if (s)
        return s;
    sd_pose_net *n = calloc(1, sizeof *n);
    if (!n)
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    n->cl = cl;
    n->kind = kind;
    if ((s = sd_weights_new(cl, st, "", SD_DTYPE_F32, &n->w))) {
        free(n);
        return s;
    }
    *out = n;
    return SD_OK;
}

void sd_pose_net_free(sd_pose_net *n)
{
    if (!n)
        return;
    sd_weights_free(n->w);
    free(n);
}

/* *x = conv name (stride 1, same padding) of *x, then ReLU when relu; replaces *x (input kept when
 * keep). */
static sd_status conv(sd_pose_net *n, const char *name, bool relu, bool keep, sd_dtensor **x)
{
    const sd_dtensor *w, *b;
    sd_dtensor *y = NULL;
    sd_status s = sd_weights_getf(n->w, &w, "%s.weight", name);
    if (!s)
        s = sd_weights_getf(n->w, &b, "%s.bias", name);
    int pad = s ? 0 : (int)(w->shape[3] / 2);
    sd_conv2d_params p = {.stride_h = 1, .stride_w = 1, .pad_h = pad, .pad_w = pad};
    if (!s)
        s = sd_op_conv2d(n->cl, *x, w, b, &p, &y);
    if (!s && relu)
        s = sd_op_leaky_relu_into(n->cl, y, 0.0f, y, 0);
    if (!keep)
        sd_dtensor_free(*x);
    *x = y;
    return s;
}

/* The front layers on x into *out. */
static sd_status front(sd_pose_net *n, const sd_dtensor *x, sd_dtensor **out)
{
    const char *const *names = n->kind == SD_POSE_BODY ? body_front : hand_front;
    sd_dtensor *h = (sd_dtensor *)x, *t = NULL;
    sd_status s = SD_OK;
    for (int i = 0; !s && names[i]; i++) {
        bool first = h == x;
        if (strcmp(names[i], POOL) == 0) {
            s = sd_op_max_pool2x2(n->cl, h, &t);
            if (!first)
                sd_dtensor_free(h);
            h = t, t = NULL;
        } else {
            s = conv(n, names[i], true, first, &h);
        }
    }
    *out = s ? NULL : h;
    if (s && h != x)
        sd_dtensor_free(h);
    return s;
}

/* Branch b (body: 1, 2; hand, face: 0) of stage s on in (kept) into *out. */
static sd_status branch(sd_pose_net *n, int s_i, int b, const sd_dtensor *in, sd_dtensor **out)
{
    int layers = branch_layers(n->kind, s_i);
    char name[48];
    sd_dtensor *h = (sd_dtensor *)in;
    sd_status s = SD_OK;
    for (int i = 0; !s && i < layers; i++) {
        layer_name(n->kind, s_i, b, i, name, sizeof name);
        bool last = i == layers - 1;
        /* the reference's no_relu_layers leaves Mconv7_stage6_L2 out: its ReLU stays */
        bool relu = !last || (n->kind == SD_POSE_BODY && s_i == STAGES && b == 2);
        s = conv(n, name, relu, h == in, &h);
    }
    *out = s ? NULL : h;
    return s;
}

/* concat(a, b[, c]) along the channels. */
static sd_status concat3(sd_cl *cl, const sd_dtensor *a, const sd_dtensor *b, const sd_dtensor *c, sd_dtensor **out)
{
    sd_dtensor *ab = NULL;
    if (!c)
        return sd_op_concat(cl, a, b, 1, out);
    sd_status s = sd_op_concat(cl, a, b, 1, &ab);
    if (!s)
        s = sd_op_concat(cl, ab, c, 1, out);
    sd_dtensor_free(ab);
    return s;
}

sd_status sd_pose_net_forward(sd_pose_net *n, const sd_dtensor *x, sd_dtensor *out[2])
{
    char d[96];
    out[0] = out[1] = NULL;
    if (x->ndim != 4 || x->dtype != SD_DTYPE_F32 || x->shape[0] != 1 || x->shape[1] != 3 || x->shape[2] < 8 ||
        x->shape[3] < 8)
        return sd_set_error(n->cl->ctx, SD_ERR_INVALID, "openpose: input %s is not [1, 3, H, W] with H, W >= 8",
                            sd_dtensor_describe(x, d, sizeof d));
    bool body = n->kind == SD_POSE_BODY;
    sd_dtensor *feat = NULL, *cat = NULL, *o[2] = {0};
    sd_status s = front(n, x, &feat);
    for (int st_i = 1; !s && st_i <= STAGES; st_i++) {
        const sd_dtensor *in = st_i == 1 ? feat : cat;
        for (int b = 0; !s && b < (body ? 2 : 1); b++) {
            sd_dtensor_free(o[b]), o[b] = NULL;
            s = branch(n, st_i, body ? b + 1 : 0, in, &o[b]);
        }
        sd_dtensor_free(cat), cat = NULL;
        if (!s && st_i < STAGES)
            s = body ? concat3(n->cl, o[0], o[1], feat, &cat) : concat3(n->cl, o[0], feat, NULL, &cat);
    }
    sd_dtensor_free(feat);
    sd_dtensor_free(cat);
    if (s) {
        sd_dtensor_free(o[0]);
        sd_dtensor_free(o[1]);
        return s;
    }
    out[0] = o[0];
    out[1] = o[1];
    return SD_OK;
}

/* ---- Body.__call__'s maps ---- */

#define BOXSIZE_HALF 184.0 /* scale_search 0.5 times boxsize 368 */
#define STRIDE 8
#define PAD_VALUE 128

/* The network input: img scaled by BOXSIZE_HALF / h (util.smart_resize_k: INTER_AREA when it
 * shrinks, INTER_LANCZOS4 otherwise), padded at the bottom and right with 128 to multiples of 8
 * (util.padRightDownCorner), BGR / 256 - 0.5; *sh x *sw the scaled size. */
static sd_status network_input(sd_cl *cl, const sd_img8 *img, sd_dtensor **out, int64_t *sh, int64_t *sw)
{
    sd_context *ctx = cl->ctx;
    double scale = BOXSIZE_HALF / (double)img->h;
    sd_img8 scaled = {0};
    *sh = (int64_t)((double)img->h * scale), *sw = (int64_t)((double)img->w * scale);
    int64_t ph = (*sh + STRIDE - 1) / STRIDE * STRIDE, pw = (*sw + STRIDE - 1) / STRIDE * STRIDE;
    float *x = malloc(sizeof *x * (size_t)(3 * ph * pw));
    sd_status st = x ? sd_aux_resize(ctx, img, *sh, *sw, scale < 1.0 ? SD_AUX_AREA : SD_AUX_LANCZOS4, &scaled)
                     : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the pose input");
    for (int c = 0; !st && c < 3; c++) /* channel c of BGR is RGB's 2 - c */
        for (int64_t y = 0; y < ph; y++)
            for (int64_t i = 0; i < pw; i++) {
                int v = y < *sh && i < *sw ? scaled.px[(y * *sw + i) * 3 + 2 - c] : PAD_VALUE;
                x[(c * ph + y) * pw + i] = (float)v / 256.0f - 0.5f;
            }
    if (!st)
        st = sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, ph, pw}, out);
    if (!st && (st = sd_dtensor_upload(*out, x)))
        sd_dtensor_free(*out), *out = NULL;
    sd_img8_free(&scaled);
    free(x);
    return st;
}

/* One output [1, c, ph/8, pw/8]: util.smart_resize_k x8, cropped to sh x sw, util.smart_resize to
 * h x w (INTER_LANCZOS4 both) into maps[(y w + x) c + k] as float64. */
static sd_status output_maps(sd_context *ctx, const sd_dtensor *t, int64_t sh, int64_t sw, int64_t h, int64_t w,
                             double *maps)
{
    int64_t c = t->shape[1], oh = t->shape[2], ow = t->shape[3];
    float *host = malloc(sizeof *host * t->numel), *up = malloc(sizeof *up * (size_t)(oh * ow * 64));
    float *crop = malloc(sizeof *crop * (size_t)(sh * sw)), *full = malloc(sizeof *full * (size_t)(h * w));
    sd_status st = host && up && crop && full ? sd_dtensor_download(t, host)
                                              : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose maps");
    for (int64_t k = 0; !st && k < c; k++) {
        st = sd_aux_resize_lanczos4_f32(ctx, host + k * oh * ow, oh, ow, up, oh * STRIDE, ow * STRIDE);
        for (int64_t y = 0; !st && y < sh; y++)
            memcpy(crop + y * sw, up + y * ow * STRIDE, sizeof *crop * (size_t)sw);
        if (!st)
            st = sd_aux_resize_lanczos4_f32(ctx, crop, sh, sw, full, h, w);
        for (int64_t i = 0; !st && i < h * w; i++)
            maps[i * c + k] = full[i];
    }
    free(host), free(up), free(crop), free(full);
    return st;
}

sd_status sd_pose_body_maps(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, double **heat, double **paf)
{
    int64_t h = img->h, w = img->w, sh = 0, sw = 0;
    sd_dtensor *x = NULL, *out[2] = {0};
    *heat = malloc(sizeof **heat * (size_t)(h * w * SD_POSE_HEAT));
    *paf = malloc(sizeof **paf * (size_t)(h * w * SD_POSE_PAF));
    sd_status st = *heat && *paf ? network_input(cl, img, &x, &sh, &sw)
                                 : sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory for pose maps");
    if (!st)
        st = sd_pose_net_forward(net, x, out);
    if (!st)
        st = output_maps(cl->ctx, out[1], sh, sw, h, w, *heat);
    if (!st)
        st = output_maps(cl->ctx, out[0], sh, sw, h, w, *paf);
    sd_dtensor_free(x), sd_dtensor_free(out[0]), sd_dtensor_free(out[1]);
    if (st) {
        free(*heat), free(*paf);
        *heat = *paf = NULL;
    }
    return st;
}
