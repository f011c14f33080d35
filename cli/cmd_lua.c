/* sdflow lua: runs a Lua 5.4 script as the lua5.4 interpreter would (standard libraries, the
 * global `arg`, the script's arguments as `...`), with the sdflow module preloaded. Only source
 * text is loaded, never bytecode. */
#include "cli/cli.h"
#include "lua/lsdflow.h"
#include <lualib.h>
#include <signal.h>
#include <string.h>

static lua_State *script_state;
static volatile sig_atomic_t interrupted;

/* Set from the signal handler: stops the script at its next call, return or instruction. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_signal(int sig)
{
    interrupted = 1;
    signal(sig, SIG_DFL); /* a second signal ends the process at once */
    lua_sethook(script_state, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Error message handler: the message with a traceback. */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Exit codes of a Lua failure. */
static int load_exit_code(int status)
{
    return status == LUA_ERRFILE ? EXIT_IO : status == LUA_ERRMEM ? EXIT_LIMIT : EXIT_INVALID;
}

/* Protected main: argument 1 is argc, 2 is argv ({"lua", script, args...}). Returns the exit
 * code and, on failure, the message. */
static int protected_main(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    luaL_checkversion(L);
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_sdflow);
    lua_setfield(L, -2, "sdflow");
    lua_pop(L, 1);

    /* arg[-2] = "sdflow", arg[-1] = "lua", arg[0] = script, arg[1..] = its arguments */
    lua_createtable(L, argc - 2, 3);
    lua_pushliteral(L, "sdflow");
    lua_rawseti(L, -2, -2);
    lua_pushliteral(L, "lua");
    lua_rawseti(L, -2, -1);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");

    const char *script = strcmp(argv[1], "-") ? argv[1] : NULL;
    int status = luaL_loadfilex(L, script, "t");
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (script && msg && !strstr(msg, script)) /* e.g. "attempt to load a binary chunk" */
            lua_pushfstring(L, "%s: %s", script, msg);
        lua_pushinteger(L, load_exit_code(status));
        lua_insert(L, -2);
        return 2;
    }
    int base = lua_gettop(L);
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    luaL_checkstack(L, argc, "too many arguments to the script");
    for (int i = 2; i < argc; i++)
        lua_pushstring(L, argv[i]);
    status = lua_pcall(L, argc - 2, 0, base);
    if (status != LUA_OK) {
        lua_pushinteger(L, status == LUA_ERRMEM ? EXIT_LIMIT : interrupted ? EXIT_INTERRUPTED : EXIT_INVALID);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushinteger(L, EXIT_OK);
    return 1;
}

static void help(FILE *out)
{
    fprintf(out,
            "usage: sdflow lua [--] SCRIPT.lua [ARG...]\n"
            "       sdflow lua - [ARG...]      (script from standard input)\n\n"
            "Runs a Lua 5.4 script with the standard libraries and the sdflow module\n"
            "(local sdflow = require \"sdflow\"); arg[0] is the script, arg[1..] and ... its\n"
            "arguments. Only source text is loaded, never precompiled bytecode. See docs/lua.md.\n\n"
            "exit status: 0 when the script ends (or the code it gives os.exit), 3 on a Lua syntax\n"
            "or runtime error (\"SCRIPT.lua:LINE: message\" and a traceback on stderr), 4 out of\n"
            "memory, 5 script not readable, 2 usage, 130 interrupted (SIGINT, SIGTERM).\n");
}

int cmd_lua(int argc, char **argv)
{
    int first = 1;
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        help(stdout);
        return EXIT_OK;
    }
    if (argc > 1 && !strcmp(argv[1], "--"))
        first = 2;
    else if (argc > 1 && argv[1][0] == '-' && argv[1][1])
        return cli_usage_error("lua", "unknown option '%s'", argv[1]);
    if (argc <= first)
        return cli_usage_error("lua", "no script given");
    /* protected_main sees {"lua", script, args...} */
    argv += first - 1;
    argc -= first - 1;
    argv[0] = "lua";

    lua_State *L = luaL_newstate();
    if (!L)
        return cli_fail(NULL, SD_ERR_NOMEM, "cannot create a Lua state: out of memory");
    script_state = L;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    lua_pushcfunction(L, protected_main);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int code;
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
        code = EXIT_LIMIT; /* setting the state up failed: out of memory, too many arguments */
        fprintf(stderr, "sdflow: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "out of memory");
    } else {
        code = (int)lua_tointeger(L, -2);
        if (code != EXIT_OK)
            fprintf(stderr, "sdflow: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1)
                                                                         : "(no error message)");
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    script_state = NULL;
    lua_close(L);
    return interrupted && code != EXIT_OK ? EXIT_INTERRUPTED : code;
}
