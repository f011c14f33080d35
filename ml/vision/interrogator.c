/* The CLIP interrogator's algorithm (see interrogator.h). */
#include "ml/vision/interrogator.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS 77

const char *const sd_label_table_names[SD_TABLE_NAMED] = {"artists", "flavors", "mediums", "movements", "trendings",
                                                          "negative"};
const char *const sd_interrogate_mode_names[] = {"best", "classic", "fast", "negative", NULL};

static const char *const sites[] = {"Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble",
                                    "flickr", "instagram", "pexels", "pinterest", "pixabay", "pixiv", "polycount",
                                    "reddit", "shutterstock", "tumblr", "unsplash", "zbrush central"};

void sd_label_table_clear(sd_label_table *t)
{
    for (int i = 0; i < t->n; i++)
        free(t->labels[i]);
    free(t->labels);
    free(t->embeds);
    memset(t, 0, sizeof *t);
}

static sd_status add_label(sd_context *ctx, sd_label_table *t, const char *a, size_t alen, const char *b)
{
    if (t->n % 256 == 0) {
        char **grown = realloc(t->labels, ((size_t)t->n + 256) * sizeof *grown);
        if (!grown)
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        t->labels = grown;
    }
    size_t blen = strlen(b);
    char *s = malloc(alen + blen + 1);
    if (!s)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    memcpy(s, a, alen);
    memcpy(s + alen, b, blen + 1);
    t->labels[t->n++] = s;
    return SD_OK;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

sd_status sd_label_table_add_lines(sd_context *ctx, sd_label_table *t, const char *text, size_t len,
                                   const char *prefix)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && text[end] != '\n')
            end++;
        size_t a = i, b = end;
        while (a < b && is_space(text[a]))
            a++;
        while (b > a && is_space(text[b - 1]))
            b--;
        if (b > a) {
            sd_status s = add_label(ctx, t, prefix, plen, "");
            char *grown = s ? NULL : realloc(t->labels[t->n - 1], plen + (b - a) + 1);
            if (!s && !grown)
                s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            if (s)
                return s;
            memcpy(grown + plen, text + a, b - a);
            grown[plen + (b - a)] = 0;
            t->labels[t->n - 1] = grown;
        }
        i = end + 1;
    }
    return SD_OK;
}

sd_status sd_label_table_trendings(sd_context *ctx, sd_label_table *t)
{
    static const char *const forms[4][2] = {{"", ""}, {"trending on ", ""}, {"featured on ", ""}, {"", " contest winner"}};
    sd_status s = SD_OK;
    for (int f = 0; f < 4 && !s; f++)
        for (size_t i = 0; i < sizeof sites / sizeof sites[0] && !s; i++) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s%s%s", forms[f][0], sites[i], forms[f][1]);
            s = add_label(ctx, t, buf, strlen(buf), "");
        }
    return s;
}

/* ---- ranking ---- */

/* Labels and their features, possibly drawn from several tables. */
typedef struct view {
    const char **labels;
    const float **embeds;
    int n;
} view;

typedef struct scored {
    float score;
    int idx;
} scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static float dot(const float *a, const float *b, int dim)
{
    float s = 0;
    for (int i = 0; i < dim; i++)
        s += a[i] * b[i];
    return s;
}

/* The best `top` of the labels idx[0..n) of v by (reversed) similarity into out; returns how many. */
static int rank_some(const view *v, const int *idx, int n, int dim, const float *image, int top, bool reverse,
                     scored *tmp, int *out)
{
    for (int i = 0; i < n; i++) {
        float s = dot(v->embeds[idx[i]], image, dim);
        tmp[i] = (scored){reverse ? -s : s, idx[i]};
    }
    qsort(tmp, (size_t)n, sizeof *tmp, by_score);
    int k = top < n ? top : n;
    for (int i = 0; i < k; i++)
        out[i] = tmp[i].idx;
    return k;
}

/* LabelTable.rank: the `top` best labels of v (indices into v) into out; returns how many, or
 * -1 when memory runs out. */
