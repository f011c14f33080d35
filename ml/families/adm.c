/* ADM vectors of SDXL base and refiner. See adm.h. */
#include "ml/families/adm.h"
#include <math.h>
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
