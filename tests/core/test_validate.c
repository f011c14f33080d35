/* sd_graph_validate: every problem reported at once with file:line, node and input; file
 * resolution (sd_resolve_file). Node types beyond the primitives are test descriptors put on
 * the loaded nodes, so the checks stay generic over descriptors. */
#include "test.h"
#include "core/files.h"
#include "core/graph.h"
#include "core/node.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static sd_context *ctx;
static char *models1, *models2;

static const char *const modes[] = {"fast", "slow", NULL};
static const char *const samplers[] = {"euler", "ddim", NULL};

static const sd_input_desc loader_in[] = {
    {.name = "ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "checkpoints",
     .doc = "checkpoint file"},
    {.name = "mode", .type = SD_TYPE_ENUM, .def = "fast", .choices = modes, .doc = "mode"},
    {.name = "strength", .type = SD_TYPE_FLOAT, .flags = SD_IN_RANGED, .def = "1", .min = 0,
     .max = 2, .doc = "strength"},
};
static const sd_output_desc loader_out[] = {
    {.name = "MODEL", .type = SD_TYPE_MODEL, .doc = "model"},
    {.name = "IMAGE", .type = SD_TYPE_IMAGE, .doc = "image"},
};
static const sd_node_desc loader_desc = {
    .name = "TestLoader", .version = 1, .category = "test", .doc = "loads", .inputs = loader_in,
    .n_inputs = 3, .outputs = loader_out, .n_outputs = 2,
};

static const sd_input_desc user_in[] = {
    {.name = "model", .type = SD_TYPE_MODEL, .doc = "required link"},
    {.name = "image", .type = SD_TYPE_IMAGE, .flags = SD_IN_OPTIONAL, .doc = "optional link"},
    {.name = "steps", .type = SD_TYPE_INT, .flags = SD_IN_RANGED, .def = "20", .min = 1, .max = 100,
     .doc = "steps"},
    {.name = "sampler", .type = SD_TYPE_ENUM, .def = "euler", .choices = samplers, .doc = "sampler"},
};
static const sd_output_desc user_out[] = {{.name = "LATENT", .type = SD_TYPE_LATENT, .doc = "latent"}};
static const sd_node_desc user_desc = {
    .name = "TestUser", .version = 1, .category = "test", .doc = "uses", .inputs = user_in,
    .n_inputs = 4, .outputs = user_out, .n_outputs = 1,
};

/* A node type whose check hook reports what the node-check API hands it (core/node.h). */
static const sd_input_desc hooked_in[] = {
    {.name = "low", .type = SD_TYPE_INT, .flags = SD_IN_RANGED, .def = "1", .min = 0, .max = 100, .doc = "low"},
    {.name = "high", .type = SD_TYPE_INT, .flags = SD_IN_RANGED, .def = "5", .min = 0, .max = 100, .doc = "high"},
    {.name = "scale", .type = SD_TYPE_FLOAT, .flags = SD_IN_OPTIONAL, .doc = "scale"},
};
static const sd_output_desc hooked_out[] = {{.name = "INT", .type = SD_TYPE_INT, .doc = "value"}};

static void hooked_check(sd_node_check *c)
{
    int64_t low, high;
    double scale;
    if (sd_check_int(c, "low", &low) && sd_check_int(c, "high", &high) && low > high)
        sd_check_problem(c, "low", "%lld is above high %lld", (long long)low, (long long)high);
    if (sd_check_float(c, "scale", &scale))
        sd_check_problem(c, NULL, "scale %g", scale);
}

static const sd_node_desc hooked_desc = {
    .name = "TestHooked", .version = 1, .category = "test", .doc = "checks", .inputs = hooked_in,
    .n_inputs = 3, .outputs = hooked_out, .n_outputs = 1, .check = hooked_check,
};

/* Loads XML from memory and gives Test* nodes their test descriptors. */
static sd_graph *load(const char *xml)
{
    sd_graph *g = NULL;
    sd_status st = sd_graph_load_xml_memory(ctx, xml, strlen(xml), "t.xml", &g);
    CHECK_EQ_INT(st, SD_OK);
    for (size_t i = 0; g && i < g->n_nodes; i++) {
        if (!strcmp(g->nodes[i].type, "TestLoader"))
            g->nodes[i].desc = &loader_desc;
        else if (!strcmp(g->nodes[i].type, "TestUser"))
            g->nodes[i].desc = &user_desc;
        else if (!strcmp(g->nodes[i].type, "TestHooked"))
            g->nodes[i].desc = &hooked_desc;
    }
    return g;
}

