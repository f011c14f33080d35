/* ComfyUI UI-format workflows (what "Save" writes, a PNG's "workflow" chunk) to the API format,
 * following ComfyUI's frontend (graphToPrompt):
 *
 *   {"nodes": [{"id": 3, "type": "KSampler", "mode": 0, "inputs": [{"name": "model",
 *     "type": "MODEL", "link": 1}], "widgets_values": [7, "randomize", 20, 8, "euler", ...]}],
 *    "links": [[1, 4, 0, 3, 0, "MODEL"]], "groups": [...],
 *    "definitions": {"subgraphs": [{"id": "UUID", "nodes": [...], "links": [{"id": 1,
 *      "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 0}], ...}]}}
 *
 * Links are followed from each consumer's input to the node that really produces the value:
 * through Reroutes, bypassed nodes (mode 4: the input of the consumer's type, preferring the
 * slot of the same index), subgraph boundaries (-10 is a subgraph's input node, -20 its output
 * node) and PrimitiveNodes (whose value and, for a seed, control_after_generate the frontend
 * applies to the consumer's widgets before it queues). */
#include "core/comfy.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UI_MAX_DEPTH 16   /* subgraphs inside subgraphs */
#define UI_MAX_HOPS 10000 /* nodes passed following one input's link (Reroutes, bypasses, subgraph
                             boundaries): a cycle among them ends here */
#define UI_INPUT_NODE -10 /* a subgraph's input and output nodes */
#define UI_OUTPUT_NODE -20
#define MODE_NEVER 2
#define MODE_BYPASS 4

/* One graph level's lookup tables: the root or a subgraph definition. */
typedef struct ui_level {
    const json_t *graph;
    json_t *nodes; /* "ID" -> node */
    json_t *links; /* "ID" -> link */
} ui_level;

/* A level as instantiated: the prefix of its node ids ("" at the root, "12:" inside node 12,
 * "12:5:" deeper) and the instance node in the parent. */
typedef struct ui_scope {
    const ui_level *level;
    const char *prefix;
    const struct ui_scope *parent;
    const json_t *instance;
    int depth;
} ui_scope;

typedef struct ui_conv {
    sd_context *ctx;
    const char *path;
    ui_level *levels;  /* [0] root, then one per definition, in "subgraphs" order */
    size_t n_levels;
    json_t *api;
    json_t *titles; /* API id -> the title a user gave the node */
    long hops;
} ui_conv;

typedef struct ui_link {
    json_int_t origin, origin_slot, target, target_slot;
} ui_link;

typedef enum { SRC_NONE, SRC_NODE, SRC_VALUE, SRC_WIDGET } src_kind;

/* Where an input's value comes from: nothing (the input is removed), output slot of node id,
 * a value, or the consumer's own widget unless value (a PrimitiveNode's) is given. */
typedef struct ui_src {
    src_kind kind;
    char *id;
    json_int_t slot;
    const json_t *value;
    const json_t *control; /* a PrimitiveNode's control_after_generate, which governs the seed */
} ui_src;

bool sd_comfy_has_type(const sd_node_desc *d)
{
    return strncmp(d->name, "Sdflow", 6) != 0;
}

bool sd_comfy_is_widget(const sd_node_desc *d, const sd_input_desc *in)
{
    static const char *const loaders[] = {"CheckpointLoaderSimple", "VAELoader", "ControlNetLoader", NULL};
    if (!sd_type_is_literal(in->type))
        return false;
    if (!strcmp(in->name, "weight_dtype"))
        for (const char *const *l = loaders; *l; l++)
            if (!strcmp(d->name, *l))
                return false;
    return true;
}

bool sd_comfy_is_control_value(const json_t *v)
{
    static const char *const values[] = {"fixed", "increment", "decrement", "randomize", NULL};
    const char *s = json_string_value(v);
    for (const char *const *c = values; s && *c; c++)
        if (!strcmp(s, *c))
            return true;
    return false;
}

