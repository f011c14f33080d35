/* OpenPose skeleton drawing with OpenCV's integer drawing rules. See pose_draw.h. */
#include "ml/annotators/pose_draw.h"
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XY_SHIFT 16
#define XY_ONE ((int64_t)1 << XY_SHIFT)

/* OpenCV's sine table: sin(i degrees) rounded to 7 decimals, as float, for i = 0..450. */
static float sin_table(int i)
{
    static float table[451];
    static bool ready;
    if (!ready) {
        for (int k = 0; k <= 450; k++) {
            char text[32];
            snprintf(text, sizeof text, "%.7f", sin((double)(k % 360) * (M_PI / 180.0)));
            table[k] = strtof(text, NULL);
        }
        ready = true;
    }
    return table[i];
}

/* cvRound: round half to even, as lrint in the default rounding mode. */
static int cv_round(double v)
{
    return (int)lrint(v);
}

size_t sd_cv_ellipse2poly(int cx, int cy, int ax, int ay, int angle, int arc_start, int arc_end, int delta,
                          int *pts, size_t max)
{
    while (angle < 0)
        angle += 360;
    while (angle > 360)
        angle -= 360;
    if (arc_start > arc_end) {
        int t = arc_start;
        arc_start = arc_end;
        arc_end = t;
    }
    while (arc_start < 0)
        arc_start += 360, arc_end += 360;
    while (arc_end > 360)
        arc_end -= 360, arc_start -= 360;
    if (arc_end - arc_start > 360)
        arc_start = 0, arc_end = 360;
    float alpha = sin_table(450 - angle), beta = sin_table(angle); /* cos, sin */
    size_t n = 0;
    int px = INT32_MIN, py = INT32_MIN;
    for (int i = arc_start; i < arc_end + delta; i += delta) {
        int a = i > arc_end ? arc_end : i;
        if (a < 0)
            a += 360;
        double x = ax * (double)sin_table(450 - a), y = ay * (double)sin_table(a);
        int qx = cv_round(cx + x * alpha - y * beta), qy = cv_round(cy + x * beta + y * alpha);
        if (qx == px && qy == py)
            continue;
        if (n < max)
            pts[2 * n] = qx, pts[2 * n + 1] = qy;
        n++;
        px = qx, py = qy;
    }
    if (n == 1) { /* a zero-size polygon: the centre twice */
        if (max >= 2)
            pts[0] = pts[2] = cx, pts[1] = pts[3] = cy;
        n = 2;
    }
    return n;
}

static void put(uint8_t *img, int w, int x, int y, const uint8_t color[3])
{
    memcpy(img + ((size_t)y * (size_t)w + (size_t)x) * 3, color, 3);
}

static void hline(uint8_t *img, int w, int y, int x1, int x2, const uint8_t color[3])
{
    for (int x = x1; x <= x2; x++)
        put(img, w, x, y, color);
}

/* cv::clipLine to [0, w - 1] x [0, h - 1]; false when the segment lies outside. */
static bool clip_line(int64_t w, int64_t h, int64_t *x1, int64_t *y1, int64_t *x2, int64_t *y2)
{
    int64_t right = w - 1, bottom = h - 1;
    if (w <= 0 || h <= 0)
        return false;
    int c1 = (*x1 < 0) + (*x1 > right) * 2 + (*y1 < 0) * 4 + (*y1 > bottom) * 8;
    int c2 = (*x2 < 0) + (*x2 > right) * 2 + (*y2 < 0) * 4 + (*y2 > bottom) * 8;
    if ((c1 & c2) == 0 && (c1 | c2) != 0) {
        int64_t a;
        if (c1 & 12) {
            a = c1 < 8 ? 0 : bottom;
            *x1 += (int64_t)((double)(a - *y1) * (double)(*x2 - *x1) / (double)(*y2 - *y1));
            *y1 = a;
            c1 = (*x1 < 0) + (*x1 > right) * 2;
        }
        if (c2 & 12) {
            a = c2 < 8 ? 0 : bottom;
            *x2 += (int64_t)((double)(a - *y2) * (double)(*x2 - *x1) / (double)(*y2 - *y1));
            *y2 = a;
            c2 = (*x2 < 0) + (*x2 > right) * 2;
        }
        if ((c1 & c2) == 0 && (c1 | c2) != 0) {
            if (c1) {
                a = c1 == 1 ? 0 : right;
                *y1 += (int64_t)((double)(a - *x1) * (double)(*y2 - *y1) / (double)(*x2 - *x1));
                *x1 = a;
                c1 = 0;
            }
            if (c2) {
                a = c2 == 1 ? 0 : right;
                *y2 += (int64_t)((double)(a - *x2) * (double)(*y2 - *y1) / (double)(*x2 - *x1));
                *x2 = a;
                c2 = 0;
            }
        }
    }
    return (c1 | c2) == 0;
}

