/* CLIP byte-level BPE tokenizer. See clip_tokenizer.h for the exact behaviour. */
#include "ml/text/clip_tokenizer.h"
#include "core/checked.h"
#include "core/embedded.h"
#include "core/utf8.h"
#include "ml/text/clip_unicode.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define N_MERGES (SD_CLIP_VOCAB - 512 - 2)
#define HASH_SIZE (1u << 17) /* power of two, about 2.6 times the 49408 entries of each table */

struct sd_clip_tokenizer {
    char *strings;                  /* arena of NUL-terminated vocabulary strings */
    uint32_t offsets[SD_CLIP_VOCAB];/* id -> offset in strings */
    int32_t byte_id[256];           /* byte -> id of its byte character */
    int32_t vocab_hash[HASH_SIZE];  /* string -> id, -1 empty */
    uint64_t pair_key[HASH_SIZE];   /* (a << 32 | b) + 1, 0 empty */
    int32_t pair_rank[HASH_SIZE];
};

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (uint32_t)key;
}

static int32_t vocab_find(const sd_clip_tokenizer *tok, const char *s, size_t n)
{
    for (uint32_t h = hash_bytes(s, n) & (HASH_SIZE - 1);; h = (h + 1) & (HASH_SIZE - 1)) {
        int32_t id = tok->vocab_hash[h];
        if (id < 0)
            return -1;
        const char *v = tok->strings + tok->offsets[id];
        if (strncmp(v, s, n) == 0 && v[n] == 0)
            return id;
    }
}

static void vocab_insert(sd_clip_tokenizer *tok, int32_t id)
{
    const char *s = tok->strings + tok->offsets[id];
    uint32_t h = hash_bytes(s, strlen(s)) & (HASH_SIZE - 1);
    while (tok->vocab_hash[h] >= 0)
        h = (h + 1) & (HASH_SIZE - 1);
    tok->vocab_hash[h] = id;
}

static int32_t pair_find(const sd_clip_tokenizer *tok, int32_t a, int32_t b)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    for (uint32_t h = hash_pair(key) & (HASH_SIZE - 1);; h = (h + 1) & (HASH_SIZE - 1)) {
        if (tok->pair_key[h] == key)
            return tok->pair_rank[h];
        if (tok->pair_key[h] == 0)
            return INT32_MAX;
    }
}

static void pair_insert(sd_clip_tokenizer *tok, int32_t a, int32_t b, int32_t rank)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t h = hash_pair(key) & (HASH_SIZE - 1);
    while (tok->pair_key[h] != 0 && tok->pair_key[h] != key)
        h = (h + 1) & (HASH_SIZE - 1);
    if (tok->pair_key[h] == 0) { /* the first (lowest) rank of a repeated pair wins */
        tok->pair_key[h] = key;
        tok->pair_rank[h] = rank;
    }
}

/* CLIP's byte characters: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * map to U+0100.. in byte order. Vocabulary ids list the printable ones first. */
static bool byte_printable(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

sd_status sd_clip_tokenizer_new(sd_context *ctx, sd_clip_tokenizer **out)
{
    *out = NULL;
    char *text = NULL;
    size_t text_len = 0;
    sd_status status = sd_embedded_gunzip(ctx, "bpe_simple_vocab_16e6.txt.gz", "CLIP vocabulary", &text, &text_len);
    if (status)
        return status;
    sd_clip_tokenizer *tok = calloc(1, sizeof *tok);
    /* Arena: 512 byte strings (<= 2 + 4 bytes + NUL), merged strings (< line length each), specials. */
    size_t arena_cap = 512 * 8 + text_len + N_MERGES + 64, used = 0;
    if (!tok || !(tok->strings = malloc(arena_cap))) {
        status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory building the CLIP tokenizer");
        goto fail;
    }
    memset(tok->vocab_hash, 0xff, sizeof tok->vocab_hash);
    int32_t id = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int order = 0; order < 2; order++) {
            for (int b = 0, extra = 0; b < 256; b++) {
                bool printable = byte_printable(b);
                uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)extra++;
                if (printable != (order == 0))
                    continue;
                if (pass == 0)
                    tok->byte_id[b] = id;
                tok->offsets[id] = (uint32_t)used;
                used += sd_utf8_put(cp, tok->strings + used);
                if (pass == 1) {
                    memcpy(tok->strings + used, "</w>", 4);
                    used += 4;
                }
                tok->strings[used++] = 0;
                vocab_insert(tok, id++);
            }
        }
    }
    char *line = strchr(text, '\n'); /* skip the "#version" line */
    for (int32_t r = 0; r < N_MERGES; r++) {
        char *start = line ? line + 1 : NULL, *sp, *end;
        if (!start || !(end = strchr(start, '\n')) || !(sp = memchr(start, ' ', (size_t)(end - start)))) {
            status = sd_set_error(ctx, SD_ERR_PARSE, "embedded CLIP vocabulary is damaged (merge %d)", r);
            goto fail;
        }
        int32_t a = vocab_find(tok, start, (size_t)(sp - start));
        int32_t b = vocab_find(tok, sp + 1, (size_t)(end - sp - 1));
        if (a < 0 || b < 0) {
            status = sd_set_error(ctx, SD_ERR_PARSE, "embedded CLIP vocabulary is damaged (merge %d)", r);
            goto fail;
        }
        pair_insert(tok, a, b, r);
        tok->offsets[id] = (uint32_t)used;
        memcpy(tok->strings + used, start, (size_t)(sp - start));
        used += (size_t)(sp - start);
        memcpy(tok->strings + used, sp + 1, (size_t)(end - sp - 1));
        used += (size_t)(end - sp - 1);
        tok->strings[used++] = 0;
        if (vocab_find(tok, tok->strings + tok->offsets[id], strlen(tok->strings + tok->offsets[id])) < 0)
            vocab_insert(tok, id);
        id++;
        line = end;
    }
    static const char *const specials[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int s = 0; s < 2; s++) {
        tok->offsets[id++] = (uint32_t)used;
        memcpy(tok->strings + used, specials[s], strlen(specials[s]) + 1);
        used += strlen(specials[s]) + 1;
    }
    free(text);
    *out = tok;
    return SD_OK;
