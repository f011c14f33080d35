/* The executor: one thread that takes queued prompts in order and runs them in one context, so
 * models loaded by one prompt stay loaded for the next (the context's model store). It sends
 * ComfyUI's execution messages over the WebSocket and writes the history entry before the final
 * `executing` (node null) message, so a client that sees it finds the outputs in /history. */
#include "server/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ws_message(void *user, const char *type, json_t *data, const char *sid)
{
    sd_ws_send(user, type, data, sid);
}

static void ws_preview(void *user, const uint8_t *rgb, int width, int height, const char *sid)
{
    sd_ws_send_preview(user, rgb, width, height, sid);
}

static bool is_stopping(void *user)
{
    sd_server *srv = user;
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    pthread_mutex_unlock(&srv->lock);
    return stopping;
}

void sd_server_finish_prompt(sd_server *srv, const char *prompt_id, const char *client_id, const char *history)
{
    if (!sd_store_finish(srv->store, prompt_id, history))
        fprintf(stderr, "sdflow serve: prompt %s: could not store its history\n", prompt_id);
    sd_ws_send(srv, "executing", json_pack("{s:n, s:n, s:s}", "node", "display_node", "prompt_id", prompt_id),
               client_id);
    sd_ws_broadcast_status(srv);
}

/* Runs one queued prompt from start to history. */
static void run_item(sd_server *srv, sd_context *ctx, const sd_queue_item *item)
{
    sd_run_sink sink = {.message = ws_message, .preview = ws_preview, .stopping = is_stopping, .user = srv};
    char *history = sd_run_prompt(ctx, item, &sink);
    if (history)
        sd_server_finish_prompt(srv, item->prompt_id, item->client_id, history);
    free(history);
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
    if (srv->cfg.queue_url) {
        sd_dispatch_interrupt(srv, prompt_id);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    if (srv->exec_ctx && srv->running_id[0] && (!prompt_id || !strcmp(prompt_id, srv->running_id)))
        sd_context_interrupt(srv->exec_ctx);
    pthread_mutex_unlock(&srv->lock);
}

void sd_executor_free_models(sd_server *srv)
{
    if (srv->cfg.queue_url) {
        sd_dispatch_free_models(srv);
        return;
    }
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
