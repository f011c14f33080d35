/* Shared pieces of the sdflow command-line front end (uses only the public API). */
#ifndef SD_CLI_H
#define SD_CLI_H
#include "sdflow/sdflow.h"
#include <stdio.h>

#define SD_COMMAND(name, fn, summary) int fn(int argc, char **argv);
#include "cli/command_list.h"
#undef SD_COMMAND

/* Exit codes (README): */
enum { EXIT_OK = 0, EXIT_MISMATCH = 1, EXIT_USAGE = 2, EXIT_INVALID = 3, EXIT_LIMIT = 4,
       EXIT_IO = 5, EXIT_INTERRUPTED = 130 };

/* Prints "sdflow: error: <message>" (the context's message when msg is NULL) and returns the
 * exit code for status. */
int cli_fail(sd_context *ctx, sd_status status, const char *msg);
/* Prints "sdflow <cmd>: <message>\nTry 'sdflow <cmd> --help'." and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* While on, the first SIGINT/SIGTERM asks ctx's run to stop at the next node or step boundary
 * (sd_context_interrupt); a second one kills the process. Off restores the actions from before. */
void cli_catch_signals(sd_context *ctx, bool on);

#endif