static int rank(const view *v, int dim, const float *image, int top, bool reverse, int chunk, int *out)
{
    int n = v->n;
    int *all = malloc(((size_t)n + 1) * sizeof *all), *kept = malloc(((size_t)n + 1) * sizeof *kept);
    scored *tmp = malloc(((size_t)n + 1) * sizeof *tmp);
    int got = -1;
    if (all && kept && tmp) {
        for (int i = 0; i < n; i++)
            all[i] = i;
        if (n <= chunk) {
            got = rank_some(v, all, n, dim, image, top, reverse, tmp, out);
        } else {
            int chunks = (n + chunk - 1) / chunk, keep = chunk / chunks, m = 0;
            for (int c = 0; c < chunks; c++) {
                int start = c * chunk, len = n - start < chunk ? n - start : chunk;
                m += rank_some(v, all + start, len, dim, image, keep, reverse, tmp, kept + m);
            }
            got = rank_some(v, kept, m, dim, image, top, false, tmp, out); /* as published: not reversed */
        }
    }
    free(all);
    free(kept);
    free(tmp);
    return got;
}

static sd_status view_of(sd_context *ctx, const sd_label_table *const *tables, int n_tables, int dim, view *v)
{
    int n = 0;
    for (int t = 0; t < n_tables; t++)
        n += tables[t]->n;
    v->labels = malloc(((size_t)n + 1) * sizeof *v->labels);
    v->embeds = malloc(((size_t)n + 1) * sizeof *v->embeds);
    v->n = 0;
    if (!v->labels || !v->embeds)
        return ctx ? sd_set_error(ctx, SD_ERR_NOMEM, "out of memory") : SD_ERR_NOMEM;
    for (int t = 0; t < n_tables; t++)
        for (int i = 0; i < tables[t]->n; i++) {
            v->labels[v->n] = tables[t]->labels[i];
            v->embeds[v->n++] = tables[t]->embeds + (size_t)i * (size_t)dim;
        }
    return SD_OK;
}

static void view_free(view *v)
{
    free(v->labels);
    free(v->embeds);
}

int sd_label_table_top(const sd_label_table *t, int dim, const float *image, int top, int chunk_size, int *idx,
                       float *score)
{
    view v;
    const sd_label_table *one[1] = {t};
    if (view_of(NULL, one, 1, dim, &v)) {
        view_free(&v);
        return 0;
    }
    int k = rank(&v, dim, image, top, false, chunk_size, idx);
    for (int i = 0; i < k; i++)
        score[i] = dot(v.embeds[idx[i]], image, dim);
    view_free(&v);
    return k < 0 ? 0 : k;
}

/* ---- prompts ---- */

typedef struct job {
    sd_context *ctx;
    const sd_text_encoder *enc;
    const float *image;
    const sd_interrogate_params *p;
    const char *caption;
} job;

static sd_status similarities(const job *j, const char *const *texts, int n, float *out)
{
    float *f = malloc(((size_t)n * (size_t)j->enc->dim + 1) * sizeof *f);
    if (!f)
        return sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status s = j->enc->encode(j->enc->user, texts, n, f);
    for (int i = 0; !s && i < n; i++)
        out[i] = dot(f + (size_t)i * (size_t)j->enc->dim, j->image, j->enc->dim);
    free(f);
    return s;
}

static sd_status at_max_len(const job *j, const char *text, bool *full)
{
    int n = 0;
    sd_status s = j->enc->count(j->enc->user, text, &n);
    *full = n + 2 >= MAX_TOKENS;
    return s;
}

/* A growable string. */
typedef struct str {
    char *s;
    size_t len, cap;
} str;

static sd_status str_add(sd_context *ctx, str *b, const char *text)
{
    size_t n = strlen(text);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *grown = realloc(b->s, cap);
        if (!grown)
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, text, n + 1);
    b->len += n;
    return SD_OK;
}

