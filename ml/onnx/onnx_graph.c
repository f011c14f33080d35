/* The ONNX graph executor (ml/onnx/onnx_graph.h). */
#include "ml/onnx/onnx_graph.h"
#include "core/checked.h"
#include "runtime-opencl/ops.h"
#include "runtime-opencl/ops_basic.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One tensor value: float data on the device (dev) and/or the host (hf), or int64 on the host
 * (hi). Initializers borrow the file's data and keep their device copy across runs. */
typedef struct val {
    const char *name;
    int dtype; /* SD_ONNX_FLOAT or SD_ONNX_INT64 */
    int ndim;
    int64_t dims[SD_ONNX_MAX_DIMS];
    size_t numel;
    sd_dtensor *dev;
    float *hf;
    int64_t *hi;
    bool borrowed; /* hf / hi point into the file */
    bool constant; /* an initializer: lives as long as the graph */
} val;

struct sd_onnx_graph {
    sd_cl *cl;
    sd_onnx_file *file;
    const Onnx__ValueInfoProto *input;
    val *inits;
    size_t n_inits;
};

/* The state of one run. */
typedef struct run {
    sd_onnx_graph *g;
    sd_context *ctx;
    const Onnx__NodeProto *node;
    size_t node_index;
    val *vals; /* values computed so far (the graph input first) */
    size_t n_vals;
} run;

static const char *const known_ops[] = {
    "Conv", "BatchNormalization", "Relu", "PRelu", "LeakyRelu", "Sigmoid", "Add", "Sub", "Mul", "Div", "Concat",
    "Reshape", "Flatten", "Transpose", "Resize", "Upsample", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm",
    "MatMul", "Shape", "Gather", "Unsqueeze", "Squeeze", "Constant", "ConstantOfShape", "Cast", "Slice", "Identity",
    "Dropout", "Floor"};

static bool op_known(const char *op)
{
    for (size_t i = 0; i < sizeof known_ops / sizeof *known_ops; i++)
        if (!strcmp(op, known_ops[i]))
            return true;
    return false;
}

static const char *node_name(const Onnx__NodeProto *n)
{
    return n->name && n->name[0] ? n->name : n->n_output ? n->output[0] : "(unnamed)";
}

