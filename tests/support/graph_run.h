/* Running a test graph up to one node's output. */
#ifndef SD_TEST_GRAPH_RUN_H
#define SD_TEST_GRAPH_RUN_H
#include "sdflow/sdflow.h"
#include <stdint.h>

/* Runs g without the cache for node `node` and returns a malloc'd copy of the samples of its
 * LATENT output, which must hold exactly n floats; NULL, with a failed check, otherwise. The
 * graph stays the caller's. */
float *test_run_latent(sd_graph *g, const char *node, size_t n);
/* The same with the context's cache (results read from and stored in it). */
float *test_run_latent_cached(sd_graph *g, const char *node, size_t n);

/* Graphs over tiny random checkpoints (the family node tests). */
typedef struct test_checkpoint_file {
    const char *preset, *file; /* sdflow_mkckpt preset, file name under models/checkpoints */
    uint64_t seed;
} test_checkpoint_file;
/* Writes the files (f32) into <scratch>/models/checkpoints; returns the models directory
 * (malloc'd), NULL on failure (reported). */
char *test_write_checkpoints(const test_checkpoint_file *files, size_t n);
/* A context reading models from models_dir, writing output to the scratch directory, with the
 * cache file `cache` (NULL: none), and images from the directory test_models_input_dir set last. */
sd_context *test_models_context(const char *models_dir, const char *cache);
void test_models_input_dir(const char *dir); /* NULL: none (the default) */
/* Loads `<workflow version="1">body</workflow>` in such a context and runs it (through the cache
 * when cache is not NULL) up to node's LATENT of n floats, as test_run_latent. */
float *test_run_body_latent(const char *models_dir, const char *cache, const char *body, const char *node, size_t n);
/* Validates such a workflow and expects n problems, problem k containing msgs[k]. */
void test_expect_problems(const char *models_dir, const char *body, size_t n, const char *const *msgs);
#endif
