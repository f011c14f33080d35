/* Test text-encoder files in the layouts people download (tools/sdflow_mktextenc, tests):
 * tiny random CLIP-L / OpenCLIP-H / OpenCLIP-bigG text models in transformers' layout
 * (text_model.*, text_projection.weight beside it), a tiny random T5 v1.1 encoder in
 * T5EncoderModel's layout (t5xxl_fp16's names), a T5 file converted to a GGUF file with llama.cpp's
 * names (city96's t5-v1_1-xxl-encoder-*.gguf: 2-D tensors whose rows are whole 32-blocks as
 * Q8_0, other matrices F16, vectors F32), and the two text encoders of an SDXL checkpoint written
 * out as ComfyUI's clip_l.safetensors and clip_g.safetensors (open_clip's fused in_proj split into
 * q/k/v, text_projection transposed into a Linear). All written atomically; deterministic. */
#ifndef SD_ML_TEXT_ENCODER_WRITE_H
#define SD_ML_TEXT_ENCODER_WRITE_H

#include "ml/families/family.h"

/* The tiny configurations (their depths make ComfyUI's detection tell them apart):
 *   CLIP-L: width 64, 2 layers, MLP 128, with an SD3-style text_projection.weight [64, 64];
 *   OpenCLIP-H: width 64, 24 layers, MLP 128; OpenCLIP-bigG: width 64, 32 layers, MLP 128,
 *   projection 48 (all: vocabulary 49408, 77 positions);
 *   T5: vocabulary 32128, d_model 32, 2 blocks, 4 heads of 8, d_ff 48, 32 buckets. */
sd_status sd_text_write_random(sd_context *ctx, const char *path, sd_text_encoder_kind kind, sd_st_dtype dtype,
                               uint64_t seed);
/* The tiny CLIP-L and T5 (the same values as sd_text_write_random's with this seed) in one file
 * under the names of ComfyUI's all-in-one FLUX checkpoints (text_encoders.clip_l.transformer.*,
 * text_encoders.t5xxl.transformer.*). */
sd_status sd_text_write_flux_encoders(sd_context *ctx, const char *path, sd_st_dtype dtype, uint64_t seed);
/* Full-size random files for benchmarks, values as sd_text_write_random's: T5-XXL v1.1's encoder
 * (vocabulary 32128, d_model 4096, 24 blocks, 64 heads of 64, d_ff 10240) as t5xxl_fp16's
 * safetensors (dtype) or, when gguf, as city96's t5-v1_1-xxl-encoder-Q8_0.gguf (llama.cpp names,
 * matrices Q8_0, vectors F32, general.file_type 7), streamed; CLIP-L (width 768, 12 layers, MLP
 * 3072, text_projection [768, 768]) as ComfyUI's clip_l.safetensors (dtype; no GGUF).
 * SD_ERR_INVALID for another kind. */
sd_status sd_text_write_full(sd_context *ctx, const char *path, sd_text_encoder_kind kind, sd_st_dtype dtype,
                             bool gguf, uint64_t seed);
/* in: a T5 file in transformers' layout (no prefix). */
sd_status sd_text_write_t5_gguf(sd_context *ctx, const char *in, const char *out);
/* in: a T5 file in transformers' layout; out: the same with the blocks' Linear weights as fp8
 * E4M3FN (round to nearest even; the rest F32), as t5xxl_fp8_e4m3fn.safetensors; scaled: each
 * stored as fp8(w / s) with s = max|w| / 448 in <name>.scale_weight (F32 [1]) and a "scaled_fp8"
 * marker tensor, as ComfyUI's t5xxl_fp8_e4m3fn_scaled.safetensors. ref (NULL: none): an F32
 * file of the values the fp8 file holds (fp8 value * s in f32). */
sd_status sd_text_write_t5_fp8(sd_context *ctx, const char *in, const char *out, const char *ref, bool scaled);
/* ckpt: an SDXL base checkpoint with its text encoders; F32 output (the values exactly). */
sd_status sd_text_write_sdxl_split(sd_context *ctx, const char *ckpt, const char *out_l, const char *out_g);
/* ckpt: an SD2.x checkpoint; its OpenCLIP-H's first `layers` layers (diffusers' SD2 text_encoder
 * keeps 23 of 24), F32. */
sd_status sd_text_write_sd2_split(sd_context *ctx, const char *ckpt, int layers, const char *out);

#endif
