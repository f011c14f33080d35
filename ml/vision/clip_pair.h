/* Both CLIP towers of one file with their projections, as the CLIP interrogator uses them:
 * transformers' CLIPModel (text_model.*, vision_model.*, text_projection.weight,
 * visual_projection.weight; openai/clip-vit-large-patch14) or open_clip's (token_embedding,
 * positional_embedding, transformer.resblocks.N, ln_final, text_projection, visual.*). Text
 * features are open_clip's encode_text: at most 75 tokens between the start and end tokens, the
 * final-LayerNorm end token projected; each text is encoded in a window of its own length
 * (sd_clip_model_new_window), texts of one length batched; texts that all share more than the
 * start token (a chain step's prompts) encode the shared tokens once (sd_clip_encode_packed).
 * Both are returned unit-length. */
#ifndef SD_ML_CLIP_PAIR_H
#define SD_ML_CLIP_PAIR_H

#include "ml/vision/clip_vision.h"
#include "ml/vision/interrogator.h"

typedef struct sd_clip_pair sd_clip_pair;

/* The towers of st (which must outlive the pair); weights upload on first use as f32.
 * SD_ERR_INVALID / SD_ERR_NOT_FOUND naming the file when a tower or projection is missing. */
sd_status sd_clip_pair_new(sd_cl *cl, const sd_safetensors *st, sd_clip_pair **out);
void sd_clip_pair_free(sd_clip_pair *p); /* NULL-safe */

int sd_clip_pair_dim(const sd_clip_pair *p);
const sd_clip_vision_config *sd_clip_pair_vision_config(const sd_clip_pair *p);

/* Unit-length features of texts[0..n) (n * dim floats). */
sd_status sd_clip_pair_text_features(sd_clip_pair *p, const char *const *texts, int n, float *out);
/* The number of CLIP tokens of text without start and end tokens. */
sd_status sd_clip_pair_count_tokens(sd_clip_pair *p, const char *text, int *tokens);
/* Unit-length image features of preprocessed pixels [3, S, S] (dim floats). */
sd_status sd_clip_pair_image_features(sd_clip_pair *p, const float *pixels, float *out);
/* The text encoder of the interrogator over this pair. */
sd_text_encoder sd_clip_pair_encoder(sd_clip_pair *p);

#endif
