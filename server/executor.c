/* The executor: one thread that takes queued prompts in order and runs them in one context, so
 * models loaded by one prompt stay loaded for the next (the context's model store). It sends
 * ComfyUI's execution messages over the WebSocket and writes the history entry before the final
 * `executing` (node null) message, so a client that sees it finds the outputs in /history. */
#include "server/internal.h"
#include "sdflow/node.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one run tells its clients and its history entry. */
typedef struct run_state {
    sd_server *srv;
    const sd_queue_item *item;
    json_t *messages; /* [[type, data], ...] for the history's status */
    json_t *executed; /* node ids that ran or came from the cache */
    json_t *cached;   /* cached node ids not yet announced */
    char node[128], node_type[128]; /* the node running */
} run_state;

/* Sends a message to the prompt's client and keeps a copy in the history's message list. */
static void emit(run_state *rs, const char *type, json_t *data, bool keep)
{
    if (keep)
        json_array_append_new(rs->messages, json_pack("[s, O]", type, data));
    sd_ws_send(rs->srv, type, data, rs->item->client_id);
}

static void flush_cached(run_state *rs)
{
    if (json_array_size(rs->cached) == 0)
        return;
    emit(rs, "execution_cached",
         json_pack("{s:O, s:s, s:I}", "nodes", rs->cached, "prompt_id", rs->item->prompt_id, "timestamp",
                   (json_int_t)sd_now_ms()),
         true);
    json_array_clear(rs->cached);
}

static void on_progress(const sd_progress *e, void *user)
{
    run_state *rs = user;
    const char *pid = rs->item->prompt_id;
    switch (e->kind) {
    case SD_PROGRESS_NODE_CACHED:
        json_array_append_new(rs->cached, json_string(e->node_id));
        json_array_append_new(rs->executed, json_string(e->node_id));
        break;
    case SD_PROGRESS_NODE_START:
        flush_cached(rs);
        snprintf(rs->node, sizeof rs->node, "%s", e->node_id);
        snprintf(rs->node_type, sizeof rs->node_type, "%s", e->node_type);
        emit(rs, "executing", json_pack("{s:s, s:s, s:s}", "node", e->node_id, "display_node", e->node_id,
                                        "prompt_id", pid), false);
        break;
    case SD_PROGRESS_NODE_DONE:
        json_array_append_new(rs->executed, json_string(e->node_id));
        break;
    case SD_PROGRESS_STEP:
        emit(rs, "progress", json_pack("{s:i, s:i, s:s, s:s}", "value", e->step, "max", e->steps, "prompt_id",
                                       pid, "node", e->node_id), false);
        if (e->preview_rgb)
            sd_ws_send_preview(rs->srv, e->preview_rgb, e->preview_width, e->preview_height, rs->item->client_id);
        break;
    default:
        break;
    }
}

/* {filename, subfolder, type} of a written file, from its path under the output or temp
 * directory; NULL when it is elsewhere. */
static json_t *file_ref(sd_context *ctx, const char *path)
{
    static const struct { sd_dir_kind kind; const char *name; } dirs[] = {
        {SD_DIR_OUTPUT, "output"}, {SD_DIR_TEMP, "temp"}, {SD_DIR_INPUT, "input"}};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        const char *d = sd_context_dir(ctx, dirs[i].kind);
        size_t n = d ? strlen(d) : 0;
        while (n > 1 && d[n - 1] == '/')
            n--;
        if (!n || strncmp(path, d, n) != 0 || path[n] != '/')
            continue;
        const char *rel = path + n + 1, *slash = strrchr(rel, '/');
        json_t *sub = slash ? json_stringn(rel, (size_t)(slash - rel)) : json_string("");
        return json_pack("{s:s, s:o, s:s}", "filename", slash ? slash + 1 : rel, "subfolder", sub, "type",
                         dirs[i].name);
    }
    return NULL;
}

