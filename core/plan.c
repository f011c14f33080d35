/* Planning a run: topological order, the wanted nodes, Merkle keys, and which nodes run or
 * load from the cache (docs/design.md §4, §5; docs/caching.md describes the key). */
#include "core/cache.h"
#include "core/files.h"
#include "core/run.h"
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bumped when the key scheme or the payload layout changes: old entries become unreachable. */
#define SD_CACHE_KEY_FORMAT 2 /* 2: the files hook's look-ups */

static sd_status node_error(sd_run_state *s, const sd_graph_node *gn, sd_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sd_status node_error(sd_run_state *s, const sd_graph_node *gn, sd_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sd_set_error(s->ctx, st, "node '%s' (%s): %s", gn->id, gn->type, msg);
}

static int by_id(const void *a, const void *b)
{
    return strcmp((*(sd_graph_node *const *)a)->id, (*(sd_graph_node *const *)b)->id);
}

/* Graph index of the node with this id (via the sorted index), or SD_NO_SOURCE. */
static size_t find_sorted(sd_graph_node **sorted, size_t n, const sd_graph_node *base, const char *id)
{
    sd_graph_node key = {.id = (char *)id}, *kp = &key;
    sd_graph_node **hit = bsearch(&kp, sorted, n, sizeof *sorted, by_id);
    return hit ? (size_t)(*hit - base) : SD_NO_SOURCE;
}

/* Fills s->nodes in topological order (Kahn's algorithm, ties in file order) with their
 * inputs resolved to plan indices. */
static sd_status build_order(sd_run_state *s)
{
    sd_graph *g = s->graph;
    size_t n = g->n_nodes, m = 1, placed = 0, head = 0, n_links = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < g->nodes[i].n_inputs; j++)
            n_links += g->nodes[i].inputs[j].kind == SD_BIND_LINK;
    if (n > m)
        m = n;
    sd_graph_node **sorted = malloc(m * sizeof *sorted);
    size_t *indeg = calloc(m, sizeof *indeg), *queue = malloc(m * sizeof *queue);
    size_t *pos = malloc(m * sizeof *pos), *first = calloc(m + 1, sizeof *first);
    size_t *succ = malloc((n_links ? n_links : 1) * sizeof *succ);
    s->nodes = calloc(m, sizeof *s->nodes);
    sd_status st = SD_OK;
    if (!sorted || !indeg || !queue || !pos || !first || !succ || !s->nodes) {
        st = sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = &g->nodes[i];
    qsort(sorted, n, sizeof *sorted, by_id);
    /* Successor lists (compressed rows): first[src]..first[src+1] index succ. */
    for (size_t i = 0; i < n; i++) {
        const sd_graph_node *gn = &g->nodes[i];
        if (!gn->desc) {
            st = sd_set_error(s->ctx, SD_ERR_INVALID, "node '%s': unknown node type '%s'", gn->id, gn->type);
            goto done;
        }
        for (size_t j = 0; j < gn->n_inputs; j++) {
            const sd_graph_input *in = &gn->inputs[j];
            if (in->kind != SD_BIND_LINK)
                continue;
            size_t src = find_sorted(sorted, n, g->nodes, in->src_node);
            if (src == SD_NO_SOURCE) {
                st = node_error(s, gn, SD_ERR_INVALID, "input '%s' links to missing node '%s'", in->name,
                                in->src_node);
                goto done;
            }
            first[src + 1]++;
            indeg[i]++;
        }
    }
    for (size_t i = 0; i < n; i++)
        first[i + 1] += first[i];
    memcpy(pos, first, n * sizeof *pos); /* fill cursors */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < g->nodes[i].n_inputs; j++)
            if (g->nodes[i].inputs[j].kind == SD_BIND_LINK)
                succ[pos[find_sorted(sorted, n, g->nodes, g->nodes[i].inputs[j].src_node)]++] = i;
    /* Kahn: a node is placed once every node it links from is placed. */
    for (size_t i = 0; i < n; i++)
        if (indeg[i] == 0)
            queue[placed++] = i;
    while (head < placed) {
        size_t gi = queue[head];
        pos[gi] = head++;
        for (size_t e = first[gi]; e < first[gi + 1]; e++)
            if (--indeg[succ[e]] == 0)
                queue[placed++] = succ[e];
    }
    if (placed < n) {
        st = sd_set_error(s->ctx, SD_ERR_INVALID, "the workflow has a cycle");
        goto done;
    }
    s->n_nodes = n;
    for (size_t k = 0; k < n; k++) {
        sd_plan_node *p = &s->nodes[k];
        p->gn = &g->nodes[queue[k]];
        p->desc = p->gn->desc;
        p->inputs = calloc(p->desc->n_inputs ? p->desc->n_inputs : 1, sizeof *p->inputs);
        if (!p->inputs) {
            st = sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < p->desc->n_inputs; i++) {
            sd_plan_input *pi = &p->inputs[i];
            pi->desc = &p->desc->inputs[i];
            pi->src = SD_NO_SOURCE;
            const sd_graph_input *b = sd_graph_node_input(p->gn, pi->desc->name);
            if (!b || b->kind != SD_BIND_LINK) {
                pi->text = sd_graph_input_text(g, p->gn, pi->desc);
                continue;
            }
            pi->src = pos[find_sorted(sorted, n, g->nodes, b->src_node)];
            const sd_plan_node *src = &s->nodes[pi->src];
            pi->src_output = sd_node_desc_output(src->desc, b->src_output);
            if (pi->src_output < 0) {
                st = node_error(s, p->gn, SD_ERR_INVALID, "input '%s' links to missing output '%s'",
                                pi->desc->name, b->src_output);
                goto done;
            }
            if (pi->desc->flags & SD_IN_FILE) {
                st = node_error(s, p->gn, SD_ERR_INVALID,
                                "input '%s' names a file: set it as a value, not a link", pi->desc->name);
                goto done;
            }
        }
    }
done:
    free(sorted);
    free(indeg);
    free(queue);
    free(pos);
    free(first);
    free(succ);
    return st;
}

