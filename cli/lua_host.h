/* The Lua state of `sdflow lua`: an allocator that enforces --lua-memory, a count hook that
 * enforces --lua-instructions and stops the script on a signal, and chunk loaders that accept
 * source text only (docs/lua.md).
 *
 * A stop (signal, memory or instruction limit) is terminal: once it happened, the hook raises
 * an error at every instruction of the thread that runs, so a pcall that catches one error
 * meets the next at its caller's next instruction, and the error reaches the top of the script.
 *
 *   cli_lua_host h = {.memory_limit = ..., .instruction_limit = ..., .script = "x.lua"};
 *   lua_State *L = cli_lua_host_new(&h);
 *   ... in protected mode: luaL_openlibs(L); cli_lua_host_open_loaders(L); run the script ...
 *   if (h.stop) the script ended on cli_lua_host_message(&h), exit cli_lua_host_exit_code(&h)
 *   lua_close(L);
 */
#ifndef SD_CLI_LUA_HOST_H
#define SD_CLI_LUA_HOST_H
#include <lua.h>
#include <signal.h>
#include <stddef.h>

typedef enum cli_lua_stop {
    CLI_LUA_RUNNING = 0,
    CLI_LUA_INTERRUPTED,  /* SIGINT, SIGTERM: exit 130 */
    CLI_LUA_MEMORY,       /* --lua-memory exceeded: exit 4 */
    CLI_LUA_INSTRUCTIONS, /* --lua-instructions exceeded: exit 4 */
} cli_lua_stop;

typedef struct cli_lua_host {
    /* Set by the caller before cli_lua_host_new. */
    size_t memory_limit;                  /* bytes of Lua heap; 0: no limit */
    unsigned long long instruction_limit; /* Lua VM instructions; 0: no limit */
    const char *script;                   /* the script's name in messages */
    /* State. */
    lua_State *L;
    size_t memory_used;
    unsigned long long instructions; /* counted while there is a limit */
    volatile sig_atomic_t stop;      /* a cli_lua_stop; the first one stays */
    char message[256];               /* the stop's one-line message, once known */
} cli_lua_host;

/* A new Lua state (luaL_newstate's panic and warning functions) using h's allocator and hook.
 * NULL when out of memory. */
lua_State *cli_lua_host_new(cli_lua_host *h);

/* Replaces, after luaL_openlibs, every way to load a chunk by a text-only one: load, loadfile,
 * dofile and the Lua searcher of require (package.searchers[2]); debug.debug reads lines, which
 * cannot hold a binary chunk (the header has a zero byte and a newline). debug.sethook raises: the host's hook
 * must stay. May raise (out of memory). */
void cli_lua_host_open_loaders(lua_State *L);

/* luaL_loadfilex, with the file's name before a mode error ("attempt to load a binary chunk
 * (mode is 't')"), the one message that lacks it. */
int cli_lua_load_file(lua_State *L, const char *name, const char *mode);

/* Stops the script at its next instruction (async-signal-safe). */
void cli_lua_host_interrupt(cli_lua_host *h);

/* After a stop: its one-line message and exit code. */
const char *cli_lua_host_message(cli_lua_host *h);
int cli_lua_host_exit_code(const cli_lua_host *h);

#endif
