/* OpenPose JSON text. See pose_json.h. */
#include "ml/annotators/pose_json.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_pose_json_number(double v, char out[32])
{
    if (isnan(v) || isinf(v)) {
        snprintf(out, 32, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char e[40];
    int p = 1;
    for (; p < 17; p++) { /* the fewest significant digits that read back */
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    snprintf(e, sizeof e, "%.*e", p - 1, v);
    char digits[20];
    int nd = 0;
    const char *s = e + (e[0] == '-');
    for (; *s && *s != 'e'; s++)
        if (*s != '.')
            digits[nd++] = *s;
    digits[nd] = 0;
    int exp = atoi(s + 1), o = 0;
    if (v < 0 || (v == 0 && signbit(v)))
        out[o++] = '-';
    if (exp < -4 || exp >= 16) { /* d[.ddd]e+XX */
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, (size_t)(nd - 1));
            o += nd - 1;
        }
        snprintf(out + o, (size_t)(32 - o), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        return;
    }
    if (exp < 0) { /* 0.000ddd */
        out[o++] = '0', out[o++] = '.';
        for (int i = 0; i < -exp - 1; i++)
            out[o++] = '0';
        memcpy(out + o, digits, (size_t)nd);
        o += nd;
    } else { /* ddd.ddd, at least one digit after the point */
        for (int i = 0; i <= exp; i++)
            out[o++] = i < nd ? digits[i] : '0';
        out[o++] = '.';
        if (nd > exp + 1) {
            memcpy(out + o, digits + exp + 1, (size_t)(nd - exp - 1));
            o += nd - exp - 1;
        } else {
            out[o++] = '0';
        }
    }
    out[o] = 0;
}

typedef struct text {
    char *s;
    size_t len, cap;
    bool failed;
} text;

static void add(text *t, const char *fmt, ...)
{
    va_list ap, copy;
    va_start(ap, fmt);
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (!t->failed && n >= 0 && t->len + (size_t)n + 1 > t->cap) {
        size_t cap = (t->len + (size_t)n + 1) * 2;
        char *s = realloc(t->s, cap);
        if (s)
            t->s = s, t->cap = cap;
        else
            t->failed = true;
    }
    if (!t->failed && n >= 0) {
        vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        t->len += (size_t)n;
    }
    va_end(ap);
}

/* A list of numbers at indentation depth (4 spaces a level), its items one level deeper. */
static void numbers(text *t, const double *v, size_t n, int depth)
{
    add(t, "[\n");
    for (size_t i = 0; i < n; i++) {
        char num[32];
        sd_pose_json_number(v[i], num);
        add(t, "%*s%s%s\n", 4 * (depth + 1), "", num, i + 1 < n ? "," : "");
    }
    add(t, "%*s]", 4 * depth, "");
}

/* compress_keypoints of n float32 points: x, y, 1.0 each; null when n is 0. */
static void points(text *t, const float (*pts)[2], size_t n, int depth)
{
    double v[SD_POSE_FACE_POINTS * 3]; /* the longest list */
    for (size_t k = 0; k < n; k++)
        v[3 * k] = pts[k][0], v[3 * k + 1] = pts[k][1], v[3 * k + 2] = 1.0;
    if (n)
        numbers(t, v, n * 3, depth);
    else
        add(t, "null");
}

static void person(text *t, const sd_pose_entry *p, int depth)
{
    double v[SD_POSE_BODY_POINTS * 3];
    int in = 4 * (depth + 1);
    add(t, "{\n%*s\"pose_keypoints_2d\": ", in, "");
    for (int k = 0; k < SD_POSE_BODY_POINTS; k++) {
        bool on = p->body[k].present;
        v[3 * k] = on ? p->body[k].x : 0.0, v[3 * k + 1] = on ? p->body[k].y : 0.0, v[3 * k + 2] = on ? 1.0 : 0.0;
    }
    numbers(t, v, SD_POSE_BODY_POINTS * 3, depth + 1);
    add(t, ",\n%*s\"face_keypoints_2d\": ", in, "");
    points(t, (const float(*)[2])p->face, p->n_face, depth + 1);
    static const char *const names[2] = {"hand_left_keypoints_2d", "hand_right_keypoints_2d"};
    for (int side = 0; side < 2; side++) {
        add(t, ",\n%*s\"%s\": ", in, "", names[side]);
        points(t, (const float(*)[2])p->hand[side], p->has_hand[side] ? SD_POSE_HAND_POINTS : 0, depth + 1);
    }
    add(t, "\n%*s}", 4 * depth, "");
}

char *sd_pose_json(const sd_pose_frame *frames, size_t n)
{
    text t = {0};
    add(&t, n ? "[\n" : "[]");
    for (size_t f = 0; f < n; f++) {
        add(&t, "    {\n        \"people\": %s", frames[f].n ? "[\n" : "[]");
        for (size_t i = 0; i < frames[f].n; i++) {
            add(&t, "            ");
            person(&t, &frames[f].people[i], 3);
            add(&t, "%s\n", i + 1 < frames[f].n ? "," : "");
        }
        add(&t, "%s,\n        \"canvas_height\": %lld,\n        \"canvas_width\": %lld\n    }%s\n",
            frames[f].n ? "        ]" : "", (long long)frames[f].canvas_h, (long long)frames[f].canvas_w,
            f + 1 < n ? "," : "");
    }
    if (n)
        add(&t, "]");
    if (t.failed) {
        free(t.s);
        return NULL;
    }
    return t.s;
}
