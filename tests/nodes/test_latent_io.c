/* SaveLatent / LoadLatent (ComfyUI's .latent files) and ImageScaleToTotalPixels: the file
 * layout, bit-exact round trips, the old format's scale, numbering, every refused input with
 * its message, the cache key following the file's content, and ComfyUI's size rounding. */
#include "test.h"
#include "core/png.h"
#include "core/run.h"
#include "ml/formats/safetensors.h"
#include "nodes/latent_file.h"
#include "support/graph_run.h"
#include "support/png_fixture.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;
static char *input_dir, *output_dir;

/* A LATENT [2, 4, 3, 5] whose samples have awkward bit patterns: negatives, -0, subnormals,
 * large values. */
static sd_value *make_latent(void)
{
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    int64_t shape[4] = {2, 4, 3, 5};
    sd_tensor *t = sd_value_add_tensor(v, "samples", 4, shape);
    for (int i = 0; i < 120; i++)
        t->data[i] = (float)((i * 37 % 101) - 50) / 7.0f * (i % 3 ? 1.0f : 1e-3f);
    t->data[1] = -0.0f;
    t->data[2] = 1e-40f; /* subnormal */
    t->data[3] = 3.0e38f;
    return v;
}

static bool same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

static sd_save_request request(const char *dir, const char *prefix)
{
    return (sd_save_request){.dir = dir, .prefix = prefix, .node_id = "7", .workflow_xml = "<workflow/>",
                             .provenance_json = "{\"files\":{}}"};
}

static void test_round_trip_and_layout(void)
{
    sd_value *latent = make_latent();
    sd_save_request req = request(output_dir, "latents/ComfyUI");
    char *path = NULL;
    CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &path), SD_OK);
    char *want = test_path(output_dir, "latents/ComfyUI_00001_.latent");
    CHECK_STR_EQ(path, want);

    /* Loaded back: the same shape and bits. */
    sd_value *back = NULL;
    CHECK_EQ_INT(sd_load_latent(ctx, path, &back), SD_OK);
    const sd_tensor *t = back ? sd_value_tensor(back, "samples") : NULL;
    CHECK(back && back->type == SD_TYPE_LATENT && t && t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 4 &&
          t->shape[2] == 3 && t->shape[3] == 5);
    if (t)
        CHECK(same_bits(t->data, sd_value_tensor(latent, "samples")->data, 120));
    sd_value_unref(back);

    /* A valid safetensors file with exactly the two tensors. */
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    if (f) {
        CHECK_EQ_INT(sd_safetensors_count(f), 2);
        const sd_st_tensor *lt = sd_safetensors_find(f, "latent_tensor");
        const sd_st_tensor *vt = sd_safetensors_find(f, "latent_format_version_0");
        CHECK(lt && lt->dtype == SD_ST_F32 && lt->ndim == 4 && lt->shape[0] == 2 && lt->shape[3] == 5 &&
              lt->nbytes == 480);
        CHECK(vt && vt->dtype == SD_ST_F32 && vt->ndim == 1 && vt->shape[0] == 0 && vt->nbytes == 0);
        CHECK_STR_EQ(sd_safetensors_metadata(f, SD_PNG_KEY_WORKFLOW), "<workflow/>");
        CHECK_STR_EQ(sd_safetensors_metadata(f, SD_PNG_KEY_PROVENANCE), "{\"files\":{}}");
        CHECK_STR_EQ(sd_safetensors_metadata(f, SD_PNG_KEY_NODE), "7");
        char engine[64];
        snprintf(engine, sizeof engine, "sdflow %s", sd_version());
        CHECK_STR_EQ(sd_safetensors_metadata(f, SD_PNG_KEY_ENGINE), engine);
    }
    sd_safetensors_close(f);

    /* The header holds those two tensors and the four metadata keys, nothing else. */
    size_t len = 0;
    unsigned char *bytes = read_bytes(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | bytes[i];
    CHECK_EQ_INT(len, 8 + hlen + 480);
    CHECK_EQ_INT(hlen % 8, 0);
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)hlen, 0, NULL);
    json_t *meta = json_object_get(root, "__metadata__");
    CHECK_EQ_INT(json_object_size(root), 3);
    CHECK_EQ_INT(json_object_size(meta), 4);
    const char *keys[] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_ENGINE, SD_PNG_KEY_PROVENANCE, SD_PNG_KEY_NODE};
    for (int k = 0; k < 4; k++)
        CHECK_MSG(json_is_string(json_object_get(meta, keys[k])), "metadata %s", keys[k]);
    json_decref(root);
    free(bytes);
    free(want);
    free(path);
    sd_value_unref(latent);
}

