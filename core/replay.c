/* Provenance and replay (public API in include/sdflow/sdflow.h).
 *
 * A PNG written by SaveImage carries the workflow XML, the id of the node that wrote it, its
 * batch index and the content hashes of the files the run read (core/png.h keywords). Replay
 * checks those files, re-runs the workflow for that node with the output and temp directories
 * redirected to a fresh directory <temp>/replay-XXXXXX, and compares the new image with the old pixel by pixel. */
#include "core/fileio.h"
#include "core/hash.h"
#include "core/png.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sd_status sd_png_extract_workflow(sd_context *ctx, const char *png_path, char **xml_out)
{
    *xml_out = NULL;
    sd_status st = sd_png_read_text(ctx, png_path, NULL, SD_PNG_KEY_WORKFLOW, xml_out);
    if (st == SD_ERR_NOT_FOUND)
        sd_set_error(ctx, st, "%s: no sdflow workflow in this PNG", png_path);
    return st;
}

void sd_replay_report_clear(sd_replay_report *report)
{
    if (!report)
        return;
    free(report->new_image);
    memset(report, 0, sizeof *report);
}

/* A text chunk that a PNG with a workflow must also carry. */
static sd_status required_text(sd_context *ctx, const char *png_path, const char *key, char **out)
{
    sd_status st = sd_png_read_text(ctx, png_path, NULL, key, out);
    if (st == SD_ERR_NOT_FOUND)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: has a workflow but no '%s' text chunk", png_path, key);
    return st;
}

/* Every file recorded in the provenance must exist with its recorded hash. */
static sd_status check_inputs(sd_context *ctx, const char *png_path, const char *provenance)
{
    json_error_t jerr;
    json_t *root = json_loads(provenance, JSON_REJECT_DUPLICATES, &jerr);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    sd_status st = SD_OK;
    if (!json_is_object(files)) {
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: malformed '%s' text chunk", png_path,
                          SD_PNG_KEY_PROVENANCE);
        goto done;
    }
    const char *path;
    json_t *hash;
    json_object_foreach(files, path, hash) {
        const char *hex = json_string_value(hash);
        sd_key want, got;
        if (hex && strncmp(hex, "blake2b:", 8) == 0)
            hex += 8;
        if (!hex || !sd_key_from_hex(hex, &want)) {
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: malformed hash for input file %s", png_path, path);
            goto done;
        }
        if (access(path, F_OK) != 0) {
            st = sd_set_error(ctx, SD_ERR_NOT_FOUND, "input file %s (blake2b %s) is missing: %s", path,
                              hex, strerror(errno));
            goto done;
        }
        if ((st = sd_hash_file(ctx, path, &got)))
            goto done;
        if (memcmp(want.b, got.b, sizeof want.b) != 0) {
            char now[65];
            sd_key_hex(&got, now);
            st = sd_set_error(ctx, SD_ERR_INVALID,
                              "input file %s has changed: recorded blake2b %s, now %s", path, hex, now);
            goto done;
        }
    }
done:
    json_decref(root);
    return st;
}

/* The file among the run's outputs that node `node` wrote for batch index `batch`. */
static sd_status find_output(sd_context *ctx, const sd_result *res, const char *node,
                             const char *batch, char **path_out)
{
    *path_out = NULL;
    for (size_t i = 0; i < sd_result_file_count(res) && !*path_out; i++) {
        const char *f = sd_result_file(res, i);
        char *n = NULL, *b = NULL;
        if (sd_png_read_text(ctx, f, NULL, SD_PNG_KEY_NODE, &n) == SD_OK &&
            sd_png_read_text(ctx, f, NULL, SD_PNG_KEY_BATCH, &b) == SD_OK && strcmp(n, node) == 0 &&
            strcmp(b, batch) == 0 && !(*path_out = sd_strdup(f))) {
            free(n);
            free(b);
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        }
        free(n);
        free(b);
    }
    if (!*path_out)
        return sd_set_error(ctx, SD_ERR_INVALID, "the replayed workflow wrote no image for node '%s' batch %s",
                            node, batch);
    return SD_OK;
}

