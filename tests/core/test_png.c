/* core/png: decoding every colour type and depth, limits, bad files, text chunks, atomic writes.
 * Fixture PNGs are written here with libpng directly, so each test states its exact bytes. */
#include "test.h"
#include "core/fileio.h"
#include "core/png.h"
#include "support/png_fixture.h"
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zlib.h>

static sd_context *ctx;

static char *fresh_dir(const char *name)
{
    char *dir = test_path(test_scratch_dir(), name);
    mkdir(dir, 0777);
    return dir;
}

static void test_gray(void)
{
    const unsigned char g8[] = {0, 1, 128, 255, 7, 200};
    fixture fx = {.w = 3, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g8};
    char *p = write_fixture("gray8.png", &fx);
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.width == 3 && img.height == 2 && img.channels == 1 && img.bit_depth == 8);
    for (int i = 0; i < 6 && img.data; i++)
        CHECK_NEAR(img.data[i], g8[i] / 255.0, 1e-7);
    sd_image_clear(&img);
    free(p);

    /* 16-bit keeps its precision: 0x1234 is not representable in 8 bits. */
    const unsigned char g16[] = {0x12, 0x34, 0xff, 0xff, 0x00, 0x01};
    fixture f16 = {.w = 3, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g16};
    p = write_fixture("gray16.png", &f16);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 1 && img.bit_depth == 16);
    if (img.data) {
        CHECK_NEAR(img.data[0], 0x1234 / 65535.0, 1e-7);
        CHECK(img.data[1] == 1.0f);
        CHECK_NEAR(img.data[2], 1 / 65535.0, 1e-9);
    }
    sd_image_clear(&img);
    free(p);

    /* 1-bit gray expands to 0 and 1. */
    const unsigned char g1[] = {0xA0}; /* 1 0 1 0 */
    fixture f1 = {.w = 4, .h = 1, .depth = 1, .ctype = PNG_COLOR_TYPE_GRAY, .pixels = g1};
    p = write_fixture("gray1.png", &f1);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 1 && img.data && img.data[0] == 1.0f && img.data[1] == 0.0f &&
          img.data[2] == 1.0f && img.data[3] == 0.0f);
    sd_image_clear(&img);
    free(p);

    const unsigned char ga[] = {10, 255, 20, 0};
    fixture fga = {.w = 2, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY_ALPHA, .pixels = ga};
    p = write_fixture("graya.png", &fga);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 2 && !img.alpha_from_key && img.data && img.data[1] == 1.0f &&
          img.data[3] == 0.0f);
    CHECK_NEAR(img.data ? img.data[2] : -1, 20 / 255.0, 1e-7);
    sd_image_clear(&img);
    free(p);
}

static void test_rgb_rgba(void)
{
    const unsigned char rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 2, 3};
    fixture fx = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = rgb};
    char *p = write_fixture("rgb8.png", &fx);
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 3 && img.width == 2 && img.height == 2);
    for (int i = 0; i < 12 && img.data; i++)
        CHECK_NEAR(img.data[i], rgb[i] / 255.0, 1e-7);
    sd_image_clear(&img);
    free(p);

    const unsigned char rgb16[] = {0xAB, 0xCD, 0, 0, 0xFF, 0xFF};
    fixture f16 = {.w = 1, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_RGB, .pixels = rgb16};
    p = write_fixture("rgb16.png", &f16);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 3 && img.bit_depth == 16 && img.data);
    CHECK_NEAR(img.data ? img.data[0] : -1, 0xABCD / 65535.0, 1e-7);
    sd_image_clear(&img);
    free(p);

    const unsigned char rgba16[] = {0, 0, 0x80, 0x00, 0xFF, 0xFF, 0x40, 0x01};
    fixture fa16 = {.w = 1, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .pixels = rgba16};
    p = write_fixture("rgba16.png", &fa16);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 4 && img.bit_depth == 16);
    CHECK_NEAR(img.data ? img.data[3] : -1, 0x4001 / 65535.0, 1e-7);
    sd_image_clear(&img);
    free(p);

    const unsigned char rgba[] = {9, 8, 7, 128};
    fixture fa = {.w = 1, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .pixels = rgba};
    p = write_fixture("rgba8.png", &fa);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 4 && !img.alpha_from_key && img.data);
    CHECK_NEAR(img.data ? img.data[3] : -1, 128 / 255.0, 1e-7);
    sd_image_clear(&img);
    free(p);

    /* An RGB colour key (tRNS) becomes alpha, flagged as coming from a key. */
    png_color_16 key = {.red = 1, .green = 2, .blue = 3};
    fixture fk = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = rgb, .trns_color = &key};
    p = write_fixture("rgbkey.png", &fk);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 4 && img.alpha_from_key && img.data && img.data[3] == 1.0f &&
          img.data[15] == 0.0f);
    sd_image_clear(&img);
    free(p);
}

