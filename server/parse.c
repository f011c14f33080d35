/* Network-free request parsing: see server/parse.h. */
#include "server/parse.h"
#include <ctype.h>
#include <string.h>
#include <strings.h>

/* memmem over bytes (glibc's is an extension). */
static const unsigned char *find(const unsigned char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || n < m)
        return NULL;
    for (size_t i = 0; i + m <= n; i++) {
        const unsigned char *p = memchr(hay + i, needle[0], n - m - i + 1);
        if (!p)
            return NULL;
        if (!memcmp(p, needle, m))
            return p;
        i = (size_t)(p - hay);
    }
    return NULL;
}

/* Copies the boundary parameter of content_type into buf (at most 70 bytes, RFC 2046). */
static bool boundary_of(const char *ct, char *buf, size_t size)
{
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0)
        return false;
    const char *b = ct;
    while (*b && strncasecmp(b, "boundary=", 9) != 0)
        b++;
    if (!*b)
        return false;
    b += 9;
    bool quoted = *b == '"';
    b += quoted;
    size_t n = 0;
    while (b[n] && (quoted ? b[n] != '"' : (b[n] != ';' && b[n] != ' ' && b[n] != '\t')))
        n++;
    if (n == 0 || n > 70 || n + 1 > size)
        return false;
    memcpy(buf, b, n);
    buf[n] = '\0';
    return true;
}

/* Copies the value of parameter `key` (name, filename) of a Content-Disposition line
 * [h, end) into buf; quoted values may contain escaped characters. 0: absent, 1: found,
 * -1: too long or malformed (control characters, NUL included, are refused). */
static int disposition_param(const char *h, const char *end, const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    for (const char *p = h; p + klen + 1 < end; p++) {
        if ((p[-1] != ';' && p[-1] != ' ' && p[-1] != '\t') || strncasecmp(p, key, klen) != 0 ||
            p[klen] != '=')
            continue;
        const char *v = p + klen + 1;
        size_t n = 0;
        if (v < end && *v == '"') {
            for (v++; v < end && *v != '"'; v++) {
                if (*v == '\\' && v + 1 < end)
                    v++;
                if (n + 1 >= size)
                    return -1;
                buf[n++] = *v;
            }
            if (v >= end)
                return -1;
        } else {
            for (; v < end && *v != ';' && *v != ' ' && *v != '\t'; v++) {
                if (n + 1 >= size)
                    return -1;
                buf[n++] = *v;
            }
        }
        buf[n] = '\0';
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
                return -1;
        return 1;
    }
    return 0;
}

/* Parses one part's header block [h, end): its Content-Disposition. */
static const char *part_headers(const char *h, const char *end, sd_mp_part *part)
{
    bool disposition = false;
    while (h < end) {
        const char *eol = memchr(h, '\r', (size_t)(end - h));
        if (!eol)
            eol = end;
        if ((size_t)(eol - h) > 20 && !strncasecmp(h, "Content-Disposition:", 20)) {
            disposition = true;
            int r = disposition_param(h + 20, eol, "name", part->name, sizeof part->name);
            if (r > 0 && !part->name[0])
                r = 0;
            if (r <= 0)
                return r < 0 ? "part name too long or malformed" : "part without a name";
            r = disposition_param(h + 20, eol, "filename", part->filename, sizeof part->filename);
            if (r < 0)
                return "file name too long or malformed";
            part->has_filename = r > 0;
        }
        h = eol + 2;
    }
    return disposition ? NULL : "part without Content-Disposition";
}

