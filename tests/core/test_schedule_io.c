/* The scheduler with the image and latent nodes: partial re-execution across a node with two
 * inputs, file contents in keys, a STRING linked into an ENUM input, provenance for outputs. */
#include "test.h"
#include "core/graph.h"
#include "core/hash.h"
#include "core/png.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *new_ctx(const char *name)
{
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx))
        abort();
    char *dir = test_path(test_scratch_dir(), name);
    mkdir(dir, 0777);
    char *db = test_path(dir, "cache.db"), *in = test_path(dir, "in"), *out = test_path(dir, "out");
    mkdir(in, 0777);
    sd_context_set_cache_path(ctx, db);
    sd_context_set_dir(ctx, SD_DIR_INPUT, in);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, out);
    free(db);
    free(in);
    free(out);
    free(dir);
    return ctx;
}

/* Writes a w x h RGBA PNG named name into the context's input directory; returns its path. */
static char *write_png(sd_context *ctx, const char *name, uint32_t w, uint32_t h, float shade)
{
    sd_image img = {.width = w, .height = h, .channels = 4};
    img.data = malloc((size_t)w * h * 4 * sizeof(float));
    for (size_t i = 0; i < (size_t)w * h * 4; i++)
        img.data[i] = (i % 4 == 3) ? 1.0f : shade * (float)(i % 7) / 7.0f;
    char *path = test_path(sd_context_dir(ctx, SD_DIR_INPUT), name);
    CHECK_EQ_INT(sd_png_write(ctx, path, &img, NULL, 0, 1), SD_OK);
    free(img.data);
    return path;
}

static sd_status run(sd_graph *g, const char *wanted, char *oc, sd_result **keep)
{
    const char *const list[] = {wanted};
    sd_run_options o = {.outputs = wanted ? list : NULL, .n_outputs = wanted ? 1 : 0};
    sd_result *r = NULL;
    sd_status st = sd_graph_run(g, &o, &r);
    size_t n = sd_result_node_count(r), k = 0;
    for (size_t i = 0; i < n; i++) {
        sd_node_stat s;
        sd_result_node(r, i, &s);
        oc[k++] = s.outcome == SD_NODE_RAN ? 'R' : s.outcome == SD_NODE_CACHED ? 'C' : '-';
    }
    oc[k] = '\0';
    if (keep)
        *keep = r;
    else
        sd_result_free(r);
    return st;
}

/* w and h feed one EmptyLatentImage: changing h re-runs h and the latent; w, upstream of the
 * latent but not of the change, loads from the cache. */