static void test_numbering_and_prefixes(void)
{
    sd_value *latent = make_latent();
    sd_save_request req = request(output_dir, "num/x");
    char *path = NULL, *want = NULL;
    CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &path), SD_OK);
    CHECK_STR_EQ(path, want = test_path(output_dir, "num/x_00001_.latent"));
    free(path);
    free(want);
    CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &path), SD_OK);
    CHECK_STR_EQ(path, want = test_path(output_dir, "num/x_00002_.latent"));
    free(path);
    free(want);
    /* Numbering continues above the highest counter of any extension (ComfyUI's rule). */
    char *f9 = test_path(output_dir, "num/x_00009_.png");
    write_bytes(f9, "x", 1);
    CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &path), SD_OK);
    CHECK_STR_EQ(path, want = test_path(output_dir, "num/x_00010_.latent"));
    free(path);
    free(want);
    free(f9);

    /* Prefixes that escape the directory: refused, nothing written. */
    char *num = test_path(output_dir, "num");
    const char *bad[] = {"../evil", "/tmp/evil", "a/../../evil", "dir/", ""};
    for (int i = 0; i < 5; i++) {
        req.prefix = bad[i];
        path = NULL;
        CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &path), SD_ERR_INVALID);
        char msg[160];
        snprintf(msg, sizeof msg, "filename_prefix '%s' must be a relative name without '..' components", bad[i]);
        CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
        CHECK(path == NULL);
    }
    CHECK_EQ_INT(count_dir_entries(num), 4);
    /* No samples. */
    sd_value *empty = sd_value_new(SD_TYPE_LATENT);
    req.prefix = "num/x";
    CHECK_EQ_INT(sd_save_latent(ctx, &req, empty, &path), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "LATENT has no samples");
    CHECK_EQ_INT(count_dir_entries(num), 4);
    sd_value_unref(empty);
    free(num);
    sd_value_unref(latent);
}

typedef struct raw_tensor {
    const void *data;
} raw_tensor;

static sd_status fill_raw(void *user, size_t index, void *dst, size_t nbytes)
{
    const raw_tensor *r = user;
    if (nbytes) /* an empty tensor has no data pointer */
        memcpy(dst, r[index].data, nbytes);
    return SD_OK;
}

/* Writes <input dir>/name with the given tensors (data as little-endian bytes). */
static char *write_st(const char *name, const sd_st_entry *e, const raw_tensor *data, size_t n)
{
    char *path = test_path(input_dir, name);
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n, NULL, fill_raw, (void *)data), SD_OK);
    return path;
}

static void test_old_format_and_dtypes(void)
{
    /* No latent_format_version_0: the old format, multiplied by the f32 of 1 / 0.18215. */
    const float v[8] = {1.0f, -2.5f, 0.18215f, 0.0f, 100.0f, -1e-3f, 3.25f, 7.0f};
    sd_st_entry e = {.name = "latent_tensor", .dtype = SD_ST_F32, .ndim = 4, .shape = {1, 2, 2, 2}};
    raw_tensor r = {v};
    char *path = write_st("old.latent", &e, &r, 1);
    sd_value *got = NULL;
    CHECK_EQ_INT(sd_load_latent(ctx, path, &got), SD_OK);
    const sd_tensor *t = got ? sd_value_tensor(got, "samples") : NULL;
    const float scale = (float)(1.0 / 0.18215);
    CHECK(scale == 5.48998070f);
    for (int i = 0; t && i < 8; i++)
        CHECK_MSG(t->data[i] == v[i] * scale, "old[%d] = %.9g, want %.9g", i, t->data[i], v[i] * scale);
    sd_value_unref(got);
    free(path);

    /* F16 with the version tensor: converted to f32, not scaled. */
    const uint16_t h[4] = {0x3c00, 0xc100, 0x3800, 0x0001}; /* 1, -2.5, 0.5, 2^-24 */
    const float hf[4] = {1.0f, -2.5f, 0.5f, 5.9604645e-08f};
    sd_st_entry eh[2] = {{.name = "latent_tensor", .dtype = SD_ST_F16, .ndim = 4, .shape = {1, 1, 2, 2}},
                         {.name = "latent_format_version_0", .dtype = SD_ST_F32, .ndim = 1, .shape = {0}}};
    raw_tensor rh[2] = {{h}, {NULL}};
    path = write_st("half.latent", eh, rh, 2);
    CHECK_EQ_INT(sd_load_latent(ctx, path, &got), SD_OK);
    t = got ? sd_value_tensor(got, "samples") : NULL;
    CHECK(t && same_bits(t->data, hf, 4));
    sd_value_unref(got);
    free(path);
}

