/* ComfyUI API-format import: workflows in ComfyUI's exact export format (tests/data/comfy). */
#include "test.h"
#include "core/comfy.h"
#include "core/graph.h"
#include "core/png.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;

static char *data_path(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/comfy");
    char *p = test_path(dir, name);
    free(dir);
    return p;
}

/* Writes text to a scratch file and returns its path. */
static char *scratch_file(const char *name, const char *text)
{
    char *p = test_path(test_scratch_dir(), name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return p;
}

static const char primitives_xml[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<workflow version=\"1\">\n"
    "  <node id=\"1\" type=\"PrimitiveInt\" version=\"1\">\n"
    "    <input name=\"value\">42</input>\n"
    "  </node>\n"
    "  <node id=\"2\" type=\"PrimitiveFloat\" version=\"1\">\n"
    "    <input name=\"value\">0.1</input>\n"
    "  </node>\n"
    "  <node id=\"3\" type=\"PrimitiveBoolean\" version=\"1\">\n"
    "    <input name=\"value\">true</input>\n"
    "  </node>\n"
    "  <node id=\"4\" type=\"PrimitiveString\" version=\"1\">\n"
    "    <input name=\"value\">a \"cat\" &lt;&amp;&gt; ✓</input>\n"
    "  </node>\n"
    "  <node id=\"5\" type=\"PrimitiveStringMultiline\" version=\"1\">\n"
    "    <input name=\"value\">line one\nline two\n</input>\n"
    "  </node>\n"
    "  <node id=\"6\" type=\"PrimitiveFloat\" version=\"1\">\n"
    "    <input name=\"value\">8</input>\n"
    "  </node>\n"
    "  <node id=\"7\" type=\"PrimitiveFloat\" version=\"1\">\n"
    "    <input name=\"value\">1e-07</input>\n"
    "  </node>\n"
    "  <node id=\"10\" type=\"PrimitiveInt\" version=\"1\">\n"
    "    <input name=\"value\" from=\"1\" output=\"INT\"/>\n"
    "  </node>\n"
    "</workflow>\n";

static void test_import_primitives(void)
{
    char *path = data_path("primitives_api.json");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        char *xml = NULL;
        CHECK_STR_EQ(g->source, path);
        CHECK_EQ_INT(sd_graph_to_xml(g, false, &xml), SD_OK);
        CHECK_STR_EQ(xml, primitives_xml);
        CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
        /* The text written for a float reads back as the same double. */
        double v;
        CHECK(sd_parse_float(sd_graph_find_node(g, "2")->inputs[0].text, &v) && v == 0.1);
        free(xml);
    }
    sd_graph_free(g);
    free(path);
}

static void test_unsupported_node(void)
{
    char *path = data_path("custom_node_api.json");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_ERR_INVALID);
    CHECK(g == NULL);
    char *want = sd_strfmt("%s: unsupported node types: 'ImpactWildcardProcessor' (node '2'), "
                           "'ShowText|pysssss' (node '3')",
                           path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(path);
}

/* The image nodes, as ComfyUI exports them (LoadImage with its "upload" widget). */
static void test_import_image_nodes(void)
{
    char *path = data_path("image_api.json");
    char *input = test_path(test_scratch_dir(), "input");
    char *png = test_path(input, "example.png");
    sd_graph *g = NULL;
    mkdir(input, 0755);
    CHECK_EQ_INT(sd_context_set_dir(ctx, SD_DIR_INPUT, input), SD_OK);
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (!g)
        goto done;
    /* As in ComfyUI, only what an output node needs: LoadImageMask (13) and
     * EmptyLatentImage (5) feed nothing. */
    CHECK_EQ_INT(sd_graph_node_count(g), 3);
    CHECK_STR_EQ(sd_graph_node_id(g, 0), "10");
    CHECK_STR_EQ(sd_graph_node_id(g, 2), "12");
    const sd_graph_input *images = sd_graph_node_input(sd_graph_find_node(g, "11"), "images");
    CHECK(images && images->kind == SD_BIND_LINK && !strcmp(images->src_node, "10") &&
          !strcmp(images->src_output, "IMAGE"));
    /* The image file is checked by validation. */
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    char *want = sd_strfmt("%s: node '10' input 'image': input file 'example.png' not found (searched: %s)",
                           path, input);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), want);
    free(want);
    FILE *f = fopen(png, "wb");
    if (f)
        fclose(f);
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    sd_graph_free(g);
    g = NULL;

    /* Slot 1 of LoadImage is its MASK output. */
    char *mask = scratch_file("mask.json",
                              "{\"1\": {\"inputs\": {\"image\": \"example.png\"}, \"class_type\": \"LoadImage\"},\n"
                              " \"2\": {\"inputs\": {\"images\": [\"1\", 1]}, \"class_type\": \"PreviewImage\"}}");
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, mask, &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        want = sd_strfmt("%s: node '2' input 'images': type mismatch: output 'MASK' of node '1' is MASK, "
                         "the input is IMAGE",
                         mask);
        CHECK_STR_EQ(sd_context_diag(ctx, 0), want);
        free(want);
    }
    free(mask);
done:
    sd_graph_free(g);
    free(png);
    free(input);
    free(path);
}

/* ComfyUI's default text-to-image workflow: imported when every node type exists here,
 * otherwise the error names exactly the missing ones. */