/* ---- Reading nodes and links. ---- */

static bool int_of(const json_t *v, json_int_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    char *end;
    const char *s = json_string_value(v);
    if (!s || !*s)
        return false;
    long long x = strtoll(s, &end, 10);
    *out = x;
    return !*end;
}

/* [id, origin, origin_slot, target, target_slot, type] or {"id", "origin_id", ...}. */
static bool link_parse(const json_t *l, json_int_t *id, ui_link *out)
{
    if (json_is_array(l))
        return json_array_size(l) >= 5 && int_of(json_array_get(l, 0), id) &&
               int_of(json_array_get(l, 1), &out->origin) && int_of(json_array_get(l, 2), &out->origin_slot) &&
               int_of(json_array_get(l, 3), &out->target) && int_of(json_array_get(l, 4), &out->target_slot);
    return json_is_object(l) && int_of(json_object_get(l, "id"), id) &&
           int_of(json_object_get(l, "origin_id"), &out->origin) &&
           int_of(json_object_get(l, "origin_slot"), &out->origin_slot) &&
           int_of(json_object_get(l, "target_id"), &out->target) &&
           int_of(json_object_get(l, "target_slot"), &out->target_slot);
}

static sd_status nomem(ui_conv *c)
{
    return sd_set_error(c->ctx, SD_ERR_NOMEM, "out of memory");
}

static sd_status level_init(ui_conv *c, ui_level *lv, const json_t *graph, const char *what)
{
    lv->graph = graph;
    lv->nodes = json_object();
    lv->links = json_object();
    if (!lv->nodes || !lv->links)
        return nomem(c);
    const json_t *nodes = json_object_get(graph, "nodes"), *links = json_object_get(graph, "links");
    if (!json_is_array(nodes) || (links && !json_is_array(links)))
        return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s: \"nodes\" and \"links\" must be arrays", c->path, what);
    size_t i;
    const json_t *v;
    char key[32];
    json_array_foreach(nodes, i, v)
    {
        json_int_t id;
        if (!json_is_object(v) || !int_of(json_object_get(v, "id"), &id) ||
            !json_is_string(json_object_get(v, "type")))
            return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s: node %zu has no \"id\" or \"type\"", c->path, what, i);
        snprintf(key, sizeof key, "%lld", (long long)id);
        if (json_object_get(lv->nodes, key))
            return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s: node id %s is used twice", c->path, what, key);
        if (json_object_set(lv->nodes, key, (json_t *)v))
            return nomem(c);
    }
    json_array_foreach(links, i, v)
    {
        json_int_t id;
        ui_link l;
        if (json_is_null(v))
            continue; /* ComfyUI leaves null holes after deleting links */
        if (!link_parse(v, &id, &l))
            return sd_set_error(c->ctx, SD_ERR_PARSE, "%s: %s: link %zu is not [id, origin, slot, target, slot, type]",
                                c->path, what, i);
        snprintf(key, sizeof key, "%lld", (long long)id);
        if (json_object_set(lv->links, key, (json_t *)v))
            return nomem(c);
    }
    return SD_OK;
}

static const ui_level *level_of_def(const ui_conv *c, const char *type)
{
    for (size_t i = 1; i < c->n_levels; i++)
        if (!strcmp(json_string_value(json_object_get(c->levels[i].graph, "id")), type))
            return &c->levels[i];
    return NULL;
}

static const json_t *node_in(const ui_level *lv, json_int_t id)
{
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)id);
    return json_object_get(lv->nodes, key);
}

static json_int_t node_mode(const json_t *node)
{
    json_int_t m = 0;
    int_of(json_object_get(node, "mode"), &m);
    return m;
}

static const char *node_type(const json_t *node)
{
    return json_string_value(json_object_get(node, "type"));
}

/* The link id an input entry holds, false when unconnected. */
static bool input_link(const json_t *input, json_int_t *id)
{
    return int_of(json_object_get(input, "link"), id);
}

