/* The CLIP interrogator's algorithm (pharmapsychotic/clip-interrogator 0.6.0): from a caption
 * and the unit-length CLIP image features of an image, a prompt built from label tables
 * (artists, flavors, mediums, movements, trendings, negative, and any tables the user adds),
 * ranked by cosine similarity between the image features and each label's text features.
 *
 *   rank      tables longer than chunk_size are ranked chunk by chunk (the best
 *             chunk_size / chunks of each), then those are re-ranked by similarity (the re-rank is
 *             never reversed, as published);
 *   chain     greedy: from a start prompt, each step appends the candidate c that maximises the
 *             similarity of "prompt, c" (its own text features, not the label's), kept while the
 *             similarity grows or fewer than min_flavors steps were taken; stops after
 *             max_flavors steps or when the prompt reaches 77 CLIP tokens; returns the best prompt
 *             seen;
 *   classic   "caption, medium artist, trending, movement, flavors" (top 1 each; 3 flavors, or
 *             max_flavors inside best);
 *   fast      the caption and the max_flavors best labels of the merged tables;
 *   negative  a chain of the least similar intermediate_count flavors and the negative table,
 *             by reversed similarity;
 *   best      the chain over the merged tables' intermediate_count best labels, started from
 *             the caption; the most similar of caption, classic, fast and chain.
 * Prompts are cut at a ", " boundary to fit 77 CLIP tokens. Text features come from an encoder
 * the caller provides (the CLIP text tower with its projection; a fake one in tests). */
#ifndef SD_ML_INTERROGATOR_H
#define SD_ML_INTERROGATOR_H

#include "core/context.h"
#include <stdbool.h>

typedef struct sd_text_encoder {
    int dim;
    /* Unit-length text features of texts[0..n) into out (n * dim floats). */
    sd_status (*encode)(void *user, const char *const *texts, int n, float *out);
    /* The number of CLIP tokens of text, without the start and end tokens. */
    sd_status (*count)(void *user, const char *text, int *tokens);
    void *user;
} sd_text_encoder;

/* The named tables, in the order of sd_label_table_names; user tables follow them. */
enum { SD_TABLE_ARTISTS, SD_TABLE_FLAVORS, SD_TABLE_MEDIUMS, SD_TABLE_MOVEMENTS, SD_TABLE_TRENDINGS,
       SD_TABLE_NEGATIVE, SD_TABLE_NAMED };
extern const char *const sd_label_table_names[SD_TABLE_NAMED];

typedef struct sd_label_table {
    char name[64];
    char **labels;
    int n;
    float *embeds; /* n * dim unit-length text features */
} sd_label_table;

void sd_label_table_clear(sd_label_table *t);
/* Appends the non-empty stripped lines of text (len bytes) as labels, each with prefix. */
sd_status sd_label_table_add_lines(sd_context *ctx, sd_label_table *t, const char *text, size_t len,
                                   const char *prefix);
/* clip-interrogator's trendings: 18 sites, each plain, "trending on", "featured on" and
 * "... contest winner". */
sd_status sd_label_table_trendings(sd_context *ctx, sd_label_table *t);

typedef enum sd_interrogate_mode {
    SD_INTERROGATE_BEST, SD_INTERROGATE_CLASSIC, SD_INTERROGATE_FAST, SD_INTERROGATE_NEGATIVE
} sd_interrogate_mode;
extern const char *const sd_interrogate_mode_names[]; /* "best", "classic", "fast", "negative", NULL */

typedef struct sd_interrogate_params {
    int chunk_size;         /* 2048 */
    int intermediate_count; /* 2048: flavor_intermediate_count */
    int min_flavors;        /* 8 */
    int max_flavors;        /* 32 */
} sd_interrogate_params;

/* The prompt for image (dim unit-length floats) in mode; tables[0..n_tables) hold the named
 * tables in order (each with embeds) and then user tables, which join the merged table. The
 * caption is unused in negative mode. *prompt is malloc'd. */
sd_status sd_interrogate(sd_context *ctx, const sd_text_encoder *enc, const sd_label_table *tables, int n_tables,
                         const float *image, const char *caption, sd_interrogate_mode mode,
                         const sd_interrogate_params *p, char **prompt);

/* The `top` best labels of one table (ranked as above) into idx (top entries), their cosine
 * similarities into score; returns how many there are (at most n). */
int sd_label_table_top(const sd_label_table *t, int dim, const float *image, int top, int chunk_size, int *idx,
                       float *score);

#endif