static void test_palette_and_interlace(void)
{
    const png_color pal[3] = {{255, 0, 0}, {0, 0, 255}, {10, 20, 30}};
    const unsigned char idx[] = {0x01, 0x20}; /* 4-bit indices 0 1 / 2 0 */
    fixture fx = {.w = 2, .h = 2, .depth = 4, .ctype = PNG_COLOR_TYPE_PALETTE, .pixels = idx,
                  .palette = pal, .n_palette = 3};
    char *p = write_fixture("pal.png", &fx);
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 3 && img.width == 2 && img.height == 2 && img.data);
    if (img.data) {
        CHECK(img.data[0] == 1.0f && img.data[1] == 0.0f && img.data[5] == 1.0f);
        CHECK_NEAR(img.data[7], 20 / 255.0, 1e-7);
    }
    sd_image_clear(&img);
    free(p);

    const unsigned char alpha[2] = {0, 100};
    fixture ft = fx;
    ft.trns_alpha = alpha;
    ft.n_trns = 2;
    p = write_fixture("paltrns.png", &ft);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.channels == 4 && !img.alpha_from_key && img.data);
    if (img.data) {
        CHECK(img.data[3] == 0.0f);                  /* index 0 */
        CHECK_NEAR(img.data[7], 100 / 255.0, 1e-7);  /* index 1 */
        CHECK(img.data[11] == 1.0f);                 /* index 2: beyond tRNS, opaque */
    }
    sd_image_clear(&img);
    free(p);

    /* Adam7: the same pixels as the non-interlaced file. */
    unsigned char px[9 * 7 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 37 + 11);
    fixture fi = {.w = 9, .h = 7, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .interlace = true, .pixels = px};
    p = write_fixture("adam7.png", &fi);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_OK);
    CHECK(img.width == 9 && img.height == 7 && img.channels == 3 && img.data);
    int bad = 0;
    for (size_t i = 0; i < sizeof px && img.data; i++)
        bad += img.data[i] != (float)px[i] / 255.0f;
    CHECK_EQ_INT(bad, 0);
    sd_image_clear(&img);
    free(p);
}

static void test_bad_files(void)
{
    unsigned char px[16 * 16 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 131 % 251);
    fixture fx = {.w = 16, .h = 16, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    char *good = write_fixture("good.png", &fx);
    size_t len;
    unsigned char *bytes = read_bytes(good, &len);
    char *cut = test_path(test_scratch_dir(), "truncated.png");
    char want[4200];
    sd_image img;
    /* Cut inside the image data, inside the IHDR, and just after the signature. */
    size_t cuts[] = {len / 2, 20, 8};
    for (size_t i = 0; i < 3; i++) {
        write_bytes(cut, bytes, cuts[i]);
        CHECK_EQ_INT(sd_png_read(ctx, cut, NULL, &img), SD_ERR_PARSE);
        snprintf(want, sizeof want, "%s: truncated", cut);
        if (i == 0) /* the IDAT's declared length runs past the end */
            CHECK_STR_CONTAINS(sd_context_errmsg(ctx), want);
        else
            CHECK_STR_EQ(sd_context_errmsg(ctx), want);
        CHECK(img.data == NULL && img.width == 0);
    }
    CHECK_EQ_INT(sd_status_exit_code(SD_ERR_PARSE), 3);

    char *junk = test_path(test_scratch_dir(), "junk.png");
    write_bytes(junk, "GIF89a not a png at all", 23);
    CHECK_EQ_INT(sd_png_read(ctx, junk, NULL, &img), SD_ERR_PARSE);
    snprintf(want, sizeof want, "%s: not a PNG file", junk);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);

    /* A flipped byte in the image data: the IDAT CRC no longer matches. */
    bytes[len / 2] ^= 0x55;
    write_bytes(cut, bytes, len);
    CHECK_EQ_INT(sd_png_read(ctx, cut, NULL, &img), SD_ERR_PARSE);
    snprintf(want, sizeof want, "%s: invalid PNG: ", cut);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), want);

    char *missing = test_path(test_scratch_dir(), "missing.png");
    CHECK_EQ_INT(sd_png_read(ctx, missing, NULL, &img), SD_ERR_IO);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), missing);
    free(bytes);
    free(good);
    free(cut);
    free(junk);
    free(missing);
}

