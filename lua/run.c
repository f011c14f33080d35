/* g:run(): options, progress, interrupts, and the result table.
 *
 * A run's result is converted at once into a plain Lua table (metatable sdflow.result):
 * outputs[node_id][OUTPUT] holds each computed output of the nodes asked for, files the paths
 * written, stats the per-node outcome. Nothing in it points into C memory. */
#include "lua/lsdflow.h"
#include "sdflow/node.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* One run at a time per process: the signal handler interrupts its context. */
static sd_context *volatile running_ctx;
static volatile sig_atomic_t caught_signal;
static int run_active;

static void on_signal(int sig)
{
    caught_signal = sig;
    if (running_ctx)
        sd_context_interrupt(running_ctx);
}

typedef struct run_state {
    lua_State *L;
    sd_context *ctx;
    int fn;      /* stack index of the progress function; 0 when none */
    int print;   /* progress = true: plain lines on stderr */
    int errslot; /* stack index where a failed progress function's error is kept */
    int failed;
} run_state;

static const char *kind_name(sd_progress_kind kind)
{
    switch (kind) {
    case SD_PROGRESS_PLAN: return "plan";
    case SD_PROGRESS_NODE_START: return "start";
    case SD_PROGRESS_NODE_CACHED: return "cached";
    case SD_PROGRESS_NODE_DONE: return "done";
    case SD_PROGRESS_STEP: return "step";
    }
    return "unknown";
}

/* Protected: calls the progress function (index 1) with a table made from the event (2). */
static int call_progress(lua_State *L)
{
    const sd_progress *ev = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, kind_name(ev->kind));
    lua_setfield(L, -2, "kind");
    if (ev->node_id) {
        lua_pushstring(L, ev->node_id);
        lua_setfield(L, -2, "node");
    }
    if (ev->node_type) {
        lua_pushstring(L, ev->node_type);
        lua_setfield(L, -2, "type");
    }
    lua_pushinteger(L, ev->node_index);
    lua_setfield(L, -2, "index");
    lua_pushinteger(L, ev->node_count);
    lua_setfield(L, -2, "count");
    if (ev->kind == SD_PROGRESS_STEP) {
        lua_pushinteger(L, ev->step);
        lua_setfield(L, -2, "step");
        lua_pushinteger(L, ev->steps);
        lua_setfield(L, -2, "steps");
    }
    lua_pushnumber(L, ev->seconds);
    lua_setfield(L, -2, "seconds");
    lua_call(L, 1, 0);
    return 0;
}

static void print_progress(const sd_progress *ev)
{
    const char *id = ev->node_id ? ev->node_id : "", *type = ev->node_type ? ev->node_type : "";
    switch (ev->kind) {
    case SD_PROGRESS_NODE_CACHED:
        fprintf(stderr, "[%d/%d] %s (%s): cached\n", ev->node_index, ev->node_count, id, type);
        break;
    case SD_PROGRESS_NODE_DONE:
        fprintf(stderr, "[%d/%d] %s (%s): %.3f s\n", ev->node_index, ev->node_count, id, type, ev->seconds);
        break;
    case SD_PROGRESS_STEP:
        fprintf(stderr, "[%d/%d] %s (%s): step %d/%d\n", ev->node_index, ev->node_count, id, type,
                ev->step, ev->steps);
        break;
    default:
        break;
    }
}

/* Called by the scheduler. A Lua error must not unwind through it: the function runs under
 * lua_pcall, and a failure interrupts the run and is raised once sd_graph_run has returned. */
static void on_progress(const sd_progress *ev, void *user)
{
    run_state *rs = user;
    if (rs->print)
        print_progress(ev);
    if (!rs->fn || rs->failed)
        return;
    lua_State *L = rs->L;
    if (!lua_checkstack(L, 3))
        return;
    lua_pushcfunction(L, call_progress);
    lua_pushvalue(L, rs->fn);
    lua_pushlightuserdata(L, (void *)ev);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lua_replace(L, rs->errslot);
        rs->failed = 1;
        sd_context_interrupt(rs->ctx);
    }
}

/* Reads the options table at index 2 into opts and rs, leaving on the stack at 3..6: outputs,
 * cache, progress and the array of output node ids (which point into values the stack keeps). */
