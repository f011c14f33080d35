/* sdflow public API: contexts, graphs, running, results, cache maintenance, replay.
 *
 * Conventions: fallible functions return an sd_status (SD_OK == 0). The human-readable
 * message of the last failure lives on the context (sd_context_errmsg), names the file, node,
 * input or tensor involved, and is one line. Validation collects every problem it finds as
 * diagnostics (sd_context_diag_*). Objects are opaque; whoever creates one frees it. */
#ifndef SDFLOW_SDFLOW_H
#define SDFLOW_SDFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_status {
    SD_OK = 0,
    SD_ERR_USAGE,       /* wrong API use or command line */
    SD_ERR_PARSE,       /* a file is malformed (XML, JSON, safetensors, PNG) */
    SD_ERR_INVALID,     /* well-formed but invalid: graph, value, tensor, shape */
    SD_ERR_NOT_FOUND,   /* a named file, node, input, model or tensor does not exist */
    SD_ERR_LIMIT,       /* a size, depth, pixel or device limit was exceeded */
    SD_ERR_NOMEM,       /* out of host or device memory */
    SD_ERR_IO,          /* reading or writing a file failed */
    SD_ERR_CL,          /* the OpenCL device reported an error, or no (matching) device exists */
    SD_ERR_CACHE,       /* cache database error (never fails a run; maintenance commands only) */
    SD_ERR_INTERRUPTED, /* SIGINT/SIGTERM or sd_context_interrupt() */
    SD_ERR_MISMATCH     /* replay produced a different image */
} sd_status;

/* Short name of a status ("invalid input", ...). */
const char *sd_status_name(sd_status status);
/* The documented CLI exit code for a status: 0 ok, 1 replay mismatch, 2 usage, 3 invalid input,
 * 4 resource limit, 5 I/O error, 130 interrupted. */
int sd_status_exit_code(sd_status status);

/* The engine version string, e.g. "0.1.0". */
const char *sd_version(void);

/* ---- Context: settings, errors, diagnostics, shared caches (device, models, SQLite). ---- */

typedef struct sd_context sd_context;

/* Creates a context with defaults taken from the environment: SDFLOW_MODELS (':'-separated
 * model directories; default "models"), SDFLOW_INPUT, SDFLOW_OUTPUT, SDFLOW_CACHE, SDFLOW_DEVICE.
 * Returns SD_ERR_NOMEM when no memory is left (and *out stays NULL). */
sd_status sd_context_new(sd_context **out);
void sd_context_free(sd_context *ctx);

/* Message of the last failure on this context ("" when none). Valid until the next call. */
const char *sd_context_errmsg(const sd_context *ctx);
/* Diagnostics of the last validation, each one line: "file:line: node 'id' input 'x': message". */
size_t sd_context_diag_count(const sd_context *ctx);
const char *sd_context_diag(const sd_context *ctx, size_t index);

typedef enum sd_dir_kind {
    SD_DIR_INPUT,  /* where image names (LoadImage) are looked up; default "input" */
    SD_DIR_OUTPUT, /* where SaveImage writes; default "output" */
    SD_DIR_TEMP    /* where PreviewImage writes; default $TMPDIR/sdflow */
} sd_dir_kind;

/* Model directories are searched in the order added; each is laid out like ComfyUI's
 * models/ folder (checkpoints/, vae/, loras/, embeddings/, controlnet/, upscale_models/).
 * sd_context_clear_models_dirs() drops the ones taken from the environment (or the default). */
sd_status sd_context_add_models_dir(sd_context *ctx, const char *path);
void sd_context_clear_models_dirs(sd_context *ctx);
/* The model directories in search order; index past the end gives NULL. */
size_t sd_context_models_dir_count(const sd_context *ctx);
const char *sd_context_models_dir(const sd_context *ctx, size_t index);
sd_status sd_context_set_dir(sd_context *ctx, sd_dir_kind kind, const char *path);
const char *sd_context_dir(const sd_context *ctx, sd_dir_kind kind);
/* Whether file inputs of a workflow may name absolute paths (default false: a name is looked up
 * in the model or input directories only; the CLI's --allow-absolute-paths). */
void sd_context_set_allow_absolute_paths(sd_context *ctx, bool allow);

/* Cache database path; NULL disables caching. Default: $SDFLOW_CACHE, else
 * $XDG_CACHE_HOME/sdflow/cache.db, else ~/.cache/sdflow/cache.db. Opened lazily. */
