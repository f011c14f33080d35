/* The T5 v1.1 encoder (transformers' T5EncoderModel as FLUX and SD3 use T5-XXL): token
 * embedding; per block an RMS-normed self-attention without 1/sqrt(d) scaling, with a bucketed
 * relative-position bias taken from block 0 and shared by every block, and an RMS-normed gated-GELU
 * (tanh) feed-forward, each added to the residual; a final RMS norm. No biases. On the op library
 * with lazily uploaded weights (ml/loading/weights.h).
 *
 * Tensors under the prefix ("" for t5xxl_fp16.safetensors, "text_encoders.t5xxl.transformer." in
 * ComfyUI's all-in-one files): shared.weight (or encoder.embed_tokens.weight) [vocab, d_model],
 * encoder.block.N.layer.0.SelfAttention.{q,k,v}.weight [heads*d_kv, d_model], .o.weight
 * [d_model, heads*d_kv], encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
 * [buckets, heads], encoder.block.N.layer.{0,1}.layer_norm.weight [d_model],
 * encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1}.weight [d_ff, d_model], .wo.weight
 * [d_model, d_ff], encoder.final_layer_norm.weight [d_model]. Tensors may be F32, F16, BF16 or,
 * in GGUF files (ml/formats/gguf.h sd_gguf_tensor_view), ggml blocks: those are expanded on the
 * device at upload (embedding rows on the host, row by row). */
#ifndef SD_ML_T5_H
#define SD_ML_T5_H

#include "ml/loading/weights.h"

#define SD_T5_MAX_DISTANCE 128 /* relative_attention_max_distance of every T5 v1.1 */

typedef struct sd_t5_config {
    int layers;   /* 24 for XXL */
    int d_model;  /* 4096 */
    int heads;    /* 64 */
    int d_kv;     /* 64 */
    int d_ff;     /* 10240 */
    int buckets;  /* 32 */
    int64_t vocab; /* embedding rows: 32128 */
} sd_t5_config;

/* Reads the configuration from the tensors' shapes and checks every tensor of every block (one
 * line naming the file and tensor: missing, or its shape against the configuration).
 * SD_ERR_NOT_FOUND / SD_ERR_INVALID. */
sd_status sd_t5_inspect(sd_context *ctx, const sd_safetensors *st, const char *prefix, sd_t5_config *cfg);

/* The tensors of st under the names above when st uses llama.cpp's T5 names (token_embd,
 * enc.blk.N.attn_q/k/v/o, attn_rel_b, attn_norm, ffn_gate/ffn_up/ffn_down, ffn_norm,
 * enc.output_norm: city96's T5 GGUF files, read by ComfyUI-GGUF's CLIPLoaderGGUF with the same
 * renaming); other names are kept. A new alias handle (ml/formats/safetensors.h); st must stay
 * open while it is used. */
sd_status sd_t5_rename_llama(sd_context *ctx, const sd_safetensors *st, sd_safetensors **out);

typedef struct sd_t5_model sd_t5_model;

/* An encoder over st's tensors under prefix (inspected as above); nothing is uploaded until the
 * first encode. st must outlive the model. */
sd_status sd_t5_model_new(sd_cl *cl, const sd_safetensors *st, const char *prefix, sd_dtype weight_dtype,
                          sd_t5_model **out);
void sd_t5_model_free(sd_t5_model *m); /* NULL-safe */
const sd_t5_config *sd_t5_model_config(const sd_t5_model *m);

/* Encodes n token ids (0 <= id < vocab; no attention mask, so padding is attended to as in
 * ComfyUI): hidden holds n * d_model floats, the final-norm output (last_hidden_state). */
sd_status sd_t5_encode(sd_t5_model *m, const int32_t *tokens, int n, float *hidden);

/* The bucket of a key at relative distance key - query (bidirectional: half the buckets for
 * each sign, exact below buckets/4, logarithmic up to max_distance), as transformers computes it
 * in float32. */
int sd_t5_bucket(int64_t distance, int buckets, int max_distance);

#endif
