/* The SQLite cache: round trips, checksums, corruption recovery, LRU budget, maintenance. */
#include "test.h"
#include "core/cache.h"
#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char warnings[8192];
static int n_warnings;

static void capture(const char *line, void *user)
{
    (void)user;
    n_warnings++;
    strncat(warnings, line, sizeof warnings - strlen(warnings) - 2);
    strcat(warnings, "\n");
}

static sd_context *new_ctx(const char *db)
{
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx))
        abort();
    sd_context_set_log(ctx, capture, NULL);
    sd_context_set_cache_path(ctx, db);
    warnings[0] = '\0';
    n_warnings = 0;
    return ctx;
}

static char *fresh_db(const char *name)
{
    char *dir = test_path(test_scratch_dir(), name);
    char *db = test_path(dir, "sub/cache.db"); /* a missing directory is created */
    free(dir);
    return db;
}

static sd_key key_of(const char *s)
{
    sd_key k;
    sd_hash_bytes(s, strlen(s), &k);
    return k;
}

static sd_value *latent(float base)
{
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    int64_t shape[4] = {1, 4, 8, 8};
    sd_tensor *t = sd_value_add_tensor(v, "samples", 4, shape);
    for (int i = 0; i < 256; i++)
        t->data[i] = base + (float)i;
    return v;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    *len = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        buf = malloc(n > 0 ? (size_t)n : 1);
        rewind(f);
        *len = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
    }
    if (f)
        fclose(f);
    return buf;
}

static int64_t count_rows(const char *db, const char *sql)
{
    sqlite3 *h;
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_open(db, &h) == SQLITE_OK && sqlite3_prepare_v2(h, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(h);
    return n;
}

static void test_roundtrip(void)
{
    char *db = fresh_db("roundtrip");
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    CHECK(c != NULL);
    sd_key k = key_of("node-a");
    sd_value *vals[2] = {latent(0.5f), sd_value_int(42)};
    sd_cache_put(c, &k, "Test", 2, vals);
    sd_value *got[2];
    CHECK(sd_cache_get(c, &k, 2, got));
    CHECK(got[0] && got[0]->type == SD_TYPE_LATENT && got[1] && got[1]->i == 42);
    sd_tensor *t = got[0] ? sd_value_tensor(got[0], "samples") : NULL;
    CHECK(t && t->shape[2] == 8 && t->data[255] == 255.5f);
    sd_value_unref(got[0]);
    sd_value_unref(got[1]);
    sd_key other = key_of("node-b");
    CHECK(!sd_cache_get(c, &other, 2, got) && got[0] == NULL);
    /* The same key asked with a different output count is a bad entry, not a crash. */
    CHECK(!sd_cache_get(c, &k, 1, got));
    CHECK_EQ_INT(n_warnings, 1);
    CHECK_STR_CONTAINS(warnings, "failed its checksum");
    sd_value_unref(vals[0]);
    sd_value_unref(vals[1]);
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK(st.file_bytes > 0);
    sd_context_free(ctx);
    free(db);
}

static void test_file_hash_memo(void)
{
    char *db = fresh_db("memo");
    char *file = test_path(test_scratch_dir(), "memo-input.bin");
    FILE *f = fopen(file, "wb");
    fputs("first content", f);
    fclose(f);
    sd_context *ctx = new_ctx(db);
    sd_key h1, h2, h3, direct;
    CHECK_EQ_INT(sd_hash_file(ctx, file, &h1), SD_OK);
    sd_hash_bytes("first content", 13, &direct);
    CHECK(memcmp(h1.b, direct.b, 32) == 0);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_hashes"), 1);
    CHECK_EQ_INT(sd_hash_file(ctx, file, &h2), SD_OK);
    CHECK(memcmp(h1.b, h2.b, 32) == 0);
    /* New content (and size): the memo no longer matches. */
    f = fopen(file, "wb");
    fputs("second, longer content", f);
    fclose(f);
    CHECK_EQ_INT(sd_hash_file(ctx, file, &h3), SD_OK);
    CHECK(memcmp(h1.b, h3.b, 32) != 0);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_hashes"), 1);
    /* The same size and modification time, other bytes (dd conv=notrunc, then touch -r): the
     * change time tells, and the file is hashed again. */
    struct stat before;
    CHECK(stat(file, &before) == 0);
    /* File times come from a coarse clock (a few ms): let it move past the last write's. */
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    int fd = open(file, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "S", 1, 0) == 1);
    if (fd >= 0)
        close(fd);
    const struct timespec keep[2] = {before.st_atim, before.st_mtim};
    CHECK(utimensat(AT_FDCWD, file, keep, 0) == 0);
    sd_key h4, want;
    CHECK_EQ_INT(sd_hash_file(ctx, file, &h4), SD_OK);
    sd_hash_bytes("Second, longer content", 22, &want);
    CHECK(memcmp(h4.b, want.b, 32) == 0);
    /* gc forgets the hashes of files that are gone. */
    int64_t evicted = -1;
    CHECK_EQ_INT(sd_cache_gc(ctx, 1 << 20, &evicted), SD_OK);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_hashes"), 1);
    unlink(file);
    CHECK_EQ_INT(sd_cache_gc(ctx, 1 << 20, &evicted), SD_OK);
    CHECK_EQ_INT(evicted, 0);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_hashes"), 0);
    sd_context_free(ctx);
    free(file);
    free(db);
}

