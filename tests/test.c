#define _XOPEN_SOURCE 700 /* nftw */
#include "test.h"
#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int test_checks_failed_in_current;
static int tests_passed, tests_failed;
static const char *current_test;
static char scratch[4096]; /* test_scratch_dir's directory, once made */

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

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int test_summary(const char *program)
{
    printf("%s: %d passed, %d failed\n", program, tests_passed, tests_failed);
    /* The scratch directory goes when every test passed; it stays for a look after a failure. */
    if (scratch[0] && !tests_failed)
        nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    else if (scratch[0])
        fprintf(stderr, "%s: scratch files kept in %s\n", program, scratch);
    return tests_failed ? 1 : 0;
}

const char *test_source_dir(void)
{
    const char *s = getenv("SDFLOW_SOURCE_DIR");
    return s ? s : SDFLOW_SOURCE_DIR;
}

const char *test_scratch_dir(void)
{
    if (!scratch[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(scratch, sizeof scratch, "%s/sdflow-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(scratch)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return scratch;
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

void test_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out)
        test_fail(__FILE__, __LINE__, "cannot copy %s to %s", from, to);
    char buf[4096];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}
