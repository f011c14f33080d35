/* sdflow run: loads a workflow, applies --set overrides, runs it with progress on stderr and a
 * summary; SIGINT/SIGTERM stop at the next node or step boundary (exit 130). */
#include "cli/cli.h"
#include "cli/options.h"
#include "sdflow/node.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sdflow run FILE.xml [options]\n"
            "\n"
            "Runs a workflow: every output node (SaveImage, PreviewImage), or the nodes named by\n"
            "--output. Outputs already in the cache are not computed again.\n"
            "\n"
            "%s"
            "  --help-params        list the workflow's parameters (name, type, default, doc)\n"
            "  --output NODE_ID     run only what this node needs and print its outputs; repeatable\n"
            "  --repeat N           run N times; between runs each seed changes as its node's\n"
            "                       control_after_generate says (fixed, increment, decrement,\n"
            "                       randomize)\n"
            "  --cache PATH         cache database (default $SDFLOW_CACHE, else\n"
            "                       $XDG_CACHE_HOME/sdflow/cache.db)\n"
            "  --no-cache           neither read nor write the cache\n"
            "  --device SEL         OpenCL device: an index or a name substring\n"
            "  --precision P        fp32 (default; or $SDFLOW_PRECISION) or bf16: matrix products\n"
            "                       and convolutions in bfloat16 on the CPU's AMX/AVX512-BF16\n"
            "                       units (CPU devices; docs/precision.md)\n"
            "  --quiet              no progress and no summary\n"
            "  --json-progress      progress and summary as JSON lines on stderr\n"
            "  -h, --help           show this help\n"
            "\n"
            "Written files are printed on stdout, one per line. Ctrl-C stops at the next node or\n"
            "sampler step: no partial files are left, exit status 130.\n",
            cli_opts_help);
}

/* ---- Progress. ---- */

typedef enum { PROGRESS_NONE, PROGRESS_TTY, PROGRESS_LINES, PROGRESS_JSON } progress_mode;

typedef struct progress_state {
    progress_mode mode;
    bool line_open;   /* TTY: a live line is on screen */
    double last_step; /* plain lines: time of the last step line */
} progress_state;

static void clear_live_line(progress_state *p)
{
    if (p->line_open) {
        fputs("\r\033[K", stderr);
        p->line_open = false;
    }
}

static void json_line(json_t *obj)
{
    if (obj) {
        json_dumpf(obj, stderr, JSON_COMPACT | JSON_REAL_PRECISION(6));
        fputc('\n', stderr);
        json_decref(obj);
    }
    fflush(stderr);
}

static void progress_json(const sd_progress *e)
{
    static const char *const names[] = {"plan", "start", "cached", "done", "step"};
    json_t *o = json_pack("{s:s, s:i, s:f}", "event", names[e->kind], "nodes", e->node_count,
                          e->kind == SD_PROGRESS_NODE_DONE ? "seconds" : "elapsed", e->seconds);
    if (o && e->node_id) {
        json_object_set_new(o, "node", json_string(e->node_id));
        json_object_set_new(o, "type", json_string(e->node_type));
        json_object_set_new(o, "index", json_integer(e->node_index));
    }
    if (o && e->kind == SD_PROGRESS_STEP) {
        json_object_set_new(o, "step", json_integer(e->step));
        json_object_set_new(o, "steps", json_integer(e->steps));
    }
    json_line(o);
}

