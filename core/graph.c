/* In-memory workflow graphs: nodes, input bindings, parameters, metadata; the public builder
 * API checks names and literals against descriptors, the raw setters (XML reader) do not. */
#include "core/graph.h"
#include "core/files.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const sd_graph_meta_keys[SD_GRAPH_META_KEYS] = {"title", "description", "author", "version"};

sd_status sd_graph_new(sd_context *ctx, sd_graph **out)
{
    *out = NULL;
    sd_graph *g = calloc(1, sizeof *g);
    if (!g || !(g->source = sd_strdup("<api>"))) {
        free(g);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    g->ctx = ctx;
    g->next_auto_id = 1;
    *out = g;
    return SD_OK;
}

static void free_input(sd_graph_input *in)
{
    free(in->name);
    free(in->text);
    free(in->src_node);
    free(in->src_output);
    free(in->param);
}

void sd_graph_free(sd_graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_nodes; i++) {
        sd_graph_node *n = &g->nodes[i];
        for (size_t j = 0; j < n->n_inputs; j++)
            free_input(&n->inputs[j]);
        free(n->inputs);
        free(n->id);
        free(n->type);
    }
    free(g->nodes);
    for (size_t i = 0; i < g->n_params; i++) {
        sd_graph_param *p = &g->params[i];
        free(p->name);
        free(p->type);
        free(p->def);
        free(p->doc);
        free(p->value);
    }
    free(g->params);
    for (int i = 0; i < SD_GRAPH_META_KEYS; i++)
        free(g->meta[i]);
    free(g->source);
    free(g);
}

sd_context *sd_graph_context(const sd_graph *g)
{
    return g->ctx;
}

sd_graph_node *sd_graph_find_node(const sd_graph *g, const char *id)
{
    for (size_t i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].id, id) == 0)
            return &g->nodes[i];
    return NULL;
}

sd_graph_input *sd_graph_node_input(const sd_graph_node *n, const char *name)
{
    for (size_t i = 0; i < n->n_inputs; i++)
        if (strcmp(n->inputs[i].name, name) == 0)
            return &n->inputs[i];
    return NULL;
}

sd_graph_param *sd_graph_find_param(const sd_graph *g, const char *name)
{
    for (size_t i = 0; i < g->n_params; i++)
        if (strcmp(g->params[i].name, name) == 0)
            return &g->params[i];
    return NULL;
}

static sd_status nomem(sd_graph *g)
{
    return sd_set_error(g->ctx, SD_ERR_NOMEM, "out of memory");
}

sd_status sd_graph_add_node_raw(sd_graph *g, const char *type, const char *id, int version,
                                int line, sd_graph_node **out)
{
    if (g->n_nodes == g->cap_nodes) {
        size_t cap = g->cap_nodes ? g->cap_nodes * 2 : 16;
        sd_graph_node *n = realloc(g->nodes, cap * sizeof *n);
        if (!n)
            return nomem(g);
        g->nodes = n;
        g->cap_nodes = cap;
    }
    sd_graph_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->id = sd_strdup(id);
    n->type = sd_strdup(type);
    if (!n->id || !n->type) {
        free(n->id);
        free(n->type);
        return nomem(g);
    }
    n->version = version;
    n->line = line;
    n->desc = sd_node_type_find(type);
    g->n_nodes++;
    if (out)
        *out = n;
    return SD_OK;
}

/* Returns the binding slot for an input, creating it or clearing the old binding. */
static sd_graph_input *input_slot(sd_graph *g, sd_graph_node *n, const char *name)
{
    sd_graph_input *in = sd_graph_node_input(n, name);
    if (in) {
        char *keep = in->name;
        in->name = NULL;
        free_input(in);
        memset(in, 0, sizeof *in);
        in->name = keep;
        return in;
    }
    if (n->n_inputs == n->cap_inputs) {
        size_t cap = n->cap_inputs ? n->cap_inputs * 2 : 8;
        sd_graph_input *ins = realloc(n->inputs, cap * sizeof *ins);
        if (!ins)
            return NULL;
        n->inputs = ins;
        n->cap_inputs = cap;
    }
    in = &n->inputs[n->n_inputs];
    memset(in, 0, sizeof *in);
    if (!(in->name = sd_strdup(name)))
        return NULL;
    n->n_inputs++;
    return in;
}

