/* Internal state of one sd_graph_run, shared by the scheduler (core/schedule.c), the node-run
 * API (core/node_run.c), provenance (core/provenance.c) and results (core/result.c). */
#ifndef SD_CORE_RUN_H
#define SD_CORE_RUN_H

#include "core/files.h"
#include "core/graph.h"
#include "core/hash.h"
#include "core/node.h"

#define SD_NO_SOURCE ((size_t)-1)

/* One input of a planned node, in descriptor order. */
typedef struct sd_plan_input {
    const sd_input_desc *desc;
    size_t src;       /* plan index of the linked node, SD_NO_SOURCE when not linked */
    int src_output;   /* output index on that node */
    const char *text; /* effective literal text (owned by the graph), NULL when linked or unset */
    char *file;       /* resolved path of a set SD_IN_FILE input (malloc'd) */
    sd_file_id file_id; /* the identity of the content hashed into the key */
} sd_plan_input;

/* A look-up declared by the node's files hook (sd_files_find) and what it found. */
typedef struct sd_plan_lookup {
    const char *kind; /* static, from the node */
    char **names;     /* the candidates asked for, in order (malloc'd) */
    size_t n_names;
    char *path;       /* the file found (malloc'd), NULL for none */
    sd_file_id id;    /* its identity when hashed */
} sd_plan_lookup;

/* A graph node in the plan (plan order is topological). */
typedef struct sd_plan_node {
    sd_graph_node *gn;
    const sd_node_desc *desc;
    sd_plan_input *inputs; /* desc->n_inputs */
    sd_plan_lookup *lookups; /* declared by desc->files */
    size_t n_lookups;
    sd_key key;
    bool relevant;  /* an ancestor of (or) a wanted node: keyed */
    bool wanted;    /* its outputs go into the result */
    bool needed;    /* will run or load from the cache */
    bool runs;      /* needed and not loaded from the cache */
    bool cached;    /* loaded from the cache */
    bool ran;       /* its run function was called (it may have failed) */
    int holds;      /* consumers still to run, plus one when wanted */
    int index;      /* 1-based position among needed nodes (progress) */
    double seconds;
    sd_value **outputs; /* desc->n_outputs, while held */
} sd_plan_node;

typedef struct sd_run_state {
    sd_graph *graph;
    sd_context *ctx;
    sd_result *result;
    sd_plan_node *nodes; /* topological order */
    size_t n_nodes;
    int n_needed;
    double t0;       /* run start (monotonic seconds) */
    sd_cache *cache; /* the run's cache and file-hash memo, NULL when caching is off */
    json_t *files;   /* provenance: recorded name (sd_run_record_file) -> content hash hex */
    char *workflow_xml;
    char *provenance_json;
    struct sd_interop_texts *interop; /* ComfyUI and A1111 PNG texts (core/comfy_export.c) */
    size_t live, peak_live; /* nodes whose outputs are held */
} sd_run_state;

struct sd_node_run {
    sd_run_state *state;
    sd_plan_node *node;
    sd_value **in_values; /* per descriptor input: borrowed (linked) or owned (literal) */
    bool *in_owned;
    bool error_set;       /* sd_run_error named the node already */
};

/* Plans a run (core/plan.c): topological order, wanted nodes (options->outputs, else every
 * output node), keys, then backwards which nodes load from `cache` (NULL: none) and which run,
 * and how many consumers hold each node's outputs. Errors name the node. */
sd_status sd_plan_make(sd_run_state *s, const sd_run_options *options, sd_cache *cache);
/* Whether a node's outputs are looked up in and stored into the cache. */
bool sd_plan_storable(const sd_plan_node *p);
/* Frees what planning allocated for p (resolved files, look-ups). */
void sd_plan_node_clear(sd_plan_node *p);

/* The read guard (core/context.h) while a node runs (core/node_run.c); run is its sd_node_run.
 * path must be one of the node's file inputs or a file its look-ups found (else SD_ERR_INVALID),
 * still with the identity it had when its content was hashed (else SD_ERR_IO). */
sd_status sd_run_read_guard(void *run, const char *path, const struct sd_file_id *id);

/* Records a file the run read, with its content hash, for the provenance: under
 * "<kind>/<name>" for a name looked up in the model directories ("checkpoints/a.safetensors", its
 * path below a model directory) or the input directory ("input/cat.png"), an absolute name as
 * it is. Replay resolves these names again in its own directories. */
sd_status sd_run_record_file(sd_run_state *s, const char *dir_kind, const char *name, const sd_key *hash);

/* A check between planning and running: sees the planned run (s->files: every file it reads,
 * resolved and hashed) and may stop it, with its error set, before any node runs. */
typedef sd_status (*sd_plan_check_fn)(const sd_run_state *s, void *user);
/* sd_graph_run with check (NULL: none) called after planning. Replay verifies files with it. */
sd_status sd_graph_run_checked(sd_graph *graph, const sd_run_options *options, sd_plan_check_fn check,
                               void *user, sd_result **out);

/* Monotonic clock in seconds. */
double sd_run_clock(void);

/* Results (core/result.c). */
sd_status sd_result_create(sd_result **out);
sd_status sd_result_add_stat(sd_result *r, const char *node_id, const char *node_type,
                             sd_node_outcome outcome, double seconds);
/* Records a file written by node_id (both copied). */
sd_status sd_result_add_file_path(sd_result *r, const char *node_id, const char *path);
/* The files recorded from index `from` on (NULL when none), *n of them; valid until the next
 * file is recorded. */
const char *const *sd_result_files_from(const sd_result *r, size_t from, size_t *n);
/* Keeps a wanted node's outputs: takes one reference of each value. */
sd_status sd_result_keep(sd_result *r, const char *node_id, const sd_node_desc *desc, sd_value **values);
/* The most nodes whose outputs were held at once during the run (freeing is observable). */
void sd_result_set_peak(sd_result *r, size_t peak_live);
size_t sd_result_peak_live(const sd_result *r);
/* A wanted node's output value (borrowed; lives as long as the result), or NULL (tests read
 * tensors through it). */
const sd_value *sd_result_value(const sd_result *r, const char *node_id, const char *output);

#endif
