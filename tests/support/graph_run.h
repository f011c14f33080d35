/* Running a test graph up to one node's output. */
#ifndef SD_TEST_GRAPH_RUN_H
#define SD_TEST_GRAPH_RUN_H
#include "sdflow/sdflow.h"

/* Runs g without the cache for node `node` and returns a malloc'd copy of the samples of its
 * LATENT output, which must hold exactly n floats; NULL, with a failed check, otherwise. The
 * graph stays the caller's. */
float *test_run_latent(sd_graph *g, const char *node, size_t n);
#endif
