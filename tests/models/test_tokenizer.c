/* CLIP tokenizer against transformers' CLIPTokenizer goldens, and ComfyUI prompt weighting
 * (goldens plus hand-derived cases). */
#include "test.h"
#include "ml/text/prompt_weights.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static sd_context *ctx;
static sd_clip_tokenizer *tok;
static json_t *goldens;

static void load(void)
{
    char *path = test_path(test_source_dir(), "tests/data/goldens/tokens.json");
    json_error_t err;
    goldens = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!goldens)
        fprintf(stderr, "%s: %s\n", path, err.text);
    free(path);
}

static void test_vocabulary(void)
{
    CHECK_STR_EQ(sd_clip_token_string(tok, 0), "!");
    CHECK_STR_EQ(sd_clip_token_string(tok, 256), "!</w>");
    CHECK_STR_EQ(sd_clip_token_string(tok, 320), "a</w>");
    CHECK_STR_EQ(sd_clip_token_string(tok, 2368), "cat</w>");
    CHECK_STR_EQ(sd_clip_token_string(tok, SD_CLIP_BOS), "<|startoftext|>");
    CHECK_STR_EQ(sd_clip_token_string(tok, SD_CLIP_EOS), "<|endoftext|>");
    CHECK(sd_clip_token_string(tok, SD_CLIP_VOCAB) == NULL);
}

static void test_plain_goldens(void)
{
    json_t *plain = json_object_get(goldens, "plain");
    CHECK(json_array_size(plain) >= 50);
    size_t i;
    json_t *c;
    json_array_foreach(plain, i, c) {
        json_t *text = json_object_get(c, "text"), *want = json_object_get(c, "ids");
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        CHECK_EQ_INT(sd_clip_tokenize(ctx, tok, json_string_value(text), json_string_length(text), &ids, &n, &cap),
                     SD_OK);
        bool same = n + 2 == json_array_size(want);
        for (size_t k = 0; same && k < n; k++)
            same = ids[k] == json_integer_value(json_array_get(want, k + 1));
        CHECK_MSG(same, "golden %zu (\"%s\"): got %zu tokens, want %zu", i, json_string_value(text), n + 2,
                  json_array_size(want));
        if (!same)
            for (size_t k = 0; k < n; k++)
                fprintf(stderr, "  %d %s\n", ids[k], sd_clip_token_string(tok, ids[k]));
        free(ids);
    }
}

static void test_weighted_goldens(void)
{
    json_t *weighted = json_object_get(goldens, "weighted");
    CHECK(json_array_size(weighted) >= 20);
    size_t i;
    json_t *c;
    json_array_foreach(weighted, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        json_t *wt = json_object_get(c, "tokens"), *ww = json_object_get(c, "weights");
        sd_prompt_tokens pt;
        CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, text, NULL, NULL, &pt), SD_OK);
        CHECK_MSG(pt.n_windows == json_array_size(wt), "weighted %zu (\"%s\"): %zu windows, want %zu", i, text,
                  pt.n_windows, json_array_size(wt));
        for (size_t w = 0; w < pt.n_windows && w < json_array_size(wt); w++) {
            for (size_t k = 0; k < SD_CLIP_WINDOW; k++) {
                const sd_prompt_token *t = &pt.tokens[w * SD_CLIP_WINDOW + k];
                json_int_t id = json_integer_value(json_array_get(json_array_get(wt, w), k));
                double weight = json_number_value(json_array_get(json_array_get(ww, w), k));
                CHECK_MSG(t->kind == SD_PROMPT_TOKEN && t->id == id && t->weight == weight,
                          "weighted %zu (\"%s\") window %zu token %zu: %d/%.17g, want %lld/%.17g", i, text, w, k,
                          t->id, t->weight, (long long)id, weight);
            }
        }
        sd_prompt_tokens_free(&pt);
    }
}

typedef struct seg_case {
    const char *text;
    int n;
    const char *seg[3];
    double weight[3];
} seg_case;

