/* T2I-Adapters (TencentARC's Adapter and Adapter_light as ComfyUI's comfy/t2i_adapter/adapter.py
 * builds them, detected by keys as comfy/controlnet.py's load_t2i_adapter): a small network that
 * turns the hint image once into four feature maps, which the UNet adds to the outputs of some
 * of its input blocks (and, for SDXL, the middle block) at every step.
 *
 * Layouts (names after the diffusers mapping below):
 *   full   conv_in [C0, cin, 3, 3]; body.{k} for k = 0..7 (two ResnetBlocks per level): optional
 *          in_conv (when the level changes width), block1 3x3, block2 ksize x ksize, optional
 *          down_opt.op (a stride-2 conv; without it the level starts with a 2x2 average pool).
 *          Widths C0, 2 C0, 4 C0, 4 C0. cin 64 or 192 (SD1: pixel-unshuffle 8 of a 1- or 3-channel
 *          hint), 256 or 768 (SDXL: unshuffle 16; level 1 keeps the size, level 3 too).
 *   light  body.{i}.in_conv 1x1, body.{i}.body.{j}.block1/block2 3x3 (four per level),
 *          body.{i}.out_conv 1x1; widths 320, 640, 1280, 1280 in ComfyUI (read from the shapes
 *          here); SD1 only.
 *   diffusers' T2IAdapter files (adapter.body.{i}.resnets.{j}.*, adapter.conv_in.*) are the
 *   full layout under ComfyUI's prefix mapping: adapter.body.{i}.resnets.{j}. -> body.{2i+j}.,
 *   adapter.body.{i}. -> body.{2i}., adapter. -> "" (no data copied).
 *
 * Where ComfyUI adds the features (openaimodel's apply_control on 'input' after input block k,
 * which changes both the skip and what the next block sees): SD1 after input blocks 2, 5, 8, 11;
 * SDXL after input blocks 3, 5, 8 and after the middle block. */
#ifndef SD_ML_T2I_ADAPTER_H
#define SD_ML_T2I_ADAPTER_H

#include "ml/loading/weights.h"

#define SD_T2I_LEVELS 4

typedef struct sd_t2i_config {
    bool light;            /* Adapter_light */
    bool xl;               /* SDXL: unshuffle 16, features after blocks 3, 5, 8 and the middle */
    bool use_conv;         /* full: downsampling by down_opt.op convs instead of average pools */
    int cin;               /* channels after the pixel unshuffle */
    int input_channels;    /* hint channels the network takes: cin / unshuffle^2 (1 or 3) */
    int unshuffle;         /* 8, or 16 for SDXL */
    int ksize;             /* full: kernel of in_conv and block2 (1 or 3) */
    int width[SD_T2I_LEVELS];
    int nums_rb;           /* ResnetBlocks per level: 2 (full), read from the file (light) */
    int input_blocks;      /* input blocks of the UNet it is made for: 12 (SD1), 9 (SDXL) */
    int feature_block[SD_T2I_LEVELS]; /* input block each feature is added after; -1: the middle */
} sd_t2i_config;

/* True when st's names are a T2I-Adapter's (either layout; ComfyUI's test). */
bool sd_t2i_adapter_detect(const sd_safetensors *st);

typedef struct sd_t2i_adapter sd_t2i_adapter;

/* Reads the architecture from st (which must outlive the adapter) and checks every tensor
 * (maps diffusers names first). Weights upload on the first forward, matrices as dtype.
 * SD_ERR_INVALID naming the file and tensor (missing, misshapen), SD_ERR_NOMEM. */
sd_status sd_t2i_adapter_new(sd_context *ctx, const sd_safetensors *st, sd_dtype dtype, sd_t2i_adapter **out);
void sd_t2i_adapter_free(sd_t2i_adapter *a); /* NULL-safe */
const sd_t2i_config *sd_t2i_adapter_config(const sd_t2i_adapter *a);

/* The hint size ComfyUI feeds it for a latent of h x w: 8h and 8w rounded up to multiples of
 * the unshuffle factor. */
void sd_t2i_adapter_hint_size(const sd_t2i_adapter *a, int64_t h, int64_t w, int64_t *hint_h, int64_t *hint_w);

/* One forward: hint [B, input_channels, H, W] f32 (H, W multiples of the unshuffle factor) ->
 * features[k] (new, caller frees) [B, width[k], h_k, w_k] for k = 0..3. On failure every slot is
 * NULL. Errors: shapes (named), device errors. */
sd_status sd_t2i_adapter_forward(sd_t2i_adapter *a, const sd_dtensor *hint, sd_dtensor *features[SD_T2I_LEVELS]);

#endif
