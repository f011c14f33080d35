/* sd_graph_run: validate, plan (core/plan.c), then run the needed nodes in topological order,
 * storing what they compute and freeing each value after its last consumer has run. */
#include "core/cache.h"
#include "core/run.h"
#include "core/comfy.h"
#include <stdlib.h>
#include <string.h>

/* Drops one hold on a node's outputs; frees them with the last one. */
static void release(sd_run_state *s, sd_plan_node *p)
{
    if (p->holds > 0 && --p->holds > 0)
        return;
    if (!p->outputs)
        return;
    for (size_t i = 0; i < p->desc->n_outputs; i++)
        sd_value_unref(p->outputs[i]);
    free(p->outputs);
    p->outputs = NULL;
    s->live--;
}

static bool types_match(sd_type want, sd_type have)
{
    return want == have || (want == SD_TYPE_ENUM && have == SD_TYPE_STRING) ||
           (want == SD_TYPE_STRING && have == SD_TYPE_ENUM);
}

/* Checks a linked value against the input it feeds: its type, an enumeration's choices, a
 * range (literals were checked by validation; linked values only now). */
static sd_status check_linked(sd_node_run *r, const sd_input_desc *in, const sd_value *v)
{
    char msg[512];
    if (!v || !types_match(in->type, v->type))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s' expects %s but got %s", in->name,
                            sd_type_name(in->type), v ? sd_type_name(v->type) : "nothing");
    if (in->type == SD_TYPE_ENUM && !sd_literal_check(in, v->s ? v->s : "", msg, sizeof msg))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': %s", in->name, msg);
    if ((in->flags & SD_IN_RANGED) && in->type == SD_TYPE_INT &&
        ((double)v->i < in->min || (double)v->i > in->max))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': %lld is out of range [%.17g, %.17g]", in->name,
                            (long long)v->i, in->min, in->max);
    if ((in->flags & SD_IN_RANGED) && in->type == SD_TYPE_FLOAT && !(v->f >= in->min && v->f <= in->max))
        return sd_run_error(r, SD_ERR_INVALID, "input '%s': %.17g is out of range [%.17g, %.17g]", in->name,
                            v->f, in->min, in->max);
    return SD_OK;
}

/* A literal's value (validated text, parsed per type); NULL and an error on failure. */
static sd_value *literal_value(sd_node_run *r, const sd_input_desc *in, const char *text)
{
    char msg[512];
    sd_value *v = NULL;
    if (!sd_literal_check(in, text, msg, sizeof msg)) {
        sd_run_error(r, SD_ERR_INVALID, "input '%s': %s", in->name, msg);
        return NULL;
    }
    switch (in->type) {
    case SD_TYPE_INT: {
        int64_t i = 0;
        sd_input_parse_int(in, text, &i);
        v = sd_value_int(i);
        break;
    }
    case SD_TYPE_FLOAT: {
        double f = 0;
        sd_parse_float(text, &f);
        v = sd_value_float(f);
        break;
    }
    case SD_TYPE_BOOLEAN: {
        bool b = false;
        sd_parse_bool(text, &b);
        v = sd_value_bool(b);
        break;
    }
    default:
        v = sd_value_string(in->type, text);
        break;
    }
    if (!v)
        sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    return v;
}

static sd_status prepare_inputs(sd_run_state *s, sd_node_run *r)
{
    const sd_plan_node *p = r->node;
    for (size_t i = 0; i < p->desc->n_inputs; i++) {
        const sd_plan_input *pi = &p->inputs[i];
        if (pi->src != SD_NO_SOURCE) {
            sd_value *v = s->nodes[pi->src].outputs[pi->src_output];
            sd_status st = check_linked(r, pi->desc, v);
            if (st)
                return st;
            r->in_values[i] = v;
        } else if (pi->text) {
            if (!(r->in_values[i] = literal_value(r, pi->desc, pi->text)))
                return SD_ERR_INVALID;
            r->in_owned[i] = true;
        } else if (!(pi->desc->flags & SD_IN_OPTIONAL)) {
            return sd_run_error(r, SD_ERR_INVALID, "required input '%s' is not set", pi->desc->name);
        }
    }
    return SD_OK;
}

