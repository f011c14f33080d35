/* Importing ComfyUI workflows: API format ("Save (API Format)", a PNG's "prompt" chunk)
 *
 *   {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
 *    "3": {"class_type": "KSampler", "inputs": {"seed": 7, "model": ["4", 0], ...},
 *          "_meta": {"title": "KSampler"}}}
 *
 * and UI format ("Save", a PNG's "workflow" chunk), converted to the API format first
 * (core/comfy_ui.c). Node ids are kept; links [node, slot] become links to the source node's
 * output named by its descriptor; widget values become literal text. As in ComfyUI, only what
 * an output node needs is kept (the rest is dropped with a warning). Titles and groups go to
 * the description; the sampler's settings, the prompts, the size and the checkpoint become
 * parameters where the graph has one of each. Input names and values are not checked here:
 * sd_graph_validate() does that. */
#include "core/comfy.h"
#include "core/png.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Integers beyond the signed 64-bit range, up to 2^64 - 1, become strings: jansson refuses
 * them, and ComfyUI's seeds reach 2^64 - 1. A digit outside a string always belongs to a
 * number in JSON. */
static char *quote_big_integers(const char *text, size_t len, size_t *out_len)
{
    size_t n_big = 0, cap;
    char *out = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t o = 0;
        bool in_string = false;
        for (size_t i = 0; i < len;) {
            char ch = text[i];
            if (in_string || !(ch >= '0' && ch <= '9')) {
                if (in_string && ch == '\\' && i + 1 < len) {
                    if (out)
                        out[o] = ch;
                    o++, i++;
                    ch = text[i];
                } else if (ch == '"') {
                    in_string = !in_string;
                }
                if (out)
                    out[o] = ch;
                o++, i++;
                continue;
            }
            size_t j = i;
            while (j < len && text[j] >= '0' && text[j] <= '9')
                j++;
            bool negative = i > 0 && text[i - 1] == '-';
            bool real = j < len && (text[j] == '.' || text[j] == 'e' || text[j] == 'E');
            bool big = !negative && !real && text[i] != '0' &&
                       (j - i > 19 || (j - i == 19 && memcmp(text + i, "9223372036854775807", 19) > 0)) &&
                       (j - i < 20 || (j - i == 20 && memcmp(text + i, "18446744073709551615", 20) <= 0));
            if (out && big)
                out[o] = '"';
            o += big;
            if (out)
                memcpy(out + o, text + i, j - i);
            o += j - i;
            if (out && big)
                out[o] = '"';
            o += big;
            n_big += big && !out;
            i = j;
        }
        if (out) {
            *out_len = o;
            return out;
        }
        cap = len + 2 * n_big;
        if (!(out = malloc(cap + 1)))
            return NULL;
    }
    return NULL;
}

