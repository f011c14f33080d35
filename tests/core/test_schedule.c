/* The scheduler: planning, partial re-execution, freeing, interrupts, cache sharing and
 * recovery, observed through results (per-node outcomes) and the cache database. */
#include "test.h"
#include "core/graph.h"
#include "core/run.h"
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char warnings[8192];

static void capture(const char *line, void *user)
{
    (void)user;
    strncat(warnings, line, sizeof warnings - strlen(warnings) - 2);
    strcat(warnings, "\n");
}

static sd_context *new_ctx(const char *cache_name)
{
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx))
        abort();
    sd_context_set_log(ctx, capture, NULL);
    char *db = NULL;
    if (cache_name) {
        char *dir = test_path(test_scratch_dir(), cache_name);
        db = test_path(dir, "cache.db");
        free(dir);
    }
    sd_context_set_cache_path(ctx, db);
    free(db);
    warnings[0] = '\0';
    return ctx;
}

/* n PrimitiveInt nodes "n1".."n<n>": n1 holds `value`, each next one links the previous. */
static sd_graph *chain(sd_context *ctx, int n, const char *value)
{
    sd_graph *g;
    if (sd_graph_new(ctx, &g))
        abort();
    char id[16], prev[16];
    for (int i = 1; i <= n; i++) {
        snprintf(id, sizeof id, "n%d", i);
        CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", id, NULL), SD_OK);
        if (i == 1)
            CHECK_EQ_INT(sd_graph_set_input(g, id, "value", value), SD_OK);
        else
            CHECK_EQ_INT(sd_graph_connect(g, prev, "INT", id, "value"), SD_OK);
        memcpy(prev, id, sizeof prev);
    }
    return g;
}

/* Outcome letters in plan order: R ran, C cached, - skipped. */
static void outcomes(const sd_result *r, char *out, size_t size)
{
    size_t n = sd_result_node_count(r), k = 0;
    for (size_t i = 0; i < n && k + 1 < size; i++) {
        sd_node_stat st;
        sd_result_node(r, i, &st);
        out[k++] = st.outcome == SD_NODE_RAN ? 'R' : st.outcome == SD_NODE_CACHED ? 'C' : '-';
    }
    out[k] = '\0';
}

static sd_status run(sd_graph *g, const char *const *wanted, size_t n_wanted, bool no_cache, char *oc,
                     sd_result **keep)
{
    sd_run_options o = {.outputs = wanted, .n_outputs = n_wanted, .no_cache = no_cache};
    sd_result *r = NULL;
    sd_status st = sd_graph_run(g, &o, &r);
    CHECK(r != NULL);
    outcomes(r, oc, 64);
    if (keep)
        *keep = r;
    else
        sd_result_free(r);
    return st;
}

static int64_t int_output(const sd_result *r, const char *node)
{
    sd_output_info info;
    if (sd_result_output(r, node, "INT", &info) != SD_OK)
        return -999;
    CHECK_STR_EQ(info.type, "INT");
    return info.i;
}

