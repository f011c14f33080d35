/* /prompt, /queue, /history, /interrupt, /free: ComfyUI's queue routes over the store. */
#include "server/internal.h"
#include "sdflow/node.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest JSON request body (ComfyUI workflows are far smaller). */
#define JSON_BODY_MAX (16LL << 20)

/* The ids of the graph's output nodes (ComfyUI's outputs_to_execute). */
static json_t *output_nodes(const sd_graph *g)
{
    json_t *ids = json_array();
    for (size_t i = 0; i < sd_graph_node_count(g); i++) {
        const sd_node_desc *d = sd_node_type_find(sd_graph_node_type(g, i));
        if (d && (d->flags & SD_NODE_OUTPUT))
            json_array_append_new(ids, json_string(sd_graph_node_id(g, i)));
    }
    return ids;
}

/* Splits a diagnostic "prompt[:line]: node 'ID'[ input 'NAME']: MESSAGE" into its node id,
 * input and message (sdflow.h documents the form). False when it names no node. */
static bool split_diag(const char *diag, char *id, size_t id_size, char *input, size_t in_size,
                       const char **msg)
{
    const char *p = strstr(diag, ": node '");
    if (!p)
        return false;
    p += 8;
    const char *q = strstr(p, "': ");
    const char *in = strstr(p, "' input '");
    input[0] = '\0';
    if (in && (!q || in < q)) {
        const char *name = in + 9, *e = strstr(name, "': ");
        if (!e)
            return false;
        snprintf(input, in_size, "%.*s", (int)(e - name), name);
        q = in;
        *msg = e + 3;
    } else if (q) {
        *msg = q + 3;
    } else {
        return false;
    }
    snprintf(id, id_size, "%.*s", (int)(q - p), p);
    return true;
}

/* ComfyUI's node_errors from the context's validation diagnostics; other diagnostics are
 * joined into *details. */
static json_t *node_errors(sd_context *ctx, const sd_graph *g, json_t *outputs, char *details, size_t size)
{
    json_t *errors = json_object();
    size_t used = 0;
    details[0] = '\0';
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++) {
        const char *diag = sd_context_diag(ctx, i), *msg;
        char id[128], input[128];
        if (!split_diag(diag, id, sizeof id, input, sizeof input, &msg)) {
            if (used < size)
                used += (size_t)snprintf(details + used, size - used, "%s%s", used ? "; " : "", diag);
            continue;
        }
        json_t *e = json_object_get(errors, id);
        if (!e) {
            const char *type = "";
            for (size_t k = 0; k < sd_graph_node_count(g); k++)
                if (!strcmp(sd_graph_node_id(g, k), id))
                    type = sd_graph_node_type(g, k);
            e = json_pack("{s:[], s:O, s:s}", "errors", "dependent_outputs", outputs, "class_type", type);
            json_object_set_new(errors, id, e);
        }
        json_t *extra = input[0] ? json_pack("{s:s}", "input_name", input) : json_object();
        json_array_append_new(json_object_get(e, "errors"),
                              json_pack("{s:s, s:s, s:s, s:o}", "type", input[0] ? "value_not_valid" : "invalid_node",
                                        "message", msg, "details", diag, "extra_info", extra));
    }
    return errors;
}

/* Replies 400 {error: {type, message, details, extra_info}, node_errors}. */
static void prompt_error(struct mg_connection *conn, const char *type, const char *message,
                         const char *details, json_t *errors)
{
    sd_http_json(conn, 400, json_pack("{s:{s:s, s:s, s:s, s:{}}, s:o}", "error", "type", type, "message", message,
                                      "details", details, "extra_info", "node_errors",
                                      errors ? errors : json_object()));
}

/* Checks the prompt as ComfyUI's validate_prompt does; on success returns its output node ids,
 * else replies 400 and returns NULL. */
static json_t *validate_prompt(sd_server *srv, struct mg_connection *conn, const json_t *prompt)
{
    sd_context *ctx;
    if (sd_server_context(srv, &ctx)) {
        sd_http_error(conn, 500, "server_error", "cannot create a context");
        return NULL;
    }
    char *text = json_dumps(prompt, JSON_COMPACT);
    sd_graph *g = NULL;
    json_t *outputs = NULL;
    sd_status st = text ? sd_graph_import_comfy_memory(ctx, text, strlen(text), "prompt", &g) : SD_ERR_NOMEM;
    free(text);
    if (st) {
        prompt_error(conn, "invalid_prompt", sd_context_errmsg(ctx), "", NULL);
    } else if (json_array_size(outputs = output_nodes(g)) == 0) {
        prompt_error(conn, "prompt_no_outputs", "Prompt has no outputs", "", NULL);
    } else if (sd_graph_validate(g)) {
        char details[2048];
        json_t *errors = node_errors(ctx, g, outputs, details, sizeof details);
        prompt_error(conn, "prompt_outputs_failed_validation", "Prompt outputs failed validation", details, errors);
        st = SD_ERR_INVALID;
    } else {
        sd_graph_free(g);
        sd_context_free(ctx);
        return outputs;
    }
    json_decref(outputs);
    sd_graph_free(g);
    sd_context_free(ctx);
    return NULL;
}

