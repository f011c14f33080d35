/* MidasDetector's depth and normal images. */
#include "ml/annotators/midas_maps.h"
#include <math.h>
#include <stdlib.h>

static unsigned char to_u8(float v)
{
    return (unsigned char)(v >= 255.0f ? 255 : v > 0.0f ? (int)v : 0); /* NaN: 0 */
}

void sd_midas_depth_map(const float *depth, int64_t h, int64_t w, float *norm, unsigned char *map)
{
    int64_t n = h * w;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        lo = depth[i] < lo ? depth[i] : lo;
    for (int64_t i = 0; i < n; i++) {
        norm[i] = depth[i] - lo;
        hi = norm[i] > hi ? norm[i] : hi;
    }
    for (int64_t i = 0; i < n; i++) {
        norm[i] = norm[i] / hi;
        map[i] = to_u8(norm[i] * 255.0f);
    }
}

/* BORDER_REFLECT_101 index into 0..n-1. */
static int64_t reflect101(int64_t i, int64_t n)
{
    if (n == 1)
        return 0;
    return i < 0 ? -i : i >= n ? 2 * n - 2 - i : i;
}

/* cv2.Sobel(ksize=3) on float32 as OpenCV's separable filter sums it: dx: the row difference
 * d[x+1] - d[x-1], then (above + below) + 2 centre; dy: the row smoothing (left + right) +
 * 2 centre, then below - above. */
static void sobel(const float *d, int64_t h, int64_t w, float *gx, float *gy)
{
    for (int64_t y = 0; y < h; y++) {
        int64_t rows[3] = {reflect101(y - 1, h), y, reflect101(y + 1, h)};
        for (int64_t x = 0; x < w; x++) {
            int64_t l = reflect101(x - 1, w), r = reflect101(x + 1, w);
            float diff[3], smooth[3];
            for (int k = 0; k < 3; k++) {
                const float *row = d + rows[k] * w;
                diff[k] = row[r] - row[l];
                smooth[k] = (row[l] + row[r]) + 2.0f * row[x];
            }
            gx[y * w + x] = (diff[0] + diff[2]) + 2.0f * diff[1];
            gy[y * w + x] = smooth[2] - smooth[0];
        }
    }
}

sd_status sd_midas_normal_map(sd_context *ctx, const float *depth, const float *norm, int64_t h, int64_t w, float a,
                              float bg_th, unsigned char *rgb)
{
    int64_t n = h * w;
    float *gx = malloc(sizeof *gx * (size_t)n), *gy = malloc(sizeof *gy * (size_t)n);
    if (!gx || !gy) {
        free(gx), free(gy);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for a %lldx%lld normal map", (long long)w, (long long)h);
    }
    sobel(depth, h, w, gx, gy);
    for (int64_t i = 0; i < n; i++) {
        float v[3] = {gx[i], gy[i], a};
        if (norm[i] < bg_th)
            v[0] = v[1] = 0.0f;
        float len = sqrtf((v[0] * v[0] + v[1] * v[1]) + v[2] * v[2]);
        for (int k = 0; k < 3; k++)
            rgb[i * 3 + 2 - k] = to_u8(v[k] / len * 127.5f + 127.5f);
    }
    free(gx), free(gy);
    return SD_OK;
}
