/* Graph, node and output handles of the Lua module.
 *
 * A node handle (sdflow.node) names one node of one graph: its user value is the graph handle,
 * so the graph lives as long as any of its nodes is reachable. Indexing a node handle by an
 * output name gives an output reference (sdflow.output, user value: the node handle), which
 * inputs accept as a link. Builder misuse raises; file and validation failures return
 * nil, message, diagnostics. */
#include "lua/lsdflow.h"
#include "sdflow/node.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sdl_node {
    const sd_node_desc *desc; /* NULL for a node of an unknown type (loaded from a file) */
    size_t id_len;
    char text[];              /* id '\0' type '\0' */
} sdl_node;

typedef struct sdl_output {
    int index; /* into the node's descriptor outputs */
} sdl_output;

static const char *node_id(const sdl_node *n) { return n->text; }
static const char *node_type(const sdl_node *n) { return n->text + n->id_len + 1; }

/* Raises the context's last message (the builder API's misuse errors). */
static int raise_status(lua_State *L, const sd_graph *graph, sd_status st)
{
    const char *msg = sd_context_errmsg(sd_graph_context(graph));
    return luaL_error(L, "%s", *msg ? msg : sd_status_name(st));
}

static sdl_graph *to_graph(lua_State *L, int idx)
{
    sdl_graph *g = luaL_checkudata(L, idx, SDL_GRAPH);
    if (!g->graph)
        luaL_error(L, "attempt to use a closed sdflow.graph");
    return g;
}

sdl_graph *sdl_check_graph(lua_State *L, int idx)
{
    sdl_graph *g = to_graph(L, idx);
    if (g->running)
        luaL_error(L, "sdflow.graph is running: it cannot be used until run returns");
    return g;
}

sdl_graph *sdl_push_graph(lua_State *L)
{
    sdl_graph *g = lua_newuserdatauv(L, sizeof *g, 1); /* user value: the node handle cache */
    memset(g, 0, sizeof *g);
    luaL_setmetatable(L, SDL_GRAPH);
    return g;
}

void sdl_graph_own(sdl_graph *g, sd_graph *graph, sdl_shared_ctx *shared)
{
    g->graph = graph;
    g->shared = shared;
    shared->refs++;
}

/* ---- Node handles. ---- */

/* Pushes the handle of node `id` of the graph at gidx. A graph keeps its node handles in a
 * weak table, so a node has one handle at a time (handles work as table keys). */
static void push_node(lua_State *L, int gidx, const char *id, const char *type)
{
    gidx = lua_absindex(L, gidx);
    if (lua_getiuservalue(L, gidx, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, gidx, 1);
    }
    if (lua_getfield(L, -1, id) == LUA_TUSERDATA) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    size_t id_len = strlen(id), type_len = strlen(type);
    sdl_node *n = lua_newuserdatauv(L, sizeof *n + id_len + type_len + 2, 1);
    n->desc = sd_node_type_find(type);
    n->id_len = id_len;
    memcpy(n->text, id, id_len + 1);
    memcpy(n->text + id_len + 1, type, type_len + 1);
    luaL_setmetatable(L, SDL_NODE);
    lua_pushvalue(L, gidx);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, id);
    lua_remove(L, -2);
}

/* The node handle at idx, whose graph is pushed onto the stack. */
static sdl_node *node_and_graph(lua_State *L, int idx)
{
    sdl_node *n = luaL_checkudata(L, idx, SDL_NODE);
    lua_getiuservalue(L, idx, 1);
    return n;
}

/* Raises unless the handle at idx (node or output) belongs to the graph at gidx (absolute). */
static void check_same_graph(lua_State *L, int gidx, int idx, const char *id)
{
    int top = lua_gettop(L);
    lua_getiuservalue(L, idx, 1);
    if (luaL_testudata(L, -1, SDL_NODE)) /* idx is an output: take its node's graph */
        lua_getiuservalue(L, -1, 1);
    if (!lua_rawequal(L, -1, gidx))
        luaL_error(L, "node '%s' belongs to another graph", id);
    lua_settop(L, top);
}