static void test_default_workflow(void)
{
    static const char *const types[][2] = {
        {"3", "KSampler"}, {"4", "CheckpointLoaderSimple"}, {"5", "EmptyLatentImage"},
        {"6", "CLIPTextEncode"}, {"7", "CLIPTextEncode"}, {"8", "VAEDecode"}, {"9", "SaveImage"},
    };
    char missing[1024] = "";
    size_t used = 0, count = 0;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!sd_node_type_find(types[i][1]))
            used += (size_t)snprintf(missing + used, sizeof missing - used, "%s'%s' (node '%s')",
                                     count++ ? ", " : "", types[i][1], types[i][0]);
    char *path = data_path("default_api.json");
    sd_graph *g = NULL;
    sd_status st = sd_graph_import_comfy(ctx, path, &g);
    if (count) {
        CHECK_EQ_INT(st, SD_ERR_INVALID);
        char *want = sd_strfmt("%s: unsupported node type%s: %s", path, count == 1 ? "" : "s", missing);
        CHECK_STR_EQ(sd_context_errmsg(ctx), want);
        free(want);
    } else {
        CHECK_EQ_INT(st, SD_OK);
        sd_graph_node *n = g ? sd_graph_find_node(g, "8") : NULL;
        const sd_graph_input *vae = n ? sd_graph_node_input(n, "vae") : NULL;
        CHECK(vae && vae->kind == SD_BIND_LINK && !strcmp(vae->src_node, "4") &&
              !strcmp(vae->src_output, "VAE"));
        n = g ? sd_graph_find_node(g, "3") : NULL;
        /* The sampler's seed became the parameter "seed", with the file's value as default. */
        const sd_graph_input *seed = n ? sd_graph_node_input(n, "seed") : NULL;
        CHECK(seed && seed->kind == SD_BIND_PARAM && !strcmp(seed->param, "seed"));
        const sd_graph_param *p = g ? sd_graph_find_param(g, "seed") : NULL;
        CHECK(p && !strcmp(p->def, "156680208700286") && !strcmp(p->type, "INT"));
    }
    sd_graph_free(g);
    free(path);
}

static void expect_error(const char *name, const char *json, sd_status status, const char *msg_after_path)
{
    char *path = scratch_file(name, json);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), status);
    CHECK(g == NULL);
    char *want = sd_strfmt("%s%s", path, msg_after_path);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(path);
}

static void test_bad_files(void)
{
    expect_error("trunc.json", "{\"1\": {\"inputs\": {", SD_ERR_PARSE,
                 ":1:18: JSON error: string or '}' expected near end of file");
    expect_error("dup.json",
                 "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {}},\n"
                 " \"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {}}}",
                 SD_ERR_PARSE, ":2:4: JSON error: duplicate object key near '\"1\"'");
    expect_error("array.json", "[1, 2]", SD_ERR_PARSE,
                 ": not a ComfyUI workflow (expected a JSON object)");
    expect_error("ui.json", "{\"last_node_id\": 9, \"nodes\": [{\"id\": 1}], \"links\": []}", SD_ERR_PARSE,
                 ": workflow: node 0 has no \"id\" or \"type\"");
    expect_error("noclass.json", "{\"1\": {\"inputs\": {}}}", SD_ERR_PARSE,
                 ": node '1' is not a ComfyUI API node (no \"class_type\")");
    expect_error("dangling.json",
                 "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": [\"9\", 0]}}}",
                 SD_ERR_INVALID, ": node '1' input 'value': link from missing node '9'");
    expect_error("slot.json",
                 "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": 1}},\n"
                 " \"2\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": [\"1\", 3]}}}",
                 SD_ERR_INVALID, ": node '2' input 'value': node '1' (PrimitiveInt) has no output slot 3");
    expect_error("object.json",
                 "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": {\"a\": 1}}}}",
                 SD_ERR_INVALID,
                 ": node '1' input 'value': value is neither a link [node, slot] nor a number, string or "
                 "boolean");
    char *missing = test_path(test_scratch_dir(), "missing.json");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, missing, &g), SD_ERR_NOT_FOUND);
    CHECK(g == NULL);
    char *want = sd_strfmt("%s: No such file or directory", missing);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(missing);
}

/* Inputs sdflow does not know are kept, for validation to report with the node and input. */
static void test_unknown_input_kept(void)
{
    char *path = scratch_file("extra.json",
                              "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": 1, "
                              "\"step\": 10}}}");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        char *want = sd_strfmt("%s: node '1' input 'step': unknown input of "
                               "PrimitiveInt (inputs: value, control_after_generate)",
                               path);
        CHECK_STR_EQ(sd_context_diag(ctx, 0), want);
        free(want);
    }
    sd_graph_free(g);
    free(path);
}

/* Mutated API files never crash the importer: each either imports or fails with a parse or
 * invalid-input status and a message naming the file. */
