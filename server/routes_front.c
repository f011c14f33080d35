/* What ComfyUI's web front end needs besides the API and the user's files: its static files
 * (--front-end DIR), /i18n, /workflow_templates, /features and the jobs API (/jobs,
 * /jobs/{id}, /jobs/{id}/cancel, /jobs/cancel) that its queue and history panels read, in the
 * shapes of ComfyUI's server.py and comfy_execution/jobs.py. */
#include "server/internal.h"
#include "server/parse.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define JSON_BODY_LIMIT (1LL << 20)

/* GET /i18n and /workflow_templates: the custom nodes' translations and templates; sdflow has
 * none. */
void sd_route_empty_object(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    sd_http_json(conn, 200, json_object());
}

/* GET /features: ComfyUI's server feature flags. Previews are the plain PREVIEW_IMAGE frames. */
void sd_route_features(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    sd_http_json(conn, 200, json_pack("{s:b, s:I}", "supports_preview_metadata", 0, "max_upload_size",
                                      (json_int_t)srv->cfg.max_upload));
}

/* ---- Jobs. ---- */

enum { JOB_PENDING = 1, JOB_IN_PROGRESS = 2, JOB_COMPLETED = 4, JOB_FAILED = 8 };

static long long create_time(const json_t *extra)
{
    return (long long)json_integer_value(json_object_get(extra, "create_time"));
}

/* The job of a queue item [number, id, prompt, extra, outputs]. create_time is 0 for prompts
 * queued before the server recorded it (the front end's schema requires the field). */
static json_t *queue_job(const json_t *item, const char *status)
{
    const json_t *extra = json_array_get(item, 3);
    json_t *job = json_pack("{s:O?, s:s, s:O?, s:I, s:i}", "id", json_array_get(item, 1), "status", status, "priority",
                            json_array_get(item, 0), "create_time", (json_int_t)create_time(extra), "outputs_count", 0);
    json_t *wid = json_object_get(json_object_get(json_object_get(extra, "extra_pnginfo"), "workflow"), "id");
    if (json_is_string(wid))
        json_object_set(job, "workflow_id", wid);
    return job;
}

/* Counts the output files and picks the preview (the first image of type output, else the first
 * image), as comfy_execution/jobs.py's get_outputs_summary. */
static json_t *outputs_summary(const json_t *outputs, int *count)
{
    json_t *preview = NULL, *fallback = NULL;
    const char *node, *media;
    json_t *by_media, *items, *it;
    size_t i;
    *count = 0;
    json_object_foreach((json_t *)outputs, node, by_media)
    {
        json_object_foreach(by_media, media, items)
        {
            if (!json_is_array(items))
                continue;
            json_array_foreach(items, i, it)
            {
                if (!json_is_object(it))
                    continue;
                (*count)++;
                bool media_ok = !strcmp(media, "images") || !strcmp(media, "video") || !strcmp(media, "audio");
                if (preview || !media_ok)
                    continue;
                const char *type = json_string_value(json_object_get(it, "type"));
                if (type && !strcmp(type, "output"))
                    preview = it;
                else if (!fallback)
                    fallback = it;
                if ((preview == it || fallback == it) && !json_object_get(it, "nodeId")) {
                    json_t *copy = json_deep_copy(it);
                    json_object_set_new(copy, "nodeId", json_string(node));
                    json_object_set_new(copy, "mediaType", json_string(media));
                    if (preview == it)
                        preview = copy;
                    else
                        fallback = copy;
                }
            }
        }
    }
    if (preview) {
        json_decref(fallback);
        return preview;
    }
    return fallback;
}

