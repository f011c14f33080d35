/* Provenance and replay end to end through the public API: LoadImage -> SaveImage, then
 * sd_replay (identical, changed or missing input, tampered pixels, no workflow, crafted
 * provenance that names files outside the directories or FIFOs, old PNGs that recorded absolute
 * paths, the cache, the private replay directory), and the image and latent nodes run by the
 * scheduler. */
#include "test.h"
#include "core/fileio.h"
#include "core/hash.h"
#include "core/png.h"
#include "support/png_fixture.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static sd_context *ctx;
static char *input_dir, *output_dir, *temp_dir, *input_png;

/* A 6x4 RGBA input whose colours and alpha vary per pixel. */
static void write_input(int variant)
{
    sd_image img = {.width = 6, .height = 4, .channels = 4};
    img.data = malloc(6 * 4 * 4 * sizeof(float));
    for (int i = 0; i < 6 * 4 * 4; i++)
        img.data[i] = (float)((i * 29 + variant * 7) % 256) / 255.0f;
    CHECK_EQ_INT(sd_png_write(ctx, input_png, &img, NULL, 0, 6), SD_OK);
    sd_image_clear(&img);
}

/* LoadImage "1" -> SaveImage "2" (prefix "a") and SaveImage "3" (prefix "b"). */
static sd_graph *build_graph(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "1", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "1", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "2", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "1", "IMAGE", "2", "images"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "2", "filename_prefix", "a"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "3", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "1", "IMAGE", "3", "images"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "3", "filename_prefix", "b"), SD_OK);
    return g;
}

static int count_pngs(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".png") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* How many replay-XXXXXX directories are left in the temp directory. */
static int count_replay_dirs(void)
{
    DIR *d = opendir(temp_dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strncmp(e->d_name, "replay-", 7) == 0;
    if (d)
        closedir(d);
    return n;
}

static char *saved_a, *saved_b;

/* Writes a copy of saved_a whose texts are replaced: texts[i] for keys[i] (NULL: dropped). */
static char *rewrite_texts(const char *name, const char *const *keys, const char *const *texts, size_t n)
{
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, saved_a, NULL, &img), SD_OK);
    sd_png_text out[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 8; i++)
        if (texts[i])
            out[k++] = (sd_png_text){keys[i], texts[i]};
    char *p = test_path(test_scratch_dir(), name);
    CHECK_EQ_INT(sd_png_write(ctx, p, &img, out, k, 4), SD_OK);
    sd_image_clear(&img);
    return p;
}

/* saved_a with its provenance replaced by prov (the other texts kept). */
static char *with_provenance(const char *name, const char *prov)
{
    const char *keys[5] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_ENGINE, SD_PNG_KEY_PROVENANCE,
                           SD_PNG_KEY_NODE, SD_PNG_KEY_BATCH};
    char *vals[5] = {0};
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(sd_png_read_text(ctx, saved_a, NULL, keys[i], &vals[i]), SD_OK);
    const char *texts[5] = {vals[0], vals[1], prov, vals[3], vals[4]};
    char *p = rewrite_texts(name, keys, texts, 5);
    for (int i = 0; i < 5; i++)
        free(vals[i]);
    return p;
}