/* After a successful run: every output set, with its declared type. */
static sd_status check_outputs(sd_node_run *r)
{
    const sd_plan_node *p = r->node;
    for (size_t i = 0; i < p->desc->n_outputs; i++) {
        const sd_output_desc *o = &p->desc->outputs[i];
        if (!p->outputs[i])
            return sd_run_error(r, SD_ERR_INVALID, "output '%s' was not set", o->name);
        if (!types_match(o->type, p->outputs[i]->type))
            return sd_run_error(r, SD_ERR_INVALID, "output '%s' is %s, declared %s", o->name,
                                sd_type_name(p->outputs[i]->type), sd_type_name(o->type));
    }
    return SD_OK;
}

/* A node event; NODE_DONE carries the files written since file `first_file` of the result. */
static void progress(sd_run_state *s, const sd_plan_node *p, sd_progress_kind kind, double seconds,
                     size_t first_file)
{
    sd_progress ev = {
        .kind = kind, .node_id = p->gn->id, .node_type = p->desc->name, .node_index = p->index,
        .node_count = s->n_needed, .seconds = seconds,
    };
    if (kind == SD_PROGRESS_NODE_DONE)
        ev.files = sd_result_files_from(s->result, first_file, &ev.n_files);
    sd_emit_progress(s->ctx, &ev);
}

/* Runs one node: inputs, the node's function, output checks, the cache store. */
static sd_status run_node(sd_run_state *s, sd_plan_node *p, sd_cache *cache)
{
    size_t n_in = p->desc->n_inputs ? p->desc->n_inputs : 1;
    sd_node_run r = {.state = s, .node = p};
    r.in_values = calloc(n_in, sizeof *r.in_values);
    r.in_owned = calloc(n_in, sizeof *r.in_owned);
    p->outputs = calloc(p->desc->n_outputs ? p->desc->n_outputs : 1, sizeof *p->outputs);
    sd_status st;
    if (!r.in_values || !r.in_owned || !p->outputs) {
        st = sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = prepare_inputs(s, &r)))
        goto done;
    size_t first_file = sd_result_file_count(s->result);
    progress(s, p, SD_PROGRESS_NODE_START, sd_run_clock() - s->t0, 0);
    double t = sd_run_clock();
    sd_clear_error(s->ctx);
    s->ctx->read_guard = sd_run_read_guard; /* the node may read only the files in its key */
    s->ctx->read_guard_user = &r;
    st = p->desc->run(&r);
    s->ctx->read_guard = NULL;
    s->ctx->read_guard_user = NULL;
    p->seconds = sd_run_clock() - t;
    p->ran = true; /* its outcome is RAN even when it failed: the run's status says that */
    if (st) {
        if (!r.error_set) {
            if (!s->ctx->errmsg[0])
                sd_set_error(s->ctx, st, "%s", sd_status_name(st));
            sd_error_prefix(s->ctx, "node '%s' (%s)", p->gn->id, p->desc->name);
        }
        goto done;
    }
    if ((st = check_outputs(&r)))
        goto done;
    if (++s->live > s->peak_live)
        s->peak_live = s->live;
    progress(s, p, SD_PROGRESS_NODE_DONE, p->seconds, first_file);
    bool store = cache && sd_plan_storable(p);
    for (size_t i = 0; store && i < p->desc->n_outputs; i++)
        store = sd_value_cacheable(p->outputs[i]);
    if (store)
        sd_cache_put(cache, &p->key, p->desc->name, p->desc->n_outputs, p->outputs);
