/* Reading workflow XML (docs/workflow-format.md) with a hardened libxml2 setup:
 * no network, no DTD (a DOCTYPE stops the parser before its internal subset is read), no entity
 * substitution, no XInclude, no XML_PARSE_HUGE, a size limit checked before parsing and a depth
 * limit enforced while parsing. The document is validated against the embedded RelaxNG schema
 * (data/workflow.rng), then turned into a graph through the raw setters so that semantic
 * problems are reported by sd_graph_validate() with file:line. */
#include "core/embedded.h"
#include "core/graph.h"
#include "core/upgrade.h"
#include "core/xml.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Parser state reachable from libxml2 callbacks through xmlParserCtxt._private. */
typedef struct reader {
    sd_context *ctx;
    const char *source;
    sd_status status; /* first failure seen by a callback (SD_OK: none) */
    int problems;     /* schema violations and structural problems recorded as diagnostics */
} reader;

/* Records the first parser failure as the context error and as the only diagnostic. */
static void reader_fail(reader *r, sd_status status, int line, const char *msg)
{
    if (r->status)
        return;
    r->status = status;
    if (line > 0)
        sd_set_error(r->ctx, status, "%s:%d: %s", r->source, line, msg);
    else
        sd_set_error(r->ctx, status, "%s: %s", r->source, msg);
    sd_diag_add(r->ctx, "%s", sd_context_errmsg(r->ctx));
}

/* libxml2 messages end with a newline and some span lines ("Input is not proper UTF-8,
 * indicate encoding !\nBytes: 0xFF ..."); copies msg as one line without the final newline. */
