/* `sdflow serve` end to end over loopback, driven the way ComfyUI's script examples drive
 * ComfyUI (script_examples/basic_api_example.py and websockets_api_example.py): open /ws with a
 * clientId, POST /prompt with that client_id, wait for `executing` with node null, then read
 * /history/{id} and fetch the image with /view. Also: validation errors as node_errors, queue
 * and history maintenance, /interrupt, /object_info, uploads and their limits, the Origin check,
 * path confinement, the bearer token, malformed requests. The HTTP and WebSocket clients are
 * civetweb's. Every wait is bounded (minutes: the suite runs on two busy cores). */
#include "test.h"
#include <civetweb.h>
#include <jansson.h>
#include <png.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WAIT_S = 300 };

typedef struct server {
    pid_t pid;
    int port;
} server;

static server srv_main, srv_token;
static char *dir_out, *dir_in, *dir_models, *dir_users, *dir_front;

/* Starts `sdflow serve --port 0 ARGS...`; reads the port from its first stdout line. */
static bool start_server(server *s, const char *const *extra)
{
    const char *bin = getenv("SDFLOW_BIN");
    const char *args[32] = {bin ? bin : "sdflow", "serve", "--port", "0"};
    size_t n = 4;
    for (; extra && *extra && n < 31; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    int fd[2];
    if (pipe(fd))
        return false;
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(args[0], (char **)args);
        _exit(127);
    }
    close(fd[1]);
    char line[256] = "";
    size_t len = 0;
    struct pollfd p = {.fd = fd[0], .events = POLLIN};
    while (len + 1 < sizeof line && poll(&p, 1, WAIT_S * 1000) > 0) {
        if (read(fd[0], line + len, 1) != 1 || line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(fd[0]);
    const char *colon = strrchr(line, ':');
    s->port = colon && strstr(line, "listening on") ? atoi(colon + 1) : 0;
    CHECK_MSG(s->port > 0, "server did not start: \"%s\"", line);
    return s->port > 0;
}

static void stop_server(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        int status = 0;
        waitpid(s->pid, &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server exit status %d", status);
        s->pid = 0;
    }
}

/* ---- HTTP client. ---- */

typedef struct reply {
    int status;
    char *body;
    size_t len;
} reply;

/* One request with Connection: close; headers are complete lines ending in \r\n and include
 * the Host line. */
static reply http_host(const server *s, const char *method, const char *path, const char *headers,
                       const char *body, size_t body_len)
{
    reply r = {0};
    char err[256];
    struct mg_connection *c = mg_connect_client("127.0.0.1", s->port, 0, err, sizeof err);
    if (!c) {
        test_fail(__FILE__, __LINE__, "connect: %s", err);
        return r;
    }
    mg_printf(c, "%s %s HTTP/1.1\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n", method, path, body_len,
              headers);
    if (body_len)
        mg_write(c, body, body_len);
    if (mg_get_response(c, err, sizeof err, WAIT_S * 1000) < 0) {
        test_fail(__FILE__, __LINE__, "%s %s: %s", method, path, err);
        mg_close_connection(c);
        return r;
    }
    r.status = mg_get_response_info(c)->status_code;
    size_t cap = 65536;
    r.body = malloc(cap + 1);
    for (int k; (k = mg_read(c, r.body + r.len, cap - r.len)) > 0;) {
        r.len += (size_t)k;
        if (r.len == cap)
            r.body = realloc(r.body, (cap *= 2) + 1);
    }
    r.body[r.len] = '\0';
    mg_close_connection(c);
    return r;
}

/* One request to 127.0.0.1:port; extra_headers are complete lines ending in \r\n. */
static reply http(const server *s, const char *method, const char *path, const char *extra_headers,
                  const char *body, size_t body_len)
{
    char headers[1024];
    snprintf(headers, sizeof headers, "Host: 127.0.0.1:%d\r\n%s", s->port, extra_headers ? extra_headers : "");
    return http_host(s, method, path, headers, body, body_len);
}

static json_t *http_json(const server *s, const char *method, const char *path, const char *body, int *status)
{
    reply r = http(s, method, path, body ? "Content-Type: application/json\r\n" : NULL, body,
                   body ? strlen(body) : 0);
    json_t *v = r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    CHECK_MSG(v != NULL, "%s %s: reply is not JSON: %s", method, path, r.body ? r.body : "(none)");
    if (status)
        *status = r.status;
    free(r.body);
    return v;
}

/* ---- WebSocket client: collects the messages. ---- */

typedef struct ws_client {
    struct mg_connection *conn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    json_t *messages;
    int binary;
    bool preview_ok; /* every binary frame: event 1, format 2 (PNG), a PNG of the 8x8 latent */
    bool closed;
} ws_client;

static int ws_data(struct mg_connection *conn, int flags, char *data, size_t len, void *user)
{
    ws_client *w = user;
    pthread_mutex_lock(&w->lock);
    if ((flags & 0xf) == MG_WEBSOCKET_OPCODE_TEXT) {
        json_t *m = json_loadb(data, len, 0, NULL);
        if (m)
            json_array_append_new(w->messages, m);
    } else if ((flags & 0xf) == MG_WEBSOCKET_OPCODE_BINARY) {
        static const unsigned char head[8] = {0, 0, 0, 1, 0, 0, 0, 2};
        const unsigned char *d = (const unsigned char *)data;
        bool ok = len > 32 && !memcmp(d, head, 8) && !memcmp(d + 8, "\x89PNG", 4) && d[8 + 19] == 8 && d[8 + 23] == 8;
        w->preview_ok = (w->binary == 0 || w->preview_ok) && ok;
        w->binary++;
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 1;
}

static void ws_close(const struct mg_connection *conn, void *user)
{
    ws_client *w = user;
    pthread_mutex_lock(&w->lock);
    w->closed = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static bool ws_open(ws_client *w, const server *s, const char *path, const char *origin)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->messages = json_array();
    char err[256];
    w->conn = mg_connect_websocket_client("127.0.0.1", s->port, 0, err, sizeof err, path, origin, ws_data,
                                          ws_close, w);
    return w->conn != NULL;
}

static void ws_free(ws_client *w)
{
    if (w->conn)
        mg_close_connection(w->conn);
    json_decref(w->messages);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

/* Waits for a message of `type` whose data has key == value (key NULL: any; value NULL: JSON
 * null); returns its data (borrowed) or NULL after WAIT_S seconds. */
static json_t *ws_wait(ws_client *w, const char *type, const char *key, const char *value, const char *prompt_id)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_S;
    json_t *found = NULL;
    pthread_mutex_lock(&w->lock);
    for (size_t seen = 0; !found;) {
        for (; seen < json_array_size(w->messages) && !found; seen++) {
            json_t *m = json_array_get(w->messages, seen), *d = json_object_get(m, "data");
            if (strcmp(json_string_value(json_object_get(m, "type")), type) != 0)
                continue;
            if (prompt_id && !json_equal(json_object_get(d, "prompt_id"), json_string(prompt_id)))
                continue;
            json_t *v = key ? json_object_get(d, key) : NULL;
            if (!key || (value ? json_is_string(v) && !strcmp(json_string_value(v), value) : json_is_null(v)))
                found = d;
        }
        if (found || w->closed || pthread_cond_timedwait(&w->cond, &w->lock, &until))
            break;
    }
    pthread_mutex_unlock(&w->lock);
    CHECK_MSG(found, "no WebSocket message %s (%s=%s)", type, key ? key : "-", value ? value : "null");
    return found;
}

/* Position of the first message of this type for prompt_id, or -1. */
static int ws_index(ws_client *w, const char *type, const char *prompt_id)
{
    pthread_mutex_lock(&w->lock);
    int at = -1;
    for (size_t i = 0; i < json_array_size(w->messages) && at < 0; i++) {
        json_t *m = json_array_get(w->messages, i);
        json_t *pid = json_object_get(json_object_get(m, "data"), "prompt_id");
        if (!strcmp(json_string_value(json_object_get(m, "type")), type) &&
            (!prompt_id || (json_is_string(pid) && !strcmp(json_string_value(pid), prompt_id))))
            at = (int)i;
    }
    pthread_mutex_unlock(&w->lock);
    return at;
}

/* ---- Prompts. ---- */

/* The API prompt of script_examples (the default graph) on the tiny checkpoint at 64x64. */
static json_t *example_prompt(int steps, int seed)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/comfy/default_api.json", test_source_dir());
    json_t *p = json_load_file(path, 0, NULL);
    json_t *ks = json_object_get(json_object_get(p, "3"), "inputs");
    json_object_set_new(ks, "steps", json_integer(steps));
    json_object_set_new(ks, "seed", json_integer(seed));
    json_object_set_new(json_object_get(json_object_get(p, "4"), "inputs"), "ckpt_name", json_string("tiny.safetensors"));
    json_t *lat = json_object_get(json_object_get(p, "5"), "inputs");
    json_object_set_new(lat, "width", json_integer(64));
    json_object_set_new(lat, "height", json_integer(64));
    json_object_set_new(json_object_get(json_object_get(p, "6"), "inputs"), "text",
                        json_string("masterpiece best quality man"));
    return p;
}

/* POSTs {"prompt": p, "client_id": client_id?}; returns the prompt id (malloc'd) or NULL. */
static char *queue_prompt(const server *s, json_t *p, const char *client_id)
{
    json_t *req = json_pack("{s:o}", "prompt", p);
    if (client_id)
        json_object_set_new(req, "client_id", json_string(client_id));
    char *body = json_dumps(req, 0);
    json_decref(req);
    int status;
    json_t *r = http_json(s, "POST", "/prompt", body, &status);
    free(body);
    CHECK_EQ_INT(status, 200);
    const char *id = json_string_value(json_object_get(r, "prompt_id"));
    char *out = id ? strdup(id) : NULL;
    CHECK(json_is_object(json_object_get(r, "node_errors")));
    json_decref(r);
    return out;
}

/* ---- Tests. ---- */

static void test_websocket_example(void)
{
    ws_client w;
    CHECK(ws_open(&w, &srv_main, "/ws?clientId=client-1", NULL));
    json_t *st = ws_wait(&w, "status", "sid", "client-1", NULL);
    CHECK(st && json_is_integer(json_object_get(json_object_get(json_object_get(st, "status"), "exec_info"),
                                                 "queue_remaining")));
    char *id = queue_prompt(&srv_main, example_prompt(3, 5), "client-1");
    CHECK(id != NULL);
    if (!id) {
        ws_free(&w);
        return;
    }
    CHECK(ws_wait(&w, "executing", "node", NULL, id) != NULL);
    int start = ws_index(&w, "execution_start", id), run3 = -1, success = ws_index(&w, "execution_success", id);
    CHECK(start >= 0 && success > start);
    CHECK(ws_wait(&w, "executing", "node", "3", id) != NULL);
    json_t *prog = ws_wait(&w, "progress", "node", "3", id);
    CHECK(prog && json_integer_value(json_object_get(prog, "max")) == 3);
    json_t *ex = ws_wait(&w, "executed", "node", "9", id);
    json_t *img = json_array_get(json_object_get(json_object_get(ex, "output"), "images"), 0);
    int executed = ws_index(&w, "executed", id);
    CHECK(executed > start && executed < success);
    CHECK_STR_EQ(json_string_value(json_object_get(img, "type")), "output");
    (void)run3;
    pthread_mutex_lock(&w.lock);
    CHECK_MSG(w.binary == 3 && w.preview_ok, "%d preview frames (3 steps), PNG frames: %d", w.binary, w.preview_ok);
    pthread_mutex_unlock(&w.lock);

    char path[256];
    snprintf(path, sizeof path, "/history/%s", id);
    json_t *h = http_json(&srv_main, "GET", path, NULL, NULL);
    json_t *entry = json_object_get(h, id);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(entry, "status"), "status_str")), "success");
    json_t *image = json_array_get(json_object_get(json_object_get(json_object_get(entry, "outputs"), "9"), "images"), 0);
    const char *name = json_string_value(json_object_get(image, "filename"));
    CHECK(name != NULL);
    if (name) {
        snprintf(path, sizeof path, "/view?filename=%s&subfolder=&type=output", name);
        reply r = http(&srv_main, "GET", path, NULL, NULL, 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(r.len > 8 && !memcmp(r.body, "\x89PNG", 4));
        char *file = test_path(dir_out, name);
        struct stat sb;
        CHECK(stat(file, &sb) == 0 && (size_t)sb.st_size == r.len);
        free(file);
        free(r.body);
    }
    json_decref(h);
    free(id);
    ws_free(&w);
}

