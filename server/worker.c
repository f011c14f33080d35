/* `sdflow worker`: runs prompts taken from Redis Streams in one context (models stay loaded),
 * sending their messages and history to the serving process through sdflow:events. See
 * server/redis.h for the protocol. */
#include "server/internal.h"
#include "server/parse.h"
#include "server/redis.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct worker {
    const sd_worker_config *cfg;
    redisContext *c;
    volatile sig_atomic_t *stop;
    sd_context *ctx;
    pthread_mutex_t lock;
    char job_id[64];   /* the stream entry being run, "" when idle */
    char prompt_id[40]; /* its prompt */
    long long interrupt_epoch; /* SD_REDIS_INTERRUPT_EPOCH when the job started */
    long long free_epoch;      /* SD_REDIS_FREE_EPOCH when ctx was made */
    bool quit;         /* the heartbeat thread ends */
} worker;

/* The integer value of key (0 when unset). */
static long long get_counter(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "GET %s", key);
    long long v = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

/* True when /interrupt asked for the running prompt: its own key, or a newer epoch. */
static bool interrupt_asked(redisContext *c, const char *prompt_id, long long epoch)
{
    redisReply *r = redisCommand(c, "MGET " SD_REDIS_INTERRUPT_EPOCH " " SD_REDIS_INTERRUPT "%s", prompt_id);
    bool asked = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 ((r->element[0]->type == REDIS_REPLY_STRING && strtoll(r->element[0]->str, NULL, 10) > epoch) ||
                  r->element[1]->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    return asked;
}

static void event(worker *w, const sd_queue_item *it, const char *type, const char *data, size_t len)
{
    redisReply *r = redisCommand(w->c, "XADD " SD_REDIS_EVENTS " MAXLEN ~ 100000 * prompt_id %s client_id %s type %s"
                                       " data %b", it->prompt_id, it->client_id, type, data, len);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "sdflow worker: cannot send %s of prompt %s: %s\n", type, it->prompt_id,
                r ? r->str : w->c->errstr);
    freeReplyObject(r);
}

typedef struct sink_state {
    worker *w;
    const sd_queue_item *item;
} sink_state;

/* Lists the files of an `executed` message under SD_REDIS_FILES<prompt_id>. */
static void record_files(worker *w, const sd_queue_item *it, const json_t *data)
{
    const char *kind;
    json_t *list, *ref;
    size_t i;
    json_object_foreach(json_object_get(data, "output"), kind, list)
    {
        json_array_foreach(list, i, ref)
        {
            char *text = json_dumps(ref, JSON_COMPACT);
            if (text)
                freeReplyObject(redisCommand(w->c, "RPUSH " SD_REDIS_FILES "%s %s", it->prompt_id, text));
            free(text);
        }
    }
}

/* Removes the files an earlier attempt of this job wrote (listed by record_files). */
static void remove_earlier_files(worker *w, const sd_queue_item *it)
{
    redisReply *r = redisCommand(w->c, "LRANGE " SD_REDIS_FILES "%s 0 -1", it->prompt_id);
    size_t removed = 0;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        json_t *ref = json_loads(r->element[i]->str ? r->element[i]->str : "", 0, NULL);
        const char *name = json_string_value(json_object_get(ref, "filename"));
        const char *sub = json_string_value(json_object_get(ref, "subfolder"));
        const char *type = json_string_value(json_object_get(ref, "type"));
        const char *dir = !type ? NULL
                          : !strcmp(type, "output") ? sd_context_dir(w->ctx, SD_DIR_OUTPUT)
                          : !strcmp(type, "temp") ? sd_context_dir(w->ctx, SD_DIR_TEMP)
                                                  : NULL;
        char path[4096];
        if (dir && name && sub && sd_relpath_ok(name, false) && sd_relpath_ok(sub, true) &&
            (size_t)snprintf(path, sizeof path, "%s/%s%s%s", dir, sub, *sub ? "/" : "", name) < sizeof path &&
            unlink(path) == 0)
            removed++;
        json_decref(ref);
    }
    freeReplyObject(r);
    freeReplyObject(redisCommand(w->c, "DEL " SD_REDIS_FILES "%s", it->prompt_id));
    if (removed)
        fprintf(stderr, "sdflow worker: removed %zu file(s) of an earlier attempt of prompt %s\n", removed,
                it->prompt_id);
}

