/* The restricted unpickler (ml/formats/pickle.c), reached through sd_safetensors_open as every
 * loader reaches it: real torch.save files and malicious pickles (tests/data/pickle, written by
 * tests/reference/make_pickles.py). */
#include "test.h"
#include "ml/formats/pickle.h"
#include "ml/adapters/embeddings.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sd_context *ctx;

static char *data_path(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/pickle");
    char *p = test_path(dir, name);
    free(dir);
    return p;
}

static const sd_st_tensor *find(const sd_safetensors *f, const char *name)
{
    return sd_safetensors_find(f, name);
}

/* A Lightning-style .ckpt opens like a safetensors file: the state dict under "state_dict" (its
 * names are the tensors' names), a numpy global_step, plain hyperparameters; f32, f16 and bf16
 * tensors, a Parameter, a view at an offset. */
static void test_checkpoint(void)
{
    char *path = data_path("tiny.ckpt");
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    if (f) {
        CHECK_EQ_INT(sd_safetensors_count(f), 5);
        const sd_st_tensor *w = find(f, "model.diffusion_model.w");
        CHECK(w && w->dtype == SD_ST_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->nbytes == 24);
        if (w) {
            float v[6];
            CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, w, v), SD_OK);
            CHECK(v[0] == 0 && v[5] == 5);
        }
        const sd_st_tensor *b = find(f, "model.diffusion_model.b");
        CHECK(b && b->dtype == SD_ST_F16 && b->ndim == 1 && b->shape[0] == 4);
        uint16_t h[4] = {0};
        if (b && b->nbytes == sizeof h)
            CHECK(sd_safetensors_read_raw(ctx, f, b, h) == SD_OK && sd_half_to_float(h[0]) == 1.5f);
        const sd_st_tensor *s = find(f, "first_stage_model.s");
        CHECK(s && s->dtype == SD_ST_BF16 && s->ndim == 0 && s->nbytes == 2);
        const sd_st_tensor *p = find(f, "cond_stage_model.p");
        CHECK(p && p->dtype == SD_ST_F32 && p->shape[0] == 2);
        const sd_st_tensor *view = find(f, "view");
        CHECK(view && view->shape[0] == 3);
        if (view) {
            float v[3];
            CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, view, v), SD_OK);
            CHECK(v[0] == 4 && v[2] == 6);
        }
    }
    sd_safetensors_close(f);
    free(path);
    /* The same state dict plain, in the zip format and in the legacy format (before torch 1.6:
     * pickles followed by the storages' bytes). */
    static const char *const plain[] = {"plain.pt", "legacy.pt"};
    for (int k = 0; k < 2; k++) {
        path = data_path(plain[k]);
        CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
        const sd_st_tensor *w = f ? find(f, "model.diffusion_model.w") : NULL, *view = f ? find(f, "view") : NULL;
        CHECK(f && sd_safetensors_count(f) == 5 && w && w->nbytes == 24 && view && view->shape[0] == 3);
        if (w && view) {
            float a[6], b[3];
            CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, w, a), SD_OK);
            CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, view, b), SD_OK);
            CHECK(a[1] == 1 && a[5] == 5 && b[0] == 4 && b[2] == 6);
        }
        sd_safetensors_close(f);
        f = NULL;
        free(path);
    }
}

/* A checkpoint's tensors are read from the file when asked for, never mapped: a file rewritten
 * after it was opened is an I/O error naming it, not stale or mixed data. */
static void test_changed_after_open(void)
{
    char *src = data_path("plain.pt"), *path = test_path(test_scratch_dir(), "changed.pt");
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    char buf[4096];
    size_t got;
    while (in && out && (got = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, got, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    const sd_st_tensor *w = f ? find(f, "model.diffusion_model.w") : NULL;
    CHECK(w != NULL);
    CHECK(truncate(path, 100) == 0);
    float v[6];
    if (w) {
        CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, w, v), SD_ERR_IO);
        CHECK(strstr(sd_context_errmsg(ctx), "changed.pt") != NULL);
    }
    sd_safetensors_close(f);
    free(src);
    free(path);
}

/* A safetensors file whose header length's low byte is 0x80 (a pickle's first byte) is still
 * read as safetensors: the JSON at byte 8 decides. */
