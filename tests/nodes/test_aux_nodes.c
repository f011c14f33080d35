/* The no-model ControlNet preprocessors (nodes/aux_lines.c) against comfyui_controlnet_aux's
 * annotators run with numpy and OpenCV (goldens from tests/reference/make_aux_goldens.py):
 * ScribblePreprocessor, Scribble_XDoG_Preprocessor (threshold 32 and 8) and
 * BinaryPreprocessor (threshold 100 and Otsu's) at resolution 64 on five image shapes, every
 * output sample equal; a batch of two gives each item's own result; the output size follows
 * the detect resolution; a 2-channel image is refused with the node's message.
 * HEDPreprocessor through the scheduler (LoadImage -> HEDPreprocessor) with the tiny network of
 * tests/reference/make_hed_goldens.py as models/annotators/ControlNetHED.safetensors: its edge
 * maps (safe off and on) equal the reference's, cut to the detect size; a missing annotator file
 * is a validation error naming it. LineArtPreprocessor likewise with the tiny line art network
 * (tests/reference/make_lineart_goldens.py) as annotators/sk_model.safetensors; coarse reads
 * sk_model2.safetensors instead. PiDiNetPreprocessor with the tiny PiDiNet
 * (tests/reference/make_pidinet_goldens.py) within one level on at most 3 samples.
 * FakeScribblePreprocessor and Scribble_PiDiNet_Preprocessor (the scribble endings) equal.
 * DepthAnythingV2Preprocessor with the tiny .pth of tests/reference/make_depth_goldens.py: its
 * 8-bit depth, resized after the network, equal. MiDaS-DepthMapPreprocessor and
 * MiDaS-NormalMapPreprocessor with the tiny DPT-Hybrid .pt within one level on a few samples.
 * BAE-NormalMapPreprocessor with the tiny .pt of tests/reference/make_bae_goldens.py as
 * annotators/scannet.pt: its RGB normal image equal; another network's file and a truncated .pt
 * named in one-line validation errors. */
#include "test.h"
#include "core/run.h"
#include "ml/formats/safetensors.h"
#include "support/aux_cases.h"
#include "support/golden.h"
#include "support/node_direct.h"
#include "support/png_fixture.h"
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

static sd_context *ctx;

/* An IMAGE value of `batch` copies of the case's input as LoadImage gives it (v / 255). */
static sd_value *input_image(const aux_case *c, int batch)
{
    char name[64];
    snprintf(name, sizeof name, "aux_in_%s.u8", c->name);
    size_t n = (size_t)c->h * c->w * 3;
    unsigned char *px = test_read_golden(name, n);
    float *f = malloc(sizeof(float) * n * batch);
    for (size_t i = 0; px && f && i < n * batch; i++)
        f[i] = (float)px[i % n] / 255.0f;
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    if (px && f)
        test_put_tensor(v, "image", 4, (const int64_t[]){batch, c->h, c->w, 3}, f);
    free(px);
    free(f);
    return v;
}

/* Runs `type` with its integer parameter (NULL: none) at resolution 64 and compares every item
 * with aux_<tag>_<case>.u8. */
static void expect_golden(const char *type, const char *tag, int64_t param, int batch)
{
    for (size_t i = 0; i < AUX_N_CASES; i++) {
        const aux_case *c = &aux_cases[i];
        char name[64];
        snprintf(name, sizeof name, "aux_%s_%s.u8", tag, c->name);
        size_t n = (size_t)c->th * c->tw;
        unsigned char *want = test_read_golden(name, n);
        sd_value *img = input_image(c, batch), *p = sd_value_int(param), *res = sd_value_int(64);
        sd_value *in[3] = {img, p, res};
        if (strcmp(type, "ScribblePreprocessor") == 0)
            in[1] = res;
        sd_status st;
        sd_value *out = test_run_node(ctx, type, in, &st);
        CHECK_MSG(st == SD_OK, "%s: %s", type, sd_context_errmsg(ctx));
        const sd_tensor *t = out ? sd_value_tensor(out, "image") : NULL;
        CHECK(t && t->ndim == 4 && t->shape[0] == batch && t->shape[1] == c->th && t->shape[2] == c->tw &&
              t->shape[3] == 3);
        int bad = 0;
        for (size_t k = 0; t && want && t->shape[1] == c->th && t->shape[2] == c->tw && k < n * 3 * batch; k++)
            bad += t->data[k] != (float)want[(k / 3) % n] / 255.0f;
        CHECK_MSG(bad == 0, "%s on %s: %d samples differ", type, name, bad);
        sd_value_unref(out);
        sd_value_unref(img);
        sd_value_unref(p);
        sd_value_unref(res);
        free(want);
    }
}

