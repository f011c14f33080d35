/* The SD1.5 and SDXL ControlNets (cldm.ControlNet, diffusers' ControlNetModel): a copy of the
 * UNet's encoder (SDXL's with its label embedding, fed the model's ADM vector) that sees the
 * noisy latent plus an encoded hint image and returns one residual per UNet skip connection and
 * one for the middle block (see sd_unet_control in ml/diffusion/unet.h).
 *
 * Files: .safetensors in the original layout (control_model.* as in control_v11p_sd15_canny.pth
 * converted, or the same names without the prefix) or in diffusers' layout
 * (controlnet_cond_embedding.*, down_blocks.*, controlnet_down_blocks.*, controlnet_mid_block.*;
 * the names are mapped to the original ones on open, without copying data). The architecture is
 * read from tensor shapes (ml/families/checkpoint.h, sd_controlnet_config); SDXL's label_emb is
 * diffusers' add_embedding. ControlNets of other families (SD2.x, SD3, FLUX) and Control-LoRAs
 * are refused with an error naming what the file is. A T2I-Adapter file (ml/adapters/t2i_adapter.h)
 * opens as an object of this type holding the adapter, as ComfyUI's ControlNetLoader loads both. */
#ifndef SD_ML_CONTROLNET_H
#define SD_ML_CONTROLNET_H

#include "ml/diffusion/unet.h"

typedef struct sd_controlnet sd_controlnet;
typedef struct sd_t2i_adapter sd_t2i_adapter;

/* Refuses, from tensor names and shapes only, a file that is not a ControlNet this build runs
 * (another family's, a Control-LoRA, a checkpoint): sd_controlnet_open's first
 * check, as a one-line error naming the file; *family (may be NULL): SD1.x or SDXL. */
sd_status sd_controlnet_check_kind(sd_context *ctx, const sd_safetensors *st, sd_family *family);

/* Opens path, detects its layout and family and checks every tensor the architecture needs
 * (name, shape, float dtype). Weights stay in the file until the first forward, which
 * uploads them (matrices and kernels as dtype). The object is reference-counted (starts at 1)
 * and must not outlive ctx. Errors (message on ctx naming the file): the safetensors errors,
 * SD_ERR_INVALID for another family ("<file>: SD2.x ControlNet detected; sdflow supports SD1.x,
 * SDXL ControlNets"), a file that is no ControlNet, a missing or misshapen tensor (named). */
sd_status sd_controlnet_open(sd_context *ctx, const char *path, sd_dtype dtype, sd_controlnet **out);
sd_controlnet *sd_controlnet_ref(sd_controlnet *cn); /* returns cn */
void sd_controlnet_unref(sd_controlnet *cn);          /* NULL-safe; frees at zero */

const sd_controlnet_config *sd_controlnet_config_of(const sd_controlnet *cn);
const char *sd_controlnet_path(const sd_controlnet *cn);
/* True when the file is in diffusers' layout. */
bool sd_controlnet_is_diffusers(const sd_controlnet *cn);
/* True for files named *_shuffle or *_shuffle_fp16 (before the extension): as ComfyUI, their
 * residuals are replaced by their spatial means (global average pooling) before the strength. */
bool sd_controlnet_global_pooling(const sd_controlnet *cn);
/* The T2I-Adapter a T2I-Adapter file holds (ml/adapters/t2i_adapter.h; ComfyUI's ControlNetLoader
 * loads both kinds), NULL for a ControlNet. Its config's hint_channels is the adapter's input
 * channels; sd_controlnet_forward is for ControlNets only. */
sd_t2i_adapter *sd_controlnet_t2i(const sd_controlnet *cn);
/* True when a hint image of `channels` channels fits: the ControlNet's hint channels, or any
 * count for a 1-channel T2I-Adapter (ComfyUI averages the channels). */
bool sd_controlnet_takes_channels(const sd_controlnet *cn, int64_t channels);
/* Residuals one forward gives: the UNet's skip connections + 1 (the middle block); for a
 * T2I-Adapter, the input blocks of the UNet it is made for + 1. */
int sd_controlnet_residual_count(const sd_controlnet *cn);

/* One forward: x [B, 4, h, w] f32 (the UNet's input, already divided by sqrt(sigma^2 + 1)),
 * hint [B, hint_channels, 8h, 8w] f32 in [0, 1], timesteps B floats, context [B, tokens, dim].
 * y: the ADM vector [B, adm_channels] of an SDXL ControlNet (the model's, ml/families/adm.h), NULL
 * for SD1. outs (sd_controlnet_residual_count slots) receives new tensors, each zero conv's output
 * (pooled for shuffle files) times strength: the skip residuals in order, then the middle one. On failure every slot is NULL.
 * Errors: SD_ERR_INVALID for shapes that do not fit (named), device errors. */
sd_status sd_controlnet_forward(sd_controlnet *cn, const sd_dtensor *x, const sd_dtensor *hint,
                                const float *timesteps, const sd_dtensor *context, const sd_dtensor *y,
                                float strength, sd_dtensor **outs);

/* Difference ControlNets (DiffControlNetLoader; ComfyUI's load_controlnet with a model): files in
 * the original layout with control_model.* and a tensor named "difference", whose encoder weights
 * are differences to add to the model's UNet weights of the same names. */
bool sd_controlnet_file_is_difference(const sd_safetensors *st);
bool sd_controlnet_is_difference(const sd_controlnet *cn);

/* The model weights a difference ControlNet adds its own to: get(user, name, out) gives the
 * model's device tensor for UNet weight `name` (no prefix; any float dtype), valid until the next
 * call; release(user) when the ControlNet is freed. */
typedef struct sd_controlnet_base {
    sd_status (*get)(void *user, const char *name, const sd_dtensor **out);
    void (*release)(void *user);
    void *user;
} sd_controlnet_base;

/* Gives a difference ControlNet its model (taken over: released with cn, or at once on failure).
 * Each encoder weight becomes file weight + model weight, summed in f32 and stored as the
 * ControlNet's dtype, on the first forward; a difference ControlNet without a model fails its
 * forward with an error naming the file. SD_ERR_INVALID for a ControlNet that is no difference
 * file or already has a model. */
sd_status sd_controlnet_set_base(sd_controlnet *cn, const sd_controlnet_base *base);

/* The family the ControlNet belongs to (SD1.x or SDXL). */
sd_family sd_controlnet_family(const sd_controlnet *cn);

/* The diffusers name of an original-layout ControlNet tensor name (without prefix) for cfg's
 * architecture, into out. SD_ERR_INVALID (message on ctx) for a name with no counterpart. */
sd_status sd_controlnet_diffusers_name(sd_context *ctx, const sd_controlnet_config *cfg, const char *name,
                                       char *out, size_t size);

/* Writes a ControlNet for the UNet architecture unet (hint encoder widths as SD1.5's) with
 * deterministic random weights (ml/families/sd1_layout.h), in the original layout (control_model.*)
 * or in diffusers' layout; both hold the same values for the same seed. Written atomically. */
sd_status sd_controlnet_write_random(sd_context *ctx, const char *path, const sd_unet_config *unet, bool diffusers,
                                     sd_st_dtype dtype, uint64_t seed);

#endif
