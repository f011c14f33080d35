/* `sdflow run` stopped by SIGINT or SIGTERM in the middle of a run: exit 130, every file left
 * in the output directory is a complete PNG, no temporary files, the cache verifies clean and
 * the next run resumes from it. The run is made slow with real work: a large noise image saved
 * by many SaveImage nodes. A SIGTERM just after the run, while the written files are listed,
 * leaves no PNG unlisted. */
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

/* Fills the pipe's buffer so that the next write to it blocks. */
static void fill_pipe(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    char block[4096] = {0};
    while (write(fd, block, sizeof block) > 0)
        ;
    fcntl(fd, F_SETFL, flags);
}

/* Whether the process sleeps writing to a pipe (false when /proc does not say). */
static bool blocked_in_pipe_write(pid_t pid)
{
    char path[64], wchan[64] = "";
    snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(wchan, sizeof wchan, f))
            wchan[0] = '\0';
        fclose(f);
    }
    return strstr(wchan, "pipe_write") != NULL;
}

/* The run has written its PNG and is listing it on a stdout that does not take it yet (a full
 * pipe) when SIGTERM comes: the PNG must be listed, not left behind by a process killed with 143. */
static void test_sigterm_after_run(void)
{
    char *dir = test_path(test_scratch_dir(), "after");
    mkdir(dir, 0777);
    char *xml = test_path(dir, "one.xml"), *png = test_path(dir, "one.png"), *out = test_path(dir, "out");
    char *want = test_path(out, "one_00001_.png");
    sd_context *ctx;
    sd_context_new(&ctx);
    float px[3] = {0.5f, 0.25f, 1.0f};
    sd_image img = {.width = 1, .height = 1, .channels = 3, .data = px};
    CHECK_EQ_INT(sd_png_write(ctx, png, &img, NULL, 0, 1), SD_OK);
    sd_context_free(ctx);
    FILE *f = fopen(xml, "w");
    fprintf(f, "<workflow version=\"1\">\n  <node id=\"load\" type=\"LoadImage\"><input name=\"image\">%s</input></node>\n"
               "  <node id=\"save\" type=\"SaveImage\"><input name=\"images\" from=\"load\" output=\"IMAGE\"/>"
               "<input name=\"filename_prefix\">one</input></node>\n</workflow>\n",
            png);
    fclose(f);
    int fds[2];
    if (pipe(fds) != 0)
        abort();
    fill_pipe(fds[1]);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(bin(), bin(), "run", xml, "--output-dir", out, "--no-cache", "--quiet", "--allow-absolute-paths",
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    /* Wait for the PNG, then for the write of its name to block (or a while, without /proc). */
    for (int i = 0; i < 3000 && !test_file_exists(want); i++)
        usleep(10000);
    CHECK_MSG(test_file_exists(want), "no %s", want);
    for (int i = 0; i < 100 && !blocked_in_pipe_write(pid); i++)
        usleep(10000);
    usleep(100000);
    kill(pid, SIGTERM);
    /* Drain the pipe: the filler, then what sdflow printed. */
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t n;
    while (len < cap && (n = read(fds[0], buf + len, cap - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    const char *text = buf; /* after the filler's zero bytes */
    while (text < buf + len && !*text)
        text++;
    const char *listed = strstr(text, want);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d (signal %d)",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    CHECK_MSG(listed != NULL, "%s written but not listed", want);
    free(buf);
    free(want);
    free(out);
    free(png);
    free(xml);
    free(dir);
}

int main(void)
{
    RUN(test_sigint);
    RUN(test_sigterm);
    RUN(test_sigterm_after_run);
    return test_summary("test_run_interrupt");
}
