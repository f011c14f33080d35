/* Reading committed golden files (tests/data/goldens/) and comparing float arrays. */
#ifndef SD_TEST_GOLDEN_H
#define SD_TEST_GOLDEN_H
#include <stddef.h>

/* The malloc'd path of golden file `name`. */
char *test_golden_path(const char *name);
/* The whole golden file `name`, which must be exactly `bytes` long (a failed check otherwise);
 * malloc'd, or NULL when it could not be read. */
void *test_read_golden(const char *name, size_t bytes);
/* The body of an SDG1 golden (tests/reference/make_unet_goldens.py: magic, ndim, dims, then
 * float32 data) of ndim dimensions and n floats; malloc'd, or NULL (a failed check). */
float *test_read_sdg1(const char *name, int ndim, size_t n);
/* max |a[i] - b[i]| over n elements. */
double test_max_abs_diff(const float *a, const float *b, size_t n);
/* The count of the n bytes where a and b differ; *first: the index of the first (n when none). */
size_t test_count_diff_u8(const unsigned char *a, const unsigned char *b, size_t n, size_t *first);
/* Peak signal-to-noise ratio in dB of a against the reference b for signals of the given range. */
double test_psnr(const float *a, const float *b, size_t n, double range);
#endif
