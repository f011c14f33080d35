/* Files read while a run goes on (ml/formats/safetensors.h, the read guard of core/files.h):
 *  - a checkpoint truncated (truncate -s 8M) or overwritten in place (as cp does) after the loader
 *    opened it and before VAEDecode reads its weights fails VAEDecode with one line naming the
 *    file, status SD_ERR_IO (exit 5), and nothing from VAEDecode is cached; before, the file was
 *    memory-mapped and the process died of SIGBUS;
 *  - a checkpoint changed between the plan hashing it and the loader opening it fails the loader;
 *  - a running node cannot open a file its cache key does not cover. */
#include "test.h"
#include "core/files.h"
#include "ml/formats/safetensors.h"
#include "ml/families/sd1_layout.h"
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char *ckpt;        /* tiny f32 checkpoint, seed 1: the one the graphs load */
static unsigned char *other; /* the bytes of the same architecture with seed 2 (same size) */
static size_t other_len;

static void write_ckpt(const char *path, uint64_t seed)
{
    sd_context *ctx = NULL;
    sd_checkpoint_config cfg;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    CHECK_EQ_INT(sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, seed), SD_OK);
    sd_context_free(ctx);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f)
        fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

/* ckpt -> VAEDecode(EmptyLatentImage): the loader opens the file, VAEDecode reads the VAE. */
static sd_graph *decode_graph(sd_context *ctx)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CheckpointLoaderSimple", "ckpt", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ckpt", "ckpt_name", ckpt), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyLatentImage", "latent", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "latent", "width", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "latent", "height", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "VAEDecode", "decode", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "latent", "LATENT", "decode", "samples"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "VAE", "decode", "vae"), SD_OK);
    return g;
}

/* Calls act once, when node `node` starts (kind NODE_START) or reports a step (kind STEP). */
typedef struct trigger {
    sd_progress_kind kind;
    const char *node;
    void (*act)(struct trigger *t);
    sd_context *ctx;
    bool fired;
} trigger;

static void on_progress(const sd_progress *ev, void *user)
{
    trigger *t = user;
    if (!t->fired && ev->kind == t->kind && ev->node_id && strcmp(ev->node_id, t->node) == 0) {
        t->fired = true;
        t->act(t);
    }
}

/* A context with the given cache (NULL: none) whose progress events go to t. */
static sd_context *watched_context(const char *cache, trigger *t)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    sd_context_set_cache_path(ctx, cache);
    t->ctx = ctx;
    sd_context_set_progress(ctx, on_progress, t);
    return ctx;
}

static sd_node_outcome outcome(const sd_result *res, const char *id)
{
    for (size_t i = 0; res && i < sd_result_node_count(res); i++) {
        sd_node_stat s;
        if (sd_result_node(res, i, &s) == SD_OK && strcmp(s.node_id, id) == 0)
            return s.outcome;
    }
    return (sd_node_outcome)-1;
}

static void truncate_8m(trigger *t)
{
    (void)t;
    CHECK(truncate(ckpt, 8 << 20) == 0);
}

/* What cp does to an existing destination: truncate it, write the new bytes (same inode). */
static void overwrite_like_cp(trigger *t)
{
    (void)t;
    int fd = open(ckpt, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0 && write(fd, other, other_len) == (ssize_t)other_len);
    if (fd >= 0)
        close(fd);
}

/* Runs the decode graph with a cache, changing the checkpoint with act as VAEDecode starts:
 * VAEDecode fails in one line naming the file, exit status 5, nothing of it is cached; with
 * the file restored, the next run computes VAEDecode (it was not stored). */
static void expect_decode_fails(void (*act)(trigger *), const char *why)
{
    write_ckpt(ckpt, 1);
    struct stat sb;
    CHECK(stat(ckpt, &sb) == 0 && sb.st_size > (8 << 20) && (size_t)sb.st_size == other_len);
    char *db = test_path(test_scratch_dir(), "reads.db");
    unlink(db);
    trigger t = {SD_PROGRESS_NODE_START, "decode", act, NULL, false};
    sd_context *ctx = watched_context(db, &t);
    sd_graph *g = decode_graph(ctx);
    const char *outs[] = {"decode"};
    sd_run_options o = {.outputs = outs, .n_outputs = 1};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &o, &res);
    CHECK(t.fired);
    CHECK_EQ_INT(st, SD_ERR_IO);
    CHECK_EQ_INT(sd_status_exit_code(st), 5);
    const char *msg = sd_context_errmsg(ctx);
    CHECK_STR_CONTAINS(msg, "node 'decode' (VAEDecode): ");
    CHECK_STR_CONTAINS(msg, ckpt);
    CHECK_STR_CONTAINS(msg, why);
    CHECK(strchr(msg, '\n') == NULL);
    CHECK_EQ_INT(outcome(res, "decode"), SD_NODE_RAN);
    sd_result_free(res);
    sd_cache_stats cs;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &cs), SD_OK);
    CHECK_EQ_INT(cs.entries, 1); /* the empty latent only */

    write_ckpt(ckpt, 1);
    sd_context_set_progress(ctx, NULL, NULL);
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_OK);
    CHECK_EQ_INT(outcome(res, "latent"), SD_NODE_CACHED);
    CHECK_EQ_INT(outcome(res, "decode"), SD_NODE_RAN);
    sd_result_free(res);
    sd_graph_free(g);
    sd_context_free(ctx);
    free(db);
}

