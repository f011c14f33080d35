/* Provenance and replay (public API in include/sdflow/sdflow.h).
 *
 * A PNG written by SaveImage carries the workflow XML, the id of the node that wrote it, its
 * batch index and the content hashes of the files the run read, recorded by name (core/png.h
 * keywords, docs/provenance.md). Replay re-runs the workflow for that node, without the cache
 * unless asked, with the output and temp directories redirected to a fresh private directory
 * <temp>/replay-XXXXXX. Between planning and running it checks that every file the re-run reads
 * (resolved by name in this context's directories, as any run does) has the hash recorded for
 * it; no path recorded in the PNG is ever opened. Then it compares the new image with the old
 * pixel by pixel and removes the directory, unless the images differ. */
#include "core/fileio.h"
#include "core/files.h"
#include "core/hash.h"
#include "core/png.h"
#include "core/run.h"
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The texts replay needs, read in one pass. */
enum { T_WORKFLOW, T_NODE, T_BATCH, T_PROVENANCE, T_COUNT };

static sd_status read_texts(sd_context *ctx, const char *png_path, char *texts[T_COUNT])
{
    static const char *const keys[T_COUNT] = {SD_PNG_KEY_WORKFLOW, SD_PNG_KEY_NODE, SD_PNG_KEY_BATCH,
                                              SD_PNG_KEY_PROVENANCE};
    sd_status st = sd_png_read_texts(ctx, png_path, NULL, keys, T_COUNT, texts);
    if (st)
        return st;
    if (!texts[T_WORKFLOW])
        return sd_set_error(ctx, SD_ERR_NOT_FOUND, "%s: no sdflow workflow in this PNG", png_path);
    for (int i = 1; i < T_COUNT; i++)
        if (!texts[i])
            return sd_set_error(ctx, SD_ERR_INVALID, "%s: has a workflow but no '%s' text chunk", png_path,
                                keys[i]);
    return SD_OK;
}

/* A recorded hash as a key ("blake2b:" prefix allowed); false when malformed. */
static bool recorded_key(const json_t *value, sd_key *out)
{
    const char *hex = json_string_value(value);
    if (hex && strncmp(hex, "blake2b:", 8) == 0)
        hex += 8;
    return hex && sd_key_from_hex(hex, out);
}

/* Parses the provenance's "files" object (name -> hash; every hash must be well formed) and its
 * "precision" ("fp32" when absent, as PNGs made before precisions existed are). */
static sd_status parse_recorded(sd_context *ctx, const char *png_path, const char *provenance, json_t **files_out,
                                const char **precision)
{
    *files_out = NULL;
    *precision = "fp32";
    json_error_t jerr;
    json_t *root = json_loads(provenance, JSON_REJECT_DUPLICATES, &jerr);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    sd_status st = SD_OK;
    if (!json_is_object(files)) {
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: malformed '%s' text chunk", png_path, SD_PNG_KEY_PROVENANCE);
        goto done;
    }
    const char *name;
    json_t *hash;
    sd_key k;
    json_object_foreach(files, name, hash) {
        if (!recorded_key(hash, &k)) {
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: malformed hash for input file %s", png_path, name);
            goto done;
        }
    }
    json_t *prec = json_object_get(root, "precision");
    if (prec && (!json_is_string(prec) || (strcmp(json_string_value(prec), "fp32") &&
                                            strcmp(json_string_value(prec), "bf16")))) {
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: malformed precision in '%s'", png_path, SD_PNG_KEY_PROVENANCE);
        goto done;
    }
    if (prec)
        *precision = strcmp(json_string_value(prec), "bf16") ? "fp32" : "bf16";
    *files_out = json_incref(files);
done:
    json_decref(root);
    return st;
}

/* Whether path ends in "/<tail>". */
static bool ends_in_component(const char *path, const char *tail)
{
    size_t lp = strlen(path), lt = strlen(tail);
    return lp > lt && path[lp - lt - 1] == '/' && strcmp(path + lp - lt, tail) == 0;
}

