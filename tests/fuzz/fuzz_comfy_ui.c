/* Fuzzes the ComfyUI UI-format conversion (core/comfy_ui.c: nodes, links in both forms,
 * widgets_values, Reroutes, PrimitiveNodes, muted and bypassed nodes, subgraphs) on every input
 * that parses as a JSON object, then the whole import as `sdflow import comfy FILE` reaches it,
 * with validation and writing the graph as XML when the import succeeded. */
#include "fuzz_util.h"
#include "core/comfy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    json_t *root = sd_comfy_parse_json(ctx, "fuzz.json", (const char *)data, size);
    if (!root)
        fuzz_check_error(ctx, SD_ERR_PARSE);
    if (json_is_object(root)) {
        json_t *api = NULL, *meta = NULL;
        sd_status st = sd_comfy_ui_to_api(ctx, "fuzz.json", root, &api, &meta);
        fuzz_check_error(ctx, st);
        if (!st && (!json_is_object(api) || !json_is_object(meta)))
            __builtin_trap();
        json_decref(api);
        json_decref(meta);
    }
    json_decref(root);
    sd_graph *g = NULL;
    fuzz_check_error(ctx, sd_graph_import_comfy(ctx, fuzz_write_file(data, size, ".json"), &g));
    fuzz_check_graph(ctx, g, false);
    return 0;
}
