/* The sdflow Lua module (Lua 5.4): contexts, graphs, node handles, runs and results, built on
 * the public API only. luaopen_sdflow is what `require "sdflow"` calls; the `sdflow lua`
 * command preloads it. Internal names start with sdl_. See docs/lua.md. */
#ifndef SD_LUA_LSDFLOW_H
#define SD_LUA_LSDFLOW_H

#include "sdflow/sdflow.h"
#include <lua.h>
#include <lauxlib.h>

/* Opens the module: pushes its table. */
int luaopen_sdflow(lua_State *L);

/* Metatable names (luaL_newmetatable registry keys). */
#define SDL_CONTEXT "sdflow.context"
#define SDL_GRAPH "sdflow.graph"
#define SDL_NODE "sdflow.node"
#define SDL_OUTPUT "sdflow.output"
#define SDL_RESULT "sdflow.result"
#define SDL_BOX "sdflow.box"

/* Registry key of a table of context options (as sdflow.context takes them) applied to every
 * context the module makes, before that context's own options: `sdflow lua` puts its
 * --models-dir, --input-dir, --output-dir, --cache, --no-cache and --device there. */
#define SDL_CONTEXT_DEFAULTS "sdflow.context_defaults"

/* An sd_context shared by its Lua handle and every graph made from it: freed when the last
 * owner lets go, whatever order the garbage collector finalizes them in. */
typedef struct sdl_shared_ctx {
    sd_context *ctx;
    int refs;
} sdl_shared_ctx;

/* Userdata of a graph handle. */
typedef struct sdl_graph {
    sd_graph *graph;        /* NULL once closed */
    sdl_shared_ctx *shared; /* NULL once closed */
    int running;            /* inside g:run (a progress function may not change it) */
} sdl_graph;

void sdl_shared_release(sdl_shared_ctx *shared);

/* Graph handle at idx; raises when it is not a graph, is closed, or (for every use except
 * inspection) is running. */
sdl_graph *sdl_check_graph(lua_State *L, int idx);
/* Pushes a graph handle that owns nothing yet (it reads as closed); sdl_graph_own then gives it
 * a graph bound to shared, taking a reference. Push first, then make the graph, so that no Lua
 * error can leak it. */
sdl_graph *sdl_push_graph(lua_State *L);
void sdl_graph_own(sdl_graph *g, sd_graph *graph, sdl_shared_ctx *shared);

/* The node id named by the value at idx in graph g (the graph handle is at gidx): a node handle
 * of that graph or an id string. Raises otherwise. */
const char *sdl_check_node_id(lua_State *L, int gidx, int idx);

/* Pushes nil, the context's message and its diagnostics (a table of lines): the expected-failure
 * return of every function that reads files, validates or runs. Returns 3. */
int sdl_push_failure(lua_State *L, sd_context *ctx, sd_status status);

/* Pushes a userdata slot for one malloc'd C object, freed by free_fn when the slot is collected
 * (so that a Lua error between getting the object and converting it leaks nothing). The slot
 * starts NULL. */
void **sdl_push_box(lua_State *L, void (*free_fn)(void *));

/* Registers the graph, node and output metatables (graph.c) and the result ones (run.c). */
void sdl_open_graph(lua_State *L);
void sdl_open_run(lua_State *L);

/* g:run([options]) (run.c). */
int sdl_graph_run(lua_State *L);

#endif