/* _truncate_to_fit: the ", "-separated parts of text kept while the text fits 77 tokens. */
static sd_status truncate_to_fit(const job *j, const char *text, char **out)
{
    str b = {0}, probe = {0};
    const char *part = text, *sep = strstr(part, ", ");
    size_t first = sep ? (size_t)(sep - part) : strlen(part);
    sd_status s = str_add(j->ctx, &b, "");
    if (!s) {
        char *head = strndup(part, first);
        s = head ? str_add(j->ctx, &b, head) : sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
        free(head);
    }
    while (!s && sep) {
        part = sep + 2;
        sep = strstr(part, ", ");
        char *p = strndup(part, sep ? (size_t)(sep - part) : strlen(part));
        bool full = false;
        probe.len = 0;
        if (!p)
            s = sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
        if (!s) s = str_add(j->ctx, &probe, b.s);
        if (!s) s = str_add(j->ctx, &probe, p);
        if (!s) s = at_max_len(j, probe.s, &full);
        if (!s && !full && !(s = str_add(j->ctx, &b, ", ")))
            s = str_add(j->ctx, &b, p);
        free(p);
        if (full)
            break;
    }
    free(probe.s);
    if (s)
        free(b.s);
    else
        *out = b.s;
    return s;
}

/* "a, b, c" of labels[idx[0..n)] into b. */
static sd_status join(sd_context *ctx, str *b, const view *v, const int *idx, int n)
{
    sd_status s = SD_OK;
    for (int i = 0; i < n && !s; i++)
        if (!(s = i ? str_add(ctx, b, ", ") : SD_OK))
            s = str_add(ctx, b, v->labels[idx[i]]);
    return s;
}

static sd_status fast(const job *j, const view *merged, int max_flavors, char **out)
{
    int *idx = malloc(((size_t)max_flavors + 1) * sizeof *idx);
    str b = {0};
    sd_status s = idx ? str_add(j->ctx, &b, j->caption) : sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    int k = s ? 0 : rank(merged, j->enc->dim, j->image, max_flavors, false, j->p->chunk_size, idx);
    if (!s && k < 0)
        s = sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s && k > 0 && !(s = str_add(j->ctx, &b, ", ")))
        s = join(j->ctx, &b, merged, idx, k);
    if (!s)
        s = truncate_to_fit(j, b.s, out);
    free(idx);
    free(b.s);
    return s;
}

/* The best label of one table, or "" when it is empty. */
static sd_status top1(const job *j, const sd_label_table *t, const char **out)
{
    view v;
    const sd_label_table *one[1] = {t};
    int idx = 0;
    sd_status s = view_of(j->ctx, one, 1, j->enc->dim, &v);
    int k = s ? 0 : rank(&v, j->enc->dim, j->image, 1, false, j->p->chunk_size, &idx);
    *out = k > 0 ? t->labels[idx] : "";
    view_free(&v);
    return s;
}

static sd_status classic(const job *j, const sd_label_table *tables, int max_flavors, char **out)
{
    const char *medium, *artist, *trending, *movement;
    sd_status s = top1(j, &tables[SD_TABLE_MEDIUMS], &medium);
    if (!s) s = top1(j, &tables[SD_TABLE_ARTISTS], &artist);
    if (!s) s = top1(j, &tables[SD_TABLE_TRENDINGS], &trending);
    if (!s) s = top1(j, &tables[SD_TABLE_MOVEMENTS], &movement);
    view v = {0};
    const sd_label_table *one[1] = {&tables[SD_TABLE_FLAVORS]};
    int *idx = malloc(((size_t)max_flavors + 1) * sizeof *idx), k = 0;
    if (!s && !idx)
        s = sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = view_of(j->ctx, one, 1, j->enc->dim, &v);
    if (!s && (k = rank(&v, j->enc->dim, j->image, max_flavors, false, j->p->chunk_size, idx)) < 0)
        s = sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    str b = {0};
    bool starts = !s && *medium && strncmp(j->caption, medium, strlen(medium)) == 0;
    if (!s) s = str_add(j->ctx, &b, j->caption);
    if (!s) s = str_add(j->ctx, &b, starts ? " " : ", ");
    if (!s && !starts && !(s = str_add(j->ctx, &b, medium)))
        s = str_add(j->ctx, &b, " ");
    const char *rest[] = {artist, ", ", trending, ", ", movement, ", "};
    for (size_t i = 0; !s && i < sizeof rest / sizeof rest[0]; i++)
        s = str_add(j->ctx, &b, rest[i]);
    if (!s) s = join(j->ctx, &b, &v, idx, k);
    if (!s) s = truncate_to_fit(j, b.s, out);
    view_free(&v);
    free(idx);
    free(b.s);
    return s;
}