static void test_mutations(void)
{
    char *src = data_path("primitives_api.json");
    FILE *f = fopen(src, "rb");
    char orig[8192];
    size_t len = f ? fread(orig, 1, sizeof orig, f) : 0;
    if (f)
        fclose(f);
    CHECK(len > 100 && len < sizeof orig);
    char *path = test_path(test_scratch_dir(), "mutated.json");
    static const char alphabet[] = "[]{}\",:0a-9\\ e.";
    uint64_t x = 88172645463325252u;
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 200 && len; iter++) {
        char buf[8192];
        memcpy(buf, orig, len);
        size_t n = len;
        for (int k = 0; k < 3; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            if (iter % 4 == 0)
                n = (size_t)(x % len);
            else
                buf[x % len] = alphabet[(x >> 32) % (sizeof alphabet - 1)];
        }
        f = fopen(path, "wb");
        if (!f)
            break;
        fwrite(buf, 1, n, f);
        fclose(f);
        sd_graph *g = NULL;
        sd_status st = sd_graph_import_comfy(ctx, path, &g);
        if (st == SD_OK) {
            CHECK(g != NULL);
            ok++;
        } else {
            CHECK_MSG(st == SD_ERR_PARSE || st == SD_ERR_INVALID, "status %d", (int)st);
            CHECK(g == NULL);
            CHECK(strncmp(sd_context_errmsg(ctx), path, strlen(path)) == 0);
            failed++;
        }
        sd_graph_free(g);
    }
    CHECK(ok > 0 && failed > 0);
    free(path);
    free(src);
}

/* malloc'd contents of a file, NULL when unreadable. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
    if (n >= 0 && !fseek(f, 0, SEEK_SET) && (buf = malloc((size_t)n + 1))) {
        buf[fread(buf, 1, (size_t)n, f)] = '\0';
    }
    if (f)
        fclose(f);
    return buf;
}

/* Imports path and returns the XML (parameters kept), NULL on failure. */
static char *import_xml(const char *path)
{
    sd_graph *g = NULL;
    char *xml = NULL;
    if (sd_graph_import_comfy(ctx, path, &g) == SD_OK)
        sd_graph_to_xml(g, false, &xml);
    sd_graph_free(g);
    return xml;
}

/* A UI-format file as ComfyUI's "Save" writes it: the subgraph instance 30 holds the KSampler
 * (API id "30:1") and gives its seed widget the value 42; the LoRA loader is bypassed (the
 * checkpoint's MODEL passes through), the PreviewImage muted, the Note dropped; the Reroute
 * carries CLIP to both text encoders; the PrimitiveNode's 640 is the latent's width; the
 * control_after_generate widget after the seed is kept. The expected XML is
 * tests/data/comfy/ui_subgraph.xml. */
static void test_ui_format(void)
{
    char *path = data_path("ui_subgraph.json"), *want_path = data_path("ui_subgraph.xml");
    char *want = slurp(want_path), *xml = import_xml(path);
    CHECK(want && xml);
    if (want && xml)
        CHECK_STR_EQ(xml, want);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        const sd_graph_param *seed = sd_graph_find_param(g, "seed");
        CHECK(seed && !strcmp(seed->def, "42"));
        CHECK(!sd_graph_find_node(g, "10") && !sd_graph_find_node(g, "22") && !sd_graph_find_node(g, "11"));
    }
    sd_graph_free(g);
    free(xml);
    free(want);
    free(want_path);
    free(path);
}

/* A PNG's "prompt" chunk (API format) is imported when present, else its "workflow" chunk. */
static void test_png_chunks(void)
{
    char *ui_path = data_path("ui_subgraph.json"), *api_path = data_path("primitives_api.json");
    char *ui = slurp(ui_path), *api = slurp(api_path);
    char *png = test_path(test_scratch_dir(), "comfy.png");
    float px[3] = {0.5f, 0.5f, 0.5f};
    sd_image img = {.width = 1, .height = 1, .channels = 3, .bit_depth = 8, .data = px};
    sd_png_text both[] = {{"workflow", ui}, {"prompt", api}};
    CHECK_EQ_INT(sd_png_write(ctx, png, &img, both, 2, 6), SD_OK);
    char *xml = import_xml(png);
    CHECK(xml && strstr(xml, "type=\"PrimitiveStringMultiline\""));
    free(xml);
    CHECK_EQ_INT(sd_png_write(ctx, png, &img, both, 1, 6), SD_OK);
    xml = import_xml(png);
    CHECK(xml && strstr(xml, "<node id=\"30:1\" type=\"KSampler\""));
    free(xml);
    char *fake = scratch_file("fake.png", "{}");
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, fake, &(sd_graph *){NULL}), SD_ERR_PARSE);
    char *msg = sd_strfmt("%s: not a PNG file", fake);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(msg);
    free(fake);
    CHECK_EQ_INT(sd_png_write(ctx, png, &img, NULL, 0, 6), SD_OK);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, png, &g), SD_ERR_INVALID);
    char *want = sd_strfmt("%s: the PNG holds no ComfyUI workflow (no \"prompt\" or \"workflow\" text chunk)", png);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(png);
    free(ui);
    free(api);
    free(ui_path);
    free(api_path);
}

/* A UI workflow of one or two nodes around a SaveImage: "nodes" and "links" given. */
static char *ui_file(const char *name, const char *nodes, const char *links)
{
    char *text = sd_strfmt("{\"last_node_id\": 9, \"nodes\": [%s,\n"
                           " {\"id\": 9, \"type\": \"SaveImage\", \"mode\": 0, \"inputs\": [{\"name\": \"images\", "
                           "\"type\": \"IMAGE\", \"link\": 1}], \"widgets_values\": [\"out\"]}],\n"
                           " \"links\": [%s], \"version\": 0.4}",
                           nodes, links);
    char *p = scratch_file(name, text);
    free(text);
    return p;
}