/* Signature + a valid IHDR (correct CRC) claiming w x h + an empty IDAT + IEND. */
static char *write_header_only(const char *name, uint32_t w, uint32_t h)
{
    unsigned char b[8 + 25 + 12 + 12];
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    memcpy(b, sig, 8);
    unsigned char *c = b + 8;
    const unsigned char ihdr[17] = {'I', 'H', 'D', 'R', (unsigned char)(w >> 24), (unsigned char)(w >> 16),
                                    (unsigned char)(w >> 8), (unsigned char)w, (unsigned char)(h >> 24),
                                    (unsigned char)(h >> 16), (unsigned char)(h >> 8), (unsigned char)h,
                                    8, 2, 0, 0, 0};
    c[0] = c[1] = c[2] = 0;
    c[3] = 13;
    memcpy(c + 4, ihdr, 17);
    uLong crc = crc32(0, ihdr, 17);
    for (int i = 0; i < 4; i++)
        c[21 + i] = (unsigned char)(crc >> (24 - 8 * i));
    unsigned char *d = c + 25;
    const char *types[2] = {"IDAT", "IEND"};
    for (int k = 0; k < 2; k++, d += 12) {
        memset(d, 0, 4);
        memcpy(d + 4, types[k], 4);
        uLong cc = crc32(0, (const unsigned char *)types[k], 4);
        for (int i = 0; i < 4; i++)
            d[8 + i] = (unsigned char)(cc >> (24 - 8 * i));
    }
    char *path = test_path(test_scratch_dir(), name);
    write_bytes(path, b, sizeof b);
    return path;
}

static void test_pixel_limit(void)
{
    char *p = write_header_only("huge.png", 100000, 100000);
    sd_image img;
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_ERR_LIMIT);
    char want[4200];
    snprintf(want, sizeof want,
             "%s: image 100000x100000 exceeds the pixel limit (32768 per side, 67108864 pixels)", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(img.data == NULL);
    CHECK_EQ_INT(sd_status_exit_code(SD_ERR_LIMIT), 4);
    char *text = NULL;
    CHECK_EQ_INT(sd_png_read_text(ctx, p, NULL, "sdflow:workflow", &text), SD_ERR_LIMIT);
    CHECK(text == NULL);
    /* The budget is checked on the IHDR bytes alone: a file that ends right after the IHDR
     * fields is still over the limit, not truncated (nothing past the header was read). */
    size_t len;
    unsigned char *bytes = read_bytes(p, &len);
    write_bytes(p, bytes, 24);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_ERR_LIMIT);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(bytes);
    free(p);

    /* Each side under the limit, the product over it: 8192 x 8193 > 64 Mpixels. */
    p = write_header_only("wide.png", 8192, 8193);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "image 8192x8193 exceeds the pixel limit");
    free(p);

    /* Caller limits; an image at the limit passes the budget (and then fails on its empty IDAT). */
    sd_png_limits small = sd_png_default_limits();
    small.max_pixels = 100;
    p = write_header_only("eleven.png", 11, 10);
    CHECK_EQ_INT(sd_png_read(ctx, p, &small, &img), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "image 11x10 exceeds the pixel limit (32768 per side, 100 pixels)");
    free(p);
    p = write_header_only("ten.png", 10, 10);
    CHECK_EQ_INT(sd_png_read(ctx, p, &small, &img), SD_ERR_PARSE);
    free(p);

    /* Within the budget but far more data than a 57-byte file can inflate to (deflate expands
     * at most 1032:1): rejected before the 768 MiB of pixel memory is allocated (found by
     * fuzz_png: small inputs made the reader allocate up to 1 GiB). */
    p = write_header_only("claims.png", 8192, 8192);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_ERR_PARSE);
    snprintf(want, sizeof want, "%s: truncated (57 bytes cannot hold a 8192x8192 image)", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(img.data == NULL);
    CHECK_EQ_INT(sd_png_read_text(ctx, p, NULL, "sdflow:workflow", &text), SD_ERR_PARSE);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK(text == NULL);
    free(p);

    /* A 1 KB file declaring a 1.8 GB zTXt chunk: rejected from the chunk headers before libpng
     * allocates the declared length (found by fuzz_png; png_set_chunk_malloc_max does not
     * bound zTXt in libpng 1.6.39). */
    p = write_header_only("bigchunk.png", 2, 2);
    size_t hl;
    unsigned char *hb = read_bytes(p, &hl);
    unsigned char big[33 + 12 + 1000];
    memcpy(big, hb, 33);
    memset(big + 33, 'x', sizeof big - 33);
    memcpy(big + 33, "\x70\x61\x00\x00zTXt", 8);
    write_bytes(p, big, sizeof big);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &img), SD_ERR_PARSE);
    snprintf(want, sizeof want, "%s: truncated (chunk 'zTXt' of 1885405184 bytes runs past the end of the file)", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK_EQ_INT(sd_png_read_text(ctx, p, NULL, "sdflow:workflow", &text), SD_ERR_PARSE);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    free(hb);
    free(p);
}