static void trim_message(const char *msg, char *out, size_t size)
{
    snprintf(out, size, "%s", msg ? msg : "unknown error");
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* Records a libxml2 error (not a warning) as "malformed XML: ..." at line (0: none). */
static void fail_parse(reader *r, xmlErrorPtr err, int line)
{
    if (err->level < XML_ERR_ERROR)
        return;
    char msg[400], full[512];
    trim_message(err->message, msg, sizeof msg);
    snprintf(full, sizeof full, "malformed XML: %s", msg);
    reader_fail(r, SD_ERR_PARSE, line, full);
}

static void on_parse_error(void *user, xmlErrorPtr err)
{
    xmlParserCtxtPtr p = user;
    fail_parse(p->_private, err, err->line);
}

/* libxml2 reports some failures without a parser context (character conversion of a declared
 * encoding: "input conversion failed due to input error, bytes 0x8F 0xFF ..."; "I/O error:
 * encoder error"). Those go to the thread's global handler, which prints to stderr by default;
 * parse_document points it here while it parses so that they become the reader's error. It
 * gives no line: libxml2 converts ahead of the parser, and the message names the bytes. */
static void on_global_error(void *user, xmlErrorPtr err)
{
    fail_parse(user, err, 0);
}

/* Called when the parser meets <!DOCTYPE ...>, before any internal subset is read. */
static void on_doctype(void *user, const xmlChar *name, const xmlChar *external_id,
                       const xmlChar *system_id)
{
    xmlParserCtxtPtr p = user;
    reader_fail(p->_private, SD_ERR_PARSE, xmlSAX2GetLineNumber(p),
                "DOCTYPE declarations are not allowed in workflow files");
    xmlStopParser(p);
}

/* Workflow files hold elements, text, comments and CDATA only (docs/workflow-format.md): a
 * processing instruction (<?target ...?>, not the XML declaration) is refused. */
static void on_processing_instruction(void *user, const xmlChar *target, const xmlChar *data)
{
    xmlParserCtxtPtr p = user;
    char msg[160];
    (void)data;
    snprintf(msg, sizeof msg, "processing instructions (<?%.40s ...?>) are not allowed in workflow files",
             (const char *)target);
    reader_fail(p->_private, SD_ERR_PARSE, xmlSAX2GetLineNumber(p), msg);
    xmlStopParser(p);
}

static void on_start_element(void *user, const xmlChar *localname, const xmlChar *prefix,
                             const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                             int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr p = user;
    if (p->nodeNr >= SD_XML_MAX_DEPTH) {
        char msg[128];
        snprintf(msg, sizeof msg, "elements nested deeper than %d levels", SD_XML_MAX_DEPTH);
        reader_fail(p->_private, SD_ERR_LIMIT, xmlSAX2GetLineNumber(p), msg);
        xmlStopParser(p);
        return;
    }
    xmlSAX2StartElementNs(user, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                          nb_defaulted, attributes);
}

static int line_of(xmlNodePtr n)
{
    long line = xmlGetLineNo(n);
    return line > 0 && line <= 0x7fffffff ? (int)line : 0;
}

static pthread_once_t libxml_once = PTHREAD_ONCE_INIT;

static void libxml_init(void)
{
    xmlInitParser(); /* libxml2 wants this once before parsers run in several threads */
}

/* Parses buf into a tree; NULL on failure (error set on the context). */
static xmlDocPtr parse_document(reader *r, const char *buf, size_t len)
{
    pthread_once(&libxml_once, libxml_init);
    if (len == 0) {
        reader_fail(r, SD_ERR_PARSE, 0, "malformed XML: the file is empty");
        return NULL;
    }
    xmlParserCtxtPtr p = xmlCreateMemoryParserCtxt(buf, (int)len);
    if (!p) {
        reader_fail(r, SD_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    xmlCtxtUseOptions(p, XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_BIG_LINES);
    p->_private = r;
    p->loadsubset = 0;
    p->replaceEntities = 0;
    p->sax->serror = on_parse_error;
    p->sax->error = NULL;
    p->sax->warning = NULL;
    p->sax->internalSubset = on_doctype;
    p->sax->externalSubset = NULL;
    p->sax->startElementNs = on_start_element;
    p->sax->processingInstruction = on_processing_instruction;
    xmlStructuredErrorFunc saved_handler = xmlStructuredError; /* per thread in libxml2 */
    void *saved_data = xmlStructuredErrorContext;
    xmlSetStructuredErrorFunc(r, on_global_error);
    xmlParseDocument(p);
    xmlSetStructuredErrorFunc(saved_data, saved_handler);
    xmlDocPtr doc = p->myDoc;
    p->myDoc = NULL;
    if (!r->status && !p->wellFormed)
        reader_fail(r, SD_ERR_PARSE, 0, "malformed XML");
    xmlFreeParserCtxt(p);
    if (r->status) {
        xmlFreeDoc(doc);
        return NULL;
    }
    return doc;
}

static void on_schema_error(void *user, xmlErrorPtr err)
{
    reader *r = user;
    char msg[400];
    trim_message(err->message, msg, sizeof msg);
    int line = err->node ? (int)xmlGetLineNo(err->node) : err->line;
    if (line > 0)
        sd_diag_add(r->ctx, "%s:%d: schema: %s", r->source, line, msg);
    else
        sd_diag_add(r->ctx, "%s: schema: %s", r->source, msg);
    r->problems++;
}

/* Validates doc against data/workflow.rng; violations become diagnostics. */
static sd_status validate_schema(reader *r, xmlDocPtr doc)
{
    const sd_embedded_file *rng = sd_embedded_find(sd_embedded_data, "workflow.rng");
    if (!rng)
        return sd_set_error(r->ctx, SD_ERR_INVALID, "workflow schema is not embedded in this build");
    sd_status st = SD_OK;
    xmlRelaxNGParserCtxtPtr pc = xmlRelaxNGNewMemParserCtxt((const char *)rng->data, (int)rng->size);
    xmlRelaxNGPtr schema = pc ? xmlRelaxNGParse(pc) : NULL;
    xmlRelaxNGValidCtxtPtr vc = schema ? xmlRelaxNGNewValidCtxt(schema) : NULL;
    if (!vc) {
        st = sd_set_error(r->ctx, SD_ERR_NOMEM, "cannot load the workflow schema");
        goto done;
    }
    xmlRelaxNGSetValidStructuredErrors(vc, on_schema_error, r);
    if (xmlRelaxNGValidateDoc(vc, doc) != 0 && r->problems == 0) {
        sd_diag_add(r->ctx, "%s: schema: document does not match the workflow schema", r->source);
        r->problems++;
    }
done:
    xmlRelaxNGFreeValidCtxt(vc);
    xmlRelaxNGFree(schema);
    xmlRelaxNGFreeParserCtxt(pc);
    return st;
}

/* A file from a newer sdflow gets a clear message rather than a schema complaint. */
static sd_status check_format_version(reader *r, xmlDocPtr doc)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!root || strcmp((const char *)root->name, "workflow") != 0)
        return SD_OK; /* the schema reports it */
    char *v = (char *)xmlGetNoNsProp(root, (const xmlChar *)"version");
    sd_status st = SD_OK;
    if (v && strcmp(v, "1") != 0) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "workflow format version '%.40s' is not supported (this sdflow reads version 1)", v);
        reader_fail(r, SD_ERR_INVALID, line_of(root), msg);
        st = r->status;
    }
    xmlFree(v);
    return st;
}