/* Muted nodes take the inputs they fed with them; bypassed nodes pass on their input of the
 * consumer's type (none: the input is removed); widgets_values may be an object; links that
 * loop through Reroutes, and subgraphs that contain themselves, are refused. */
static void test_ui_modes(void)
{
    static const char img[] = "{\"id\": 1, \"type\": \"EmptyImage\", \"mode\": %d, \"inputs\": [], "
                              "\"widgets_values\": {\"width\": 64, \"height\": 32}}";
    char node[256];
    snprintf(node, sizeof node, img, 2);
    char *p = ui_file("muted.json", node, "[1, 1, 0, 9, 0, \"IMAGE\"]");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_OK);
    CHECK(g && sd_graph_node_count(g) == 1 && !sd_graph_node_input(sd_graph_find_node(g, "9"), "images"));
    sd_graph_free(g);
    free(p);

    snprintf(node, sizeof node, img, 0);
    p = ui_file("object.json", node, "[1, 1, 0, 9, 0, \"IMAGE\"]");
    char *xml = import_xml(p);
    CHECK(xml && strstr(xml, "<input name=\"width\">64</input>") && strstr(xml, "<input name=\"height\">32</input>"));
    free(xml);
    free(p);

    p = ui_file("bypass.json",
                "{\"id\": 1, \"type\": \"EmptyImage\", \"mode\": 0, \"widgets_values\": [8, 8, 1, 0]},\n"
                " {\"id\": 2, \"type\": \"ImageInvert\", \"mode\": 4, \"inputs\": [{\"name\": \"image\", \"type\": "
                "\"IMAGE\", \"link\": 2}]},\n"
                " {\"id\": 3, \"type\": \"ImageBlur\", \"mode\": 4, \"inputs\": [{\"name\": \"x\", \"type\": \"MASK\", "
                "\"link\": 2}]},\n"
                " {\"id\": 4, \"type\": \"PreviewImage\", \"mode\": 0, \"inputs\": [{\"name\": \"images\", \"type\": "
                "\"IMAGE\", \"link\": 3}]}",
                "[1, 2, 0, 9, 0, \"IMAGE\"], [2, 1, 0, 2, 0, \"IMAGE\"], [3, 3, 0, 4, 0, \"IMAGE\"]");
    g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_OK);
    const sd_graph_input *in = g ? sd_graph_node_input(sd_graph_find_node(g, "9"), "images") : NULL;
    CHECK(in && in->kind == SD_BIND_LINK && !strcmp(in->src_node, "1"));
    CHECK(g && !sd_graph_node_input(sd_graph_find_node(g, "4"), "images"));
    sd_graph_free(g);
    free(p);

    p = ui_file("loop.json",
                "{\"id\": 1, \"type\": \"Reroute\", \"inputs\": [{\"name\": \"\", \"type\": \"*\", \"link\": 2}]},\n"
                " {\"id\": 2, \"type\": \"Reroute\", \"inputs\": [{\"name\": \"\", \"type\": \"*\", \"link\": 3}]}",
                "[1, 1, 0, 9, 0, \"IMAGE\"], [2, 2, 0, 1, 0, \"*\"], [3, 1, 0, 2, 0, \"*\"]");
    g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_ERR_LIMIT);
    CHECK(strstr(sd_context_errmsg(ctx), "links pass through more than 10000 nodes (a cycle?)"));
    free(p);

    p = scratch_file("nested.json",
                     "{\"nodes\": [{\"id\": 1, \"type\": \"S\", \"outputs\": []}], \"links\": [],\n"
                     " \"definitions\": {\"subgraphs\": [{\"id\": \"S\", \"links\": [],\n"
                     "   \"nodes\": [{\"id\": 1, \"type\": \"S\"}]}]}}");
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_ERR_LIMIT);
    CHECK(strstr(sd_context_errmsg(ctx), "subgraphs nested deeper than 16 levels"));
    free(p);
}

/* Seeds up to 2^64 - 1 (beyond jansson's integers) are read as their digits. */
static void test_big_seed(void)
{
    char *p = scratch_file("bigseed.json",
                           "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": 18446744073709551615}},"
                           " \"2\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": -9223372036854775808}},"
                           " \"3\": {\"class_type\": \"PrimitiveString\", \"inputs\": {\"value\": \"\\\"99999999999999999999\"}}}");
    char *xml = import_xml(p);
    CHECK(xml && strstr(xml, "<input name=\"value\">18446744073709551615</input>"));
    CHECK(xml && strstr(xml, "<input name=\"value\">-9223372036854775808</input>"));
    CHECK(xml && strstr(xml, "<input name=\"value\">\"99999999999999999999</input>"));
    free(xml);
    free(p);
    p = scratch_file("toobig.json", "{\"1\": {\"class_type\": \"PrimitiveInt\", \"inputs\": {\"value\": 18446744073709551616}}}");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_ERR_PARSE);
    CHECK(strstr(sd_context_errmsg(ctx), "too big integer"));
    free(p);
}

/* Seeds: 0 ... 2^64 - 1 for seed inputs only; control_after_generate wraps around that range,
 * and a parameter bound to two samplers' seeds advances once per run. */