/* The index of the largest sign * v[i] (the first on ties). */
static int argmax(const float *v, int n, float sign)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (sign * v[i] > sign * v[best])
            best = i;
    return best;
}

static sd_status set_text(sd_context *ctx, str *b, const char *text)
{
    b->len = 0;
    return str_add(ctx, b, text);
}

/* Interrogator.chain over phrases[0..n) (later duplicates ignored, as a set). start: the first
 * prompt with its similarity start_sim, or NULL to start from the best phrase (whose plain
 * similarity then stands as the best, as published). */
static sd_status chain(const job *j, const char **phrases, int n, const char *start, float start_sim, int min_count,
                       int max_count, bool reverse, char **out)
{
    sd_context *ctx = j->ctx;
    float sign = reverse ? -1.0f : 1.0f;
    bool *gone = calloc((size_t)n + 1, sizeof *gone);
    int *which = malloc(((size_t)n + 1) * sizeof *which);
    const char **texts = malloc(((size_t)n + 1) * sizeof *texts);
    char **owned = calloc((size_t)n + 1, sizeof *owned);
    float *sims = malloc(((size_t)n + 1) * sizeof *sims);
    str best = {0}, curr = {0};
    sd_status s = gone && which && texts && owned && sims ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < n; i++)
        for (int k = 0; k < i && !gone[i]; k++)
            gone[i] = strcmp(phrases[i], phrases[k]) == 0;
    float best_sim = start_sim;
    if (!s && !start) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!gone[i])
                which[m] = i, texts[m++] = phrases[i];
        if (m == 0)
            s = sd_set_error(ctx, SD_ERR_INVALID, "interrogator: no labels to chain");
        if (!s && !(s = similarities(j, texts, m, sims))) {
            int pick = argmax(sims, m, sign);
            start = phrases[which[pick]];
            best_sim = sims[pick];
            gone[which[pick]] = true;
        }
    }
    if (!s) s = set_text(ctx, &best, start);
    if (!s) s = set_text(ctx, &curr, start);
    float curr_sim = best_sim;
    for (int step = 0; !s && step < max_count; step++) {
        int m = 0;
        for (int i = 0; !s && i < n; i++) {
            if (gone[i])
                continue;
            size_t len = curr.len + 2 + strlen(phrases[i]) + 1;
            free(owned[m]);
            if (!(owned[m] = malloc(len))) {
                s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                break;
            }
            snprintf(owned[m], len, "%s, %s", curr.s, phrases[i]);
            which[m] = i;
            texts[m] = owned[m];
            m++;
        }
        if (s || m == 0 || (s = similarities(j, texts, m, sims)))
            break;
        int pick = argmax(sims, m, sign);
        float sim = sign * sims[pick];
        if (sim > best_sim) {
            best_sim = sim;
            s = set_text(ctx, &best, texts[pick]);
        }
        if (s || !(sim > curr_sim || step < min_count))
            break;
        curr_sim = sim;
        bool full = false;
        if ((s = set_text(ctx, &curr, texts[pick])) || (s = at_max_len(j, curr.s, &full)) || full)
            break;
        gone[which[pick]] = true;
    }
    for (int i = 0; owned && i < n; i++)
        free(owned[i]);
    free(gone);
    free(which);
    free(texts);
    free(owned);
    free(sims);
    free(curr.s);
    if (s)
        free(best.s);
    else
        *out = best.s;
    return s;
}

