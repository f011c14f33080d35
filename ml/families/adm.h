/* The extra "y" vector of ADM UNets (SDXL base and refiner), as ComfyUI's encode_adm
 * (comfy/model_base.py SDXL, SDXLRefiner): the pooled text embedding followed by 256-wide
 * sinusoidal embeddings (the UNet's timestep embedding: cos half first, max period 10000) of the
 * size conditioning numbers, each computed in float32 as torch does. */
#ifndef SD_ML_ADM_H
#define SD_ML_ADM_H

#include "ml/families/family.h"

#define SD_ADM_EMBED_DIM 256

/* The numbers a CONDITIONING entry may carry (CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner);
 * ComfyUI's defaults apply to those not given: width and height the image size being sampled
 * (the latent's times 8), crops 0, targets the width and height, aesthetic score 6 for the
 * positive side and 2.5 for the negative one. */
typedef struct sd_adm_params {
    double width, height, crop_w, crop_h, target_width, target_height, aesthetic_score;
} sd_adm_params;

/* The number of size embeddings of an ADM kind (6 SDXL, 5 refiner, 0 none). */
int sd_adm_embeddings(sd_adm_kind kind);

/* out (pooled_dim + 256 * sd_adm_embeddings(kind) floats) = [pooled, emb(height), emb(width),
 * emb(crop_h), emb(crop_w), then emb(target_height), emb(target_width) (SDXL) or
 * emb(aesthetic_score) (refiner)]. */
void sd_adm_vector(sd_adm_kind kind, const float *pooled, int pooled_dim, const sd_adm_params *p, float *out);

/* The pooled part of SDXL's ADM vector from unCLIPConditioning (ComfyUI's sdxl_pooled / unclip_adm
 * with SDXL's CLIPEmbeddingNoiseAugmentation: squaredcos_cap_v2 schedule, no CLIP statistics):
 * image embedding row r (embeds: rows * dim floats) becomes strength[r] * (sqrt(ac[l]) x +
 * sqrt(1 - ac[l]) n) with l = round(999 * noise_aug[r]) and n = torch.randn(1, dim) after
 * torch.manual_seed(seed); several rows are summed and noised once more at level 0 (ComfyUI draws
 * that noise unseeded; here it is the same seeded n). out: dim floats. false when memory runs out. */
bool sd_adm_unclip_pooled(const float *embeds, const double *strength, const double *noise_aug, int rows, int dim,
                          uint64_t seed, float *out);

#endif
