/* Child processes of the tests that talk over the network (a server, a browser): started with
 * their output in a file, waited for by a line of that file, stopped with a signal. */
#ifndef SD_TEST_CHILD_PROC_H
#define SD_TEST_CHILD_PROC_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Starts argv (argv[0] a path) with stdout and stderr appended to log; -1 on failure. */
pid_t test_spawn(const char *const *argv, const char *log);
/* Waits (at most timeout_s, or until pid exits) for a line of log containing needle; copies
 * the line into out. */
bool test_wait_line(pid_t pid, const char *log, const char *needle, char *out, size_t size, int timeout_s);
/* Sends sig, waits for the child; returns its wait status. */
int test_stop(pid_t pid, int sig);

#endif
