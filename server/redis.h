/* Scale-out on Redis Streams (docs/server.md#workers-on-redis-streams). The serving process
 * XADDs each queued prompt to the stream sdflow:jobs; `sdflow worker` processes read it in the
 * consumer group "sdflow" (XREADGROUP), keep their job claimed while running it (XCLAIM as a
 * heartbeat), send the execution messages and finally the history entry to the stream
 * sdflow:events, then XACK. A job whose worker died is taken over by another worker once idle
 * for the claim time (XAUTOCLAIM). The serving process reads sdflow:events, forwards messages to
 * the prompt's WebSocket client and stores the first history entry of each prompt, so a job
 * run twice is still in the history once. */
#ifndef SD_SERVER_REDIS_H
#define SD_SERVER_REDIS_H
#include "server/server.h"
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdbool.h>

#define SD_REDIS_JOBS "sdflow:jobs"
#define SD_REDIS_EVENTS "sdflow:events"
#define SD_REDIS_GROUP "sdflow"
/* /interrupt and /free reach the workers through keys they poll: SET sdflow:interrupt:<id>
 * (one prompt), INCR sdflow:interrupt-epoch (whatever runs now), INCR sdflow:free-epoch (drop
 * the loaded models before the next job). */
#define SD_REDIS_INTERRUPT "sdflow:interrupt:"
#define SD_REDIS_INTERRUPT_EPOCH "sdflow:interrupt-epoch"
#define SD_REDIS_FREE_EPOCH "sdflow:free-epoch"
/* A job runs to its history once: the worker sends the history and sets sdflow:done:<id> in one
 * transaction, and a later delivery of a job so marked is only acknowledged. While it runs, the
 * files it writes are listed in sdflow:files:<id>; a retry (the earlier attempt died before its
 * history was sent, so nothing refers to them) removes them first. */
#define SD_REDIS_DONE "sdflow:done:"
#define SD_REDIS_FILES "sdflow:files:"

/* Connects to "redis://HOST[:PORT]" (default port 6379) or "unix:PATH". NULL with a message in
 * err when the URL is malformed or the server cannot be reached. */
redisContext *sd_redis_connect(const char *url, char *err, size_t err_size);
/* True when url is a queue URL sd_redis_connect accepts (syntax only). */
bool sd_redis_url_ok(const char *url);

typedef struct sd_worker_config {
    const char *queue_url;
    const char *name;       /* consumer name, unique among the workers */
    int claim_idle_ms;      /* a job idle this long (its worker died) is taken over */
    sd_server_configure_fn configure;
    void *configure_user;
} sd_worker_config;

/* Runs jobs until *stop becomes non-zero (a signal handler sets it); a job running then is left
 * to another worker. Returns SD_OK, or the status of a failure to start with its message in err. */
sd_status sd_worker_run(const sd_worker_config *config, volatile sig_atomic_t *stop, char *err, size_t err_size);

#endif