json_t *sd_comfy_parse_json(sd_context *ctx, const char *source, const char *text, size_t len)
{
    size_t n = 0;
    char *quoted = quote_big_integers(text, len, &n);
    if (!quoted) {
        sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    json_error_t err;
    json_t *root = json_loadb(quoted, n, JSON_REJECT_DUPLICATES, &err);
    free(quoted);
    if (!root)
        sd_set_error(ctx, SD_ERR_PARSE, "%s:%d:%d: JSON error: %s", source, err.line, err.column, err.text);
    return root;
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
    json_t *root; /* API format */
    sd_graph *g;
} importer;

static sd_status nomem(importer *im)
{
    return sd_set_error(im->ctx, SD_ERR_NOMEM, "out of memory");
}

/* The source node id of a link, in buf when it is an integer. */
static const char *link_source(const json_t *v, char *buf, size_t size)
{
    const json_t *src = json_array_get(v, 0);
    if (json_is_integer(src))
        snprintf(buf, size, "%lld", (long long)json_integer_value(src));
    return json_is_string(src) ? json_string_value(src) : buf;
}

static sd_status import_input(importer *im, sd_graph_node *n, const char *name, const json_t *v)
{
    char buf[64];
    const char *text;
    if (is_link(v)) {
        char src_id[32];
        const char *sid = link_source(v, src_id, sizeof src_id);
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

/* ComfyUI's image upload widget ("upload", "choose file to upload" in older files) is UI only:
 * dropped unless the node type declares it. */
static bool ui_only_key(const sd_node_desc *d, const char *name)
{
    return (!strcmp(name, "upload") || !strcmp(name, "choose file to upload")) && !sd_node_desc_input(d, name);
}

static sd_status import_node(importer *im, const char *id)
{
    const json_t *node = json_object_get(im->root, id);
    const char *type = json_string_value(json_object_get(node, "class_type"));
    const sd_node_desc *d = sd_node_type_find(type);
    const json_t *inputs = json_object_get(node, "inputs");
    sd_graph_node *n;
    sd_status st = sd_graph_add_node_raw(im->g, type, id, d->version, 0, &n);
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)inputs, name, v)
    {
        if (st)
            break;
        if (!ui_only_key(d, name))
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

static sd_status check_shapes(importer *im)
{
    const char *id;
    const json_t *node;
    json_object_foreach(im->root, id, node)
    {
        const json_t *inputs = json_object_get(node, "inputs");
        if (!json_is_object(node) || !json_is_string(json_object_get(node, "class_type")))
            return sd_set_error(im->ctx, SD_ERR_PARSE,
                                "%s: node '%s' is not a ComfyUI API node (no \"class_type\")", im->path, id);
        if (inputs && !json_is_object(inputs))
            return sd_set_error(im->ctx, SD_ERR_PARSE, "%s: node '%s': \"inputs\" is not an object",
                                im->path, id);
    }
    return SD_OK;
}

/* ---- Keeping what the outputs need. ---- */

/* Whether ComfyUI would run the node for its own sake: an output node, or (since its
 * type is unknown here) a node of an unknown type that nothing consumes. */
static bool is_root(const json_t *node, const json_t *consumed, const char *id)
{
    const sd_node_desc *d = sd_node_type_find(json_string_value(json_object_get(node, "class_type")));
    return d ? (d->flags & SD_NODE_OUTPUT) != 0 : !json_object_get(consumed, id);
}

/* Marks id and every node it depends on in needed, with a work list (no recursion). */
static sd_status mark_needed(importer *im, json_t *needed, const char *id)
{
    json_t *pending = json_pack("[s]", id);
    sd_status st = pending ? SD_OK : nomem(im);
    while (!st && json_array_size(pending)) {
        size_t last = json_array_size(pending) - 1;
        char *cur = sd_strdup(json_string_value(json_array_get(pending, last)));
        json_array_remove(pending, last);
        if (!cur) {
            st = nomem(im);
            break;
        }
        if (!json_object_get(needed, cur)) {
            const char *name;
            const json_t *v;
            if (json_object_set_new(needed, cur, json_true()))
                st = nomem(im);
            json_object_foreach(json_object_get(json_object_get(im->root, cur), "inputs"), name, v)
            {
                char buf[32];
                const char *src = is_link(v) ? link_source(v, buf, sizeof buf) : NULL;
                if (!st && src && json_object_get(im->root, src) && !json_object_get(needed, src) &&
                    json_array_append_new(pending, json_string(src)))
                    st = nomem(im);
            }
        }
        free(cur);
    }
    json_decref(pending);
    return st;
}

/* Removes the nodes no output node depends on, with one warning naming them; keeps everything
 * when the workflow has no output node (`sdflow run --output` can still pick one). */
static sd_status drop_unneeded(importer *im)
{
    json_t *consumed = json_object(), *needed = json_object();
    sd_status st = consumed && needed ? SD_OK : nomem(im);
    const char *id, *name;
    json_t *node;
    const json_t *v;
    json_object_foreach(im->root, id, node) json_object_foreach(json_object_get(node, "inputs"), name, v)
    {
        char buf[32];
        if (!st && is_link(v) && json_object_set_new(consumed, link_source(v, buf, sizeof buf), json_true()))
            st = nomem(im);
    }
    json_object_foreach(im->root, id, node) if (!st && is_root(node, consumed, id)) st = mark_needed(im, needed, id);
    if (!st && json_object_size(needed) && json_object_size(needed) < json_object_size(im->root)) {
        char list[512] = "";
        size_t used = 0, count = 0;
        void *tmp;
        json_object_foreach_safe(im->root, tmp, id, node)
        {
            if (json_object_get(needed, id))
                continue;
            if (used < sizeof list)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s'%s' (%s)", count ? ", " : "", id,
                                         json_string_value(json_object_get(node, "class_type")));
            count++;
            json_object_del(im->root, id);
        }
        sd_warn(im->ctx, "%s: ignoring %zu node%s that no output depends on: %s", im->path, count,
                count == 1 ? "" : "s", list);
    }
    json_decref(consumed);
    json_decref(needed);
    return st;
}

/* ---- Metadata and parameters. ---- */

/* Appends a title as a JSON string (quotes, backslashes and control characters escaped), so
 * that sd_comfy_described_meta reads it back exactly. */
static char *append_quoted(char *text, const char *prefix, const char *title)
{
    json_t *v = text ? json_string(title) : NULL;
    char *q = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    char *t = q ? sd_strfmt("%s%s%s", text, prefix, q) : NULL;
    json_decref(v);
    free(q);
    free(text);
    return t;
}

/* The UI format's titles and groups (meta: see sd_comfy_ui_to_api) in the description:
 * "Titles: 3 "Base", 7 "Refiner"" and "Group "Txt2Img": 3, 4, 5", one line each, titles
 * written as JSON strings. */
static sd_status set_description(importer *im, const json_t *meta)
{
    const json_t *titles = json_object_get(meta, "titles"), *groups = json_object_get(meta, "groups");
    if (!json_object_size(titles) && !json_array_size(groups))
        return SD_OK;
    const char *base = strrchr(im->path, '/');
    char *text = sd_strfmt("Imported from ComfyUI (%s).", base ? base + 1 : im->path);
    const char *id;
    const json_t *title, *g;
    size_t i, j, n_titles = 0;
    json_object_foreach((json_t *)titles, id, title)
    {
        if (!json_object_get(im->root, id))
            continue;
        char *prefix = sd_strfmt("%s %s ", n_titles++ ? "," : "\nTitles:", id);
        text = prefix ? append_quoted(text, prefix, json_string_value(title)) : (free(text), NULL);
        free(prefix);
    }
    json_array_foreach(groups, i, g)
    {
        const json_t *gid;
        text = append_quoted(text, "\nGroup ", json_string_value(json_object_get(g, "title")));
        char *t = text ? sd_strfmt("%s:", text) : NULL;
        free(text);
        text = t;
        size_t n_ids = 0;
        json_array_foreach(json_object_get(g, "nodes"), j, gid)
        {
            if (!json_object_get(im->root, json_string_value(gid)))
                continue;
            t = text ? sd_strfmt("%s%s %s", text, n_ids++ ? "," : "", json_string_value(gid)) : NULL;
            free(text);
            text = t;
        }
    }
    sd_status st = text ? sd_graph_set_meta(im->g, "description", text) : nomem(im);
    free(text);
    return st;
}

/* Reads the JSON string at *p (which starts with '"'), moving *p past it; NULL when malformed. */
static json_t *read_quoted(const char **p)
{
    const char *q = *p + 1;
    while (*q && *q != '"' && *q != '\n')
        q += *q == '\\' && q[1] ? 2 : 1;
    if (*q != '"')
        return NULL;
    json_t *v = json_loadb(*p, (size_t)(q + 1 - *p), JSON_DECODE_ANY, NULL);
    *p = q + 1;
    return json_is_string(v) ? v : (json_decref(v), NULL);
}

/* Reads a node id at *p (up to a space, comma or line end); NULL when empty. */
static json_t *read_id(const char **p)
{
    size_t n = strcspn(*p, " ,\n");
    json_t *v = n ? json_stringn(*p, n) : NULL;
    *p += n;
    return v;
}

/* "Titles: ID "T", ID "T"" (at p, after "Titles:") into titles; false when malformed. */
static bool read_titles(const char *p, json_t *titles)
{
    while (*p == ' ') {
        p++;
        json_t *id = read_id(&p), *title = NULL;
        bool ok = id && *p == ' ' && (p++, title = read_quoted(&p)) &&
                  !json_object_set(titles, json_string_value(id), title);
        json_decref(id);
        json_decref(title);
        if (!ok)
            return false;
        if (*p == ',')
            p++;
    }
    return *p == '\0' || *p == '\n';
}

/* "Group "T": ID, ID" (at p, at the quote) appended to groups; false when malformed. */
static bool read_group(const char *p, json_t *groups)
{
    json_t *title = read_quoted(&p), *ids = json_array();
    bool ok = title && ids && *p++ == ':';
    while (ok && *p == ' ') {
        p++;
        json_t *id = read_id(&p);
        ok = id && !json_array_append_new(ids, id);
        if (*p == ',')
            p++;
    }
    ok = ok && (*p == '\0' || *p == '\n') &&
         !json_array_append_new(groups, json_pack("{s:O, s:O}", "title", title, "nodes", ids));
    json_decref(title);
    json_decref(ids);
    return ok;
}

json_t *sd_comfy_described_meta(const char *description)
{
    json_t *meta = json_pack("{s:{}, s:[]}", "titles", "groups");
    for (const char *line = description; meta && line && *line;) {
        if (!strncmp(line, "Titles:", 7))
            read_titles(line + 7, json_object_get(meta, "titles"));
        else if (!strncmp(line, "Group \"", 7))
            read_group(line + 6, json_object_get(meta, "groups"));
        const char *end = strchr(line, '\n');
        line = end ? end + 1 : NULL;
    }
    return meta;
}

/* How many nodes of a type the graph has. */
static size_t count_type(const sd_graph *g, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n_nodes; i++)
        n += !strcmp(g->nodes[i].type, type);
    return n;
}

/* The only node of a type, or NULL when there are none or several. */
static sd_graph_node *only_node(sd_graph *g, const char *type)
{
    sd_graph_node *found = NULL;
    for (size_t i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].type, type)) {
            if (found)
                return NULL;
            found = &g->nodes[i];
        }
    return found;
}