/* The name of the input an entry of "inputs" feeds: its widget's name when it is a widget
 * turned into a socket. */
static const char *input_name(const json_t *input)
{
    const char *w = json_string_value(json_object_get(json_object_get(input, "widget"), "name"));
    return w ? w : json_string_value(json_object_get(input, "name"));
}

/* ---- Following links. ---- */

static sd_status resolve(ui_conv *c, const ui_scope *s, json_int_t link_id, const char *want, ui_src *out);

/* A subgraph input: the instance's input of the same index, linked or holding a widget value. */
static sd_status resolve_subgraph_input(ui_conv *c, const ui_scope *s, json_int_t slot, const char *want,
                                        ui_src *out)
{
    const json_t *inputs = json_object_get(s->instance, "inputs");
    const json_t *in = json_array_get(inputs, (size_t)slot);
    json_int_t link;
    if (!s->parent || slot < 0 || !in)
        return SD_OK;
    if (input_link(in, &link))
        return resolve(c, s->parent, link, want, out);
    out->kind = SRC_WIDGET;
    if (!json_object_get(in, "widget"))
        return SD_OK;
    size_t index = 0; /* the instance's widget values follow its widget inputs in order */
    for (size_t k = 0; k < (size_t)slot; k++)
        index += json_object_get(json_array_get(inputs, k), "widget") != NULL;
    const json_t *v = json_array_get(json_object_get(s->instance, "widgets_values"), index);
    if (v && !json_is_array(v) && !json_is_object(v)) {
        out->kind = SRC_VALUE;
        out->value = v;
    }
    return SD_OK;
}

/* An output of a subgraph instance: the link that enters the definition's output node there. */
static sd_status resolve_subgraph_output(ui_conv *c, const ui_scope *s, const json_t *instance,
                                         const ui_level *def, json_int_t slot, const char *want, ui_src *out)
{
    if (s->depth + 1 >= UI_MAX_DEPTH)
        return sd_set_error(c->ctx, SD_ERR_LIMIT, "%s: subgraphs nested deeper than %d levels", c->path,
                            UI_MAX_DEPTH);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(instance, "id")));
    char *prefix = sd_strfmt("%s%s:", s->prefix, key);
    if (!prefix)
        return nomem(c);
    ui_scope inner = {.level = def, .prefix = prefix, .parent = s, .instance = instance, .depth = s->depth + 1};
    const char *k;
    const json_t *l;
    sd_status st = SD_OK;
    json_object_foreach(def->links, k, l)
    {
        json_int_t id;
        ui_link lk;
        if (link_parse(l, &id, &lk) && lk.target == UI_OUTPUT_NODE && lk.target_slot == slot) {
            st = resolve(c, &inner, id, want, out);
            break;
        }
    }
    free(prefix);
    return st;
}

/* A bypassed node passes on its input of the wanted type, the one at the output's index first. */
static sd_status resolve_bypass(ui_conv *c, const ui_scope *s, const json_t *node, json_int_t slot,
                                const char *want, bool any_type, ui_src *out)
{
    const json_t *inputs = json_object_get(node, "inputs");
    size_t n = json_array_size(inputs);
    for (size_t k = 0; k <= n; k++) {
        size_t idx = k == 0 ? (size_t)slot : k - 1;
        const json_t *in = slot >= 0 || k > 0 ? json_array_get(inputs, idx) : NULL;
        const char *type = json_string_value(json_object_get(in, "type"));
        if (!in || !(any_type || (type && want && !strcmp(type, want))))
            continue;
        json_int_t link;
        return input_link(in, &link) ? resolve(c, s, link, want, out) : SD_OK;
    }
    return SD_OK;
}

