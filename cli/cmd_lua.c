/* sdflow lua: runs a Lua 5.4 script as the lua5.4 interpreter would (standard libraries, the
 * global `arg`, the script's arguments as `...`), with the sdflow module preloaded. Only source
 * text is loaded, never bytecode; memory, instruction and signal stops are terminal
 * (cli/lua_host.h). */
#include "cli/cli.h"
#include "cli/lua_host.h"
#include "cli/options.h"
#include "lua/lsdflow.h"
#include <lualib.h>
#include <signal.h>
#include <string.h>

static cli_lua_host *script_host;

static void on_signal(int sig)
{
    cli_lua_host_interrupt(script_host);
    signal(sig, SIG_DFL); /* a second signal ends the process at once */
}

/* What protected_main runs: argv is {"lua", script, args...}. */
typedef struct lua_job {
    int argc;
    char **argv;
    const cli_opts *opts;
    const char *cache; /* --cache PATH */
    bool no_cache;
    const char *device;
} lua_job;

/* Error message handler: the message with a traceback, or only the message of a stop. */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (script_host->stop)
        return 1;
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

static void set_string(lua_State *L, const char *key, const char *value)
{
    if (value) {
        lua_pushstring(L, value);
        lua_setfield(L, -2, key);
    }
}

/* The command line's directories, cache and device, as context options the module applies to
 * every context it makes (SDL_CONTEXT_DEFAULTS). */
static void set_context_defaults(lua_State *L, const lua_job *job)
{
    const cli_opts *o = job->opts;
    lua_createtable(L, 0, 5);
    if (o->n_models_dirs) {
        lua_createtable(L, (int)o->n_models_dirs, 0);
        for (size_t i = 0; i < o->n_models_dirs; i++) {
            lua_pushstring(L, o->models_dirs[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "models_dirs");
    }
    set_string(L, "input_dir", o->input_dir);
    set_string(L, "output_dir", o->output_dir);
    set_string(L, "cache", job->cache);
    if (job->no_cache) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "cache");
    }
    set_string(L, "device", job->device);
    if (o->allow_absolute_paths) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "allow_absolute_paths");
    }
    lua_setfield(L, LUA_REGISTRYINDEX, SDL_CONTEXT_DEFAULTS);
}

/* Protected main: argument 1 is the lua_job. Returns the exit code and, on failure, the
 * message. */
static int protected_main(lua_State *L)
{
    const lua_job *job = lua_touserdata(L, 1);
    int argc = job->argc;
    char **argv = job->argv;
    lua_settop(L, 0);
    luaL_checkversion(L);
    luaL_openlibs(L);
    cli_lua_host_open_loaders(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_sdflow);
    lua_setfield(L, -2, "sdflow");
    lua_pop(L, 1);
    set_context_defaults(L, job);

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
    int status = cli_lua_load_file(L, script, "t");
    if (status != LUA_OK) {
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
        lua_pushinteger(L, status == LUA_ERRMEM ? EXIT_LIMIT : EXIT_INVALID);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushinteger(L, EXIT_OK);
    return 1;
}

static void help(FILE *out)
{
    fprintf(out,
            "usage: sdflow lua [options] [--] SCRIPT.lua [ARG...]\n"
            "       sdflow lua [options] - [ARG...]      (script from standard input)\n\n"
            "Runs a Lua 5.4 script with the standard libraries and the sdflow module\n"
            "(local sdflow = require \"sdflow\"); arg[0] is the script, arg[1..] and ... its\n"
            "arguments. Only source text is loaded, never precompiled bytecode (load, loadfile,\n"
            "dofile and require included). See docs/lua.md.\n\n"
            "The directory, cache and device options set every context the script makes (they\n"
            "replace the environment's; a context's own options override them):\n"
            "  --models-dir DIR     model directory; repeatable, searched in order; replaces\n"
            "                       SDFLOW_MODELS\n"
            "  --input-dir DIR      where image names are looked up (default $SDFLOW_INPUT or ./input)\n"
            "  --output-dir DIR     where output images go (default $SDFLOW_OUTPUT or ./output)\n"
            "  --cache PATH         cache database (default $SDFLOW_CACHE, else\n"
            "                       $XDG_CACHE_HOME/sdflow/cache.db)\n"
            "  --no-cache           no cache database\n"
            "  --device SEL         OpenCL device: an index or a name substring\n"
            "  --allow-absolute-paths  workflows may name files by absolute path\n"
            "Limits (0, the default: none); exceeding one ends the script, pcall or not:\n"
            "  --lua-memory SIZE    Lua heap (tables, strings, closures) in bytes, or 64M, 1G\n"
            "  --lua-instructions N Lua VM instructions the script may execute\n"
            "  -h, --help           show this help\n\n"
            "exit status: 0 when the script ends (or the code it gives os.exit), 3 on a Lua syntax\n"
            "or runtime error (\"SCRIPT.lua:LINE: message\" and a traceback on stderr), 4 out of\n"
            "memory or over a limit, 5 script not readable, 2 usage, 130 interrupted (SIGINT,\n"
            "SIGTERM; a pcall does not catch it).\n");
}

/* A decimal count ("0" included) into *out; false when text is not one. */
static bool parse_count(const char *text, unsigned long long *out)
{
    unsigned long long v = 0;
    if (!*text)
        return false;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || v > (~0ULL - 9) / 10)
            return false;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    *out = v;
    return true;
}

