/* The extra "y" vector of ADM UNets, as ComfyUI's encode_adm (comfy/model_base.py SDXL,
 * SDXLRefiner, SD21UNCLIP): SDXL's pooled text embedding followed by 256-wide sinusoidal
 * embeddings (the UNet's timestep embedding: cos half first, max period 10000) of the size
 * conditioning numbers, each computed in float32 as torch does; SD2 unCLIP's noise-augmented
 * image embeddings (unclip_adm). */
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

/* ComfyUI's CLIPEmbeddingNoiseAugmentation as unclip_adm uses it: squaredcos_cap_v2 schedule over
 * 1000 levels, embeddings normalised by the CLIP statistics before the noise and restored after,
 * the noise level's 256-style sinusoidal embedding (dim wide) appended. */
typedef struct sd_unclip_noise {
    int dim;                 /* the image embeddings' width, also the level embedding's */
    const float *mean, *std; /* dim floats each (data_mean, data_std), or NULL: 0 and 1 */
    double merge;            /* the augmentation of a sum of several embeddings (ComfyUI: SD2
                              * unCLIP 0.05, SDXL 0) */
} sd_unclip_noise;

/* ComfyUI's unclip_adm: image embedding row r (embeds: rows * dim floats) becomes
 * strength[r] * [unscale(sqrt(ac[l]) scale(x) + sqrt(1 - ac[l]) n), emb(l)] with
 * l = round(999 * noise_aug[r]) and n = torch.randn(1, dim) after torch.manual_seed(seed); several
 * rows are summed and their first dim values augmented again at round(999 * merge) with the next
 * dim normals of that generator (ComfyUI on the CPU: randn_like on the seeded global generator).
 * out: 2 * dim floats. false when memory runs out. */
bool sd_adm_unclip(const sd_unclip_noise *a, const float *embeds, const double *strength, const double *noise_aug,
                   int rows, uint64_t seed, float *out);

/* The pooled part of SDXL's ADM vector from unCLIPConditioning (ComfyUI's sdxl_pooled: the first
 * dim values of sd_adm_unclip without statistics, merge 0). out: dim floats. */
bool sd_adm_unclip_pooled(const float *embeds, const double *strength, const double *noise_aug, int rows, int dim,
                          uint64_t seed, float *out);

/* The noise augmentor's statistics of a checkpoint: noise_augmentor.data_mean / data_std ([1, dim]
 * or [dim]) when the file has both, else *mean = *std = NULL (the identity; the released
 * sd21-unclip files carry none: the buffers are not persistent). On success the arrays are
 * malloc'd (dim floats each). SD_ERR_INVALID naming the file for other shapes. */
sd_status sd_unclip_stats_read(sd_context *ctx, const sd_safetensors *st, int dim, float **mean, float **std);

#endif
