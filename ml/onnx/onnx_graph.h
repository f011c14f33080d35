/* A small ONNX graph executor on the op library, for the operators of InsightFace's SCRFD
 * detectors and IResNet ArcFace recognizers as torch.onnx exports them (docs/faceid.md lists
 * them). Float tensors live on the device and run through the op API (conv2d, matmul, binary,
 * clamp, sigmoid, concat, nearest upsample); int64 shape arithmetic (Shape, Gather, Unsqueeze,
 * Concat, Slice, Cast, Constant chains) and the few small layout ops without a kernel (Transpose,
 * pooling, Div) run on the host. Nodes run in file order (ONNX requires topological order); a
 * value is freed after its last reader. */
#ifndef SD_ML_ONNX_GRAPH_H
#define SD_ML_ONNX_GRAPH_H

#include "ml/formats/onnx.h"
#include "runtime-opencl/tensor.h"

typedef struct sd_onnx_graph sd_onnx_graph;

/* A host float array (graph inputs and outputs). */
typedef struct sd_onnx_array {
    int ndim;
    int64_t dims[SD_ONNX_MAX_DIMS];
    size_t numel;
    float *data; /* owned by whoever made it (outputs: the caller, freed with sd_onnx_array_free) */
} sd_onnx_array;

/* Opens the ONNX file at path and checks that the executor knows every node's operator
 * ("FILE: node NAME: operator OP is not supported") and that the graph has exactly one input
 * that is not an initializer. Weights go to the device on first use. */
sd_status sd_onnx_graph_load(sd_cl *cl, const char *path, sd_onnx_graph **out);
/* The same from an opened file, which the graph then owns (closed on failure too). */
sd_status sd_onnx_graph_from_file(sd_cl *cl, sd_onnx_file *file, sd_onnx_graph **out);
void sd_onnx_graph_free(sd_onnx_graph *g); /* NULL-safe */

const sd_onnx_file *sd_onnx_graph_file(const sd_onnx_graph *g);
/* The graph's (non-initializer) input. */
const Onnx__ValueInfoProto *sd_onnx_graph_input(const sd_onnx_graph *g);
size_t sd_onnx_graph_output_count(const sd_onnx_graph *g);

/* Runs the graph on input (a float tensor of the input's rank); outs gets one new array per
 * graph output, in order (sd_onnx_graph_output_count of them). Errors name the file, the node
 * and its operator; on error no output is left allocated. */
sd_status sd_onnx_graph_run(sd_onnx_graph *g, const sd_onnx_array *input, sd_onnx_array *outs);
void sd_onnx_array_free(sd_onnx_array *a); /* frees data, NULL-safe */

#endif
