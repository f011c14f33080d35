/* Family checks before running (the descriptors' check hooks, core/node.h sd_check_*): loaders
 * read their file's header (never weights) and tag their outputs with its model family;
 * consumers compare tags, so a model family that a node cannot take, or a latent of the wrong
 * channel count, is reported by `sdflow validate` and before any node of `sdflow run` runs.
 *
 * Tag conventions: MODEL, CLIP, CONTROL_NET, GUIDER (its model's) and CONDITIONING (from the text
 * encoders that made it) carry the family name (sd_family_name, "SD1.x");
 * LATENT and VAE carry "<latent channels>:<family name>" ("4:SD1.x"; "4:" when only the channel
 * count is known); a checkpoint without VAE tensors tags its VAE output "none". A CONDITIONING
 * that unCLIPConditioning gave image embeddings carries ";unCLIP" after its family name
 * ("SDXL;unCLIP"). Nodes without a hook pass tags through (core/check.c). */
#ifndef SD_NODES_FAMILY_CHECK_H
#define SD_NODES_FAMILY_CHECK_H

#include "core/node.h"

void sd_check_checkpoint_loader(sd_node_check *c); /* CheckpointLoaderSimple */
void sd_check_unclip_checkpoint_loader(sd_node_check *c); /* unCLIPCheckpointLoader: also its image tower */
void sd_check_unclip_conditioning(sd_node_check *c); /* unCLIPConditioning: a family with unCLIP models */
void sd_check_vae_loader(sd_node_check *c);        /* VAELoader */
void sd_check_unet_loader(sd_node_check *c);       /* UNETLoader: the UNet's family */
void sd_check_lora_loader(sd_node_check *c);       /* LoraLoader, LoraLoaderModelOnly */
void sd_check_controlnet_loader(sd_node_check *c); /* ControlNetLoader: the ControlNet's family */
void sd_check_diff_controlnet_loader(sd_node_check *c); /* DiffControlNetLoader: also the model's */
void sd_check_controlnet_apply(sd_node_check *c);  /* ControlNetApply: the conditioning's family */
void sd_check_controlnet_apply_advanced(sd_node_check *c); /* ControlNetApplyAdvanced: both sides' */
void sd_check_vae_decode(sd_node_check *c);        /* VAEDecode, VAEDecodeTiled */
void sd_check_vae_encode(sd_node_check *c);        /* VAEEncode, VAEEncodeTiled, VAEEncodeForInpaint */
void sd_check_sampler(sd_node_check *c);           /* KSampler, KSamplerAdvanced, SamplerCustom: "model",
                                                    * "positive", "negative" + "latent_image" */
void sd_check_guided_sampler(sd_node_check *c);    /* SamplerCustomAdvanced: "guider" + "latent_image" */
void sd_check_guider(sd_node_check *c);            /* BasicGuider, CFGGuider, DualCFGGuider: the model's tag on
                                                    * GUIDER; its conditionings against the model */
void sd_check_text_encode(sd_node_check *c);       /* CLIPTextEncode: the conditioning's family */
void sd_check_text_encode_sdxl(sd_node_check *c);  /* CLIPTextEncodeSDXL: an SDXL (or FLUX) CLIP */
void sd_check_text_encode_flux(sd_node_check *c);  /* CLIPTextEncodeFlux: a FLUX CLIP */
void sd_check_text_encode_refiner(sd_node_check *c); /* CLIPTextEncodeSDXLRefiner: an SDXL refiner CLIP */
void sd_check_empty_latent(sd_node_check *c, int channels); /* EmptyLatentImage (4), EmptySD3LatentImage (16) */

#endif
