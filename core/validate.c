/* sd_graph_validate: checks a whole graph against the node descriptors and reports every
 * problem at once as a diagnostic "<file>:<line>: node '<id>' input '<name>': <message>". */
#include "core/check.h"
#include "core/files.h"
#include "core/graph.h"
#include "core/xml.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* At most this many node names are spelled out in a cycle diagnostic. */
#define CYCLE_NAMES_MAX 32

/* A problem found, kept until all are known so they can be reported in line order. */
typedef struct vproblem {
    int line;
    size_t seq;
    char *text;
} vproblem;

typedef struct vstate {
    sd_graph *g;
    sd_context *ctx;
    vproblem *problems;
    size_t n_problems, cap_problems;
    struct id_index {
        const char *id;
        size_t node;
    } *by_id; /* sorted by (id, node index): the first occurrence of an id comes first */
    bool nomem;
} vstate;

/* Records a problem. line 0 omits the line; where (NULL to omit) is e.g. "node 'a' input 'b'". */
static void problem(vstate *v, int line, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(vstate *v, int line, const char *where, const char *fmt, ...)
{
    char msg[1024], loc[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(loc, sizeof loc, ":%d", line);
    if (v->n_problems == v->cap_problems) {
        size_t cap = v->cap_problems ? v->cap_problems * 2 : 16;
        vproblem *p = realloc(v->problems, cap * sizeof *p);
        if (!p) {
            v->nomem = true;
            return;
        }
        v->problems = p;
        v->cap_problems = cap;
    }
    char *text = sd_strfmt("%s%s: %s%s%s", v->g->source, loc, where ? where : "",
                           where ? ": " : "", msg);
    if (!text) {
        v->nomem = true;
        return;
    }
    v->problems[v->n_problems] = (vproblem){line, v->n_problems, text};
    v->n_problems++;
}

static int cmp_problems(const void *a, const void *b)
{
    const vproblem *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* "node 'id'" or "node 'id' input 'name'" into buf. */
static const char *where_node(char *buf, size_t size, const char *node_id, const char *input)
{
    if (input)
        snprintf(buf, size, "node '%s' input '%s'", node_id, input);
    else
        snprintf(buf, size, "node '%s'", node_id);
    return buf;
}

static int cmp_by_id(const void *a, const void *b)
{
    const struct id_index *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->node > y->node) - (x->node < y->node);
}

/* Index of the first node with this id, or -1. */
static long find_node(const vstate *v, const char *id)
{
    size_t lo = 0, hi = v->g->n_nodes;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v->by_id[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < v->g->n_nodes && strcmp(v->by_id[lo].id, id) == 0)
        return (long)v->by_id[lo].node;
    return -1;
}

/* Levenshtein distance, capped: returns cap + 1 when the strings differ in length by more. */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if ((la > lb ? la - lb : lb - la) > cap || lb >= 128)
        return cap + 1;
    size_t row[128];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The registered node type closest to name, or NULL when none is close: at most one edit per
 * four characters (and at most 3), so short names get no far-fetched suggestions. */
static const char *closest_type(const char *name)
{
    size_t len = strlen(name), cap = len / 4 < 1 ? 1 : len / 4 > 3 ? 3 : len / 4;
    const char *best = NULL;
    size_t best_d = cap + 1;
    for (size_t i = 0; i < sd_node_type_count(); i++) {
        const char *cand = sd_node_type_at(i)->name;
        size_t d = edit_distance(name, cand, cap);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    return best;
}

/* Appends ", "-separated names to buf. */
static void list_names(char *buf, size_t size, const char *const *names, size_t n, size_t stride)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++) {
        const char *name = *(const char *const *)((const char *)names + i * stride);
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", name);
    }
}

/* Text XML cannot carry (a control byte, invalid UTF-8) makes a workflow that can be neither
 * saved nor embedded in the PNGs it writes: refused before anything runs. */
static void check_xml_text(vstate *v, int line, const char *where, const char *text)
{
    char msg[160];
    if (!sd_xml_text_ok(text, msg, sizeof msg))
        problem(v, line, where, "%s, so the workflow could not be saved or written into a PNG", msg);
}

static void check_params(vstate *v)
{
    sd_graph *g = v->g;
    for (size_t i = 0; i < g->n_params; i++) {
        const sd_graph_param *p = &g->params[i];
        char where[160];
        snprintf(where, sizeof where, "parameter '%s'", p->name);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(g->params[j].name, p->name) == 0) {
                problem(v, p->line, where, "declared twice (first at line %d)", g->params[j].line);
                break;
            }
        }
        sd_type t = sd_type_from_name(p->type);
        if (t == SD_TYPE_COUNT || !sd_type_is_literal(t)) {
            problem(v, p->line, where, "unknown type '%s' (INT, FLOAT, STRING, BOOLEAN or ENUM)",
                    p->type);
            continue;
        }
        sd_input_desc in;
        char msg[512];
        const char *value = p->value ? p->value : p->def;
        if (t == SD_TYPE_STRING || t == SD_TYPE_ENUM)
            check_xml_text(v, p->line, where, value);
        if (!p->value && !*p->def && t != SD_TYPE_STRING && t != SD_TYPE_ENUM)
            problem(v, p->line, where, "no default value (give one, or --set %s=VALUE)", p->name);
        else if (sd_param_as_input(p, &in) && !sd_literal_check(&in, value, msg, sizeof msg))
            problem(v, p->line, where, "%s: %s", p->value ? "value" : "default", msg);
    }
}

