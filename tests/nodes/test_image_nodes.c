/* Image nodes (ImageScale, ImageScaleBy, ImageInvert, ImageCrop, ImagePadForOutpaint, ImageBlur,
 * Canny) run through the scheduler: LoadImage -> node -> SaveImage, the written PNG compared
 * with the plain-C references (tests/support/ref_image.c) quantised as SaveImage does; output
 * shapes of ComfyUI's size rules; the outpainting mask against ComfyUI's loop. */
#include "test.h"
#include "core/png.h"
#include "nodes/image_device.h"
#include "support/png_fixture.h"
#include "support/ref_image.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;
enum { W = 17, H = 13 };
static float input_px[H * W * 3]; /* the fixture as LoadImage sees it */

/* SaveImage's float -> 8-bit conversion (trunc(255 v), clipped). */
static int to_u8(float v)
{
    float x = v * 255.0f;
    return !(x > 0.0f) ? 0 : x >= 255.0f ? 255 : (int)x;
}

static void write_input(void)
{
    static unsigned char px[H * W * 3];
    /* A smooth gradient with a bright rectangle (soft rim) and a little texture. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                int v = 20 + 6 * x + 3 * y + 17 * c + ((x * 7 + y * 13 + c * 5) % 9);
                bool rim = (y == 3 || y == 9) && x >= 5 && x <= 12, in = y > 3 && y < 9 && x > 5 && x < 12;
                if ((x == 5 || x == 12) && y >= 3 && y <= 9)
                    rim = true;
                if (in)
                    v = 250;
                else if (rim)
                    v = (v + 250) / 2;
                px[(y * W + x) * 3 + c] = (unsigned char)(v > 255 ? 255 : v);
                input_px[(y * W + x) * 3 + c] = (float)px[(y * W + x) * 3 + c] / 255.0f;
            }
    fixture fx = {.w = W, .h = H, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    char *path = write_fixture("input/in.png", &fx);
    free(path);
}

/* A graph LoadImage "L" -> node "N" of `type` (its "image" input) -> SaveImage "S". */
static sd_graph *chain(const char *type)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "L", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "L", "image", "in.png"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, type, "N", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "L", "IMAGE", "N", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SaveImage", "S", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "N", "IMAGE", "S", "images"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "S", "filename_prefix", type), SD_OK);
    return g;
}

/* Runs g and reads the PNG SaveImage wrote; returns false on any failure. */
static bool run_to_png(sd_graph *g, sd_image *out)
{
    sd_result *res = NULL;
    memset(out, 0, sizeof *out);
    sd_status st = sd_graph_run(g, NULL, &res);
    CHECK_MSG(st == SD_OK, "run failed: %s", sd_context_errmsg(ctx));
    bool ok = st == SD_OK && sd_result_file_count(res) == 1 &&
              sd_png_read(ctx, sd_result_file(res, 0), NULL, out) == SD_OK && out->channels == 3;
    sd_result_free(res);
    CHECK(ok);
    return ok;
}

/* Compares the PNG's 8-bit levels with the reference floats quantised by SaveImage: at most
 * max_off levels apart, and at most max_count samples off at all. */
static void expect_levels(const sd_image *img, const float *ref, int64_t h, int64_t w, int max_off,
                          size_t max_count, const char *what)
{
    CHECK_MSG(img->width == (uint32_t)w && img->height == (uint32_t)h, "%s: %ux%u, expected %lldx%lld", what,
              img->width, img->height, (long long)w, (long long)h);
    if (img->width != (uint32_t)w || img->height != (uint32_t)h)
        return;
    size_t off = 0;
    int worst = 0;
    for (size_t i = 0; i < (size_t)(h * w * 3); i++) {
        int got = (int)lrintf(img->data[i] * 255.0f), want = to_u8(ref[i]);
        int d = abs(got - want);
        off += d != 0;
        worst = d > worst ? d : worst;
    }
    CHECK_MSG(worst <= max_off && off <= max_count, "%s: %zu samples off, worst by %d levels", what, off, worst);
}

