/* LatentComposite, LatentBlend, LatentFlip, LatentRotate, LatentCrop (nodes/latent_ops.c),
 * EmptyImage and ImageSharpen, run directly on small hand-made tensors against values worked
 * out by hand from ComfyUI's nodes.py and comfy_extras/nodes_post_processing.py:
 * - the feather mask, including ComfyUI's Python slicing when the feather exceeds the paste
 *   (rows counted from the far side wrap round), edges on the destination's border left sharp;
 * - clipping and ComfyUI's shape errors, batch broadcasting, the first input's noise mask and
 *   attributes passed through unchanged (the second's dropped);
 * - LatentBlend of differing sizes against comfy.utils.common_upscale (bicubic, centre crop;
 *   sd_latent_common_upscale, itself checked against torch in test_latent_upscale.c);
 * - EmptyImage's colour bytes / 255;
 * - ImageSharpen against the direct 2-D convolution of ComfyUI's kernel with reflected borders,
 *   computed here in double: the device path (separable blur, then (1 + 10 alpha) x - 10 alpha
 *   blur) stays within 2e-6 (measured 8e-7 at alpha 1: fp32 rounding of the blur, scaled by
 *   10 alpha); alpha 0 is exact. */
#include "test.h"
#include "nodes/latent_resize.h"
#include "support/node_direct.h"
#include <math.h>
#include <stdlib.h>

#define SD_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static sd_context *ctx;
static sd_value *scalars[64]; /* literal inputs, released at the end */
static size_t n_scalars;

static sd_value *keep(sd_value *v)
{
    if (n_scalars < SD_COUNT(scalars))
        scalars[n_scalars++] = v;
    return v;
}
static sd_value *num(int64_t i)
{
    return keep(sd_value_int(i));
}
static sd_value *real(double f)
{
    return keep(sd_value_float(f));
}
static sd_value *choice(const char *s)
{
    return keep(sd_value_string(SD_TYPE_ENUM, s));
}

/* A LATENT whose samples [b, c, h, w] are data (NULL: base + index). */
static sd_value *latent(int64_t b, int64_t c, int64_t h, int64_t w, const float *data, float base)
{
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    int64_t shape[4] = {b, c, h, w};
    sd_tensor *t = sd_value_add_tensor(v, "samples", 4, shape);
    for (int64_t i = 0; t && i < b * c * h * w; i++)
        t->data[i] = data ? data[i] : base + (float)i;
    return v;
}

static sd_value *run_ok(const char *type, sd_value **in)
{
    sd_status st;
    sd_value *v = test_run_node(ctx, type, in, &st);
    CHECK_MSG(st == SD_OK && v, "%s: %s", type, sd_context_errmsg(ctx));
    return v;
}

static void run_fails(const char *type, sd_value **in, sd_status want, const char *msg)
{
    sd_status st;
    sd_value *v = test_run_node(ctx, type, in, &st);
    CHECK_MSG(v == NULL && st == want, "%s: status %d, want %d", type, st, want);
    CHECK_STR_EQ(sd_context_errmsg(ctx), msg);
    sd_value_unref(v);
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
#define VALUES(...) (const float[]){__VA_ARGS__}

/* A [1, 1, 2, 3] latent 0..5 with a noise mask and a batch_index; the outputs of the
 * transform nodes keep both unchanged. */
static sd_value *with_mask(void)
{
    sd_value *v = latent(1, 1, 2, 3, NULL, 0.0f);
    test_put_tensor(v, "noise_mask", 4, SHAPE(1, 1, 16, 24), (float[16 * 24]){[5] = 1.0f});
    v->attrs = json_pack("{s:[i]}", "batch_index", 7);
    return v;
}

static void expect_passed_through(const sd_value *out)
{
    float want[16 * 24] = {[5] = 1.0f};
    test_expect_tensor(out, "noise_mask", 4, SHAPE(1, 1, 16, 24), want);
    json_t *bi = out && out->attrs ? json_object_get(out->attrs, "batch_index") : NULL;
    CHECK_MSG(json_is_array(bi) && json_integer_value(json_array_get(bi, 0)) == 7, "batch_index kept");
}

static void test_flip(void)
{
    sd_value *in = with_mask();
    sd_value *v = run_ok("LatentFlip", (sd_value *[]){in, choice("x-axis: vertically")});
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 2, 3), VALUES(3, 4, 5, 0, 1, 2));
    expect_passed_through(v);
    sd_value_unref(v);
    v = run_ok("LatentFlip", (sd_value *[]){in, choice("y-axis: horizontally")});
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 2, 3), VALUES(2, 1, 0, 5, 4, 3));
    expect_passed_through(v);
    sd_value_unref(v);
    sd_value_unref(in);
}