static void test_scribble(void)
{
    expect_golden("ScribblePreprocessor", "scribble", 0, 1);
}

static void test_xdog(void)
{
    expect_golden("Scribble_XDoG_Preprocessor", "xdog32", 32, 1);
    expect_golden("Scribble_XDoG_Preprocessor", "xdog8", 8, 1);
}

static void test_binary(void)
{
    expect_golden("BinaryPreprocessor", "binary100", 100, 1);
    expect_golden("BinaryPreprocessor", "binary0", 0, 1);
}

static void test_batch(void)
{
    expect_golden("Scribble_XDoG_Preprocessor", "xdog32", 32, 2);
}

static void test_bad_channels(void)
{
    sd_value *img = sd_value_new(SD_TYPE_IMAGE), *res = sd_value_int(64);
    test_put_tensor(img, "image", 4, (const int64_t[]){1, 2, 2, 2}, (const float[8]){0});
    sd_value *in[2] = {img, res};
    sd_status st;
    sd_value *out = test_run_node(ctx, "ScribblePreprocessor", in, &st);
    CHECK(out == NULL && st == SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx),
                 "node 'n' (ScribblePreprocessor): images with 2 channels are not supported (1, 3 or 4)");
    sd_value_unref(img);
    sd_value_unref(res);
}

/* LoadImage "load" (in.png, the "up" case) -> `type` "pre" at resolution 64 with the given
 * name / value pairs (NULL-terminated). */
static sd_graph *pre_graph(const char *type, const char *const *set)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "load", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "load", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, type, "pre", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "pre", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "pre", "resolution", "64"), SD_OK);
    for (; set && *set; set += 2)
        CHECK_EQ_INT(sd_graph_set_input(g, "pre", set[0], set[1]), SD_OK);
    return g;
}

