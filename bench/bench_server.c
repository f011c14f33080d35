/* bench_server: load figures of `sdflow serve` (docs/benchmarks.md). Not a test: it prints
 * figures. Starts its own servers on loopback, with a tiny random checkpoint:
 *   1. requests/s of GET /object_info and GET /history (a history of --history prompts), with
 *      --clients keep-alive connections for --seconds each (wrk gives the peer figure when
 *      installed: the command is in docs/benchmarks.md);
 *   2. --ws-clients WebSocket clients following one queue of --ws-prompts prompts: messages
 *      delivered per second, and whether every client saw every progress message;
 *   3. jobs per minute of --jobs tiny-model prompts (4 steps, 64x64) with 1, 2 and 3
 *      `sdflow worker` processes on a redis-server (skipped without redis-server).
 *
 *   bench_server [--seconds S] [--clients N] [--ws-clients N] [--jobs N] [--history N]
 * The sdflow binary and sdflow_mkckpt are taken from this program's directory. */
#include "support/child_proc.h"
#include <arpa/inet.h>
#include <civetweb.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char bin_dir[PATH_MAX], scratch[PATH_MAX];
static int seconds = 5, clients = 16, ws_clients = 100, jobs = 24, history_n = 50;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- A server process. ---- */

typedef struct proc {
    pid_t pid;
    int port;
} proc;

static bool serve(proc *p, const char *name, const char *const *extra)
{
    char sdflow[PATH_MAX + 8], db[PATH_MAX + 64], log[PATH_MAX + 64], models[PATH_MAX + 8], out[PATH_MAX + 8];
    snprintf(sdflow, sizeof sdflow, "%s/sdflow", bin_dir);
    snprintf(db, sizeof db, "%s/%s.db", scratch, name);
    snprintf(log, sizeof log, "%s/%s.log", scratch, name);
    snprintf(models, sizeof models, "%s/models", scratch);
    snprintf(out, sizeof out, "%s/out", scratch);
    const char *argv[32] = {sdflow, "serve", "--port", "0", "--queue-db", db, "--models-dir", models, "--output-dir",
                            out, "--no-cache", "--threads", "160"};
    size_t n = 13;
    for (; extra && *extra && n < 31; extra++)
        argv[n++] = *extra;
    char line[1024];
    p->pid = test_spawn(argv, log);
    const char *colon;
    p->port = test_wait_line(p->pid, log, "listening on http://127.0.0.1:", line, sizeof line, 120) &&
                      (colon = strrchr(line, ':'))
                  ? atoi(colon + 1)
                  : 0;
    if (!p->port)
        fprintf(stderr, "bench_server: %s did not start (%s)\n", name, log);
    return p->port > 0;
}

/* ---- A minimal HTTP/1.1 keep-alive client. ---- */

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends a request and reads the whole reply; returns its body length, -1 on failure. buf
 * grows as needed. */