static void test_scale_methods(void)
{
    /* Every method through ImageScale, against the reference. Float methods: in flat areas the
     * result is an exact level k/255 up to one ulp, and SaveImage truncates, so fp32 kernels and
     * the reference land on either side (1 level, up to 5% of samples; the values themselves are
     * checked to 3e-6 in tests/ops/test_ops_image.c). lanczos is ComfyUI's integer PIL path:
     * exact. */
    static const char *const names[] = {"nearest-exact", "bilinear", "area", "bicubic", "lanczos"};
    static const sd_resize_method methods[] = {SD_RESIZE_NEAREST_EXACT, SD_RESIZE_BILINEAR, SD_RESIZE_AREA,
                                               SD_RESIZE_BICUBIC, SD_RESIZE_LANCZOS_U8};
    const int64_t sizes[2][2] = {{29, 23}, {6, 31}}; /* height, width */
    for (int m = 0; m < 5; m++)
        for (int s = 0; s < 2; s++) {
            sd_graph *g = chain("ImageScale");
            char wtxt[16], htxt[16];
            snprintf(wtxt, sizeof wtxt, "%lld", (long long)sizes[s][1]);
            snprintf(htxt, sizeof htxt, "%lld", (long long)sizes[s][0]);
            CHECK_EQ_INT(sd_graph_set_input(g, "N", "upscale_method", names[m]), SD_OK);
            CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", wtxt), SD_OK);
            CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", htxt), SD_OK);
            sd_image img;
            if (run_to_png(g, &img)) {
                float *ref = malloc((size_t)(sizes[s][0] * sizes[s][1] * 3) * sizeof *ref);
                ref_resize(input_px, 1, H, W, 3, sizes[s][0], sizes[s][1], methods[m], ref);
                bool exact = m == 0 || m == 4;
                char what[64];
                snprintf(what, sizeof what, "ImageScale %s %lldx%lld", names[m], (long long)sizes[s][1],
                         (long long)sizes[s][0]);
                size_t n = (size_t)(sizes[s][0] * sizes[s][1] * 3);
                expect_levels(&img, ref, sizes[s][0], sizes[s][1], exact ? 0 : 1, exact ? 0 : n / 20, what);
                free(ref);
            }
            sd_image_clear(&img);
            sd_graph_free(g);
        }
}

static void test_scale_center_crop(void)
{
    /* 17x13 to 8x8 with crop=center: ComfyUI keeps columns round((17 - 13) / 2) = 2 .. 14, then
     * resizes the 13x13 square (nearest-exact: exact levels). */
    sd_graph *g = chain("ImageScale");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "crop", "center"), SD_OK);
    sd_image img;
    if (run_to_png(g, &img)) {
        float sq[13 * 13 * 3], ref[8 * 8 * 3];
        ref_crop(input_px, 1, H, W, 3, 0, 2, 13, 13, sq);
        ref_resize(sq, 1, 13, 13, 3, 8, 8, SD_RESIZE_NEAREST_EXACT, ref);
        expect_levels(&img, ref, 8, 8, 0, 0, "ImageScale crop=center");
    }
    sd_image_clear(&img);
    sd_graph_free(g);
}

