/* Turning a reusable workflow into a concrete one: parameters become literal inputs. */
#include "core/graph.h"
#include <stdlib.h>

sd_status sd_graph_inline_params(sd_graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        sd_graph_node *n = &g->nodes[i];
        for (size_t j = 0; j < n->n_inputs; j++) {
            sd_graph_input *in = &n->inputs[j];
            const sd_graph_param *p = in->kind == SD_BIND_PARAM ? sd_graph_find_param(g, in->param) : NULL;
            if (!p)
                continue; /* an undeclared parameter stays for validation to report */
            sd_status st = sd_graph_bind_literal(g, n, in->name, p->value ? p->value : p->def, in->line);
            if (st)
                return st;
        }
    }
    for (size_t i = 0; i < g->n_params; i++) {
        sd_graph_param *p = &g->params[i];
        free(p->name);
        free(p->type);
        free(p->def);
        free(p->doc);
        free(p->value);
    }
    g->n_params = 0;
    return SD_OK;
}
