/* sdflow serve: the ComfyUI-compatible HTTP and WebSocket API (server/, docs/server.md). Runs
 * until SIGINT or SIGTERM; a prompt running then stays queued for the next start. */
#include "cli/cli.h"
#include "cli/options.h"
#include "server/redis.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sdflow serve [options]\n"
            "\n"
            "Serves ComfyUI's HTTP API (POST /prompt, /queue, /history, /view, /upload/image,\n"
            "/object_info, ...; also under /api) and its WebSocket /ws, running queued prompts one at\n"
            "a time in one context so loaded models stay loaded. The queue and history live in an\n"
            "SQLite database: a prompt queued before a crash runs after the restart.\n"
            "\n"
            "%s"
            "  --listen ADDR        address to bind (default 127.0.0.1; use a --token beyond loopback)\n"
            "  --port N             port (default 8188; 0 picks a free one)\n"
            "  --queue-db PATH      queue and history database (default $SDFLOW_QUEUE_DB, else\n"
            "                       $XDG_STATE_HOME/sdflow/queue.db, else ~/.local/state/sdflow/queue.db)\n"
            "  --token TOKEN        require \"Authorization: Bearer TOKEN\" (default $SDFLOW_SERVER_TOKEN)\n"
            "  --max-upload SIZE    largest request body of /upload (default 32M)\n"
            "  --max-upload-pixels N  largest uploaded image in pixels (default 67108864)\n"
            "  --threads N          HTTP threads; each WebSocket client holds one (default 64)\n"
            "  --queue URL          hand prompts to `sdflow worker` processes through Redis Streams:\n"
            "                       redis://HOST[:PORT] or unix:PATH (docs/server.md)\n"
            "  --front-end DIR      also serve ComfyUI's web front end from DIR (the static/ folder\n"
            "                       of the comfyui-frontend-package wheel; docs/server.md)\n"
            "  --user-dir DIR       settings and saved workflows of the front end (default\n"
            "                       $SDFLOW_USER_DIR, else user/ beside the queue database)\n"
            "%s"
            "  -h, --help           show this help\n"
            "\n"
            "Prints \"sdflow serve: listening on http://ADDR:PORT\" on stdout once it accepts requests.\n",
            cli_opts_help, cli_engine_opts_help);
}

/* The default queue database path (malloc'd), its directory created. */
static char *default_db(void)
{
    const char *env = getenv("SDFLOW_QUEUE_DB");
    if (env && *env)
        return strdup(env);
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (state && *state)
        snprintf(dir, sizeof dir, "%s/sdflow", state);
    else
        snprintf(dir, sizeof dir, "%s/.local/state/sdflow", home && *home ? home : ".");
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0700);
            *p = '/';
        }
    mkdir(dir, 0700);
    size_t n = strlen(dir) + 10;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/queue.db", dir);
    return path;
}

/* The front end's user directory: $SDFLOW_USER_DIR, else user/ beside the queue database
 * (malloc'd). */
static char *default_user_dir(const char *db)
{
    const char *env = getenv("SDFLOW_USER_DIR");
    if (env && *env)
        return strdup(env);
    const char *slash = strrchr(db, '/');
    size_t n = slash ? (size_t)(slash - db) + 1 : 0;
    char *dir = malloc(n + 5);
    if (dir)
        snprintf(dir, n + 5, "%.*suser", (int)n, db);
    return dir;
}

/* True when dir is a directory holding index.html (a built front end). */
static bool front_end_ok(const char *dir)
{
    char index[4096];
    struct stat st;
    return (size_t)snprintf(index, sizeof index, "%s/index.html", dir) < sizeof index && stat(index, &st) == 0 &&
           S_ISREG(st.st_mode);
}

static bool parse_int(const char *text, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool is_loopback(const char *addr)
{
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "localhost");
}

