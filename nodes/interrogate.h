/* CLIPInterrogate (nodes/interrogate.c): a test counter of label features computed. */
#ifndef SD_NODES_INTERROGATE_H
#define SD_NODES_INTERROGATE_H

#include <stdint.h>

/* Labels whose text features this process computed (not found in memory or the cache). */
int64_t sd_interrogate_labels_encoded(void);

#endif
