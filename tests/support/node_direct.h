/* Running one node's run function directly on hand-made input values (no graph, no
 * validation), and building and checking the tensors of such values. */
#ifndef SD_TEST_NODE_DIRECT_H
#define SD_TEST_NODE_DIRECT_H
#include "core/value.h"

/* Runs node type `type` in ctx on input values in descriptor order (borrowed; literal inputs as
 * scalar values: sd_value_int, sd_value_float, sd_value_string(SD_TYPE_ENUM, ...)) and returns
 * its output 0 (a new reference; NULL on failure, the message on ctx) with the status in *st.
 * The node's id is "n". */
sd_value *test_run_node(sd_context *ctx, const char *type, sd_value **in, sd_status *st);

/* Adds tensor `name` to v with the given shape and values (a failed check when it cannot). */
void test_put_tensor(sd_value *v, const char *name, int ndim, const int64_t *shape, const float *data);

/* Checks tensor `name` of v: its shape and values, exactly. */
void test_expect_tensor(const sd_value *v, const char *name, int ndim, const int64_t *shape, const float *want);
#endif
