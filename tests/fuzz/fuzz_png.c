/* Fuzzes PNG reading (core/png.c) as LoadImage and `sdflow replay` reach it: sd_png_read with the
 * default pixel budget, then the provenance text chunks replay reads (sd_png_extract_workflow,
 * sdflow:node, sdflow:provenance) and the embedded workflow loaded as replay loads it
 * (sd_graph_load_xml_memory). */
#include "core/png.h"
#include "fuzz_util.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    const char *path = fuzz_write_file(data, size, ".png");
    sd_image img = {0};
    sd_status st = sd_png_read(ctx, path, NULL, &img);
    fuzz_check_error(ctx, st);
    sd_image_clear(&img);

    char *text = NULL;
    st = sd_png_read_text(ctx, path, NULL, SD_PNG_KEY_NODE, &text);
    fuzz_check_error(ctx, st);
    free(text);
    text = NULL;

    char *xml = NULL;
    st = sd_png_extract_workflow(ctx, path, &xml);
    fuzz_check_error(ctx, st);
    if (st == SD_OK) {
        sd_graph *g = NULL;
        st = sd_graph_load_xml_memory(ctx, xml, strlen(xml), path, &g);
        fuzz_check_error(ctx, st);
        sd_graph_free(g);
    }
    free(xml);
    return 0;
}
