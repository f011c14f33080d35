/* Writing workflow XML (docs/workflow-format.md). Every string is checked to be UTF-8 that XML
 * 1.0 can carry, and escaped so that reading the file back gives the same graph: literal text
 * keeps its white space exactly (a carriage return is written as &#13;), attribute values
 * escape tabs and line breaks. Files are written to a temporary file in the same directory,
 * synced and renamed over the target, so a reader never sees a partial file. */
#include "core/graph.h"
#include "core/xml.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sbuf {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory */
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Decodes one UTF-8 sequence at s; returns its length, or 0 when invalid (overlong forms,
 * surrogates and code points past U+10FFFF included). */
static size_t utf8_next(const unsigned char *s, unsigned *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t n;
    unsigned c, min;
    if ((s[0] & 0xE0) == 0xC0) {
        n = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

/* True when XML 1.0 can carry the code point (its Char production). */
static bool xml_char(unsigned cp)
{
    return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) ||
           (cp >= 0xE000 && cp <= 0xFFFD) || (cp >= 0x10000 && cp <= 0x10FFFF);
}

bool sd_xml_text_ok(const char *s, char *msg, size_t size)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned cp;
        size_t n = utf8_next(p, &cp);
        if (!n) {
            snprintf(msg, size, "text is not valid UTF-8 (byte 0x%02X at offset %zu)", *p,
                     (size_t)(p - (const unsigned char *)s));
            return false;
        }
        if (!xml_char(cp)) {
            snprintf(msg, size, "text contains U+%04X, which XML cannot carry", cp);
            return false;
        }
        p += n;
    }
    return true;
}

/* Escapes s for element text (attr false) or a double-quoted attribute value (attr true). */
static void put_escaped(sbuf *b, const char *s, bool attr)
{
    const char *run = s;
    for (const char *p = s;; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\r': rep = "&#13;"; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        default: break;
        }
        if (!rep && *p)
            continue;
        put(b, run, (size_t)(p - run));
        if (!*p)
            return;
        puts_(b, rep);
        run = p + 1;
    }
}

/* Writing state: the buffer and the first unwritable string found. */
typedef struct writer {
    sd_graph *g;
    sbuf b;
    sd_status status;
} writer;

