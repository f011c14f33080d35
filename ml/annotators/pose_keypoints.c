/* body.py's peak finding, limb association and people assembly. See pose_keypoints.h. */
#include "ml/annotators/pose_keypoints.h"
#include "core/checked.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PARTS 18
#define LIMBS 19
#define MID_NUM 10
#define MAX_PEAKS 4096
#define THRE1 0.1
#define THRE2 0.05

/* ---- scipy.ndimage.gaussian_filter ---- */

double sd_numpy_sum(const double *a, size_t n)
{
    if (n > 128) { /* numpy's pairwise split: halves, the first a multiple of 8 */
        size_t n2 = n / 2;
        n2 -= n2 % 8;
        return sd_numpy_sum(a, n2) + sd_numpy_sum(a + n2, n - n2);
    }
    if (n < 8) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += a[i];
        return s;
    }
    double r[8];
    memcpy(r, a, sizeof r);
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
        for (int k = 0; k < 8; k++)
            r[k] += a[i + k];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        s += a[i];
    return s;
}

/* mode "reflect" (d c b a | a b c d | d c b a) for any index. */
static int reflect(int i, int n)
{
    int period = 2 * n, m = i % period;
    if (m < 0)
        m += period;
    return m < n ? m : period - 1 - m;
}

/* correlate1d with a symmetric kernel fw[-r..r] along lines of n samples, stride apart. */
static void correlate_lines(const double *in, double *out, int lines, int n, int line_step, int stride,
                            const double *fw, int r, double *buf)
{
    for (int l = 0; l < lines; l++) {
        const double *src = in + (size_t)l * (size_t)line_step;
        for (int i = -r; i < n + r; i++)
            buf[i + r] = src[(size_t)reflect(i, n) * (size_t)stride];
        double *dst = out + (size_t)l * (size_t)line_step;
        for (int i = 0; i < n; i++) {
            const double *c = buf + i + r;
            double t = c[0] * fw[0];
            for (int j = -r; j < 0; j++)
                t += (c[j] + c[-j]) * fw[j];
            dst[(size_t)i * (size_t)stride] = t;
        }
    }
}

sd_status sd_pose_gaussian_filter(sd_context *ctx, const double *plane, int h, int w, double sigma, double *out)
{
    int r = (int)(4.0 * sigma + 0.5);
    double *weights = malloc(sizeof *weights * (size_t)(2 * r + 1));
    double *tmp = malloc(sizeof *tmp * (size_t)h * (size_t)w);
    double *buf = malloc(sizeof *buf * (size_t)((h > w ? h : w) + 2 * r));
    if (!weights || !tmp || !buf) {
        free(weights), free(tmp), free(buf);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a pose heatmap");
    }
    double k = -0.5 / (sigma * sigma);
    for (int i = -r; i <= r; i++)
        weights[i + r] = exp(k * (double)(i * i));
    double sum = sd_numpy_sum(weights, (size_t)(2 * r + 1));
    for (int i = 0; i <= 2 * r; i++)
        weights[i] /= sum;
    correlate_lines(plane, tmp, w, h, 1, w, weights + r, r, buf); /* axis 0: columns */
    correlate_lines(tmp, out, h, w, w, 1, weights + r, r, buf);   /* axis 1: rows */
    free(weights), free(tmp), free(buf);
    return SD_OK;
}

/* ---- peaks ---- */

typedef struct peak {
    int x, y;
    double score;
    int id;
} peak;

typedef struct peaks {
    peak *p;
    int n;
} peaks;

/* Part `part`'s peaks (row-major order, as np.nonzero), ids from *next on. */
static sd_status find_peaks(sd_context *ctx, const double *heat, int h, int w, int part, double *plane, double *blur,
                            peaks *out, int *next)
{
    for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
        plane[i] = heat[i * 19 + (size_t)part];
    sd_status st = sd_pose_gaussian_filter(ctx, plane, h, w, 3.0, blur);
    for (int y = 0; !st && y < h; y++)
        for (int x = 0; x < w; x++) {
            double v = blur[(size_t)y * (size_t)w + (size_t)x];
            /* neighbours outside are zeros */
            double up = y > 0 ? blur[(size_t)(y - 1) * (size_t)w + (size_t)x] : 0.0;
            double down = y + 1 < h ? blur[(size_t)(y + 1) * (size_t)w + (size_t)x] : 0.0;
            double left = x > 0 ? blur[(size_t)y * (size_t)w + (size_t)x - 1] : 0.0;
            double right = x + 1 < w ? blur[(size_t)y * (size_t)w + (size_t)x + 1] : 0.0;
            if (!(v >= up && v >= down && v >= left && v >= right && v > THRE1))
                continue;
            if (out->n == MAX_PEAKS)
                return sd_set_error(ctx, SD_ERR_LIMIT, "pose: more than %d peaks of keypoint %d", MAX_PEAKS, part);
            peak *grown = realloc(out->p, sizeof *grown * (size_t)(out->n + 1));
            if (!grown)
                return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose peaks");
            out->p = grown;
            out->p[out->n++] = (peak){x, y, plane[(size_t)y * (size_t)w + (size_t)x], (*next)++};
        }
    return st;
}

