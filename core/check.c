/* Checks before running: visits a valid graph's nodes in topological order, calls each node's
 * check hook and carries output tags along links (core/node.h, sd_check_*). */
#include "core/check.h"
#include "core/files.h"
#include "core/node.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct check_node_state {
    char **tags; /* per output, malloc'd or NULL; NULL until the node is checked */
} check_node_state;

typedef struct id_entry {
    const char *id;
    size_t node;
} id_entry;

struct sd_node_check {
    sd_graph *g;
    const id_entry *ids; /* node ids sorted, for link lookups */
    const sd_graph_node *node;
    check_node_state *states;
    char *files[8]; /* paths resolved for this node */
    size_t n_files;
    sd_check_report report;
    void *user;
    bool nomem;
};

static int cmp_id(const void *a, const void *b)
{
    const id_entry *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->node > y->node) - (x->node < y->node);
}

/* The first node with this id in the sorted index, or -1. */
static long find_id(const id_entry *ids, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ids[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && !strcmp(ids[lo].id, id) ? (long)ids[lo].node : -1;
}

sd_context *sd_check_context(sd_node_check *c)
{
    return c->g->ctx;
}

const char *sd_check_literal(sd_node_check *c, const char *input)
{
    const sd_input_desc *in = sd_node_desc_input(c->node->desc, input);
    return in ? sd_graph_input_text(c->g, c->node, in) : NULL;
}

bool sd_check_int(sd_node_check *c, const char *input, int64_t *out)
{
    const char *text = sd_check_literal(c, input);
    return text && sd_parse_int(text, out);
}

bool sd_check_float(sd_node_check *c, const char *input, double *out)
{
    const char *text = sd_check_literal(c, input);
    return text && sd_parse_float(text, out);
}

const char *sd_check_file(sd_node_check *c, const char *input)
{
    const sd_input_desc *in = sd_node_desc_input(c->node->desc, input);
    const char *name = sd_check_literal(c, input);
    if (!in || !(in->flags & SD_IN_FILE) || !name || !*name || c->n_files == sizeof c->files / sizeof c->files[0])
        return NULL;
    char *path = NULL;
    /* A missing file is validation's problem, reported there; sd_graph_validate sets the
     * context's error afterwards. */
    if (sd_resolve_file(c->g->ctx, in->file_dir, name, &path))
        return NULL;
    c->files[c->n_files++] = path;
    return path;
}

const char *sd_check_tag(sd_node_check *c, const char *input)
{
    const sd_graph_input *b = sd_graph_node_input(c->node, input);
    if (!b || b->kind != SD_BIND_LINK)
        return NULL;
    long src = find_id(c->ids, c->g->n_nodes, b->src_node);
    if (src < 0 || !c->g->nodes[src].desc)
        return NULL;
    int out = sd_node_desc_output(c->g->nodes[src].desc, b->src_output);
    return out < 0 ? NULL : c->states[src].tags[out];
}

void sd_check_set_tag(sd_node_check *c, size_t index, const char *tag)
{
    check_node_state *s = &c->states[c->node - c->g->nodes];
    if (index >= c->node->desc->n_outputs)
        return;
    char *copy = tag ? sd_strdup(tag) : NULL;
    if (tag && !copy)
        c->nomem = true;
    free(s->tags[index]);
    s->tags[index] = copy;
}

void sd_check_problem(sd_node_check *c, const char *input, const char *fmt, ...)
{
    char msg[1024];
    const sd_graph_input *b = input ? sd_graph_node_input(c->node, input) : NULL;
    /* A value from a parameter names it, as validation's other diagnostics do. */
    int used = b && b->kind == SD_BIND_PARAM ? snprintf(msg, sizeof msg, "parameter '%s': ", b->param) : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + used, sizeof msg - (size_t)used, fmt, ap);
    va_end(ap);
    c->report(c->user, b && b->line ? b->line : c->node->line, c->node->id, input, msg);
}

