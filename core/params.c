/* Turning a reusable workflow into a concrete one: parameters become literal inputs; seeds
 * advanced between runs as ComfyUI's control_after_generate says. */
#include "core/graph.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sd_status sd_graph_inline_params(sd_graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        sd_graph_node *n = &g->nodes[i];
        for (size_t j = 0; j < n->n_inputs; j++) {
            sd_graph_input *in = &n->inputs[j];
            const sd_graph_param *p = in->kind == SD_BIND_PARAM ? sd_graph_find_param(g, in->param) : NULL;
            if (!p)
                continue; /* an undeclared parameter stays for validation to report */
            sd_status st = sd_graph_bind_literal(g, n, in->name, p->value ? p->value : p->def, in->line);
            if (st)
                return st;
        }
    }
    for (size_t i = 0; i < g->n_params; i++) {
        sd_graph_param *p = &g->params[i];
        free(p->name);
        free(p->type);
        free(p->def);
        free(p->doc);
        free(p->value);
    }
    g->n_params = 0;
    return SD_OK;
}

/* splitmix64: the next value of the caller's random state. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Writes the next value of one seed into buf; false when it stays (fixed, or not a number). */
static bool advance(const sd_input_desc *seed, const char *text, const char *control, uint64_t *state,
                    char *buf, size_t size)
{
    int64_t v;
    if (!text || !sd_input_parse_int(seed, text, &v))
        return false;
    uint64_t u = (uint64_t)v;
    bool wide = seed->max > 0x1p63; /* seeds wrap around 0 ... 2^64 - 1 */
    if (!strcmp(control, "increment"))
        u = wide || v < INT64_MAX ? u + 1 : u;
    else if (!strcmp(control, "decrement"))
        u = wide || v > INT64_MIN ? u - 1 : u;
    else if (!strcmp(control, "randomize"))
        u = wide ? next_random(state) : next_random(state) >> 1;
    else
        return false;
    if (wide)
        snprintf(buf, size, "%" PRIu64, u);
    else
        snprintf(buf, size, "%" PRId64, (int64_t)u);
    return true;
}

sd_status sd_graph_advance_seeds(sd_graph *g, uint64_t *random_state)
{
    char **done = calloc(g->n_nodes + 1, sizeof *done); /* parameters advanced already */
    size_t n_done = 0;
    if (!done)
        return sd_set_error(g->ctx, SD_ERR_NOMEM, "out of memory");
    sd_status st = SD_OK;
    for (size_t i = 0; !st && i < g->n_nodes; i++) {
        sd_graph_node *n = &g->nodes[i];
        for (size_t k = 1; n->desc && k < n->desc->n_inputs; k++) {
            const sd_input_desc *ctl = &n->desc->inputs[k], *seed = &n->desc->inputs[k - 1];
            if (strcmp(ctl->name, "control_after_generate") != 0 || seed->type != SD_TYPE_INT)
                continue;
            const sd_graph_input *in = sd_graph_node_input(n, seed->name);
            const char *control = sd_graph_input_text(g, n, ctl);
            char buf[32];
            if (!control || !advance(seed, sd_graph_input_text(g, n, seed), control, random_state, buf, sizeof buf))
                continue;
            if (in && in->kind == SD_BIND_PARAM) {
                bool seen = false;
                for (size_t j = 0; j < n_done && !seen; j++)
                    seen = !strcmp(done[j], in->param);
                if (seen)
                    continue;
                done[n_done++] = in->param;
                sd_graph_param *p = sd_graph_find_param(g, in->param);
                char *v = p ? sd_strdup(buf) : NULL;
                if (p && !v)
                    st = sd_set_error(g->ctx, SD_ERR_NOMEM, "out of memory");
                if (v) {
                    free(p->value);
                    p->value = v;
                }
            } else if (!in || in->kind == SD_BIND_LITERAL) {
                st = sd_graph_bind_literal(g, n, seed->name, buf, in ? in->line : 0);
            }
        }
    }
    free(done);
    return st;
}