/* Declares parameter name with the input's literal as default and binds it there; nothing when
 * the node is absent or the input is not a literal. */
static sd_status param_for(importer *im, const char *name, sd_graph_node *n, const char *input)
{
    sd_graph_input *in = n ? sd_graph_node_input(n, input) : NULL;
    const sd_input_desc *d = n ? sd_node_desc_input(n->desc, input) : NULL;
    if (!d || (in && in->kind != SD_BIND_LITERAL) || sd_graph_find_param(im->g, name))
        return SD_OK;
    const char *def = in ? in->text : d->def;
    char *doc = sd_strfmt("%s of node '%s' (%s)", input, n->id, n->type);
    sd_status st = doc ? sd_graph_add_param_raw(im->g, name, sd_type_name(d->type), def, doc, 0) : nomem(im);
    free(doc);
    return st ? st : sd_graph_bind_param_raw(im->g, n, input, name, 0);
}

/* The node a link input comes from, when it is of the given type. */
static sd_graph_node *source_of(sd_graph *g, sd_graph_node *n, const char *input, const char *type)
{
    sd_graph_input *in = n ? sd_graph_node_input(n, input) : NULL;
    sd_graph_node *src = in && in->kind == SD_BIND_LINK ? sd_graph_find_node(g, in->src_node) : NULL;
    return src && !strcmp(src->type, type) ? src : NULL;
}