/* ---- limbs ---- */

static const int limb_seq[LIMBS][2] = {{2, 3},   {2, 6},   {3, 4},   {4, 5},   {6, 7},   {7, 8},  {2, 9},
                                       {9, 10},  {10, 11}, {2, 12},  {12, 13}, {13, 14}, {2, 1},  {1, 15},
                                       {15, 17}, {1, 16},  {16, 18}, {3, 17},  {6, 18}};
static const int map_idx[LIMBS][2] = {{31, 32}, {39, 40}, {33, 34}, {35, 36}, {41, 42}, {43, 44}, {19, 20},
                                      {21, 22}, {23, 24}, {25, 26}, {27, 28}, {29, 30}, {47, 48}, {49, 50},
                                      {53, 54}, {51, 52}, {55, 56}, {37, 38}, {45, 46}};

typedef struct conn {
    int a, b; /* peak ids */
    double score;
    int i, j; /* indices in candA, candB */
} conn;

typedef struct cand {
    int i, j;
    double s;
} cand;

/* np.linspace(a, b, MID_NUM)[k] */
static double linspace(double a, double b, int k)
{
    double delta = b - a, step = delta / (MID_NUM - 1);
    if (k == MID_NUM - 1)
        return b;
    return step == 0.0 ? (double)k / (MID_NUM - 1) * delta + a : (double)k * step + a;
}

/* The connections of limb k (*out malloc'd, *n), body.py's criteria and greedy choice. */
static sd_status connect_limb(sd_context *ctx, const double *paf, int h, int w, int k, const peaks *pa,
                              const peaks *pb, conn **out, int *n)
{
    *out = NULL, *n = 0;
    int na = pa->n, nb = pb->n;
    size_t count;
    if (!sd_mul_size((size_t)na, (size_t)nb, &count))
        return sd_set_error(ctx, SD_ERR_LIMIT, "pose: too many limb candidates");
    cand *c = malloc(sizeof *c * (count ? count : 1));
    conn *res = malloc(sizeof *res * (size_t)((na < nb ? na : nb) + 1));
    if (!c || !res) {
        free(c), free(res);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose limbs");
    }
    int nc = 0, ch0 = map_idx[k][0] - 19, ch1 = map_idx[k][1] - 19;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) {
            const peak *A = &pa->p[i], *B = &pb->p[j];
            double vx = B->x - A->x, vy = B->y - A->y;
            double norm = sqrt(vx * vx + vy * vy);
            norm = norm > 0.001 ? norm : 0.001;
            vx /= norm, vy /= norm;
            double pts[MID_NUM], sum = 0.0;
            int above = 0;
            for (int m = 0; m < MID_NUM; m++) {
                int sx = (int)nearbyint(linspace(A->x, B->x, m)), sy = (int)nearbyint(linspace(A->y, B->y, m));
                const double *v = paf + ((size_t)sy * (size_t)w + (size_t)sx) * 38;
                pts[m] = v[ch0] * vx + v[ch1] * vy;
                above += pts[m] > THRE2;
            }
            for (int m = 0; m < MID_NUM; m++)
                sum += pts[m];
            double prior = 0.5 * h / norm - 1;
            double s = sum / MID_NUM + (prior < 0 ? prior : 0);
            if (above > 0.8 * MID_NUM && s > 0)
                c[nc++] = (cand){i, j, s};
        }
    /* sorted(..., key=score, reverse=True): stable, equal scores keep their order */
    for (int a = 1; a < nc; a++) {
        cand t = c[a];
        int b = a;
        for (; b > 0 && c[b - 1].s < t.s; b--)
            c[b] = c[b - 1];
        c[b] = t;
    }
    int limit = na < nb ? na : nb;
    for (int a = 0; a < nc && *n < limit; a++) {
        bool used = false;
        for (int r = 0; r < *n && !used; r++)
            used = res[r].i == c[a].i || res[r].j == c[a].j;
        if (!used)
            res[(*n)++] = (conn){pa->p[c[a].i].id, pb->p[c[a].j].id, c[a].s, c[a].i, c[a].j};
    }
    free(c);
    *out = res;
    return SD_OK;
}

/* ---- people ---- */

typedef struct row {
    double v[20]; /* 0..17 peak ids or -1, 18 score, 19 parts */
} row;

typedef struct rows {
    row *r;
    int n;
} rows;

static bool push_row(rows *s, const row *r)
{
    row *grown = realloc(s->r, sizeof *grown * (size_t)(s->n + 1));
    if (!grown)
        return false;
    s->r = grown;
    s->r[s->n++] = *r;
    return true;
}

static void delete_row(rows *s, int j)
{
    memmove(&s->r[j], &s->r[j + 1], sizeof *s->r * (size_t)(s->n - j - 1));
    s->n--;
}

