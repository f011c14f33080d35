/* The ONNX reader and executor (ml/formats/onnx.h, ml/onnx/onnx_graph.h) and InsightFace face
 * analysis (ml/vision/face_analysis.h) against tests/reference/make_faceid_goldens.py: tiny
 * random-weight SCRFD-10G-bnkps- and IResNet-shaped ONNX files exported by torch.onnx, their
 * outputs from onnx's ReferenceEvaluator, insightface's detection, alignment and embedding re-stated
 * in Python with cv2 and skimage, norm_crop at 112 and 128; hostile ONNX files give one-line errors. */
#include "test.h"
#include "support/golden.h"
#include "ml/onnx/onnx_graph.h"
#include "ml/vision/face_analysis.h"
#include "runtime-opencl/runtime.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

static sd_context *ctx;
static sd_cl *cl;

static char *pack_path(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/insightface/tiny_pack");
    char *p = name ? test_path(dir, name) : NULL;
    if (!name)
        return dir;
    free(dir);
    return p;
}

/* Relative error of a against ref: max |a - ref| / max |ref|. */
static double rel_err(const float *a, const float *ref, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(ref[i]));
    return test_max_abs_diff(a, ref, n) / (m > 0 ? m : 1);
}

/* Runs the file on a golden input of shape dims; compares all outputs, concatenated, to the golden. */
static void graph_case(const char *file, const char *gin, const char *gout, const int64_t dims[4], size_t n_out)
{
    char *path = pack_path(file);
    sd_onnx_graph *g = NULL;
    sd_status st = sd_onnx_graph_load(cl, path, &g);
    CHECK_MSG(st == SD_OK, "load: %s", sd_context_errmsg(ctx));
    size_t n_in = (size_t)(dims[0] * dims[1] * dims[2] * dims[3]);
    float *x = test_read_golden(gin, n_in * 4), *ref = test_read_golden(gout, n_out * 4);
    if (g && x && ref) {
        sd_onnx_array in = {.ndim = 4, .dims = {dims[0], dims[1], dims[2], dims[3]}, .numel = n_in, .data = x};
        size_t k = sd_onnx_graph_output_count(g), at = 0;
        sd_onnx_array *outs = calloc(k, sizeof *outs);
        st = sd_onnx_graph_run(g, &in, outs);
        CHECK_MSG(st == SD_OK, "run: %s", sd_context_errmsg(ctx));
        for (size_t i = 0; st == SD_OK && i < k; i++) {
            CHECK(at + outs[i].numel <= n_out);
            if (at + outs[i].numel > n_out)
                break;
            double e = rel_err(outs[i].data, ref + at, outs[i].numel);
            CHECK_MSG(e <= 1e-4, "%s output %zu: relative error %g", file, i, e);
            at += outs[i].numel;
        }
        CHECK_EQ_INT(at, n_out);
        for (size_t i = 0; i < k; i++)
            sd_onnx_array_free(&outs[i]);
        free(outs);
    }
    free(x);
    free(ref);
    free(path);
    sd_onnx_graph_free(g);
}

static void test_executor(void)
{
    const int64_t det[4] = {1, 3, 96, 64}, rec[4] = {1, 3, 112, 112};
    /* 9 outputs: scores, boxes, keypoints at strides 8, 16, 32 of a 96x64 input, 2 anchors */
    size_t cells = (12 * 8 + 6 * 4 + 3 * 2) * 2;
    graph_case("det_tiny.onnx", "onnx_det_in.f32", "onnx_det_out.f32", det, cells * 15);
    graph_case("rec_tiny.onnx", "onnx_rec_in.f32", "onnx_rec_out.f32", rec, 512);
}