sd_status sd_graph_bind_literal(sd_graph *g, sd_graph_node *n, const char *input, const char *text,
                                int line)
{
    sd_graph_input *in = input_slot(g, n, input);
    if (!in || !(in->text = sd_strdup(text)))
        return nomem(g);
    in->kind = SD_BIND_LITERAL;
    in->line = line;
    return SD_OK;
}

sd_status sd_graph_bind_link(sd_graph *g, sd_graph_node *n, const char *input, const char *src_node,
                             const char *src_output, int line)
{
    sd_graph_input *in = input_slot(g, n, input);
    if (!in || !(in->src_node = sd_strdup(src_node)) || !(in->src_output = sd_strdup(src_output)))
        return nomem(g);
    in->kind = SD_BIND_LINK;
    in->line = line;
    return SD_OK;
}

sd_status sd_graph_bind_param_raw(sd_graph *g, sd_graph_node *n, const char *input, const char *param,
                                  int line)
{
    sd_graph_input *in = input_slot(g, n, input);
    if (!in || !(in->param = sd_strdup(param)))
        return nomem(g);
    in->kind = SD_BIND_PARAM;
    in->line = line;
    return SD_OK;
}

sd_status sd_graph_add_param_raw(sd_graph *g, const char *name, const char *type, const char *def,
                                 const char *doc, int line)
{
    if (g->n_params == g->cap_params) {
        size_t cap = g->cap_params ? g->cap_params * 2 : 8;
        sd_graph_param *p = realloc(g->params, cap * sizeof *p);
        if (!p)
            return nomem(g);
        g->params = p;
        g->cap_params = cap;
    }
    sd_graph_param *p = &g->params[g->n_params];
    memset(p, 0, sizeof *p);
    p->name = sd_strdup(name);
    p->type = sd_strdup(type);
    p->def = sd_strdup(def ? def : "");
    p->doc = sd_strdup(doc ? doc : "");
    if (!p->name || !p->type || !p->def || !p->doc) {
        free(p->name);
        free(p->type);
        free(p->def);
        free(p->doc);
        return nomem(g);
    }
    p->line = line;
    g->n_params++;
    return SD_OK;
}

/* ---- Literal values. ----
 * Number and boolean literals may have white space around them (`--set 'steps=2 '`, an XML
 * attribute); the value is what lies between. Text and enumeration values are kept exactly. */

/* True when nothing but white space is left at s. */
static bool only_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool parse_int(const char *s, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10); /* skips leading white space; end == s when there is no number */
    return end != s && !errno && only_space(end);
}

static bool parse_float(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && errno != ERANGE && only_space(end) && isfinite(*v);
}

/* Whether s, white space around it aside, is word (ASCII, any case). */
static bool is_word(const char *s, const char *word)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(word);
    return strncasecmp(s, word, n) == 0 && only_space(s + n);
}

bool sd_parse_bool(const char *s, bool *v)
{
    if (is_word(s, "true") || is_word(s, "1")) {
        *v = true;
        return true;
    }
    if (is_word(s, "false") || is_word(s, "0")) {
        *v = false;
        return true;
    }
    return false;
}

bool sd_parse_int(const char *s, int64_t *v)
{
    long long x;
    if (!parse_int(s, &x))
        return false;
    *v = x;
    return true;
}

bool sd_parse_float(const char *s, double *v)
{
    return parse_float(s, v);
}