/* basic_api_example.py: urllib posts the JSON as application/x-www-form-urlencoded, no client. */
static void test_basic_example(void)
{
    json_t *req = json_pack("{s:o}", "prompt", example_prompt(2, 6));
    char *body = json_dumps(req, 0);
    json_decref(req);
    reply r = http(&srv_main, "POST", "/prompt", "Content-Type: application/x-www-form-urlencoded\r\n", body,
                   strlen(body));
    free(body);
    CHECK_EQ_INT(r.status, 200);
    json_t *v = json_loads(r.body ? r.body : "", 0, NULL);
    const char *id = json_string_value(json_object_get(v, "prompt_id"));
    CHECK(id && strlen(id) == 36);
    /* Wait for it through the API alone: /history/{id} fills in when it is done. */
    bool done = false;
    for (int i = 0; id && i < WAIT_S * 5 && !done; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/history/%s", id);
        json_t *h = http_json(&srv_main, "GET", path, NULL, NULL);
        done = json_object_size(h) == 1;
        json_decref(h);
        if (!done)
            usleep(200000);
    }
    CHECK(done);
    json_decref(v);
    free(r.body);
}

static void test_validation_errors(void)
{
    json_t *p = example_prompt(0, 1);
    json_object_set_new(json_object_get(json_object_get(p, "3"), "inputs"), "sampler_name", json_string("bogus"));
    json_t *req = json_pack("{s:o}", "prompt", p);
    char *body = json_dumps(req, 0);
    int status;
    json_t *r = http_json(&srv_main, "POST", "/prompt", body, &status);
    CHECK_EQ_INT(status, 400);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(r, "error"), "type")),
                 "prompt_outputs_failed_validation");
    json_t *n3 = json_object_get(json_object_get(r, "node_errors"), "3");
    CHECK_STR_EQ(json_string_value(json_object_get(n3, "class_type")), "KSampler");
    CHECK_EQ_INT(json_array_size(json_object_get(n3, "errors")), 2);
    json_t *e0 = json_array_get(json_object_get(n3, "errors"), 0);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(e0, "extra_info"), "input_name")), "steps");
    CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(n3, "dependent_outputs"), 0)), "9");
    json_decref(r);
    json_decref(req);
    free(body);

    static const struct { const char *body; const char *type; } bad[] = {
        {"{}", "no_prompt"},
        {"{\"prompt\": {\"1\": {\"class_type\": \"NoSuchNode\", \"inputs\": {}}}}", "invalid_prompt"},
        {"{\"prompt\": {\"1\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": {}}}}", "prompt_no_outputs"},
        {"{\"prompt\": ", "invalid_json"},
        {"[1, 2]", "invalid_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http_json(&srv_main, "POST", "/prompt", bad[i].body, &status);
        CHECK_EQ_INT(status, 400);
        CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(r, "error"), "type")), bad[i].type);
        json_decref(r);
    }
    /* Garbage on the wire gets an error and the server keeps serving. */
    reply g = http(&srv_main, "POST", "/history", "Content-Type: application/json\r\n", "\x01\xff{", 3);
    CHECK_EQ_INT(g.status, 400);
    free(g.body);
    r = http_json(&srv_main, "GET", "/nowhere", NULL, &status);
    CHECK_EQ_INT(status, 404);
    json_decref(r);
    r = http_json(&srv_main, "DELETE", "/queue", NULL, &status);
    CHECK_EQ_INT(status, 405);
    json_decref(r);
    r = http_json(&srv_main, "GET", "/history?max_items=-3", NULL, &status);
    CHECK_EQ_INT(status, 400);
    json_decref(r);
    r = http_json(&srv_main, "GET", "/prompt", NULL, &status);
    CHECK_EQ_INT(status, 200);
    CHECK(json_is_integer(json_object_get(json_object_get(r, "exec_info"), "queue_remaining")));
    json_decref(r);
}

