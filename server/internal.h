/* State shared by the server's parts: routes (routes_*.c), the WebSocket hub (ws.c), the
 * queue and history store (store.c) and the executor thread (executor.c). */
#ifndef SD_SERVER_INTERNAL_H
#define SD_SERVER_INTERNAL_H
#include "server/server.h"
#include <civetweb.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>

/* ---- Store: the queue and history in SQLite (store.c). All calls are thread-safe. ---- */

typedef struct sd_store sd_store;

/* One queued prompt as the executor takes it. */
typedef struct sd_queue_item {
    long long number;
    char prompt_id[40];
    char *prompt;     /* API JSON text */
    char *extra_data; /* JSON object text */
    char *outputs;    /* JSON array text of output node ids */
    char client_id[80];
} sd_queue_item;

sd_status sd_store_open(const char *path, sd_store **out, char *err, size_t err_size);
void sd_store_close(sd_store *st);
/* Adds a pending prompt; front puts it before every pending one. Sets *number. */
bool sd_store_push(sd_store *st, const char *prompt_id, const char *prompt, const char *extra_data,
                   const char *outputs, const char *client_id, bool front, long long *number);
/* Marks the first pending prompt running and returns it (false when none). */
bool sd_store_take(sd_store *st, sd_queue_item *item);
void sd_queue_item_clear(sd_queue_item *item);
/* Stores a finished prompt's history entry (JSON object text) and removes it from the queue,
 * atomically; false when the prompt is unknown or already finished (the first entry stays). */
bool sd_store_finish(sd_store *st, const char *prompt_id, const char *history_json);
/* Marks a running prompt as handed to the Redis workers (it stays so across restarts). */
bool sd_store_mark_dispatched(sd_store *st, const char *prompt_id);
/* True when the prompt is running or dispatched (not pending, not finished). */
bool sd_store_is_open(sd_store *st, const char *prompt_id);
/* Prompts not finished: pending, running or dispatched. */
long long sd_store_pending_count(sd_store *st);
/* {queue_running: [...], queue_pending: [...]}, items [number, id, prompt, extra, outputs]. */
json_t *sd_store_queue_json(sd_store *st);
/* Deletes pending prompts: all, or the ids in the array. */
void sd_store_delete_pending(sd_store *st, const json_t *ids);
/* {prompt_id: entry} of finished prompts, oldest first, the last max_items (<0: all); only
 * prompt_id when it is not NULL. */
json_t *sd_store_history_json(sd_store *st, const char *prompt_id, long long max_items);
/* Deletes history: all, or the ids in the array. */
void sd_store_delete_history(sd_store *st, const json_t *ids);

/* ---- WebSocket hub (ws.c). ---- */

typedef struct sd_ws_hub sd_ws_hub;
sd_ws_hub *sd_ws_hub_new(void);
void sd_ws_hub_free(sd_ws_hub *hub);
/* Registers civetweb's WebSocket handlers for /ws and /api/ws. */
void sd_ws_register(sd_server *srv, struct mg_context *mg);
/* Sends {"type": type, "data": data} (data is consumed) to the client sid, or to every
 * client when sid is NULL or "". */
void sd_ws_send(sd_server *srv, const char *type, json_t *data, const char *sid);
/* Sends a binary frame to sid (every client when NULL or ""). */
void sd_ws_send_binary(sd_server *srv, const void *data, size_t len, const char *sid);
/* The binary frame of a step preview (malloc'd, *len bytes): the 8-byte header, then the RGB8
 * image as a PNG; NULL when it cannot be encoded. */
unsigned char *sd_preview_frame(const uint8_t *rgb, int width, int height, size_t *len);
/* Sends a step preview (RGB8, width x height) as ComfyUI's binary PREVIEW_IMAGE frame with a PNG
 * (preview.c). */
void sd_ws_send_preview(sd_server *srv, const uint8_t *rgb, int width, int height, const char *sid);
/* The status message: {status: {exec_info: {queue_remaining}}} (+ sid when given). */
json_t *sd_status_message(sd_server *srv, const char *sid);
/* Sends the status message to everyone (queue changed). */
void sd_ws_broadcast_status(sd_server *srv);

/* ---- Running one prompt (runner.c). ---- */

/* Where a run's messages go: the WebSocket hub, or a Redis stream for a worker. */
typedef struct sd_run_sink {
    /* A ComfyUI message for client sid ("" or NULL: everyone); data is consumed. */
    void (*message)(void *user, const char *type, json_t *data, const char *sid);
    /* A step preview, RGB8. */
    void (*preview)(void *user, const uint8_t *rgb, int width, int height, const char *sid);
    /* True when the process is stopping (an interrupt then leaves the prompt queued); may be NULL. */
    bool (*stopping)(void *user);
    void *user;
} sd_run_sink;

/* Runs the item's prompt in ctx, sending execution_start, execution_cached, executing, progress,
 * previews, executed and execution_success / _interrupted / _error through sink. Returns the
 * history entry as JSON text (malloc'd), or NULL when the run was interrupted because the
 * process is stopping (the prompt is to run again). The caller stores it, then sends the final
 * `executing` with node null (sd_server_finish_prompt). */
char *sd_run_prompt(sd_context *ctx, const sd_queue_item *item, const sd_run_sink *sink);

/* ---- Executor (executor.c). ---- */

/* Stores a finished prompt's history, then tells its client (`executing`, node null) and
 * everyone (status). */
void sd_server_finish_prompt(sd_server *srv, const char *prompt_id, const char *client_id, const char *history);

