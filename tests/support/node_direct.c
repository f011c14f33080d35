#include "support/node_direct.h"
#include "core/run.h"
#include "test.h"

sd_value *test_run_node(sd_context *ctx, const char *type, sd_value **in, sd_status *st)
{
    static char id[] = "n";
    const sd_node_desc *desc = sd_node_type_find(type);
    sd_value *outs[1] = {NULL};
    CHECK_MSG(desc != NULL, "no node type %s", type);
    if (!desc) {
        *st = SD_ERR_NOT_FOUND;
        return NULL;
    }
    sd_graph_node gn = {.id = id, .type = id, .desc = desc};
    sd_plan_node pn = {.gn = &gn, .desc = desc, .outputs = outs};
    sd_run_state rs = {.ctx = ctx};
    sd_node_run r = {.state = &rs, .node = &pn, .in_values = in};
    *st = desc->run(&r);
    if (*st) {
        sd_value_unref(outs[0]);
        return NULL;
    }
    return outs[0];
}

void test_put_tensor(sd_value *v, const char *name, int ndim, const int64_t *shape, const float *data)
{
    sd_tensor *t = sd_value_add_tensor(v, name, ndim, shape);
    size_t n = 0;
    CHECK(t && sd_tensor_numel(t, &n));
    if (t)
        memcpy(t->data, data, n * sizeof *data);
}

void test_expect_tensor(const sd_value *v, const char *name, int ndim, const int64_t *shape, const float *want)
{
    const sd_tensor *t = v ? sd_value_tensor(v, name) : NULL;
    CHECK_MSG(t && t->ndim == ndim && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0, "%s: shape", name);
    size_t n = 0;
    if (!t || !sd_tensor_numel(t, &n))
        return;
    for (size_t i = 0; i < n; i++)
        CHECK_MSG(t->data[i] == want[i], "%s[%zu] = %.9g, want %.9g", name, i, t->data[i], want[i]);
}