/* Runs pre_graph(type, set) (*g, *res: to free): its output tensor, NULL after a failed check. */
static const sd_tensor *run_pre(const char *type, const char *const *set, sd_graph **g, sd_result **res)
{
    *g = pre_graph(type, set);
    const char *outs[] = {"pre"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_status st = sd_graph_run(*g, &opt, res);
    CHECK_MSG(st == SD_OK, "%s: %s", type, sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(*res, "pre", "IMAGE");
    return v ? sd_value_tensor(v, "image") : NULL;
}

/* Runs pre_graph(type, set) and compares its output with the first 77 rows of the golden plane
 * `golden`, `rows` x 64 (the "up" case's detect size is 77 x 64; padded planes have 128 rows):
 * at most max_off samples one level away (0: equal). */
static void expect_graph(const char *type, const char *const *set, const char *golden, int rows, int max_off)
{
    const aux_case *c = &aux_cases[0];
    unsigned char *want = test_read_golden(golden, (size_t)rows * 64);
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const sd_tensor *t = run_pre(type, set, &g, &res);
    CHECK(t && t->shape[0] == 1 && t->shape[1] == c->th && t->shape[2] == c->tw && t->shape[3] == 3);
    int bad = 0, far = 0;
    for (int i = 0; t && want && t->shape[1] == c->th && t->shape[2] == c->tw && i < c->th * c->tw * 3; i++) {
        float ref = (float)want[(i / 3 / c->tw) * 64 + (i / 3) % c->tw];
        bad += t->data[i] != ref / 255.0f;
        far += fabsf(t->data[i] * 255.0f - ref) > 1.001f;
    }
    CHECK_MSG(bad <= max_off && far == 0, "%s against %s: %d samples differ, %d by more than one level", type, golden,
              bad, far);
    sd_result_free(res);
    sd_graph_free(g);
    free(want);
}

static void test_hed(void)
{
    expect_graph("HEDPreprocessor", (const char *const[]){"safe", "disable", NULL}, "hed_edge.u8", 128, 0);
    expect_graph("HEDPreprocessor", (const char *const[]){"safe", "enable", NULL}, "hed_safe.u8", 128, 0);
}

static void test_hed_missing_file(void)
{
    sd_graph *g = pre_graph("HEDPreprocessor", (const char *const[]){"ckpt_name", "nope.safetensors", NULL});
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "nope.safetensors");
    printf("missing annotator file: %s\n", sd_context_diag(ctx, 0));
    sd_result_free(res);
    sd_graph_free(g);
}

/* FakeScribblePreprocessor: HED (safe) and the scribble ending on the padded plane;
 * Scribble_PiDiNet_Preprocessor: PiDiNet (safe), the ending, and the ending again on the cut
 * plane. */
static void test_scribble_endings(void)
{
    expect_graph("FakeScribblePreprocessor", (const char *const[]){"safe", "enable", NULL}, "hed_scribble.u8", 128, 0);
    expect_graph("Scribble_PiDiNet_Preprocessor", (const char *const[]){"safe", "enable", NULL}, "pidinet_scribble.u8",
                 77, 0);
}

/* sdflow's classifier output puts one sample of the tiny PiDiNet's plane one level off (its
 * model test); the channels are given in BGR. */
static void test_pidinet(void)
{
    expect_graph("PiDiNetPreprocessor", (const char *const[]){"safe", "disable", NULL}, "pidinet_map.u8", 128, 3);
    expect_graph("PiDiNetPreprocessor", (const char *const[]){"safe", "enable", NULL}, "pidinet_safe.u8", 128, 3);
}

/* The fine model is the tiny line art network; the coarse file holds the HED network, so
 * coarse "enable" fails before anything runs (the check hook), naming sk_model2. */
static void test_lineart(void)
{
    expect_graph("LineArtPreprocessor", (const char *const[]){"coarse", "disable", NULL}, "lineart_map.u8", 128, 0);
    sd_graph *g = pre_graph("LineArtPreprocessor", (const char *const[]){"coarse", "enable", NULL});
    const char *outs[] = {"pre"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &opt, &res), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "node 'pre' input 'coarse_ckpt_name': ");
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "sk_model2.safetensors: not a line art network: tensor "
                                                "'model0.1.weight' is missing");
    CHECK(res == NULL || sd_result_file_count(res) == 0);
    sd_result_free(res);
    sd_graph_free(g);
}

/* DepthAnythingV2Preprocessor: the tiny .pth (tests/reference/make_depth_goldens.py) on the
 * unresized image, its 8-bit depth resized to the detect size. */
static void test_depth_anything(void)
{
    expect_graph("DepthAnythingV2Preprocessor", (const char *const[]){"ckpt_name", "depth_anything_v2_vits.pth", NULL},
                 "depth_map.u8", 77, 0);
}

/* MiDaS-DepthMapPreprocessor and MiDaS-NormalMapPreprocessor with the tiny DPT-Hybrid
 * (tests/reference/make_midas_goldens.py) on the padded image: the depth image and the normal
 * map (a 2 pi, bg_threshold 0.1) cut to the detect size, within one level on a few samples (the
 * network's float error; the maps alone are exact in tests/models/test_midas_maps.c). */