/* Marks the wanted nodes (named outputs, else every output node) and their ancestors. */
static sd_status mark_wanted(sd_run_state *s, const sd_run_options *o)
{
    size_t n_wanted = 0;
    for (size_t k = 0; k < s->n_nodes; k++) {
        sd_plan_node *p = &s->nodes[k];
        if (o->n_outputs == 0)
            p->wanted = (p->desc->flags & SD_NODE_OUTPUT) != 0;
        for (size_t j = 0; j < o->n_outputs; j++)
            if (strcmp(o->outputs[j], p->gn->id) == 0)
                p->wanted = true;
        n_wanted += p->wanted;
    }
    for (size_t j = 0; j < o->n_outputs; j++)
        if (!sd_graph_find_node(s->graph, o->outputs[j]))
            return sd_set_error(s->ctx, SD_ERR_NOT_FOUND, "no node '%s' in the workflow", o->outputs[j]);
    if (n_wanted == 0)
        return sd_set_error(s->ctx, SD_ERR_INVALID,
                            "nothing to run: the workflow has no output node (such as SaveImage) "
                            "and no outputs were asked for");
    for (size_t k = s->n_nodes; k-- > 0;) {
        sd_plan_node *p = &s->nodes[k];
        p->relevant |= p->wanted;
        if (!p->relevant)
            continue;
        for (size_t i = 0; i < p->desc->n_inputs; i++)
            if (p->inputs[i].src != SD_NO_SOURCE)
                s->nodes[p->inputs[i].src].relevant = true;
    }
    return SD_OK;
}

/* Hashes one literal in canonical form: the parsed value, so "0.50" and "0.5" agree. */
static sd_status hash_literal(sd_run_state *s, const sd_plan_node *p, const sd_plan_input *pi, sd_hasher *h)
{
    char msg[512];
    if (!sd_literal_check(pi->desc, pi->text, msg, sizeof msg))
        return node_error(s, p->gn, SD_ERR_INVALID, "input '%s': %s", pi->desc->name, msg);
    switch (pi->desc->type) {
    case SD_TYPE_INT: {
        int64_t v = 0;
        sd_input_parse_int(pi->desc, pi->text, &v);
        sd_hasher_i64(h, v);
        break;
    }
    case SD_TYPE_FLOAT: {
        double v = 0;
        int64_t bits;
        sd_parse_float(pi->text, &v);
        if (v == 0)
            v = 0; /* -0 and 0 are the same input */
        memcpy(&bits, &v, sizeof bits);
        sd_hasher_i64(h, bits);
        break;
    }
    case SD_TYPE_BOOLEAN: {
        bool v = false;
        sd_parse_bool(pi->text, &v);
        sd_hasher_i64(h, v);
        break;
    }
    default:
        sd_hasher_str(h, pi->text);
        break;
    }
    return SD_OK;
}

/* Resolves a file input and hashes its content into h (memoized in cache unless NULL);
 * records it for provenance. */