/* "FILE: node NAME (OP): message" on the context. */
static sd_status fail(run *r, sd_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sd_status fail(run *r, sd_status st, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sd_set_error(r->ctx, st, "%s: node %s (%s): %s", r->g->file->path, node_name(r->node), r->node->op_type,
                        msg);
}

/* Prefixes an op library error with the file and node. */
static sd_status op_fail(run *r, sd_status st)
{
    if (st)
        sd_error_prefix(r->ctx, "%s: node %s (%s)", r->g->file->path, node_name(r->node), r->node->op_type);
    return st;
}

static void val_clear(val *v)
{
    if (!v->constant || !v->borrowed) {
        free(v->hf);
        free(v->hi);
    }
    sd_dtensor_free(v->dev);
    v->dev = NULL;
    v->hf = NULL;
    v->hi = NULL;
}

/* ---- values ---- */

static sd_status set_dims(run *r, val *v, int ndim, const int64_t *dims)
{
    size_t bytes;
    if (ndim < 0 || ndim > SD_ONNX_MAX_DIMS || !sd_shape_bytes(dims, ndim, 8, &bytes) || bytes / 8 > SD_ONNX_MAX_ELEMS)
        return fail(r, SD_ERR_LIMIT, "an output shape is negative or too large");
    v->ndim = ndim;
    if (ndim)
        memcpy(v->dims, dims, (size_t)ndim * sizeof *dims);
    v->numel = bytes / 8;
    return SD_OK;
}

/* A new host value of dtype and shape (zeroed). */
static sd_status host_new(run *r, val *v, int dtype, int ndim, const int64_t *dims)
{
    sd_status st = set_dims(r, v, ndim, dims);
    if (st)
        return st;
    v->dtype = dtype;
    size_t n = v->numel ? v->numel : 1;
    if (dtype == SD_ONNX_FLOAT ? !(v->hf = calloc(n, 4)) : !(v->hi = calloc(n, 8)))
        return fail(r, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

/* v's float data on the host (downloaded once and kept). */
static sd_status need_host(run *r, val *v)
{
    if (v->dtype != SD_ONNX_FLOAT || v->hf)
        return SD_OK;
    if (!(v->hf = malloc((v->numel ? v->numel : 1) * 4)))
        return fail(r, SD_ERR_NOMEM, "out of memory");
    return op_fail(r, sd_dtensor_download(v->dev, v->hf));
}

/* v's data on the device (uploaded once and kept); int64 values are refused. */
static sd_status need_dev(run *r, val *v)
{
    if (v->dev)
        return SD_OK;
    if (v->dtype != SD_ONNX_FLOAT)
        return fail(r, SD_ERR_INVALID, "tensor %s is int64 where float data is needed", v->name);
    if (v->ndim > SD_TENSOR_MAX_DIMS)
        return fail(r, SD_ERR_INVALID, "tensor %s has %d dimensions (the device takes at most %d)", v->name, v->ndim,
                    SD_TENSOR_MAX_DIMS);
    int64_t one = 1; /* a scalar goes to the device as [1] */
    sd_status st = sd_dtensor_new(r->g->cl, SD_DTYPE_F32, v->ndim ? v->ndim : 1, v->ndim ? v->dims : &one, &v->dev);
    if (!st)
        st = sd_dtensor_upload(v->dev, v->hf);
    if (!st && v->constant)
        st = sd_dtensor_set_constant(v->dev);
    if (st) {
        sd_dtensor_free(v->dev);
        v->dev = NULL;
    }
    return op_fail(r, st);
}

/* Takes ownership of the device tensor t as v's data. */
static void take_dev(val *v, sd_dtensor *t)
{
    v->dtype = SD_ONNX_FLOAT;
    v->dev = t;
    v->ndim = t->ndim;
    memcpy(v->dims, t->shape, (size_t)t->ndim * sizeof *t->shape);
    v->numel = t->numel;
}

static val *find(run *r, const char *name)
{
    for (size_t i = r->n_vals; i-- > 0;)
        if (!strcmp(r->vals[i].name, name))
            return &r->vals[i];
    for (size_t i = 0; i < r->g->n_inits; i++)
        if (!strcmp(r->g->inits[i].name, name))
            return &r->g->inits[i];
    return NULL;
}

/* Input k of the current node; NULL when absent (optional inputs) and no error then. */
static val *in(run *r, size_t k)
{
    if (k >= r->node->n_input || !r->node->input[k][0])
        return NULL;
    return find(r, r->node->input[k]);
}

/* Input k, which must be present (an error naming it otherwise; *v NULL). */
static sd_status need_in(run *r, size_t k, val **v)
{
    *v = in(r, k);
    if (*v)
        return SD_OK;
    if (k >= r->node->n_input || !r->node->input[k][0])
        return fail(r, SD_ERR_INVALID, "input %zu is missing", k);
    return fail(r, SD_ERR_INVALID, "input %s is not computed before this node", r->node->input[k]);
}

/* ---- attributes ---- */

static const Onnx__AttributeProto *attr(run *r, const char *name)
{
    for (size_t i = 0; i < r->node->n_attribute; i++)
        if (r->node->attribute[i]->name && !strcmp(r->node->attribute[i]->name, name))
            return r->node->attribute[i];
    return NULL;
}

static int64_t attr_int(run *r, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(r, name);
    return a && a->has_i ? a->i : def;
}

static float attr_float(run *r, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(r, name);
    return a && a->has_f ? a->f : def;
}

static bool attr_str_is(run *r, const char *name, const char *def, const char *want)
{
    const Onnx__AttributeProto *a = attr(r, name);
    if (!a || !a->has_s)
        return !strcmp(def, want);
    return a->s.len == strlen(want) && !memcmp(a->s.data, want, a->s.len);
}

/* Integer list attribute into out[0..max); returns its length, def_n (with out pre-filled) when
 * absent, or -1 when longer than max. */
static int attr_ints(run *r, const char *name, int64_t *out, int max, int def_n)
{
    const Onnx__AttributeProto *a = attr(r, name);
    if (!a)
        return def_n;
    if (a->n_ints > (size_t)max)
        return -1;
    if (a->n_ints)
        memcpy(out, a->ints, a->n_ints * sizeof *out);
    return (int)a->n_ints;
}

/* Host int64 data of v (an int64 tensor, as shapes and indices are). */
static sd_status need_ints(run *r, const val *v, const char *what)
{
    if (v->dtype != SD_ONNX_INT64)
        return fail(r, SD_ERR_INVALID, "%s %s must be an int64 tensor", what, v->name);
    return SD_OK;
}

static int norm_axis(int64_t axis, int ndim)
{
    return (int)(axis < 0 ? axis + ndim : axis);
}

/* ---- device ops ---- */

static sd_status op_conv(run *r, val *out)
{
    val *x, *w, *b = in(r, 2);
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_in(r, 1, &w)) || (st = need_dev(r, x)) || (st = need_dev(r, w)) ||
        (b && (st = need_dev(r, b))))
        return st;
    int64_t strides[2] = {1, 1}, pads[4] = {0, 0, 0, 0}, dil[2] = {1, 1};
    if (attr_ints(r, "strides", strides, 2, 2) != 2 || attr_ints(r, "pads", pads, 4, 4) != 4 ||
        attr_ints(r, "dilations", dil, 2, 2) != 2 || (attr(r, "auto_pad") && !attr_str_is(r, "auto_pad", "", "NOTSET")))
        return fail(r, SD_ERR_INVALID, "only 2-D convolutions with explicit pads are supported");
    int64_t group = attr_int(r, "group", 1);
    bool sym = pads[0] == pads[2] && pads[1] == pads[3];
    sd_dtensor *y = NULL;
    if (group == 1 && dil[0] == 1 && dil[1] == 1 && sym && strides[0] >= 1 && strides[1] >= 1 && pads[0] >= 0 &&
        pads[1] >= 0 && strides[0] <= 64 && strides[1] <= 64 && pads[0] <= 64 && pads[1] <= 64) {
        sd_conv2d_params p = {.stride_h = (int)strides[0], .stride_w = (int)strides[1], .pad_h = (int)pads[0],
                              .pad_w = (int)pads[1]};
        st = sd_op_conv2d(r->g->cl, x->dev, w->dev, b ? b->dev : NULL, &p, &y);
    } else if (strides[0] == 1 && strides[1] == 1 && dil[0] == dil[1] && pads[0] == pads[1] && sym &&
               group >= 1 && group <= 1 << 20 && pads[0] >= 0 && pads[0] <= 64 && dil[0] >= 1 && dil[0] <= 64) {
        st = sd_op_conv2d_direct(r->g->cl, x->dev, w->dev, b ? b->dev : NULL, (int)group, (int)pads[0], (int)dil[0], &y);
    } else {
        return fail(r, SD_ERR_INVALID, "group %lld, strides %lldx%lld, dilations %lldx%lld, pads %lld,%lld,%lld,%lld not supported",
                    (long long)group, (long long)strides[0], (long long)strides[1], (long long)dil[0],
                    (long long)dil[1], (long long)pads[0], (long long)pads[1], (long long)pads[2], (long long)pads[3]);
    }
    if (st)
        return op_fail(r, st);
    take_dev(out, y);
    return SD_OK;
}

/* A host float tensor of shape [C, 1, ...] (ndim - 1 dims) for broadcasting over channel 1. */
static sd_status channel_vector(run *r, const float *data, int64_t c, int ndim, sd_dtensor **out)
{
    int64_t shape[SD_TENSOR_MAX_DIMS] = {c, 1, 1, 1, 1};
    sd_status st = sd_dtensor_new(r->g->cl, SD_DTYPE_F32, ndim - 1 > 0 ? ndim - 1 : 1, shape, out);
    if (!st)
        st = sd_dtensor_upload(*out, data);
    return op_fail(r, sd_dtensor_drop_on_error(out, st));
}

static sd_status op_batchnorm(run *r, val *out)
{
    val *x, *p[4];
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_dev(r, x)))
        return st;
    if (x->ndim < 2)
        return fail(r, SD_ERR_INVALID, "input has %d dimensions", x->ndim);
    int64_t c = x->dims[1];
    for (int k = 0; k < 4; k++)
        if ((st = need_in(r, (size_t)k + 1, &p[k])) || (st = need_host(r, p[k])))
            return st;
        else if (p[k]->dtype != SD_ONNX_FLOAT || (int64_t)p[k]->numel != c)
            return fail(r, SD_ERR_INVALID, "parameter %s has %zu elements for %lld channels", p[k]->name, p[k]->numel,
                        (long long)c);
    float eps = attr_float(r, "epsilon", 1e-5f);
    float *ab = malloc((size_t)c * 2 * sizeof *ab);
    if (!ab)
        return fail(r, SD_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < c; i++) { /* y = (x - mean) * gamma / sqrt(var + eps) + beta */
        ab[i] = p[0]->hf[i] / sqrtf(p[3]->hf[i] + eps);
        ab[c + i] = p[1]->hf[i] - p[2]->hf[i] * ab[i];
    }
    sd_dtensor *a = NULL, *b = NULL, *t = NULL, *y = NULL;
    if (!(st = channel_vector(r, ab, c, x->ndim, &a)) && !(st = channel_vector(r, ab + c, c, x->ndim, &b)) &&
        !(st = op_fail(r, sd_op_binary(r->g->cl, SD_BINARY_MUL, x->dev, a, &t))))
        st = op_fail(r, sd_op_binary(r->g->cl, SD_BINARY_ADD, t, b, &y));
    free(ab);
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    sd_dtensor_free(t);
    if (!st)
        take_dev(out, y);
    return st;
}

