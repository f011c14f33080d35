/* Workflow XML: hardened reading (malformed input, DOCTYPE, entities, depth and size limits,
 * schema), lossless round trips, atomic saving, parameters and node upgrades. */
#include "test.h"
#include "core/graph.h"
#include "core/node.h"
#include "core/upgrade.h"
#include "core/xml.h"
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static sd_context *ctx;

static sd_status load(const char *xml, sd_graph **g)
{
    return sd_graph_load_xml_memory(ctx, xml, strlen(xml), "t.xml", g);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(f);
    return s;
}

static void write_all(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

/* Number of directory entries other than "." and "..". */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

static char *scratch_subdir(const char *name)
{
    char *dir = test_path(test_scratch_dir(), name);
    mkdir(dir, 0755);
    return dir;
}

static void check_single_failure(sd_status st, sd_status want, sd_graph *g, const char *msg)
{
    CHECK_EQ_INT(st, want);
    CHECK(g == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), msg);
}

static const char ok_xml[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<workflow version=\"1\">\n"
    "  <meta><title> Two ints </title><author>me</author></meta>\n"
    "  <param name=\"n\" type=\"INT\" default=\"3\">\n    how many\n  </param>\n"
    "  <node id=\"a\" type=\"PrimitiveInt\" version=\"1\">\n"
    "    <input name=\"value\" param=\"n\"/>\n"
    "  </node>\n"
    "  <!-- a comment -->\n"
    "  <node id=\"b\" type=\"PrimitiveInt\">\n"
    "    <input name=\"value\" from=\"a\" output=\"INT\"/>\n"
    "  </node>\n"
    "  <node id=\"s\" type=\"PrimitiveString\">\n"
    "    <input name=\"value\"><![CDATA[ <raw> & ]]> text </input>\n"
    "  </node>\n"
    "  <node id=\"f\" type=\"PrimitiveFloat\">\n"
    "    <input name=\"value\">\n      2.5\n    </input>\n"
    "  </node>\n"
    "</workflow>\n";

static void test_load_ok(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(load(ok_xml, &g), SD_OK);
    if (!g)
        return;
    CHECK_EQ_INT(sd_context_diag_count(ctx), 0);
    CHECK_STR_EQ(g->source, "t.xml");
    CHECK_STR_EQ(sd_graph_meta(g, "title"), "Two ints");
    CHECK_STR_EQ(sd_graph_meta(g, "author"), "me");
    CHECK(sd_graph_meta(g, "description") == NULL);
    CHECK_EQ_INT(g->n_params, 1);
    CHECK_STR_EQ(g->params[0].name, "n");
    CHECK_STR_EQ(g->params[0].def, "3");
    CHECK_STR_EQ(g->params[0].doc, "how many");
    CHECK_EQ_INT(g->params[0].line, 4);
    CHECK_EQ_INT(g->n_nodes, 4);
    sd_graph_node *a = sd_graph_find_node(g, "a"), *b = sd_graph_find_node(g, "b");
    sd_graph_node *s = sd_graph_find_node(g, "s");
    CHECK(a && b && s);
    if (!a || !b || !s)
        goto done;
    CHECK_EQ_INT(a->line, 7);
    CHECK_EQ_INT(a->version, 1);
    CHECK_EQ_INT(b->version, 0); /* no version attribute: current */
    CHECK(a->desc == sd_node_type_find("PrimitiveInt"));
    CHECK_EQ_INT(a->inputs[0].kind, SD_BIND_PARAM);
    CHECK_STR_EQ(a->inputs[0].param, "n");
    CHECK_EQ_INT(a->inputs[0].line, 8);
    CHECK_EQ_INT(b->inputs[0].kind, SD_BIND_LINK);
    CHECK_STR_EQ(b->inputs[0].src_node, "a");
    CHECK_STR_EQ(b->inputs[0].src_output, "INT");
    CHECK_EQ_INT(b->inputs[0].line, 12);
    CHECK_EQ_INT(s->inputs[0].kind, SD_BIND_LITERAL);
    CHECK_STR_EQ(s->inputs[0].text, " <raw> &  text "); /* literal text is never trimmed */
    CHECK_STR_EQ(sd_graph_find_node(g, "f")->inputs[0].text, "2.5"); /* numbers are */
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
done:
    sd_graph_free(g);
}

static void test_malformed(void)
{
    sd_graph *g = NULL;
    sd_status st = load("<workflow version=\"1\">\n<node id=\"a\" type=\"PrimitiveInt\">\n</workflow>\n", &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:3: malformed XML: Opening and ending tag mismatch: node line 2 and workflow");
    st = load("<workflow version=\"1\"><meta><title>&foo;</title></meta></workflow>", &g);
    check_single_failure(st, SD_ERR_PARSE, g, "t.xml:1: malformed XML: Entity 'foo' not defined");
    st = load("", &g);
    check_single_failure(st, SD_ERR_PARSE, g, "t.xml: malformed XML: the file is empty");
    st = load("<workflow version=\"1\"/>\n<workflow version=\"1\"/>", &g);
    check_single_failure(st, SD_ERR_PARSE, g, "t.xml:2: malformed XML: Extra content at the end of the document");
    /* libxml2's message spans two lines; ours is one (found by fuzz_xml). */
    st = load("<workflow version=\"1\">\xff\xff</workflow>", &g);
    CHECK_EQ_INT(st, SD_ERR_PARSE);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "t.xml:1: malformed XML: Input is not proper UTF-8");
    CHECK(strchr(sd_context_errmsg(ctx), '\n') == NULL);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK(strchr(sd_context_diag(ctx, 0), '\n') == NULL);
}

/* A declared encoding whose bytes do not convert: libxml2 reports that without a parser
 * context, through the thread's global handler, which printed "encoding error : input
 * conversion failed ..." and "I/O error : encoder error" on stderr (found by fuzz_xml). The
 * failure is the reader's one-line error, and nothing reaches stderr. */
static void test_bad_declared_encoding(void)
{
    char *log = test_path(test_scratch_dir(), "stderr.txt");
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    sd_graph *g = NULL;
    sd_status st = load("<?xml version=\"1.0\" encoding=\"EUC-JP\"?>\n"
                        "<workflow version=\"1\"><meta><title>\x8f\xff\xff</title></meta></workflow>",
                        &g);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    /* No line: libxml2 converts ahead of the parser, so its line would not be the bytes'. */
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml: malformed XML: input conversion failed due to input error, "
                         "bytes 0x8F 0xFF 0xFF 0x3C");
    char *printed = read_all(log);
    CHECK_STR_EQ(printed, "");
    free(printed);
    free(log);
}