const char *sdl_check_node_id(lua_State *L, int gidx, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        return lua_tostring(L, idx);
    sdl_node *n = luaL_testudata(L, idx, SDL_NODE);
    if (!n)
        luaL_error(L, "bad node: expected an sdflow.node or a node id, got %s", luaL_typename(L, idx));
    check_same_graph(L, gidx, idx, node_id(n));
    return node_id(n);
}

/* Output reference for n's output number index (node handle at nidx). */
static void push_output(lua_State *L, int nidx, int index)
{
    nidx = lua_absindex(L, nidx);
    sdl_output *o = lua_newuserdatauv(L, sizeof *o, 1);
    o->index = index;
    luaL_setmetatable(L, SDL_OUTPUT);
    lua_pushvalue(L, nidx);
    lua_setiuservalue(L, -2, 1);
}

static const char *output_name(const sdl_node *n, const sdl_output *o)
{
    return n->desc->outputs[o->index].name;
}

/* node.OUTPUT -> output reference; node.id, node.type -> strings; node.graph -> graph. */
static int node_index(lua_State *L)
{
    sdl_node *n = luaL_checkudata(L, 1, SDL_NODE);
    const char *key = luaL_checkstring(L, 2);
    int out = n->desc ? sd_node_desc_output(n->desc, key) : -1;
    if (out >= 0) {
        push_output(L, 1, out);
    } else if (!strcmp(key, "id")) {
        lua_pushstring(L, node_id(n));
    } else if (!strcmp(key, "type")) {
        lua_pushstring(L, node_type(n));
    } else if (!strcmp(key, "graph")) {
        lua_getiuservalue(L, 1, 1);
    } else if (!n->desc) {
        return luaL_error(L, "node '%s' has unknown type '%s'", node_id(n), node_type(n));
    } else {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t i = 0; i < n->desc->n_outputs; i++) {
            luaL_addstring(&b, i ? ", " : " (outputs: ");
            luaL_addstring(&b, n->desc->outputs[i].name);
        }
        luaL_addstring(&b, n->desc->n_outputs ? ")" : " (it has no outputs)");
        luaL_pushresult(&b);
        return luaL_error(L, "node '%s' (%s) has no output '%s'%s", node_id(n), node_type(n), key,
                          lua_tostring(L, -1));
    }
    return 1;
}

static int node_tostring(lua_State *L)
{
    sdl_node *n = luaL_checkudata(L, 1, SDL_NODE);
    lua_pushfstring(L, "sdflow.node '%s' (%s)", node_id(n), node_type(n));
    return 1;
}

static int output_tostring(lua_State *L)
{
    sdl_output *o = luaL_checkudata(L, 1, SDL_OUTPUT);
    lua_getiuservalue(L, 1, 1);
    sdl_node *n = lua_touserdata(L, -1);
    lua_pushfstring(L, "sdflow.output '%s'.%s", node_id(n), output_name(n, o));
    return 1;
}

/* output.node -> node handle; output.name -> output name. */
static int output_index(lua_State *L)
{
    sdl_output *o = luaL_checkudata(L, 1, SDL_OUTPUT);
    const char *key = luaL_checkstring(L, 2);
    lua_getiuservalue(L, 1, 1);
    sdl_node *n = lua_touserdata(L, -1);
    if (!strcmp(key, "node"))
        return 1;
    if (!strcmp(key, "name")) {
        lua_pushstring(L, output_name(n, o));
        return 1;
    }
    return luaL_error(L, "sdflow.output has no field '%s' (node, name)", key);
}

/* ---- Values. ---- */

/* Shortest "%.Ng" text that reads back as exactly v (at most 17 digits). */
static void format_float(double v, char *buf, size_t size)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* Text form of a literal (number, boolean, string) as sd_graph_set_input takes it; NULL when
 * the value at idx is none of those. Numbers are written into buf. */
static const char *literal_text(lua_State *L, int idx, char *buf, size_t size)
{
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
        else
            format_float(lua_tonumber(L, idx), buf, size);
        return buf;
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? "true" : "false";
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            luaL_error(L, "a string value must not contain a zero byte");
        return s;
    default:
        return NULL;
    }
}

/* The node whose output the value at idx names: an sdflow.output, or a node handle with
 * exactly one output. Sets *out_name; returns NULL when the value is neither. */