static sd_status resolve(ui_conv *c, const ui_scope *s, json_int_t link_id, const char *want, ui_src *out)
{
    if (++c->hops > UI_MAX_HOPS)
        return sd_set_error(c->ctx, SD_ERR_LIMIT, "%s: links pass through more than %d nodes (a cycle?)",
                            c->path, UI_MAX_HOPS);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)link_id);
    json_int_t id;
    ui_link l;
    const json_t *link = json_object_get(s->level->links, key);
    if (!link || !link_parse(link, &id, &l))
        return SD_OK; /* a dangling link: ComfyUI drops the input */
    if (l.origin == UI_INPUT_NODE)
        return resolve_subgraph_input(c, s, l.origin_slot, want, out);
    const json_t *node = node_in(s->level, l.origin);
    if (!node || node_mode(node) == MODE_NEVER)
        return SD_OK;
    const char *type = node_type(node);
    if (node_mode(node) == MODE_BYPASS || !strcmp(type, "Reroute"))
        return resolve_bypass(c, s, node, l.origin_slot, want, !strcmp(type, "Reroute"), out);
    if (!strcmp(type, "PrimitiveNode")) {
        const json_t *values = json_object_get(node, "widgets_values");
        out->kind = SRC_WIDGET;
        out->value = json_array_get(values, 0);
        out->control = sd_comfy_is_control_value(json_array_get(values, 1)) ? json_array_get(values, 1) : NULL;
        return SD_OK;
    }
    const ui_level *def = level_of_def(c, type);
    if (def)
        return resolve_subgraph_output(c, s, node, def, l.origin_slot, want, out);
    out->kind = SRC_NODE;
    out->slot = l.origin_slot;
    out->id = sd_strfmt("%s%lld", s->prefix, (long long)l.origin);
    return out->id ? SD_OK : nomem(c);
}

/* ---- Emitting API nodes. ---- */

static bool is_scalar(const json_t *v)
{
    return json_is_string(v) || json_is_number(v) || json_is_boolean(v);
}

/* widgets_values in the order of the descriptor's widgets. A control_after_generate widget takes
 * a value only when it is one of the four, or a boolean in the oldest files (files of older
 * versions have none after PrimitiveInt's value). An object (some nodes save {name: value}) is taken by name. */
static sd_status map_widgets(ui_conv *c, const sd_node_desc *d, const json_t *values, json_t *inputs)
{
    if (json_is_object(values)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)values, k, v) if (is_scalar(v) && sd_node_desc_input(d, k) &&
                                                        json_object_set(inputs, k, v)) return nomem(c);
        return SD_OK;
    }
    size_t v = 0, n = json_array_size(values);
    for (size_t i = 0; i < d->n_inputs && v < n; i++) {
        const sd_input_desc *in = &d->inputs[i];
        if (!sd_comfy_is_widget(d, in))
            continue;
        json_t *val = json_array_get(values, v);
        bool control = !strcmp(in->name, SD_COMFY_CONTROL);
        if (control && json_is_boolean(val)) /* the first versions' "random seed" toggle */
            val = json_string(json_is_true(val) ? "randomize" : "fixed");
        else if (control && !sd_comfy_is_control_value(val))
            continue;
        else
            json_incref(val);
        v++;
        int rc = is_scalar(val) ? json_object_set(inputs, in->name, val) : 0;
        json_decref(val);
        if (rc)
            return nomem(c);
    }
    return SD_OK;
}

/* Whether the input right after `name` in the node type is control_after_generate. */
static bool controls(const sd_node_desc *d, const char *name)
{
    for (size_t k = 0; d && k + 1 < d->n_inputs; k++)
        if (!strcmp(d->inputs[k].name, name))
            return !strcmp(d->inputs[k + 1].name, SD_COMFY_CONTROL);
    return false;
}