static long request(int fd, int port, const char *method, const char *path, const char *body, char **buf, size_t *cap)
{
    char head[512];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %zu\r\n\r\n", method,
                     path, port, body ? strlen(body) : 0);
    if (write(fd, head, (size_t)n) != n || (body && write(fd, body, strlen(body)) != (ssize_t)strlen(body)))
        return -1;
    size_t len = 0;
    char *end = NULL;
    while (!end) {
        if (len + 4096 > *cap && !(*buf = realloc(*buf, *cap = (*cap + 4096) * 2)))
            return -1;
        ssize_t r = read(fd, *buf + len, *cap - len - 1);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        (*buf)[len] = '\0';
        end = strstr(*buf, "\r\n\r\n");
    }
    const char *cl = strstr(*buf, "Content-Length: ");
    long want = cl ? atol(cl + 16) : 0;
    size_t have = len - (size_t)(end + 4 - *buf), hlen = (size_t)(end + 4 - *buf);
    if (hlen + (size_t)want + 1 > *cap && !(*buf = realloc(*buf, *cap = hlen + (size_t)want + 1)))
        return -1;
    while ((long)have < want) {
        ssize_t r = read(fd, *buf + hlen + have, (size_t)want - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return want;
}

typedef struct load {
    int port;
    const char *path;
    double until;
    long requests, bytes, errors;
} load;

static void *load_main(void *arg)
{
    load *l = arg;
    char *buf = NULL;
    size_t cap = 0;
    int fd = connect_port(l->port);
    while (fd >= 0 && now() < l->until) {
        long n = request(fd, l->port, "GET", l->path, NULL, &buf, &cap);
        if (n < 0) {
            l->errors++;
            close(fd);
            fd = connect_port(l->port);
            continue;
        }
        l->requests++;
        l->bytes += n;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static void bench_http(int port, const char *path)
{
    pthread_t t[256];
    load l[256];
    int n = clients < 256 ? clients : 256;
    double start = now();
    for (int i = 0; i < n; i++) {
        l[i] = (load){.port = port, .path = path, .until = start + seconds};
        pthread_create(&t[i], NULL, load_main, &l[i]);
    }
    long req = 0, bytes = 0, err = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        req += l[i].requests;
        bytes += l[i].bytes;
        err += l[i].errors;
    }
    double s = now() - start;
    printf("GET %-13s %3d connections %5.1f s: %8.0f requests/s, %7.1f MB/s, mean latency %6.2f ms, %ld errors\n",
           path, n, s, req / s, bytes / s / 1e6, req ? 1e3 * s * n / req : 0.0, err);
}

/* A prompt of the default graph on the tiny checkpoint, 64x64. */
static char *prompt_body(int seed, int steps)
{
    size_t cap = 2048;
    char *s = malloc(cap);
    if (s && snprintf(s, cap, "{\"prompt\": {\"3\": {\"class_type\": \"KSampler\", \"inputs\": {\"seed\": %d, \"steps\": %d, "
                     "\"cfg\": 8, \"sampler_name\": \"euler\", \"scheduler\": \"normal\", \"denoise\": 1, \"model\": "
                     "[\"4\", 0], \"positive\": [\"6\", 0], \"negative\": [\"7\", 0], \"latent_image\": [\"5\", 0]}}, "
                     "\"4\": {\"class_type\": \"CheckpointLoaderSimple\", \"inputs\": {\"ckpt_name\": "
                     "\"tiny.safetensors\"}}, \"5\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": {\"width\": "
                     "64, \"height\": 64, \"batch_size\": 1}}, \"6\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": "
                     "{\"text\": \"a cat\", \"clip\": [\"4\", 1]}}, \"7\": {\"class_type\": \"CLIPTextEncode\", "
                     "\"inputs\": {\"text\": \"x\", \"clip\": [\"4\", 1]}}, \"8\": {\"class_type\": \"VAEDecode\", "
                     "\"inputs\": {\"samples\": [\"3\", 0], \"vae\": [\"4\", 2]}}, \"9\": {\"class_type\": "
                     "\"SaveImage\", \"inputs\": {\"filename_prefix\": \"bench\", \"images\": [\"8\", 0]}}}}",
                 seed, steps) >= (int)cap) {
        free(s);
        return NULL;
    }
    return s;
}

/* Queues n prompts; waits until /prompt says none remain (at most 30 minutes). */
static double run_prompts(int port, int n, int steps)
{
    char *buf = NULL;
    size_t cap = 0;
    int fd = connect_port(port);
    double start = now();
    for (int i = 0; i < n && fd >= 0; i++) {
        char *body = prompt_body(i + 1, steps);
        if (request(fd, port, "POST", "/prompt", body, &buf, &cap) < 0)
            fprintf(stderr, "bench_server: POST /prompt failed\n");
        free(body);
    }
    for (double t0 = now(); fd >= 0 && now() - t0 < 1800; usleep(50000))
        if (request(fd, port, "GET", "/prompt", NULL, &buf, &cap) >= 0 && strstr(buf, "\"queue_remaining\":0"))
            break;
    if (fd >= 0)
        close(fd);
    free(buf);
    return now() - start;
}

/* ---- WebSocket clients. ---- */

typedef struct wsc {
    struct mg_connection *conn;
    long messages, progress, success;
} wsc;

static pthread_mutex_t ws_lock = PTHREAD_MUTEX_INITIALIZER;

static int ws_data(struct mg_connection *conn, int flags, char *data, size_t len, void *user)
{
    wsc *w = user;
    pthread_mutex_lock(&ws_lock);
    w->messages++;
    if ((flags & 0xf) == MG_WEBSOCKET_OPCODE_TEXT) {
        /* The messages start {"type":"...": compare the prefix. */
        if (len > 17 && !memcmp(data, "{\"type\":\"progress\"", 18))
            w->progress++;
        else if (len > 27 && !memcmp(data, "{\"type\":\"execution_success\"", 27))
            w->success++;
    }
    pthread_mutex_unlock(&ws_lock);
    return 1;
}

static void bench_ws(int port, int prompts, int steps)
{
    wsc *w = calloc((size_t)ws_clients, sizeof *w);
    int open = 0;
    char err[256], path[64];
    for (int i = 0; i < ws_clients; i++) {
        snprintf(path, sizeof path, "/ws?clientId=bench%d", i);
        w[i].conn = mg_connect_websocket_client("127.0.0.1", port, 0, err, sizeof err, path, NULL, ws_data, NULL, &w[i]);
        open += w[i].conn != NULL;
    }
    double s = run_prompts(port, prompts, steps);
    usleep(1000000); /* the last messages after the queue emptied */
    long msgs = 0, full = 0;
    pthread_mutex_lock(&ws_lock);
    for (int i = 0; i < ws_clients; i++) {
        msgs += w[i].messages;
        full += w[i].progress >= (long)prompts * steps && w[i].success == prompts;
    }
    pthread_mutex_unlock(&ws_lock);
    printf("WebSocket: %d of %d clients connected; %d prompts of %d steps in %.1f s; %ld messages delivered "
           "(%.0f/s); %ld clients saw every progress and execution_success message\n",
           open, ws_clients, prompts, steps, s, msgs, msgs / s, full);
    for (int i = 0; i < ws_clients; i++)
        if (w[i].conn)
            mg_close_connection(w[i].conn);
    free(w);
}

/* ---- Workers on Redis. ---- */

static void bench_workers(void)
{
    char sock[PATH_MAX + 16], url[PATH_MAX + 32], rlog[PATH_MAX + 16];
    snprintf(sock, sizeof sock, "%s/redis.sock", scratch);
    snprintf(url, sizeof url, "unix:%s", sock);
    snprintf(rlog, sizeof rlog, "%s/redis.log", scratch);
    if (access("/usr/bin/redis-server", X_OK) != 0) {
        printf("workers: skipped (no /usr/bin/redis-server)\n");
        return;
    }
    for (int workers = 1; workers <= 3; workers++) {
        char dir[PATH_MAX + 16], name[32], sdflow[PATH_MAX + 8], models[PATH_MAX + 8], out[PATH_MAX + 8];
        snprintf(dir, sizeof dir, "%s/redis%d", scratch, workers);
        snprintf(models, sizeof models, "%s/models", scratch);
        snprintf(out, sizeof out, "%s/out", scratch);
        snprintf(sdflow, sizeof sdflow, "%s/sdflow", bin_dir);
        unlink(sock);
        const char *rargv[] = {"/usr/bin/redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                               "--appendonly", "no", NULL};
        pid_t redis = test_spawn(rargv, rlog), wpid[3];
        for (int i = 0; i < 300 && access(sock, F_OK) != 0; i++)
            usleep(20000);
        for (int i = 0; i < workers; i++) {
            char wlog[PATH_MAX + 32];
            snprintf(name, sizeof name, "w%d", i + 1);
            snprintf(wlog, sizeof wlog, "%s/worker%d-%d.log", scratch, workers, i + 1);
            const char *wargv[] = {sdflow, "worker", "--queue", url, "--name", name, "--models-dir", models,
                                   "--output-dir", out, "--no-cache", NULL};
            wpid[i] = test_spawn(wargv, wlog);
        }
        proc p;
        snprintf(name, sizeof name, "serve-redis%d", workers);
        const char *extra[] = {"--queue", url, NULL};
        if (serve(&p, name, extra)) {
            run_prompts(p.port, workers, 4); /* each worker loads the model once, untimed */
            double s = run_prompts(p.port, jobs, 4);
            printf("workers: %d, %d jobs (4 steps, 64x64) in %.1f s: %.1f jobs/min\n", workers, jobs, s, jobs * 60.0 / s);
            test_stop(p.pid, SIGTERM);
        }
        for (int i = 0; i < workers; i++)
            test_stop(wpid[i], SIGTERM);
        test_stop(redis, SIGTERM);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--seconds"))
            seconds = v;
        else if (!strcmp(argv[i], "--clients"))
            clients = v;
        else if (!strcmp(argv[i], "--ws-clients"))
            ws_clients = v;
        else if (!strcmp(argv[i], "--jobs"))
            jobs = v;
        else if (!strcmp(argv[i], "--history"))
            history_n = v;
        else {
            fprintf(stderr, "usage: bench_server [--seconds S] [--clients N] [--ws-clients N] [--jobs N] [--history N]\n");
            return 2;
        }
    }
    char self[PATH_MAX];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(bin_dir, sizeof bin_dir, "%s", dirname(self));
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/bench_server-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch))
        return 1;
    char cmd[5 * PATH_MAX + 512];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/models/checkpoints' '%s/out' && '%s/sdflow_mkckpt' --preset tiny "
                              "'%s/models/checkpoints/tiny.safetensors' >/dev/null", scratch, scratch, bin_dir, scratch);
    if (system(cmd) != 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    mg_init_library(0);
    proc p;
    if (serve(&p, "serve", NULL)) {
        double s = run_prompts(p.port, history_n, 1);
        printf("history: %d prompts (1 step) in %.1f s\n", history_n, s);
        bench_http(p.port, "/object_info");
        bench_http(p.port, "/history");
        bench_ws(p.port, 4, 10);
        printf("server on port %d for wrk: ", p.port);
        fflush(stdout);
        snprintf(cmd, sizeof cmd, "command -v wrk >/dev/null && for path in /object_info /history; do "
                                  "wrk -t2 -c%d -d%ds http://127.0.0.1:%d$path | grep -E 'Requests/sec' | "
                                  "sed \"s|^|wrk GET $path: |\"; done || echo 'no wrk'", clients, seconds, p.port);
        printf("\n");
        if (system(cmd) != 0)
            printf("wrk failed\n");
        test_stop(p.pid, SIGTERM);
    }
    bench_workers();
    mg_exit_library();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    return system(cmd) == 0 ? 0 : 1;
}
