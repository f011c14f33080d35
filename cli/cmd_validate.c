/* sdflow validate FILE...: checks workflow files and reports every problem at once. */
#include "cli/cli.h"
#include "cli/options.h"
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow validate [options] FILE...\n\n"
           "Checks workflow XML files: well-formedness, the schema, node types, inputs, links,\n"
           "value ranges and choices, parameters, cycles and model/image files. Every problem is\n"
           "printed on stderr as FILE:LINE: node 'ID' input 'NAME': MESSAGE; a valid file prints\n"
           "\"FILE: ok\" on stdout.\n\noptions:\n%s"
           "  -h, --help           show this help\n\n"
           "exit status: 0 all files valid, 2 usage, 3 invalid, 4 limit exceeded, 5 I/O error\n",
           cli_opts_help);
}

/* Validates one file; returns its exit code. */
static int validate_file(sd_context *ctx, const cli_opts *opts, const char *name)
{
    sd_graph *g = NULL;
    char *path = cli_workflow_path(name);
    if (!path)
        return cli_fail(ctx, SD_ERR_NOMEM, "out of memory");
    sd_status st = sd_graph_load_xml(ctx, path, &g);
    if (!st && (st = cli_opts_apply_sets(opts, g)) == SD_OK)
        st = sd_graph_validate(g);
    sd_graph_free(g);
    int rc = EXIT_OK;
    if (!st)
        printf("%s: ok\n", path);
    else
        rc = cli_report_failure(ctx, st);
    free(path);
    return rc;
}

int cmd_validate(int argc, char **argv)
{
    cli_opts opts = {0};
    const char **files = calloc((size_t)argc, sizeof *files);
    size_t n_files = 0;
    int rc = EXIT_OK;
    sd_context *ctx = NULL;
    if (!files)
        return cli_fail(NULL, SD_ERR_NOMEM, NULL);
    for (int i = 1; i < argc; i++) {
        int r = cli_opts_parse(&opts, "validate", argc, argv, &i);
        if (r < 0) {
            rc = EXIT_USAGE;
            goto done;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            goto done;
        }
        if (cli_is_option(argv[i])) {
            rc = cli_usage_error("validate", "unknown option '%s'", argv[i]);
            goto done;
        }
        files[n_files++] = argv[i];
    }
    if (n_files == 0) {
        rc = cli_usage_error("validate", "no workflow file given");
        goto done;
    }
    sd_status st = sd_context_new(&ctx);
    if (!st)
        st = cli_opts_apply_context(&opts, ctx);
    if (st) {
        rc = cli_fail(ctx, st, NULL);
        goto done;
    }
    for (size_t k = 0; k < n_files; k++) {
        int r = validate_file(ctx, &opts, files[k]);
        if (r > rc)
            rc = r;
    }
done:
    sd_context_free(ctx);
    cli_opts_free(&opts);
    free(files);
    return rc;
}