/* The job of a history entry; with details, its outputs, status and workflow too. */
static json_t *history_job(const char *id, const json_t *entry, bool details, int *flag)
{
    const json_t *prompt = json_object_get(entry, "prompt"), *status = json_object_get(entry, "status");
    const json_t *extra = json_array_get(prompt, 3), *outputs = json_object_get(entry, "outputs");
    const char *str = json_string_value(json_object_get(status, "status_str"));
    bool failed = str && !strcmp(str, "error");
    *flag = failed ? JOB_FAILED : JOB_COMPLETED;
    int count;
    json_t *preview = outputs_summary(outputs, &count);
    json_t *job = json_pack("{s:s, s:s, s:O?, s:I, s:i, s:o?}", "id", id, "status", failed ? "failed" : "completed",
                            "priority", json_array_get(prompt, 0), "create_time", (json_int_t)create_time(extra),
                            "outputs_count", count, "preview_output", preview);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(status, "messages"), i, m)
    {
        const char *ev = json_string_value(json_array_get(m, 0));
        json_t *data = json_array_get(m, 1), *ts = json_object_get(data, "timestamp");
        if (!ev || !ts)
            continue;
        if (!strcmp(ev, "execution_start"))
            json_object_set(job, "execution_start_time", ts);
        else if (!strcmp(ev, "execution_success") || !strcmp(ev, "execution_error") ||
                 !strcmp(ev, "execution_interrupted")) {
            json_object_set(job, "execution_end_time", ts);
            if (!strcmp(ev, "execution_error"))
                json_object_set(job, "execution_error", data);
        }
    }
    json_t *wid = json_object_get(json_object_get(json_object_get(extra, "extra_pnginfo"), "workflow"), "id");
    if (json_is_string(wid))
        json_object_set(job, "workflow_id", wid);
    if (details) {
        json_object_set(job, "outputs", (json_t *)outputs);
        json_object_set(job, "execution_status", (json_t *)status);
        json_object_set_new(job, "workflow", json_pack("{s:O?, s:O?}", "prompt", json_array_get(prompt, 2), "extra_data", extra));
    }
    return job;
}

/* Every job whose status is in mask: running, pending, then history. */
static json_t *all_jobs(sd_server *srv, int mask)
{
    json_t *jobs = json_array(), *queue = sd_store_queue_json(srv->store), *item;
    size_t i;
    json_array_foreach(json_object_get(queue, "queue_running"), i, item)
    {
        if (mask & JOB_IN_PROGRESS)
            json_array_append_new(jobs, queue_job(item, "in_progress"));
    }
    json_array_foreach(json_object_get(queue, "queue_pending"), i, item)
    {
        if (mask & JOB_PENDING)
            json_array_append_new(jobs, queue_job(item, "pending"));
    }
    json_decref(queue);
    if (mask & (JOB_COMPLETED | JOB_FAILED)) {
        json_t *history = sd_store_history_json(srv->store, NULL, -1), *entry;
        const char *id;
        json_object_foreach(history, id, entry)
        {
            int flag;
            json_t *job = history_job(id, entry, false, &flag);
            if (mask & flag)
                json_array_append_new(jobs, job);
            else
                json_decref(job);
        }
        json_decref(history);
    }
    return jobs;
}

static int by_time_desc(const void *a, const void *b)
{
    long long x = json_integer_value(json_object_get(*(json_t *const *)a, "create_time"));
    long long y = json_integer_value(json_object_get(*(json_t *const *)b, "create_time"));
    return (x < y) - (x > y);
}

/* The status filter ("pending,in_progress,...") as a mask; 0 when a name is unknown. */
static int status_mask(const char *list)
{
    static const char *const names[] = {"pending", "in_progress", "completed", "failed"};
    int mask = 0;
    for (const char *s = list; *s;) {
        size_t n = strcspn(s, ","), k;
        for (k = 0; k < 4 && (strlen(names[k]) != n || strncmp(s, names[k], n)); k++)
            ;
        if (k < 4)
            mask |= 1 << k;
        else if (n && strncmp(s, "cancelled", n)) /* the front end asks for cancelled ones: none */
            return 0;
        s += n + (s[n] == ',');
    }
    return mask;
}

static void list_jobs(sd_server *srv, struct mg_connection *conn)
{
    char v[128] = "", order[8] = "desc";
    long long limit = -1, offset = 0;
    int mask = JOB_PENDING | JOB_IN_PROGRESS | JOB_COMPLETED | JOB_FAILED;
    if (sd_http_query(conn, "status", v, sizeof v) && !(mask = status_mask(v))) {
        sd_http_error(conn, 400, "bad_request", "status must list pending, in_progress, completed or failed");
        return;
    }
    if (sd_http_query(conn, "limit", v, sizeof v) && ((limit = strtoll(v, NULL, 10)) < 0 || !*v)) {
        sd_http_error(conn, 400, "bad_request", "limit must be a positive integer");
        return;
    }
    if (sd_http_query(conn, "offset", v, sizeof v) && (offset = strtoll(v, NULL, 10)) < 0)
        offset = 0;
    sd_http_query(conn, "sort_order", order, sizeof order);
    json_t *jobs = all_jobs(srv, mask), *page = json_array();
    size_t n = json_array_size(jobs);
    json_t **items = n ? malloc(n * sizeof *items) : NULL;
    for (size_t i = 0; items && i < n; i++)
        items[i] = json_array_get(jobs, i);
    if (items)
        qsort(items, n, sizeof *items, by_time_desc);
    bool asc = !strcmp(order, "asc");
    for (size_t k = (size_t)offset; items && k < n && (limit < 0 || (long long)(k - (size_t)offset) < limit); k++)
        json_array_append(page, items[asc ? n - 1 - k : k]);
    free(items);
    json_decref(jobs);
    bool more = limit >= 0 && (long long)n > offset + limit;
    json_t *pagination = json_pack("{s:I, s:I, s:b}", "offset", (json_int_t)offset, "total", (json_int_t)n,
                                   "has_more", more);
    if (limit >= 0)
        json_object_set_new(pagination, "limit", json_integer(limit));
    sd_http_json(conn, 200, json_pack("{s:o, s:o}", "jobs", page, "pagination", pagination));
}