fail:
    free(text);
    sd_clip_tokenizer_free(tok);
    return status;
}

void sd_clip_tokenizer_free(sd_clip_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->strings);
    free(tok);
}

const char *sd_clip_token_string(const sd_clip_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < SD_CLIP_VOCAB ? tok->strings + tok->offsets[id] : NULL;
}

/* ---- Unicode ---- */

static bool in_ranges(const sd_uc_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static const sd_uc_map *map_find(const sd_uc_map *m, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < m[mid].cp)
            hi = mid;
        else if (cp > m[mid].cp)
            lo = mid + 1;
        else
            return &m[mid];
    }
    return NULL;
}

static bool is_letter(uint32_t cp)
{
    if (cp < 0x80)
        return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(sd_uc_letters, sd_uc_letters_count, cp);
}

static bool is_number(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= '0' && cp <= '9';
    return in_ranges(sd_uc_numbers, sd_uc_numbers_count, cp);
}

/* The Unicode White_Space property. */
static bool is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
           cp == 0x3000;
}

static int ccc(uint32_t cp)
{
    if (cp < 0x300)
        return 0;
    const sd_uc_map *m = map_find(sd_uc_ccc, sd_uc_ccc_count, cp);
    return m ? (int)m->a : 0;
}

/* A growable code point buffer. */
typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
    bool nomem;
} cpbuf;

static void cp_push(cpbuf *b, uint32_t cp)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) {
            b->nomem = true;
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = cp;
}

#define HANGUL_S 0xac00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11a7u
#define HANGUL_COUNT 11172u

static void decompose(cpbuf *out, uint32_t cp, int depth)
{
    if (cp - HANGUL_S < HANGUL_COUNT) {
        uint32_t s = cp - HANGUL_S;
        cp_push(out, HANGUL_L + s / 588);
        cp_push(out, HANGUL_V + (s % 588) / 28);
        if (s % 28)
            cp_push(out, HANGUL_T + s % 28);
        return;
    }
    const sd_uc_map *m = cp < 0xc0 ? NULL : map_find(sd_uc_decomp, sd_uc_decomp_count, cp);
    if (!m || depth > 8) {
        cp_push(out, cp);
        return;
    }
    decompose(out, m->a, depth + 1);
    if (m->b)
        decompose(out, m->b, depth + 1);
}

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a - HANGUL_L < 19 && b - HANGUL_V < 21)
        return HANGUL_S + ((a - HANGUL_L) * 21 + (b - HANGUL_V)) * 28;
    if (a - HANGUL_S < HANGUL_COUNT && (a - HANGUL_S) % 28 == 0 && b - HANGUL_T - 1 < 27)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = sd_uc_compose_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sd_uc_map *m = &sd_uc_compose[mid];
        if (a < m->cp || (a == m->cp && b < m->a))
            hi = mid;
        else if (a > m->cp || b > m->a)
            lo = mid + 1;
        else
            return m->b;
    }
    return 0;
}