static void test_invert_pad_crop_blur(void)
{
    sd_image img;
    float *ref = malloc(sizeof(float) * 64 * 64 * 3);
    sd_graph *g = chain("ImageInvert");
    if (run_to_png(g, &img)) {
        for (int i = 0; i < H * W * 3; i++)
            ref[i] = 1.0f - input_px[i];
        expect_levels(&img, ref, H, W, 0, 0, "ImageInvert");
    }
    sd_image_clear(&img);
    sd_graph_free(g);

    g = chain("ImagePadForOutpaint");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "left", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "bottom", "16"), SD_OK);
    if (run_to_png(g, &img)) {
        ref_pad(input_px, 1, H, W, 3, 0, 16, 8, 0, SD_PAD_CONSTANT, 0.5f, ref);
        expect_levels(&img, ref, H + 16, W + 8, 0, 0, "ImagePadForOutpaint");
    }
    sd_image_clear(&img);
    sd_graph_free(g);

    /* ComfyUI clips the crop: x = min(x, W-1), the rectangle to the image. */
    g = chain("ImageCrop");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "x", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "y", "4"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", "512"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "5"), SD_OK);
    if (run_to_png(g, &img)) {
        ref_crop(input_px, 1, H, W, 3, 4, 8, 5, W - 8, ref);
        expect_levels(&img, ref, 5, W - 8, 0, 0, "ImageCrop");
    }
    sd_image_clear(&img);
    sd_graph_free(g);

    g = chain("ImageBlur");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "blur_radius", "3"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "sigma", "0.7"), SD_OK);
    if (run_to_png(g, &img)) {
        ref_blur_comfy(input_px, 1, H, W, 3, 3, 0.7f, ref);
        expect_levels(&img, ref, H, W, 1, H * W * 3 / 20, "ImageBlur"); /* as the float resizes */
    }
    sd_image_clear(&img);
    sd_graph_free(g);
    free(ref);
}

static void test_canny(void)
{
    sd_image img;
    sd_graph *g = chain("Canny");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "low_threshold", "0.2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "high_threshold", "0.5"), SD_OK);
    if (run_to_png(g, &img)) {
        float *ref = malloc(sizeof(float) * H * W * 3);
        ref_canny(input_px, 1, H, W, 3, 0.2f, 0.5f, ref);
        expect_levels(&img, ref, H, W, 0, 0, "Canny");
        /* The rectangle's rim is found: edges on the rim rows, none in the flat interior. */
        int rim = 0, inside = 0;
        for (int x = 5; x <= 12; x++)
            rim += img.data[(3 * W + x) * 3] == 1.0f;
        for (int y = 5; y <= 7; y++)
            for (int x = 7; x <= 10; x++)
                inside += img.data[(y * W + x) * 3] == 1.0f;
        CHECK_MSG(rim >= 4, "%d edge pixels on the top rim", rim);
        CHECK_EQ_INT(inside, 0);
        free(ref);
    }
    sd_image_clear(&img);
    /* low above high is refused: a validation problem for literals, the node's error for a
     * linked value. */
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "low_threshold", "0.9"), SD_OK);
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "<api>: node 'N' input 'low_threshold': 0.9 is above high_threshold 0.5");
    CHECK_EQ_INT(sd_result_file_count(res), 0);
    sd_result_free(res);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveFloat", "low", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "low", "value", "0.9"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "low", "FLOAT", "N", "low_threshold"), SD_OK);
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'N' (Canny): low_threshold 0.9 is above high_threshold 0.5");
    CHECK_EQ_INT(sd_result_file_count(res), 0);
    sd_result_free(res);
    sd_graph_free(g);
}

/* Output shape of node `id`'s output `out` after running only the nodes it needs. */
static void expect_shape(sd_graph *g, const char *id, const char *out, int ndim, int64_t d1, int64_t d2)
{
    const char *const wanted[1] = {id};
    sd_run_options opts = {.outputs = wanted, .n_outputs = 1};
    sd_result *res = NULL;
    sd_output_info info;
    CHECK_EQ_INT(sd_graph_run(g, &opts, &res), SD_OK);
    CHECK_EQ_INT(sd_result_output(res, id, out, &info), SD_OK);
    CHECK_MSG(info.ndim == ndim && info.shape[1] == d1 && info.shape[2] == d2,
              "%s.%s: ndim %d, %lld x %lld (expected %lld x %lld)", id, out, info.ndim, (long long)info.shape[1],
              (long long)info.shape[2], (long long)d1, (long long)d2);
    sd_result_free(res);
}

