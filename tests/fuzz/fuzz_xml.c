/* Fuzzes the workflow XML reader and validation as `sdflow validate FILE` reaches them:
 * sd_graph_load_xml (hardened libxml2 parse, schema, graph building) then sd_graph_validate
 * (types, links, values, ranges, choices, parameters, cycles, files), and writing the graph
 * back (sd_graph_to_xml) when it loaded. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    sd_graph *g = NULL;
    fuzz_check_error(ctx, sd_graph_load_xml(ctx, fuzz_write_file(data, size, ".xml"), &g));
    fuzz_check_graph(ctx, g, true);
    return 0;
}
