/* PNG decoding and encoding through libpng, with our own limits (see core/png.h).
 *
 * libpng reports errors by calling an error function that must not return; ours records a
 * message and longjmps back to the setjmp in the public function. Everything the cleanup path
 * needs lives in a heap-allocated reader/writer struct, so no automatic variable modified after
 * setjmp is read after the longjmp. */
#include "core/png.h"
#include "core/checked.h"
#include "core/fileio.h"
#include "core/files.h"
#include <errno.h>
#include <inttypes.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HEAD_BYTES = 24 };
/* deflate expands at most 1032:1 (a 258-byte match in 2 bits): a file of S bytes cannot hold more
 * than 1032 * S bytes of image data, whatever its IHDR claims. */
enum { DEFLATE_MAX_RATIO = 1032 }; /* signature (8), IHDR length (4) and type (4), width (4), height (4) */

sd_png_limits sd_png_default_limits(void)
{
    sd_png_limits l = {SD_PNG_MAX_SIDE, SD_PNG_MAX_PIXELS, SD_PNG_MAX_CHUNK_BYTES, SD_PNG_MAX_CHUNKS};
    return l;
}

void sd_image_clear(sd_image *img)
{
    if (!img)
        return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* ---- Reading. ---- */

typedef struct png_reader {
    const char *path;
    FILE *f;
    sd_file_id id; /* of the file when opened */
    uint64_t file_size;
    unsigned char head[HEAD_BYTES];
    size_t head_pos;
    sd_status status; /* set before png_error by our callbacks; SD_OK: a libpng error */
    char msg[256];
    png_structp png;
    png_infop info;
    unsigned char *rows;  /* one row, or the whole image when interlaced */
    png_bytep *row_ptrs;
    float *pixels;
} png_reader;

static void reader_error_fn(png_structp png, png_const_charp message)
{
    png_reader *r = png_get_error_ptr(png);
    if (r->status == SD_OK) {
        r->status = SD_ERR_PARSE;
        snprintf(r->msg, sizeof r->msg, "invalid PNG: %s", message);
    }
    png_longjmp(png, 1);
}

static void quiet_warning_fn(png_structp png, png_const_charp message)
{
    (void)png;
    (void)message; /* ancillary-chunk problems: the chunk is skipped, the image stays usable */
}

static void reader_fail(png_reader *r, sd_status status, const char *msg)
{
    r->status = status;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    png_error(r->png, msg);
}

/* Serves the already-read header bytes first, then the file. A short read is "truncated". */
static void reader_read_fn(png_structp png, png_bytep data, size_t len)
{
    png_reader *r = png_get_io_ptr(png);
    size_t from_head = HEAD_BYTES - r->head_pos;
    if (from_head > len)
        from_head = len;
    memcpy(data, r->head + r->head_pos, from_head);
    r->head_pos += from_head;
    size_t rest = len - from_head;
    if (rest && fread(data + from_head, 1, rest, r->f) != rest) {
        if (ferror(r->f)) {
            char m[200];
            snprintf(m, sizeof m, "read error: %s", strerror(errno));
            reader_fail(r, SD_ERR_IO, m);
        }
        reader_fail(r, SD_ERR_PARSE, "truncated");
    }
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void reader_free(png_reader *r)
{
    if (!r)
        return;
    if (r->png)
        png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
    if (r->f)
        fclose(r->f);
    free(r->rows);
    free(r->row_ptrs);
    free(r->pixels);
    free(r);
}

/* Walks the chunk headers up to IEND without reading their data (pread: the stream position
 * stays where it is) and fails with "truncated" when a chunk runs past the end of the file:
 * libpng allocates a chunk's declared length before reading it, and png_set_chunk_malloc_max
 * does not bound every chunk (zTXt in libpng 1.6.39), so a 1 KB file declaring a 1.8 GB chunk
 * would otherwise allocate 1.8 GB. A malformed chunk type ends the walk; libpng reports it. */
static sd_status check_chunk_lengths(sd_context *ctx, png_reader *r)
{
    int fd = fileno(r->f);
    uint64_t pos = 8;
    while (pos + 8 <= r->file_size) {
        unsigned char h[8];
        if (pread(fd, h, 8, (off_t)pos) != 8)
            return sd_set_error(ctx, SD_ERR_IO, "%s: read error: %s", r->path, strerror(errno));
        uint32_t len = be32(h);
        for (int i = 4; i < 8; i++)
            if (!((h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= 'a' && h[i] <= 'z')))
                return SD_OK;
        if (len > 0x7fffffffu || pos + 12 + len > r->file_size)
            return sd_set_error(ctx, SD_ERR_PARSE,
                                "%s: truncated (chunk '%.4s' of %" PRIu32 " bytes runs past the end of the file)",
                                r->path, (const char *)h + 4, len);
        if (memcmp(h + 4, "IEND", 4) == 0)
            break;
        pos += 12 + (uint64_t)len;
    }
    return SD_OK;
}

/* Opens path, checks the signature and the IHDR's size against the limits (before libpng sees
 * the file or anything is allocated for pixels), and sets up libpng with bounded chunks. */
static sd_status reader_open(sd_context *ctx, const char *path, const sd_png_limits *limits,
                             png_reader **out)
{
    *out = NULL;
    sd_status st = SD_OK;
    png_reader *r = calloc(1, sizeof *r);
    if (!r)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    r->path = path;
    int fd;
    if ((st = sd_file_open(ctx, path, &fd, &r->id)))
        goto done;
    if (!(r->f = fdopen(fd, "rb"))) {
        close(fd);
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    r->file_size = r->id.size > 0 ? (uint64_t)r->id.size : 0;
    size_t got = fread(r->head, 1, HEAD_BYTES, r->f);
    if (ferror(r->f)) {
        st = sd_set_error(ctx, SD_ERR_IO, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    if (got < 8 || png_sig_cmp(r->head, 0, 8) != 0) {
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: not a PNG file", path);
        goto done;
    }
    if (got < HEAD_BYTES) {
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: truncated", path);
        goto done;
    }
    if (memcmp(r->head + 12, "IHDR", 4) != 0) {
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: invalid PNG: first chunk is not IHDR", path);
        goto done;
    }
    uint32_t w = be32(r->head + 16), h = be32(r->head + 20);
    if (w > limits->max_side || h > limits->max_side || (uint64_t)w * h > limits->max_pixels) {
        st = sd_set_error(ctx, SD_ERR_LIMIT,
                          "%s: image %" PRIu32 "x%" PRIu32 " exceeds the pixel limit (%" PRIu32
                          " per side, %" PRIu64 " pixels)",
                          path, w, h, limits->max_side, limits->max_pixels);
        goto done;
    }
    if ((st = check_chunk_lengths(ctx, r)))
        goto done;
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, reader_error_fn, quiet_warning_fn);
    if (!r->png || !(r->info = png_create_info_struct(r->png))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    png_set_read_fn(r->png, r, reader_read_fn);
    png_set_user_limits(r->png, limits->max_side, limits->max_side);
    png_set_chunk_malloc_max(r->png, limits->max_chunk_bytes);
    png_set_chunk_cache_max(r->png, limits->max_chunks);
    /* Unknown ancillary chunks are never kept. */
    png_set_keep_unknown_chunks(r->png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
done:
    if (st) {
        reader_free(r);
        return st;
    }
    *out = r;
    return SD_OK;
}

/* After png_read_info (before the transformations): fails with "truncated" when the file is too
 * small to hold the image data its IHDR announces, so that a tiny file claiming a large image
 * never gets the pixel memory of that image allocated. */
static void reader_check_size(png_reader *r)
{
    png_uint_32 w = png_get_image_width(r->png, r->info), h = png_get_image_height(r->png, r->info);
    uint64_t bits = (uint64_t)w * h * png_get_bit_depth(r->png, r->info) * png_get_channels(r->png, r->info);
    if (bits / 8 / DEFLATE_MAX_RATIO > r->file_size) {
        char m[160];
        snprintf(m, sizeof m, "truncated (%" PRIu64 " bytes cannot hold a %" PRIu32 "x%" PRIu32 " image)",
                 r->file_size, (uint32_t)w, (uint32_t)h);
        reader_fail(r, SD_ERR_PARSE, m);
    }
}

static sd_status reader_status(sd_context *ctx, png_reader *r)
{
    return sd_set_error(ctx, r->status ? r->status : SD_ERR_PARSE, "%s: %s", r->path,
                        r->msg[0] ? r->msg : "invalid PNG");
}

/* Sets the transformations that make every image 8- or 16-bit gray, gray+alpha, RGB or RGBA
 * (tRNS becomes alpha) and returns the number of interlace passes. */
static int reader_transform(png_reader *r, bool *alpha_from_key)
{
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(r->png, r->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    bool trns = png_get_valid(r->png, r->info, PNG_INFO_tRNS) != 0;
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(r->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(r->png);
    if (trns)
        png_set_tRNS_to_alpha(r->png);
    *alpha_from_key = trns && ctype != PNG_COLOR_TYPE_PALETTE;
    int passes = png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);
    return passes;
}

static void convert_row(const unsigned char *src, float *dst, size_t samples, int depth)
{
    if (depth == 16)
        for (size_t i = 0; i < samples; i++)
            dst[i] = (float)((unsigned)src[2 * i] << 8 | src[2 * i + 1]) / 65535.0f;
    else
        for (size_t i = 0; i < samples; i++)
            dst[i] = (float)src[i] / 255.0f;
}

sd_status sd_png_read(sd_context *ctx, const char *path, const sd_png_limits *limits, sd_image *out)
{
    memset(out, 0, sizeof *out);
    sd_png_limits defaults = sd_png_default_limits();
    png_reader *r = NULL;
    sd_status st = reader_open(ctx, path, limits ? limits : &defaults, &r);
    if (st)
        return st;
    if (setjmp(png_jmpbuf(r->png))) {
        st = reader_status(ctx, r);
        goto done;
    }
    png_read_info(r->png, r->info);
    reader_check_size(r);
    bool alpha_from_key;
    int passes = reader_transform(r, &alpha_from_key);
    png_uint_32 w = png_get_image_width(r->png, r->info), h = png_get_image_height(r->png, r->info);
    int channels = png_get_channels(r->png, r->info), depth = png_get_bit_depth(r->png, r->info);
    size_t rowbytes = png_get_rowbytes(r->png, r->info), samples, floats, bytes, rows_bytes;
    if (channels < 1 || channels > 4 || (depth != 8 && depth != 16) ||
        !sd_mul_size(w, (size_t)channels, &samples) || !sd_mul_size(samples, h, &floats) ||
        !sd_mul_size(floats, sizeof(float), &bytes) ||
        !sd_mul_size(rowbytes, passes > 1 ? h : 1, &rows_bytes) ||
        rowbytes < samples * (size_t)(depth / 8)) {
        reader_fail(r, SD_ERR_PARSE, "invalid PNG: unsupported pixel layout");
    }
    r->pixels = malloc(bytes ? bytes : 1);
    r->rows = malloc(rows_bytes ? rows_bytes : 1);
    if (!r->pixels || !r->rows)
        reader_fail(r, SD_ERR_NOMEM, "out of memory for the pixels");
    if (passes > 1) {
        if (!(r->row_ptrs = malloc((size_t)h * sizeof *r->row_ptrs)))
            reader_fail(r, SD_ERR_NOMEM, "out of memory for the pixels");
        for (png_uint_32 y = 0; y < h; y++)
            r->row_ptrs[y] = r->rows + (size_t)y * rowbytes;
        png_read_image(r->png, r->row_ptrs);
        for (png_uint_32 y = 0; y < h; y++)
            convert_row(r->row_ptrs[y], r->pixels + (size_t)y * samples, samples, depth);
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(r->png, r->rows, NULL);
            convert_row(r->rows, r->pixels + (size_t)y * samples, samples, depth);
        }
    }
    png_read_end(r->png, NULL);
    /* The pixels are the content the caller hashed only if the file did not change meanwhile. */
    if ((st = sd_file_check(ctx, fileno(r->f), path, &r->id)))
        goto done;
    out->width = w;
    out->height = h;
    out->channels = channels;
    out->bit_depth = depth;
    out->alpha_from_key = alpha_from_key;
    out->data = r->pixels;
    r->pixels = NULL;
done:
    reader_free(r);
    return st;
}

/* Copies the texts with the given keywords (NULL when absent); a keyword found twice is an error. */
static sd_status copy_texts(sd_context *ctx, png_reader *r, const char *const *keywords, size_t n,
                            char **out)
{
    png_textp texts = NULL;
    int count = png_get_text(r->png, r->info, &texts, NULL);
    for (size_t k = 0; k < n; k++) {
        const char *found = NULL;
        for (int i = 0; i < count; i++) {
            if (!texts[i].key || !texts[i].text || strcmp(texts[i].key, keywords[k]) != 0)
                continue;
            if (found)
                return sd_set_error(ctx, SD_ERR_INVALID, "%s: more than one '%s' text chunk", r->path,
                                    keywords[k]);
            found = texts[i].text;
        }
        if (found && !(out[k] = sd_strdup(found)))
            return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", r->path);
    }
    return SD_OK;
}

sd_status sd_png_read_texts(sd_context *ctx, const char *path, const sd_png_limits *limits,
                            const char *const *keywords, size_t n, char **texts_out)
{
    for (size_t k = 0; k < n; k++)
        texts_out[k] = NULL;
    sd_png_limits defaults = sd_png_default_limits();
    png_reader *r = NULL;
    sd_status st = reader_open(ctx, path, limits ? limits : &defaults, &r);
    if (st)
        return st;
    if (setjmp(png_jmpbuf(r->png))) {
        st = reader_status(ctx, r);
        goto done;
    }
    /* Texts may come before or after the image data: decode the rows through one buffer, then
     * read the end, so that every text chunk is seen. */
    png_read_info(r->png, r->info);
    reader_check_size(r);
    int passes = png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);
    png_uint_32 h = png_get_image_height(r->png, r->info);
    if (!(r->rows = malloc(png_get_rowbytes(r->png, r->info))))
        reader_fail(r, SD_ERR_NOMEM, "out of memory");
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++)
            png_read_row(r->png, r->rows, NULL);
    png_read_end(r->png, r->info);
    st = copy_texts(ctx, r, keywords, n, texts_out);
done:
    for (size_t k = 0; st && k < n; k++) {
        free(texts_out[k]);
        texts_out[k] = NULL;
    }
    reader_free(r);
    return st;
}

sd_status sd_png_read_text(sd_context *ctx, const char *path, const sd_png_limits *limits,
                           const char *keyword, char **text_out)
{
    sd_status st = sd_png_read_texts(ctx, path, limits, &keyword, 1, text_out);
    if (!st && !*text_out)
        st = sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: no '%s' text chunk", path, keyword);
    return st;
}

/* ---- Writing. ---- */

typedef struct png_writer {
    png_structp png;
    png_infop info;
    unsigned char *buf;
    size_t len, cap;
    bool nomem;
    char msg[256];
    unsigned char *row;
    png_textp texts;
} png_writer;

static void writer_error_fn(png_structp png, png_const_charp message)
{
    png_writer *w = png_get_error_ptr(png);
    if (!w->msg[0])
        snprintf(w->msg, sizeof w->msg, "%s", message);
    png_longjmp(png, 1);
}

static void writer_write_fn(png_structp png, png_bytep data, size_t len)
{
    png_writer *w = png_get_io_ptr(png);
    size_t need;
    if (!sd_add_size(w->len, len, &need)) {
        w->nomem = true;
        png_error(png, "PNG too large");
    }
    if (need > w->cap) {
        size_t cap = w->cap ? w->cap : 65536;
        while (cap < need)
            if (!sd_mul_size(cap, 2, &cap)) {
                w->nomem = true;
                png_error(png, "PNG too large");
            }
        unsigned char *b = realloc(w->buf, cap);
        if (!b) {
            w->nomem = true;
            png_error(png, "out of memory");
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len = need;
}

static void writer_flush_fn(png_structp png)
{
    (void)png;
}

/* PNG keywords: 1-79 printable Latin-1 characters, no leading, trailing or double spaces. */
static bool keyword_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c < 32 || (c > 126 && c < 161) || (c == ' ' && k[i + 1] == ' '))
            return false;
    }
    return true;
}

static unsigned char to_u8(float v)
{
    float x = v * 255.0f;
    if (!(x > 0.0f)) /* negative or NaN */
        return 0;
    if (x >= 255.0f)
        return 255;
    return (unsigned char)x;
}

sd_status sd_png_encode(sd_context *ctx, const sd_image *img, const sd_png_text *texts,
                        size_t n_texts, int compression, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if ((img->channels != 3 && img->channels != 4) || img->width == 0 || img->height == 0 ||
        img->width > SD_PNG_MAX_SIDE || img->height > SD_PNG_MAX_SIDE || !img->data ||
        compression < 0 || compression > 9 || n_texts > SD_PNG_MAX_CHUNKS)
        return sd_set_error(ctx, SD_ERR_INVALID, "cannot encode a %" PRIu32 "x%" PRIu32
                            " image with %d channels as PNG", img->width, img->height, img->channels);
    for (size_t i = 0; i < n_texts; i++)
        if (!keyword_ok(texts[i].keyword) || !texts[i].text)
            return sd_set_error(ctx, SD_ERR_INVALID, "invalid PNG text keyword '%s'", texts[i].keyword);
    sd_status st = SD_OK;
    size_t samples = (size_t)img->width * (size_t)img->channels;
    png_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->row = malloc(samples)) || !(w->texts = calloc(n_texts ? n_texts : 1, sizeof *w->texts)) ||
        !(w->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, w, writer_error_fn, quiet_warning_fn)) ||
        !(w->info = png_create_info_struct(w->png))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory encoding a PNG");
        goto done;
    }
    if (setjmp(png_jmpbuf(w->png))) {
        st = sd_set_error(ctx, w->nomem ? SD_ERR_NOMEM : SD_ERR_INVALID, "encoding PNG: %s", w->msg);
        goto done;
    }
    png_set_write_fn(w->png, w, writer_write_fn, writer_flush_fn);
    png_set_compression_level(w->png, compression);
    png_set_IHDR(w->png, w->info, img->width, img->height, 8,
                 img->channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (size_t i = 0; i < n_texts; i++) {
        /* Long texts (the workflow) are zlib-compressed inside the iTXt chunk. */
        w->texts[i].compression = strlen(texts[i].text) > 1024 ? PNG_ITXT_COMPRESSION_zTXt
                                                                 : PNG_ITXT_COMPRESSION_NONE;
        w->texts[i].key = (png_charp)texts[i].keyword;
        w->texts[i].text = (png_charp)texts[i].text;
        w->texts[i].lang = (png_charp) "";
        w->texts[i].lang_key = (png_charp) "";
    }
    if (n_texts)
        png_set_text(w->png, w->info, w->texts, (int)n_texts);
    png_write_info(w->png, w->info);
    for (uint32_t y = 0; y < img->height; y++) {
        const float *src = img->data + (size_t)y * samples;
        for (size_t i = 0; i < samples; i++)
            w->row[i] = to_u8(src[i]);
        png_write_row(w->png, w->row);
    }
    png_write_end(w->png, NULL);
    *out = w->buf;
    *out_len = w->len;
    w->buf = NULL;
done:
    if (w) {
        if (w->png)
            png_destroy_write_struct(&w->png, w->info ? &w->info : NULL);
        free(w->buf);
        free(w->row);
        free(w->texts);
        free(w);
    }
    return st;
}

sd_status sd_png_write(sd_context *ctx, const char *path, const sd_image *img,
                       const sd_png_text *texts, size_t n_texts, int compression)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    sd_status st = sd_png_encode(ctx, img, texts, n_texts, compression, &buf, &len);
    if (!st)
        st = sd_file_write_atomic(ctx, path, buf, len, false, NULL);
    if (st == SD_ERR_INVALID || st == SD_ERR_NOMEM)
        sd_error_prefix(ctx, "%s", path);
    free(buf);
    return st;
}