/* Relu, LeakyRelu and PRelu: max(x, 0) + slope * min(x, 0). */
static sd_status op_relu(run *r, val *out, const char *op)
{
    val *x, *s = NULL;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_dev(r, x)) ||
        (!strcmp(op, "PRelu") && ((st = need_in(r, 1, &s)) || (st = need_dev(r, s)))))
        return st;
    sd_cl *cl = r->g->cl;
    sd_dtensor *pos = NULL, *neg = NULL, *t = NULL, *y = NULL;
    st = sd_op_clamp(cl, x->dev, 0.0f, INFINITY, &pos);
    if (!st && !strcmp(op, "Relu")) {
        take_dev(out, pos);
        return SD_OK;
    }
    if (!st)
        st = sd_op_clamp(cl, x->dev, -INFINITY, 0.0f, &neg);
    if (!st)
        st = s ? sd_op_binary(cl, SD_BINARY_MUL, neg, s->dev, &t) : sd_op_scale(cl, neg, attr_float(r, "alpha", 0.01f), 0, &t);
    if (!st)
        st = sd_op_binary(cl, SD_BINARY_ADD, pos, t, &y);
    sd_dtensor_free(pos);
    sd_dtensor_free(neg);
    sd_dtensor_free(t);
    if (st)
        return op_fail(r, st);
    take_dev(out, y);
    return SD_OK;
}

static sd_status op_sigmoid(run *r, val *out)
{
    val *x;
    sd_dtensor *y = NULL;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_dev(r, x)) || (st = op_fail(r, sd_op_unary(r->g->cl, SD_UNARY_SIGMOID, x->dev, &y))))
        return st;
    take_dev(out, y);
    return SD_OK;
}

/* Gemm (A B^T-style products with optional bias) and MatMul. */
static sd_status op_matmul(run *r, val *out, bool gemm)
{
    val *a, *b, *c = gemm ? in(r, 2) : NULL;
    sd_status st;
    if ((st = need_in(r, 0, &a)) || (st = need_in(r, 1, &b)) || (st = need_dev(r, a)) || (st = need_dev(r, b)))
        return st;
    bool ta = gemm && attr_int(r, "transA", 0), tb = gemm && attr_int(r, "transB", 0);
    float alpha = gemm ? attr_float(r, "alpha", 1.0f) : 1.0f, beta = gemm ? attr_float(r, "beta", 1.0f) : 1.0f;
    sd_dtensor *y = NULL, *bias = NULL;
    if (c) {
        if ((st = need_host(r, c)))
            return st;
        int64_t n = tb ? b->dims[0] : b->dims[b->ndim - 1];
        if (c->dtype != SD_ONNX_FLOAT || (int64_t)c->numel != n)
            return fail(r, SD_ERR_INVALID, "only a bias of %lld elements is supported as C", (long long)n);
        float *cb = malloc((size_t)n * sizeof *cb);
        if (!cb)
            return fail(r, SD_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < n; i++)
            cb[i] = beta * c->hf[i];
        st = sd_dtensor_new(r->g->cl, SD_DTYPE_F32, 1, &n, &bias);
        if (!st)
            st = sd_dtensor_upload(bias, cb);
        free(cb);
    }
    if (!st)
        st = sd_op_matmul(r->g->cl, a->dev, ta, b->dev, tb, bias, SD_ACT_NONE, alpha, &y);
    sd_dtensor_free(bias);
    if (st)
        return op_fail(r, st);
    take_dev(out, y);
    return SD_OK;
}

static sd_status op_resize(run *r, val *out)
{
    val *x, *scales = NULL, *sizes = NULL;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_dev(r, x)))
        return st;
    bool upsample = !strcmp(r->node->op_type, "Upsample");
    scales = in(r, upsample ? 1 : 2);
    sizes = upsample ? NULL : in(r, 3);
    if (!attr_str_is(r, "mode", "nearest", "nearest") || x->ndim != 4)
        return fail(r, SD_ERR_INVALID, "only nearest resizing of 4-D tensors is supported");
    int64_t oh, ow;
    if (sizes && sizes->numel == 4) {
        if ((st = need_ints(r, sizes, "sizes")))
            return st;
        oh = sizes->hi[2];
        ow = sizes->hi[3];
    } else if (scales && scales->numel == 4) {
        if ((st = need_host(r, scales)))
            return st;
        if (scales->dtype != SD_ONNX_FLOAT || !(scales->hf[2] > 0 && scales->hf[2] <= 64 && scales->hf[3] > 0 &&
                                                 scales->hf[3] <= 64))
            return fail(r, SD_ERR_INVALID, "scales must be float, in (0, 64]");
        oh = (int64_t)floor((double)x->dims[2] * scales->hf[2]);
        ow = (int64_t)floor((double)x->dims[3] * scales->hf[3]);
    } else {
        return fail(r, SD_ERR_INVALID, "neither 4 scales nor 4 sizes are given");
    }
    /* torch's nearest is ONNX's asymmetric / floor; for exact 2x every mode picks the same pixels. */
    bool torch_nearest = upsample || (attr_str_is(r, "coordinate_transformation_mode", "half_pixel", "asymmetric") &&
                                      attr_str_is(r, "nearest_mode", "round_prefer_floor", "floor"));
    if (!torch_nearest && !(oh == 2 * x->dims[2] && ow == 2 * x->dims[3]))
        return fail(r, SD_ERR_INVALID, "only asymmetric/floor nearest resizing (torch's) is supported");
    if (oh < 1 || ow < 1 || oh > 1 << 16 || ow > 1 << 16)
        return fail(r, SD_ERR_LIMIT, "output size %lldx%lld", (long long)oh, (long long)ow);
    sd_dtensor *y = NULL;
    if ((st = op_fail(r, sd_op_upsample_nearest(r->g->cl, x->dev, oh, ow, &y))))
        return st;
    take_dev(out, y);
    return SD_OK;
}

/* ---- elementwise binary ops (device for Add / Mul / Sub on floats, host otherwise) ---- */

static sd_status bcast_shape(run *r, const val *a, const val *b, int *ndim, int64_t *dims)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - a->ndim ? 1 : a->dims[i - (n - a->ndim)];
        int64_t db = i < n - b->ndim ? 1 : b->dims[i - (n - b->ndim)];
        if (da != db && da != 1 && db != 1)
            return fail(r, SD_ERR_INVALID, "shapes of %s and %s do not broadcast", a->name, b->name);
        dims[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return SD_OK;
}

/* The flat index into v of output element i of an ndim/dims broadcast. */
static size_t bcast_index(const val *v, int ndim, const int64_t *dims, size_t i)
{
    size_t idx = 0, stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        size_t coord = i % (size_t)dims[d];
        i /= (size_t)dims[d];
        int vd = d - (ndim - v->ndim);
        if (vd >= 0) {
            if (v->dims[vd] != 1)
                idx += coord * stride;
            stride *= (size_t)v->dims[vd];
        }
    }
    return idx;
}

static double apply(char op, double a, double b)
{
    switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    default: return a / b;
    }
}

static sd_status binary_host(run *r, val *a, val *b, char op, val *out)
{
    sd_status st;
    if ((st = need_host(r, a)) || (st = need_host(r, b)))
        return st;
    if (a->dtype != b->dtype)
        return fail(r, SD_ERR_INVALID, "%s and %s have different element types", a->name, b->name);
    int ndim = 0;
    int64_t dims[SD_ONNX_MAX_DIMS];
    if ((st = bcast_shape(r, a, b, &ndim, dims)) || (st = host_new(r, out, a->dtype, ndim, dims)))
        return st;
    for (size_t i = 0; i < out->numel; i++) {
        size_t ia = bcast_index(a, ndim, dims, i), ib = bcast_index(b, ndim, dims, i);
        if (a->dtype == SD_ONNX_FLOAT) {
            float x = a->hf[ia], y = b->hf[ib];
            out->hf[i] = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y;
        } else {
            int64_t y = b->hi[ib];
            if (op == '/' && y == 0)
                return fail(r, SD_ERR_INVALID, "integer division by zero");
            out->hi[i] = (int64_t)apply(op, (double)a->hi[ia], (double)y);
        }
    }
    return SD_OK;
}