/* SHA-256 (A1111's model hash) of a file, memoized in its own table: the digest of "abc" is the
 * FIPS 180-2 test vector; a memo row is used while the file's identity holds, and gc prunes it. */
static void test_file_sha256_memo(void)
{
    char *db = fresh_db("sha");
    char *file = test_path(test_scratch_dir(), "sha-input.bin");
    FILE *f = fopen(file, "wb");
    fputs("abc", f);
    fclose(f);
    sd_context *ctx = new_ctx(db);
    sd_cache *cache = sd_context_cache(ctx);
    sd_key sha, blake;
    sd_file_id id;
    char hex[65];
    CHECK_EQ_INT(sd_digest_file_memo(ctx, cache, SD_DIGEST_SHA256, file, &sha, &id), SD_OK);
    sd_key_hex(&sha, hex);
    CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_sha256"), 1);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_hashes"), 0);
    /* The memo answers without reading: a planted row for the same identity is returned. */
    sd_key planted = {{1, 2, 3}};
    sd_cache_file_hash_put(cache, SD_DIGEST_SHA256, file, &id, &planted);
    CHECK_EQ_INT(sd_digest_file_memo(ctx, cache, SD_DIGEST_SHA256, file, &sha, &id), SD_OK);
    CHECK(memcmp(sha.b, planted.b, 32) == 0);
    /* The BLAKE2b memo is another table: not confused with it. */
    CHECK_EQ_INT(sd_hash_file(ctx, file, &blake), SD_OK);
    CHECK(memcmp(blake.b, planted.b, 32) != 0);
    int64_t evicted = -1;
    unlink(file);
    CHECK_EQ_INT(sd_cache_gc(ctx, 1 << 20, &evicted), SD_OK);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM file_sha256"), 0);
    sd_context_free(ctx);
    free(file);
    free(db);
}

static bool has_corrupt_copy(const char *dir)
{
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= strncmp(e->d_name, "cache.db.corrupt-", 17) == 0;
    if (d)
        closedir(d);
    return found;
}

static void test_random_bytes_database(void)
{
    char *db = fresh_db("random");
    sd_context *ctx = new_ctx(db);
    CHECK(sd_context_cache(ctx) != NULL); /* creates it */
    sd_context_free(ctx);
    int fd = open(db, O_WRONLY | O_TRUNC);
    unsigned char junk[8192];
    srand(7);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rand();
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    CHECK(c != NULL);
    CHECK_EQ_INT(n_warnings, 1);
    CHECK_STR_CONTAINS(warnings, "was corrupt: moved to");
    char *dir = test_path(test_scratch_dir(), "random/sub");
    CHECK(has_corrupt_copy(dir));
    sd_key k = key_of("after");
    sd_value *v = sd_value_int(5), *got = NULL;
    sd_cache_put(c, &k, "Test", 1, &v);
    CHECK(sd_cache_get(c, &k, 1, &got) && got && got->i == 5);
    sd_value_unref(got);
    sd_value_unref(v);
    sd_context_free(ctx);
    free(dir);
    free(db);
}