/* body.py's subset loop for limb k's connections. */
static bool assemble(rows *s, int k, const conn *cs, int nc, const double *cand_score)
{
    int ia = limb_seq[k][0] - 1, ib = limb_seq[k][1] - 1;
    for (int i = 0; i < nc; i++) {
        double a = cs[i].a, b = cs[i].b;
        int found = 0, idx[2] = {-1, -1};
        for (int j = 0; j < s->n; j++)
            if (s->r[j].v[ia] == a || s->r[j].v[ib] == b) {
                if (found < 2) /* (body.py would fail on a third match) */
                    idx[found] = j;
                found++;
            }
        if (found == 1) {
            row *r = &s->r[idx[0]];
            if (r->v[ib] != b) {
                r->v[ib] = b;
                r->v[19] += 1;
                r->v[18] += cand_score[cs[i].b] + cs[i].score;
            }
        } else if (found == 2) {
            row *r1 = &s->r[idx[0]], *r2 = &s->r[idx[1]];
            bool shared = false;
            for (int p = 0; p < 18 && !shared; p++)
                shared = r1->v[p] >= 0 && r2->v[p] >= 0;
            if (!shared) {
                for (int p = 0; p < 18; p++)
                    r1->v[p] += r2->v[p] + 1;
                r1->v[18] += r2->v[18];
                r1->v[19] += r2->v[19];
                r1->v[18] += cs[i].score;
                delete_row(s, idx[1]);
            } else {
                r1->v[ib] = b;
                r1->v[19] += 1;
                r1->v[18] += cand_score[cs[i].b] + cs[i].score;
            }
        } else if (found == 0 && k < 17) {
            row r;
            for (int p = 0; p < 20; p++)
                r.v[p] = -1;
            r.v[ia] = a;
            r.v[ib] = b;
            r.v[19] = 2;
            r.v[18] = cand_score[cs[i].a] + cand_score[cs[i].b] + cs[i].score;
            if (!push_row(s, &r))
                return false;
        }
    }
    return true;
}

sd_status sd_pose_find_people(sd_context *ctx, const double *heat, const double *paf, int h, int w,
                              sd_pose_person **out, size_t *n)
{
    *out = NULL, *n = 0;
    peaks parts[PARTS] = {{0}};
    conn *conns[LIMBS] = {0};
    int nconn[LIMBS] = {0}, next = 0;
    bool special[LIMBS] = {0};
    rows s = {0};
    double *plane = malloc(sizeof *plane * (size_t)h * (size_t)w), *blur = malloc(sizeof *blur * (size_t)h * (size_t)w);
    double *cand_score = NULL, *cand_x = NULL, *cand_y = NULL;
    sd_status st = plane && blur ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose maps");
    for (int p = 0; !st && p < PARTS; p++)
        st = find_peaks(ctx, heat, h, w, p, plane, blur, &parts[p], &next);
    for (int k = 0; !st && k < LIMBS; k++) {
        const peaks *pa = &parts[limb_seq[k][0] - 1], *pb = &parts[limb_seq[k][1] - 1];
        special[k] = pa->n == 0 || pb->n == 0;
        if (!special[k])
            st = connect_limb(ctx, paf, h, w, k, pa, pb, &conns[k], &nconn[k]);
    }
    if (!st) { /* the candidates by id: the peaks of all parts in order */
        cand_score = malloc(sizeof *cand_score * (size_t)(next + 1));
        cand_x = malloc(sizeof *cand_x * (size_t)(next + 1));
        cand_y = malloc(sizeof *cand_y * (size_t)(next + 1));
        if (!cand_score || !cand_x || !cand_y)
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose candidates");
        for (int p = 0; !st && p < PARTS; p++)
            for (int i = 0; i < parts[p].n; i++) {
                const peak *q = &parts[p].p[i];
                cand_score[q->id] = q->score, cand_x[q->id] = q->x, cand_y[q->id] = q->y;
            }
    }
    for (int k = 0; !st && k < LIMBS; k++)
        if (!special[k] && !assemble(&s, k, conns[k], nconn[k], cand_score))
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose people");
    for (int j = 0; !st && j < s.n;) /* few parts or a low mean score */
        if (s.r[j].v[19] < 4 || s.r[j].v[18] / s.r[j].v[19] < 0.4)
            delete_row(&s, j);
        else
            j++;
    if (!st && s.n > 0) {
        if (!(*out = calloc((size_t)s.n, sizeof **out)))
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for pose people");
        for (int j = 0; !st && j < s.n; j++) {
            sd_pose_person *pp = &(*out)[j];
            for (int p = 0; p < PARTS; p++) {
                int id = (int)s.r[j].v[p];
                if (id != -1)
                    pp->points[p] = (sd_pose_point){cand_x[id], cand_y[id], true};
            }
            pp->score = s.r[j].v[18];
            pp->parts = (int)s.r[j].v[19];
        }
        if (!st)
            *n = (size_t)s.n;
    }
    for (int p = 0; p < PARTS; p++)
        free(parts[p].p);
    for (int k = 0; k < LIMBS; k++)
        free(conns[k]);
    free(s.r), free(plane), free(blur), free(cand_score), free(cand_x), free(cand_y);
    return st;
}