static sd_status op_binary(run *r, val *out, char op)
{
    val *a, *b;
    sd_status st;
    if ((st = need_in(r, 0, &a)) || (st = need_in(r, 1, &b)))
        return st;
    bool device = a->dtype == SD_ONNX_FLOAT && b->dtype == SD_ONNX_FLOAT && (a->dev || b->dev) && op != '/';
    if (!device)
        return binary_host(r, a, b, op, out);
    if ((st = need_dev(r, a)) || (st = need_dev(r, b)))
        return st;
    sd_dtensor *y = NULL, *nb = NULL;
    if (op == '-')
        st = sd_op_scale(r->g->cl, b->dev, -1.0f, 0.0f, &nb);
    if (!st)
        st = sd_op_binary(r->g->cl, op == '*' ? SD_BINARY_MUL : SD_BINARY_ADD, a->dev, nb ? nb : b->dev, &y);
    sd_dtensor_free(nb);
    if (st)
        return op_fail(r, st);
    take_dev(out, y);
    return SD_OK;
}

/* ---- layout ops ---- */

/* out = a copy of x with the shape ndim/dims (same element count). */
static sd_status reshape_to(run *r, val *x, int ndim, const int64_t *dims, val *out)
{
    sd_status st = set_dims(r, out, ndim, dims);
    if (st)
        return st;
    if (out->numel != x->numel)
        return fail(r, SD_ERR_INVALID, "cannot reshape %zu elements of %s to %zu", x->numel, x->name, out->numel);
    out->dtype = x->dtype;
    if (x->dev && ndim >= 1 && ndim <= SD_TENSOR_MAX_DIMS) {
        sd_dtensor *y = NULL;
        st = sd_dtensor_new(r->g->cl, SD_DTYPE_F32, x->dev->ndim, x->dev->shape, &y);
        if (!st)
            st = sd_dtensor_copy(y, x->dev);
        if (!st)
            st = sd_dtensor_reshape(y, ndim, dims);
        if ((st = op_fail(r, sd_dtensor_drop_on_error(&y, st))))
            return st;
        out->dev = y;
        return SD_OK;
    }
    if ((st = need_host(r, x)))
        return st;
    size_t bytes = (x->numel ? x->numel : 1) * (x->dtype == SD_ONNX_FLOAT ? 4 : 8);
    void *d = malloc(bytes);
    if (!d)
        return fail(r, SD_ERR_NOMEM, "out of memory");
    if (x->numel)
        memcpy(d, x->dtype == SD_ONNX_FLOAT ? (void *)x->hf : (void *)x->hi, bytes);
    if (x->dtype == SD_ONNX_FLOAT)
        out->hf = d;
    else
        out->hi = d;
    return SD_OK;
}

static sd_status op_reshape(run *r, val *out)
{
    val *x, *s;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_in(r, 1, &s)) || (st = need_ints(r, s, "shape")))
        return st;
    if (s->numel > SD_ONNX_MAX_DIMS)
        return fail(r, SD_ERR_LIMIT, "shape %s has %zu dimensions", s->name, s->numel);
    int64_t dims[SD_ONNX_MAX_DIMS], known = 1;
    int n = (int)s->numel, infer = -1;
    bool allowzero = attr_int(r, "allowzero", 0) != 0;
    for (int i = 0; i < n; i++) {
        dims[i] = s->hi[i];
        if (dims[i] == 0 && !allowzero) {
            if (i >= x->ndim)
                return fail(r, SD_ERR_INVALID, "shape %s copies dimension %d of a %d-D input", s->name, i, x->ndim);
            dims[i] = x->dims[i];
        }
        if (dims[i] == -1) {
            if (infer >= 0)
                return fail(r, SD_ERR_INVALID, "shape %s has two -1", s->name);
            infer = i;
        } else if (dims[i] < 0) {
            return fail(r, SD_ERR_INVALID, "shape %s has a negative dimension", s->name);
        } else if (__builtin_mul_overflow(known, dims[i], &known)) {
            return fail(r, SD_ERR_LIMIT, "shape %s is too large", s->name);
        }
    }
    if (infer >= 0)
        dims[infer] = known ? (int64_t)x->numel / known : 0;
    return reshape_to(r, x, n, dims, out);
}

static sd_status op_flatten(run *r, val *out)
{
    val *x;
    sd_status st = need_in(r, 0, &x);
    if (st)
        return st;
    int axis = norm_axis(attr_int(r, "axis", 1), x->ndim);
    if (axis < 0 || axis > x->ndim)
        return fail(r, SD_ERR_INVALID, "axis out of range");
    int64_t dims[2] = {1, 1};
    for (int i = 0; i < x->ndim; i++)
        dims[i >= axis] *= x->dims[i];
    return reshape_to(r, x, 2, dims, out);
}

/* Unsqueeze and Squeeze: axes from the attribute (opset < 13) or input 1. */
static sd_status op_squeeze(run *r, val *out, bool unsqueeze)
{
    val *x, *ax = in(r, 1);
    sd_status st = need_in(r, 0, &x);
    if (st)
        return st;
    int64_t axes[SD_ONNX_MAX_DIMS];
    int na;
    if (ax) {
        if ((st = need_ints(r, ax, "axes")))
            return st;
        if (ax->numel > SD_ONNX_MAX_DIMS)
            return fail(r, SD_ERR_LIMIT, "too many axes");
        na = (int)ax->numel;
        if (na)
            memcpy(axes, ax->hi, (size_t)na * sizeof *axes);
    } else if ((na = attr_ints(r, "axes", axes, SD_ONNX_MAX_DIMS, 0)) < 0) {
        return fail(r, SD_ERR_LIMIT, "too many axes");
    }
    int n = unsqueeze ? x->ndim + na : x->ndim;
    if (n > SD_ONNX_MAX_DIMS)
        return fail(r, SD_ERR_LIMIT, "too many dimensions");
    bool mark[SD_ONNX_MAX_DIMS] = {false};
    for (int i = 0; i < na; i++) {
        int a = norm_axis(axes[i], n);
        if (a < 0 || a >= n || (!unsqueeze && x->dims[a] != 1))
            return fail(r, SD_ERR_INVALID, "axis %lld out of range or not of size 1", (long long)axes[i]);
        mark[a] = true;
    }
    int64_t dims[SD_ONNX_MAX_DIMS];
    int k = 0, j = 0;
    for (int i = 0; i < n; i++) {
        if (unsqueeze)
            dims[k++] = mark[i] ? 1 : x->dims[j++];
        else if (!(mark[i] || (na == 0 && x->dims[i] == 1)))
            dims[k++] = x->dims[i];
    }
    return reshape_to(r, x, k, dims, out);
}