/* ---- Building the graph from a schema-valid tree. ---- */

static bool is_element(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* An attribute's value (malloc'd by libxml2, release with xmlFree) or NULL. */
static char *attr(xmlNodePtr n, const char *name)
{
    return (char *)xmlGetNoNsProp(n, (const xmlChar *)name);
}

/* Text content with leading and trailing white space removed (docs, metadata). */
static char *trimmed_content(xmlNodePtr n)
{
    char *s = (char *)xmlNodeGetContent(n);
    if (!s)
        return NULL;
    size_t start = strspn(s, " \t\r\n"), end = strlen(s);
    while (end > start && strchr(" \t\r\n", s[end - 1]))
        end--;
    memmove(s, s + start, end - start);
    s[end - start] = '\0';
    return s;
}

static sd_status nomem(reader *r)
{
    return sd_set_error(r->ctx, SD_ERR_NOMEM, "out of memory");
}

static sd_status read_meta(reader *r, sd_graph *g, xmlNodePtr meta)
{
    for (xmlNodePtr c = meta->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        char *text = trimmed_content(c);
        if (!text)
            return nomem(r);
        sd_status st = sd_graph_set_meta(g, (const char *)c->name, text);
        xmlFree(text);
        if (st)
            return st;
    }
    return SD_OK;
}

static sd_status read_param(reader *r, sd_graph *g, xmlNodePtr e)
{
    char *name = attr(e, "name"), *type = attr(e, "type"), *def = attr(e, "default");
    char *doc = trimmed_content(e);
    sd_status st = SD_OK;
    if (!name || !type || !doc)
        st = nomem(r);
    else
        st = sd_graph_add_param_raw(g, name, type, def, doc, line_of(e));
    xmlFree(name);
    xmlFree(type);
    xmlFree(def);
    xmlFree(doc);
    return st;
}

/* Whether a node's input is a number or boolean, whose surrounding white space is not part of
 * the value (text inputs keep theirs exactly). */
static bool numeric_input(const sd_graph_node *n, const char *name)
{
    const sd_input_desc *in = n->desc ? sd_node_desc_input(n->desc, name) : NULL;
    return in && (in->type == SD_TYPE_INT || in->type == SD_TYPE_FLOAT || in->type == SD_TYPE_BOOLEAN);
}

static sd_status read_input(reader *r, sd_graph *g, sd_graph_node *n, xmlNodePtr e)
{
    int line = line_of(e);
    char *name = attr(e, "name"), *from = attr(e, "from"), *output = attr(e, "output");
    char *param = attr(e, "param");
    char *text = NULL;
    sd_status st = SD_OK;
    if (!name) {
        st = nomem(r);
        goto done;
    }
    const sd_graph_input *prev = sd_graph_node_input(n, name);
    if (prev) {
        sd_diag_add(r->ctx, "%s:%d: node '%s' input '%s': given twice (first at line %d)", r->source,
                    line, n->id, name, prev->line);
        r->problems++;
        goto done;
    }
    if (from && output) {
        st = sd_graph_bind_link(g, n, name, from, output, line);
    } else if (param) {
        st = sd_graph_bind_param_raw(g, n, name, param, line);
    } else if (!(text = numeric_input(n, name) ? trimmed_content(e)
                                               : (char *)xmlNodeGetContent(e))) {
        st = nomem(r);
    } else {
        st = sd_graph_bind_literal(g, n, name, text, line);
    }
done:
    xmlFree(name);
    xmlFree(from);
    xmlFree(output);
    xmlFree(param);
    xmlFree(text);
    return st;
}

static sd_status read_node(reader *r, sd_graph *g, xmlNodePtr e)
{
    char *id = attr(e, "id"), *type = attr(e, "type"), *version = attr(e, "version");
    sd_status st = SD_OK;
    sd_graph_node *n = NULL;
    int v = 0;
    if (!id || !type) {
        st = nomem(r);
        goto done;
    }
    if (version) {
        /* The schema guarantees a positive integer; bound it to int. */
        errno = 0;
        long lv = strtol(version, NULL, 10);
        v = errno || lv > 1000000 ? 1000000 : (int)lv;
    }
    st = sd_graph_add_node_raw(g, type, id, v, line_of(e), &n);
    for (xmlNodePtr c = e->children; !st && c; c = c->next)
        if (is_element(c, "input"))
            st = read_input(r, g, n, c);
    if (!st && !r->problems) {
        st = sd_graph_upgrade_node(g, n);
        if (st)
            sd_error_prefix(r->ctx, "%s:%d", r->source, n->line);
    }
done:
    xmlFree(id);
    xmlFree(type);
    xmlFree(version);
    return st;
}

