/* The T5 SentencePiece unigram tokenizer. See t5_tokenizer.h. */
#include "ml/text/t5_tokenizer.h"
#include "core/checked.h"
#include "core/embedded.h"
#include "core/utf8.h"
#include "ml/text/t5_unicode.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB_FILE "tokenizer.json.gz"
#define WHAT "T5 vocabulary"
#define UNK_PENALTY 10.0 /* sentencepiece's kUnkPenalty */
#define METASPACE "\xe2\x96\x81" /* U+2581 "▁" */

typedef struct added_token {
    char *text;
    size_t len;
    int32_t id;
} added_token;

struct sd_t5_tokenizer {
    size_t n;            /* pieces */
    char **pieces;       /* NUL-terminated */
    size_t *lens;
    double *scores;
    int32_t *hash;       /* open addressing, -1 empty */
    size_t hash_mask;
    size_t max_len;      /* longest piece in bytes */
    int32_t unk_id;
    double unk_score;
    added_token *added;
    size_t n_added;
    uint32_t *trie;      /* the charsmap's darts-clone double array */
    size_t trie_units;
    char *replacements;  /* NUL-separated replacement strings */
    size_t replacements_len;
};

/* ---- vocabulary ---- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* The id of the piece s[0..n), or -1. */
static int32_t piece_find(const sd_t5_tokenizer *tok, const char *s, size_t n)
{
    for (size_t h = hash_bytes(s, n) & tok->hash_mask;; h = (h + 1) & tok->hash_mask) {
        int32_t id = tok->hash[h];
        if (id < 0 || (tok->lens[id] == n && memcmp(tok->pieces[id], s, n) == 0))
            return id;
    }
}

void sd_t5_tokenizer_free(sd_t5_tokenizer *tok)
{
    if (!tok)
        return;
    for (size_t i = 0; i < tok->n; i++)
        free(tok->pieces[i]);
    for (size_t i = 0; i < tok->n_added; i++)
        free(tok->added[i].text);
    free(tok->pieces);
    free(tok->lens);
    free(tok->scores);
    free(tok->hash);
    free(tok->added);
    free(tok->trie);
    free(tok->replacements);
    free(tok);
}

static sd_status damaged(sd_context *ctx, const char *what)
{
    return sd_set_error(ctx, SD_ERR_PARSE, "embedded " WHAT " is damaged (%s)", what);
}

static sd_status nomem(sd_context *ctx)
{
    return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory loading the " WHAT);
}

static sd_status load_vocab(sd_context *ctx, sd_t5_tokenizer *tok, json_t *model)
{
    json_t *vocab = json_object_get(model, "vocab"), *unk = json_object_get(model, "unk_id");
    if (!json_is_array(vocab) || json_array_size(vocab) == 0 || json_array_size(vocab) > INT32_MAX / 4 ||
        !json_is_integer(unk) || json_integer_value(unk) < 0 ||
        (size_t)json_integer_value(unk) >= json_array_size(vocab))
        return damaged(ctx, "model");
    tok->n = json_array_size(vocab);
    tok->unk_id = (int32_t)json_integer_value(unk);
    size_t hash_size = 1;
    while (hash_size < 2 * tok->n)
        hash_size *= 2;
    tok->hash_mask = hash_size - 1;
    tok->pieces = calloc(tok->n, sizeof *tok->pieces);
    tok->lens = calloc(tok->n, sizeof *tok->lens);
    tok->scores = calloc(tok->n, sizeof *tok->scores);
    tok->hash = malloc(hash_size * sizeof *tok->hash);
    if (!tok->pieces || !tok->lens || !tok->scores || !tok->hash)
        return nomem(ctx);
    memset(tok->hash, 0xff, hash_size * sizeof *tok->hash);
    double min_score = 0.0;
    for (size_t i = 0; i < tok->n; i++) {
        json_t *e = json_array_get(vocab, i), *piece = json_array_get(e, 0), *score = json_array_get(e, 1);
        if (!json_is_string(piece) || !json_is_number(score) || json_string_length(piece) == 0)
            return damaged(ctx, "vocab entry");
        size_t len = json_string_length(piece);
        if (!(tok->pieces[i] = malloc(len + 1)))
            return nomem(ctx);
        memcpy(tok->pieces[i], json_string_value(piece), len + 1);
        tok->lens[i] = len;
        tok->scores[i] = json_number_value(score);
        if (i == 0 || tok->scores[i] < min_score)
            min_score = tok->scores[i];
        if (len > tok->max_len)
            tok->max_len = len;
        if (piece_find(tok, tok->pieces[i], len) >= 0)
            return damaged(ctx, "duplicate piece");
        size_t h = hash_bytes(tok->pieces[i], len) & tok->hash_mask;
        while (tok->hash[h] >= 0)
            h = (h + 1) & tok->hash_mask;
        tok->hash[h] = (int32_t)i;
    }
    tok->unk_score = min_score - UNK_PENALTY;
    return SD_OK;
}