/* Transpose on the host (the detector heads' small [N, C, H, W] -> [N, H, W, C] outputs). */
static sd_status op_transpose(run *r, val *out)
{
    val *x;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_host(r, x)))
        return st;
    int64_t perm[SD_ONNX_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        perm[i] = x->ndim - 1 - i;
    if (attr_ints(r, "perm", perm, SD_ONNX_MAX_DIMS, x->ndim) != x->ndim)
        return fail(r, SD_ERR_INVALID, "perm does not match %d dimensions", x->ndim);
    int64_t dims[SD_ONNX_MAX_DIMS], stride[SD_ONNX_MAX_DIMS];
    bool seen[SD_ONNX_MAX_DIMS] = {false};
    for (int i = x->ndim - 1, s = 1; i >= 0; s *= (int)x->dims[i], i--)
        stride[i] = s;
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]])
            return fail(r, SD_ERR_INVALID, "perm is not a permutation");
        seen[perm[i]] = true;
        dims[i] = x->dims[perm[i]];
    }
    if ((st = host_new(r, out, x->dtype, x->ndim, dims)))
        return st;
    for (size_t i = 0; i < out->numel; i++) {
        size_t rem = i, src = 0;
        for (int d = x->ndim - 1; d >= 0; d--) {
            src += (rem % (size_t)dims[d]) * (size_t)stride[perm[d]];
            rem /= (size_t)dims[d];
        }
        if (x->dtype == SD_ONNX_FLOAT)
            out->hf[i] = x->hf[src];
        else
            out->hi[i] = x->hi[src];
    }
    return SD_OK;
}

/* MaxPool, AveragePool and GlobalAveragePool over [N, C, H, W] on the host. */
static sd_status op_pool(run *r, val *out)
{
    val *x;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_host(r, x)))
        return st;
    if (x->ndim != 4)
        return fail(r, SD_ERR_INVALID, "only 2-D pooling is supported");
    const char *op = r->node->op_type;
    bool max = !strcmp(op, "MaxPool"), global = !strcmp(op, "GlobalAveragePool");
    int64_t k[2] = {x->dims[2], x->dims[3]}, s[2] = {1, 1}, p[4] = {0, 0, 0, 0}, dil[2] = {1, 1};
    if (!global && (attr_ints(r, "kernel_shape", k, 2, 0) != 2 || attr_ints(r, "strides", s, 2, 2) != 2 ||
                    attr_ints(r, "pads", p, 4, 4) != 4 || attr_ints(r, "dilations", dil, 2, 2) != 2 ||
                    dil[0] != 1 || dil[1] != 1 || (attr(r, "auto_pad") && !attr_str_is(r, "auto_pad", "", "NOTSET"))))
        return fail(r, SD_ERR_INVALID, "only 2-D pooling with explicit kernel, strides and pads is supported");
    for (int i = 0; i < 2; i++)
        if (k[i] < 1 || k[i] > 64 || s[i] < 1 || s[i] > 64 || p[i] < 0 || p[i + 2] < 0 || p[i] >= k[i] || p[i + 2] >= k[i])
            return fail(r, SD_ERR_INVALID, "kernel, stride or pad out of range");
    bool ceil_mode = attr_int(r, "ceil_mode", 0) != 0, include_pad = attr_int(r, "count_include_pad", 0) != 0;
    int64_t in_hw[2] = {x->dims[2], x->dims[3]}, o[2];
    for (int i = 0; i < 2; i++) {
        int64_t span = in_hw[i] + p[i] + p[i + 2] - k[i];
        if (span < 0)
            return fail(r, SD_ERR_INVALID, "kernel larger than the padded input");
        o[i] = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
        if (ceil_mode && (o[i] - 1) * s[i] >= in_hw[i] + p[i]) /* the last window must start inside */
            o[i]--;
    }
    int64_t dims[4] = {x->dims[0], x->dims[1], o[0], o[1]};
    if ((st = host_new(r, out, SD_ONNX_FLOAT, 4, dims)))
        return st;
    size_t planes = (size_t)(dims[0] * dims[1]);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *src = x->hf + pl * (size_t)(in_hw[0] * in_hw[1]);
        float *dst = out->hf + pl * (size_t)(o[0] * o[1]);
        for (int64_t oy = 0; oy < o[0]; oy++)
            for (int64_t ox = 0; ox < o[1]; ox++) {
                int64_t y0 = oy * s[0] - p[0], x0 = ox * s[1] - p[1];
                float acc = max ? -INFINITY : 0.0f;
                int64_t cnt = 0, padded = 0;
                for (int64_t ky = y0; ky < y0 + k[0]; ky++)
                    for (int64_t kx = x0; kx < x0 + k[1]; kx++) {
                        if (ky < in_hw[0] + p[2] && kx < in_hw[1] + p[3])
                            padded++;
                        if (ky < 0 || kx < 0 || ky >= in_hw[0] || kx >= in_hw[1])
                            continue;
                        float v = src[ky * in_hw[1] + kx];
                        acc = max ? (v > acc || isnan(v) ? v : acc) : acc + v;
                        cnt++;
                    }
                dst[oy * o[1] + ox] = max ? acc : acc / (float)(include_pad ? padded : cnt ? cnt : 1);
            }
    }
    return SD_OK;
}

static sd_status op_concat(run *r, val *out)
{
    if (r->node->n_input < 1)
        return fail(r, SD_ERR_INVALID, "no inputs");
    val *first;
    sd_status st = need_in(r, 0, &first);
    if (st)
        return st;
    int axis = norm_axis(attr_int(r, "axis", 0), first->ndim);
    if (axis < 0 || axis >= first->ndim)
        return fail(r, SD_ERR_INVALID, "axis out of range");
    bool device = false;
    int64_t dims[SD_ONNX_MAX_DIMS];
    memcpy(dims, first->dims, sizeof dims);
    dims[axis] = 0;
    for (size_t k = 0; k < r->node->n_input; k++) {
        val *v;
        if ((st = need_in(r, k, &v)))
            return st;
        if (v->dtype != first->dtype || v->ndim != first->ndim)
            return fail(r, SD_ERR_INVALID, "inputs of different types or ranks");
        for (int d = 0; d < v->ndim; d++)
            if (d != axis && v->dims[d] != first->dims[d])
                return fail(r, SD_ERR_INVALID, "inputs of different shapes");
        dims[axis] += v->dims[axis];
        device |= v->dev != NULL;
    }
    if (device) {
        sd_dtensor *acc = NULL;
        for (size_t k = 0; k < r->node->n_input && !st; k++) {
            val *v = in(r, k);
            sd_dtensor *next = NULL;
            if (!(st = need_dev(r, v))) {
                if (!acc)
                    st = reshape_to(r, v, v->ndim, v->dims, out), acc = out->dev, out->dev = NULL;
                else if (!(st = op_fail(r, sd_op_concat(r->g->cl, acc, v->dev, axis, &next))))
                    sd_dtensor_free(acc), acc = next;
            }
        }
        if (st) {
            sd_dtensor_free(acc);
            return st;
        }
        take_dev(out, acc);
        return SD_OK;
    }
    if ((st = host_new(r, out, first->dtype, first->ndim, dims)))
        return st;
    size_t outer = 1, inner = first->dtype == SD_ONNX_FLOAT ? 4 : 8, off = 0;
    for (int d = 0; d < axis; d++)
        outer *= (size_t)dims[d];
    for (int d = axis + 1; d < first->ndim; d++)
        inner *= (size_t)dims[d];
    char *dst = first->dtype == SD_ONNX_FLOAT ? (char *)out->hf : (char *)out->hi;
    for (size_t k = 0; k < r->node->n_input; k++) {
        val *v = in(r, k);
        if ((st = need_host(r, v)))
            return st;
        const char *src = v->dtype == SD_ONNX_FLOAT ? (const char *)v->hf : (const char *)v->hi;
        size_t row = (size_t)v->dims[axis] * inner;
        for (size_t o = 0; o < outer; o++)
            if (row)
                memcpy(dst + o * (size_t)dims[axis] * inner + off, src + o * row, row);
        off += row;
    }
    return SD_OK;
}

