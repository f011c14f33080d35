/* /view, /upload/image, /upload/mask, /models, /embeddings: files under the input, output and
 * temp directories and the model folders. Every name from a request passes sd_relpath_ok, and
 * the resolved path must lie inside its directory after symlinks are followed. */
#include "server/internal.h"
#include "server/parse.h"
#include <dirent.h>
#include <png.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory of a ComfyUI folder type ("input", "output", "temp"), or NULL. */
static const char *type_dir(sd_server *srv, const char *type)
{
    if (!strcmp(type, "output"))
        return sd_context_dir(srv->info, SD_DIR_OUTPUT);
    if (!strcmp(type, "input"))
        return sd_context_dir(srv->info, SD_DIR_INPUT);
    if (!strcmp(type, "temp"))
        return sd_context_dir(srv->info, SD_DIR_TEMP);
    return NULL;
}

static const char *mime_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcasecmp(dot, ".png"))
        return "image/png";
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))
        return "image/jpeg";
    if (!strcasecmp(dot, ".webp"))
        return "image/webp";
    if (!strcasecmp(dot, ".json"))
        return "application/json";
    return "application/octet-stream";
}

static unsigned char *read_rgba(png_image *img, const void *data, size_t len, long long max_pixels);
static char *read_file_bounded(const char *path, long long max, size_t *len);

/* /view's channel=rgb (the image without alpha) and channel=a (black with the image's alpha,
 * opaque when it has none), as PNGs like ComfyUI's. */
static void send_channel(sd_server *srv, struct mg_connection *conn, const char *file, bool alpha)
{
    size_t len = 0;
    png_alloc_size_t size = 0;
    char *data = read_file_bounded(file, 1LL << 30, &len);
    png_image img;
    unsigned char *px = data ? read_rgba(&img, data, len, srv->cfg.max_upload_pixels) : NULL, *png = NULL;
    if (px) {
        size_t n = (size_t)img.width * img.height;
        if (alpha) {
            for (size_t i = 0; i < n; i++)
                px[i * 4] = px[i * 4 + 1] = px[i * 4 + 2] = 0;
        } else {
            for (size_t i = 0; i < n; i++)
                memmove(px + i * 3, px + i * 4, 3);
            img.format = PNG_FORMAT_RGB;
        }
        if (!png_image_write_to_memory(&img, NULL, &size, 0, px, 0, NULL) || !(png = malloc(size)) ||
            !png_image_write_to_memory(&img, png, &size, 0, px, 0, NULL)) {
            free(png);
            png = NULL;
        }
    }
    if (!png) {
        sd_http_error(conn, 415, "unsupported_media_type", "channel needs a readable PNG");
    } else {
        char clen[32];
        snprintf(clen, sizeof clen, "%zu", (size_t)size);
        mg_response_header_start(conn, 200);
        mg_response_header_add(conn, "Content-Type", "image/png", -1);
        mg_response_header_add(conn, "Content-Length", clen, -1);
        mg_response_header_send(conn);
        mg_write(conn, png, size);
    }
    free(png);
    free(px);
    free(data);
}

void sd_route_view(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    char name[SD_MP_FILENAME_MAX], sub[SD_MP_FILENAME_MAX] = "", type[16] = "output";
    if (!sd_http_query(conn, "filename", name, sizeof name)) {
        sd_http_error(conn, 400, "bad_request", "missing filename");
        return;
    }
    sd_http_query(conn, "subfolder", sub, sizeof sub);
    sd_http_query(conn, "type", type, sizeof type);
    const char *dir = type_dir(srv, type);
    if (!dir) {
        sd_http_error(conn, 400, "bad_request", "type must be input, output or temp");
        return;
    }
    if (!sd_relpath_ok(name, false) || !sd_relpath_ok(sub, true)) {
        sd_http_error(conn, 400, "bad_request", "invalid filename or subfolder");
        return;
    }
    char file[PATH_MAX];
    struct stat st;
    if ((size_t)snprintf(file, sizeof file, "%s/%s%s%s", dir, sub, sub[0] ? "/" : "", name) >= sizeof file ||
        stat(file, &st) != 0 || !S_ISREG(st.st_mode) || !sd_path_inside(dir, file)) {
        sd_http_error(conn, 404, "not_found", "no such file");
        return;
    }
    char channel[8] = "rgba";
    sd_http_query(conn, "channel", channel, sizeof channel);
    if ((!strcmp(channel, "rgb") || !strcmp(channel, "a")) && !strcmp(mime_of(name), "image/png"))
        send_channel(srv, conn, file, channel[0] == 'a');
    else
        mg_send_mime_file(conn, file, mime_of(name)); /* preview=webp|jpeg: no encoder, the PNG as stored */
}

