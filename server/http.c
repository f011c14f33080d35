/* HTTP helpers for the routes: JSON replies and errors, bounded bodies, query parameters. */
#include "server/internal.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

long long sd_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void sd_uuid4(char *buf, bool dashes)
{
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
        struct timeval tv; /* no /dev/urandom: unique enough for ids, never for secrets */
        gettimeofday(&tv, NULL);
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)(((unsigned long long)tv.tv_usec * 2654435761u + (unsigned long long)tv.tv_sec + i * 40503u) >> (i % 8));
    }
    if (f)
        fclose(f);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    char *p = buf;
    for (size_t i = 0; i < sizeof b; i++) {
        if (dashes && (i == 4 || i == 6 || i == 8 || i == 10))
            *p++ = '-';
        p += snprintf(p, 3, "%02x", b[i]);
    }
}

void sd_http_json(struct mg_connection *conn, int status, json_t *body)
{
    char *text = json_dumps(body ? body : json_object(), JSON_COMPACT | JSON_ENCODE_ANY);
    if (body)
        json_decref(body);
    const char *t = text ? text : "{}";
    char len[32];
    snprintf(len, sizeof len, "%zu", strlen(t));
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", "application/json", -1);
    mg_response_header_add(conn, "Content-Length", len, -1);
    mg_response_header_add(conn, "Cache-Control", "no-cache", -1);
    mg_response_header_send(conn);
    mg_write(conn, t, strlen(t));
    free(text);
}

void sd_http_error(struct mg_connection *conn, int status, const char *type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sd_http_json(conn, status,
                 json_pack("{s:{s:s, s:s, s:s, s:{}}}", "error", "type", type, "message", msg,
                           "details", "", "extra_info"));
}

char *sd_http_body(struct mg_connection *conn, long long max, size_t *len)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (ri->content_length > max) {
        sd_http_error(conn, 413, "request_too_large", "request body of %lld bytes is over the %lld byte limit",
                      ri->content_length, max);
        return NULL;
    }
    size_t cap = ri->content_length >= 0 ? (size_t)ri->content_length : 65536, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            if ((long long)cap >= max) {
                free(buf);
                sd_http_error(conn, 413, "request_too_large", "request body is over the %lld byte limit", max);
                return NULL;
            }
            cap = (long long)cap * 2 > max ? (size_t)max : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                break;
            buf = nb;
        }
        int r = mg_read(conn, buf + n, cap - n);
        if (r < 0) {
            free(buf);
            sd_http_error(conn, 400, "bad_request", "could not read the request body");
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (!buf) {
        sd_http_error(conn, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

json_t *sd_http_json_body(struct mg_connection *conn, long long max)
{
    size_t len;
    char *body = sd_http_body(conn, max, &len);
    if (!body)
        return NULL;
    json_error_t err;
    json_t *v = len ? json_loadb(body, len, 0, &err) : json_object();
    free(body);
    if (!v || !json_is_object(v)) {
        if (v)
            sd_http_error(conn, 400, "invalid_json", "the request body is not a JSON object");
        else
            sd_http_error(conn, 400, "invalid_json", "JSON error at %d:%d: %s", err.line, err.column, err.text);
        json_decref(v);
        return NULL;
    }
    return v;
}

bool sd_http_query(const struct mg_connection *conn, const char *name, char *buf, size_t size)
{
    const char *q = mg_get_request_info(conn)->query_string;
    return q && mg_get_var(q, strlen(q), name, buf, size) >= 0;
}