static void test_parse_weights(void)
{
    static const seg_case cases[] = {
        {"(masterpiece:1.2), best", 2, {"masterpiece", ", best"}, {1.2, 1.0}},
        {"((a))", 1, {"a"}, {1.1 * 1.1}},
        {"(((a)))", 1, {"a"}, {1.1 * 1.1 * 1.1}},
        {"((a:1.5))", 1, {"a"}, {1.5}},
        {"((a:1.5) b)", 2, {"a", " b"}, {1.5, 1.1}},
        {"[a] {b}", 1, {"[a] {b}"}, {1.0}},
        {"\\(a\\) b", 1, {"(a) b"}, {1.0}},
        {"\\((a)", 2, {"(", "a"}, {1.0, 1.1}},
        {"(a:x)", 1, {"a:x"}, {1.1}},
        {"(a:0x10)", 1, {"a:0x10"}, {1.1}},
        {"(a:1e1)", 1, {"a"}, {10.0}},
        {"(a:1_5)", 1, {"a"}, {15.0}},
        {"(a: 0.5 )", 1, {"a"}, {0.5}},
        {"(a:.5)", 1, {"a"}, {0.5}},
        {"(a:-2)", 1, {"a"}, {-2.0}},
        {"(b:c:0.25)", 1, {"b:c"}, {0.25}},
        {"(:2)", 1, {":2"}, {1.1}},
        {"(a:2)(b)", 2, {"a", "b"}, {2.0, 1.1}},
        {"a)b(c", 1, {"a)b(c"}, {1.0}},
        {"(a", 1, {"(a"}, {1.0}},
        {"x (a", 2, {"x ", "(a"}, {1.0, 1.0}},
        {"()", 0, {0}, {0}},
        {"", 0, {0}, {0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sd_prompt_segment *s = NULL;
        size_t n = 0;
        CHECK_EQ_INT(sd_prompt_parse_weights(ctx, cases[i].text, &s, &n), SD_OK);
        CHECK_MSG((int)n == cases[i].n, "\"%s\": %zu segments, want %d", cases[i].text, n, cases[i].n);
        for (int k = 0; k < cases[i].n && k < (int)n; k++) {
            CHECK_STR_EQ(s[k].text, cases[i].seg[k]);
            CHECK_MSG(s[k].weight == cases[i].weight[k], "\"%s\" segment %d: weight %.17g, want %.17g",
                      cases[i].text, k, s[k].weight, cases[i].weight[k]);
        }
        sd_prompt_segments_free(s, n);
    }
}

static int lookup(void *user, const char *name)
{
    (void)user;
    return strcmp(name, "neg") == 0 ? 2 : strcmp(name, "one") == 0 ? 1 : 0;
}

static char warned[512];
static void capture(const char *line, void *user)
{
    (void)user;
    snprintf(warned, sizeof warned, "%s", line);
}

static void expect_window(const sd_prompt_tokens *pt, const sd_prompt_token *want, size_t n)
{
    CHECK_EQ_INT(pt->n_windows, 1);
    for (size_t k = 0; k < SD_CLIP_WINDOW && pt->n_windows; k++) {
        const sd_prompt_token *t = &pt->tokens[k];
        sd_prompt_token w = k < n ? want[k] : (sd_prompt_token){SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0};
        CHECK_MSG(t->kind == w.kind && t->id == w.id && t->embedding == w.embedding && t->word == w.word &&
                      t->weight == w.weight,
                  "token %zu: kind %d id %d emb %d word %d weight %g; want %d %d %d %d %g", k, t->kind, t->id,
                  t->embedding, t->word, t->weight, w.kind, w.id, w.embedding, w.word, w.weight);
    }
}

static void test_embeddings(void)
{
    sd_prompt_tokens pt;
    /* "embedding:neg," is not a name; "neg" is, and ", b" is tokenized after it. */
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, "a embedding:neg, b", lookup, NULL, &pt), SD_OK);
    const sd_prompt_token want[] = {
        {SD_PROMPT_TOKEN, SD_CLIP_BOS, -1, 0, 1.0},  {SD_PROMPT_TOKEN, 320, -1, 1, 1.0},
        {SD_PROMPT_EMBEDDING, 0, 0, 2, 1.0},         {SD_PROMPT_EMBEDDING, 1, 0, 2, 1.0},
        {SD_PROMPT_TOKEN, 267, -1, 3, 1.0},          {SD_PROMPT_TOKEN, 321, -1, 3, 1.0},
        {SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0},
    };
    expect_window(&pt, want, 7);
    CHECK(pt.n_embeddings == 1 && strcmp(pt.embeddings[0], "neg") == 0);
    sd_prompt_tokens_free(&pt);
    /* Weighted, two embeddings, one reused. */
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, "(embedding:one:1.5) embedding:neg embedding:one", lookup, NULL, &pt),
                 SD_OK);
    const sd_prompt_token want2[] = {
        {SD_PROMPT_TOKEN, SD_CLIP_BOS, -1, 0, 1.0}, {SD_PROMPT_EMBEDDING, 0, 0, 1, 1.5},
        {SD_PROMPT_EMBEDDING, 0, 1, 2, 1.0},        {SD_PROMPT_EMBEDDING, 1, 1, 2, 1.0},
        {SD_PROMPT_EMBEDDING, 0, 0, 3, 1.0},        {SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0},
    };
    expect_window(&pt, want2, 6);
    CHECK_EQ_INT(pt.n_embeddings, 2);
    sd_prompt_tokens_free(&pt);
    /* An unknown embedding is dropped with a warning; the text after it stays. */
    sd_context_set_log(ctx, capture, NULL);
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, "embedding:missing cat", lookup, NULL, &pt), SD_OK);
    CHECK_STR_EQ(warned, "embedding:missing does not exist, ignoring"); /* the name only */
    const sd_prompt_token want3[] = {
        {SD_PROMPT_TOKEN, SD_CLIP_BOS, -1, 0, 1.0}, {SD_PROMPT_TOKEN, 2368, -1, 1, 1.0},
        {SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0}};
    expect_window(&pt, want3, 3);
    sd_prompt_tokens_free(&pt);
    /* Without a lookup, "embedding:neg" is text. */
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, "embedding:neg", NULL, NULL, &pt), SD_OK);
    const sd_prompt_token want4[] = {
        {SD_PROMPT_TOKEN, SD_CLIP_BOS, -1, 0, 1.0}, {SD_PROMPT_TOKEN, 19703, -1, 1, 1.0},
        {SD_PROMPT_TOKEN, 796, -1, 1, 1.0},         {SD_PROMPT_TOKEN, 281, -1, 1, 1.0},
        {SD_PROMPT_TOKEN, 557, -1, 1, 1.0},         {SD_PROMPT_TOKEN, 326, -1, 1, 1.0},
        {SD_PROMPT_TOKEN, SD_CLIP_EOS, -1, 0, 1.0}};
    expect_window(&pt, want4, 7);
    CHECK_EQ_INT(pt.n_embeddings, 0);
    sd_prompt_tokens_free(&pt);
}

