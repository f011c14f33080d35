/* Persistent node-output cache in SQLite (docs/design.md §5, docs/caching.md).
 *
 * Schema: entries(key, node_type, payload, checksum, size, last_used) and
 * file_hashes(path, size, mtime_ns, ctime_ns, inode, dev, hash) and file_sha256 (the same columns; the
 * SHA-256 that A1111's "Model hash" is made from, core/comfy_export.c). A payload is the serialized outputs of one
 * node; its checksum is BLAKE2b(key || payload), so a flipped bit or a payload under the wrong
 * key is a miss. Opening is serialized across processes by an flock on "<db>.lock" so that
 * schema setup and the repair of a corrupt file (moved aside, rebuilt) never race. */
#include "core/cache.h"
#include "core/checked.h"
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_FORMAT "2" /* 2: file_hashes gained ctime_ns and dev */
#define BUSY_TIMEOUT_MS 10000
#define DEFAULT_BUDGET ((int64_t)8 << 30)

struct sd_cache {
    sd_context *ctx;
    sqlite3 *db;
    char *path;
    int64_t budget; /* payload bytes kept after a put; 0: no limit */
    dev_t dev;      /* identity of the database file opened */
    ino_t ino;
    bool corrupt;   /* a statement reported corruption: repair after the current operation */
    bool broken;    /* repair failed: the database is not used any more */
};

/* ---- Opening, schema, repair. ---- */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS entries("
    "  key BLOB PRIMARY KEY, node_type TEXT NOT NULL, payload BLOB NOT NULL,"
    "  checksum BLOB NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,"
    "  last_used INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS entries_lru ON entries(last_used);"
    "CREATE TABLE IF NOT EXISTS file_hashes("
    "  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, dev INTEGER NOT NULL, hash BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS file_sha256("
    "  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, dev INTEGER NOT NULL, hash BLOB NOT NULL);"
    /* The payload total, kept by triggers so a store need not scan every entry. */
    "CREATE TABLE IF NOT EXISTS totals(id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO totals VALUES(0, (SELECT coalesce(sum(size), 0) FROM entries));"
    "CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries"
    "  BEGIN UPDATE totals SET bytes = bytes + NEW.size; END;"
    "CREATE TRIGGER IF NOT EXISTS entries_deleted AFTER DELETE ON entries"
    "  BEGIN UPDATE totals SET bytes = bytes - OLD.size; END;";

static bool is_corruption(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Creates every missing parent directory of path. */
static int make_parent_dirs(const char *path)
{
    char *dir = sd_strdup(path);
    if (!dir)
        return ENOMEM;
    int err = 0;
    for (char *p = dir + 1; *p && !err; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            err = errno;
        *p = '/';
    }
    free(dir);
    return err;
}

/* True when the database's meta table names this cache format. */
static bool format_current(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    bool same = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = 'format'", -1, &s, NULL) == SQLITE_OK &&
                sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) &&
                strcmp((const char *)sqlite3_column_text(s, 0), CACHE_FORMAT) == 0;
    sqlite3_finalize(s);
    return same;
}

/* Runs the setup statements on an open handle; returns the SQLite code of the first failure. */
static int setup_db(sqlite3 *db, char **errmsg)
{
    static const char *const pragmas[] = {
        "PRAGMA auto_vacuum=INCREMENTAL", /* effective only on a new, empty database */
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
    };
    int rc = sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof pragmas / sizeof pragmas[0]; i++)
        rc = sqlite3_exec(db, pragmas[i], NULL, NULL, errmsg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, errmsg);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);", NULL,
                      NULL, errmsg);
    /* The tables of another cache format can not be read back: start them afresh. */
    if (rc == SQLITE_OK && !format_current(db))
        rc = sqlite3_exec(db, "DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS totals;"
                              "DROP TABLE IF EXISTS file_hashes; DROP TABLE IF EXISTS file_sha256;",
                          NULL, NULL, errmsg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, schema_sql, NULL, NULL, errmsg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "INSERT OR REPLACE INTO meta VALUES('format', '" CACHE_FORMAT "');", NULL, NULL,
                          errmsg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, errmsg);
    else
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Moves a corrupt database (and its WAL) aside as <path>.corrupt-<time>; drops its shm. */
static sd_status move_aside(sd_context *ctx, const char *path)
{
    char *aside = sd_strfmt("%s.corrupt-%lld", path, (long long)time(NULL));
    char *wal = sd_strfmt("%s-wal", path), *shm = sd_strfmt("%s-shm", path);
    char *aside_wal = aside ? sd_strfmt("%s-wal", aside) : NULL;
    sd_status st = SD_OK;
    if (!aside || !wal || !shm || !aside_wal) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (rename(path, aside) != 0) {
        st = sd_set_error(ctx, SD_ERR_CACHE, "%s: cannot move the corrupt cache aside: %s", path,
                          strerror(errno));
        goto done;
    }
    if (rename(wal, aside_wal) != 0 && errno != ENOENT)
        unlink(wal);
    unlink(shm);
    sd_warn(ctx, "cache database %s was corrupt: moved to %s and rebuilt", path, aside);
done:
    free(aside);
    free(wal);
    free(shm);
    free(aside_wal);
    return st;
}