static void test_chain_and_rerun(void)
{
    sd_context *ctx = new_ctx("rerun");
    sd_graph *g = chain(ctx, 3, "7");
    static const char *const want[] = {"n3"};
    char oc[64];
    sd_result *r;
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "RRR");
    CHECK_EQ_INT(int_output(r, "n3"), 7);
    sd_output_info info;
    CHECK_EQ_INT(sd_result_output(r, "n3", "FLOAT", &info), SD_ERR_NOT_FOUND);
    CHECK_EQ_INT(sd_result_output(r, "n2", "INT", &info), SD_ERR_NOT_FOUND); /* not wanted */
    sd_result_free(r);
    /* Unchanged: nothing computes; the wanted node loads, its inputs are not needed. */
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "--C");
    CHECK_EQ_INT(int_output(r, "n3"), 7);
    sd_result_free(r);
    /* The same number written differently is the same key. */
    CHECK_EQ_INT(sd_graph_set_input(g, "n1", "value", "+7"), SD_OK);
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "--C");
    /* Changed: the chain recomputes. */
    CHECK_EQ_INT(sd_graph_set_input(g, "n1", "value", "8"), SD_OK);
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "RRR");
    CHECK_EQ_INT(int_output(r, "n3"), 8);
    sd_result_free(r);
    /* Asking for the middle node: it was stored by the last run. */
    static const char *const mid[] = {"n2"};
    CHECK_EQ_INT(run(g, mid, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "-C-");
    /* no_cache neither reads nor writes. */
    CHECK_EQ_INT(run(g, want, 1, true, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "RRR");
    CHECK_STR_EQ(warnings, "");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Two independent chains: changing one input re-runs exactly that chain. */
static void test_partial_reexecution(void)
{
    sd_context *ctx = new_ctx("partial");
    sd_graph *g = chain(ctx, 3, "1");
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveFloat", "f1", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "f1", "value", "0.5"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveFloat", "f2", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "f1", "FLOAT", "f2", "value"), SD_OK);
    static const char *const want[] = {"n3", "f2"};
    char oc[64];
    CHECK_EQ_INT(run(g, want, 2, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "RRRRR");
    /* Plan order is topological with ties in file order: n1 f1 n2 f2 n3. */
    sd_result *r;
    CHECK_EQ_INT(sd_graph_set_input(g, "f1", "value", "0.25"), SD_OK);
    CHECK_EQ_INT(run(g, want, 2, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "-R-RC");
    sd_node_stat st;
    CHECK_EQ_INT(sd_result_node(r, 1, &st), SD_OK);
    CHECK_STR_EQ(st.node_id, "f1");
    CHECK_STR_EQ(st.node_type, "PrimitiveFloat");
    CHECK_EQ_INT(sd_result_node(r, 5, &st), SD_ERR_USAGE);
    sd_output_info info;
    CHECK_EQ_INT(sd_result_output(r, "f2", "FLOAT", &info), SD_OK);
    CHECK(info.f == 0.25);
    sd_result_free(r);
    CHECK_EQ_INT(sd_graph_set_input(g, "n1", "value", "2"), SD_OK);
    CHECK_EQ_INT(run(g, want, 2, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "R-RCR");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Each value is freed after its last consumer: a chain holds at most two nodes' outputs. */
static void test_values_freed_after_last_consumer(void)
{
    sd_context *ctx = new_ctx(NULL);
    sd_graph *g = chain(ctx, 8, "3");
    static const char *const want[] = {"n8"};
    sd_run_options o = {.outputs = want, .n_outputs = 1};
    sd_result *r = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &r), SD_OK);
    CHECK_EQ_INT(sd_result_peak_live(r), 2);
    CHECK_EQ_INT(int_output(r, "n8"), 3);
    sd_result_free(r);
    /* Fan-out: n1 feeds n2 and x; both wanted; n1 stays until both have run. */
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "x", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "n1", "INT", "x", "value"), SD_OK);
    static const char *const want2[] = {"n8", "x"};
    o.outputs = want2;
    o.n_outputs = 2;
    CHECK_EQ_INT(sd_graph_run(g, &o, &r), SD_OK);
    CHECK_EQ_INT(sd_result_peak_live(r), 3);
    CHECK_EQ_INT(int_output(r, "x"), 3);
    sd_result_free(r);
    sd_graph_free(g);
    sd_context_free(ctx);
}

typedef struct events {
    char log[2048];
    int interrupt_after; /* interrupt when this plan index finishes; 0: never */
    sd_context *ctx;
} events;

static void on_progress(const sd_progress *ev, void *user)
{
    events *e = user;
    char line[128];
    static const char kinds[] = "PSCDT";
    snprintf(line, sizeof line, "%c:%s:%d/%d ", kinds[ev->kind], ev->node_id ? ev->node_id : "",
             ev->node_index, ev->node_count);
    strncat(e->log, line, sizeof e->log - strlen(e->log) - 1);
    if (ev->kind == SD_PROGRESS_NODE_DONE && ev->node_index == e->interrupt_after)
        sd_context_interrupt(e->ctx);
}