static void test_save_and_replay_identical(void)
{
    write_input(0);
    sd_graph *g = build_graph();
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_OK);
    CHECK_EQ_INT(res ? sd_result_file_count(res) : 0, 2);
    saved_a = test_path(output_dir, "a_00001_.png");
    saved_b = test_path(output_dir, "b_00001_.png");
    CHECK(test_file_exists(saved_a) && test_file_exists(saved_b));
    sd_result_free(res);
    sd_graph_free(g);

    /* LoadImage -> SaveImage keeps 8-bit RGB exactly (alpha is dropped: IMAGE is RGB). */
    sd_image in, out;
    CHECK_EQ_INT(sd_png_read(ctx, input_png, NULL, &in), SD_OK);
    CHECK_EQ_INT(sd_png_read(ctx, saved_a, NULL, &out), SD_OK);
    CHECK(out.channels == 3 && out.width == 6 && out.height == 4);
    int bad = 0;
    for (int p = 0; p < 24 && in.data && out.data; p++)
        for (int c = 0; c < 3; c++)
            bad += in.data[p * 4 + c] != out.data[p * 3 + c];
    CHECK_EQ_INT(bad, 0);
    sd_image_clear(&in);
    sd_image_clear(&out);

    /* The provenance names the input by name in its directory (no absolute path), with its
     * hash, and the node and batch index of the writer. */
    char *xml = NULL, *prov = NULL, *node = NULL, *batch = NULL;
    CHECK_EQ_INT(sd_png_extract_workflow(ctx, saved_b, &xml), SD_OK);
    CHECK_STR_CONTAINS(xml, "LoadImage");
    CHECK_STR_CONTAINS(xml, "in.png");
    CHECK_EQ_INT(sd_png_read_text(ctx, saved_b, NULL, SD_PNG_KEY_PROVENANCE, &prov), SD_OK);
    sd_key k;
    char hex[65], *want = NULL;
    CHECK_EQ_INT(sd_hash_file(ctx, input_png, &k), SD_OK);
    sd_key_hex(&k, hex);
    CHECK_STR_EQ(prov, want = sd_strfmt("{\"engine\":\"%s\",\"files\":{\"input/in.png\":\"%s\"}}", sd_version(), hex));
    free(want);
    CHECK_EQ_INT(sd_png_read_text(ctx, saved_b, NULL, SD_PNG_KEY_NODE, &node), SD_OK);
    CHECK_STR_EQ(node, "3");
    CHECK_EQ_INT(sd_png_read_text(ctx, saved_b, NULL, SD_PNG_KEY_BATCH, &batch), SD_OK);
    CHECK_STR_EQ(batch, "0");
    free(xml);
    free(prov);
    free(node);
    free(batch);

    /* Replaying b re-runs node 3 only, into a fresh directory that is removed afterwards; the
     * output dir is restored. */
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, saved_b, NULL, &rep), SD_OK);
    CHECK(rep.identical && rep.max_abs_diff == 0.0);
    CHECK(rep.new_image == NULL);
    CHECK_EQ_INT(count_replay_dirs(), 0);
    CHECK_STR_EQ(sd_context_dir(ctx, SD_DIR_OUTPUT), output_dir);
    CHECK_STR_EQ(sd_context_dir(ctx, SD_DIR_TEMP), temp_dir);
    CHECK_EQ_INT(count_pngs(output_dir), 2);
    sd_replay_report_clear(&rep);
    CHECK(rep.new_image == NULL);
}

static void test_replay_changed_or_missing_input(void)
{
    sd_key k;
    char *real = realpath(input_png, NULL);
    CHECK_EQ_INT(sd_hash_file(ctx, real, &k), SD_OK);
    char hex[65];
    sd_key_hex(&k, hex);

    write_input(1); /* different pixels, same name */
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, saved_a, NULL, &rep), SD_ERR_INVALID);
    char want[8192];
    snprintf(want, sizeof want, "file input/in.png (%s) has changed: recorded blake2b %s, now ", real, hex);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), want);
    CHECK(rep.new_image == NULL);
    CHECK_EQ_INT(sd_status_exit_code(SD_ERR_INVALID), 3);
    CHECK_EQ_INT(count_replay_dirs(), 0);

    CHECK(remove(input_png) == 0);
    CHECK_EQ_INT(sd_replay(ctx, saved_a, NULL, &rep), SD_ERR_INVALID);
    CHECK(sd_context_diag_count(ctx) == 1 && strstr(sd_context_diag(ctx, 0), "input file 'in.png' not found"));
    CHECK_EQ_INT(count_replay_dirs(), 0);

    write_input(0); /* the original bytes again: replay works again */
    CHECK_EQ_INT(sd_replay(ctx, saved_a, NULL, &rep), SD_OK);
    sd_replay_report_clear(&rep);
    free(real);
}

