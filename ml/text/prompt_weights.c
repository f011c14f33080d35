/* Prompt weighting and 77-token windows as ComfyUI does for SD1. See prompt_weights.h. */
#include "ml/text/prompt_weights.h"
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- weighting ---- */

typedef struct seglist {
    sd_prompt_segment *v;
    size_t n, cap;
    bool nomem;
} seglist;

/* Appends a segment, resolving the escape markers (\0\1 -> ')', \0\2 -> '('). */
static void seg_push(seglist *l, const char *s, size_t len, double weight)
{
    if (l->nomem)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        sd_prompt_segment *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->nomem = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    char *text = malloc(len + 1);
    if (!text) {
        l->nomem = true;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0 && i + 1 < len && (s[i + 1] == 1 || s[i + 1] == 2)) {
            text[k++] = s[i + 1] == 1 ? ')' : '(';
            i++;
        } else {
            text[k++] = s[i];
        }
    }
    text[k] = 0;
    l->v[l->n++] = (sd_prompt_segment){text, weight};
}

static bool py_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Python's float(s) for the forms a prompt uses: optional sign, decimal digits with single '_'
 * between digits, optional fraction and exponent, or inf / infinity / nan; surrounding ASCII
 * whitespace allowed. */
static bool py_float(const char *s, size_t n, double *out)
{
    while (n && py_space(*s))
        s++, n--;
    while (n && py_space(s[n - 1]))
        n--;
    char buf[64];
    size_t k = 0, i = 0;
    if (n == 0 || n >= sizeof buf)
        return false;
    if (s[i] == '+' || s[i] == '-')
        buf[k++] = s[i++];
    static const char *const words[] = {"infinity", "inf", "nan"};
    for (int w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (n - i == len && strncasecmp(s + i, words[w], len) == 0) {
            double v = w == 2 ? NAN : INFINITY;
            *out = k && buf[0] == '-' ? -v : v;
            return true;
        }
    }
    int digits = 0;
    bool dot = false, exp = false;
    const char *dp = localeconv()->decimal_point;
    for (; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            buf[k++] = c;
            digits++;
        } else if (c == '_') {
            if (i == 0 || i + 1 >= n || s[i - 1] < '0' || s[i - 1] > '9' || s[i + 1] < '0' || s[i + 1] > '9')
                return false;
        } else if (c == '.' && !dot && !exp) {
            dot = true;
            for (const char *p = dp; *p && k < sizeof buf - 8; p++)
                buf[k++] = *p;
        } else if ((c == 'e' || c == 'E') && !exp && digits) {
            exp = true;
            buf[k++] = 'e';
            if (i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-'))
                buf[k++] = s[++i];
            if (i + 1 >= n || s[i + 1] < '0' || s[i + 1] > '9')
                return false;
        } else {
            return false;
        }
        if (k >= sizeof buf - 8)
            return false;
    }
    if (!digits)
        return false;
    buf[k] = 0;
    *out = strtod(buf, NULL);
    return true;
}

static void token_weights(seglist *l, const char *s, size_t len, double weight, int depth)
{
    /* parse_parentheses: top-level groups "(...)" and the text between them. */
    size_t start = 0;
    int nesting = 0;
    for (size_t i = 0; i <= len; i++) {
        bool end = i == len;
        char c = end ? 0 : s[i];
        size_t piece_end = i;
        if (end) {
            if (start >= len)
                break;
        } else if (c == '(') {
            if (nesting++ != 0 || i == start)
                continue;
        } else if (c == ')') {
            if (--nesting != 0)
                continue;
            piece_end = i + 1;
        } else {
            continue;
        }
        const char *x = s + start;
        size_t xn = piece_end - start;
        start = piece_end;
        if (xn >= 2 && x[0] == '(' && x[xn - 1] == ')' && depth < 64) {
            x++, xn -= 2;
            double w = weight * 1.1, parsed;
            size_t colon = xn;
            while (colon > 0 && x[colon - 1] != ':')
                colon--;
            if (colon > 1 && py_float(x + colon, xn - colon, &parsed)) { /* rfind(':') > 0 */
                w = parsed;
                xn = colon - 1;
            }
            token_weights(l, x, xn, w, depth + 1);
        } else {
            seg_push(l, x, xn, weight);
        }
    }
}

sd_status sd_prompt_parse_weights(sd_context *ctx, const char *text, sd_prompt_segment **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t len = strlen(text);
    char *esc = malloc(len + 1);
    seglist l = {0};
    if (!esc)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory parsing a prompt");
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\\' && (text[i + 1] == ')' || text[i + 1] == '(')) {
            esc[k++] = 0;
            esc[k++] = text[++i] == ')' ? 1 : 2;
        } else {
            esc[k++] = text[i];
        }
    }
    token_weights(&l, esc, k, 1.0, 0);
    free(esc);
    if (l.nomem) {
        sd_prompt_segments_free(l.v, l.n);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory parsing a prompt");
    }
    *out = l.v;
    *n = l.n;
    return SD_OK;
}