static void test_rotate(void)
{
    /* Two items of two channels: every plane rotated alike (torch.rot90(k, dims=[3, 2])). */
    sd_value *in = latent(2, 2, 2, 3, NULL, 0.0f);
    static const char *const rot[] = {"none", "90 degrees", "180 degrees", "270 degrees"};
    static const float plane[4][6] = {{0, 1, 2, 3, 4, 5}, {3, 0, 4, 1, 5, 2}, {5, 4, 3, 2, 1, 0}, {2, 5, 1, 4, 0, 3}};
    for (int k = 0; k < 4; k++) {
        float want[24];
        for (int p = 0; p < 4; p++)
            for (int i = 0; i < 6; i++)
                want[p * 6 + i] = plane[k][i] + 6.0f * (float)p;
        sd_value *v = run_ok("LatentRotate", (sd_value *[]){in, choice(rot[k])});
        test_expect_tensor(v, "samples", 4, k % 2 ? SHAPE(2, 2, 3, 2) : SHAPE(2, 2, 2, 3), want);
        sd_value_unref(v);
    }
    sd_value_unref(in);
    in = with_mask();
    sd_value *v = run_ok("LatentRotate", (sd_value *[]){in, choice("90 degrees")});
    expect_passed_through(v);
    sd_value_unref(v);
    sd_value_unref(in);
}

/* LatentCrop of `in` (pixel inputs) must give the window rows y0.., columns x0.. of h x w. */
static void expect_crop(sd_value *in, int64_t iw, int64_t w_px, int64_t h_px, int64_t x_px, int64_t y_px, int64_t y0,
                        int64_t x0, int64_t h, int64_t w)
{
    sd_value *v = run_ok("LatentCrop", (sd_value *[]){in, num(w_px), num(h_px), num(x_px), num(y_px)});
    float want[256];
    for (int64_t i = 0; i < h; i++)
        for (int64_t j = 0; j < w; j++)
            want[i * w + j] = (float)((y0 + i) * iw + x0 + j);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, h, w), want);
    sd_value_unref(v);
}

static void test_crop(void)
{
    sd_value *in = latent(1, 1, 10, 12, NULL, 0.0f); /* 96 x 80 pixels */
    expect_crop(in, 12, 64, 64, 16, 8, 1, 2, 8, 8);   /* x 2, y 1 */
    expect_crop(in, 12, 71, 79, 23, 15, 1, 2, 9, 8);  /* pixels floor-divided by 8 */
    expect_crop(in, 12, 64, 64, 80, 40, 2, 4, 8, 8);  /* x 10 -> 12 - 8, y 5 -> 10 - 8 */
    expect_crop(in, 12, 128, 72, 8, 8, 1, 1, 9, 11); /* cut at the right and bottom edges */
    sd_value_unref(in);
    /* A latent under 8 x 8: x and y become negative and count from the end, as Python's
     * samples[:, :, -3:5, -2:6]. */
    in = latent(1, 1, 5, 6, NULL, 0.0f);
    expect_crop(in, 6, 64, 64, 0, 0, 2, 4, 3, 2);
    sd_value_unref(in);
    in = with_mask();
    sd_value *v = run_ok("LatentCrop", (sd_value *[]){in, num(64), num(64), num(0), num(0)});
    expect_passed_through(v);
    sd_value_unref(v);
    sd_value_unref(in);
}

/* LatentComposite of from onto to at pixel (x, y) with `feather` pixels. */
static sd_value *composite(sd_value *to, sd_value *from, int64_t x, int64_t y, int64_t feather)
{
    return run_ok("LatentComposite", (sd_value *[]){to, from, num(x), num(y), num(feather)});
}