static void test_midas(void)
{
    expect_graph("MiDaS-DepthMapPreprocessor", NULL, "midas_node_depth.u8", 128, 9); /* 3 pixels */
    unsigned char *want = test_read_golden("midas_node_normal.u8", 128 * 64 * 3);
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const sd_tensor *t = run_pre("MiDaS-NormalMapPreprocessor", NULL, &g, &res);
    CHECK(t && t->shape[1] == 77 && t->shape[2] == 64 && t->shape[3] == 3);
    int off = 0, far = 0;
    for (int i = 0; t && want && t->shape[1] == 77 && t->shape[2] == 64 && i < 77 * 64 * 3; i++) {
        float d = fabsf(t->data[i] * 255.0f - (float)want[i]);
        off += d > 0.001f;
        far += d > 1.001f;
    }
    printf("MiDaS normal map: %d of %d samples one level off\n", off, 77 * 64 * 3);
    CHECK_MSG(off <= 16 && far == 0, "normal map: %d samples differ, %d by more than one level", off, far);
    sd_result_free(res);
    sd_graph_free(g);
    free(want);
}

/* BAE-NormalMapPreprocessor: the normal image of the padded input cut to the detect size. */
static void test_bae(void)
{
    unsigned char *want = test_read_golden("bae_map.u8", 128 * 64 * 3);
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const sd_tensor *t = run_pre("BAE-NormalMapPreprocessor", NULL, &g, &res);
    CHECK(t && t->shape[1] == 77 && t->shape[2] == 64 && t->shape[3] == 3);
    int bad = 0;
    for (int i = 0; t && want && t->shape[1] == 77 && t->shape[2] == 64 && i < 77 * 64 * 3; i++)
        bad += t->data[i] != (float)want[i] / 255.0f;
    CHECK_MSG(bad == 0, "BAE normal image: %d samples differ", bad);
    sd_result_free(res);
    sd_graph_free(g);
    free(want);
    const char *const files[][2] = {{"ControlNetHED.safetensors", "not a BAE normal network: tensor "
                                                                  "'encoder.original_model.conv_stem.weight' is missing"},
                                    {"scannet_cut.pt", "scannet_cut.pt: "}};
    for (int i = 0; i < 2; i++) {
        g = pre_graph("BAE-NormalMapPreprocessor", (const char *const[]){"ckpt_name", files[i][0], NULL});
        CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        const char *diag = sd_context_diag(ctx, 0);
        CHECK_STR_CONTAINS(diag, "node 'pre' input 'ckpt_name': ");
        CHECK_STR_CONTAINS(diag, files[i][1]);
        CHECK(!strchr(diag, '\n'));
        printf("bad BAE file: %s\n", diag);
        sd_result_free(res);
        sd_graph_free(g);
    }
}

/* Scratch input, output and models directories; in.png is the "up" case; the tiny networks in
 * models/annotators. */
static void setup_dirs(void)
{
    char *input = test_path(test_scratch_dir(), "input"), *models = test_path(test_scratch_dir(), "models");
    char *output = test_path(test_scratch_dir(), "output"), *ann = test_path(models, "annotators");
    mkdir(input, 0777);
    mkdir(models, 0777);
    mkdir(output, 0777);
    mkdir(ann, 0777);
    sd_context_set_dir(ctx, SD_DIR_INPUT, input);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, output);
    sd_context_clear_models_dirs(ctx);
    sd_context_add_models_dir(ctx, models);
    unsigned char *px = test_read_golden("aux_in_up.u8", 48 * 40 * 3);
    fixture fx = {.w = 40, .h = 48, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    free(write_fixture("input/in.png", &fx));
    char *src_dir = test_path(test_source_dir(), "tests/data/goldens");
    const char *copies[][2] = {{"hed_tiny.safetensors", "ControlNetHED.safetensors"},
                               {"lineart_tiny.safetensors", "sk_model.safetensors"},
                               {"hed_tiny.safetensors", "sk_model2.safetensors"},
                               {"pidinet_tiny.safetensors", "table5_pidinet.safetensors"},
                               {"pose_body.safetensors", "body_pose_model.pth"},
                               {"depth_tiny.pth", "depth_anything_v2_vits.pth"},
                               {"midas_tiny.pt", "dpt_hybrid-midas-501f0c75.pt"},
                               {"pose_hand.safetensors", "hand_pose_model.pth"},
                               {"bae_tiny.pt", "scannet.pt"},
                               {"pose_face.pth", "facenet.pth"}};
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
        char *src = test_path(src_dir, copies[i][0]), *dst = test_path(ann, copies[i][1]);
        size_t len = 0;
        unsigned char *net = read_bytes(src, &len);
        write_bytes(dst, net, len);
        if (strcmp(copies[i][1], "scannet.pt") == 0) { /* and its first half: a truncated .pt */
            char *cut = test_path(ann, "scannet_cut.pt");
            write_bytes(cut, net, len / 2);
            free(cut);
        }
        free(net), free(src), free(dst);
    }
    free(px), free(src_dir);
    free(input), free(models), free(output), free(ann);
}