static void test_doctype_external_entity(void)
{
    char *secret = test_path(test_scratch_dir(), "secret.txt");
    write_all(secret, "TOP-SECRET-MARKER\n");
    char *xml = sd_strfmt("<?xml version=\"1.0\"?>\n"
                          "<!DOCTYPE workflow [\n"
                          "  <!ENTITY xxe SYSTEM \"file://%s\">\n"
                          "]>\n"
                          "<workflow version=\"1\"><meta><title>&xxe;</title></meta></workflow>\n",
                          secret);
    sd_graph *g = NULL;
    sd_status st = load(xml, &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:2: DOCTYPE declarations are not allowed in workflow files");
    CHECK(strstr(sd_context_errmsg(ctx), "MARKER") == NULL);
    /* An external DTD is refused the same way, and /etc/passwd never shows up. */
    st = load("<!DOCTYPE workflow SYSTEM \"file:///etc/passwd\">\n<workflow version=\"1\"/>", &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:1: DOCTYPE declarations are not allowed in workflow files");
    free(xml);
    free(secret);
}

/* docs/workflow-format.md: comments and CDATA sections are allowed, nothing else; a processing
 * instruction anywhere is refused (the XML declaration is not one). */
static void test_processing_instruction(void)
{
    sd_graph *g = NULL;
    sd_status st = load("<?xml version=\"1.0\"?>\n<?xml-stylesheet href=\"x.xsl\"?>\n<workflow version=\"1\"/>", &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:2: processing instructions (<?xml-stylesheet ...?>) are not allowed in workflow files");
    st = load("<workflow version=\"1\">\n  <node id=\"a\" type=\"PrimitiveInt\">\n    <?php echo 1; ?>\n"
              "  </node>\n</workflow>\n",
              &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:3: processing instructions (<?php ...?>) are not allowed in workflow files");
    st = load("<workflow version=\"1\"/>\n<?after the root?>\n", &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:2: processing instructions (<?after ...?>) are not allowed in workflow files");
}

static void test_billion_laughs(void)
{
    char xml[4096];
    size_t used = (size_t)snprintf(xml, sizeof xml, "<?xml version=\"1.0\"?>\n<!DOCTYPE workflow [\n"
                                                    " <!ENTITY lol0 \"lol\">\n");
    for (int i = 1; i <= 9; i++) {
        used += (size_t)snprintf(xml + used, sizeof xml - used, " <!ENTITY lol%d \"", i);
        for (int j = 0; j < 10; j++)
            used += (size_t)snprintf(xml + used, sizeof xml - used, "&lol%d;", i - 1);
        used += (size_t)snprintf(xml + used, sizeof xml - used, "\">\n");
    }
    snprintf(xml + used, sizeof xml - used,
             "]>\n<workflow version=\"1\"><meta><title>&lol9;</title></meta></workflow>\n");
    sd_graph *g = NULL;
    sd_status st = load(xml, &g);
    check_single_failure(st, SD_ERR_PARSE, g,
                         "t.xml:2: DOCTYPE declarations are not allowed in workflow files");
}

/* <workflow> holding `depth - 1` nested <a> elements, one per line. */
static char *nested(int depth)
{
    size_t size = (size_t)depth * 9 + 64;
    char *s = malloc(size);
    size_t used = (size_t)snprintf(s, size, "<workflow version=\"1\">\n");
    for (int i = 1; i < depth; i++)
        used += (size_t)snprintf(s + used, size - used, "<a>\n");
    for (int i = 1; i < depth; i++)
        used += (size_t)snprintf(s + used, size - used, "</a>");
    snprintf(s + used, size - used, "</workflow>\n");
    return s;
}

static void test_deep_nesting(void)
{
    sd_graph *g = NULL;
    char *xml = nested(10000);
    sd_status st = load(xml, &g);
    check_single_failure(st, SD_ERR_LIMIT, g, "t.xml:65: elements nested deeper than 64 levels");
    free(xml);
    /* Exactly at the limit the parser accepts the nesting and the schema refuses <a>. */
    xml = nested(SD_XML_MAX_DEPTH);
    st = load(xml, &g);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK(g == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "1 problem in t.xml");
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "t.xml:2: schema: ");
    free(xml);
}

static void test_size_limit(void)
{
    size_t n = (size_t)SD_XML_MAX_BYTES + 1;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    memcpy(big, "<workflow version=\"1\">", 22);
    memcpy(big + n - 11, "</workflow>", 11);
    big[n] = '\0';
    sd_graph *g = NULL;
    sd_status st = sd_graph_load_xml_memory(ctx, big, n, "big.xml", &g);
    check_single_failure(st, SD_ERR_LIMIT, g,
                         "big.xml: file is 16777217 bytes, more than the 16 MiB limit for workflows");
    char *path = test_path(test_scratch_dir(), "big.xml");
    write_all(path, big);
    st = sd_graph_load_xml(ctx, path, &g);
    CHECK_EQ_INT(st, SD_ERR_LIMIT);
    CHECK(g == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "big.xml: file is 16777217 bytes");
    /* A file far over the limit is named with its own size, not the bytes read before stopping. */
    CHECK_EQ_INT(truncate(path, 200 << 20), 0);
    st = sd_graph_load_xml(ctx, path, &g);
    CHECK_EQ_INT(st, SD_ERR_LIMIT);
    char *want = sd_strfmt("%s: file is 209715200 bytes, more than the 16 MiB limit for workflows", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    /* One byte less is parsed. */
    big[n - 12] = '\0';
    strcat(big, "</workflow>");
    st = sd_graph_load_xml_memory(ctx, big, n - 1, "big.xml", &g);
    CHECK_EQ_INT(st, SD_OK);
    sd_graph_free(g);
    free(path);
    free(big);
}

static void test_missing_file(void)
{
    sd_graph *g = NULL;
    char *path = test_path(test_scratch_dir(), "nope.xml");
    CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_ERR_NOT_FOUND);
    CHECK(g == NULL);
    char *want = sd_strfmt("%s: No such file or directory", path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(path);
}

static void test_schema_violations(void)
{
    sd_graph *g = NULL;
    sd_status st = load("<workflow version=\"1\">\n"
                        "<node id=\"a\" type=\"PrimitiveInt\"><input name=\"value\" from=\"b\"/></node>\n"
                        "<nodes/>\n"
                        "</workflow>\n",
                        &g);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK(g == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "2 problems in t.xml");
    CHECK_EQ_INT(sd_context_diag_count(ctx), 2);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "t.xml:2: schema: Invalid attribute from for element input");
    CHECK_STR_EQ(sd_context_diag(ctx, 1), "t.xml:3: schema: Did not expect element nodes there");
    st = load("<graph/>", &g);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "t.xml:1: schema: Expecting element workflow, got graph");
    st = load("<?xml version=\"1.0\"?>\n<workflow version=\"2\"><future/></workflow>", &g);
    check_single_failure(st, SD_ERR_INVALID, g,
                         "t.xml:2: workflow format version '2' is not supported (this sdflow reads version 1)");
}

static void test_duplicate_input(void)
{
    sd_graph *g = NULL;
    sd_status st = load("<workflow version=\"1\">\n<node id=\"a\" type=\"PrimitiveInt\">\n"
                        "<input name=\"value\">1</input>\n<input name=\"value\">2</input>\n"
                        "</node>\n</workflow>\n",
                        &g);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK(g == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "1 problem in t.xml");
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "t.xml:4: node 'a' input 'value': given twice (first at line 3)");
}

/* Field-by-field comparison of two graphs (lines excepted). */
static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool graphs_equal(const sd_graph *x, const sd_graph *y)
{
    if (x->n_nodes != y->n_nodes || x->n_params != y->n_params)
        return false;
    for (int i = 0; i < SD_GRAPH_META_KEYS; i++)
        if (!same_str(x->meta[i], y->meta[i]))
            return false;
    for (size_t i = 0; i < x->n_params; i++) {
        const sd_graph_param *p = &x->params[i], *q = &y->params[i];
        if (!same_str(p->name, q->name) || !same_str(p->type, q->type) || !same_str(p->def, q->def) ||
            !same_str(p->doc, q->doc))
            return false;
    }
    for (size_t i = 0; i < x->n_nodes; i++) {
        const sd_graph_node *n = &x->nodes[i], *m = &y->nodes[i];
        if (!same_str(n->id, m->id) || !same_str(n->type, m->type) || n->n_inputs != m->n_inputs)
            return false;
        for (size_t j = 0; j < n->n_inputs; j++) {
            const sd_graph_input *a = &n->inputs[j], *b = &m->inputs[j];
            if (!same_str(a->name, b->name) || a->kind != b->kind || !same_str(a->text, b->text) ||
                !same_str(a->src_node, b->src_node) || !same_str(a->src_output, b->src_output) ||
                !same_str(a->param, b->param))
                return false;
        }
    }
    return true;
}

static const char tricky[] = "  a cat\n  on a \"mat\" & <b>bold</b> ]]> 'x'\r\n\ttab\r日本語 ✓ 😀  ";

static sd_graph *tricky_graph(void)
{
    sd_graph *g;
    if (sd_graph_new(ctx, &g))
        return NULL;
    CHECK_EQ_INT(sd_graph_set_meta(g, "title", "Title <&> \"ü\""), SD_OK);
    CHECK_EQ_INT(sd_graph_set_meta(g, "description", "line 1\nline 2"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_param(g, "prompt", "STRING", tricky, "the prompt <text> & more"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_param(g, "n", "INT", "3", ""), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveString", "s<1>&\"é\"", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "s<1>&\"é\"", "value", tricky), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveStringMultiline", "m", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_param(g, "prompt", "m", "value"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveString", "empty", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "empty", "value", ""), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "i", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_param(g, "n", "i", "value"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "j", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "i", "INT", "j", "value"), SD_OK);
    return g;
}

static void test_round_trip(void)
{
    sd_graph *g = tricky_graph(), *h = NULL, *k = NULL;
    char *x1 = NULL, *x2 = NULL;
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &x1), SD_OK);
    CHECK_EQ_INT(load(x1, &h), SD_OK);
    CHECK(h && graphs_equal(g, h));
    if (h) {
        CHECK_EQ_INT(sd_graph_validate(h), SD_OK);
        CHECK_EQ_INT(sd_graph_to_xml(h, false, &x2), SD_OK);
        CHECK_STR_EQ(x1, x2);
        CHECK_STR_EQ(sd_graph_find_node(h, "m")->inputs[0].param, "prompt");
        CHECK_STR_EQ(sd_graph_find_param(h, "prompt")->def, tricky);
        CHECK_STR_EQ(sd_graph_find_node(h, "s<1>&\"é\"")->inputs[0].text, tricky);
    }
    /* The canonical form is stable from a file too. */
    if (x2 && load(x2, &k) == SD_OK) {
        CHECK(graphs_equal(h, k));
        sd_graph_free(k);
    }
    free(x1);
    free(x2);
    sd_graph_free(h);
    sd_graph_free(g);
}

