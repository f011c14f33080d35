/* InsightFace face analysis on the ONNX executor (ml/vision/face_analysis.h). */
#include "ml/vision/face_analysis.h"
#include "ml/annotators/aux_image.h"
#include "ml/onnx/onnx_graph.h"
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DET_THRESH 0.5f
#define NMS_THRESH 0.4f
#define MAX_SIDE 16384

struct sd_face_analysis {
    int refs;
    sd_onnx_graph *det, *rec;
    int fmc, anchors, strides[5]; /* SCRFD's levels, anchors per cell, their strides */
    bool kps;
    int rec_size;                 /* ArcFace input side (112) */
    float rec_mean, rec_std;      /* 127.5 / 127.5, or 0 / 1 when the graph normalises itself */
};

/* ---- 8-bit image steps (OpenCV's arithmetic) ---- */

/* ComfyUI_IPAdapter_plus's tensor_to_image: trunc(clamp(255 x, 0, 255)). */
static unsigned char *to_u8(sd_context *ctx, const float *rgb, int w, int h)
{
    size_t n = (size_t)w * (size_t)h * 3;
    unsigned char *px = malloc(n);
    if (!px) {
        sd_set_error(ctx, SD_ERR_NOMEM, "face analysis: out of memory for a %dx%d image", w, h);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        float v = rgb[i] * 255.0f;
        px[i] = (unsigned char)(v > 255.0f ? 255.0f : v >= 0.0f ? v : 0.0f);
    }
    return px;
}

/* cv2.resize(INTER_LINEAR) of an 8-bit 3-channel image: Q11 coefficients, the horizontal pass in
 * integers, the vertical pass as OpenCV's SIMD code computes it; an exact 2x shrink goes through
 * INTER_AREA as OpenCV does. */
