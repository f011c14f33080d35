/* Command-line options shared by subcommands: option matching, directories, --set overrides,
 * sizes and diagnostics output. Uses only the public API.
 *
 * A subcommand's argument loop typically reads:
 *
 *   cli_opts o = {0};
 *   for (int i = 1; i < argc; i++) {
 *       const char *v;
 *       int r;
 *       if ((r = cli_opts_parse(&o, "run", argc, argv, &i)) != 0) {
 *           if (r < 0) goto usage;           // message already printed
 *       } else if ((r = cli_opt_value("run", argc, argv, &i, "--cache", &v)) != 0) {
 *           if (r < 0) goto usage;
 *           cache = v;
 *       } else if (cli_is_option(argv[i])) {
 *           ... cli_usage_error("run", "unknown option '%s'", argv[i]) ...
 *       } else {
 *           ... positional argument ...
 *       }
 *   }
 */
#ifndef SD_CLI_OPTIONS_H
#define SD_CLI_OPTIONS_H
#include "sdflow/sdflow.h"
#include <stdbool.h>
#include <stdint.h>

/* One --set name=value; both point into argv. name_len excludes the '='. */
typedef struct cli_set {
    const char *arg; /* the whole "name=value" argument */
    size_t name_len;
    const char *value;
} cli_set;

/* Options common to commands that load graphs: directories and parameter overrides. */
typedef struct cli_opts {
    const char **models_dirs; /* --models-dir DIR, in order given (replace SDFLOW_MODELS) */
    size_t n_models_dirs;
    const char *input_dir;  /* --input-dir DIR, NULL: context default */
    const char *output_dir; /* --output-dir DIR */
    cli_set *sets;          /* --set name=value, in order given (a later one wins) */
    size_t n_sets;
    bool allow_absolute_paths; /* --allow-absolute-paths */
} cli_opts;

/* Help text lines for the options cli_opts_parse accepts (ends with a newline). */
extern const char cli_opts_help[];

/* True when arg looks like an option ("-x", "--xyz"); "-" alone is not one. */
bool cli_is_option(const char *arg);

/* Matches argv[*i] against the option `name` ("--cache") given as "--cache VALUE" or
 * "--cache=VALUE". Returns 1 with *value set and *i advanced past a separate value; 0 when
 * argv[*i] is not this option; -1 after printing a usage error when the value is missing. */
int cli_opt_value(const char *cmd, int argc, char **argv, int *i, const char *name,
                  const char **value);

/* Consumes a common option at argv[*i] (--models-dir, --input-dir, --output-dir, --set,
 * --allow-absolute-paths).
 * Returns 1 when consumed, 0 when argv[*i] is not one of them, -1 after printing a usage error
 * (missing value, --set without '=', out of memory). */
int cli_opts_parse(cli_opts *opts, const char *cmd, int argc, char **argv, int *i);
void cli_opts_free(cli_opts *opts);

/* Applies the directories (any --models-dir replaces the SDFLOW_MODELS list) and
 * --allow-absolute-paths to a context. */
sd_status cli_opts_apply_context(const cli_opts *opts, sd_context *ctx);
/* Applies every --set to the graph's parameters (sd_graph_set_param); stops at the first
 * failure, whose message is on the context. */
sd_status cli_opts_apply_sets(const cli_opts *opts, sd_graph *graph);

/* When path names a .json or .png file, prints one line saying how to turn it into workflow
 * XML (sdflow import comfy, sdflow replay --extract) and returns the exit code 3; else 0. */
int cli_refuse_non_xml(const char *path);

/* The arguments of `sdflow import|export comfy FILE [-o OUT] [--ui] [--set ...]`. */
typedef struct cli_convert {
    const char *in, *out; /* out: "-" (stdout) unless -o is given */
    bool ui;              /* --ui, when the command takes it */
    cli_opts opts;        /* --set and the directories, when the command takes them */
} cli_convert;

/* Parses those arguments; `usage` is the one-line usage, help() prints --help. Returns -1 to
 * go on, else the exit code to return (0 after --help). takes_opts: --ui and cli_opts. */
int cli_convert_parse(const char *cmd, const char *usage, void (*help)(void), bool takes_opts, int argc,
                      char **argv, cli_convert *c);

/* Writes text to path through a temp file and rename ("-": stdout); prints the error and
 * returns false. */
bool cli_write_text(const char *path, const char *text);

/* The workflow file a command line names: the name itself when it exists (or is absolute, or has
 * a ".." component); else the installed stock workflow of that name, <datadir>/sdflow/graphs/NAME
 * found relative to the executable ("graphs/NAME" is looked up as NAME there), when it exists;
 * else the name, whose loading reports it missing. malloc'd; NULL when memory runs out. */
char *cli_workflow_path(const char *name);

/* Options of the long-running commands (serve, worker): the common ones plus the engine's
 * --cache PATH, --no-cache, --device SEL and --precision P. */
typedef struct cli_engine_opts {
    cli_opts common;
    const char *cache, *device, *precision;
    bool no_cache;
} cli_engine_opts;
/* Help text lines for the engine options (ends with a newline). */
extern const char cli_engine_opts_help[];
/* Consumes one of them at argv[*i], as cli_opts_parse does. */
int cli_engine_opts_parse(cli_engine_opts *opts, const char *cmd, int argc, char **argv, int *i);
/* Applies them to a new context (opts is a cli_engine_opts; the shape of sd_server_configure_fn). */
sd_status cli_engine_opts_apply(sd_context *ctx, void *opts);

/* Prints the context's diagnostics on stderr, one per line. Returns how many there were. */
size_t cli_print_diags(const sd_context *ctx);
/* Reports a failed load, validation or run: prints every diagnostic, then the context's message
 * as "sdflow: error: ..." unless it repeats the last diagnostic. Returns the exit code. */
int cli_report_failure(sd_context *ctx, sd_status status);

/* Writes graph as XML to path (atomically) or, for "-", to stdout (resolve_params as in
 * sd_graph_save_xml); reports a failure on stderr. Returns the exit code. */
int cli_write_graph(sd_context *ctx, sd_graph *graph, const char *path, bool resolve_params);

#endif