static void test_interrupt_and_queue(void)
{
    ws_client w;
    CHECK(ws_open(&w, &srv_main, "/api/ws?clientId=client-2", NULL));
    char *slow = queue_prompt(&srv_main, example_prompt(10000, 7), "client-2");
    char *waiting = queue_prompt(&srv_main, example_prompt(10000, 8), "client-2");
    CHECK(ws_wait(&w, "progress", "node", "3", slow) != NULL);
    json_t *q = http_json(&srv_main, "GET", "/queue", NULL, NULL);
    json_t *running = json_array_get(json_object_get(q, "queue_running"), 0);
    CHECK_STR_EQ(json_string_value(json_array_get(running, 1)), slow);
    json_t *pending = json_array_get(json_object_get(q, "queue_pending"), 0);
    CHECK_STR_EQ(json_string_value(json_array_get(pending, 1)), waiting);
    CHECK(json_is_object(json_array_get(pending, 2)) && json_is_array(json_array_get(pending, 4)));
    json_decref(q);
    /* Delete the waiting one, then interrupt the running one. */
    char body[200];
    snprintf(body, sizeof body, "{\"delete\": [\"%s\"]}", waiting ? waiting : "");
    json_decref(http_json(&srv_main, "POST", "/queue", body, NULL));
    json_decref(http_json(&srv_main, "POST", "/interrupt", "{}", NULL));
    json_t *intr = ws_wait(&w, "execution_interrupted", NULL, NULL, slow);
    CHECK_STR_EQ(json_string_value(json_object_get(intr, "node_id")), "3");
    CHECK(ws_wait(&w, "executing", "node", NULL, slow) != NULL);
    q = http_json(&srv_main, "GET", "/queue", NULL, NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(q, "queue_pending")), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(q, "queue_running")), 0);
    json_decref(q);
    char path[128];
    snprintf(path, sizeof path, "/history/%s", slow ? slow : "");
    json_t *h = http_json(&srv_main, "GET", path, NULL, NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(json_object_get(h, slow), "status"), "status_str")),
                 "error");
    json_decref(h);
    h = http_json(&srv_main, "GET", "/history?max_items=1", NULL, NULL);
    CHECK_EQ_INT(json_object_size(h), 1);
    CHECK(json_object_get(h, slow) != NULL);
    json_decref(h);
    snprintf(body, sizeof body, "{\"delete\": [\"%s\"]}", slow ? slow : "");
    json_decref(http_json(&srv_main, "POST", "/history", body, NULL));
    h = http_json(&srv_main, "GET", path, NULL, NULL);
    CHECK_EQ_INT(json_object_size(h), 0);
    json_decref(h);
    free(slow);
    free(waiting);
    ws_free(&w);
}