static sd_status build_graph(reader *r, xmlDocPtr doc, sd_graph *g)
{
    sd_status st = SD_OK;
    for (xmlNodePtr c = xmlDocGetRootElement(doc)->children; !st && c; c = c->next) {
        if (is_element(c, "meta"))
            st = read_meta(r, g, c);
        else if (is_element(c, "param"))
            st = read_param(r, g, c);
        else if (is_element(c, "node"))
            st = read_node(r, g, c);
    }
    return st;
}

/* Sets the context error to the diagnostics summary: "N problem(s) in <source>". */
static sd_status problems_error(reader *r)
{
    return sd_set_error(r->ctx, SD_ERR_INVALID, "%d problem%s in %s", r->problems,
                        r->problems == 1 ? "" : "s", r->source);
}

/* Refuses a workflow over the size limit; size is its size in bytes, or 0 when it is only known
 * to be over the limit (a stream). */
static sd_status too_large(reader *r, uint64_t size)
{
    char msg[160];
    if (size)
        snprintf(msg, sizeof msg, "file is %" PRIu64 " bytes, more than the %d MiB limit for workflows", size,
                 SD_XML_MAX_BYTES >> 20);
    else
        snprintf(msg, sizeof msg, "file is larger than the %d MiB limit for workflows", SD_XML_MAX_BYTES >> 20);
    reader_fail(r, SD_ERR_LIMIT, 0, msg);
    return r->status;
}

sd_status sd_graph_load_xml_memory(sd_context *ctx, const char *xml, size_t len,
                                   const char *source_name, sd_graph **out)
{
    *out = NULL;
    sd_clear_error(ctx);
    sd_diag_clear(ctx);
    reader r = {.ctx = ctx, .source = source_name ? source_name : "<memory>"};
    if (len > SD_XML_MAX_BYTES)
        return too_large(&r, len);
    xmlDocPtr doc = parse_document(&r, xml, len);
    if (!doc)
        return r.status;
    sd_graph *g = NULL;
    sd_status st = check_format_version(&r, doc);
    if (!st)
        st = validate_schema(&r, doc);
    if (!st && r.problems)
        st = problems_error(&r);
    if (!st)
        st = sd_graph_new(ctx, &g);
    if (!st) {
        free(g->source);
        if (!(g->source = sd_strdup(r.source)))
            st = nomem(&r);
    }
    if (!st)
        st = build_graph(&r, doc, g);
    if (!st && r.problems)
        st = problems_error(&r);
    xmlFreeDoc(doc);
    if (st) {
        sd_graph_free(g);
        return st;
    }
    *out = g;
    return SD_OK;
}

sd_status sd_graph_load_xml(sd_context *ctx, const char *path, sd_graph **out)
{
    *out = NULL;
    sd_diag_clear(ctx);
    sd_status st = SD_OK;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_set_error(ctx, errno == ENOENT ? SD_ERR_NOT_FOUND : SD_ERR_IO, "%s: %s", path,
                            strerror(errno));
    reader r = {.ctx = ctx, .source = path};
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > SD_XML_MAX_BYTES) {
        st = too_large(&r, (uint64_t)sb.st_size);
        goto done;
    }
    /* Read at most one byte past the limit: enough to know a stream (or a growing file) is too
     * large. */
    while (len <= (size_t)SD_XML_MAX_BYTES && !feof(f)) {
        if (len == cap) {
            cap = cap ? cap * 2 : 64 * 1024;
            if (cap > (size_t)SD_XML_MAX_BYTES + 1)
                cap = (size_t)SD_XML_MAX_BYTES + 1;
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                goto done;
            }
            buf = nb;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (ferror(f)) {
            st = sd_set_error(ctx, SD_ERR_IO, "%s: read error", path);
            goto done;
        }
        if (len == (size_t)SD_XML_MAX_BYTES + 1)
            break;
    }
    if (len > (size_t)SD_XML_MAX_BYTES)
        st = too_large(&r, 0);
    else
        st = sd_graph_load_xml_memory(ctx, buf ? buf : "", len, path, out);
done:
    free(buf);
    fclose(f);
    return st;
}