static void fill_image(sd_image *img, uint32_t w, uint32_t h, int channels)
{
    img->width = w;
    img->height = h;
    img->channels = channels;
    img->data = malloc((size_t)w * h * (size_t)channels * sizeof(float));
    for (size_t i = 0; i < (size_t)w * h * (size_t)channels; i++)
        img->data[i] = (float)((i * 53) % 256) / 255.0f;
}

static void test_write_roundtrip_and_text(void)
{
    sd_image img = {0};
    fill_image(&img, 13, 5, 3);
    char big[5000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof big - 1] = '\0';
    sd_png_text texts[] = {{"sdflow:workflow", "<workflow>\xc3\xa9t\xc3\xa9</workflow>"},
                           {"sdflow:big", big}, {"sdflow:engine", "sdflow 0.1.0"}};
    char *p = test_path(test_scratch_dir(), "written.png");
    CHECK_EQ_INT(sd_png_write(ctx, p, &img, texts, 3, 4), SD_OK);
    sd_image back;
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &back), SD_OK);
    CHECK(back.width == 13 && back.height == 5 && back.channels == 3 && back.bit_depth == 8);
    int bad = 0;
    for (size_t i = 0; i < 13 * 5 * 3 && back.data; i++)
        bad += back.data[i] != img.data[i];
    CHECK_EQ_INT(bad, 0); /* v/255 survives float -> 8-bit -> float exactly */
    sd_image_clear(&back);
    for (int i = 0; i < 3; i++) {
        char *t = NULL;
        CHECK_EQ_INT(sd_png_read_text(ctx, p, NULL, texts[i].keyword, &t), SD_OK);
        CHECK_STR_EQ(t, texts[i].text);
        free(t);
    }
    char *t = NULL;
    CHECK_EQ_INT(sd_png_read_text(ctx, p, NULL, "sdflow:nothing", &t), SD_ERR_NOT_FOUND);
    char want[4200];
    snprintf(want, sizeof want, "%s: no 'sdflow:nothing' text chunk", p);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);

    /* Bounded text: a chunk larger than the limit is skipped, never allocated in full. */
    sd_png_limits small = sd_png_default_limits();
    small.max_chunk_bytes = 1000;
    CHECK_EQ_INT(sd_png_read_text(ctx, p, &small, "sdflow:big", &t), SD_ERR_NOT_FOUND);
    CHECK(t == NULL);
    CHECK_EQ_INT(sd_png_read_text(ctx, p, &small, "sdflow:engine", &t), SD_OK);
    CHECK_STR_EQ(t, "sdflow 0.1.0");
    free(t);
    t = NULL;

    /* Conversion: scale by 255, clamp, truncate (as ComfyUI); NaN is 0. RGBA keeps alpha. */
    sd_image q = {0};
    fill_image(&q, 6, 1, 4);
    const float vals[24] = {0.5f, 1.0f, -1.0f, NAN, 2.0f, 0.999f, 0.0f, 1.0f / 255.0f, 0.00392f};
    memcpy(q.data, vals, sizeof vals);
    CHECK_EQ_INT(sd_png_write(ctx, p, &q, NULL, 0, 1), SD_OK);
    CHECK_EQ_INT(sd_png_read(ctx, p, NULL, &back), SD_OK);
    CHECK(back.channels == 4 && back.data);
    const int expect[9] = {127, 255, 0, 0, 255, 254, 0, 1, 0};
    for (int i = 0; i < 9 && back.data; i++)
        CHECK_MSG(back.data[i] == expect[i] / 255.0f, "sample %d: %g", i, back.data[i] * 255.0);
    sd_image_clear(&back);

    /* Text that follows the image data (written by other tools) is found too. */
    const unsigned char g[] = {1, 2, 3, 4};
    fixture fx = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .interlace = true, .pixels = g,
                  .text_after_key = "Comment", .text_after = "after IDAT"};
    char *after = write_fixture("after.png", &fx);
    CHECK_EQ_INT(sd_png_read_text(ctx, after, NULL, "Comment", &t), SD_OK);
    CHECK_STR_EQ(t, "after IDAT");
    free(t);

    /* Invalid images and keywords are refused before anything is written. */
    char *none = test_path(test_scratch_dir(), "never.png");
    q.channels = 2;
    CHECK_EQ_INT(sd_png_write(ctx, none, &q, NULL, 0, 1), SD_ERR_INVALID);
    q.channels = 4;
    sd_png_text badkey = {" lead", "x"};
    CHECK_EQ_INT(sd_png_write(ctx, none, &q, &badkey, 1, 1), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "invalid PNG text keyword ' lead'");
    CHECK(!test_file_exists(none));
    sd_image_clear(&q);
    sd_image_clear(&img);
    free(after);
    free(none);
    free(p);
}