/* Checks s (naming where it comes from in the error) and reports whether to go on. */
static bool check(writer *w, const char *s, const char *where_fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool check(writer *w, const char *s, const char *where_fmt, ...)
{
    char msg[160], where[384];
    if (w->status)
        return false;
    if (sd_xml_text_ok(s, msg, sizeof msg))
        return true;
    va_list ap;
    va_start(ap, where_fmt);
    vsnprintf(where, sizeof where, where_fmt, ap);
    va_end(ap);
    w->status = sd_set_error(w->g->ctx, SD_ERR_INVALID, "cannot write %s as XML: %s", where, msg);
    return false;
}

static void attr(writer *w, const char *name, const char *value)
{
    puts_(&w->b, " ");
    puts_(&w->b, name);
    puts_(&w->b, "=\"");
    put_escaped(&w->b, value, true);
    puts_(&w->b, "\"");
}

static void write_meta(writer *w)
{
    bool any = false;
    for (int i = 0; i < SD_GRAPH_META_KEYS; i++)
        any |= w->g->meta[i] != NULL;
    if (!any)
        return;
    puts_(&w->b, "  <meta>\n");
    for (int i = 0; i < SD_GRAPH_META_KEYS; i++) {
        const char *key = sd_graph_meta_keys[i], *v = w->g->meta[i];
        if (!v || !check(w, v, "metadata '%s'", key))
            continue;
        puts_(&w->b, "    <");
        puts_(&w->b, key);
        puts_(&w->b, ">");
        put_escaped(&w->b, v, false);
        puts_(&w->b, "</");
        puts_(&w->b, key);
        puts_(&w->b, ">\n");
    }
    puts_(&w->b, "  </meta>\n");
}

static void write_param(writer *w, const sd_graph_param *p, bool resolve)
{
    const char *def = resolve && p->value ? p->value : p->def;
    if (!check(w, p->name, "a parameter name") ||
        !check(w, p->type, "parameter '%s' type", p->name) ||
        !check(w, def, "parameter '%s' default", p->name) ||
        !check(w, p->doc, "parameter '%s' doc", p->name))
        return;
    puts_(&w->b, "  <param");
    attr(w, "name", p->name);
    attr(w, "type", p->type);
    attr(w, "default", def);
    if (*p->doc) {
        puts_(&w->b, ">");
        put_escaped(&w->b, p->doc, false);
        puts_(&w->b, "</param>\n");
    } else {
        puts_(&w->b, "/>\n");
    }
}

static void write_input(writer *w, const sd_graph_node *n, const sd_graph_input *in)
{
    if (!check(w, in->name, "an input name of node '%s'", n->id))
        return;
    puts_(&w->b, "    <input");
    attr(w, "name", in->name);
    switch (in->kind) {
    case SD_BIND_LINK:
        if (!check(w, in->src_node, "node '%s' input '%s' link", n->id, in->name) ||
            !check(w, in->src_output, "node '%s' input '%s' link", n->id, in->name))
            return;
        attr(w, "from", in->src_node);
        attr(w, "output", in->src_output);
        puts_(&w->b, "/>\n");
        break;
    case SD_BIND_PARAM:
        if (!check(w, in->param, "node '%s' input '%s' parameter", n->id, in->name))
            return;
        attr(w, "param", in->param);
        puts_(&w->b, "/>\n");
        break;
    case SD_BIND_LITERAL:
        if (!check(w, in->text, "node '%s' input '%s'", n->id, in->name))
            return;
        puts_(&w->b, ">");
        put_escaped(&w->b, in->text, false);
        puts_(&w->b, "</input>\n");
        break;
    }
}

static void write_node(writer *w, const sd_graph_node *n)
{
    if (!check(w, n->id, "a node id") || !check(w, n->type, "node '%s' type", n->id))
        return;
    int version = n->version > 0 ? n->version : n->desc ? n->desc->version : 0;
    puts_(&w->b, "  <node");
    attr(w, "id", n->id);
    attr(w, "type", n->type);
    if (version > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", version);
        attr(w, "version", v);
    }
    if (n->n_inputs == 0) {
        puts_(&w->b, "/>\n");
        return;
    }
    puts_(&w->b, ">\n");
    for (size_t i = 0; i < n->n_inputs; i++)
        write_input(w, n, &n->inputs[i]);
    puts_(&w->b, "  </node>\n");
}

sd_status sd_graph_to_xml(sd_graph *g, bool resolve_params, char **out)
{
    *out = NULL;
    writer w = {.g = g};
    puts_(&w.b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<workflow version=\"1\">\n");
    write_meta(&w);
    for (size_t i = 0; i < g->n_params; i++)
        write_param(&w, &g->params[i], resolve_params);
    for (size_t i = 0; i < g->n_nodes; i++)
        write_node(&w, &g->nodes[i]);
    puts_(&w.b, "</workflow>\n");
    if (!w.status && w.b.failed)
        w.status = sd_set_error(g->ctx, SD_ERR_NOMEM, "out of memory");
    if (w.status) {
        free(w.b.data);
        return w.status;
    }
    *out = w.b.data;
    return SD_OK;
}

/* Writes len bytes to a new file next to path, then renames it over path. */
static sd_status write_atomic(sd_context *ctx, const char *path, const char *data, size_t len)
{
    sd_status st = SD_OK;
    char *tmp = sd_strfmt("%s.tmp-XXXXXX", path);
    char *dircopy = sd_strdup(path);
    if (!tmp || !dircopy) {
        free(tmp);
        free(dircopy);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot create a temporary file: %s", path,
                          strerror(errno));
        goto done;
    }
    struct stat old;
    mode_t mode = stat(path, &old) == 0 ? (old.st_mode & 07777) : 0644;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (off < len || fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        close(fd);
    } else if (close(fd) != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    } else if (rename(tmp, path) != 0) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    }
    if (st) {
        unlink(tmp);
        goto done;
    }
    /* Make the rename itself durable; failing to sync a directory is not an error. */
    int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
done:
    free(tmp);
    free(dircopy);
    return st;
}

sd_status sd_graph_save_xml(sd_graph *g, const char *path, bool resolve_params)
{
    char *xml;
    sd_status st = sd_graph_to_xml(g, resolve_params, &xml);
    if (st)
        return st;
    st = write_atomic(g->ctx, path, xml, strlen(xml));
    free(xml);
    return st;
}
