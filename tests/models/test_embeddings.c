/* Textual-inversion embeddings (ml/adapters/embeddings.h) and their use by the CLIP encoder
 * (sd_clip_encode_ex): a 2-vector embedding against transformers' CLIPTextModel with the vectors
 * appended to its token table (tests/reference/make_lora_goldens.py, same tiny checkpoint:
 * sdflow_mkckpt --preset tiny --no-vae --seed 7), reached through the prompt syntax
 * "a embedding:NAME of". Then the file layouts, names with and without extension, weights, and
 * unknown or unusable embeddings (warnings, encoded without them). */
#include "test.h"
#include "support/ops_check.h"
#include "ml/text/clip.h"
#include "core/files.h"
#include "ml/adapters/embeddings.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WIDTH 64
#define TOL 1e-4

static char g_log[4096];
static void collect(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", line);
}

static char *g_models, *g_emb_dir;
static sd_clip_tokenizer *g_tok;

/* Vector v of the golden embedding: 0.05 sin(0.7 i + 1.3 v), as the reference script. */
static sd_status fill_vectors(void *user, size_t index, void *dst, size_t nbytes)
{
    const int *cols = user;
    float *f = dst;
    for (size_t k = 0; k < nbytes / sizeof *f; k++) {
        size_t v = k / (size_t)cols[index], i = k % (size_t)cols[index];
        f[k] = (float)(0.05 * sin(0.7 * (double)i + 1.3 * (double)v));
    }
    return SD_OK;
}

/* Writes <models>/embeddings/<file> with the given tensors (values from fill_vectors). */
static void write_embedding(const char *file, const sd_st_entry *entries, size_t n)
{
    int cols[4];
    for (size_t i = 0; i < n; i++)
        cols[i] = (int)entries[i].shape[entries[i].ndim - 1];
    char *path = test_path(g_emb_dir, file);
    CHECK_EQ_INT(sd_safetensors_write(ops_cl()->ctx, path, entries, n, NULL, fill_vectors, cols), SD_OK);
    free(path);
}

/* An sd_embedding_find_fn searching the context's model directories as a node's look-up does:
 * the first candidate name found (sd_embedding_candidates). */
static char *g_found;
static sd_status find_by_name(void *user, const char *name, const char **path)
{
    sd_context *ctx = user;
    char *names[SD_EMBEDDING_CANDIDATES];
    free(g_found);
    g_found = NULL;
    CHECK_EQ_INT(sd_embedding_candidates(ctx, name, names), SD_OK);
    for (int i = 0; i < SD_EMBEDDING_CANDIDATES && !g_found; i++)
        if (sd_resolve_file(ctx, "embeddings", names[i], &g_found) != SD_OK)
            g_found = NULL;
    sd_embedding_candidates_free(names);
    *path = g_found;
    return SD_OK;
}

/* Tokenizes text with a fresh set (key: sd_embedding_key's); ids for one window; returns the set's rows. */
static int tokenize_key(const char *text, int32_t ids[77], float **rows, sd_prompt_tokens *toks, int width,
                        const char *key)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_embedding_set *set = NULL;
    int n_rows = -1;
    CHECK_EQ_INT(sd_embedding_set_new(ctx, width, key, find_by_name, ctx, &set), SD_OK);
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, g_tok, text, sd_embedding_set_lookup, set, toks), SD_OK);
    CHECK_EQ_INT(sd_embedding_set_error(set), SD_OK);
    CHECK_EQ_INT(toks->n_windows, 1);
    if (toks->n_windows == 1)
        CHECK_EQ_INT(sd_embedding_set_ids(set, toks, 49408, ids, rows, &n_rows), SD_OK);
    sd_embedding_set_free(set);
    return n_rows;
}

static int tokenize(const char *text, int32_t ids[77], float **rows, sd_prompt_tokens *toks, int width)
{
    return tokenize_key(text, ids, rows, toks, width, NULL);
}

/* SDXL files: CLIP-L takes clip_l, bigG clip_g (each its own width); an SD1 file on an SDXL
 * encoder is the set's error, naming the file; clip_l and clip_g of different lengths refused. */