static void test_truncated_while_in_use(void)
{
    char want[64];
    snprintf(want, sizeof want, "changed since it was opened (now %d bytes, was %zu)", 8 << 20, other_len);
    expect_decode_fails(truncate_8m, want);
}

static void test_overwritten_while_in_use(void)
{
    expect_decode_fails(overwrite_like_cp, "changed since it was opened (modified)");
}

/* Sets the checkpoint's mtime to a fixed past time: its ctime moves to now, its content stays. */
static void touch_ckpt(trigger *t)
{
    (void)t;
    const struct timespec times[2] = {{1000000000, 0}, {1000000000, 0}};
    CHECK(utimensat(AT_FDCWD, ckpt, times, 0) == 0);
}

/* The file the plan hashed is not the one the loader opens: the loader fails (SD_ERR_IO). */
static void test_changed_after_hashing(void)
{
    write_ckpt(ckpt, 1);
    trigger t = {SD_PROGRESS_NODE_START, "ckpt", touch_ckpt, NULL, false};
    sd_context *ctx = watched_context(NULL, &t);
    sd_graph *g = decode_graph(ctx);
    const char *outs[] = {"decode"};
    sd_run_options o = {.outputs = outs, .n_outputs = 1};
    CHECK_EQ_INT(sd_graph_run(g, &o, NULL), SD_ERR_IO);
    char *want = sd_strfmt("node 'ckpt' (CheckpointLoaderSimple): %s: changed since this run hashed it for the cache "
                           "key; run again",
                           ckpt);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Inside a running KSampler (its step callback), opening the checkpoint is refused: KSampler's
 * key covers the checkpoint only through the loader's key, so the file is not one it declared.
 * Outside a node, the same open works. */
static sd_status guard_status;
static char guard_msg[1024];
static void open_in_sampler(trigger *t)
{
    sd_safetensors *st = NULL;
    guard_status = sd_safetensors_open(t->ctx, ckpt, &st);
    snprintf(guard_msg, sizeof guard_msg, "%s", sd_context_errmsg(t->ctx));
    sd_safetensors_close(st);
}

static void test_undeclared_read(void)
{
    write_ckpt(ckpt, 1);
    trigger t = {SD_PROGRESS_STEP, "sampler", open_in_sampler, NULL, false};
    sd_context *ctx = watched_context(NULL, &t);
    sd_graph *g = NULL;
    char *xml = test_path(test_source_dir(), "graphs/txt2img.xml");
    CHECK_EQ_INT(sd_graph_load_xml(ctx, xml, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "checkpoint", ckpt), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "steps", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "width", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "height", "64"), SD_OK);
    const char *outs[] = {"sampler"};
    sd_run_options o = {.outputs = outs, .n_outputs = 1};
    CHECK_EQ_INT(sd_graph_run(g, &o, NULL), SD_OK);
    CHECK(t.fired);
    CHECK_EQ_INT(guard_status, SD_ERR_INVALID);
    char *want = sd_strfmt("%s: the node read a file it did not declare, so the file is not part of its cache key", ckpt);
    CHECK_STR_EQ(guard_msg, want);
    free(want);
    sd_safetensors *st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, ckpt, &st), SD_OK);
    sd_safetensors_close(st);
    free(xml);
    sd_graph_free(g);
    sd_context_free(ctx);
}

int main(void)
{
    ckpt = test_path(test_scratch_dir(), "tiny.safetensors");
    char *seed2 = test_path(test_scratch_dir(), "seed2.safetensors");
    write_ckpt(seed2, 2);
    other = slurp(seed2, &other_len);
    CHECK(other != NULL);
    RUN(test_truncated_while_in_use);
    RUN(test_overwritten_while_in_use);
    RUN(test_changed_after_hashing);
    RUN(test_undeclared_read);
    free(other);
    free(seed2);
    free(ckpt);
    return test_summary("test_file_reads");
}
