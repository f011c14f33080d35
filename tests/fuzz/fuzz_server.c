/* Fuzzes the request parsing of `sdflow serve` (server/parse.c): the first line of the input is
 * the multipart boundary and the rest the body given to sd_multipart_parse; the whole input,
 * as a string, goes through the name, Origin and token checks and the PNG size reader. Every
 * part must lie inside the body, and every accepted name must be free of escapes. */
#include "server/parse.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void check_parts(const sd_multipart *mp, const uint8_t *body, size_t len)
{
    for (size_t i = 0; i < mp->n; i++) {
        const sd_mp_part *p = &mp->parts[i];
        if (p->data < body || p->len > len || p->data + p->len > body + len || !p->name[0])
            abort();
    }
}

/* An accepted name has no absolute start, no "." or ".." component and no backslash. */
static void check_name(const char *s)
{
    if (!sd_relpath_ok(s, true))
        return;
    if (s[0] == '/' || strchr(s, '\\'))
        abort();
    for (const char *c = s; *c;) {
        size_t n = strcspn(c, "/");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            abort();
        c += n + (c[n] == '/');
    }
    if (sd_filename_ok(s) && (strchr(s, '/') || s[0] == '.'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t blen = nl ? (size_t)(nl - data) : 0;
    char *ct = malloc(blen + 32);
    memcpy(ct, "multipart/form-data; boundary=", 30);
    memcpy(ct + 30, data, blen);
    ct[30 + blen] = '\0';
    const uint8_t *body = nl ? nl + 1 : data;
    size_t len = nl ? size - blen - 1 : size;
    sd_multipart mp;
    if (!sd_multipart_parse(ct, body, len, &mp))
        check_parts(&mp, body, len);
    free(ct);

    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    check_name(s);
    if (sd_origin_allowed(s, "127.0.0.1:8188") && s[0] && !strstr(s, "://"))
        abort();
    sd_bearer_ok(s, "token");
    if (sd_host_is_loopback(s) && strncmp(s, "127.", 4) && strncasecmp(s, "localhost", 9) && strncmp(s, "[::1]", 5))
        abort();
    free(s);
    uint32_t w, h;
    sd_png_size(data, size, &w, &h);
    return 0;
}
