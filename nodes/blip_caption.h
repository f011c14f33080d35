/* BLIP captioning shared by BLIPCaption and CLIPInterrogate. */
#ifndef SD_NODES_BLIP_CAPTION_H
#define SD_NODES_BLIP_CAPTION_H

#include "core/node.h"
#include "core/value.h"
#include "ml/vision/blip.h"

/* The decoding inputs every captioning node has. Token counts exclude BLIP's start token;
 * 32 is clip-interrogator's caption_max_length. */
#define SD_BLIP_PARAM_INPUTS                                                                            \
    SD_IN_INT("min_tokens", "0", 0, 256, "the caption has at least this many tokens (its end token included)"), \
    SD_IN_INT("max_tokens", "32", 1, 256, "the caption has at most this many tokens"),                 \
    SD_IN_INT("num_beams", "1", 1, 16, "1: greedy search; more: beam search with that many beams"),     \
    SD_IN_FLOAT("repetition_penalty", "1.0", 1.0, 10.0, "1: none; above 1 discourages repeated tokens")

/* The files hook's part: declares the look-up of vocab.txt beside the model file named by the
 * literal of input model_input (then models/blip/vocab.txt). */
sd_status sd_blip_declare_vocab(sd_node_files *f, const char *model_input);
/* The decoding parameters from SD_BLIP_PARAM_INPUTS (bos and eos come from the vocabulary). */
sd_status sd_blip_read_params(sd_node_run *r, sd_blip_generate_params *p);
/* One caption per image of img [B, H, W, 3] with the model of input model_input: *captions is a
 * malloc'd array of B malloc'd strings. Errors are the node's. */
sd_status sd_blip_caption_images(sd_node_run *r, const char *model_input, const sd_tensor *img,
                                 const sd_blip_generate_params *params, char ***captions);

#endif