static void on_progress(const sd_progress *e, void *user)
{
    progress_state *p = user;
    if (p->mode == PROGRESS_JSON) {
        progress_json(e);
        return;
    }
    if (e->kind == SD_PROGRESS_PLAN) {
        if (p->mode == PROGRESS_LINES)
            fprintf(stderr, "sdflow: %d nodes to run or load\n", e->node_count);
        return;
    }
    if (p->mode == PROGRESS_TTY) {
        int mins = (int)(e->seconds / 60);
        clear_live_line(p);
        fprintf(stderr, "[%d/%d] %s (%s)", e->node_index, e->node_count, e->node_id, e->node_type);
        if (e->kind == SD_PROGRESS_STEP)
            fprintf(stderr, " step %d/%d", e->step, e->steps);
        if (e->kind == SD_PROGRESS_NODE_DONE)
            fprintf(stderr, " done in %.2fs", e->seconds);
        else
            fprintf(stderr, "  %02d:%04.1f", mins, e->seconds - 60.0 * mins);
        p->line_open = true;
        fflush(stderr);
        return;
    }
    switch (e->kind) {
    case SD_PROGRESS_NODE_START:
        fprintf(stderr, "[%d/%d] %s (%s): running\n", e->node_index, e->node_count, e->node_id, e->node_type);
        break;
    case SD_PROGRESS_NODE_CACHED:
        fprintf(stderr, "[%d/%d] %s (%s): cached\n", e->node_index, e->node_count, e->node_id, e->node_type);
        break;
    case SD_PROGRESS_NODE_DONE:
        fprintf(stderr, "[%d/%d] %s (%s): done in %.2fs\n", e->node_index, e->node_count, e->node_id,
                e->node_type, e->seconds);
        break;
    default: /* steps: at most one line a second, and the last one */
        if (e->step == e->steps || e->seconds - p->last_step >= 1.0) {
            fprintf(stderr, "[%d/%d] %s (%s): step %d/%d\n", e->node_index, e->node_count, e->node_id,
                    e->node_type, e->step, e->steps);
            p->last_step = e->seconds;
        }
        break;
    }
}

/* ---- Summary and outputs. ---- */

static const char *outcome_name(sd_node_outcome o)
{
    return o == SD_NODE_RAN ? "ran" : o == SD_NODE_CACHED ? "cached" : "skipped";
}

static void summary_text(const sd_result *r, sd_status st, double seconds)
{
    int ran = 0, cached = 0, skipped = 0;
    size_t n = sd_result_node_count(r);
    for (size_t i = 0; i < n; i++) {
        sd_node_stat s;
        sd_result_node(r, i, &s);
        ran += s.outcome == SD_NODE_RAN;
        cached += s.outcome == SD_NODE_CACHED;
        skipped += s.outcome == SD_NODE_SKIPPED;
    }
    fprintf(stderr, "sdflow: %s: %d ran, %d from cache, %d skipped, %.2fs\n",
            st == SD_OK ? "done" : sd_status_name(st), ran, cached, skipped, seconds);
    for (size_t i = 0; i < n; i++) {
        sd_node_stat s;
        sd_result_node(r, i, &s);
        if (s.outcome == SD_NODE_RAN)
            fprintf(stderr, "  %-8s %8.3fs  %s (%s)\n", outcome_name(s.outcome), s.seconds, s.node_id,
                    s.node_type);
        else if (s.outcome == SD_NODE_CACHED)
            fprintf(stderr, "  %-8s %9s  %s (%s)\n", outcome_name(s.outcome), "", s.node_id, s.node_type);
    }
    for (size_t i = 0; i < sd_result_file_count(r); i++)
        fprintf(stderr, "  wrote %s\n", sd_result_file(r, i));
}

static void summary_json(const sd_result *r, sd_status st, double seconds)
{
    json_t *nodes = json_array(), *files = json_array();
    for (size_t i = 0; i < sd_result_node_count(r); i++) {
        sd_node_stat s;
        sd_result_node(r, i, &s);
        json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:f}", "node", s.node_id, "type", s.node_type,
                                               "outcome", outcome_name(s.outcome), "seconds", s.seconds));
    }
    for (size_t i = 0; i < sd_result_file_count(r); i++)
        json_array_append_new(files, json_string(sd_result_file(r, i)));
    json_line(json_pack("{s:s, s:s, s:f, s:o, s:o}", "event", "summary", "status",
                        st == SD_OK ? "ok" : sd_status_name(st), "seconds", seconds, "nodes", nodes,
                        "files", files));
}