static void test_object_info(void)
{
    json_t *all = http_json(&srv_main, "GET", "/object_info", NULL, NULL);
    json_t *ks = json_object_get(all, "KSampler");
    json_t *seed = json_object_get(json_object_get(json_object_get(ks, "input"), "required"), "seed");
    CHECK_STR_EQ(json_string_value(json_array_get(seed, 0)), "INT");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(seed, 1), "default")), 0);
    /* The seed asks the front end for its control widget; no input of that name is declared. */
    CHECK(json_is_true(json_object_get(json_array_get(seed, 1), "control_after_generate")));
    CHECK(!json_object_get(json_object_get(json_object_get(ks, "input"), "required"), "control_after_generate"));
    CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(ks, "output"), 0)), "LATENT");
    CHECK(json_is_true(json_object_get(json_object_get(all, "SaveImage"), "output_node")));
    json_decref(all);
    json_t *ck = http_json(&srv_main, "GET", "/api/object_info/CheckpointLoaderSimple", NULL, NULL);
    json_t *name = json_object_get(json_object_get(json_object_get(json_object_get(ck, "CheckpointLoaderSimple"),
                                                                   "input"), "required"), "ckpt_name");
    CHECK_STR_EQ(json_string_value(json_array_get(json_array_get(name, 0), 0)), "tiny.safetensors");
    json_decref(ck);
    json_t *models = http_json(&srv_main, "GET", "/models/checkpoints", NULL, NULL);
    CHECK_STR_EQ(json_string_value(json_array_get(models, 0)), "tiny.safetensors");
    json_decref(models);
    models = http_json(&srv_main, "GET", "/models/ipadapter", NULL, NULL); /* a folder the IP-Adapter nodes read */
    CHECK(json_is_array(models));
    json_decref(models);
    json_t *stats = http_json(&srv_main, "GET", "/system_stats", NULL, NULL);
    CHECK(json_is_object(json_object_get(stats, "system")) && json_is_array(json_object_get(stats, "devices")));
    json_decref(stats);
    json_t *emb = http_json(&srv_main, "GET", "/embeddings", NULL, NULL);
    CHECK(json_is_array(emb));
    json_decref(emb);
}

static void check_upload_name(reply r, const char *name, const char *sub)
{
    CHECK_EQ_INT(r.status, 200);
    json_t *v = json_loads(r.body ? r.body : "", 0, NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(v, "name")), name);
    CHECK_STR_EQ(json_string_value(json_object_get(v, "subfolder")), sub);
    CHECK_STR_EQ(json_string_value(json_object_get(v, "type")), "input");
    json_decref(v);
    free(r.body);
}

/* A multipart upload of data as the "image" field named filename, with extra text fields, to
 * route (/upload/image, or /upload/mask with original_ref). */
