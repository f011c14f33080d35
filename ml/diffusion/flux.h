/* The FLUX.1 rectified-flow transformer (Black Forest Labs' flux/model.py Flux, as ComfyUI's
 * comfy/ldm/flux runs it) on the op library with lazily uploaded weights: img_in / txt_in
 * projections, the time, guidance (dev) and pooled-vector MLPs summed into one modulation vector,
 * double-stream blocks (separate image and text weights, joint attention with RMS QK-norm),
 * single-stream blocks (fused linear1 / linear2), and the adaLN final layer; 3-axis RoPE on
 * adjacent pairs over image ids (0, row, column) and zero text ids; 2x2 patchify of the latent.
 *
 * Every size comes from tensor shapes, so the 12B files and the tiny test files run the same
 * code. Key layouts: BFL's (no prefix, flux1-schnell.safetensors), ComfyUI's all-in-one
 * (model.diffusion_model.) and GGUF files (BFL names; ggml blocks dequantised at upload). */
#ifndef SD_ML_FLUX_H
#define SD_ML_FLUX_H

#include "ml/families/checkpoint.h"
#include "ml/loading/weights.h"


#define SD_FLUX_PATCH 2
#define SD_FLUX_THETA 10000.0

/* True when st holds a FLUX transformer under prefix (its double_blocks.0.img_attn.qkv.weight). */
bool sd_flux_present(const sd_safetensors *st, const char *prefix);

/* Reads the architecture under prefix into *cfg and checks every tensor it needs (present, 2-D
 * matrices / 1-D vectors of the right shape). Errors: SD_ERR_INVALID with a message naming the
 * file and tensor for a missing tensor, a wrong shape, or a head width the RoPE axes cannot split
 * (not a multiple of 32). */
sd_status sd_flux_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_flux_config *cfg);

typedef struct sd_flux sd_flux;

/* A transformer over <prefix>* of st (which must outlive it); matrices stored in weight_dtype.
 * Inspects first (errors as sd_flux_inspect). Nothing is uploaded until the first forward. */
sd_status sd_flux_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype weight_dtype,
                      sd_flux **out);
/* A view of base (which must outlive it) whose weights the patcher claims are patched copies
 * (ml/loading/weights.h); the rest are base's own. */
sd_status sd_flux_new_patched(sd_flux *base, const sd_weight_patcher *patcher, sd_flux **out);
void sd_flux_free(sd_flux *f); /* NULL-safe */
const sd_flux_config *sd_flux_config_of(const sd_flux *f);
/* The device tensor name (BFL's, without prefix), uploaded (a patched view: patched) on first use. */
sd_status sd_flux_weight(sd_flux *f, const char *name, const sd_dtensor **out);
/* Unique per object created in this process (never reused, unlike its address). */
uint64_t sd_flux_serial(const sd_flux *f);

/* One forward pass, the velocity v = Flux(x, t, context, y, guidance).
 * x: [B, in_channels, h, w] f32 (any h, w >= 1: padded circularly to even sizes as ComfyUI and
 * cropped back); timesteps: B floats, the flow time (sigma, 0..1; multiplied by 1000 inside);
 * context: [B, tokens, context_dim] f32; y: [B, vec_dim] f32; guidance: B floats for a
 * guidance-distilled model (dev; NULL leaves its guidance embedding out, as ComfyUI for guidance
 * None), ignored otherwise. *out: new [B, out_channels, h, w] f32. */
sd_status sd_flux_forward(sd_flux *f, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                          const sd_dtensor *y, const float *guidance, sd_dtensor **out);
/* The same with an additive attention bias on the context's keys (ComfyUI's attention_mask as
 * StyleModelApply's attn_bias builds it: log(strength) on the Redux tokens, for every query):
 * txt_bias NULL (none) or one float per context token, shared by the batch; image keys get 0. */
sd_status sd_flux_forward_biased(sd_flux *f, const sd_dtensor *x, const float *timesteps, const sd_dtensor *context,
                                 const sd_dtensor *y, const float *guidance, const float *txt_bias, sd_dtensor **out);

#endif
