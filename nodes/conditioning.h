/* Reading CONDITIONING inputs (core/value.h's entry layout), shared by the nodes that take them
 * (nodes/conditioning.c defines it). */
#ifndef SD_NODES_CONDITIONING_H
#define SD_NODES_CONDITIONING_H
#include "core/node.h"

/* The entries list (the attrs' "entries" array, borrowed) of CONDITIONING input `input`, with
 * their number in *n. NULL when it has none, with the node's error set (SD_ERR_INVALID,
 * "input '<input>': the conditioning has no entries"). */
json_t *sd_node_cond_entries(sd_node_run *r, const char *input, size_t *n);

#endif
