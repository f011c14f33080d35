/* The sdflow Lua module: module functions, context handles, node type descriptions. */
#include "lua/lsdflow.h"
#include "sdflow/node.h"
#include <stdlib.h>
#include <string.h>

/* Userdata of a context handle. */
typedef struct sdl_context {
    sdl_shared_ctx *shared; /* NULL once closed */
} sdl_context;

#define DEFAULT_CONTEXT_KEY "sdflow.default_context"

void sdl_shared_release(sdl_shared_ctx *shared)
{
    if (--shared->refs > 0)
        return;
    sd_context_free(shared->ctx);
    free(shared);
}

typedef struct sdl_box {
    void *ptr; /* first member: sdl_push_box hands out its address */
    void (*free_fn)(void *);
} sdl_box;

void **sdl_push_box(lua_State *L, void (*free_fn)(void *))
{
    sdl_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->ptr = NULL;
    b->free_fn = free_fn;
    luaL_setmetatable(L, SDL_BOX);
    return &b->ptr;
}

static int box_gc(lua_State *L)
{
    sdl_box *b = luaL_checkudata(L, 1, SDL_BOX);
    if (b->ptr)
        b->free_fn(b->ptr);
    b->ptr = NULL;
    return 0;
}

int sdl_push_failure(lua_State *L, sd_context *ctx, sd_status status)
{
    const char *msg = sd_context_errmsg(ctx);
    lua_pushnil(L);
    lua_pushstring(L, *msg ? msg : sd_status_name(status));
    size_t n = sd_context_diag_count(ctx);
    lua_createtable(L, (int)(n < 1000 ? n : 1000), 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, sd_context_diag(ctx, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 3;
}

static sdl_context *check_context(lua_State *L, int idx)
{
    sdl_context *c = luaL_checkudata(L, idx, SDL_CONTEXT);
    if (!c->shared)
        luaL_error(L, "attempt to use a closed sdflow.context");
    return c;
}

/* Raises the context's message for a failed setter. */
static void check_set(lua_State *L, sd_context *ctx, sd_status st, const char *option)
{
    if (st) {
        const char *msg = sd_context_errmsg(ctx);
        luaL_error(L, "context option '%s': %s", option, *msg ? msg : sd_status_name(st));
    }
}

static void set_dir(lua_State *L, sd_context *ctx, sd_dir_kind kind, const char *option)
{
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "context option '%s': a path, not a %s", option, luaL_typename(L, -1));
    check_set(L, ctx, sd_context_set_dir(ctx, kind, lua_tostring(L, -1)), option);
}

/* Applies the options table at idx to ctx; unknown keys are errors (they are typos). */
static void configure(lua_State *L, sd_context *ctx, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "context options are named (got a %s key)", luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        if (!strcmp(key, "models_dirs")) {
            sd_context_clear_models_dirs(ctx);
            if (lua_type(L, -1) == LUA_TSTRING) {
                check_set(L, ctx, sd_context_add_models_dir(ctx, lua_tostring(L, -1)), key);
            } else {
                if (!lua_istable(L, -1))
                    luaL_error(L, "context option 'models_dirs': a string or a list of strings, not a %s",
                               luaL_typename(L, -1));
                lua_Integer n = luaL_len(L, -1);
                for (lua_Integer i = 1; i <= n; i++) {
                    lua_geti(L, -1, i);
                    if (lua_type(L, -1) != LUA_TSTRING)
                        luaL_error(L, "context option 'models_dirs': entry %d is a %s, not a string",
                                   (int)i, luaL_typename(L, -1));
                    check_set(L, ctx, sd_context_add_models_dir(ctx, lua_tostring(L, -1)), key);
                    lua_pop(L, 1);
                }
            }
        } else if (!strcmp(key, "input_dir")) {
            set_dir(L, ctx, SD_DIR_INPUT, key);
        } else if (!strcmp(key, "output_dir")) {
            set_dir(L, ctx, SD_DIR_OUTPUT, key);
        } else if (!strcmp(key, "temp_dir")) {
            set_dir(L, ctx, SD_DIR_TEMP, key);
        } else if (!strcmp(key, "allow_absolute_paths")) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                luaL_error(L, "context option '%s': true or false, not a %s", key, luaL_typename(L, -1));
            sd_context_set_allow_absolute_paths(ctx, lua_toboolean(L, -1));
        } else if (!strcmp(key, "cache")) {
            /* a path, or false to disable the cache */
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
                luaL_error(L, "context option 'cache': a path or false, not %s",
                           t == LUA_TBOOLEAN ? "true" : luaL_typename(L, -1));
            check_set(L, ctx, sd_context_set_cache_path(ctx, t == LUA_TSTRING ? lua_tostring(L, -1) : NULL),
                      key);
        } else if (!strcmp(key, "device")) {
            /* a selector, or false for the default device */
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
                luaL_error(L, "context option 'device': an index or name, or false, not %s",
                           t == LUA_TBOOLEAN ? "true" : luaL_typename(L, -1));
            check_set(L, ctx, sd_context_set_device(ctx, t == LUA_TSTRING ? lua_tostring(L, -1) : NULL), key);
        } else if (!strcmp(key, "precision")) {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "context option 'precision': \"fp32\" or \"bf16\", not a %s", luaL_typename(L, -1));
            check_set(L, ctx, sd_context_set_precision(ctx, lua_tostring(L, -1)), key);
        } else {
            luaL_error(L, "unknown context option '%s' (models_dirs, input_dir, output_dir, "
                          "temp_dir, allow_absolute_paths, cache, device, precision)", key);
        }
        lua_pop(L, 1);
    }
}