static void test_composite_paste(void)
{
    sd_value *to = latent(1, 1, 4, 5, NULL, 100.0f), *from = latent(1, 1, 2, 3, NULL, 0.0f);
    test_put_tensor(from, "noise_mask", 4, SHAPE(1, 1, 2, 3), VALUES(1, 1, 1, 1, 1, 1));
    sd_value *v = composite(to, from, 16, 15, 0); /* x 2, y 1 */
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 4, 5),
                       VALUES(100, 101, 102, 103, 104, 105, 106, 0, 1, 2, 110, 111, 3, 4, 5, 115, 116, 117, 118, 119));
    CHECK_MSG(v && !sd_value_tensor(v, "noise_mask"), "samples_from's noise mask is dropped");
    sd_value_unref(v);
    /* Clipped at the right and bottom: from[:2, :2] at (3, 2). */
    v = composite(to, from, 24, 16, 0);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 4, 5),
                       VALUES(100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 0, 1, 115, 116, 117, 3,
                              4));
    sd_value_unref(v);
    /* Starting on the right border: nothing left to paste. Past it with source columns left:
     * ComfyUI's assignment fails on the shapes. */
    v = composite(to, from, 40, 0, 0);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 4, 5), sd_value_tensor(to, "samples")->data);
    sd_value_unref(v);
    v = composite(to, from, 64, 0, 8);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 4, 5), sd_value_tensor(to, "samples")->data);
    sd_value_unref(v);
    run_fails("LatentComposite", (sd_value *[]){to, from, num(48), num(0), num(0)}, SD_ERR_INVALID,
              "node 'n' (LatentComposite): the paste at x 48, y 0 lies outside samples_to (40x32 pixels)");
    /* samples_to's noise mask and attributes are kept. */
    sd_value *m = with_mask();
    v = composite(m, from, 8, 0, 0);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 2, 3), VALUES(0, 0, 1, 3, 3, 4));
    expect_passed_through(v);
    sd_value_unref(v);
    sd_value_unref(m);
    sd_value_unref(to);
    sd_value_unref(from);
}

static void test_composite_feather(void)
{
    float ones[16], zeros[36] = {0}, tens[36];
    for (int i = 0; i < 36; i++)
        tens[i] = 10.0f;
    for (int i = 0; i < 16; i++)
        ones[i] = 1.0f;
    sd_value *to = latent(1, 1, 6, 6, zeros, 0), *from = latent(1, 1, 4, 4, ones, 0);
    /* Inside: all four edges fade over 2 latent pixels (factors 0.5, 1): out = the mask. */
    sd_value *v = composite(to, from, 8, 8, 16);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 6, 6),
                       VALUES(0, 0, 0, 0, 0, 0,
                              0, .25, .5, .5, .25, 0,
                              0, .5, 1, 1, .5, 0,
                              0, .5, 1, 1, .5, 0,
                              0, .25, .5, .5, .25, 0,
                              0, 0, 0, 0, 0, 0));
    sd_value_unref(v);
    /* At the top-left corner those edges stay sharp; feather 23 px is 2 latent pixels. */
    v = composite(to, from, 0, 0, 23);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 6, 6),
                       VALUES(1, 1, 1, .5, 0, 0,
                              1, 1, 1, .5, 0, 0,
                              1, 1, 1, .5, 0, 0,
                              .5, .5, .5, .25, 0, 0,
                              0, 0, 0, 0, 0, 0,
                              0, 0, 0, 0, 0, 0));
    sd_value_unref(v);
    /* Mixing: mask * 2 + (1 - mask) * 10. */
    sd_value *to10 = latent(1, 1, 6, 6, tens, 0), *from2 = latent(1, 1, 4, 4, NULL, 0);
    for (int i = 0; i < 16; i++)
        sd_value_tensor(from2, "samples")->data[i] = 2.0f;
    v = composite(to10, from2, 8, 8, 16);
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 6, 6),
                       VALUES(10, 10, 10, 10, 10, 10,
                              10, 8, 6, 6, 8, 10,
                              10, 6, 2, 2, 6, 10,
                              10, 6, 2, 2, 6, 10,
                              10, 8, 6, 6, 8, 10,
                              10, 10, 10, 10, 10, 10));
    sd_value_unref(v);
    sd_value_unref(to10);
    sd_value_unref(from2);
    /* Feather 5 on a 2-row paste: factors 0.2 .. 1 in float. Top rows t = 0, 1; bottom rows
     * 1 - t: t = 0, 1, then t = 3 is the slice [-2:-1], row 0 again (t = 2 and 4 are empty).
     * Row 0: 0.2 (top), 0.4 (bottom), 0.8 (bottom, wrapped); row 1: 0.2 (bottom), 0.4 (top).
     * The paste spans the full width, so no column fades. */
    sd_value *to4 = latent(1, 1, 6, 4, zeros, 0), *from4 = latent(1, 1, 2, 4, ones, 0);
    v = composite(to4, from4, 0, 8, 40);
    float r0 = 0.2f * 0.4f * 0.8f, r1 = 0.2f * 0.4f;
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 6, 4),
                       VALUES(0, 0, 0, 0, r0, r0, r0, r0, r1, r1, r1, r1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    sd_value_unref(v);
    sd_value_unref(to4);
    sd_value_unref(from4);
    sd_value_unref(to);
    sd_value_unref(from);
}