static void check_duplicate_ids(vstate *v)
{
    for (size_t k = 1; k < v->g->n_nodes; k++) {
        if (strcmp(v->by_id[k - 1].id, v->by_id[k].id) == 0) {
            const sd_graph_node *b = &v->g->nodes[v->by_id[k].node];
            char where[160];
            problem(v, b->line, where_node(where, sizeof where, b->id, NULL),
                    "duplicate node id (first at line %d)", v->g->nodes[find_node(v, b->id)].line);
        }
    }
}

/* Whether a parameter of type p may set an input of type in. */
static bool param_fits(sd_type p, sd_type in)
{
    bool p_text = p == SD_TYPE_STRING || p == SD_TYPE_ENUM;
    bool in_text = in == SD_TYPE_STRING || in == SD_TYPE_ENUM;
    return p == in || (p == SD_TYPE_INT && in == SD_TYPE_FLOAT) || (p_text && in_text);
}

/* Checks an input's effective literal text: type, range, choices and file resolution. */
static void check_value(vstate *v, int line, const char *where, const sd_input_desc *in,
                        const char *text, const char *param)
{
    char msg[1024], prefix[160] = ""; /* room for every choice of an ENUM (44 samplers) */
    if (param)
        snprintf(prefix, sizeof prefix, "parameter '%s': ", param);
    if (!sd_literal_check(in, text, msg, sizeof msg)) {
        problem(v, line, where, "%s%s", prefix, msg);
        return;
    }
    if (in->flags & SD_IN_FILE) {
        char *path = NULL;
        sd_status st = sd_resolve_file(v->ctx, in->file_dir, text, &path);
        free(path);
        if (st == SD_ERR_NOMEM)
            v->nomem = true;
        else if (st)
            problem(v, line, where, "%s%s", prefix, sd_context_errmsg(v->ctx));
    }
}

static void check_link(vstate *v, const sd_graph_input *b, const char *where,
                       const sd_input_desc *in)
{
    long src = find_node(v, b->src_node);
    if (src < 0) {
        problem(v, b->line, where, "link from unknown node '%s'", b->src_node);
        return;
    }
    const sd_graph_node *s = &v->g->nodes[src];
    if (!s->desc)
        return; /* its unknown type is reported on its own */
    int out = sd_node_desc_output(s->desc, b->src_output);
    if (out < 0) {
        char names[512] = "";
        if (s->desc->n_outputs) /* an output node's outputs array is NULL */
            list_names(names, sizeof names, &s->desc->outputs[0].name, s->desc->n_outputs,
                       sizeof s->desc->outputs[0]);
        problem(v, b->line, where, "node '%s' (%s) has no output '%s' (outputs: %s)", s->id,
                s->type, b->src_output, s->desc->n_outputs ? names : "none");
        return;
    }
    sd_type from = s->desc->outputs[out].type;
    if (!sd_link_types_compatible(from, in->type))
        problem(v, b->line, where, "type mismatch: output '%s' of node '%s' is %s, the input is %s",
                b->src_output, s->id, sd_type_name(from), sd_type_name(in->type));
}