/* cv::Line with 8-connectivity (LineIterator, left to right): Bresenham from the left end. */
static void line8(uint8_t *img, int w, int h, int x1, int y1, int x2, int y2, const uint8_t color[3])
{
    if ((unsigned)x1 >= (unsigned)w || (unsigned)x2 >= (unsigned)w || (unsigned)y1 >= (unsigned)h ||
        (unsigned)y2 >= (unsigned)h) {
        int64_t a = x1, b = y1, c = x2, d = y2;
        if (!clip_line(w, h, &a, &b, &c, &d))
            return;
        x1 = (int)a, y1 = (int)b, x2 = (int)c, y2 = (int)d;
    }
    if (x2 < x1) { /* left to right */
        int t = x1;
        x1 = x2, x2 = t;
        t = y1, y1 = y2, y2 = t;
    }
    int dx = x2 - x1, dy = y2 - y1, sy = dy < 0 ? -1 : 1;
    dy = dy < 0 ? -dy : dy;
    bool steep = dy > dx; /* the major axis is y */
    int major = steep ? dy : dx, minor = steep ? dx : dy;
    int err = major - (minor + minor), plus = major + major, minus = -(minor + minor);
    int x = x1, y = y1;
    for (int i = 0; i <= major; i++) {
        put(img, w, x, y, color);
        int mask = err < 0;
        err += minus + (mask ? plus : 0);
        /* minusStep: one along the major axis; plusStep (when err was negative): one along the minor */
        if (steep) {
            y += sy;
            x += mask;
        } else {
            x += 1;
            y += mask ? sy : 0;
        }
    }
}

/* cv's Line2: an 8-connected line between points in XY_SHIFT fixed point, clipped. */
static void line2(uint8_t *img, int w, int h, int64_t x1, int64_t y1, int64_t x2, int64_t y2, const uint8_t color[3])
{
    if (!clip_line((int64_t)w << XY_SHIFT, (int64_t)h << XY_SHIFT, &x1, &y1, &x2, &y2))
        return;
    int64_t dx = x2 - x1, dy = y2 - y1, ax = dx < 0 ? -dx : dx, ay = dy < 0 ? -dy : dy, xs, ys;
    bool flat = ax > ay;
    if ((flat && dx < 0) || (!flat && dy < 0)) { /* walk along the major axis upwards */
        int64_t t = x1;
        x1 = x2, x2 = t, t = y1, y1 = y2, y2 = t;
        dx = -dx, dy = -dy;
    }
    int ecount;
    if (flat) {
        xs = XY_ONE, ys = dy * XY_ONE / (ax | 1), ecount = (int)((x2 - x1) >> XY_SHIFT);
    } else {
        xs = dx * XY_ONE / (ay | 1), ys = XY_ONE, ecount = (int)((y2 - y1) >> XY_SHIFT);
    }
    x1 += XY_ONE >> 1, y1 += XY_ONE >> 1;
    int px = (int)((x2 + (XY_ONE >> 1)) >> XY_SHIFT), py = (int)((y2 + (XY_ONE >> 1)) >> XY_SHIFT);
    if (px >= 0 && px < w && py >= 0 && py < h)
        put(img, w, px, py, color);
    if (flat)
        x1 >>= XY_SHIFT;
    else
        y1 >>= XY_SHIFT;
    for (; ecount >= 0; ecount--) {
        int x = (int)(flat ? x1 : x1 >> XY_SHIFT), y = (int)(flat ? y1 >> XY_SHIFT : y1);
        if (x >= 0 && x < w && y >= 0 && y < h)
            put(img, w, x, y, color);
        x1 += flat ? 1 : xs;
        y1 += flat ? ys : 1;
    }
}