static void test_atomic_write(void)
{
    char *dir = fresh_dir("atomic");
    char *target = test_path(dir, "out.png");
    sd_image img = {0};
    fill_image(&img, 64, 64, 3);

    /* Target is a directory: rename fails after the temp file was written; it is removed. */
    mkdir(target, 0777);
    CHECK_EQ_INT(sd_png_write(ctx, target, &img, NULL, 0, 0), SD_ERR_IO);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), target);
    CHECK_EQ_INT(count_dir_entries(dir), 1);
    rmdir(target);

    /* A directory that does not exist. */
    char *nodir = test_path(dir, "no/such/dir/out.png");
    CHECK_EQ_INT(sd_png_write(ctx, nodir, &img, NULL, 0, 0), SD_ERR_IO);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), nodir);

    /* The disk fills up mid-write (file size limit): old content stays, no temp file. */
    write_bytes(target, "old", 3);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 100;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    sd_status st = sd_png_write(ctx, target, &img, NULL, 0, 0); /* 64x64 noise > 100 bytes */
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK_EQ_INT(st, SD_ERR_IO);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "write failed");
    size_t len = 0;
    unsigned char *b = read_bytes(target, &len);
    CHECK(b && len == 3 && memcmp(b, "old", 3) == 0);
    free(b);
    CHECK_EQ_INT(count_dir_entries(dir), 1);

    /* Exclusive writes never replace. */
    bool existed = false;
    CHECK_EQ_INT(sd_file_write_atomic(ctx, target, "new", 3, true, &existed), SD_ERR_IO);
    CHECK(existed);
    b = read_bytes(target, &len);
    CHECK(b && len == 3 && memcmp(b, "old", 3) == 0);
    free(b);
    CHECK_EQ_INT(count_dir_entries(dir), 1);
    char *other = test_path(dir, "other.bin");
    CHECK_EQ_INT(sd_file_write_atomic(ctx, other, "new", 3, true, &existed), SD_OK);
    CHECK(!existed);
    b = read_bytes(other, &len);
    CHECK(b && len == 3 && memcmp(b, "new", 3) == 0);
    free(b);
    CHECK_EQ_INT(count_dir_entries(dir), 2);

    /* Replacing works and leaves exactly the file. */
    CHECK_EQ_INT(sd_png_write(ctx, target, &img, NULL, 0, 6), SD_OK);
    sd_image back;
    CHECK_EQ_INT(sd_png_read(ctx, target, NULL, &back), SD_OK);
    CHECK(back.width == 64);
    sd_image_clear(&back);
    CHECK_EQ_INT(count_dir_entries(dir), 2);

    /* mkdir -p: creates missing parents, refuses a component that is a file. */
    char *deep = test_path(dir, "a/b/c");
    CHECK_EQ_INT(sd_make_dirs(ctx, deep), SD_OK);
    CHECK_EQ_INT(sd_make_dirs(ctx, deep), SD_OK);
    struct stat sb;
    CHECK(stat(deep, &sb) == 0 && S_ISDIR(sb.st_mode));
    char *through_file = test_path(target, "sub");
    CHECK_EQ_INT(sd_make_dirs(ctx, through_file), SD_ERR_IO);
    char want[4200];
    snprintf(want, sizeof want, "cannot create directory %s: not a directory", target);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    CHECK_EQ_INT(sd_make_dirs(ctx, ""), SD_ERR_INVALID);

    /* A 250-character file name still gets a temp file (its name is cut to fit NAME_MAX). */
    char longname[251];
    memset(longname, 'n', 250);
    longname[250] = '\0';
    char *longpath = test_path(dir, longname);
    CHECK_EQ_INT(sd_file_write_atomic(ctx, longpath, "x", 1, false, NULL), SD_OK);
    CHECK(test_file_exists(longpath));
    free(longpath);
    free(deep);
    free(through_file);
    sd_image_clear(&img);
    free(other);
    free(nodir);
    free(target);
    free(dir);
}