static sdl_node *link_source(lua_State *L, int gidx, int idx, const char **out_name)
{
    sdl_output *o = luaL_testudata(L, idx, SDL_OUTPUT);
    sdl_node *n;
    if (o) {
        lua_getiuservalue(L, idx, 1);
        n = lua_touserdata(L, -1);
        lua_pop(L, 1); /* the output's user value keeps the node alive */
        check_same_graph(L, gidx, idx, node_id(n));
        *out_name = output_name(n, o);
    } else if ((n = luaL_testudata(L, idx, SDL_NODE))) {
        check_same_graph(L, gidx, idx, node_id(n));
        if (!n->desc)
            luaL_error(L, "node '%s' has unknown type '%s'", node_id(n), node_type(n));
        if (n->desc->n_outputs != 1)
            luaL_error(L, "node '%s' (%s) has %d outputs: name the one to link (node.%s)", node_id(n),
                       node_type(n), (int)n->desc->n_outputs,
                       n->desc->n_outputs ? n->desc->outputs[0].name : "OUTPUT");
        *out_name = n->desc->outputs[0].name;
    }
    return n;
}

static int has_node(const sd_graph *graph, const char *id)
{
    size_t n = sd_graph_node_count(graph);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(sd_graph_node_id(graph, i), id))
            return 1;
    return 0;
}

/* Sets input `input` of node `id` in graph from the Lua value at vidx: nil clears it, an
 * output reference (or a one-output node) links it, a number/boolean/string sets a literal.
 * Handles must belong to the graph handle at gidx. With add_sources (a trial graph), a link's
 * source node is first added to graph under its id and type, so the link is checked there. */
static void set_input(lua_State *L, sd_graph *graph, int gidx, const char *id, const char *input, int vidx,
                      int add_sources)
{
    char buf[64];
    const char *out_name, *text;
    sdl_node *src;
    sd_status st = SD_OK;
    if (lua_isnil(L, vidx)) {
        st = sd_graph_clear_input(graph, id, input);
    } else if ((src = link_source(L, gidx, vidx, &out_name))) {
        if (add_sources && !has_node(graph, node_id(src)))
            st = sd_graph_add_node(graph, node_type(src), node_id(src), NULL);
        if (!st)
            st = sd_graph_connect(graph, node_id(src), out_name, id, input);
    } else if ((text = literal_text(L, vidx, buf, sizeof buf))) {
        st = sd_graph_set_input(graph, id, input, text);
    } else {
        luaL_error(L, "node '%s' input '%s': cannot use a %s value (number, boolean, string, "
                      "node output or nil)", id, input, luaL_typename(L, vidx));
    }
    if (st)
        raise_status(L, graph, st);
}

/* ---- Graph methods. ---- */

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks an inputs table against node type desc before the node is added, so that a misnamed
 * input or a wrong kind of value adds nothing. Returns the sorted input names (userdata on the
 * stack keeps them). */
static const char **check_inputs(lua_State *L, const sd_node_desc *desc, int tidx, size_t *count)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, tidx)) {
        lua_pop(L, 1);
        n++;
    }
    const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof *names, 0);
    n = 0;
    lua_pushnil(L);
    while (lua_next(L, tidx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s inputs are named: got a %s key", desc->name, luaL_typename(L, -2));
        const char *name = lua_tostring(L, -2);
        const sd_input_desc *in = sd_node_desc_input(desc, name);
        if (!in)
            luaL_error(L, "node type %s has no input '%s'", desc->name, name);
        int is_link = luaL_testudata(L, -1, SDL_OUTPUT) || luaL_testudata(L, -1, SDL_NODE);
        if (!is_link && !sd_type_is_literal(in->type))
            luaL_error(L, "%s input '%s' is %s: it takes a node output, not a %s", desc->name, name,
                       sd_type_name(in->type), luaL_typename(L, -1));
        names[n++] = name; /* the key string stays in the table */
        lua_pop(L, 1);
    }
    qsort(names, n, sizeof *names, cmp_strings);
    *count = n;
    return names;
}

/* The id of a new node: the one given (raises when taken), else the smallest free number
 * (written into buf). */
