/* sdflow serve: civetweb set-up, the request gate (token, Origin), routing, start and stop. */
#include "server/internal.h"
#include "server/parse.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route {
    const char *path; /* exact, or a prefix when it ends in '/' */
    const char *methods;
    sd_route_fn fn;
} route;

static void route_empty_list(sd_server *srv, struct mg_connection *conn, const char *m, const char *p)
{
    sd_http_json(conn, 200, json_array());
}

static const route routes[] = {
    {"/prompt", "GET POST", sd_route_prompt},
    {"/queue", "GET POST", sd_route_queue},
    {"/history", "GET POST", sd_route_history},
    {"/history/", "GET", sd_route_history},
    {"/interrupt", "POST", sd_route_interrupt},
    {"/free", "POST", sd_route_free},
    {"/view", "GET HEAD", sd_route_view},
    {"/upload/image", "POST", sd_route_upload},
    {"/upload/mask", "POST", sd_route_upload},
    {"/object_info", "GET", sd_route_object_info},
    {"/object_info/", "GET", sd_route_object_info},
    {"/system_stats", "GET", sd_route_system_stats},
    {"/embeddings", "GET", sd_route_embeddings},
    {"/models", "GET", sd_route_models},
    {"/models/", "GET", sd_route_models},
    {"/extensions", "GET", route_empty_list},
    {"/users", "GET POST", sd_route_users},
    {"/settings", "GET POST", sd_route_settings},
    {"/settings/", "GET POST", sd_route_settings},
    {"/userdata", "GET", sd_route_userdata_list},
    {"/v2/userdata", "GET", sd_route_userdata_list},
    {"/userdata/", "GET POST DELETE", sd_route_userdata},
    {"/jobs", "GET", sd_route_jobs},
    {"/jobs/", "GET POST", sd_route_jobs},
    {"/features", "GET", sd_route_features},
    {"/i18n", "GET", sd_route_empty_object},
    {"/workflow_templates", "GET", sd_route_empty_object},
};

int sd_server_gate(sd_server *srv, const struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    bool upgrade = mg_get_header(conn, "Upgrade") != NULL;
    if (srv->cfg.token) {
        bool ok = sd_bearer_ok(mg_get_header(conn, "Authorization"), srv->cfg.token);
        char given[256], bearer[270];
        /* Browsers cannot set headers on a WebSocket: the upgrade may carry ?token=. */
        if (!ok && upgrade && sd_http_query(conn, "token", given, sizeof given)) {
            snprintf(bearer, sizeof bearer, "Bearer %s", given);
            ok = sd_bearer_ok(bearer, srv->cfg.token);
        }
        if (!ok)
            return 401;
    }
    if (srv->loopback && !sd_host_is_loopback(mg_get_header(conn, "Host")))
        return 403; /* a page of another site reaching us through DNS rebinding */
    bool safe = !strcmp(ri->request_method, "GET") || !strcmp(ri->request_method, "HEAD");
    if ((!safe || upgrade) && !sd_origin_allowed(mg_get_header(conn, "Origin"), mg_get_header(conn, "Host")))
        return 403;
    return 0;
}

static bool method_in(const char *method, const char *list)
{
    size_t n = strlen(method);
    for (const char *p = strstr(list, method); p; p = strstr(p + 1, method))
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

static int handle_request(struct mg_connection *conn, void *user)
{
    sd_server *srv = user;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int refuse = sd_server_gate(srv, conn);
    if (refuse == 401) {
        sd_http_error(conn, 401, "unauthorized", "this server needs \"Authorization: Bearer <token>\"");
        return 1;
    }
    if (refuse) {
        sd_http_error(conn, 403, "forbidden", "cross-origin request refused (Origin does not match Host, or "
                                              "Host is not the loopback this server listens on)");
        return 1;
    }
    /* Not local_uri: civetweb resolves "." and ".." there, which would turn a refused name into
     * another file's (userdata); the names are checked by the routes instead. */
    const char *path = ri->local_uri_raw ? ri->local_uri_raw : ri->local_uri ? ri->local_uri : "/";
    bool api = !strncmp(path, "/api/", 5);
    if (api)
        path += 4;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const route *r = &routes[i];
        size_t n = strlen(r->path);
        bool prefix = r->path[n - 1] == '/';
        if (prefix ? strncmp(path, r->path, n) != 0 || !path[n] : strcmp(path, r->path) != 0)
            continue;
        if (!method_in(ri->request_method, r->methods)) {
            sd_http_error(conn, 405, "method_not_allowed", "%s is not allowed on %s", ri->request_method, r->path);
            return 1;
        }
        r->fn(srv, conn, ri->request_method, path);
        return 1;
    }
    bool get = !strcmp(ri->request_method, "GET") || !strcmp(ri->request_method, "HEAD");
    if (!api && get && sd_front_end_file(srv, conn, path))
        return 1;
    sd_http_error(conn, 404, "not_found", "no route %s", path);
    return 1;
}