static sd_status bind_input(ui_conv *c, const ui_scope *s, const sd_node_desc *d, const json_t *in, json_t *inputs)
{
    json_int_t link;
    const char *name = input_name(in);
    if (!name || !input_link(in, &link))
        return SD_OK;
    ui_src src = {SRC_NONE, NULL, 0, NULL, NULL};
    c->hops = 0;
    sd_status st = resolve(c, s, link, json_string_value(json_object_get(in, "type")), &src);
    if (st)
        return st;
    int rc = 0;
    switch (src.kind) {
    case SRC_NONE: json_object_del(inputs, name); break;
    case SRC_NODE: rc = json_object_set_new(inputs, name, json_pack("[s,I]", src.id, src.slot)); break;
    case SRC_VALUE: rc = json_object_set(inputs, name, (json_t *)src.value); break;
    case SRC_WIDGET:
        if (is_scalar(src.value)) /* the frontend applies a PrimitiveNode's value to its targets */
            rc = json_object_set(inputs, name, (json_t *)src.value);
        if (!rc && src.control && controls(d, name))
            rc = json_object_set(inputs, SD_COMFY_CONTROL, (json_t *)src.control);
        break;
    }
    free(src.id);
    return rc ? nomem(c) : SD_OK;
}

static sd_status emit_node(ui_conv *c, const ui_scope *s, const json_t *node)
{
    const char *type = node_type(node);
    const sd_node_desc *d = sd_node_type_find(type);
    json_t *api = json_pack("{s:s, s:{}, s:{}}", "class_type", type, "inputs", "_meta");
    if (!api)
        return nomem(c);
    json_t *inputs = json_object_get(api, "inputs"), *meta = json_object_get(api, "_meta");
    sd_status st = SD_OK;
    if (d)
        st = map_widgets(c, d, json_object_get(node, "widgets_values"), inputs);
    size_t i;
    const json_t *in;
    json_array_foreach(json_object_get(node, "inputs"), i, in) if (!st) st = bind_input(c, s, d, in, inputs);
    const char *title = json_string_value(json_object_get(node, "title"));
    json_t *title_v = st ? NULL : json_string(title ? title : type); /* (none after a failure: no leak) */
    if (!st && (!title_v || json_object_set_new(meta, "title", title_v)))
        st = nomem(c);
    char *id = st ? NULL : sd_strfmt("%s%lld", s->prefix, (long long)json_integer_value(json_object_get(node, "id")));
    if (!st && (!id || json_object_set(c->api, id, api) || (title && json_object_set(c->titles, id, title_v))))
        st = nomem(c);
    free(id);
    json_decref(api);
    return st;
}

static bool is_virtual(const char *type)
{
    static const char *const types[] = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", NULL};
    for (const char *const *t = types; *t; t++)
        if (!strcmp(type, *t))
            return true;
    return false;
}

static sd_status emit_scope(ui_conv *c, const ui_scope *s)
{
    size_t i;
    const json_t *node;
    sd_status st = SD_OK;
    json_array_foreach(json_object_get(s->level->graph, "nodes"), i, node)
    {
        json_int_t mode = node_mode(node);
        const char *type = node_type(node);
        if (st || mode == MODE_NEVER || mode == MODE_BYPASS || is_virtual(type))
            continue;
        if (!strncmp(type, "workflow>", 9) || !strncmp(type, "workflow/", 9))
            return sd_set_error(c->ctx, SD_ERR_INVALID,
                                "%s: node %lld is an old-style group node ('%s'), which sdflow does not expand; "
                                "in ComfyUI convert it to nodes or a subgraph and save again",
                                c->path, (long long)json_integer_value(json_object_get(node, "id")), type);
        const ui_level *def = level_of_def(c, type);
        if (!def) {
            st = emit_node(c, s, node);
            continue;
        }
        if (s->depth + 1 >= UI_MAX_DEPTH)
            return sd_set_error(c->ctx, SD_ERR_LIMIT, "%s: subgraphs nested deeper than %d levels", c->path,
                                UI_MAX_DEPTH);
        char *prefix = sd_strfmt("%s%lld:", s->prefix, (long long)json_integer_value(json_object_get(node, "id")));
        if (!prefix)
            return nomem(c);
        ui_scope inner = {.level = def, .prefix = prefix, .parent = s, .instance = node, .depth = s->depth + 1};
        st = emit_scope(c, &inner);
        free(prefix);
    }
    return st;
}