/* ---- Uploads. ---- */

/* True when path holds exactly data. */
static bool same_content(const char *path, const unsigned char *data, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    bool same = true;
    unsigned char buf[4096];
    size_t off = 0, n;
    while (same && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        same = off + n <= len && !memcmp(buf, data + off, n);
        off += n;
    }
    fclose(f);
    return same && off == len;
}

/* Stores the upload under dir as name, or "stem (i).ext" when another file has the name (ComfyUI's
 * rule; an identical file is reused); overwrite replaces. The name used goes into name. */
static bool store_upload(const char *dir, char *name, size_t size, const unsigned char *data, size_t len,
                         bool overwrite)
{
    char tmp[PATH_MAX], path[PATH_MAX], stem[SD_MP_FILENAME_MAX];
    if (!sd_write_temp(dir, data, len, tmp, sizeof tmp))
        return false;
    const char *dot = strrchr(name, '.');
    const char *ext = dot ? dot : "";
    snprintf(stem, sizeof stem, "%.*s", (int)(dot ? (size_t)(dot - name) : strlen(name)), name);
    bool ok = false;
    for (int i = 0; i < 10000 && !ok; i++) {
        char candidate[SD_MP_FILENAME_MAX + 16];
        if (i == 0)
            snprintf(candidate, sizeof candidate, "%s", name);
        else
            snprintf(candidate, sizeof candidate, "%s (%d)%s", stem, i, ext);
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, candidate) >= sizeof path || strlen(candidate) >= size)
            break;
        if (overwrite) {
            ok = rename(tmp, path) == 0;
        } else if (link(tmp, path) == 0) {
            ok = true;
        } else if (errno == EEXIST && same_content(path, data, len)) {
            ok = true;
        } else if (errno != EEXIST) {
            break;
        }
        if (ok)
            snprintf(name, size, "%s", candidate);
    }
    unlink(tmp);
    return ok;
}

/* A regular file's bytes (malloc'd), at most max; NULL when unreadable or larger. */
static char *read_file_bounded(const char *path, long long max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    if (f && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= max &&
        (buf = malloc((size_t)st.st_size + 1)) && fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        *len = (size_t)st.st_size;
    if (f)
        fclose(f);
    return buf;
}

/* The text value of a form field, into buf ("" when absent); false when too long. */
static bool field(const sd_multipart *mp, const char *key, char *buf, size_t size)
{
    const sd_mp_part *p = sd_multipart_get(mp, key);
    buf[0] = '\0';
    if (!p)
        return true;
    if (p->len >= size || memchr(p->data, '\0', p->len))
        return false;
    memcpy(buf, p->data, p->len);
    buf[p->len] = '\0';
    return true;
}

/* Decodes a PNG as RGBA8 (malloc'd), at most max_pixels; NULL when it is not a readable PNG. */
static unsigned char *read_rgba(png_image *img, const void *data, size_t len, long long max_pixels)
{
    memset(img, 0, sizeof *img);
    img->version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(img, data, len))
        return NULL;
    img->format = PNG_FORMAT_RGBA;
    unsigned char *px = NULL;
    if ((long long)img->width * img->height <= max_pixels && (px = malloc(PNG_IMAGE_SIZE(*img))) &&
        png_image_finish_read(img, NULL, px, 0, NULL))
        return px;
    png_image_free(img);
    free(px);
    return NULL;
}

/* /upload/mask (ComfyUI's upload_mask): the PNG named by the form's original_ref
 * {filename, subfolder, type} with its alpha replaced by the uploaded mask's alpha, encoded as
 * a new PNG into *out. Replies with the error and returns false when something is wrong. */
