/* ComfyUI's web front end on `sdflow serve --front-end`, driven in headless Chromium through
 * the Chrome DevTools protocol (civetweb's WebSocket client): the page loads, the node library
 * has every node type of /object_info, the default graph pointed at a tiny checkpoint is queued,
 * progress and preview frames arrive, the image is shown by /view, the jobs panel lists it and
 * a saved workflow lands in userdata. tests/data/frontend/e2e.js is what runs in the page.
 * Skipped (passing) when Chromium or the front end is not installed: $SDFLOW_CHROMIUM (default
 * /usr/bin/chromium) and $SDFLOW_FRONT_END (default
 * ~/.local/share/sdflow/comfyui_frontend_package/static, see docs/server.md). */
#include "support/child_proc.h"
#include "test.h"
#include <civetweb.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { WAIT_S = 180 };

/* The DevTools connection: replies by id. */
typedef struct cdp {
    struct mg_connection *conn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    json_t *replies; /* {id: message} */
    bool closed;
    int next_id;
} cdp;

static int cdp_data(struct mg_connection *conn, int flags, char *data, size_t len, void *user)
{
    cdp *c = user;
    if ((flags & 0xf) != MG_WEBSOCKET_OPCODE_TEXT)
        return 1;
    json_t *m = json_loadb(data, len, 0, NULL);
    json_t *id = json_object_get(m, "id");
    pthread_mutex_lock(&c->lock);
    if (json_is_integer(id)) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(id));
        json_object_set(c->replies, key, m);
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    json_decref(m);
    return 1;
}

static void cdp_close(const struct mg_connection *conn, void *user)
{
    cdp *c = user;
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Sends method(params) (params consumed) in session (NULL: the browser); returns the reply's
 * result (a new reference) or NULL after an error or WAIT_S seconds. */
static json_t *cdp_call(cdp *c, const char *session, const char *method, json_t *params)
{
    int id = ++c->next_id;
    json_t *msg = json_pack("{s:i, s:s, s:o}", "id", id, "method", method, "params", params);
    if (session)
        json_object_set_new(msg, "sessionId", json_string(session));
    char *text = json_dumps(msg, JSON_COMPACT), key[32];
    json_decref(msg);
    mg_websocket_client_write(c->conn, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text));
    free(text);
    snprintf(key, sizeof key, "%d", id);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_S;
    json_t *reply = NULL;
    pthread_mutex_lock(&c->lock);
    while (!(reply = json_object_get(c->replies, key)) && !c->closed &&
           pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0)
        ;
    json_t *result = json_incref(json_object_get(reply, "result"));
    pthread_mutex_unlock(&c->lock);
    CHECK_MSG(result, "DevTools %s: %s", method, reply ? json_dumps(json_object_get(reply, "error"), 0) : "no reply");
    return result;
}

/* Evaluates expr in the page; returns its value (a new reference) or NULL. */
static json_t *page_eval(cdp *c, const char *session, const char *expr)
{
    json_t *r = cdp_call(c, session, "Runtime.evaluate",
                         json_pack("{s:s, s:b, s:b}", "expression", expr, "awaitPromise", 1, "returnByValue", 1));
    json_t *exc = json_object_get(r, "exceptionDetails");
    json_t *v = exc ? NULL : json_incref(json_object_get(json_object_get(r, "result"), "value"));
    char *why = v ? NULL : json_dumps(exc ? exc : r, JSON_ENCODE_ANY);
    CHECK_MSG(v, "page error: %s", why ? why : "no reply");
    free(why);
    json_decref(r);
    return v;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) == (size_t)n)
        s[n] = '\0';
    else {
        free(s);
        s = NULL;
    }
    fclose(f);
    return s;
}

static bool has_string(const json_t *array, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(array, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), s))
            return true;
    }
    return false;
}

/* Checks what e2e.js saw. */
static void check_seen(json_t *seen)
{
    CHECK_MSG(!json_object_get(seen, "error"), "%s", json_string_value(json_object_get(seen, "error")));
    CHECK(json_integer_value(json_object_get(seen, "node_types")) > 50);
    CHECK_MSG(json_array_size(json_object_get(seen, "missing")) == 0, "node types missing from the library: %s",
              json_dumps(json_object_get(seen, "missing"), 0));
    const json_t *graph = json_object_get(seen, "default_graph");
    CHECK(has_string(graph, "KSampler") && has_string(graph, "SaveImage"));
    CHECK_STR_EQ(json_string_value(json_object_get(seen, "result")), "success");
    CHECK(json_integer_value(json_object_get(seen, "progress")) >= 3);
    CHECK(json_integer_value(json_object_get(seen, "previews")) >= 1);
    CHECK_EQ_INT(json_array_size(json_object_get(seen, "images")), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(seen, "view")), "200 image/png");
    const char *job = json_string_value(json_array_get(json_object_get(seen, "jobs"), 0));
    const char *image = json_string_value(json_object_get(json_array_get(json_object_get(seen, "images"), 0), "filename"));
    char want[300];
    snprintf(want, sizeof want, "completed:%s", image ? image : "?");
    CHECK_MSG(job && !strcmp(job, want), "jobs: %s", job ? job : "(none)");
    CHECK(has_string(json_object_get(seen, "saved"), "e2e.json"));
}

static const char *chromium, *front_end;