/* Without a hook: each output takes the tag of the first linked input of the same type. */
static void pass_through(sd_node_check *c)
{
    const sd_node_desc *d = c->node->desc;
    for (size_t o = 0; o < d->n_outputs; o++)
        for (size_t i = 0; i < d->n_inputs; i++) {
            const char *tag = d->inputs[i].type == d->outputs[o].type ? sd_check_tag(c, d->inputs[i].name) : NULL;
            if (tag) {
                sd_check_set_tag(c, o, tag);
                break;
            }
        }
}

/* Runs node `index`'s hook (or the pass-through rule) once its upstream nodes are done. */
static void check_one(sd_node_check *c, size_t index)
{
    check_node_state *s = &c->states[index];
    const sd_graph_node *n = &c->g->nodes[index];
    if (!(s->tags = calloc(n->desc->n_outputs ? n->desc->n_outputs : 1, sizeof *s->tags))) {
        c->nomem = true;
        return;
    }
    c->node = n;
    if (n->desc->check)
        n->desc->check(c);
    else
        pass_through(c);
    for (size_t f = 0; f < c->n_files; f++)
        free(c->files[f]);
    c->n_files = 0;
}

/* The graph is acyclic (validated): Kahn's order over its links. */
sd_status sd_graph_check(sd_graph *g, sd_check_report report, void *user)
{
    sd_node_check c = {.g = g, .report = report, .user = user};
    size_t n = g->n_nodes, n_links = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < g->nodes[i].n_inputs; k++)
            n_links += g->nodes[i].inputs[k].kind == SD_BIND_LINK;
    c.states = calloc(n + 1, sizeof *c.states);
    id_entry *ids = malloc((n + 1) * sizeof *ids);
    size_t *indeg = calloc(n + 1, sizeof *indeg), *queue = malloc((n + 1) * sizeof *queue);
    size_t *first = calloc(n + 2, sizeof *first), *dst = malloc((n_links + 1) * sizeof *dst);
    long *src = malloc((n_links + 1) * sizeof *src);
    if (!c.states || !ids || !indeg || !queue || !first || !dst || !src) {
        c.nomem = true;
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = (id_entry){g->nodes[i].id, i};
    qsort(ids, n, sizeof *ids, cmp_id);
    c.ids = ids;
    /* Links as (src -> consumer) in compressed rows: consumers of s are dst[first[s]..first[s+1]). */
    size_t l = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < g->nodes[i].n_inputs; k++) {
            if (g->nodes[i].inputs[k].kind != SD_BIND_LINK)
                continue;
            src[l] = find_id(ids, n, g->nodes[i].inputs[k].src_node);
            if (src[l] >= 0) {
                first[src[l] + 1]++;
                indeg[i]++;
            }
            l++;
        }
    for (size_t i = 0; i < n; i++)
        first[i + 1] += first[i];
    memcpy(queue, first, n * sizeof *queue); /* per source: the next free slot of its row */
    l = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < g->nodes[i].n_inputs; k++) {
            if (g->nodes[i].inputs[k].kind != SD_BIND_LINK)
                continue;
            if (src[l] >= 0)
                dst[queue[src[l]]++] = i;
            l++;
        }
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++)
        if (!indeg[i])
            queue[tail++] = i;
    while (head < tail && !c.nomem) {
        size_t i = queue[head++];
        if (g->nodes[i].desc)
            check_one(&c, i);
        for (size_t e = first[i]; e < first[i + 1]; e++)
            if (!--indeg[dst[e]])
                queue[tail++] = dst[e];
    }
done:
    for (size_t i = 0; c.states && i < n; i++) {
        for (size_t o = 0; c.states[i].tags && o < g->nodes[i].desc->n_outputs; o++)
            free(c.states[i].tags[o]);
        free(c.states[i].tags);
    }
    free(c.states);
    free(ids);
    free(indeg);
    free(queue);
    free(first);
    free(dst);
    free(src);
    return c.nomem ? SD_ERR_NOMEM : SD_OK;
}
