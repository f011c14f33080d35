/* IP-Adapter (Ye et al. 2023) as ComfyUI_IPAdapter_plus applies it: an image projection turns
 * CLIP vision features into image tokens (the plain projection: image_embeds -> 4 tokens; the
 * plus / plus-face Resampler: penultimate hidden states -> 16 tokens through perceiver
 * attention; the full-face MLP: penultimate hidden states token by token), and every attn2 of the
 * UNet adds weight * attention(q, to_k_ip(tokens), to_v_ip(tokens)) to its output before to_out
 * (decoupled cross-attention), through the UNet's attn2 hook (ml/diffusion/unet.h).
 *
 * FaceID (ip-adapter-faceid*): the tokens come from an InsightFace identity embedding (512 floats,
 * L2-normalised): plain FaceID and portrait through MLPProjModelFaceId (Linear, GELU, Linear,
 * LayerNorm: 4 tokens, portrait 16); FaceID Plus / Plus v2 (ProjModelFaceIdPlus) from those 4
 * tokens as latents of a perceiver Resampler over the CLIP vision penultimate hidden states of the
 * aligned face crop, v2 adding the shortcut x + weight_faceidv2 * resampler(x).
 *
 * Files: .safetensors or torch .bin with image_proj.* and ip_adapter.N.to_k_ip/to_v_ip.weight
 * (N = 2 * number + 1 in the UNet's IP-Adapter order). FaceID files also carry ip_adapter.N.
 * to_q_lora... (unused: their LoRA file patches the MODEL instead, as ComfyUI_IPAdapter_plus). */
#ifndef SD_ML_IPADAPTER_H
#define SD_ML_IPADAPTER_H

#include "ml/diffusion/unet.h"
#include "ml/loading/weights.h"

typedef enum sd_ipadapter_kind {
    SD_IPA_PLAIN, SD_IPA_PLUS, SD_IPA_FULL, SD_IPA_FACEID, SD_IPA_FACEID_PLUS
} sd_ipadapter_kind;

/* The FaceID identity embedding's width (InsightFace ArcFace). */
#define SD_IPA_FACEID_DIM 512

typedef struct sd_ipadapter_config {
    sd_ipadapter_kind kind;
    bool sdxl;      /* cross_dim 2048 */
    int clip_dim;   /* the CLIP vision features it takes: image_embeds width (plain) or hidden width;
                       0 for FaceID / portrait, which take none */
    int cross_dim;  /* to_k_ip input: the UNet's context width (768 SD1.5, 2048 SDXL) */
    int tokens;     /* image tokens per image (plain 4, plus 16, FaceID 4, portrait 16; full: the CLIP
                       tokens, 0 here) */
    int dim, heads, depth; /* plus / FaceID Plus: the Resampler's width, heads (width / 64) and layers */
    int id_dim;     /* FaceID: the identity embedding's width (512) */
    bool faceid_v2;       /* FaceID Plus v2 (file name holds "plusv2", as ComfyUI_IPAdapter_plus tells) */
    bool portrait;        /* FaceID portrait (16 tokens, no LoRA) */
    bool portrait_unnorm; /* portrait on unnormalised embeddings (file name holds "unnorm") */
    int layers;     /* attn2 layers with to_k_ip / to_v_ip (16 SD1.5, 70 SDXL) */
} sd_ipadapter_config;

/* Reads the kind and sizes from the tensor shapes (and the FaceID v2 / unnorm flags from the file
 * name, as ComfyUI_IPAdapter_plus). SD_ERR_INVALID naming the file for a file without image_proj /
 * ip_adapter tensors or of unexpected shapes. */
sd_status sd_ipadapter_inspect(sd_context *ctx, const sd_safetensors *st, sd_ipadapter_config *cfg);

typedef struct sd_ipadapter sd_ipadapter;

/* A model over st (which it closes when the last reference goes); weights upload on first use. */
sd_status sd_ipadapter_new(sd_cl *cl, sd_safetensors *st, const sd_ipadapter_config *cfg, sd_ipadapter **out);
sd_ipadapter *sd_ipadapter_ref(sd_ipadapter *m);
void sd_ipadapter_unref(sd_ipadapter *m); /* NULL-safe */
const sd_ipadapter_config *sd_ipadapter_config_of(const sd_ipadapter *m);

/* Image tokens [n, tokens, cross_dim] (tokens: cfg->tokens, or in_tokens for the full-face MLP)
 * from n CLIP features: plain: image_embeds [n, clip_dim] (in_tokens 1); plus / full:
 * penultimate hidden states [n, in_tokens, clip_dim]. out: n * tokens * cross_dim floats. */
sd_status sd_ipadapter_project(sd_ipadapter *m, const float *features, int n, int in_tokens, float *out);