static void test_seeds(void)
{
    const sd_node_desc *ks = sd_node_type_find("KSampler"), *pi = sd_node_type_find("PrimitiveInt");
    const sd_input_desc *seed = sd_node_desc_input(ks, "seed"), *value = sd_node_desc_input(pi, "value");
    char msg[256];
    int64_t v;
    CHECK(sd_literal_check(seed, "18446744073709551615", msg, sizeof msg));
    CHECK(sd_input_parse_int(seed, "18446744073709551615", &v) && v == -1);
    CHECK(!sd_literal_check(seed, "18446744073709551616", msg, sizeof msg));
    CHECK(!sd_literal_check(seed, "-1", msg, sizeof msg));
    CHECK(!sd_literal_check(value, "9223372036854775808", msg, sizeof msg));
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_add_node(g, "KSampler", "a", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "KSampler", "b", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "KSamplerAdvanced", "c", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "a", "seed", "18446744073709551615"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "a", "control_after_generate", "increment"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_param(g, "seed", "INT", "0", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_param(g, "seed", "b", "seed"), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_param(g, "seed", "c", "noise_seed"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "b", "control_after_generate", "decrement"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "c", "control_after_generate", "decrement"), SD_OK);
    uint64_t state = 1;
    CHECK_EQ_INT(sd_graph_advance_seeds(g, &state), SD_OK);
    CHECK_STR_EQ(sd_graph_node_input(sd_graph_find_node(g, "a"), "seed")->text, "0");
    CHECK_STR_EQ(sd_graph_find_param(g, "seed")->value, "18446744073709551615");
    CHECK_EQ_INT(sd_graph_advance_seeds(g, &state), SD_OK);
    CHECK_STR_EQ(sd_graph_node_input(sd_graph_find_node(g, "a"), "seed")->text, "1");
    CHECK_STR_EQ(sd_graph_find_param(g, "seed")->value, "18446744073709551614");
    sd_graph_free(g);
}

/* A graph in canonical text: per node (in graph order) its type and every input's effective
 * value (links as SOURCE.OUTPUT, numbers parsed, defaults filled in). */
static char *canonical(sd_graph *g)
{
    char *text = sd_strdup("");
    for (size_t i = 0; text && i < g->n_nodes; i++) {
        const sd_graph_node *n = &g->nodes[i];
        char *t = sd_strfmt("%s%s %s:", text, n->id, n->type);
        free(text);
        text = t;
        for (size_t k = 0; text && n->desc && k < n->desc->n_inputs; k++) {
            const sd_input_desc *in = &n->desc->inputs[k];
            const sd_graph_input *b = sd_graph_node_input(n, in->name);
            const char *v = sd_graph_input_text(g, n, in);
            double f;
            char num[64] = "";
            if (v && (in->type == SD_TYPE_FLOAT || in->type == SD_TYPE_INT) && sd_parse_float(v, &f))
                snprintf(num, sizeof num, "%.17g", f);
            t = b && b->kind == SD_BIND_LINK ? sd_strfmt("%s %s=%s.%s", text, in->name, b->src_node, b->src_output)
                                             : sd_strfmt("%s %s=%s", text, in->name, *num ? num : v ? v : "-");
            free(text);
            text = t;
        }
        t = text ? sd_strfmt("%s\n", text) : NULL;
        free(text);
        text = t;
    }
    return text;
}

/* Imports name, exports it in the API format and, when ui, the UI format, imports each again
 * and compares (inputs with their default values written out compare equal). Returns the
 * graph of the first import. */
static sd_graph *round_trip(const char *name, bool ui_too)
{
    char *path = data_path(name);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    char *want = g ? canonical(g) : NULL;
    for (int ui = 0; g && ui <= ui_too; ui++) {
        char *json = NULL;
        CHECK_EQ_INT(sd_graph_export_comfy(g, ui, &json), SD_OK);
        char *p = scratch_file(ui ? "rt_ui.json" : "rt_api.json", json ? json : "");
        sd_graph *g2 = NULL;
        CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g2), SD_OK);
        char *got = g2 ? canonical(g2) : NULL;
        CHECK(want && got);
        if (want && got)
            CHECK_STR_EQ(got, want);
        free(got);
        sd_graph_free(g2);
        free(p);
        free(json);
    }
    free(want);
    free(path);
    return g;
}

/* Round trip: example -> import -> export -> import gives the same graph. The UI format numbers
 * its nodes, so the subgraph's "30:1" makes the API format the one that keeps every id. */