bool sd_literal_check(const sd_input_desc *in, const char *text, char *msg, size_t size)
{
    switch (in->type) {
    case SD_TYPE_INT: {
        long long v;
        if (!parse_int(text, &v)) {
            snprintf(msg, size, "'%s' is not an integer", text);
            return false;
        }
        if ((in->flags & SD_IN_RANGED) && ((double)v < in->min || (double)v > in->max)) {
            snprintf(msg, size, "%lld is out of range [%.17g, %.17g]", v, in->min, in->max);
            return false;
        }
        return true;
    }
    case SD_TYPE_FLOAT: {
        double v;
        if (!parse_float(text, &v)) {
            snprintf(msg, size, "'%s' is not a number", text);
            return false;
        }
        if ((in->flags & SD_IN_RANGED) && (v < in->min || v > in->max)) {
            snprintf(msg, size, "%.17g is out of range [%.17g, %.17g]", v, in->min, in->max);
            return false;
        }
        return true;
    }
    case SD_TYPE_BOOLEAN: {
        bool b;
        if (!sd_parse_bool(text, &b)) {
            snprintf(msg, size, "'%s' is not a boolean (true or false)", text);
            return false;
        }
        return true;
    }
    case SD_TYPE_ENUM: {
        size_t used = 0;
        for (const char *const *c = in->choices; c && *c; c++)
            if (strcmp(*c, text) == 0)
                return true;
        used += (size_t)snprintf(msg, size, "'%s' is not one of:", text);
        for (const char *const *c = in->choices; c && *c && used < size; c++)
            used += (size_t)snprintf(msg + used, size - used, " %s", *c);
        return false;
    }
    case SD_TYPE_STRING:
        return !(in->flags & SD_IN_OUTPUT_PREFIX) || sd_output_prefix_check(text, msg, size);
    default:
        snprintf(msg, size, "a %s input takes a link, not a literal value", sd_type_name(in->type));
        return false;
    }
}

const char *sd_graph_input_text(const sd_graph *g, const sd_graph_node *n, const sd_input_desc *in)
{
    const sd_graph_input *b = sd_graph_node_input(n, in->name);
    if (!b)
        return in->def;
    if (b->kind == SD_BIND_LITERAL)
        return b->text;
    if (b->kind == SD_BIND_PARAM) {
        const sd_graph_param *p = sd_graph_find_param(g, b->param);
        return p ? (p->value ? p->value : p->def) : NULL;
    }
    return NULL;
}

/* ---- Public builder API: checked against descriptors. ---- */

sd_status sd_graph_add_node(sd_graph *g, const char *type, const char *id, const char **out_id)
{
    const sd_node_desc *desc = sd_node_type_find(type);
    if (!desc)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "unknown node type '%s'", type);
    char auto_id[32];
    if (!id) {
        do
            snprintf(auto_id, sizeof auto_id, "%u", g->next_auto_id++);
        while (sd_graph_find_node(g, auto_id));
        id = auto_id;
    } else if (!*id) {
        return sd_set_error(g->ctx, SD_ERR_INVALID, "node id must not be empty");
    } else if (sd_graph_find_node(g, id)) {
        return sd_set_error(g->ctx, SD_ERR_INVALID, "duplicate node id '%s'", id);
    }
    sd_graph_node *n;
    sd_status st = sd_graph_add_node_raw(g, type, id, desc->version, 0, &n);
    if (!st && out_id)
        *out_id = n->id;
    return st;
}

static sd_status lookup_input(sd_graph *g, const char *node_id, const char *input, sd_graph_node **n,
                              const sd_input_desc **in)
{
    *n = sd_graph_find_node(g, node_id);
    if (!*n)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "no node '%s'", node_id);
    if (!(*n)->desc)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "node '%s': unknown node type '%s'", node_id,
                            (*n)->type);
    *in = sd_node_desc_input((*n)->desc, input);
    if (!*in)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "node '%s' (%s) has no input '%s'", node_id,
                            (*n)->type, input);
    return SD_OK;
}

sd_status sd_graph_set_input(sd_graph *g, const char *node_id, const char *input, const char *text)
{
    sd_graph_node *n;
    const sd_input_desc *in;
    sd_status st = lookup_input(g, node_id, input, &n, &in);
    if (st)
        return st;
    char msg[512];
    if (!sd_literal_check(in, text, msg, sizeof msg))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "node '%s' input '%s': %s", node_id, input, msg);
    return sd_graph_bind_literal(g, n, input, text, 0);
}

