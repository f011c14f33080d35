/* Writing graphs for ComfyUI and A1111: the API format ("prompt"), the UI format ("workflow",
 * nodes laid out left to right by topological depth) and A1111's "parameters" text, for
 * `sdflow export comfy` and the PNG text chunks of the saving nodes. Parameters are written as
 * their current values. docs/comfyui.md describes the formats. */
#include "core/comfy.h"
#include "core/run.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UI_COLUMN_WIDTH 400 /* layout of the UI format: one column per topological depth */
#define UI_ROW_HEIGHT 300
#define UI_NODE_WIDTH 315
#define UI_NODE_HEIGHT 130
#define UI_GROUP_MARGIN 20 /* a group's box around its nodes, and its title bar above them */
#define UI_GROUP_TITLE 60

/* Whether the API format carries the input: not sdflow's additions. control_after_generate is
 * kept (ComfyUI ignores inputs a node does not declare), so that a round trip keeps it. */
static bool api_input(const sd_node_desc *d, const sd_input_desc *in)
{
    return !sd_type_is_literal(in->type) || sd_comfy_is_widget(d, in);
}

/* The JSON value of a literal input's text: numbers and booleans typed; seeds beyond INT64_MAX
 * as their digits (ComfyUI reads them with int()). NULL when there is no text. */
static json_t *literal_json(const sd_input_desc *in, const char *text)
{
    int64_t i;
    double f;
    bool b;
    if (!text)
        return NULL;
    switch (in->type) {
    case SD_TYPE_INT:
        if (!sd_input_parse_int(in, text, &i))
            return NULL;
        return i < 0 && text[0] != '-' ? json_string(text) : json_integer(i);
    case SD_TYPE_FLOAT: return sd_parse_float(text, &f) ? json_real(f) : NULL;
    case SD_TYPE_BOOLEAN: return sd_parse_bool(text, &b) ? json_boolean(b) : NULL;
    default: return json_string(text);
    }
}

/* Checks that ComfyUI has every node type and that every link names an existing output; the
 * message names the node. */
static sd_status check_exportable(sd_graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        const sd_graph_node *n = &g->nodes[i];
        if (!n->desc || !sd_comfy_has_type(n->desc))
            return sd_set_error(g->ctx, SD_ERR_INVALID, "node '%s': ComfyUI has no node type '%s'", n->id, n->type);
        for (size_t k = 0; k < n->n_inputs; k++) {
            const sd_graph_input *in = &n->inputs[k];
            const sd_graph_node *src = in->kind == SD_BIND_LINK ? sd_graph_find_node(g, in->src_node) : NULL;
            if (in->kind == SD_BIND_LINK && (!src || !src->desc || sd_node_desc_output(src->desc, in->src_output) < 0))
                return sd_set_error(g->ctx, SD_ERR_INVALID, "node '%s' input '%s': link to a missing output",
                                    n->id, in->name);
        }
    }
    return SD_OK;
}

static sd_status nomem(sd_graph *g)
{
    return sd_set_error(g->ctx, SD_ERR_NOMEM, "out of memory");
}

/* ---- API format. ---- */

/* The title an imported node kept (sd_comfy_described_meta's "titles"), else its type. */
static const char *node_title(const json_t *meta, const sd_graph_node *n)
{
    const char *title = json_string_value(json_object_get(json_object_get(meta, "titles"), n->id));
    return title ? title : n->type;
}

