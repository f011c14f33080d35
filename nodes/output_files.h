/* Files written by the saving nodes (SaveImage, PreviewImage, SaveLatent): ComfyUI's names
 * <dir>/<prefix>_<counter>_.<ext>, each written atomically and never over an existing file, and
 * the provenance texts they carry (docs/provenance.md). */
#ifndef SD_NODES_OUTPUT_FILES_H
#define SD_NODES_OUTPUT_FILES_H

#include "core/node.h"
#include "core/png.h"

/* What a saving node writes and where. */
typedef struct sd_save_request {
    const char *dir;             /* output (SaveImage, SaveLatent) or temp (PreviewImage) directory */
    const char *prefix;          /* filename_prefix; may name subfolders ("portraits/cat") */
    const char *node_id;         /* recorded under SD_PNG_KEY_NODE */
    const char *workflow_xml;    /* SD_PNG_KEY_WORKFLOW; NULL: not written */
    const char *provenance_json; /* SD_PNG_KEY_PROVENANCE; NULL: not written */
    int compression;             /* PNG zlib level (images only) */
    const sd_png_text *interop;  /* ComfyUI's "prompt" and "workflow", A1111's "parameters" */
    size_t n_interop;            /* (images only; sd_run_interop_texts) */
} sd_save_request;

/* Fills req for node run r writing to directory `dir` with `prefix`: the run's resolved
 * workflow XML and provenance JSON, which every saved file carries. Fails (the message naming
 * the node already set) when they cannot be made. */
sd_status sd_node_save_request(sd_node_run *r, sd_dir_kind dir, const char *prefix, int compression,
                               sd_save_request *req);

/* The engine text recorded under SD_PNG_KEY_ENGINE: "sdflow <version>". */
void sd_output_engine_text(char *buf, size_t size);

/* The numbering state of one prefix. */
typedef struct sd_output_names {
    char *dir;        /* the directory joined with the prefix's subfolders */
    char *base;       /* the prefix's last component */
    unsigned counter; /* the next counter to try */
} sd_output_names;

/* Splits prefix into subfolders and base name, creates the directory and finds the counter:
 * one more than the highest N among files named <base>_<N>_... there (ComfyUI's numbering).
 * A prefix that breaks the rules of sd_output_prefix_check (core/files.h), or whose subfolders
 * lead out of dir through a symlink, is SD_ERR_INVALID; SD_ERR_IO when the directory cannot be
 * made or listed. Clear *names afterwards either way. */
sd_status sd_output_names_open(sd_context *ctx, const char *dir, const char *prefix, sd_output_names *names);
void sd_output_names_clear(sd_output_names *names);

/* Writes data as <dir>/<base>_<counter>_.<ext> (counter five digits wide) through a temporary
 * file linked into place, so the file is complete or absent; a name another writer took in the
 * meantime is skipped (the counter moves on). *path (malloc'd) is the file written. */
sd_status sd_output_write(sd_context *ctx, sd_output_names *names, const char *ext, const void *data, size_t len,
                          char **path);

#endif