static void check_diags(const char *const *want, size_t n)
{
    CHECK_EQ_INT(sd_context_diag_count(ctx), n);
    for (size_t i = 0; i < n && i < sd_context_diag_count(ctx); i++)
        CHECK_STR_EQ(sd_context_diag(ctx, i), want[i]);
}

static void touch(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("x", f);
        fclose(f);
    }
}

static void setup_models(void)
{
    models1 = test_path(test_scratch_dir(), "m1");
    models2 = test_path(test_scratch_dir(), "m2");
    char *p[] = {test_path(models1, "checkpoints"), test_path(models2, "checkpoints"),
                 test_path(models2, "checkpoints/sub"), test_path(models2, "checkpoints/a.safetensors"),
                 test_path(models2, "checkpoints/sub/b.ckpt"), test_path(models1, "checkpoints/dir.ckpt"),
                 test_path(test_scratch_dir(), "input")};
    mkdir(models1, 0755);
    mkdir(models2, 0755);
    mkdir(p[0], 0755);
    mkdir(p[1], 0755);
    mkdir(p[2], 0755);
    touch(p[3]);
    touch(p[4]);
    mkdir(p[5], 0755);
    mkdir(p[6], 0755);
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models1);
    sd_context_add_models_dir(ctx, models2);
}

static const char many_xml[] =
    "<workflow version=\"1\">\n"                                       /* 1 */
    "  <param name=\"mode\" type=\"ENUM\" default=\"medium\">mode</param>\n"
    "  <param name=\"steps\" type=\"INT\" default=\"30\"/>\n"
    "  <node id=\"load\" type=\"TestLoader\">\n"                        /* 4 */
    "    <input name=\"ckpt_name\">missing.safetensors</input>\n"
    "    <input name=\"mode\" param=\"mode\"/>\n"
    "    <input name=\"strength\">2.5</input>\n"
    "  </node>\n"
    "  <node id=\"use\" type=\"TestUser\">\n"                           /* 9 */
    "    <input name=\"image\" from=\"load\" output=\"MODEL\"/>\n"
    "    <input name=\"steps\">0</input>\n"
    "    <input name=\"sampler\">dpm</input>\n"
    "  </node>\n"
    "  <node id=\"use2\" type=\"TestUser\">\n"                          /* 14 */
    "    <input name=\"model\" from=\"load\" output=\"MODEL\"/>\n"
    "    <input name=\"steps\" param=\"steps\"/>\n"
    "    <input name=\"sampler\" param=\"mode\"/>\n"
    "  </node>\n"
    "  <node id=\"lit\" type=\"TestUser\">\n"                           /* 19 */
    "    <input name=\"model\">model.bin</input>\n"
    "    <input name=\"steps\" param=\"nosuch\"/>\n"
    "  </node>\n"
    "  <node id=\"v\" type=\"PrimitiveInt\" version=\"7\"/>\n"          /* 23 */
    "  <node id=\"use2\" type=\"Primitiveint\"/>\n"                     /* 24 */
    "</workflow>\n";

static void test_all_problems_at_once(void)
{
    sd_graph *g = load(many_xml);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "13 problems in t.xml");
    char *missing = sd_strfmt("t.xml:5: node 'load' input 'ckpt_name': checkpoints file "
                              "'missing.safetensors' not found (searched: %s/checkpoints, %s/checkpoints)",
                              models1, models2);
    const char *want[] = {
        missing,
        "t.xml:6: node 'load' input 'mode': parameter 'mode': 'medium' is not one of: fast slow",
        "t.xml:7: node 'load' input 'strength': 2.5 is out of range [0, 2]",
        "t.xml:9: node 'use' input 'model': missing required MODEL input of TestUser",
        "t.xml:10: node 'use' input 'image': type mismatch: output 'MODEL' of node 'load' is MODEL, "
        "the input is IMAGE",
        "t.xml:11: node 'use' input 'steps': 0 is out of range [1, 100]",
        "t.xml:12: node 'use' input 'sampler': 'dpm' is not one of: euler ddim",
        "t.xml:17: node 'use2' input 'sampler': parameter 'mode': 'medium' is not one of: euler ddim",
        "t.xml:20: node 'lit' input 'model': a MODEL input takes a link, not a literal value",
        "t.xml:21: node 'lit' input 'steps': parameter 'nosuch' is not declared",
        "t.xml:23: node 'v': PrimitiveInt version 7 is newer than this sdflow's (version 1)",
        "t.xml:24: node 'use2': duplicate node id (first at line 14)",
        "t.xml:24: node 'use2': unknown node type 'Primitiveint' (did you mean 'PrimitiveInt'?)",
    };
    check_diags(want, sizeof want / sizeof want[0]);
    free(missing);
    /* Validating again starts from an empty list. */
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 13);
    sd_graph_free(g);
}