static sd_status api_node(sd_graph *g, const json_t *meta, const sd_graph_node *n, json_t *out)
{
    json_t *inputs = json_object();
    json_t *node = json_pack("{s:o, s:s, s:{s:s}}", "inputs", inputs, "class_type", n->type, "_meta", "title",
                             node_title(meta, n));
    if (!node || json_object_set_new(out, n->id, node))
        return nomem(g);
    for (size_t k = 0; k < n->desc->n_inputs; k++) {
        const sd_input_desc *in = &n->desc->inputs[k];
        const sd_graph_input *b = sd_graph_node_input(n, in->name);
        json_t *v = NULL;
        if (!api_input(n->desc, in))
            continue;
        if (b && b->kind == SD_BIND_LINK) {
            const sd_graph_node *src = sd_graph_find_node(g, b->src_node);
            v = json_pack("[s,i]", b->src_node, sd_node_desc_output(src->desc, b->src_output));
        } else if (sd_type_is_literal(in->type)) {
            v = literal_json(in, sd_graph_input_text(g, n, in));
        }
        if (v && json_object_set_new(inputs, in->name, v))
            return nomem(g);
    }
    return SD_OK;
}

static sd_status export_api(sd_graph *g, const json_t *meta, json_t **out)
{
    json_t *api = json_object();
    sd_status st = api ? SD_OK : nomem(g);
    for (size_t i = 0; !st && i < g->n_nodes; i++)
        st = api_node(g, meta, &g->nodes[i], api);
    if (st) {
        json_decref(api);
        return st;
    }
    *out = api;
    return SD_OK;
}

/* ---- UI format. ---- */

/* The UI's node ids are numbers: a node keeps its id when that is a positive number, the others
 * get numbers above the largest. */
static sd_status ui_ids(sd_graph *g, long long **out)
{
    long long *ids = calloc(g->n_nodes + 1, sizeof *ids), next = 0;
    if (!ids)
        return nomem(g);
    for (size_t i = 0; i < g->n_nodes; i++) {
        char *end;
        long long v = strtoll(g->nodes[i].id, &end, 10);
        ids[i] = *end || v <= 0 || v > 1000000000 ? 0 : v;
        next = ids[i] > next ? ids[i] : next;
    }
    for (size_t i = 0; i < g->n_nodes; i++)
        if (!ids[i])
            ids[i] = ++next;
    *out = ids;
    return SD_OK;
}

static size_t node_index(const sd_graph *g, const char *id)
{
    for (size_t i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].id, id))
            return i;
    return g->n_nodes;
}

/* Topological depth (longest chain of links from a node without linked inputs), relaxed at most
 * n times so that a cycle cannot loop. */
static void depths(const sd_graph *g, int *depth)
{
    bool changed = true;
    for (size_t round = 0; changed && round <= g->n_nodes; round++) {
        changed = false;
        for (size_t i = 0; i < g->n_nodes; i++)
            for (size_t k = 0; k < g->nodes[i].n_inputs; k++) {
                const sd_graph_input *in = &g->nodes[i].inputs[k];
                size_t s = in->kind == SD_BIND_LINK ? node_index(g, in->src_node) : g->n_nodes;
                if (s < g->n_nodes && depth[s] + 1 > depth[i]) {
                    depth[i] = depth[s] + 1;
                    changed = true;
                }
            }
    }
}

static const char *ui_type(const sd_input_desc *in)
{
    return in->type == SD_TYPE_ENUM ? "COMBO" : sd_type_name(in->type);
}

typedef struct ui_out {
    sd_graph *g;
    const json_t *meta; /* titles and groups (sd_comfy_described_meta) */
    long long *ids;
    int *x, *y;         /* each node's position */
    json_t *nodes, *links;
    json_int_t next_link;
} ui_out;

/* Adds one link and the entries of both ends: the consumer's input slot (index `at` of node
 * dst's inputs), the producer's output's "links". */
static sd_status ui_link(ui_out *u, size_t dst, size_t at, const sd_graph_input *b, json_t *slot)
{
    size_t s = node_index(u->g, b->src_node);
    const sd_node_desc *src = u->g->nodes[s].desc;
    int out = sd_node_desc_output(src, b->src_output);
    json_int_t id = ++u->next_link;
    json_t *src_outputs = json_object_get(json_array_get(u->nodes, s), "outputs");
    if (json_object_set_new(slot, "link", json_integer(id)) ||
        json_array_append_new(json_object_get(json_array_get(src_outputs, (size_t)out), "links"), json_integer(id)) ||
        json_array_append_new(u->links, json_pack("[I,I,i,I,I,s]", id, (json_int_t)u->ids[s], out,
                                                  (json_int_t)u->ids[dst], (json_int_t)at,
                                                  sd_type_name(src->outputs[out].type))))
        return nomem(u->g);
    return SD_OK;
}