static sd_status hash_file_input(sd_run_state *s, sd_cache *cache, const sd_plan_node *p, sd_plan_input *pi,
                                 sd_hasher *h)
{
    sd_status st = sd_resolve_file(s->ctx, pi->desc->file_dir, pi->text, &pi->file);
    if (st) {
        pi->file = NULL;
        sd_error_prefix(s->ctx, "node '%s' (%s): input '%s'", p->gn->id, p->desc->name, pi->desc->name);
        return st;
    }
    sd_key content;
    if ((st = sd_hash_file_memo(s->ctx, cache, pi->file, &content, &pi->file_id))) {
        sd_error_prefix(s->ctx, "node '%s' (%s): input '%s'", p->gn->id, p->desc->name, pi->desc->name);
        return st;
    }
    sd_hasher_key(h, &content);
    return sd_run_record_file(s, pi->desc->file_dir, pi->text, &content);
}

/* ---- The files hook (core/node.h). ---- */

struct sd_node_files {
    sd_run_state *state;
    sd_plan_node *node;
    sd_cache *cache;
    sd_hasher *h;
};

sd_context *sd_files_context(sd_node_files *f)
{
    return f->state->ctx;
}

const char *sd_files_literal(sd_node_files *f, const char *input)
{
    for (size_t i = 0; i < f->node->desc->n_inputs; i++)
        if (strcmp(f->node->desc->inputs[i].name, input) == 0)
            return f->node->inputs[i].src == SD_NO_SOURCE ? f->node->inputs[i].text : NULL;
    assert(!"files hook asked for an input its descriptor does not declare");
    return NULL;
}

/* *path = the first of names that exists in kind's directories (names[*found]), or NULL. */
static sd_status find_first(sd_context *ctx, const char *kind, const char *const *names, size_t n, char **path,
                            size_t *found)
{
    char saved[sizeof ctx->errmsg];
    memcpy(saved, ctx->errmsg, sizeof saved); /* "not found" is an answer here, not an error */
    sd_status st = SD_OK;
    *path = NULL;
    for (size_t i = 0; i < n && !*path; i++) {
        *found = i; /* an absolute name resolves only where the context allows absolute paths */
        st = sd_resolve_file(ctx, kind, names[i], path);
        if (st == SD_ERR_NOT_FOUND || st == SD_ERR_INVALID)
            st = SD_OK;
        if (st)
            return st;
    }
    memcpy(ctx->errmsg, saved, sizeof saved);
    return SD_OK;
}