static sd_status resize_linear(sd_context *ctx, const unsigned char *src, int sw, int sh, unsigned char *dst, int dw,
                               int dh)
{
    if (sw == 2 * dw && sh == 2 * dh) {
        sd_img8 in = {.h = sh, .w = sw, .c = 3, .px = (unsigned char *)src}, out = {0};
        sd_status st = sd_aux_resize(ctx, &in, dh, dw, SD_AUX_AREA, &out);
        if (!st)
            memcpy(dst, out.px, (size_t)dw * (size_t)dh * 3);
        sd_img8_free(&out);
        return st;
    }
    int *xofs = malloc((size_t)dw * sizeof *xofs), *rows = malloc((size_t)dw * 3 * 2 * sizeof *rows);
    short *alpha = malloc((size_t)dw * 2 * sizeof *alpha);
    if (!xofs || !rows || !alpha) {
        free(xofs), free(rows), free(alpha);
        return sd_set_error(ctx, SD_ERR_NOMEM, "face analysis: out of memory resizing");
    }
    double sx_scale = (double)sw / dw, sy_scale = (double)sh / dh;
    for (int dx = 0; dx < dw; dx++) {
        float fx = (float)((dx + 0.5) * sx_scale - 0.5);
        int sx = (int)floorf(fx);
        fx -= (float)sx;
        if (sx < 0)
            fx = 0, sx = 0;
        if (sx >= sw - 1)
            fx = 0, sx = sw - 1;
        xofs[dx] = sx;
        alpha[2 * dx] = (short)lrintf((1.0f - fx) * 2048.0f);
        alpha[2 * dx + 1] = (short)lrintf(fx * 2048.0f);
    }
    for (int dy = 0; dy < dh; dy++) {
        float fy = (float)((dy + 0.5) * sy_scale - 0.5);
        int sy = (int)floorf(fy);
        fy -= (float)sy;
        int b0 = (int)lrintf((1.0f - fy) * 2048.0f), b1 = (int)lrintf(fy * 2048.0f);
        for (int k = 0; k < 2; k++) {
            int y = sy + k < 0 ? 0 : sy + k >= sh ? sh - 1 : sy + k;
            const unsigned char *s = src + (size_t)y * (size_t)sw * 3;
            int *row = rows + (size_t)k * (size_t)dw * 3;
            for (int dx = 0; dx < dw; dx++)
                for (int c = 0; c < 3; c++) {
                    int x0 = xofs[dx], x1 = x0 + 1 < sw ? x0 + 1 : x0;
                    row[dx * 3 + c] = s[x0 * 3 + c] * alpha[2 * dx] + s[x1 * 3 + c] * alpha[2 * dx + 1];
                }
        }
        unsigned char *d = dst + (size_t)dy * (size_t)dw * 3;
        for (int i = 0; i < dw * 3; i++) {
            int v = ((((rows[i] >> 4) * b0) >> 16) + (((rows[dw * 3 + i] >> 4) * b1) >> 16) + 2) >> 2;
            d[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(xofs), free(rows), free(alpha);
    return SD_OK;
}

/* OpenCV's saturate_cast<int>(double): rounded half to even, clamped to the int range. */
static int64_t sat_round(double v)
{
    return v >= 2147483647.0 ? 2147483647 : v <= -2147483648.0 ? -2147483648LL : v == v ? (int64_t)lrint(v) : 0;
}

/* cv2.warpAffine(src, M, (size, size), INTER_LINEAR, BORDER_CONSTANT 0) on 8 bits: the inverted
 * matrix in fixed point (10 fractional bits, rounded to 1/32 pixel), Q15 bilinear weights. */
static void warp_affine(const unsigned char *src, int sw, int sh, const double m_in[6], unsigned char *dst, int size)
{
    double m[6];
    memcpy(m, m_in, sizeof m);
    double det = m[0] * m[4] - m[1] * m[3];
    det = det != 0 ? 1.0 / det : 0;
    double a11 = m[4] * det, a22 = m[0] * det;
    m[0] = a11;
    m[1] *= -det;
    m[3] *= -det;
    m[4] = a22;
    double b1 = -m[0] * m[2] - m[1] * m[5], b2 = -m[3] * m[2] - m[4] * m[5];
    m[2] = b1;
    m[5] = b2;
    for (int y = 0; y < size; y++) {
        int64_t x0 = sat_round((m[1] * y + m[2]) * 1024) + 16, y0 = sat_round((m[4] * y + m[5]) * 1024) + 16;
        for (int x = 0; x < size; x++) {
            int64_t X = (x0 + sat_round(m[0] * x * 1024)) >> 5, Y = (y0 + sat_round(m[3] * x * 1024)) >> 5;
            int64_t sx = X >> 5, sy = Y >> 5;
            int ax = (int)(X & 31), ay = (int)(Y & 31);
            int w[4] = {(32 - ay) * (32 - ax) * 32, (32 - ay) * ax * 32, ay * (32 - ax) * 32, ay * ax * 32};
            unsigned char *d = dst + ((size_t)y * (size_t)size + (size_t)x) * 3;
            for (int c = 0; c < 3; c++) {
                int acc = 0;
                for (int k = 0; k < 4; k++) {
                    int64_t px = sx + (k & 1), py = sy + (k >> 1);
                    if (px >= 0 && py >= 0 && px < sw && py < sh)
                        acc += src[((size_t)py * (size_t)sw + (size_t)px) * 3 + (size_t)c] * w[k];
                }
                int v = (acc + (1 << 14)) >> 15;
                d[c] = (unsigned char)(v > 255 ? 255 : v);
            }
        }
    }
}

/* face_align.estimate_norm: Umeyama's similarity (rotation, uniform scale, translation; no
 * reflection) from the landmarks to ArcFace's template scaled to size. In two dimensions it is the
 * least-squares complex ratio a = sum(conj(p) q) / sum(|p|^2) of the centred points. */
static sd_status estimate_norm(sd_context *ctx, const float lmk[10], int size, double m[6])
{
    static const double dst112[10] = {38.2946, 51.6963, 73.5318, 51.5014, 56.0252, 71.7366, 41.5493, 92.3655, 70.7299, 92.2041};
    double ratio, diff_x = 0;
    if (size > 0 && size % 112 == 0)
        ratio = size / 112.0;
    else if (size > 0 && size % 128 == 0)
        ratio = size / 128.0, diff_x = 8.0 * ratio;
    else
        return sd_set_error(ctx, SD_ERR_INVALID, "face crop size %d is not a multiple of 112 or 128", size);
    double dst[10], sm[2] = {0, 0}, dm[2] = {0, 0};
    for (int i = 0; i < 5; i++) {
        dst[2 * i] = (double)(float)dst112[2 * i] * ratio + diff_x; /* the template is float32 */
        dst[2 * i + 1] = (double)(float)dst112[2 * i + 1] * ratio;
        for (int k = 0; k < 2; k++)
            sm[k] += lmk[2 * i + k] / 5.0, dm[k] += dst[2 * i + k] / 5.0;
    }
    double re = 0, im = 0, den = 0;
    for (int i = 0; i < 5; i++) {
        double px = lmk[2 * i] - sm[0], py = lmk[2 * i + 1] - sm[1], qx = dst[2 * i] - dm[0], qy = dst[2 * i + 1] - dm[1];
        re += px * qx + py * qy;
        im += px * qy - py * qx;
        den += px * px + py * py;
    }
    if (!(den > 0))
        return sd_set_error(ctx, SD_ERR_INVALID, "face landmarks are all at one point");
    double c = re / den, s = im / den;
    m[0] = c, m[1] = -s, m[2] = dm[0] - (c * sm[0] - s * sm[1]);
    m[3] = s, m[4] = c, m[5] = dm[1] - (s * sm[0] + c * sm[1]);
    return SD_OK;
}

static sd_status check_image(sd_context *ctx, int width, int height)
{
    if (width < 1 || height < 1 || width > MAX_SIDE || height > MAX_SIDE)
        return sd_set_error(ctx, SD_ERR_INVALID, "face analysis: image size %dx%d (1..%d)", width, height, MAX_SIDE);
    return SD_OK;
}

sd_status sd_face_norm_crop(sd_context *ctx, const float *rgb, int width, int height, const float landmarks[10], int size,
                            float *out)
{
    double m[6];
    sd_status st;
    if ((st = check_image(ctx, width, height)) || (st = estimate_norm(ctx, landmarks, size, m)))
        return st;
    if (size > 4096)
        return sd_set_error(ctx, SD_ERR_INVALID, "face crop size %d (at most 4096)", size);
    unsigned char *src = to_u8(ctx, rgb, width, height), *dst = malloc((size_t)size * (size_t)size * 3);
    if (!src || !dst) {
        free(src), free(dst);
        return sd_set_error(ctx, SD_ERR_NOMEM, "face crop: out of memory");
    }
    warp_affine(src, width, height, m, dst, size);
    for (size_t i = 0; i < (size_t)size * (size_t)size * 3; i++)
        out[i] = dst[i] / 255.0f;
    free(src), free(dst);
    return SD_OK;
}

/* An 8-bit HWC RGB image as a network input [1, 3, h, w]: (v - mean) / std, in cv2.dnn's order. */
static sd_status to_blob(sd_context *ctx, const unsigned char *px, int w, int h, float mean, float std, sd_onnx_array *a)
{
    a->ndim = 4;
    a->dims[0] = 1, a->dims[1] = 3, a->dims[2] = h, a->dims[3] = w;
    a->numel = (size_t)w * (size_t)h * 3;
    if (!(a->data = malloc(a->numel * sizeof *a->data)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "face analysis: out of memory");
    size_t plane = (size_t)w * (size_t)h;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            a->data[(size_t)c * plane + i] = (float)(((double)px[i * 3 + (size_t)c] - mean) * (1.0 / std));
    return SD_OK;
}

/* ---- loading ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted *.onnx names in dir (malloc'd array of malloc'd names). */
static sd_status list_onnx(sd_context *ctx, const char *dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: InsightFace model folder not found", dir);
    size_t cap = 0;
    sd_status st = SD_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".onnx"))
            continue;
        if (*n == cap) {
            char **grown = cap < 256 ? realloc(*names, (cap = cap * 2 + 8) * sizeof **names) : NULL;
            if (!grown) {
                st = sd_set_error(ctx, SD_ERR_LIMIT, "%s: too many .onnx files", dir);
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = strdup(e->d_name)))
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        else
            (*n)++;
    }
    closedir(d);
    if (*names)
        qsort(*names, *n, sizeof **names, cmp_str);
    return st;
}

/* model_zoo.get_model's decision from the graph's first input and its outputs. */
typedef enum kind { KIND_OTHER, KIND_DETECTION, KIND_RECOGNITION } kind;

static kind classify(const sd_onnx_file *f)
{
    const Onnx__GraphProto *g = f->model->graph;
    const Onnx__ValueInfoProto *input = NULL;
    for (size_t i = 0; i < g->n_input && !input; i++) {
        bool init = false;
        for (size_t k = 0; k < g->n_initializer && !init; k++)
            init = g->initializer[k]->name && !strcmp(g->initializer[k]->name, g->input[i]->name);
        if (!init)
            input = g->input[i];
    }
    if (g->n_output >= 5)
        return KIND_DETECTION;
    int64_t dims[SD_ONNX_MAX_DIMS];
    if (!input || sd_onnx_value_dims(input, dims) != 4)
        return KIND_OTHER;
    if ((dims[2] == 192 && dims[3] == 192) || (dims[2] == 96 && dims[3] == 96) || dims[2] == 128)
        return KIND_OTHER; /* landmark, gender-age, inswapper */
    return dims[2] == dims[3] && dims[2] >= 112 && dims[2] % 16 == 0 ? KIND_RECOGNITION : KIND_OTHER;
}

/* scrfd.py's _init_vars: levels, anchors and keypoints from the output count. */
static sd_status setup_detector(sd_context *ctx, sd_face_analysis *fa)
{
    size_t n = sd_onnx_graph_output_count(fa->det);
    static const int strides[5] = {8, 16, 32, 64, 128};
    if (n != 6 && n != 9 && n != 10 && n != 15)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: a detector with %zu outputs is not SCRFD (6, 9, 10 or 15)",
                            sd_onnx_graph_file(fa->det)->path, n);
    fa->fmc = n == 6 || n == 9 ? 3 : 5;
    fa->anchors = fa->fmc == 3 ? 2 : 1;
    fa->kps = n == 9 || n == 15;
    memcpy(fa->strides, strides, sizeof strides);
    return SD_OK;
}