/* Corruption inside the file found by a lookup (an overflow page of one entry points nowhere;
 * opening does not notice): the database is moved aside at once and the cache goes on with a
 * fresh one. */
static void test_corruption_found_later(void)
{
    char *db = fresh_db("later");
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    sd_value *big = sd_value_new(SD_TYPE_LATENT);
    int64_t shape[4] = {1, 4, 64, 64};
    sd_tensor *t = sd_value_add_tensor(big, "samples", 4, shape);
    static const uint32_t marker[2] = {0x12345678u, 0x9abcdef0u};
    memcpy(&t->data[8192], marker, sizeof marker); /* 32 KiB into a 64 KiB payload */
    sd_key k = key_of("big");
    sd_cache_put(c, &k, "Test", 1, &big);
    sd_context_free(ctx); /* the last connection checkpoints the WAL into the file */
    size_t len = 0;
    unsigned char *bytes = read_all(db, &len);
    size_t at = 0;
    while (at + sizeof marker <= len && memcmp(bytes + at, marker, sizeof marker) != 0)
        at++;
    CHECK(at + sizeof marker <= len);
    /* The page holding the marker is an overflow page: its first 4 bytes link the next one. */
    memset(bytes + (at & ~(size_t)4095), 0xff, 4);
    FILE *f = fopen(db, "wb");
    CHECK(f && fwrite(bytes, 1, len, f) == len);
    fclose(f);
    free(bytes);
    ctx = new_ctx(db);
    c = sd_context_cache(ctx);
    CHECK(c != NULL);
    CHECK_MSG(n_warnings == 0, "warned at open: %s", warnings);
    sd_value *got = NULL;
    CHECK(!sd_cache_get(c, &k, 1, &got) && got == NULL);
    CHECK_STR_CONTAINS(warnings, "was corrupt: moved to");
    char *dir = test_path(test_scratch_dir(), "later/sub");
    CHECK(has_corrupt_copy(dir));
    sd_cache_put(c, &k, "Test", 1, &big);
    CHECK(sd_cache_get(c, &k, 1, &got) && got != NULL);
    sd_value_unref(got);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 1);
    int64_t bad = -1;
    CHECK_EQ_INT(sd_cache_verify(ctx, &bad), SD_OK);
    CHECK_EQ_INT(bad, 0);
    sd_value_unref(big);
    sd_context_free(ctx);
    free(dir);
    free(db);
}

static void test_flipped_bit(void)
{
    char *db = fresh_db("bitflip");
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    sd_key k = key_of("flip");
    sd_value *v = latent(1.0f), *got = NULL;
    sd_cache_put(c, &k, "Test", 1, &v);
    /* Flip one bit in the middle of the stored payload through a second connection. */
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(h, "SELECT payload FROM entries", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW);
    int len = sqlite3_column_bytes(s, 0);
    unsigned char *buf = malloc((size_t)len);
    memcpy(buf, sqlite3_column_blob(s, 0), (size_t)len);
    sqlite3_finalize(s);
    buf[len / 2] ^= 0x10;
    CHECK(sqlite3_prepare_v2(h, "UPDATE entries SET payload = ?1", -1, &s, NULL) == SQLITE_OK);
    sqlite3_bind_blob(s, 1, buf, len, SQLITE_STATIC);
    CHECK(sqlite3_step(s) == SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(h);
    free(buf);
    CHECK(!sd_cache_get(c, &k, 1, &got) && got == NULL);
    CHECK_STR_CONTAINS(warnings, "failed its checksum: deleted");
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 0);
    /* Stored again, it reads back. */
    sd_cache_put(c, &k, "Test", 1, &v);
    CHECK(sd_cache_get(c, &k, 1, &got) && got);
    sd_value_unref(got);
    sd_value_unref(v);
    sd_context_free(ctx);
    free(db);
}