static void test_write_rejects_unwritable_text(void)
{
    sd_graph *g;
    char *xml = (char *)"unchanged";
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveString", "p", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "p", "value", "a\001b"), SD_OK);
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_ERR_INVALID);
    CHECK(xml == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "cannot write node 'p' input 'value' as XML: text contains U+0001, which XML cannot carry");
    CHECK_EQ_INT(sd_graph_set_input(g, "p", "value", "ok \xff"), SD_OK);
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "cannot write node 'p' input 'value' as XML: text is not valid UTF-8 (byte 0xFF at offset 3)");
    CHECK_EQ_INT(sd_graph_set_input(g, "p", "value", "\xed\xa0\x80"), SD_OK); /* a surrogate */
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not valid UTF-8");
    sd_graph_free(g);
}

static void test_save_atomic(void)
{
    char *dir = scratch_subdir("save");
    char *path = test_path(dir, "out.xml");
    sd_graph *g = tricky_graph(), *bad;
    char *xml = NULL;
    CHECK_EQ_INT(sd_graph_save_xml(g, path, false), SD_OK);
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_OK);
    char *saved = read_all(path);
    CHECK_STR_EQ(saved, xml);
    CHECK_EQ_INT(count_entries(dir), 1);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);

    /* A graph that cannot be written leaves the old file as it was and no temporary file. */
    CHECK_EQ_INT(sd_graph_new(ctx, &bad), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(bad, "PrimitiveString", "p", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(bad, "p", "value", "\002"), SD_OK);
    CHECK_EQ_INT(sd_graph_save_xml(bad, path, false), SD_ERR_INVALID);
    char *again = read_all(path);
    CHECK_STR_EQ(again, xml);
    CHECK_EQ_INT(count_entries(dir), 1);

    /* A missing directory is an I/O error naming the file. */
    char *nodir = test_path(dir, "missing/out.xml");
    CHECK_EQ_INT(sd_graph_save_xml(g, nodir, false), SD_ERR_IO);
    char *want = sd_strfmt("%s: cannot create a temporary file: No such file or directory", nodir);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK_EQ_INT(count_entries(dir), 1);
    free(want);
    free(nodir);
    free(again);
    free(saved);
    free(xml);
    sd_graph_free(bad);
    sd_graph_free(g);
    free(path);
    free(dir);
}

