/* PNG fixtures for tests (see png_fixture.h). */
#include "support/png_fixture.h"
#include "test.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *write_fixture(const char *name, const fixture *fx)
{
    char *path = test_path(test_scratch_dir(), name);
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "cannot write fixture %s\n", path);
        abort();
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, fx->w, fx->h, fx->depth, fx->ctype,
                 fx->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (fx->palette)
        png_set_PLTE(png, info, fx->palette, fx->n_palette);
    if (fx->trns_alpha || fx->trns_color)
        png_set_tRNS(png, info, fx->trns_alpha, fx->n_trns, fx->trns_color);
    png_write_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    png_bytep *rows = malloc(fx->h * sizeof *rows);
    for (uint32_t y = 0; y < fx->h; y++)
        rows[y] = (png_bytep)fx->pixels + y * rowbytes;
    png_write_image(png, rows);
    if (fx->text_after) {
        png_text t = {.compression = PNG_TEXT_COMPRESSION_NONE, .key = (png_charp)fx->text_after_key,
                      .text = (png_charp)fx->text_after};
        png_set_text(png, info, &t, 1);
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    return path;
}

void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        abort();
    }
    fclose(f);
}

unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}
