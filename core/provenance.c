/* Provenance for output nodes: the resolved workflow XML and the hashes of the files the run's
 * keys were computed from. Both are computed lazily, once per run. */
#include "core/run.h"
#include <stdlib.h>

/* The name a file is recorded under (malloc'd; NULL when out of memory). */
static char *recorded_name(const char *dir_kind, const char *name)
{
    return name[0] == '/' ? sd_strdup(name) : sd_strfmt("%s/%s", dir_kind, name);
}

sd_status sd_run_record_file(sd_run_state *s, const char *dir_kind, const char *name, const sd_key *hash)
{
    char hex[65];
    sd_key_hex(hash, hex);
    char *key = recorded_name(dir_kind, name);
    bool failed = !key || json_object_set_new(s->files, key, json_string(hex)) != 0;
    free(key);
    return failed ? sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory") : SD_OK;
}

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
        /* fp32, the default, is not written: those PNGs stay as they were before precisions. */
        if (root && sd_context_bf16(s->ctx) && json_object_set_new(root, "precision", json_string("bf16"))) {
            json_decref(root);
            root = NULL;
        }
        s->provenance_json = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(root);
        if (!s->provenance_json) {
            sd_run_error(r, SD_ERR_NOMEM, "out of memory");
            return NULL;
        }
    }
    return s->provenance_json;
}
