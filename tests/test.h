/* Minimal test harness. A test program defines test functions and calls them from main():
 *
 *   static void test_parse(void) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-5); }
 *   int main(void) { RUN(test_parse); return test_summary("test_xml"); }
 *
 * Failed checks print file:line and the expression; test_summary() prints
 * "<name>: N passed, M failed" and returns the process exit status. */
#ifndef SD_TEST_H
#define SD_TEST_H
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

extern int test_checks_failed_in_current;
void test_fail(const char *file, int line, const char *fmt, ...);
void test_run(const char *name, void (*fn)(void));
int test_summary(const char *program);

/* Path helpers: source tree, a fresh scratch directory for this test program. */
const char *test_source_dir(void);
const char *test_scratch_dir(void);          /* created empty on first call; test_summary removes it when all passed */
char *test_path(const char *dir, const char *name); /* malloc'd dir/name */
bool test_file_exists(const char *path);
/* Copies the file from to the path to (a failed check when either cannot be opened). */
void test_copy_file(const char *from, const char *to);

#define RUN(fn) test_run(#fn, fn)
#define CHECK(cond) do { if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) test_fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a, #b, a_, b_); } while (0)
#define CHECK_STR_EQ(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) test_fail(__FILE__, __LINE__, "%s == %s (\"%s\" != \"%s\")", \
        #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define CHECK_STR_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); \
    if (!h_ || !strstr(h_, n_)) test_fail(__FILE__, __LINE__, "\"%s\" contains \"%s\"", h_ ? h_ : "(null)", n_); } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); \
    if (!(a_ - b_ <= (tol) && b_ - a_ <= (tol))) test_fail(__FILE__, __LINE__, "%s ~ %s (%.9g vs %.9g, tol %g)", \
        #a, #b, a_, b_, (double)(tol)); } while (0)
#endif
