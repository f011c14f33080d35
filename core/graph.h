/* Internal view of sd_graph: nodes with their input bindings, parameters and metadata.
 * The graph stores inputs as written (text, links, parameter names) with their source line;
 * sd_graph_validate() checks them against the descriptors. */
#ifndef SD_CORE_GRAPH_H
#define SD_CORE_GRAPH_H

#include "sdflow/node.h"
#include "core/context.h"

typedef enum sd_binding_kind {
    SD_BIND_LITERAL, /* text */
    SD_BIND_LINK,    /* src_node, src_output */
    SD_BIND_PARAM    /* param */
} sd_binding_kind;

typedef struct sd_graph_input {
    char *name;
    sd_binding_kind kind;
    char *text;       /* LITERAL */
    char *src_node;   /* LINK */
    char *src_output; /* LINK */
    char *param;      /* PARAM */
    int line;         /* source line, 0 when built through the API */
} sd_graph_input;

typedef struct sd_graph_node {
    char *id;
    char *type;
    int version;               /* version the file was written with (0: current) */
    const sd_node_desc *desc;  /* NULL when the type is unknown (a validation error) */
    sd_graph_input *inputs;
    size_t n_inputs, cap_inputs;
    int line;
} sd_graph_node;

typedef struct sd_graph_param {
    char *name;
    char *type;
    char *def;
    char *doc;
    char *value; /* override (--set), NULL when unset */
    int line;
} sd_graph_param;

#define SD_GRAPH_META_KEYS 4 /* title, description, author, version */

struct sd_graph {
    sd_context *ctx;
    char *source;          /* file name for diagnostics ("<memory>", "<lua>", a path) */
    sd_graph_node *nodes;
    size_t n_nodes, cap_nodes;
    sd_graph_param *params;
    size_t n_params, cap_params;
    char *meta[SD_GRAPH_META_KEYS];
    unsigned next_auto_id;
};

extern const char *const sd_graph_meta_keys[SD_GRAPH_META_KEYS];

sd_graph_node *sd_graph_find_node(const sd_graph *graph, const char *id);
sd_graph_input *sd_graph_node_input(const sd_graph_node *node, const char *name);
sd_graph_param *sd_graph_find_param(const sd_graph *graph, const char *name);

/* Raw setters used by the XML reader: no descriptor checks, the line is recorded.
 * Replace any existing binding of the same input. */
sd_status sd_graph_add_node_raw(sd_graph *graph, const char *type, const char *id, int version,
                                int line, sd_graph_node **out);
sd_status sd_graph_bind_literal(sd_graph *graph, sd_graph_node *node, const char *input,
                                const char *text, int line);
sd_status sd_graph_bind_link(sd_graph *graph, sd_graph_node *node, const char *input,
                             const char *src_node, const char *src_output, int line);
sd_status sd_graph_bind_param_raw(sd_graph *graph, sd_graph_node *node, const char *input,
                                  const char *param, int line);
sd_status sd_graph_add_param_raw(sd_graph *graph, const char *name, const char *type,
                                 const char *def, const char *doc, int line);

/* The effective literal text of an input: the parameter's override or default for a PARAM
 * binding, the text for a LITERAL, the descriptor default when unbound; NULL otherwise. */
const char *sd_graph_input_text(const sd_graph *graph, const sd_graph_node *node,
                                const sd_input_desc *in);

/* Checks one literal text against an input descriptor (type, range, choices). On failure
 * writes a message (without location) into msg and returns false. */
bool sd_literal_check(const sd_input_desc *in, const char *text, char *msg, size_t msg_size);

/* Literal parsing shared by validation and the scheduler (strict: whole string, finite). */
bool sd_parse_int(const char *s, int64_t *v);
bool sd_parse_float(const char *s, double *v);
bool sd_parse_bool(const char *s, bool *v); /* true/false (any case), 1/0 */
/* An INT input's literal: sd_parse_int, and for inputs whose maximum lies beyond INT64_MAX
 * (seeds, 0 ... 2^64 - 1) also unsigned values, carried as the int64 of the same bits. */
bool sd_input_parse_int(const sd_input_desc *in, const char *s, int64_t *v);

/* Whether an output of type `from` may be linked to an input of type `to`. */
bool sd_link_types_compatible(sd_type from, sd_type to);
/* The pseudo input descriptor used to check a parameter's values; false when the parameter's
 * type is not a literal type (INT, FLOAT, STRING, BOOLEAN). */
bool sd_param_as_input(const sd_graph_param *p, sd_input_desc *in);

/* Deep copy (for replay and provenance). */
sd_status sd_graph_clone(const sd_graph *graph, sd_graph **out);

#endif