static void read_options(lua_State *L, sd_run_options *opts, run_state *rs)
{
    lua_settop(L, 2);
    if (lua_isnil(L, 2)) {
        lua_settop(L, 6);
        return;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!key || (strcmp(key, "outputs") && strcmp(key, "cache") && strcmp(key, "progress")))
            luaL_error(L, "unknown run option '%s' (outputs, cache, progress)",
                       key ? key : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    lua_getfield(L, 2, "outputs");
    lua_getfield(L, 2, "cache");
    lua_getfield(L, 2, "progress");
    if (!lua_isnil(L, 3)) {
        if (!lua_istable(L, 3))
            luaL_error(L, "run option 'outputs': a list of nodes, not a %s", luaL_typename(L, 3));
        lua_Integer n = luaL_len(L, 3);
        if (n < 1 || n > 1000000)
            luaL_error(L, "run option 'outputs' must list 1 or more nodes (leave it out to run "
                          "every output node)");
        const char **ids = lua_newuserdatauv(L, (size_t)n * sizeof *ids, 0);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, 3, i);
            ids[i - 1] = sdl_check_node_id(L, 1, lua_gettop(L));
            lua_pop(L, 1); /* the outputs list keeps the handle or string alive */
        }
        opts->outputs = ids;
        opts->n_outputs = (size_t)n;
    }
    lua_settop(L, 6);
    if (!lua_isnil(L, 4)) {
        if (!lua_isboolean(L, 4))
            luaL_error(L, "run option 'cache': a boolean, not a %s", luaL_typename(L, 4));
        opts->no_cache = !lua_toboolean(L, 4);
    }
    if (lua_isfunction(L, 5))
        rs->fn = 5;
    else if (lua_isboolean(L, 5))
        rs->print = lua_toboolean(L, 5);
    else if (!lua_isnil(L, 5))
        luaL_error(L, "run option 'progress': a function or a boolean, not a %s", luaL_typename(L, 5));
}

static void set_int(lua_State *L, const char *key, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

/* Pushes one output value: INT, FLOAT, BOOLEAN and strings as Lua values; everything else as
 * {type=, shape={...}} (IMAGE and MASK add batch, height, width). */
static void push_value(lua_State *L, const sd_output_info *info)
{
    const char *t = info->type ? info->type : "";
    if (!strcmp(t, "INT")) {
        lua_pushinteger(L, info->i);
    } else if (!strcmp(t, "FLOAT")) {
        lua_pushnumber(L, info->f);
    } else if (!strcmp(t, "BOOLEAN")) {
        lua_pushboolean(L, info->b);
    } else if (info->s && info->ndim == 0) {
        lua_pushstring(L, info->s);
    } else {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, t);
        lua_setfield(L, -2, "type");
        int ndim = info->ndim < 0 ? 0 : info->ndim > 5 ? 5 : info->ndim;
        lua_createtable(L, ndim, 0);
        for (int d = 0; d < ndim; d++) {
            lua_pushinteger(L, info->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        if ((!strcmp(t, "IMAGE") && ndim == 4) || (!strcmp(t, "MASK") && ndim == 3)) {
            set_int(L, "batch", info->shape[0]);
            set_int(L, "height", info->shape[1]);
            set_int(L, "width", info->shape[2]);
        }
    }
}

static const char *outcome_name(sd_node_outcome outcome)
{
    switch (outcome) {
    case SD_NODE_SKIPPED: return "skipped";
    case SD_NODE_RAN: return "ran";
    case SD_NODE_CACHED: return "cached";
    }
    return "unknown";
}

/* Pushes the result table: {outputs = {[id] = {[OUTPUT] = value}}, files = {...},
 * stats = {ran=, cached=, skipped=, seconds=, nodes = {{id=, type=, outcome=, seconds=}}}}. */
static void push_result(lua_State *L, const sd_result *res)
{
    lua_createtable(L, 0, 3);
    size_t n_files = sd_result_file_count(res);
    lua_createtable(L, n_files < 100000 ? (int)n_files : 0, 0);
    for (size_t i = 0; i < n_files; i++) {
        lua_pushstring(L, sd_result_file(res, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "files");

    lua_newtable(L); /* outputs */
    lua_newtable(L); /* stats.nodes */
    lua_Integer count[3] = {0, 0, 0};
    double seconds = 0;
    size_t n = sd_result_node_count(res);
    for (size_t i = 0; i < n; i++) {
        sd_node_stat s;
        if (sd_result_node(res, i, &s))
            continue;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, s.node_id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, s.node_type);
        lua_setfield(L, -2, "type");
        lua_pushstring(L, outcome_name(s.outcome));
        lua_setfield(L, -2, "outcome");
        lua_pushnumber(L, s.seconds);
        lua_setfield(L, -2, "seconds");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        if ((int)s.outcome >= 0 && (int)s.outcome < 3)
            count[s.outcome]++;
        seconds += s.seconds;
        const sd_node_desc *desc = s.outcome != SD_NODE_SKIPPED ? sd_node_type_find(s.node_type) : NULL;
        int made_table = 0;
        for (size_t o = 0; desc && o < desc->n_outputs; o++) {
            sd_output_info info;
            memset(&info, 0, sizeof info);
            if (sd_result_output(res, s.node_id, desc->outputs[o].name, &info))
                continue;
            if (!made_table) {
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setfield(L, -4, s.node_id); /* outputs[id] */
                made_table = 1;
            }
            push_value(L, &info);
            lua_setfield(L, -2, desc->outputs[o].name);
        }
        if (made_table)
            lua_pop(L, 1);
    }
    lua_createtable(L, 0, 5); /* stats */
    lua_insert(L, -2);
    lua_setfield(L, -2, "nodes");
    set_int(L, "skipped", count[SD_NODE_SKIPPED]);
    set_int(L, "ran", count[SD_NODE_RAN]);
    set_int(L, "cached", count[SD_NODE_CACHED]);
    lua_pushnumber(L, seconds);
    lua_setfield(L, -2, "seconds");
    lua_setfield(L, -3, "stats");
    lua_setfield(L, -2, "outputs");
    luaL_setmetatable(L, SDL_RESULT);
}

static void free_result(void *p)
{
    sd_result_free(p);
}

/* SIGINT and SIGTERM interrupt the run, except where they were ignored before it. */
static const int run_signals[2] = {SIGINT, SIGTERM};

static void set_signals(struct sigaction old[2])
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) {
        sigaction(run_signals[i], NULL, &old[i]);
        if (old[i].sa_handler != SIG_IGN)
            sigaction(run_signals[i], &sa, NULL);
    }
}

static void restore_signals(const struct sigaction old[2])
{
    for (int i = 0; i < 2; i++)
        sigaction(run_signals[i], &old[i], NULL);
}

/* g:run([{outputs = {node, ...}, cache = bool, progress = function|bool}])
 *   -> result, or nil, message, diagnostics */
int sdl_graph_run(lua_State *L)
{
    sdl_graph *g = sdl_check_graph(L, 1);
    if (run_active)
        return luaL_error(L, "another sdflow run is in progress (runs do not nest)");
    sd_context *ctx = sd_graph_context(g->graph);
    sd_run_options opts;
    memset(&opts, 0, sizeof opts);
    run_state rs = {.L = L, .ctx = ctx};
    read_options(L, &opts, &rs);
    lua_pushnil(L);
    rs.errslot = lua_gettop(L);
    void **slot = sdl_push_box(L, free_result);

    /* From here to the end of the run nothing may raise. */
    struct sigaction old_signals[2];
    caught_signal = 0;
    running_ctx = ctx;
    set_signals(old_signals);
    if (rs.fn || rs.print)
        sd_context_set_progress(ctx, on_progress, &rs);
    g->running = 1;
    run_active = 1;
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g->graph, &opts, &res);
    *slot = res;
    run_active = 0;
    g->running = 0;
    sd_context_set_progress(ctx, NULL, NULL);
    restore_signals(old_signals);
    running_ctx = NULL;
    if (caught_signal)
        raise(caught_signal); /* the handler in place before the run decides what happens */

    if (rs.failed) {
        lua_pushvalue(L, rs.errslot);
        return lua_error(L);
    }
    if (st)
        return sdl_push_failure(L, ctx, st);
    push_result(L, res);
    return 1;
}