/* ---- shape arithmetic on the host ---- */

static sd_status op_shape(run *r, val *out)
{
    val *x;
    sd_status st = need_in(r, 0, &x);
    if (st)
        return st;
    int start = norm_axis(attr_int(r, "start", 0), x->ndim), end = norm_axis(attr_int(r, "end", x->ndim), x->ndim);
    start = start < 0 ? 0 : start > x->ndim ? x->ndim : start;
    end = end < start ? start : end > x->ndim ? x->ndim : end;
    int64_t n = end - start;
    if ((st = host_new(r, out, SD_ONNX_INT64, 1, &n)))
        return st;
    memcpy(out->hi, x->dims + start, (size_t)n * sizeof *out->hi);
    return SD_OK;
}

static sd_status op_gather(run *r, val *out)
{
    val *x, *idx;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_in(r, 1, &idx)) || (st = need_ints(r, idx, "indices")) ||
        (st = need_host(r, x)))
        return st;
    int axis = norm_axis(attr_int(r, "axis", 0), x->ndim);
    if (axis < 0 || axis >= x->ndim || x->ndim - 1 + idx->ndim > SD_ONNX_MAX_DIMS)
        return fail(r, SD_ERR_INVALID, "axis out of range");
    int64_t dims[SD_ONNX_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < axis; d++)
        dims[n++] = x->dims[d];
    for (int d = 0; d < idx->ndim; d++)
        dims[n++] = idx->dims[d];
    for (int d = axis + 1; d < x->ndim; d++)
        dims[n++] = x->dims[d];
    if ((st = host_new(r, out, x->dtype, n, dims)))
        return st;
    size_t outer = 1, inner = x->dtype == SD_ONNX_FLOAT ? 4 : 8, len = (size_t)x->dims[axis];
    for (int d = 0; d < axis; d++)
        outer *= (size_t)x->dims[d];
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= (size_t)x->dims[d];
    const char *src = x->dtype == SD_ONNX_FLOAT ? (const char *)x->hf : (const char *)x->hi;
    char *dst = x->dtype == SD_ONNX_FLOAT ? (char *)out->hf : (char *)out->hi;
    for (size_t o = 0; o < outer; o++)
        for (size_t j = 0; j < idx->numel; j++) {
            int64_t i = idx->hi[j] < 0 ? idx->hi[j] + (int64_t)len : idx->hi[j];
            if (i < 0 || (size_t)i >= len)
                return fail(r, SD_ERR_INVALID, "index %lld out of range", (long long)idx->hi[j]);
            memcpy(dst + (o * idx->numel + j) * inner, src + (o * len + (size_t)i) * inner, inner);
        }
    return SD_OK;
}

/* Slice with positive steps (inputs of opset 10+, attributes before). */
static sd_status op_slice(run *r, val *out)
{
    val *x, *sv = in(r, 1), *ev = in(r, 2), *av = in(r, 3), *pv = in(r, 4);
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_host(r, x)))
        return st;
    int64_t starts[SD_ONNX_MAX_DIMS], ends[SD_ONNX_MAX_DIMS], axes[SD_ONNX_MAX_DIMS], steps[SD_ONNX_MAX_DIMS];
    int n;
    if (sv) {
        const val *lists[4] = {sv, ev, av, pv};
        int64_t *dst[4] = {starts, ends, axes, steps};
        n = (int)sv->numel;
        for (int l = 0; l < 4; l++) {
            if (!lists[l] && l >= 2)
                continue;
            if (!lists[l] || (st = need_ints(r, lists[l], "slice parameter")) || (int)lists[l]->numel != n ||
                n > SD_ONNX_MAX_DIMS)
                return st ? st : fail(r, SD_ERR_INVALID, "slice parameters of different lengths");
            if (n)
                memcpy(dst[l], lists[l]->hi, (size_t)n * sizeof(int64_t));
        }
        if (!av)
            for (int i = 0; i < n; i++)
                axes[i] = i;
        if (!pv)
            for (int i = 0; i < n; i++)
                steps[i] = 1;
    } else {
        n = attr_ints(r, "starts", starts, SD_ONNX_MAX_DIMS, 0);
        for (int i = 0; i < SD_ONNX_MAX_DIMS; i++)
            axes[i] = i, steps[i] = 1;
        if (n < 0 || attr_ints(r, "ends", ends, SD_ONNX_MAX_DIMS, 0) != n || attr_ints(r, "axes", axes, SD_ONNX_MAX_DIMS, n) != n)
            return fail(r, SD_ERR_INVALID, "starts, ends and axes of different lengths");
    }
    int64_t lo[SD_ONNX_MAX_DIMS] = {0}, dims[SD_ONNX_MAX_DIMS], step[SD_ONNX_MAX_DIMS];
    memcpy(dims, x->dims, sizeof dims);
    for (int d = 0; d < SD_ONNX_MAX_DIMS; d++)
        step[d] = 1;
    for (int i = 0; i < n; i++) {
        int a = norm_axis(axes[i], x->ndim);
        if (a < 0 || a >= x->ndim || steps[i] < 1)
            return fail(r, SD_ERR_INVALID, "axis out of range or a step below 1");
        int64_t len = x->dims[a], s = starts[i] < 0 ? starts[i] + len : starts[i], e = ends[i] < 0 ? ends[i] + len : ends[i];
        s = s < 0 ? 0 : s > len ? len : s;
        e = e < s ? s : e > len ? len : e;
        lo[a] = s;
        step[a] = steps[i];
        dims[a] = (e - s + steps[i] - 1) / steps[i];
    }
    if ((st = host_new(r, out, x->dtype, x->ndim, dims)))
        return st;
    for (size_t i = 0; i < out->numel; i++) {
        size_t rem = i, src = 0, stride = 1;
        for (int d = x->ndim - 1; d >= 0; d--) {
            src += (size_t)(lo[d] + (int64_t)(rem % (size_t)dims[d]) * step[d]) * stride;
            rem /= (size_t)dims[d];
            stride *= (size_t)x->dims[d];
        }
        if (x->dtype == SD_ONNX_FLOAT)
            out->hf[i] = x->hf[src];
        else
            out->hi[i] = x->hi[src];
    }
    return SD_OK;
}

