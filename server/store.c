/* The queue and history in SQLite, with the cache's discipline: WAL, synchronous=FULL, every
 * state change one transaction. A prompt is pending, running or done; a server that died
 * leaves running prompts behind, and opening the store makes them pending again, so each
 * queued prompt finishes exactly once and is in the history once. */
#include "server/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DISPATCHED: handed to Redis workers; unlike RUNNING it stays so across restarts (the job is
 * in Redis and will be run there). */
enum { PENDING = 0, RUNNING = 1, DONE = 2, DISPATCHED = 3 };

struct sd_store {
    sqlite3 *db;
    pthread_mutex_t lock;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS prompts("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " number INTEGER NOT NULL,"     /* ComfyUI's queue number; the queue runs in its order */
    " prompt_id TEXT NOT NULL UNIQUE,"
    " prompt TEXT NOT NULL,"
    " extra_data TEXT NOT NULL,"
    " outputs TEXT NOT NULL,"
    " client_id TEXT NOT NULL,"
    " state INTEGER NOT NULL,"
    " history TEXT,"                /* the history entry once done */
    " done_seq INTEGER);"           /* order of completion */
    "CREATE INDEX IF NOT EXISTS prompts_state ON prompts(state, number, seq);"
    "UPDATE prompts SET state=0 WHERE state=1;";

sd_status sd_store_open(const char *path, sd_store **out, char *err, size_t err_size)
{
    *out = NULL;
    sd_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, err_size, "out of memory");
        return SD_ERR_NOMEM;
    }
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(st->db, 10000);
        rc = sqlite3_exec(st->db, schema, NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s", path, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        sqlite3_close(st->db);
        free(st);
        return SD_ERR_IO;
    }
    pthread_mutex_init(&st->lock, NULL);
    *out = st;
    return SD_OK;
}

