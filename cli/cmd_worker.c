/* sdflow worker: runs the prompts `sdflow serve --queue URL` hands out through Redis Streams
 * (server/redis.h, docs/server.md). Runs until SIGINT or SIGTERM; a job running then is taken
 * over by another worker. */
#include "cli/cli.h"
#include "cli/options.h"
#include "server/redis.h"
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sdflow worker --queue URL [options]\n"
            "\n"
            "Runs prompts queued by `sdflow serve --queue URL`, taken from the Redis stream sdflow:jobs\n"
            "in the consumer group \"sdflow\"; a job whose worker died is taken over once it has\n"
            "been idle for the claim time. Output files go to --output-dir, which the server's /view\n"
            "must reach (a shared directory).\n"
            "\n"
            "  --queue URL          redis://HOST[:PORT] or unix:PATH (required)\n"
            "  --name NAME          consumer name, unique among the workers (default HOST-PID)\n"
            "  --claim-idle MS      take over a job idle this long (default 30000)\n"
            "%s%s"
            "  -h, --help           show this help\n",
            cli_opts_help, cli_engine_opts_help);
}

int cmd_worker(int argc, char **argv)
{
    cli_engine_opts o = {0};
    char name[128];
    char host[64] = "worker";
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "%s-%ld", host, (long)getpid());
    sd_worker_config cfg = {.name = name, .claim_idle_ms = 30000, .configure = cli_engine_opts_apply,
                            .configure_user = &o};
    int rc = EXIT_OK;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if ((r = cli_engine_opts_parse(&o, "worker", argc, argv, &i)) != 0) {
            if (r < 0)
                goto usage;
        } else if ((r = cli_opt_value("worker", argc, argv, &i, "--queue", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!sd_redis_url_ok(v)) {
                rc = cli_usage_error("worker", "--queue must be redis://HOST[:PORT] or unix:PATH, not '%s'", v);
                goto done;
            }
            cfg.queue_url = v;
        } else if ((r = cli_opt_value("worker", argc, argv, &i, "--name", &v)) != 0) {
            if (r < 0)
                goto usage;
            if (!*v || strchr(v, ' ')) {
                rc = cli_usage_error("worker", "--name must be a non-empty word");
                goto done;
            }
            snprintf(name, sizeof name, "%s", v);
        } else if ((r = cli_opt_value("worker", argc, argv, &i, "--claim-idle", &v)) != 0) {
            if (r < 0)
                goto usage;
            char *end;
            errno = 0;
            long ms = strtol(v, &end, 10);
            if (errno || *end || ms < 100 || ms > 86400000) {
                rc = cli_usage_error("worker", "--claim-idle must be 100 to 86400000 ms, not '%s'", v);
                goto done;
            }
            cfg.claim_idle_ms = (int)ms;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            goto done;
        } else {
            rc = cli_usage_error("worker", cli_is_option(argv[i]) ? "unknown option '%s'" : "unexpected argument '%s'",
                                 argv[i]);
            goto done;
        }
    }
    if (!cfg.queue_url) {
        rc = cli_usage_error("worker", "--queue URL is required");
        goto done;
    }
    if (o.no_cache && o.cache) {
        rc = cli_usage_error("worker", "--cache and --no-cache exclude each other");
        goto done;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    char err[512] = "";
    sd_status st = sd_worker_run(&cfg, &stop_requested, err, sizeof err);
    if (st)
        rc = cli_fail(NULL, st, err);
    goto done;
usage:
    rc = EXIT_USAGE;
done:
    cli_opts_free(&o.common);
    return rc;
}