/* FaceID image tokens [n, tokens, cross_dim] of n faces: faceid [n, id_dim] identity embeddings;
 * FaceID Plus also clip [n, in_tokens, clip_dim], the CLIP vision penultimate hidden states of
 * each aligned face crop (NULL and 0 otherwise), and v2_scale (weight_faceidv2), used by Plus v2
 * only. out: n * tokens * cross_dim floats. */
sd_status sd_ipadapter_project_faceid(sd_ipadapter *m, const float *faceid, const float *clip, int n, int in_tokens,
                                      float v2_scale, float *out);

/* ---- Applying: per-layer weights and the attn2 hook ---- */

/* ComfyUI_IPAdapter_plus's weight types, in its order (WEIGHT_TYPES). */
typedef enum sd_ipa_weight_type {
    SD_IPA_LINEAR, SD_IPA_EASE_IN, SD_IPA_EASE_OUT, SD_IPA_EASE_IN_OUT, SD_IPA_REVERSE_IN_OUT, SD_IPA_WEAK_INPUT,
    SD_IPA_WEAK_OUTPUT, SD_IPA_WEAK_MIDDLE, SD_IPA_STRONG_MIDDLE, SD_IPA_STYLE_TRANSFER, SD_IPA_COMPOSITION,
    SD_IPA_STRONG_STYLE_TRANSFER, SD_IPA_STYLE_AND_COMPOSITION, SD_IPA_STYLE_TRANSFER_PRECISE,
    SD_IPA_COMPOSITION_PRECISE, SD_IPA_WEIGHT_TYPES
} sd_ipa_weight_type;
extern const char *const sd_ipa_weight_type_names[]; /* NULL-terminated */

/* embeds_scaling: 'V only', 'K+V', 'K+V w/ C penalty', 'K+mean(V) w/ C penalty'. */
typedef enum sd_ipa_scaling { SD_IPA_V_ONLY, SD_IPA_KV, SD_IPA_KV_PENALTY, SD_IPA_K_MEAN_V_PENALTY } sd_ipa_scaling;
extern const char *const sd_ipa_scaling_names[]; /* NULL-terminated */

/* One applied IP-Adapter (what IPAdapterAdvanced adds to a MODEL); immutable once made. */
typedef struct sd_ipa_patch {
    sd_ipadapter *model;    /* one reference */
    float *cond, *uncond;   /* image tokens [n_tokens, cross_dim] for the positive / negative side */
    int n_tokens;
    double weight;
    sd_ipa_weight_type weight_type;
    sd_ipa_scaling scaling;
    double sigma_start, sigma_end; /* active while sigma_end <= sigma <= sigma_start */
    float *mask;            /* attn_mask [mask_h, mask_w] (first plane) or NULL */
    int64_t mask_h, mask_w;
} sd_ipa_patch;

/* Frees a patch's tokens and mask and drops its model reference (NULL-safe). */
void sd_ipa_patch_free(sd_ipa_patch *p);

/* The IP-Adapters a MODEL carries: an immutable, reference-counted list (newest last). */
typedef struct sd_ipa_stack sd_ipa_stack;
/* A new stack of base's patches (base may be NULL; a reference to it is taken) and p (owned by
 * the stack from now on, also on failure: NULL when memory runs out). */
sd_ipa_stack *sd_ipa_stack_push(sd_ipa_stack *base, sd_ipa_patch *p);
sd_ipa_stack *sd_ipa_stack_ref(sd_ipa_stack *s); /* NULL-safe */
void sd_ipa_stack_unref(sd_ipa_stack *s);        /* NULL-safe */
/* The number of patches; their pointers, oldest first, into out (at least that many slots). */
size_t sd_ipa_stack_count(const sd_ipa_stack *s);
void sd_ipa_stack_list(const sd_ipa_stack *s, const sd_ipa_patch **out);

/* The weight of patch p at a site and which tokens each side uses there (swap: the positive
 * side attends to zero tokens and the negative side to the positive's, as the "precise" types
 * do at some layers). 0: the patch adds nothing there. */
double sd_ipa_site_weight(const sd_ipa_patch *p, const sd_unet_attn_site *site, bool *swap);

/* A UNet call's hook over n patches (borrowed): items `batch`, side[i] true for items on the
 * negative (unconditional) side, sigma the call's. */
typedef struct sd_ipa_call {
    sd_cl *cl;
    const sd_ipa_patch *const *patches;
    size_t n_patches;
    const bool *negative; /* [batch] */
    int64_t batch;
    double sigma;
    sd_dtensor **tokens;  /* per patch and swap: device tokens [batch, T, cross], built on first use */
} sd_ipa_call;

/* The hook for sd_unet_control.attn2 (user: an sd_ipa_call). */
sd_status sd_ipa_attn2(void *user, const sd_unet_attn_site *site, const sd_dtensor *q, int heads, sd_dtensor **out);
/* Frees the call's device tokens (the call itself is the caller's). */
void sd_ipa_call_release(sd_ipa_call *c);

#endif