static sd_status load_added(sd_context *ctx, sd_t5_tokenizer *tok, json_t *added)
{
    if (!json_is_array(added))
        return damaged(ctx, "added_tokens");
    if (!(tok->added = calloc(json_array_size(added) + 1, sizeof *tok->added)))
        return nomem(ctx);
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        json_t *content = json_object_get(e, "content"), *id = json_object_get(e, "id");
        if (!json_is_string(content) || json_string_length(content) == 0 || !json_is_integer(id) ||
            json_integer_value(id) < 0 || (size_t)json_integer_value(id) >= tok->n)
            return damaged(ctx, "added token");
        added_token *a = &tok->added[tok->n_added++];
        a->len = json_string_length(content);
        a->id = (int32_t)json_integer_value(id);
        if (!(a->text = malloc(a->len + 1)))
            return nomem(ctx);
        memcpy(a->text, json_string_value(content), a->len + 1);
    }
    return SD_OK;
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes standard base64 (with '=' padding) into a malloc'd buffer. */
static bool b64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len)
{
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (!buf)
        return false;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
        }
    }
    *out = buf;
    *out_len = n;
    return true;
}

/* The Precompiled normaliser's charsmap: u32 trie size in bytes, the double array, then the
 * NUL-separated replacement strings. */
static sd_status load_charsmap(sd_context *ctx, sd_t5_tokenizer *tok, json_t *normalizer)
{
    json_t *list = json_object_get(normalizer, "normalizers"), *pre = json_array_get(list, 0);
    json_t *map = json_object_get(pre, "precompiled_charsmap");
    unsigned char *raw = NULL;
    size_t len = 0;
    if (!json_is_string(map) || !json_is_string(json_object_get(pre, "type")) ||
        strcmp(json_string_value(json_object_get(pre, "type")), "Precompiled") != 0)
        return damaged(ctx, "normalizer");
    if (!b64_decode(json_string_value(map), json_string_length(map), &raw, &len))
        return damaged(ctx, "precompiled_charsmap");
    sd_status status = SD_OK;
    size_t trie_bytes = len >= 4 ? (size_t)raw[0] | (size_t)raw[1] << 8 | (size_t)raw[2] << 16 | (size_t)raw[3] << 24 : 0;
    if (len < 4 || trie_bytes == 0 || trie_bytes % 4 || trie_bytes > len - 4) {
        status = damaged(ctx, "precompiled_charsmap");
        goto done;
    }
    tok->trie_units = trie_bytes / 4;
    tok->replacements_len = len - 4 - trie_bytes;
    tok->trie = malloc(trie_bytes);
    tok->replacements = malloc(tok->replacements_len + 1);
    if (!tok->trie || !tok->replacements) {
        status = nomem(ctx);
        goto done;
    }
    for (size_t i = 0; i < tok->trie_units; i++) {
        const unsigned char *p = raw + 4 + 4 * i;
        tok->trie[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    memcpy(tok->replacements, raw + 4 + trie_bytes, tok->replacements_len);
    tok->replacements[tok->replacements_len] = 0;
done:
    free(raw);
    return status;
}

sd_status sd_t5_tokenizer_new(sd_context *ctx, sd_t5_tokenizer **out)
{
    *out = NULL;
    char *text = NULL;
    size_t text_len = 0;
    sd_status status = sd_embedded_gunzip(ctx, VOCAB_FILE, WHAT, &text, &text_len);
    if (status)
        return status;
    json_error_t jerr;
    json_t *root = json_loadb(text, text_len, 0, &jerr);
    free(text);
    sd_t5_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        status = nomem(ctx);
    else if (!root)
        status = damaged(ctx, "not JSON");
    else if (!(status = load_vocab(ctx, tok, json_object_get(root, "model"))) &&
             !(status = load_added(ctx, tok, json_object_get(root, "added_tokens"))))
        status = load_charsmap(ctx, tok, json_object_get(root, "normalizer"));
    json_decref(root);
    if (status) {
        sd_t5_tokenizer_free(tok);
        return status;
    }
    *out = tok;
    return SD_OK;
}

size_t sd_t5_vocab_size(const sd_t5_tokenizer *tok)
{
    return tok->n;
}

const char *sd_t5_piece(const sd_t5_tokenizer *tok, int32_t id)
{
    return id >= 0 && (size_t)id < tok->n ? tok->pieces[id] : NULL;
}

/* ---- growable buffers ---- */

typedef struct bytes {
    char *v;
    size_t n, cap;
    bool nomem;
} bytes;

/* Makes *v (elements of elem bytes, *cap allocated) hold at least need; false when out of memory. */
static bool grow(void **v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *nv = realloc(*v, c * elem);
    if (!nv)
        return false;
    *v = nv;
    *cap = c;
    return true;
}

static void bytes_put(bytes *b, const char *s, size_t n)
{
    void *v = b->v;
    if (b->nomem || (b->nomem = !grow(&v, &b->cap, b->n + n + 1, 1)))
        return;
    b->v = v;
    memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
}

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
    bool nomem;
} idbuf;

static void id_push(idbuf *b, int32_t id)
{
    void *v = b->v;
    if (b->nomem || (b->nomem = !grow(&v, &b->cap, b->n + 1, sizeof *b->v)))
        return;
    b->v = v;
    b->v[b->n++] = id;
}

/* ---- normalisation ---- */

/* The replacement of the shortest prefix of s[0..n) in the charsmap (darts-clone common prefix
 * search, first result), or NULL. */
static const char *charsmap_first(const sd_t5_tokenizer *tok, const unsigned char *s, size_t n)
{
    const uint32_t *a = tok->trie;
    size_t pos = 0;
    uint32_t unit = a[0];
#define OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
    pos ^= OFFSET(unit);
    for (size_t i = 0; i < n && s[i]; i++) {
        pos ^= s[i];
        if (pos >= tok->trie_units)
            return NULL;
        unit = a[pos];
        if ((unit & ((1u << 31) | 0xFF)) != s[i])
            return NULL;
        pos ^= OFFSET(unit);
        if ((unit >> 8) & 1) {
            if (pos >= tok->trie_units)
                return NULL;
            size_t value = a[pos] & 0x7FFFFFFFu;
            return value < tok->replacements_len ? tok->replacements + value : NULL;
        }
    }
#undef OFFSET
    return NULL;
}

static uint8_t uc_props(uint32_t cp)
{
    size_t lo = 0, hi = sd_t5_uc_props_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < sd_t5_uc_props[mid].lo)
            hi = mid;
        else if (cp > sd_t5_uc_props[mid].hi)
            lo = mid + 1;
        else
            return sd_t5_uc_props[mid].props;
    }
    return 0;
}