/* arcface_onnx.py: input side from the graph; mean 0 / std 1 when the first nodes normalise. */
static void setup_recognizer(sd_face_analysis *fa)
{
    int64_t dims[SD_ONNX_MAX_DIMS];
    sd_onnx_value_dims(sd_onnx_graph_input(fa->rec), dims);
    fa->rec_size = (int)dims[2];
    const Onnx__GraphProto *g = sd_onnx_graph_file(fa->rec)->model->graph;
    bool sub = false, mul = false;
    for (size_t i = 0; i < g->n_node && i < 8; i++) {
        const char *name = g->node[i]->name ? g->node[i]->name : "";
        sub |= !strncmp(name, "Sub", 3) || !strncmp(name, "_minus", 6);
        mul |= !strncmp(name, "Mul", 3) || !strncmp(name, "_mul", 4);
    }
    fa->rec_mean = sub && mul ? 0.0f : 127.5f;
    fa->rec_std = sub && mul ? 1.0f : 127.5f;
}

sd_status sd_face_analysis_load(sd_context *ctx, sd_cl *cl, const char *pack_dir, sd_face_analysis **out)
{
    *out = NULL;
    char **names = NULL;
    size_t n = 0;
    sd_status st = list_onnx(ctx, pack_dir, &names, &n);
    sd_face_analysis *fa = st ? NULL : calloc(1, sizeof *fa);
    if (!st && !fa)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n && !st && !(fa->det && fa->rec); i++) {
        size_t len = strlen(pack_dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        sd_onnx_file *f = NULL;
        if (!path) {
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(path, len, "%s/%s", pack_dir, names[i]);
        char *real = realpath(path, NULL); /* as the planner declares files (symlinks resolved) */
        st = sd_onnx_open(ctx, real ? real : path, &f);
        free(real);
        free(path);
        if (st)
            break;
        kind k = classify(f);
        sd_onnx_graph **slot = k == KIND_DETECTION ? &fa->det : k == KIND_RECOGNITION ? &fa->rec : NULL;
        if (slot && !*slot)
            st = sd_onnx_graph_from_file(cl, f, slot);
        else
            sd_onnx_close(f);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!st && (!fa->det || !fa->rec))
        st = sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: no InsightFace %s model (.onnx) in this folder", pack_dir,
                          fa->det ? "recognition" : "detection");
    if (!st)
        st = setup_detector(ctx, fa);
    if (!st) {
        setup_recognizer(fa);
        fa->refs = 1;
        *out = fa;
    } else if (fa) {
        sd_onnx_graph_free(fa->det);
        sd_onnx_graph_free(fa->rec);
        free(fa);
    }
    return st;
}