static reply upload_to(const server *s, const char *route, const char *filename, const void *data, size_t len,
                       const char *subfolder, const char *overwrite, const char *original_ref)
{
    size_t cap = len + 2048, n = 0;
    char *body = malloc(cap);
    n += (size_t)snprintf(body + n, cap - n, "--BOUND\r\nContent-Disposition: form-data; name=\"image\"; "
                                             "filename=\"%s\"\r\nContent-Type: image/png\r\n\r\n", filename);
    memcpy(body + n, data, len);
    n += len;
    if (subfolder)
        n += (size_t)snprintf(body + n, cap - n, "\r\n--BOUND\r\nContent-Disposition: form-data; "
                                                 "name=\"subfolder\"\r\n\r\n%s", subfolder);
    if (overwrite)
        n += (size_t)snprintf(body + n, cap - n, "\r\n--BOUND\r\nContent-Disposition: form-data; "
                                                 "name=\"overwrite\"\r\n\r\n%s", overwrite);
    if (original_ref)
        n += (size_t)snprintf(body + n, cap - n, "\r\n--BOUND\r\nContent-Disposition: form-data; "
                                                 "name=\"original_ref\"\r\n\r\n%s", original_ref);
    n += (size_t)snprintf(body + n, cap - n, "\r\n--BOUND--\r\n");
    reply r = http(s, "POST", route, "Content-Type: multipart/form-data; boundary=BOUND\r\n", body, n);
    free(body);
    return r;
}

static reply upload(const server *s, const char *filename, const void *data, size_t len, const char *subfolder,
                    const char *overwrite)
{
    return upload_to(s, "/upload/image", filename, data, len, subfolder, overwrite, NULL);
}

/* Decodes a PNG (memory) as RGBA8 (malloc'd); NULL when it is not one. */
static unsigned char *rgba_of(const void *data, size_t len, png_image *img)
{
    memset(img, 0, sizeof *img);
    img->version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(img, data, len))
        return NULL;
    img->format = PNG_FORMAT_RGBA;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(*img));
    if (px && png_image_finish_read(img, NULL, px, 0, NULL))
        return px;
    free(px);
    return NULL;
}