static void test_replay_mismatch(void)
{
    /* The same PNG texts over pixels that differ by 3 levels in one sample. */
    const char *keys[5] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_ENGINE, SD_PNG_KEY_PROVENANCE,
                           SD_PNG_KEY_NODE, SD_PNG_KEY_BATCH};
    char *vals[5] = {0};
    sd_png_text texts[5];
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(sd_png_read_text(ctx, saved_a, NULL, keys[i], &vals[i]), SD_OK);
        texts[i] = (sd_png_text){keys[i], vals[i] ? vals[i] : ""};
    }
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, saved_a, NULL, &img), SD_OK);
    if (img.data)
        img.data[7] = img.data[7] >= 0.5f ? img.data[7] - 3 / 255.0f : img.data[7] + 3 / 255.0f;
    char *tampered = test_path(test_scratch_dir(), "tampered.png");
    CHECK_EQ_INT(sd_png_write(ctx, tampered, &img, texts, 5, 4), SD_OK);
    sd_image_clear(&img);
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, tampered, NULL, &rep), SD_ERR_MISMATCH);
    CHECK(!rep.identical);
    CHECK_NEAR(rep.max_abs_diff, 3.0, 1e-9);
    CHECK(rep.new_image && test_file_exists(rep.new_image));
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "differs by up to 3 of 255 levels");
    CHECK_EQ_INT(sd_status_exit_code(SD_ERR_MISMATCH), 1);
    /* The different image is kept for a look, in its private directory. */
    CHECK_EQ_INT(count_replay_dirs(), 1);
    if (rep.new_image) {
        *strrchr(rep.new_image, '/') = '\0';
        struct stat sb;
        CHECK(stat(rep.new_image, &sb) == 0 && (sb.st_mode & 0777) == 0700);
        CHECK(strncmp(rep.new_image, temp_dir, strlen(temp_dir)) == 0);
        CHECK_EQ_INT(count_pngs(rep.new_image), 1);
        CHECK(sd_remove_tree(rep.new_image));
    }
    sd_replay_report_clear(&rep);
    for (int i = 0; i < 5; i++)
        free(vals[i]);
    free(tampered);
}

static char warned[2048];

static void log_line(const char *line, void *user)
{
    (void)user;
    snprintf(warned, sizeof warned, "%s", line);
}

/* Crafted provenance and workflows that point at files outside the directories or at FIFOs:
 * replay opens none of them (a FIFO would block it forever: the alarm fails the test). */
static void test_replay_crafted_paths(void)
{
    alarm(60);
    sd_key k;
    char hex[65], zero[65];
    CHECK_EQ_INT(sd_hash_file(ctx, input_png, &k), SD_OK);
    sd_key_hex(&k, hex);
    memset(zero, '0', 64);
    zero[64] = '\0';
    char *fifo_dir = test_path(test_scratch_dir(), "fifo");
    char *fifo = test_path(fifo_dir, "in.png");
    CHECK(mkdir(fifo_dir, 0700) == 0 && mkfifo(fifo, 0600) == 0);
    sd_replay_report rep;

    /* Records of /etc/passwd and of a FIFO beside the real one: only the file the workflow
     * names, looked up in the input directory, is read. */
    char *prov = sd_strfmt("{\"files\":{\"/etc/passwd\":\"%s\",\"%s\":\"%s\",\"input/in.png\":\"%s\"}}", zero,
                           fifo, zero, hex);
    char *p = with_provenance("crafted.png", prov);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_OK);
    free(prov);
    free(p);

    /* A PNG written before files were recorded by name holds absolute paths: the file the
     * workflow names is matched to the path that ends in its name, compared by hash only (this
     * one is a FIFO, never opened). */
    prov = sd_strfmt("{\"files\":{\"%s\":\"%s\"}}", fifo, hex);
    p = with_provenance("old.png", prov);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_OK);
    free(prov);
    free(p);
    prov = sd_strfmt("{\"files\":{\"%s\":\"%s\"}}", fifo, zero);
    p = with_provenance("old-changed.png", prov);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_ERR_INVALID);
    char *real = realpath(input_png, NULL);
    char *want = sd_strfmt("file input/in.png (%s) has changed: recorded blake2b %s, now %s", real, zero, hex);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(real);
    free(prov);
    free(p);
    /* A file the provenance does not record is named in a warning; the pixels decide. */
    p = with_provenance("unrecorded.png", "{\"files\":{}}");
    sd_context_set_log(ctx, log_line, NULL);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_OK);
    sd_context_set_log(ctx, NULL, NULL);
    want = sd_strfmt("%s: the file input/in.png is not in its provenance, so it is not verified", p);
    CHECK_STR_CONTAINS(warned, want);
    free(want);
    free(p);

    /* A workflow naming a file by absolute path (here the FIFO) is refused before anything is
     * opened; allowed, the FIFO is still no input file. */
    const char *keys[4] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_PROVENANCE, SD_PNG_KEY_NODE, SD_PNG_KEY_BATCH};
    char *wf = sd_strfmt("<workflow version=\"1\"><node id=\"1\" type=\"LoadImage\"><input name=\"image\">%s</input>"
                         "</node><node id=\"2\" type=\"SaveImage\"><input name=\"images\" from=\"1\" output=\"IMAGE\"/>"
                         "</node></workflow>", fifo);
    const char *texts[4] = {wf, "{\"files\":{}}", "2", "0"};
    p = rewrite_texts("absolute.png", keys, texts, 4);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_ERR_INVALID);
    want = sd_strfmt("absolute path '%s' is not allowed (use --allow-absolute-paths)", fifo);
    CHECK(sd_context_diag_count(ctx) == 1 && strstr(sd_context_diag(ctx, 0), want));
    free(want);
    sd_context_set_allow_absolute_paths(ctx, true);
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_ERR_INVALID);
    CHECK(sd_context_diag_count(ctx) == 1 && strstr(sd_context_diag(ctx, 0), "not found"));
    sd_context_set_allow_absolute_paths(ctx, false);
    free(wf);
    free(p);

    /* The PNG itself may be a FIFO: not a regular file, at once. */
    CHECK_EQ_INT(sd_replay(ctx, fifo, NULL, &rep), SD_ERR_IO);
    want = sd_strfmt("%s: not a regular file", fifo);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    CHECK_EQ_INT(count_replay_dirs(), 0);
    alarm(0);
    free(fifo);
    free(fifo_dir);
}

