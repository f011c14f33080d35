/* T5 tokenizer: ids equal to transformers' T5TokenizerFast on the committed goldens
 * (tests/reference/make_t5_token_goldens.py), invalid UTF-8, the length limit. */
#include "test.h"
#include "ml/text/t5_tokenizer.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sd_context *ctx;
static sd_t5_tokenizer *tok;

static void test_goldens(void)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = test_path(dir, "t5_tokens.json");
    json_error_t err;
    json_t *rows = json_load_file(path, JSON_ALLOW_NUL, &err);
    CHECK_MSG(json_is_array(rows), "%s: %s", path, err.text);
    CHECK(json_array_size(rows) >= 150);
    size_t i, mismatches = 0;
    json_t *row;
    json_array_foreach(rows, i, row) {
        json_t *text = json_object_get(row, "text"), *want = json_object_get(row, "ids");
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_EQ_INT(sd_t5_tokenize(ctx, tok, json_string_value(text), json_string_length(text), &ids, &n), SD_OK);
        bool same = n == json_array_size(want);
        for (size_t k = 0; same && k < n; k++)
            same = ids[k] == json_integer_value(json_array_get(want, k));
        if (!same && mismatches++ < 10) {
            char got[512] = "";
            for (size_t k = 0, o = 0; k < n && o < sizeof got - 16; k++)
                o += (size_t)snprintf(got + o, sizeof got - o, "%d ", ids[k]);
            char *w = json_dumps(want, JSON_COMPACT);
            test_fail(__FILE__, __LINE__, "prompt %zu \"%s\": got [%s] want %s", i, json_string_value(text), got, w);
            free(w);
        }
        free(ids);
    }
    CHECK_EQ_INT(mismatches, 0);
    json_decref(rows);
    free(path);
    free(dir);
}

static void test_basics(void)
{
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sd_t5_vocab_size(tok), 32100);
    CHECK_STR_EQ(sd_t5_piece(tok, SD_T5_EOS), "</s>");
    CHECK_STR_EQ(sd_t5_piece(tok, 1712), "\xe2\x96\x81" "cat");
    CHECK(sd_t5_piece(tok, 32100) == NULL && sd_t5_piece(tok, -1) == NULL);
    CHECK_EQ_INT(sd_t5_tokenize(ctx, tok, "", 0, &ids, &n), SD_OK);
    CHECK(n == 1 && ids[0] == SD_T5_EOS);
    free(ids);
    CHECK_EQ_INT(sd_t5_tokenize(ctx, tok, "ok \xff", 4, &ids, &n), SD_ERR_INVALID);
    CHECK(ids == NULL && n == 0);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "prompt is not valid UTF-8 (byte 3)");
    CHECK_EQ_INT(sd_t5_tokenize(ctx, tok, "x", SD_T5_MAX_TEXT + 1, &ids, &n), SD_ERR_LIMIT);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "prompt is 1048577 bytes; at most 1048576 are accepted");
}

/* A long prompt tokenizes in time linear in its length (the longest piece bounds each step). */
static void test_long_prompt(void)
{
    size_t len = 200000;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++)
        text[i] = "abc defg, 12 "[i % 13];
    int32_t *ids = NULL;
    size_t n = 0;
    clock_t t0 = clock();
    CHECK_EQ_INT(sd_t5_tokenize(ctx, tok, text, len, &ids, &n), SD_OK);
    double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK_MSG(s < 5.0, "200 kB took %.2f s", s);
    CHECK(n > 40000 && ids[n - 1] == SD_T5_EOS);
    free(ids);
    free(text);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK || sd_t5_tokenizer_new(ctx, &tok) != SD_OK) {
        fprintf(stderr, "test_t5_tokenizer: %s\n", ctx ? sd_context_errmsg(ctx) : "no context");
        return 1;
    }
    RUN(test_basics);
    RUN(test_goldens);
    RUN(test_long_prompt);
    sd_t5_tokenizer_free(tok);
    sd_context_free(ctx);
    return test_summary("test_t5_tokenizer");
}
