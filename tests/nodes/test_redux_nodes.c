/* DualCLIPLoader (flux) -> CLIPTextEncode and CLIPVisionLoader (SigLIP) -> CLIPVisionEncode ->
 * StyleModelLoader -> StyleModelApply through the scheduler, on the tiny T5 / CLIP-L and the tiny
 * SigLIP and Redux files (tests/reference/make_redux_goldens.py): the conditioning is the text
 * tokens followed by the Redux projection of the SigLIP last_hidden_state (all images' tokens),
 * times strength for multiply; attn_bias keeps the tokens and records the key_bias span, and
 * none at strength 1. */
#include "test.h"
#include "support/golden.h"
#include "core/run.h"
#include "ml/adapters/redux.h"
#include "ml/text/text_encoder_write.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;
static char *models;

enum { TOKENS = 16, WIDTH = 144, CTX = 32 };

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK(in && out);
    char buf[4096];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

static void set(sd_graph *g, const char *node, const char *input, const char *value)
{
    CHECK_EQ_INT(sd_graph_set_input(g, node, input, value), SD_OK);
}

static sd_graph *graph(const char *strength, const char *type, const char *images)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "DualCLIPLoader", "clip", NULL), SD_OK);
    set(g, "clip", "clip_name1", "t5.safetensors");
    set(g, "clip", "clip_name2", "clip_l.safetensors");
    set(g, "clip", "type", "flux");
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", "text", NULL), SD_OK);
    set(g, "text", "text", "a cat");
    CHECK_EQ_INT(sd_graph_connect(g, "clip", "CLIP", "text", "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyImage", "img", NULL), SD_OK);
    set(g, "img", "width", "40");
    set(g, "img", "height", "24");
    set(g, "img", "color", "3368652");
    set(g, "img", "batch_size", images);
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionLoader", "cv", NULL), SD_OK);
    set(g, "cv", "clip_name", "siglip.safetensors");
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPVisionEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "cv", "CLIP_VISION", "enc", "clip_vision"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "enc", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "StyleModelLoader", "style", NULL), SD_OK);
    set(g, "style", "style_model_name", "redux.safetensors");
    CHECK_EQ_INT(sd_graph_add_node(g, "StyleModelApply", "apply", NULL), SD_OK);
    set(g, "apply", "strength", strength);
    set(g, "apply", "strength_type", type);
    CHECK_EQ_INT(sd_graph_connect(g, "text", "CONDITIONING", "apply", "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "style", "STYLE_MODEL", "apply", "style_model"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "enc", "CLIP_VISION_OUTPUT", "apply", "clip_vision_output"), SD_OK);
    return g;
}

/* The Redux tokens of last [rows, WIDTH] by the model API, as the node computes them. */
static float *redux_reference(const float *last, int64_t rows)
{
    char *dir = test_path(models, "style_models"), *path = test_path(dir, "redux.safetensors");
    sd_safetensors *st = NULL;
    sd_redux *r = NULL;
    sd_cl *cl = NULL;
    float *out = malloc((size_t)rows * CTX * sizeof *out);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    CHECK_EQ_INT(sd_redux_new(cl, st, SD_DTYPE_F16, &r), SD_OK);
    if (r && out)
        CHECK_EQ_INT(sd_redux_project(r, last, rows, out), SD_OK);
    sd_redux_free(r);
    sd_safetensors_close(st);
    free(dir), free(path);
    return out;
}

/* Runs the graph; checks cond.0 = text tokens then the Redux tokens (x strength when scaled) and
 * the key_bias attribute (bias: [text tokens, Redux tokens, strength]; else none). */
static void expect_apply(const char *strength, const char *type, int images, bool scaled, bool bias)
{
    char n[8];
    snprintf(n, sizeof n, "%d", images);
    sd_graph *g = graph(strength, type, n);
    const char *outs[] = {"apply", "text", "enc"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 3, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *av = st ? NULL : sd_result_value(res, "apply", "CONDITIONING");
    const sd_value *tv = st ? NULL : sd_result_value(res, "text", "CONDITIONING");
    const sd_value *ev = st ? NULL : sd_result_value(res, "enc", "CLIP_VISION_OUTPUT");
    const sd_tensor *a = av ? sd_value_tensor(av, "cond.0") : NULL, *t = tv ? sd_value_tensor(tv, "cond.0") : NULL;
    const sd_tensor *last = ev ? sd_value_tensor(ev, "last_hidden_state") : NULL;
    const sd_tensor *emb = ev ? sd_value_tensor(ev, "image_embeds") : NULL;
    int64_t rows = (int64_t)images * TOKENS;
    CHECK(last && last->ndim == 3 && last->shape[0] == images && last->shape[1] == TOKENS && last->shape[2] == WIDTH);
    CHECK(emb && emb->ndim == 3 && last && memcmp(emb->data, last->data, (size_t)rows * WIDTH * sizeof(float)) == 0);
    CHECK(t && t->ndim == 3 && t->shape[0] == 1 && t->shape[2] == CTX);
    CHECK(a && t && a->ndim == 3 && a->shape[0] == 1 && a->shape[1] == t->shape[1] + rows && a->shape[2] == CTX);
    if (a && t && last && a->shape[1] == t->shape[1] + rows) {
        size_t nt = (size_t)(t->shape[1] * CTX);
        float *ref = redux_reference(last->data, rows), s = (float)atof(strength);
        for (int64_t i = 0; ref && scaled && i < rows * CTX; i++)
            ref[i] *= s;
        CHECK_MSG(memcmp(a->data, t->data, nt * sizeof(float)) == 0, "the text tokens come first, unchanged");
        CHECK_MSG(ref && memcmp(a->data + nt, ref, (size_t)rows * CTX * sizeof(float)) == 0,
                  "%s %s: the Redux tokens follow", strength, type);
        free(ref);
        json_t *spans = json_object_get(json_array_get(json_object_get(av->attrs, "entries"), 0), "key_bias");
        json_t *want = bias ? json_pack("[[I, I, f]]", (json_int_t)t->shape[1], (json_int_t)rows, (double)atof(strength))
                            : NULL;
        CHECK_MSG(bias ? json_equal(spans, want) : spans == NULL, "%s %s: key_bias", strength, type);
        json_decref(want);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_multiply(void)
{
    expect_apply("1.0", "multiply", 1, true, false);
    expect_apply("0.37", "multiply", 2, true, false);
}

static void test_attn_bias(void)
{
    expect_apply("0.3", "attn_bias", 1, false, true);
    expect_apply("1.0", "attn_bias", 1, false, false);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    models = test_path(test_scratch_dir(), "models");
    char *te = test_path(models, "text_encoders"), *cv = test_path(models, "clip_vision");
    char *sm = test_path(models, "style_models");
    char *t5 = test_path(te, "t5.safetensors"), *cl = test_path(te, "clip_l.safetensors");
    char *sig = test_path(cv, "siglip.safetensors"), *rx = test_path(sm, "redux.safetensors");
    char *sig_src = test_golden_path("siglip_tiny.safetensors"), *rx_src = test_golden_path("redux_tiny32.safetensors");
    mkdir(models, 0777);
    mkdir(te, 0777);
    mkdir(cv, 0777);
    mkdir(sm, 0777);
    copy_file(sig_src, sig);
    copy_file(rx_src, rx);
    if (sd_text_write_random(ctx, t5, SD_TEXT_T5XXL, SD_ST_F16, 1) || sd_text_write_random(ctx, cl, SD_TEXT_CLIP_L, SD_ST_F16, 2))
        return 2;
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_multiply);
    RUN(test_attn_bias);
    sd_context_free(ctx);
    free(models), free(te), free(cv), free(sm), free(t5), free(cl), free(sig), free(rx), free(sig_src), free(rx_src);
    return test_summary("test_redux_nodes");
}