/* Pushes a new context handle configured from the environment, then from the host's
 * SDL_CONTEXT_DEFAULTS. */
static sdl_context *new_context(lua_State *L)
{
    sdl_context *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->shared = NULL;
    luaL_setmetatable(L, SDL_CONTEXT);
    sdl_shared_ctx *shared = calloc(1, sizeof *shared);
    if (!shared)
        luaL_error(L, "out of memory");
    if (sd_context_new(&shared->ctx)) {
        free(shared);
        luaL_error(L, "out of memory");
    }
    shared->refs = 1;
    c->shared = shared;
    if (lua_getfield(L, LUA_REGISTRYINDEX, SDL_CONTEXT_DEFAULTS) == LUA_TTABLE)
        configure(L, shared->ctx, lua_gettop(L));
    lua_pop(L, 1);
    return c;
}

/* sdflow.context([options]) -> a new context. */
static int l_context(lua_State *L)
{
    lua_settop(L, 1); /* the options or nil, below the new handle */
    sdl_context *c = new_context(L);
    if (!lua_isnoneornil(L, 1))
        configure(L, c->shared->ctx, 1);
    return 1;
}

/* The default context of the module functions, created from the environment on first use
 * and kept in the registry. */
static sdl_shared_ctx *default_context(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_CONTEXT_KEY) != LUA_TUSERDATA) {
        lua_pop(L, 1);
        new_context(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_CONTEXT_KEY);
    }
    sdl_shared_ctx *shared = ((sdl_context *)lua_touserdata(L, -1))->shared;
    lua_pop(L, 1); /* the registry keeps it */
    return shared;
}

/* Each context function serves as a method (ctx:load(path)) and as a module function on the
 * default context (sdflow.load(path)): returns the context and sets *arg to the index of the
 * first argument. */
static sdl_shared_ctx *receiver(lua_State *L, int *arg)
{
    if (luaL_testudata(L, 1, SDL_CONTEXT)) {
        *arg = 2;
        return check_context(L, 1)->shared;
    }
    *arg = 1;
    return default_context(L);
}

static int ctx_configure(lua_State *L)
{
    int arg;
    sdl_shared_ctx *shared = receiver(L, &arg);
    configure(L, shared->ctx, arg);
    return 0;
}

static void set_field(lua_State *L, const char *key, const char *value)
{
    if (value) {
        lua_pushstring(L, value);
        lua_setfield(L, -2, key);
    }
}

/* ctx:settings() -> {input_dir=, output_dir=, temp_dir=, cache=, device=, precision=} */
static int ctx_settings(lua_State *L)
{
    int arg;
    sd_context *ctx = receiver(L, &arg)->ctx;
    lua_createtable(L, 0, 6);
    set_field(L, "input_dir", sd_context_dir(ctx, SD_DIR_INPUT));
    set_field(L, "output_dir", sd_context_dir(ctx, SD_DIR_OUTPUT));
    set_field(L, "temp_dir", sd_context_dir(ctx, SD_DIR_TEMP));
    if (sd_context_cache_path(ctx))
        set_field(L, "cache", sd_context_cache_path(ctx));
    else {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "cache");
    }
    set_field(L, "device", sd_context_device(ctx));
    set_field(L, "precision", sd_context_precision(ctx));
    return 1;
}

