/* Checks before running (core/node.h, sd_check_*): run by sd_graph_validate on a graph that is
 * otherwise valid. */
#ifndef SD_CORE_CHECK_H
#define SD_CORE_CHECK_H

#include "core/graph.h"

/* Receives one problem: the node's source line, id, input (NULL for the node) and message. */
typedef void (*sd_check_report)(void *user, int line, const char *node_id, const char *input, const char *msg);

/* Calls every node's check hook in topological order (the graph must be valid and acyclic).
 * SD_ERR_NOMEM only; problems go to report. */
sd_status sd_graph_check(sd_graph *graph, sd_check_report report, void *user);

#endif
