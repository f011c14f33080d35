/* Shared command-line options: see cli/options.h. */
#include "cli/options.h"
#include "cli/cli.h"
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

const char cli_opts_help[] =
    "  --models-dir DIR     model directory laid out like ComfyUI's models/ (checkpoints/, vae/,\n"
    "                       loras/, ...); repeatable, searched in order; replaces SDFLOW_MODELS\n"
    "  --input-dir DIR      where image names are looked up (default $SDFLOW_INPUT or ./input)\n"
    "  --output-dir DIR     where output images go (default $SDFLOW_OUTPUT or ./output)\n"
    "  --set NAME=VALUE     override a workflow parameter, or NODE.INPUT=VALUE any node's input;\n"
    "                       seed=random draws a seed; repeatable\n"
    "  --allow-absolute-paths  let the workflow name model and image files by absolute path\n"
    "                       (otherwise only names in the directories above are looked up)\n";

bool cli_is_option(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0';
}

int cli_opt_value(const char *cmd, int argc, char **argv, int *i, const char *name,
                  const char **value)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option '%s' needs a value", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

static bool grow(void **array, size_t count, size_t elem)
{
    void *p = realloc(*array, (count + 1) * elem);
    if (!p)
        return false;
    *array = p;
    return true;
}

int cli_opts_parse(cli_opts *o, const char *cmd, int argc, char **argv, int *i)
{
    const char *v;
    int r;
    if ((r = cli_opt_value(cmd, argc, argv, i, "--models-dir", &v)) != 0) {
        if (r < 0)
            return -1;
        if (!grow((void **)&o->models_dirs, o->n_models_dirs, sizeof *o->models_dirs)) {
            cli_usage_error(cmd, "out of memory");
            return -1;
        }
        o->models_dirs[o->n_models_dirs++] = v;
        return 1;
    }
    if ((r = cli_opt_value(cmd, argc, argv, i, "--input-dir", &v)) != 0) {
        if (r > 0)
            o->input_dir = v;
        return r;
    }
    if ((r = cli_opt_value(cmd, argc, argv, i, "--output-dir", &v)) != 0) {
        if (r > 0)
            o->output_dir = v;
        return r;
    }
    if (!strcmp(argv[*i], "--allow-absolute-paths")) {
        o->allow_absolute_paths = true;
        return 1;
    }
    if ((r = cli_opt_value(cmd, argc, argv, i, "--set", &v)) != 0) {
        if (r < 0)
            return -1;
        const char *eq = strchr(v, '=');
        if (!eq || eq == v) {
            cli_usage_error(cmd, "--set needs NAME=VALUE, got '%s'", v);
            return -1;
        }
        if (!grow((void **)&o->sets, o->n_sets, sizeof *o->sets)) {
            cli_usage_error(cmd, "out of memory");
            return -1;
        }
        o->sets[o->n_sets++] = (cli_set){.arg = v, .name_len = (size_t)(eq - v), .value = eq + 1};
        return 1;
    }
    return 0;
}

void cli_opts_free(cli_opts *o)
{
    free(o->models_dirs);
    free(o->sets);
    o->models_dirs = NULL;
    o->sets = NULL;
    o->n_models_dirs = o->n_sets = 0;
}

sd_status cli_opts_apply_context(const cli_opts *o, sd_context *ctx)
{
    sd_status st = SD_OK;
    if (o->n_models_dirs)
        sd_context_clear_models_dirs(ctx);
    for (size_t k = 0; !st && k < o->n_models_dirs; k++)
        st = sd_context_add_models_dir(ctx, o->models_dirs[k]);
    if (!st && o->input_dir)
        st = sd_context_set_dir(ctx, SD_DIR_INPUT, o->input_dir);
    if (!st && o->output_dir)
        st = sd_context_set_dir(ctx, SD_DIR_OUTPUT, o->output_dir);
    sd_context_set_allow_absolute_paths(ctx, o->allow_absolute_paths);
    return st;
}