static void test_safetensors_not_pickle(void)
{
    char header[129];
    snprintf(header, sizeof header, "%-128s", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    unsigned char file[8 + 128 + 4] = {0x80};
    memcpy(file + 8, header, 128);
    char *path = test_path(test_scratch_dir(), "x80.safetensors");
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite(file, 1, sizeof file, fp);
        fclose(fp);
    }
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    CHECK(f && find(f, "a"));
    sd_safetensors_close(f);
    free(path);
}

/* Real-ESRGAN's .pth: the weights are "params_ema" (not "params"), under their own names. */
static void test_esrgan_pth(void)
{
    char *path = data_path("esrgan.pth");
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    const sd_st_tensor *w = f ? find(f, "conv_first.weight") : NULL;
    CHECK(w && w->ndim == 4 && sd_safetensors_count(f) == 1);
    float *v = w ? malloc(w->nbytes) : NULL;
    if (v) {
        CHECK_EQ_INT(sd_safetensors_read_raw(ctx, f, w, v), SD_OK);
        CHECK(v[0] == 1.0f);
    }
    free(v);
    sd_safetensors_close(f);
    free(path);
}

/* A1111's textual-inversion .pt (string_to_param.*) reads as an embedding. */
static void test_embedding_pt(void)
{
    char *path = data_path("emb.pt");
    sd_embedding e = {0};
    CHECK_EQ_INT(sd_embedding_read(ctx, path, 768, NULL, &e), SD_OK);
    CHECK(e.n_vectors == 2 && e.vectors && e.vectors[0] == 0.5f && e.vectors[2 * 768 - 1] == 0.5f);
    sd_embedding_clear(&e);
    free(path);
}

static void expect(const char *name, sd_status status, const char *msg)
{
    char *path = data_path(name);
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), status);
    CHECK(f == NULL);
    char *want = sd_strfmt("%s: %s", path, msg);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(want);
    free(path);
}

/* Every malicious payload is refused by the name of its global, and nothing runs: the marker
 * file the payloads would create never appears. */
static void test_malicious(void)
{
    char *cwd = getcwd(NULL, 0);
    CHECK_EQ_INT(chdir(test_scratch_dir()), 0);
    expect("os_system.pt", SD_ERR_INVALID, "forbidden global posix.system");
    expect("eval.pt", SD_ERR_INVALID, "forbidden global __builtin__.eval");
    expect("exec.pt", SD_ERR_INVALID, "forbidden global __builtin__.exec");
    expect("subprocess.pt", SD_ERR_INVALID, "forbidden global subprocess.Popen");
    expect("stack_global.pt", SD_ERR_INVALID, "forbidden global os.system");
    expect("getattr.pt", SD_ERR_INVALID, "forbidden global builtins.getattr");
    expect("inst.pt", SD_ERR_INVALID, "forbidden global os.system");
    CHECK(!test_file_exists("sdflow_pickle_marker"));
    if (cwd && chdir(cwd) != 0)
        CHECK(0);
    free(cwd);
}

/* Reads tensor name of file f as f32 into v (n elements). */
static bool read_f32(sd_safetensors *f, const char *name, float *v, size_t n)
{
    const sd_st_tensor *t = f ? find(f, name) : NULL;
    return t && t->numel == n && sd_safetensors_read_f32(ctx, f, t, v, n) == SD_OK;
}

/* Strided views (a transpose at an offset, a permuted f16 slice, an expanded row) read as
 * torch's .contiguous() would give them, from the zip format, the legacy format and a zip whose
 * entries are deflated; data.pkl deflated too. */
