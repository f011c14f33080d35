/* Checkpoints with a tensor left out or misshapen, for the inspection errors of the family tests. */
#ifndef SD_TEST_LAYOUT_CHECK_H
#define SD_TEST_LAYOUT_CHECK_H
#include "ml/families/checkpoint.h"

/* Writes cfg's UNet and text-encoder layout (zeros, f16) to the scratch directory with tensor
 * `drop` left out and tensor `grow` one row longer (either NULL), and expects
 * sd_checkpoint_inspect to fail with "<file>: <tail>". */
void test_expect_inspect_error(sd_context *ctx, const sd_checkpoint_config *cfg, const char *drop, const char *grow,
                               const char *tail);
#endif