sd_face_analysis *sd_face_analysis_ref(sd_face_analysis *fa)
{
    if (fa)
        fa->refs++;
    return fa;
}

void sd_face_analysis_unref(sd_face_analysis *fa)
{
    if (!fa || --fa->refs > 0)
        return;
    sd_onnx_graph_free(fa->det);
    sd_onnx_graph_free(fa->rec);
    free(fa);
}

/* ---- detection ---- */

/* One candidate: box, score, landmarks (in detector-input pixels until scaled). */
typedef struct cand {
    float box[4], score, kps[10];
    size_t index; /* order of finding, which breaks ties */
} cand;

/* Ascending by score, stable by index (insightface reverses an argsort). */
static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->score < y->score ? -1 : x->score > y->score ? 1 : x->index < y->index ? -1 : x->index > y->index;
}

/* Runs the detector on a det_size letterboxed image; *cands (malloc'd) gets the candidates
 * above the threshold in level order. */
static sd_status detect_raw(sd_context *ctx, sd_face_analysis *fa, const unsigned char *det_img, int det_size,
                            cand **cands, size_t *n)
{
    *cands = NULL;
    *n = 0;
    sd_onnx_array in = {0}, outs[15] = {{0}};
    sd_status st = to_blob(ctx, det_img, det_size, det_size, 127.5f, 128.0f, &in);
    if (!st)
        st = sd_onnx_graph_run(fa->det, &in, outs);
    sd_onnx_array_free(&in);
    size_t cap = 0;
    const char *path = sd_onnx_graph_file(fa->det)->path;
    for (int lvl = 0; lvl < fa->fmc && !st; lvl++) {
        int stride = fa->strides[lvl], gw = det_size / stride, gh = det_size / stride;
        size_t cells = (size_t)gw * (size_t)gh * (size_t)fa->anchors;
        const sd_onnx_array *sc = &outs[lvl], *bb = &outs[lvl + fa->fmc], *kp = fa->kps ? &outs[lvl + 2 * fa->fmc] : NULL;
        if (sc->numel != cells || bb->numel != cells * 4 || (kp && kp->numel != cells * 10)) {
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: stride %d outputs have %zu scores for %zu anchors", path, stride,
                              sc->numel, cells);
            break;
        }
        for (size_t a = 0; a < cells; a++) {
            if (!(sc->data[a] >= DET_THRESH))
                continue;
            if (*n == cap) {
                cand *grown = realloc(*cands, (cap = cap * 2 + 64) * sizeof **cands);
                if (!grown) {
                    st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                    break;
                }
                *cands = grown;
            }
            size_t cell = a / (size_t)fa->anchors;
            float cx = (float)((int)(cell % (size_t)gw) * stride), cy = (float)((int)(cell / (size_t)gw) * stride);
            cand *c = &(*cands)[*n];
            c->index = (*n)++;
            const float *d = bb->data + a * 4;
            c->score = sc->data[a];
            c->box[0] = cx - d[0] * (float)stride;
            c->box[1] = cy - d[1] * (float)stride;
            c->box[2] = cx + d[2] * (float)stride;
            c->box[3] = cy + d[3] * (float)stride;
            for (int k = 0; k < 10; k++)
                c->kps[k] = kp ? (k % 2 ? cy : cx) + kp->data[a * 10 + (size_t)k] * (float)stride : 0.0f;
        }
    }
    for (size_t i = 0; i < sd_onnx_graph_output_count(fa->det) && i < 15; i++)
        sd_onnx_array_free(&outs[i]);
    if (st) {
        free(*cands);
        *cands = NULL;
        *n = 0;
    }
    return st;
}

