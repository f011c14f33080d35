/* Fuzzes the safetensors reader (ml/formats/safetensors.c) as a model file reaches it: the bytes are
 * written to a file and opened with sd_safetensors_open (header length, strict JSON, dtypes,
 * shapes, offsets, metadata); every tensor of a weight dtype is converted to f32 and f16, and
 * the same file is loaded as a ComfyUI .latent by sd_load_latent (nodes/latent_file.c). */
#include "fuzz_util.h"
#include "ml/formats/safetensors.h"
#include "nodes/latent_file.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    const char *path = fuzz_write_file(data, size, ".safetensors");
    sd_safetensors *st = NULL;
    sd_status s = sd_safetensors_open(ctx, path, &st);
    fuzz_check_error(ctx, s);
    if (s == SD_OK) {
        for (size_t i = 0; i < sd_safetensors_count(st); i++) {
            const sd_st_tensor *t = sd_safetensors_at(st, i);
            if (sd_safetensors_find(st, t->name) == NULL)
                abort();
            if (!sd_st_dtype_is_weight(t->dtype) || t->numel > (1u << 20))
                continue;
            float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
            uint16_t *h = malloc((t->numel ? t->numel : 1) * sizeof *h);
            if (f && h) {
                fuzz_check_error(ctx, sd_safetensors_read_f32(ctx, st, t, f, t->numel));
                fuzz_check_error(ctx, sd_safetensors_read_f16(ctx, st, t, h, t->numel));
            }
            free(f);
            free(h);
        }
        (void)sd_safetensors_metadata(st, "format");
        (void)sd_safetensors_has_prefix(st, "model.");
        sd_safetensors_close(st);
    }
    sd_value *latent = NULL;
    s = sd_load_latent(ctx, path, &latent);
    fuzz_check_error(ctx, s);
    sd_value_unref(latent);
    return 0;
}