static void test_params_resolve_and_inline(void)
{
    sd_graph *g = NULL;
    char *xml = NULL;
    CHECK_EQ_INT(load(ok_xml, &g), SD_OK);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_set_param(g, "n", "9"), SD_OK);
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_OK);
    CHECK_STR_CONTAINS(xml, "<param name=\"n\" type=\"INT\" default=\"3\">how many</param>");
    free(xml);
    CHECK_EQ_INT(sd_graph_to_xml(g, true, &xml), SD_OK);
    CHECK_STR_CONTAINS(xml, "<param name=\"n\" type=\"INT\" default=\"9\">how many</param>");
    free(xml);
    CHECK_EQ_INT(sd_graph_inline_params(g), SD_OK);
    CHECK_EQ_INT(sd_graph_param_count(g), 0);
    CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_OK);
    CHECK(strstr(xml, "<param") == NULL);
    CHECK_STR_CONTAINS(xml, "<node id=\"a\" type=\"PrimitiveInt\" version=\"1\">\n"
                            "    <input name=\"value\">9</input>\n");
    free(xml);
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    sd_graph_free(g);
}

/* A node type at version 3 whose version 1 called its input "old" and stored half the value. */
static sd_status upgrade_test(sd_node_upgrade *up, int from)
{
    if (from >= 3)
        return SD_OK;
    sd_status st = sd_upgrade_rename_input(up, "old", "value");
    const char *v = sd_upgrade_literal(up, "value");
    if (!st && v && strcmp(v, "fail") == 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "cannot convert 'fail'");
    if (!st && v) {
        char buf[32];
        snprintf(buf, sizeof buf, "%d", atoi(v) * 2);
        st = sd_upgrade_set_literal(up, "value", buf);
    }
    return st;
}