static void test_bad_text(void)
{
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK_EQ_INT(sd_clip_tokenize(ctx, tok, "abc\xc3(", 5, &ids, &n, &cap), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "prompt is not valid UTF-8 (byte 3)");
    CHECK_EQ_INT(sd_clip_tokenize(ctx, tok, "\xed\xa0\x80", 3, &ids, &n, &cap), SD_ERR_INVALID); /* surrogate */
    CHECK_EQ_INT(sd_clip_tokenize(ctx, tok, "\xc0\xaf", 2, &ids, &n, &cap), SD_ERR_INVALID);     /* overlong */
    CHECK_EQ_INT(n, 0);
    sd_prompt_tokens pt;
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, "(ok) \xff", NULL, NULL, &pt), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "prompt is not valid UTF-8 (byte 1)");
    CHECK(pt.tokens == NULL && pt.n_windows == 0);
    free(ids);
}

/* Whitespace-only prompts: words without tokens give the empty window (found by fuzz_prompt;
 * UBSan: "applying zero offset to null pointer" on the empty token array). */
static void test_blank_prompt(void)
{
    const char *texts[] = {" ", "  \t\n", "( )"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        sd_prompt_tokens pt;
        CHECK_EQ_INT(sd_prompt_tokenize(ctx, tok, texts[i], NULL, NULL, &pt), SD_OK);
        CHECK_EQ_INT(pt.n_windows, 1);
        if (pt.n_windows == 1) {
            CHECK_EQ_INT(pt.tokens[0].id, SD_CLIP_BOS);
            for (int k = 1; k < SD_CLIP_WINDOW; k++)
                CHECK_EQ_INT(pt.tokens[k].id, SD_CLIP_EOS);
        }
        sd_prompt_tokens_free(&pt);
    }
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK || sd_clip_tokenizer_new(ctx, &tok) != SD_OK) {
        fprintf(stderr, "setup: %s\n", ctx ? sd_context_errmsg(ctx) : "no context");
        return 2;
    }
    load();
    if (!goldens)
        return 2;
    RUN(test_vocabulary);
    RUN(test_plain_goldens);
    RUN(test_weighted_goldens);
    RUN(test_parse_weights);
    RUN(test_embeddings);
    RUN(test_bad_text);
    RUN(test_blank_prompt);
    json_decref(goldens);
    sd_clip_tokenizer_free(tok);
    sd_context_free(ctx);
    return test_summary("test_tokenizer");
}
