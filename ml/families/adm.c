/* ADM vectors of SDXL base and refiner. See adm.h. */
#include "ml/families/adm.h"
#include "core/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sd_adm_embeddings(sd_adm_kind kind)
{
    return kind == SD_ADM_SDXL ? 6 : kind == SD_ADM_SDXL_REFINER ? 5 : 0;
}

/* ComfyUI's Timestep(dim) of one number, in float32 as torch: frequencies
 * exp(-ln(10000) * i / half) for i < half = dim / 2, then [cos(v f_i)..., sin(v f_i)...] and a
 * zero for an odd dim. */
static void embed_dim(double value, int dim, float *out)
{
    const int half = dim / 2;
    const float v = (float)value, scale = (float)-log(10000.0);
    for (int i = 0; i < half; i++) {
        float f = expf(scale * (float)i / (float)half), arg = v * f;
        out[i] = cosf(arg);
        out[half + i] = sinf(arg);
    }
    if (dim % 2)
        out[dim - 1] = 0.0f;
}

static void embed(double value, float *out)
{
    embed_dim(value, SD_ADM_EMBED_DIM, out);
}

void sd_adm_vector(sd_adm_kind kind, const float *pooled, int pooled_dim, const sd_adm_params *p, float *out)
{
    memcpy(out, pooled, (size_t)pooled_dim * sizeof *out);
    double values[6] = {p->height, p->width, p->crop_h, p->crop_w, p->target_height, p->target_width};
    if (kind == SD_ADM_SDXL_REFINER)
        values[4] = p->aesthetic_score;
    for (int i = 0; i < sd_adm_embeddings(kind); i++)
        embed(values[i], out + pooled_dim + i * SD_ADM_EMBED_DIM);
}

/* sqrt(alphas_cumprod[level]) and sqrt(1 - alphas_cumprod[level]) of the squaredcos_cap_v2
 * schedule over 1000 steps (betas_for_alpha_bar, max beta 0.999), in double, rounded to float as
 * the augmentor's float32 buffers. */
static void unclip_schedule(int level, float *sa, float *s1ma)
{
    double ac = 1.0;
    for (int i = 0; i <= level; i++) {
        double t1 = (double)i / 1000.0, t2 = (double)(i + 1) / 1000.0;
        double a1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), a2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
        double beta = fmin(1.0 - (a2 * a2) / (a1 * a1), 0.999);
        ac *= 1.0 - beta;
    }
    *sa = (float)sqrt(ac);
    *s1ma = (float)sqrt(1.0 - ac);
}

/* The augmentor on one embedding: out[0, dim) = unscale(q_sample(scale(x), level, n)) in float32
 * as torch, out[dim, 2 dim) = emb(level). */
static void augment(const sd_unclip_noise *a, const float *x, const float *n, int level, float *out)
{
    float sa, s1ma;
    unclip_schedule(level, &sa, &s1ma);
    for (int i = 0; i < a->dim; i++) {
        float m = a->mean ? a->mean[i] : 0.0f, s = a->std ? a->std[i] : 1.0f;
        float z = sa * ((x[i] - m) / s) + s1ma * n[i];
        out[i] = z * s + m;
    }
    embed_dim(level, a->dim, out + a->dim);
}

/* round(999 * v) as Python's round (halves to even, the default rounding mode). */
static int noise_level(double v)
{
    return (int)nearbyint(999.0 * v);
}

bool sd_adm_unclip(const sd_unclip_noise *a, const float *embeds, const double *strength, const double *noise_aug,
                   int rows, uint64_t seed, float *out)
{
    size_t dim = (size_t)a->dim, width = 2 * dim;
    float *n = malloc(dim * sizeof *n), *c = malloc(width * sizeof *c);
    if (!n || !c) {
        free(n), free(c);
        return false;
    }
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    sd_rng_randn(&rng, n, dim);
    memset(out, 0, width * sizeof *out);
    for (int r = 0; r < rows; r++) {
        augment(a, embeds + (size_t)r * dim, n, noise_level(noise_aug[r]), c);
        for (size_t i = 0; i < width; i++) /* torch.stack(...).sum(0) of the weighted rows */
            out[i] = r ? out[i] + c[i] * (float)strength[r] : c[i] * (float)strength[r];
    }
    if (rows > 1) {
        memcpy(c, out, dim * sizeof *c);
        sd_rng_randn(&rng, n, dim); /* the seeded generator's next normals (reseeded per row above) */
        augment(a, c, n, noise_level(a->merge), out);
    }
    free(n), free(c);
    return true;
}

bool sd_adm_unclip_pooled(const float *embeds, const double *strength, const double *noise_aug, int rows, int dim,
                          uint64_t seed, float *out)
{
    sd_unclip_noise a = {.dim = dim};
    float *full = malloc(2 * (size_t)dim * sizeof *full);
    bool ok = full && sd_adm_unclip(&a, embeds, strength, noise_aug, rows, seed, full);
    if (ok)
        memcpy(out, full, (size_t)dim * sizeof *out);
    free(full);
    return ok;
}

/* One statistic: [1, dim] or [dim] floats into a malloc'd array. */
static sd_status read_stat(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, int dim, float **out)
{
    int64_t n = t->ndim == 2 && t->shape[0] == 1 ? t->shape[1] : t->ndim == 1 ? t->shape[0] : -1;
    if (n != dim)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s' is not %d wide (the image embeddings' width)",
                            sd_safetensors_path(st), t->name, dim);
    if (!(*out = malloc((size_t)dim * sizeof **out)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    return sd_safetensors_read_f32(ctx, st, t, *out, (size_t)dim);
}

sd_status sd_unclip_stats_read(sd_context *ctx, const sd_safetensors *st, int dim, float **mean, float **std)
{
    const sd_st_tensor *m = sd_safetensors_find(st, "noise_augmentor.data_mean");
    const sd_st_tensor *s = sd_safetensors_find(st, "noise_augmentor.data_std");
    *mean = *std = NULL;
    if (!m || !s)
        return SD_OK;
    sd_status status = read_stat(ctx, st, m, dim, mean);
    if (!status)
        status = read_stat(ctx, st, s, dim, std);
    for (int i = 0; !status && i < dim; i++)
        if (!((*std)[i] > 0.0f) || !isfinite((*std)[i]) || !isfinite((*mean)[i]))
            status = sd_set_error(ctx, SD_ERR_INVALID, "%s: noise_augmentor.data_std[%d] is not a positive number",
                                  sd_safetensors_path(st), i);
    if (status) {
        free(*mean), free(*std);
        *mean = *std = NULL;
    }
    return status;
}