/* A host value holding a copy of the checked tensor t. */
static sd_status from_tensor(run *r, const sd_onnx_tensor *t, val *out)
{
    sd_status st = host_new(r, out, t->dtype, t->ndim, t->dims);
    if (!st && t->numel)
        memcpy(t->dtype == SD_ONNX_FLOAT ? (void *)out->hf : (void *)out->hi, t->data, t->numel * (t->dtype == SD_ONNX_FLOAT ? 4 : 8));
    return st;
}

static sd_status op_constant(run *r, val *out)
{
    const Onnx__AttributeProto *a = attr(r, "value");
    sd_onnx_tensor t;
    if (a && a->t) {
        sd_status st = sd_onnx_tensor_view(r->ctx, r->g->file, a->t, &t);
        return st ? st : from_tensor(r, &t, out);
    }
    if ((a = attr(r, "value_float")) && a->has_f) {
        sd_status st = host_new(r, out, SD_ONNX_FLOAT, 0, NULL);
        if (!st)
            out->hf[0] = a->f;
        return st;
    }
    if ((a = attr(r, "value_int")) && a->has_i) {
        sd_status st = host_new(r, out, SD_ONNX_INT64, 0, NULL);
        if (!st)
            out->hi[0] = a->i;
        return st;
    }
    if ((a = attr(r, "value_ints"))) {
        int64_t n = (int64_t)a->n_ints;
        sd_status st = host_new(r, out, SD_ONNX_INT64, 1, &n);
        if (!st && n)
            memcpy(out->hi, a->ints, a->n_ints * sizeof *a->ints);
        return st;
    }
    return fail(r, SD_ERR_INVALID, "only tensor, float, int and ints constants are supported");
}

static sd_status op_constant_of_shape(run *r, val *out)
{
    val *s;
    sd_status st;
    if ((st = need_in(r, 0, &s)) || (st = need_ints(r, s, "shape")))
        return st;
    if (s->numel > SD_ONNX_MAX_DIMS)
        return fail(r, SD_ERR_LIMIT, "too many dimensions");
    const Onnx__AttributeProto *a = attr(r, "value");
    sd_onnx_tensor t = {.dtype = SD_ONNX_FLOAT};
    if (a && a->t && ((st = sd_onnx_tensor_view(r->ctx, r->g->file, a->t, &t)) || t.numel != 1))
        return st ? st : fail(r, SD_ERR_INVALID, "value must have one element");
    if ((st = host_new(r, out, t.dtype, (int)s->numel, s->hi)))
        return st;
    for (size_t i = 0; t.data && i < out->numel; i++)
        if (t.dtype == SD_ONNX_FLOAT)
            out->hf[i] = *(const float *)t.data;
        else
            out->hi[i] = *(const int64_t *)t.data;
    return SD_OK;
}

/* Cast between float and int64 (others refused); Floor. */
static sd_status op_cast(run *r, val *out, bool floor_op)
{
    val *x;
    sd_status st;
    if ((st = need_in(r, 0, &x)) || (st = need_host(r, x)))
        return st;
    int64_t to = floor_op ? x->dtype : attr_int(r, "to", 0);
    if (to != SD_ONNX_FLOAT && to != SD_ONNX_INT64)
        return fail(r, SD_ERR_INVALID, "cast to type %lld is not supported (float or int64)", (long long)to);
    if ((st = host_new(r, out, (int)to, x->ndim, x->dims)))
        return st;
    for (size_t i = 0; i < x->numel; i++) {
        double v = x->dtype == SD_ONNX_FLOAT ? (double)x->hf[i] : (double)x->hi[i];
        if (floor_op)
            v = floor(v);
        if (to == SD_ONNX_FLOAT)
            out->hf[i] = (float)v;
        else if (!(v > -9.2e18 && v < 9.2e18))
            return fail(r, SD_ERR_INVALID, "value out of the int64 range");
        else
            out->hi[i] = (int64_t)v;
    }
    return SD_OK;
}

static sd_status op_identity(run *r, val *out)
{
    val *x;
    sd_status st = need_in(r, 0, &x);
    return st ? st : reshape_to(r, x, x->ndim, x->dims, out);
}

static sd_status run_node(run *r, val *out)
{
    const char *op = r->node->op_type;
    if (!strcmp(op, "Conv")) return op_conv(r, out);
    if (!strcmp(op, "BatchNormalization")) return op_batchnorm(r, out);
    if (!strcmp(op, "Relu") || !strcmp(op, "PRelu") || !strcmp(op, "LeakyRelu")) return op_relu(r, out, op);
    if (!strcmp(op, "Sigmoid")) return op_sigmoid(r, out);
    if (!strcmp(op, "Add")) return op_binary(r, out, '+');
    if (!strcmp(op, "Sub")) return op_binary(r, out, '-');
    if (!strcmp(op, "Mul")) return op_binary(r, out, '*');
    if (!strcmp(op, "Div")) return op_binary(r, out, '/');
    if (!strcmp(op, "Concat")) return op_concat(r, out);
    if (!strcmp(op, "Reshape")) return op_reshape(r, out);
    if (!strcmp(op, "Flatten")) return op_flatten(r, out);
    if (!strcmp(op, "Transpose")) return op_transpose(r, out);
    if (!strcmp(op, "Resize") || !strcmp(op, "Upsample")) return op_resize(r, out);
    if (!strcmp(op, "MaxPool") || !strcmp(op, "AveragePool") || !strcmp(op, "GlobalAveragePool")) return op_pool(r, out);
    if (!strcmp(op, "Gemm")) return op_matmul(r, out, true);
    if (!strcmp(op, "MatMul")) return op_matmul(r, out, false);
    if (!strcmp(op, "Shape")) return op_shape(r, out);
    if (!strcmp(op, "Gather")) return op_gather(r, out);
    if (!strcmp(op, "Unsqueeze")) return op_squeeze(r, out, true);
    if (!strcmp(op, "Squeeze")) return op_squeeze(r, out, false);
    if (!strcmp(op, "Constant")) return op_constant(r, out);
    if (!strcmp(op, "ConstantOfShape")) return op_constant_of_shape(r, out);
    if (!strcmp(op, "Cast")) return op_cast(r, out, false);
    if (!strcmp(op, "Floor")) return op_cast(r, out, true);
    if (!strcmp(op, "Slice")) return op_slice(r, out);
    return op_identity(r, out); /* Identity, Dropout (inference) */
}

/* True when value name is read by a node after index `after` or is a graph output. */
static bool used_later(const sd_onnx_graph *g, const char *name, size_t after)
{
    const Onnx__GraphProto *gp = g->file->model->graph;
    for (size_t i = 0; i < gp->n_output; i++)
        if (!strcmp(gp->output[i]->name, name))
            return true;
    for (size_t i = after + 1; i < gp->n_node; i++)
        for (size_t k = 0; k < gp->node[i]->n_input; k++)
            if (!strcmp(gp->node[i]->input[k], name))
                return true;
    return false;
}

static bool is_initializer(const Onnx__GraphProto *gp, const char *name)
{
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && !strcmp(gp->initializer[i]->name, name))
            return true;
    return false;
}

