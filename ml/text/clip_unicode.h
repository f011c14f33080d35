/* Unicode tables for the CLIP tokenizer, generated into ml/text/clip_unicode.c by
 * tests/reference/make_clip_unicode.py (all planes, not only the BMP). Sorted by first field. */
#ifndef SD_ML_CLIP_UNICODE_H
#define SD_ML_CLIP_UNICODE_H
#include <stddef.h>
#include <stdint.h>

typedef struct sd_uc_range {
    uint32_t lo, hi; /* inclusive */
} sd_uc_range;

typedef struct sd_uc_map {
    uint32_t cp, a, b;
} sd_uc_map;

extern const sd_uc_range sd_uc_letters[]; /* general category L* */
extern const size_t sd_uc_letters_count;
extern const sd_uc_range sd_uc_numbers[]; /* general category N* */
extern const size_t sd_uc_numbers_count;
extern const sd_uc_map sd_uc_lower[];     /* cp -> a (, b): full lowercase of one code point */
extern const size_t sd_uc_lower_count;
extern const sd_uc_map sd_uc_decomp[];    /* cp -> a (, b): canonical decomposition, one level */
extern const size_t sd_uc_decomp_count;
extern const sd_uc_map sd_uc_ccc[];       /* cp -> a: non-zero canonical combining class */
extern const size_t sd_uc_ccc_count;
extern const sd_uc_map sd_uc_compose[];   /* (cp, a) -> b: primary composites, sorted by (cp, a) */
extern const size_t sd_uc_compose_count;

#endif