static const sd_input_desc up_in[] = {
    {.name = "value", .type = SD_TYPE_INT, .def = "0", .doc = "doubled since version 2"},
};
static const sd_node_desc up_desc = {
    .name = "UpgradeTest", .version = 3, .category = "test", .doc = "test", .inputs = up_in,
    .n_inputs = 1, .upgrade = upgrade_test,
};

static void test_upgrade(void)
{
    sd_graph *g;
    sd_graph_node *n;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node_raw(g, "UpgradeTest", "u", 1, 5, &n), SD_OK);
    n->desc = &up_desc;
    CHECK_EQ_INT(sd_graph_bind_literal(g, n, "old", "21", 6), SD_OK);
    CHECK_EQ_INT(sd_graph_upgrade_node(g, n), SD_OK);
    CHECK_EQ_INT(n->version, 3);
    CHECK_EQ_INT(n->n_inputs, 1);
    CHECK_STR_EQ(n->inputs[0].name, "value");
    CHECK_STR_EQ(n->inputs[0].text, "42");
    CHECK_EQ_INT(n->inputs[0].line, 6);
    /* Already current: untouched. */
    CHECK_EQ_INT(sd_graph_upgrade_node(g, n), SD_OK);
    CHECK_STR_EQ(n->inputs[0].text, "42");

    CHECK_EQ_INT(sd_graph_add_node_raw(g, "UpgradeTest", "v", 2, 7, &n), SD_OK);
    n->desc = &up_desc;
    CHECK_EQ_INT(sd_graph_bind_literal(g, n, "old", "fail", 8), SD_OK);
    CHECK_EQ_INT(sd_graph_upgrade_node(g, n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'v' (UpgradeTest): upgrade from version 2: cannot convert 'fail'");
    CHECK_EQ_INT(n->version, 2);

    CHECK_EQ_INT(sd_graph_add_node_raw(g, "UpgradeTest", "w", 1, 9, &n), SD_OK);
    n->desc = &up_desc;
    CHECK_EQ_INT(sd_graph_bind_literal(g, n, "old", "1", 10), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_literal(g, n, "value", "2", 11), SD_OK);
    CHECK_EQ_INT(sd_graph_upgrade_node(g, n), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'w' (UpgradeTest): upgrade from version 1: cannot rename "
                                         "input 'old' to 'value': 'value' is already set");
    sd_graph_free(g);
}

/* Deterministic xorshift generator for the randomized tests. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Appends the UTF-8 form of a code point XML 1.0 can carry. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A random string of up to 24 characters mixing markup characters, white space and unicode. */
static void random_text(char *out, bool allow_empty)
{
    static const char special[] = "<>&\"' \t\r\n];";
    size_t n = rnd(24) + (allow_empty ? 0 : 1), used = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp;
        switch (rnd(4)) {
        case 0: cp = (unsigned char)special[rnd(sizeof special - 1)]; break;
        case 1: cp = 'a' + rnd(26); break;
        case 2: cp = 0xA0 + rnd(0xD7FF - 0xA0); break;
        default: cp = 0x10000 + rnd(0x10FFFF - 0x10000); break;
        }
        used += put_utf8(out + used, cp);
    }
    out[used] = '\0';
}