/* ComfyUI's mask editor: the mask's alpha goes into the original (uploaded as up.png). */
static void check_upload_mask(const char *png, size_t len)
{
    png_image img;
    unsigned char *orig = rgba_of(png, len, &img);
    CHECK(orig != NULL);
    if (!orig)
        return;
    size_t cells = (size_t)img.width * img.height;
    unsigned char *mask = calloc(cells, 4);
    for (size_t i = 0; i < cells; i++)
        mask[i * 4 + 3] = (unsigned char)(i % 251);
    png_alloc_size_t size = 0;
    png_image_write_to_memory(&img, NULL, &size, 0, mask, 0, NULL);
    unsigned char *encoded = malloc(size);
    CHECK(png_image_write_to_memory(&img, encoded, &size, 0, mask, 0, NULL));
    reply r = upload_to(&srv_main, "/upload/mask", "clipspace-mask.png", encoded, size, NULL, NULL,
                        "{\"filename\": \"up.png\", \"subfolder\": \"\", \"type\": \"input\"}");
    check_upload_name(r, "clipspace-mask.png", "");
    r = http(&srv_main, "GET", "/view?filename=clipspace-mask.png&type=input", NULL, NULL, 0);
    png_image got;
    unsigned char *px = r.body ? rgba_of(r.body, r.len, &got) : NULL;
    CHECK(px && got.width == img.width && got.height == img.height);
    bool same = px != NULL;
    for (size_t i = 0; same && i < cells; i++)
        same = px[i * 4 + 3] == i % 251 && !memcmp(px + i * 4, orig + i * 4, 3);
    CHECK_MSG(same, "the stored image is the original's RGB with the mask's alpha");
    free(px);
    free(r.body);
    r = upload_to(&srv_main, "/upload/mask", "m2.png", encoded, size, NULL, NULL,
                  "{\"filename\": \"../x.png\", \"subfolder\": \"\", \"type\": \"input\"}");
    CHECK_EQ_INT(r.status, 400);
    free(r.body);
    r = upload_to(&srv_main, "/upload/mask", "m2.png", encoded, size, NULL, NULL,
                  "{\"filename\": \"in sub.png\", \"subfolder\": \"a/b\", \"type\": \"input\"}");
    CHECK_EQ_INT(r.status, 200); /* same size as shapes.png */
    free(r.body);
    free(encoded);
    free(mask);
    free(orig);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(1 << 22);
    *len = f && buf ? fread(buf, 1, 1 << 22, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

static void test_uploads(void)
{
    char src[4096];
    snprintf(src, sizeof src, "%s/examples/input/shapes.png", test_source_dir());
    size_t len, len2;
    char *png = read_file(src, &len), *other = malloc(len + 1);
    memcpy(other, png, len);
    other[len] = 'x'; /* a trailing byte: a different file that is still a PNG */
    len2 = len + 1;
    check_upload_name(upload(&srv_main, "up.png", png, len, NULL, NULL), "up.png", "");
    check_upload_name(upload(&srv_main, "up.png", png, len, NULL, NULL), "up.png", "");
    check_upload_name(upload(&srv_main, "up.png", other, len2, NULL, NULL), "up (1).png", "");
    check_upload_name(upload(&srv_main, "up.png", other, len2, NULL, "true"), "up.png", "");
    check_upload_name(upload(&srv_main, "in sub.png", png, len, "a/b", NULL), "in sub.png", "a/b");
    check_upload_mask(png, len);
    char *stored = test_path(dir_in, "a/b/in sub.png");
    CHECK(test_file_exists(stored));
    free(stored);
    reply r = http(&srv_main, "GET", "/view?filename=in%20sub.png&subfolder=a/b&type=input", NULL, NULL, 0);
    CHECK(r.status == 200 && r.len == len);
    free(r.body);

    static const struct { const char *name, *sub; int status; } bad[] = {
        {"../escape.png", NULL, 400}, {"/etc/x.png", NULL, 400}, {".hidden.png", NULL, 400},
        {"ok.png", "../out", 400}, {"ok.png", "/tmp", 400}, {"ok.png", "a/../../b", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = upload(&srv_main, bad[i].name, png, len, bad[i].sub, NULL);
        CHECK_MSG(r.status == bad[i].status, "upload %s in %s: status %d", bad[i].name, bad[i].sub ? bad[i].sub : "",
                  r.status);
        free(r.body);
    }
    /* Symlinked subfolder leading outside the input directory. */
    char *link = test_path(dir_in, "out-link");
    CHECK(symlink(dir_out, link) == 0);
    r = upload(&srv_main, "ok.png", png, len, "out-link", NULL);
    CHECK_EQ_INT(r.status, 400);
    free(r.body);
    r = http(&srv_main, "GET", "/view?filename=x.png&subfolder=out-link&type=input", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 404);
    free(r.body);
    free(link);
    /* Not a PNG; a header claiming too many pixels; a malformed form. */
    r = upload(&srv_main, "t.png", "GIF89a-not-a-png-at-all-here", 28, NULL, NULL);
    CHECK_EQ_INT(r.status, 415);
    free(r.body);
    unsigned char huge[33];
    memcpy(huge, png, 33);
    huge[16] = huge[20] = 0;
    huge[17] = huge[21] = 0x7f; /* 0x7fxxxx x 0x7fxxxx */
    r = upload(&srv_main, "huge.png", huge, sizeof huge, NULL, NULL);
    CHECK_EQ_INT(r.status, 413);
    free(r.body);
    r = http(&srv_main, "POST", "/upload/image", "Content-Type: multipart/form-data; boundary=B\r\n", "--B\r\nxx", 7);
    CHECK_EQ_INT(r.status, 400);
    free(r.body);
    free(png);
    free(other);
}

static void test_view_confined(void)
{
    static const char *const paths[] = {
        "/view?filename=../queue.db&type=output", "/view?filename=%2Fetc%2Fpasswd&type=output",
        "/view?filename=passwd&subfolder=..%2F..%2F..%2Fetc&type=output", "/view?filename=x.png&type=models",
        "/view?type=output",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        reply r = http(&srv_main, "GET", paths[i], NULL, NULL, 0);
        CHECK_MSG(r.status == 400, "%s: status %d", paths[i], r.status);
        free(r.body);
    }
    reply r = http(&srv_main, "GET", "/view?filename=missing.png&type=output", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 404);
    free(r.body);
}

static void test_cross_origin(void)
{
    char same[128];
    snprintf(same, sizeof same, "Origin: http://127.0.0.1:%d\r\nContent-Type: application/json\r\n", srv_main.port);
    reply r = http(&srv_main, "POST", "/interrupt", "Origin: http://evil.example\r\n", "{}", 2);
    CHECK_EQ_INT(r.status, 403);
    free(r.body);
    r = http(&srv_main, "POST", "/api/queue", "Origin: null\r\n", "{\"clear\": true}", 15);
    CHECK_EQ_INT(r.status, 403);
    free(r.body);
    r = http(&srv_main, "POST", "/interrupt", same, "{}", 2);
    CHECK_EQ_INT(r.status, 200);
    free(r.body);
    ws_client w;
    CHECK(!ws_open(&w, &srv_main, "/ws?clientId=x", "http://evil.example"));
    ws_free(&w);
    /* DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1. */
    char rebind[256];
    snprintf(rebind, sizeof rebind, "Host: evil.example:%d\r\nOrigin: http://evil.example:%d\r\n", srv_main.port,
             srv_main.port);
    r = http_host(&srv_main, "POST", "/interrupt", rebind, "{}", 2);
    CHECK_EQ_INT(r.status, 403);
    free(r.body);
    r = http_host(&srv_main, "GET", "/queue", rebind, NULL, 0);
    CHECK_EQ_INT(r.status, 403);
    free(r.body);
    snprintf(rebind, sizeof rebind, "Host: localhost:%d\r\n", srv_main.port);
    r = http_host(&srv_main, "GET", "/queue", rebind, NULL, 0);
    CHECK_EQ_INT(r.status, 200);
    free(r.body);
}

static void test_token(void)
{
    reply r = http(&srv_token, "GET", "/queue", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 401);
    free(r.body);
    r = http(&srv_token, "GET", "/queue", "Authorization: Bearer wrong\r\n", NULL, 0);
    CHECK_EQ_INT(r.status, 401);
    free(r.body);
    r = http(&srv_token, "GET", "/queue", "Authorization: Bearer s3cret-token\r\n", NULL, 0);
    CHECK_EQ_INT(r.status, 200);
    free(r.body);
    ws_client w;
    CHECK(!ws_open(&w, &srv_token, "/ws", NULL));
    ws_free(&w);
    CHECK(ws_open(&w, &srv_token, "/ws?token=s3cret-token", NULL));
    CHECK(ws_wait(&w, "status", NULL, NULL, NULL) != NULL);
    ws_free(&w);
    /* This server takes request bodies of at most 4 KiB. */
    char big[8192];
    memset(big, 'a', sizeof big);
    r = http(&srv_token, "POST", "/upload/image",
             "Authorization: Bearer s3cret-token\r\nContent-Type: multipart/form-data; boundary=B\r\n", big, sizeof big);
    CHECK_EQ_INT(r.status, 413);
    free(r.body);
}


/* ---- The web front end's routes (--front-end, --user-dir). ---- */

/* A request whose reply is any JSON value (NULL when not JSON); the status into *status. */
static json_t *http_any(const char *method, const char *path, const char *body, int *status)
{
    reply r = http(&srv_main, method, path, NULL, body, body ? strlen(body) : 0);
    json_t *v = r.body ? json_loadb(r.body, r.len, JSON_DECODE_ANY, NULL) : NULL;
    *status = r.status;
    free(r.body);
    return v;
}

static void test_front_end_static(void)
{
    reply r = http(&srv_main, "GET", "/", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR_CONTAINS(r.body, "fake front end");
    free(r.body);
    r = http(&srv_main, "GET", "/assets/app.js", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 200);
    free(r.body);
    static const char *const outside[] = {"/assets/%2e%2e/%2e%2e/queue.db", "/..%2fqueue.db", "/api/",
                                          "/assets/missing.js"};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        r = http(&srv_main, "GET", outside[i], NULL, NULL, 0);
        CHECK_MSG(r.status == 404 || r.status == 400, "%s: status %d", outside[i], r.status);
        free(r.body);
    }
}

static void test_settings(void)
{
    int st;
    json_t *v = http_any("GET", "/api/users", NULL, &st);
    CHECK_STR_EQ(json_string_value(json_object_get(v, "storage")), "server");
    CHECK(json_is_false(json_object_get(v, "migrated")));
    json_decref(v);
    json_decref(http_any("POST", "/api/settings", "{\"Comfy.A\": 1, \"Comfy.B\": \"x\"}", &st));
    CHECK_EQ_INT(st, 200);
    json_decref(http_any("POST", "/api/settings/Comfy.B", "[1, 2]", &st));
    CHECK_EQ_INT(st, 200);
    v = http_any("GET", "/api/settings", NULL, &st);
    CHECK_EQ_INT(json_integer_value(json_object_get(v, "Comfy.A")), 1);
    CHECK_EQ_INT(json_array_size(json_object_get(v, "Comfy.B")), 2);
    json_decref(v);
    v = http_any("GET", "/api/settings/Comfy.A", NULL, &st);
    CHECK_EQ_INT(json_integer_value(v), 1);
    json_decref(v);
    v = http_any("GET", "/api/settings/Comfy.None", NULL, &st);
    CHECK(json_is_null(v));
    json_decref(v);
    json_decref(http_any("POST", "/api/settings", "[1]", &st));
    CHECK_EQ_INT(st, 400);
    v = http_any("GET", "/api/users", NULL, &st);
    CHECK(json_is_true(json_object_get(v, "migrated")));
    json_decref(v);
    char *file = test_path(dir_users, "default/comfy.settings.json");
    CHECK(test_file_exists(file));
    free(file);
}

static void test_userdata(void)
{
    int st;
    json_t *v = http_any("POST", "/api/userdata/workflows%2Fa%20b.json?overwrite=false", "{\"nodes\": []}", &st);
    CHECK_EQ_INT(st, 200);
    CHECK_STR_EQ(json_string_value(v), "workflows/a b.json");
    json_decref(v);
    json_decref(http_any("POST", "/api/userdata/workflows%2Fa%20b.json?overwrite=false", "{}", &st));
    CHECK_EQ_INT(st, 409);
    reply r = http(&srv_main, "GET", "/api/userdata/workflows%2Fa%20b.json", NULL, NULL, 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR_EQ(r.body, "{\"nodes\": []}");
    free(r.body);
    v = http_any("GET", "/api/userdata?dir=workflows%2F&recurse=true&split=false&full_info=true", NULL, &st);
    CHECK_EQ_INT(json_array_size(v), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(v, 0), "path")), "a b.json");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(v, 0), "size")), 13);
    CHECK(json_integer_value(json_object_get(json_array_get(v, 0), "modified")) > 1600000000000LL);
    json_decref(v);
    v = http_any("GET", "/api/v2/userdata?path=workflows", NULL, &st);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(v, 0), "path")), "workflows/a b.json");
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(v, 0), "type")), "file");
    json_decref(v);
    v = http_any("POST", "/api/userdata/workflows%2Fa%20b.json/move/workflows%2Fsub%2Fc.json?full_info=true", NULL, &st);
    CHECK_EQ_INT(st, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(v, "path")), "workflows/sub/c.json");
    json_decref(v);
    v = http_any("GET", "/api/userdata?dir=workflows", NULL, &st);
    CHECK_EQ_INT(json_array_size(v), 0); /* without recurse: only the directory's own files */
    json_decref(v);
    json_decref(http_any("DELETE", "/api/userdata/workflows%2Fsub%2Fc.json", NULL, &st));
    CHECK_EQ_INT(st, 204);
    json_decref(http_any("GET", "/api/userdata/workflows%2Fsub%2Fc.json", NULL, &st));
    CHECK_EQ_INT(st, 404);
    json_decref(http_any("GET", "/api/userdata?dir=missing", NULL, &st));
    CHECK_EQ_INT(st, 404);
    /* Nothing leaves the user's directory: "..", absolute names, symlinks. */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/default/out'", dir_out, dir_users);
    CHECK_EQ_INT(system(cmd), 0);
    static const char *const bad[] = {
        "POST /api/userdata/..%2F..%2Fevil.json", "POST /api/userdata/%2Ftmp%2Fevil.json",
        "POST /api/userdata/out%2Fevil.json",     "GET /api/userdata/..%2Fdefault%2Fcomfy.settings.json",
        "GET /api/userdata?dir=..",               "GET /api/userdata?dir=out",
        "POST /api/userdata/workflows%2Fx.json/move/..%2F..%2Fx.json", "DELETE /api/userdata/.%2Fcomfy.settings.json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char method[8], path[200];
        sscanf(bad[i], "%7s %199s", method, path);
        json_decref(http_any(method, path, "{}", &st));
        CHECK_MSG(st == 403 || st == 400 || st == 404, "%s: status %d", bad[i], st);
    }
    char *evil = test_path(dir_out, "evil.json");
    CHECK(!test_file_exists(evil));
    free(evil);
}