int cmd_serve(int argc, char **argv)
{
    cli_engine_opts o = {0};
    sd_server_config cfg = {.listen = "127.0.0.1", .port = 8188, .max_upload = 32LL << 20,
                            .max_upload_pixels = 67108864, .threads = 64, .configure = cli_engine_opts_apply,
                            .configure_user = &o};
    cfg.token = getenv("SDFLOW_SERVER_TOKEN");
    if (cfg.token && !*cfg.token)
        cfg.token = NULL;
    char *db = NULL, *user_dir = NULL;
    int rc = EXIT_OK;
    for (int i = 1; i < argc; i++) {
        const char *v;
        long long n;
        int r;
        if ((r = cli_engine_opts_parse(&o, "serve", argc, argv, &i)) != 0) {
            if (r < 0)
                goto usage;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--listen", &v)) != 0) {
            if (r < 0)
                goto usage;
            cfg.listen = v;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--port", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!parse_int(v, 0, 65535, &n)) {
                rc = cli_usage_error("serve", "--port must be 0 to 65535, not '%s'", v);
                goto done;
            }
            cfg.port = (int)n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--queue-db", &v)) != 0) {
            if (r < 0)
                goto usage;
            free(db);
            db = strdup(v);
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--token", &v)) != 0) {
            if (r < 0)
                goto usage;
            cfg.token = *v ? v : NULL;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--max-upload", &v)) != 0) {
            int64_t size;
            if (r < 0)
                goto usage;
            if (sd_parse_size(v, &size) || size < 1024) {
                rc = cli_usage_error("serve", "--max-upload must be a size of at least 1K, not '%s'", v);
                goto done;
            }
            cfg.max_upload = size;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--max-upload-pixels", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!parse_int(v, 1, 1LL << 40, &n)) {
                rc = cli_usage_error("serve", "--max-upload-pixels must be a positive integer, not '%s'", v);
                goto done;
            }
            cfg.max_upload_pixels = n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!parse_int(v, 4, 1024, &n)) {
                rc = cli_usage_error("serve", "--threads must be 4 to 1024, not '%s'", v);
                goto done;
            }
            cfg.threads = (int)n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--queue", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!sd_redis_url_ok(v)) {
                rc = cli_usage_error("serve", "--queue must be redis://HOST[:PORT] or unix:PATH, not '%s'", v);
                goto done;
            }
            cfg.queue_url = v;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--front-end", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!front_end_ok(v)) {
                rc = cli_usage_error("serve", "--front-end '%s' is not a directory with an index.html", v);
                goto done;
            }
            cfg.front_end = v;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--user-dir", &v)) != 0) {
            if (r < 0)
                goto usage;
            free(user_dir);
            user_dir = strdup(v);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            goto done;
        } else if (cli_is_option(argv[i])) {
            rc = cli_usage_error("serve", "unknown option '%s'", argv[i]);
            goto done;
        } else {
            rc = cli_usage_error("serve", "unexpected argument '%s'", argv[i]);
            goto done;
        }
    }
    if (o.no_cache && o.cache) {
        rc = cli_usage_error("serve", "--cache and --no-cache exclude each other");
        goto done;
    }
    if (!db && !(db = default_db())) {
        rc = cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    cfg.db_path = db;
    if (!user_dir && !(user_dir = default_user_dir(db))) {
        rc = cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    cfg.user_dir = user_dir;
    if (!is_loopback(cfg.listen) && !cfg.token)
        fprintf(stderr, "sdflow serve: warning: listening on %s without --token: anyone who can reach it "
                        "can run prompts and read outputs\n", cfg.listen);

    /* SIGINT/SIGTERM are taken by sigwait below; every thread started from here blocks them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    sd_server *srv;
    char err[512];
    sd_status st = sd_server_start(&cfg, &srv, err, sizeof err);
    if (st) {
        rc = cli_fail(NULL, st, err);
        goto done;
    }
    printf("sdflow serve: listening on http://%s%s%s:%d\n", strchr(cfg.listen, ':') ? "[" : "", cfg.listen,
           strchr(cfg.listen, ':') ? "]" : "", sd_server_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "sdflow serve: stopping (signal %d)\n", sig);
    sd_server_stop(srv);
    goto done;
usage:
    rc = EXIT_USAGE;
done:
    free(db);
    free(user_dir);
    cli_opts_free(&o.common);
    return rc;
}
