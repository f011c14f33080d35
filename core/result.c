/* Run results: per-node outcome and time, written files, the wanted nodes' outputs. */
#include "core/run.h"
#include <stdlib.h>
#include <string.h>

typedef struct kept_output {
    char *node_id;
    const sd_node_desc *desc;
    sd_value **values; /* desc->n_outputs references */
} kept_output;

struct sd_result {
    sd_node_stat *stats;
    size_t n_stats, cap_stats;
    char **files;
    char **file_nodes; /* the node that wrote each file */
    size_t n_files;
    kept_output *kept;
    size_t n_kept;
    size_t peak_live;
};

sd_status sd_result_create(sd_result **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? SD_OK : SD_ERR_NOMEM;
}

void sd_result_free(sd_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_stats; i++) {
        free((char *)r->stats[i].node_id);
        free((char *)r->stats[i].node_type);
    }
    free(r->stats);
    for (size_t i = 0; i < r->n_files; i++) {
        free(r->files[i]);
        free(r->file_nodes[i]);
    }
    free(r->files);
    free(r->file_nodes);
    for (size_t i = 0; i < r->n_kept; i++) {
        for (size_t j = 0; j < r->kept[i].desc->n_outputs; j++)
            sd_value_unref(r->kept[i].values[j]);
        free(r->kept[i].values);
        free(r->kept[i].node_id);
    }
    free(r->kept);
    free(r);
}

sd_status sd_result_add_stat(sd_result *r, const char *node_id, const char *node_type,
                             sd_node_outcome outcome, double seconds)
{
    if (r->n_stats == r->cap_stats) {
        size_t cap = r->cap_stats ? r->cap_stats * 2 : 16;
        sd_node_stat *s = realloc(r->stats, cap * sizeof *s);
        if (!s)
            return SD_ERR_NOMEM;
        r->stats = s;
        r->cap_stats = cap;
    }
    sd_node_stat *s = &r->stats[r->n_stats];
    s->node_id = sd_strdup(node_id);
    s->node_type = sd_strdup(node_type);
    if (!s->node_id || !s->node_type) {
        free((char *)s->node_id);
        free((char *)s->node_type);
        return SD_ERR_NOMEM;
    }
    s->outcome = outcome;
    s->seconds = seconds;
    r->n_stats++;
    return SD_OK;
}

sd_status sd_result_add_file_path(sd_result *r, const char *node_id, const char *path)
{
    char **f = realloc(r->files, (r->n_files + 1) * sizeof *f);
    if (!f)
        return SD_ERR_NOMEM;
    r->files = f;
    char **fn = realloc(r->file_nodes, (r->n_files + 1) * sizeof *fn);
    if (!fn)
        return SD_ERR_NOMEM;
    r->file_nodes = fn;
    f[r->n_files] = sd_strdup(path);
    fn[r->n_files] = sd_strdup(node_id);
    if (!f[r->n_files] || !fn[r->n_files]) {
        free(f[r->n_files]);
        free(fn[r->n_files]);
        return SD_ERR_NOMEM;
    }
    r->n_files++;
    return SD_OK;
}

sd_status sd_result_keep(sd_result *r, const char *node_id, const sd_node_desc *desc, sd_value **values)
{
    kept_output *k = realloc(r->kept, (r->n_kept + 1) * sizeof *k);
    if (!k)
        return SD_ERR_NOMEM;
    r->kept = k;
    k = &k[r->n_kept];
    k->desc = desc;
    k->node_id = sd_strdup(node_id);
    k->values = calloc(desc->n_outputs ? desc->n_outputs : 1, sizeof *k->values);
    if (!k->node_id || !k->values) {
        free(k->node_id);
        free(k->values);
        return SD_ERR_NOMEM;
    }
    for (size_t i = 0; i < desc->n_outputs; i++)
        k->values[i] = sd_value_ref(values[i]);
    r->n_kept++;
    return SD_OK;
}

void sd_result_set_peak(sd_result *r, size_t peak_live)
{
    r->peak_live = peak_live;
}

size_t sd_result_peak_live(const sd_result *r)
{
    return r->peak_live;
}

size_t sd_result_node_count(const sd_result *r)
{
    return r ? r->n_stats : 0;
}

sd_status sd_result_node(const sd_result *r, size_t index, sd_node_stat *stat)
{
    if (!r || index >= r->n_stats)
        return SD_ERR_USAGE;
    *stat = r->stats[index];
    return SD_OK;
}

size_t sd_result_file_count(const sd_result *r)
{
    return r ? r->n_files : 0;
}

const char *sd_result_file(const sd_result *r, size_t index)
{
    return r && index < r->n_files ? r->files[index] : NULL;
}

const char *const *sd_result_files_from(const sd_result *r, size_t from, size_t *n)
{
    *n = r && from < r->n_files ? r->n_files - from : 0;
    return *n ? (const char *const *)r->files + from : NULL;
}

const char *sd_result_file_node(const sd_result *r, size_t index)
{
    return r && index < r->n_files ? r->file_nodes[index] : NULL;
}

/* The tensor that describes a value's shape: the first one ("image", "samples", "mask"...). */
static const sd_tensor *main_tensor(const sd_value *v)
{
    return v->n_tensors ? &v->tensors[0]->tensor : NULL;
}

/* The kept value of node_id's output and its socket type; NULL when absent. */
static const sd_value *find_output(const sd_result *r, const char *node_id, const char *output,
                                   sd_type *type)
{
    for (size_t i = 0; r && i < r->n_kept; i++) {
        const kept_output *k = &r->kept[i];
        if (strcmp(k->node_id, node_id) != 0)
            continue;
        int o = sd_node_desc_output(k->desc, output);
        if (o < 0 || !k->values[o])
            return NULL;
        if (type)
            *type = k->desc->outputs[o].type;
        return k->values[o];
    }
    return NULL;
}

sd_status sd_result_output(const sd_result *r, const char *node_id, const char *output,
                           sd_output_info *info)
{
    memset(info, 0, sizeof *info);
    sd_type type;
    const sd_value *v = find_output(r, node_id, output, &type);
    if (!v)
        return SD_ERR_NOT_FOUND;
    info->type = sd_type_name(type);
    info->i = v->i;
    info->f = v->f;
    info->b = v->b;
    info->s = v->s;
    const sd_tensor *t = main_tensor(v);
    if (t) {
        info->ndim = t->ndim;
        memcpy(info->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    }
    return SD_OK;
}

const sd_value *sd_result_value(const sd_result *r, const char *node_id, const char *output)
{
    return find_output(r, node_id, output, NULL);
}
