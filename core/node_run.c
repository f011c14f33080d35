/* The API a node's run function uses (core/node.h): typed inputs, outputs, errors, progress. */
#include "core/run.h"
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

double sd_run_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

sd_context *sd_run_context(sd_node_run *r)
{
    return r->state->ctx;
}

const char *sd_run_node_id(sd_node_run *r)
{
    return r->node->gn->id;
}

const sd_node_desc *sd_run_desc(sd_node_run *r)
{
    return r->node->desc;
}

/* Index of a declared input; asking for an undeclared one is a programming error. */
static size_t input_index(sd_node_run *r, const char *name)
{
    const sd_node_desc *d = r->node->desc;
    for (size_t i = 0; i < d->n_inputs; i++)
        if (strcmp(d->inputs[i].name, name) == 0)
            return i;
    assert(!"node asked for an input its descriptor does not declare");
    return 0;
}

bool sd_run_has(sd_node_run *r, const char *input)
{
    return r->in_values[input_index(r, input)] != NULL;
}

sd_value *sd_run_value(sd_node_run *r, const char *input)
{
    return r->in_values[input_index(r, input)];
}

static const sd_value *scalar(sd_node_run *r, const char *input, sd_type type)
{
    const sd_value *v = r->in_values[input_index(r, input)];
    assert(v && (v->type == type || (type == SD_TYPE_STRING && v->type == SD_TYPE_ENUM) ||
                 (type == SD_TYPE_ENUM && v->type == SD_TYPE_STRING)));
    (void)type;
    return v;
}

int64_t sd_run_int(sd_node_run *r, const char *input)
{
    return scalar(r, input, SD_TYPE_INT)->i;
}

double sd_run_float(sd_node_run *r, const char *input)
{
    return scalar(r, input, SD_TYPE_FLOAT)->f;
}

bool sd_run_bool(sd_node_run *r, const char *input)
{
    return scalar(r, input, SD_TYPE_BOOLEAN)->b;
}

const char *sd_run_string(sd_node_run *r, const char *input)
{
    return scalar(r, input, SD_TYPE_STRING)->s;
}

const char *sd_run_file(sd_node_run *r, const char *input)
{
    size_t i = input_index(r, input);
    assert(r->node->desc->inputs[i].flags & SD_IN_FILE);
    return r->node->inputs[i].file;
}

void sd_run_set_output(sd_node_run *r, size_t index, sd_value *value)
{
    assert(index < r->node->desc->n_outputs);
    sd_value_unref(r->node->outputs[index]);
    r->node->outputs[index] = value;
}

sd_status sd_run_error(sd_node_run *r, sd_status status, const char *fmt, ...)
{
    char msg[sizeof r->state->ctx->errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sd_set_error(r->state->ctx, status, "node '%s' (%s): %s", r->node->gn->id, r->node->desc->name, msg);
    r->error_set = true;
    return status;
}

sd_status sd_run_fail(sd_node_run *r, sd_status status)
{
    char msg[sizeof r->state->ctx->errmsg];
    snprintf(msg, sizeof msg, "%s", sd_context_errmsg(r->state->ctx));
    return sd_run_error(r, status, "%s", msg);
}

void sd_run_warn(sd_node_run *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sd_warn(r->state->ctx, "node '%s' (%s): %s", r->node->gn->id, r->node->desc->name, msg);
}

bool sd_run_interrupted(sd_node_run *r)
{
    return r->state->ctx->interrupted != 0;
}

bool sd_run_wants_preview(sd_node_run *r)
{
    return r->state->ctx->previews && r->state->ctx->progress_fn;
}

sd_status sd_run_progress(sd_node_run *r, int step, int steps)
{
    return sd_run_progress_preview(r, step, steps, NULL, 0, 0);
}

sd_status sd_run_progress_preview(sd_node_run *r, int step, int steps, const uint8_t *rgb, int width, int height)
{
    sd_run_state *s = r->state;
    sd_progress ev = {
        .kind = SD_PROGRESS_STEP, .node_id = r->node->gn->id, .node_type = r->node->desc->name,
        .node_index = r->node->index, .node_count = s->n_needed, .step = step, .steps = steps,
        .seconds = sd_run_clock() - s->t0, .preview_rgb = rgb, .preview_width = rgb ? width : 0,
        .preview_height = rgb ? height : 0,
    };
    sd_emit_progress(s->ctx, &ev);
    if (s->ctx->interrupted)
        return sd_run_error(r, SD_ERR_INTERRUPTED, "interrupted");
    return SD_OK;
}

sd_status sd_run_add_file(sd_node_run *r, const char *path)
{
    if (sd_result_add_file_path(r->state->result, r->node->gn->id, path))
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

bool sd_run_linked(sd_node_run *r, const char *input)
{
    return r->node->inputs[input_index(r, input)].src != SD_NO_SOURCE;
}

static bool same_names(const sd_plan_lookup *l, const char *kind, const char *const *names, size_t n)
{
    if (strcmp(l->kind, kind) != 0 || l->n_names != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(l->names[i], names[i]) != 0)
            return false;
    return true;
}

sd_status sd_run_found_file(sd_node_run *r, const char *kind, const char *const *names, size_t n, const char **path)
{
    *path = NULL;
    for (size_t i = 0; i < r->node->n_lookups; i++)
        if (same_names(&r->node->lookups[i], kind, names, n)) {
            *path = r->node->lookups[i].path;
            return SD_OK;
        }
    return sd_run_error(r, SD_ERR_INVALID, "looked for %s file '%s' without declaring it in its files hook", kind,
                        n ? names[0] : "");
}

/* The identity a file the node may read had when the plan hashed it, or NULL. */
static const sd_file_id *declared(const sd_plan_node *p, const char *path)
{
    for (size_t i = 0; i < p->desc->n_inputs; i++)
        if (p->inputs[i].file && strcmp(p->inputs[i].file, path) == 0)
            return &p->inputs[i].file_id;
    for (size_t i = 0; i < p->n_lookups; i++)
        if (p->lookups[i].path && strcmp(p->lookups[i].path, path) == 0)
            return &p->lookups[i].id;
    return NULL;
}

sd_status sd_run_read_guard(void *run, const char *path, const struct sd_file_id *id)
{
    sd_node_run *r = run;
    const sd_file_id *hashed = declared(r->node, path);
    if (!hashed)
        return sd_set_error(r->state->ctx, SD_ERR_INVALID,
                            "%s: the node read a file it did not declare, so the file is not part of its cache key",
                            path);
    if (!sd_file_id_equal(hashed, id))
        return sd_set_error(r->state->ctx, SD_ERR_IO,
                            "%s: changed since this run hashed it for the cache key; run again", path);
    return SD_OK;
}