/* Starts the thread that runs queued prompts one at a time in one context (so loaded models
 * stay loaded between prompts). */
bool sd_executor_start(sd_server *srv);
/* Wakes the executor: a prompt was queued. */
void sd_executor_wake(sd_server *srv);
/* Stops the running prompt (only it, when prompt_id is given and differs: nothing). */
void sd_executor_interrupt(sd_server *srv, const char *prompt_id);
/* Drops the executor's context (its loaded models) before the next prompt. */
void sd_executor_free_models(sd_server *srv);
void sd_executor_stop(sd_server *srv);

/* ---- Redis dispatcher and collector (dispatch.c), instead of the executor with --queue. ---- */

bool sd_dispatch_start(sd_server *srv);
void sd_dispatch_stop(sd_server *srv);
/* /interrupt for the workers: the prompt's (when open) or whatever they run (prompt_id NULL). */
void sd_dispatch_interrupt(sd_server *srv, const char *prompt_id);
/* /free for the workers: each drops its context before its next job. */
void sd_dispatch_free_models(sd_server *srv);

/* ---- The server. ---- */

struct sd_server {
    sd_server_config cfg;
    struct mg_context *mg;
    sd_store *store;
    sd_ws_hub *hub;
    sd_context *info; /* configured like the executor's; read-only: directories, model lists */
    int port;
    bool loopback;    /* bound to a loopback address: Host must name the loopback */
    /* executor */
    pthread_t thread, collector;
    bool thread_started, collector_started;
    pthread_mutex_t lock; /* guards the fields below */
    pthread_cond_t wake;
    bool stopping, free_models;
    sd_context *exec_ctx;    /* the executor's context, NULL until the first prompt */
    char running_id[40];     /* prompt being run, "" when idle */
};

/* 0 when the request may proceed; else the HTTP status to refuse it with: 401 without the
 * bearer token (when one is set); 403 for a Host that is not the loopback on a loopback server
 * (DNS rebinding), for a cross-site request (Origin not matching Host) that is not a GET, and
 * for any WebSocket upgrade from another site. */
int sd_server_gate(sd_server *srv, const struct mg_connection *conn);

/* Creates a context configured like the executor's (cfg.configure). */
sd_status sd_server_context(sd_server *srv, sd_context **out);

/* ---- HTTP helpers (http.c). ---- */

/* Sends a JSON reply with this status code (consumes body; NULL sends {}). */
void sd_http_json(struct mg_connection *conn, int status, json_t *body);
/* Sends {"error": {"type": type, "message": msg, "details": "", "extra_info": {}}} with status. */
void sd_http_error(struct mg_connection *conn, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Reads the request body (at most max bytes; NUL-terminated). NULL after sending the error
 * reply (too large: 413, read failure: 400). */
char *sd_http_body(struct mg_connection *conn, long long max, size_t *len);
/* Parses the body as a JSON object; NULL after sending a 400 reply. An empty body is {}. */
json_t *sd_http_json_body(struct mg_connection *conn, long long max);
/* A query parameter (URL-decoded) into buf; false when absent or too long. */
bool sd_http_query(const struct mg_connection *conn, const char *name, char *buf, size_t size);

/* ---- File helpers (fs.c). ---- */

/* True when realpath(path) lies inside realpath(dir) (both must exist). */
bool sd_path_inside(const char *dir, const char *path);
/* mkdir -p dir/sub (sub already passed sd_relpath_ok) into out; false when a component cannot
 * be made or the result leaves dir through a symlink. */
bool sd_make_subdir(const char *dir, const char *sub, char *out, size_t size);
/* Writes data to a new temporary file in dir, fsync'd; its path in tmp. */
bool sd_write_temp(const char *dir, const unsigned char *data, size_t len, char *tmp, size_t size);
/* Replaces path with data through a temporary file in its directory and rename(2), so a reader
 * sees the old file or the new one, never half of it. */
bool sd_write_atomic(const char *path, const unsigned char *data, size_t len);

/* ---- Routes (routes_*.c): each handles one request; path has no "/api" prefix. ---- */

typedef void (*sd_route_fn)(sd_server *srv, struct mg_connection *conn, const char *method,
                            const char *path);
void sd_route_prompt(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_queue(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_history(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_interrupt(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_free(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_view(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_upload(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_models(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_embeddings(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_object_info(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_system_stats(sd_server *, struct mg_connection *, const char *, const char *);
/* The front end's routes: user files (routes_user.c), jobs and flags (routes_front.c). */
void sd_route_users(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_settings(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_userdata_list(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_userdata(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_jobs(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_features(sd_server *, struct mg_connection *, const char *, const char *);
void sd_route_empty_object(sd_server *, struct mg_connection *, const char *, const char *);
/* Sends the --front-end file that path (a GET outside the API) names; false when there is no
 * front end or no such file inside its directory. */
bool sd_front_end_file(sd_server *srv, struct mg_connection *conn, const char *path);

/* Lists the files under the models folder `folder` of every model directory of ctx, relative
 * to it, sorted and without duplicates (what ComfyUI's folder_paths.get_filename_list gives). */
json_t *sd_model_files(const sd_context *ctx, const char *folder);

/* A random version-4 UUID into buf (37 bytes): "8-4-4-4-12" hex with dashes, else 32 hex
 * digits (ComfyUI's uuid4() and uuid4().hex). */
void sd_uuid4(char *buf, bool dashes);

/* Milliseconds since the epoch (ComfyUI's message timestamps). */
long long sd_now_ms(void);

#endif
