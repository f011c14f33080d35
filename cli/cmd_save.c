/* sdflow save IN.xml -o OUT.xml: rewrites a workflow (upgraded, canonical form), optionally with
 * new parameter defaults or with its parameters inlined. */
#include "cli/cli.h"
#include "cli/options.h"
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow save IN.xml -o OUT.xml [--set NAME=VALUE]... [--resolve]\n\n"
           "Reads a workflow and writes it back in canonical form (old node versions upgraded).\n"
           "The output is written to a temporary file and renamed, never left half-written.\n"
           "The file is not validated: use 'sdflow validate' for that.\n\noptions:\n"
           "  -o, --output FILE    where to write ('-' for stdout); may be IN.xml itself\n"
           "  --set NAME=VALUE     make VALUE the parameter's default in the output; repeatable\n"
           "  --resolve            replace parameters by their values (literal inputs) and drop\n"
           "                       the parameter declarations\n"
           "  -h, --help           show this help\n\n"
           "exit status: 0 written, 2 usage, 3 invalid input, 4 limit exceeded, 5 I/O error\n");
}

int cmd_save(int argc, char **argv)
{
    cli_opts opts = {0};
    const char *in = NULL, *out = NULL;
    char *path = NULL; /* the input workflow, found by cli_workflow_path */
    bool resolve = false;
    int rc = EXIT_OK;
    sd_context *ctx = NULL;
    sd_graph *g = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            goto done;
        } else if (!strcmp(argv[i], "--resolve")) {
            resolve = true;
        } else if ((r = cli_opt_value("save", argc, argv, &i, "--output", &v)) != 0 ||
                   (r = cli_opt_value("save", argc, argv, &i, "-o", &v)) != 0) {
            if (r < 0) {
                rc = EXIT_USAGE;
                goto done;
            }
            out = v;
        } else if ((r = cli_opts_parse(&opts, "save", argc, argv, &i)) != 0) {
            if (r < 0) {
                rc = EXIT_USAGE;
                goto done;
            }
        } else if (cli_is_option(argv[i])) {
            rc = cli_usage_error("save", "unknown option '%s'", argv[i]);
            goto done;
        } else if (in) {
            rc = cli_usage_error("save", "more than one input file ('%s' and '%s')", in, argv[i]);
            goto done;
        } else {
            in = argv[i];
        }
    }
    if (!in || !out) {
        rc = cli_usage_error("save", in ? "no output file given (-o OUT.xml)" : "no input file given");
        goto done;
    }
    sd_status st = sd_context_new(&ctx);
    if (!st && !(path = cli_workflow_path(in)))
        st = SD_ERR_NOMEM;
    if (!st)
        st = sd_graph_load_xml(ctx, path, &g);
    if (!st)
        st = cli_opts_apply_sets(&opts, g);
    if (!st && resolve)
        st = sd_graph_inline_params(g);
    if (st)
        rc = cli_report_failure(ctx, st);
    else
        rc = cli_write_graph(ctx, g, out, true);
done:
    sd_graph_free(g);
    sd_context_free(ctx);
    free(path);
    cli_opts_free(&opts);
    return rc;
}
