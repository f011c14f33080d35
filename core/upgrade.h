/* Upgrading nodes saved by an older node version: runs the descriptor's upgrade hook, which
 * edits the node's bindings through the sd_upgrade_* functions of core/node.h. */
#ifndef SD_CORE_UPGRADE_H
#define SD_CORE_UPGRADE_H

#include "core/graph.h"

/* When node->version is older than node->desc->version, calls the descriptor's upgrade hook
 * (if any) and sets node->version to the current version; otherwise does nothing. A failing
 * hook's status is returned with the message prefixed by "node 'id' (Type): upgrade from
 * version N". Nodes of unknown type are left alone (validation reports them). */
sd_status sd_graph_upgrade_node(sd_graph *graph, sd_graph_node *node);

#endif