/* r:get(node [, output]) -> value, or nil, message. With one argument, the node's only
 * computed output. */
static int result_get(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *id;
    if (lua_type(L, 2) == LUA_TSTRING) {
        id = lua_tostring(L, 2);
    } else {
        luaL_checkudata(L, 2, SDL_NODE);
        lua_getfield(L, 2, "id");
        lua_replace(L, 2);
        id = lua_tostring(L, 2);
    }
    const char *output = luaL_optstring(L, 3, NULL);
    lua_getfield(L, 1, "outputs");
    if (!lua_istable(L, -1) || lua_getfield(L, -1, id) != LUA_TTABLE) {
        lua_pushnil(L);
        lua_pushfstring(L, "node '%s' has no outputs in this result (only the nodes asked for "
                           "in outputs are kept)", id);
        return 2;
    }
    if (output) {
        if (lua_getfield(L, -1, output) != LUA_TNIL)
            return 1;
        lua_pushnil(L);
        lua_pushfstring(L, "node '%s' has no output '%s' in this result", id, output);
        return 2;
    }
    lua_pushnil(L);
    if (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        if (!lua_next(L, -4))
            return 1; /* value of the only entry */
    }
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_pushfstring(L, "node '%s' has several outputs: name one", id);
    return 2;
}

static int result_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "stats");
    lua_Integer ran = 0, cached = 0;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "ran");
        lua_getfield(L, -2, "cached");
        ran = lua_tointeger(L, -2);
        cached = lua_tointeger(L, -1);
    }
    lua_pushfstring(L, "sdflow.result (%d ran, %d cached)", (int)ran, (int)cached);
    return 1;
}

void sdl_open_run(lua_State *L)
{
    if (luaL_newmetatable(L, SDL_RESULT)) {
        lua_pushcfunction(L, result_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        lua_pushcfunction(L, result_get);
        lua_setfield(L, -2, "get");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