static void test_sdxl(void)
{
    CHECK(sd_embedding_key(SD_FAMILY_SD1, 0) == NULL);
    CHECK_STR_EQ(sd_embedding_key(SD_FAMILY_SDXL, 0), "clip_l");
    CHECK_STR_EQ(sd_embedding_key(SD_FAMILY_SDXL, 1), "clip_g");
    CHECK_STR_EQ(sd_embedding_key(SD_FAMILY_SDXL_REFINER, 0), "clip_g");
    sd_st_entry xl[2] = {{.name = "clip_g", .dtype = SD_ST_F32, .ndim = 2, .shape = {2, 96}},
                         {.name = "clip_l", .dtype = SD_ST_F32, .ndim = 2, .shape = {2, WIDTH}}};
    write_embedding("xl2.safetensors", xl, 2);
    int32_t ids[77];
    float *rows = NULL;
    sd_prompt_tokens toks = {0};
    CHECK_EQ_INT(tokenize_key("a embedding:xl2", ids, &rows, &toks, WIDTH, "clip_l"), 2);
    CHECK(rows && rows[1 * WIDTH + 5] == (float)(0.05 * sin(0.7 * 5 + 1.3)));
    free(rows);
    sd_prompt_tokens_free(&toks);
    CHECK_EQ_INT(tokenize_key("a embedding:xl2", ids, &rows, &toks, 96, "clip_g"), 2);
    CHECK(rows && rows[1 * 96 + 90] == (float)(0.05 * sin(0.7 * 90 + 1.3)));
    free(rows);
    sd_prompt_tokens_free(&toks);

    sd_context *ctx = ops_cl()->ctx;
    sd_embedding_set *set = NULL;
    CHECK_EQ_INT(sd_embedding_set_new(ctx, 96, "clip_g", find_by_name, ctx, &set), SD_OK);
    CHECK_EQ_INT(sd_prompt_tokenize(ctx, g_tok, "a embedding:s2p", sd_embedding_set_lookup, set, &toks), SD_OK);
    CHECK_EQ_INT(sd_embedding_set_error(set), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "s2p.safetensors: no clip_g tensor (an SD1.x embedding?); SDXL text "
                                               "encoders take files with clip_l and clip_g tensors");
    sd_prompt_tokens_free(&toks);
    sd_embedding_set_free(set);
    sd_st_entry uneven[2] = {{.name = "clip_g", .dtype = SD_ST_F32, .ndim = 2, .shape = {3, 96}},
                             {.name = "clip_l", .dtype = SD_ST_F32, .ndim = 2, .shape = {2, WIDTH}}};
    write_embedding("uneven.safetensors", uneven, 2);
    char *path = test_path(g_emb_dir, "uneven.safetensors");
    sd_embedding e;
    CHECK_EQ_INT(sd_embedding_read(ctx, path, WIDTH, "clip_l", &e), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "uneven.safetensors: clip_l has 2 vectors, clip_g 3");
    free(path);
}