void sd_cv_fill_convex_poly(uint8_t *img, int w, int h, const int64_t *pts, size_t n, int shift,
                            const uint8_t color[3])
{
    if (n == 0)
        return;
    int npts = (int)n, imin = 0, edges = npts, up = XY_SHIFT - shift;
    int64_t delta = ((int64_t)1 << shift) >> 1;
    int64_t xmin = pts[0], xmax = pts[0], ymin = pts[1], ymax = pts[1];
    int64_t px = pts[2 * (npts - 1)] * ((int64_t)1 << up), py = pts[2 * (npts - 1) + 1] * ((int64_t)1 << up);
    for (int i = 0; i < npts; i++) {
        int64_t x = pts[2 * i], y = pts[2 * i + 1];
        if (y < ymin)
            ymin = y, imin = i;
        ymax = y > ymax ? y : ymax;
        xmax = x > xmax ? x : xmax;
        xmin = x < xmin ? x : xmin;
        x *= (int64_t)1 << up, y *= (int64_t)1 << up;
        if (shift == 0)
            line8(img, w, h, (int)(px >> XY_SHIFT), (int)(py >> XY_SHIFT), (int)(x >> XY_SHIFT), (int)(y >> XY_SHIFT),
                  color);
        else
            line2(img, w, h, px, py, x, y, color);
        px = x, py = y;
    }
    xmin = (xmin + delta) >> shift, xmax = (xmax + delta) >> shift;
    ymin = (ymin + delta) >> shift, ymax = (ymax + delta) >> shift;
    if (npts < 3 || xmax < 0 || ymax < 0 || xmin >= w || ymin >= h)
        return;
    if (ymax > h - 1)
        ymax = h - 1;
    struct {
        int idx, di, ye;
        int64_t x, dx;
    } edge[2];
    int y = (int)ymin;
    for (int k = 0; k < 2; k++)
        edge[k].idx = imin, edge[k].ye = y, edge[k].x = -XY_ONE, edge[k].dx = 0;
    edge[0].di = 1;
    edge[1].di = npts - 1;
    int64_t half = XY_ONE >> 1;
    do {
        for (int k = 0; k < 2; k++) {
            if (y < edge[k].ye)
                continue;
            int idx0 = edge[k].idx, di = edge[k].di, idx = idx0 + di;
            if (idx >= npts)
                idx -= npts;
            for (; edges-- > 0;) {
                int ty = (int)((pts[2 * idx + 1] + delta) >> shift);
                if (ty > y) {
                    int64_t xs = pts[2 * idx0] * ((int64_t)1 << up), xe = pts[2 * idx] * ((int64_t)1 << up);
                    edge[k].ye = ty;
                    edge[k].dx = ((xe - xs) * 2 + (ty - y)) / (2 * (int64_t)(ty - y));
                    edge[k].x = xs;
                    edge[k].idx = idx;
                    break;
                }
                idx0 = idx;
                idx += di;
                if (idx >= npts)
                    idx -= npts;
            }
        }
        if (edges < 0)
            break;
        if (y >= 0) {
            int left = edge[0].x > edge[1].x ? 1 : 0, right = 1 - left;
            int x1 = (int)((edge[left].x + half) >> XY_SHIFT), x2 = (int)((edge[right].x + half) >> XY_SHIFT);
            if (x2 >= 0 && x1 < w)
                hline(img, w, y, x1 < 0 ? 0 : x1, x2 >= w ? w - 1 : x2, color);
        }
        edge[0].x += edge[0].dx;
        edge[1].x += edge[1].dx;
    } while (++y <= (int)ymax);
}

