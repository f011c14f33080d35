/* LoRA files for SD1 and SDXL checkpoints, applied as weight patches (docs/lora.md).
 *
 * Layouts read (one .safetensors file may mix them):
 *   kohya-ss / A1111   lora_unet_<name>.lora_up.weight / .lora_down.weight / .alpha, where
 *                      <name> is an LDM name (input_blocks_1_1_proj_in) or a diffusers name
 *                      (down_blocks_0_attentions_0_proj_in) with '.' written as '_';
 *                      lora_te_text_model_encoder_layers_N_<proj> (also lora_te1_; SDXL's
 *                      OpenCLIP-bigG lora_te2_, its q/k/v on the thirds of the fused in_proj); convolutions
 *                      with a k x k down and 1 x 1 up, and LoCon's Tucker lora_mid.
 *   diffusers / PEFT   [unet.|text_encoder.]<diffusers name>.lora_A.weight / .lora_B.weight, the
 *                      older <name>.lora.down/up.weight, the attention-processor form
 *                      <...>.processor.to_q_lora.down/up.weight and transformers'
 *                      <name>.lora_linear_layer.down/up.weight; optional .alpha.
 * Every key is mapped to the checkpoint tensor (or row slice) it patches; the map is built from the
 * layout's tensor names (ml/families/sd1_layout.h) for the checkpoint's own architecture, as
 * ComfyUI's model_lora_keys_unet / model_lora_keys_clip build theirs.
 *
 * Patch: W' = W + sum over the stacked LoRAs of strength * (alpha / rank) * up @ down (up
 * [out, rank], down [rank, in * kh * kw], reshaped to W's shape), computed on the device when
 * the patched tensor is first used (ml/loading/weights.h, patched views). */
#ifndef SD_ML_LORA_H
#define SD_ML_LORA_H

#include "ml/text/clip.h"
#include "ml/diffusion/flux.h"
#include "ml/diffusion/unet.h"

/* What a patch applies to: the UNet, the family's first text encoder (SD1's CLIP-L, SDXL's
 * CLIP-L) or its second (SDXL's OpenCLIP-bigG). A stack is for the UNet or for the text encoders
 * (SD_LORA_CLIP), whose views are made per encoder. */
typedef enum sd_lora_part { SD_LORA_UNET, SD_LORA_CLIP, SD_LORA_CLIP2 } sd_lora_part;

typedef struct sd_lora sd_lora;

/* The family a LoRA file's keys show: SDXL's second text encoder, a text context width that only
 * another family has at full size (SD2.x's 1024), SDXL's deeper transformers, the UNet's
 * proj_in / proj_out (SD1.x: 1x1 convolutions, SD2.x: Linears, with attention at the first
 * level), else SD1.x for the names SD1.x and SD2.x share (lora_te_, first-level attention); the
 * telling key in *key; SD_FAMILY_UNKNOWN when nothing tells. Reads names and shapes only. */
sd_family sd_lora_family(const sd_safetensors *st, const char **key);
/* Whether sd_lora_family's SD1.x answer came from a key name SD2.x LoRAs share (not from the shape
 * of a proj_in / proj_out): then only the widths tell the two apart. */
bool sd_lora_shared_name(const char *key);
/* The width of the text context a LoRA reads: the input width of the down matrix of a
 * cross-attention to_k / to_v, else of a single text encoder's q/k/v projection or fc1; 0 when it
 * has none. *key names that tensor (NULL when none). */
int64_t sd_lora_context_width(const sd_safetensors *st, const char **key);

/* Opens the LoRA at path and maps its keys to the tensors of the checkpoint described by cfg
 * (an SD1, SD2 or SDXL config from sd_checkpoint_inspect; a part the checkpoint lacks matches nothing).
 * Keys that match nothing are listed in one warning (sd_warn: "<file>: N LoRA keys matched
 * nothing: a, b, ..."). Errors (SD_ERR_INVALID, message naming the file): a LoRA for another
 * family ("SDXL LoRA detected (key lora_te2_...); the model is SD1.x; ..."), a LoRA on a family taking none, no key matching
 * anything ("no key matches an SD1.x UNet or text encoder tensor: a, b, ..."), an up without its
 * down (named), shapes that do not fit the tensor they patch (key and shapes named), a
 * non-float dtype; and sd_safetensors_open's errors. Refcounted: starts at one reference. */
sd_status sd_lora_open(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg, sd_lora **out);
sd_lora *sd_lora_ref(sd_lora *lora); /* returns lora */
void sd_lora_unref(sd_lora *lora);   /* NULL-safe */
/* Number of tensors of part the LoRA patches. */
size_t sd_lora_count(const sd_lora *lora, sd_lora_part part);
const char *sd_lora_path(const sd_lora *lora);

/* A stack: LoRAs with strengths applied to one part, in order. Immutable once made; the
 * patched UNet / text encoder it makes are created on first use and owned by it. */
typedef struct sd_lora_stack sd_lora_stack;

