/* Provenance for output nodes: the resolved workflow XML and the hashes of the files the run's
 * keys were computed from. Both are computed lazily, once per run. */
#include "core/run.h"
#include <stdlib.h>

const char *sd_run_workflow_xml(sd_node_run *r)
{
    sd_run_state *s = r->state;
    if (!s->workflow_xml) {
        sd_status st = sd_graph_to_xml(s->graph, true, &s->workflow_xml);
        if (st) {
            s->workflow_xml = NULL;
            sd_error_prefix(s->ctx, "node '%s' (%s): writing the workflow XML", r->node->gn->id,
                            r->node->desc->name);
            r->error_set = true;
            return NULL;
        }
    }
    return s->workflow_xml;
}

const char *sd_run_provenance_json(sd_node_run *r)
{
    sd_run_state *s = r->state;
    if (!s->provenance_json) {
        json_t *root = json_pack("{s:s, s:O}", "engine", sd_version(), "files", s->files);
        s->provenance_json = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(root);
        if (!s->provenance_json) {
            sd_run_error(r, SD_ERR_NOMEM, "out of memory");
            return NULL;
        }
    }
    return s->provenance_json;
}