sd_status sd_onnx_graph_load(sd_cl *cl, const char *path, sd_onnx_graph **out)
{
    *out = NULL;
    sd_onnx_file *f = NULL;
    sd_status st = sd_onnx_open(cl->ctx, path, &f);
    return st ? st : sd_onnx_graph_from_file(cl, f, out);
}

sd_status sd_onnx_graph_from_file(sd_cl *cl, sd_onnx_file *file, sd_onnx_graph **out)
{
    *out = NULL;
    sd_context *ctx = cl->ctx;
    const char *path = file->path;
    sd_onnx_graph *g = calloc(1, sizeof *g);
    if (!g) {
        sd_onnx_close(file);
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    g->cl = cl;
    g->file = file;
    sd_status st = SD_OK;
    const Onnx__GraphProto *gp = g->file->model->graph;
    for (size_t i = 0; i < gp->n_node && !st; i++)
        if (!op_known(gp->node[i]->op_type) || (gp->node[i]->domain && gp->node[i]->domain[0] &&
                                                strcmp(gp->node[i]->domain, "ai.onnx")))
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: node %s: operator %s is not supported", path,
                              node_name(gp->node[i]), gp->node[i]->op_type);
        else if (gp->node[i]->n_output < 1)
            st = sd_set_error(ctx, SD_ERR_INVALID, "%s: node %s: no output", path, node_name(gp->node[i]));
    for (size_t i = 0; i < gp->n_input && !st; i++)
        if (!is_initializer(gp, gp->input[i]->name)) {
            if (g->input)
                st = sd_set_error(ctx, SD_ERR_INVALID, "%s: the graph has more than one input", path);
            g->input = gp->input[i];
        }
    if (!st && !g->input)
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: the graph has no input", path);
    if (!st && !(g->inits = calloc(gp->n_initializer + 1, sizeof *g->inits)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < gp->n_initializer && !st; i++) {
        sd_onnx_tensor t;
        if ((st = sd_onnx_tensor_view(ctx, g->file, gp->initializer[i], &t)))
            break;
        val *v = &g->inits[g->n_inits++];
        v->name = t.name;
        v->dtype = t.dtype;
        v->ndim = t.ndim;
        memcpy(v->dims, t.dims, sizeof v->dims);
        v->numel = t.numel;
        v->constant = true;
        v->borrowed = t.numel > 0; /* an empty tensor gets a buffer of its own (its data may be NULL) */
        if (!v->borrowed && (t.dtype == SD_ONNX_FLOAT ? !(v->hf = calloc(1, 4)) : !(v->hi = calloc(1, 8)))) {
            st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        if (v->borrowed && t.dtype == SD_ONNX_FLOAT)
            v->hf = (float *)t.data;
        else if (v->borrowed)
            v->hi = (int64_t *)t.data;
    }
    if (st)
        sd_onnx_graph_free(g);
    else
        *out = g;
    return st;
}

void sd_onnx_graph_free(sd_onnx_graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_inits; i++)
        val_clear(&g->inits[i]);
    free(g->inits);
    sd_onnx_close(g->file);
    free(g);
}

const sd_onnx_file *sd_onnx_graph_file(const sd_onnx_graph *g) { return g->file; }
const Onnx__ValueInfoProto *sd_onnx_graph_input(const sd_onnx_graph *g) { return g->input; }
size_t sd_onnx_graph_output_count(const sd_onnx_graph *g) { return g->file->model->graph->n_output; }

void sd_onnx_array_free(sd_onnx_array *a)
{
    if (a) {
        free(a->data);
        a->data = NULL;
    }
}

/* Moves graph output value v into the host array a. */
static sd_status take_output(run *r, val *v, sd_onnx_array *a)
{
    sd_status st = need_host(r, v);
    if (st)
        return st;
    if (v->dtype != SD_ONNX_FLOAT)
        return sd_set_error(r->ctx, SD_ERR_INVALID, "%s: output %s is not a float tensor", r->g->file->path, v->name);
    a->ndim = v->ndim;
    memcpy(a->dims, v->dims, sizeof a->dims);
    a->numel = v->numel;
    if (v->borrowed) {
        if (!(a->data = malloc((v->numel ? v->numel : 1) * 4)))
            return sd_set_error(r->ctx, SD_ERR_NOMEM, "%s: out of memory", r->g->file->path);
        if (v->numel)
            memcpy(a->data, v->hf, v->numel * 4);
    } else {
        a->data = v->hf;
        v->hf = NULL;
    }
    return SD_OK;
}

sd_status sd_onnx_graph_run(sd_onnx_graph *g, const sd_onnx_array *input, sd_onnx_array *outs)
{
    const Onnx__GraphProto *gp = g->file->model->graph;
    run r = {.g = g, .ctx = g->cl->ctx};
    size_t n_out = gp->n_output;
    memset(outs, 0, n_out * sizeof *outs);
    if (!(r.vals = calloc(gp->n_node + 1, sizeof *r.vals)))
        return sd_set_error(r.ctx, SD_ERR_NOMEM, "%s: out of memory", g->file->path);
    val *x = &r.vals[r.n_vals++];
    x->name = g->input->name;
    x->dtype = SD_ONNX_FLOAT;
    x->ndim = input->ndim;
    memcpy(x->dims, input->dims, sizeof x->dims);
    x->numel = input->numel;
    x->hf = input->data;
    x->borrowed = true;
    sd_status st = SD_OK;
    if (x->ndim < 1 || x->ndim > SD_TENSOR_MAX_DIMS)
        st = sd_set_error(r.ctx, SD_ERR_INVALID, "%s: input %s: %d dimensions", g->file->path, x->name, x->ndim);
    else if ((st = sd_dtensor_new(g->cl, SD_DTYPE_F32, x->ndim, x->dims, &x->dev)) || (st = sd_dtensor_upload(x->dev, x->hf)))
        sd_error_prefix(r.ctx, "%s: input %s", g->file->path, x->name);
    x->hf = NULL;
    for (size_t i = 0; i < gp->n_node && !st; i++) {
        r.node = gp->node[i];
        r.node_index = i;
        if (r.ctx->interrupted) {
            st = sd_set_error(r.ctx, SD_ERR_INTERRUPTED, "interrupted");
            break;
        }
        val *v = &r.vals[r.n_vals];
        v->name = r.node->output[0];
        if ((st = run_node(&r, v))) {
            val_clear(v);
            break;
        }
        r.n_vals++;
        for (size_t k = 0; k < r.node->n_input; k++) { /* free what no later node reads */
            val *u = in(&r, k);
            if (u && !u->constant && (u->dev || u->hf || u->hi) && !used_later(g, u->name, i))
                val_clear(u);
        }
    }
    for (size_t o = 0; o < n_out && !st; o++) {
        val *v = find(&r, gp->output[o]->name);
        st = v ? take_output(&r, v, &outs[o])
               : sd_set_error(r.ctx, SD_ERR_INVALID, "%s: output %s is never computed", g->file->path, gp->output[o]->name);
    }
    for (size_t i = 0; i < r.n_vals; i++)
        val_clear(&r.vals[i]);
    free(r.vals);
    if (st)
        for (size_t o = 0; o < n_out; o++)
            sd_onnx_array_free(&outs[o]);
    return st;
}