/* A new stack: the entries of base (NULL: none), then lora at strength. The new stack holds
 * references to its LoRAs. SD_ERR_NOMEM only. */
sd_status sd_lora_stack_push(sd_context *ctx, const sd_lora_stack *base, sd_lora *lora, float strength,
                             sd_lora_part part, sd_lora_stack **out);
sd_lora_stack *sd_lora_stack_ref(sd_lora_stack *s); /* returns s */
void sd_lora_stack_unref(sd_lora_stack *s);         /* NULL-safe */

/* The stack's weight patcher (ml/loading/weights.h) for a patched view over any weight set holding
 * the tensors of part (names without prefix); the stack must outlive the view. */
void sd_lora_stack_patcher(sd_lora_stack *s, sd_lora_part part, sd_weight_patcher *out);

/* The patched view of base (which must outlive the stack): a UNet / text encoder sharing
 * base's uploaded weights except the patched tensors. Made on the first call for a given base
 * and owned by the stack. SD_ERR_INVALID when the stack is for the other part. */
sd_status sd_lora_stack_unet(sd_lora_stack *s, sd_unet *base, sd_unet **out);
/* slot: the text encoder base is (0: SD_LORA_CLIP's patches, 1: SD_LORA_CLIP2's). */
sd_status sd_lora_stack_clip(sd_lora_stack *s, int slot, sd_clip_model *base, sd_clip_model **out);

/* The diffusers name of an SD1 UNet tensor given by its LDM name without prefix
 * ("input_blocks.1.1.proj_in.weight" -> "down_blocks.0.attentions.0.proj_in.weight") for the
 * architecture cfg, into out (size bytes). False when the name has no diffusers counterpart or
 * does not fit. */
bool sd_unet_diffusers_name(const sd_unet_config *cfg, const char *ldm, char *out, size_t size);

/* One diffusers (FluxTransformer2DModel) Linear that patches rows [row0, row0 + rows) of a BFL
 * FLUX tensor; swap: its two row halves are the tensor's in the other order (norm_out.linear's
 * scale, shift against final_layer.adaLN_modulation.1's shift, scale). */
typedef struct sd_flux_diffusers_name {
    char name[96]; /* without ".weight": "transformer_blocks.0.attn.to_q" */
    int64_t row0, rows;
    bool swap;
} sd_flux_diffusers_name;

/* The diffusers Linears (up to 4: single blocks' linear1 is to_q, to_k, to_v and proj_mlp) that
 * make up the BFL tensor bfl (without ".weight": "double_blocks.0.img_attn.qkv") of cfg's
 * transformer, as ComfyUI's flux_to_diffusers map; their count (0: none). */
int sd_flux_diffusers_names(const sd_flux_config *cfg, const char *bfl, sd_flux_diffusers_name out[4]);

/* The patched view of a FLUX transformer (as sd_lora_stack_unet; the stack's part is the UNet's). */
sd_status sd_lora_stack_flux(sd_lora_stack *s, sd_flux *base, sd_flux **out);

/* ---- Test LoRA files ---- */

/* Key layouts of test LoRA files: kohya with the UNet named the diffusers way
 * (lora_unet_down_blocks_0_...) or the LDM way (lora_unet_input_blocks_1_1_...), or diffusers/PEFT
 * (unet.<diffusers name>.lora_A.weight, text_encoder[_2].text_model.*). On FLUX: KOHYA is
 * lora_unet_<BFL name> (lora_unet_double_blocks_0_img_attn_qkv), KOHYA_LDM OneTrainer's
 * lora_transformer_<diffusers name>, PEFT transformer.<diffusers name>.lora_A/B (q, k, v and
 * proj_mlp on slices of the fused BFL tensors), BFL ComfyUI's diffusion_model.<BFL name>.lora_A/B. */
typedef enum sd_lora_layout { SD_LORA_KOHYA, SD_LORA_KOHYA_LDM, SD_LORA_PEFT, SD_LORA_BFL } sd_lora_layout;

/* Writes a LoRA with deterministic random weights (from seed and the name of the tensor each key
 * patches: the same values in every layout) for the SD1, SD2 or SDXL architecture cfg, rank `rank`:
 * every attention projection (to_q, to_k, to_v, to_out.0), feed-forward Linear and
 * proj_in/proj_out of the UNet, the 3x3 conv1 of down_blocks.0.resnets.0 (3x3 down, 1x1 up), and
 * every q/k/v/out_proj and fc1/fc2 of the text encoders (SD1 lora_te_; SDXL lora_te1_ for
 * CLIP-L, lora_te2_ for OpenCLIP-bigG, whose q/k/v patch the thirds of its fused in_proj); alpha
 * rank / 2 on every key (one value, as kohya-ss writes it and as diffusers' loader handles it).
 * F32, written atomically. */
sd_status sd_lora_write_random(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg, int rank,
                               uint64_t seed, sd_lora_layout layout);
#endif