static void check_binding(vstate *v, const sd_graph_node *n, const sd_graph_input *b)
{
    char where[320];
    where_node(where, sizeof where, n->id, b->name);
    const sd_input_desc *in = sd_node_desc_input(n->desc, b->name);
    if (!in) {
        char names[512] = "";
        if (n->desc->n_inputs)
            list_names(names, sizeof names, &n->desc->inputs[0].name, n->desc->n_inputs,
                       sizeof n->desc->inputs[0]);
        problem(v, b->line, where, "unknown input of %s (inputs: %s)", n->type,
                n->desc->n_inputs ? names : "none");
        return;
    }
    switch (b->kind) {
    case SD_BIND_LINK:
        check_link(v, b, where, in);
        break;
    case SD_BIND_LITERAL:
        check_value(v, b->line, where, in, b->text, NULL);
        if (in->type == SD_TYPE_STRING)
            check_xml_text(v, b->line, where, b->text);
        break;
    case SD_BIND_PARAM: {
        const sd_graph_param *p = sd_graph_find_param(v->g, b->param);
        sd_type pt = p ? sd_type_from_name(p->type) : SD_TYPE_COUNT;
        if (!sd_type_is_literal(in->type))
            problem(v, b->line, where, "a %s input cannot be set by parameter '%s'",
                    sd_type_name(in->type), b->param);
        else if (!p)
            problem(v, b->line, where, "parameter '%s' is not declared", b->param);
        else if (pt == SD_TYPE_COUNT || !sd_type_is_literal(pt))
            break; /* the parameter's own problem is reported with it */
        else if (!param_fits(pt, in->type))
            problem(v, b->line, where, "parameter '%s' is %s, the input is %s", p->name, p->type,
                    sd_type_name(in->type));
        else if (p->value || *p->def || pt == SD_TYPE_STRING || pt == SD_TYPE_ENUM)
            check_value(v, b->line, where, in, p->value ? p->value : p->def, p->name);
        /* (no value at all: reported once, with the parameter) */
        break;
    }
    }
}

static void check_node(vstate *v, const sd_graph_node *n)
{
    char where[320];
    if (!n->desc) {
        const char *hint = closest_type(n->type);
        problem(v, n->line, where_node(where, sizeof where, n->id, NULL), "unknown node type '%s'%s%s%s",
                n->type, hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        return;
    }
    if (n->version > n->desc->version)
        problem(v, n->line, where_node(where, sizeof where, n->id, NULL),
                "%s version %d is newer than this sdflow's (version %d)", n->type, n->version,
                n->desc->version);
    for (size_t i = 0; i < n->n_inputs; i++)
        check_binding(v, n, &n->inputs[i]);
    for (size_t i = 0; i < n->desc->n_inputs; i++) {
        const sd_input_desc *in = &n->desc->inputs[i];
        if (sd_graph_node_input(n, in->name))
            continue;
        where_node(where, sizeof where, n->id, in->name);
        if (in->def && (in->flags & SD_IN_FILE))
            check_value(v, n->line, where, in, in->def, NULL);
        else if (!in->def && !(in->flags & SD_IN_OPTIONAL))
            problem(v, n->line, where, "missing required %s input of %s", sd_type_name(in->type),
                    n->type);
    }
}

/* Reports "cycle: 'a' -> 'b' -> 'c' -> 'a'" for the nodes stack[from..top], closed by a link
 * from the last back to the first. Long cycles name their first CYCLE_NAMES_MAX nodes. */
static void report_cycle(vstate *v, const size_t *stack, size_t from, size_t top)
{
    const sd_graph_node *nodes = v->g->nodes;
    size_t count = top - from + 1, shown = count < CYCLE_NAMES_MAX ? count : CYCLE_NAMES_MAX;
    size_t size = 64;
    for (size_t k = 0; k < shown; k++)
        size += strlen(nodes[stack[from + k]].id) + 6;
    size += strlen(nodes[stack[from]].id);
    char *s = malloc(size);
    if (!s) {
        v->nomem = true;
        return;
    }
    size_t used = 0;
    for (size_t k = 0; k < shown; k++)
        used += (size_t)snprintf(s + used, size - used, "'%s' -> ", nodes[stack[from + k]].id);
    if (shown < count)
        snprintf(s + used, size - used, "... (%zu nodes)", count);
    else
        snprintf(s + used, size - used, "'%s'", nodes[stack[from]].id);
    problem(v, nodes[stack[from]].line, NULL, "cycle: %s", s);
    free(s);
}

/* Whether w is among the first n edges (already followed) of a node's edge list. */
static bool edge_seen(const size_t *edges, size_t n, size_t w)
{
    for (size_t i = 0; i < n; i++)
        if (edges[i] == w)
            return true;
    return false;
}

/* Finds cycles along links (iterative depth-first search) and reports each back edge. */
static void check_cycles(vstate *v)
{
    size_t n = v->g->n_nodes;
    sd_graph_node *nodes = v->g->nodes;
    size_t n_edges = 0;
    for (size_t i = 0; i < n; i++)
        n_edges += nodes[i].n_inputs;
    /* Edges src -> dst in CSR form: edges of node u are edge[start[u] .. start[u + 1]). */
    size_t *start = calloc(n + 1, sizeof *start), *edge = malloc((n_edges + 1) * sizeof *edge);
    size_t *fill = calloc(n + 1, sizeof *fill), *stack = malloc((n + 1) * sizeof *stack);
    size_t *next = calloc(n + 1, sizeof *next), *pos = malloc((n + 1) * sizeof *pos);
    unsigned char *color = calloc(n + 1, 1); /* 0 white, 1 on the stack, 2 done */
    if (!start || !edge || !fill || !stack || !next || !pos || !color) {
        v->nomem = true;
        goto done;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t d = 0; d < n; d++) {
            for (size_t j = 0; j < nodes[d].n_inputs; j++) {
                const sd_graph_input *b = &nodes[d].inputs[j];
                long s = b->kind == SD_BIND_LINK ? find_node(v, b->src_node) : -1;
                if (s < 0)
                    continue;
                if (pass == 0)
                    start[s + 1]++;
                else
                    edge[start[s] + fill[s]++] = d;
            }
        }
        if (pass == 0)
            for (size_t u = 0; u < n; u++)
                start[u + 1] += start[u];
    }
    for (size_t root = 0; root < n; root++) {
        if (color[root])
            continue;
        size_t top = 0;
        stack[0] = root;
        pos[root] = 0;
        color[root] = 1;
        for (;;) {
            size_t u = stack[top];
            if (next[u] < start[u + 1] - start[u]) {
                size_t w = edge[start[u] + next[u]++];
                if (color[w] == 1 && !edge_seen(edge + start[u], next[u] - 1, w)) {
                    /* (two links from u to w close the same cycle: reported once) */
                    report_cycle(v, stack, pos[w], top);
                } else if (color[w] == 0) {
                    color[w] = 1;
                    stack[++top] = w;
                    pos[w] = top;
                }
                continue;
            }
            color[u] = 2;
            if (top == 0)
                break;
            top--;
        }
    }
done:
    free(start);
    free(edge);
    free(fill);
    free(stack);
    free(next);
    free(pos);
    free(color);
}

