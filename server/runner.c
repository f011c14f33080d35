/* Running one queued prompt (sd_run_prompt): ComfyUI's execution messages through a sink, the
 * outputs of the run, and its history entry. The local executor (executor.c) and Redis workers
 * (worker.c) share it. */
#include "server/internal.h"
#include "sdflow/node.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one run tells its clients and its history entry. */
typedef struct run_state {
    const sd_run_sink *sink;
    const sd_queue_item *item;
    sd_context *ctx;
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
    rs->sink->message(rs->sink->user, type, data, rs->item->client_id);
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

/* Adds a written file to a node's output {"images": [...]} (".latent" files under "latents"). */
static void add_file(sd_context *ctx, json_t *output, const char *path)
{
    json_t *ref = file_ref(ctx, path);
    if (!ref)
        return;
    size_t n = strlen(path);
    const char *key = n > 7 && !strcmp(path + n - 7, ".latent") ? "latents" : "images";
    json_t *list = json_object_get(output, key);
    if (!list)
        json_object_set_new(output, key, list = json_array());
    json_array_append_new(list, ref);
}

/* {node_id: output} of the run's written files (the history's outputs). */
static json_t *outputs_of(sd_context *ctx, const sd_result *res)
{
    json_t *outputs = json_object();
    for (size_t i = 0; i < sd_result_file_count(res); i++) {
        const char *node = sd_result_file_node(res, i);
        json_t *o = json_object_get(outputs, node);
        if (!o)
            json_object_set_new(outputs, node, o = json_object());
        add_file(ctx, o, sd_result_file(res, i));
    }
    return outputs;
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
        if (e->n_files) { /* an output node: ComfyUI's `executed` right after it */
            json_t *output = json_object();
            for (size_t i = 0; i < e->n_files; i++)
                add_file(rs->ctx, output, e->files[i]);
            emit(rs, "executed", json_pack("{s:s, s:s, s:o, s:s}", "node", e->node_id, "display_node", e->node_id,
                                           "output", output, "prompt_id", pid), false);
        }
        break;
    case SD_PROGRESS_STEP:
        emit(rs, "progress", json_pack("{s:i, s:i, s:s, s:s}", "value", e->step, "max", e->steps, "prompt_id",
                                       pid, "node", e->node_id), false);
        if (e->preview_rgb)
            rs->sink->preview(rs->sink->user, e->preview_rgb, e->preview_width, e->preview_height,
                              rs->item->client_id);
        break;
    default:
        break;
    }
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

char *sd_run_prompt(sd_context *ctx, const sd_queue_item *item, const sd_run_sink *sink)
{
    run_state rs = {.sink = sink, .item = item, .ctx = ctx, .messages = json_array(), .executed = json_array(),
                    .cached = json_array()};
    const char *pid = item->prompt_id;
    emit(&rs, "execution_start", json_pack("{s:s, s:I}", "prompt_id", pid, "timestamp", (json_int_t)sd_now_ms()),
         true);
    json_t *outputs = NULL;
    char msg[1024] = "";
    sd_status st = run_graph(&rs, ctx, &outputs, msg, sizeof msg);
    char *text = NULL;
    if (st == SD_ERR_INTERRUPTED && sink->stopping && sink->stopping(sink->user)) {
        json_decref(outputs); /* stopping: the prompt stays queued and runs again */
    } else {
        if (st == SD_OK) {
            emit(&rs, "execution_success", json_pack("{s:s, s:I}", "prompt_id", pid, "timestamp",
                                                     (json_int_t)sd_now_ms()), true);
        } else if (st == SD_ERR_INTERRUPTED) {
            emit(&rs, "execution_interrupted",
                 json_pack("{s:s, s:s, s:s, s:O, s:I}", "prompt_id", pid, "node_id", rs.node, "node_type",
                           rs.node_type, "executed", rs.executed, "timestamp", (json_int_t)sd_now_ms()), true);
        } else {
            emit(&rs, "execution_error",
                 json_pack("{s:s, s:s, s:s, s:O, s:s, s:s, s:[], s:{}, s:{}, s:I}", "prompt_id", pid, "node_id",
                           rs.node, "node_type", rs.node_type, "executed", rs.executed, "exception_message", msg,
                           "exception_type", sd_status_name(st), "traceback", "current_inputs", "current_outputs",
                           "timestamp", (json_int_t)sd_now_ms()), true);
        }
        json_t *entry = history_entry(&rs, outputs, st == SD_OK ? "success" : "error", st == SD_OK);
        text = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
        json_decref(entry);
    }
    json_decref(rs.messages);
    json_decref(rs.executed);
    json_decref(rs.cached);
    return text;
}
