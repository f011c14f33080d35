/* The WebSocket hub: /ws?clientId=ID (also /api/ws). Each client gets the status message with
 * its sid on connect; execution messages go to the prompt's client, or to everyone when the
 * prompt named none (as ComfyUI's send_sync does). Messages from clients are ignored. */
#include "server/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ws_client {
    struct mg_connection *conn;
    char sid[80];
} ws_client;

struct sd_ws_hub {
    pthread_mutex_t lock; /* held while writing, so a closing connection waits for the write */
    ws_client *clients;
    size_t n, cap;
};

sd_ws_hub *sd_ws_hub_new(void)
{
    sd_ws_hub *hub = calloc(1, sizeof *hub);
    if (hub)
        pthread_mutex_init(&hub->lock, NULL);
    return hub;
}

void sd_ws_hub_free(sd_ws_hub *hub)
{
    if (!hub)
        return;
    pthread_mutex_destroy(&hub->lock);
    free(hub->clients);
    free(hub);
}

static void send_locked(struct mg_connection *conn, int opcode, const char *data, size_t len)
{
    mg_websocket_write(conn, opcode, data, len);
}

static void ws_ready(struct mg_connection *conn, void *user)
{
    sd_server *srv = user;
    sd_ws_hub *hub = srv->hub;
    char sid[80] = "";
    if (!sd_http_query(conn, "clientId", sid, sizeof sid) || !sid[0])
        sd_uuid4(sid, false);
    json_t *msg = json_pack("{s:s, s:o}", "type", "status", "data", sd_status_message(srv, sid));
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    pthread_mutex_lock(&hub->lock);
    /* A client reconnecting with its id replaces the old connection (as in ComfyUI). */
    for (size_t i = 0; i < hub->n; i++)
        if (!strcmp(hub->clients[i].sid, sid))
            hub->clients[i].sid[0] = '\0';
    if (hub->n == hub->cap) {
        size_t cap = hub->cap ? hub->cap * 2 : 16;
        ws_client *c = realloc(hub->clients, cap * sizeof *c);
        if (c) {
            hub->clients = c;
            hub->cap = cap;
        }
    }
    if (hub->n < hub->cap) {
        hub->clients[hub->n].conn = conn;
        snprintf(hub->clients[hub->n].sid, sizeof hub->clients[hub->n].sid, "%s", sid);
        hub->n++;
        if (text)
            send_locked(conn, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text));
    }
    pthread_mutex_unlock(&hub->lock);
    free(text);
}

static int ws_data(struct mg_connection *conn, int bits, char *data, size_t len, void *user)
{
    return (bits & 0x0f) != MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE;
}

static void ws_close(const struct mg_connection *conn, void *user)
{
    sd_ws_hub *hub = ((sd_server *)user)->hub;
    pthread_mutex_lock(&hub->lock);
    for (size_t i = 0; i < hub->n; i++)
        if (hub->clients[i].conn == conn) {
            hub->clients[i] = hub->clients[--hub->n];
            break;
        }
    pthread_mutex_unlock(&hub->lock);
}

/* The upgrade request passes the same gate as every request (token, Origin): a cross-site page
 * must not follow the queue. Non-zero refuses the connection. */
static int ws_connect(const struct mg_connection *conn, void *user)
{
    return sd_server_gate(user, conn) != 0;
}

void sd_ws_register(sd_server *srv, struct mg_context *mg)
{
    mg_set_websocket_handler(mg, "/ws$", ws_connect, ws_ready, ws_data, ws_close, srv);
    mg_set_websocket_handler(mg, "/api/ws$", ws_connect, ws_ready, ws_data, ws_close, srv);
}

static void send_frame(sd_server *srv, int opcode, const char *data, size_t len, const char *sid)
{
    sd_ws_hub *hub = srv->hub;
    pthread_mutex_lock(&hub->lock);
    for (size_t i = 0; i < hub->n; i++)
        if (!sid || !sid[0] || !strcmp(hub->clients[i].sid, sid))
            send_locked(hub->clients[i].conn, opcode, data, len);
    pthread_mutex_unlock(&hub->lock);
}

void sd_ws_send(sd_server *srv, const char *type, json_t *data, const char *sid)
{
    json_t *msg = json_pack("{s:s, s:o}", "type", type, "data", data ? data : json_object());
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (text)
        send_frame(srv, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text), sid);
    free(text);
}

void sd_ws_send_binary(sd_server *srv, const void *data, size_t len, const char *sid)
{
    send_frame(srv, MG_WEBSOCKET_OPCODE_BINARY, data, len, sid);
}

json_t *sd_status_message(sd_server *srv, const char *sid)
{
    json_t *d = json_pack("{s:{s:{s:I}}}", "status", "exec_info", "queue_remaining",
                          (json_int_t)sd_store_pending_count(srv->store));
    if (d && sid)
        json_object_set_new(d, "sid", json_string(sid));
    return d;
}

void sd_ws_broadcast_status(sd_server *srv)
{
    sd_ws_send(srv, "status", sd_status_message(srv, NULL), NULL);
}