sd_status sd_files_find(sd_node_files *f, const char *kind, const char *const *names, size_t n)
{
    sd_run_state *s = f->state;
    sd_plan_node *p = f->node;
    sd_plan_lookup *grown = realloc(p->lookups, (p->n_lookups + 1) * sizeof *grown);
    if (!grown)
        return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
    p->lookups = grown;
    sd_plan_lookup *l = &p->lookups[p->n_lookups];
    *l = (sd_plan_lookup){.kind = kind, .names = calloc(n ? n : 1, sizeof *l->names)};
    p->n_lookups += l->names != NULL;
    for (size_t i = 0; l->names && i < n; i++)
        if ((l->names[l->n_names] = sd_strdup(names[i])))
            l->n_names++;
    if (!l->names || l->n_names < n)
        return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
    sd_hasher_str(f->h, "find");
    sd_hasher_str(f->h, kind);
    sd_hasher_i64(f->h, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        sd_hasher_str(f->h, names[i]);
    size_t found = 0;
    sd_status st = find_first(s->ctx, kind, names, n, &l->path, &found);
    if (st || !l->path) {
        sd_hasher_i64(f->h, 'A'); /* absent: adding the file changes the key */
        return st;
    }
    sd_key content;
    if ((st = sd_hash_file_memo(s->ctx, f->cache, l->path, &content, &l->id)))
        return st;
    sd_hasher_i64(f->h, 'F');
    sd_hasher_key(f->h, &content);
    return sd_run_record_file(s, kind, names[found], &content);
}

void sd_plan_node_clear(sd_plan_node *p)
{
    for (size_t i = 0; p->inputs && i < p->desc->n_inputs; i++)
        free(p->inputs[i].file);
    free(p->inputs);
    p->inputs = NULL;
    for (size_t i = 0; i < p->n_lookups; i++) {
        for (size_t j = 0; j < p->lookups[i].n_names; j++)
            free(p->lookups[i].names[j]);
        free(p->lookups[i].names);
        free(p->lookups[i].path);
    }
    free(p->lookups);
    p->lookups = NULL;
    p->n_lookups = 0;
}

static sd_status compute_key(sd_run_state *s, sd_cache *cache, sd_plan_node *p)
{
    sd_hasher h;
    sd_hasher_init(&h);
    sd_hasher_str(&h, "sdflow node");
    sd_hasher_i64(&h, SD_CACHE_KEY_FORMAT);
    sd_hasher_str(&h, p->desc->name);
    sd_hasher_i64(&h, p->desc->version);
    sd_hasher_i64(&h, (int64_t)p->desc->n_inputs);
    if (sd_context_bf16(s->ctx))
        sd_hasher_str(&h, "precision bf16"); /* fp32 keys stay as they were before precisions */
    for (size_t i = 0; i < p->desc->n_inputs; i++) {
        sd_plan_input *pi = &p->inputs[i];
        sd_status st = SD_OK;
        sd_hasher_str(&h, pi->desc->name);
        if (pi->src != SD_NO_SOURCE) {
            sd_hasher_i64(&h, 'L');
            sd_hasher_key(&h, &s->nodes[pi->src].key);
            sd_hasher_str(&h, s->nodes[pi->src].desc->outputs[pi->src_output].name);
        } else if (!pi->text || (!*pi->text && (pi->desc->flags & SD_IN_FILE))) {
            sd_hasher_i64(&h, 'U'); /* unset optional input */
        } else {
            sd_hasher_i64(&h, 'V');
            st = hash_literal(s, p, pi, &h);
            if (!st && (pi->desc->flags & SD_IN_FILE)) {
                sd_hasher_i64(&h, 'F');
                st = hash_file_input(s, cache, p, pi, &h);
            }
        }
        if (st)
            return st;
    }
    if (p->desc->files) {
        sd_node_files f = {.state = s, .node = p, .cache = cache, .h = &h};
        sd_status st = p->desc->files(&f);
        if (st) {
            sd_error_prefix(s->ctx, "node '%s' (%s)", p->gn->id, p->desc->name);
            return st;
        }
    }
    sd_hasher_final(&h, &p->key);
    return SD_OK;
}

bool sd_plan_storable(const sd_plan_node *p)
{
    if (p->desc->flags & (SD_NODE_NO_CACHE | SD_NODE_OUTPUT) || p->desc->n_outputs == 0)
        return false;
    for (size_t i = 0; i < p->desc->n_outputs; i++)
        switch (p->desc->outputs[i].type) {
        case SD_TYPE_MODEL: case SD_TYPE_CLIP: case SD_TYPE_VAE: case SD_TYPE_CONTROL_NET:
        case SD_TYPE_UPSCALE_MODEL: case SD_TYPE_GUIDER: case SD_TYPE_CLIP_VISION: case SD_TYPE_IPADAPTER:
        case SD_TYPE_INSIGHTFACE:
            return false; /* handles (weights) are never stored; loaders run lazily */
        default:
            break;
        }
    return true;
}

sd_status sd_plan_make(sd_run_state *s, const sd_run_options *o, sd_cache *cache)
{
    sd_status st = build_order(s);
    if (!st)
        st = mark_wanted(s, o);
    for (size_t k = 0; !st && k < s->n_nodes; k++) {
        if (s->ctx->interrupted)
            return sd_set_error(s->ctx, SD_ERR_INTERRUPTED, "interrupted");
        if (s->nodes[k].relevant)
            st = compute_key(s, cache, &s->nodes[k]);
    }
    if (st)
        return st;
    /* Backwards from the wanted nodes: a cached node needs nothing upstream; a node that runs
     * needs every node it links from. */
    for (size_t k = s->n_nodes; k-- > 0;) {
        sd_plan_node *p = &s->nodes[k];
        p->needed |= p->wanted;
        if (!p->needed)
            continue;
        if (cache && sd_plan_storable(p)) {
            double t = sd_run_clock();
            p->outputs = calloc(p->desc->n_outputs, sizeof *p->outputs);
            if (!p->outputs)
                return sd_set_error(s->ctx, SD_ERR_NOMEM, "out of memory");
            p->cached = sd_cache_get(cache, &p->key, p->desc->n_outputs, p->outputs);
            if (p->cached) {
                p->seconds = sd_run_clock() - t;
                if (++s->live > s->peak_live)
                    s->peak_live = s->live;
                continue;
            }
            free(p->outputs);
            p->outputs = NULL;
        }
        p->runs = true;
        for (size_t i = 0; i < p->desc->n_inputs; i++)
            if (p->inputs[i].src != SD_NO_SOURCE)
                s->nodes[p->inputs[i].src].needed = true;
    }
    for (size_t k = 0; k < s->n_nodes; k++) {
        sd_plan_node *p = &s->nodes[k];
        if (p->needed)
            p->index = ++s->n_needed;
        p->holds += p->wanted;
        for (size_t i = 0; p->runs && i < p->desc->n_inputs; i++)
            if (p->inputs[i].src != SD_NO_SOURCE)
                s->nodes[p->inputs[i].src].holds++;
    }
    return SD_OK;
}
