/* `sdflow run` stopped by SIGINT or SIGTERM in the middle of a run: exit 130, every file left
 * in the output directory is a complete PNG, no temporary files, the cache verifies clean and
 * the next run resumes from it. The run is made slow with real work: a large noise image saved
 * by many SaveImage nodes. */
#include "test.h"
#include "core/png.h"
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { SIDE = 512, N_SAVES = 6 };

static const char *bin(void)
{
    const char *b = getenv("SDFLOW_BIN");
    return b ? b : "sdflow";
}

/* A noise PNG (incompressible, so saving it takes a while) and a workflow saving it N times. */
static char *make_workflow(const char *dir)
{
    sd_context *ctx;
    sd_context_new(&ctx);
    sd_image img = {.width = SIDE, .height = SIDE, .channels = 3};
    img.data = malloc((size_t)SIDE * SIDE * 3 * sizeof(float));
    uint32_t x = 12345;
    for (size_t i = 0; i < (size_t)SIDE * SIDE * 3; i++) {
        x = x * 1664525u + 1013904223u;
        img.data[i] = (float)(x >> 24) / 255.0f;
    }
    char *png = test_path(dir, "noise.png");
    CHECK_EQ_INT(sd_png_write(ctx, png, &img, NULL, 0, 1), SD_OK);
    free(img.data);
    sd_context_free(ctx);
    char *xml = test_path(dir, "slow.xml");
    FILE *f = fopen(xml, "w");
    fprintf(f, "<?xml version=\"1.0\"?>\n<workflow version=\"1\">\n"
               "  <node id=\"load\" type=\"LoadImage\"><input name=\"image\">%s</input></node>\n", png);
    for (int i = 1; i <= N_SAVES; i++)
        fprintf(f, "  <node id=\"save%d\" type=\"SaveImage\"><input name=\"images\" from=\"load\" output=\"IMAGE\"/>"
                   "<input name=\"filename_prefix\">s%02d</input></node>\n", i, i);
    fprintf(f, "</workflow>\n");
    fclose(f);
    free(png);
    return xml;
}

/* Runs sdflow run and sends sig once stderr shows `trigger`; returns the exit status and the
 * captured stderr (malloc'd). */
static int run_and_signal(const char *xml, const char *out_dir, const char *cache, const char *trigger,
                          int sig, char **err_out)
{
    int fds[2];
    if (pipe(fds) != 0)
        abort();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        execl(bin(), bin(), "run", xml, "--output-dir", out_dir, "--cache", cache, "--allow-absolute-paths",
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t cap = 1 << 16, len = 0;
    char *buf = calloc(cap, 1);
    bool sent = false;
    ssize_t n;
    while ((n = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        buf[len] = '\0';
        if (trigger && !sent && strstr(buf, trigger)) {
            kill(pid, sig);
            sent = true;
        }
        if (len + 1 >= cap)
            break;
    }
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(!trigger || sent, "never saw '%s' in: %s", trigger, buf);
    *err_out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Counts complete PNGs in dir; any other entry (a temp file) or an unreadable PNG fails. */
static int complete_pngs(const char *dir)
{
    DIR *d = opendir(dir);
    int count = 0;
    sd_context *ctx;
    sd_context_new(&ctx);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        size_t l = strlen(e->d_name);
        CHECK_MSG(l > 4 && strcmp(e->d_name + l - 4, ".png") == 0, "stray file %s", e->d_name);
        char *p = test_path(dir, e->d_name);
        sd_image img = {0};
        CHECK_MSG(sd_png_read(ctx, p, NULL, &img) == SD_OK, "incomplete PNG %s: %s", p, sd_context_errmsg(ctx));
        CHECK(img.width == SIDE && img.height == SIDE);
        sd_image_clear(&img);
        free(p);
        count++;
    }
    if (d)
        closedir(d);
    sd_context_free(ctx);
    return count;
}

static void check_cache_clean(const char *cache)
{
    sd_context *ctx;
    sd_context_new(&ctx);
    sd_context_set_cache_path(ctx, cache);
    int64_t bad = -1;
    CHECK_EQ_INT(sd_cache_verify(ctx, &bad), SD_OK);
    CHECK_EQ_INT(bad, 0);
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 1); /* LoadImage's outputs; SaveImage is never stored */
    sd_context_free(ctx);
}

static void interrupted_run(int sig, const char *name)
{
    char *dir = test_path(test_scratch_dir(), name);
    mkdir(dir, 0777);
    char *xml = make_workflow(dir);
    char *out = test_path(dir, "out");
    char *cache = test_path(dir, "cache.db");
    char *err = NULL;
    int code = run_and_signal(xml, out, cache, "save2 (SaveImage): running", sig, &err);
    CHECK_EQ_INT(code, 130);
    CHECK_STR_CONTAINS(err, "sdflow: error: interrupted before node 'save");
    CHECK(strstr(err, "save6 (SaveImage): done") == NULL);
    int files = complete_pngs(out);
    CHECK_MSG(files >= 1 && files < N_SAVES, "%d files after the interrupt", files);
    check_cache_clean(cache);
    free(err);
    /* The next run loads the image from the cache and finishes. */
    code = run_and_signal(xml, out, cache, NULL, 0, &err);
    CHECK_EQ_INT(code, 0);
    CHECK_STR_CONTAINS(err, "load (LoadImage): cached");
    CHECK_EQ_INT(complete_pngs(out), files + N_SAVES);
    free(err);
    free(cache);
    free(out);
    free(xml);
    free(dir);
}

static void test_sigint(void)
{
    interrupted_run(SIGINT, "sigint");
}

static void test_sigterm(void)
{
    interrupted_run(SIGTERM, "sigterm");
}

int main(void)
{
    RUN(test_sigint);
    RUN(test_sigterm);
    return test_summary("test_run_interrupt");
}
