/* nodes/image_io: LoadImage / LoadImageMask conversions (ComfyUI's rules) and SaveImage's
 * numbering, provenance texts and refusals. */
#include "test.h"
#include "core/png.h"
#include "nodes/image_io.h"
#include "support/png_fixture.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static sd_context *ctx;

static const sd_tensor *tensor(const sd_value *v, const char *name, int ndim, int64_t a, int64_t b,
                               int64_t c, int64_t d)
{
    const sd_tensor *t = v ? sd_value_tensor(v, name) : NULL;
    int64_t want[4] = {a, b, c, d};
    bool ok = t && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == want[i];
    CHECK_MSG(ok, "tensor %s has the wrong shape", name);
    return ok ? t : NULL;
}

static void test_load_image_alpha_mask(void)
{
    const unsigned char rgba[] = {255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 51, 10, 20, 30, 204};
    fixture fx = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .pixels = rgba};
    char *p = write_fixture("rgba.png", &fx);
    sd_value *image, *mask;
    CHECK_EQ_INT(sd_load_image(ctx, p, &image, &mask), SD_OK);
    const sd_tensor *it = tensor(image, "image", 4, 1, 2, 2, 3);
    const sd_tensor *mt = tensor(mask, "mask", 3, 1, 2, 2, 0);
    CHECK(image && image->type == SD_TYPE_IMAGE && mask && mask->type == SD_TYPE_MASK);
    if (it && mt) {
        CHECK(it->data[0] == 1.0f && it->data[1] == 0.0f && it->data[4] == 1.0f && it->data[8] == 1.0f);
        CHECK_NEAR(it->data[9], 10 / 255.0, 1e-7);
        CHECK(mt->data[0] == 0.0f); /* opaque: not masked */
        CHECK(mt->data[1] == 1.0f); /* transparent: masked */
        CHECK_NEAR(mt->data[2], 1.0 - 51 / 255.0, 1e-6);
        CHECK_NEAR(mt->data[3], 1.0 - 204 / 255.0, 1e-6);
    }
    sd_value_unref(image);
    sd_value_unref(mask);
    free(p);
}

static void test_load_image_without_alpha(void)
{
    /* Gray: replicated to RGB; no alpha: MASK is zeros [1, 64, 64] as in ComfyUI. */
    const unsigned char g[] = {0, 255, 85};
    fixture fx = {.w = 3, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g};
    char *p = write_fixture("gray.png", &fx);
    sd_value *image, *mask;
    CHECK_EQ_INT(sd_load_image(ctx, p, &image, &mask), SD_OK);
    const sd_tensor *it = tensor(image, "image", 4, 1, 1, 3, 3);
    const sd_tensor *mt = tensor(mask, "mask", 3, 1, 64, 64, 0);
    CHECK(image && image->type == SD_TYPE_IMAGE);
    if (it)
        CHECK(it->data[3] == 1.0f && it->data[4] == 1.0f && it->data[5] == 1.0f &&
              it->data[6] == it->data[8] && it->data[6] == 85 / 255.0f);
    int nonzero = 0;
    for (int i = 0; mt && i < 64 * 64; i++)
        nonzero += mt->data[i] != 0.0f;
    CHECK_EQ_INT(nonzero, 0);
    sd_value_unref(image);
    sd_value_unref(mask);
    free(p);

    /* An RGB colour key gives ComfyUI no mask either; a palette with tRNS does. */
    const unsigned char rgb[] = {1, 2, 3, 4, 5, 6};
    png_color_16 key = {.red = 1, .green = 2, .blue = 3};
    fixture fk = {.w = 2, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = rgb, .trns_color = &key};
    p = write_fixture("key.png", &fk);
    CHECK_EQ_INT(sd_load_image(ctx, p, &image, &mask), SD_OK);
    tensor(mask, "mask", 3, 1, 64, 64, 0);
    sd_value_unref(image);
    sd_value_unref(mask);
    free(p);

    const png_color pal[2] = {{0, 0, 0}, {255, 255, 255}};
    const unsigned char alpha[1] = {0};
    const unsigned char idx[] = {0x40}; /* 2-bit: 1 0 0 0 */
    fixture fp = {.w = 2, .h = 1, .depth = 2, .ctype = PNG_COLOR_TYPE_PALETTE, .pixels = idx,
                  .palette = pal, .n_palette = 2, .trns_alpha = alpha, .n_trns = 1};
    p = write_fixture("paltrns.png", &fp);
    CHECK_EQ_INT(sd_load_image(ctx, p, &image, &mask), SD_OK);
    mt = tensor(mask, "mask", 3, 1, 1, 2, 0);
    if (mt)
        CHECK(mt->data[0] == 0.0f && mt->data[1] == 1.0f);
    sd_value_unref(image);
    sd_value_unref(mask);
    free(p);

    /* 16-bit gray+alpha keeps 16-bit precision in both outputs. */
    const unsigned char ga16[] = {0x12, 0x34, 0x40, 0x01};
    fixture f16 = {.w = 1, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_GRAY_ALPHA, .pixels = ga16};
    p = write_fixture("ga16.png", &f16);
    CHECK_EQ_INT(sd_load_image(ctx, p, &image, &mask), SD_OK);
    it = tensor(image, "image", 4, 1, 1, 1, 3);
    mt = tensor(mask, "mask", 3, 1, 1, 1, 0);
    if (it && mt) {
        CHECK(it->data[0] == 0x1234 / 65535.0f && it->data[2] == it->data[0]);
        CHECK(mt->data[0] == 1.0f - 0x4001 / 65535.0f);
    }
    sd_value_unref(image);
    sd_value_unref(mask);
    free(p);

    /* Errors come from the decoder, naming the file; nothing is returned. */
    char *missing = test_path(test_scratch_dir(), "nope.png");
    CHECK_EQ_INT(sd_load_image(ctx, missing, &image, &mask), SD_ERR_IO);
    CHECK(image == NULL && mask == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), missing);
    free(missing);
}