static const char *new_node_id(lua_State *L, const sd_graph *graph, const char *id, char *buf, size_t size)
{
    size_t n = sd_graph_node_count(graph);
    if (id) {
        if (has_node(graph, id))
            luaL_error(L, "duplicate node id '%s'", id);
        return id;
    }
    unsigned char *used = lua_newuserdatauv(L, n + 2, 0);
    memset(used, 0, n + 2);
    for (size_t i = 0; i < n; i++) {
        const char *s = sd_graph_node_id(graph, i);
        size_t len = strspn(s, "0123456789");
        if (len == 0 || s[len] || s[0] == '0' || len > 9)
            continue;
        size_t number = strtoul(s, NULL, 10);
        if (number <= n + 1)
            used[number] = 1;
    }
    size_t v = 1;
    while (used[v])
        v++;
    lua_pop(L, 1);
    snprintf(buf, size, "%zu", v);
    return buf;
}

static void free_graph(void *graph)
{
    sd_graph_free(graph);
}

/* Adds node `id` of `type` to graph and sets the inputs listed in names from the table at
 * tidx (see set_input for add_sources). */
static void add_with_inputs(lua_State *L, sd_graph *graph, const char *type, const char *id,
                            const char **names, size_t n_names, int tidx, int add_sources)
{
    sd_status st = sd_graph_add_node(graph, type, id, NULL);
    if (st)
        raise_status(L, graph, st);
    for (size_t i = 0; i < n_names; i++) {
        lua_getfield(L, tidx, names[i]);
        set_input(L, graph, 1, id, names[i], lua_gettop(L), add_sources);
        lua_pop(L, 1);
    }
}

/* g:add(type [, inputs] [, id]) -> node. Nothing is added when anything is rejected: the
 * inputs are first tried on a scratch graph holding the new node and its link sources. */
static int graph_add(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *type = luaL_checkstring(L, 2);
    int has_inputs = !lua_isnoneornil(L, 3);
    if (has_inputs)
        luaL_checktype(L, 3, LUA_TTABLE);
    const char *id = luaL_optstring(L, 4, NULL);
    lua_settop(L, 4);
    const sd_node_desc *desc = sd_node_type_find(type);
    if (!desc)
        return luaL_error(L, "unknown node type '%s'", type);
    size_t n_inputs = 0;
    const char **names = has_inputs ? check_inputs(L, desc, 3, &n_inputs) : NULL;
    char buf[32];
    id = new_node_id(L, g->graph, id, buf, sizeof buf);
    if (n_inputs) {
        void **slot = sdl_push_box(L, free_graph);
        sd_graph *trial = NULL;
        if (sd_graph_new(sd_graph_context(g->graph), &trial))
            return luaL_error(L, "out of memory");
        *slot = trial;
        add_with_inputs(L, trial, type, id, names, n_inputs, 3, 1);
    }
    add_with_inputs(L, g->graph, type, id, names, n_inputs, 3, 0);
    push_node(L, 1, id, type);
    return 1;
}