/* "seed", or NODE.seed / NODE.noise_seed: the names --set NAME=random applies to. */
static bool is_seed_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *input = dot ? dot + 1 : name;
    return !strcmp(input, "seed") || (dot && !strcmp(input, "noise_seed"));
}

/* A seed in 0 ... 2^64 - 1 from the system's entropy, else from the clock and the pid. */
static uint64_t random_seed(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, 0) == (ssize_t)sizeof x)
        return x;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    x = ((uint64_t)t.tv_sec * 1000000007u) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32);
    x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33;
    return x;
}

sd_status cli_opts_apply_sets(const cli_opts *o, sd_graph *g)
{
    for (size_t k = 0; k < o->n_sets; k++) {
        const cli_set *s = &o->sets[k];
        char *name = malloc(s->name_len + 1);
        if (!name)
            return SD_ERR_NOMEM;
        memcpy(name, s->arg, s->name_len);
        name[s->name_len] = '\0';
        char seed[32];
        const char *value = s->value;
        if (!strcmp(value, "random") && is_seed_name(name)) {
            snprintf(seed, sizeof seed, "%" PRIu64, random_seed());
            fprintf(stderr, "sdflow: %s = %s\n", name, seed);
            value = seed;
        }
        sd_status st = sd_graph_set_param(g, name, value);
        free(name);
        if (st)
            return st;
    }
    return SD_OK;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

int cli_convert_parse(const char *cmd, const char *usage, void (*help)(void), bool takes_opts, int argc,
                      char **argv, cli_convert *c)
{
    const char *format = NULL;
    c->out = "-";
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            return EXIT_OK;
        } else if (takes_opts && !strcmp(argv[i], "--ui")) {
            c->ui = true;
        } else if ((r = cli_opt_value(cmd, argc, argv, &i, "--output", &v)) != 0 ||
                   (r = cli_opt_value(cmd, argc, argv, &i, "-o", &v)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            c->out = v;
        } else if (takes_opts && (r = cli_opts_parse(&c->opts, cmd, argc, argv, &i)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
        } else if (cli_is_option(argv[i])) {
            return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        } else if (!format) {
            format = argv[i];
        } else if (!c->in) {
            c->in = argv[i];
        } else {
            return cli_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!format || !c->in)
        return cli_usage_error(cmd, "%s", usage);
    if (strcmp(format, "comfy") != 0)
        return cli_usage_error(cmd, "unknown format '%s' (supported: comfy)", format);
    return -1;
}

int cli_refuse_non_xml(const char *path)
{
    if (has_suffix(path, ".json"))
        fprintf(stderr,
                "sdflow: error: %s is JSON, not workflow XML; if it is a ComfyUI workflow, convert it "
                "first: sdflow import comfy %s -o OUT.xml\n",
                path, path);
    else if (has_suffix(path, ".png"))
        fprintf(stderr,
                "sdflow: error: %s is an image, not workflow XML; take out its workflow first: sdflow "
                "import comfy %s -o OUT.xml (a ComfyUI image) or sdflow replay %s --extract OUT.xml "
                "(an sdflow image)\n",
                path, path, path);
    else
        return 0;
    return sd_status_exit_code(SD_ERR_INVALID);
}

bool cli_write_text(const char *path, const char *text)
{
    if (strcmp(path, "-") == 0)
        return fputs(text, stdout) >= 0 && fflush(stdout) == 0;
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return false;
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wx");
    bool ok = f && fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        fprintf(stderr, "sdflow: error: %s: %s\n", path, strerror(err));
        if (f)
            unlink(tmp);
    }
    free(tmp);
    return ok;
}

/* The installed stock workflow `base`, or NULL when there is none (*nomem set when memory ran
 * out). SDFLOW_BIN_TO_GRAPHS (from CMake) leads from the installed executable's directory to
 * <datadir>/sdflow/graphs. */
static char *stock_workflow(const char *base, bool *nomem)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    size_t size = strlen(exe) + strlen(SDFLOW_BIN_TO_GRAPHS) + strlen(base) + 3;
    char *path = malloc(size);
    if (!path) {
        *nomem = true;
        return NULL;
    }
    snprintf(path, size, "%s/%s/%s", exe, SDFLOW_BIN_TO_GRAPHS, base);
    char *real = realpath(path, NULL); /* without "bin/..": the path messages show */
    free(path);
    if (!real && errno == ENOMEM)
        *nomem = true;
    return real;
}

