/* The Lua state of `sdflow lua`: memory and instruction limits, signals, text-only loading
 * (see lua_host.h). */
#include "cli/lua_host.h"
#include "cli/cli.h"
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The hook runs every HOOK_STEP instructions of each thread (coroutines inherit it from the
 * thread that creates them). */
#define HOOK_STEP 1000
/* Heap the error path may still use once the memory limit has stopped the script. */
#define MEMORY_RESERVE ((size_t)1 << 20)

static cli_lua_host *host_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static void set_stop(cli_lua_host *h, cli_lua_stop why)
{
    if (!h->stop)
        h->stop = why;
}

/* Instructions until the hook's next call on a thread. */
static int next_count(const cli_lua_host *h)
{
    if (h->stop)
        return 1;
    if (!h->instruction_limit)
        return HOOK_STEP;
    unsigned long long left = h->instruction_limit - h->instructions;
    return left < HOOK_STEP ? (int)left + 1 : HOOK_STEP;
}

/* Writes the stop's message once, with the script position of the running function. */
static void describe_stop(lua_State *L, cli_lua_host *h)
{
    if (h->message[0])
        return;
    lua_Debug ar;
    char where[128] = "";
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        snprintf(where, sizeof where, "%s:%d", ar.short_src, ar.currentline);
    else
        snprintf(where, sizeof where, "%s", h->script);
    if (h->stop == CLI_LUA_INSTRUCTIONS)
        snprintf(h->message, sizeof h->message, "%s: instruction limit of %llu exceeded (--lua-instructions)",
                 where, h->instruction_limit);
    else
        snprintf(h->message, sizeof h->message, "%s: interrupted", where);
}

static void host_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    cli_lua_host *h = host_of(L);
    if (!h->stop && h->instruction_limit) {
        h->instructions += (unsigned long long)lua_gethookcount(L);
        if (h->instructions > h->instruction_limit)
            set_stop(h, CLI_LUA_INSTRUCTIONS);
    }
    lua_sethook(L, host_hook, LUA_MASKCOUNT, next_count(h));
    if (h->stop) {
        describe_stop(L, h);
        lua_pushstring(L, h->message);
        lua_error(L);
    }
}

/* realloc/free, counting the bytes in use against memory_limit. */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    cli_lua_host *h = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        h->memory_used -= old;
        return NULL;
    }
    if (h->memory_limit && nsize > old) {
        size_t cap = h->memory_limit + (h->stop == CLI_LUA_MEMORY ? MEMORY_RESERVE : 0);
        if (h->memory_used > cap || nsize - old > cap - h->memory_used) {
            if (!h->stop) {
                h->stop = CLI_LUA_MEMORY;
                snprintf(h->message, sizeof h->message,
                         "%s: Lua memory limit of %zu bytes exceeded (--lua-memory)", h->script,
                         h->memory_limit);
                lua_sethook(h->L, host_hook, LUA_MASKCOUNT, 1);
            }
            return NULL;
        }
    }
    void *p = realloc(ptr, nsize);
    if (p)
        h->memory_used = h->memory_used - old + nsize;
    return p;
}

lua_State *cli_lua_host_new(cli_lua_host *h)
{
    lua_State *L = luaL_newstate(); /* its allocator is realloc/free as well */
    if (!L)
        return NULL;
    h->L = L;
    h->memory_used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, host_alloc, h);
    lua_sethook(L, host_hook, LUA_MASKCOUNT, next_count(h));
    return L;
}

void cli_lua_host_interrupt(cli_lua_host *h)
{
    set_stop(h, CLI_LUA_INTERRUPTED);
    lua_sethook(h->L, host_hook, LUA_MASKCOUNT, 1);
}

const char *cli_lua_host_message(cli_lua_host *h)
{
    if (!h->message[0])
        snprintf(h->message, sizeof h->message, "%s: %s", h->script,
                 h->stop == CLI_LUA_INSTRUCTIONS ? "instruction limit exceeded" : "interrupted");
    return h->message;
}

int cli_lua_host_exit_code(const cli_lua_host *h)
{
    return h->stop == CLI_LUA_INTERRUPTED ? EXIT_INTERRUPTED : EXIT_LIMIT;
}

/* ---- Text-only loaders. ---- */