static void test_round_trip(void)
{
    sd_graph_free(round_trip("default_api.json", true));
    sd_graph *g = round_trip("ui_subgraph.json", false);
    /* sdflow's own node types have no ComfyUI counterpart. */
    if (g) {
        char *json = NULL;
        CHECK_EQ_INT(sd_graph_add_node(g, "SdflowImageGrid", "grid", NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_export_comfy(g, false, &json), SD_ERR_INVALID);
        CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'grid': ComfyUI has no node type 'SdflowImageGrid'");
        CHECK(json == NULL);
    }
    sd_graph_free(g);
}

/* Titles and groups survive import -> UI export -> import: the UI export writes each node's
 * title and each group's box around its nodes (laid out in a band of their own), titles with
 * quotes, commas and backslashes included; the API export carries titles in "_meta". */
static void test_ui_titles_groups(void)
{
    sd_graph *g = round_trip("ui_titles.json", true);
    const char *want = "Imported from ComfyUI (ui_titles.json).\n"
                       "Titles: 3 \"Sampler\", 6 \"Positive \\\"cat\\\", prompt\", 7 \"Negative\\\\prompt\"\n"
                       "Group \"Prompts\": 6, 7\n"
                       "Group \"Sample \\\"and\\\" decode\": 3, 8";
    const char *desc = g ? sd_graph_meta(g, "description") : NULL;
    CHECK(desc != NULL);
    if (desc)
        CHECK_STR_EQ(desc, want);
    for (int ui = 0; g && ui <= 1; ui++) {
        char *json = NULL;
        CHECK_EQ_INT(sd_graph_export_comfy(g, ui, &json), SD_OK);
        CHECK(json && strstr(json, ui ? "\"title\": \"Positive \\\"cat\\\", prompt\""
                                      : "\"title\": \"Negative\\\\prompt\""));
        char *dir = test_path(test_scratch_dir(), "titles");
        mkdir(dir, 0777);
        char *p = test_path(dir, "ui_titles.json");
        FILE *f = fopen(p, "wb");
        if (f) {
            fputs(json ? json : "", f);
            fclose(f);
        }
        sd_graph *g2 = NULL;
        CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g2), SD_OK);
        desc = g2 ? sd_graph_meta(g2, "description") : NULL;
        if (ui) { /* the API format carries titles only, as ComfyUI's does */
            CHECK(desc != NULL);
            if (desc)
                CHECK_STR_EQ(desc, want);
        }
        sd_graph_free(g2);
        free(p);
        free(dir);
        free(json);
    }
    sd_graph_free(g);
}

/* A1111's "parameters" text: prompts from the text encoders upstream of the one sampler,
 * A1111's sampler names, the size of the empty latent, the model's name and recorded hash. */
static void test_a1111_parameters(void)
{
    char *path = data_path("ui_subgraph.json");
    sd_graph *g = NULL;
    bool nomem = true;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_set_param(g, "scheduler", "karras"), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "sampler", "dpmpp_2m"), SD_OK);
        char *text = sd_a1111_parameters(g, "0123456789", &nomem);
        char *want = sd_strfmt("a cat sitting on a mat, photograph\nNegative prompt: blurry, low quality\n"
                               "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 8, Seed: 42, "
                               "Size: 640x512, Model hash: 0123456789, Model: v1-5-pruned-emaonly, "
                               "Version: sdflow %s",
                               sd_version());
        CHECK(text && !nomem);
        if (text)
            CHECK_STR_EQ(text, want);
        free(want);
        free(text);
        /* Two samplers: no parameters. */
        CHECK_EQ_INT(sd_graph_add_node(g, "KSampler", "second", NULL), SD_OK);
        CHECK(sd_a1111_parameters(g, "0123456789", &nomem) == NULL && !nomem);
    }
    sd_graph_free(g);
    free(path);
}

/* A UI workflow of more links than the hop bound (which applies per input) imports. */
static void test_ui_many_links(void)
{
    enum { N = 10050 };
    size_t cap = (size_t)N * 200, used = 0;
    char *text = malloc(cap);
    if (!text)
        return;
    used += (size_t)snprintf(text + used, cap - used,
                             "{\"nodes\": [{\"id\": 1, \"type\": \"EmptyImage\", \"widgets_values\": [8, 8, 1, 0]}");
    for (int i = 2; i <= N; i++)
        used += (size_t)snprintf(text + used, cap - used,
                                 ",\n {\"id\": %d, \"type\": \"%s\", \"inputs\": [{\"name\": \"%s\", \"type\": \"IMAGE\", "
                                 "\"link\": %d}]}",
                                 i, i == N ? "SaveImage" : "ImageInvert", i == N ? "images" : "image", i - 1);
    used += (size_t)snprintf(text + used, cap - used, "],\n \"links\": [");
    for (int i = 1; i < N; i++)
        used += (size_t)snprintf(text + used, cap - used, "%s[%d, %d, 0, %d, 0, \"IMAGE\"]", i > 1 ? ", " : "", i, i,
                                 i + 1);
    snprintf(text + used, cap - used, "]}");
    char *p = scratch_file("many.json", text);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_OK);
    CHECK(g && sd_graph_node_count(g) == N);
    sd_graph_free(g);
    free(p);
    free(text);
}

/* A node whose input cannot be resolved (a Reroute cycle) fails the import cleanly: nothing of the
 * half-made node is leaked (a fuzz finding: its title string was made and dropped after the error;
 * the sanitizer build's leak check runs this). */
static void test_ui_reroute_cycle(void)
{
    char *p = scratch_file("cycle.json",
                           "{\"nodes\": [{\"id\": 1, \"type\": \"Reroute\", \"inputs\": [{\"name\": \"\", "
                           "\"type\": \"*\", \"link\": 2}]},\n"
                           " {\"id\": 2, \"type\": \"Reroute\", \"inputs\": [{\"name\": \"\", \"type\": \"*\", "
                           "\"link\": 1}]},\n"
                           " {\"id\": 3, \"type\": \"SaveImage\", \"title\": \"out\", \"widgets_values\": [\"x\"], "
                           "\"inputs\": [{\"name\": \"images\", \"type\": \"IMAGE\", \"link\": 3}]}],\n"
                           " \"links\": [[1, 1, 0, 2, 0, \"*\"], [2, 2, 0, 1, 0, \"*\"], [3, 2, 0, 3, 0, \"IMAGE\"]]}");
    sd_graph *g = NULL;
    CHECK(sd_graph_import_comfy(ctx, p, &g) != SD_OK);
    CHECK(g == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "cycle");
    sd_graph_free(g);
    free(p);
}

