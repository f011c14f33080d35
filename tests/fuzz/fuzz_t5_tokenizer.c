/* Fuzzes the T5 tokenizer (ml/text/t5_tokenizer.c) on arbitrary bytes, as a T5 prompt reaches it:
 * sd_t5_tokenize on the raw bytes (invalid UTF-8 included), held to the error contract; on
 * success every id must be in the vocabulary and the last one </s>. */
#include "fuzz_util.h"
#include "ml/text/t5_tokenizer.h"
#include <stdlib.h>

static sd_t5_tokenizer *tokenizer;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    if (!tokenizer && sd_t5_tokenizer_new(ctx, &tokenizer) != SD_OK)
        abort();
    int32_t *ids = NULL;
    size_t n = 0;
    sd_status st = sd_t5_tokenize(ctx, tokenizer, (const char *)data, size, &ids, &n);
    fuzz_check_error(ctx, st);
    if (st == SD_OK && (n == 0 || ids[n - 1] != SD_T5_EOS))
        abort();
    for (size_t i = 0; i < n; i++)
        if (!sd_t5_piece(tokenizer, ids[i]))
            abort();
    free(ids);
    return 0;
}