/* NFC of in[0..n) into out (cleared first). */
static void nfc(const uint32_t *in, size_t n, cpbuf *out, cpbuf *tmp)
{
    tmp->n = 0;
    for (size_t i = 0; i < n; i++)
        decompose(tmp, in[i], 0);
    /* Canonical ordering: stable sort of each run of non-starters by combining class. */
    for (size_t i = 1; i < tmp->n; i++) {
        int c = ccc(tmp->v[i]);
        for (size_t j = i; c && j > 0 && ccc(tmp->v[j - 1]) > c; j--) {
            uint32_t t = tmp->v[j];
            tmp->v[j] = tmp->v[j - 1];
            tmp->v[j - 1] = t;
        }
    }
    out->n = 0;
    long starter = -1;
    int last_cc = 0;
    for (size_t i = 0; i < tmp->n; i++) {
        uint32_t cp = tmp->v[i];
        int cc = ccc(cp);
        if (starter >= 0) {
            bool adjacent = out->n == (size_t)starter + 1;
            uint32_t comp = compose_pair(out->v[starter], cp);
            if (comp && (adjacent || (last_cc != 0 && last_cc < cc))) {
                out->v[starter] = comp;
                continue;
            }
        }
        if (cc == 0)
            starter = (long)out->n;
        cp_push(out, cp);
        last_cc = cc;
    }
}

/* ---- tokenizing ---- */

typedef struct idbuf {
    int32_t **v;
    size_t *n, *cap;
    bool nomem;
} idbuf;

static void id_push(idbuf *b, int32_t id)
{
    if (*b->n == *b->cap) {
        size_t cap = *b->cap ? *b->cap * 2 : 64;
        int32_t *v = realloc(*b->v, cap * sizeof *v);
        if (!v) {
            b->nomem = true;
            return;
        }
        *b->v = v;
        *b->cap = cap;
    }
    (*b->v)[(*b->n)++] = id;
}

/* BPE scratch: symbols as a linked list over the initial byte positions, and a min-heap of
 * candidate pairs ordered by (rank, position) -- the lowest-ranked pair, leftmost first, is
 * merged next (O(n log n) per piece). */
typedef struct bpe_pair {
    int32_t rank;
    uint32_t left, right; /* positions */
    uint32_t lid, rid;    /* the ids they had when the pair was pushed */
} bpe_pair;

typedef struct bpe_scratch {
    uint32_t *id, *next, *prev; /* per position; UINT32_MAX ends the list */
    bpe_pair *heap;
    size_t cap, heap_n, heap_cap;
    bool nomem;
} bpe_scratch;

static bool pair_less(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(const sd_clip_tokenizer *tok, bpe_scratch *s, uint32_t left, uint32_t right)
{
    int32_t rank = pair_find(tok, (int32_t)s->id[left], (int32_t)s->id[right]);
    if (rank == INT32_MAX || s->nomem)
        return;
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        bpe_pair *h = realloc(s->heap, cap * sizeof *h);
        if (!h) {
            s->nomem = true;
            return;
        }
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    bpe_pair p = {rank, left, right, s->id[left], s->id[right]};
    while (i > 0 && pair_less(&p, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = p;
}

static bpe_pair heap_pop(bpe_scratch *s)
{
    bpe_pair top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && pair_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n)
        s->heap[i] = last;
    return top;
}

/* BPE of one pre-token given as code points; appends its ids. */
static void bpe_word(const sd_clip_tokenizer *tok, const uint32_t *cps, size_t n, bpe_scratch *s, idbuf *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char u[4];
        size_t k = sd_utf8_put(cps[i], u);
        if (m + k > s->cap) {
            size_t cap = (m + k) * 2;
            uint32_t *id = realloc(s->id, cap * sizeof *id);
            if (id)
                s->id = id;
            uint32_t *next = id ? realloc(s->next, cap * sizeof *next) : NULL;
            if (next)
                s->next = next;
            uint32_t *prev = next ? realloc(s->prev, cap * sizeof *prev) : NULL;
            if (!prev) {
                out->nomem = true;
                return;
            }
            s->prev = prev;
            s->cap = cap;
        }
        for (size_t j = 0; j < k; j++, m++) {
            s->id[m] = (uint32_t)tok->byte_id[(unsigned char)u[j]];
            s->next[m] = (uint32_t)m + 1;
            s->prev[m] = m ? (uint32_t)m - 1 : UINT32_MAX;
        }
    }
    if (m == 0)
        return;
    s->id[m - 1] += 256; /* the "</w>" form of the last byte character */
    s->next[m - 1] = UINT32_MAX;
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < m; i++)
        heap_push(tok, s, (uint32_t)i, (uint32_t)i + 1);
    while (s->heap_n && !s->nomem) {
        bpe_pair p = heap_pop(s);
        if (s->next[p.left] != p.right || s->id[p.left] != p.lid || s->id[p.right] != p.rid)
            continue; /* stale: a neighbour merged since */
        s->id[p.left] = 512u + (uint32_t)p.rank;
        s->next[p.left] = s->next[p.right];
        if (s->next[p.left] != UINT32_MAX)
            s->prev[s->next[p.left]] = p.left;
        s->id[p.right] = UINT32_MAX; /* dead */
        if (s->prev[p.left] != UINT32_MAX)
            heap_push(tok, s, s->prev[p.left], p.left);
        if (s->next[p.left] != UINT32_MAX)
            heap_push(tok, s, p.left, s->next[p.left]);
    }
    if (s->nomem)
        out->nomem = true;
    for (uint32_t q = 0; q != UINT32_MAX; q = s->next[q])
        id_push(out, (int32_t)s->id[q]);
}