/* The payload budget: SDFLOW_CACHE_MAX_SIZE, where 0 means no limit (nothing is evicted). */
static int64_t env_budget(sd_context *ctx)
{
    const char *env = getenv("SDFLOW_CACHE_MAX_SIZE");
    int64_t v;
    if (!env || !*env)
        return DEFAULT_BUDGET;
    if (sd_parse_size(env, &v) == SD_OK)
        return v;
    sd_warn(ctx, "SDFLOW_CACHE_MAX_SIZE='%s' is not a size (like 500M or 8G): using 8G", env);
    return DEFAULT_BUDGET;
}

/* Takes the open/repair lock "<path>.lock"; returns its descriptor (closing it unlocks), or -1
 * with the error set. */
static int lock_cache(sd_context *ctx, const char *path)
{
    char *lock_path = sd_strfmt("%s.lock", path);
    if (!lock_path) {
        sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        return -1;
    }
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        sd_set_error(ctx, SD_ERR_CACHE, "%s: %s", lock_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    free(lock_path);
    return fd;
}

/* With the lock held: opens path and sets it up; a corrupt file is moved aside and replaced by
 * a fresh database once. *id identifies the file opened. */
static sd_status open_locked(sd_context *ctx, const char *path, sqlite3 **out, struct stat *id)
{
    *out = NULL;
    for (int attempt = 0;; attempt++) {
        sqlite3 *db = NULL;
        char *msg = NULL;
        int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
        if (rc == SQLITE_OK)
            rc = setup_db(db, &msg);
        if (rc == SQLITE_OK && stat(path, id) == 0) {
            sqlite3_free(msg);
            *out = db;
            return SD_OK;
        }
        if (!msg && db)
            msg = sqlite3_mprintf("%s", rc == SQLITE_OK ? strerror(errno) : sqlite3_errmsg(db));
        sd_status st = sd_set_error(ctx, SD_ERR_CACHE, "%s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close(db);
        if (attempt > 0 || !is_corruption(rc))
            return st;
        if ((st = move_aside(ctx, path)))
            return st;
    }
}

sd_status sd_cache_open(sd_context *ctx, const char *path, sd_cache **out)
{
    *out = NULL;
    sd_status st = SD_OK;
    sd_cache *c = calloc(1, sizeof *c);
    int lock_fd = -1;
    if (!c || !(c->path = sd_strdup(path))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    int err = make_parent_dirs(path);
    if (err) {
        st = sd_set_error(ctx, SD_ERR_CACHE, "%s: cannot create its directory: %s", path, strerror(err));
        goto done;
    }
    if ((lock_fd = lock_cache(ctx, path)) < 0) {
        st = SD_ERR_CACHE;
        goto done;
    }
    struct stat id;
    if ((st = open_locked(ctx, path, &c->db, &id)))
        goto done;
    c->dev = id.st_dev;
    c->ino = id.st_ino;
    c->ctx = ctx;
    c->budget = env_budget(ctx);
done:
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock */
    if (st) {
        if (c)
            free(c->path);
        free(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

void sd_cache_close(sd_cache *c)
{
    if (!c)
        return;
    sqlite3_close(c->db);
    free(c->path);
    free(c);
}

static void cache_free(void *p)
{
    sd_cache_close(p);
}

sd_cache *sd_context_cache(sd_context *ctx)
{
    sd_cache *c = sd_context_ext(ctx, SD_EXT_CACHE);
    if (c || ctx->cache_failed || !ctx->cache_path)
        return c;
    char saved[sizeof ctx->errmsg];
    memcpy(saved, ctx->errmsg, sizeof saved);
    if (sd_cache_open(ctx, ctx->cache_path, &c) == SD_OK &&
        sd_context_set_ext(ctx, SD_EXT_CACHE, c, cache_free) != SD_OK) {
        sd_cache_close(c);
        c = NULL;
    }
    if (!c) {
        sd_warn(ctx, "cache disabled for this run: %s", ctx->errmsg);
        ctx->cache_failed = true;
    }
    memcpy(ctx->errmsg, saved, sizeof saved);
    return c;
}

/* ---- Statements. ---- */

/* A failing SQLite call in get/put: warn; corruption is repaired by settle(). */
static void db_warn(sd_cache *c, int rc, const char *what)
{
    c->corrupt |= is_corruption(rc);
    sd_warn(c->ctx, "cache %s: %s: %s", c->path, what, sqlite3_errmsg(c->db));
}

/* After an operation (its statements finalized) that found the database corrupt: moves the
 * file aside, unless another process already replaced it, and goes on with a fresh one. The
 * context's error message is left as it was: a cache problem never fails a run. */
static void settle(sd_cache *c)
{
    if (!c->corrupt)
        return;
    c->corrupt = false;
    c->broken = true;
    char saved[sizeof c->ctx->errmsg];
    memcpy(saved, c->ctx->errmsg, sizeof saved);
    int fd = lock_cache(c->ctx, c->path);
    if (fd >= 0) {
        sqlite3_close_v2(c->db);
        c->db = NULL;
        struct stat now, id;
        if (stat(c->path, &now) == 0 && now.st_dev == c->dev && now.st_ino == c->ino)
            move_aside(c->ctx, c->path);
        if (open_locked(c->ctx, c->path, &c->db, &id) == SD_OK) {
            c->dev = id.st_dev;
            c->ino = id.st_ino;
            c->broken = false;
        }
        close(fd);
    }
    if (c->broken)
        sd_warn(c->ctx, "cache disabled: %s", c->ctx->errmsg);
    memcpy(c->ctx->errmsg, saved, sizeof saved);
}

static sqlite3_stmt *prepare(sd_cache *c, const char *sql)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        db_warn(c, rc, "prepare");
    return s;
}

static int exec(sd_cache *c, const char *sql)
{
    return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

/* Marks an entry used now: last_used is strictly increasing within a database, so LRU order
 * is exact even when two uses fall within one clock tick. */
static int touch(sd_cache *c, const sd_key *key)
{
    sqlite3_stmt *s = prepare(c, "UPDATE entries SET last_used = max(?2, "
                                 "(SELECT coalesce(max(last_used), 0) + 1 FROM entries)) WHERE key = ?1");
    if (!s)
        return SQLITE_ERROR;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sqlite3_bind_blob(s, 1, key->b, sizeof key->b, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void checksum(const sd_key *key, const void *payload, size_t len, sd_key *out)
{
    sd_hasher h;
    sd_hasher_init(&h);
    sd_hasher_key(&h, key);
    sd_hasher_bytes(&h, payload, len);
    sd_hasher_final(&h, out);
}

/* Payload: u32 count, then per value u64 length + sd_value_serialize bytes. */
static bool payload_decode(const unsigned char *p, size_t len, size_t n_outputs, sd_value **outs)
{
    uint32_t count;
    if (len < 4)
        return false;
    memcpy(&count, p, 4);
    p += 4;
    len -= 4;
    if (count != n_outputs)
        return false;
    for (size_t i = 0; i < n_outputs; i++) {
        uint64_t vlen;
        if (len < 8)
            goto fail;
        memcpy(&vlen, p, 8);
        p += 8;
        len -= 8;
        if (vlen > len || sd_value_deserialize(p, (size_t)vlen, &outs[i]) != SD_OK)
            goto fail;
        p += vlen;
        len -= vlen;
    }
    if (len == 0)
        return true;
fail:
    for (size_t i = 0; i < n_outputs; i++) {
        sd_value_unref(outs[i]);
        outs[i] = NULL;
    }
    return false;
}

static bool payload_encode(size_t n, sd_value *const *values, unsigned char **out, size_t *out_len)
{
    unsigned char **parts = calloc(n ? n : 1, sizeof *parts);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    unsigned char *buf = NULL;
    size_t total = 4;
    bool ok = parts && lens && n <= UINT32_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = sd_value_serialize(values[i], &parts[i], &lens[i]) == SD_OK &&
             sd_add_size(total, 8, &total) && sd_add_size(total, lens[i], &total);
    if (ok)
        ok = (buf = malloc(total)) != NULL;
    if (ok) {
        uint32_t count = (uint32_t)n;
        unsigned char *p = buf;
        memcpy(p, &count, 4);
        p += 4;
        for (size_t i = 0; i < n; i++) {
            uint64_t l = lens[i];
            memcpy(p, &l, 8);
            memcpy(p + 8, parts[i], lens[i]);
            p += 8 + lens[i];
        }
        *out = buf;
        *out_len = total;
    }
    for (size_t i = 0; parts && i < n; i++)
        free(parts[i]);
    free(parts);
    free(lens);
    return ok;
}

static void delete_entry(sd_cache *c, const sd_key *key)
{
    sqlite3_stmt *s = prepare(c, "DELETE FROM entries WHERE key = ?1");
    if (!s)
        return;
    sqlite3_bind_blob(s, 1, key->b, sizeof key->b, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        db_warn(c, rc, "delete");
    sqlite3_finalize(s);
}

bool sd_cache_get(sd_cache *c, const sd_key *key, size_t n_outputs, sd_value **outs)
{
    for (size_t i = 0; i < n_outputs; i++)
        outs[i] = NULL;
    if (c->broken)
        return false;
    sqlite3_stmt *s = prepare(c, "SELECT payload, checksum FROM entries WHERE key = ?1");
    if (!s) {
        settle(c);
        return false;
    }
    sqlite3_bind_blob(s, 1, key->b, sizeof key->b, SQLITE_STATIC);
    bool hit = false, bad = false;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *payload = sqlite3_column_blob(s, 0);
        size_t len = (size_t)sqlite3_column_bytes(s, 0);
        const void *sum = sqlite3_column_blob(s, 1);
        sd_key want;
        checksum(key, payload, len, &want);
        bad = !sum || sqlite3_column_bytes(s, 1) != (int)sizeof want.b ||
              memcmp(sum, want.b, sizeof want.b) != 0 ||
              !payload_decode(payload ? payload : (const unsigned char *)"", len, n_outputs, outs);
        hit = !bad;
    } else if (rc != SQLITE_DONE) {
        db_warn(c, rc, "lookup");
    }
    sqlite3_finalize(s);
    if (bad) {
        char hex[65];
        sd_key_hex(key, hex);
        sd_warn(c->ctx, "cache entry %.16s failed its checksum: deleted, recomputing", hex);
        delete_entry(c, key);
    } else if (hit && (rc = touch(c, key)) != SQLITE_OK) {
        db_warn(c, rc, "update");
    }
    settle(c);
    return hit;
}

/* Evicts least recently used entries until the payload total is at most budget.
 * Runs inside the caller's transaction. Returns the SQLite code; *evicted counts rows. */
static int evict_to(sd_cache *c, int64_t budget, int64_t *evicted)
{
    sqlite3_stmt *sum = prepare(c, "SELECT bytes FROM totals");
    sqlite3_stmt *oldest = prepare(c, "SELECT rowid, size FROM entries ORDER BY last_used LIMIT 1");
    sqlite3_stmt *del = prepare(c, "DELETE FROM entries WHERE rowid = ?1");
    int rc = sum && oldest && del ? sqlite3_step(sum) : SQLITE_ERROR;
    int64_t total = rc == SQLITE_ROW ? sqlite3_column_int64(sum, 0) : 0;
    rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
    while (rc == SQLITE_OK && total > budget) {
        rc = sqlite3_step(oldest);
        if (rc != SQLITE_ROW)
            break; /* SQLITE_DONE: nothing left to evict */
        sqlite3_bind_int64(del, 1, sqlite3_column_int64(oldest, 0));
        total -= sqlite3_column_int64(oldest, 1);
        sqlite3_reset(oldest);
        rc = sqlite3_step(del);
        sqlite3_reset(del);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        if (rc == SQLITE_OK)
            (*evicted)++;
    }
    sqlite3_finalize(sum);
    sqlite3_finalize(oldest);
    sqlite3_finalize(del);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void sd_cache_put(sd_cache *c, const sd_key *key, const char *node_type, size_t n_outputs,
                  sd_value *const *values)
{
    if (c->broken)
        return;
    unsigned char *payload = NULL;
    size_t len = 0;
    if (!payload_encode(n_outputs, values, &payload, &len)) {
        sd_warn(c->ctx, "cache: cannot serialize the outputs of a %s node: not stored", node_type);
        return;
    }
    if ((c->budget && len > (size_t)c->budget) || len > (size_t)sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, -1)) {
        free(payload); /* larger than the whole budget or SQLite's blob limit: not stored */
        return;
    }
    sd_key sum;
    checksum(key, payload, len, &sum);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, evicted = 0;
    int rc = exec(c, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK) /* a plain DELETE + INSERT keeps the totals triggers exact */
        delete_entry(c, key);
    sqlite3_stmt *s = rc == SQLITE_OK ? prepare(c, "INSERT INTO entries VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)") : NULL;
    if (s) {
        sqlite3_bind_blob(s, 1, key->b, sizeof key->b, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, node_type, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 3, payload, (int)len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 4, sum.b, sizeof sum.b, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, (int64_t)len);
        sqlite3_bind_int64(s, 6, now);
        rc = sqlite3_step(s);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        sqlite3_finalize(s);
    } else if (rc == SQLITE_OK) {
        rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK)
        rc = touch(c, key);
    if (rc == SQLITE_OK && c->budget)
        rc = evict_to(c, c->budget, &evicted);
    if (rc == SQLITE_OK)
        rc = exec(c, "COMMIT");
    if (rc != SQLITE_OK) {
        db_warn(c, rc, "store");
        exec(c, "ROLLBACK");
    } else if (evicted) {
        exec(c, "PRAGMA incremental_vacuum");
    }
    free(payload);
    settle(c);
}

/* Binds a file's path and identity to parameters 1..6 of s. */
static void bind_file(sqlite3_stmt *s, const char *path, const sd_file_id *id)
{
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, id->size);
    sqlite3_bind_int64(s, 3, id->mtime_ns);
    sqlite3_bind_int64(s, 4, id->ctime_ns);
    sqlite3_bind_int64(s, 5, id->ino);
    sqlite3_bind_int64(s, 6, id->dev);
}

/* The memo table of a digest kind. */
static const char *digest_table(sd_file_digest kind)
{
    return kind == SD_DIGEST_SHA256 ? "file_sha256" : "file_hashes";
}

bool sd_cache_file_hash_get(sd_cache *c, sd_file_digest kind, const char *path, const sd_file_id *id, sd_key *hash)
{
    if (c->broken)
        return false;
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT hash FROM %s WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 "
             "AND ctime_ns = ?4 AND inode = ?5 AND dev = ?6",
             digest_table(kind));
    sqlite3_stmt *s = prepare(c, sql);
    if (!s) {
        settle(c);
        return false;
    }
    bind_file(s, path, id);
    bool hit = false;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == (int)sizeof hash->b) {
        memcpy(hash->b, sqlite3_column_blob(s, 0), sizeof hash->b);
        hit = true;
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_warn(c, rc, "file hash lookup");
    }
    sqlite3_finalize(s);
    settle(c);
    return hit;
}

void sd_cache_file_hash_put(sd_cache *c, sd_file_digest kind, const char *path, const sd_file_id *id,
                            const sd_key *hash)
{
    if (c->broken)
        return;
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO %s VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", digest_table(kind));
    sqlite3_stmt *s = prepare(c, sql);
    if (!s) {
        settle(c);
        return;
    }
    bind_file(s, path, id);
    sqlite3_bind_blob(s, 7, hash->b, sizeof hash->b, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        db_warn(c, rc, "file hash store");
    sqlite3_finalize(s);
    settle(c);
}

/* ---- Public maintenance functions. ---- */

sd_status sd_parse_size(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno || !(v >= 0))
        return SD_ERR_USAGE;
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v * mult >= 9.2e18)
        return SD_ERR_USAGE;
    *out = (int64_t)(v * mult);
    return SD_OK;
}

/* The context's cache for a maintenance command: SD_ERR_USAGE when caching is off. */
static sd_status maint_cache(sd_context *ctx, sd_cache **out)
{
    *out = NULL;
    if (!ctx->cache_path)
        return sd_set_error(ctx, SD_ERR_USAGE, "no cache database (caching is disabled)");
    sd_cache *c = sd_context_ext(ctx, SD_EXT_CACHE);
    if (!c) {
        sd_status st = sd_cache_open(ctx, ctx->cache_path, &c);
        if (st)
            return st;
        if ((st = sd_context_set_ext(ctx, SD_EXT_CACHE, c, cache_free))) {
            sd_cache_close(c);
            return st;
        }
    }
    if (c->broken)
        return sd_set_error(ctx, SD_ERR_CACHE, "%s: the database is corrupt ('sdflow cache verify' repairs it)",
                            c->path);
    *out = c;
    return SD_OK;
}

static sd_status maint_fail(sd_cache *c, const char *what)
{
    return sd_set_error(c->ctx, SD_ERR_CACHE, "%s: %s: %s", c->path, what, sqlite3_errmsg(c->db));
}

static bool query_i64(sd_cache *c, const char *sql, int64_t *v)
{
    sqlite3_stmt *s = NULL;
    bool ok = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW;
    if (ok)
        *v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return ok;
}

sd_status sd_cache_stats_get(sd_context *ctx, sd_cache_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    sd_cache *c;
    sd_status st = maint_cache(ctx, &c);
    if (st)
        return st;
    if (!query_i64(c, "SELECT count(*) FROM entries", &stats->entries) ||
        !query_i64(c, "SELECT bytes FROM totals", &stats->bytes) ||
        !query_i64(c, "SELECT count(*) FROM file_hashes", &stats->file_hashes))
        return maint_fail(c, "reading statistics");
    stats->budget = c->budget;
    struct stat sb;
    char *wal = sd_strfmt("%s-wal", c->path);
    if (stat(c->path, &sb) == 0)
        stats->file_bytes = sb.st_size;
    if (wal && stat(wal, &sb) == 0)
        stats->file_bytes += sb.st_size;
    free(wal);
    return SD_OK;
}

sd_status sd_cache_clear(sd_context *ctx)
{
    sd_cache *c;
    sd_status st = maint_cache(ctx, &c);
    if (st)
        return st;
    if (exec(c, "BEGIN IMMEDIATE; DELETE FROM entries; DELETE FROM file_hashes; DELETE FROM file_sha256; COMMIT") != SQLITE_OK) {
        st = maint_fail(c, "clearing");
        exec(c, "ROLLBACK");
        return st;
    }
    /* Give the space back to the file system (best effort: another process may hold it). */
    exec(c, "VACUUM");
    exec(c, "PRAGMA wal_checkpoint(TRUNCATE)");
    return SD_OK;
}

/* True when PRAGMA integrity_check reports "ok"; otherwise *first holds its first line. */
static bool integrity_ok(sd_cache *c, char *first, size_t size)
{
    sqlite3_stmt *s = NULL;
    bool ok = false;
    snprintf(first, size, "%s", "integrity check failed");
    if (sqlite3_prepare_v2(c->db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(s, 0);
        ok = line && strcmp(line, "ok") == 0;
        if (line && !ok)
            snprintf(first, size, "%s", line);
    } else {
        snprintf(first, size, "%s", sqlite3_errmsg(c->db));
    }
    sqlite3_finalize(s);
    return ok;
}

/* Moves a corrupt database aside and continues on a fresh one. */
static sd_status rebuild(sd_context *ctx, sd_cache *c)
{
    c->corrupt = true;
    settle(c);
    if (c->broken)
        return sd_set_error(ctx, SD_ERR_CACHE, "%s: the database is corrupt and could not be rebuilt", c->path);
    return SD_OK;
}

sd_status sd_cache_verify(sd_context *ctx, int64_t *bad_entries)
{
    *bad_entries = 0;
    sd_cache *c = sd_context_ext(ctx, SD_EXT_CACHE);
    sd_status st;
    if (c && c->broken)
        return rebuild(ctx, c);
    if ((st = maint_cache(ctx, &c)))
        return st;
    char why[256];
    if (!integrity_ok(c, why, sizeof why)) {
        int64_t n = 0;
        query_i64(c, "SELECT count(*) FROM entries", &n);
        *bad_entries = n;
        sd_warn(ctx, "cache database %s: %s", c->path, why);
        return rebuild(ctx, c);
    }
    /* Check every checksum; collect the bad rows first, then delete them in one transaction. */
    sqlite3_stmt *s = NULL, *del = NULL;
    int64_t *bad = NULL;
    size_t n_bad = 0;
    int rc = SQLITE_ERROR;
    if (sqlite3_prepare_v2(c->db, "SELECT rowid, key, payload, checksum FROM entries", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(c->db, "DELETE FROM entries WHERE rowid = ?1", -1, &del, NULL) == SQLITE_OK) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            sd_key key, want;
            bool good = sqlite3_column_bytes(s, 1) == (int)sizeof key.b &&
                        sqlite3_column_bytes(s, 3) == (int)sizeof want.b;
            if (good) {
                const void *payload = sqlite3_column_blob(s, 2);
                memcpy(key.b, sqlite3_column_blob(s, 1), sizeof key.b);
                checksum(&key, payload ? payload : "", (size_t)sqlite3_column_bytes(s, 2), &want);
                good = memcmp(sqlite3_column_blob(s, 3), want.b, sizeof want.b) == 0;
            }
            if (good)
                continue;
            int64_t *grown = realloc(bad, (n_bad + 1) * sizeof *bad);
            if (!grown) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                goto done;
            }
            bad = grown;
            bad[n_bad++] = sqlite3_column_int64(s, 0);
        }
    }
    if (rc != SQLITE_DONE) {
        st = maint_fail(c, "verifying");
        goto done;
    }
    sqlite3_finalize(s);
    s = NULL;
    rc = exec(c, "BEGIN IMMEDIATE");
    for (size_t i = 0; rc == SQLITE_OK && i < n_bad; i++) {
        sqlite3_bind_int64(del, 1, bad[i]);
        rc = sqlite3_step(del) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(del);
    }
    if (rc == SQLITE_OK)
        rc = exec(c, "COMMIT");
    if (rc != SQLITE_OK) {
        st = maint_fail(c, "deleting bad entries");
        exec(c, "ROLLBACK");
        goto done;
    }
    if (n_bad)
        sd_warn(ctx, "cache %s: %zu entries failed their checksum and were deleted", c->path, n_bad);
    *bad_entries = (int64_t)n_bad;
    st = SD_OK;
done:
    free(bad);
    sqlite3_finalize(s);
    sqlite3_finalize(del);
    return st;
}

/* Deletes the memoized digests of one kind whose file is gone or changed (best effort). */
static void prune_file_hashes(sd_cache *c, sd_file_digest kind)
{
    char select[96], delete[64];
    snprintf(select, sizeof select, "SELECT rowid, path, size, mtime_ns, ctime_ns, inode, dev FROM %s",
             digest_table(kind));
    snprintf(delete, sizeof delete, "DELETE FROM %s WHERE rowid = ?1", digest_table(kind));
    sqlite3_stmt *s = NULL, *del = NULL;
    if (sqlite3_prepare_v2(c->db, select, -1, &s, NULL) || sqlite3_prepare_v2(c->db, delete, -1, &del, NULL))
        goto done;
    int64_t *stale = NULL;
    size_t n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        struct stat st;
        sd_file_id now;
        const char *path = (const char *)sqlite3_column_text(s, 1);
        const sd_file_id was = {.size = sqlite3_column_int64(s, 2), .mtime_ns = sqlite3_column_int64(s, 3),
                                .ctime_ns = sqlite3_column_int64(s, 4), .ino = sqlite3_column_int64(s, 5),
                                .dev = sqlite3_column_int64(s, 6)};
        if (path && stat(path, &st) == 0 && (sd_file_id_from_stat(&st, &now), sd_file_id_equal(&now, &was)))
            continue;
        int64_t *grown = realloc(stale, (n + 1) * sizeof *stale);
        if (!grown)
            break;
        stale = grown;
        stale[n++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (n && exec(c, "BEGIN IMMEDIATE") == SQLITE_OK) {
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(del, 1, stale[i]);
            sqlite3_step(del);
            sqlite3_reset(del);
        }
        if (exec(c, "COMMIT") != SQLITE_OK)
            exec(c, "ROLLBACK");
    }
    free(stale);
done:
    sqlite3_finalize(s);
    sqlite3_finalize(del);
}

sd_status sd_cache_gc(sd_context *ctx, int64_t max_bytes, int64_t *evicted)
{
    *evicted = 0;
    if (max_bytes < 0)
        return sd_set_error(ctx, SD_ERR_USAGE, "cache size limit must not be negative");
    sd_cache *c;
    sd_status st = maint_cache(ctx, &c);
    if (st)
        return st;
    int rc = exec(c, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = evict_to(c, max_bytes, evicted);
    if (rc == SQLITE_OK)
        rc = exec(c, "COMMIT");
    if (rc != SQLITE_OK) {
        st = maint_fail(c, "evicting");
        exec(c, "ROLLBACK");
        *evicted = 0;
        return st;
    }
    prune_file_hashes(c, SD_DIGEST_BLAKE2B);
    prune_file_hashes(c, SD_DIGEST_SHA256);
    exec(c, "PRAGMA incremental_vacuum");
    exec(c, "PRAGMA wal_checkpoint(TRUNCATE)");
    return SD_OK;
}