/* Two chunks with the same keyword (two workflows) are refused, not one of them picked. */
static void test_replay_duplicate_chunks(void)
{
    char *wf = NULL;
    CHECK_EQ_INT(sd_png_extract_workflow(ctx, saved_a, &wf), SD_OK);
    const char *keys[5] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_PROVENANCE, SD_PNG_KEY_NODE,
                           SD_PNG_KEY_BATCH};
    const char *texts[5] = {wf, "<workflow version=\"1\"/>", "{\"files\":{}}", "2", "0"};
    char *p = rewrite_texts("two.png", keys, texts, 5);
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), SD_ERR_INVALID);
    char *want = sd_strfmt("%s: more than one 'sdflow:workflow' text chunk", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    char *xml = NULL;
    CHECK_EQ_INT(sd_png_extract_workflow(ctx, p, &xml), SD_ERR_INVALID);
    CHECK(xml == NULL);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(wf);
    free(p);
}

/* Replay re-renders by default: it neither reads nor writes the cache (node outputs or file
 * hashes); with use_cache it trusts (and fills) the cache as a run does. */
static void test_replay_cache(void)
{
    sd_cache_stats st;
    CHECK_EQ_INT(sd_cache_clear(ctx), SD_OK);
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, saved_a, NULL, &rep), SD_OK);
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.file_hashes, 0);
    CHECK_EQ_INT(sd_replay(ctx, saved_a, &(sd_replay_options){.use_cache = true}, &rep), SD_OK);
    CHECK_EQ_INT(sd_cache_stats_get(ctx, &st), SD_OK);
    CHECK_EQ_INT(st.entries, 1); /* LoadImage */
    CHECK_EQ_INT(st.file_hashes, 1);
}

static void test_replay_without_workflow(void)
{
    char *plain = test_path(test_scratch_dir(), "plain.png");
    const unsigned char g[] = {1, 2, 3, 4};
    fixture fx = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g};
    free(write_fixture("plain.png", &fx));
    sd_replay_report rep;
    CHECK_EQ_INT(sd_replay(ctx, plain, NULL, &rep), SD_ERR_NOT_FOUND);
    char want[4200];
    snprintf(want, sizeof want, "%s: no sdflow workflow in this PNG", plain);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(rep.new_image == NULL);
    char *xml = NULL;
    CHECK_EQ_INT(sd_png_extract_workflow(ctx, plain, &xml), SD_ERR_NOT_FOUND);
    CHECK(xml == NULL);
    free(plain);
}

