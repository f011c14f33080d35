/* Fuzzes the ComfyUI API-format import as `sdflow import FILE` reaches it: sd_graph_import_comfy
 * (bounded read, strict JSON, node and link conversion), then sd_graph_validate and writing
 * the graph as XML when the import succeeded. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    sd_graph *g = NULL;
    fuzz_check_error(ctx, sd_graph_import_comfy(ctx, fuzz_write_file(data, size, ".json"), &g));
    fuzz_check_graph(ctx, g, false);
    return 0;
}
