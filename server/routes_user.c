/* The routes ComfyUI's web front end calls for its user's files, as ComfyUI serves them
 * without --multi-user (app/user_manager.py, app/app_settings.py): /users, /settings,
 * /settings/{id}, /userdata, /v2/userdata, /userdata/{file} (GET, POST, DELETE) and
 * /userdata/{file}/move/{dest}. There is one user, "default"; its files lie under
 * <user_dir>/default. Every name passes sd_relpath_ok and must stay inside that directory after
 * symlinks are followed; files are replaced through a temporary file and rename(2). */
#include "server/internal.h"
#include "server/parse.h"
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>
#include <unistd.h>

#define USERDATA_MAX (64LL << 20)   /* largest userdata file accepted */
#define JSON_BODY_LIMIT (16LL << 20) /* largest settings body */
#define SETTINGS_FILE "comfy.settings.json"

/* Serialises read-modify-write of the settings file. */
static pthread_mutex_t settings_lock = PTHREAD_MUTEX_INITIALIZER;

/* The user's directory, <user_dir>/default, into out (created when create). */
static bool user_root(const sd_server *srv, bool create, char *out, size_t size)
{
    if (!srv->cfg.user_dir || (size_t)snprintf(out, size, "%s/default", srv->cfg.user_dir) >= size)
        return false;
    if (create) {
        mkdir(srv->cfg.user_dir, 0700);
        mkdir(out, 0700);
    }
    return true;
}

/* Resolves rel under the user's directory into out, making its parent directories; replies
 * 403 (and returns false) when rel is not a safe relative path or leads out of the directory. */
static bool user_path(sd_server *srv, struct mg_connection *conn, const char *rel, char *out, size_t size)
{
    char root[PATH_MAX], parent[PATH_MAX];
    const char *slash = strrchr(rel, '/');
    if (!sd_relpath_ok(rel, false) || !user_root(srv, true, root, sizeof root)) {
        sd_http_error(conn, 403, "forbidden", "invalid userdata path");
        return false;
    }
    snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - rel) : 0, rel);
    char dir[PATH_MAX];
    if (!sd_make_subdir(root, parent, dir, sizeof dir) || !sd_path_inside(srv->cfg.user_dir, dir) ||
        (size_t)snprintf(out, size, "%s/%s", root, rel) >= size) {
        sd_http_error(conn, 403, "forbidden", "invalid userdata path");
        return false;
    }
    struct stat st;
    if (lstat(out, &st) == 0 && (S_ISLNK(st.st_mode) ? !sd_path_inside(root, out) : !S_ISREG(st.st_mode))) {
        sd_http_error(conn, 403, "forbidden", "userdata path is not a file in the user directory");
        return false;
    }
    return true;
}

/* ComfyUI's FileInfo: {path, size, modified, created} (times in ms). */
static json_t *file_info(const char *rel, const struct stat *st)
{
    return json_pack("{s:s, s:I, s:I, s:I}", "path", rel, "size", (json_int_t)st->st_size, "modified",
                     (json_int_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000, "created",
                     (json_int_t)st->st_ctim.tv_sec * 1000 + st->st_ctim.tv_nsec / 1000000);
}

static bool query_true(const struct mg_connection *conn, const char *name, bool dflt)
{
    char v[16];
    if (!sd_http_query(conn, name, v, sizeof v))
        return dflt;
    return dflt ? strcmp(v, "false") != 0 : !strcasecmp(v, "true");
}

/* ---- /users (single-user mode). ---- */

void sd_route_users(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(method, "POST")) {
        sd_http_json(conn, 400, json_pack("{s:s}", "error", "this server has a single user (\"default\")"));
        return;
    }
    char root[PATH_MAX];
    struct stat st;
    bool migrated = user_root(srv, false, root, sizeof root) && stat(root, &st) == 0;
    sd_http_json(conn, 200, json_pack("{s:s, s:b}", "storage", "server", "migrated", migrated));
}

/* ---- /settings, /settings/{id}. ---- */

/* The settings object (a new reference; {} when there is none yet). */
static json_t *settings_load(const char *file)
{
    json_t *s = json_load_file(file, 0, NULL);
    if (!json_is_object(s)) {
        json_decref(s);
        s = json_object();
    }
    return s;
}

static bool settings_save(const char *file, const json_t *settings)
{
    char *text = json_dumps(settings, JSON_INDENT(4) | JSON_SORT_KEYS);
    bool ok = text && sd_write_atomic(file, (const unsigned char *)text, strlen(text));
    free(text);
    return ok;
}