sd_status sd_context_set_cache_path(sd_context *ctx, const char *path);
const char *sd_context_cache_path(const sd_context *ctx);

/* OpenCL device selector: an index ("1") or a name substring ("pthread", "NVIDIA");
 * NULL picks the first GPU, else the first CPU device. */
sd_status sd_context_set_device(sd_context *ctx, const char *selector);
const char *sd_context_device(const sd_context *ctx);

/* Arithmetic of matrix products and convolutions (docs/precision.md): "fp32" (the default,
 * reproducible) or "bf16" (operands rounded to bfloat16, fp32 accumulation, through oneDNN on
 * CPU devices: the CPU's AMX or AVX512-BF16 units). Part of every node's cache key and of the
 * provenance, so an image replays in the precision that made it. SD_ERR_USAGE for other names;
 * a device or build without bf16 support fails the first op with SD_ERR_USAGE. */
sd_status sd_context_set_precision(sd_context *ctx, const char *name);
const char *sd_context_precision(const sd_context *ctx);

/* Warnings (e.g. "cache database was corrupt, rebuilt") go to this callback; default stderr. */
typedef void (*sd_log_fn)(const char *line, void *user);
void sd_context_set_log(sd_context *ctx, sd_log_fn fn, void *user);

typedef enum sd_progress_kind {
    SD_PROGRESS_PLAN,       /* plan made: node_count nodes will run or load from cache */
    SD_PROGRESS_NODE_START, /* a node starts running */
    SD_PROGRESS_NODE_CACHED,/* a node's outputs came from the cache */
    SD_PROGRESS_NODE_DONE,  /* a node finished; seconds is its run time */
    SD_PROGRESS_STEP        /* step/steps inside a node (sampler steps, tiles) */
} sd_progress_kind;

typedef struct sd_progress {
    sd_progress_kind kind;
    const char *node_id;
    const char *node_type;
    int node_index; /* 1-based position in the plan */
    int node_count;
    int step, steps;
    double seconds; /* NODE_DONE: the node's run time; otherwise time since the run started */
    /* STEP events of samplers while previews are on (sd_context_set_previews): the denoised
     * latent of the first batch item as RGB, 3 bytes a pixel, one pixel per latent cell (ComfyUI's
     * latent-to-RGB preview with the family's factors); NULL otherwise. Valid during the call. */
    const uint8_t *preview_rgb;
    int preview_width, preview_height;
    /* NODE_DONE: the paths of the files the node wrote (output nodes), n_files of them. */
    const char *const *files;
    size_t n_files;
} sd_progress;

typedef void (*sd_progress_fn)(const sd_progress *event, void *user);
void sd_context_set_progress(sd_context *ctx, sd_progress_fn fn, void *user);
/* Asks samplers for a preview image with each step's progress event (off by default: it costs
 * a pass over the latent per step). */
void sd_context_set_previews(sd_context *ctx, bool on);

/* Asks a running graph to stop at the next node or step boundary. Async-signal-safe. */
void sd_context_interrupt(sd_context *ctx);
/* Clears a previous interrupt request (done automatically when a run starts). */
void sd_context_clear_interrupt(sd_context *ctx);

/* ---- Graphs. ---- */

typedef struct sd_graph sd_graph;

/* An empty graph bound to ctx (the context must outlive it). */
sd_status sd_graph_new(sd_context *ctx, sd_graph **out);
void sd_graph_free(sd_graph *graph);
sd_context *sd_graph_context(const sd_graph *graph);

/* Parses a workflow file (hardened: no DTD, no entities, no network, size and depth limits) and
 * validates it against the schema. Semantic validation is sd_graph_validate(). */
sd_status sd_graph_load_xml(sd_context *ctx, const char *path, sd_graph **out);
sd_status sd_graph_load_xml_memory(sd_context *ctx, const char *xml, size_t len,
                                   const char *source_name, sd_graph **out);
/* Writes the graph as XML (atomically: temp file + rename). resolve_params: write each
 * parameter's current value as its default (what PNG provenance stores). */
sd_status sd_graph_save_xml(sd_graph *graph, const char *path, bool resolve_params);
/* The same XML in a malloc'd NUL-terminated string owned by the caller. */
sd_status sd_graph_to_xml(sd_graph *graph, bool resolve_params, char **out);
/* Converts a ComfyUI API-format workflow (JSON file) into a graph. */
sd_status sd_graph_import_comfy(sd_context *ctx, const char *json_path, sd_graph **out);
/* The same from JSON text in memory (at most 16 MiB, SD_ERR_LIMIT beyond); source_name stands
 * for the file in messages and diagnostics. */
