/* EmptyImage -> CLIPInterrogate through the scheduler with the tiny CLIP model of
 * tests/data/goldens and the tiny tables of tests/data/interrogate: label features are computed
 * once (a second interrogation in another mode, and one in a fresh context sharing the cache,
 * encode no label; a changed table re-encodes only that table); the json output lists each
 * table's best labels; bad input is one line naming the problem. */
#include "test.h"
#include "support/golden.h"
#include "nodes/interrogate.h"
#include "sdflow/sdflow.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *models, *cache_path;
/* the tiny tables: artists twice ("by", "inspired by"), the built-in 72 trendings */
enum { TOTAL_LABELS = 2 * 6 + 60 + 7 + 7 + 72 + 6 };

static sd_context *new_context(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_clear_models_dirs(ctx);
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, models), SD_OK);
    CHECK_EQ_INT(sd_context_set_cache_path(ctx, cache_path), SD_OK);
    return ctx;
}

/* Runs the interrogator in mode; returns its prompt (malloc'd) and json (malloc'd, may be NULL). */
static char *interrogate(sd_context *ctx, const char *mode, const char *extra_caption, char **json, sd_status want)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyImage", "img", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "width", "40"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "height", "24"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "color", "3372236"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPInterrogate", "ci", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "clip_name", "tiny.safetensors"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "mode", mode), SD_OK);
    if (extra_caption)
        CHECK_EQ_INT(sd_graph_set_input(g, "ci", "caption", extra_caption), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "lists_dir", "tiny"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "chunk_size", "16"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "intermediate_count", "24"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "ci", "top_count", "3"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "ci", "image"), SD_OK);
    const char *outs[] = {"ci"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == want, "run: %s", sd_context_errmsg(ctx));
    char *prompt = NULL;
    sd_output_info info;
    if (!st && sd_result_output(res, "ci", "prompt", &info) == SD_OK)
        prompt = strdup(info.s);
    if (json)
        *json = !st && sd_result_output(res, "ci", "json", &info) == SD_OK ? strdup(info.s) : NULL;
    sd_result_free(res);
    sd_graph_free(g);
    return prompt;
}

static void test_labels_once(void)
{
    sd_context *ctx = new_context();
    int64_t before = sd_interrogate_labels_encoded();
    char *json = NULL, *a = interrogate(ctx, "fast", "a cat", &json, SD_OK);
    CHECK_EQ_INT(sd_interrogate_labels_encoded() - before, TOTAL_LABELS);
    CHECK(a && strncmp(a, "a cat, ", 7) == 0);
    json_t *j = json ? json_loads(json, 0, NULL) : NULL;
    CHECK_STR_EQ(json_string_value(json_object_get(j, "mode")), "fast");
    CHECK_EQ_INT(json_array_size(json_object_get(json_object_get(j, "tables"), "flavors")), 3);
    CHECK_EQ_INT(json_array_size(json_object_get(json_object_get(j, "tables"), "trendings")), 3);
    json_decref(j);
    free(json);
    before = sd_interrogate_labels_encoded();
    char *b = interrogate(ctx, "classic", "a cat", NULL, SD_OK);
    CHECK(b && strncmp(b, "a cat", 5) == 0);
    CHECK_EQ_INT(sd_interrogate_labels_encoded() - before, 0);
    sd_context_free(ctx);

    ctx = new_context(); /* a fresh process's context: the features come from the cache */
    before = sd_interrogate_labels_encoded();
    char *c = interrogate(ctx, "negative", NULL, NULL, SD_OK);
    CHECK(c && *c);
    CHECK_EQ_INT(sd_interrogate_labels_encoded() - before, 0);
    char *path = test_path(models, "interrogate/tiny/mediums.txt");
    FILE *f = fopen(path, "a");
    CHECK(f != NULL);
    if (f) {
        fputs("linocut\n", f);
        fclose(f);
    }
    free(path);
    before = sd_interrogate_labels_encoded();
    free(interrogate(ctx, "fast", "a dog", NULL, SD_OK));
    CHECK_EQ_INT(sd_interrogate_labels_encoded() - before, 8); /* the mediums table again */
    sd_context_free(ctx);
    free(a);
    free(b);
    free(c);
}

static void test_bad_input(void)
{
    sd_context *ctx = new_context();
    free(interrogate(ctx, "best", NULL, NULL, SD_ERR_INVALID)); /* no caption, no BLIP model */
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "mode best needs a caption: set blip_name (a BLIP model) or caption");
    CHECK(!strchr(sd_context_errmsg(ctx), '\n'));
    sd_context_free(ctx);
}

int main(void)
{
    models = test_path(test_scratch_dir(), "models");
    cache_path = test_path(test_scratch_dir(), "cache.db");
    char *dir = test_path(models, "clip_vision"), *lists = test_path(models, "interrogate/tiny");
    mkdir(models, 0755);
    mkdir(dir, 0755);
    char *idir = test_path(models, "interrogate");
    mkdir(idir, 0755);
    mkdir(lists, 0755);
    char *src = test_golden_path("interrogate_clip.safetensors"), *dst = test_path(dir, "tiny.safetensors");
    test_copy_file(src, dst);
    static const char *const tables[] = {"artists.txt", "flavors.txt", "mediums.txt", "movements.txt", "negative.txt"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tests/data/interrogate/%s", tables[i]);
        char *from = test_path(test_source_dir(), rel), *to = test_path(lists, tables[i]);
        test_copy_file(from, to);
        free(from);
        free(to);
    }
    RUN(test_labels_once);
    RUN(test_bad_input);
    free(src);
    free(dst);
    free(dir);
    free(idir);
    free(lists);
    free(models);
    free(cache_path);
    return test_summary("test_interrogate_nodes");
}
