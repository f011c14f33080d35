/* ONNX files through protobuf-c (ml/formats/onnx.h). */
#include "ml/formats/onnx.h"
#include "core/checked.h"
#include "core/files.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Deepest message nesting accepted (the InsightFace files nest 6 deep: graph, value info, type,
 * tensor type, shape, dimension); protobuf-c recurses once per level. */
#define MAX_DEPTH 48

static bool read_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The nesting depth of the protobuf wire data p[0..n) counted from depth, -1 when it is not
 * well-formed wire data (a string or bytes field, not a message); stops once past MAX_DEPTH.
 * This only bounds protobuf-c's recursion before it runs; protobuf-c does the parsing. */
static int wire_depth(const uint8_t *p, size_t n, int depth)
{
    int deepest = depth;
    size_t i = 0;
    while (i < n && deepest <= MAX_DEPTH) {
        uint64_t key, len;
        if (!read_varint(p, n, &i, &key) || key >> 3 == 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, n, &i, &len))
                return -1;
            break;
        case 1: len = 8; goto fixed;
        case 5: len = 4;
        fixed:
            if (len > n - i)
                return -1;
            i += len;
            break;
        case 2: {
            if (!read_varint(p, n, &i, &len) || len > n - i)
                return -1;
            int d = wire_depth(p + i, (size_t)len, depth + 1);
            if (d > deepest)
                deepest = d;
            i += len;
            break;
        }
        default:
            return -1;
        }
    }
    return deepest;
}

sd_status sd_onnx_tensor_view(sd_context *ctx, const sd_onnx_file *f, const Onnx__TensorProto *t, sd_onnx_tensor *out)
{
    const char *name = t->name ? t->name : "(unnamed)";
    memset(out, 0, sizeof *out);
    out->name = name;
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor %s: external data is not supported (keep the weights in the .onnx file)",
                            f->path, name);
    if (t->data_type != SD_ONNX_FLOAT && t->data_type != SD_ONNX_INT64)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor %s: data type %d is not supported (float or int64)", f->path,
                            name, (int)t->data_type);
    if (t->n_dims > SD_ONNX_MAX_DIMS)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: tensor %s: %zu dimensions (at most %d)", f->path, name, t->n_dims,
                            SD_ONNX_MAX_DIMS);
    size_t elem = t->data_type == SD_ONNX_FLOAT ? 4 : 8, bytes;
    if (!sd_shape_bytes(t->dims, (int)t->n_dims, elem, &bytes) || bytes / elem > SD_ONNX_MAX_ELEMS)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: tensor %s: dimensions negative or too large", f->path, name);
    out->dtype = t->data_type;
    out->ndim = (int)t->n_dims;
    if (t->n_dims)
        memcpy(out->dims, t->dims, t->n_dims * sizeof *t->dims);
    out->numel = bytes / elem;
    size_t have;
    if (t->has_raw_data) {
        have = t->raw_data.len;
        out->data = t->raw_data.data;
    } else if (t->data_type == SD_ONNX_FLOAT) {
        have = t->n_float_data * 4;
        out->data = t->float_data;
    } else {
        have = t->n_int64_data * 8;
        out->data = t->int64_data;
    }
    if (have != bytes)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor %s: %zu bytes of data for %zu elements", f->path, name, have,
                            out->numel);
    return SD_OK;
}

int sd_onnx_value_dims(const Onnx__ValueInfoProto *v, int64_t dims[SD_ONNX_MAX_DIMS])
{
    if (!v->type || v->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !v->type->tensor_type->shape)
        return -1;
    const Onnx__TensorShapeProto *s = v->type->tensor_type->shape;
    if (s->n_dim > SD_ONNX_MAX_DIMS)
        return -1;
    for (size_t i = 0; i < s->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = s->dim[i];
        dims[i] = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value >= 0 ? d->dim_value
                                                                                                              : -1;
    }
    return (int)s->n_dim;
}

/* Every tensor the graph holds (initializers, Constant nodes' values) checked; names present. */
static sd_status check_graph(sd_context *ctx, const sd_onnx_file *f)
{
    const Onnx__GraphProto *g = f->model->graph;
    sd_onnx_tensor v;
    sd_status st;
    for (size_t i = 0; i < g->n_initializer; i++)
        if ((st = sd_onnx_tensor_view(ctx, f, g->initializer[i], &v)))
            return st;
    if (g->n_sparse_initializer)
        return sd_set_error(ctx, SD_ERR_INVALID, "%s: sparse initializers are not supported", f->path);
    for (size_t i = 0; i < g->n_input + g->n_output; i++) {
        const Onnx__ValueInfoProto *io = i < g->n_input ? g->input[i] : g->output[i - g->n_input];
        if (!io->name || !io->name[0])
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: a graph input or output has no name", f->path);
    }
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        if (!n->op_type)
            return sd_set_error(ctx, SD_ERR_PARSE, "%s: node %zu has no operator", f->path, i);
        for (size_t k = 0; k < n->n_input + n->n_output; k++)
            if (!(k < n->n_input ? n->input[k] : n->output[k - n->n_input]))
                return sd_set_error(ctx, SD_ERR_PARSE, "%s: node %zu has an unnamed input or output", f->path, i);
        for (size_t k = 0; k < n->n_attribute; k++)
            if (n->attribute[k]->t && (st = sd_onnx_tensor_view(ctx, f, n->attribute[k]->t, &v)))
                return st;
    }
    return SD_OK;
}

sd_status sd_onnx_parse(sd_context *ctx, const char *name, const uint8_t *data, size_t len, sd_onnx_file **out)
{
    *out = NULL;
    if (len > SD_ONNX_MAX_FILE)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: %zu bytes is larger than an ONNX file may be here (%zu)", name, len,
                            SD_ONNX_MAX_FILE);
    if (wire_depth(data, len, 0) > MAX_DEPTH)
        return sd_set_error(ctx, SD_ERR_LIMIT, "%s: messages nested more than %d deep", name, MAX_DEPTH);
    sd_onnx_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", name);
    }
    f->model = onnx__model_proto__unpack(NULL, len, data);
    sd_status st = SD_OK;
    if (!f->model || !f->model->graph)
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: not an ONNX model (%s)", name,
                          f->model ? "no graph" : "malformed protobuf");
    else
        st = check_graph(ctx, f);
    if (st)
        sd_onnx_close(f);
    else
        *out = f;
    return st;
}

sd_status sd_onnx_open(sd_context *ctx, const char *path, sd_onnx_file **out)
{
    *out = NULL;
    int fd = -1;
    sd_file_id id;
    sd_status st = sd_file_open(ctx, path, &fd, &id);
    if (st)
        return st;
    uint8_t *buf = NULL;
    if ((uint64_t)id.size > SD_ONNX_MAX_FILE)
        st = sd_set_error(ctx, SD_ERR_LIMIT, "%s: %llu bytes is larger than an ONNX file may be here (%zu)", path,
                          (unsigned long long)id.size, SD_ONNX_MAX_FILE);
    else if (!(buf = malloc(id.size ? (size_t)id.size : 1)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory reading %llu bytes", path, (unsigned long long)id.size);
    else
        st = sd_file_read_at(ctx, fd, path, &id, 0, buf, (size_t)id.size);
    close(fd);
    if (!st)
        st = sd_onnx_parse(ctx, path, buf, (size_t)id.size, out);
    free(buf);
    return st;
}

void sd_onnx_close(sd_onnx_file *f)
{
    if (!f)
        return;
    if (f->model)
        onnx__model_proto__free_unpacked(f->model, NULL);
    free(f->path);
    free(f);
}