/* Extended grapheme cluster segmentation (UAX #29 rules GB3-GB13), one code point at a time. */
typedef struct gc_state {
    int prev;            /* gcb of the previous code point, -1 at the start */
    bool ep_run;         /* ExtPict Extend* seen just before */
    bool ep_zwj;         /* ... followed by ZWJ (GB11) */
    int ri_count;        /* regional indicators in a row just before */
    bool incb_consonant; /* InCB Consonant [Extend Linker]* just before (GB9c) */
    bool incb_linker;    /* ... with a Linker among them */
} gc_state;

/* True when a cluster boundary falls before a code point with properties p. */
static bool gc_break(gc_state *s, uint8_t p)
{
    int cur = p & 0x0F, prev = s->prev, incb = p >> SD_UC_INCB_SHIFT;
    bool ep = p & SD_UC_EXTPICT, brk;
    if (prev < 0)
        brk = true;
    else if (prev == SD_GCB_CR && cur == SD_GCB_LF)
        brk = false;
    else if (prev == SD_GCB_CR || prev == SD_GCB_LF || prev == SD_GCB_CONTROL || cur == SD_GCB_CR ||
             cur == SD_GCB_LF || cur == SD_GCB_CONTROL)
        brk = true;
    else if (prev == SD_GCB_L && (cur == SD_GCB_L || cur == SD_GCB_V || cur == SD_GCB_LV || cur == SD_GCB_LVT))
        brk = false;
    else if ((prev == SD_GCB_LV || prev == SD_GCB_V) && (cur == SD_GCB_V || cur == SD_GCB_T))
        brk = false;
    else if ((prev == SD_GCB_LVT || prev == SD_GCB_T) && cur == SD_GCB_T)
        brk = false;
    else if (cur == SD_GCB_EXTEND || cur == SD_GCB_ZWJ || cur == SD_GCB_SPACINGMARK || prev == SD_GCB_PREPEND)
        brk = false;
    else if (incb == 1 && s->incb_consonant && s->incb_linker)
        brk = false;
    else if (ep && s->ep_zwj)
        brk = false;
    else if (cur == SD_GCB_RI && prev == SD_GCB_RI && s->ri_count % 2 == 1)
        brk = false;
    else
        brk = true;
    /* state after this code point */
    s->ep_zwj = s->ep_run && cur == SD_GCB_ZWJ;
    s->ep_run = ep || (s->ep_run && cur == SD_GCB_EXTEND);
    s->ri_count = cur == SD_GCB_RI ? s->ri_count + 1 : 0;
    if (incb == 1) {
        s->incb_consonant = true;
        s->incb_linker = false;
    } else if (s->incb_consonant && (incb == 2 || incb == 3)) {
        s->incb_linker |= incb == 3;
    } else {
        s->incb_consonant = s->incb_linker = false;
    }
    s->prev = cur;
    return brk;
}

