/* Child processes of the network tests (child_proc.h). */
#include "support/child_proc.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

pid_t test_spawn(const char *const *argv, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

bool test_wait_line(pid_t pid, const char *log, const char *needle, char *out, size_t size, int timeout_s)
{
    struct timespec nap = {0, 50 * 1000 * 1000};
    for (long i = 0; i < timeout_s * 20L; i++) {
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            if (strstr(line, needle)) {
                line[strcspn(line, "\r\n")] = '\0';
                snprintf(out, size, "%s", line);
                fclose(f);
                return true;
            }
        }
        if (f)
            fclose(f);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return false;
        nanosleep(&nap, NULL);
    }
    return false;
}

int test_stop(pid_t pid, int sig)
{
    int status = 0;
    if (pid > 0) {
        kill(pid, sig);
        waitpid(pid, &status, 0);
    }
    return status;
}