static int ctx_graph(lua_State *L)
{
    int arg;
    sdl_shared_ctx *shared = receiver(L, &arg);
    sdl_graph *handle = sdl_push_graph(L);
    sd_graph *g;
    if (sd_graph_new(shared->ctx, &g))
        return luaL_error(L, "out of memory");
    sdl_graph_own(handle, g, shared);
    return 1;
}

/* Returns the handle (on the stack top) given the graph a loader made, or the failure triple. */
static int own_loaded(lua_State *L, sdl_graph *handle, sdl_shared_ctx *shared, sd_status st, sd_graph *g)
{
    if (st)
        return sdl_push_failure(L, shared->ctx, st);
    sdl_graph_own(handle, g, shared);
    return 1;
}

static int ctx_load(lua_State *L)
{
    int arg;
    sdl_shared_ctx *shared = receiver(L, &arg);
    const char *path = luaL_checkstring(L, arg);
    sdl_graph *handle = sdl_push_graph(L);
    sd_graph *g = NULL;
    sd_status st = sd_graph_load_xml(shared->ctx, path, &g);
    return own_loaded(L, handle, shared, st, g);
}

static int ctx_load_string(lua_State *L)
{
    int arg;
    sdl_shared_ctx *shared = receiver(L, &arg);
    size_t len;
    const char *xml = luaL_checklstring(L, arg, &len);
    const char *name = luaL_optstring(L, arg + 1, "<string>");
    sdl_graph *handle = sdl_push_graph(L);
    sd_graph *g = NULL;
    sd_status st = sd_graph_load_xml_memory(shared->ctx, xml, len, name, &g);
    return own_loaded(L, handle, shared, st, g);
}

static int ctx_import_comfy(lua_State *L)
{
    int arg;
    sdl_shared_ctx *shared = receiver(L, &arg);
    const char *path = luaL_checkstring(L, arg);
    sdl_graph *handle = sdl_push_graph(L);
    sd_graph *g = NULL;
    sd_status st = sd_graph_import_comfy(shared->ctx, path, &g);
    return own_loaded(L, handle, shared, st, g);
}

static int ctx_cache_stats(lua_State *L)
{
    int arg;
    sd_context *ctx = receiver(L, &arg)->ctx;
    sd_cache_stats s;
    sd_status st = sd_cache_stats_get(ctx, &s);
    if (st)
        return sdl_push_failure(L, ctx, st);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, s.entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, s.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, s.file_bytes);
    lua_setfield(L, -2, "file_bytes");
    lua_pushinteger(L, s.file_hashes);
    lua_setfield(L, -2, "file_hashes");
    return 1;
}

static int ctx_cache_clear(lua_State *L)
{
    int arg;
    sd_context *ctx = receiver(L, &arg)->ctx;
    sd_status st = sd_cache_clear(ctx);
    if (st)
        return sdl_push_failure(L, ctx, st);
    lua_pushboolean(L, 1);
    return 1;
}

/* ctx:cache_verify() -> number of bad entries deleted, or nil, message, diagnostics */
static int ctx_cache_verify(lua_State *L)
{
    int arg;
    sd_context *ctx = receiver(L, &arg)->ctx;
    int64_t bad = 0;
    sd_status st = sd_cache_verify(ctx, &bad);
    if (st)
        return sdl_push_failure(L, ctx, st);
    lua_pushinteger(L, bad);
    return 1;
}

/* ctx:cache_gc(max_size) -> number of entries evicted, or nil, message, diagnostics.
 * max_size: bytes, or a size text such as "500M". */
static int ctx_cache_gc(lua_State *L)
{
    int arg;
    sd_context *ctx = receiver(L, &arg)->ctx;
    int64_t max_bytes;
    if (lua_isinteger(L, arg)) {
        max_bytes = lua_tointeger(L, arg);
        luaL_argcheck(L, max_bytes >= 0, arg, "a size must not be negative");
    } else if (lua_type(L, arg) == LUA_TSTRING) {
        if (sd_parse_size(lua_tostring(L, arg), &max_bytes))
            return luaL_argerror(L, arg, lua_pushfstring(L, "'%s' is not a size", lua_tostring(L, arg)));
    } else {
        return luaL_typeerror(L, arg, "size (integer bytes or text such as \"500M\")");
    }
    int64_t evicted = 0;
    sd_status st = sd_cache_gc(ctx, max_bytes, &evicted);
    if (st)
        return sdl_push_failure(L, ctx, st);
    lua_pushinteger(L, evicted);
    return 1;
}

static int ctx_close(lua_State *L)
{
    sdl_context *c = luaL_checkudata(L, 1, SDL_CONTEXT);
    if (c->shared) {
        sdl_shared_release(c->shared);
        c->shared = NULL;
    }
    return 0;
}

