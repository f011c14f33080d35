/* ComfyUI API-format import: workflows in ComfyUI's exact export format (tests/data/comfy). */
#include "test.h"
#include "core/graph.h"
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
    CHECK_EQ_INT(sd_graph_node_count(g), 5);
    CHECK_STR_EQ(sd_graph_node_id(g, 0), "5");
    CHECK_STR_EQ(sd_graph_node_id(g, 4), "13");
    const sd_graph_input *images = sd_graph_node_input(sd_graph_find_node(g, "11"), "images");
    CHECK(images && images->kind == SD_BIND_LINK && !strcmp(images->src_node, "10") &&
          !strcmp(images->src_output, "IMAGE"));
    /* The image file is checked by validation, for both loaders. */
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 2);
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
        const sd_graph_input *seed = n ? sd_graph_node_input(n, "seed") : NULL;
        CHECK(seed && seed->kind == SD_BIND_LITERAL && !strcmp(seed->text, "156680208700286"));
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
                 ": not a ComfyUI API workflow (expected a JSON object)");
    expect_error("ui.json", "{\"last_node_id\": 9, \"nodes\": [], \"links\": []}", SD_ERR_PARSE,
                 ": this is a ComfyUI UI workflow; export it with \"Save (API Format)\"");
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
                              "\"control_after_generate\": \"fixed\"}}}");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, path, &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        char *want = sd_strfmt("%s: node '1' input 'control_after_generate': unknown input of "
                               "PrimitiveInt (inputs: value)",
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
    sd_context_free(ctx);
    return test_summary("test_comfy");
}
