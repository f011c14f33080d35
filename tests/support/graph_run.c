#include "support/graph_run.h"
#include "core/run.h"
#include "test.h"
#include <stdlib.h>

float *test_run_latent(sd_graph *g, const char *node, size_t n)
{
    const char *outputs[] = {node};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    float *out = NULL;
    sd_status st = g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID;
    CHECK_MSG(st == SD_OK, "%s", g ? sd_context_errmsg(sd_graph_context(g)) : "no graph");
    const sd_value *v = st ? NULL : sd_result_value(res, node, "LATENT");
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    size_t got = 0;
    if (t && sd_tensor_numel(t, &got) && got == n && (out = malloc(n * sizeof *out)))
        memcpy(out, t->data, n * sizeof *out);
    CHECK_MSG(out != NULL, "node '%s': no LATENT of %zu values", node, n);
    sd_result_free(res);
    return out;
}