static void test_progress_events(void)
{
    sd_context *ctx = new_ctx("progress");
    events e = {.ctx = ctx};
    sd_context_set_progress(ctx, on_progress, &e);
    sd_graph *g = chain(ctx, 2, "5");
    static const char *const want[] = {"n2"};
    char oc[64];
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(e.log, "P::0/2 S:n1:1/2 D:n1:1/2 S:n2:2/2 D:n2:2/2 ");
    e.log[0] = '\0';
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(e.log, "P::0/1 C:n2:1/1 ");
    sd_graph_free(g);
    sd_context_free(ctx);
}

static int64_t count_entries(const char *cache_name)
{
    char *dir = test_path(test_scratch_dir(), cache_name);
    char *db = test_path(dir, "cache.db");
    sqlite3 *h;
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_open(db, &h) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(*) FROM entries", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(h);
    free(db);
    free(dir);
    return n;
}

/* An interrupt stops at the next node boundary; what finished is stored, nothing else. */
static void test_interrupt_between_nodes(void)
{
    sd_context *ctx = new_ctx("interrupt");
    events e = {.ctx = ctx, .interrupt_after = 2};
    sd_context_set_progress(ctx, on_progress, &e);
    sd_graph *g = chain(ctx, 5, "9");
    static const char *const want[] = {"n5"};
    char oc[64];
    sd_result *r;
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_ERR_INTERRUPTED);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "interrupted before node 'n3' (PrimitiveInt)");
    CHECK_STR_EQ(oc, "RR---");
    CHECK_EQ_INT(int_output(r, "n5"), -999);
    sd_result_free(r);
    CHECK_EQ_INT(count_entries("interrupt"), 2);
    /* The next run clears the request and resumes from what was stored. */
    e.interrupt_after = 0;
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "-CRRR");
    CHECK_EQ_INT(count_entries("interrupt"), 5);
    sd_graph_free(g);
    sd_context_free(ctx);
}

static void test_request_errors(void)
{
    sd_context *ctx = new_ctx(NULL);
    sd_graph *g = chain(ctx, 2, "1");
    char oc[64];
    CHECK_EQ_INT(run(g, NULL, 0, false, oc, NULL), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "nothing to run: the workflow has no output node (such as "
                                         "SaveImage) and no outputs were asked for");
    static const char *const bad[] = {"n1", "nope"};
    CHECK_EQ_INT(run(g, bad, 2, false, oc, NULL), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "no node 'nope' in the workflow");
    CHECK_STR_EQ(oc, "--");
    /* A result is optional. */
    static const char *const want[] = {"n2"};
    sd_run_options o = {.outputs = want, .n_outputs = 1};
    CHECK_EQ_INT(sd_graph_run(g, &o, NULL), SD_OK);
    sd_graph_free(g);
    sd_context_free(ctx);
}

static char *cache_db(const char *name)
{
    char *dir = test_path(test_scratch_dir(), name);
    char *db = test_path(dir, "cache.db");
    free(dir);
    return db;
}

/* The database replaced by random bytes: warning, rebuilt, the run succeeds. */
static void test_random_bytes_cache(void)
{
    sd_context *ctx = new_ctx("random");
    sd_graph *g = chain(ctx, 3, "4");
    static const char *const want[] = {"n3"};
    char oc[64];
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    sd_graph_free(g);
    sd_context_free(ctx);
    char *db = cache_db("random");
    int fd = open(db, O_WRONLY | O_TRUNC);
    for (int i = 0; i < 512; i++) {
        uint32_t x = (uint32_t)i * 2654435761u;
        CHECK(write(fd, &x, sizeof x) == sizeof x);
    }
    close(fd);
    ctx = new_ctx("random");
    g = chain(ctx, 3, "4");
    sd_result *r;
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "RRR");
    CHECK_EQ_INT(int_output(r, "n3"), 4);
    CHECK_STR_CONTAINS(warnings, "was corrupt: moved to");
    sd_result_free(r);
    CHECK_EQ_INT(count_entries("random"), 3);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(db);
}