static const char primitives_xml[] =
    "<workflow version=\"1\">\n"
    "  <param name=\"n\" type=\"INT\" default=\"x\"/>\n"
    "  <param name=\"n\" type=\"FLOAT\" default=\"1.5\"/>\n"
    "  <param name=\"t\" type=\"TENSOR\"/>\n"
    "  <param name=\"k\" type=\"INT\"/>\n"
    "  <node id=\"f\" type=\"PrimitiveFloat\"><input name=\"value\">abc</input></node>\n"
    "  <node id=\"i\" type=\"PrimitiveInt\">\n"
    "    <input name=\"value\" from=\"f\" output=\"FLOAT\"/>\n"
    "    <input name=\"vlaue\">1</input>\n"
    "  </node>\n"
    "  <node id=\"d\" type=\"PrimitiveInt\"><input name=\"value\" from=\"nope\" output=\"INT\"/></node>\n"
    "  <node id=\"o\" type=\"PrimitiveInt\"><input name=\"value\" from=\"f\" output=\"INT\"/></node>\n"
    "  <node id=\"b\" type=\"PrimitiveBoolean\"><input name=\"value\">maybe</input></node>\n"
    "  <node id=\"s\" type=\"PrimitiveString\"><input name=\"value\" param=\"k\"/></node>\n"
    "</workflow>\n";

static void test_primitive_problems(void)
{
    sd_graph *g = load(primitives_xml);
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "11 problems in t.xml");
    const char *want[] = {
        "t.xml:2: parameter 'n': default: 'x' is not an integer",
        "t.xml:3: parameter 'n': declared twice (first at line 2)",
        "t.xml:4: parameter 't': unknown type 'TENSOR' (INT, FLOAT, STRING, BOOLEAN or ENUM)",
        "t.xml:5: parameter 'k': no default value (give one, or --set k=VALUE)",
        "t.xml:6: node 'f' input 'value': 'abc' is not a number",
        "t.xml:8: node 'i' input 'value': type mismatch: output 'FLOAT' of node 'f' is FLOAT, the input is INT",
        "t.xml:9: node 'i' input 'vlaue': unknown input of PrimitiveInt (inputs: value)",
        "t.xml:11: node 'd' input 'value': link from unknown node 'nope'",
        "t.xml:12: node 'o' input 'value': node 'f' (PrimitiveFloat) has no output 'INT' (outputs: FLOAT)",
        "t.xml:13: node 'b' input 'value': 'maybe' is not a boolean (true or false)",
        "t.xml:14: node 's' input 'value': parameter 'k' is INT, the input is STRING",
    };
    check_diags(want, sizeof want / sizeof want[0]);
    /* An override gives 'k' its value. */
    CHECK_EQ_INT(sd_graph_set_param(g, "k", "4"), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 10);
    CHECK_STR_EQ(sd_context_diag(ctx, 3), "t.xml:6: node 'f' input 'value': 'abc' is not a number");
    sd_graph_free(g);
}

/* A link from a node without outputs (SaveImage): its NULL outputs array is never indexed
 * (found by fuzz_xml; UBSan: "applying zero offset to null pointer"). */