static void test_strided_and_deflated(void)
{
    static const char *const files[] = {"strided2.pt", "strided2_legacy.pt", "deflated.pt"};
    /* arange(24).reshape(2, 3, 4).permute(2, 0, 1)[1:3]: p[i][j][k] = 12 j + 4 k + (i + 1) */
    float want_p[12];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                want_p[i * 6 + j * 3 + k] = (float)(12 * j + 4 * k + i + 1);
    for (int k = 0; k < 3; k++) {
        char *path = data_path(files[k]);
        sd_safetensors *f = NULL;
        CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
        float t[6], p[12], e[6], c[4];
        CHECK(read_f32(f, "t", t, 6));
        CHECK(t[0] == 4 && t[1] == 7 && t[2] == 5 && t[3] == 8 && t[4] == 6 && t[5] == 9);
        CHECK(read_f32(f, "p", p, 12) && !memcmp(p, want_p, sizeof p));
        CHECK(read_f32(f, "e", e, 6) && e[0] == 1 && e[2] == 3 && e[3] == 1 && e[5] == 3);
        CHECK(read_f32(f, "c", c, 4) && c[0] == 1 && c[3] == 1);
        const sd_st_tensor *pt = f ? find(f, "p") : NULL;
        CHECK(pt && pt->dtype == SD_ST_F16 && pt->ndim == 3 && pt->shape[0] == 2 && pt->shape[2] == 3);
        if (pt) { /* a range of a materialised tensor */
            float r[2];
            CHECK(sd_safetensors_read_f32_range(ctx, f, pt, 4, 2, r) == SD_OK && r[0] == want_p[4] &&
                  r[1] == want_p[5]);
        }
        sd_safetensors_close(f);
        free(path);
    }
    float t[6];
    char *path = data_path("strided.pt");
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    CHECK(read_f32(f, "t", t, 6) && t[0] == 0 && t[1] == 3 && t[4] == 2 && t[5] == 5);
    sd_safetensors_close(f);
    free(path);
}

/* What cannot be read is refused in one line: another compression method, a deflated entry
 * whose CRC-32 does not match or that claims more than deflate can give (a bomb's claim: found by
 * fuzz_pickle as a 1 GB allocation), a strided view reaching past its storage or repeating its
 * elements beyond the limit (stride 0). */
static void test_unsupported(void)
{
    expect("bomb.pt", SD_ERR_PARSE, "a deflated zip entry claims more bytes than deflate can give");
    expect("repeated.pt", SD_ERR_LIMIT,
           "tensor 'big' repeats its storage's elements into 80000000 bytes (at most 67108864)");
    expect("bzip2.pt", SD_ERR_INVALID, "zip entry compressed with method 12 (only stored and deflated are read)");
    expect("bad_crc.pt", SD_ERR_PARSE, "a deflated zip entry is corrupt (size or CRC-32 mismatch)");
    expect("past_storage.pt", SD_ERR_PARSE, "tensor 'bad' runs past the end of its storage");
}

/* Truncations and byte flips of a real pickle fail cleanly with one line naming the source. */
static void test_mutations(void)
{
    char *path = data_path("tiny.ckpt");
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    sd_safetensors_close(f);
    FILE *fp = fopen(path, "rb");
    unsigned char buf[8192];
    size_t len = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp)
        fclose(fp);
    /* the pickle starts at the first 0x80 0x02; what follows it in the zip is ignored */
    size_t at = 0;
    while (at + 1 < len && !(buf[at] == 0x80 && buf[at + 1] == 0x02))
        at++;
    CHECK(at + 100 < len);
    uint64_t x = 88172645463325252u;
    int failed = 0;
    for (int iter = 0; iter < 400; iter++) {
        unsigned char m[8192];
        memcpy(m, buf + at, len - at);
        size_t n = len - at;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (iter % 2)
            n = (size_t)(x % n);
        else
            m[x % n] = (unsigned char)(x >> 40);
        sd_pickle_tensors t;
        sd_status st = sd_pickle_read(ctx, "mutated", m, n, &t);
        if (st) {
            failed++;
            CHECK(!strncmp(sd_context_errmsg(ctx), "mutated: ", 9) && !strchr(sd_context_errmsg(ctx), '\n'));
        }
        sd_pickle_tensors_free(&t);
    }
    CHECK(failed > 20);
    free(path);
}

int main(void)
{
    if (sd_context_new(&ctx))
        return 2;
    RUN(test_checkpoint);
    RUN(test_safetensors_not_pickle);
    RUN(test_changed_after_open);
    RUN(test_esrgan_pth);
    RUN(test_embedding_pt);
    RUN(test_malicious);
    RUN(test_strided_and_deflated);
    RUN(test_unsupported);
    RUN(test_mutations);
    sd_context_free(ctx);
    return test_summary("test_pickle");
}