static bool masked_original(sd_server *srv, struct mg_connection *conn, const sd_multipart *mp,
                            const sd_mp_part *mask, unsigned char **out, size_t *out_len)
{
    char ref_text[1024];
    json_t *ref = field(mp, "original_ref", ref_text, sizeof ref_text) ? json_loads(ref_text, 0, NULL) : NULL;
    const char *name = json_string_value(json_object_get(ref, "filename"));
    const char *sub = json_string_value(json_object_get(ref, "subfolder"));
    const char *type = json_string_value(json_object_get(ref, "type"));
    const char *dir = type_dir(srv, type ? type : "input");
    char file[PATH_MAX];
    bool ok = false;
    if (!name || !dir || !sd_relpath_ok(name, false) || (sub && !sd_relpath_ok(sub, true)) ||
        (size_t)snprintf(file, sizeof file, "%s/%s%s%s", dir, sub ? sub : "", sub && *sub ? "/" : "", name) >= sizeof file) {
        sd_http_error(conn, 400, "bad_request", "original_ref must be {filename, subfolder, type} of an image");
    } else if (!sd_path_inside(dir, file)) {
        sd_http_error(conn, 404, "not_found", "original image not found");
    } else {
        size_t len;
        char *data = read_file_bounded(file, srv->cfg.max_upload, &len);
        png_image oi, mi;
        unsigned char *orig = data ? read_rgba(&oi, data, len, srv->cfg.max_upload_pixels) : NULL;
        unsigned char *m = orig ? read_rgba(&mi, mask->data, mask->len, srv->cfg.max_upload_pixels) : NULL;
        png_alloc_size_t size = 0;
        if (!orig)
            sd_http_error(conn, 400, "bad_request", "the original is not a readable PNG");
        else if (!m)
            sd_http_error(conn, 400, "bad_request", "the mask is not a readable PNG");
        else if (mi.width != oi.width || mi.height != oi.height)
            sd_http_error(conn, 400, "bad_request", "the mask is %ux%u, the original %ux%u", mi.width, mi.height,
                          oi.width, oi.height);
        else {
            for (size_t i = 0; i < (size_t)oi.width * oi.height; i++)
                orig[i * 4 + 3] = m[i * 4 + 3];
            ok = png_image_write_to_memory(&oi, NULL, &size, 0, orig, 0, NULL) && (*out = malloc(size)) &&
                 png_image_write_to_memory(&oi, *out, &size, 0, orig, 0, NULL);
            *out_len = size;
            if (!ok)
                sd_http_error(conn, 500, "server_error", "could not encode the masked image");
        }
        free(data);
        free(orig);
        free(m);
    }
    json_decref(ref);
    return ok;
}

void sd_route_upload(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    size_t len;
    char *body = sd_http_body(conn, srv->cfg.max_upload, &len);
    if (!body)
        return;
    sd_multipart mp;
    const char *why = sd_multipart_parse(mg_get_header(conn, "Content-Type"), (unsigned char *)body, len, &mp);
    const sd_mp_part *image = why ? NULL : sd_multipart_get(&mp, "image");
    char type[16], sub[SD_MP_FILENAME_MAX], over[16], name[SD_MP_FILENAME_MAX];
    uint32_t w = 0, h = 0;
    if (why)
        sd_http_error(conn, 400, "bad_request", "%s", why);
    else if (!image || !image->has_filename)
        sd_http_error(conn, 400, "bad_request", "no \"image\" file in the form");
    else if (!field(&mp, "type", type, sizeof type) || !field(&mp, "subfolder", sub, sizeof sub) ||
             !field(&mp, "overwrite", over, sizeof over))
        sd_http_error(conn, 400, "bad_request", "a form field is too long");
    else if (!type_dir(srv, type[0] ? type : "input"))
        sd_http_error(conn, 400, "bad_request", "type must be input, output or temp");
    else if (!sd_filename_ok(image->filename) || !sd_relpath_ok(sub, true))
        sd_http_error(conn, 400, "bad_request", "invalid file name or subfolder");
    else if (!sd_png_size(image->data, image->len, &w, &h))
        sd_http_error(conn, 415, "unsupported_media_type", "only PNG images can be uploaded");
    else if (w == 0 || h == 0 || (long long)w * h > srv->cfg.max_upload_pixels)
        sd_http_error(conn, 413, "image_too_large", "%ux%u pixels is over the limit of %lld", w, h,
                      srv->cfg.max_upload_pixels);
    else {
        const char *t = type[0] ? type : "input";
        char dir[PATH_MAX];
        snprintf(name, sizeof name, "%s", image->filename);
        bool overwrite = !strcmp(over, "true") || !strcmp(over, "1");
        unsigned char *masked = NULL;
        size_t masked_len = 0;
        bool mask = !strcmp(path, "/upload/mask");
        if (mask && !masked_original(srv, conn, &mp, image, &masked, &masked_len))
            ; /* replied */
        else if (!sd_make_subdir(type_dir(srv, t), sub, dir, sizeof dir))
            sd_http_error(conn, 400, "bad_request", "cannot use subfolder '%s'", sub);
        else if (!store_upload(dir, name, sizeof name, mask ? masked : image->data, mask ? masked_len : image->len,
                               overwrite))
            sd_http_error(conn, 500, "io_error", "could not store the upload");
        else
            sd_http_json(conn, 200, json_pack("{s:s, s:s, s:s}", "name", name, "subfolder", sub, "type", t));
        free(masked);
    }
    free(body);
}