sd_status sd_graph_import_comfy_memory(sd_context *ctx, const char *json, size_t len,
                                       const char *source_name, sd_graph **out);

/* Writes the graph as a ComfyUI workflow in a malloc'd JSON string: the API format ("Save (API
 * Format)"; node ids kept) or, with ui, the UI format ("Save"; numeric ids, nodes laid out by
 * topological depth). Parameters are written as their values. SD_ERR_INVALID naming the node
 * when ComfyUI lacks a node type (sdflow's own Sdflow* nodes) or a link is dangling. */
sd_status sd_graph_export_comfy(sd_graph *graph, bool ui, char **out);

/* Building. Node ids are unique strings; id NULL picks the next free number. *out_id (optional)
 * points into the graph and stays valid while the node exists. */
sd_status sd_graph_add_node(sd_graph *graph, const char *type, const char *id, const char **out_id);
/* Sets a literal input from its text form ("7", "0.5", "true", "euler", "a cat"). Checks the
 * node, the input name and the value against the node type's descriptor. */
sd_status sd_graph_set_input(sd_graph *graph, const char *node_id, const char *input, const char *text);
/* Links src's output (by name, e.g. "MODEL", "LATENT") to dst's input. */
sd_status sd_graph_connect(sd_graph *graph, const char *src_id, const char *src_output,
                           const char *dst_id, const char *dst_input);
/* Removes a literal, link or parameter binding from an input (it falls back to its default). */
sd_status sd_graph_clear_input(sd_graph *graph, const char *node_id, const char *input);

/* Metadata: "title", "description", "author", "version". */
sd_status sd_graph_set_meta(sd_graph *graph, const char *key, const char *value);
const char *sd_graph_meta(const sd_graph *graph, const char *key);

/* Reusable-workflow parameters: declared with a type name (INT, FLOAT, STRING, BOOLEAN or an
 * enumeration's input), a default and a doc line; bound to node inputs; overridden by
 * sd_graph_set_param (the CLI's --set name=value). sd_graph_set_param also takes "NODE.INPUT"
 * for a name that is no parameter: it sets that node's input as sd_graph_set_input does. */
sd_status sd_graph_add_param(sd_graph *graph, const char *name, const char *type,
                             const char *default_text, const char *doc);
sd_status sd_graph_bind_param(sd_graph *graph, const char *name, const char *node_id, const char *input);
sd_status sd_graph_set_param(sd_graph *graph, const char *name, const char *text);

typedef struct sd_param_info {
    const char *name, *type, *default_text, *doc;
    const char *value; /* current override, NULL if none */
} sd_param_info;
size_t sd_graph_param_count(const sd_graph *graph);
sd_status sd_graph_param_at(const sd_graph *graph, size_t index, sd_param_info *info);
/* Advances every seed as its node's control_after_generate input says (fixed: unchanged;
 * increment, decrement: by one, wrapping; randomize: from *random_state, a splitmix64 state the
 * caller seeds), as ComfyUI does after each run: literal seeds are replaced, a parameter bound
 * to a seed gets a new value once. Seeds that come from a link are left alone. */
sd_status sd_graph_advance_seeds(sd_graph *graph, uint64_t *random_state);
/* Replaces every binding of a declared parameter by a literal of its current value (override,
 * else default) and removes the declarations: the graph is then fully concrete. */
sd_status sd_graph_inline_params(sd_graph *graph);

size_t sd_graph_node_count(const sd_graph *graph);
const char *sd_graph_node_id(const sd_graph *graph, size_t index);
const char *sd_graph_node_type(const sd_graph *graph, size_t index);

/* Checks the whole graph (types, links, values, ranges, choices, cycles, files) and records
 * every problem as a diagnostic; returns SD_ERR_INVALID if there was any. */
sd_status sd_graph_validate(sd_graph *graph);

/* ---- Running. ---- */

typedef struct sd_result sd_result;

typedef struct sd_run_options {
    const char *const *outputs; /* node ids whose outputs are wanted; NULL: every output node */
    size_t n_outputs;
    bool no_cache;              /* neither read nor write the cache */
} sd_run_options;

