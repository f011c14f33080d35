/* The LDM UNet of SD1 and SDXL (openaimodel.UNetModel: ResBlocks with timestep embedding,
 * SpatialTransformers of per-level depth with self- and cross-attention and GEGLU feed-forward,
 * stride-2 conv downsampling, nearest 2x upsampling, skip concatenation; SDXL's ADM label
 * embedding added to the time embedding) on the op library with lazily uploaded weights. */
#ifndef SD_ML_UNET_H
#define SD_ML_UNET_H

#include "ml/families/checkpoint.h"
#include "ml/loading/weights.h"

typedef struct sd_unet sd_unet;

/* ControlNet residuals added to the UNet (issue 5): one per skip connection (input block outputs,
 * in order) and one for the middle block, each [B, C, h, w] like the tensor it is added to.
 * As ComfyUI: a skip's residual is added where the skip is concatenated in the output blocks,
 * the middle one to the middle block's output; a NULL entry (or middle) adds nothing. */
/* Where a cross-attention (attn2) layer is, for a hook that adds to it (IP-Adapter). */
typedef enum sd_unet_part { SD_UNET_INPUT, SD_UNET_MIDDLE, SD_UNET_OUTPUT } sd_unet_part;
typedef struct sd_unet_attn_site {
    sd_unet_part part;
    int block;        /* input_blocks.N / output_blocks.N (middle: 1) */
    int index;        /* the transformer block within its SpatialTransformer */
    int transformer;  /* SpatialTransformers before this one in forward order (ComfyUI's transformer_index) */
    int transformers; /* SpatialTransformers in the model (16 in SD1, 11 in SDXL) */
    int number;       /* this attn2 in IP-Adapter order (input blocks, output blocks, middle; 0-based):
                       * the IP-Adapter file's key is 2 * number + 1 */
    int64_t h, w;               /* the layer's token grid */
    int64_t latent_h, latent_w; /* the latent's size */
} sd_unet_attn_site;

/* Adds to every attn2 of the UNet: called with the attention's query q [B, N, C] (after to_q)
 * and its output *out [B, N, C] (before to_out), which it may replace by a new tensor (freeing
 * the old one). */
typedef struct sd_unet_attn2_hook {
    sd_status (*apply)(void *user, const sd_unet_attn_site *site, const sd_dtensor *q, int heads, sd_dtensor **out);
    void *user;
} sd_unet_attn2_hook;

typedef struct sd_unet_control {
    const sd_dtensor *const *skips; /* NULL (n_skips 0): no skip residuals */
    int n_skips;
    const sd_dtensor *middle;
    /* T2I-Adapter features (ComfyUI's 'input' controls): inputs[k] (n_inputs 0 or n_skips; NULL
     * entries add nothing) is added to input block k's output right after that block, so the
     * next block and the skip both see it. */
    const sd_dtensor *const *inputs;
    int n_inputs;
    const sd_unet_attn2_hook *attn2; /* NULL: none (sd_unet_forward_adm only) */
} sd_unet_control;

/* A UNet over the tensors <prefix>* (prefix "model.diffusion_model." in an SD1 checkpoint).
 * Nothing is uploaded until the first forward. st must outlive the model. */
sd_status sd_unet_new(sd_cl *cl, const sd_safetensors *st, const char *prefix,
                      const sd_unet_config *config, sd_dtype weight_dtype, sd_unet **out);
void sd_unet_free(sd_unet *u); /* NULL-safe */
/* A UNet with base's configuration over a patched view of base's weights (ml/loading/weights.h):
 * it shares every unpatched device tensor with base, which must outlive it. */
sd_status sd_unet_new_patched(sd_unet *base, const sd_weight_patcher *patcher, sd_unet **out);
const sd_unet_config *sd_unet_config_of(const sd_unet *u);
/* The device tensor of weight `name` (without prefix, in the UNet's storage dtype; a patched
 * view's patched copy), uploaded on first use and owned by u. SD_ERR_NOT_FOUND when absent. */
sd_status sd_unet_weight(sd_unet *u, const char *name, const sd_dtensor **out);
/* Unique per UNet object created in this process (never reused, unlike its address). */
uint64_t sd_unet_serial(const sd_unet *u);

/* One forward pass: eps = UNet(x, t, context).
 * x: [B, in_channels, h, w] f32 (h, w multiples of 2^(n_levels-1)); timesteps: B floats (the
 * DDPM timestep, 0..999, fractional allowed); context: [B, tokens, context_dim] f32;
 * control: NULL or residuals. *out: new [B, out_channels, h, w] f32. */
sd_status sd_unet_forward(sd_unet *u, const sd_dtensor *x, const float *timesteps,
                          const sd_dtensor *context, const sd_unet_control *control, sd_dtensor **out);

/* The same for an ADM UNet (adm_channels > 0, SDXL): y [B, adm_channels] f32 is the extra
 * vector (ml/families/adm.h) whose label embedding Linear, SiLU, Linear is added to the time
 * embedding. y must be NULL for other UNets (sd_unet_forward). */
sd_status sd_unet_forward_adm(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                              const sd_dtensor *y, const sd_unet_control *control, sd_dtensor **out);

/* The number of skip connections (input block outputs): the residuals a ControlNet gives. */
int sd_unet_skip_count(const sd_unet *u);

/* The encoder half as a ControlNet runs it (cldm.ControlNet.forward): time embedding, input
 * blocks and middle block, with hint (NULL: none; [B, model_channels, h, w] f32) added to the
 * stem conv's output. outs (sd_unet_skip_count + 1 slots) receives new tensors: every input
 * block's output in order, then the middle block's. Inputs as sd_unet_forward; on failure every
 * slot is NULL. y: the ADM vector of an ADM UNet (as sd_unet_forward_adm; NULL otherwise). */
sd_status sd_unet_encode(sd_unet *u, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                         const sd_dtensor *y, const sd_dtensor *hint, sd_dtensor **outs);

#endif