/* scrfd.py's nms over candidates sorted by descending score; keeps them in place, *n updated. */
static void nms(cand *c, size_t *n)
{
    size_t kept = 0;
    bool *gone = calloc(*n ? *n : 1, sizeof *gone);
    for (size_t i = 0; i < *n; i++) {
        if (gone && gone[i])
            continue;
        float ai = (c[i].box[2] - c[i].box[0] + 1) * (c[i].box[3] - c[i].box[1] + 1);
        for (size_t j = i + 1; gone && j < *n; j++) {
            if (gone[j])
                continue;
            float w = fmaxf(0.0f, fminf(c[i].box[2], c[j].box[2]) - fmaxf(c[i].box[0], c[j].box[0]) + 1);
            float h = fmaxf(0.0f, fminf(c[i].box[3], c[j].box[3]) - fmaxf(c[i].box[1], c[j].box[1]) + 1);
            float inter = w * h, aj = (c[j].box[2] - c[j].box[0] + 1) * (c[j].box[3] - c[j].box[1] + 1);
            if (!(inter / (ai + aj - inter) <= NMS_THRESH))
                gone[j] = true;
        }
        c[kept++] = c[i];
    }
    free(gone);
    *n = kept;
}

/* The ArcFace embedding of the face at landmarks kps in the 8-bit image, L2-normalised, and its raw norm. */
static sd_status embed(sd_context *ctx, sd_face_analysis *fa, const unsigned char *img, int w, int h, const float kps[10],
                       float emb[512], float *emb_norm)
{
    double m[6];
    int size = fa->rec_size;
    sd_status st = estimate_norm(ctx, kps, size, m);
    if (st)
        return st;
    unsigned char *crop = malloc((size_t)size * (size_t)size * 3);
    if (!crop)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    warp_affine(img, w, h, m, crop, size);
    sd_onnx_array in = {0}, out = {0};
    st = to_blob(ctx, crop, size, size, fa->rec_mean, fa->rec_std, &in);
    free(crop);
    if (!st)
        st = sd_onnx_graph_run(fa->rec, &in, &out);
    sd_onnx_array_free(&in);
    if (!st && out.numel != 512)
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: the embedding has %zu values (512 expected)",
                          sd_onnx_graph_file(fa->rec)->path, out.numel);
    if (!st) {
        double norm = 0;
        for (int i = 0; i < 512; i++)
            norm += (double)out.data[i] * out.data[i];
        norm = sqrt(norm);
        *emb_norm = (float)norm;
        for (int i = 0; i < 512; i++)
            emb[i] = norm > 0 ? (float)(out.data[i] / norm) : 0.0f;
    }
    sd_onnx_array_free(&out);
    return st;
}

