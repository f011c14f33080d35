/* sdflow import comfy FILE.json|FILE.png -o OUT.xml: converts a ComfyUI workflow. */
#include "cli/cli.h"
#include "cli/options.h"
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow import comfy WORKFLOW.json|IMAGE.png [-o OUT.xml]\n\n"
           "Converts a ComfyUI workflow into a workflow XML file (stdout when no -o is given): the\n"
           "API format (\"Save (API Format)\"), the UI format (\"Save\"; subgraphs expanded, notes,\n"
           "Reroutes and PrimitiveNodes resolved, muted and bypassed nodes as ComfyUI treats them),\n"
           "or a PNG's \"prompt\" chunk, else its \"workflow\" chunk. Node ids are kept; nodes no\n"
           "output depends on are dropped with a warning; a node type sdflow does not implement is\n"
           "an error naming it. The sampler's seed, steps, cfg, sampler, scheduler, denoise, the\n"
           "prompts, the size and the checkpoint become parameters (--set) where unambiguous.\n"
           "Run 'sdflow validate OUT.xml' afterwards to check inputs, values and model files.\n\n"
           "options:\n"
           "  -o, --output FILE    where to write the XML ('-' for stdout)\n"
           "  -h, --help           show this help\n\n"
           "exit status: 0 converted, 2 usage, 3 invalid or unsupported input, 4 limit exceeded,\n"
           "             5 I/O error\n");
}

int cmd_import(int argc, char **argv)
{
    cli_convert c = {0};
    sd_context *ctx = NULL;
    sd_graph *g = NULL;
    int rc = cli_convert_parse("import", "usage: sdflow import comfy WORKFLOW.json|IMAGE.png [-o OUT.xml]", help,
                               false, argc, argv, &c);
    if (rc >= 0)
        return rc;
    sd_status st = sd_context_new(&ctx);
    if (!st)
        st = sd_graph_import_comfy(ctx, c.in, &g);
    if (st)
        rc = cli_report_failure(ctx, st);
    else
        rc = cli_write_graph(ctx, g, c.out, false);
    sd_graph_free(g);
    sd_context_free(ctx);
    return rc;
}
