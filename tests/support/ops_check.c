/* Helpers for op tests. See ops_check.h. */
#include "ops_check.h"
#include "test.h"
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static sd_context *g_ctx;
static sd_cl *g_cl;

sd_cl *ops_cl(void)
{
    if (g_cl)
        return g_cl;
    if (!g_ctx && sd_context_new(&g_ctx) != SD_OK)
        return NULL;
    if (sd_cl_get(g_ctx, &g_cl) != SD_OK) {
        fprintf(stderr, "no OpenCL device: %s\n", sd_context_errmsg(g_ctx));
        g_cl = NULL;
    }
    return g_cl;
}

void ops_cl_release(void)
{
    sd_context_free(g_ctx);
    g_ctx = NULL;
    g_cl = NULL;
}

float *ops_random(size_t n, float lo, float hi, unsigned seed)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
    return p;
}

sd_dtensor *ops_upload(const float *host, int ndim, const int64_t *shape)
{
    sd_dtensor *t = NULL;
    sd_cl *cl = ops_cl();
    if (!cl || sd_dtensor_new(cl, SD_DTYPE_F32, ndim, shape, &t) != SD_OK)
        return NULL;
    if (t->numel && sd_dtensor_upload(t, host) != SD_OK) {
        sd_dtensor_free(t);
        return NULL;
    }
    return t;
}

sd_dtensor *ops_upload_f16(const float *host, int ndim, const int64_t *shape, float *rounded)
{
    sd_dtensor *t = NULL;
    sd_cl *cl = ops_cl();
    if (!cl || sd_dtensor_new(cl, SD_DTYPE_F16, ndim, shape, &t) != SD_OK)
        return NULL;
    if (t->numel && sd_dtensor_upload(t, host) != SD_OK) {
        sd_dtensor_free(t);
        return NULL;
    }
    for (size_t i = 0; rounded && i < t->numel; i++)
        rounded[i] = sd_half_to_float(sd_float_to_half(host[i]));
    return t;
}

sd_dtensor *ops_upload_random(float lo, float hi, unsigned seed, int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *host = ops_random(n, lo, hi, seed);
    sd_dtensor *t = ops_upload(host, ndim, shape);
    free(host);
    return t;
}

float *ops_download(const sd_dtensor *t)
{
    float *p = malloc((t->numel ? t->numel : 1) * sizeof *p);
    if (p && t->numel && sd_dtensor_download(t, p) != SD_OK) {
        free(p);
        return NULL;
    }
    return p;
}

double ops_max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i]))
            return NAN;
        if (!isnan(a[i]) && fabs((double)a[i] - b[i]) > m)
            m = fabs((double)a[i] - b[i]);
    }
    return m;
}

bool ops_expect(const char *what, const sd_dtensor *t, int ndim, const int64_t *shape, const float *ref,
                double tol, double rel)
{
    if (!t) {
        fprintf(stderr, "%s: no result\n", what);
        return false;
    }
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char d[96];
        fprintf(stderr, "%s: result shape %s differs\n", what, sd_dtensor_describe(t, d, sizeof d));
        return false;
    }
    float *got = ops_download(t);
    if (!got)
        return false;
    size_t worst = 0;
    double worst_excess = 0.0;
    bool ok = true;
    for (size_t i = 0; i < t->numel; i++) {
        double lim = tol + rel * fabs((double)ref[i]);
        double d = fabs((double)got[i] - ref[i]);
        if (isnan(got[i]) != isnan(ref[i]) || d > lim) {
            if (ok || d - lim > worst_excess) {
                worst = i;
                worst_excess = d - lim;
            }
            ok = false;
        }
    }
    if (!ok)
        fprintf(stderr, "%s: element %zu is %.9g, reference %.9g (tol %g + %g rel)\n", what, worst,
                got[worst], ref[worst], tol, rel);
    free(got);
    return ok;
}

float *ops_read_golden(const char *name, int *ndim, int64_t shape[SD_TENSOR_MAX_DIMS])
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = dir ? test_path(dir, name) : NULL;
    FILE *f = path ? fopen(path, "rb") : NULL;
    float *data = NULL;
    char magic[4];
    int32_t nd, dims[SD_TENSOR_MAX_DIMS];
    size_t n = 1;
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "SDG1", 4) != 0 || fread(&nd, 4, 1, f) != 1 ||
        nd < 1 || nd > SD_TENSOR_MAX_DIMS || fread(dims, 4, (size_t)nd, f) != (size_t)nd)
        goto done;
    for (int i = 0; i < nd; i++) {
        if (dims[i] < 0 || dims[i] > (1 << 20))
            goto done;
        shape[i] = dims[i];
        n *= (size_t)dims[i];
    }
    data = malloc(n * sizeof *data);
    if (data && fread(data, sizeof *data, n, f) != n) {
        free(data);
        data = NULL;
    }
    *ndim = nd;
done:
    if (!data)
        fprintf(stderr, "cannot read golden %s\n", path ? path : name);
    if (f)
        fclose(f);
    free(path);
    free(dir);
    return data;
}

sd_dtensor *ops_golden(const char *name)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *v = ops_read_golden(name, &nd, shape);
    sd_dtensor *t = v ? ops_upload(v, nd, shape) : NULL;
    free(v);
    return t;
}

double ops_controlnet_residual_error(sd_dtensor *const *outs, int n, const char *prefix)
{
    double worst = 0;
    for (int i = 0; i < n; i++) {
        char name[64];
        int nd;
        int64_t shape[SD_TENSOR_MAX_DIMS];
        if (i + 1 < n)
            snprintf(name, sizeof name, "%s_controlnet_res%d.bin", prefix, i);
        else
            snprintf(name, sizeof name, "%s_controlnet_mid.bin", prefix);
        float *ref = ops_read_golden(name, &nd, shape), *got = ops_download(outs[i]);
        CHECK(ref && got && (size_t)(shape[0] * shape[1] * shape[2] * shape[3]) == outs[i]->numel);
        if (ref && got)
            worst = fmax(worst, ops_max_diff(got, ref, outs[i]->numel));
        free(ref);
        free(got);
    }
    return worst;
}