sd_status sd_face_analysis_run(sd_context *ctx, sd_face_analysis *fa, const float *rgb, int width, int height,
                               int det_size, sd_face **faces, size_t *count)
{
    *faces = NULL;
    *count = 0;
    sd_status st = check_image(ctx, width, height);
    if (st)
        return st;
    if (det_size < 32 || det_size > 2048 || det_size % 32)
        return sd_set_error(ctx, SD_ERR_INVALID, "face detection size %d (a multiple of 32 in 32..2048)", det_size);
    /* scrfd.py detect: fit the image into det_size x det_size, top-left, keeping its ratio */
    double im_ratio = (double)height / width;
    int nw, nh;
    if (im_ratio > 1.0)
        nh = det_size, nw = (int)(nh / im_ratio);
    else
        nw = det_size, nh = (int)(nw * im_ratio);
    if (nw < 1 || nh < 1)
        return sd_set_error(ctx, SD_ERR_INVALID, "face analysis: a %dx%d image is too thin to detect faces in", width,
                            height);
    float det_scale = (float)((double)nh / height);
    unsigned char *img = to_u8(ctx, rgb, width, height);
    unsigned char *det_img = calloc((size_t)det_size * (size_t)det_size, 3), *resized = malloc((size_t)nw * (size_t)nh * 3);
    cand *c = NULL;
    size_t n = 0;
    if (!img || !det_img || !resized)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "face analysis: out of memory");
    if (!st)
        st = resize_linear(ctx, img, width, height, resized, nw, nh);
    if (!st) {
        for (int y = 0; y < nh; y++)
            memcpy(det_img + (size_t)y * (size_t)det_size * 3, resized + (size_t)y * (size_t)nw * 3, (size_t)nw * 3);
        st = detect_raw(ctx, fa, det_img, det_size, &c, &n);
    }
    free(det_img);
    free(resized);
    if (!st && n) {
        qsort(c, n, sizeof *c, cmp_cand);
        for (size_t i = 0; i < n / 2; i++) { /* descending */
            cand t = c[i];
            c[i] = c[n - 1 - i];
            c[n - 1 - i] = t;
        }
        for (size_t i = 0; i < n; i++) {
            for (int k = 0; k < 4; k++)
                c[i].box[k] /= det_scale;
            for (int k = 0; k < 10; k++)
                c[i].kps[k] /= det_scale;
        }
        nms(c, &n);
        if (!(*faces = calloc(n, sizeof **faces)))
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n && !st; i++) {
            sd_face *f = &(*faces)[i];
            memcpy(f->box, c[i].box, sizeof f->box);
            memcpy(f->landmarks, c[i].kps, sizeof f->landmarks);
            f->score = c[i].score;
            st = embed(ctx, fa, img, width, height, f->landmarks, f->embedding, &f->embedding_norm);
        }
        if (st) {
            free(*faces);
            *faces = NULL;
        } else {
            *count = n;
        }
    }
    free(c);
    free(img);
    return st;
}

sd_status sd_face_analysis_run_retry(sd_context *ctx, sd_face_analysis *fa, const float *rgb, int width, int height,
                                     sd_face **faces, size_t *count)
{
    sd_status st = SD_OK;
    for (int size = 640; size >= 320 && !st; size -= 64)
        if (!(st = sd_face_analysis_run(ctx, fa, rgb, width, height, size, faces, count)) && *count)
            break;
    return st;
}