static void check_problem(void *user, int line, const char *node_id, const char *input, const char *msg)
{
    char where[320];
    problem(user, line, where_node(where, sizeof where, node_id, input), "%s", msg);
}

sd_status sd_graph_validate(sd_graph *g)
{
    sd_context *ctx = g->ctx;
    sd_diag_clear(ctx);
    sd_clear_error(ctx);
    vstate v = {.g = g, .ctx = ctx};
    v.by_id = malloc((g->n_nodes + 1) * sizeof *v.by_id);
    if (!v.by_id)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g->n_nodes; i++)
        v.by_id[i] = (struct id_index){g->nodes[i].id, i};
    qsort(v.by_id, g->n_nodes, sizeof *v.by_id, cmp_by_id);

    check_params(&v);
    check_duplicate_ids(&v);
    for (size_t i = 0; i < g->n_nodes; i++)
        check_node(&v, &g->nodes[i]);
    check_cycles(&v);
    free(v.by_id);
    /* What file headers and upstream models tell, once the graph itself is sound. */
    if (!v.n_problems && !v.nomem && sd_graph_check(g, check_problem, &v))
        v.nomem = true;

    if (v.n_problems) /* qsort's pointer must not be NULL, even for zero elements */
        qsort(v.problems, v.n_problems, sizeof *v.problems, cmp_problems);
    for (size_t i = 0; i < v.n_problems; i++) {
        sd_diag_add(ctx, "%s", v.problems[i].text);
        free(v.problems[i].text);
    }
    free(v.problems);
    if (v.nomem)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory while validating %s", g->source);
    if (v.n_problems)
        return sd_set_error(ctx, SD_ERR_INVALID, "%zu problem%s in %s", v.n_problems,
                            v.n_problems == 1 ? "" : "s", g->source);
    sd_clear_error(ctx);
    return SD_OK;
}