/* Loading `name` fails with status st and exactly the message "<path>: <msg>". */
static void expect_load_error(const char *name, sd_status st, const char *msg)
{
    char *path = test_path(input_dir, name), want[1024];
    sd_value *got = NULL;
    CHECK_EQ_INT(sd_load_latent(ctx, path, &got), st);
    snprintf(want, sizeof want, "%s: %s", path, msg);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(got == NULL);
    free(path);
}

static void test_bad_files(void)
{
    const float z[8] = {0};
    raw_tensor r[2] = {{z}, {z}};
    sd_st_entry other = {.name = "samples", .dtype = SD_ST_F32, .ndim = 4, .shape = {1, 2, 2, 2}};
    free(write_st("notensor.latent", &other, r, 1));
    expect_load_error("notensor.latent", SD_ERR_NOT_FOUND, "no tensor 'latent_tensor'");

    sd_st_entry rank3 = {.name = "latent_tensor", .dtype = SD_ST_F32, .ndim = 3, .shape = {2, 2, 2}};
    free(write_st("rank3.latent", &rank3, r, 1));
    expect_load_error("rank3.latent", SD_ERR_INVALID,
                      "latent_tensor has shape [2, 2, 2]; a latent is [batch, channels, height, width]");

    sd_st_entry zero = {.name = "latent_tensor", .dtype = SD_ST_F32, .ndim = 4, .shape = {0, 4, 2, 2}};
    free(write_st("zero.latent", &zero, r, 1));
    expect_load_error("zero.latent", SD_ERR_INVALID,
                      "latent_tensor has shape [0, 4, 2, 2]; a latent is [batch, channels, height, width]");

    sd_st_entry ints = {.name = "latent_tensor", .dtype = SD_ST_I32, .ndim = 4, .shape = {1, 2, 2, 2}};
    free(write_st("ints.latent", &ints, r, 1));
    expect_load_error("ints.latent", SD_ERR_INVALID, "latent_tensor has dtype I32; a latent is F32, F16 or BF16");

    /* Not a safetensors file at all: the strict reader's error, naming the file. */
    char *junk = test_path(input_dir, "junk.latent");
    write_bytes(junk, "\x04\0\0\0\0\0\0\0{}", 10);
    sd_value *got = NULL;
    CHECK_EQ_INT(sd_load_latent(ctx, junk, &got), SD_ERR_PARSE);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), junk);
    CHECK(got == NULL);
    free(junk);
}

/* A graph with LoadLatent "L" reading `name`. */
static sd_graph *load_graph(const char *name)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadLatent", "L", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "latent", name), SD_OK);
    return g;
}

