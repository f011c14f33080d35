/* WordPiece vocabulary and decoding (see wordpiece.h). */
#include "ml/text/wordpiece.h"
#include <stdlib.h>
#include <string.h>

struct sd_wordpiece {
    char *text;    /* the file, with each line's end replaced by NUL */
    char **tokens; /* n pointers into text */
    int n;
};

static const char *const special[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

sd_status sd_wordpiece_parse(sd_context *ctx, const char *path, const char *text, size_t len, sd_wordpiece **out)
{
    *out = NULL;
    sd_wordpiece *v = calloc(1, sizeof *v);
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (!v || !(v->text = malloc(len + 1)) || !(v->tokens = calloc(lines, sizeof *v->tokens))) {
        sd_wordpiece_free(v);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory reading %s", path);
    }
    memcpy(v->text, text, len);
    v->text[len] = 0;
    for (char *p = v->text; p < v->text + len;) {
        char *end = memchr(p, '\n', (size_t)(v->text + len - p));
        char *next = end ? end + 1 : v->text + len;
        if (!end)
            end = v->text + len;
        if (end > p && end[-1] == '\r')
            end--;
        *end = 0;
        if (end == p) {
            int line = v->n + 1;
            sd_wordpiece_free(v);
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: line %d is empty (a WordPiece vocab.txt has one token a line)",
                                path, line);
        }
        v->tokens[v->n++] = p;
        p = next;
    }
    if (v->n == 0 || sd_wordpiece_id(v, "[SEP]") < 0) {
        sd_wordpiece_free(v);
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: not a BERT WordPiece vocab.txt (no [SEP] token)", path);
    }
    *out = v;
    return SD_OK;
}

void sd_wordpiece_free(sd_wordpiece *v)
{
    if (!v)
        return;
    free(v->tokens);
    free(v->text);
    free(v);
}

int sd_wordpiece_size(const sd_wordpiece *v)
{
    return v->n;
}

int sd_wordpiece_id(const sd_wordpiece *v, const char *token)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], token) == 0)
            return i;
    return -1;
}

static bool is_special(const char *t)
{
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (strcmp(t, special[i]) == 0)
            return true;
    return false;
}

/* transformers' clean_up_tokenization: these replacements in this order. */
static void clean_up(char *s)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
        size_t nf = strlen(from[k]), nt = strlen(to[k]);
        char *w = s;
        for (const char *r = s; *r;) {
            if (strncmp(r, from[k], nf) == 0) {
                memmove(w, to[k], nt); /* nt < nf: never overtakes r */
                w += nt;
                r += nf;
            } else {
                *w++ = *r++;
            }
        }
        *w = 0;
    }
}

sd_status sd_wordpiece_decode(sd_context *ctx, const sd_wordpiece *v, const int32_t *ids, int n, char **out)
{
    size_t size = 1;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < v->n)
            size += strlen(v->tokens[ids[i]]) + 1;
    char *s = malloc(size), *w = s;
    if (!s)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n || is_special(v->tokens[ids[i]]))
            continue;
        const char *t = v->tokens[ids[i]];
        if (strncmp(t, "##", 2) == 0 && w > s)
            t += 2; /* " ##" removed: glued to the token before */
        else if (w > s)
            *w++ = ' ';
        size_t len = strlen(t);
        memcpy(w, t, len);
        w += len;
    }
    *w = 0;
    clean_up(s);
    char *start = s;
    while (*start == ' ')
        start++;
    size_t len = strlen(start);
    while (len && start[len - 1] == ' ')
        start[--len] = 0;
    memmove(s, start, len + 1);
    *out = s;
    return SD_OK;
}