char *cli_workflow_path(const char *name)
{
    if (name[0] != '/' && !strstr(name, "..") && access(name, F_OK) != 0) {
        bool nomem = false;
        char *stock = stock_workflow(strncmp(name, "graphs/", 7) == 0 ? name + 7 : name, &nomem);
        if (stock || nomem)
            return stock;
    }
    return strdup(name);
}

size_t cli_print_diags(const sd_context *ctx)
{
    size_t n = sd_context_diag_count(ctx);
    for (size_t k = 0; k < n; k++)
        fprintf(stderr, "%s\n", sd_context_diag(ctx, k));
    return n;
}

int cli_report_failure(sd_context *ctx, sd_status status)
{
    if (!ctx)
        return cli_fail(NULL, status, NULL);
    size_t n = cli_print_diags(ctx);
    if (n > 0 && strcmp(sd_context_diag(ctx, n - 1), sd_context_errmsg(ctx)) == 0)
        return sd_status_exit_code(status);
    return cli_fail(ctx, status, NULL);
}

int cli_write_graph(sd_context *ctx, sd_graph *graph, const char *path, bool resolve_params)
{
    if (strcmp(path, "-") != 0) {
        sd_status st = sd_graph_save_xml(graph, path, resolve_params);
        return st ? cli_report_failure(ctx, st) : EXIT_OK;
    }
    char *xml = NULL;
    sd_status st = sd_graph_to_xml(graph, resolve_params, &xml);
    int rc = st ? cli_report_failure(ctx, st) : EXIT_OK;
    if (!st && (fputs(xml, stdout) == EOF || fflush(stdout) == EOF))
        rc = cli_fail(ctx, SD_ERR_IO, "cannot write to stdout");
    free(xml);
    return rc;
}

const char cli_engine_opts_help[] =
    "  --cache PATH         cache database (default $SDFLOW_CACHE, else\n"
    "                       $XDG_CACHE_HOME/sdflow/cache.db)\n"
    "  --no-cache           neither read nor write the cache\n"
    "  --device SEL         OpenCL device: an index or a name substring\n"
    "  --precision P        fp32 (default) or bf16: matrix products and convolutions\n"
    "                       in bfloat16 on the CPU's AMX/AVX512-BF16 units (CPU devices)\n";

int cli_engine_opts_parse(cli_engine_opts *o, const char *cmd, int argc, char **argv, int *i)
{
    int r;
    if ((r = cli_opts_parse(&o->common, cmd, argc, argv, i)) != 0)
        return r;
    if ((r = cli_opt_value(cmd, argc, argv, i, "--cache", &o->cache)) != 0)
        return r;
    if ((r = cli_opt_value(cmd, argc, argv, i, "--device", &o->device)) != 0)
        return r;
    if ((r = cli_opt_value(cmd, argc, argv, i, "--precision", &o->precision)) != 0)
        return r;
    if (!strcmp(argv[*i], "--no-cache")) {
        o->no_cache = true;
        return 1;
    }
    return 0;
}

sd_status cli_engine_opts_apply(sd_context *ctx, void *opts)
{
    const cli_engine_opts *o = opts;
    sd_status st = cli_opts_apply_context(&o->common, ctx);
    if (!st && (o->cache || o->no_cache))
        st = sd_context_set_cache_path(ctx, o->no_cache ? NULL : o->cache);
    if (!st && o->device)
        st = sd_context_set_device(ctx, o->device);
    if (!st && o->precision)
        st = sd_context_set_precision(ctx, o->precision);
    return st;
}