/* A node without links: type, title, layout, outputs, widgets_values in widget order. */
static json_t *ui_node_shell(ui_out *u, size_t i)
{
    const sd_graph_node *n = &u->g->nodes[i];
    json_t *outputs = json_array(), *widgets = json_array();
    for (size_t o = 0; outputs && o < n->desc->n_outputs; o++)
        json_array_append_new(outputs, json_pack("{s:s, s:s, s:[], s:i}", "name", n->desc->outputs[o].name, "type",
                                                 sd_type_name(n->desc->outputs[o].type), "links", "slot_index",
                                                 (int)o));
    for (size_t k = 0; widgets && k < n->desc->n_inputs; k++) {
        const sd_input_desc *in = &n->desc->inputs[k];
        if (!sd_comfy_is_widget(n->desc, in))
            continue;
        json_t *v = literal_json(in, sd_graph_input_text(u->g, n, in));
        json_array_append_new(widgets, v ? v : json_null()); /* a linked widget keeps its slot, null */
    }
    json_t *node = json_pack("{s:I, s:s, s:[i,i], s:[i,i], s:{}, s:i, s:i, s:[], s:o, s:{s:s}, s:o}", "id",
                             (json_int_t)u->ids[i], "type", n->type, "pos", u->x[i], u->y[i], "size", UI_NODE_WIDTH,
                             UI_NODE_HEIGHT, "flags", "order", (int)i, "mode", 0, "inputs", "outputs", outputs,
                             "properties", "Node name for S&R", n->type, "widgets_values", widgets);
    const char *title = node_title(u->meta, n);
    if (node && title != n->type && json_object_set_new(node, "title", json_string(title))) {
        json_decref(node);
        return NULL;
    }
    return node;
}

/* The node's "inputs": every socket, and each widget that a link feeds. */
static sd_status ui_inputs(ui_out *u, size_t i)
{
    const sd_graph_node *n = &u->g->nodes[i];
    json_t *inputs = json_object_get(json_array_get(u->nodes, i), "inputs");
    for (size_t k = 0; k < n->desc->n_inputs; k++) {
        const sd_input_desc *in = &n->desc->inputs[k];
        const sd_graph_input *b = sd_graph_node_input(n, in->name);
        bool linked = b && b->kind == SD_BIND_LINK;
        if (sd_type_is_literal(in->type) && !linked)
            continue;
        json_t *slot = json_pack("{s:s, s:s, s:n}", "name", in->name, "type", ui_type(in), "link");
        if (!slot || (sd_type_is_literal(in->type) &&
                      json_object_set_new(slot, "widget", json_pack("{s:s}", "name", in->name))))
            return nomem(u->g);
        sd_status st = linked ? ui_link(u, i, json_array_size(inputs), b, slot) : SD_OK;
        if (st || json_array_append_new(inputs, slot))
            return st ? st : nomem(u->g);
    }
    return SD_OK;
}

/* Positions: one column per topological depth; the nodes of each group (the first that holds
 * a node, in "groups" order) in a band of rows of their own, so that the group's box holds them
 * and no other node; the nodes of no group in the last band. */
