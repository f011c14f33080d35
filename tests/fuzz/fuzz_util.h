/* Shared helpers of the libFuzzer harnesses (docs/fuzzing.md). */
#ifndef SD_FUZZ_UTIL_H
#define SD_FUZZ_UTIL_H

#include "sdflow/sdflow.h"
#include <stddef.h>
#include <stdint.h>

/* The process's context: no models directories, input/output/temp under $TMPDIR, no cache,
 * warnings dropped. Created on the first call. */
sd_context *fuzz_context(void);

/* Writes data to this process's scratch file ($TMPDIR/sdflow-fuzz-<pid><suffix>, removed at
 * exit) and returns its path. */
const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix);

/* The library's error contract (docs/design.md §8): a failure carries a non-empty one-line
 * message on the context. Aborts (a finding) when st is an error without one. */
void fuzz_check_error(sd_context *ctx, sd_status st);

/* What a loaded graph goes through next: sd_graph_validate, then sd_graph_to_xml (resolving
 * parameters or not), each held to the error contract; frees g (NULL-safe). */
void fuzz_check_graph(sd_context *ctx, sd_graph *g, bool resolve_params);

#endif
