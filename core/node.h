/* The API a node's run function uses (nodes/ include this; the scheduler implements it).
 *
 *   static sd_status run(sd_node_run *r) {
 *       int64_t w = sd_run_int(r, "width");
 *       sd_value *latent = sd_value_new(SD_TYPE_LATENT);
 *       ... fill it ...
 *       sd_run_set_output(r, 0, latent);          // takes the reference
 *       return SD_OK;
 *   }
 *
 * Input accessors take the input's name as declared in the descriptor; asking for an input the
 * descriptor does not declare, or with the wrong accessor type, is a programming error (assert).
 * Literal inputs come with parameters and defaults already applied and validated. */
#ifndef SD_CORE_NODE_H
#define SD_CORE_NODE_H

#include "sdflow/node.h"
#include "core/value.h"

/* The context (device, directories, warnings) and this node's id and descriptor. */
sd_context *sd_run_context(sd_node_run *run);
const char *sd_run_node_id(sd_node_run *run);
const sd_node_desc *sd_run_desc(sd_node_run *run);

/* True when an optional input is linked or set. */
bool sd_run_has(sd_node_run *run, const char *input);
int64_t sd_run_int(sd_node_run *run, const char *input);
double sd_run_float(sd_node_run *run, const char *input);
bool sd_run_bool(sd_node_run *run, const char *input);
const char *sd_run_string(sd_node_run *run, const char *input); /* STRING and ENUM */
/* The value on an input (linked or literal); borrowed: valid during the run. NULL only for an
 * unset optional input. */
sd_value *sd_run_value(sd_node_run *run, const char *input);
/* True when the input comes through a link (its value is known only when the node runs). */
bool sd_run_linked(sd_node_run *run, const char *input);
/* Absolute path of an SD_IN_FILE input, resolved in the context's directories. */
const char *sd_run_file(sd_node_run *run, const char *input);

/* Sets output `index` (descriptor order); takes ownership of one reference. */
void sd_run_set_output(sd_node_run *run, size_t index, sd_value *value);

/* Records a failure: the message becomes "node 'id' (Type): <message>" on the context.
 * Returns status for `return sd_run_error(r, SD_ERR_INVALID, "...")`. */
sd_status sd_run_error(sd_node_run *run, sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a failure whose message a library call already set on the context: that
 * message becomes the node's. Returns status. */
sd_status sd_run_fail(sd_node_run *run, sd_status status);
/* Logs a warning naming the node. */
void sd_run_warn(sd_node_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports progress inside a node; returns SD_ERR_INTERRUPTED (with the error set) when an
 * interrupt was requested, so long loops do: if ((st = sd_run_progress(r, i, n))) return st; */
sd_status sd_run_progress(sd_node_run *run, int step, int steps);
/* Whether the front end asked for step previews (sd_context_set_previews). */
bool sd_run_wants_preview(sd_node_run *run);
/* sd_run_progress with a preview image: rgb holds width * height * 3 bytes (borrowed). */
sd_status sd_run_progress_preview(sd_node_run *run, int step, int steps, const uint8_t *rgb, int width,
                                  int height);
bool sd_run_interrupted(sd_node_run *run);

/* Output nodes: record a written file (shown in results and summaries). */
sd_status sd_run_add_file(sd_node_run *run, const char *path);
/* Provenance for output nodes: the workflow XML with parameters resolved, and a JSON object
 * {"engine": version, "files": {path: blake2b-hex, ...}} of the files this run read.
 * Both are owned by the run. */
const char *sd_run_workflow_xml(sd_node_run *run);
const char *sd_run_provenance_json(sd_node_run *run);

/* ---- The files a node reads (descriptor's files hook, called while the run is planned). ----
 *
 * A node reads a file only through a reader that opens it with sd_file_open (core/files.h):
 * safetensors, PNG and latent files. While the node runs, that open is refused unless the file
 * is one of its SD_IN_FILE inputs or was found by a look-up the hook declared, so every file a
 * node reads is in its cache key and in the provenance of what it makes. */

/* The context; and the literal text of an input, or NULL when it is linked or unset. */
sd_context *sd_files_context(sd_node_files *files);
const char *sd_files_literal(sd_node_files *files, const char *input);
/* Declares a look-up in the directories of `kind` (as sd_resolve_file searches them) for the
 * first of names[0..n) that exists. Which file was found, and its content hash, or that none
 * was, become part of the node's key; the file found joins the provenance. A name with a ".."
 * component finds nothing, nor does an absolute one unless the context allows absolute paths. Errors: reading the file found (SD_ERR_IO),
 * SD_ERR_NOMEM. */
sd_status sd_files_find(sd_node_files *files, const char *kind, const char *const *names, size_t n);

/* At run time: the absolute path that the look-up declared with the same kind and names found
 * (owned by the run), or NULL when it found none. SD_ERR_INVALID when the node's hook did not
 * declare that look-up (a bug in the node). */
sd_status sd_run_found_file(sd_node_run *run, const char *kind, const char *const *names, size_t n,
                            const char **path);

/* ---- Upgrading old node versions (descriptor's upgrade hook). ---- */
/* Renames an input of the node being upgraded (keeps its literal, link or parameter). */
sd_status sd_upgrade_rename_input(sd_node_upgrade *up, const char *old_name, const char *new_name);
/* The literal text of an input, or NULL; and replacing it. */
const char *sd_upgrade_literal(sd_node_upgrade *up, const char *input);
sd_status sd_upgrade_set_literal(sd_node_upgrade *up, const char *input, const char *text);

/* ---- Checks before running (descriptor's check hook; core/check.c). ----
 * After a graph is valid, sd_graph_validate visits its nodes in topological order and calls
 * each one's check hook. A tag is a short text a node attaches to an output, such as the model
 * family of a MODEL or the latent format of a LATENT; its meaning is the nodes' convention
 * (nodes/family_check.h), core only carries it along links. */
sd_context *sd_check_context(sd_node_check *check);
/* The effective literal text of an input (parameter, literal or default), or NULL when linked
 * or unset. */
const char *sd_check_literal(sd_node_check *check, const char *input);
/* The literal value of an INT / FLOAT input, parsed; false when linked or unset. */
bool sd_check_int(sd_node_check *check, const char *input, int64_t *out);
bool sd_check_float(sd_node_check *check, const char *input, double *out);
/* Resolves an SD_IN_FILE input's literal in the model or input directories (sd_resolve_file).
 * NULL when the input is linked or unset, or the file is missing (reported already by
 * validation: not reported again). The path is owned by the check. */
const char *sd_check_file(sd_node_check *check, const char *input);
/* The tag on the output linked to `input`, or NULL (unlinked, or nothing known upstream). */
const char *sd_check_tag(sd_node_check *check, const char *input);
/* Tags output `index` (descriptor order); the text is copied. */
void sd_check_set_tag(sd_node_check *check, size_t index, const char *tag);
/* Reports a problem on this node (input may be NULL), as validation's other diagnostics (a value
 * set through a parameter: "parameter 'NAME': " first). */
void sd_check_problem(sd_node_check *check, const char *input, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
