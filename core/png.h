/* PNG reading and writing (libpng) with the limits of docs/design.md §9.
 *
 * Reading decodes any PNG colour type and bit depth (1/2/4/8/16-bit gray, gray+alpha, RGB,
 * RGBA, palette, tRNS) into floats in [0, 1]; 16-bit samples keep their precision (v / 65535).
 * The pixel budget is checked on the IHDR before anything else is read or allocated; text
 * chunks are bounded. Writing produces 8-bit RGB or RGBA with iTXt chunks, atomically.
 * Every failure is one line naming the file: "PATH: truncated", "PATH: truncated (chunk 'IDAT' of
 * N bytes runs past the end of the file)" (chunk lengths are checked against the file size before
 * libpng allocates anything), "PATH: truncated (N bytes cannot hold a WxH image)" (deflate expands
 * at most 1032:1), "PATH: not a PNG file",
 * "PATH: image 100000x100000 exceeds the pixel limit (...)". */
#ifndef SD_CORE_PNG_H
#define SD_CORE_PNG_H

#include "core/context.h"
#include <stdint.h>

/* Default limits: each side at most 32768 pixels, at most 64 Mpixels in all, one text chunk
 * (after decompression) at most 16 MiB, at most 1000 ancillary chunks. */
#define SD_PNG_MAX_SIDE 32768u
#define SD_PNG_MAX_PIXELS (64ull * 1024 * 1024)
#define SD_PNG_MAX_CHUNK_BYTES (16u * 1024 * 1024)
#define SD_PNG_MAX_CHUNKS 1000u

/* Provenance text keywords written by SaveImage and PreviewImage (docs/provenance.md). */
#define SD_PNG_KEY_WORKFLOW "sdflow:workflow"     /* workflow XML, parameters resolved */
#define SD_PNG_KEY_ENGINE "sdflow:engine"         /* "sdflow 0.1.0" */
#define SD_PNG_KEY_PROVENANCE "sdflow:provenance" /* {"engine":..., "files": {path: hash}} */
#define SD_PNG_KEY_NODE "sdflow:node"             /* id of the node that wrote the file */
#define SD_PNG_KEY_BATCH "sdflow:batch_index"     /* index in that node's image batch */

typedef struct sd_png_limits {
    uint32_t max_side;       /* width and height each at most this */
    uint64_t max_pixels;     /* width * height at most this */
    size_t max_chunk_bytes;  /* any ancillary chunk, text after decompression */
    uint32_t max_chunks;     /* number of text and unknown chunks kept */
} sd_png_limits;

/* The defaults above. */
sd_png_limits sd_png_default_limits(void);

/* A decoded image: height rows of width pixels of `channels` floats in [0, 1]. */
typedef struct sd_image {
    uint32_t width, height;
    int channels;        /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    int bit_depth;       /* of the file's samples after palette expansion: 8 or 16 */
    bool alpha_from_key; /* the alpha channel came from a tRNS colour key of a gray or RGB image
                            (not from an alpha channel or a palette) */
    float *data;         /* malloc'd, width * height * channels floats, row-major */
} sd_image;

/* Frees the pixels and zeroes the struct. NULL-safe. */
void sd_image_clear(sd_image *img);

/* Reads the PNG at path into *out (cleared first; the caller clears it after use). limits may
 * be NULL for the defaults. Only a regular file is opened (a FIFO or device is SD_ERR_IO "PATH:
 * not a regular file", without waiting). Fails with SD_ERR_IO (cannot open, missing included, or read),
 * SD_ERR_PARSE (not a PNG, truncated, corrupt), SD_ERR_LIMIT (over the pixel budget, checked
 * before any pixel memory is allocated) or SD_ERR_NOMEM; the message names path. */
sd_status sd_png_read(sd_context *ctx, const char *path, const sd_png_limits *limits, sd_image *out);

/* Reads the text chunks (tEXt, zTXt or iTXt) with the n given keywords, before or after the
 * image data, in one pass: texts_out[i] is a malloc'd NUL-terminated UTF-8 string, or NULL when
 * the file has no such chunk. A keyword that appears in two chunks is SD_ERR_INVALID ("PATH:
 * more than one 'KEY' text chunk"; every texts_out[i] is then NULL). The pixels are decoded but
 * not kept (one row of memory); otherwise the failures of sd_png_read. */
sd_status sd_png_read_texts(sd_context *ctx, const char *path, const sd_png_limits *limits,
                            const char *const *keywords, size_t n, char **texts_out);
/* sd_png_read_texts for one keyword; SD_ERR_NOT_FOUND (message names path and keyword) when the
 * file has no such chunk. */
sd_status sd_png_read_text(sd_context *ctx, const char *path, const sd_png_limits *limits,
                           const char *keyword, char **text_out);

/* One text chunk to write: keyword (1-79 Latin-1 printable characters), UTF-8 text. sdflow's
 * own keywords (with a colon: sdflow:workflow, ...) are iTXt chunks; others (ComfyUI's prompt
 * and workflow, A1111's parameters) are uncompressed tEXt chunks, as those programs write them
 * and most of their readers expect (the text is written as is: they read UTF-8). */
typedef struct sd_png_text {
    const char *keyword;
    const char *text;
} sd_png_text;

/* Encodes img (3 or 4 channels) as an 8-bit RGB or RGBA PNG in memory, with the texts as
 * chunks (above) before the image data. Samples are scaled by 255 and truncated
 * toward zero after clamping to [0, 255] (ComfyUI's conversion; NaN becomes 0). compression:
 * zlib level 0-9. *out is malloc'd. SD_ERR_INVALID for a bad image or keyword. */
sd_status sd_png_encode(sd_context *ctx, const sd_image *img, const sd_png_text *texts,
                        size_t n_texts, int compression, unsigned char **out, size_t *out_len);

/* sd_png_encode then sd_file_write_atomic (replacing an existing file). */
sd_status sd_png_write(sd_context *ctx, const char *path, const sd_image *img,
                       const sd_png_text *texts, size_t n_texts, int compression);

#endif