static void test_golden(void)
{
    sd_context *ctx = ops_cl()->ctx;
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_vae = false;
    char *ck = test_path(test_scratch_dir(), "ck.safetensors");
    sd_safetensors *st = NULL;
    sd_checkpoint_config found;
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ck, &cfg, SD_ST_F32, 7), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, ck, &st), SD_OK);
    CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &found), SD_OK);
    sd_st_entry e = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {2, WIDTH}};
    write_embedding("golden.safetensors", &e, 1);

    int32_t ids[77];
    float *rows = NULL;
    sd_prompt_tokens toks = {0};
    CHECK_EQ_INT(tokenize("a embedding:golden of", ids, &rows, &toks, WIDTH), 2);
    static const int32_t want[6] = {49406, 320, 49408, 49409, 539, 49407};
    for (int i = 0; i < 77; i++)
        CHECK_EQ_INT(ids[i], i < 6 ? want[i] : 49407);
    sd_clip_model *m = NULL;
    CHECK_EQ_INT(sd_clip_model_new(ops_cl(), st, found.clip_prefix, &found.clip, SD_DTYPE_F32, &m), SD_OK);
    float hidden[77 * WIDTH], pooled[WIDTH];
    CHECK_EQ_INT(sd_clip_encode_ex(m, ids, 1, -1, rows, 2, hidden, pooled), SD_OK);
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *ref = ops_read_golden("ti_hidden.bin", &nd, shape), *pref = ops_read_golden("ti_pooled.bin", &nd, shape);
    double dh = ref ? ops_max_diff(hidden, ref, 77 * WIDTH) : 1e9, dp = pref ? ops_max_diff(pooled, pref, WIDTH) : 1e9;
    CHECK_MSG(dh <= TOL && dp <= TOL, "embedding encoding: hidden %g, pooled %g (tolerance %g)", dh, dp, TOL);
    printf("  2-vector embedding vs transformers: hidden %.2g, pooled %.2g max abs diff\n", dh, dp);
    /* An id past the extra rows is refused. */
    ids[2] = 49408 + 2;
    CHECK_EQ_INT(sd_clip_encode_ex(m, ids, 1, -1, rows, 2, hidden, NULL), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "has no row 49410");
    free(ref);
    free(pref);
    free(rows);
    sd_prompt_tokens_free(&toks);
    sd_clip_model_free(m);
    sd_safetensors_close(st);
    free(ck);
}

/* Layouts, extension, weights. */
static void test_layouts(void)
{
    sd_st_entry s2p = {.name = "string_to_param.*", .dtype = SD_ST_F32, .ndim = 2, .shape = {3, WIDTH}};
    sd_st_entry xl[2] = {{.name = "clip_g", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 96}},
                         {.name = "clip_l", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, WIDTH}}};
    sd_st_entry single = {.name = "whatever", .dtype = SD_ST_F32, .ndim = 1, .shape = {WIDTH}};
    write_embedding("s2p.safetensors", &s2p, 1);
    write_embedding("xl.safetensors", xl, 2);
    write_embedding("single.safetensors", &single, 1);
    int32_t ids[77];
    float *rows = NULL;
    sd_prompt_tokens toks = {0};
    CHECK_EQ_INT(tokenize("embedding:s2p, (embedding:xl.safetensors:1.5) embedding:single", ids, &rows, &toks, WIDTH),
                 5);
    /* BOS, 3 vectors of s2p, ",", xl (weight 1.5), single, EOS */
    static const int32_t want[8] = {49406, 49408, 49409, 49410, 267, 49411, 49412, 49407};
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(ids[i], want[i]);
    CHECK_NEAR(toks.tokens[5].weight, 1.5, 1e-12);
    CHECK_NEAR(toks.tokens[6].weight, 1.0, 1e-12);
    /* Row 3 is xl's clip_l vector (vector 0 of the formula), row 1 is s2p's second vector. */
    CHECK_NEAR(rows[3 * WIDTH + 5], 0.05 * sin(0.7 * 5), 1e-7);
    CHECK_NEAR(rows[1 * WIDTH + 5], 0.05 * sin(0.7 * 5 + 1.3), 1e-7);
    free(rows);
    sd_prompt_tokens_free(&toks);
}