sd_status sd_graph_connect(sd_graph *g, const char *src_id, const char *src_output, const char *dst_id,
                           const char *dst_input)
{
    sd_graph_node *dst;
    const sd_input_desc *in;
    sd_status st = lookup_input(g, dst_id, dst_input, &dst, &in);
    if (st)
        return st;
    sd_graph_node *src = sd_graph_find_node(g, src_id);
    if (!src)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "no node '%s'", src_id);
    if (!src->desc)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "node '%s': unknown node type '%s'", src_id,
                            src->type);
    int out = sd_node_desc_output(src->desc, src_output);
    if (out < 0)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "node '%s' (%s) has no output '%s'", src_id,
                            src->type, src_output);
    if (!sd_link_types_compatible(src->desc->outputs[out].type, in->type))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "cannot link %s output '%s' of node '%s' to %s input '%s' of node '%s'",
                            sd_type_name(src->desc->outputs[out].type), src_output, src_id,
                            sd_type_name(in->type), dst_input, dst_id);
    return sd_graph_bind_link(g, dst, dst_input, src_id, src_output, 0);
}

bool sd_link_types_compatible(sd_type from, sd_type to)
{
    if (from == to)
        return true;
    /* A string (e.g. from PrimitiveString) may feed an enumeration; checked when run. */
    return to == SD_TYPE_ENUM && from == SD_TYPE_STRING;
}

sd_status sd_graph_clear_input(sd_graph *g, const char *node_id, const char *input)
{
    sd_graph_node *n;
    const sd_input_desc *in;
    sd_status st = lookup_input(g, node_id, input, &n, &in);
    if (st)
        return st;
    sd_graph_input *b = sd_graph_node_input(n, input);
    if (b) {
        free_input(b);
        *b = n->inputs[--n->n_inputs];
    }
    return SD_OK;
}

static int meta_index(const char *key)
{
    for (int i = 0; i < SD_GRAPH_META_KEYS; i++)
        if (strcmp(sd_graph_meta_keys[i], key) == 0)
            return i;
    return -1;
}

sd_status sd_graph_set_meta(sd_graph *g, const char *key, const char *value)
{
    int i = meta_index(key);
    if (i < 0)
        return sd_set_error(g->ctx, SD_ERR_INVALID,
                            "unknown metadata key '%s' (title, description, author, version)", key);
    char *v = NULL;
    if (value && !(v = sd_strdup(value)))
        return nomem(g);
    free(g->meta[i]);
    g->meta[i] = v;
    return SD_OK;
}

const char *sd_graph_meta(const sd_graph *g, const char *key)
{
    int i = meta_index(key);
    return i < 0 ? NULL : g->meta[i];
}

/* A parameter's type is a literal socket type name; the pseudo-input used to check values. */
bool sd_param_as_input(const sd_graph_param *p, sd_input_desc *in)
{
    memset(in, 0, sizeof *in);
    in->name = p->name;
    in->type = sd_type_from_name(p->type);
    return in->type != SD_TYPE_ENUM && in->type < SD_TYPE_COUNT && sd_type_is_literal(in->type);
}

sd_status sd_graph_add_param(sd_graph *g, const char *name, const char *type, const char *def,
                             const char *doc)
{
    if (!name || !*name)
        return sd_set_error(g->ctx, SD_ERR_INVALID, "parameter name must not be empty");
    if (sd_graph_find_param(g, name))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "duplicate parameter '%s'", name);
    sd_type t = sd_type_from_name(type ? type : "");
    if (t == SD_TYPE_COUNT || !sd_type_is_literal(t))
        return sd_set_error(g->ctx, SD_ERR_INVALID,
                            "parameter '%s': type '%s' is not INT, FLOAT, STRING, BOOLEAN or ENUM", name,
                            type ? type : "");
    /* ENUM parameters are checked against the choices of the inputs they are bound to. */
    sd_graph_param tmp = {.name = (char *)name, .type = (char *)type};
    sd_input_desc in;
    char msg[512];
    if (def && sd_param_as_input(&tmp, &in) && !sd_literal_check(&in, def, msg, sizeof msg))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "parameter '%s' default: %s", name, msg);
    return sd_graph_add_param_raw(g, name, type, def, doc, 0);
}