/* {node_id: {"images": [...]}} (".latent" files under "latents") of the run's written files. */
static json_t *outputs_of(sd_context *ctx, const sd_result *res)
{
    json_t *outputs = json_object();
    for (size_t i = 0; i < sd_result_file_count(res); i++) {
        const char *path = sd_result_file(res, i), *node = sd_result_file_node(res, i);
        json_t *ref = file_ref(ctx, path);
        if (!ref)
            continue;
        size_t n = strlen(path);
        const char *key = n > 7 && !strcmp(path + n - 7, ".latent") ? "latents" : "images";
        json_t *o = json_object_get(outputs, node);
        if (!o)
            json_object_set_new(outputs, node, o = json_object());
        json_t *list = json_object_get(o, key);
        if (!list)
            json_object_set_new(o, key, list = json_array());
        json_array_append_new(list, ref);
    }
    return outputs;
}

/* Runs the item's graph; fills rs and returns the run's status, the failure's message in msg. */
static sd_status run_graph(run_state *rs, sd_context *ctx, json_t **outputs, char *msg, size_t size)
{
    sd_graph *g = NULL;
    sd_result *res = NULL;
    char source[64];
    snprintf(source, sizeof source, "prompt %s", rs->item->prompt_id);
    sd_context_set_progress(ctx, on_progress, rs);
    sd_context_set_previews(ctx, true);
    sd_status st = sd_graph_import_comfy_memory(ctx, rs->item->prompt, strlen(rs->item->prompt), source, &g);
    if (!st)
        st = sd_graph_run(g, NULL, &res);
    flush_cached(rs);
    if (st)
        snprintf(msg, size, "%s", sd_context_errmsg(ctx));
    *outputs = outputs_of(ctx, res);
    sd_context_set_progress(ctx, NULL, NULL);
    sd_result_free(res);
    sd_graph_free(g);
    return st;
}

/* The history entry of a finished prompt (ComfyUI's shape). */
static json_t *history_entry(run_state *rs, json_t *outputs, const char *status_str, bool completed)
{
    const sd_queue_item *it = rs->item;
    json_t *prompt = json_pack("[I, s, o, o, o]", (json_int_t)it->number, it->prompt_id,
                               json_loads(it->prompt, 0, NULL), json_loads(it->extra_data, 0, NULL),
                               json_loads(it->outputs, 0, NULL));
    json_t *meta = json_object();
    const char *node;
    json_t *v;
    json_object_foreach(outputs, node, v)
        json_object_set_new(meta, node, json_pack("{s:s, s:s, s:n, s:s}", "node_id", node, "display_node", node,
                                                  "parent_node", "real_node_id", node));
    return json_pack("{s:o, s:O, s:{s:s, s:b, s:O}, s:o}", "prompt", prompt, "outputs", outputs, "status",
                     "status_str", status_str, "completed", completed, "messages", rs->messages, "meta", meta);
}

/* Runs one queued prompt from start to history. */
static void run_item(sd_server *srv, sd_context *ctx, const sd_queue_item *item)
{
    run_state rs = {.srv = srv, .item = item, .messages = json_array(), .executed = json_array(),
                    .cached = json_array()};
    const char *pid = item->prompt_id;
    emit(&rs, "execution_start", json_pack("{s:s, s:I}", "prompt_id", pid, "timestamp", (json_int_t)sd_now_ms()),
         true);
    json_t *outputs = NULL;
    char msg[1024] = "";
    sd_status st = run_graph(&rs, ctx, &outputs, msg, sizeof msg);
    const char *node;
    json_t *out;
    json_object_foreach(outputs, node, out)
        emit(&rs, "executed", json_pack("{s:s, s:s, s:O, s:s}", "node", node, "display_node", node, "output", out,
                                        "prompt_id", pid), false);
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    pthread_mutex_unlock(&srv->lock);
    if (st == SD_ERR_INTERRUPTED && stopping) {
        /* The server is stopping: the prompt stays queued (running), and the next start runs it. */
        json_decref(outputs);
        json_decref(rs.messages);
        json_decref(rs.executed);
        json_decref(rs.cached);
        return;
    }
    if (st == SD_OK) {
        emit(&rs, "execution_success", json_pack("{s:s, s:I}", "prompt_id", pid, "timestamp",
                                                 (json_int_t)sd_now_ms()), true);
    } else if (st == SD_ERR_INTERRUPTED) {
        emit(&rs, "execution_interrupted",
             json_pack("{s:s, s:s, s:s, s:O, s:I}", "prompt_id", pid, "node_id", rs.node, "node_type", rs.node_type,
                       "executed", rs.executed, "timestamp", (json_int_t)sd_now_ms()), true);
    } else {
        emit(&rs, "execution_error",
             json_pack("{s:s, s:s, s:s, s:O, s:s, s:s, s:[], s:{}, s:{}, s:I}", "prompt_id", pid, "node_id", rs.node,
                       "node_type", rs.node_type, "executed", rs.executed, "exception_message", msg,
                       "exception_type", sd_status_name(st), "traceback", "current_inputs", "current_outputs",
                       "timestamp", (json_int_t)sd_now_ms()), true);
    }
    json_t *entry = history_entry(&rs, outputs, st == SD_OK ? "success" : "error", st == SD_OK);
    char *text = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
    if (!text || !sd_store_finish(srv->store, pid, text))
        fprintf(stderr, "sdflow serve: prompt %s: could not store its history\n", pid);
    free(text);
    json_decref(entry);
    emit(&rs, "executing", json_pack("{s:n, s:n, s:s}", "node", "display_node", "prompt_id", pid), false);
    sd_ws_broadcast_status(srv);
    json_decref(rs.messages);
    json_decref(rs.executed);
    json_decref(rs.cached);
}

