/* Tiny checkpoints for the family tests: opened from a preset, or with a tensor left out or
 * misshapen for the inspection errors. */
#ifndef SD_TEST_LAYOUT_CHECK_H
#define SD_TEST_LAYOUT_CHECK_H
#include "ml/families/checkpoint.h"

/* Writes cfg's UNet and text-encoder layout (zeros, f16) to the scratch directory with tensor
 * `drop` left out and tensor `grow` one row longer (either NULL), and expects
 * sd_checkpoint_inspect to fail with "<file>: <tail>". */
void test_expect_inspect_error(sd_context *ctx, const sd_checkpoint_config *cfg, const char *drop, const char *grow,
                               const char *tail);
/* Writes the preset's checkpoint (f32 random weights from seed) as `file` in the scratch directory,
 * opens and inspects it into *st and *cfg; false (reported on stderr) on failure. */
bool test_open_preset(sd_context *ctx, const char *preset, const char *file, uint64_t seed, sd_safetensors **st,
                      sd_checkpoint_config *cfg);
#endif
