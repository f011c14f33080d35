#include "test.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int test_checks_failed_in_current;
static int tests_passed, tests_failed;
static const char *current_test;

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: [%s] check failed: ", file, line, current_test ? current_test : "?");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    test_checks_failed_in_current++;
}

void test_run(const char *name, void (*fn)(void))
{
    current_test = name;
    test_checks_failed_in_current = 0;
    fn();
    if (test_checks_failed_in_current) {
        tests_failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else {
        tests_passed++;
        fprintf(stderr, "ok   %s\n", name);
    }
    current_test = NULL;
}

int test_summary(const char *program)
{
    printf("%s: %d passed, %d failed\n", program, tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

const char *test_source_dir(void)
{
    const char *s = getenv("SDFLOW_SOURCE_DIR");
    return s ? s : SDFLOW_SOURCE_DIR;
}

const char *test_scratch_dir(void)
{
    static char dir[4096];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/sdflow-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return dir;
}

char *test_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p)
        abort();
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

bool test_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