static void test_verify_deletes_bad_entries(void)
{
    char *db = fresh_db("verify");
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    sd_value *v = sd_value_int(1);
    sd_key a = key_of("a"), b = key_of("b"), cc = key_of("c");
    sd_cache_put(c, &a, "Test", 1, &v);
    sd_cache_put(c, &b, "Test", 1, &v);
    sd_cache_put(c, &cc, "Test", 1, &v);
    sqlite3 *h;
    sqlite3_open(db, &h);
    CHECK(sqlite3_exec(h, "UPDATE entries SET checksum = zeroblob(32) WHERE rowid = 2", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(h);
    int64_t bad = -1;
    CHECK_EQ_INT(sd_cache_verify(ctx, &bad), SD_OK);
    CHECK_EQ_INT(bad, 1);
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 2);
    CHECK_EQ_INT(sd_cache_verify(ctx, &bad), SD_OK);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(sd_cache_clear(ctx), SD_OK);
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.bytes, 0);
    sd_value_unref(v);
    sd_context_free(ctx);
    free(db);
}

/* Entries used least recently go first, whatever order they were stored in. */
static void test_gc_lru_order(void)
{
    char *db = fresh_db("gc");
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    sd_key k[4] = {key_of("k0"), key_of("k1"), key_of("k2"), key_of("k3")};
    sd_value *v = latent(0), *got = NULL;
    for (int i = 0; i < 4; i++)
        sd_cache_put(c, &k[i], "Test", 1, &v);
    CHECK(sd_cache_get(c, &k[0], 1, &got)); /* k0 becomes the most recently used */
    sd_value_unref(got);
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 4);
    int64_t one = st.bytes / 4, evicted = 0;
    CHECK_EQ_INT(sd_cache_gc(ctx, 2 * one, &evicted), SD_OK);
    CHECK_EQ_INT(evicted, 2);
    bool present[4];
    for (int i = 0; i < 4; i++) {
        present[i] = sd_cache_get(c, &k[i], 1, &got);
        sd_value_unref(got);
    }
    CHECK(present[0] && !present[1] && !present[2] && present[3]);
    /* The payload total kept by triggers matches the entries, also after a replaced entry. */
    sd_cache_put(c, &k[0], "Test", 1, &v);
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 2);
    CHECK_EQ_INT(st.bytes, 2 * one);
    CHECK_EQ_INT(count_rows(db, "SELECT sum(size) FROM entries"), 2 * one);
    CHECK_EQ_INT(sd_cache_gc(ctx, -1, &evicted), SD_ERR_USAGE);
    sd_value_unref(v);
    sd_context_free(ctx);
    free(db);
}

