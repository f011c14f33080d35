/* Unicode grapheme-cluster properties for the T5 tokenizer, generated into ml/text/t5_unicode.c by
 * tests/reference/make_t5_unicode.py (all planes). */
#ifndef SD_ML_T5_UNICODE_H
#define SD_ML_T5_UNICODE_H
#include <stddef.h>
#include <stdint.h>

/* Grapheme_Cluster_Break values (UAX #29), the low 4 bits of a property byte. */
typedef enum sd_t5_gcb {
    SD_GCB_OTHER, SD_GCB_CR, SD_GCB_LF, SD_GCB_CONTROL, SD_GCB_EXTEND, SD_GCB_ZWJ, SD_GCB_RI, SD_GCB_PREPEND,
    SD_GCB_SPACINGMARK, SD_GCB_L, SD_GCB_V, SD_GCB_T, SD_GCB_LV, SD_GCB_LVT
} sd_t5_gcb;

#define SD_UC_EXTPICT 0x10      /* Extended_Pictographic */
#define SD_UC_INCB_SHIFT 5      /* Indic_Conjunct_Break: 0 none, 1 Consonant, 2 Extend, 3 Linker */

typedef struct sd_t5_uc_range {
    uint32_t lo, hi; /* inclusive */
    uint8_t props;   /* gcb | SD_UC_EXTPICT | incb << SD_UC_INCB_SHIFT */
} sd_t5_uc_range;

/* Ranges with non-zero properties, sorted; code points outside them have 0 (Other). */
extern const sd_t5_uc_range sd_t5_uc_props[];
extern const size_t sd_t5_uc_props_count;

#endif