/* Runs g for node L through the cache; returns L's outcome. */
static sd_node_outcome run_cached(sd_graph *g, float *samples, size_t n)
{
    const char *outputs[] = {"L"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1};
    sd_result *res = NULL;
    sd_node_outcome outcome = SD_NODE_SKIPPED;
    sd_status st = sd_graph_run(g, &o, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    sd_node_stat stat;
    for (size_t i = 0; !st && i < sd_result_node_count(res); i++)
        if (sd_result_node(res, i, &stat) == SD_OK && strcmp(stat.node_id, "L") == 0)
            outcome = stat.outcome;
    const sd_value *v = st ? NULL : sd_result_value(res, "L", "LATENT");
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    size_t got = 0;
    CHECK(t && sd_tensor_numel(t, &got) && got == n);
    if (t && got == n)
        memcpy(samples, t->data, n * sizeof *samples);
    sd_result_free(res);
    return outcome;
}

static void test_nodes_in_graphs(void)
{
    /* SaveLatent in a graph: LoadLatent -> SaveLatent; the written file is the run's output and
     * carries the workflow and the node's id. */
    sd_value *latent = make_latent();
    const float *want = sd_value_tensor(latent, "samples")->data;
    sd_save_request req = request(input_dir, "in");
    char *src = NULL;
    CHECK_EQ_INT(sd_save_latent(ctx, &req, latent, &src), SD_OK);
    sd_graph *g = load_graph("in_00001_.latent");
    float *got = test_run_latent(g, "L", 120);
    CHECK(got && same_bits(got, want, 120));
    free(got);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveLatent", "S", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "L", "LATENT", "S", "samples"), SD_OK);
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &(sd_run_options){.no_cache = true}, &res), SD_OK);
    char *saved = test_path(output_dir, "latents/ComfyUI_00002_.latent"); /* 00001 written above */
    CHECK_EQ_INT(sd_result_file_count(res), 1);
    CHECK_STR_EQ(sd_result_file_count(res) ? sd_result_file(res, 0) : NULL, saved);
    sd_result_free(res);
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, saved, &f), SD_OK);
    if (f) {
        CHECK_STR_EQ(sd_safetensors_metadata(f, SD_PNG_KEY_NODE), "S");
        CHECK_STR_CONTAINS(sd_safetensors_metadata(f, SD_PNG_KEY_WORKFLOW), "type=\"LoadLatent\"");
        CHECK_STR_CONTAINS(sd_safetensors_metadata(f, SD_PNG_KEY_PROVENANCE), "\"input/in_00001_.latent\":");
    }
    sd_safetensors_close(f);
    sd_value *back = NULL;
    CHECK_EQ_INT(sd_load_latent(ctx, saved, &back), SD_OK);
    CHECK(back && same_bits(sd_value_tensor(back, "samples")->data, want, 120));
    sd_value_unref(back);
    sd_graph_free(g);
    free(saved);

    /* The file's content is in LoadLatent's cache key: a changed file is read again. */
    char *db = test_path(test_scratch_dir(), "cache.db");
    CHECK_EQ_INT(sd_context_set_cache_path(ctx, db), SD_OK);
    g = load_graph("in_00001_.latent");
    float buf[120];
    CHECK_EQ_INT(run_cached(g, buf, 120), SD_NODE_RAN);
    CHECK_EQ_INT(run_cached(g, buf, 120), SD_NODE_CACHED);
    CHECK(same_bits(buf, want, 120));
    float twice[120];
    for (int i = 0; i < 120; i++)
        twice[i] = want[i] * 2.0f;
    sd_st_entry e[2] = {{.name = "latent_tensor", .dtype = SD_ST_F32, .ndim = 4, .shape = {2, 4, 3, 5}},
                        {.name = "latent_format_version_0", .dtype = SD_ST_F32, .ndim = 1, .shape = {0}}};
    raw_tensor r[2] = {{twice}, {NULL}};
    CHECK_EQ_INT(sd_safetensors_write(ctx, src, e, 2, NULL, fill_raw, r), SD_OK);
    CHECK_EQ_INT(run_cached(g, buf, 120), SD_NODE_RAN);
    CHECK(same_bits(buf, twice, 120));
    sd_graph_free(g);
    sd_context_set_cache_path(ctx, NULL);
    free(db);

    /* A missing file is reported before anything runs, naming the directory searched. */
    g = load_graph("nope.latent");
    CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    char msg[1024];
    snprintf(msg, sizeof msg, "<api>: node 'L' input 'latent': input file 'nope.latent' not found (searched: %s)",
             input_dir);
    CHECK_STR_EQ(sd_context_diag_count(ctx) ? sd_context_diag(ctx, 0) : NULL, msg);
    res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    sd_result_free(res);
    sd_graph_free(g);

    /* A bad file is the node's error. */
    g = load_graph("rank3.latent");
    res = NULL;
    const char *only_l[] = {"L"};
    CHECK_EQ_INT(sd_graph_run(g, &(sd_run_options){.outputs = only_l, .n_outputs = 1, .no_cache = true}, &res),
                 SD_ERR_INVALID);
    char *rank3 = test_path(input_dir, "rank3.latent");
    snprintf(msg, sizeof msg,
             "node 'L' (LoadLatent): %s: latent_tensor has shape [2, 2, 2]; a latent is [batch, channels, height, "
             "width]",
             rank3);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    sd_result_free(res);
    sd_graph_free(g);
    free(rank3);
    free(src);
    sd_value_unref(latent);
}