static void test_nodes_through_scheduler(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyLatentImage", "L", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "width", "520"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "height", "64"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "batch_size", "3"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "I", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "I", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImageMask", "M", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "M", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "M", "channel", "red"), SD_OK);
    const char *const wanted[3] = {"L", "I", "M"};
    sd_run_options opts = {.outputs = wanted, .n_outputs = 3};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &opts, &res), SD_OK);
    sd_output_info info;
    CHECK_EQ_INT(sd_result_output(res, "L", "LATENT", &info), SD_OK);
    CHECK(info.ndim == 4 && info.shape[0] == 3 && info.shape[1] == 4 && info.shape[2] == 8 &&
          info.shape[3] == 65);
    CHECK_EQ_INT(sd_result_output(res, "I", "IMAGE", &info), SD_OK);
    CHECK(info.ndim == 4 && info.shape[0] == 1 && info.shape[1] == 4 && info.shape[2] == 6 && info.shape[3] == 3);
    CHECK_EQ_INT(sd_result_output(res, "I", "MASK", &info), SD_OK); /* the input has alpha */
    CHECK(info.ndim == 3 && info.shape[0] == 1 && info.shape[1] == 4 && info.shape[2] == 6);
    CHECK_EQ_INT(sd_result_output(res, "M", "MASK", &info), SD_OK);
    CHECK(info.ndim == 3 && info.shape[1] == 4 && info.shape[2] == 6);
    sd_result_free(res);
    res = NULL;

    /* 4096 latents of 16384x16384 would need 2^41 bytes: refused, naming the node. */
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "width", "16384"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "height", "16384"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "batch_size", "4096"), SD_OK);
    const char *const only_l[1] = {"L"};
    sd_run_options lopts = {.outputs = only_l, .n_outputs = 1, .no_cache = true};
    CHECK_EQ_INT(sd_graph_run(g, &lopts, &res), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'L' (EmptyLatentImage): latent 4096x4x2048x2048 exceeds");
    sd_result_free(res);
    res = NULL;

    /* A missing image is reported by name before anything runs. */
    CHECK_EQ_INT(sd_graph_set_input(g, "I", "image", "nope.png"), SD_OK);
    const char *const only_i[1] = {"I"};
    sd_run_options iopts = {.outputs = only_i, .n_outputs = 1};
    sd_status st = sd_graph_run(g, &iopts, &res);
    CHECK(st == SD_ERR_NOT_FOUND || st == SD_ERR_INVALID);
    bool named = strstr(sd_context_errmsg(ctx), "nope.png") != NULL;
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++)
        named = named || strstr(sd_context_diag(ctx, i), "nope.png");
    CHECK(named);
    sd_result_free(res);
    sd_graph_free(g);
}

/* PNGs whose provenance is incomplete or wrong are refused with the reason, before running. */
static void test_replay_bad_provenance(void)
{
    sd_image img = {.width = 1, .height = 1, .channels = 3};
    float px[3] = {0.1f, 0.2f, 0.3f};
    img.data = px;
    char *p = test_path(test_scratch_dir(), "badprov.png");
    const char *wf = "<workflow version=\"1\"><node id=\"1\" type=\"NoSuchNode\"/></workflow>";
    struct {
        sd_png_text texts[4];
        size_t n;
        sd_status want;
        const char *msg;
    } cases[] = {
        {{{SD_PNG_KEY_WORKFLOW, wf}, {SD_PNG_KEY_BATCH, "0"}, {SD_PNG_KEY_PROVENANCE, "{\"files\":{}}"}}, 3,
         SD_ERR_INVALID, "has a workflow but no 'sdflow:node' text chunk"},
        {{{SD_PNG_KEY_WORKFLOW, wf}, {SD_PNG_KEY_NODE, "1"}, {SD_PNG_KEY_BATCH, "0"},
          {SD_PNG_KEY_PROVENANCE, "{\"files\": 3}"}}, 4, SD_ERR_INVALID, "malformed 'sdflow:provenance' text chunk"},
        {{{SD_PNG_KEY_WORKFLOW, wf}, {SD_PNG_KEY_NODE, "1"}, {SD_PNG_KEY_BATCH, "0"},
          {SD_PNG_KEY_PROVENANCE, "{\"files\":{\"/x\":\"zz\"}}"}}, 4, SD_ERR_INVALID, "malformed hash for input file /x"},
        {{{SD_PNG_KEY_WORKFLOW, wf}, {SD_PNG_KEY_NODE, "1"}, {SD_PNG_KEY_BATCH, "0"},
          {SD_PNG_KEY_PROVENANCE, "{\"files\":{}}"}}, 4, SD_ERR_INVALID, "1 problem in "},
        {{{SD_PNG_KEY_WORKFLOW, "<workflow"}, {SD_PNG_KEY_NODE, "1"}, {SD_PNG_KEY_BATCH, "0"},
          {SD_PNG_KEY_PROVENANCE, "{\"files\":{}}"}}, 4, SD_ERR_PARSE, "malformed XML"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK_EQ_INT(sd_png_write(ctx, p, &img, cases[c].texts, cases[c].n, 1), SD_OK);
        sd_replay_report rep;
        CHECK_EQ_INT(sd_replay(ctx, p, NULL, &rep), cases[c].want);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), cases[c].msg);
        CHECK(rep.new_image == NULL && !rep.identical);
        CHECK_STR_EQ(sd_context_dir(ctx, SD_DIR_OUTPUT), output_dir);
        if (c == 3) { /* the unknown node type is a validation diagnostic with file:line */
            char want[4200];
            snprintf(want, sizeof want, "%s:1: node '1': unknown node type 'NoSuchNode'", p);
            CHECK(sd_context_diag_count(ctx) == 1 && strcmp(sd_context_diag(ctx, 0), want) == 0);
        }
    }
    free(p);
}