static void test_composite_batches(void)
{
    /* A single source item is pasted into every destination item; 3 into 2 cannot be. */
    sd_value *to = latent(2, 1, 2, 2, NULL, 10.0f), *from = latent(1, 1, 1, 1, VALUES(-1), 0);
    sd_value *v = composite(to, from, 8, 8, 0);
    test_expect_tensor(v, "samples", 4, SHAPE(2, 1, 2, 2), VALUES(10, 11, 12, -1, 14, 15, 16, -1));
    sd_value_unref(v);
    sd_value *from3 = latent(3, 4, 1, 1, NULL, 0);
    run_fails("LatentComposite", (sd_value *[]){to, from3, num(0), num(0), num(0)}, SD_ERR_INVALID,
              "node 'n' (LatentComposite): samples_from [3, 4, ...] does not fit samples_to [2, 1, ...] (batch and "
              "channels must match or be 1)");
    sd_value *empty = sd_value_new(SD_TYPE_LATENT);
    run_fails("LatentComposite", (sd_value *[]){to, empty, num(0), num(0), num(0)}, SD_ERR_INVALID,
              "node 'n' (LatentComposite): input 'samples_from' is not a latent [batch, channels, height, width]");
    sd_value_unref(empty);
    sd_value_unref(from3);
    sd_value_unref(to);
    sd_value_unref(from);
}

static void test_blend(void)
{
    sd_value *a = with_mask(), *b = latent(1, 1, 2, 3, VALUES(0, 4, 8, -4, 12, 2), 0);
    for (int i = 0; i < 6; i++)
        sd_value_tensor(a, "samples")->data[i] *= 4.0f; /* 0, 4, .. 20 */
    test_put_tensor(b, "noise_mask", 4, SHAPE(1, 1, 2, 3), VALUES(1, 1, 1, 1, 1, 1));
    /* 0.25 * samples1 + 0.75 * samples2; samples1's noise mask and attributes. */
    sd_value *v = run_ok("LatentBlend", (sd_value *[]){a, b, real(0.25), choice("normal")});
    test_expect_tensor(v, "samples", 4, SHAPE(1, 1, 2, 3), VALUES(0, 4, 8, 0, 13, 6.5));
    expect_passed_through(v);
    sd_value_unref(v);
    /* A batch of two against one: broadcast to two items. */
    sd_value *b2 = latent(2, 1, 2, 3, NULL, 0);
    v = run_ok("LatentBlend", (sd_value *[]){a, b2, real(0.5), choice("normal")});
    test_expect_tensor(v, "samples", 4, SHAPE(2, 1, 2, 3), VALUES(0, 2.5, 5, 7.5, 10, 12.5, 3, 5.5, 8, 10.5, 13, 15.5));
    sd_value_unref(v);
    sd_value_unref(b2);
    /* Another size: samples2 goes through common_upscale(bicubic, centre crop) first. */
    float big[2 * 4 * 10];
    for (int i = 0; i < 80; i++)
        big[i] = (float)((i * 37) % 11) - 5.0f;
    sd_value *c = latent(2, 1, 4, 10, big, 0);
    sd_tensor *s2 = sd_value_tensor(c, "samples");
    float up[12], up_nocrop[12];
    sd_tensor out = {.ndim = 4, .shape = {2, 1, 2, 3}, .data = up};
    CHECK_EQ_INT(sd_latent_common_upscale(ctx, s2, 3, 2, "bicubic", true, &out), SD_OK);
    out.data = up_nocrop;
    CHECK_EQ_INT(sd_latent_common_upscale(ctx, s2, 3, 2, "bicubic", false, &out), SD_OK);
    v = run_ok("LatentBlend", (sd_value *[]){a, c, real(0.75), choice("normal")});
    float want[12];
    bool cropped = false;
    for (int i = 0; i < 12; i++) {
        want[i] = sd_value_tensor(a, "samples")->data[i % 6] * 0.75f + up[i] * 0.25f;
        cropped = cropped || up[i] != up_nocrop[i];
    }
    CHECK_MSG(cropped, "the centre crop changes the resized samples2");
    test_expect_tensor(v, "samples", 4, SHAPE(2, 1, 2, 3), want);
    sd_value_unref(v);
    sd_value *d = latent(1, 4, 2, 3, NULL, 0), *e = latent(1, 3, 2, 3, NULL, 0);
    run_fails("LatentBlend", (sd_value *[]){d, e, real(0.5), choice("normal")}, SD_ERR_INVALID,
              "node 'n' (LatentBlend): samples1 has channels 4, samples2 3 (they must match or one be 1)");
    sd_value_unref(c);
    sd_value_unref(d);
    sd_value_unref(e);
    sd_value_unref(a);
    sd_value_unref(b);
}

