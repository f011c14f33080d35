/* The CLIP interrogator (ml/vision/interrogator.h, ml/vision/clip_pair.h) against
 * tests/reference/make_interrogate_goldens.py: a tiny random transformers CLIPModel's
 * get_text_features / get_image_features (1e-4 relative), and a reference implementation of
 * clip-interrogator's algorithm on the tiny tables of tests/data/interrogate with that model:
 * the prompts of the four modes equal, each table's top labels equal with scores within 1e-4. */
#include "test.h"
#include "support/golden.h"
#include "core/files.h"
#include "ml/vision/clip_pair.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

static sd_context *ctx;
static sd_cl *cl;

static double rel_err(const float *a, const float *b, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (double)(a[i] - b[i]) * (a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static void unit(float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    for (int i = 0; i < n; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

static sd_clip_pair *open_pair(sd_safetensors **st)
{
    char *path = test_golden_path("interrogate_clip.safetensors");
    sd_clip_pair *p = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, st), SD_OK);
    if (*st) {
        sd_status s = sd_clip_pair_new(cl, *st, &p);
        CHECK_MSG(s == SD_OK, "pair: %s", sd_context_errmsg(ctx));
    }
    free(path);
    return p;
}

static json_t *golden_json(void)
{
    char *path = test_golden_path("interrogate.json");
    json_t *j = json_load_file(path, 0, NULL);
    CHECK(j != NULL);
    free(path);
    return j;
}

static void test_features(void)
{
    sd_safetensors *st = NULL;
    sd_clip_pair *p = open_pair(&st);
    json_t *g = golden_json();
    if (!p || !g)
        goto done;
    CHECK_EQ_INT(sd_clip_pair_dim(p), 16);
    float *pixels = test_read_golden("interrogate_pixels.f32", 3 * 32 * 32 * 4);
    float *ref = test_read_golden("interrogate_image.f32", 16 * 4), img[16];
    if (pixels && ref) {
        CHECK_EQ_INT(sd_clip_pair_image_features(p, pixels, img), SD_OK);
        unit(ref, 16);
        double e = rel_err(img, ref, 16);
        CHECK_MSG(e <= 1e-4, "image features: relative error %g", e);
        fprintf(stderr, "  image features: relative error %.3g\n", e);
    }
    json_t *texts = json_object_get(g, "texts");
    int n = (int)json_array_size(texts);
    const char *t[8];
    for (int i = 0; i < n && i < 8; i++)
        t[i] = json_string_value(json_array_get(texts, (size_t)i));
    float *tref = test_read_golden("interrogate_text.f32", (size_t)n * 16 * 4), got[8 * 16];
    if (tref && n <= 8) {
        CHECK_EQ_INT(sd_clip_pair_text_features(p, t, n, got), SD_OK);
        for (int i = 0; i < n; i++) {
            unit(tref + i * 16, 16);
            double e = rel_err(got + i * 16, tref + i * 16, 16);
            CHECK_MSG(e <= 1e-4, "text features of '%s': relative error %g", t[i], e);
        }
    }
    free(pixels);
    free(ref);
    free(tref);
done:
    json_decref(g);
    sd_clip_pair_free(p);
    sd_safetensors_close(st);
}

/* One table from tests/data/interrogate/<file> (each line with prefix; more prefixes append the
 * lines again), embedded with the pair. */
static void load_table(sd_clip_pair *p, sd_label_table *t, const char *name, const char *file,
                       const char *const *prefixes, int n_prefixes)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    if (file) {
        char rel[128], *path, *text = NULL;
        size_t len = 0;
        snprintf(rel, sizeof rel, "tests/data/interrogate/%s", file);
        path = test_path(test_source_dir(), rel);
        CHECK_EQ_INT(sd_file_read_text(ctx, path, 1 << 20, &text, &len), SD_OK);
        for (int k = 0; text && k < n_prefixes; k++)
            CHECK_EQ_INT(sd_label_table_add_lines(ctx, t, text, len, prefixes[k]), SD_OK);
        free(text);
        free(path);
    } else {
        CHECK_EQ_INT(sd_label_table_trendings(ctx, t), SD_OK);
    }
    t->embeds = malloc((size_t)t->n * 16 * sizeof *t->embeds);
    CHECK_EQ_INT(sd_clip_pair_text_features(p, (const char *const *)t->labels, t->n, t->embeds), SD_OK);
}

static void test_reference(void)
{
    sd_safetensors *st = NULL;
    sd_clip_pair *p = open_pair(&st);
    json_t *g = golden_json();
    sd_label_table tables[SD_TABLE_NAMED];
    memset(tables, 0, sizeof tables);
    float *pixels = test_read_golden("interrogate_pixels.f32", 3 * 32 * 32 * 4), img[16];
    if (!p || !g || !pixels)
        goto done;
    CHECK_EQ_INT(sd_clip_pair_image_features(p, pixels, img), SD_OK);
    static const char *const by[2] = {"by ", "inspired by "}, *plain[1] = {""};
    load_table(p, &tables[SD_TABLE_ARTISTS], "artists", "artists.txt", by, 2);
    load_table(p, &tables[SD_TABLE_FLAVORS], "flavors", "flavors.txt", plain, 1);
    load_table(p, &tables[SD_TABLE_MEDIUMS], "mediums", "mediums.txt", plain, 1);
    load_table(p, &tables[SD_TABLE_MOVEMENTS], "movements", "movements.txt", plain, 1);
    load_table(p, &tables[SD_TABLE_TRENDINGS], "trendings", NULL, NULL, 0);
    load_table(p, &tables[SD_TABLE_NEGATIVE], "negative", "negative.txt", plain, 1);
    sd_text_encoder enc = sd_clip_pair_encoder(p);
    sd_interrogate_params params = {
        .chunk_size = (int)json_integer_value(json_object_get(g, "chunk_size")),
        .intermediate_count = (int)json_integer_value(json_object_get(g, "intermediate_count")),
        .min_flavors = 8, .max_flavors = 32};
    const char *caption = json_string_value(json_object_get(g, "caption"));
    json_t *modes = json_object_get(g, "modes");
    for (int m = 0; sd_interrogate_mode_names[m]; m++) {
        char *prompt = NULL;
        sd_status s = sd_interrogate(ctx, &enc, tables, SD_TABLE_NAMED, img, caption, (sd_interrogate_mode)m, &params,
                                     &prompt);
        CHECK_MSG(s == SD_OK, "%s: %s", sd_interrogate_mode_names[m], sd_context_errmsg(ctx));
        const char *want = json_string_value(json_object_get(modes, sd_interrogate_mode_names[m]));
        CHECK_MSG(prompt && want && strcmp(prompt, want) == 0, "mode %s:\n  got  %s\n  want %s",
                  sd_interrogate_mode_names[m], prompt ? prompt : "(null)", want ? want : "(null)");
        free(prompt);
    }
    json_t *tops = json_object_get(g, "tops");
    for (int t = 0; t < SD_TABLE_NAMED; t++) {
        json_t *want = json_object_get(tops, sd_label_table_names[t]);
        int idx[5];
        float score[5];
        int k = sd_label_table_top(&tables[t], 16, img, 5, params.chunk_size, idx, score);
        CHECK_EQ_INT(k, (int)json_array_size(want));
        for (int i = 0; i < k && i < (int)json_array_size(want); i++) {
            json_t *e = json_array_get(want, (size_t)i);
            CHECK_STR_EQ(tables[t].labels[idx[i]], json_string_value(json_array_get(e, 0)));
            CHECK_NEAR(score[i], json_real_value(json_array_get(e, 1)), 1e-4);
        }
    }
done:
    for (int t = 0; t < SD_TABLE_NAMED; t++)
        sd_label_table_clear(&tables[t]);
    free(pixels);
    json_decref(g);
    sd_clip_pair_free(p);
    sd_safetensors_close(st);
}

/* Texts sharing a prompt (a chain step: the prompt's states computed once, packed) get the
 * features each has alone, within 1e-5: own tokens of different lengths, more texts than one
 * pack holds, a shared prompt ending in punctuation, and texts cut at 75 tokens. */
static void test_shared_prefix(void)
{
    sd_safetensors *st = NULL;
    sd_clip_pair *p = open_pair(&st);
    if (!p)
        return;
    static const char *const heads[3] = {"a photograph of a lighthouse, oil painting", "a photo of a dog!",
                                         "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k "
                                         "l m n o p q r s t u v w x y z a b c d e f g h i j k l m n o p q r s t u v"};
    static const char *const tails[5] = {"red", "blue sky at dusk", "x", "highly detailed, trending on artstation",
                                         "(masterpiece)"};
    enum { N = 150 };
    char *texts[N];
    int dim = sd_clip_pair_dim(p);
    float *together = malloc((size_t)N * (size_t)dim * sizeof *together), alone[64];
    CHECK(dim <= 64 && together != NULL);
    for (int h = 0; h < 3 && together; h++) {
        for (int i = 0; i < N; i++) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s, %s %d", heads[h], tails[i % 5], i);
            texts[i] = strdup(buf);
        }
        CHECK_EQ_INT(sd_clip_pair_text_features(p, (const char *const *)texts, N, together), SD_OK);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            CHECK_EQ_INT(sd_clip_pair_text_features(p, (const char *const *)&texts[i], 1, alone), SD_OK);
            for (int k = 0; k < dim; k++)
                worst = fmax(worst, fabs((double)together[(size_t)i * (size_t)dim + (size_t)k] - alone[k]));
            free(texts[i]);
        }
        CHECK_MSG(worst < 1e-5, "prompt %d: packed features differ by %g", h, worst);
    }
    free(together);
    sd_clip_pair_free(p);
    sd_safetensors_close(st);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    sd_context_set_cache_path(ctx, NULL);
    if (sd_cl_get(ctx, &cl) != SD_OK) {
        fprintf(stderr, "%s\n", sd_context_errmsg(ctx));
        return 1;
    }
    RUN(test_features);
    RUN(test_reference);
    RUN(test_shared_prefix);
    sd_context_free(ctx);
    return test_summary("test_interrogate");
}
