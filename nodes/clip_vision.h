/* The CLIP_VISION handle (CLIPVisionLoader) and encoding images with it, shared by
 * CLIPVisionEncode and the IP-Adapter nodes. */
#ifndef SD_NODES_CLIP_VISION_H
#define SD_NODES_CLIP_VISION_H

#include "core/node.h"
#include "ml/vision/clip_vision.h"

typedef struct sd_clip_vision_handle {
    sd_safetensors *st;
    sd_clip_vision_config cfg;
    sd_clip_vision *net; /* NULL until the first encode */
} sd_clip_vision_handle;

/* Opens a CLIP vision file (sd_clip_vision_inspect); the message on ctx on failure. */
sd_status sd_clip_vision_handle_open(sd_context *ctx, const char *path, sd_clip_vision_handle **out);
/* The same for the tower under prefix inside a file (an unCLIP checkpoint's
 * "embedder.model.visual."; NULL: as sd_clip_vision_handle_open). */
sd_status sd_clip_vision_handle_open_at(sd_context *ctx, const char *path, const char *prefix,
                                        sd_clip_vision_handle **out);
void sd_clip_vision_handle_free(void *h); /* NULL-safe */

/* The handle on a CLIP_VISION input, or NULL with the node's error recorded. */
sd_clip_vision_handle *sd_node_clip_vision_input(sd_node_run *r, const char *input);

/* Encodes every image of img ([B, H, W, 3]) one at a time after ComfyUI's clip_preprocess (crop:
 * centre crop, else a plain resize); outputs as sd_clip_vision_encode (each may be NULL), laid out
 * [B, ...]. Errors are recorded as the node's. */
sd_status sd_node_clip_vision_encode(sd_node_run *r, sd_clip_vision_handle *h, const sd_tensor *img, bool crop,
                                     float *embeds, float *last, float *penult);

/* The CLIP_VISION check tag: "<projection>:<width>" ("1024:1280" for ViT-H). */
void sd_clip_vision_tag(const sd_clip_vision_config *cfg, char *tag, size_t size);

#endif