void sd_store_close(sd_store *st)
{
    if (!st)
        return;
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static sqlite3_stmt *prepare(sd_store *st, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        fprintf(stderr, "sdflow serve: queue database: %s\n", sqlite3_errmsg(st->db));
    return s;
}

static bool exec(sd_store *st, const char *sql)
{
    return sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

bool sd_store_push(sd_store *st, const char *prompt_id, const char *prompt, const char *extra_data,
                   const char *outputs, const char *client_id, bool front, long long *number)
{
    pthread_mutex_lock(&st->lock);
    bool ok = exec(st, "BEGIN IMMEDIATE");
    sqlite3_stmt *q = ok ? prepare(st, front ? "SELECT coalesce(min(number), 0) - 1 FROM prompts"
                                             : "SELECT coalesce(max(number), 0) + 1 FROM prompts")
                         : NULL;
    ok = q && sqlite3_step(q) == SQLITE_ROW;
    *number = ok ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    sqlite3_stmt *ins = ok ? prepare(st, "INSERT INTO prompts(number, prompt_id, prompt, extra_data,"
                                         " outputs, client_id, state) VALUES(?,?,?,?,?,?,0)")
                           : NULL;
    if (ins) {
        sqlite3_bind_int64(ins, 1, *number);
        sqlite3_bind_text(ins, 2, prompt_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, prompt, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, extra_data, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 5, outputs, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 6, client_id ? client_id : "", -1, SQLITE_STATIC);
    }
    ok = ins && sqlite3_step(ins) == SQLITE_DONE;
    sqlite3_finalize(ins);
    ok = exec(st, ok ? "COMMIT" : "ROLLBACK") && ok;
    pthread_mutex_unlock(&st->lock);
    return ok;
}

static char *column_dup(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return strdup(t ? t : "");
}

bool sd_store_take(sd_store *st, sd_queue_item *item)
{
    memset(item, 0, sizeof *item);
    pthread_mutex_lock(&st->lock);
    bool found = false;
    bool ok = exec(st, "BEGIN IMMEDIATE");
    sqlite3_stmt *q = ok ? prepare(st, "SELECT number, prompt_id, prompt, extra_data, outputs, client_id"
                                       " FROM prompts WHERE state=0 ORDER BY number, seq LIMIT 1")
                         : NULL;
    if (q && sqlite3_step(q) == SQLITE_ROW) {
        item->number = sqlite3_column_int64(q, 0);
        snprintf(item->prompt_id, sizeof item->prompt_id, "%s", sqlite3_column_text(q, 1));
        item->prompt = column_dup(q, 2);
        item->extra_data = column_dup(q, 3);
        item->outputs = column_dup(q, 4);
        snprintf(item->client_id, sizeof item->client_id, "%s", sqlite3_column_text(q, 5));
        found = item->prompt && item->extra_data && item->outputs;
    }
    sqlite3_finalize(q);
    if (found) {
        sqlite3_stmt *u = prepare(st, "UPDATE prompts SET state=1 WHERE prompt_id=?");
        sqlite3_bind_text(u, 1, item->prompt_id, -1, SQLITE_STATIC);
        found = u && sqlite3_step(u) == SQLITE_DONE;
        sqlite3_finalize(u);
    }
    if (ok)
        exec(st, found ? "COMMIT" : "ROLLBACK");
    pthread_mutex_unlock(&st->lock);
    if (!found)
        sd_queue_item_clear(item);
    return found;
}

void sd_queue_item_clear(sd_queue_item *item)
{
    free(item->prompt);
    free(item->extra_data);
    free(item->outputs);
    memset(item, 0, sizeof *item);
}

bool sd_store_finish(sd_store *st, const char *prompt_id, const char *history_json)
{
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *u = prepare(st, "UPDATE prompts SET state=2, history=?,"
                                  " done_seq=(SELECT coalesce(max(done_seq), 0) + 1 FROM prompts)"
                                  " WHERE prompt_id=? AND state<>2");
    if (u) {
        sqlite3_bind_text(u, 1, history_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(u, 2, prompt_id, -1, SQLITE_STATIC);
    }
    bool ok = u && sqlite3_step(u) == SQLITE_DONE && sqlite3_changes(st->db) == 1;
    sqlite3_finalize(u);
    pthread_mutex_unlock(&st->lock);
    return ok;
}

bool sd_store_mark_dispatched(sd_store *st, const char *prompt_id)
{
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *u = prepare(st, "UPDATE prompts SET state=3 WHERE prompt_id=? AND state=1");
    if (u)
        sqlite3_bind_text(u, 1, prompt_id, -1, SQLITE_STATIC);
    bool ok = u && sqlite3_step(u) == SQLITE_DONE;
    sqlite3_finalize(u);
    pthread_mutex_unlock(&st->lock);
    return ok;
}

bool sd_store_is_open(sd_store *st, const char *prompt_id)
{
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *q = prepare(st, "SELECT 1 FROM prompts WHERE prompt_id=? AND state IN (1, 3)");
    if (q)
        sqlite3_bind_text(q, 1, prompt_id, -1, SQLITE_STATIC);
    bool open = q && sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    return open;
}

long long sd_store_pending_count(sd_store *st)
{
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *q = prepare(st, "SELECT count(*) FROM prompts WHERE state<>2");
    long long n = q && sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    return n;
}

static json_t *parse_column(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_null();
}

/* [number, prompt_id, prompt, extra_data, outputs_to_execute] from the row's columns. */
static json_t *queue_entry(sqlite3_stmt *q)
{
    return json_pack("[I, s, o, o, o]", (json_int_t)sqlite3_column_int64(q, 0),
                     (const char *)sqlite3_column_text(q, 1), parse_column(q, 2), parse_column(q, 3),
                     parse_column(q, 4));
}

json_t *sd_store_queue_json(sd_store *st)
{
    json_t *running = json_array(), *pending = json_array();
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *q = prepare(st, "SELECT number, prompt_id, prompt, extra_data, outputs, state"
                                  " FROM prompts WHERE state<>2 ORDER BY number, seq");
    while (q && sqlite3_step(q) == SQLITE_ROW)
        json_array_append_new(sqlite3_column_int(q, 5) == PENDING ? pending : running, queue_entry(q));
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    return json_pack("{s:o, s:o}", "queue_running", running, "queue_pending", pending);
}

/* Runs `sql` (one '?' for the id) for every string in ids. */
static void delete_ids(sd_store *st, const char *sql, const json_t *ids)
{
    sqlite3_stmt *d = prepare(st, sql);
    size_t i;
    const json_t *id;
    json_array_foreach(ids, i, id)
    {
        if (!d || !json_is_string(id))
            continue;
        sqlite3_bind_text(d, 1, json_string_value(id), -1, SQLITE_TRANSIENT);
        sqlite3_step(d);
        sqlite3_reset(d);
    }
    sqlite3_finalize(d);
}

void sd_store_delete_pending(sd_store *st, const json_t *ids)
{
    pthread_mutex_lock(&st->lock);
    if (ids)
        delete_ids(st, "DELETE FROM prompts WHERE state=0 AND prompt_id=?", ids);
    else
        exec(st, "DELETE FROM prompts WHERE state=0");
    pthread_mutex_unlock(&st->lock);
}

json_t *sd_store_history_json(sd_store *st, const char *prompt_id, long long max_items)
{
    json_t *out = json_object();
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *q = prepare(st, prompt_id ? "SELECT prompt_id, history FROM prompts"
                                              " WHERE state=2 AND prompt_id=?"
                                            : "SELECT prompt_id, history FROM (SELECT * FROM prompts"
                                              " WHERE state=2 ORDER BY done_seq DESC LIMIT ?)"
                                              " ORDER BY done_seq");
    if (q && prompt_id)
        sqlite3_bind_text(q, 1, prompt_id, -1, SQLITE_STATIC);
    else if (q)
        sqlite3_bind_int64(q, 1, max_items < 0 ? -1 : max_items);
    while (q && sqlite3_step(q) == SQLITE_ROW)
        json_object_set_new(out, (const char *)sqlite3_column_text(q, 0), parse_column(q, 1));
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->lock);
    return out;
}

void sd_store_delete_history(sd_store *st, const json_t *ids)
{
    pthread_mutex_lock(&st->lock);
    if (ids)
        delete_ids(st, "DELETE FROM prompts WHERE state=2 AND prompt_id=?", ids);
    else
        exec(st, "DELETE FROM prompts WHERE state=2");
    pthread_mutex_unlock(&st->lock);
}