void sd_prompt_segments_free(sd_prompt_segment *segments, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(segments[i].text);
    free(segments);
}

/* ---- windows ---- */

typedef struct builder {
    sd_prompt_token *groups;  /* all grouped tokens, in order */
    size_t n, cap;
    size_t *group_end;        /* end index of each group in groups */
    size_t n_groups, cap_groups;
    sd_prompt_tokens *out;
    bool nomem;
    bool names_only; /* sd_prompt_embedding_names: only call the lookup */
} builder;

static void push_token(builder *b, sd_prompt_token t)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        sd_prompt_token *v = realloc(b->groups, cap * sizeof *v);
        if (!v) {
            b->nomem = true;
            return;
        }
        b->groups = v;
        b->cap = cap;
    }
    b->groups[b->n++] = t;
}

static void end_group(builder *b)
{
    if (b->n_groups == b->cap_groups) {
        size_t cap = b->cap_groups ? b->cap_groups * 2 : 32;
        size_t *v = realloc(b->group_end, cap * sizeof *v);
        if (!v) {
            b->nomem = true;
            return;
        }
        b->group_end = v;
        b->cap_groups = cap;
    }
    b->group_end[b->n_groups++] = b->n;
}

static int32_t embedding_index(builder *b, const char *name)
{
    sd_prompt_tokens *o = b->out;
    for (size_t i = 0; i < o->n_embeddings; i++)
        if (strcmp(o->embeddings[i], name) == 0)
            return (int32_t)i;
    char **v = realloc(o->embeddings, (o->n_embeddings + 1) * sizeof *v);
    if (!v || !(v[o->n_embeddings] = strdup(name))) {
        if (v)
            o->embeddings = v;
        b->nomem = true;
        return -1;
    }
    o->embeddings = v;
    return (int32_t)o->n_embeddings++;
}

static sd_status tokenize_group(sd_context *ctx, const sd_clip_tokenizer *tok, builder *b, const char *text,
                                size_t len, double weight)
{
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    if (b->names_only)
        return SD_OK;
    sd_status st = sd_clip_tokenize(ctx, tok, text, len, &ids, &n, &cap);
    for (size_t i = 0; !st && i < n; i++)
        push_token(b, (sd_prompt_token){SD_PROMPT_TOKEN, ids[i], -1, 0, weight});
    end_group(b);
    free(ids);
    return st;
}

/* The embedding handling of one piece starting with "embedding:"; *rest gets the text left to
 * tokenize (malloc'd, NULL when none). */
static void embedding_piece(sd_context *ctx, builder *b, const char *word, size_t len, double weight,
                            sd_embedding_lookup_fn lookup, void *user, char **rest)
{
    *rest = NULL;
    const char *p = word + 10, *end = word + len;
    while (p < end && *p == '\n')
        p++;
    while (end > p && end[-1] == '\n')
        end--;
    const char *name_start = p;
    while (name_start < end && py_space(*name_start))
        name_start++;
    const char *name_end = name_start;
    while (name_end < end && !py_space(*name_end))
        name_end++;
    char *name = strndup(name_start, (size_t)(name_end - name_start));
    /* leftover: the remaining words joined by single spaces */
    char *left = malloc((size_t)(end - name_end) + 2);
    if (!name || !left) {
        free(name);
        free(left);
        b->nomem = true;
        return;
    }
    size_t k = 0;
    for (const char *q = name_end; q < end;) {
        while (q < end && py_space(*q))
            q++;
        if (q == end)
            break;
        if (k)
            left[k++] = ' ';
        while (q < end && !py_space(*q))
            left[k++] = *q++;
    }
    left[k] = 0;
    int count = *name ? lookup(user, name) : 0;
    if (count <= 0 && *name) {
        const char *s = name, *e = name + strlen(name);
        while (s < e && *s == ',')
            s++;
        while (e > s && e[-1] == ',')
            e--;
        size_t slen = (size_t)(e - s);
        if (slen < strlen(name)) {
            char *stripped = strndup(s, slen), *tail = NULL;
            if (stripped && (tail = sd_strfmt("%s %s", name + slen, left))) {
                count = lookup(user, stripped);
                free(left);
                left = tail;
                free(name);
                name = stripped;
            } else {
                free(stripped);
                b->nomem = true;
            }
        }
    }
    if (b->names_only) {
        /* only the look-ups were wanted */
    } else if (count <= 0) {
        sd_warn(ctx, "embedding:%s does not exist, ignoring", name);
    } else {
        int32_t e = embedding_index(b, name);
        for (int v = 0; e >= 0 && v < count; v++)
            push_token(b, (sd_prompt_token){SD_PROMPT_EMBEDDING, v, e, 0, weight});
        end_group(b);
    }
    free(name);
    if (*left)
        *rest = left;
    else
        free(left);
}

static bool starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