/* SDFLOW_CACHE_MAX_SIZE bounds the payload after each store; 0 is no limit. */
static void test_budget_env(void)
{
    char *db = fresh_db("budget");
    sd_value *v = latent(0);
    unsigned char *bytes;
    size_t len;
    sd_value_serialize(v, &bytes, &len);
    free(bytes);
    char budget[32];
    snprintf(budget, sizeof budget, "%zu", 3 * (len + 12) + 10); /* room for three entries */
    setenv("SDFLOW_CACHE_MAX_SIZE", budget, 1);
    sd_context *ctx = new_ctx(db);
    sd_cache *c = sd_context_cache(ctx);
    unsetenv("SDFLOW_CACHE_MAX_SIZE");
    char name[16];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "b%d", i);
        sd_key k = key_of(name);
        sd_cache_put(c, &k, "Test", 1, &v);
    }
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 3);
    sd_value *got = NULL;
    sd_key newest = key_of("b5"), oldest = key_of("b0");
    CHECK(sd_cache_get(c, &newest, 1, &got));
    sd_value_unref(got);
    CHECK(!sd_cache_get(c, &oldest, 1, &got));
    sd_context_free(ctx);
    /* A malformed budget warns and keeps the default. */
    setenv("SDFLOW_CACHE_MAX_SIZE", "12Q", 1);
    ctx = new_ctx(db);
    c = sd_context_cache(ctx);
    unsetenv("SDFLOW_CACHE_MAX_SIZE");
    CHECK(c != NULL);
    CHECK_STR_CONTAINS(warnings, "SDFLOW_CACHE_MAX_SIZE='12Q' is not a size");
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "b%d", i);
        sd_key k = key_of(name);
        sd_cache_put(c, &k, "Test", 1, &v);
    }
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 6);
    sd_cache_stats stats;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &stats), SD_OK);
    CHECK_EQ_INT(stats.budget, (int64_t)8 << 30);
    sd_context_free(ctx);
    /* 0 is no limit: every store is kept, none is evicted. */
    setenv("SDFLOW_CACHE_MAX_SIZE", "0", 1);
    ctx = new_ctx(db);
    c = sd_context_cache(ctx);
    unsetenv("SDFLOW_CACHE_MAX_SIZE");
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "z%d", i);
        sd_key k = key_of(name);
        sd_cache_put(c, &k, "Test", 1, &v);
    }
    CHECK_EQ_INT(count_rows(db, "SELECT count(*) FROM entries"), 12);
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &stats), SD_OK);
    CHECK_EQ_INT(stats.budget, 0);
    sd_value_unref(v);
    sd_context_free(ctx);
    free(db);
}

static void test_parse_size(void)
{
    int64_t v = 0;
    CHECK(sd_parse_size("4096", &v) == SD_OK && v == 4096);
    CHECK(sd_parse_size("500M", &v) == SD_OK && v == 500LL << 20);
    CHECK(sd_parse_size("8G", &v) == SD_OK && v == 8LL << 30);
    CHECK(sd_parse_size("1.5GB", &v) == SD_OK && v == 3LL << 29);
    CHECK(sd_parse_size("2k", &v) == SD_OK && v == 2048);
    CHECK_EQ_INT(sd_parse_size("", &v), SD_ERR_USAGE);
    CHECK_EQ_INT(sd_parse_size("-1G", &v), SD_ERR_USAGE);
    CHECK_EQ_INT(sd_parse_size("12Q", &v), SD_ERR_USAGE);
    CHECK_EQ_INT(sd_parse_size("nan", &v), SD_ERR_USAGE);
    CHECK_EQ_INT(sd_parse_size("99999999T", &v), SD_ERR_USAGE);
}

/* A cache that cannot be opened warns once and is skipped; nothing fails. */
static void test_unusable_path(void)
{
    char *file = test_path(test_scratch_dir(), "not-a-dir");
    FILE *f = fopen(file, "w");
    fclose(f);
    char *db = test_path(file, "cache.db");
    sd_context *ctx = new_ctx(db);
    CHECK(sd_context_cache(ctx) == NULL);
    CHECK(sd_context_cache(ctx) == NULL);
    CHECK_EQ_INT(n_warnings, 1);
    CHECK_STR_CONTAINS(warnings, "cache disabled for this run");
    CHECK_STR_EQ(sd_context_errmsg(ctx), "");
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_ERR_CACHE);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not-a-dir/cache.db.lock: Not a directory");
    sd_context_set_cache_path(ctx, NULL);
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_ERR_USAGE);
    sd_context_free(ctx);
    free(db);
    free(file);
}

int main(void)
{
    RUN(test_roundtrip);
    RUN(test_file_hash_memo);
    RUN(test_file_sha256_memo);
    RUN(test_random_bytes_database);
    RUN(test_corruption_found_later);
    RUN(test_flipped_bit);
    RUN(test_verify_deletes_bad_entries);
    RUN(test_gc_lru_order);
    RUN(test_budget_env);
    RUN(test_parse_size);
    RUN(test_unusable_path);
    return test_summary("test_cache");
}