done:
    if (st && p->outputs) {
        for (size_t i = 0; i < p->desc->n_outputs; i++)
            sd_value_unref(p->outputs[i]);
        free(p->outputs);
        p->outputs = NULL;
    }
    for (size_t i = 0; r.in_owned && i < p->desc->n_inputs; i++)
        if (r.in_owned[i])
            sd_value_unref(r.in_values[i]);
    free(r.in_values);
    free(r.in_owned);
    return st;
}

static sd_status execute(sd_run_state *s, sd_cache *cache)
{
    sd_progress plan = {.kind = SD_PROGRESS_PLAN, .node_count = s->n_needed};
    sd_emit_progress(s->ctx, &plan);
    for (size_t k = 0; k < s->n_nodes; k++) {
        sd_plan_node *p = &s->nodes[k];
        if (!p->needed)
            continue;
        if (s->ctx->interrupted)
            return sd_set_error(s->ctx, SD_ERR_INTERRUPTED, "interrupted before node '%s' (%s)", p->gn->id,
                                p->desc->name);
        if (p->cached) {
            progress(s, p, SD_PROGRESS_NODE_CACHED, sd_run_clock() - s->t0, 0);
            continue;
        }
        sd_status st = run_node(s, p, cache);
        if (st)
            return st;
        for (size_t i = 0; i < p->desc->n_inputs; i++)
            if (p->inputs[i].src != SD_NO_SOURCE)
                release(s, &s->nodes[p->inputs[i].src]);
        if (p->holds == 0)
            release(s, p);
    }
    for (size_t k = 0; k < s->n_nodes; k++) {
        sd_plan_node *p = &s->nodes[k];
        if (p->wanted && p->outputs && sd_result_keep(s->result, p->gn->id, p->desc, p->outputs))
            return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
    }
    return SD_OK;
}

/* Records every planned node's outcome, then frees the plan and any values still held. */
static sd_status finish(sd_run_state *s, sd_status st)
{
    for (size_t k = 0; k < s->n_nodes; k++) {
        sd_plan_node *p = &s->nodes[k];
        sd_node_outcome outcome = p->ran ? SD_NODE_RAN : p->cached ? SD_NODE_CACHED : SD_NODE_SKIPPED;
        if (sd_result_add_stat(s->result, p->gn->id, p->desc->name, outcome, p->seconds) && !st)
            st = sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
        if (p->outputs) {
            p->holds = 0;
            release(s, p);
        }
        sd_plan_node_clear(p);
    }
    sd_result_set_peak(s->result, s->peak_live);
    free(s->nodes);
    json_decref(s->files);
    free(s->workflow_xml);
    free(s->provenance_json);
    sd_interop_texts_free(s->interop);
    return st;
}

sd_status sd_graph_run(sd_graph *graph, const sd_run_options *options, sd_result **out)
{
    return sd_graph_run_checked(graph, options, NULL, NULL, out);
}

sd_status sd_graph_run_checked(sd_graph *graph, const sd_run_options *options, sd_plan_check_fn check,
                               void *user, sd_result **out)
{
    static const sd_run_options defaults = {0};
    sd_context *ctx = graph->ctx;
    sd_run_state s = {.graph = graph, .ctx = ctx, .t0 = sd_run_clock()};
    if (out)
        *out = NULL;
    if (!options)
        options = &defaults;
    sd_context_clear_interrupt(ctx);
    sd_clear_error(ctx);
    if (sd_result_create(&s.result) || !(s.files = json_object())) {
        sd_result_free(s.result);
        json_decref(s.files);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    sd_status st = sd_graph_validate(graph);
    if (st) {
        if (!ctx->errmsg[0])
            sd_set_error(ctx, st, "the workflow is invalid (%zu problems)", sd_context_diag_count(ctx));
        goto done;
    }
    sd_cache *cache = s.cache = options->no_cache ? NULL : sd_context_cache(ctx);
    if ((st = sd_plan_make(&s, options, cache)) || (check && (st = check(&s, user))))
        goto done;
    st = execute(&s, cache);
done:
    st = finish(&s, st);
    if (out)
        *out = s.result;
    else
        sd_result_free(s.result);
    return st;
}
