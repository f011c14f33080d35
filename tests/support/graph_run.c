#include "support/graph_run.h"
#include "core/run.h"
#include "test.h"
#include "core/context.h"
#include "ml/families/sd1_layout.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static float *run_latent(sd_graph *g, const char *node, size_t n, bool no_cache)
{
    const char *outputs[] = {node};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = no_cache};
    sd_result *res = NULL;
    float *out = NULL;
    sd_status st = g ? sd_graph_run(g, &o, &res) : SD_ERR_INVALID;
    CHECK_MSG(st == SD_OK, "%s", g ? sd_context_errmsg(sd_graph_context(g)) : "no graph");
    const sd_value *v = st ? NULL : sd_result_value(res, node, "LATENT");
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    size_t got = 0;
    if (t && sd_tensor_numel(t, &got) && got == n && (out = malloc(n * sizeof *out)))
        memcpy(out, t->data, n * sizeof *out);
    CHECK_MSG(out != NULL, "node '%s': no LATENT of %zu values", node, n);
    sd_result_free(res);
    return out;
}

float *test_run_latent(sd_graph *g, const char *node, size_t n)
{
    return run_latent(g, node, n, true);
}

float *test_run_latent_cached(sd_graph *g, const char *node, size_t n)
{
    return run_latent(g, node, n, false);
}

static char *g_input_dir;

void test_models_input_dir(const char *dir)
{
    free(g_input_dir);
    g_input_dir = dir ? sd_strfmt("%s", dir) : NULL;
}

sd_context *test_models_context(const char *models_dir, const char *cache)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    if (!ctx)
        return NULL;
    sd_context_set_cache_path(ctx, cache);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, test_scratch_dir());
    if (g_input_dir)
        sd_context_set_dir(ctx, SD_DIR_INPUT, g_input_dir);
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, models_dir), SD_OK);
    return ctx;
}

char *test_write_checkpoints(const test_checkpoint_file *files, size_t n)
{
    sd_context *ctx;
    if (sd_context_new(&ctx))
        return NULL;
    char *dir = test_path(test_scratch_dir(), "models"), *ckpts = test_path(dir, "checkpoints");
    bool ok = mkdir(dir, 0755) == 0 && mkdir(ckpts, 0755) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        sd_checkpoint_config cfg;
        char *path = test_path(ckpts, files[i].file);
        ok = sd_checkpoint_preset(files[i].preset, &cfg) && !sd_sd1_write_random(ctx, path, &cfg, SD_ST_F32, files[i].seed);
        free(path);
    }
    if (!ok) {
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(ctx));
        free(dir);
        dir = NULL;
    }
    free(ckpts);
    sd_context_free(ctx);
    return dir;
}

float *test_run_body_latent(const char *models_dir, const char *cache, const char *body, const char *node, size_t n)
{
    sd_context *ctx = test_models_context(models_dir, cache);
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "test.xml", &g), SD_OK);
    float *out = !g ? NULL : cache ? test_run_latent_cached(g, node, n) : test_run_latent(g, node, n);
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
    return out;
}

void test_expect_problems(const char *models_dir, const char *body, size_t n, const char *const *msgs)
{
    sd_context *ctx = test_models_context(models_dir, NULL);
    char *xml = sd_strfmt("<workflow version=\"1\">%s</workflow>", body);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml_memory(ctx, xml, strlen(xml), "test.xml", &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_validate(g), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), n);
        for (size_t k = 0; k < n && k < sd_context_diag_count(ctx); k++)
            CHECK_STR_CONTAINS(sd_context_diag(ctx, k), msgs[k]);
    }
    sd_graph_free(g);
    free(xml);
    sd_context_free(ctx);
}