/* The hash recorded for the file the re-run records as `name` with hash `now`: under the same
 * name, or, in a PNG written before files were recorded by name (absolute paths), under a path
 * ending in /<kind>/<name> (/<name> for input files), one with hash `now` if there are several.
 * The recorded path is only compared, never opened. false when there is none. */
static bool find_recorded(const json_t *recorded, const char *name, const sd_key *now, sd_key *out)
{
    json_t *value = json_object_get(recorded, name);
    if (value)
        return recorded_key(value, out);
    if (name[0] == '/')
        return false;
    const char *tail = strncmp(name, "input/", 6) == 0 ? name + 6 : name;
    bool found = false;
    const char *key;
    json_object_foreach((json_t *)recorded, key, value) {
        sd_key k;
        if (key[0] == '/' && ends_in_component(key, tail) && recorded_key(value, &k) &&
            (!found || memcmp(k.b, now->b, sizeof k.b) == 0)) {
            *out = k;
            found = true;
        }
    }
    return found;
}

typedef struct replay_check {
    const char *png_path;
    const json_t *recorded; /* the PNG's "files": name -> hash */
} replay_check;

/* Where the re-run found the file it records as `name` (malloc'd), for messages; NULL when
 * unknown. */
static char *found_path(sd_context *ctx, const char *name)
{
    const char *slash = strchr(name, '/');
    if (name[0] == '/' || !slash)
        return sd_strdup(name);
    char *kind = strndup(name, (size_t)(slash - name)), *path = NULL;
    if (kind && sd_resolve_file(ctx, kind, slash + 1, &path) != SD_OK)
        path = NULL;
    free(kind);
    return path;
}

/* The plan check (core/run.h): every file the re-run reads must have its recorded hash. A file
 * the PNG does not record is named in a warning (the pixels still decide). */
static sd_status check_files(const sd_run_state *s, void *user)
{
    const replay_check *c = user;
    const char *name;
    json_t *value;
    json_object_foreach(s->files, name, value) {
        sd_key now, want;
        bool hashed = sd_key_from_hex(json_string_value(value), &now);
        assert(hashed); /* the run wrote it */
        (void)hashed;
        if (!find_recorded(c->recorded, name, &now, &want)) {
            sd_warn(s->ctx, "%s: the file %s is not in its provenance, so it is not verified", c->png_path, name);
            continue;
        }
        if (memcmp(want.b, now.b, sizeof now.b) != 0) {
            char was[65], is[65], *path = found_path(s->ctx, name);
            sd_key_hex(&want, was);
            sd_key_hex(&now, is);
            sd_status st = sd_set_error(s->ctx, SD_ERR_INVALID,
                                        "file %s (%s) has changed: recorded blake2b %s, now %s", name,
                                        path ? path : "?", was, is);
            free(path);
            return st;
        }
    }
    return SD_OK;
}