/* Corrupted files (deterministic random byte changes and cuts of a valid PNG with text chunks)
 * never crash or leak: each read either succeeds or fails with a parse/limit status and a
 * message naming the file, and returns no pixels on failure. */
static void test_mutations(void)
{
    sd_image img = {0};
    fill_image(&img, 16, 9, 4);
    sd_png_text texts[] = {{"sdflow:workflow", "<workflow version=\"1\"/>"}, {"sdflow:node", "7"}};
    char *good = test_path(test_scratch_dir(), "mut_src.png");
    CHECK_EQ_INT(sd_png_write(ctx, good, &img, texts, 2, 6), SD_OK);
    sd_image_clear(&img);
    size_t len;
    unsigned char *orig = read_bytes(good, &len);
    unsigned char *buf = malloc(len);
    char *p = test_path(test_scratch_dir(), "mutant.png");
    unsigned seed = 12345, bad_status = 0, leaked = 0, unnamed = 0, ok = 0;
    for (int iter = 0; iter < 400; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = 8 + (seed >> 8) % (len - 8);
            buf[at] ^= (unsigned char)(1u << ((seed >> 4) % 8));
        }
        if (iter % 3 == 0) {
            seed = seed * 1103515245u + 12345u;
            n = (seed >> 8) % len;
        }
        write_bytes(p, buf, n);
        sd_image out;
        sd_status st = sd_png_read(ctx, p, NULL, &out);
        if (st == SD_OK) {
            ok++;
            sd_image_clear(&out);
        } else {
            bad_status += st != SD_ERR_PARSE && st != SD_ERR_LIMIT;
            leaked += out.data != NULL;
            unnamed += strncmp(sd_context_errmsg(ctx), p, strlen(p)) != 0;
        }
        char *t = NULL;
        st = sd_png_read_text(ctx, p, NULL, "sdflow:workflow", &t);
        if (st != SD_OK && st != SD_ERR_NOT_FOUND)
            bad_status += st != SD_ERR_PARSE && st != SD_ERR_LIMIT;
        free(t);
    }
    CHECK_EQ_INT(bad_status, 0);
    CHECK_EQ_INT(leaked, 0);
    CHECK_EQ_INT(unnamed, 0);
    CHECK(ok < 400); /* the corruption was noticed at least sometimes */
    free(buf);
    free(orig);
    free(p);
    free(good);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    RUN(test_gray);
    RUN(test_rgb_rgba);
    RUN(test_palette_and_interlace);
    RUN(test_bad_files);
    RUN(test_pixel_limit);
    RUN(test_write_roundtrip_and_text);
    RUN(test_atomic_write);
    RUN(test_mutations);
    sd_context_free(ctx);
    return test_summary("test_png");
}