/* g:node(id) -> node handle, or nil when there is no such node. */
static int graph_node(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *id = luaL_checkstring(L, 2);
    size_t n = sd_graph_node_count(g->graph);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(sd_graph_node_id(g->graph, i), id)) {
            push_node(L, 1, id, sd_graph_node_type(g->graph, i));
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

/* g:nodes() -> list of node handles in graph order. */
static int graph_nodes(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    size_t n = sd_graph_node_count(g->graph);
    lua_createtable(L, n < 1000000 ? (int)n : 0, 0);
    for (size_t i = 0; i < n; i++) {
        push_node(L, 1, sd_graph_node_id(g->graph, i), sd_graph_node_type(g->graph, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* g:set(node, input, value): value nil clears the input. */
static int graph_set(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *id = sdl_check_node_id(L, 1, 2);
    const char *input = luaL_checkstring(L, 3);
    luaL_checkany(L, 4);
    set_input(L, g->graph, 1, id, input, 4, 0);
    return 0;
}

/* node.input = value: the same as g:set(node, "input", value). */
static int node_newindex(lua_State *L)
{
    sdl_node *n = node_and_graph(L, 1);
    int gidx = lua_gettop(L);
    sdl_graph *g = sdl_check_graph(L, gidx);
    set_input(L, g->graph, gidx, node_id(n), luaL_checkstring(L, 2), 3, 0);
    return 0;
}

/* g:clear(node, input) */
static int graph_clear(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *id = sdl_check_node_id(L, 1, 2);
    sd_status st = sd_graph_clear_input(g->graph, id, luaL_checkstring(L, 3));
    if (st)
        raise_status(L, g->graph, st);
    return 0;
}

/* g:connect(src, "OUTPUT", dst, "input") or g:connect(src.OUTPUT, dst, "input") */
static int graph_connect(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *src_id, *out_name;
    int dst = 4;
    if (luaL_testudata(L, 2, SDL_OUTPUT)) {
        src_id = node_id(link_source(L, 1, 2, &out_name));
        dst = 3;
    } else {
        src_id = sdl_check_node_id(L, 1, 2);
        out_name = luaL_checkstring(L, 3);
    }
    const char *dst_id = sdl_check_node_id(L, 1, dst);
    const char *input = luaL_checkstring(L, dst + 1);
    sd_status st = sd_graph_connect(g->graph, src_id, out_name, dst_id, input);
    if (st)
        raise_status(L, g->graph, st);
    return 0;
}

/* g:param(name, type [, default [, doc]]) */
static int graph_param(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *type = luaL_checkstring(L, 3);
    char buf[64];
    const char *def = NULL;
    if (!lua_isnoneornil(L, 4) && !(def = literal_text(L, 4, buf, sizeof buf)))
        return luaL_error(L, "parameter '%s': default must be a number, boolean or string, not a %s",
                          name, luaL_typename(L, 4));
    const char *doc = luaL_optstring(L, 5, NULL);
    sd_status st = sd_graph_add_param(g->graph, name, type, def, doc);
    if (st)
        return raise_status(L, g->graph, st);
    return 0;
}

/* g:bind(name, node, input) */
static int graph_bind(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *id = sdl_check_node_id(L, 1, 3);
    sd_status st = sd_graph_bind_param(g->graph, name, id, luaL_checkstring(L, 4));
    if (st)
        return raise_status(L, g->graph, st);
    return 0;
}

/* g:setparam(name, value) */
static int graph_setparam(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *name = luaL_checkstring(L, 2);
    char buf[64];
    const char *text = literal_text(L, 3, buf, sizeof buf);
    if (!text)
        return luaL_error(L, "parameter '%s': value must be a number, boolean or string, not a %s",
                          name, luaL_typename(L, 3));
    sd_status st = sd_graph_set_param(g->graph, name, text);
    if (st)
        return raise_status(L, g->graph, st);
    return 0;
}

static void set_opt_field(lua_State *L, const char *key, const char *value)
{
    if (value) {
        lua_pushstring(L, value);
        lua_setfield(L, -2, key);
    }
}

/* g:params() -> list of {name=, type=, default=, doc=, value=} */
static int graph_params(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    size_t n = sd_graph_param_count(g->graph);
    lua_createtable(L, n < 100000 ? (int)n : 0, 0);
    for (size_t i = 0; i < n; i++) {
        sd_param_info p;
        if (sd_graph_param_at(g->graph, i, &p))
            continue;
        lua_createtable(L, 0, 5);
        set_opt_field(L, "name", p.name);
        set_opt_field(L, "type", p.type);
        set_opt_field(L, "default", p.default_text);
        set_opt_field(L, "doc", p.doc);
        set_opt_field(L, "value", p.value);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* g:meta(key) -> value or nil; g:meta(key, value) sets it (nil removes it). */
static int graph_meta(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (lua_gettop(L) < 3) {
        const char *v = sd_graph_meta(g->graph, key);
        if (v)
            lua_pushstring(L, v);
        else
            lua_pushnil(L);
        return 1;
    }
    sd_status st = sd_graph_set_meta(g->graph, key, luaL_optstring(L, 3, NULL));
    if (st)
        return raise_status(L, g->graph, st);
    return 0;
}

/* g:inline_params(): every parameter binding becomes a literal of the parameter's current
 * value and the declarations go. */
static int graph_inline_params(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    sd_status st = sd_graph_inline_params(g->graph);
    if (st)
        return raise_status(L, g->graph, st);
    return 0;
}

/* g:validate() -> true, or nil, message, diagnostics */
static int graph_validate(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    sd_status st = sd_graph_validate(g->graph);
    if (st)
        return sdl_push_failure(L, sd_graph_context(g->graph), st);
    lua_pushboolean(L, 1);
    return 1;
}

/* The `resolve` flag of an options table at idx (absent: false). */
static int opt_resolve(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "resolve");
    int resolve = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return resolve;
}

/* g:save(path [, {resolve = true}]) -> true, or nil, message, diagnostics */
static int graph_save(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    const char *path = luaL_checkstring(L, 2);
    sd_status st = sd_graph_save_xml(g->graph, path, opt_resolve(L, 3));
    if (st)
        return sdl_push_failure(L, sd_graph_context(g->graph), st);
    lua_pushboolean(L, 1);
    return 1;
}

/* g:xml([{resolve = true}]) -> string, or nil, message, diagnostics */
static int graph_xml(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    int resolve = opt_resolve(L, 2);
    void **slot = sdl_push_box(L, free);
    char *xml = NULL;
    sd_status st = sd_graph_to_xml(g->graph, resolve, &xml);
    *slot = xml;
    if (st)
        return sdl_push_failure(L, sd_graph_context(g->graph), st);
    lua_pushstring(L, xml);
    return 1;
}

/* g:export_comfy([{ui = true}]) -> ComfyUI JSON string (API format, UI format with ui), or nil,
 * message, diagnostics */
static int graph_export_comfy(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    bool ui = false;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "ui");
        ui = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    void **slot = sdl_push_box(L, free);
    char *json = NULL;
    sd_status st = sd_graph_export_comfy(g->graph, ui, &json);
    *slot = json;
    if (st)
        return sdl_push_failure(L, sd_graph_context(g->graph), st);
    lua_pushstring(L, json);
    return 1;
}

static int graph_close(lua_State *L)
{
    sdl_graph *g = luaL_checkudata(L, 1, SDL_GRAPH);
    if (g->running)
        return luaL_error(L, "sdflow.graph is running: it cannot be closed until run returns");
    if (g->graph) {
        sd_graph_free(g->graph);
        g->graph = NULL;
        sdl_shared_release(g->shared);
        g->shared = NULL;
    }
    return 0;
}

static int graph_tostring(lua_State *L)
{
    sdl_graph *g = luaL_checkudata(L, 1, SDL_GRAPH);
    if (!g->graph) {
        lua_pushliteral(L, "sdflow.graph (closed)");
    } else {
        size_t n = sd_graph_node_count(g->graph);
        lua_pushfstring(L, "sdflow.graph (%d node%s)", (int)n, n == 1 ? "" : "s");
    }
    return 1;
}

static int graph_len(lua_State *L)
{
    sdl_graph *g = to_graph(L, 1);
    lua_pushinteger(L, (lua_Integer)sd_graph_node_count(g->graph));
    return 1;
}

static const luaL_Reg graph_methods[] = {
    {"add", graph_add},
    {"node", graph_node},
    {"nodes", graph_nodes},
    {"set", graph_set},
    {"clear", graph_clear},
    {"connect", graph_connect},
    {"param", graph_param},
    {"bind", graph_bind},
    {"setparam", graph_setparam},
    {"params", graph_params},
    {"inline_params", graph_inline_params},
    {"meta", graph_meta},
    {"validate", graph_validate},
    {"save", graph_save},
    {"xml", graph_xml},
    {"export_comfy", graph_export_comfy},
    {"run", sdl_graph_run},
    {"close", graph_close},
    {NULL, NULL},
};

static const luaL_Reg graph_meta_methods[] = {
    {"__gc", graph_close},
    {"__close", graph_close},
    {"__tostring", graph_tostring},
    {"__len", graph_len},
    {NULL, NULL},
};

static const luaL_Reg node_meta[] = {
    {"__index", node_index},
    {"__newindex", node_newindex},
    {"__tostring", node_tostring},
    {NULL, NULL},
};

static const luaL_Reg output_meta[] = {
    {"__index", output_index},
    {"__tostring", output_tostring},
    {NULL, NULL},
};

void sdl_open_graph(lua_State *L)
{
    if (luaL_newmetatable(L, SDL_GRAPH)) {
        luaL_setfuncs(L, graph_meta_methods, 0);
        luaL_newlib(L, graph_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SDL_NODE))
        luaL_setfuncs(L, node_meta, 0);
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SDL_OUTPUT))
        luaL_setfuncs(L, output_meta, 0);
    lua_pop(L, 1);
}