/* Random graphs with random strings everywhere survive write -> read unchanged. */
static void test_round_trip_random(void)
{
    for (int iter = 0; iter < 200; iter++) {
        sd_graph *g, *h = NULL;
        char *xml = NULL;
        char a[128], b[128], id[128];
        CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
        /* Metadata is read without surrounding white space: keep it inside letters. */
        a[0] = 'x';
        random_text(a + 1, true);
        strcat(a, "x");
        CHECK_EQ_INT(sd_graph_set_meta(g, "author", a), SD_OK);
        random_text(a, false);
        random_text(b, true);
        CHECK_EQ_INT(sd_graph_add_param(g, a, "STRING", b, "doc"), SD_OK);
        for (int k = 0; k < 3; k++) {
            snprintf(id, sizeof id, "%d", k);
            random_text(id + strlen(id), true);
            CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveString", id, NULL), SD_OK);
            if (k == 1) {
                CHECK_EQ_INT(sd_graph_bind_param(g, a, id, "value"), SD_OK);
            } else {
                random_text(b, true);
                CHECK_EQ_INT(sd_graph_set_input(g, id, "value", b), SD_OK);
            }
        }
        CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_OK);
        CHECK_EQ_INT(xml ? load(xml, &h) : SD_ERR_NOMEM, SD_OK);
        CHECK_MSG(h && graphs_equal(g, h), "round trip %d differs:\n%s", iter, xml ? xml : "");
        free(xml);
        sd_graph_free(h);
        sd_graph_free(g);
    }
}