/* The text encoder a conditioning input comes from, directly or through nodes that pass one
 * conditioning on (FluxGuidance, ControlNetApply, ConditioningSetTimestepRange, ...); NULL
 * when it comes from elsewhere or from several (ConditioningCombine). */
static sd_graph_node *text_source(sd_graph *g, sd_graph_node *n, const char *input)
{
    for (size_t hops = 0; n && hops <= g->n_nodes; hops++) {
        sd_graph_input *in = sd_graph_node_input(n, input);
        n = in && in->kind == SD_BIND_LINK ? sd_graph_find_node(g, in->src_node) : NULL;
        if (n && !strcmp(n->type, "CLIPTextEncode"))
            return n;
        input = "conditioning";
    }
    return NULL;
}

/* The latent node of width and height: the only EmptyLatentImage or EmptySD3LatentImage. */
static sd_graph_node *only_latent(sd_graph *g)
{
    size_t n = count_type(g, "EmptyLatentImage"), n3 = count_type(g, "EmptySD3LatentImage");
    return n + n3 != 1 ? NULL : n ? only_node(g, "EmptyLatentImage") : only_node(g, "EmptySD3LatentImage");
}

static const char *const sampler_pairs[][2] = {{"seed", "seed"},           {"seed", "noise_seed"},
                                               {"steps", "steps"},         {"cfg", "cfg"},
                                               {"sampler", "sampler_name"}, {"scheduler", "scheduler"},
                                               {"denoise", "denoise"}};

