/* Node upgrades (core/upgrade.h) and the sd_upgrade_* API hooks use (core/node.h). */
#include "core/upgrade.h"
#include "core/node.h"
#include <stdlib.h>

struct sd_node_upgrade {
    sd_graph *graph;
    sd_graph_node *node;
};

sd_status sd_graph_upgrade_node(sd_graph *g, sd_graph_node *n)
{
    const sd_node_desc *d = n->desc;
    if (!d || n->version <= 0 || n->version >= d->version)
        return SD_OK;
    if (d->upgrade) {
        sd_node_upgrade up = {g, n};
        sd_status st = d->upgrade(&up, n->version);
        if (st) {
            sd_error_prefix(g->ctx, "node '%s' (%s): upgrade from version %d", n->id, n->type,
                            n->version);
            return st;
        }
    }
    n->version = d->version;
    return SD_OK;
}

sd_status sd_upgrade_rename_input(sd_node_upgrade *up, const char *old_name, const char *new_name)
{
    sd_graph_input *in = sd_graph_node_input(up->node, old_name);
    if (!in)
        return SD_OK;
    if (sd_graph_node_input(up->node, new_name))
        return sd_set_error(up->graph->ctx, SD_ERR_INVALID,
                            "cannot rename input '%s' to '%s': '%s' is already set", old_name,
                            new_name, new_name);
    char *name = sd_strdup(new_name);
    if (!name)
        return sd_set_error(up->graph->ctx, SD_ERR_NOMEM, "out of memory");
    free(in->name);
    in->name = name;
    return SD_OK;
}

const char *sd_upgrade_literal(sd_node_upgrade *up, const char *input)
{
    const sd_graph_input *in = sd_graph_node_input(up->node, input);
    return in && in->kind == SD_BIND_LITERAL ? in->text : NULL;
}

sd_status sd_upgrade_set_literal(sd_node_upgrade *up, const char *input, const char *text)
{
    const sd_graph_input *in = sd_graph_node_input(up->node, input);
    int line = in ? in->line : up->node->line;
    return sd_graph_bind_literal(up->graph, up->node, input, text, line);
}