/* LoadImage (file) -> ImageScaleToTotalPixels "N"; the output's height and width. */
static void expect_total_pixels(const char *file, const char *megapixels, const char *steps, int64_t h, int64_t w)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "I", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "I", "image", file), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "ImageScaleToTotalPixels", "N", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "I", "IMAGE", "N", "image"), SD_OK);
    if (megapixels)
        CHECK_EQ_INT(sd_graph_set_input(g, "N", "megapixels", megapixels), SD_OK);
    if (steps)
        CHECK_EQ_INT(sd_graph_set_input(g, "N", "resolution_steps", steps), SD_OK);
    const char *const wanted[1] = {"N"};
    sd_run_options opts = {.outputs = wanted, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_output_info info = {0};
    sd_status st = sd_graph_run(g, &opts, &res);
    if (h == 0) {
        CHECK_EQ_INT(st, SD_ERR_INVALID);
        CHECK_STR_EQ(sd_context_errmsg(ctx),
                     "node 'N' (ImageScaleToTotalPixels): megapixels 0.01 with resolution_steps 256 makes the 17x13 "
                     "image empty");
    } else {
        CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
        CHECK_EQ_INT(st ? st : sd_result_output(res, "N", "IMAGE", &info), SD_OK);
        CHECK_MSG(info.ndim == 4 && info.shape[1] == h && info.shape[2] == w,
                  "%s %s megapixels, steps %s: %lldx%lld, expected %lldx%lld", file, megapixels ? megapixels : "1.0",
                  steps ? steps : "1", (long long)info.shape[2], (long long)info.shape[1], (long long)w,
                  (long long)h);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_scale_to_total_pixels(void)
{
    static unsigned char px[17 * 13 * 3], sq[16 * 16 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 7);
    fixture f1 = {.w = 17, .h = 13, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    fixture f2 = {.w = 16, .h = 16, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = sq};
    free(write_fixture("input/wide.png", &f1));
    free(write_fixture("input/square.png", &f2));
    /* ComfyUI: scale = sqrt(megapixels * 1024 * 1024 / (w h)); side = round(side * scale / steps) * steps.
     * 17x13, 0.01: scale = sqrt(10485.76 / 221) = 6.88817...; 117.099 -> 117, 89.546 -> 90. */
    expect_total_pixels("wide.png", "0.01", NULL, 90, 117);
    /* steps 8: 117.099 / 8 = 14.64 -> 15 -> 120; 89.546 / 8 = 11.19 -> 11 -> 88. */
    expect_total_pixels("wide.png", "0.01", "8", 88, 120);
    /* The default 1.0: scale = sqrt(1048576 / 221) = 68.8817...; 1170.99 -> 1171, 895.46 -> 895. */
    expect_total_pixels("wide.png", NULL, NULL, 895, 1171);
    /* steps 64: 1170.99 / 64 = 18.30 -> 18 -> 1152; 895.46 / 64 = 13.99 -> 14 -> 896. */
    expect_total_pixels("wide.png", "1.0", "64", 896, 1152);
    /* 16x16, 0.390625 (25/64): scale = sqrt(409600 / 256) = 40, sides 640 exactly; with steps
     * 256, 640 / 256 = 2.5 rounds half to even: 2 -> 512; steps 128: 5 -> 640. */
    expect_total_pixels("square.png", "0.390625", NULL, 640, 640);
    expect_total_pixels("square.png", "0.390625", "256", 512, 512);
    expect_total_pixels("square.png", "0.390625", "128", 640, 640);
    /* steps 256 on 117x90 rounds both sides to 0: an error (ComfyUI fails inside the resize). */
    expect_total_pixels("wide.png", "0.01", "256", 0, 0);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    input_dir = test_path(test_scratch_dir(), "input");
    output_dir = test_path(test_scratch_dir(), "output");
    mkdir(input_dir, 0777);
    sd_context_set_dir(ctx, SD_DIR_INPUT, input_dir);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, output_dir);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_round_trip_and_layout);
    RUN(test_numbering_and_prefixes);
    RUN(test_old_format_and_dtypes);
    RUN(test_bad_files);
    RUN(test_nodes_in_graphs);
    RUN(test_scale_to_total_pixels);
    sd_context_free(ctx);
    free(input_dir);
    free(output_dir);
    return test_summary("test_latent_io");
}