/* One flipped bit in a stored payload: a miss, the node recomputes, the run succeeds. */
static void test_flipped_bit_recomputes(void)
{
    sd_context *ctx = new_ctx("flip");
    sd_graph *g = chain(ctx, 2, "6");
    static const char *const want[] = {"n2"};
    char oc[64];
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    char *db = cache_db("flip");
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    /* Flip one bit near the end of every payload (inside the value). */
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(h, "SELECT rowid, payload FROM entries", -1, &s, NULL) == SQLITE_OK);
    sqlite3_stmt *u;
    CHECK(sqlite3_prepare_v2(h, "UPDATE entries SET payload = ?2 WHERE rowid = ?1", -1, &u, NULL) == SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        int len = sqlite3_column_bytes(s, 1);
        unsigned char *buf = malloc((size_t)len);
        memcpy(buf, sqlite3_column_blob(s, 1), (size_t)len);
        buf[len - 8] ^= 1;
        sqlite3_bind_int64(u, 1, sqlite3_column_int64(s, 0));
        sqlite3_bind_blob(u, 2, buf, len, SQLITE_TRANSIENT);
        CHECK(sqlite3_step(u) == SQLITE_DONE);
        sqlite3_reset(u);
        free(buf);
        rows++;
    }
    sqlite3_finalize(s);
    sqlite3_finalize(u);
    sqlite3_close(h);
    CHECK_EQ_INT(rows, 2);
    sd_result *r;
    CHECK_EQ_INT(run(g, want, 1, false, oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "RR"); /* n2 missed; n1 missed too (both entries were flipped) */
    CHECK_EQ_INT(int_output(r, "n2"), 6);
    CHECK_STR_CONTAINS(warnings, "failed its checksum");
    sd_result_free(r);
    CHECK_EQ_INT(run(g, want, 1, false, oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "-C");
    sd_graph_free(g);
    sd_context_free(ctx);
    free(db);
}

/* Two processes run the same workflow on one cache at the same time. */
static void test_two_processes_share_cache(void)
{
    enum { N = 40 };
    char *db = cache_db("shared");
    pid_t pids[2];
    int gate[2]; /* both children start when the parent closes the write end */
    CHECK(pipe(gate) == 0);
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            char c;
            close(gate[1]);
            if (read(gate[0], &c, 1) != 0)
                _exit(2);
            sd_context *ctx = new_ctx("shared");
            sd_graph *g = chain(ctx, N, "11");
            static const char *const want[] = {"n40"};
            sd_run_options o = {.outputs = want, .n_outputs = 1};
            int code = 0;
            for (int round = 0; round < 3 && code == 0; round++) {
                sd_result *r = NULL;
                if (sd_graph_run(g, &o, &r) != SD_OK || int_output(r, "n40") != 11 || warnings[0])
                    code = 1;
                sd_result_free(r);
            }
            sd_graph_free(g);
            sd_context_free(ctx);
            _exit(code);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int p = 0; p < 2; p++) {
        int status = -1;
        CHECK(pids[p] > 0 && waitpid(pids[p], &status, 0) == pids[p]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_EQ_INT(count_entries("shared"), N);
    sd_context *ctx = new_ctx("shared");
    int64_t bad = -1;
    CHECK_EQ_INT(sd_cache_verify(ctx, &bad), SD_OK);
    CHECK_EQ_INT(bad, 0);
    sd_context_free(ctx);
    free(db);
}

int main(void)
{
    RUN(test_chain_and_rerun);
    RUN(test_partial_reexecution);
    RUN(test_values_freed_after_last_consumer);
    RUN(test_progress_events);
    RUN(test_interrupt_between_nodes);
    RUN(test_request_errors);
    RUN(test_random_bytes_cache);
    RUN(test_flipped_bit_recomputes);
    RUN(test_two_processes_share_cache);
    return test_summary("test_schedule");
}