void sd_cv_circle_filled(uint8_t *img, int w, int h, int cx, int cy, int radius, const uint8_t color[3])
{
    int err = 0, dx = radius, dy = 0, plus = 1, minus = (radius << 1) - 1;
    while (dx >= dy) {
        /* the rows cy -+ dy span cx -+ dx, the rows cy -+ dx span cx -+ dy, clipped */
        const int rows[4] = {cy - dy, cy + dy, cy - dx, cy + dx};
        const int spans[4][2] = {{cx - dx, cx + dx}, {cx - dx, cx + dx}, {cx - dy, cx + dy}, {cx - dy, cx + dy}};
        if (cx - dx < w && cx + dx >= 0 && cy - dx < h && cy + dx >= 0)
            for (int r = 0; r < 4; r++) {
                if ((unsigned)rows[r] >= (unsigned)h || spans[r][0] >= w || spans[r][1] < 0)
                    continue;
                hline(img, w, rows[r], spans[r][0] < 0 ? 0 : spans[r][0], spans[r][1] >= w ? w - 1 : spans[r][1],
                      color);
            }
        dy++;
        err += plus;
        plus += 2;
        int mask = (err <= 0) - 1;
        err -= minus & mask;
        dx += mask;
        minus -= mask & 2;
    }
}

static const int limbs[17][2] = {{2, 3},  {2, 6},   {3, 4},   {4, 5},   {6, 7},   {7, 8},  {2, 9},  {9, 10}, {10, 11},
                                 {2, 12}, {12, 13}, {13, 14}, {2, 1},   {1, 15},  {15, 17}, {1, 16}, {16, 18}};
static const uint8_t colors[18][3] = {{255, 0, 0},   {255, 85, 0},  {255, 170, 0}, {255, 255, 0}, {170, 255, 0},
                                      {85, 255, 0},  {0, 255, 0},   {0, 255, 85},  {0, 255, 170}, {0, 255, 255},
                                      {0, 170, 255}, {0, 85, 255},  {0, 0, 255},   {85, 0, 255},  {170, 0, 255},
                                      {255, 0, 255}, {255, 0, 170}, {255, 0, 85}};

void sd_pose_draw_body(uint8_t *canvas, int w, int h, const sd_pose_point points[SD_POSE_BODY_POINTS],
                       bool xinsr_scaling)
{
    int side = w > h ? w : h;
    int scale = !xinsr_scaling || side < 500 ? 1 : (2 + side / 1000 < 7 ? 2 + side / 1000 : 7);
    for (int k = 0; k < 17; k++) {
        const sd_pose_point *a = &points[limbs[k][0] - 1], *b = &points[limbs[k][1] - 1];
        if (!a->present || !b->present)
            continue;
        double y0 = a->x * (double)w, y1 = b->x * (double)w, x0 = a->y * (double)h, x1 = b->y * (double)h;
        double mx = (x0 + x1) / 2.0, my = (y0 + y1) / 2.0;
        double length = sqrt((x0 - x1) * (x0 - x1) + (y0 - y1) * (y0 - y1));
        double angle = atan2(x0 - x1, y0 - y1) * (180.0 / M_PI);
        int poly[2 * 400];
        int64_t poly64[2 * 400];
        size_t n = sd_cv_ellipse2poly((int)my, (int)mx, (int)(length / 2), 4 * scale, (int)angle, 0, 360, 1, poly, 400);
        n = n < 400 ? n : 400;
        for (size_t i = 0; i < 2 * n; i++)
            poly64[i] = poly[i];
        uint8_t c[3];
        for (int i = 0; i < 3; i++)
            c[i] = (uint8_t)(int)((double)colors[k][i] * 0.6);
        sd_cv_fill_convex_poly(canvas, w, h, poly64, n, 0, c);
    }
    for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
        if (points[k].present)
            sd_cv_circle_filled(canvas, w, h, (int)(points[k].x * w), (int)(points[k].y * h), 4, colors[k]);
}

/* cv::line(img, p0, p1, color, thickness) with line type 8 and thickness > 1, as OpenCV 4.14
 * draws it: the segment clipped to the image grown by the thickness on each side (cv::clipLine on
 * that rectangle), then ThickLine: the quadrilateral around it in XY_SHIFT fixed point and a
 * filled circle at both ends. */