static int ctx_tostring(lua_State *L)
{
    sdl_context *c = luaL_checkudata(L, 1, SDL_CONTEXT);
    if (!c->shared) {
        lua_pushliteral(L, "sdflow.context (closed)");
    } else {
        const char *cache = sd_context_cache_path(c->shared->ctx);
        lua_pushfstring(L, "sdflow.context (cache %s)", cache ? cache : "off");
    }
    return 1;
}

/* sdflow.node_types() -> sorted list of node type names. */
static int l_node_types(lua_State *L)
{
    size_t n = sd_node_type_count();
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, sd_node_type_at(i)->name);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static void push_choices(lua_State *L, const char *const *choices)
{
    lua_newtable(L);
    for (int i = 0; choices[i]; i++) {
        lua_pushstring(L, choices[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* sdflow.describe(type) -> {name, version, category, doc, inputs = {...}, outputs = {...}} */
static int l_describe(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const sd_node_desc *d = sd_node_type_find(name);
    if (!d)
        return luaL_error(L, "unknown node type '%s'", name);
    lua_createtable(L, 0, 6);
    set_field(L, "name", d->name);
    lua_pushinteger(L, d->version);
    lua_setfield(L, -2, "version");
    set_field(L, "category", d->category);
    set_field(L, "doc", d->doc);
    lua_pushboolean(L, (d->flags & SD_NODE_OUTPUT) != 0);
    lua_setfield(L, -2, "output_node");
    lua_createtable(L, (int)d->n_inputs, 0);
    for (size_t i = 0; i < d->n_inputs; i++) {
        const sd_input_desc *in = &d->inputs[i];
        lua_createtable(L, 0, 8);
        set_field(L, "name", in->name);
        set_field(L, "type", sd_type_name(in->type));
        set_field(L, "default", in->def);
        set_field(L, "doc", in->doc);
        lua_pushboolean(L, (in->flags & SD_IN_OPTIONAL) != 0);
        lua_setfield(L, -2, "optional");
        if (in->flags & SD_IN_RANGED) {
            lua_pushnumber(L, in->min);
            lua_setfield(L, -2, "min");
            lua_pushnumber(L, in->max);
            lua_setfield(L, -2, "max");
        }
        if (in->choices) {
            push_choices(L, in->choices);
            lua_setfield(L, -2, "choices");
        }
        set_field(L, "file_dir", in->file_dir);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "inputs");
    lua_createtable(L, (int)d->n_outputs, 0);
    for (size_t i = 0; i < d->n_outputs; i++) {
        lua_createtable(L, 0, 3);
        set_field(L, "name", d->outputs[i].name);
        set_field(L, "type", sd_type_name(d->outputs[i].type));
        set_field(L, "doc", d->outputs[i].doc);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "outputs");
    return 1;
}

static const luaL_Reg context_methods[] = {
    {"configure", ctx_configure},
    {"settings", ctx_settings},
    {"graph", ctx_graph},
    {"load", ctx_load},
    {"load_string", ctx_load_string},
    {"import_comfy", ctx_import_comfy},
    {"cache_stats", ctx_cache_stats},
    {"cache_clear", ctx_cache_clear},
    {"cache_verify", ctx_cache_verify},
    {"cache_gc", ctx_cache_gc},
    {"close", ctx_close},
    {NULL, NULL},
};

static const luaL_Reg context_meta[] = {
    {"__gc", ctx_close},
    {"__close", ctx_close},
    {"__tostring", ctx_tostring},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"context", l_context},
    {"configure", ctx_configure},
    {"settings", ctx_settings},
    {"graph", ctx_graph},
    {"load", ctx_load},
    {"load_string", ctx_load_string},
    {"import_comfy", ctx_import_comfy},
    {"cache_stats", ctx_cache_stats},
    {"cache_clear", ctx_cache_clear},
    {"cache_verify", ctx_cache_verify},
    {"cache_gc", ctx_cache_gc},
    {"node_types", l_node_types},
    {"describe", l_describe},
    {NULL, NULL},
};

int luaopen_sdflow(lua_State *L)
{
    luaL_checkversion(L);
    if (luaL_newmetatable(L, SDL_CONTEXT)) {
        luaL_setfuncs(L, context_meta, 0);
        luaL_newlib(L, context_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SDL_BOX)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    sdl_open_graph(L);
    sdl_open_run(L);
    luaL_newlib(L, module_functions);
    lua_pushstring(L, sd_version());
    lua_setfield(L, -2, "version");
    return 1;
}
