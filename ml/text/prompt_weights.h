/* Prompt weighting and CLIP windows with ComfyUI's semantics (comfy/sd1_clip.py, SD1):
 *
 * Weighting ("(text)" and "(text:w)"):
 *   - "\(" and "\)" are literal parentheses; nothing else is escaped.
 *   - A top-level "(...)" group multiplies the weight by 1.1; if the text inside has a ':' after
 *     its first character and what follows the last ':' parses as a Python float, that number
 *     replaces the weight and is cut off. Groups nest: "((a))" is 1.1 * 1.1, "((a:1.5))" is 1.5.
 *   - An unmatched "(" or ")" is kept as text; "[...]" and "{...}" are plain text.
 * Windows:
 *   - Each weighted segment is split before " embedding:" / "\nembedding:"; each piece is
 *     tokenized as a whole ("word" below). With an embedding lookup, a piece starting with
 *     "embedding:NAME rest" yields NAME's vectors (commas stripped from the name if needed;
 *     unknown names are dropped with the warning "embedding:NAME does not exist, ignoring") and
 *     "rest" is tokenized as text.
 *   - Windows are 77 tokens: BOS, up to 75 tokens, EOS, padded with EOS. A word of 8 or more
 *     tokens is split across windows; a shorter word that does not fit starts a new window.
 *   - An empty prompt gives one window: BOS, EOS, EOS padding. */
#ifndef SD_ML_PROMPT_WEIGHTS_H
#define SD_ML_PROMPT_WEIGHTS_H

#include "ml/text/clip_tokenizer.h"

#define SD_CLIP_WINDOW 77

/* One weighted segment of a prompt (escapes already resolved). */
typedef struct sd_prompt_segment {
    char *text;    /* malloc'd, NUL-terminated */
    double weight;
} sd_prompt_segment;

/* Splits text into weighted segments. *out is malloc'd (free with sd_prompt_segments_free).
 * SD_ERR_NOMEM only; every input parses (text that is not weighting stays literal). */
sd_status sd_prompt_parse_weights(sd_context *ctx, const char *text, sd_prompt_segment **out, size_t *n);
void sd_prompt_segments_free(sd_prompt_segment *segments, size_t n);

typedef enum sd_prompt_token_kind {
    SD_PROMPT_TOKEN,    /* id is a vocabulary token id */
    SD_PROMPT_EMBEDDING /* id is the vector index within embeddings[embedding] */
} sd_prompt_token_kind;

typedef struct sd_prompt_token {
    sd_prompt_token_kind kind;
    int32_t id;
    int32_t embedding; /* index into sd_prompt_tokens.embeddings; -1 for vocabulary tokens */
    int32_t word;      /* ComfyUI's word id: 1-based word index, 0 for BOS/EOS/padding */
    double weight;
} sd_prompt_token;

typedef struct sd_prompt_tokens {
    sd_prompt_token *tokens;  /* n_windows * SD_CLIP_WINDOW entries */
    size_t n_windows;
    char **embeddings;        /* names of the embeddings used, each once */
    size_t n_embeddings;
} sd_prompt_tokens;

/* Number of vectors of the textual-inversion embedding called name, or 0 when there is none. */
typedef int (*sd_embedding_lookup_fn)(void *user, const char *name);

/* Weights, tokenizes and windows a prompt. lookup NULL: "embedding:" is plain text (as ComfyUI
 * without an embeddings directory). *out is zeroed first; free with sd_prompt_tokens_free.
 * Errors from sd_clip_tokenize (invalid UTF-8, limit, memory). */
sd_status sd_prompt_tokenize(sd_context *ctx, const sd_clip_tokenizer *tok, const char *text,
                             sd_embedding_lookup_fn lookup, void *user, sd_prompt_tokens *out);
void sd_prompt_tokens_free(sd_prompt_tokens *tokens);

/* Calls lookup with every name sd_prompt_tokenize may look up for text: each name as written
 * after "embedding:" and, when it has commas around it, the name without them (the tokenizer
 * asks for the second only when the first is unknown). Nothing is tokenized and nothing is
 * warned: a node's files hook declares these before the prompt is encoded. SD_ERR_NOMEM. */
sd_status sd_prompt_embedding_names(sd_context *ctx, const char *text, sd_embedding_lookup_fn lookup, void *user);

#endif