static void test_size_rules(void)
{
    sd_graph *g = chain("ImageScale");
    /* width 0: round(17 * 26 / 13) = 34 keeps the aspect ratio. */
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", "0"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "26"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, 26, 34);
    /* Both 0: unchanged. */
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "0"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, H, W);
    /* Centre crop to a square, then scale. */
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "crop", "center"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, 8, 8);
    sd_graph_free(g);

    /* ImageScaleBy 1.5: 25.5 -> 26 and 19.5 -> 20 (half to even); 0.01 empties the image. */
    g = chain("ImageScaleBy");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "scale_by", "1.5"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, 20, 26);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "scale_by", "0.01"), SD_OK);
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, NULL, &res), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'N' (ImageScaleBy): scale_by 0.01 makes the 17x13 image empty");
    sd_result_free(res);
    sd_graph_free(g);

    /* ImageCrop with x past the right edge keeps the last column. */
    g = chain("ImageCrop");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "x", "400"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "width", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "height", "8"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, 8, 1);
    sd_graph_free(g);

    g = chain("ImagePadForOutpaint");
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "top", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "N", "right", "24"), SD_OK);
    expect_shape(g, "N", "IMAGE", 4, H + 8, W + 24);
    expect_shape(g, "N", "MASK", 3, H + 8, W + 24);
    sd_graph_free(g);
}

static void test_outpaint_mask(void)
{
    /* ComfyUI's loop, transcribed: t[i][j] for distances to the padded sides. */
    const struct { int64_t h, w, top, bottom, left, right, f; } cases[] = {
        {20, 30, 8, 0, 16, 0, 6}, {20, 30, 0, 8, 0, 8, 9}, {20, 30, 4, 4, 4, 4, 10}, {9, 9, 2, 2, 2, 2, 40}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t h = cases[c].h, w = cases[c].w, top = cases[c].top, bottom = cases[c].bottom, left = cases[c].left,
                right = cases[c].right, f = cases[c].f;
        sd_value *v = sd_node_outpaint_mask(h, w, top, bottom, left, right, f);
        sd_tensor *t = v ? sd_value_tensor(v, "mask") : NULL;
        int64_t mh = h + top + bottom, mw = w + left + right;
        CHECK(t && t->ndim == 3 && t->shape[0] == 1 && t->shape[1] == mh && t->shape[2] == mw);
        if (!t)
            continue;
        int bad = 0;
        for (int64_t i = 0; i < mh; i++)
            for (int64_t j = 0; j < mw; j++) {
                double want = 1.0;
                int64_t y = i - top, x = j - left;
                if (y >= 0 && y < h && x >= 0 && x < w) {
                    want = 0.0;
                    if (f > 0 && f * 2 < h && f * 2 < w) {
                        int64_t dt = top != 0 ? y : h, db = bottom != 0 ? h - y : h;
                        int64_t dl = left != 0 ? x : w, dr = right != 0 ? w - x : w;
                        int64_t d = dt;
                        d = db < d ? db : d;
                        d = dl < d ? dl : d;
                        d = dr < d ? dr : d;
                        if (d < f)
                            want = (double)(f - d) / f * ((double)(f - d) / f);
                    }
                }
                bad += t->data[i * mw + j] != (float)want;
            }
        CHECK_MSG(bad == 0, "case %zu: %d mask values differ", c, bad);
        sd_value_unref(v);
    }
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    char *input = test_path(test_scratch_dir(), "input"), *output = test_path(test_scratch_dir(), "output");
    mkdir(input, 0777);
    sd_context_set_dir(ctx, SD_DIR_INPUT, input);
    sd_context_set_dir(ctx, SD_DIR_OUTPUT, output);
    sd_context_set_cache_path(ctx, NULL);
    write_input();
    RUN(test_scale_methods);
    RUN(test_scale_center_crop);
    RUN(test_invert_pad_crop_blur);
    RUN(test_canny);
    RUN(test_size_rules);
    RUN(test_outpaint_mask);
    sd_context_free(ctx);
    free(input);
    free(output);
    return test_summary("test_image_nodes");
}