static void sink_message(void *user, const char *type, json_t *data, const char *sid)
{
    sink_state *s = user;
    if (!strcmp(type, "executed"))
        record_files(s->w, s->item, data);
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (text)
        event(s->w, s->item, type, text, strlen(text));
    free(text);
}

static void sink_preview(void *user, const uint8_t *rgb, int width, int height, const char *sid)
{
    sink_state *s = user;
    size_t len = 0;
    unsigned char *frame = sd_preview_frame(rgb, width, height, &len);
    if (frame)
        event(s->w, s->item, "preview", (const char *)frame, len);
    free(frame);
}

static bool sink_stopping(void *user)
{
    return *((sink_state *)user)->w->stop != 0;
}

/* Keeps the running job claimed (XCLAIM with min-idle 0 resets its idle time), so no other
 * worker takes it over, and turns a stop request or an /interrupt (polled every tick) into an
 * interrupt of the run. */
static void *heartbeat_main(void *arg)
{
    worker *w = arg;
    char err[256];
    redisContext *c = sd_redis_connect(w->cfg->queue_url, err, sizeof err);
    enum { TICK_MS = 100 };
    int period_ms = w->cfg->claim_idle_ms / 4 > TICK_MS ? w->cfg->claim_idle_ms / 4 : TICK_MS;
    for (int since_claim = period_ms;; since_claim += TICK_MS) {
        pthread_mutex_lock(&w->lock);
        bool quit = w->quit;
        char id[64], pid[40];
        snprintf(id, sizeof id, "%s", w->job_id);
        snprintf(pid, sizeof pid, "%s", w->prompt_id);
        long long epoch = w->interrupt_epoch;
        bool stop = *w->stop != 0;
        pthread_mutex_unlock(&w->lock);
        if (quit)
            break;
        if (id[0] && (stop || (c && interrupt_asked(c, pid, epoch)))) {
            pthread_mutex_lock(&w->lock);
            if (w->ctx && !strcmp(w->job_id, id))
                sd_context_interrupt(w->ctx);
            pthread_mutex_unlock(&w->lock);
        }
        if (c && id[0] && since_claim >= period_ms) {
            freeReplyObject(redisCommand(c, "XCLAIM " SD_REDIS_JOBS " " SD_REDIS_GROUP " %s 0 %s JUSTID",
                                         w->cfg->name, id));
            since_claim = 0;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    redisFree(c);
    return NULL;
}

/* The queue item of a job entry [id, [prompt_id, ID, job, JSON]]; false when malformed. */
static bool job_item(const redisReply *e, sd_queue_item *it)
{
    memset(it, 0, sizeof *it);
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    const redisReply *f = e->element[1], *pid = NULL, *job = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        if (f->element[i]->type != REDIS_REPLY_STRING || f->element[i + 1]->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(f->element[i]->str, "prompt_id"))
            pid = f->element[i + 1];
        else if (!strcmp(f->element[i]->str, "job"))
            job = f->element[i + 1];
    }
    json_t *j = job ? json_loadb(job->str, job->len, 0, NULL) : NULL;
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    const char *extra = json_string_value(json_object_get(j, "extra_data"));
    const char *outputs = json_string_value(json_object_get(j, "outputs"));
    const char *client = json_string_value(json_object_get(j, "client_id"));
    bool ok = pid && prompt && extra && outputs && strlen(pid->str) < sizeof it->prompt_id;
    if (ok) {
        snprintf(it->prompt_id, sizeof it->prompt_id, "%s", pid->str);
        snprintf(it->client_id, sizeof it->client_id, "%s", client ? client : "");
        it->number = json_integer_value(json_object_get(j, "number"));
        it->prompt = strdup(prompt);
        it->extra_data = strdup(extra);
        it->outputs = strdup(outputs);
        ok = it->prompt && it->extra_data && it->outputs;
    }
    json_decref(j);
    if (!ok)
        sd_queue_item_clear(it);
    return ok;
}

/* Makes a new context (the old one, with its loaded models, is dropped): /free. */
static bool renew_context(worker *w, long long free_epoch)
{
    sd_context *ctx = NULL;
    sd_status st = sd_context_new(&ctx);
    if (!st && w->cfg->configure && (st = w->cfg->configure(ctx, w->cfg->configure_user)))
        fprintf(stderr, "sdflow worker: %s\n", sd_context_errmsg(ctx));
    if (st) {
        sd_context_free(ctx);
        return false;
    }
    pthread_mutex_lock(&w->lock);
    sd_context *old = w->ctx;
    w->ctx = ctx;
    w->free_epoch = free_epoch;
    pthread_mutex_unlock(&w->lock);
    sd_context_free(old);
    fprintf(stderr, "sdflow worker: %s dropped its loaded models (/free)\n", w->cfg->name);
    return true;
}

/* Runs one job entry, sends its history, acknowledges it (unless stopping: it is left to
 * another worker). */
static void run_job(worker *w, const redisReply *e)
{
    const char *id = e->element[0]->str;
    sd_queue_item it;
    if (!job_item(e, &it)) {
        fprintf(stderr, "sdflow worker: job %s is malformed; dropped\n", id);
        freeReplyObject(redisCommand(w->c, "XACK " SD_REDIS_JOBS " " SD_REDIS_GROUP " %s", id));
        return;
    }
    redisReply *done = redisCommand(w->c, "EXISTS " SD_REDIS_DONE "%s", it.prompt_id);
    bool ran = done && done->type == REDIS_REPLY_INTEGER && done->integer == 1;
    freeReplyObject(done);
    if (ran) { /* its worker died after sending the history, before acknowledging */
        fprintf(stderr, "sdflow worker: prompt %s already ran; acknowledged\n", it.prompt_id);
        freeReplyObject(redisCommand(w->c, "XACK " SD_REDIS_JOBS " " SD_REDIS_GROUP " %s", id));
        sd_queue_item_clear(&it);
        return;
    }
    remove_earlier_files(w, &it);
    long long free_epoch = get_counter(w->c, SD_REDIS_FREE_EPOCH);
    if (free_epoch != w->free_epoch && !renew_context(w, free_epoch)) {
        sd_queue_item_clear(&it); /* not acknowledged: another worker runs it */
        return;
    }
    long long epoch = get_counter(w->c, SD_REDIS_INTERRUPT_EPOCH);
    pthread_mutex_lock(&w->lock);
    snprintf(w->job_id, sizeof w->job_id, "%s", id);
    snprintf(w->prompt_id, sizeof w->prompt_id, "%s", it.prompt_id);
    w->interrupt_epoch = epoch;
    pthread_mutex_unlock(&w->lock);
    sink_state s = {.w = w, .item = &it};
    sd_run_sink sink = {.message = sink_message, .preview = sink_preview, .stopping = sink_stopping, .user = &s};
    char *history = sd_run_prompt(w->ctx, &it, &sink);
    pthread_mutex_lock(&w->lock);
    w->job_id[0] = w->prompt_id[0] = '\0';
    pthread_mutex_unlock(&w->lock);
    if (history) {
        /* The history and the done mark in one transaction: a retry then either runs the job
         * (neither was stored) or only acknowledges it (both were). */
        freeReplyObject(redisCommand(w->c, "MULTI"));
        event(w, &it, "done", history, strlen(history));
        freeReplyObject(redisCommand(w->c, "SET " SD_REDIS_DONE "%s 1 EX 604800", it.prompt_id));
        redisReply *r = redisCommand(w->c, "EXEC");
        bool stored = r && r->type == REDIS_REPLY_ARRAY;
        freeReplyObject(r);
        if (stored) {
            freeReplyObject(redisCommand(w->c, "XACK " SD_REDIS_JOBS " " SD_REDIS_GROUP " %s", id));
            freeReplyObject(redisCommand(w->c, "DEL " SD_REDIS_FILES "%s " SD_REDIS_INTERRUPT "%s", it.prompt_id,
                                         it.prompt_id));
        }
    }
    free(history);
    sd_queue_item_clear(&it);
}

/* The next job entry: one taken over from a dead worker, else a new one (blocks up to 1 s).
 * Returns the reply holding it and points *entry into it; NULL when none. */
static redisReply *next_job(worker *w, const redisReply **entry)
{
    *entry = NULL;
    /* XAUTOCLAIM: [next-id, [[id, fields], ...], [deleted ids]] */
    redisReply *r = redisCommand(w->c, "XAUTOCLAIM " SD_REDIS_JOBS " " SD_REDIS_GROUP " %s %d 0-0 COUNT 1",
                                 w->cfg->name, w->cfg->claim_idle_ms);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_ARRAY &&
        r->element[1]->elements > 0) {
        *entry = r->element[1]->element[0];
        return r;
    }
    freeReplyObject(r);
    /* XREADGROUP: [[stream, [[id, fields]]]] or nil */
    r = redisCommand(w->c, "XREADGROUP GROUP " SD_REDIS_GROUP " %s COUNT 1 BLOCK 1000 STREAMS " SD_REDIS_JOBS " >",
                     w->cfg->name);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2 &&
        r->element[0]->element[1]->elements > 0) {
        *entry = r->element[0]->element[1]->element[0];
        return r;
    }
    freeReplyObject(r);
    return NULL;
}