static bool is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* Maps the code points of one grapheme cluster s[0..n) through the charsmap into out. */
static void normalize_cluster(const sd_t5_tokenizer *tok, const unsigned char *s, size_t n, bytes *out)
{
    const char *r = n < 6 ? charsmap_first(tok, s, n) : NULL;
    if (r) {
        bytes_put(out, r, strlen(r));
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t at = i;
        uint32_t cp;
        sd_utf8_next(s, n, &i, &cp); /* valid: checked on entry */
        r = charsmap_first(tok, s + at, i - at);
        if (r)
            bytes_put(out, r, strlen(r));
        else
            bytes_put(out, (const char *)s + at, i - at);
    }
}

/* Steps 2 of t5_tokenizer.h on valid UTF-8 s[0..n): charsmap per cluster, strip trailing
 * White_Space, runs of 2+ spaces to "▁". */
static void normalize(const sd_t5_tokenizer *tok, const unsigned char *s, size_t n, bytes *tmp, bytes *out)
{
    tmp->n = 0;
    out->n = 0;
    gc_state gs = {.prev = -1};
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        size_t at = i;
        uint32_t cp;
        sd_utf8_next(s, n, &i, &cp);
        if (gc_break(&gs, uc_props(cp)) && at > start) {
            normalize_cluster(tok, s + start, at - start, tmp);
            start = at;
        }
    }
    if (n > start)
        normalize_cluster(tok, s + start, n - start, tmp);
    /* strip trailing White_Space: find the end of the last non-space code point */
    size_t end = 0;
    for (size_t i = 0; i < tmp->n;) {
        uint32_t cp;
        if (!sd_utf8_next((const unsigned char *)tmp->v, tmp->n, &i, &cp))
            i++; /* replacement strings are valid UTF-8; stay safe regardless */
        else if (!is_white_space(cp))
            end = i;
    }
    for (size_t i = 0; i < end;) {
        if (tmp->v[i] != ' ') {
            bytes_put(out, tmp->v + i++, 1);
            continue;
        }
        size_t j = i;
        while (j < end && tmp->v[j] == ' ')
            j++;
        bytes_put(out, j - i >= 2 ? METASPACE : " ", j - i >= 2 ? 3 : 1);
        i = j;
    }
}

/* ---- unigram segmentation ---- */

typedef struct best_node {
    double score;
    size_t start;
    int32_t id;
    bool set;
} best_node;

/* Best segmentation of the piece s[0..n) (sentencepiece's EncodeOptimized): ids appended to out,
 * consecutive <unk> fused. best has n + 1 entries. */
static void unigram(const sd_t5_tokenizer *tok, const unsigned char *s, size_t n, best_node *best, idbuf *out)
{
    for (size_t i = 0; i <= n; i++)
        best[i] = (best_node){0.0, 0, -1, i == 0};
    for (size_t at = 0; at < n;) {
        size_t next = at;
        uint32_t cp;
        sd_utf8_next(s, n, &next, &cp);
        size_t mblen = next - at;
        double here = best[at].score;
        bool single = false;
        for (size_t len = 1; len <= tok->max_len && at + len <= n; len++) {
            int32_t id = piece_find(tok, (const char *)s + at, len);
            if (id < 0)
                continue;
            double cand = tok->scores[id] + here;
            best_node *t = &best[at + len];
            if (!t->set || cand > t->score)
                *t = (best_node){cand, at, id, true};
            single |= len == mblen;
        }
        if (!single) {
            double cand = tok->unk_score + here;
            best_node *t = &best[next];
            if (!t->set || cand > t->score)
                *t = (best_node){cand, at, tok->unk_id, true};
        }
        at = next;
    }
    /* backtrack into out, then reverse the new part */
    size_t first = out->n;
    for (size_t end = n; end > 0; end = best[end].start) {
        int32_t id = best[end].id;
        if (id == tok->unk_id && out->n > first && out->v[out->n - 1] == tok->unk_id)
            continue; /* fuse with the <unk> after it */
        id_push(out, id);
    }
    for (size_t i = first, j = out->n; !out->nomem && i + 1 < j; i++, j--) {
        int32_t t = out->v[i];
        out->v[i] = out->v[j - 1];
        out->v[j - 1] = t;
    }
}