/* OpenposePreprocessor at resolution 192 with the tiny random body, hand and face networks: an
 * RGB canvas of the detect size with skeletons drawn (the random network's many near-tied
 * "people" are no golden: the maps, people, hands, faces and drawing are checked on exact inputs
 * in tests/models); detect_hand runs with the hand file (the random people have no hand box, so
 * the image is the bodies'); detect_face adds white face points and face_keypoints_2d lists; the
 * POSE_KEYPOINT value (its own socket type) holds the people and the output's size; a
 * resolution of 64 (a detect image of 128 rows) runs; a body network finding nobody gives no
 * faces and no error; a body file given as the hand network named before anything runs. */
/* models/annotators/nobody.safetensors: the tiny body network with its last heatmap biases at
 * -100, so its (ReLU'd) heatmaps are 0 and nobody is found. */
static void write_nobody_net(void)
{
    char *src = test_golden_path("pose_body.safetensors"), *models = test_path(test_scratch_dir(), "models");
    char *ann = test_path(models, "annotators"), *dst = test_path(ann, "nobody.safetensors");
    size_t len = 0;
    unsigned char *bytes = read_bytes(src, &len);
    sd_safetensors *st = NULL;
    const sd_st_tensor *b = NULL;
    if (bytes && sd_safetensors_open(ctx, src, &st) == SD_OK)
        b = sd_safetensors_find(st, "Mconv7_stage6_L2.bias");
    CHECK(b && b->dtype == SD_ST_F16 && b->offset + b->nbytes <= len);
    for (size_t i = 0; b && i < b->numel; i++) /* f16 -100: 0xD640, little-endian */
        bytes[b->offset + 2 * i] = 0x40, bytes[b->offset + 2 * i + 1] = 0xD6;
    write_bytes(dst, bytes, len);
    sd_safetensors_close(st);
    free(bytes), free(src), free(models), free(ann), free(dst);
}

/* The image of OpenposePreprocessor at resolution 192 (230 x 192 x 3) or, with `small`, 64 (77 x
 * 64 x 3) with detect_hand `hand` and detect_face `face` (malloc'd), or NULL; *json (malloc'd)
 * its POSE_KEYPOINT text. */
static float *openpose_image(bool small, const char *hand, const char *face, char **json)
{
    const int64_t h = small ? 77 : 230, w = small ? 64 : 192;
    sd_graph *g = pre_graph("OpenposePreprocessor", (const char *const[]){"resolution", small ? "64" : "192",
                                                                          "detect_hand", hand, "detect_face", face, NULL});
    const char *outs[] = {"pre"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, "pre", "IMAGE");
    const sd_tensor *t = v ? sd_value_tensor(v, "image") : NULL;
    bool sized = t && t->shape[1] == h && t->shape[2] == w && t->shape[3] == 3;
    CHECK(sized);
    float *copy = sized ? malloc(sizeof *copy * (size_t)(h * w * 3)) : NULL;
    if (copy)
        memcpy(copy, t->data, sizeof *copy * (size_t)(h * w * 3));
    /* POSE_KEYPOINT: one frame with people, the canvas the cut output */
    const sd_value *k = st ? NULL : sd_result_value(res, "pre", "POSE_KEYPOINT");
    const char *head = "[\n    {\n        \"people\": [\n            {\n                \"pose_keypoints_2d\": [\n";
    CHECK(k && k->s && strncmp(k->s, head, strlen(head)) == 0);
    char tail[96];
    snprintf(tail, sizeof tail, "\"canvas_height\": %d,\n        \"canvas_width\": %d\n    }\n]", (int)h, (int)w);
    CHECK(k && k->s && strstr(k->s, tail));
    CHECK(k && k->type == SD_TYPE_POSE_KEYPOINT);
    *json = k && k->s ? strdup(k->s) : NULL;
    sd_result_free(res);
    sd_graph_free(g);
    return copy;
}

