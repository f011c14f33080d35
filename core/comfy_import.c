/* Importing ComfyUI API-format workflows ("Save (API Format)"):
 *
 *   {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
 *    "3": {"class_type": "KSampler", "inputs": {"seed": 7, "model": ["4", 0], ...},
 *          "_meta": {"title": "KSampler"}}}
 *
 * Node ids are kept; links [node, slot] become links to the source node's output named by its
 * descriptor; widget values become literal text. ComfyUI's bookkeeping ("_meta") is dropped.
 * Input names and values are not checked here: sd_graph_validate() does that. */
#include "core/graph.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest workflow file accepted, checked before parsing. */
#define COMFY_MAX_BYTES (16 << 20)

/* Reads at most COMFY_MAX_BYTES of a file; SD_ERR_LIMIT when it is longer. */
static sd_status read_bounded(sd_context *ctx, const char *path, char **out, size_t *out_len)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_set_error(ctx, errno == ENOENT ? SD_ERR_NOT_FOUND : SD_ERR_IO, "%s: %s", path,
                            strerror(errno));
    sd_status st = SD_OK;
    size_t len = 0, cap = 0;
    char *buf = NULL;
    while (!feof(f)) {
        if (len == cap) {
            if (cap > COMFY_MAX_BYTES) {
                st = sd_set_error(ctx, SD_ERR_LIMIT,
                                  "%s: file is larger than the %d MiB limit for workflows", path,
                                  COMFY_MAX_BYTES >> 20);
                goto done;
            }
            cap = cap ? cap * 2 : 64 * 1024;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                goto done;
            }
            buf = nb;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (ferror(f)) {
            st = sd_set_error(ctx, SD_ERR_IO, "%s: read error", path);
            goto done;
        }
    }
    if (len > COMFY_MAX_BYTES)
        st = sd_set_error(ctx, SD_ERR_LIMIT, "%s: file is larger than the %d MiB limit for workflows",
                          path, COMFY_MAX_BYTES >> 20);
done:
    fclose(f);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    *out_len = len;
    return SD_OK;
}

/* Node ids sorted numerically when both are numbers ("2" < "10"), else as strings. */
static int cmp_ids(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    char *ex, *ey;
    errno = 0;
    unsigned long long nx = strtoull(x, &ex, 10), ny = strtoull(y, &ey, 10);
    if (!errno && *x && *y && !*ex && !*ey && nx != ny)
        return nx < ny ? -1 : 1;
    return strcmp(x, y);
}

/* Shortest text that reads back as exactly the same double. */
static void format_real(double v, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* The literal text of a widget value, or false when the value is not a scalar. */
static bool widget_text(const json_t *v, char *buf, size_t size, const char **text)
{
    switch (json_typeof(v)) {
    case JSON_STRING: *text = json_string_value(v); return true;
    case JSON_INTEGER: snprintf(buf, size, "%lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: format_real(json_real_value(v), buf, size); break;
    case JSON_TRUE: snprintf(buf, size, "true"); break;
    case JSON_FALSE: snprintf(buf, size, "false"); break;
    default: return false;
    }
    *text = buf;
    return true;
}

/* A link is [source id (string or integer), output slot (integer)]. */
static bool is_link(const json_t *v)
{
    return json_is_array(v) && json_array_size(v) == 2 &&
           (json_is_string(json_array_get(v, 0)) || json_is_integer(json_array_get(v, 0))) &&
           json_is_integer(json_array_get(v, 1));
}

typedef struct importer {
    sd_context *ctx;
    const char *path;
    json_t *root;
    sd_graph *g;
} importer;

static sd_status import_input(importer *im, sd_graph_node *n, const char *name, const json_t *v)
{
    char buf[64];
    const char *text;
    if (is_link(v)) {
        const json_t *src = json_array_get(v, 0);
        char src_id[32];
        if (json_is_integer(src))
            snprintf(src_id, sizeof src_id, "%lld", (long long)json_integer_value(src));
        const char *sid = json_is_string(src) ? json_string_value(src) : src_id;
        json_int_t slot = json_integer_value(json_array_get(v, 1));
        const json_t *sn = json_object_get(im->root, sid);
        const sd_node_desc *sd = sn ? sd_node_type_find(
                                          json_string_value(json_object_get(sn, "class_type")))
                                    : NULL;
        if (!sd)
            return sd_set_error(im->ctx, SD_ERR_INVALID, "%s: node '%s' input '%s': link from missing node '%s'",
                                im->path, n->id, name, sid);
        if (slot < 0 || (size_t)slot >= sd->n_outputs)
            return sd_set_error(im->ctx, SD_ERR_INVALID,
                                "%s: node '%s' input '%s': node '%s' (%s) has no output slot %lld",
                                im->path, n->id, name, sid, sd->name, (long long)slot);
        return sd_graph_bind_link(im->g, n, name, sid, sd->outputs[slot].name, 0);
    }
    if (!widget_text(v, buf, sizeof buf, &text))
        return sd_set_error(im->ctx, SD_ERR_INVALID,
                            "%s: node '%s' input '%s': value is neither a link [node, slot] nor a "
                            "number, string or boolean",
                            im->path, n->id, name);
    return sd_graph_bind_literal(im->g, n, name, text, 0);
}

static sd_status import_node(importer *im, const char *id)
{
    const json_t *node = json_object_get(im->root, id);
    const char *type = json_string_value(json_object_get(node, "class_type"));
    const json_t *inputs = json_object_get(node, "inputs");
    sd_graph_node *n;
    sd_status st = sd_graph_add_node_raw(im->g, type, id, sd_node_type_find(type)->version, 0, &n);
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)inputs, name, v)
    {
        if (st)
            break;
        st = import_input(im, n, name, v);
    }
    return st;
}

