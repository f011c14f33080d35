/* sdflow import comfy FILE.json -o OUT.xml: converts a ComfyUI API-format workflow. */
#include "cli/cli.h"
#include "cli/options.h"
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow import comfy WORKFLOW_API.json [-o OUT.xml]\n\n"
           "Converts a ComfyUI workflow saved with \"Save (API Format)\" into a workflow XML file\n"
           "(stdout when no -o is given). Node ids are kept; links [node, slot] become links to the\n"
           "named output; a node type sdflow does not implement is an error naming it.\n"
           "Run 'sdflow validate OUT.xml' afterwards to check inputs, values and model files.\n\n"
           "options:\n"
           "  -o, --output FILE    where to write the XML ('-' for stdout)\n"
           "  -h, --help           show this help\n\n"
           "exit status: 0 converted, 2 usage, 3 invalid or unsupported input, 4 limit exceeded,\n"
           "             5 I/O error\n");
}

int cmd_import(int argc, char **argv)
{
    const char *format = NULL, *in = NULL, *out = "-";
    int rc = EXIT_OK;
    sd_context *ctx = NULL;
    sd_graph *g = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            goto done;
        } else if ((r = cli_opt_value("import", argc, argv, &i, "--output", &v)) != 0 ||
                   (r = cli_opt_value("import", argc, argv, &i, "-o", &v)) != 0) {
            if (r < 0) {
                rc = EXIT_USAGE;
                goto done;
            }
            out = v;
        } else if (cli_is_option(argv[i])) {
            rc = cli_usage_error("import", "unknown option '%s'", argv[i]);
            goto done;
        } else if (!format) {
            format = argv[i];
        } else if (!in) {
            in = argv[i];
        } else {
            rc = cli_usage_error("import", "unexpected argument '%s'", argv[i]);
            goto done;
        }
    }
    if (!format || !in) {
        rc = cli_usage_error("import", "usage: sdflow import comfy WORKFLOW_API.json [-o OUT.xml]");
        goto done;
    }
    if (strcmp(format, "comfy") != 0) {
        rc = cli_usage_error("import", "unknown format '%s' (supported: comfy)", format);
        goto done;
    }
    sd_status st = sd_context_new(&ctx);
    if (!st)
        st = sd_graph_import_comfy(ctx, in, &g);
    if (st)
        rc = cli_report_failure(ctx, st);
    else
        rc = cli_write_graph(ctx, g, out, false);
done:
    sd_graph_free(g);
    sd_context_free(ctx);
    return rc;
}
