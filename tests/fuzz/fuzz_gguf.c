/* Fuzzes the GGUF reader (ml/formats/gguf.c) as a model file reaches it: the bytes are written to
 * a file and opened with sd_gguf_open (header, metadata of every value type, tensor infos,
 * alignment, layout, orig_shape overrides); every metadata value is read through the typed
 * accessors, every tensor of up to 1M elements is dequantised to f32, and the tensor view goes
 * through family detection, the T5 llama.cpp renaming and T5 inspection (config from shapes). */
#include "fuzz_util.h"
#include "ml/families/family.h"
#include "ml/formats/gguf.h"
#include "ml/text/t5.h"
#include <stdlib.h>

static void read_kv(const sd_gguf_kv *kv)
{
    int64_t i;
    double d;
    size_t len;
    (void)sd_gguf_kv_int(kv, &i);
    (void)sd_gguf_kv_float(kv, &d);
    (void)sd_gguf_kv_string(kv, &len);
    for (uint64_t k = 0; kv->type == SD_GGUF_ARRAY && k < kv->count && k < 64; k++) {
        (void)sd_gguf_kv_array_int(kv, k, &i);
        const char *s = sd_gguf_kv_array_string(kv, k, &len);
        if (s && len > kv->size)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    const char *path = fuzz_write_file(data, size, ".gguf");
    sd_gguf *g = NULL;
    sd_status s = sd_gguf_open(ctx, path, &g);
    fuzz_check_error(ctx, s);
    if (s != SD_OK)
        return 0;
    for (size_t i = 0; i < sd_gguf_kv_count(g); i++)
        read_kv(sd_gguf_kv_at(g, i));
    for (size_t i = 0; i < sd_gguf_count(g); i++) {
        const sd_gguf_tensor *t = sd_gguf_at(g, i);
        if (sd_gguf_find(g, t->name) != t)
            abort();
        if (t->numel > (1u << 20))
            continue;
        float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
        if (f)
            fuzz_check_error(ctx, sd_gguf_read_f32(ctx, g, t, f, t->numel));
        free(f);
    }
    sd_safetensors *view = NULL, *renamed = NULL;
    s = sd_gguf_tensor_view(ctx, g, &view);
    fuzz_check_error(ctx, s);
    if (s == SD_OK) {
        (void)sd_family_detect(view);
        s = sd_t5_rename_llama(ctx, view, &renamed);
        fuzz_check_error(ctx, s);
        if (s == SD_OK) {
            sd_t5_config cfg;
            fuzz_check_error(ctx, sd_t5_inspect(ctx, renamed, "", &cfg));
        }
    }
    sd_safetensors_close(renamed);
    sd_safetensors_close(view);
    sd_gguf_close(g);
    return 0;
}