/* Cancels a job: a pending one leaves the queue, a running one is interrupted. */
static void cancel_job(sd_server *srv, const char *id)
{
    json_t *ids = json_pack("[s]", id);
    sd_store_delete_pending(srv->store, ids);
    json_decref(ids);
    sd_executor_interrupt(srv, id);
}

/* The job of the queue item with this id in list, or NULL. */
static json_t *find_queued(const json_t *list, const char *id, const char *status)
{
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *iid = json_string_value(json_array_get(item, 1));
        if (iid && !strcmp(iid, id))
            return queue_job(item, status);
    }
    return NULL;
}

void sd_route_jobs(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(path, "/jobs")) {
        if (!strcmp(method, "GET"))
            list_jobs(srv, conn);
        else
            sd_http_error(conn, 405, "method_not_allowed", "%s is not allowed on /jobs", method);
        return;
    }
    char id[64];
    const char *rest = path + strlen("/jobs/");
    size_t n = strcspn(rest, "/");
    bool cancel = !strcmp(rest + n, "/cancel");
    if (!strcmp(rest, "cancel") && !strcmp(method, "POST")) { /* POST /jobs/cancel {job_ids} */
        json_t *body = sd_http_json_body(conn, JSON_BODY_LIMIT), *v;
        size_t i;
        if (!body)
            return;
        json_array_foreach(json_object_get(body, "job_ids"), i, v)
        {
            if (json_is_string(v))
                cancel_job(srv, json_string_value(v));
        }
        json_decref(body);
        sd_ws_broadcast_status(srv);
        sd_http_json(conn, 200, NULL);
        return;
    }
    if (n == 0 || n >= sizeof id || (rest[n] && !cancel) || strcmp(method, cancel ? "POST" : "GET")) {
        sd_http_error(conn, rest[n] && !cancel ? 404 : 405, "bad_request", "no such jobs route %s %s", method, path);
        return;
    }
    snprintf(id, sizeof id, "%.*s", (int)n, rest);
    if (cancel) {
        cancel_job(srv, id);
        sd_ws_broadcast_status(srv);
        sd_http_json(conn, 200, NULL);
        return;
    }
    json_t *history = sd_store_history_json(srv->store, id, -1), *entry = json_object_get(history, id), *job = NULL;
    int flag;
    if (entry) {
        job = history_job(id, entry, true, &flag);
    } else {
        json_t *queue = sd_store_queue_json(srv->store);
        job = find_queued(json_object_get(queue, "queue_running"), id, "in_progress");
        if (!job)
            job = find_queued(json_object_get(queue, "queue_pending"), id, "pending");
        json_decref(queue);
    }
    json_decref(history);
    if (job)
        sd_http_json(conn, 200, job);
    else
        sd_http_error(conn, 404, "not_found", "Job not found");
}

/* ---- Static files of the front end. ---- */

bool sd_front_end_file(sd_server *srv, struct mg_connection *conn, const char *path)
{
    const char *dir = srv->cfg.front_end;
    if (!dir)
        return false;
    const char *rel = path[0] == '/' ? path + 1 : path;
    char file[PATH_MAX];
    struct stat st;
    if (!rel[0])
        rel = "index.html";
    if (!sd_relpath_ok(rel, false) || (size_t)snprintf(file, sizeof file, "%s/%s", dir, rel) >= sizeof file ||
        stat(file, &st) != 0 || !S_ISREG(st.st_mode) || !sd_path_inside(dir, file))
        return false;
    /* index.html names the hashed bundles: always fetched again; the bundles may be cached. */
    mg_send_mime_file2(conn, file, NULL, !strcmp(rel, "index.html") ? "Cache-Control: no-cache\r\n" : NULL);
    return true;
}