sd_status sd_worker_run(const sd_worker_config *cfg, volatile sig_atomic_t *stop, char *err, size_t err_size)
{
    worker w = {.cfg = cfg, .stop = stop};
    if (!(w.c = sd_redis_connect(cfg->queue_url, err, err_size)))
        return SD_ERR_IO;
    redisReply *r = redisCommand(w.c, "XGROUP CREATE " SD_REDIS_JOBS " " SD_REDIS_GROUP " 0 MKSTREAM");
    if (!r || (r->type == REDIS_REPLY_ERROR && !strstr(r->str, "BUSYGROUP"))) {
        snprintf(err, err_size, "%s: cannot create the consumer group: %s", cfg->queue_url, r ? r->str : w.c->errstr);
        freeReplyObject(r);
        redisFree(w.c);
        return SD_ERR_IO;
    }
    freeReplyObject(r);
    fprintf(stderr, "sdflow worker: %s taking jobs from %s\n", cfg->name, cfg->queue_url);
    w.free_epoch = get_counter(w.c, SD_REDIS_FREE_EPOCH);
    sd_status st = sd_context_new(&w.ctx);
    if (!st && cfg->configure && (st = cfg->configure(w.ctx, cfg->configure_user)))
        snprintf(err, err_size, "%s", sd_context_errmsg(w.ctx));
    pthread_t hb;
    pthread_mutex_init(&w.lock, NULL);
    bool hb_started = !st && pthread_create(&hb, NULL, heartbeat_main, &w) == 0;
    while (hb_started && !*stop) {
        const redisReply *entry;
        redisReply *job = next_job(&w, &entry);
        if (job && entry && entry->type == REDIS_REPLY_ARRAY && entry->elements == 2 &&
            entry->element[0]->type == REDIS_REPLY_STRING)
            run_job(&w, entry);
        freeReplyObject(job);
        if (w.c->err) {
            snprintf(err, err_size, "%s: %s", cfg->queue_url, w.c->errstr);
            st = SD_ERR_IO;
            break;
        }
    }
    if (hb_started) {
        pthread_mutex_lock(&w.lock);
        w.quit = true;
        pthread_mutex_unlock(&w.lock);
        pthread_join(hb, NULL);
    }
    pthread_mutex_destroy(&w.lock);
    sd_context_free(w.ctx);
    redisFree(w.c);
    return st;
}