void sd_route_settings(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    char file[PATH_MAX];
    const char *id = !strncmp(path, "/settings/", 10) ? path + 10 : NULL;
    if (!user_path(srv, conn, SETTINGS_FILE, file, sizeof file))
        return;
    json_t *value = NULL;
    if (!strcmp(method, "POST")) {
        size_t len;
        char *body = sd_http_body(conn, JSON_BODY_LIMIT, &len);
        if (!body)
            return;
        json_error_t err;
        value = json_loadb(body, len, JSON_DECODE_ANY, &err);
        free(body);
        if (!value || (!id && !json_is_object(value))) {
            json_decref(value);
            sd_http_error(conn, 400, "invalid_json", "the settings must be %s", id ? "a JSON value" : "a JSON object");
            return;
        }
    }
    pthread_mutex_lock(&settings_lock);
    json_t *settings = settings_load(file);
    bool ok = true;
    if (value) {
        if (id)
            json_object_set(settings, id, value);
        else
            json_object_update(settings, value);
        ok = settings_save(file, settings);
    }
    pthread_mutex_unlock(&settings_lock);
    if (!ok)
        sd_http_error(conn, 500, "io_error", "could not write the settings");
    else if (value)
        sd_http_json(conn, 200, NULL);
    else if (id) {
        json_t *v = json_object_get(settings, id);
        sd_http_json(conn, 200, v ? json_incref(v) : json_null());
    } else
        sd_http_json(conn, 200, json_incref(settings));
    json_decref(settings);
    json_decref(value);
}

/* ---- /userdata?dir=&recurse=&full_info=&split= and /v2/userdata?path=. ---- */

typedef struct listing {
    const char *base;  /* the listed directory, absolute */
    bool recurse, full_info, split, v2;
    const char *prefix; /* v2: the listed directory relative to the user's directory */
    json_t *out;
} listing;

static int cmp_entries(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    bool dx = !strcmp(json_string_value(json_object_get(x, "type")), "directory");
    bool dy = !strcmp(json_string_value(json_object_get(y, "type")), "directory");
    if (dx != dy)
        return dx ? -1 : 1;
    return strcasecmp(json_string_value(json_object_get(x, "name")), json_string_value(json_object_get(y, "name")));
}

/* Adds the entries under base/rel to ls->out, depth-limited. */
static void list_dir(listing *ls, const char *rel, int depth)
{
    char path[PATH_MAX];
    if (depth > 16 || (size_t)snprintf(path, sizeof path, "%s%s%s", ls->base, rel[0] ? "/" : "", rel) >= sizeof path)
        return;
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (!ls->v2 && e->d_name[0] == '.'))
            continue; /* glob's "*" skips dot files */
        char child[PATH_MAX], full[PATH_MAX];
        struct stat st;
        if ((size_t)snprintf(child, sizeof child, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= sizeof child ||
            (size_t)snprintf(full, sizeof full, "%s/%s", ls->base, child) >= sizeof full || lstat(full, &st) != 0 ||
            S_ISLNK(st.st_mode))
            continue;
        bool dir = S_ISDIR(st.st_mode);
        if (ls->v2) {
            char rp[PATH_MAX];
            if ((size_t)snprintf(rp, sizeof rp, "%s%s%s", ls->prefix, ls->prefix[0] ? "/" : "", child) >= sizeof rp)
                continue;
            json_t *entry = json_pack("{s:s, s:s, s:s}", "name", e->d_name, "path", rp, "type", dir ? "directory" : "file");
            if (!dir) {
                json_object_set_new(entry, "size", json_integer((json_int_t)st.st_size));
                json_object_set_new(entry, "modified", json_real((double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9));
            }
            json_array_append_new(ls->out, entry);
        } else if (!dir && S_ISREG(st.st_mode)) {
            if (ls->full_info) {
                json_array_append_new(ls->out, file_info(child, &st));
            } else if (ls->split) {
                json_t *parts = json_pack("[s]", child);
                for (const char *s = child; *s;) {
                    size_t n = strcspn(s, "/");
                    json_array_append_new(parts, json_stringn(s, n));
                    s += n + (s[n] == '/');
                }
                json_array_append_new(ls->out, parts);
            } else {
                json_array_append_new(ls->out, json_string(child));
            }
        }
        if (dir && (ls->recurse || ls->v2))
            list_dir(ls, child, depth + 1);
    }
    closedir(d);
}

static void sort_v2(json_t *list)
{
    size_t n = json_array_size(list);
    json_t **items = n ? malloc(n * sizeof *items) : NULL;
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        items[i] = json_incref(json_array_get(list, i));
    qsort(items, n, sizeof *items, cmp_entries);
    json_array_clear(list);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, items[i]);
    free(items);
}