/* Compares two images; max_diff in 8-bit levels (255 when the sizes differ). */
static sd_status compare(sd_context *ctx, const char *a_path, const char *b_path, double *max_diff,
                         bool *same_size)
{
    sd_image a, b = {0};
    sd_status st = sd_png_read(ctx, a_path, NULL, &a);
    if (!st)
        st = sd_png_read(ctx, b_path, NULL, &b);
    if (st)
        goto done;
    *same_size = a.width == b.width && a.height == b.height && a.channels == b.channels;
    *max_diff = *same_size ? 0.0 : 255.0;
    size_t n = *same_size ? (size_t)a.width * a.height * (size_t)a.channels : 0;
    for (size_t i = 0; i < n; i++) {
        /* Rounded to 1/1000 level so 8-bit samples compare as whole levels. */
        double d = round(fabs((double)a.data[i] - (double)b.data[i]) * 255000.0) / 1000.0;
        if (d > *max_diff)
            *max_diff = d;
    }
done:
    sd_image_clear(&a);
    sd_image_clear(&b);
    return st;
}

/* A fresh directory <temp dir>/replay-XXXXXX (malloc'd). */
static sd_status make_replay_dir(sd_context *ctx, char **out)
{
    const char *base = sd_context_dir(ctx, SD_DIR_TEMP);
    sd_status st = sd_make_dirs(ctx, base);
    if (st)
        return st;
    if (!(*out = sd_strfmt("%s/replay-XXXXXX", base)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    if (!mkdtemp(*out)) {
        st = sd_set_error(ctx, SD_ERR_IO, "cannot create a directory in %s: %s", base, strerror(errno));
        free(*out);
        *out = NULL;
    }
    return st;
}

sd_status sd_replay(sd_context *ctx, const char *png_path, sd_replay_report *report)
{
    if (report)
        memset(report, 0, sizeof *report);
    char *xml = NULL, *node = NULL, *batch = NULL, *prov = NULL, *dir = NULL, *saved_out = NULL;
    char *saved_temp = NULL;
    char *new_image = NULL;
    sd_graph *graph = NULL;
    sd_result *res = NULL;
    sd_status st;
    if ((st = sd_png_extract_workflow(ctx, png_path, &xml)) ||
        (st = required_text(ctx, png_path, SD_PNG_KEY_NODE, &node)) ||
        (st = required_text(ctx, png_path, SD_PNG_KEY_BATCH, &batch)) ||
        (st = required_text(ctx, png_path, SD_PNG_KEY_PROVENANCE, &prov)) ||
        (st = check_inputs(ctx, png_path, prov)) ||
        (st = sd_graph_load_xml_memory(ctx, xml, strlen(xml), png_path, &graph)) ||
        (st = make_replay_dir(ctx, &dir)))
        goto done;
    /* Output and temp directories (SaveImage, PreviewImage) both point at the fresh one. */
    if (!(saved_out = sd_strdup(sd_context_dir(ctx, SD_DIR_OUTPUT))) ||
        !(saved_temp = sd_strdup(sd_context_dir(ctx, SD_DIR_TEMP)))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = sd_context_set_dir(ctx, SD_DIR_OUTPUT, dir)) ||
        (st = sd_context_set_dir(ctx, SD_DIR_TEMP, dir))) {
        sd_context_set_dir(ctx, SD_DIR_OUTPUT, saved_out);
        goto done;
    }
    const char *const wanted[1] = {node};
    sd_run_options opts = {.outputs = wanted, .n_outputs = 1};
    st = sd_graph_run(graph, &opts, &res);
    sd_status restore_out = sd_context_set_dir(ctx, SD_DIR_OUTPUT, saved_out);
    sd_status restore_temp = sd_context_set_dir(ctx, SD_DIR_TEMP, saved_temp);
    if (!st)
        st = restore_out ? restore_out : restore_temp;
    if (st || (st = find_output(ctx, res, node, batch, &new_image)))
        goto done;
    double max_diff = 0.0;
    bool same_size = false;
    if ((st = compare(ctx, png_path, new_image, &max_diff, &same_size)))
        goto done;
    if (report) {
        report->identical = max_diff == 0.0;
        report->max_abs_diff = max_diff;
        report->new_image = new_image;
        new_image = NULL;
    }
    if (!same_size)
        st = sd_set_error(ctx, SD_ERR_MISMATCH, "%s: the replayed image has a different size", png_path);
    else if (max_diff != 0.0)
        st = sd_set_error(ctx, SD_ERR_MISMATCH, "%s: the replayed image differs by up to %g of 255 levels",
                          png_path, max_diff);
done:
    if (res)
        sd_result_free(res);
    if (graph)
        sd_graph_free(graph);
    free(new_image);
    free(saved_out);
    free(saved_temp);
    free(dir);
    free(xml);
    free(node);
    free(batch);
    free(prov);
    return st;
}