static void test_load_image_mask_channels(void)
{
    const unsigned char rgba[] = {10, 20, 30, 255, 40, 50, 60, 0};
    fixture fx = {.w = 2, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .pixels = rgba};
    char *p = write_fixture("channels.png", &fx);
    const char *names[4] = {"red", "green", "blue", "alpha"};
    const float want[4][2] = {{10 / 255.0f, 40 / 255.0f}, {20 / 255.0f, 50 / 255.0f},
                              {30 / 255.0f, 60 / 255.0f}, {0.0f, 1.0f}};
    for (int k = 0; k < 4; k++) {
        sd_value *m;
        CHECK_EQ_INT(sd_load_image_mask(ctx, p, names[k], &m), SD_OK);
        const sd_tensor *t = tensor(m, "mask", 3, 1, 1, 2, 0);
        if (t)
            CHECK_MSG(t->data[0] == want[k][0] && t->data[1] == want[k][1], "channel %s", names[k]);
        sd_value_unref(m);
    }
    sd_value *m = NULL;
    CHECK_EQ_INT(sd_load_image_mask(ctx, p, "purple", &m), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "unknown channel 'purple'");
    CHECK(m == NULL);
    free(p);

    /* No alpha in the file: alpha reads as opaque, so the mask is 0 at the image's size. */
    const unsigned char g[] = {7, 9};
    fixture fg = {.w = 1, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g};
    p = write_fixture("g.png", &fg);
    CHECK_EQ_INT(sd_load_image_mask(ctx, p, "alpha", &m), SD_OK);
    const sd_tensor *t = tensor(m, "mask", 3, 1, 2, 1, 0);
    if (t)
        CHECK(t->data[0] == 0.0f && t->data[1] == 0.0f);
    sd_value_unref(m);
    CHECK_EQ_INT(sd_load_image_mask(ctx, p, "green", &m), SD_OK);
    t = tensor(m, "mask", 3, 1, 2, 1, 0);
    if (t)
        CHECK(t->data[1] == 9 / 255.0f);
    sd_value_unref(m);
    free(p);
}

typedef struct saved_list {
    char *paths[8];
    int n;
} saved_list;

static sd_status on_saved(void *user, const char *path)
{
    saved_list *l = user;
    if (l->n < 8)
        l->paths[l->n++] = strdup(path);
    return SD_OK;
}

static sd_value *make_images(int64_t batch, int64_t h, int64_t w)
{
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    int64_t shape[4] = {batch, h, w, 3};
    sd_tensor *t = sd_value_add_tensor(v, "image", 4, shape);
    for (int64_t i = 0; i < batch * h * w * 3; i++)
        t->data[i] = (float)((i * 7 + i / 3) % 256) / 255.0f;
    return v;
}

static char *text_of(const char *path, const char *key)
{
    char *t = NULL;
    if (sd_png_read_text(ctx, path, NULL, key, &t) != SD_OK)
        return NULL;
    return t;
}