static void test_jobs(void)
{
    int st;
    json_t *v = http_any("GET", "/api/jobs?status=completed,failed&limit=2&offset=0", NULL, &st);
    json_t *jobs = json_object_get(v, "jobs"), *page = json_object_get(v, "pagination");
    CHECK_EQ_INT(st, 200);
    CHECK(json_array_size(jobs) >= 1 && json_array_size(jobs) <= 2);
    CHECK(json_integer_value(json_object_get(page, "total")) >= (json_int_t)json_array_size(jobs));
    json_t *job = json_array_get(jobs, 0);
    CHECK(json_is_integer(json_object_get(job, "create_time")));
    CHECK(json_is_integer(json_object_get(job, "outputs_count")));
    const char *id = json_string_value(json_object_get(job, "id"));
    char path[128];
    snprintf(path, sizeof path, "/api/jobs/%s", id ? id : "none");
    json_t *one = http_any("GET", path, NULL, &st);
    CHECK_EQ_INT(st, 200);
    CHECK(json_is_object(json_object_get(one, "outputs")) && json_is_object(json_object_get(one, "workflow")));
    json_decref(one);
    json_decref(v);
    json_decref(http_any("GET", "/api/jobs/00000000-0000-4000-8000-000000000000", NULL, &st));
    CHECK_EQ_INT(st, 404);
    json_decref(http_any("GET", "/api/jobs?status=bogus", NULL, &st));
    CHECK_EQ_INT(st, 400);
    v = http_any("GET", "/api/features", NULL, &st);
    CHECK(json_is_integer(json_object_get(v, "max_upload_size")));
    json_decref(v);
    v = http_any("GET", "/api/i18n", NULL, &st);
    CHECK(json_is_object(v) && st == 200);
    json_decref(v);
}