sd_status sd_graph_bind_param(sd_graph *g, const char *name, const char *node_id, const char *input)
{
    if (!sd_graph_find_param(g, name))
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "no parameter '%s'", name);
    sd_graph_node *n;
    const sd_input_desc *in;
    sd_status st = lookup_input(g, node_id, input, &n, &in);
    if (st)
        return st;
    if (!sd_type_is_literal(in->type))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "node '%s' input '%s' is %s: a parameter cannot set it",
                            node_id, input, sd_type_name(in->type));
    return sd_graph_bind_param_raw(g, n, input, name, 0);
}

sd_status sd_graph_set_param(sd_graph *g, const char *name, const char *text)
{
    sd_graph_param *p = sd_graph_find_param(g, name);
    if (!p)
        return sd_set_error(g->ctx, SD_ERR_NOT_FOUND, "no parameter '%s'", name);
    sd_input_desc in;
    char msg[512];
    bool literal = sd_param_as_input(p, &in);
    if (literal && !sd_literal_check(&in, text, msg, sizeof msg))
        return sd_set_error(g->ctx, SD_ERR_INVALID, "parameter '%s': %s", name, msg);
    /* A number or boolean is kept without the white space around it (shown by --help-params,
     * written into PNGs); text keeps it. */
    size_t start = 0, end = strlen(text);
    if (literal && in.type != SD_TYPE_STRING) {
        while (isspace((unsigned char)text[start]))
            start++;
        while (end > start && isspace((unsigned char)text[end - 1]))
            end--;
    }
    char *v = strndup(text + start, end - start);
    if (!v)
        return nomem(g);
    free(p->value);
    p->value = v;
    return SD_OK;
}

size_t sd_graph_param_count(const sd_graph *g)
{
    return g->n_params;
}

sd_status sd_graph_param_at(const sd_graph *g, size_t index, sd_param_info *info)
{
    if (index >= g->n_params)
        return sd_set_error(g->ctx, SD_ERR_USAGE, "parameter index %zu out of range", index);
    const sd_graph_param *p = &g->params[index];
    info->name = p->name;
    info->type = p->type;
    info->default_text = p->def;
    info->doc = p->doc;
    info->value = p->value;
    return SD_OK;
}

size_t sd_graph_node_count(const sd_graph *g)
{
    return g->n_nodes;
}

const char *sd_graph_node_id(const sd_graph *g, size_t index)
{
    return index < g->n_nodes ? g->nodes[index].id : NULL;
}

const char *sd_graph_node_type(const sd_graph *g, size_t index)
{
    return index < g->n_nodes ? g->nodes[index].type : NULL;
}

sd_status sd_graph_clone(const sd_graph *g, sd_graph **out)
{
    sd_graph *c;
    sd_status st = sd_graph_new(g->ctx, &c);
    if (st)
        return st;
    free(c->source);
    c->source = sd_strdup(g->source);
    c->next_auto_id = g->next_auto_id;
    if (!c->source)
        st = nomem(c);
    for (int i = 0; !st && i < SD_GRAPH_META_KEYS; i++)
        if (g->meta[i] && !(c->meta[i] = sd_strdup(g->meta[i])))
            st = nomem(c);
    for (size_t i = 0; !st && i < g->n_params; i++) {
        const sd_graph_param *p = &g->params[i];
        st = sd_graph_add_param_raw(c, p->name, p->type, p->def, p->doc, p->line);
        if (!st && p->value && !(c->params[i].value = sd_strdup(p->value)))
            st = nomem(c);
    }
    for (size_t i = 0; !st && i < g->n_nodes; i++) {
        const sd_graph_node *n = &g->nodes[i];
        sd_graph_node *cn;
        st = sd_graph_add_node_raw(c, n->type, n->id, n->version, n->line, &cn);
        for (size_t j = 0; !st && j < n->n_inputs; j++) {
            const sd_graph_input *in = &n->inputs[j];
            if (in->kind == SD_BIND_LITERAL)
                st = sd_graph_bind_literal(c, cn, in->name, in->text, in->line);
            else if (in->kind == SD_BIND_LINK)
                st = sd_graph_bind_link(c, cn, in->name, in->src_node, in->src_output, in->line);
            else
                st = sd_graph_bind_param_raw(c, cn, in->name, in->param, in->line);
        }
    }
    if (st) {
        sd_graph_free(c);
        return st;
    }
    *out = c;
    return SD_OK;
}
