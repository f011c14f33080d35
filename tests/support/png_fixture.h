/* Test fixtures: PNG files written with libpng directly (any colour type, depth, palette,
 * tRNS, interlace, text after the image data), and small file helpers. */
#ifndef SD_TEST_PNG_FIXTURE_H
#define SD_TEST_PNG_FIXTURE_H
#include <png.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fixture {
    uint32_t w, h;
    int depth, ctype;
    bool interlace;
    const unsigned char *pixels; /* packed rows as libpng expects them */
    const png_color *palette;
    int n_palette;
    const unsigned char *trns_alpha; /* palette alpha */
    int n_trns;
    const png_color_16 *trns_color; /* gray/RGB colour key */
    const char *text_after_key, *text_after; /* a tEXt chunk after the image data */
} fixture;

/* Writes the fixture as <scratch dir>/name; returns the malloc'd path (aborts on failure). */
char *write_fixture(const char *name, const fixture *fx);
/* Whole-file helpers (abort / NULL on failure). */
void write_bytes(const char *path, const void *data, size_t len);
unsigned char *read_bytes(const char *path, size_t *len);
/* Entries in dir other than . and .. */
int count_dir_entries(const char *dir);
#endif