static sd_status ui_layout(ui_out *u)
{
    sd_graph *g = u->g;
    const json_t *groups = json_object_get(u->meta, "groups");
    size_t n_groups = json_array_size(groups), *band = calloc(g->n_nodes + 1, sizeof *band);
    int *depth = calloc(g->n_nodes + 1, sizeof *depth), *rows = calloc(g->n_nodes + 1, sizeof *rows);
    if (!band || !depth || !rows) {
        free(band);
        free(depth);
        free(rows);
        return nomem(g);
    }
    depths(g, depth);
    for (size_t i = 0; i < g->n_nodes; i++)
        band[i] = n_groups;
    for (size_t b = n_groups; b-- > 0;) {
        size_t k;
        const json_t *id;
        json_array_foreach(json_object_get(json_array_get(groups, b), "nodes"), k, id)
        {
            size_t i = node_index(g, json_string_value(id) ? json_string_value(id) : "");
            if (i < g->n_nodes)
                band[i] = b;
        }
    }
    int top = 0;
    for (size_t b = 0; b <= n_groups; b++) {
        int height = 0;
        memset(rows, 0, (g->n_nodes + 1) * sizeof *rows);
        for (size_t i = 0; i < g->n_nodes; i++)
            if (band[i] == b) {
                u->x[i] = depth[i] * UI_COLUMN_WIDTH;
                u->y[i] = (top + rows[depth[i]]++) * UI_ROW_HEIGHT;
                height = rows[depth[i]] > height ? rows[depth[i]] : height;
            }
        top += height;
    }
    free(band);
    free(depth);
    free(rows);
    return SD_OK;
}

/* Each group with a node in the graph: its title and the box around its nodes' positions. */
static sd_status ui_groups(ui_out *u, json_t *out)
{
    size_t b, k;
    const json_t *group, *id;
    json_array_foreach(json_object_get(u->meta, "groups"), b, group)
    {
        int x0 = 0, y0 = 0, x1 = 0, y1 = 0, n = 0;
        json_array_foreach(json_object_get(group, "nodes"), k, id)
        {
            size_t i = node_index(u->g, json_string_value(id) ? json_string_value(id) : "");
            if (i >= u->g->n_nodes)
                continue;
            x0 = n && x0 < u->x[i] ? x0 : u->x[i];
            y0 = n && y0 < u->y[i] ? y0 : u->y[i];
            x1 = n && x1 > u->x[i] ? x1 : u->x[i];
            y1 = n && y1 > u->y[i] ? y1 : u->y[i];
            n++;
        }
        if (n && json_array_append_new(
                     out, json_pack("{s:O, s:[i,i,i,i], s:s, s:i, s:{}}", "title", json_object_get(group, "title"),
                                    "bounding", x0 - UI_GROUP_MARGIN, y0 - UI_GROUP_TITLE,
                                    x1 - x0 + UI_NODE_WIDTH + 2 * UI_GROUP_MARGIN,
                                    y1 - y0 + UI_NODE_HEIGHT + UI_GROUP_TITLE + UI_GROUP_MARGIN, "color",
                                    "#3f789e", "font_size", 24, "flags")))
            return nomem(u->g);
    }
    return SD_OK;
}

static sd_status export_ui(sd_graph *g, const json_t *meta, json_t **out)
{
    ui_out u = {.g = g, .meta = meta, .nodes = json_array(), .links = json_array()};
    u.x = calloc(g->n_nodes + 1, sizeof *u.x);
    u.y = calloc(g->n_nodes + 1, sizeof *u.y);
    json_t *groups = json_array();
    sd_status st = u.nodes && u.links && u.x && u.y && groups ? ui_ids(g, &u.ids) : nomem(g);
    if (!st)
        st = ui_layout(&u);
    for (size_t i = 0; !st && i < g->n_nodes; i++)
        if (json_array_append_new(u.nodes, ui_node_shell(&u, i)))
            st = nomem(g);
    for (size_t i = 0; !st && i < g->n_nodes; i++)
        st = ui_inputs(&u, i);
    if (!st)
        st = ui_groups(&u, groups);
    long long last = 0;
    for (size_t i = 0; !st && i < g->n_nodes; i++)
        last = u.ids[i] > last ? u.ids[i] : last;
    json_t *ui = st ? NULL
                    : json_pack("{s:I, s:I, s:O, s:O, s:O, s:{}, s:{}, s:f}", "last_node_id", (json_int_t)last,
                                "last_link_id", u.next_link, "nodes", u.nodes, "links", u.links, "groups", groups,
                                "config", "extra", "version", 0.4);
    if (!st && !ui)
        st = nomem(g);
    json_decref(u.nodes);
    json_decref(u.links);
    json_decref(groups);
    free(u.ids);
    free(u.x);
    free(u.y);
    *out = ui;
    return st;
}