static void test_bad_latent(void)
{
    sd_value *empty = sd_value_new(SD_TYPE_LATENT), *flat = sd_value_new(SD_TYPE_LATENT);
    test_put_tensor(flat, "samples", 2, SHAPE(2, 3), VALUES(1, 2, 3, 4, 5, 6));
    run_fails("LatentFlip", (sd_value *[]){empty, choice("x-axis: vertically")}, SD_ERR_INVALID,
              "node 'n' (LatentFlip): input 'samples' is not a latent [batch, channels, height, width]");
    run_fails("LatentRotate", (sd_value *[]){flat, choice("90 degrees")}, SD_ERR_INVALID,
              "node 'n' (LatentRotate): input 'samples' is not a latent [batch, channels, height, width]");
    run_fails("LatentCrop", (sd_value *[]){flat, num(64), num(64), num(0), num(0)}, SD_ERR_INVALID,
              "node 'n' (LatentCrop): input 'samples' is not a latent [batch, channels, height, width]");
    run_fails("LatentBlend", (sd_value *[]){flat, empty, real(0.5), choice("normal")}, SD_ERR_INVALID,
              "node 'n' (LatentBlend): input 'samples1' is not a latent [batch, channels, height, width]");
    sd_value_unref(empty);
    sd_value_unref(flat);
}

static void test_empty_image(void)
{
    sd_value *v = run_ok("EmptyImage", (sd_value *[]){num(3), num(2), num(2), num(0x12AB80)});
    float want[2 * 2 * 3 * 3];
    for (int i = 0; i < 36; i++)
        want[i] = i % 3 == 0 ? (float)(18.0 / 255.0) : i % 3 == 1 ? (float)(171.0 / 255.0) : (float)(128.0 / 255.0);
    test_expect_tensor(v, "image", 4, SHAPE(2, 2, 3, 3), want);
    sd_value_unref(v);
    v = run_ok("EmptyImage", (sd_value *[]){num(1), num(1), num(1), num(0xFF00FF)});
    test_expect_tensor(v, "image", 4, SHAPE(1, 1, 1, 3), VALUES(1, 0, 1));
    sd_value_unref(v);
    /* Through validation: the colour is at most 0xFFFFFF. */
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "EmptyImage", "e", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "e", "color", "16777216"), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'e' input 'color': 16777216 is out of range [0, 16777215]");
    sd_graph_free(g);
}

/* ComfyUI's sharpen in double: kernel -10 alpha G with its centre raised so that it sums to 1,
 * reflect padding, clamp. */
static void ref_sharpen(const float *x, int b, int h, int w, int c, int r, double sigma, double alpha, double *out)
{
    int ks = 2 * r + 1;
    double k[63 * 63], sum = 0;
    for (int i = 0; i < ks; i++)
        for (int j = 0; j < ks; j++) {
            double ti = -1.0 + 2.0 * i / (ks - 1), tj = -1.0 + 2.0 * j / (ks - 1);
            k[i * ks + j] = exp(-(ti * ti + tj * tj) / (2 * sigma * sigma));
            sum += k[i * ks + j];
        }
    double ksum = 0;
    for (int i = 0; i < ks * ks; i++) {
        k[i] = k[i] / sum * -(alpha * 10);
        ksum += k[i];
    }
    k[r * ks + r] += 1.0 - ksum;
    for (int n = 0; n < b; n++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++)
                for (int ch = 0; ch < c; ch++) {
                    double acc = 0;
                    for (int i = -r; i <= r; i++)
                        for (int j = -r; j <= r; j++) {
                            int sy = y + i, sx = xx + j;
                            sy = sy < 0 ? -sy : sy >= h ? 2 * (h - 1) - sy : sy;
                            sx = sx < 0 ? -sx : sx >= w ? 2 * (w - 1) - sx : sx;
                            acc += k[(i + r) * ks + j + r] * x[((n * h + sy) * w + sx) * c + ch];
                        }
                    out[((n * h + y) * w + xx) * c + ch] = acc < 0 ? 0 : acc > 1 ? 1 : acc;
                }
}

