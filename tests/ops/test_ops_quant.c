/* Device dequantisation (runtime-opencl/ops_quant.h) of every ggml block type, bit for bit against
 * the host dequantiser (ml/formats/gguf.c, itself bit-exact against the gguf package) on the
 * golden GGUF file's tensors, to f32 and to f16; and its size checks. */
#include "test.h"
#include "ml/formats/gguf.h"
#include "runtime-opencl/ops_quant.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include <stdlib.h>
#include <string.h>

static void test_every_block_type(void)
{
    sd_context *ctx = ops_cl()->ctx;
    char *path = test_golden_path("gguf_blocks.gguf");
    sd_gguf *g = NULL;
    CHECK_EQ_INT(sd_gguf_open(ctx, path, &g), SD_OK);
    sd_safetensors *view = NULL; /* the raw blocks, read as weights.c reads them */
    CHECK_EQ_INT(g ? sd_gguf_tensor_view(ctx, g, &view) : SD_ERR_INVALID, SD_OK);
    int types = 0;
    for (size_t i = 0; view && i < sd_gguf_count(g); i++) {
        const sd_gguf_tensor *t = sd_gguf_at(g, i);
        size_t be, bb;
        sd_ggml_type_block(t->type, &be, &bb);
        if (be == 1)
            continue; /* F32, F16, BF16: not block types */
        types |= 1 << t->type;
        float *ref = malloc(t->numel * sizeof *ref), *ref16 = malloc(t->numel * sizeof *ref16);
        unsigned char *blocks = malloc(t->nbytes);
        const sd_st_tensor *vt = sd_safetensors_find(view, t->name);
        CHECK_EQ_INT(sd_gguf_read_f32(ctx, g, t, ref, t->numel), SD_OK);
        CHECK(vt && vt->dtype == SD_ST_GGML && vt->ggml_type == (int)t->type &&
              sd_safetensors_read_raw(ctx, view, vt, blocks) == SD_OK);
        for (size_t k = 0; k < t->numel; k++)
            ref16[k] = sd_half_to_float(sd_float_to_half(ref[k]));
        for (int f16 = 0; f16 < 2; f16++) {
            sd_dtensor *out = NULL;
            CHECK_EQ_INT(sd_op_dequantize(ops_cl(), (sd_qtype)t->type, blocks, t->nbytes,
                                          f16 ? SD_DTYPE_F16 : SD_DTYPE_F32, t->ndim, t->shape, &out),
                         SD_OK);
            if (!out)
                continue;
            float *got = ops_download(out);
            CHECK(out->ndim == t->ndim && out->numel == t->numel);
            CHECK_MSG(got && memcmp(got, f16 ? ref16 : ref, t->numel * sizeof *got) == 0,
                      "tensor %s (%s) to %s differs from the host dequantiser", t->name,
                      sd_ggml_type_name(t->type), f16 ? "f16" : "f32");
            free(got);
            sd_dtensor_free(out);
        }
        free(ref);
        free(ref16);
        free(blocks);
    }
    CHECK_EQ_INT(types, (1 << 2) | (1 << 3) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 12) | (1 << 13) | (1 << 14));
    sd_safetensors_close(view);
    sd_gguf_close(g);
    free(path);
}

static void test_size_errors(void)
{
    unsigned char blocks[68] = {0};
    int64_t shape[2] = {2, 32}, odd[1] = {48};
    sd_dtensor *out = NULL;
    CHECK_EQ_INT(sd_op_dequantize(ops_cl(), SD_QTYPE_Q8_0, blocks, 67, SD_DTYPE_F32, 2, shape, &out), SD_ERR_INVALID);
    CHECK(out == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ops_cl()->ctx),
                       "dequantize: 67 bytes of type 8 blocks (32 elements, 34 bytes each) do not hold a tensor of 64 "
                       "elements");
    CHECK_EQ_INT(sd_op_dequantize(ops_cl(), SD_QTYPE_Q8_0, blocks, 68, SD_DTYPE_F32, 1, odd, &out), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_op_dequantize(ops_cl(), (sd_qtype)10, blocks, 68, SD_DTYPE_F32, 2, shape, &out), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ops_cl()->ctx), "dequantize: unknown block type 10");
    CHECK_EQ_INT(sd_op_dequantize(ops_cl(), SD_QTYPE_Q8_0, blocks, 68, SD_DTYPE_F32, 2, shape, &out), SD_OK);
    float *got = out ? ops_download(out) : NULL;
    CHECK(got && got[0] == 0.0f && got[63] == 0.0f);
    free(got);
    sd_dtensor_free(out);
}

int main(void)
{
    if (!ops_cl())
        return 1;
    RUN(test_every_block_type);
    RUN(test_size_errors);
    ops_cl_release();
    return test_summary("test_ops_quant");
}