/* The graph in one ComfyUI format, with the titles and groups its description keeps. */
static sd_status export_root(sd_graph *g, bool ui, json_t **out)
{
    json_t *meta = sd_comfy_described_meta(sd_graph_meta(g, "description"));
    if (!meta)
        return nomem(g);
    sd_status st = ui ? export_ui(g, meta, out) : export_api(g, meta, out);
    json_decref(meta);
    return st;
}

sd_status sd_graph_export_comfy(sd_graph *g, bool ui, char **out)
{
    *out = NULL;
    json_t *root = NULL;
    sd_status st = check_exportable(g);
    if (!st)
        st = export_root(g, ui, &root);
    if (st)
        return st;
    *out = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    return *out ? SD_OK : nomem(g);
}

/* ---- PNG texts of a run: "prompt", "workflow", "parameters". ---- */

struct sd_interop_texts {
    char *prompt, *workflow, *parameters;
    sd_png_text texts[3];
    size_t n;
};

void sd_interop_texts_free(struct sd_interop_texts *t)
{
    if (!t)
        return;
    free(t->prompt);
    free(t->workflow);
    free(t->parameters);
    free(t);
}

/* The first node of type `type` found walking up the links from node n's input, depth first. */
static const sd_graph_node *upstream(const sd_graph *g, const sd_graph_node *n, const char *input, const char *type,
                                     int depth)
{
    const sd_graph_input *in = n && depth < 64 ? sd_graph_node_input(n, input) : NULL;
    const sd_graph_node *src = in && in->kind == SD_BIND_LINK ? sd_graph_find_node(g, in->src_node) : NULL;
    if (!src || !strcmp(src->type, type))
        return src;
    for (size_t k = 0; k < src->n_inputs; k++) {
        const sd_graph_node *found = upstream(g, src, src->inputs[k].name, type, depth + 1);
        if (found)
            return found;
    }
    return NULL;
}

/* The text of an input of node n (parameters and defaults resolved), "" when there is none. */
static const char *text_of(const sd_graph *g, const sd_graph_node *n, const char *input)
{
    const sd_input_desc *in = n && n->desc ? sd_node_desc_input(n->desc, input) : NULL;
    const char *t = in ? sd_graph_input_text(g, n, in) : NULL;
    return t ? t : "";
}

/* A1111's name of a ComfyUI sampler, and of a scheduler ("" for ComfyUI's normal). */
static const char *a1111_sampler(const char *s)
{
    static const char *const names[][2] = {
        {"euler", "Euler"}, {"euler_ancestral", "Euler a"}, {"heun", "Heun"}, {"dpm_2", "DPM2"},
        {"dpm_2_ancestral", "DPM2 a"}, {"lms", "LMS"}, {"dpmpp_2s_ancestral", "DPM++ 2S a"},
        {"dpmpp_sde", "DPM++ SDE"}, {"dpmpp_2m", "DPM++ 2M"}, {"dpmpp_2m_sde", "DPM++ 2M SDE"},
        {"dpmpp_3m_sde", "DPM++ 3M SDE"}, {"ddim", "DDIM"}, {"uni_pc", "UniPC"}, {"uni_pc_bh2", "UniPC"},
        {"lcm", "LCM"}, {"ddpm", "DDPM"}, {"karras", "Karras"}, {"exponential", "Exponential"},
        {"sgm_uniform", "SGM Uniform"}, {"simple", "Simple"}, {"ddim_uniform", "DDIM"}, {"beta", "Beta"},
        {"linear_quadratic", "Linear Quadratic"}, {"kl_optimal", "KL Optimal"}, {"normal", ""}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i][0]))
            return names[i][1];
    return s;
}