/* Parses sdflow's options before the script. Returns the index of the script argument, or -1
 * after printing a usage error, 0 after printing the help. */
static int parse_options(int argc, char **argv, lua_job *job, cli_lua_host *host, cli_opts *opts)
{
    int i = 1;
    for (; i < argc && cli_is_option(argv[i]); i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "--"))
            return i + 1;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--set") || !strncmp(argv[i], "--set=", 6)) {
            cli_usage_error("lua", "unknown option '%s' (a script sets parameters with g:setparam)", argv[i]);
            return -1;
        }
        if ((r = cli_opts_parse(opts, "lua", argc, argv, &i)) != 0) {
            if (r < 0)
                return -1;
        } else if ((r = cli_opt_value("lua", argc, argv, &i, "--cache", &v)) != 0) {
            if (r < 0)
                return -1;
            job->cache = v;
        } else if ((r = cli_opt_value("lua", argc, argv, &i, "--device", &v)) != 0) {
            if (r < 0)
                return -1;
            job->device = v;
        } else if (!strcmp(argv[i], "--no-cache")) {
            job->no_cache = true;
        } else if ((r = cli_opt_value("lua", argc, argv, &i, "--lua-memory", &v)) != 0) {
            int64_t bytes;
            if (r < 0)
                return -1;
            if (sd_parse_size(v, &bytes) || (uint64_t)bytes > SIZE_MAX / 2) {
                cli_usage_error("lua", "--lua-memory: '%s' is not a size (bytes, or 64M, 1G)", v);
                return -1;
            }
            host->memory_limit = (size_t)bytes;
        } else if ((r = cli_opt_value("lua", argc, argv, &i, "--lua-instructions", &v)) != 0) {
            if (r < 0)
                return -1;
            if (!parse_count(v, &host->instruction_limit)) {
                cli_usage_error("lua", "--lua-instructions: '%s' is not a count", v);
                return -1;
            }
        } else {
            cli_usage_error("lua", "unknown option '%s'", argv[i]);
            return -1;
        }
    }
    if (job->cache && job->no_cache) {
        cli_usage_error("lua", "--cache and --no-cache exclude each other");
        return -1;
    }
    return i;
}

/* Runs the job on a new host state; prints the failure. Returns the exit code. */
static int run_script(lua_job *job, cli_lua_host *host)
{
    lua_State *L = cli_lua_host_new(host);
    if (!L)
        return cli_fail(NULL, SD_ERR_NOMEM, "cannot create a Lua state: out of memory");
    script_host = host;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    lua_pushcfunction(L, protected_main);
    lua_pushlightuserdata(L, job);
    int code;
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
        code = EXIT_LIMIT; /* setting the state up failed: out of memory, too many arguments */
        if (!host->stop)
            fprintf(stderr, "sdflow: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "out of memory");
    } else {
        code = (int)lua_tointeger(L, -2);
        if (code != EXIT_OK && !host->stop)
            fprintf(stderr, "sdflow: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1)
                                                                         : "(no error message)");
    }
    if (host->stop) {
        code = cli_lua_host_exit_code(host);
        fprintf(stderr, "sdflow: error: %s\n", cli_lua_host_message(host));
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    lua_close(L);
    script_host = NULL;
    return code;
}

int cmd_lua(int argc, char **argv)
{
    cli_opts opts = {0};
    lua_job job = {.opts = &opts};
    cli_lua_host host = {0};
    int first = parse_options(argc, argv, &job, &host, &opts);
    int code = first < 0 ? EXIT_USAGE : EXIT_OK;
    if (first > 0 && first >= argc)
        code = cli_usage_error("lua", "no script given");
    else if (first > 0) {
        /* protected_main sees {"lua", script, args...} */
        job.argv = argv + first - 1;
        job.argc = argc - (first - 1);
        job.argv[0] = "lua";
        host.script = strcmp(argv[first], "-") ? argv[first] : "stdin";
        code = run_script(&job, &host);
    }
    cli_opts_free(&opts);
    return code;
}