static void post_prompt(sd_server *srv, struct mg_connection *conn)
{
    json_t *body = sd_http_json_body(conn, JSON_BODY_MAX);
    if (!body)
        return;
    const json_t *prompt = json_object_get(body, "prompt");
    if (!json_is_object(prompt)) {
        prompt_error(conn, "no_prompt", "No prompt provided", "", NULL);
        json_decref(body);
        return;
    }
    json_t *outputs = validate_prompt(srv, conn, prompt);
    if (!outputs) {
        json_decref(body);
        return;
    }
    json_t *extra = json_object_get(body, "extra_data");
    extra = json_is_object(extra) ? json_deep_copy(extra) : json_object();
    json_object_set_new(extra, "create_time", json_integer(sd_now_ms())); /* as ComfyUI; /jobs reads it */
    const char *client_id = json_string_value(json_object_get(body, "client_id"));
    if (client_id && strlen(client_id) < 80)
        json_object_set_new(extra, "client_id", json_string(client_id));
    else
        client_id = NULL;
    char id[40];
    const char *given = json_string_value(json_object_get(body, "prompt_id"));
    if (given && strlen(given) < sizeof id && strspn(given, "0123456789abcdefABCDEF-") == strlen(given) && *given)
        snprintf(id, sizeof id, "%s", given);
    else
        sd_uuid4(id, true);
    bool front = json_is_true(json_object_get(body, "front"));
    char *ptext = json_dumps(prompt, JSON_COMPACT), *etext = json_dumps(extra, JSON_COMPACT),
         *otext = json_dumps(outputs, JSON_COMPACT);
    long long number = 0;
    if (ptext && etext && otext && sd_store_push(srv->store, id, ptext, etext, otext, client_id, front, &number)) {
        sd_executor_wake(srv);
        sd_ws_broadcast_status(srv);
        sd_http_json(conn, 200, json_pack("{s:s, s:I, s:{}}", "prompt_id", id, "number", (json_int_t)number,
                                          "node_errors"));
    } else {
        sd_http_error(conn, 400, "queue_error", "could not queue prompt %s (duplicate id or database error)", id);
    }
    free(ptext);
    free(etext);
    free(otext);
    json_decref(outputs);
    json_decref(extra);
    json_decref(body);
}

void sd_route_prompt(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(method, "POST"))
        post_prompt(srv, conn);
    else
        sd_http_json(conn, 200, json_pack("{s:{s:I}}", "exec_info", "queue_remaining",
                                          (json_int_t)sd_store_pending_count(srv->store)));
}

/* {clear: true} or {delete: [ids]} bodies of POST /queue and POST /history. */
static void clear_or_delete(sd_server *srv, struct mg_connection *conn, void (*del)(sd_store *, const json_t *))
{
    json_t *body = sd_http_json_body(conn, JSON_BODY_MAX);
    if (!body)
        return;
    if (json_is_true(json_object_get(body, "clear")))
        del(srv->store, NULL);
    const json_t *ids = json_object_get(body, "delete");
    if (json_is_array(ids))
        del(srv->store, ids);
    json_decref(body);
    sd_ws_broadcast_status(srv);
    sd_http_json(conn, 200, NULL);
}

void sd_route_queue(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(method, "POST"))
        clear_or_delete(srv, conn, sd_store_delete_pending);
    else
        sd_http_json(conn, 200, sd_store_queue_json(srv->store));
}

void sd_route_history(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(method, "POST")) {
        clear_or_delete(srv, conn, sd_store_delete_history);
        return;
    }
    if (!strncmp(path, "/history/", 9)) {
        sd_http_json(conn, 200, sd_store_history_json(srv->store, path + 9, -1));
        return;
    }
    char buf[32];
    long long max = -1;
    if (sd_http_query(conn, "max_items", buf, sizeof buf)) {
        char *end;
        max = strtoll(buf, &end, 10);
        if (*end || max < 0) {
            sd_http_error(conn, 400, "bad_request", "max_items must be a non-negative integer");
            return;
        }
    }
    sd_http_json(conn, 200, sd_store_history_json(srv->store, NULL, max));
}

void sd_route_interrupt(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    json_t *body = sd_http_json_body(conn, JSON_BODY_MAX);
    if (!body)
        return;
    sd_executor_interrupt(srv, json_string_value(json_object_get(body, "prompt_id")));
    json_decref(body);
    sd_http_json(conn, 200, NULL);
}

void sd_route_free(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    json_t *body = sd_http_json_body(conn, JSON_BODY_MAX);
    if (!body)
        return;
    if (json_is_true(json_object_get(body, "unload_models")) || json_is_true(json_object_get(body, "free_memory")))
        sd_executor_free_models(srv);
    json_decref(body);
    sd_http_json(conn, 200, NULL);
}