/* Appends ", KEY: VALUE" (or "KEY: VALUE" first) when value is non-empty. */
static char *field(char *text, const char *key, const char *value)
{
    if (!text || !value || !*value)
        return text;
    size_t len = strlen(text);
    char *t = sd_strfmt("%s%s%s: %s", text, len && text[len - 1] != '\n' ? ", " : "", key, value);
    free(text);
    return t;
}

/* The one sampler of a graph (KSampler or KSamplerAdvanced), or NULL. */
static const sd_graph_node *single_sampler(const sd_graph *g)
{
    const sd_graph_node *s = NULL;
    for (size_t i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].type, "KSampler") || !strcmp(g->nodes[i].type, "KSamplerAdvanced")) {
            if (s)
                return NULL;
            s = &g->nodes[i];
        }
    return s;
}

const sd_graph_node *sd_a1111_checkpoint(const sd_graph *g)
{
    return upstream(g, single_sampler(g), "model", "CheckpointLoaderSimple", 0);
}

char *sd_a1111_parameters(const sd_graph *g, const char *model_hash, bool *nomem_out)
{
    *nomem_out = false;
    const sd_graph_node *s = single_sampler(g);
    if (!s)
        return NULL;
    bool advanced = !strcmp(s->type, "KSamplerAdvanced");
    const sd_graph_node *pos = upstream(g, s, "positive", "CLIPTextEncode", 0);
    const sd_graph_node *neg = upstream(g, s, "negative", "CLIPTextEncode", 0);
    const sd_graph_node *latent = upstream(g, s, "latent_image", "EmptyLatentImage", 0);
    const sd_graph_node *ckpt = sd_a1111_checkpoint(g);
    const char *ckpt_name = ckpt ? text_of(g, ckpt, "ckpt_name") : "";
    char size[64] = "", model[256] = "", engine[64];
    if (latent)
        snprintf(size, sizeof size, "%sx%s", text_of(g, latent, "width"), text_of(g, latent, "height"));
    const char *base = strrchr(ckpt_name, '/');
    snprintf(model, sizeof model, "%s", base ? base + 1 : ckpt_name);
    char *dot = strrchr(model, '.');
    if (dot)
        *dot = '\0';
    snprintf(engine, sizeof engine, "sdflow %s", sd_version());
    double denoise = 1;
    sd_parse_float(text_of(g, s, "denoise"), &denoise);
    char *text = sd_strfmt("%s\n", pos ? text_of(g, pos, "text") : "");
    if (text && neg)
        text = field(text, "Negative prompt", text_of(g, neg, "text"));
    if (text && text[strlen(text) - 1] != '\n') {
        char *t = sd_strfmt("%s\n", text);
        free(text);
        text = t;
    }
    text = field(text, "Steps", text_of(g, s, "steps"));
    text = field(text, "Sampler", a1111_sampler(text_of(g, s, "sampler_name")));
    text = field(text, "Schedule type", a1111_sampler(text_of(g, s, "scheduler")));
    text = field(text, "CFG scale", text_of(g, s, "cfg"));
    text = field(text, "Seed", text_of(g, s, advanced ? "noise_seed" : "seed"));
    text = field(text, "Size", size);
    text = field(text, "Model hash", model_hash);
    text = field(text, "Model", model);
    if (!advanced && denoise < 1)
        text = field(text, "Denoising strength", text_of(g, s, "denoise"));
    text = field(text, "Version", engine);
    *nomem_out = !text;
    return text;
}