static void test_save_images(void)
{
    char *out = test_path(test_scratch_dir(), "output"); /* does not exist yet: created */
    sd_value *images = make_images(2, 3, 5);
    sd_save_request req = {.dir = out, .prefix = "shots/cat", .node_id = "9",
                           .workflow_xml = "<workflow/>", .provenance_json = "{\"files\":{}}",
                           .compression = 4};
    saved_list l = {0};
    CHECK_EQ_INT(sd_save_images(ctx, &req, images, on_saved, &l), SD_OK);
    CHECK_EQ_INT(l.n, 2);
    char *want0 = test_path(out, "shots/cat_00001_.png"), *want1 = test_path(out, "shots/cat_00002_.png");
    CHECK_STR_EQ(l.paths[0], want0);
    CHECK_STR_EQ(l.paths[1], want1);
    for (int b = 0; b < l.n; b++) {
        sd_image img;
        CHECK_EQ_INT(sd_png_read(ctx, l.paths[b], NULL, &img), SD_OK);
        CHECK(img.width == 5 && img.height == 3 && img.channels == 3);
        const sd_tensor *t = sd_value_tensor(images, "image");
        int bad = 0;
        for (int i = 0; i < 45 && img.data; i++)
            bad += img.data[i] != t->data[b * 45 + i];
        CHECK_EQ_INT(bad, 0);
        sd_image_clear(&img);
        char *s;
        CHECK_STR_EQ(s = text_of(l.paths[b], SD_PNG_KEY_WORKFLOW), "<workflow/>");
        free(s);
        CHECK_STR_EQ(s = text_of(l.paths[b], SD_PNG_KEY_PROVENANCE), "{\"files\":{}}");
        free(s);
        CHECK_STR_EQ(s = text_of(l.paths[b], SD_PNG_KEY_NODE), "9");
        free(s);
        CHECK_STR_EQ(s = text_of(l.paths[b], SD_PNG_KEY_BATCH), b ? "1" : "0");
        free(s);
        CHECK_STR_CONTAINS(s = text_of(l.paths[b], SD_PNG_KEY_ENGINE), "sdflow ");
        free(s);
    }
    /* Numbering continues after the highest counter, whatever the gaps; other prefixes and
     * names that only look similar do not count. */
    char *sub = test_path(out, "shots");
    char *f7 = test_path(sub, "cat_00007_.png"), *fx = test_path(sub, "cat_99999.png");
    char *fd = test_path(sub, "catalog_00050_.png");
    write_bytes(f7, "x", 1);
    write_bytes(fx, "x", 1);
    write_bytes(fd, "x", 1);
    saved_list l2 = {0};
    sd_value *one = make_images(1, 2, 2);
    CHECK_EQ_INT(sd_save_images(ctx, &req, one, on_saved, &l2), SD_OK);
    char *want8 = test_path(sub, "cat_00008_.png");
    CHECK_EQ_INT(l2.n, 1);
    CHECK_STR_EQ(l2.paths[0], want8);
    CHECK_EQ_INT(count_dir_entries(sub), 6);

    /* Prefixes that escape the directory are refused and nothing is written. */
    const char *bad_prefixes[] = {"../evil", "/tmp/evil", "a/../../evil", "dir/", ""};
    for (int i = 0; i < 5; i++) {
        req.prefix = bad_prefixes[i];
        CHECK_EQ_INT(sd_save_images(ctx, &req, one, on_saved, &l2), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "filename_prefix");
    }
    CHECK_EQ_INT(l2.n, 1);
    CHECK_EQ_INT(count_dir_entries(out), 1); /* only shots/ */

    /* Not an image batch. */
    sd_value *mask = sd_value_new(SD_TYPE_MASK);
    int64_t ms[3] = {1, 2, 2};
    sd_value_add_tensor(mask, "mask", 3, ms);
    req.prefix = "x";
    CHECK_EQ_INT(sd_save_images(ctx, &req, mask, on_saved, &l2), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "IMAGE must be");
    sd_value_unref(mask);

    for (int i = 0; i < l.n; i++)
        free(l.paths[i]);
    for (int i = 0; i < l2.n; i++)
        free(l2.paths[i]);
    sd_value_unref(images);
    sd_value_unref(one);
    free(want0);
    free(want1);
    free(want8);
    free(f7);
    free(fx);
    free(fd);
    free(sub);
    free(out);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    RUN(test_load_image_alpha_mask);
    RUN(test_load_image_without_alpha);
    RUN(test_load_image_mask_channels);
    RUN(test_save_images);
    sd_context_free(ctx);
    return test_summary("test_image_io");
}
