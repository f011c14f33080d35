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

/* ComfyUI's Timestep(256) of one number, in float32 as torch: frequencies
 * exp(-ln(10000) * i / 128) for i < 128, then [cos(v f_i)..., sin(v f_i)...]. */
static void embed(double value, float *out)
{
    const int half = SD_ADM_EMBED_DIM / 2;
    const float v = (float)value, scale = (float)-log(10000.0);
    for (int i = 0; i < half; i++) {
        float f = expf(scale * (float)i / (float)half), arg = v * f;
        out[i] = cosf(arg);
        out[half + i] = sinf(arg);
    }
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

/* q_sample: out = sa * x + s1ma * n, in float32 as torch. */
static void augment(const float *x, const float *n, int level, int dim, float *out)
{
    float sa, s1ma;
    unclip_schedule(level, &sa, &s1ma);
    for (int i = 0; i < dim; i++)
        out[i] = sa * x[i] + s1ma * n[i];
}

bool sd_adm_unclip_pooled(const float *embeds, const double *strength, const double *noise_aug, int rows, int dim,
                          uint64_t seed, float *out)
{
    float *n = malloc((size_t)dim * sizeof *n), *c = malloc((size_t)dim * sizeof *c);
    if (!n || !c) {
        free(n), free(c);
        return false;
    }
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    sd_rng_randn(&rng, n, (size_t)dim);
    memset(out, 0, (size_t)dim * sizeof *out);
    for (int r = 0; r < rows; r++) {
        augment(embeds + (size_t)r * (size_t)dim, n, (int)nearbyint(999.0 * noise_aug[r]), dim, c);
        for (int i = 0; i < dim; i++) /* torch.stack(...).sum(0) of the weighted rows */
            out[i] = r ? out[i] + c[i] * (float)strength[r] : c[i] * (float)strength[r];
    }
    if (rows > 1) {
        memcpy(c, out, (size_t)dim * sizeof *c);
        augment(c, n, 0, dim, out);
    }
    free(n), free(c);
    return true;
}