/* /view?channel=rgb|a of an RGBA PNG. */
static void test_view_channel(void)
{
    unsigned char px[4 * 4] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160};
    png_image img = {.version = PNG_IMAGE_VERSION, .width = 2, .height = 2, .format = PNG_FORMAT_RGBA};
    char *file = test_path(dir_in, "rgba.png");
    CHECK(png_image_write_to_file(&img, file, 0, px, 0, NULL));
    free(file);
    reply r = http(&srv_main, "GET", "/view?filename=rgba.png&type=input&channel=a", NULL, NULL, 0);
    png_image out;
    unsigned char *a = rgba_of(r.body, r.len, &out);
    CHECK(a && a[0] == 0 && a[1] == 0 && a[3] == 40 && a[15] == 160);
    free(a);
    free(r.body);
    r = http(&srv_main, "GET", "/view?filename=rgba.png&type=input&channel=rgb&preview=webp;90", NULL, NULL, 0);
    CHECK(r.len > 26 && r.body[25] == 2); /* IHDR colour type 2: RGB, no alpha */
    unsigned char *rgb = rgba_of(r.body, r.len, &out);
    CHECK(rgb && rgb[0] == 10 && rgb[3] == 255 && rgb[12] == 130);
    free(rgb);
    free(r.body);
}

int main(void)
{
    mg_init_library(0);
    const char *scratch = test_scratch_dir();
    dir_out = test_path(scratch, "output");
    dir_in = test_path(scratch, "input");
    dir_models = test_path(scratch, "models");
    dir_users = test_path(scratch, "user");
    dir_front = test_path(scratch, "front");
    char *db = test_path(scratch, "queue.db"), *db2 = test_path(scratch, "queue2.db");
    char *cache = test_path(scratch, "cache.db");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/checkpoints' '%s' '%s' && '%s/sdflow_mkckpt' --preset tiny "
                              "'%s/checkpoints/tiny.safetensors' >/dev/null",
             dir_models, dir_in, dir_out, getenv("SDFLOW_BUILD_DIR"), dir_models);
    CHECK_EQ_INT(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/assets' && echo '<html>fake front end</html>' >'%s/index.html' && "
                              "echo 'let a;' >'%s/assets/app.js'", dir_front, dir_front, dir_front);
    CHECK_EQ_INT(system(cmd), 0);
    const char *args[] = {"--queue-db", db, "--models-dir", dir_models, "--input-dir", dir_in, "--output-dir",
                          dir_out, "--cache", cache, "--user-dir", dir_users, "--front-end", dir_front, NULL};
    const char *args2[] = {"--queue-db", db2, "--models-dir", dir_models, "--input-dir", dir_in, "--output-dir",
                           dir_out, "--no-cache", "--token", "s3cret-token", "--max-upload", "4K", NULL};
    if (start_server(&srv_main, args) && start_server(&srv_token, args2)) {
        RUN(test_websocket_example);
        RUN(test_basic_example);
        RUN(test_validation_errors);
        RUN(test_interrupt_and_queue);
        RUN(test_object_info);
        RUN(test_uploads);
        RUN(test_view_confined);
        RUN(test_cross_origin);
        RUN(test_token);
        RUN(test_front_end_static);
        RUN(test_settings);
        RUN(test_userdata);
        RUN(test_jobs);
        RUN(test_view_channel);
    }
    stop_server(&srv_main);
    stop_server(&srv_token);
    free(db);
    free(db2);
    free(cache);
    free(dir_out);
    free(dir_in);
    free(dir_models);
    free(dir_users);
    free(dir_front);
    mg_exit_library();
    return test_summary("test_server_api");
}