static void test_front_end(void)
{
    const char *scratch = test_scratch_dir(), *build = getenv("SDFLOW_BUILD_DIR"), *bin = getenv("SDFLOW_BIN");
    char *models = test_path(scratch, "models"), *out = test_path(scratch, "output"), *in = test_path(scratch, "input");
    char *db = test_path(scratch, "queue.db"), *users = test_path(scratch, "user"), *log = test_path(scratch, "serve.log");
    char *profile = test_path(scratch, "chromium"), *blog = test_path(scratch, "chromium.log");
    char cmd[8192], line[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/checkpoints' '%s' '%s' && '%s/sdflow_mkckpt' --preset tiny "
                              "'%s/checkpoints/tiny.safetensors' >/dev/null", models, in, out, build, models);
    CHECK_EQ_INT(system(cmd), 0);
    const char *sargs[] = {bin, "serve", "--port", "0", "--queue-db", db, "--user-dir", users, "--models-dir", models,
                           "--input-dir", in, "--output-dir", out, "--no-cache", "--front-end", front_end, NULL};
    pid_t server = test_spawn(sargs, log), browser = -1;
    const char *colon;
    int port = 0;
    if (test_wait_line(server, log, "listening on http://127.0.0.1:", line, sizeof line, WAIT_S) &&
        (colon = strrchr(line, ':')))
        port = atoi(colon + 1);
    CHECK_MSG(port > 0, "the server did not start (%s)", log);
    const char *bargs[] = {chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--remote-debugging-port=0", NULL, "about:blank", NULL};
    char data_dir[4200];
    snprintf(data_dir, sizeof data_dir, "--user-data-dir=%s", profile);
    bargs[7] = data_dir;
    char *ws = NULL;
    if (port > 0) {
        browser = test_spawn(bargs, blog);
        CHECK_MSG(test_wait_line(browser, blog, "DevTools listening on ws://127.0.0.1:", line, sizeof line, 60) &&
                      (ws = strstr(line, "ws://127.0.0.1:")),
                  "chromium did not start (%s)", blog);
    }
    cdp c = {.replies = json_object()};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    char err[256] = "";
    if (ws) {
        int dport = atoi(ws + 15);
        const char *path = strchr(ws + 15, '/');
        c.conn = mg_connect_websocket_client("127.0.0.1", dport, 0, err, sizeof err, path, NULL, cdp_data, cdp_close, &c);
        CHECK_MSG(c.conn, "DevTools connection: %s", err);
    }
    json_t *target = NULL, *attached = NULL;
    if (c.conn && (target = cdp_call(&c, NULL, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"))))
        attached = cdp_call(&c, NULL, "Target.attachToTarget",
                            json_pack("{s:O, s:b}", "targetId", json_object_get(target, "targetId"), "flatten", 1));
    const char *session = json_string_value(json_object_get(attached, "sessionId"));
    char url[128], *script = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(cmd, sizeof cmd, "%s/tests/data/frontend/e2e.js", test_source_dir());
    if (session && (script = slurp(cmd))) {
        json_decref(cdp_call(&c, session, "Page.navigate", json_pack("{s:s}", "url", url)));
        /* The navigation replaces about:blank's context: wait until the page's own is there. */
        bool loaded = false;
        for (int i = 0; i < WAIT_S * 10 && !loaded; i++) {
            json_t *v = page_eval(&c, session, "location.href + ' ' + document.readyState");
            char want[160];
            snprintf(want, sizeof want, "%s complete", url);
            loaded = v && !strcmp(json_string_value(v), want);
            json_decref(v);
            if (!loaded)
                usleep(100000);
        }
        CHECK(loaded);
        json_t *v = loaded ? page_eval(&c, session, script) : NULL;
        json_t *seen = json_string_value(v) ? json_loads(json_string_value(v), 0, NULL) : NULL;
        CHECK_MSG(seen, "the page returned %s", json_string_value(v) ? json_string_value(v) : "no JSON text");
        if (seen)
            check_seen(seen);
        printf("e2e: %s\n", json_string_value(v) ? json_string_value(v) : "-");
        json_decref(seen);
        json_decref(v);
    }
    free(script);
    json_decref(target);
    json_decref(attached);
    if (c.conn)
        mg_close_connection(c.conn);
    test_stop(browser, SIGTERM);
    int status = test_stop(server, SIGTERM);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server exit status %d (%s)", status, log);
    json_decref(c.replies);
    pthread_cond_destroy(&c.cond);
    pthread_mutex_destroy(&c.lock);
    free(models), free(out), free(in), free(db), free(users), free(log), free(profile), free(blog);
}

int main(void)
{
    const char *fe = getenv("SDFLOW_FRONT_END"), *home = getenv("HOME");
    chromium = getenv("SDFLOW_CHROMIUM");
    char dflt[4096], index[4200];
    if (!fe || !*fe) {
        snprintf(dflt, sizeof dflt, "%s/.local/share/sdflow/comfyui_frontend_package/static", home ? home : "");
        fe = dflt;
    }
    if (!chromium || !*chromium)
        chromium = "/usr/bin/chromium";
    snprintf(index, sizeof index, "%s/index.html", fe);
    if (access(chromium, X_OK) != 0 || access(index, R_OK) != 0) {
        printf("test_frontend_e2e: skipped (needs %s and the front end in %s; docs/server.md)\n", chromium, fe);
        return test_summary("test_frontend_e2e");
    }
    mg_init_library(0);
    front_end = fe;
    RUN(test_front_end);
    mg_exit_library();
    return test_summary("test_frontend_e2e");
}