const char *sd_multipart_parse(const char *content_type, const unsigned char *body, size_t len,
                               sd_multipart *out)
{
    char delim[80] = "\r\n--";
    memset(out, 0, sizeof *out);
    if (!boundary_of(content_type, delim + 4, sizeof delim - 4))
        return "not multipart/form-data with a boundary";
    size_t dlen = strlen(delim);
    /* The first delimiter may open the body (no CRLF before it). */
    const unsigned char *p;
    if (len >= dlen - 2 && !memcmp(body, delim + 2, dlen - 2))
        p = body + dlen - 2;
    else if ((p = find(body, len, delim, dlen)))
        p += dlen;
    else
        return "no multipart delimiter";
    const unsigned char *end = body + len;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return NULL; /* closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return "malformed multipart delimiter";
        p += 2;
        const unsigned char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend)
            return "multipart headers not terminated";
        if (out->n == SD_MP_MAX_PARTS)
            return "too many multipart parts";
        sd_mp_part *part = &out->parts[out->n];
        const char *why = part_headers((const char *)p, (const char *)hend + 2, part);
        if (why)
            return why;
        const unsigned char *data = hend + 4;
        const unsigned char *next = find(data, (size_t)(end - data), delim, dlen);
        if (!next)
            return "multipart body without a closing delimiter";
        part->data = data;
        part->len = (size_t)(next - data);
        out->n++;
        p = next + dlen;
    }
}

const sd_mp_part *sd_multipart_get(const sd_multipart *mp, const char *name)
{
    for (size_t i = 0; i < mp->n; i++)
        if (!strcmp(mp->parts[i].name, name))
            return &mp->parts[i];
    return NULL;
}

bool sd_relpath_ok(const char *rel, bool allow_empty)
{
    size_t n = strlen(rel);
    if (n == 0)
        return allow_empty;
    if (n > 255 || rel[0] == '/')
        return false;
    for (const char *s = rel;;) {
        const char *e = strchr(s, '/');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if (k == 0 || (k == 1 && s[0] == '.') || (k == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\')
                return false;
        if (!e)
            return true;
        s = e + 1;
    }
}

bool sd_filename_ok(const char *name)
{
    return sd_relpath_ok(name, false) && !strchr(name, '/') && name[0] != '.';
}

bool sd_origin_allowed(const char *origin, const char *host)
{
    if (!origin)
        return true;
    const char *sep = strstr(origin, "://");
    if (!sep || !host)
        return false;
    const char *o = sep + 3;
    size_t n = strcspn(o, "/");
    if (o[n] == '/' && o[n + 1] != '\0')
        return false; /* an origin has no path */
    return n > 0 && strlen(host) == n && strncasecmp(o, host, n) == 0;
}

bool sd_host_is_loopback(const char *host)
{
    if (!host)
        return false;
    size_t n;
    if (host[0] == '[') {
        if (strncmp(host, "[::1]", 5) != 0)
            return false;
        n = 5;
    } else {
        n = strcspn(host, ":");
        if (n == 9 && !strncasecmp(host, "localhost", 9)) {
            /* fine */
        } else {
            int dots = 0;
            size_t digits = 0;
            for (size_t i = 0; i < n; i++) {
                if (host[i] == '.') {
                    if (digits == 0)
                        return false;
                    dots++;
                    digits = 0;
                } else if (host[i] >= '0' && host[i] <= '9' && digits < 3) {
                    digits++;
                } else {
                    return false;
                }
            }
            if (dots != 3 || digits == 0 || strncmp(host, "127.", 4) != 0)
                return false;
        }
    }
    if (host[n] == '\0')
        return true;
    if (host[n] != ':' || !host[n + 1])
        return false;
    for (const char *p = host + n + 1; *p; p++)
        if (*p < '0' || *p > '9' || p - (host + n + 1) >= 5)
            return false;
    return true;
}

bool sd_bearer_ok(const char *authorization, const char *token)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *given = authorization + 7;
    size_t a = strlen(given), b = strlen(token);
    unsigned diff = a != b;
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)token[i] ^ (unsigned char)(i < a ? given[i] : 0);
    return diff == 0;
}

bool sd_png_size(const unsigned char *d, size_t len, uint32_t *width, uint32_t *height)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 24 || memcmp(d, sig, 8) != 0 || memcmp(d + 12, "IHDR", 4) != 0)
        return false;
    *width = (uint32_t)d[16] << 24 | (uint32_t)d[17] << 16 | (uint32_t)d[18] << 8 | d[19];
    *height = (uint32_t)d[20] << 24 | (uint32_t)d[21] << 16 | (uint32_t)d[22] << 8 | d[23];
    return true;
}