void sd_route_userdata_list(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    bool v2 = !strcmp(path, "/v2/userdata");
    char rel[PATH_MAX] = "", root[PATH_MAX], dir[PATH_MAX];
    sd_http_query(conn, v2 ? "path" : "dir", rel, sizeof rel);
    size_t n = strlen(rel);
    while (n && rel[n - 1] == '/')
        rel[--n] = '\0'; /* the front end asks for "workflows/" */
    if (!v2 && !rel[0]) {
        sd_http_error(conn, 400, "bad_request", "Directory not provided");
        return;
    }
    if (!user_root(srv, false, root, sizeof root) || (rel[0] && !sd_relpath_ok(rel, false)) ||
        (size_t)snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel) >= sizeof dir) {
        sd_http_error(conn, v2 ? 400 : 403, "forbidden", "invalid directory");
        return;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (v2 && !rel[0])
            sd_http_json(conn, 200, json_array()); /* a new user: no directory yet */
        else
            sd_http_error(conn, 404, "not_found", "Directory not found");
        return;
    }
    if (!S_ISDIR(st.st_mode) || !sd_path_inside(srv->cfg.user_dir, dir)) {
        sd_http_error(conn, 400, "bad_request", "not a directory of the user");
        return;
    }
    listing ls = {.base = dir, .recurse = query_true(conn, "recurse", false), .full_info = query_true(conn, "full_info", false),
                  .split = query_true(conn, "split", false), .v2 = v2, .prefix = rel, .out = json_array()};
    list_dir(&ls, "", 0);
    if (v2)
        sort_v2(ls.out);
    sd_http_json(conn, 200, ls.out);
}

/* ---- /userdata/{file}, /userdata/{file}/move/{dest}. ---- */

/* Replies with the stored file's relative path, or its FileInfo with full_info. */
static void reply_stored(struct mg_connection *conn, const char *rel, const char *file)
{
    struct stat st;
    if (query_true(conn, "full_info", false) && stat(file, &st) == 0)
        sd_http_json(conn, 200, file_info(rel, &st));
    else
        sd_http_json(conn, 200, json_string(rel));
}

static void post_file(sd_server *srv, struct mg_connection *conn, const char *rel, const char *file)
{
    struct stat st;
    if (!query_true(conn, "overwrite", true) && stat(file, &st) == 0) {
        sd_http_error(conn, 409, "conflict", "File already exists");
        return;
    }
    size_t len;
    char *body = sd_http_body(conn, USERDATA_MAX, &len);
    if (!body)
        return;
    if (!sd_write_atomic(file, (unsigned char *)body, len))
        sd_http_error(conn, 400, "io_error", "could not write %s", rel);
    else
        reply_stored(conn, rel, file);
    free(body);
}

static void move_file(sd_server *srv, struct mg_connection *conn, const char *rel, const char *file, const char *dest_rel)
{
    char dest[PATH_MAX];
    struct stat st;
    if (!user_path(srv, conn, dest_rel, dest, sizeof dest))
        return;
    if (stat(file, &st) != 0)
        sd_http_error(conn, 404, "not_found", "no userdata file %s", rel);
    else if (!query_true(conn, "overwrite", true) && stat(dest, &st) == 0)
        sd_http_error(conn, 409, "conflict", "File already exists");
    else if (rename(file, dest) != 0)
        sd_http_error(conn, 400, "io_error", "could not move %s: %s", rel, strerror(errno));
    else
        reply_stored(conn, dest_rel, dest);
}

void sd_route_userdata(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    char rel[PATH_MAX], file[PATH_MAX];
    const char *dest = NULL;
    snprintf(rel, sizeof rel, "%s", path + strlen("/userdata/"));
    char *move = !strcmp(method, "POST") ? strstr(rel, "/move/") : NULL;
    if (move) {
        *move = '\0';
        dest = move + strlen("/move/");
    }
    if (!user_path(srv, conn, rel, file, sizeof file))
        return;
    struct stat st;
    if (dest) {
        move_file(srv, conn, rel, file, dest);
    } else if (!strcmp(method, "POST")) {
        post_file(srv, conn, rel, file);
    } else if (stat(file, &st) != 0) {
        sd_http_error(conn, 404, "not_found", "no userdata file %s", rel);
    } else if (!strcmp(method, "DELETE")) {
        if (unlink(file) != 0)
            sd_http_error(conn, 500, "io_error", "could not delete %s", rel);
        else {
            mg_response_header_start(conn, 204);
            mg_response_header_send(conn);
        }
    } else {
        /* User files are the user's content: never rendered inline (ComfyUI's stored-XSS guard). */
        const char *dot = strrchr(rel, '.');
        mg_send_mime_file2(conn, file, dot && !strcmp(dot, ".json") ? "application/json" : "application/octet-stream",
                           "X-Content-Type-Options: nosniff\r\nContent-Disposition: attachment\r\n");
    }
}