static void test_link_from_output_node(void)
{
    sd_graph *g = load("<workflow version=\"1\">\n"
                       "  <node id=\"s\" type=\"SaveImage\"/>\n"
                       "  <node id=\"p\" type=\"PreviewImage\">\n"
                       "    <input name=\"images\" from=\"s\" output=\"VAE\"/>\n"
                       "  </node>\n"
                       "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    bool found = false;
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++)
        found |= strcmp(sd_context_diag(ctx, i), "t.xml:4: node 'p' input 'images': node 's' (SaveImage) "
                                                 "has no output 'VAE' (outputs: none)") == 0;
    CHECK_MSG(found, "no 'has no output' diagnostic; first: %s", sd_context_diag(ctx, 0));
    sd_graph_free(g);
}

static void test_cycles(void)
{
    sd_graph *g = load("<workflow version=\"1\">\n"
                       "<node id=\"a\" type=\"PrimitiveInt\"><input name=\"value\" from=\"c\" output=\"INT\"/></node>\n"
                       "<node id=\"b\" type=\"PrimitiveInt\"><input name=\"value\" from=\"a\" output=\"INT\"/></node>\n"
                       "<node id=\"c\" type=\"PrimitiveInt\"><input name=\"value\" from=\"b\" output=\"INT\"/></node>\n"
                       "<node id=\"t\" type=\"PrimitiveInt\"><input name=\"value\" from=\"c\" output=\"INT\"/></node>\n"
                       "<node id=\"s\" type=\"PrimitiveInt\"><input name=\"value\" from=\"s\" output=\"INT\"/></node>\n"
                       "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "2 problems in t.xml");
    const char *want[] = {
        "t.xml:2: cycle: 'a' -> 'b' -> 'c' -> 'a'",
        "t.xml:6: cycle: 's' -> 's'",
    };
    check_diags(want, 2);
    sd_graph_free(g);
    /* Two links from one node into the same loop close one cycle, reported once; a parameter
     * without a value is reported once, not again at the input it feeds. */
    g = load("<workflow version=\"1\">\n"
             "<param name=\"w\" type=\"INT\">width</param>\n"
             "<node id=\"a\" type=\"ImageBatch\"><input name=\"image1\" from=\"b\" output=\"IMAGE\"/>"
             "<input name=\"image2\" from=\"b\" output=\"IMAGE\"/></node>\n"
             "<node id=\"b\" type=\"ImageInvert\"><input name=\"image\" from=\"a\" output=\"IMAGE\"/></node>\n"
             "<node id=\"l\" type=\"EmptyLatentImage\"><input name=\"width\" param=\"w\"/></node>\n"
             "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    const char *want2[] = {
        "t.xml:2: parameter 'w': no default value (give one, or --set w=VALUE)",
        "t.xml:3: cycle: 'a' -> 'b' -> 'a'",
    };
    check_diags(want2, 2);
    sd_graph_free(g);
}

/* A chain of 100000 nodes validates quickly and without deep recursion. (Built with the raw
 * setters: the checked builder looks ids up linearly.) */
static void test_long_chain(void)
{
    sd_graph *g;
    sd_graph_node *n = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    char id[32], prev[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof id, "n%d", i);
        CHECK_EQ_INT(sd_graph_add_node_raw(g, "PrimitiveInt", id, 0, 0, &n), SD_OK);
        if (i)
            CHECK_EQ_INT(sd_graph_bind_link(g, n, "value", prev, "INT", 0), SD_OK);
        memcpy(prev, id, sizeof id);
    }
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_link(g, &g->nodes[0], "value", prev, "INT", 0), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "<api>: cycle: 'n0' -> 'n1' -> 'n2' -> ");
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "-> ... (100000 nodes)");
    sd_graph_free(g);
}