sd_status sd_server_context(sd_server *srv, sd_context **out)
{
    sd_status st = sd_context_new(out);
    if (st)
        return st;
    if (srv->cfg.configure && (st = srv->cfg.configure(*out, srv->cfg.configure_user))) {
        fprintf(stderr, "sdflow serve: %s\n", sd_context_errmsg(*out));
        sd_context_free(*out);
        *out = NULL;
    }
    return st;
}

static int log_message(const struct mg_connection *conn, const char *message)
{
    fprintf(stderr, "sdflow serve: %s\n", message);
    return 1;
}

static sd_status start_listener(sd_server *srv, char *err, size_t err_size)
{
    char ports[300], threads[16];
    const char *addr = srv->cfg.listen ? srv->cfg.listen : "127.0.0.1";
    if (strchr(addr, ':') && addr[0] != '[')
        snprintf(ports, sizeof ports, "[%s]:%d", addr, srv->cfg.port);
    else
        snprintf(ports, sizeof ports, "%s:%d", addr, srv->cfg.port);
    snprintf(threads, sizeof threads, "%d", srv->cfg.threads > 0 ? srv->cfg.threads : 64);
    const char *options[] = {
        "listening_ports", ports, "num_threads", threads, "enable_keep_alive", "yes",
        "request_timeout_ms", "60000", "websocket_timeout_ms", "30000",
        "enable_websocket_ping_pong", "yes", NULL,
    };
    struct mg_callbacks cb = {.log_message = log_message};
    struct mg_init_data init = {.callbacks = &cb, .user_data = srv, .configuration_options = options};
    char why[256] = "";
    struct mg_error_data error = {.text = why, .text_buffer_size = sizeof why};
    srv->mg = mg_start2(&init, &error);
    if (!srv->mg) {
        snprintf(err, err_size, "cannot listen on %s: %s", ports, why[0] ? why : "civetweb failed to start");
        return SD_ERR_IO;
    }
    mg_set_request_handler(srv->mg, "/", handle_request, srv);
    sd_ws_register(srv, srv->mg);
    struct mg_server_port port[4];
    if (mg_get_server_ports(srv->mg, 4, port) < 1) {
        snprintf(err, err_size, "no listening port");
        return SD_ERR_IO;
    }
    srv->port = port[0].port;
    return SD_OK;
}

sd_status sd_server_start(const sd_server_config *config, sd_server **out, char *err, size_t err_size)
{
    *out = NULL;
    err[0] = '\0';
    if (!mg_check_feature(MG_FEATURES_WEBSOCKET)) {
        snprintf(err, err_size, "the civetweb library was built without WebSocket support");
        return SD_ERR_USAGE;
    }
    sd_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, err_size, "out of memory");
        return SD_ERR_NOMEM;
    }
    srv->cfg = *config;
    const char *addr = config->listen ? config->listen : "127.0.0.1";
    srv->loopback = !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "localhost");
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->wake, NULL);
    sd_status st = sd_store_open(config->db_path, &srv->store, err, err_size);
    if (!st && sd_server_context(srv, &srv->info)) {
        snprintf(err, err_size, "cannot set up a context (see above)");
        st = SD_ERR_USAGE;
    }
    if (!st && !(srv->hub = sd_ws_hub_new())) {
        snprintf(err, err_size, "out of memory");
        st = SD_ERR_NOMEM;
    }
    if (!st && !(config->queue_url ? sd_dispatch_start(srv) : sd_executor_start(srv))) {
        if (!err[0])
            snprintf(err, err_size, "cannot start the executor thread");
        st = SD_ERR_NOMEM;
    }
    if (!st)
        st = start_listener(srv, err, err_size);
    if (st) {
        sd_server_stop(srv);
        return st;
    }
    *out = srv;
    return SD_OK;
}

int sd_server_port(const sd_server *srv)
{
    return srv->port;
}

void sd_server_stop(sd_server *srv)
{
    if (!srv)
        return;
    if (srv->cfg.queue_url)
        sd_dispatch_stop(srv);
    else
        sd_executor_stop(srv);
    if (srv->mg)
        mg_stop(srv->mg);
    sd_store_close(srv->store);
    sd_context_free(srv->info);
    sd_ws_hub_free(srv->hub);
    pthread_cond_destroy(&srv->wake);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