/* Prints the outputs of the nodes named by --output on stdout: "id.OUTPUT = value". */
static void print_outputs(sd_graph *g, const sd_result *r, const char **ids, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const char *type = NULL;
        for (size_t i = 0; i < sd_graph_node_count(g) && !type; i++)
            if (!strcmp(sd_graph_node_id(g, i), ids[k]))
                type = sd_graph_node_type(g, i);
        const sd_node_desc *d = type ? sd_node_type_find(type) : NULL;
        for (size_t o = 0; d && o < d->n_outputs; o++) {
            sd_output_info info;
            if (sd_result_output(r, ids[k], d->outputs[o].name, &info) != SD_OK)
                continue;
            printf("%s.%s = ", ids[k], d->outputs[o].name);
            if (!strcmp(info.type, "INT"))
                printf("%lld\n", (long long)info.i);
            else if (!strcmp(info.type, "FLOAT"))
                printf("%.17g\n", info.f);
            else if (!strcmp(info.type, "BOOLEAN"))
                printf("%s\n", info.b ? "true" : "false");
            else if (info.s)
                printf("%s\n", info.s);
            else {
                printf("%s [", info.type);
                for (int j = 0; j < info.ndim; j++)
                    printf("%s%lld", j ? ", " : "", (long long)info.shape[j]);
                printf("]\n");
            }
        }
    }
}

static void print_params(const char *file, sd_graph *g)
{
    size_t n = sd_graph_param_count(g);
    if (n == 0) {
        printf("%s has no parameters\n", file);
        return;
    }
    int w = 4;
    for (size_t i = 0; i < n; i++) {
        sd_param_info p;
        sd_graph_param_at(g, i, &p);
        if ((int)strlen(p.name) > w)
            w = (int)strlen(p.name);
    }
    printf("parameters of %s (set with --set NAME=VALUE):\n", file);
    for (size_t i = 0; i < n; i++) {
        sd_param_info p;
        sd_graph_param_at(g, i, &p);
        printf("  %-*s  %-7s  default: %s%s%s%s\n", w, p.name, p.type, p.default_text,
               p.value ? "  (set: " : "", p.value ? p.value : "", p.value ? ")" : "");
        if (p.doc && *p.doc)
            printf("  %-*s  %s\n", w, "", p.doc);
    }
}

/* One run: progress, summary, the files written on stdout, the --output values. Returns the
 * exit code. */
static int run_once(sd_context *ctx, sd_graph *g, progress_state *progress, const char **outputs,
                    size_t n_outputs, bool no_cache, sd_result **result)
{
    sd_run_options ro = {.outputs = outputs, .n_outputs = n_outputs, .no_cache = no_cache};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Signals stay caught until the written files are listed: a SIGTERM just after the run must
     * not kill the process with a PNG written but not printed. */
    cli_catch_signals(ctx, true);
    sd_status st = sd_graph_run(g, &ro, result);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    clear_live_line(progress);
    /* No summary when the run stopped before planning (validation): the diagnostics say it. */
    if (sd_result_node_count(*result) && progress->mode == PROGRESS_JSON)
        summary_json(*result, st, seconds);
    else if (sd_result_node_count(*result) && progress->mode != PROGRESS_NONE)
        summary_text(*result, st, seconds);
    for (size_t i = 0; i < sd_result_file_count(*result); i++)
        printf("%s\n", sd_result_file(*result, i));
    int code;
    if (st)
        code = cli_report_failure(ctx, st);
    else
        print_outputs(g, *result, outputs, n_outputs);
    bool listed = fflush(stdout) != EOF;
    cli_catch_signals(ctx, false);
    if (!st)
        code = listed ? EXIT_OK : cli_fail(NULL, SD_ERR_IO, "cannot write the list of files to stdout");
    return code;
}