/* Compact JSON of the graph in one ComfyUI format; NULL when ComfyUI lacks a node type. */
static sd_status comfy_json(sd_graph *g, bool ui, char **out)
{
    json_t *root = NULL;
    *out = NULL;
    if (check_exportable(g)) {
        sd_clear_error(g->ctx);
        return SD_OK;
    }
    sd_status st = export_root(g, ui, &root);
    if (!st && !(*out = json_dumps(root, JSON_COMPACT)))
        st = nomem(g);
    json_decref(root);
    return st;
}

/* Admits only the file the plan hashed, as it was then (the read guard while hashing a
 * checkpoint for the saving node, whose key holds the checkpoint's content through the loader). */
struct hashed_file {
    sd_context *ctx;
    const sd_file_id *id;
};

static sd_status hashed_file_guard(void *user, const char *path, const struct sd_file_id *id)
{
    const struct hashed_file *want = user;
    return sd_file_id_equal(want->id, id)
               ? SD_OK
               : sd_set_error(want->ctx, SD_ERR_IO, "%s: changed since this run hashed it", path);
}

/* A1111's "Model hash" (AutoV2) of the checkpoint the graph's one sampler uses: the first 10 hex
 * digits of the SHA-256 of the whole file, memoized in the run's cache like content hashes. hex
 * is "" when there is no such checkpoint file. */
static sd_status checkpoint_autov2(sd_run_state *s, char hex[65])
{
    hex[0] = '\0';
    const sd_graph_node *ckpt = sd_a1111_checkpoint(s->graph);
    const sd_plan_input *pi = NULL;
    for (size_t i = 0; ckpt && !pi && i < s->n_nodes; i++)
        for (size_t k = 0; s->nodes[i].gn == ckpt && k < s->nodes[i].desc->n_inputs; k++)
            if (s->nodes[i].inputs[k].file && !strcmp(s->nodes[i].inputs[k].desc->name, "ckpt_name"))
                pi = &s->nodes[i].inputs[k];
    if (!pi)
        return SD_OK;
    sd_context *ctx = s->ctx;
    sd_status (*guard)(void *, const char *, const struct sd_file_id *) = ctx->read_guard;
    void *guard_user = ctx->read_guard_user;
    struct hashed_file want = {ctx, &pi->file_id};
    ctx->read_guard = hashed_file_guard;
    ctx->read_guard_user = &want;
    sd_key sha;
    sd_file_id id;
    sd_status st = sd_digest_file_memo(ctx, s->cache, SD_DIGEST_SHA256, pi->file, &sha, &id);
    ctx->read_guard = guard;
    ctx->read_guard_user = guard_user;
    if (!st) {
        sd_key_hex(&sha, hex);
        hex[10] = '\0';
    }
    return st;
}

sd_status sd_run_interop_texts(sd_node_run *r, const sd_png_text **texts, size_t *n)
{
    sd_run_state *s = r->state;
    struct sd_interop_texts *t = s->interop;
    if (!t) {
        bool a1111_nomem = false;
        char hash[65];
        sd_status st = checkpoint_autov2(s, hash);
        if (st)
            return sd_run_error(r, st, "model hash: %s", sd_context_errmsg(s->ctx));
        st = (t = calloc(1, sizeof *t)) ? SD_OK : SD_ERR_NOMEM;
        if (!st && !(st = comfy_json(s->graph, false, &t->prompt)))
            st = comfy_json(s->graph, true, &t->workflow);
        if (!st && !(t->parameters = sd_a1111_parameters(s->graph, hash, &a1111_nomem)) && a1111_nomem)
            st = SD_ERR_NOMEM;
        if (st) {
            sd_interop_texts_free(t);
            return sd_run_error(r, st, "out of memory");
        }
        if (t->prompt)
            t->texts[t->n++] = (sd_png_text){"prompt", t->prompt};
        if (t->workflow)
            t->texts[t->n++] = (sd_png_text){"workflow", t->workflow};
        if (t->parameters)
            t->texts[t->n++] = (sd_png_text){"parameters", t->parameters};
        s->interop = t;
    }
    *texts = t->texts;
    *n = t->n;
    return SD_OK;
}