static sd_status tokenize_segment(sd_context *ctx, const sd_clip_tokenizer *tok, builder *b,
                                  const sd_prompt_segment *seg, sd_embedding_lookup_fn lookup, void *user)
{
    const char *s = seg->text;
    size_t len = strlen(s);
    sd_status st = SD_OK;
    /* re.split(' embedding:|\nembedding:'): pieces after the first keep their "embedding:". */
    size_t start = 0;
    for (size_t i = 0; i <= len && !st; i++) {
        bool cut = i == len || ((s[i] == ' ' || s[i] == '\n') && starts_with(s + i + 1, len - i - 1, "embedding:"));
        if (!cut)
            continue;
        const char *word = s + start;
        size_t wlen = i - start;
        start = i + 1;
        if (wlen == 0)
            continue;
        if (lookup && starts_with(word, wlen, "embedding:")) {
            char *rest = NULL;
            embedding_piece(ctx, b, word, wlen, seg->weight, lookup, user, &rest);
            if (rest)
                st = tokenize_group(ctx, tok, b, rest, strlen(rest), seg->weight);
            free(rest);
        } else {
            st = tokenize_group(ctx, tok, b, word, wlen, seg->weight);
        }
    }
    return st;
}

sd_status sd_prompt_tokenize(sd_context *ctx, const sd_clip_tokenizer *tok, const char *text,
                             sd_embedding_lookup_fn lookup, void *user, sd_prompt_tokens *out)
{
    memset(out, 0, sizeof *out);
    sd_prompt_segment *segs = NULL;
    size_t n_segs = 0;
    builder b = {.out = out};
    sd_status st = sd_prompt_parse_weights(ctx, text, &segs, &n_segs);
    for (size_t i = 0; !st && i < n_segs; i++)
        st = tokenize_segment(ctx, tok, &b, &segs[i], lookup, user);
    sd_prompt_segments_free(segs, n_segs);
    if (st)
        goto fail;
    if (b.nomem)
        goto nomem;
    /* Windows: at most one per 8 tokens of input, plus one. */
    size_t max_windows = b.n / 8 + b.n_groups + 2;
    if (!(out->tokens = calloc(max_windows * SD_CLIP_WINDOW, sizeof *out->tokens)))
        goto nomem;
    const sd_prompt_token bos = {SD_PROMPT_TOKEN, SD_CLIP_BOS, -1, 0, 1.0};
    const sd_prompt_token eos = {SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0};
    sd_prompt_token *win = out->tokens;
    size_t fill = 0;
    out->n_windows = 1;
    win[fill++] = bos;
    size_t g_start = 0;
    for (size_t g = 0; g < b.n_groups; g++) {
        size_t g_end = b.group_end[g], left = g_end - g_start;
        if (left == 0)
            continue; /* a word without tokens (" "): b.groups may still be NULL */
        bool large = left >= 8;
        const sd_prompt_token *t = b.groups + g_start;
        while (left > 0) {
            if (left + fill > SD_CLIP_WINDOW - 1) {
                size_t room = SD_CLIP_WINDOW - fill - 1;
                if (large) {
                    for (size_t k = 0; k < room; k++, t++, left--) {
                        win[fill] = *t;
                        win[fill++].word = (int32_t)g + 1;
                    }
                }
                while (fill < SD_CLIP_WINDOW)
                    win[fill++] = eos;
                win += SD_CLIP_WINDOW;
                out->n_windows++;
                fill = 0;
                win[fill++] = bos;
            } else {
                for (; left > 0; t++, left--) {
                    win[fill] = *t;
                    win[fill++].word = (int32_t)g + 1;
                }
            }
        }
        g_start = g_end;
    }
    while (fill < SD_CLIP_WINDOW)
        win[fill++] = eos;
    free(b.groups);
    free(b.group_end);
    return SD_OK;
nomem:
    st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory tokenizing a prompt");
fail:
    free(b.groups);
    free(b.group_end);
    sd_prompt_tokens_free(out);
    return st;
}

void sd_prompt_tokens_free(sd_prompt_tokens *tokens)
{
    free(tokens->tokens);
    for (size_t i = 0; i < tokens->n_embeddings; i++)
        free(tokens->embeddings[i]);
    free(tokens->embeddings);
    memset(tokens, 0, sizeof *tokens);
}

sd_status sd_prompt_embedding_names(sd_context *ctx, const char *text, sd_embedding_lookup_fn lookup, void *user)
{
    sd_prompt_tokens none = {0};
    sd_prompt_segment *segs = NULL;
    size_t n_segs = 0;
    builder b = {.out = &none, .names_only = true};
    sd_status st = sd_prompt_parse_weights(ctx, text, &segs, &n_segs);
    for (size_t i = 0; !st && i < n_segs; i++)
        st = tokenize_segment(ctx, NULL, &b, &segs[i], lookup, user);
    sd_prompt_segments_free(segs, n_segs);
    free(b.groups);
    free(b.group_end);
    sd_prompt_tokens_free(&none);
    if (!st && b.nomem)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    return st;
}