int cmd_run(int argc, char **argv)
{
    cli_opts opts = {0};
    const char *file = NULL, *cache = NULL, *device = NULL, *precision = NULL;
    char *path = NULL; /* the workflow file, found by cli_workflow_path */
    const char **outputs = NULL;
    size_t n_outputs = 0;
    bool help_params = false, no_cache = false, quiet = false, json = false;
    long repeat = 1;
    int code = EXIT_USAGE;
    sd_context *ctx = NULL;
    sd_graph *g = NULL;
    sd_result *result = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if ((r = cli_opts_parse(&opts, "run", argc, argv, &i)) != 0) {
            if (r < 0)
                goto done;
        } else if ((r = cli_opt_value("run", argc, argv, &i, "--output", &v)) != 0) {
            if (r < 0)
                goto done;
            const char **grown = realloc(outputs, (n_outputs + 1) * sizeof *outputs);
            if (!grown) {
                code = cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
                goto done;
            }
            outputs = grown;
            outputs[n_outputs++] = v;
        } else if ((r = cli_opt_value("run", argc, argv, &i, "--cache", &v)) != 0) {
            if (r < 0)
                goto done;
            cache = v;
        } else if ((r = cli_opt_value("run", argc, argv, &i, "--repeat", &v)) != 0) {
            if (r < 0)
                goto done;
            char *end;
            repeat = strtol(v, &end, 10);
            if (*end || repeat < 1 || repeat > 1000000) {
                code = cli_usage_error("run", "--repeat needs a count from 1 to 1000000, got '%s'", v);
                goto done;
            }
        } else if ((r = cli_opt_value("run", argc, argv, &i, "--device", &v)) != 0) {
            if (r < 0)
                goto done;
            device = v;
        } else if ((r = cli_opt_value("run", argc, argv, &i, "--precision", &v)) != 0) {
            if (r < 0)
                goto done;
            precision = v;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            code = EXIT_OK;
            goto done;
        } else if (!strcmp(argv[i], "--help-params")) {
            help_params = true;
        } else if (!strcmp(argv[i], "--no-cache")) {
            no_cache = true;
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            quiet = true;
        } else if (!strcmp(argv[i], "--json-progress")) {
            json = true;
        } else if (cli_is_option(argv[i])) {
            code = cli_usage_error("run", "unknown option '%s'", argv[i]);
            goto done;
        } else if (file) {
            code = cli_usage_error("run", "unexpected argument '%s' (one workflow file)", argv[i]);
            goto done;
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        code = cli_usage_error("run", "missing the workflow file");
        goto done;
    }
    if (no_cache && cache) {
        code = cli_usage_error("run", "--cache and --no-cache exclude each other");
        goto done;
    }
    if (quiet && json) {
        code = cli_usage_error("run", "--quiet and --json-progress exclude each other");
        goto done;
    }

    if ((code = cli_refuse_non_xml(file)) != 0)
        goto done;
    sd_status st = sd_context_new(&ctx);
    if (!st && !(path = cli_workflow_path(file)))
        st = SD_ERR_NOMEM;
    if (st) {
        code = cli_fail(NULL, st, "out of memory");
        goto done;
    }
    if ((st = cli_opts_apply_context(&opts, ctx)) || (cache && (st = sd_context_set_cache_path(ctx, cache))) ||
        (device && (st = sd_context_set_device(ctx, device))) ||
        (precision && (st = sd_context_set_precision(ctx, precision))) ||
        (st = sd_graph_load_xml(ctx, path, &g)) || (st = cli_opts_apply_sets(&opts, g))) {
        code = cli_report_failure(ctx, st);
        goto done;
    }
    if (help_params) {
        print_params(path, g);
        code = EXIT_OK;
        goto done;
    }

    progress_state progress = {.mode = quiet ? PROGRESS_NONE
                                       : json ? PROGRESS_JSON
                                       : isatty(STDERR_FILENO) ? PROGRESS_TTY
                                                               : PROGRESS_LINES};
    if (progress.mode != PROGRESS_NONE)
        sd_context_set_progress(ctx, on_progress, &progress);
    uint64_t random_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (long k = 0; k < repeat; k++) {
        if (k > 0 && (st = sd_graph_advance_seeds(g, &random_state))) {
            code = cli_report_failure(ctx, st);
            goto done;
        }
        sd_result_free(result);
        result = NULL;
        if ((code = run_once(ctx, g, &progress, outputs, n_outputs, no_cache, &result)) != EXIT_OK)
            goto done;
    }
    code = EXIT_OK;
done:
    sd_result_free(result);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(path);
    free(outputs);
    cli_opts_free(&opts);
    return code;
}