static void thick_line(uint8_t *img, int w, int h, int x0, int y0, int x1, int y1, int thickness,
                       const uint8_t color[3])
{
    int64_t a = x0 + thickness, b = y0 + thickness, c = x1 + thickness, d = y1 + thickness;
    if (!clip_line(w + 2 * (int64_t)thickness, h + 2 * (int64_t)thickness, &a, &b, &c, &d))
        return;
    x0 = (int)a - thickness, y0 = (int)b - thickness, x1 = (int)c - thickness, y1 = (int)d - thickness;
    int64_t p0x = (int64_t)x0 << XY_SHIFT, p0y = (int64_t)y0 << XY_SHIFT;
    int64_t p1x = (int64_t)x1 << XY_SHIFT, p1y = (int64_t)y1 << XY_SHIFT;
    double dx = (double)(p0x - p1x) / (double)XY_ONE, dy = (double)(p1y - p0y) / (double)XY_ONE;
    double r = dx * dx + dy * dy;
    int64_t half_t = (int64_t)thickness << (XY_SHIFT - 1);
    if (fabs(r) > DBL_EPSILON) {
        r = ((double)half_t + (double)(thickness & 1) * (double)XY_ONE * 0.5) / sqrt(r);
        int64_t ox = (int64_t)lrint(dy * r), oy = (int64_t)lrint(dx * r);
        const int64_t quad[8] = {p0x + ox, p0y + oy, p0x - ox, p0y - oy, p1x - ox, p1y - oy, p1x + ox, p1y + oy};
        sd_cv_fill_convex_poly(img, w, h, quad, 4, XY_SHIFT, color);
    }
    int radius = (int)((half_t + (XY_ONE >> 1)) >> XY_SHIFT);
    sd_cv_circle_filled(img, w, h, x0, y0, radius, color);
    sd_cv_circle_filled(img, w, h, x1, y1, radius, color);
}

/* matplotlib.colors.hsv_to_rgb([hue, 1, 1]) * 255 as cv2 takes it (each value rounded). */
static void hue_color(double hue, uint8_t out[3])
{
    double h6 = hue * 6.0, f = h6 - (double)(int)h6, q = 1.0 - f, t = 1.0 - (1.0 - f);
    const double rgb[6][3] = {{1, t, 0}, {q, 1, 0}, {0, 1, t}, {0, q, 1}, {t, 0, 1}, {1, 0, q}};
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)lrint(rgb[(int)h6 % 6][c] * 255.0);
}

void sd_pose_draw_hand(uint8_t *canvas, int w, int h, const float points[SD_POSE_HAND_POINTS][2])
{
    static const int edges[20][2] = {{0, 1},  {1, 2},   {2, 3},   {3, 4},   {0, 5},   {5, 6},   {6, 7},
                                     {7, 8},  {0, 9},   {9, 10},  {10, 11}, {11, 12}, {0, 13}, {13, 14},
                                     {14, 15}, {15, 16}, {0, 17}, {17, 18}, {18, 19}, {19, 20}};
    static const uint8_t blue[3] = {0, 0, 255};
    int px[SD_POSE_HAND_POINTS], py[SD_POSE_HAND_POINTS];
    for (int k = 0; k < SD_POSE_HAND_POINTS; k++) /* numpy float32 times the int size stays float32 */
        px[k] = (int)(points[k][0] * (float)w), py[k] = (int)(points[k][1] * (float)h);
    for (int e = 0; e < 20; e++) {
        int a = edges[e][0], b = edges[e][1];
        if (px[a] > 0 && py[a] > 0 && px[b] > 0 && py[b] > 0) { /* the reference's "> 0.01" on integers */
            uint8_t c[3];
            hue_color((double)e / 20.0, c);
            thick_line(canvas, w, h, px[a], py[a], px[b], py[b], 2, c);
        }
    }
    for (int k = 0; k < SD_POSE_HAND_POINTS; k++)
        if (px[k] > 0 && py[k] > 0)
            sd_cv_circle_filled(canvas, w, h, px[k], py[k], 4, blue);
}

void sd_pose_draw_face(uint8_t *canvas, int w, int h, const float (*points)[2], size_t n)
{
    static const uint8_t white[3] = {255, 255, 255};
    for (size_t k = 0; k < n; k++) {
        int x = (int)(points[k][0] * (float)w), y = (int)(points[k][1] * (float)h);
        if (x > 0 && y > 0)
            sd_cv_circle_filled(canvas, w, h, x, y, 3, white);
    }
}