/* Binds the sampler_pairs inputs that node n has. */
static sd_status sampler_params(importer *im, sd_graph_node *n)
{
    sd_status st = SD_OK;
    for (size_t i = 0; !st && n && i < sizeof sampler_pairs / sizeof *sampler_pairs; i++)
        if (sd_node_desc_input(n->desc, sampler_pairs[i][1]))
            st = param_for(im, sampler_pairs[i][0], n, sampler_pairs[i][1]);
    return st;
}

/* seed, steps, cfg, sampler, scheduler, denoise, prompt and negative (the text encoders that
 * feed it) of the one sampler: a KSampler, KSamplerAdvanced or SamplerCustom, or a
 * SamplerCustomAdvanced with the settings of the one RandomNoise, KSamplerSelect,
 * BasicScheduler and its guider; width and height (one empty latent), checkpoint (one loader). */
static sd_status add_params(importer *im)
{
    sd_graph *g = im->g;
    static const char *const types[] = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"};
    sd_graph_node *s = NULL;
    size_t n_samplers = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        n_samplers += count_type(g, types[i]);
        s = s ? s : only_node(g, types[i]);
    }
    if (n_samplers != 1)
        s = NULL;
    sd_graph_node *pos = s, *neg = s;
    const char *pos_in = "positive";
    sd_status st = sampler_params(im, s);
    if (s && !strcmp(s->type, "SamplerCustomAdvanced")) {
        sd_graph_node *guider = source_of(g, s, "guider", "CFGGuider");
        sd_graph_node *basic = guider ? NULL : source_of(g, s, "guider", "BasicGuider");
        pos = guider ? guider : basic;
        neg = guider;
        pos_in = basic ? "conditioning" : "positive";
        sd_graph_node *parts[] = {source_of(g, s, "noise", "RandomNoise"), source_of(g, s, "sampler", "KSamplerSelect"),
                                  source_of(g, s, "sigmas", "BasicScheduler"), guider};
        for (size_t i = 0; !st && i < sizeof parts / sizeof *parts; i++)
            st = sampler_params(im, parts[i]);
    }
    if (!st && pos)
        st = param_for(im, "prompt", text_source(g, pos, pos_in), "text");
    if (!st && neg)
        st = param_for(im, "negative", text_source(g, neg, "negative"), "text");
    sd_graph_node *latent = only_latent(g);
    if (!st)
        st = param_for(im, "width", latent, "width");
    if (!st)
        st = param_for(im, "height", latent, "height");
    if (!st)
        st = param_for(im, "checkpoint", only_node(g, "CheckpointLoaderSimple"), "ckpt_name");
    return st;
}

