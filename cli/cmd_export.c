/* sdflow export comfy FILE.xml [--ui] [-o OUT.json]: writes a workflow as ComfyUI JSON. */
#include "cli/cli.h"
#include "cli/options.h"
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow export comfy FILE.xml [--ui] [-o OUT.json] [--set NAME=VALUE]...\n\n"
           "Writes a workflow as a ComfyUI workflow: the API format (what \"Save (API Format)\"\n"
           "writes; node ids kept), or with --ui the UI format (what \"Save\" writes; nodes laid out\n"
           "left to right by depth). Parameters are written as their values. A node type ComfyUI\n"
           "does not have (sdflow's Sdflow* nodes) is an error naming the node.\n\n"
           "options:\n"
           "  --ui                 the UI format instead of the API format\n"
           "  -o, --output FILE    where to write (default '-': stdout)\n"
           "  --set NAME=VALUE     override a parameter (or NODE.INPUT=VALUE); repeatable\n"
           "  -h, --help           show this help\n\n"
           "exit status: 0 written, 2 usage, 3 invalid input, 4 limit exceeded, 5 I/O error\n");
}

int cmd_export(int argc, char **argv)
{
    cli_convert c = {0};
    sd_context *ctx = NULL;
    sd_graph *g = NULL;
    char *json = NULL;
    int rc = cli_convert_parse("export", "usage: sdflow export comfy FILE.xml [--ui] [-o OUT.json]", help, true,
                               argc, argv, &c);
    if (rc >= 0)
        goto done;
    sd_status st = sd_context_new(&ctx);
    if (!st)
        st = sd_graph_load_xml(ctx, c.in, &g);
    if (!st)
        st = cli_opts_apply_sets(&c.opts, g);
    if (!st)
        st = sd_graph_export_comfy(g, c.ui, &json);
    if (st)
        rc = cli_report_failure(ctx, st);
    else if (!cli_write_text(c.out, json) || (!strcmp(c.out, "-") && !cli_write_text(c.out, "\n")))
        rc = EXIT_IO;
    else
        rc = EXIT_OK;
done:
    free(json);
    sd_graph_free(g);
    sd_context_free(ctx);
    cli_opts_free(&c.opts);
    return rc;
}