/* The mode to load with for a mode argument: text, or nothing at all when it excludes text. */
static const char *text_mode(const char *mode)
{
    return strchr(mode, 't') ? "t" : "";
}

/* The end of load and loadfile: the function (with env, at stack index env when not 0, as its
 * first upvalue), or fail and the message. */
static int loaded(lua_State *L, int status, int env)
{
    if (status != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (env) {
        lua_pushvalue(L, env);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return 1;
}

/* load's stack: chunk, chunkname, mode, env, then the reader function's last piece. */
#define READER_SLOT 5

static const char *read_piece(lua_State *L, void *ud, size_t *size)
{
    (void)ud;
    luaL_checkstack(L, 2, "too many nested functions");
    lua_pushvalue(L, 1);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        *size = 0;
        return NULL;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "reader function must return a string");
    lua_replace(L, READER_SLOT);
    return lua_tolstring(L, READER_SLOT, size);
}

/* load(chunk [, chunkname [, mode [, env]]]) reading text only. */
static int text_load(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    const char *mode = text_mode(luaL_optstring(L, 3, "bt"));
    int env = lua_isnone(L, 4) ? 0 : 4;
    int status;
    if (s) {
        status = luaL_loadbufferx(L, s, len, luaL_optstring(L, 2, s), mode);
    } else {
        const char *name = luaL_optstring(L, 2, "=(load)");
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_settop(L, READER_SLOT);
        status = lua_load(L, read_piece, NULL, name, mode);
    }
    return loaded(L, status, env);
}

int cli_lua_load_file(lua_State *L, const char *name, const char *mode)
{
    int status = luaL_loadfilex(L, name, mode);
    const char *msg = status != LUA_OK ? lua_tostring(L, -1) : NULL;
    if (name && msg && !strncmp(msg, "attempt to load ", 16)) { /* a mode error names no file */
        lua_pushfstring(L, "%s: %s", name, msg);
        lua_replace(L, -2);
    }
    return status;
}

/* loadfile([filename [, mode [, env]]]) reading text only. */
static int text_loadfile(lua_State *L)
{
    const char *name = luaL_optstring(L, 1, NULL);
    const char *mode = text_mode(luaL_optstring(L, 2, "bt"));
    int env = lua_isnone(L, 3) ? 0 : 3;
    return loaded(L, cli_lua_load_file(L, name, mode), env);
}

static int dofile_results(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    (void)k;
    return lua_gettop(L) - 1;
}

/* dofile([filename]) reading text only. */
static int text_dofile(lua_State *L)
{
    const char *name = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (cli_lua_load_file(L, name, "t") != LUA_OK)
        return lua_error(L);
    lua_callk(L, 0, LUA_MULTRET, 0, dofile_results);
    return dofile_results(L, LUA_OK, 0);
}

/* package.searchers[2]: finds name on package.path (upvalue 1 is package, 2 the original
 * package.searchpath) and loads the file as text. */
static int text_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_getfield(L, lua_upvalueindex(1), "path");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "'package.path' must be a string");
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2))
        return 1; /* "no file '...'" lines */
    lua_pop(L, 1);
    const char *file = lua_tostring(L, -1);
    if (luaL_loadfilex(L, file, "t") != LUA_OK)
        return luaL_error(L, "error loading module '%s' from file '%s': %s", name, file,
                          lua_tostring(L, -1));
    lua_pushstring(L, file);
    return 2;
}

static int no_sethook(lua_State *L)
{
    return luaL_error(L, "debug.sethook is not available under sdflow lua (its hook stops the "
                         "script on a signal or a limit)");
}

void cli_lua_host_open_loaders(lua_State *L)
{
    static const luaL_Reg base[] = {
        {"load", text_load}, {"loadfile", text_loadfile}, {"dofile", text_dofile}, {NULL, NULL}};
    static const luaL_Reg debug[] = {{"sethook", no_sethook}, {NULL, NULL}};
    lua_pushglobaltable(L);
    luaL_setfuncs(L, base, 0);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_DBLIBNAME);
    luaL_setfuncs(L, debug, 0);
    lua_getfield(L, -2, LUA_LOADLIBNAME);
    lua_getfield(L, -1, "searchers");
    lua_pushvalue(L, -2);
    lua_getfield(L, -3, "searchpath");
    lua_pushcclosure(L, text_searcher, 2);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 5);
}