/* norm_crop of a random 120x90 image equals cv2.warpAffine's bytes at 112 and 128. */
static void test_norm_crop(void)
{
    const int w = 120, h = 90;
    const float lmk[10] = {40.3f, 38.1f, 77.9f, 36.2f, 60.5f, 55.7f, 45.2f, 72.8f, 74.1f, 71.3f};
    unsigned char *img = test_read_golden("norm_crop_in.u8", (size_t)w * h * 3);
    float *rgb = malloc((size_t)w * h * 3 * sizeof *rgb);
    for (size_t i = 0; img && i < (size_t)w * h * 3; i++)
        rgb[i] = (img[i] + 0.5f) / 255.0f;
    const int sizes[2] = {112, 128};
    for (int s = 0; img && s < 2; s++) {
        int size = sizes[s];
        char name[32];
        snprintf(name, sizeof name, "norm_crop_%d.u8", size);
        unsigned char *ref = test_read_golden(name, (size_t)size * size * 3), *got = malloc((size_t)size * size * 3);
        float *out = malloc((size_t)size * size * 3 * sizeof *out);
        CHECK_EQ_INT(sd_face_norm_crop(ctx, rgb, w, h, lmk, size, out), SD_OK);
        for (size_t i = 0; i < (size_t)size * size * 3; i++)
            got[i] = (unsigned char)lrintf(out[i] * 255.0f);
        size_t first, diff = ref ? test_count_diff_u8(got, ref, (size_t)size * size * 3, &first) : 1;
        CHECK_MSG(diff == 0, "norm_crop %d: %zu bytes differ from cv2", size, diff);
        free(ref), free(got), free(out);
    }
    float none[1];
    CHECK_EQ_INT(sd_face_norm_crop(ctx, rgb, w, h, lmk, 100, none), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not a multiple of 112 or 128");
    free(img), free(rgb);
}

/* Max abs difference within tol times the largest reference magnitude (at least 1). */
static void compare_array(json_t *a, const float *got, size_t n, double tol, const char *what)
{
    CHECK_EQ_INT(json_array_size(a), n);
    double m = 0, big = 1;
    for (size_t i = 0; i < n && i < json_array_size(a); i++) {
        double r = json_real_value(json_array_get(a, i));
        m = fmax(m, fabs(r - got[i]));
        big = fmax(big, fabs(r));
    }
    CHECK_MSG(m <= tol * big, "%s: max abs diff %g > %g x %g", what, m, tol, big);
}

/* FaceAnalysis.get on the two golden images: every face, box, landmark, score and embedding. */
static void test_faces(void)
{
    char *gpath = test_golden_path("face_analysis.json"), *dir = pack_path(NULL);
    json_t *root = json_load_file(gpath, 0, NULL);
    CHECK(root != NULL);
    sd_face_analysis *fa = NULL;
    sd_status st = sd_face_analysis_load(ctx, cl, dir, &fa);
    CHECK_MSG(st == SD_OK, "load: %s", sd_context_errmsg(ctx));
    const char *key;
    json_t *img;
    json_object_foreach(root, key, img) {
        if (!fa)
            break;
        int w = (int)json_integer_value(json_object_get(img, "width"));
        int h = (int)json_integer_value(json_object_get(img, "height"));
        int det = (int)json_integer_value(json_object_get(img, "det_size"));
        char name[32];
        snprintf(name, sizeof name, "face_img_%s.f32", key);
        float *px = test_read_golden(name, (size_t)w * h * 3 * 4);
        if (!px)
            continue;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) /* 8-bit values that trunc(255 x) gives back */
            px[i] = (px[i] + 0.5f) / 255.0f;
        sd_face *faces = NULL;
        size_t n = 0;
        st = sd_face_analysis_run(ctx, fa, px, w, h, det, &faces, &n);
        CHECK_MSG(st == SD_OK, "run %s: %s", key, sd_context_errmsg(ctx));
        json_t *ref = json_object_get(img, "faces");
        CHECK_MSG(n == json_array_size(ref), "image %s: %zu faces, reference %zu", key, n, json_array_size(ref));
        for (size_t i = 0; i < n && i < json_array_size(ref); i++) {
            json_t *f = json_array_get(ref, i);
            compare_array(json_object_get(f, "box"), faces[i].box, 4, 1e-5, "box");
            compare_array(json_object_get(f, "kps"), faces[i].landmarks, 10, 1e-5, "landmarks");
            CHECK_NEAR(json_real_value(json_object_get(f, "score")), faces[i].score, 1e-5);
            compare_array(json_object_get(f, "embedding"), faces[i].embedding, 512, 1e-4, "embedding");
        }
        fprintf(stderr, "  image %s (%dx%d, det %d): %zu faces\n", key, w, h, det, n);
        free(faces);
        free(px);
    }
    /* ComfyUI_IPAdapter_plus's retry starts at 640 (the 64x48 image scaled up tenfold) */
    float *pa = test_read_golden("face_img_a.f32", 64 * 48 * 3 * 4);
    sd_face *found = NULL;
    size_t nf = 0;
    for (size_t i = 0; pa && i < 64 * 48 * 3; i++)
        pa[i] = (pa[i] + 0.5f) / 255.0f;
    if (fa && pa)
        CHECK_EQ_INT(sd_face_analysis_run_retry(ctx, fa, pa, 64, 48, &found, &nf), SD_OK);
    CHECK((found == NULL) == (nf == 0));
    free(found);
    free(pa);
    /* a blank image: no face, not an error */
    float *blank = calloc(64 * 64 * 3, sizeof *blank);
    sd_face *faces = NULL;
    size_t n = 7;
    if (fa)
        CHECK_EQ_INT(sd_face_analysis_run(ctx, fa, blank, 64, 64, 64, &faces, &n), SD_OK);
    CHECK(faces == NULL || n > 0);
    free(faces);
    free(blank);
    CHECK(sd_face_analysis_ref(fa) == fa);
    sd_face_analysis_unref(fa);
    sd_face_analysis_unref(fa);
    json_decref(root);
    free(gpath);
    free(dir);
}

/* ---- hostile files ---- */

/* Writes the packed model m to the scratch file name; returns its path. */
static char *write_model(const Onnx__ModelProto *m, const char *name)
{
    size_t len = onnx__model_proto__get_packed_size(m);
    uint8_t *buf = malloc(len);
    onnx__model_proto__pack(m, buf);
    char *path = test_path(test_scratch_dir(), name);
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    return path;
}