/* Mutated and truncated files never crash the reader: each load either succeeds or fails with
 * a parse, schema or limit status and a message. */
static void test_mutations(void)
{
    size_t len = strlen(ok_xml);
    char *buf = malloc(len + 1);
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, ok_xml, len + 1);
        size_t n = len;
        if (iter % 3 == 0) {
            n = rnd((uint32_t)len);
        } else {
            for (int k = 0, m = 1 + (int)rnd(4); k < m; k++)
                buf[rnd((uint32_t)len)] = (char)rnd(256);
        }
        sd_graph *g = NULL;
        sd_status st = sd_graph_load_xml_memory(ctx, buf, n, "m.xml", &g);
        if (st == SD_OK) {
            CHECK(g != NULL);
            char *xml = NULL;
            sd_status w = sd_graph_to_xml(g, false, &xml);
            CHECK(w == SD_OK || w == SD_ERR_INVALID);
            sd_graph_validate(g);
            free(xml);
            ok++;
        } else {
            CHECK_MSG(st == SD_ERR_PARSE || st == SD_ERR_INVALID || st == SD_ERR_LIMIT,
                      "status %d for mutation %d", (int)st, iter);
            CHECK(g == NULL);
            CHECK(strncmp(sd_context_errmsg(ctx), "m.xml", 5) == 0 ||
                  strstr(sd_context_errmsg(ctx), "problem") != NULL);
            failed++;
        }
        sd_graph_free(g);
    }
    CHECK(ok > 0 && failed > 0);
    free(buf);
}

int main(void)
{
    if (sd_context_new(&ctx))
        return 2;
    RUN(test_load_ok);
    RUN(test_malformed);
    RUN(test_bad_declared_encoding);
    RUN(test_doctype_external_entity);
    RUN(test_processing_instruction);
    RUN(test_billion_laughs);
    RUN(test_deep_nesting);
    RUN(test_size_limit);
    RUN(test_missing_file);
    RUN(test_schema_violations);
    RUN(test_duplicate_input);
    RUN(test_round_trip);
    RUN(test_write_rejects_unwritable_text);
    RUN(test_save_atomic);
    RUN(test_params_resolve_and_inline);
    RUN(test_upgrade);
    RUN(test_round_trip_random);
    RUN(test_mutations);
    sd_context_free(ctx);
    return test_summary("test_xml");
}