/* The labels of the `top` best of v (or worst, reverse) appended to list at *n. */
static sd_status ranked_labels(const job *j, const view *v, int top, bool reverse, const char **list, int *n)
{
    int *idx = malloc(((size_t)top + 1) * sizeof *idx);
    int k = idx ? rank(v, j->enc->dim, j->image, top, reverse, j->p->chunk_size, idx) : -1;
    for (int i = 0; i < k; i++)
        list[(*n)++] = v->labels[idx[i]];
    free(idx);
    return k < 0 ? sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
}

static sd_status negative(const job *j, const sd_label_table *tables, char **out)
{
    const sd_label_table *flavors[1] = {&tables[SD_TABLE_FLAVORS]};
    const sd_label_table *neg = &tables[SD_TABLE_NEGATIVE];
    view v = {0};
    int n = 0;
    const char **list = malloc(((size_t)j->p->intermediate_count + (size_t)neg->n + 1) * sizeof *list);
    sd_status s = list ? view_of(j->ctx, flavors, 1, j->enc->dim, &v) : sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s)
        s = ranked_labels(j, &v, j->p->intermediate_count, true, list, &n);
    for (int i = 0; !s && i < neg->n; i++)
        list[n++] = neg->labels[i];
    if (!s)
        s = chain(j, list, n, NULL, 0.0f, j->p->min_flavors, j->p->max_flavors, true, out);
    view_free(&v);
    free(list);
    return s;
}

static sd_status best(const job *j, const sd_label_table *tables, const view *merged, char **out)
{
    const char **list = malloc(((size_t)j->p->intermediate_count + 1) * sizeof *list);
    char *cand[4] = {NULL};
    float sims[4], caption_sim = 0;
    int n = 0;
    sd_status s = list ? ranked_labels(j, merged, j->p->intermediate_count, false, list, &n)
                       : sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = similarities(j, &j->caption, 1, &caption_sim);
    if (!s) s = chain(j, list, n, j->caption, caption_sim, j->p->min_flavors, j->p->max_flavors, false, &cand[3]);
    if (!s) s = fast(j, merged, j->p->max_flavors, &cand[2]);
    if (!s) s = classic(j, tables, j->p->max_flavors, &cand[1]);
    if (!s && !(cand[0] = strdup(j->caption)))
        s = sd_set_error(j->ctx, SD_ERR_NOMEM, "out of memory");
    if (!s) s = similarities(j, (const char *const *)cand, 4, sims);
    int pick = s ? 0 : argmax(sims, 4, 1.0f);
    for (int i = 0; i < 4; i++)
        if (s || i != pick)
            free(cand[i]);
    if (!s)
        *out = cand[pick];
    free(list);
    return s;
}

sd_status sd_interrogate(sd_context *ctx, const sd_text_encoder *enc, const sd_label_table *tables, int n_tables,
                         const float *image, const char *caption, sd_interrogate_mode mode,
                         const sd_interrogate_params *p, char **prompt)
{
    *prompt = NULL;
    if (n_tables < SD_TABLE_NAMED || p->chunk_size < 1 || p->intermediate_count < 1 || p->max_flavors < 1 ||
        p->min_flavors < 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "interrogator: %d tables (at least %d), chunk size %d, "
                            "intermediate count %d, flavors %d..%d", n_tables, SD_TABLE_NAMED, p->chunk_size,
                            p->intermediate_count, p->min_flavors, p->max_flavors);
    job j = {ctx, enc, image, p, caption ? caption : ""};
    const sd_label_table *parts[64];
    int n_parts = 0;
    for (int t = 0; t < n_tables && n_parts < 64; t++)
        if (t != SD_TABLE_NEGATIVE)
            parts[n_parts++] = &tables[t];
    view merged = {0};
    sd_status s = view_of(ctx, parts, n_parts, enc->dim, &merged);
    if (!s) {
        switch (mode) {
        case SD_INTERROGATE_CLASSIC: s = classic(&j, tables, 3, prompt); break;
        case SD_INTERROGATE_FAST: s = fast(&j, &merged, p->max_flavors, prompt); break;
        case SD_INTERROGATE_NEGATIVE: s = negative(&j, tables, prompt); break;
        default: s = best(&j, tables, &merged, prompt); break;
        }
    }
    view_free(&merged);
    return s;
}
