/* The WordPiece vocabulary and decoding of BLIP captions (ml/text/wordpiece.h) against what
 * transformers' BertTokenizer.decode(skip_special_tokens=True) gives for the same ids: "##"
 * pieces glued, special and added tokens skipped, spaces before punctuation and contractions
 * removed; bad vocab files. */
#include "test.h"
#include "ml/text/wordpiece.h"
#include <stdlib.h>

static sd_context *ctx;

static const char vocab_text[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\ncat\n##s\non\nthe\n.\n,\n'\ns\nn\n##'t\ndon\n"
                                 "sitting\r\n##ting\nit\n";

static void decode(const sd_wordpiece *v, const int32_t *ids, int n, const char *want)
{
    char *got = NULL;
    CHECK_EQ_INT(sd_wordpiece_decode(ctx, v, ids, n, &got), SD_OK);
    CHECK_STR_EQ(got, want);
    free(got);
}

static void test_decode(void)
{
    sd_wordpiece *v = NULL;
    CHECK_EQ_INT(sd_wordpiece_parse(ctx, "vocab.txt", vocab_text, sizeof vocab_text - 1, &v), SD_OK);
    if (!v)
        return;
    CHECK_EQ_INT(sd_wordpiece_size(v), 20);
    CHECK_EQ_INT(sd_wordpiece_id(v, "[SEP]"), 3);
    CHECK_EQ_INT(sd_wordpiece_id(v, "sitting"), 17); /* CRLF line */
    CHECK_EQ_INT(sd_wordpiece_id(v, "[DEC]"), -1);
    /* [DEC] a cat ##s sitting on the . [SEP] */
    decode(v, (const int32_t[]){20, 5, 6, 7, 17, 8, 9, 10, 3}, 9, "a cats sitting on the.");
    /* [CLS] it ' s a cat , [UNK] [PAD] */
    decode(v, (const int32_t[]){2, 19, 12, 13, 5, 6, 11, 1, 0}, 9, "it's a cat,");
    /* ##s first stays as it is; "don ##'t" */
    decode(v, (const int32_t[]){7, 16, 15}, 3, "##s don't");
    decode(v, (const int32_t[]){3, 21}, 2, "");
    sd_wordpiece_free(v);
}

static void test_bad_vocab(void)
{
    sd_wordpiece *v = NULL;
    CHECK_EQ_INT(sd_wordpiece_parse(ctx, "v.txt", "a\nb\n", 4, &v), SD_ERR_PARSE);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "v.txt: not a BERT WordPiece vocab.txt (no [SEP] token)");
    CHECK_EQ_INT(sd_wordpiece_parse(ctx, "v.txt", "[SEP]\n\nb\n", 9, &v), SD_ERR_PARSE);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "v.txt: line 2 is empty (a WordPiece vocab.txt has one token a line)");
    CHECK_EQ_INT(sd_wordpiece_parse(ctx, "v.txt", "", 0, &v), SD_ERR_PARSE);
    CHECK(v == NULL);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    RUN(test_decode);
    RUN(test_bad_vocab);
    sd_context_free(ctx);
    return test_summary("test_wordpiece");
}
