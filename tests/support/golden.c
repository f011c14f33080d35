#include "support/golden.h"
#include "test.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

char *test_golden_path(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = test_path(dir, name);
    free(dir);
    return path;
}

void *test_read_golden(const char *name, size_t bytes)
{
    char *path = test_golden_path(name);
    FILE *f = fopen(path, "rb");
    void *data = malloc(bytes ? bytes : 1);
    size_t got = f && data ? fread(data, 1, bytes, f) : 0;
    bool at_end = f && fgetc(f) == EOF;
    CHECK_MSG(got == bytes && at_end, "golden %s: expected exactly %zu bytes", path, bytes);
    if (f)
        fclose(f);
    free(path);
    if (got != bytes) {
        free(data);
        return NULL;
    }
    return data;
}

double test_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

size_t test_count_diff_u8(const unsigned char *a, const unsigned char *b, size_t n, size_t *first)
{
    size_t diff = 0;
    *first = n;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] && diff++ == 0)
            *first = i;
    return diff;
}

double test_psnr(const float *a, const float *b, size_t n, double range)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        se += d * d;
    }
    double mse = se / (double)(n ? n : 1);
    return mse > 0 ? 10.0 * log10(range * range / mse) : INFINITY;
}

float *test_read_sdg1(const char *name, int ndim, size_t n)
{
    size_t header = 8 + 4 * (size_t)ndim;
    unsigned char *raw = test_read_golden(name, header + n * sizeof(float));
    float *out = raw ? malloc(n * sizeof *out) : NULL;
    if (out)
        memcpy(out, raw + header, n * sizeof *out);
    free(raw);
    return out;
}