/* Reads the workflow text: a PNG's "prompt" chunk, else its "workflow" chunk, else the file. */
static sd_status read_workflow_text(sd_context *ctx, const char *path, char **buf, size_t *len)
{
    sd_status st = read_bounded(ctx, path, buf, len);
    bool png = !st && *len >= 8 && !memcmp(*buf, "\x89PNG\r\n\x1a\n", 8);
    size_t n = strlen(path);
    if (!st && !png && n >= 4 && !strcasecmp(path + n - 4, ".png")) {
        free(*buf);
        *buf = NULL;
        return sd_set_error(ctx, SD_ERR_PARSE, "%s: not a PNG file", path);
    }
    if (!png)
        return st;
    free(*buf);
    *buf = NULL;
    st = sd_png_read_text(ctx, path, NULL, "prompt", buf);
    if (st == SD_ERR_NOT_FOUND)
        st = sd_png_read_text(ctx, path, NULL, "workflow", buf);
    if (st == SD_ERR_NOT_FOUND)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: the PNG holds no ComfyUI workflow (no \"prompt\" or "
                            "\"workflow\" text chunk)", path);
    *len = st ? 0 : strlen(*buf);
    return st;
}

static bool is_ui_format(const json_t *root)
{
    return json_is_array(json_object_get(root, "nodes")) && json_object_get(root, "links");
}

static sd_status import_api(importer *im, const json_t *meta)
{
    const char **ids = NULL;
    size_t n = 0;
    sd_status st = check_shapes(im);
    if (!st)
        st = drop_unneeded(im);
    if (st)
        return st;
    n = json_object_size(im->root);
    if (!(ids = malloc((n + 1) * sizeof *ids)))
        return nomem(im);
    size_t k = 0;
    const char *key;
    json_t *value;
    json_object_foreach(im->root, key, value) ids[k++] = key;
    qsort(ids, n, sizeof *ids, cmp_ids);
    if (!(st = check_nodes(im, ids, n)) && !(st = sd_graph_new(im->ctx, &im->g))) {
        free(im->g->source);
        if (!(im->g->source = sd_strdup(im->path)))
            st = nomem(im);
    }
    for (size_t i = 0; !st && i < n; i++)
        st = import_node(im, ids[i]);
    if (!st)
        st = set_description(im, meta);
    if (!st)
        st = add_params(im);
    free(ids);
    return st;
}

/* Imports the workflow (API or UI format) in buf[0..len); source names it in messages. */
static sd_status import_buffer(sd_context *ctx, const char *buf, size_t len, const char *source,
                               sd_graph **out)
{
    *out = NULL;
    importer im = {.ctx = ctx, .path = source};
    json_t *meta = NULL;
    sd_status st = SD_OK;
    json_t *root = sd_comfy_parse_json(ctx, source, buf, len);
    if (!root)
        return SD_ERR_PARSE;
    if (!json_is_object(root))
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: not a ComfyUI workflow (expected a JSON object)", source);
    else if (is_ui_format(root))
        st = sd_comfy_ui_to_api(ctx, source, root, &im.root, &meta);
    else
        im.root = json_incref(root);
    json_decref(root);
    if (!st)
        st = import_api(&im, meta);
    json_decref(meta);
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
    sd_status st = read_workflow_text(ctx, json_path, &buf, &len);
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