static void test_sharpen(void)
{
    enum { B = 2, IH = 5, IW = 7, C = 3, N = B * IH * IW * C };
    sd_value *img = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *t = sd_value_add_tensor(img, "image", 4, SHAPE(B, IH, IW, C));
    for (int i = 0; t && i < N; i++)
        t->data[i] = (float)(0.5 + 0.3 * sin(0.9 * (i / C % IW) + 0.5 * (i / C / IW) + i % C) +
                             0.02 * ((i * 7919) % 101) / 100.0); /* smooth, a little texture */
    static const struct { int r; double sigma, alpha; } cases[] = {{1, 1.0, 1.0}, {2, 0.7, 0.05}, {3, 2.0, 0.3}};
    double ref[N];
    for (size_t k = 0; t && k < SD_COUNT(cases); k++) {
        sd_value *v = run_ok("ImageSharpen", (sd_value *[]){img, num(cases[k].r), real(cases[k].sigma),
                                                             real(cases[k].alpha)});
        const sd_tensor *o = v ? sd_value_tensor(v, "image") : NULL;
        ref_sharpen(t->data, B, IH, IW, C, cases[k].r, cases[k].sigma, cases[k].alpha, ref);
        double worst = 0;
        int inside = 0;
        for (int i = 0; o && i < N; i++) {
            double d = fabs(o->data[i] - ref[i]);
            worst = d > worst ? d : worst;
            inside += ref[i] > 0 && ref[i] < 1 && fabs(ref[i] - t->data[i]) > 1e-3;
        }
        printf("  ImageSharpen r %d sigma %g alpha %g: max abs diff %.3g vs the direct 2-D kernel (double)\n",
               cases[k].r, cases[k].sigma, cases[k].alpha, worst);
        CHECK_MSG(o && worst <= 2e-6, "case %zu: max abs diff %g", k, worst);
        CHECK_MSG(inside > N / 4, "case %zu: only %d sharpened values inside (0, 1)", k, inside);
        sd_value_unref(v);
    }
    /* alpha 0: the kernel is the identity; the image comes back exactly. */
    sd_value *v = run_ok("ImageSharpen", (sd_value *[]){img, num(2), real(1.0), real(0.0)});
    if (t)
        test_expect_tensor(v, "image", 4, SHAPE(B, IH, IW, C), t->data);
    sd_value_unref(v);
    sd_value *mask = sd_value_new(SD_TYPE_IMAGE);
    run_fails("ImageSharpen", (sd_value *[]){mask, num(1), real(1.0), real(1.0)}, SD_ERR_INVALID,
              "node 'n' (ImageSharpen): input 'image' is not an image [batch, height, width, channels]");
    sd_value_unref(mask);
    sd_value_unref(img);
}

static void test_descriptors(void)
{
    static const char *const cat[][2] = {
        {"LatentComposite", "latent"}, {"LatentBlend", "_for_testing"}, {"LatentFlip", "latent/transform"},
        {"LatentRotate", "latent/transform"}, {"LatentCrop", "latent/transform"}, {"EmptyImage", "image"},
        {"ImageSharpen", "image/postprocessing"},
    };
    for (size_t i = 0; i < SD_COUNT(cat); i++) {
        const sd_node_desc *d = sd_node_type_find(cat[i][0]);
        CHECK_MSG(d && strcmp(d->category, cat[i][1]) == 0, "%s: category %s", cat[i][0], d ? d->category : "?");
    }
}

int main(void)
{
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_descriptors);
    RUN(test_flip);
    RUN(test_rotate);
    RUN(test_crop);
    RUN(test_composite_paste);
    RUN(test_composite_feather);
    RUN(test_composite_batches);
    RUN(test_blend);
    RUN(test_bad_latent);
    RUN(test_empty_image);
    RUN(test_sharpen);
    for (size_t i = 0; i < n_scalars; i++)
        sd_value_unref(scalars[i]);
    sd_context_free(ctx);
    return test_summary("test_latent_ops");
}