/* Unknown and unusable embeddings: warnings naming them; the text is encoded without them. */
static void test_missing(void)
{
    sd_st_entry wide = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 768}};
    write_embedding("wide.safetensors", &wide, 1);
    int32_t ids[77];
    float *rows = NULL;
    sd_prompt_tokens toks = {0};
    g_log[0] = '\0';
    CHECK_EQ_INT(tokenize("a embedding:nope of embedding:wide", ids, &rows, &toks, WIDTH), 0);
    CHECK(rows == NULL);
    CHECK_STR_CONTAINS(g_log, "embedding:nope does not exist, ignoring"); /* the name, not the rest */
    CHECK(strstr(g_log, "nope of") == NULL);
    CHECK_STR_CONTAINS(g_log, "embedding:wide cannot be used: ");
    CHECK_STR_CONTAINS(g_log, "wide.safetensors: embedding vectors are 768 wide (an SD1.x embedding); the text "
                              "encoder's are 64");
    static const int32_t want[4] = {49406, 320, 539, 49407};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(ids[i], want[i]);
    sd_prompt_tokens_free(&toks);

    sd_context *ctx = ops_cl()->ctx;
    sd_embedding e;
    char *path = test_path(g_emb_dir, "empty.safetensors");
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, NULL, 0, NULL, fill_vectors, NULL), SD_OK);
    CHECK_EQ_INT(sd_embedding_read(ctx, path, WIDTH, NULL, &e), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "empty.safetensors: no embedding tensor (emb_params, "
                                               "string_to_param.*, clip_l, or a single tensor)");
    CHECK(e.vectors == NULL);
    free(path);
    sd_st_entry many = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {76, WIDTH}};
    write_embedding("many.safetensors", &many, 1);
    path = test_path(g_emb_dir, "many.safetensors");
    CHECK_EQ_INT(sd_embedding_read(ctx, path, WIDTH, NULL, &e), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "many.safetensors: embedding has 76 vectors (at most 75)");
    free(path);
}

/* Names with an extension (ComfyUI's own example is embedding:SDA768.pt) and the extensions
 * searched: NAME, NAME.safetensors, NAME.pt, NAME.bin. A broken pickled .pt is refused in one
 * line (tests/models/test_pickle.c reads a real one). */
static void test_names(void)
{
    sd_st_entry e = {.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, WIDTH}};
    write_embedding("other.pt", &e, 1); /* safetensors content under a .pt name */
    char *pickle = test_path(g_emb_dir, "SDA768.pt");
    FILE *f = fopen(pickle, "wb");
    CHECK(f != NULL);
    if (f) {
        static const unsigned char head[] = {0x80, 0x02, 0x63, 0x63, 0x6f, 0x6c, 0x6c, 0x65, 0x63, 0x74};
        fwrite(head, 1, sizeof head, f);
        fclose(f);
    }
    int32_t ids[77];
    float *rows = NULL;
    sd_prompt_tokens toks = {0};
    g_log[0] = '\0';
    CHECK_EQ_INT(tokenize("embedding:other embedding:other.pt embedding:SDA768.pt", ids, &rows, &toks, WIDTH), 2);
    CHECK_EQ_INT(ids[1], 49408); /* "other" found as other.pt */
    CHECK_EQ_INT(ids[2], 49409); /* "other.pt": the same file under its own name */
    CHECK_EQ_INT(ids[3], 49407); /* SDA768.pt found, but a broken pickle: left out */
    CHECK(rows && memcmp(rows, rows + WIDTH, WIDTH * sizeof *rows) == 0);
    CHECK_STR_CONTAINS(g_log, "embedding:SDA768.pt cannot be used: ");
    CHECK_STR_CONTAINS(g_log, "SDA768.pt: truncated GLOBAL");
    free(rows);
    sd_prompt_tokens_free(&toks);
    free(pickle);
}

int main(void)
{
    if (!ops_cl())
        return test_summary("test_embeddings");
    sd_context *ctx = ops_cl()->ctx;
    sd_context_set_log(ctx, collect, NULL);
    g_models = test_path(test_scratch_dir(), "models");
    g_emb_dir = test_path(g_models, "embeddings");
    CHECK(mkdir(g_models, 0755) == 0 && mkdir(g_emb_dir, 0755) == 0);
    sd_context_clear_models_dirs(ctx);
    CHECK_EQ_INT(sd_context_add_models_dir(ctx, g_models), SD_OK);
    CHECK_EQ_INT(sd_clip_tokenizer_new(ctx, &g_tok), SD_OK);
    RUN(test_golden);
    RUN(test_layouts);
    RUN(test_missing);
    RUN(test_names);
    RUN(test_sdxl);
    sd_clip_tokenizer_free(g_tok);
    free(g_found);
    free(g_emb_dir);
    free(g_models);
    ops_cl_release();
    return test_summary("test_embeddings");
}