/* Validates, plans backwards from the wanted outputs, then runs what is needed in topological
 * order, reusing cached outputs. On failure *out (if non-NULL) still holds the statistics. */
sd_status sd_graph_run(sd_graph *graph, const sd_run_options *options, sd_result **out);
void sd_result_free(sd_result *result);

typedef enum sd_node_outcome { SD_NODE_SKIPPED, SD_NODE_RAN, SD_NODE_CACHED } sd_node_outcome;
typedef struct sd_node_stat {
    const char *node_id, *node_type;
    sd_node_outcome outcome;
    double seconds;
} sd_node_stat;
size_t sd_result_node_count(const sd_result *result);
sd_status sd_result_node(const sd_result *result, size_t index, sd_node_stat *stat);
/* Files written by output nodes, in order. */
size_t sd_result_file_count(const sd_result *result);
const char *sd_result_file(const sd_result *result, size_t index);
/* Id of the node that wrote file `index` (NULL past the end). */
const char *sd_result_file_node(const sd_result *result, size_t index);

/* A wanted node's output, described for front ends. Tensor outputs report their shape;
 * IMAGE shape is [batch, height, width, channels]. Strings point into the result. */
typedef struct sd_output_info {
    const char *type; /* socket type name: "INT", "IMAGE", "LATENT", ... */
    int64_t i;
    double f;
    bool b;
    const char *s;
    int ndim;
    int64_t shape[5];
} sd_output_info;
sd_status sd_result_output(const sd_result *result, const char *node_id, const char *output,
                           sd_output_info *info);

/* ---- Cache maintenance (the database named by sd_context_cache_path). ---- */

typedef struct sd_cache_stats {
    int64_t entries;
    int64_t bytes;      /* payload bytes */
    int64_t file_bytes; /* database file size */
    int64_t file_hashes;/* memoized file hashes */
    int64_t budget;     /* payload bytes kept after each store (SDFLOW_CACHE_MAX_SIZE, default 8 GiB);
                           0: no limit, nothing is evicted */
} sd_cache_stats;
sd_status sd_cache_stats_get(sd_context *ctx, sd_cache_stats *stats);
sd_status sd_cache_clear(sd_context *ctx);
/* Checks every entry's checksum, deletes bad ones, reports how many were bad. A database that
 * fails SQLite's integrity check is moved aside and rebuilt (all its entries count as bad). */
sd_status sd_cache_verify(sd_context *ctx, int64_t *bad_entries);
/* Evicts least recently used entries until the payload is at most max_bytes, and forgets the
 * memoized hashes of files that are gone or changed. */
sd_status sd_cache_gc(sd_context *ctx, int64_t max_bytes, int64_t *evicted);
/* Parses a byte size: a number with an optional K, M, G or T suffix (powers of 1024) and an
 * optional B ("500M", "8G", "1.5GB", "4096"). SD_ERR_USAGE when the text is not a size. */
sd_status sd_parse_size(const char *text, int64_t *out);

/* ---- Provenance and replay. ---- */

/* The workflow XML embedded in a PNG written by SaveImage (malloc'd). SD_ERR_NOT_FOUND when
 * the PNG carries none. */
sd_status sd_png_extract_workflow(sd_context *ctx, const char *png_path, char **xml_out);

typedef struct sd_replay_options {
    bool use_cache; /* trust cached node outputs (and memoized file hashes); default: re-render */
} sd_replay_options;
typedef struct sd_replay_report {
    bool identical;
    double max_abs_diff; /* in 8-bit levels */
    char *new_image;     /* when different: the re-rendered image (malloc'd), kept in its private
                            directory <temp dir>/replay-XXXXXX; otherwise NULL */
} sd_replay_report;
/* Re-runs the workflow embedded in png_path (options may be NULL: re-render everything) and
 * compares the result with it. Files are resolved by name in the context's directories, as a run
 * does, and must have the hashes the PNG records for them (SD_ERR_INVALID naming the file before
 * any node runs); no path recorded in the PNG is opened. The re-run writes into a fresh private
 * directory that is removed unless the images differ. Returns SD_OK when pixel-identical,
 * SD_ERR_MISMATCH otherwise; report may be NULL. */
sd_status sd_replay(sd_context *ctx, const char *png_path, const sd_replay_options *options,
                    sd_replay_report *report);
void sd_replay_report_clear(sd_replay_report *report);

#ifdef __cplusplus
}
#endif
#endif
