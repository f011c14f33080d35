/* Request parsing of the server that needs no network: multipart/form-data bodies, relative
 * names of files under a directory, Origin/Host comparison, bearer tokens, PNG header sizes.
 * Pure functions over bytes, fuzzed by tests/fuzz/fuzz_server.c. */
#ifndef SD_SERVER_PARSE_H
#define SD_SERVER_PARSE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SD_MP_MAX_PARTS 16
#define SD_MP_NAME_MAX 64
#define SD_MP_FILENAME_MAX 256

/* One part of a multipart/form-data body; data points into the body. */
typedef struct sd_mp_part {
    char name[SD_MP_NAME_MAX];         /* Content-Disposition name ("image", "type", ...) */
    char filename[SD_MP_FILENAME_MAX]; /* Content-Disposition filename, "" when absent */
    bool has_filename;
    const unsigned char *data;
    size_t len;
} sd_mp_part;

typedef struct sd_multipart {
    sd_mp_part parts[SD_MP_MAX_PARTS];
    size_t n;
} sd_multipart;

/* Parses body as multipart/form-data with the boundary named by content_type
 * ("multipart/form-data; boundary=..."). Returns NULL on success, else a static one-line reason
 * (no boundary, no closing delimiter, too many parts, a name too long, ...). */
const char *sd_multipart_parse(const char *content_type, const unsigned char *body, size_t len,
                               sd_multipart *out);
/* The first part named name, or NULL. */
const sd_mp_part *sd_multipart_get(const sd_multipart *mp, const char *name);

/* True when rel is a safe relative path under a directory: may be "" (allow_empty), has no
 * leading '/', no "." or ".." component, no empty component, no backslash and no control
 * characters, and is at most 255 bytes. */
bool sd_relpath_ok(const char *rel, bool allow_empty);
/* True when name is a safe single file name: sd_relpath_ok without '/' and not starting with '.'. */
bool sd_filename_ok(const char *name);

/* Whether a request with this Origin header (NULL when absent) may act on a server reached as
 * host (the Host header, NULL when absent): no Origin, or Origin's host[:port] equals host
 * (case-insensitive). "null" and malformed origins are refused. */
bool sd_origin_allowed(const char *origin, const char *host);

/* True when a Host header names the loopback: "localhost", "127.x.y.z" or "[::1]", with an
 * optional ":port". A server bound to loopback refuses other Host names, which a page from
 * another site reaches only through DNS rebinding. */
bool sd_host_is_loopback(const char *host);

/* Whether the Authorization header (NULL when absent) is "Bearer <token>"; compares in time
 * independent of where the first difference is. */
bool sd_bearer_ok(const char *authorization, const char *token);

/* Reads the width and height of a PNG from its first 24 bytes; false when not a PNG. */
bool sd_png_size(const unsigned char *data, size_t len, uint32_t *width, uint32_t *height);

#endif