static bool match_ascii(const uint32_t *cps, size_t n, size_t i, const char *lit)
{
    for (size_t k = 0; lit[k]; k++)
        if (i + k >= n || cps[i + k] != (unsigned char)lit[k])
            return false;
    return true;
}

/* Normalises, pre-tokenises and BPE-encodes a piece of text without special tokens. */
static void encode_piece(const sd_clip_tokenizer *tok, const uint32_t *raw, size_t n, cpbuf *norm, cpbuf *tmp,
                         bpe_scratch *bpe, idbuf *out)
{
    nfc(raw, n, norm, tmp);
    /* Whitespace runs -> one space; lowercase (into tmp). */
    tmp->n = 0;
    for (size_t i = 0; i < norm->n; i++) {
        uint32_t cp = norm->v[i];
        if (is_space(cp)) {
            while (i + 1 < norm->n && is_space(norm->v[i + 1]))
                i++;
            cp_push(tmp, ' ');
            continue;
        }
        const sd_uc_map *m = cp < 0x41 ? NULL : map_find(sd_uc_lower, sd_uc_lower_count, cp);
        cp_push(tmp, m ? m->a : cp);
        if (m && m->b)
            cp_push(tmp, m->b);
    }
    if (tmp->nomem || norm->nomem) {
        out->nomem = true;
        return;
    }
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    const uint32_t *c = tmp->v;
    size_t len = tmp->n;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        for (size_t k = 0; j == i && c[i] == '\'' && k < sizeof contractions / sizeof *contractions; k++)
            if (match_ascii(c, len, i, contractions[k]))
                j = i + strlen(contractions[k]);
        if (j == i && is_letter(c[i]))
            while (j < len && is_letter(c[j]))
                j++;
        if (j == i && is_number(c[i]))
            j = i + 1;
        if (j == i && !is_space(c[i]))
            while (j < len && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j]))
                j++;
        if (j == i) { /* whitespace: dropped */
            i++;
            continue;
        }
        bpe_word(tok, c + i, j - i, bpe, out);
        i = j;
    }
}

sd_status sd_clip_tokenize(sd_context *ctx, const sd_clip_tokenizer *tok, const char *text, size_t len,
                           int32_t **ids, size_t *n, size_t *cap)
{
    if (len > SD_CLIP_MAX_TEXT)
        return sd_set_error(ctx, SD_ERR_LIMIT, "prompt is %zu bytes; at most %u are accepted", len, SD_CLIP_MAX_TEXT);
    const unsigned char *s = (const unsigned char *)text;
    cpbuf raw = {0}, norm = {0}, tmp = {0};
    bpe_scratch bpe = {0};
    idbuf out = {ids, n, cap, false};
    sd_status status = SD_OK;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t at = i;
        if (!sd_utf8_next(s, len, &i, &cp)) {
            status = sd_set_error(ctx, SD_ERR_INVALID, "prompt is not valid UTF-8 (byte %zu)", at);
            goto done;
        }
        cp_push(&raw, cp);
    }
    size_t start = 0, i = 0;
    while (i < raw.n) {
        int32_t special = -1;
        size_t skip = 0;
        if (match_ascii(raw.v, raw.n, i, "<|startoftext|>"))
            special = SD_CLIP_BOS, skip = 15;
        else if (match_ascii(raw.v, raw.n, i, "<|endoftext|>"))
            special = SD_CLIP_EOS, skip = 13;
        if (special < 0) {
            i++;
            continue;
        }
        if (i > start)
            encode_piece(tok, raw.v + start, i - start, &norm, &tmp, &bpe, &out);
        id_push(&out, special);
        i += skip;
        start = i;
    }
    if (start < raw.n)
        encode_piece(tok, raw.v + start, raw.n - start, &norm, &tmp, &bpe, &out);
    if (out.nomem || raw.nomem)
        status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory tokenizing a prompt");
done:
    free(raw.v);
    free(norm.v);
    free(tmp.v);
    free(bpe.id);
    free(bpe.next);
    free(bpe.prev);
    free(bpe.heap);
    return status;
}
