/* Textual-inversion embeddings (docs/models.md, "Embeddings").
 *
 * A prompt names an embedding as embedding:NAME (ComfyUI syntax, ml/text/prompt_weights.h); the
 * file is the first of NAME, NAME.safetensors, NAME.pt, NAME.bin in an embeddings/ folder of
 * the model directories (sd_embedding_candidates; found by the caller, which in a node is the
 * look-up its files hook declared, so the file is part of the cache key). Layouts read, as
 * A1111 and ComfyUI write them:
 *   "emb_params"           [n, width]   (A1111's safetensors export, ComfyUI)
 *   "string_to_param.*"    [n, width]   (A1111's .pt layout saved as safetensors)
 *   "clip_l" (+ "clip_g")  [n, 768]     (SDXL-style files: the CLIP-L vectors serve SD1)
 *   any single tensor      [n, width] or [width]
 * SDXL's text encoders each take their own tensor of an SDXL file: CLIP-L "clip_l" [n, 768],
 * OpenCLIP-bigG "clip_g" [n, 1280] (the same n); an SD1 file (no such tensor) is refused there.
 * Each of the n vectors takes one token position. Only safetensors files are read: a pickled
 * .pt/.bin file is refused with a one-line reason (ml/formats/safetensors.h), never unpickled. */
#ifndef SD_ML_EMBEDDINGS_H
#define SD_ML_EMBEDDINGS_H

#include "ml/families/family.h"
#include "ml/text/prompt_weights.h"

#define SD_EMBEDDING_MAX_VECTORS 75 /* one window's worth of tokens */

typedef struct sd_embedding {
    int n_vectors, width;
    float *vectors; /* n_vectors * width, malloc'd */
} sd_embedding;

/* The tensor text encoder `slot` of family takes from an embedding file: "clip_l" / "clip_g" in
 * families with an OpenCLIP-bigG encoder (SDXL, the refiner), NULL (the SD1 rules above) in
 * others. */
const char *sd_embedding_key(sd_family family, int slot);

/* Reads the embedding file at path for a text encoder of the given width; key: the tensor to
 * read (sd_embedding_key), NULL for the SD1 rules. Errors
 * (SD_ERR_INVALID naming the file): no tensor in a known layout, a shape that is not [n, width]
 * or [width] ("vectors are 1024 wide; the text encoder's are 768"), a non-float dtype;
 * SD_ERR_LIMIT over SD_EMBEDDING_MAX_VECTORS vectors; the safetensors errors. With a key, a file
 * without that tensor is SD_ERR_INVALID too ("x.safetensors: no clip_g tensor (an SD1.x
 * embedding?); SDXL text encoders take files with clip_l and clip_g tensors"), and clip_l and
 * clip_g of different lengths SD_ERR_INVALID. */
sd_status sd_embedding_read(sd_context *ctx, const char *path, int width, const char *key, sd_embedding *out);
void sd_embedding_clear(sd_embedding *e); /* frees the vectors; NULL-safe */

/* The file names embedding:NAME may refer to, in search order (ComfyUI's): NAME itself, then
 * NAME with ".safetensors", ".pt" and ".bin" appended. names[i] are malloc'd (free them with
 * sd_embedding_candidates_free); SD_ERR_NOMEM. */
#define SD_EMBEDDING_CANDIDATES 4
sd_status sd_embedding_candidates(sd_context *ctx, const char *name, char *names[SD_EMBEDDING_CANDIDATES]);
void sd_embedding_candidates_free(char *names[SD_EMBEDDING_CANDIDATES]);

/* Finds the file of embedding:NAME: *path (borrowed; NULL when there is none). */
typedef sd_status (*sd_embedding_find_fn)(void *user, const char *name, const char **path);

/* The embeddings one prompt uses, found by name on demand (with find) and read once. */
typedef struct sd_embedding_set sd_embedding_set;

/* key as sd_embedding_read; find locates each name's file. */
sd_status sd_embedding_set_new(sd_context *ctx, int width, const char *key, sd_embedding_find_fn find,
                               void *find_user, sd_embedding_set **out);
void sd_embedding_set_free(sd_embedding_set *s); /* NULL-safe */

/* An sd_embedding_lookup_fn for sd_prompt_tokenize (user: the set): the number of vectors of
 * the embedding called name, or 0 when there is none (the prompt parser then warns
 * "embedding:NAME does not exist, ignoring", as ComfyUI does). A file that exists but cannot be
 * used gets its own warning giving the reason, except a file of another family for a keyed set
 * (an SD1 file on SDXL), which is kept as the set's error (and counted as one vector, so that the
 * parser does not also call it missing; the caller fails on sd_embedding_set_error). An error of
 * find (a node's undeclared look-up) is a warning. */
int sd_embedding_set_lookup(void *user, const char *name);

/* SD_OK, or the status of the first refused file the set looked up (its message restored on the
 * context). */
sd_status sd_embedding_set_error(sd_embedding_set *s);

/* The token ids of toks' windows (n_windows * 77 into ids): vocabulary tokens as they are,
 * vector v of embedding toks->embeddings[e] as vocab + its row in *rows (malloc'd, *n_rows rows of
 * width floats, NULL when the prompt uses no embedding): what sd_clip_encode_ex reads.
 * SD_ERR_NOMEM; SD_ERR_INVALID for an embedding the set did not look up. */
sd_status sd_embedding_set_ids(sd_embedding_set *s, const sd_prompt_tokens *toks, int vocab, int32_t *ids,
                               float **rows, int *n_rows);

#endif