/* Waits for a prompt (false when stopping), recreating the context when /free asked for it. */
static bool next_item(sd_server *srv, sd_queue_item *item)
{
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        if (srv->stopping) {
            pthread_mutex_unlock(&srv->lock);
            return false;
        }
        if (srv->free_models) {
            sd_context_free(srv->exec_ctx);
            srv->exec_ctx = NULL;
            srv->free_models = false;
        }
        if (sd_store_take(srv->store, item))
            break;
        pthread_cond_wait(&srv->wake, &srv->lock);
    }
    snprintf(srv->running_id, sizeof srv->running_id, "%s", item->prompt_id);
    if (!srv->exec_ctx && sd_server_context(srv, &srv->exec_ctx))
        srv->exec_ctx = NULL;
    pthread_mutex_unlock(&srv->lock);
    return true;
}

static void *executor_main(void *arg)
{
    sd_server *srv = arg;
    sd_queue_item item;
    while (next_item(srv, &item)) {
        sd_ws_broadcast_status(srv);
        if (srv->exec_ctx) {
            run_item(srv, srv->exec_ctx, &item);
        } else {
            fprintf(stderr, "sdflow serve: prompt %s: no context to run it in\n", item.prompt_id);
            sd_store_finish(srv->store, item.prompt_id, "{\"status\": {\"status_str\": \"error\", \"completed\": false}}");
        }
        pthread_mutex_lock(&srv->lock);
        srv->running_id[0] = '\0';
        pthread_mutex_unlock(&srv->lock);
        sd_queue_item_clear(&item);
    }
    return NULL;
}

bool sd_executor_start(sd_server *srv)
{
    srv->thread_started = pthread_create(&srv->thread, NULL, executor_main, srv) == 0;
    return srv->thread_started;
}

void sd_executor_wake(sd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    pthread_cond_signal(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
}

void sd_executor_interrupt(sd_server *srv, const char *prompt_id)
{
    pthread_mutex_lock(&srv->lock);
    if (srv->exec_ctx && srv->running_id[0] && (!prompt_id || !strcmp(prompt_id, srv->running_id)))
        sd_context_interrupt(srv->exec_ctx);
    pthread_mutex_unlock(&srv->lock);
}

void sd_executor_free_models(sd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->free_models = true;
    pthread_cond_signal(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
}

void sd_executor_stop(sd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    if (srv->exec_ctx && srv->running_id[0])
        sd_context_interrupt(srv->exec_ctx);
    pthread_cond_signal(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    if (srv->thread_started)
        pthread_join(srv->thread, NULL);
    srv->thread_started = false;
    sd_context_free(srv->exec_ctx);
    srv->exec_ctx = NULL;
}