static void test_openpose(void)
{
    char *body_json = NULL, *hand_json = NULL, *face_json = NULL;
    float *bodies = openpose_image(false, "disable", "disable", &body_json);
    float *hands = openpose_image(false, "enable", "disable", &hand_json);
    int coloured = 0;
    for (int64_t i = 0; bodies && i < 230 * 192; i++)
        coloured += bodies[3 * i] != bodies[3 * i + 1] || bodies[3 * i + 1] != bodies[3 * i + 2];
    CHECK(coloured > 1000);
    /* the random body network's people have no arm long enough for a 20-pixel hand box here */
    CHECK(bodies && hands && memcmp(bodies, hands, sizeof *bodies * 230 * 192 * 3) == 0);
    free(bodies), free(body_json), free(hand_json);
    /* faces, on a small image (each random "person" is a face network run): a detect image of 184
     * rows or fewer (128 x 64 padded), enlarged by the 8-bit Lanczos */
    bodies = openpose_image(true, "disable", "disable", &body_json);
    float *faces = openpose_image(true, "disable", "enable", &face_json);
    int white = 0, other = 0;
    for (int64_t i = 0; bodies && faces && i < 77 * 64 * 3; i += 3)
        if (memcmp(bodies + i, faces + i, sizeof *faces * 3) != 0)
            faces[i] == 1.0f && faces[i + 1] == 1.0f && faces[i + 2] == 1.0f ? white++ : other++;
    int nfaces = 0;
    for (const char *f = face_json; f && (f = strstr(f, "\"face_keypoints_2d\": [")); f++)
        nfaces++;
    /* faces: white points drawn over the same bodies; face_keypoints_2d lists in the text */
    CHECK_MSG(nfaces > 0 && white > 0 && other == 0, "%d faces, %d white and %d other pixels changed", nfaces, white,
              other);
    CHECK(body_json && !strstr(body_json, "\"face_keypoints_2d\": ["));
    free(bodies), free(hands), free(faces), free(body_json), free(face_json);
    const char *outs[] = {"pre"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_graph *g;

    /* nobody found (detect_face enable by default): no faces, no error, a black image */
    write_nobody_net();
    g = pre_graph("OpenposePreprocessor", (const char *const[]){"resolution", "192", "body_ckpt_name",
                                                                "nobody.safetensors", NULL});
    CHECK_MSG(sd_graph_run(g, &opt, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    const sd_value *none = sd_result_value(res, "pre", "POSE_KEYPOINT"), *black = sd_result_value(res, "pre", "IMAGE");
    CHECK(none && none->s && strcmp(none->s, "[\n    {\n        \"people\": [],\n        \"canvas_height\": 230,\n"
                                               "        \"canvas_width\": 192\n    }\n]") == 0);
    const sd_tensor *bt = black ? sd_value_tensor(black, "image") : NULL;
    int lit = 0;
    for (int64_t i = 0; bt && bt->shape[1] == 230 && i < 230 * 192 * 3; i++)
        lit += bt->data[i] != 0.0f;
    CHECK(bt && lit == 0);
    sd_result_free(res);
    sd_graph_free(g);

    g = pre_graph("OpenposePreprocessor",
                  (const char *const[]){"resolution", "192", "hand_ckpt_name", "body_pose_model.pth", NULL});
    CHECK_EQ_INT(sd_graph_run(g, &opt, &res), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_diag(ctx, 0), "not an OpenPose hand network");
    sd_result_free(res);
    sd_graph_free(g);
}

/* SavePoseKpsAsJsonFile after OpenposePreprocessor (resolution 64, bodies only): one .json in
 * the output directory holding the POSE_KEYPOINT list on one line as json.dump writes it; an
 * IMAGE is no POSE_KEYPOINT (the socket types are checked). */
static void test_save_pose(void)
{
    sd_graph *g = pre_graph("OpenposePreprocessor", (const char *const[]){"detect_hand", "disable", "detect_face",
                                                                          "disable", NULL});
    CHECK_EQ_INT(sd_graph_add_node(g, "SavePoseKpsAsJsonFile", "save", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "save", "filename_prefix", "kps/pose"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "pre", "POSE_KEYPOINT", "save", "pose_kps"), SD_OK);
    sd_run_options opt = {.no_cache = true};
    sd_result *res = NULL;
    CHECK_MSG(sd_graph_run(g, &opt, &res) == SD_OK, "%s", sd_context_errmsg(ctx));
    char *dir = test_path(test_scratch_dir(), "output/kps"), *path = test_path(dir, "pose_00001_.json");
    size_t len = 0;
    char *text = (char *)read_bytes(path, &len);
    const char *head = "[{\"people\": [{\"pose_keypoints_2d\": [", *tail = "], \"canvas_height\": 77, \"canvas_width\": 64}]";
    CHECK(text && len > strlen(head) + strlen(tail) && memcmp(text, head, strlen(head)) == 0 &&
          memcmp(text + len - strlen(tail), tail, strlen(tail)) == 0 && !memchr(text, '\n', len) &&
          strstr(text, "\"face_keypoints_2d\": null, \"hand_left_keypoints_2d\": null"));
    free(text), free(path), free(dir);
    sd_result_free(res);
    sd_graph_free(g);

    g = pre_graph("OpenposePreprocessor", NULL);
    CHECK_EQ_INT(sd_graph_add_node(g, "SavePoseKpsAsJsonFile", "save", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "load", "IMAGE", "save", "pose_kps"), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "cannot link IMAGE output 'IMAGE' of node 'load' to POSE_KEYPOINT input "
                                         "'pose_kps' of node 'save'");
    sd_graph_free(g);
}

/* OpenposePreprocessor saved at version 1 (which ran only with detect_face disable, its default
 * then): an unset detect_face is upgraded to disable, a literal kept. */
static void test_openpose_upgrade(void)
{
    static const char *const xml[2] = {
        "<workflow version=\"1\"><node id=\"p\" type=\"OpenposePreprocessor\" version=\"1\"/></workflow>",
        "<workflow version=\"1\"><node id=\"p\" type=\"OpenposePreprocessor\" version=\"1\">"
        "<input name=\"detect_face\">enable</input></node></workflow>"};
    static const char *const want[2] = {"disable", "enable"};
    for (int i = 0; i < 2; i++) {
        sd_graph *g = NULL;
        CHECK_MSG(sd_graph_load_xml_memory(ctx, xml[i], strlen(xml[i]), "old.xml", &g) == SD_OK, "%s",
                  sd_context_errmsg(ctx));
        const sd_graph_node *n = g ? sd_graph_find_node(g, "p") : NULL;
        const sd_graph_input *in = n ? sd_graph_node_input(n, "detect_face") : NULL;
        CHECK_MSG(n && n->version == 2 && in && in->kind == SD_BIND_LITERAL && strcmp(in->text, want[i]) == 0,
                  "case %d: detect_face %s", i, in && in->text ? in->text : "unset");
        sd_graph_free(g);
    }
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    sd_context_set_cache_path(ctx, NULL);
    setup_dirs();
    RUN(test_scribble);
    RUN(test_xdog);
    RUN(test_binary);
    RUN(test_batch);
    RUN(test_bad_channels);
    RUN(test_hed);
    RUN(test_hed_missing_file);
    RUN(test_lineart);
    RUN(test_pidinet);
    RUN(test_scribble_endings);
    RUN(test_openpose);
    RUN(test_save_pose);
    RUN(test_openpose_upgrade);
    RUN(test_depth_anything);
    RUN(test_midas);
    RUN(test_bae);
    sd_context_free(ctx);
    return test_summary("test_aux_nodes");
}