static void test_valid_and_api_graphs(void)
{
    sd_graph *g;
    sd_graph_node *n;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "x", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 0);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "");
    n = sd_graph_find_node(g, "x");
    CHECK_EQ_INT(sd_graph_bind_param_raw(g, n, "value", "zz", 0), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "1 problem in <api>");
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "<api>: node 'x' input 'value': parameter 'zz' is not declared");
    sd_graph_free(g);

    /* Files that resolve, a parameter feeding an ENUM, required inputs linked. */
    g = load("<workflow version=\"1\">\n"
             "  <param name=\"m\" type=\"ENUM\" default=\"slow\"/>\n"
             "  <param name=\"ckpt\" type=\"STRING\" default=\"sub/b.ckpt\"/>\n"
             "  <node id=\"load\" type=\"TestLoader\">\n"
             "    <input name=\"ckpt_name\" param=\"ckpt\"/>\n"
             "    <input name=\"mode\" param=\"m\"/>\n"
             "  </node>\n"
             "  <node id=\"use\" type=\"TestUser\">\n"
             "    <input name=\"model\" from=\"load\" output=\"MODEL\"/>\n"
             "    <input name=\"image\" from=\"load\" output=\"IMAGE\"/>\n"
             "  </node>\n"
             "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 0);
    CHECK_EQ_INT(sd_graph_set_param(g, "ckpt", "../a.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "m", "quick"), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    const char *want[] = {
        "t.xml:5: node 'load' input 'ckpt_name': parameter 'ckpt': file name '../a.safetensors' must "
        "not contain '..'",
        "t.xml:6: node 'load' input 'mode': parameter 'm': 'quick' is not one of: fast slow",
    };
    check_diags(want, 2);
    sd_graph_free(g);
}

/* The check hook sees parsed literal values (own, parameter, default; not links, not unset
 * optional inputs) and reports at the input's line, naming the parameter a value came from. */
static void test_check_hook(void)
{
    sd_graph *g = load("<workflow version=\"1\">\n"
                       "  <param name=\"lo\" type=\"INT\" default=\"9\"/>\n"
                       "  <node id=\"a\" type=\"TestHooked\">\n" /* 3 */
                       "    <input name=\"low\" param=\"lo\"/>\n"
                       "    <input name=\"scale\">0.5</input>\n"
                       "  </node>\n"
                       "  <node id=\"b\" type=\"TestHooked\">\n" /* 7 */
                       "    <input name=\"low\">7</input>\n"
                       "    <input name=\"high\" from=\"a\" output=\"INT\"/>\n"
                       "  </node>\n"
                       "  <node id=\"c\" type=\"TestHooked\"><input name=\"low\">6</input></node>\n"
                       "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    const char *want[] = {
        "t.xml:3: node 'a': scale 0.5",
        "t.xml:4: node 'a' input 'low': parameter 'lo': 9 is above high 5",
        "t.xml:11: node 'c' input 'low': 6 is above high 5",
    };
    check_diags(want, sizeof want / sizeof want[0]);
    CHECK_EQ_INT(sd_graph_set_param(g, "lo", "5"), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 2);
    sd_graph_free(g);
}

/* Text that XML cannot carry (here a control byte in a --set value or an API literal) would make
 * the run fail when SaveImage writes the workflow into its PNG: refused by validation. */
static void test_unwritable_text(void)
{
    sd_graph *g = load("<workflow version=\"1\">\n"
                       "  <param name=\"p\" type=\"STRING\" default=\"ok\"/>\n"
                       "  <node id=\"s\" type=\"PrimitiveString\"><input name=\"value\" param=\"p\"/></node>\n"
                       "  <node id=\"t\" type=\"PrimitiveString\"><input name=\"value\">fine</input></node>\n"
                       "</workflow>\n");
    if (!g)
        return;
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "p", "a\001b"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "t", "value", "bad \xff byte"), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    const char *want[] = {
        "t.xml: node 't' input 'value': text is not valid UTF-8 (byte 0xFF at offset 4), so the workflow could "
        "not be saved or written into a PNG",
        "t.xml:2: parameter 'p': text contains U+0001, which XML cannot carry, so the workflow could not be "
        "saved or written into a PNG",
    };
    check_diags(want, 2);
    sd_graph_free(g);
}

