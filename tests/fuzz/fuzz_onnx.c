/* Fuzzes the ONNX reader (ml/formats/onnx.c) as a model file reaches it: the bytes are written to
 * a file and opened with sd_onnx_open (size, nesting depth, protobuf-c's parse, every initializer
 * and Constant tensor checked); then the checked views and the declared input and output shapes
 * are read, and every float view is summed (each byte it claims must be readable). */
#include "fuzz_util.h"
#include "ml/formats/onnx.h"
#include <stdlib.h>

static void touch(const sd_onnx_tensor *t)
{
    volatile float sum = 0;
    for (size_t i = 0; t->dtype == SD_ONNX_FLOAT && i < t->numel; i++)
        sum += ((const float *)t->data)[i];
    for (size_t i = 0; t->dtype == SD_ONNX_INT64 && i < t->numel; i++)
        sum += (float)((const int64_t *)t->data)[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    const char *path = fuzz_write_file(data, size, ".onnx");
    sd_onnx_file *f = NULL;
    sd_status s = sd_onnx_open(ctx, path, &f);
    fuzz_check_error(ctx, s);
    if (s == SD_OK) {
        const Onnx__GraphProto *g = f->model->graph;
        sd_onnx_tensor t;
        for (size_t i = 0; i < g->n_initializer; i++) {
            if (sd_onnx_tensor_view(ctx, f, g->initializer[i], &t) != SD_OK)
                abort(); /* checked when opened */
            touch(&t);
        }
        int64_t dims[SD_ONNX_MAX_DIMS];
        for (size_t i = 0; i < g->n_input; i++)
            (void)sd_onnx_value_dims(g->input[i], dims);
        for (size_t i = 0; i < g->n_output; i++)
            (void)sd_onnx_value_dims(g->output[i], dims);
        sd_onnx_close(f);
    }
    return 0;
}