static void test_partial_reexecution_two_inputs(void)
{
    sd_context *ctx = new_ctx("latent");
    sd_graph *g;
    sd_graph_new(ctx, &g);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "w", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "w", "value", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "h", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "h", "value", "32"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyLatentImage", "lat", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "w", "INT", "lat", "width"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "h", "INT", "lat", "height"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "lat", "batch_size", "2"), SD_OK);
    char oc[16];
    sd_result *r;
    CHECK_EQ_INT(run(g, "lat", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "RRR");
    CHECK_EQ_INT(sd_graph_set_input(g, "h", "value", "48"), SD_OK);
    CHECK_EQ_INT(run(g, "lat", oc, &r), SD_OK);
    CHECK_STR_EQ(oc, "CRR");
    sd_output_info info;
    CHECK_EQ_INT(sd_result_output(r, "lat", "LATENT", &info), SD_OK);
    CHECK_STR_EQ(info.type, "LATENT");
    CHECK(info.ndim == 4 && info.shape[0] == 2 && info.shape[1] == 4 && info.shape[2] == 6 && info.shape[3] == 8);
    sd_result_free(r);
    CHECK_EQ_INT(run(g, "lat", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "--C");
    /* A literal on the latent itself: only the latent re-runs, fed by both cached inputs. */
    CHECK_EQ_INT(sd_graph_set_input(g, "lat", "batch_size", "1"), SD_OK);
    CHECK_EQ_INT(run(g, "lat", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "CCR");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* A file's content is part of the key: the same name with new pixels re-runs the loader. */
static void test_file_content_in_key(void)
{
    sd_context *ctx = new_ctx("filekey");
    free(write_png(ctx, "pic.png", 16, 8, 0.5f));
    sd_graph *g;
    sd_graph_new(ctx, &g);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "load", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "pic.png"), SD_OK);
    char oc[16];
    CHECK_EQ_INT(run(g, "load", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "R");
    CHECK_EQ_INT(run(g, "load", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "C");
    free(write_png(ctx, "pic.png", 16, 8, 0.25f));
    CHECK_EQ_INT(run(g, "load", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "R");
    /* A missing file stops the run before anything runs; the diagnostic names node and file. */
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "absent.png"), SD_OK);
    CHECK_EQ_INT(run(g, "load", oc, NULL), SD_ERR_INVALID);
    CHECK_STR_EQ(oc, "");
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "node 'load'");
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "absent.png");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* A node that fails stores nothing; the message names it; its consumers do not run. */
static void test_failed_node(void)
{
    sd_context *ctx = new_ctx("fail");
    char *bad = test_path(sd_context_dir(ctx, SD_DIR_INPUT), "broken.png");
    FILE *f = fopen(bad, "wb");
    fputs("\x89PNG\r\n\x1a\n but then nothing", f);
    fclose(f);
    sd_graph *g;
    sd_graph_new(ctx, &g);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "load", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "broken.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "save", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "save", "images"), SD_OK);
    char oc[16];
    sd_result *r;
    CHECK_EQ_INT(run(g, NULL, oc, &r), SD_ERR_PARSE);
    CHECK_STR_EQ(oc, "R-");
    CHECK(strncmp(sd_context_errmsg(ctx), "node 'load' (LoadImage): ", 25) == 0);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "broken.png");
    CHECK_EQ_INT(sd_result_file_count(r), 0);
    sd_result_free(r);
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK(!test_file_exists(sd_context_dir(ctx, SD_DIR_OUTPUT)));
    free(bad);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* A STRING linked into an ENUM input is checked against the choices when the node runs. */
static void test_string_into_enum(void)
{
    sd_context *ctx = new_ctx("enum");
    free(write_png(ctx, "m.png", 8, 8, 1.0f));
    sd_graph *g;
    sd_graph_new(ctx, &g);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveString", "ch", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ch", "value", "green"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImageMask", "mask", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "mask", "image", "m.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ch", "STRING", "mask", "channel"), SD_OK);
    char oc[16];
    CHECK_EQ_INT(run(g, "mask", oc, NULL), SD_OK);
    CHECK_STR_EQ(oc, "RR");
    CHECK_EQ_INT(sd_graph_set_input(g, "ch", "value", "purple"), SD_OK);
    CHECK_EQ_INT(run(g, "mask", oc, NULL), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "node 'mask' (LoadImageMask): input 'channel': 'purple' is not one of: alpha red green blue");
    CHECK_STR_EQ(oc, "R-");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* SaveImage always runs, fed from the cache, never stored; its PNG carries the provenance of
 * the files the keys were computed from, by name, also when they came from the cache. */
static void test_output_node_provenance(void)
{
    sd_context *ctx = new_ctx("prov");
    char *pic = write_png(ctx, "p.png", 8, 8, 0.75f);
    sd_graph *g;
    sd_graph_new(ctx, &g);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "load", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "p.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "save", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "save", "images"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "save", "filename_prefix", "prov"), SD_OK);
    sd_key content;
    CHECK_EQ_INT(sd_hash_file(ctx, pic, &content), SD_OK);
    char hex[65];
    sd_key_hex(&content, hex);
    for (int round = 0; round < 2; round++) {
        char oc[16];
        sd_result *r;
        CHECK_EQ_INT(run(g, NULL, oc, &r), SD_OK);
        CHECK_STR_EQ(oc, round == 0 ? "RR" : "CR");
        CHECK_EQ_INT(sd_result_file_count(r), 1);
        const char *png = sd_result_file(r, 0);
        char *prov = NULL, *xml = NULL;
        CHECK_EQ_INT(sd_png_read_text(ctx, png, NULL, SD_PNG_KEY_PROVENANCE, &prov), SD_OK);
        CHECK_EQ_INT(sd_png_read_text(ctx, png, NULL, SD_PNG_KEY_WORKFLOW, &xml), SD_OK);
        json_t *j = prov ? json_loads(prov, 0, NULL) : NULL;
        CHECK(j != NULL);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "engine")), sd_version());
        json_t *files = json_object_get(j, "files");
        CHECK_EQ_INT(json_object_size(files), 1);
        CHECK_STR_EQ(json_string_value(json_object_get(files, "input/p.png")), hex);
        CHECK_STR_CONTAINS(xml, "LoadImage");
        json_decref(j);
        free(prov);
        free(xml);
        sd_result_free(r);
    }
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 1); /* LoadImage only */
    free(pic);
    sd_graph_free(g);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_partial_reexecution_two_inputs);
    RUN(test_file_content_in_key);
    RUN(test_failed_node);
    RUN(test_string_into_enum);
    RUN(test_output_node_provenance);
    return test_summary("test_schedule_io");
}