static void test_resolve_file(void)
{
    char *path = NULL;
    char *m1 = realpath(models1, NULL), *m2 = realpath(models2, NULL);
    char *want = sd_strfmt("%s/checkpoints/a.safetensors", m2);
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "a.safetensors", &path), SD_OK);
    CHECK_STR_EQ(path, want);
    free(path);
    free(want);

    /* The first directory that has it wins. */
    char *first = test_path(models1, "checkpoints/a.safetensors");
    touch(first);
    want = sd_strfmt("%s/checkpoints/a.safetensors", m1);
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "a.safetensors", &path), SD_OK);
    CHECK_STR_EQ(path, want);
    free(path);
    free(want);
    remove(first);
    free(first);

    want = sd_strfmt("%s/checkpoints/sub/b.ckpt", m2);
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "sub/b.ckpt", &path), SD_OK);
    CHECK_STR_EQ(path, want);
    free(path);
    /* An absolute name is refused unless the context allows it; then it is used as is. */
    CHECK_EQ_INT(sd_resolve_file(ctx, "vae", want, &path), SD_ERR_INVALID);
    CHECK(path == NULL);
    char *msg = sd_strfmt("absolute path '%s' is not allowed (use --allow-absolute-paths)", want);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    free(msg);
    sd_context_set_allow_absolute_paths(ctx, true);
    CHECK_EQ_INT(sd_resolve_file(ctx, "vae", want, &path), SD_OK);
    CHECK_STR_EQ(path, want);
    free(path);
    free(want);
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "/nonexistent/x.ckpt", &path), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "file '/nonexistent/x.ckpt' not found");
    sd_context_set_allow_absolute_paths(ctx, false);

    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "sub/../a.safetensors", &path), SD_ERR_INVALID);
    CHECK(path == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "file name 'sub/../a.safetensors' must not contain '..'");
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "", &path), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "empty file name");
    /* A directory is not a model file. */
    want = sd_strfmt("checkpoints file 'dir.ckpt' not found (searched: %s/checkpoints, %s/checkpoints)",
                     models1, models2);
    CHECK_EQ_INT(sd_resolve_file(ctx, "checkpoints", "dir.ckpt", &path), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    want = sd_strfmt("loras file 'x.safetensors' not found (searched: %s/loras, %s/loras)", models1, models2);
    CHECK_EQ_INT(sd_resolve_file(ctx, "loras", "x.safetensors", &path), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);

    /* Image names are looked up in the input directory. */
    char *input = test_path(test_scratch_dir(), "input");
    char *img = test_path(input, "cat.png");
    touch(img);
    CHECK_EQ_INT(sd_context_set_dir(ctx, SD_DIR_INPUT, input), SD_OK);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "cat.png", &path), SD_OK);
    char *real_img = realpath(img, NULL);
    CHECK_STR_EQ(path, real_img);
    free(path);
    want = sd_strfmt("input file 'dog.png' not found (searched: %s)", input);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "dog.png", &path), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);

    /* A symlink in the input directory must not lead out of it (to a file or through a
     * folder); one that stays inside is followed. A FIFO is not an input file. */
    char *outside = test_path(test_scratch_dir(), "outside.png");
    touch(outside);
    char *link = test_path(input, "out.png"), *dirlink = test_path(input, "up");
    CHECK(symlink(outside, link) == 0 && symlink(test_scratch_dir(), dirlink) == 0);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "out.png", &path), SD_ERR_INVALID);
    CHECK(path == NULL);
    want = sd_strfmt("%s leads outside %s (to %s)", link, input, outside);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "up/outside.png", &path), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "leads outside");
    char *inner = test_path(input, "inner.png");
    CHECK(symlink("cat.png", inner) == 0);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "inner.png", &path), SD_OK);
    CHECK_STR_EQ(path, real_img);
    free(path);
    char *fifo = test_path(input, "fifo.png");
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_EQ_INT(sd_resolve_file(ctx, "input", "fifo.png", &path), SD_ERR_NOT_FOUND);
    free(fifo);
    free(inner);
    free(link);
    free(dirlink);
    free(outside);

    sd_context *bare;
    CHECK_EQ_INT(sd_context_new(&bare), SD_OK);
    sd_context_clear_models_dirs(bare);
    CHECK_EQ_INT(sd_resolve_file(bare, "vae", "v.safetensors", &path), SD_ERR_NOT_FOUND);
    CHECK_STR_EQ(sd_context_errmsg(bare), "vae file 'v.safetensors' not found: no model directory "
                                          "given (use --models-dir or SDFLOW_MODELS)");
    sd_context_free(bare);
    free(real_img);
    free(img);
    free(input);
    free(m1);
    free(m2);
}

int main(void)
{
    if (sd_context_new(&ctx))
        return 2;
    setup_models();
    RUN(test_all_problems_at_once);
    RUN(test_primitive_problems);
    RUN(test_link_from_output_node);
    RUN(test_cycles);
    RUN(test_long_chain);
    RUN(test_valid_and_api_graphs);
    RUN(test_check_hook);
    RUN(test_unwritable_text);
    RUN(test_resolve_file);
    sd_context_free(ctx);
    free(models1);
    free(models2);
    return test_summary("test_validate");
}