/* ---- Model lists. ---- */

static const char *const model_folders[] = {"checkpoints", "vae", "loras", "embeddings", "controlnet",
                                            "upscale_models", "clip_vision", "ipadapter", "style_models"};

/* Adds the regular files under dir/rel (depth-limited) to list as "rel/name". */
static void list_files(const char *dir, const char *rel, int depth, json_t *list)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s%s%s", dir, rel[0] ? "/" : "", rel) >= sizeof path || depth > 8)
        return;
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char child[PATH_MAX], full[PATH_MAX];
        struct stat st;
        if ((size_t)snprintf(child, sizeof child, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= sizeof child ||
            (size_t)snprintf(full, sizeof full, "%s/%s", dir, child) >= sizeof full || stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            list_files(dir, child, depth + 1, list);
        else if (S_ISREG(st.st_mode))
            json_array_append_new(list, json_string(child));
    }
    closedir(d);
}

static int cmp_json_strings(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

json_t *sd_model_files(const sd_context *ctx, const char *folder)
{
    json_t *all = json_array();
    for (size_t i = 0; i < sd_context_models_dir_count(ctx); i++) {
        char dir[PATH_MAX];
        if ((size_t)snprintf(dir, sizeof dir, "%s/%s", sd_context_models_dir(ctx, i), folder) < sizeof dir)
            list_files(dir, "", 0, all);
    }
    size_t n = json_array_size(all);
    json_t **items = malloc((n + 1) * sizeof *items);
    json_t *out = json_array();
    for (size_t i = 0; items && i < n; i++)
        items[i] = json_array_get(all, i);
    if (items && n)
        qsort(items, n, sizeof *items, cmp_json_strings);
    for (size_t i = 0; items && i < n; i++)
        if (i == 0 || strcmp(json_string_value(items[i]), json_string_value(items[i - 1])))
            json_array_append(out, items[i]);
    free(items);
    json_decref(all);
    return out;
}

void sd_route_models(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    if (!strcmp(path, "/models")) {
        json_t *list = json_array();
        for (size_t i = 0; i < sizeof model_folders / sizeof model_folders[0]; i++)
            json_array_append_new(list, json_string(model_folders[i]));
        sd_http_json(conn, 200, list);
        return;
    }
    const char *folder = path + 8;
    for (size_t i = 0; i < sizeof model_folders / sizeof model_folders[0]; i++)
        if (!strcmp(folder, model_folders[i])) {
            sd_http_json(conn, 200, sd_model_files(srv->info, folder));
            return;
        }
    sd_http_error(conn, 404, "not_found", "no model folder '%s'", folder);
}

void sd_route_embeddings(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    json_t *files = sd_model_files(srv->info, "embeddings"), *names = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *s = json_string_value(f), *dot = strrchr(s, '.');
        json_array_append_new(names, dot ? json_stringn(s, (size_t)(dot - s)) : json_string(s));
    }
    json_decref(files);
    sd_http_json(conn, 200, names);
}