/* Checks the shape of every node and that each type is implemented; lists every unsupported
 * node in one message. */
static sd_status check_nodes(importer *im, const char **ids, size_t n)
{
    char unsupported[768] = "";
    size_t used = 0, count = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *node = json_object_get(im->root, ids[i]);
        const char *type = json_string_value(json_object_get(node, "class_type"));
        const json_t *inputs = json_object_get(node, "inputs");
        if (!json_is_object(node) || !type)
            return sd_set_error(im->ctx, SD_ERR_PARSE,
                                "%s: node '%s' is not a ComfyUI API node (no \"class_type\")",
                                im->path, ids[i]);
        if (inputs && !json_is_object(inputs))
            return sd_set_error(im->ctx, SD_ERR_PARSE, "%s: node '%s': \"inputs\" is not an object",
                                im->path, ids[i]);
        if (sd_node_type_find(type))
            continue;
        if (used < sizeof unsupported)
            used += (size_t)snprintf(unsupported + used, sizeof unsupported - used, "%s'%s' (node '%s')",
                                     count ? ", " : "", type, ids[i]);
        count++;
    }
    if (count)
        return sd_set_error(im->ctx, SD_ERR_INVALID, "%s: unsupported node type%s: %s", im->path,
                            count == 1 ? "" : "s", unsupported);
    return SD_OK;
}

/* Imports the workflow in buf[0..len); source names it in messages. */
static sd_status import_buffer(sd_context *ctx, const char *buf, size_t len, const char *source,
                               sd_graph **out)
{
    *out = NULL;
    importer im = {.ctx = ctx, .path = source};
    const char **ids = NULL;
    size_t n = 0;
    sd_status st = SD_OK;
    json_error_t err;
    im.root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    if (!im.root)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s:%d:%d: JSON error: %s", source, err.line,
                            err.column, err.text);
    if (!json_is_object(im.root)) {
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: not a ComfyUI API workflow (expected a JSON object)",
                          source);
        goto done;
    }
    if (json_is_array(json_object_get(im.root, "nodes")) && json_object_get(im.root, "links")) {
        st = sd_set_error(ctx, SD_ERR_PARSE,
                          "%s: this is a ComfyUI UI workflow; export it with \"Save (API Format)\"",
                          source);
        goto done;
    }
    n = json_object_size(im.root);
    ids = malloc((n + 1) * sizeof *ids);
    if (!ids) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t k = 0;
    const char *key;
    json_t *value;
    json_object_foreach(im.root, key, value) ids[k++] = key;
    qsort(ids, n, sizeof *ids, cmp_ids);
    if ((st = check_nodes(&im, ids, n)))
        goto done;
    if ((st = sd_graph_new(ctx, &im.g)))
        goto done;
    free(im.g->source);
    if (!(im.g->source = sd_strdup(source))) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; !st && i < n; i++)
        st = import_node(&im, ids[i]);
done:
    free(ids);
    json_decref(im.root);
    if (st) {
        sd_graph_free(im.g);
        return st;
    }
    *out = im.g;
    return SD_OK;
}

sd_status sd_graph_import_comfy(sd_context *ctx, const char *json_path, sd_graph **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    sd_status st = read_bounded(ctx, json_path, &buf, &len);
    if (st)
        return st;
    st = import_buffer(ctx, buf, len, json_path, out);
    free(buf);
    return st;
}

sd_status sd_graph_import_comfy_memory(sd_context *ctx, const char *json, size_t len,
                                       const char *source_name, sd_graph **out)
{
    *out = NULL;
    if (len > COMFY_MAX_BYTES)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: larger than the %d MiB limit for workflows",
                            source_name, COMFY_MAX_BYTES >> 20);
    return import_buffer(ctx, json, len, source_name, out);
}
