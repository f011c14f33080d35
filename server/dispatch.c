/* With --queue redis://...: the dispatcher thread hands queued prompts to the workers (XADD to
 * sdflow:jobs), and the collector thread reads sdflow:events, forwarding each message to the
 * prompt's WebSocket client and storing the first history entry of each prompt. See
 * server/redis.h. */
#include "server/internal.h"
#include "server/redis.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool stopping(sd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    bool s = srv->stopping;
    pthread_mutex_unlock(&srv->lock);
    return s;
}

/* XADDs the job; reconnects once when the connection broke. */
static bool publish_job(sd_server *srv, redisContext **c, const sd_queue_item *it)
{
    json_t *job = json_pack("{s:I, s:s, s:s, s:s, s:s}", "number", (json_int_t)it->number, "prompt", it->prompt,
                            "extra_data", it->extra_data, "outputs", it->outputs, "client_id", it->client_id);
    char *text = job ? json_dumps(job, JSON_COMPACT) : NULL;
    json_decref(job);
    bool ok = false;
    for (int attempt = 0; text && attempt < 2 && !ok; attempt++) {
        char err[256];
        if (!*c && !(*c = sd_redis_connect(srv->cfg.queue_url, err, sizeof err))) {
            fprintf(stderr, "sdflow serve: %s\n", err);
            break;
        }
        redisReply *r = redisCommand(*c, "XADD " SD_REDIS_JOBS " * prompt_id %s job %s", it->prompt_id, text);
        ok = r && r->type == REDIS_REPLY_STRING;
        if (!r) {
            redisFree(*c);
            *c = NULL;
        }
        freeReplyObject(r);
    }
    free(text);
    return ok;
}

static void *dispatcher_main(void *arg)
{
    sd_server *srv = arg;
    redisContext *c = NULL;
    sd_queue_item item;
    bool holding = false;
    while (!stopping(srv)) {
        if (!holding) {
            pthread_mutex_lock(&srv->lock);
            while (!srv->stopping && !(holding = sd_store_take(srv->store, &item)))
                pthread_cond_wait(&srv->wake, &srv->lock);
            pthread_mutex_unlock(&srv->lock);
            if (!holding)
                break;
        }
        if (publish_job(srv, &c, &item)) {
            sd_store_mark_dispatched(srv->store, item.prompt_id);
            sd_queue_item_clear(&item);
            holding = false;
        } else {
            sleep(1); /* Redis unreachable: keep the prompt and try again */
        }
    }
    if (holding)
        sd_queue_item_clear(&item); /* left running: the next start queues it again */
    redisFree(c);
    return NULL;
}

/* The string value of field `name` in a stream entry's [k, v, k, v...] array, or NULL. */
static const redisReply *entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; fields && fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && !strcmp(fields->element[i]->str, name) &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            return fields->element[i + 1];
    return NULL;
}

/* Acts on one event of sdflow:events. */
static void handle_event(sd_server *srv, const redisReply *fields)
{
    const redisReply *pid = entry_field(fields, "prompt_id"), *client = entry_field(fields, "client_id"),
                     *type = entry_field(fields, "type"), *data = entry_field(fields, "data");
    if (!pid || !type || !data || !sd_store_is_open(srv->store, pid->str))
        return; /* an old prompt's event, or one of a job that ran twice */
    const char *sid = client ? client->str : "";
    if (!strcmp(type->str, "preview")) {
        sd_ws_send_binary(srv, data->str, data->len, sid);
    } else if (!strcmp(type->str, "done")) {
        sd_server_finish_prompt(srv, pid->str, sid, data->str);
    } else {
        json_t *d = json_loadb(data->str, data->len, 0, NULL);
        if (d)
            sd_ws_send(srv, type->str, d, sid);
    }
}

static void *collector_main(void *arg)
{
    sd_server *srv = arg;
    redisContext *c = NULL;
    char last[64] = "0-0";
    while (!stopping(srv)) {
        char err[256];
        if (!c && !(c = sd_redis_connect(srv->cfg.queue_url, err, sizeof err))) {
            fprintf(stderr, "sdflow serve: %s\n", err);
            sleep(1);
            continue;
        }
        redisReply *r = redisCommand(c, "XREAD COUNT 100 BLOCK 1000 STREAMS " SD_REDIS_EVENTS " %s", last);
        if (!r) {
            redisFree(c);
            c = NULL;
            continue;
        }
        /* [[stream, [[id, [k, v, ...]], ...]]], or nil after the block time */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
            const redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                const redisReply *e = entries->element[i];
                if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
                    continue;
                snprintf(last, sizeof last, "%s", e->element[0]->str);
                handle_event(srv, e->element[1]);
            }
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

/* Runs one command on a connection of its own (the threads' connections are busy blocking). */
static void control(sd_server *srv, const char *what, const char *fmt, const char *arg)
{
    char err[256];
    redisContext *c = sd_redis_connect(srv->cfg.queue_url, err, sizeof err);
    redisReply *r = c ? (arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt)) : NULL;
    if (!r || r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "sdflow serve: cannot send %s to the workers: %s\n", what, r ? r->str : c ? c->errstr : err);
    freeReplyObject(r);
    redisFree(c);
}

void sd_dispatch_interrupt(sd_server *srv, const char *prompt_id)
{
    if (!prompt_id)
        control(srv, "an interrupt", "INCR " SD_REDIS_INTERRUPT_EPOCH, NULL);
    else if (sd_store_is_open(srv->store, prompt_id))
        control(srv, "an interrupt", "SET " SD_REDIS_INTERRUPT "%s 1 EX 86400", prompt_id);
}

void sd_dispatch_free_models(sd_server *srv)
{
    control(srv, "/free", "INCR " SD_REDIS_FREE_EPOCH, NULL);
}

bool sd_dispatch_start(sd_server *srv)
{
    srv->thread_started = pthread_create(&srv->thread, NULL, dispatcher_main, srv) == 0;
    srv->collector_started = srv->thread_started && pthread_create(&srv->collector, NULL, collector_main, srv) == 0;
    return srv->collector_started;
}

void sd_dispatch_stop(sd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->wake);
    pthread_mutex_unlock(&srv->lock);
    if (srv->thread_started)
        pthread_join(srv->thread, NULL);
    if (srv->collector_started)
        pthread_join(srv->collector, NULL);
    srv->thread_started = srv->collector_started = false;
}