/* ---- Groups: the root's nodes whose position lies inside a group's bounding box. ---- */

static bool xy(const json_t *v, double *x, double *y)
{
    const json_t *a = json_is_array(v) ? json_array_get(v, 0) : json_object_get(v, "0");
    const json_t *b = json_is_array(v) ? json_array_get(v, 1) : json_object_get(v, "1");
    *x = json_number_value(a);
    *y = json_number_value(b);
    return json_is_number(a) && json_is_number(b);
}

static sd_status collect_groups(ui_conv *c, const json_t *root, json_t *groups)
{
    size_t i, j;
    const json_t *g, *node;
    json_array_foreach(json_object_get(root, "groups"), i, g)
    {
        const json_t *box = json_object_get(g, "bounding");
        const char *title = json_string_value(json_object_get(g, "title"));
        double gx, gy, gw, gh, x, y;
        if (!title || !xy(box, &gx, &gy) || !json_is_number(json_array_get(box, 2)) ||
            !json_is_number(json_array_get(box, 3)))
            continue;
        gw = json_number_value(json_array_get(box, 2));
        gh = json_number_value(json_array_get(box, 3));
        json_t *ids = json_array();
        json_array_foreach(json_object_get(root, "nodes"), j, node)
        {
            char id[32];
            snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(node, "id")));
            if (xy(json_object_get(node, "pos"), &x, &y) && x >= gx && y >= gy && x < gx + gw && y < gy + gh &&
                json_object_get(c->api, id))
                json_array_append_new(ids, json_string(id));
        }
        if (json_array_append_new(groups, json_pack("{s:s, s:o}", "title", title, "nodes", ids)))
            return nomem(c);
    }
    return SD_OK;
}

sd_status sd_comfy_ui_to_api(sd_context *ctx, const char *path, const json_t *ui, json_t **api_out,
                             json_t **meta_out)
{
    *api_out = NULL;
    *meta_out = NULL;
    const json_t *subgraphs = json_object_get(json_object_get(ui, "definitions"), "subgraphs");
    json_t *meta = json_pack("{s:{}, s:[]}", "titles", "groups");
    ui_conv c = {.ctx = ctx, .path = path, .api = json_object(), .titles = json_object_get(meta, "titles")};
    size_t n_defs = json_array_size(subgraphs);
    c.levels = calloc(n_defs + 1, sizeof *c.levels);
    sd_status st = c.api && meta && c.levels ? SD_OK : nomem(&c);
    if (!st)
        st = level_init(&c, &c.levels[c.n_levels++], ui, "workflow");
    for (size_t i = 0; !st && i < n_defs; i++) {
        const json_t *def = json_array_get(subgraphs, i);
        const char *id = json_string_value(json_object_get(def, "id"));
        if (!id) {
            st = sd_set_error(ctx, SD_ERR_PARSE, "%s: subgraph %zu has no \"id\"", path, i);
            break;
        }
        char what[96];
        snprintf(what, sizeof what, "subgraph '%.60s'", id);
        st = level_init(&c, &c.levels[c.n_levels++], def, what);
    }
    if (!st) {
        ui_scope root = {.level = &c.levels[0], .prefix = ""};
        st = emit_scope(&c, &root);
    }
    if (!st)
        st = collect_groups(&c, ui, json_object_get(meta, "groups"));
    for (size_t i = 0; i < c.n_levels; i++) {
        json_decref(c.levels[i].nodes);
        json_decref(c.levels[i].links);
    }
    free(c.levels);
    if (st) {
        json_decref(c.api);
        json_decref(meta);
        return st;
    }
    *api_out = c.api;
    *meta_out = meta;
    return SD_OK;
}