/* An old-style group node (extra.groupNodes, type "workflow>NAME"; "workflow/NAME" before
 * frontend 1.2.63) is refused in one line naming the node and type, not as an unknown type. */
static void test_ui_group_node(void)
{
    static const char *const types[] = {"workflow>Upscale", "workflow/Upscale"};
    for (int i = 0; i < 2; i++) {
        char *json = sd_strfmt("{\"nodes\": [{\"id\": 4, \"type\": \"%s\", \"widgets_values\": []}], "
                               "\"links\": [], \"extra\": {\"groupNodes\": {\"Upscale\": {\"nodes\": []}}}}",
                               types[i]);
        char *p = scratch_file("groupnode.json", json);
        char *want = sd_strfmt("%s: node 4 is an old-style group node ('%s'), which sdflow does not expand; in "
                               "ComfyUI convert it to nodes or a subgraph and save again",
                               p, types[i]);
        sd_graph *g = NULL;
        CHECK_EQ_INT(sd_graph_import_comfy(ctx, p, &g), SD_ERR_INVALID);
        CHECK(g == NULL);
        CHECK_STR_EQ(sd_context_errmsg(ctx), want);
        free(want);
        free(p);
        free(json);
    }
}

/* A PrimitiveNode driving a seed: its value and its control_after_generate govern, not the
 * sampler's own (stale) widgets, as ComfyUI's frontend applies them before it queues. */
static void test_ui_primitive_seed(void)
{
    char *p = scratch_file("primseed.json",
                           "{\"nodes\": [{\"id\": 1, \"type\": \"PrimitiveNode\", \"outputs\": [{\"name\": \"INT\", "
                           "\"type\": \"INT\", \"widget\": {\"name\": \"seed\"}, \"links\": [1]}], "
                           "\"widgets_values\": [77, \"increment\"]},\n"
                           " {\"id\": 2, \"type\": \"KSampler\", \"inputs\": [{\"name\": \"seed\", \"type\": \"INT\", "
                           "\"widget\": {\"name\": \"seed\"}, \"link\": 1}], "
                           "\"widgets_values\": [5, \"randomize\", 20, 8, \"euler\", \"normal\", 1]}],\n"
                           " \"links\": [[1, 1, 0, 2, 0, \"INT\"]]}");
    char *xml = import_xml(p);
    CHECK(xml && strstr(xml, "<param name=\"seed\" type=\"INT\" default=\"77\">") &&
          strstr(xml, "<input name=\"control_after_generate\">increment</input>"));
    free(xml);
    free(p);
}

/* SamplerCustom's and RandomNoise's widgets have control_after_generate after noise_seed, as in
 * ComfyUI: the value after it lands in cfg, not in the control. (The one sampler's noise_seed
 * and cfg become the parameters seed and cfg.) */
static void test_ui_custom_sampler_widgets(void)
{
    char *p = scratch_file("custom.json",
                           "{\"nodes\": [{\"id\": 1, \"type\": \"SamplerCustom\", "
                           "\"widgets_values\": [true, 123, \"randomize\", 6.5]},\n"
                           " {\"id\": 2, \"type\": \"RandomNoise\", \"widgets_values\": [9, \"increment\"]}],\n"
                           " \"links\": []}");
    char *xml = import_xml(p);
    CHECK(xml && strstr(xml, "<param name=\"seed\" type=\"INT\" default=\"123\">") &&
          strstr(xml, "<input name=\"control_after_generate\">randomize</input>") &&
          strstr(xml, "<param name=\"cfg\" type=\"FLOAT\" default=\"6.5\">") &&
          strstr(xml, "<input name=\"noise_seed\">9</input>") &&
          strstr(xml, "<input name=\"control_after_generate\">increment</input>"));
    free(xml);
    free(p);
}

/* Whether parameter name exists with default def and binds node's input. */
static bool bound_param(sd_graph *g, const char *name, const char *node, const char *input, const char *def)
{
    const sd_graph_param *p = sd_graph_find_param(g, name);
    sd_graph_node *n = sd_graph_find_node(g, node);
    const sd_graph_input *in = n ? sd_graph_node_input(n, input) : NULL;
    return p && !strcmp(p->def, def) && in && in->kind == SD_BIND_PARAM && !strcmp(in->param, name);
}

/* ComfyUI_examples' FLUX graphs get parameters too: a SamplerCustomAdvanced takes them from its
 * RandomNoise, KSamplerSelect, BasicScheduler and (through BasicGuider and FluxGuidance) text
 * encoder, width and height from the one EmptySD3LatentImage; a KSampler's prompt is found
 * through FluxGuidance and ControlNetApply. */
