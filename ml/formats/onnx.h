/* ONNX model files (the InsightFace detector and recognizer packs, ml/onnx/, ml/vision/face_analysis.h):
 * parsed by protobuf-c with ONNX's own onnx.proto (Debian's libonnx-dev; protoc-c runs at build
 * time), then checked before anyone uses them: the file size, the message nesting depth, every
 * initializer's and Constant node's tensor (float or int64 only, in the file, dims >= 0 with an
 * overflow-checked element count, raw_data / float_data / int64_data sizes equal to the dims),
 * and node and value names present. Errors are one line naming the file (and tensor or node). */
#ifndef SD_ML_FORMATS_ONNX_H
#define SD_ML_FORMATS_ONNX_H

#include "core/context.h"
#include "onnx.pb-c.h"
#include <stddef.h>
#include <stdint.h>

#define SD_ONNX_MAX_DIMS 8
#define SD_ONNX_MAX_FILE ((size_t)1 << 30)     /* 1 GiB: glintr100.onnx is 261 MB */
#define SD_ONNX_MAX_ELEMS ((size_t)1 << 28)    /* elements of one tensor */

/* ONNX element types this reader supports. */
enum { SD_ONNX_FLOAT = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, SD_ONNX_INT64 = ONNX__TENSOR_PROTO__DATA_TYPE__INT64 };

typedef struct sd_onnx_file {
    char *path;               /* as opened, for messages */
    Onnx__ModelProto *model;  /* model->graph is non-NULL */
} sd_onnx_file;

/* A checked view of a TensorProto's data (owned by the file). */
typedef struct sd_onnx_tensor {
    const char *name;
    int dtype;                /* SD_ONNX_FLOAT or SD_ONNX_INT64 */
    int ndim;
    int64_t dims[SD_ONNX_MAX_DIMS];
    size_t numel;
    const void *data;         /* numel floats or int64s (little-endian host) */
} sd_onnx_tensor;

/* Reads and checks the ONNX file at path (through sd_file_open). SD_ERR_IO, SD_ERR_LIMIT (size,
 * nesting, dims), SD_ERR_PARSE (not a protobuf ModelProto, no graph), SD_ERR_INVALID (a tensor's
 * type, external data, sizes). *out is freed with sd_onnx_close. */
sd_status sd_onnx_open(sd_context *ctx, const char *path, sd_onnx_file **out);
/* The same from len bytes in memory; name stands for the file in messages. */
sd_status sd_onnx_parse(sd_context *ctx, const char *name, const uint8_t *data, size_t len, sd_onnx_file **out);
void sd_onnx_close(sd_onnx_file *f); /* NULL-safe */

/* The checked view of t (a tensor of f). Errors as sd_onnx_open's, naming f and the tensor. */
sd_status sd_onnx_tensor_view(sd_context *ctx, const sd_onnx_file *f, const Onnx__TensorProto *t, sd_onnx_tensor *out);

/* The declared dimensions of a graph input or output (-1 for a symbolic or missing one): the
 * number of dimensions, or -1 when it has no tensor shape (or more than SD_ONNX_MAX_DIMS). */
int sd_onnx_value_dims(const Onnx__ValueInfoProto *v, int64_t dims[SD_ONNX_MAX_DIMS]);

#endif