/* ComfyUI API workflows for these nodes (with LoadImage's "upload" widget) import and validate. */
static void test_comfy_api_import(void)
{
    char *json = test_path(test_scratch_dir(), "api.json");
    const char *text =
        "{\"10\": {\"inputs\": {\"image\": \"in.png\", \"upload\": \"image\"}, \"class_type\": \"LoadImage\"},"
        " \"11\": {\"inputs\": {\"image\": \"in.png\", \"channel\": \"red\", \"upload\": \"image\"},"
        " \"class_type\": \"LoadImageMask\"},"
        " \"12\": {\"inputs\": {\"images\": [\"10\", 0], \"filename_prefix\": \"ComfyUI\"}, \"class_type\": \"SaveImage\"},"
        " \"13\": {\"inputs\": {\"width\": 512, \"height\": 768, \"batch_size\": 2}, \"class_type\": \"EmptyLatentImage\"},"
        " \"14\": {\"inputs\": {\"images\": [\"10\", 0]}, \"class_type\": \"PreviewImage\"},"
        " \"15\": {\"inputs\": {\"mask\": [\"11\", 0]}, \"class_type\": \"MaskToImage\"},"
        " \"16\": {\"inputs\": {\"images\": [\"15\", 0]}, \"class_type\": \"PreviewImage\"}}";
    write_bytes(json, text, strlen(text));
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(ctx, json, &g), SD_OK);
    CHECK_EQ_INT(g ? sd_graph_validate(g) : SD_ERR_INVALID, SD_OK);
    for (size_t i = 0; i < sd_context_diag_count(ctx); i++)
        fprintf(stderr, "  %s\n", sd_context_diag(ctx, i));
    /* The EmptyLatentImage feeds no output node: dropped, as ComfyUI never runs it. */
    CHECK_EQ_INT(g ? sd_graph_node_count(g) : 0, 6);
    sd_graph_free(g);
    free(json);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    input_dir = test_path(test_scratch_dir(), "input");
    output_dir = test_path(test_scratch_dir(), "output");
    temp_dir = test_path(test_scratch_dir(), "tmp");
    input_png = test_path(input_dir, "in.png");
    char *cache = test_path(test_scratch_dir(), "cache.db");
    mkdir(input_dir, 0777);
    sd_context_set_dir(ctx, SD_DIR_INPUT, input_dir);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, output_dir);
    sd_context_set_dir(ctx, SD_DIR_TEMP, temp_dir);
    sd_context_set_cache_path(ctx, cache);
    RUN(test_save_and_replay_identical);
    RUN(test_replay_changed_or_missing_input);
    RUN(test_replay_mismatch);
    RUN(test_replay_crafted_paths);
    RUN(test_replay_duplicate_chunks);
    RUN(test_replay_cache);
    RUN(test_replay_without_workflow);
    RUN(test_nodes_through_scheduler);
    RUN(test_comfy_api_import);
    RUN(test_replay_bad_provenance);
    sd_context_free(ctx);
    free(saved_a);
    free(saved_b);
    free(input_dir);
    free(output_dir);
    free(temp_dir);
    free(input_png);
    free(cache);
    return test_summary("test_replay");
}