static void test_flux_params(void)
{
    static const char *const custom =
        "{\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"a fox\",\"clip\":[\"11\",0]}},"
        "\"8\":{\"class_type\":\"VAEDecode\",\"inputs\":{\"samples\":[\"13\",0],\"vae\":[\"10\",0]}},"
        "\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"filename_prefix\":\"x\",\"images\":[\"8\",0]}},"
        "\"10\":{\"class_type\":\"VAELoader\",\"inputs\":{\"vae_name\":\"ae.safetensors\"}},"
        "\"11\":{\"class_type\":\"DualCLIPLoader\",\"inputs\":{\"clip_name1\":\"t5.safetensors\","
        "\"clip_name2\":\"clip_l.safetensors\",\"type\":\"flux\"}},"
        "\"12\":{\"class_type\":\"UNETLoader\",\"inputs\":{\"unet_name\":\"f.safetensors\",\"weight_dtype\":\"default\"}},"
        "\"13\":{\"class_type\":\"SamplerCustomAdvanced\",\"inputs\":{\"noise\":[\"25\",0],\"guider\":[\"22\",0],"
        "\"sampler\":[\"16\",0],\"sigmas\":[\"17\",0],\"latent_image\":[\"27\",0]}},"
        "\"16\":{\"class_type\":\"KSamplerSelect\",\"inputs\":{\"sampler_name\":\"euler\"}},"
        "\"17\":{\"class_type\":\"BasicScheduler\",\"inputs\":{\"scheduler\":\"simple\",\"steps\":20,\"denoise\":1.0,"
        "\"model\":[\"12\",0]}},"
        "\"22\":{\"class_type\":\"BasicGuider\",\"inputs\":{\"model\":[\"12\",0],\"conditioning\":[\"26\",0]}},"
        "\"25\":{\"class_type\":\"RandomNoise\",\"inputs\":{\"noise_seed\":219670278747233}},"
        "\"26\":{\"class_type\":\"FluxGuidance\",\"inputs\":{\"guidance\":3.5,\"conditioning\":[\"6\",0]}},"
        "\"27\":{\"class_type\":\"EmptySD3LatentImage\",\"inputs\":{\"width\":1024,\"height\":768,\"batch_size\":1}}}";
    char *path = scratch_file("flux_custom.json", custom);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        CHECK(bound_param(g, "seed", "25", "noise_seed", "219670278747233"));
        CHECK(bound_param(g, "sampler", "16", "sampler_name", "euler"));
        CHECK(bound_param(g, "steps", "17", "steps", "20"));
        CHECK(bound_param(g, "scheduler", "17", "scheduler", "simple"));
        CHECK(bound_param(g, "prompt", "6", "text", "a fox"));
        CHECK(bound_param(g, "width", "27", "width", "1024"));
        CHECK(bound_param(g, "height", "27", "height", "768"));
        CHECK(!sd_graph_find_param(g, "negative") && !sd_graph_find_param(g, "cfg"));
    }
    sd_graph_free(g);
    free(path);
    static const char *const ksampler =
        "{\"3\":{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":5,\"steps\":20,\"cfg\":1.0,\"sampler_name\":\"euler\","
        "\"scheduler\":\"simple\",\"denoise\":1.0,\"model\":[\"4\",0],\"positive\":[\"35\",0],\"negative\":[\"7\",0],"
        "\"latent_image\":[\"5\",0]}},"
        "\"4\":{\"class_type\":\"CheckpointLoaderSimple\",\"inputs\":{\"ckpt_name\":\"m.safetensors\"}},"
        "\"5\":{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":512,\"height\":512,\"batch_size\":1}},"
        "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"a fox\",\"clip\":[\"4\",1]}},"
        "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"blurry\",\"clip\":[\"4\",1]}},"
        "\"8\":{\"class_type\":\"VAEDecode\",\"inputs\":{\"samples\":[\"3\",0],\"vae\":[\"4\",2]}},"
        "\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"filename_prefix\":\"x\",\"images\":[\"8\",0]}},"
        "\"10\":{\"class_type\":\"ControlNetLoader\",\"inputs\":{\"control_net_name\":\"c.safetensors\"}},"
        "\"11\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"in.png\"}},"
        "\"12\":{\"class_type\":\"ControlNetApply\",\"inputs\":{\"strength\":1.0,\"conditioning\":[\"6\",0],"
        "\"control_net\":[\"10\",0],\"image\":[\"11\",0]}},"
        "\"35\":{\"class_type\":\"FluxGuidance\",\"inputs\":{\"guidance\":3.5,\"conditioning\":[\"12\",0]}}}";
    path = scratch_file("through.json", ksampler);
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        CHECK(bound_param(g, "prompt", "6", "text", "a fox"));
        CHECK(bound_param(g, "negative", "7", "text", "blurry"));
    }
    sd_graph_free(g);
    free(path);
}

int main(void)
{
    if (sd_context_new(&ctx))
        return 2;
    RUN(test_import_primitives);
    RUN(test_unsupported_node);
    RUN(test_import_image_nodes);
    RUN(test_default_workflow);
    RUN(test_bad_files);
    RUN(test_unknown_input_kept);
    RUN(test_mutations);
    RUN(test_ui_format);
    RUN(test_png_chunks);
    RUN(test_ui_modes);
    RUN(test_ui_many_links);
    RUN(test_ui_reroute_cycle);
    RUN(test_ui_group_node);
    RUN(test_ui_primitive_seed);
    RUN(test_ui_custom_sampler_widgets);
    RUN(test_big_seed);
    RUN(test_seeds);
    RUN(test_round_trip);
    RUN(test_ui_titles_groups);
    RUN(test_a1111_parameters);
    RUN(test_flux_params);
    sd_context_free(ctx);
    return test_summary("test_comfy");
}
