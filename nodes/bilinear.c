/* Host bilinear resizing (nodes/bilinear.h). */
#include "nodes/bilinear.h"

/* torch's area_pixel_compute_source_index for align_corners=False and its neighbour/lambda. */
static void source_index(int64_t d, int64_t in, int64_t out, int64_t *i0, int64_t *i1, float *l0, float *l1)
{
    float scale = (float)in / (float)out;
    float s = scale * ((float)d + 0.5f) - 0.5f;
    s = s < 0.0f ? 0.0f : s;
    *i0 = (int64_t)s;
    if (*i0 > in - 1)
        *i0 = in - 1;
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
    *l1 = s - (float)*i0;
    *l0 = 1.0f - *l1;
}

void sd_bilinear_resize(const float *src, int64_t sh, int64_t sw, int64_t c, float *dst, int64_t dh, int64_t dw)
{
    for (int64_t y = 0; y < dh; y++) {
        int64_t y0, y1;
        float ly0, ly1;
        source_index(y, sh, dh, &y0, &y1, &ly0, &ly1);
        for (int64_t x = 0; x < dw; x++) {
            int64_t x0, x1;
            float lx0, lx1;
            source_index(x, sw, dw, &x0, &x1, &lx0, &lx1);
            const float *a = src + (y0 * sw + x0) * c, *b = src + (y0 * sw + x1) * c;
            const float *p = src + (y1 * sw + x0) * c, *q = src + (y1 * sw + x1) * c;
            float *o = dst + (y * dw + x) * c;
            for (int64_t k = 0; k < c; k++)
                o[k] = ly0 * (lx0 * a[k] + lx1 * b[k]) + ly1 * (lx0 * p[k] + lx1 * q[k]);
        }
    }
}