/* The file among the run's outputs that node `node` wrote for batch index `batch`. */
static sd_status find_output(sd_context *ctx, const sd_result *res, const char *node,
                             const char *batch, char **path_out)
{
    static const char *const keys[2] = {SD_PNG_KEY_NODE, SD_PNG_KEY_BATCH};
    *path_out = NULL;
    for (size_t i = 0; i < sd_result_file_count(res) && !*path_out; i++) {
        const char *f = sd_result_file(res, i);
        char *t[2];
        if (sd_png_read_texts(ctx, f, NULL, keys, 2, t) == SD_OK && t[0] && t[1] && strcmp(t[0], node) == 0 &&
            strcmp(t[1], batch) == 0 && !(*path_out = sd_strdup(f))) {
            free(t[0]);
            free(t[1]);
            return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        }
        free(t[0]);
        free(t[1]);
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

/* A fresh private directory <temp dir>/replay-XXXXXX (mode 0700; malloc'd). */
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

/* Runs the graph with the output and temp directories (SaveImage, PreviewImage) pointing at
 * dir and the replay's plan check, then points them back. */
static sd_status run_redirected(sd_context *ctx, sd_graph *graph, const char *dir, const sd_run_options *opts,
                                replay_check *check, sd_result **res)
{
    char *saved_out = sd_strdup(sd_context_dir(ctx, SD_DIR_OUTPUT));
    char *saved_temp = sd_strdup(sd_context_dir(ctx, SD_DIR_TEMP));
    sd_status st = SD_OK;
    if (!saved_out || !saved_temp)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    else if (!(st = sd_context_set_dir(ctx, SD_DIR_OUTPUT, dir)) &&
             !(st = sd_context_set_dir(ctx, SD_DIR_TEMP, dir)))
        st = sd_graph_run_checked(graph, opts, check_files, check, res);
    if (saved_out && saved_temp) {
        sd_status restore_out = sd_context_set_dir(ctx, SD_DIR_OUTPUT, saved_out);
        sd_status restore_temp = sd_context_set_dir(ctx, SD_DIR_TEMP, saved_temp);
        if (!st)
            st = restore_out ? restore_out : restore_temp;
    }
    free(saved_out);
    free(saved_temp);
    return st;
}

sd_status sd_replay(sd_context *ctx, const char *png_path, const sd_replay_options *options,
                    sd_replay_report *report)
{
    if (report)
        memset(report, 0, sizeof *report);
    char *texts[T_COUNT] = {0}, *dir = NULL, *new_image = NULL;
    json_t *recorded = NULL;
    sd_graph *graph = NULL;
    sd_result *res = NULL;
    bool keep_dir = false;
    const char *precision = "fp32", *saved_precision = sd_context_precision(ctx);
    sd_status st;
    if ((st = read_texts(ctx, png_path, texts)) ||
        (st = parse_recorded(ctx, png_path, texts[T_PROVENANCE], &recorded, &precision)) ||
        (st = sd_graph_load_xml_memory(ctx, texts[T_WORKFLOW], strlen(texts[T_WORKFLOW]), png_path, &graph)) ||
        (st = make_replay_dir(ctx, &dir)))
        goto done;
    const char *const wanted[1] = {texts[T_NODE]};
    sd_run_options opts = {.outputs = wanted, .n_outputs = 1, .no_cache = !(options && options->use_cache)};
    replay_check check = {png_path, recorded};
    /* The image replays in the precision that made it. */
    if ((st = sd_context_set_precision(ctx, precision)))
        goto done;
    st = run_redirected(ctx, graph, dir, &opts, &check, &res);
    sd_context_set_precision(ctx, saved_precision);
    if (st ||
        (st = find_output(ctx, res, texts[T_NODE], texts[T_BATCH], &new_image)))
        goto done;
    double max_diff = 0.0;
    bool same_size = false;
    if ((st = compare(ctx, png_path, new_image, &max_diff, &same_size)))
        goto done;
    /* A different image is kept (with its private directory) for a look; nothing else is. */
    keep_dir = max_diff != 0.0;
    if (report) {
        report->identical = !keep_dir;
        report->max_abs_diff = max_diff;
        if (keep_dir) {
            report->new_image = new_image;
            new_image = NULL;
        }
    }
    if (!same_size)
        st = sd_set_error(ctx, SD_ERR_MISMATCH, "%s: the replayed image has a different size", png_path);
    else if (max_diff != 0.0)
        st = sd_set_error(ctx, SD_ERR_MISMATCH, "%s: the replayed image differs by up to %g of 255 levels",
                          png_path, max_diff);
done:
    if (dir && !keep_dir && !sd_remove_tree(dir))
        sd_warn(ctx, "cannot remove %s: %s", dir, strerror(errno));
    if (res)
        sd_result_free(res);
    if (graph)
        sd_graph_free(graph);
    json_decref(recorded);
    free(new_image);
    free(dir);
    for (int i = 0; i < T_COUNT; i++)
        free(texts[i]);
    return st;
}