/* Steps 2-4 on the text between added tokens; at_start: it starts the prompt. */
static void encode_segment(const sd_t5_tokenizer *tok, const unsigned char *s, size_t n, bool at_start, bytes *tmp,
                           bytes *norm, bytes *pre, best_node **best, size_t *best_cap, idbuf *out)
{
    normalize(tok, s, n, tmp, norm);
    if (norm->nomem || tmp->nomem || norm->n == 0)
        return;
    pre->n = 0;
    /* spaces become "▁" first, so text starting with either gets no second one */
    if (at_start && norm->v[0] != ' ' && (norm->n < 3 || memcmp(norm->v, METASPACE, 3) != 0))
        bytes_put(pre, METASPACE, 3);
    for (size_t i = 0; i < norm->n; i++) {
        if (norm->v[i] == ' ')
            bytes_put(pre, METASPACE, 3);
        else
            bytes_put(pre, norm->v + i, 1);
    }
    if (pre->nomem)
        return;
    if (*best_cap < pre->n + 1) {
        free(*best);
        *best_cap = 0;
        if (!(*best = malloc((pre->n + 1) * sizeof **best))) {
            out->nomem = true;
            return;
        }
        *best_cap = pre->n + 1;
    }
    /* split before each "▁" (its lead byte 0xE2 never continues another code point) */
    const unsigned char *p = (const unsigned char *)pre->v;
    size_t start = 0;
    for (size_t i = 1; i <= pre->n; i++)
        if (i == pre->n || (i + 3 <= pre->n && memcmp(p + i, METASPACE, 3) == 0)) {
            unigram(tok, p + start, i - start, *best, out);
            start = i;
        }
}

/* The added token matching at s[i] (longest), or NULL. */
static const added_token *added_at(const sd_t5_tokenizer *tok, const unsigned char *s, size_t len, size_t i)
{
    const added_token *best = NULL;
    for (size_t k = 0; k < tok->n_added; k++) {
        const added_token *a = &tok->added[k];
        if (a->len <= len - i && memcmp(s + i, a->text, a->len) == 0 && (!best || a->len > best->len))
            best = a;
    }
    return best;
}

sd_status sd_t5_tokenize(sd_context *ctx, const sd_t5_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                         size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (len > SD_T5_MAX_TEXT)
        return sd_set_error(ctx, SD_ERR_LIMIT, "prompt is %zu bytes; at most %u are accepted", len, SD_T5_MAX_TEXT);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t at = i;
        if (!sd_utf8_next(s, len, &i, &cp))
            return sd_set_error(ctx, SD_ERR_INVALID, "prompt is not valid UTF-8 (byte %zu)", at);
    }
    bytes tmp = {0}, norm = {0}, pre = {0};
    best_node *best = NULL;
    size_t best_cap = 0, start = 0;
    idbuf out = {0};
    for (size_t i = 0; i < len;) {
        const added_token *a = added_at(tok, s, len, i);
        if (!a) {
            i++;
            continue;
        }
        if (i > start)
            encode_segment(tok, s + start, i - start, start == 0, &tmp, &norm, &pre, &best, &best_cap, &out);
        id_push(&out, a->id);
        i += a->len;
        start = i;
    }
    if (len > start)
        encode_segment(tok, s + start, len - start, start == 0, &tmp, &norm, &pre, &best, &best_cap, &out);
    id_push(&out, SD_T5_EOS);
    bool failed = out.nomem || tmp.nomem || norm.nomem || pre.nomem;
    free(tmp.v);
    free(norm.v);
    free(pre.v);
    free(best);
    if (failed) {
        free(out.v);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory tokenizing a prompt");
    }
    *ids = out.v;
    *n = out.n;
    return SD_OK;
}
