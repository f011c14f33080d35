/* Shorthands for node descriptors. */
#ifndef SD_NODES_NODE_UTIL_H
#define SD_NODES_NODE_UTIL_H
#include "core/node.h"

#define SD_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Input declarations. */
#define SD_IN_LINK(nm, ty, dc) {.name = nm, .type = ty, .doc = dc}
#define SD_IN_LINK_OPT(nm, ty, dc) {.name = nm, .type = ty, .flags = SD_IN_OPTIONAL, .doc = dc}
#define SD_IN_INT(nm, df, lo, hi, dc) \
    {.name = nm, .type = SD_TYPE_INT, .flags = SD_IN_RANGED, .def = df, .min = lo, .max = hi, .doc = dc}
#define SD_IN_FLOAT(nm, df, lo, hi, dc) \
    {.name = nm, .type = SD_TYPE_FLOAT, .flags = SD_IN_RANGED, .def = df, .min = lo, .max = hi, .doc = dc}
#define SD_IN_BOOL(nm, df, dc) {.name = nm, .type = SD_TYPE_BOOLEAN, .def = df, .doc = dc}
#define SD_IN_STRING(nm, df, dc) {.name = nm, .type = SD_TYPE_STRING, .def = df, .doc = dc}
#define SD_IN_TEXT(nm, df, dc) \
    {.name = nm, .type = SD_TYPE_STRING, .flags = SD_IN_MULTILINE, .def = df, .doc = dc}
#define SD_IN_ENUM(nm, df, ch, dc) {.name = nm, .type = SD_TYPE_ENUM, .def = df, .choices = ch, .doc = dc}
#define SD_IN_PREFIX(nm, df, dc) \
    {.name = nm, .type = SD_TYPE_STRING, .flags = SD_IN_OUTPUT_PREFIX, .def = df, .doc = dc}
#define SD_IN_FILE_NAME(nm, dir, dc) \
    {.name = nm, .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = dir, .doc = dc}
/* Seeds are 0 ... 2^64 - 1 as in ComfyUI; an INT input whose maximum lies beyond INT64_MAX
 * takes unsigned values (sd_input_parse_int), read back with a cast to uint64_t. */
#define SD_SEED_MAX 18446744073709551615.0
/* What `sdflow run --repeat` does to the seed before it follows (ComfyUI's widget of that
 * name); no effect on the node's outputs. The choices are in nodes/ksampler.c. */
extern const char *const sd_seed_controls[];
#define SD_IN_SEED_CONTROL                                                                         \
    SD_IN_ENUM("control_after_generate", "fixed", sd_seed_controls,                                 \
               "what --repeat does to the seed before the next run: fixed, increment, decrement or " \
               "randomize")

#define SD_OUT(nm, ty, dc) {.name = nm, .type = ty, .doc = dc}

#endif
