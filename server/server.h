/* sdflow serve: a ComfyUI-compatible HTTP and WebSocket API over the public sdflow API
 * (docs/server.md). Front end: cli/cmd_serve.c. */
#ifndef SD_SERVER_H
#define SD_SERVER_H
#include "sdflow/sdflow.h"

/* Applies the server's settings (directories, cache, device) to a new context; returns SD_OK
 * or a failure whose message is on ctx. Called for the executor's context and for each
 * validation of a submitted prompt. */
typedef sd_status (*sd_server_configure_fn)(sd_context *ctx, void *user);

typedef struct sd_server_config {
    const char *listen;        /* address to bind, e.g. "127.0.0.1" */
    int port;                  /* 0: any free port (sd_server_port tells which) */
    const char *db_path;       /* the queue and history database (SQLite) */
    const char *token;         /* NULL: no authentication; else "Authorization: Bearer TOKEN" */
    long long max_upload;      /* bytes per request body of /upload (and JSON bodies) */
    long long max_upload_pixels;
    int threads;               /* HTTP worker threads (each WebSocket client holds one) */
    const char *queue_url;     /* NULL: run prompts here; else Redis (server/redis.h) */
    const char *front_end;     /* NULL: API only; else the directory of ComfyUI's web front end */
    const char *user_dir;      /* settings and userdata (saved workflows): <user_dir>/default/ */
    sd_server_configure_fn configure;
    void *configure_user;
} sd_server_config;

typedef struct sd_server sd_server;

/* Opens the database (re-queueing prompts that were running when a previous server died),
 * starts the executor thread and the HTTP listener. On failure returns the status and writes a
 * one-line message into err. */
sd_status sd_server_start(const sd_server_config *config, sd_server **out, char *err, size_t err_size);
/* The port listened on. */
int sd_server_port(const sd_server *server);
/* Stops listening, interrupts a running prompt, waits for the executor, closes everything.
 * Pending prompts stay in the database for the next start. */
void sd_server_stop(sd_server *server);

#endif