static void expect_load_error(const char *path, sd_status want, const char *needle)
{
    sd_onnx_graph *g = NULL;
    sd_status st = sd_onnx_graph_load(cl, path, &g);
    CHECK_MSG(st == want, "%s: status %d, want %d (%s)", path, st, want, sd_context_errmsg(ctx));
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), needle);
    CHECK(strchr(sd_context_errmsg(ctx), '\n') == NULL);
    sd_onnx_graph_free(g);
}

static void test_hostile(void)
{
    char *src = pack_path("det_tiny.onnx");
    sd_onnx_file *f = NULL;
    CHECK_EQ_INT(sd_onnx_open(ctx, src, &f), SD_OK);
    if (!f)
        return;
    Onnx__GraphProto *g = f->model->graph;
    Onnx__TensorProto *t = g->initializer[0];
    char *p;

    char *op = g->node[0]->op_type;
    g->node[0]->op_type = "FancyOp";
    p = write_model(f->model, "unknown_op.onnx");
    expect_load_error(p, SD_ERR_INVALID, "operator FancyOp is not supported");
    free(p);
    g->node[0]->op_type = op;

    int64_t d0 = t->dims[0];
    t->dims[0] = d0 + 1;
    p = write_model(f->model, "wrong_dims.onnx");
    expect_load_error(p, SD_ERR_INVALID, "bytes of data for");
    free(p);
    t->dims[0] = (int64_t)1 << 40;
    p = write_model(f->model, "huge_dims.onnx");
    expect_load_error(p, SD_ERR_LIMIT, "dimensions negative or too large");
    free(p);
    t->dims[0] = -4;
    p = write_model(f->model, "negative_dims.onnx");
    expect_load_error(p, SD_ERR_LIMIT, "dimensions negative or too large");
    free(p);
    t->dims[0] = d0;

    t->data_type = 11; /* double */
    p = write_model(f->model, "double.onnx");
    expect_load_error(p, SD_ERR_INVALID, "data type 11 is not supported");
    free(p);
    t->data_type = SD_ONNX_FLOAT;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    p = write_model(f->model, "external.onnx");
    expect_load_error(p, SD_ERR_INVALID, "external data is not supported");
    free(p);
    t->has_data_location = 0;

    /* an input the graph's Gemm does not fit fails when it runs, naming the file and node */
    char *rec = pack_path("rec_tiny.onnx");
    sd_onnx_graph *rg = NULL;
    CHECK_EQ_INT(sd_onnx_graph_load(cl, rec, &rg), SD_OK);
    float *small = calloc(3 * 64 * 64, sizeof *small);
    sd_onnx_array sin = {.ndim = 4, .dims = {1, 3, 64, 64}, .numel = 3 * 64 * 64, .data = small}, sout = {0};
    if (rg)
        CHECK_EQ_INT(sd_onnx_graph_run(rg, &sin, &sout), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "rec_tiny.onnx: node /fc/Gemm (Gemm)");
    CHECK(sout.data == NULL);
    free(small);
    free(rec);
    sd_onnx_graph_free(rg);

    /* truncated: half of the real file */
    struct stat sb;
    stat(src, &sb);
    FILE *in = fopen(src, "rb");
    size_t half = (size_t)sb.st_size / 2;
    uint8_t *buf = malloc(half);
    CHECK_EQ_INT(fread(buf, 1, half, in), half);
    fclose(in);
    p = test_path(test_scratch_dir(), "truncated.onnx");
    FILE *out = fopen(p, "wb");
    fwrite(buf, 1, half, out);
    fclose(out);
    expect_load_error(p, SD_ERR_PARSE, "not an ONNX model");
    free(p);
    free(buf);

    /* messages nested 60 deep (graph fields inside graph fields) */
    uint8_t deep[120];
    size_t n = 0;
    for (int i = 0; i < 60; i++) {
        deep[n++] = 0x3a;                     /* field 7, length-delimited */
        deep[n++] = (uint8_t)(2 * (59 - i));  /* the bytes that follow (a one-byte varint) */
    }
    sd_onnx_file *df = NULL;
    CHECK_EQ_INT(sd_onnx_parse(ctx, "deep.onnx", deep, n, &df), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "deep.onnx: messages nested more than");
    sd_onnx_close(df);
    sd_onnx_close(f);

    /* a pack without a recognizer, a missing pack */
    char *dir = test_path(test_scratch_dir(), "pack");
    mkdir(dir, 0755);
    char *dst = test_path(dir, "det.onnx");
    test_copy_file(src, dst);
    sd_face_analysis *fa = NULL;
    CHECK_EQ_INT(sd_face_analysis_load(ctx, cl, dir, &fa), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "no InsightFace recognition model");
    CHECK_EQ_INT(sd_face_analysis_load(ctx, cl, "/nonexistent/pack", &fa), SD_ERR_NOT_FOUND);
    CHECK(fa == NULL);
    free(dst);
    free(dir);
    free(src);
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
    RUN(test_executor);
    RUN(test_norm_crop);
    RUN(test_faces);
    RUN(test_hostile);
    sd_context_free(ctx);
    return test_summary("test_face_analysis");
}
